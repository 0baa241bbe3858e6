//! Lesson 02 — serial hello, one client after another.
//! Serial: lesson 01 in an accept loop. Each client gets
//! `Hello there! <local time>` and is closed; then the server accepts the next one.
//!
//! Run `make lesson-02`, then connect as often as you like: `nc 127.0.0.1 23333`.
//! `make trace-02` shows socket → setsockopt → bind → listen → getsockname once, then
//! accept → getpeername → write → close for every client, each accept returning the same fd
//! number (the lowest free one).
//!
//! Classic failure: one client at a time. Every client waits, in the listen backlog, for the
//! one before; this server answers so fast that nobody notices, lesson 03 shows the cost.
//! `--mistake leak-fd` forgets the close. More: docs/lessons/02-serial.md.

use std::os::fd::AsRawFd;

use clap::Parser;
use nix::sys::socket::{
    accept, bind, getpeername, getsockname, listen, setsockopt, socket, sockopt, Backlog, SockFlag,
    SockType, SockaddrStorage,
};
use nix::unistd::{close, write};
use sockets_by_hand::accept::{AcceptPause, BLOCKING_RETRY};
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::errors::{report, OrDie};
use sockets_by_hand::{clock, lesson, mistake, net, say};

const LESSON: Lesson = lesson!(23333, Hint::Nc);

sockets_by_hand::mistakes! {
    /// no close: one fd leaked per client, until accept fails with EMFILE
    LeakFd,
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
    mistake::switch_on(&MISTAKE, args.mistake);
    let addr = args.listen.addr();
    clock::load_time_zone(); // before socket(), so the trace shows only what follows

    // socket(2), setsockopt(SO_REUSEADDR), bind(2), listen(2): as in lesson 01.
    let family = net::family(&addr);
    let listener = socket(family, SockType::Stream, SockFlag::empty(), None).or_die("socket");
    setsockopt(&listener, sockopt::ReuseAddr, &true).or_die("setsockopt(SO_REUSEADDR)");
    bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref()).or_die("bind");
    listen(&listener, Backlog::new(128).or_die("listen")).or_die("listen");
    let local = getsockname::<SockaddrStorage>(listener.as_raw_fd()).or_die("getsockname");
    // The banner; with --mistake, a last line says so (MISTAKE ON: ...).
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[]);

    let mut pause = AcceptPause::new(BLOCKING_RETRY);
    loop {
        // accept(2): the next client in the backlog, or sleep until one arrives.
        // [accept]
        let conn = match accept(&listener) {
            Ok(conn) => conn,
            Err(errno) => {
                pause.failed(errno); // reported; out of fds, it pauses before the next try
                pause.sleep_if_paused();
                continue;
            }
        };
        // [/accept]
        let peer = getpeername::<SockaddrStorage>(conn.as_raw_fd());
        let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));
        say!("client connected: {peer}");

        // write(2) the greeting, all of it; a client that already left costs only an error.
        let greeting = clock::greeting();
        let mut rest = greeting.as_bytes();
        // [write]
        while !rest.is_empty() {
            match write(&conn, rest) {
                Ok(n) => rest = &rest[n..],
                Err(errno) => {
                    report("write", errno);
                    break;
                }
            }
        }
        // [/write]
        // close(2): without it, every client would leak one fd. `--mistake leak-fd` forgets the
        // fd instead (in Rust a drop would close it), as C code that leaves the close out: the
        // client never sees EOF, and one fd leaks per client until accept fails with EMFILE.
        // [close]
        if !mistake(Mistake::LeakFd) {
            if let Err(errno) = close(conn) {
                report("close", errno);
            }
            say!("client disconnected: {peer}");
        } else {
            std::mem::forget(conn);
            say!("client left open: {peer} (its fd leaked)");
        }
        // [/close]
    }
}
