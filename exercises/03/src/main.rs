// Generated from lessons/03-interactive/main.rs by exercises/03/exercise.txt: write its todo!()s.
//! Lesson 03 — interactive reverse echo, one client at a time.
//! Interactive: every line a client types comes back reversed, `q` ends it. One blocking
//! loop, a read(2) and a write(2) per line (serve.rs), serves one client after another.
//!
//! Run `make lesson-03`, then `nc 127.0.0.1 23333` (or `make lesson-00`): type lines, then
//! `q`. `make trace-03` shows accept, the welcome's write, then per line a read (asleep until
//! you press Enter) and a write, and the close.
//!
//! Classic failure: open a second `nc` while the first is connected. It connects (the kernel
//! queues it in the listen backlog) but hears nothing until the first client types `q`.
//! `--mistake one-read-one-line`, `plain-close` and `no-drain` break serve.rs. More:
//! docs/lessons/03-interactive.md.

// Until every todo!() is written, the code after one is unreachable and some imports and
// helpers are unused: these allows keep the compiler's output to errors.
#![allow(unused, unreachable_code)]

/// A call still to write. Reached, it prints one line naming the call and where it stands,
/// then ends the program (exit status 101); `make check-03` quotes that line.
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

mod serve;

use std::os::fd::AsRawFd;

use clap::Parser;
use nix::sys::socket::{
    accept, bind, getpeername, getsockname, listen, setsockopt, socket, sockopt, Backlog, SockFlag,
    SockType, SockaddrStorage,
};
use nix::unistd::close;
use sockets_by_hand::accept::{AcceptPause, BLOCKING_RETRY};
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::errors::{report, OrDie};
use sockets_by_hand::{lesson, mistake, net, say};
use std::os::fd::OwnedFd;

const LESSON: Lesson = lesson!(23333, Hint::Nc);

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    let addr = args.listen.addr();

    // socket(2), setsockopt(SO_REUSEADDR), bind(2), listen(2): as in lesson 01.
    let family = net::family(&addr);
    let listener = socket(family, SockType::Stream, SockFlag::empty(), None).or_die("socket");
    setsockopt(&listener, sockopt::ReuseAddr, &true).or_die("setsockopt(SO_REUSEADDR)");
    bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref()).or_die("bind");
    listen(&listener, Backlog::new(128).or_die("listen")).or_die("listen");
    let local = getsockname::<SockaddrStorage>(listener.as_raw_fd()).or_die("getsockname");
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[]);

    let mut pause = AcceptPause::new(BLOCKING_RETRY);
    loop {
        // accept(2): the next client. While we serve it, the others wait in the backlog.
        let conn: OwnedFd = todo!("accept(2): the next client; on an error, pause.failed(errno), pause.sleep_if_paused() and continue; man 2 accept");
        let peer = getpeername::<SockaddrStorage>(conn.as_raw_fd());
        let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));
        say!("client connected: {peer}");

        // The conversation: read(2) and write(2) per line until q, EOF or an error.
        let ending = serve::serve_echo(&conn);

        // close(2) on every path: quit, EOF, reset, line too long.
        todo!("close(2): the client's connection, on every path; report a failure (report(\"close\", errno)); man 2 close");
        say!("client disconnected: {peer} ({ending})");
    }
}
