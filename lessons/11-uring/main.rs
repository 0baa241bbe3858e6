//! Lesson 11 — asynchronous I/O with io_uring.
//! Stevens' fifth model: the server submits operations (IORING_OP_ACCEPT, RECV, SEND) to a
//! ring it shares with the kernel, and reacts to their completions, instead of asking which
//! sockets are ready.
//!
//! Read main.rs, server.rs, then ring.rs. Run `make lesson-11`, connect with `nc 127.0.0.1
//! 23333`; `make trace-11` shows socket, bind, listen, io_uring_setup, then io_uring_enter:
//! only shutdown(SHUT_WR) and close remain plain calls.
//!
//! Classic failure: a buffer belongs to the kernel from submission to completion; reusing or
//! freeing it in between corrupts memory (`--mistake reuse-buffer` shares one recv buffer:
//! replies go to the wrong clients). Completions come in any order. More: docs/lessons/11-uring.md

mod ring;
mod server;

use std::os::fd::AsRawFd;

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
    /// one recv buffer for every client, reused while the kernel still owns it: lines get mixed up
    ReuseBuffer,
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,

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
    mistake::switch_on(&MISTAKE, args.mistake);
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[]);

    Server::new(&LESSON, Ring::new(ring, stop), listener).serve()
}
