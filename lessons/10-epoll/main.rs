//! Lesson 10 — event loop on epoll, EventMachine style.
//! The talk's `EM.start_server` built in plain sight: a reactor on epoll (reactor.rs:
//! epoll_create1, epoll_ctl, an epoll_wait loop) that calls a Handler (post_init,
//! receive_data, unbind); the whole echo protocol is that handler (handler.rs).
//!
//! Run `make lesson-10` and connect several `nc 127.0.0.1 23333`. `make trace-10` shows
//! epoll_create1, one epoll_ctl(ADD) per client, then epoll_wait → read → write: the kernel
//! keeps the interest list, so a wake-up costs the ready clients, not all of them. Ctrl-C
//! closes every client, prints a summary and exits 0.
//!
//! Classic failure: one thread serves everybody, so a handler that blocks (a sleep, a DNS
//! lookup, a slow disk) stalls every client at once: see `--mistake blocking-handler`.
//! More: docs/lessons/10-epoll.md

mod handler;
mod reactor;

use std::os::fd::AsRawFd;

use clap::Parser;
use handler::EchoHandler;
use nix::sys::socket::{
    bind, getsockname, listen, setsockopt, socket, sockopt, Backlog, SockFlag, SockType,
    SockaddrStorage,
};
use reactor::Reactor;
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::errors::OrDie;
use sockets_by_hand::{lesson, limits, mistake, net, stop};

const LESSON: Lesson = lesson!(23333, Hint::Nc);

sockets_by_hand::mistakes! {
    /// the handler sleeps 1 s per read (a slow lookup): every other client waits with it
    BlockingHandler,
    /// EPOLLOUT watched always: level-triggered epoll_wait returns at once, 100 % CPU
    EpolloutAlways,
    /// EPOLLET, but one read per wake-up: the bytes left behind raise no new event; hangs
    EdgeTriggered,
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

    // setrlimit(RLIMIT_NOFILE): the soft limit (often 1024) up to the hard limit.
    let nofile = limits::nofile_note(limits::raise_nofile());
    // Ctrl-C writes a byte to this pipe (src/stop.rs); epoll watches it like a socket.
    let stop = stop::stop_pipe();

    // socket(2) with SOCK_NONBLOCK: accept must never block the loop. Then as in lesson 01.
    let listener = socket(
        net::family(&addr),
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .or_die("socket");
    setsockopt(&listener, sockopt::ReuseAddr, &true).or_die("setsockopt(SO_REUSEADDR)");
    bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref()).or_die("bind");
    // A long backlog: thousands of clients may connect within one loop turn.
    listen(&listener, Backlog::new(4096).or_die("listen")).or_die("listen");
    let local = getsockname::<SockaddrStorage>(listener.as_raw_fd()).or_die("getsockname");
    mistake::switch_on(&MISTAKE, args.mistake);
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[&nofile]);

    // EM.start_server bind, port, EchoHandler
    Reactor::<EchoHandler>::new(&LESSON, listener, stop).run()
}
