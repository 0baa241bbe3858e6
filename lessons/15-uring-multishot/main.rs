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
#[path = "../11-uring/ring.rs"]
mod ring;
mod server;

use std::os::fd::AsRawFd;

use bufs::BufRing;
use clap::Parser;
use nix::sys::socket::{
    bind, getsockname, listen, setsockopt, socket, sockopt, Backlog, SockFlag, SockType,
    SockaddrStorage,
};
use ring::Ring;
use server::Server;
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::errors::OrDie;
use sockets_by_hand::{lesson, mistake, net, stop};

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

    // io_uring_setup(2): the rings, shared with the kernel (ring.rs).
    let ring = ring::setup();
    // io_uring_register(2) IORING_REGISTER_PBUF_RING: the buffer ring (bufs.rs), every
    // buffer in it; from now on a recv that names its group takes a buffer when bytes arrive.
    let bufs = BufRing::register(&ring, args.bufs).unwrap_or_else(|errno| {
        let call = "io_uring_register(IORING_REGISTER_PBUF_RING)";
        ring::refused(call, errno, "a provided-buffer ring", "5.19")
    });
    mistake::switch_on(&MISTAKE, args.mistake);
    let notes = [format!("{} buffers of 4 KiB in the ring", args.bufs)];
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[&notes[0]]);

    Server::new(&LESSON, Ring::new(ring, stop), bufs, listener).serve()
}
