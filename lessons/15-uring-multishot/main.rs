//! Lesson 15 — io_uring the modern way: multishot accept and recv, a provided-buffer ring.
//! Lesson 11's server with the operations production code uses: one accept that keeps
//! completing, one recv per client that keeps completing, into buffers the kernel takes from a
//! ring the lesson provides (bufs.rs) only when bytes arrive, and gives back once consumed.
//!
//! Read main.rs (ring and buffer ring), bufs.rs, then server.rs. Run `make lesson-15`, connect
//! with `nc 127.0.0.1 23333`; `make trace-15` shows io_uring_setup, io_uring_register, then
//! io_uring_enter. Memory follows the data: the ring's buffers (--bufs, 256 × 4 KiB = 1 MiB).
//!
//! Classic failure: a multishot that ends (no IORING_CQE_F_MORE: the ring ran dry, ENOBUFS)
//! must be submitted again; `--mistake no-rearm --bufs 4` leaves clients hanging.
//! More: docs/lessons/15-uring-multishot.md

mod bufs;
mod server;

use std::os::fd::AsRawFd;

use bufs::BufRing;
use clap::Parser;
use io_uring::IoUring;
use nix::errno::Errno;
use nix::sys::socket::{
    bind, getsockname, listen, setsockopt, socket, sockopt, Backlog, SockFlag, SockType,
    SockaddrStorage,
};
use server::Server;
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::errors::OrDie;
use sockets_by_hand::{lesson, mistake, net, sandbox, say, stop};

const LESSON: Lesson = lesson!(23333, Hint::Nc);

sockets_by_hand::mistakes! {
    /// a multishot recv that ends (ENOBUFS: the buffer ring ran dry) is never submitted again: its client hangs
    NoRearm,
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,

    /// Buffers in the provided-buffer ring, 4 KiB each (a power of two, 1 to 32768); a few
    /// make the ring run dry under a burst of clients (ENOBUFS).
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = bufs::parse_count)]
    bufs: u16,

    /// Switch on one classic mistake, on purpose (see the list below).
    #[arg(long, value_name = "NAME")]
    mistake: Option<Mistake>,
}

/// Submission queue entries (the completion queue gets twice as many).
pub const RING_ENTRIES: u32 = 1024;

fn main() {
    let args: Args = cli::parse(&LESSON);
    let addr = args.listen.addr();
    // Ctrl-C writes a byte to this pipe (src/stop.rs); a poll op in the ring waits for it.
    let stop = stop::stop_pipe();

    // socket(2), setsockopt, bind, listen, getsockname: as in lesson 01. The socket stays
    // blocking: io_uring never blocks the caller, whatever the fd's flags.
    let listener = socket(
        net::family(&addr),
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .or_die("socket");
    setsockopt(&listener, sockopt::ReuseAddr, &true).or_die("setsockopt(SO_REUSEADDR)");
    bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref()).or_die("bind");
    listen(&listener, Backlog::new(1024).or_die("listen")).or_die("listen");
    let local = getsockname::<SockaddrStorage>(listener.as_raw_fd()).or_die("getsockname");

    // io_uring_setup(2): the rings, mapped into our memory. SINGLE_ISSUER + DEFER_TASKRUN
    // (Linux 6.1+) batch the kernel's completion work into our io_uring_enter; an older
    // kernel says EINVAL to them, and gets a plain ring.
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
        .or_else(|err| match err.raw_os_error() {
            Some(libc::EINVAL) => IoUring::new(RING_ENTRIES),
            _ => Err(err),
        })
        .unwrap_or_else(|err| sandbox::io_uring_setup_failed(err));
    // io_uring_register(2) IORING_REGISTER_PBUF_RING: the buffer ring (bufs.rs), every
    // buffer in it; from now on a recv that names its group takes a buffer when bytes arrive.
    let bufs = BufRing::register(&ring, args.bufs).unwrap_or_else(|errno| {
        too_old(
            "io_uring_register(IORING_REGISTER_PBUF_RING)",
            errno,
            "a provided-buffer ring",
            "5.19",
        )
    });
    mistake::switch_on(&MISTAKE, args.mistake);
    let notes = [format!("{} buffers of 4 KiB in the ring", args.bufs)];
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[&notes[0]]);

    Server::new(&LESSON, ring, bufs, listener, stop).serve()
}

/// The kernel refused one of the lesson's io_uring features: one line naming it and the
/// kernel version it needs, exit 1.
pub fn too_old(call: &str, errno: Errno, feature: &str, needs: &str) -> ! {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let errors = sockets_by_hand::errors::describe(call, errno);
    say!(
        "{errors}: {feature} needs Linux {needs} (this kernel: {})",
        release.trim()
    );
    std::process::exit(1)
}
