// Generated from lessons/18-capture/main.rs by exercises/18/exercise.txt: write its todo!()s.
//! Lesson 18 — packets by hand, a capture written with AF_PACKET.
//! A packet socket bound to one interface receives every frame on it; a classic BPF filter
//! keeps the port asked for, and each frame becomes one tcpdump line, or a pcap record.
//!
//! Run `make lesson-18 ARGS='--port 23333'` as root (or under `unshare -Urn`), then talk to
//! a lesson on that port: the handshake (S, S., .), the data (P.), the FINs. `-w FILE` writes
//! a pcap that tcpdump and wireshark read; `--ring` maps a PACKET_RX_RING. `make trace-18`
//! shows socket → setsockopt(SO_ATTACH_FILTER) → bind → getsockopt → poll and
//! recvfrom per frame → getsockopt(PACKET_STATISTICS) → write of the counts → exit.
//!
//! Classic failure: no filter, and a capture over ssh sees its own output, forever.
//! `--mistake` also cuts headers (short-snaplen) and drops under load (one-per-call).
//! More: docs/lessons/18-capture.md

// Until every todo!() is written, the code after one is unreachable and some imports and
// helpers are unused: these allows keep the compiler's output to errors.
#![allow(unused, unreachable_code)]

/// A call still to write. Reached, it prints one line naming the call and where it stands,
/// then ends the program (exit status 101); `make check-18` quotes that line.
macro_rules! todo {
    ($call:literal) => {{
        let line = concat!("todo!() reached at ", file!(), ":", line!(), ": ", $call, "\n");
        // SAFETY: write(2) and _exit(2) on a valid buffer; both are async-signal-safe.
        unsafe {
            libc::write(2, line.as_ptr().cast(), line.len());
            libc::_exit(101)
        }
    }};
}

mod filter;
// Mounted from the lesson as they are (no todo!() in them): read them there.
#[path = "../../../lessons/18-capture/ring.rs"]
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
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    let snaplen = args.snaplen.max(1);
    let ifindex = capture::ifindex(&args.iface).unwrap_or_else(|e| {
        say!("--iface {}: {e}", args.iface);
        std::process::exit(1)
    });
    let loopback = capture::is_loopback(&args.iface);
    let mut out = match &args.write {
        None => Output::lines(),
        Some(path) => Output::pcap(path, snaplen).unwrap_or_else(|e| {
            say!("-w {path}: {e}");
            std::process::exit(1)
        }),
    };
    // The buffer a frame is read into: the snap length.
    let mut buf = vec![0u8; snaplen as usize];
    // Ctrl-C writes a byte to this pipe (src/stop.rs); the loop polls it beside the socket.
    let stop = stop::stop_pipe();

    // socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)): a packet socket, which receives whole
    // frames, link header included, of every protocol. Needs CAP_NET_RAW.
    let sock: OwnedFd = todo!("socket(2): AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::EthAll (htons(ETH_P_ALL): every protocol); on an error, no_socket(errno) names it; man 7 packet");

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
    let program = filter::program(args.port, snaplen, loopback);
    let what = args
        .port
        .map_or("every frame".into(), |p| format!("port {p}"));
    let filter_text = {
        filter::attach(&sock, &program).or_die("setsockopt(SO_ATTACH_FILTER)");
        format!("filter: {what} ({} BPF instructions)", program.len())
    };

    // bind(sockaddr_ll): only this interface's frames from now on.
    bind_to(&sock, ifindex);
    // Frames queued between socket() and bind() may come from any interface: dropped
    // (a bounded number, so that a busy interface without a filter cannot keep us here).
    if ring.is_none() {
        let mut old = [0u8; 64];
        for _ in 0..100_000 {
            if recv_frame(&sock, &mut old).is_err() {
                break;
            }
        }
    }
    // getsockopt(PACKET_STATISTICS) reads the counters and zeroes them: counting starts now.
    let _ = statistics(&sock);
    let mode = if ring.is_some() {
        "PACKET_RX_RING"
    } else {
        "recvfrom"
    };
    say!(
        "lesson 18 · {} · capturing on {} (ifindex {ifindex}) · {filter_text} · snap length \
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
        None => recv_loop(&sock, &stop, &mut out, &mut buf, limit),
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
fn recv_loop(sock: &OwnedFd, stop_pipe: &OwnedFd, out: &mut Output, buf: &mut [u8], limit: u64) {
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
            let (len, from) = match recv_frame(sock, buf) {
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
    let n: isize = todo!("recvfrom(2): libc::recvfrom(fd, buf, buf.len(), MSG_DONTWAIT | MSG_TRUNC, &mut from as *mut sockaddr_ll, &mut len) in an unsafe block; -1 with EAGAIN once the queue is empty; man 2 recvfrom, man 7 packet");
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
