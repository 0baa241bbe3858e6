//! Lesson 18 — packets by hand, a capture written with AF_PACKET.
//! A packet socket bound to one interface receives every frame on it; a classic BPF filter
//! keeps the port asked for, and each frame becomes one tcpdump line, or a pcap record.
//!
//! Run `make lesson-18 ARGS='--port 23333'` as root (or under `unshare -Urn`), then talk to
//! a lesson on that port: the handshake (S, S., .), the data (P.), the FINs. `-w FILE` writes
//! a pcap that tcpdump and wireshark read; `--ring` maps a PACKET_RX_RING. `make trace-18`
//! shows socket(AF_PACKET) → setsockopt(SO_ATTACH_FILTER) → bind → getsockopt → poll and
//! recvfrom per frame → getsockopt(PACKET_STATISTICS) → write of the counts → exit.
//!
//! Classic failure: no filter, and a capture over ssh sees its own output, forever.
//! `--mistake` also cuts headers (short-snaplen) and drops under load (one-per-call).
//! More: docs/lessons/18-capture.md

mod filter;
mod ring;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use clap::Parser;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
use sockets_by_hand::capture::{self, Output};
use sockets_by_hand::cli::{self, Hint, Lesson};
use sockets_by_hand::errors::{describe, fatal, OrDie};
use sockets_by_hand::{lesson, mistake, say, stop};

const LESSON: Lesson = lesson!(0, Hint::None);

sockets_by_hand::mistakes! {
    /// no filter: every frame is copied up, the capture's own output traffic too
    NoFilter,
    /// a snap length of 68 bytes, tcpdump's old default: IPv6's TCP headers are cut
    ShortSnaplen,
    /// a poll for every frame: twice the calls, and under load the kernel drops
    OnePerCall,
}

#[derive(Parser)]
struct Args {
    /// The interface to capture on.
    #[arg(
        short = 'i',
        long = "iface",
        value_name = "IFACE",
        default_value = "lo"
    )]
    iface: String,

    /// Keep only TCP and UDP from or to this port (IPv4 and IPv6); without it, every frame.
    #[arg(long = "port", id = "filter_port", value_name = "N")]
    port: Option<u16>,

    /// Keep at most this many bytes of each frame.
    #[arg(
        short = 's',
        long = "snaplen",
        value_name = "BYTES",
        default_value_t = 262_144
    )]
    snaplen: u32,

    /// Write the frames to a pcap file instead of printing a line each.
    #[arg(short = 'w', value_name = "FILE")]
    write: Option<String>,

    /// Read through a PACKET_RX_RING (TPACKET_V3) mapped into memory, not recvfrom.
    #[arg(long)]
    ring: bool,

    /// Ring: the size of one block, in KiB.
    #[arg(long, value_name = "KIB", default_value_t = 1024)]
    ring_block_kib: u32,

    /// Ring: the number of blocks.
    #[arg(long, value_name = "N", default_value_t = 4)]
    ring_blocks: u32,

    /// Ring: hand a block over at the latest this many ms after its first frame.
    #[arg(long, value_name = "MS", default_value_t = 20)]
    ring_timeout_ms: u32,

    /// Stop after this many frames.
    #[arg(short = 'c', long = "count", value_name = "N")]
    count: Option<u64>,

    /// Switch on one classic mistake, on purpose (see the list below).
    #[arg(long, value_name = "NAME")]
    mistake: Option<Mistake>,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    mistake::switch_on(&MISTAKE, args.mistake);
    // A frame longer than the snap length is cut to it; the mistake keeps only 68 bytes.
    let snaplen = if !mistake(Mistake::ShortSnaplen) {
        args.snaplen.max(1)
    } else {
        68
    };
    if args.ring && mistake(Mistake::OnePerCall) {
        say!("--mistake one-per-call is the recvfrom loop's mistake: run it without --ring");
        std::process::exit(2);
    }
    let ifindex = nix::net::if_::if_nametoindex(args.iface.as_str())
        .or_die(&format!("if_nametoindex({})", args.iface));
    let loopback = capture::is_loopback(&args.iface);
    let mut out = match &args.write {
        None => Output::lines(),
        Some(path) => Output::pcap(path, snaplen).unwrap_or_else(|e| {
            say!("-w {path}: {e}");
            std::process::exit(1)
        }),
    };
    // Ctrl-C writes a byte to this pipe (src/stop.rs); the loop polls it beside the socket.
    let stop = stop::stop_pipe();

    // socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)): a packet socket, which receives whole
    // frames, link header included, of every protocol. Needs CAP_NET_RAW.
    let sock = match socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    ) {
        Ok(sock) => sock,
        Err(errno) => no_socket(errno),
    };

    // --ring: the ring is set up before bind, so that the first frame lands in it.
    let mut ring = args.ring.then(|| {
        let shape = ring::Shape {
            block_size: args.ring_block_kib.max(4) * 1024,
            blocks: args.ring_blocks.max(2),
            timeout_ms: args.ring_timeout_ms,
        };
        ring::setup(&sock, shape).unwrap_or_else(|(call, errno)| fatal(call, errno))
    });

    // setsockopt(SO_ATTACH_FILTER): from now on the kernel runs the filter on each frame
    // and queues only what it keeps, cut to the snap length (filter.rs).
    let port_text = match args.port {
        Some(port) if !mistake(Mistake::NoFilter) => {
            let program = filter::port_filter(port, snaplen, loopback);
            filter::attach(&sock, &program).or_die("setsockopt(SO_ATTACH_FILTER)");
            format!("filter: port {port} ({} BPF instructions)", program.len())
        }
        // The mistake: no filter, so every frame on the interface is copied up to us.
        Some(port) => format!("NO filter for port {port}: every frame"),
        None => "no filter: every frame".to_string(),
    };

    // bind(sockaddr_ll): only this interface's frames from now on.
    bind_to(&sock, ifindex);
    // Frames queued between socket() and bind() may come from any interface: dropped.
    if ring.is_none() {
        while recv_frame(&sock, &mut [0u8; 64]).is_ok() {}
    }
    // getsockopt(PACKET_STATISTICS) reads the counters and zeroes them: counting starts now.
    let _ = statistics(&sock);
    let mode = if ring.is_some() {
        "PACKET_RX_RING"
    } else {
        "recvfrom"
    };
    say!(
        "lesson 18 · {} · capturing on {} (ifindex {ifindex}) · {port_text} · snap length \
         {snaplen} · {mode} · Ctrl-C stops and prints the counts",
        LESSON.title(),
        args.iface
    );
    if let Some(note) = mistake::banner_note() {
        say!("  {note}");
    }

    let limit = args.count.unwrap_or(0);
    match ring.as_mut() {
        Some(ring) => ring.run(&sock, &stop, &mut out, limit),
        None => recv_loop(&sock, &stop, &mut out, snaplen, limit),
    }
    let _ = out.flush();

    // getsockopt(PACKET_STATISTICS): what the filter passed, and what the kernel dropped
    // because the socket's queue (or the ring) was full.
    let (received, dropped) = statistics(&sock).or_die("getsockopt(PACKET_STATISTICS)");
    for line in capture::summary(out.captured, received, dropped) {
        say!("{line}");
    }
}

