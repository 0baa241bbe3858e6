// Generated from lessons/02-serial.rs by exercises/02/exercise.txt: write its todo!()s.
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

// Until every todo!() is written, the code after one is unreachable and some imports and
// helpers are unused: these allows keep the compiler's output to errors.
#![allow(unused, unreachable_code)]

/// A call still to write. Reached, it prints one line naming the call and where it stands,
/// then ends the program (exit status 101); `make check-02` quotes that line.
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
    clock::load_time_zone(); // before socket(), so the trace shows only what follows

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
        // accept(2): the next client in the backlog, or sleep until one arrives.
        let conn: OwnedFd = todo!("accept(2): the next client (accept(&listener)), asleep until one comes; on an error: pause.failed(errno), pause.sleep_if_paused(), continue; man 2 accept");
        let peer = getpeername::<SockaddrStorage>(conn.as_raw_fd());
        let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));
        say!("client connected: {peer}");

        // write(2) the greeting, all of it; a client that already left costs only an error.
        let greeting = clock::greeting();
        let mut rest = greeting.as_bytes();
        todo!("write(2): all of rest (write(&conn, rest)), again after a short write (rest = &rest[n..]); a failure: report(\"write\", errno), then on to the close; man 2 write");
        // close(2): without it, every client would leak one fd.
        todo!("close(2): conn (close(conn) takes the OwnedFd), so the client reads EOF and the fd is free for the next; report a failure (report(\"close\", errno)); man 2 close");
    }
}