/// The first version: poll, then recvfrom until the queue is empty, one frame per call.
fn recv_loop(sock: &OwnedFd, stop_pipe: &OwnedFd, out: &mut Output, snaplen: u32, limit: u64) {
    let mut buf = vec![0u8; snaplen as usize];
    loop {
        // poll(2): sleep until a frame is queued (or Ctrl-C).
        let mut fds = [
            PollFd::new(sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop_pipe.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => fatal("poll", errno),
        }
        if fds[1].any().unwrap_or(false) && stop::stop_requested(stop_pipe) {
            return;
        }
        loop {
            // recvfrom(MSG_DONTWAIT | MSG_TRUNC): one frame, its sockaddr_ll, and its length
            // even where the buffer was shorter; EAGAIN once the queue is empty.
            let (len, from) = match recv_frame(sock, &mut buf) {
                Ok(got) => got,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(errno) => fatal("recvfrom", errno),
            };
            // On a loopback device each packet passes twice; skip the copy going out.
            let outgoing = from.sll_pkttype == libc::PACKET_OUTGOING
                && from.sll_hatype == libc::ARPHRD_LOOPBACK;
            if !outgoing {
                let kept = &buf[..len.min(buf.len())];
                if out.frame(capture::now(), kept, len).is_err() {
                    return;
                }
                if limit > 0 && out.captured >= limit {
                    return;
                }
            }
            // The mistake: back to poll after every frame, two calls per frame.
            if mistake(Mistake::OnePerCall) {
                break;
            }
        }
        if out.flush().is_err() {
            return;
        }
    }
}

/// recvfrom(2) on the packet socket: the frame into `buf`, and who it came from.
fn recv_frame(sock: &OwnedFd, buf: &mut [u8]) -> Result<(usize, libc::sockaddr_ll), Errno> {
    // SAFETY: an all-zero sockaddr_ll is valid; recvfrom fills at most `len` bytes of it.
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `buf` and `from` are ours, of the sizes passed.
    let n = unsafe {
        libc::recvfrom(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            (&mut from as *mut libc::sockaddr_ll).cast(),
            &mut len,
        )
    };
    Errno::result(n).map(|n| (n as usize, from))
}

/// bind(2) to a sockaddr_ll naming the interface (and ETH_P_ALL again).
fn bind_to(sock: &OwnedFd, ifindex: u32) {
    // SAFETY: an all-zero sockaddr_ll is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    Errno::result(rc).or_die("bind");
}

/// getsockopt(SOL_PACKET, PACKET_STATISTICS): (frames the filter passed, frames dropped)
/// since the last read, which zeroes them.
fn statistics(sock: &OwnedFd) -> Result<(u64, u64), Errno> {
    let mut stats = libc::tpacket_stats_v3 {
        tp_packets: 0,
        tp_drops: 0,
        tp_freeze_q_cnt: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
    // SAFETY: `stats` is ours, of the size passed; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats_v3).cast(),
            &mut len,
        )
    };
    Errno::result(rc)?;
    Ok((u64::from(stats.tp_packets), u64::from(stats.tp_drops)))
}

/// socket(AF_PACKET) refused: name the call, and for EPERM the capability and how to get it.
fn no_socket(errno: Errno) -> ! {
    say!("{}", describe("socket(AF_PACKET, SOCK_RAW)", errno));
    if errno == Errno::EPERM {
        for line in capture::no_privilege(&LESSON.program()) {
            say!("{line}");
        }
    }
    std::process::exit(1)
}
