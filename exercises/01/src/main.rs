// Generated from lessons/01-hello.rs by exercises/01/exercise.txt: write its todo!()s.
//! Lesson 01 — hello, one client and done.
//! Hello: the smallest TCP server. It accepts one client, writes
//! `Hello there! <local time>` to it, closes both sockets and exits 0.
//!
//! Run `make lesson-01`, then `nc 127.0.0.1 23333` (or `make lesson-00`) in a second
//! terminal. `make trace-01` shows a server's whole life: socket → setsockopt(SO_REUSEADDR) →
//! bind → listen → getsockname → accept (asleep until a client comes) → getpeername → write →
//! close, close → exit_group.
//!
//! Classic failure: run it twice in a row with `--mistake no-reuseaddr`, and the second
//! `bind` fails with EADDRINUSE: the first run's connection still sits in TIME_WAIT on this port.
//! More: docs/lessons/01-hello.md.

// Until every todo!() is written, the code after one is unreachable and some imports and
// helpers are unused: these allows keep the compiler's output to errors.
#![allow(unused, unreachable_code)]

/// A call still to write. Reached, it prints one line naming the call and where it stands,
/// then ends the program (exit status 101); `make check-01` quotes that line.
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
use nix::errno::Errno;
use nix::sys::socket::{
    accept, bind, getpeername, getsockname, listen, setsockopt, socket, sockopt, Backlog, SockFlag,
    SockType, SockaddrStorage,
};
use nix::unistd::{close, write};
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::errors::{fatal, report, OrDie};
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

    // AF_INET or AF_INET6, as the address says.
    let family = net::family(&addr);
    // socket(2): a TCP endpoint (SOCK_STREAM) of that family, bound to nothing yet.
    let listener: OwnedFd = todo!("socket(2): a TCP socket (SockType::Stream) of this family; man 2 socket");
    // setsockopt(SO_REUSEADDR): bind even while old connections on this port are in
    // TIME_WAIT, so the server can be restarted at once.
    todo!("setsockopt(2): SO_REUSEADDR on the listener, `sockopt::ReuseAddr, &true`; man 7 socket");
    // bind(2): give the socket its local address and port.
    todo!("bind(2): the listener to addr, `bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref())`: nix takes the raw fd and a &dyn SockaddrLike, which `.as_ref()` lends; man 2 bind");
    // listen(2): the kernel now completes handshakes for us and queues up to 128 finished
    // connections until we accept them.
    todo!("listen(2): a backlog of 128, `Backlog::new(128)`, a Result: take it with `.or_die(\"listen\")`; man 2 listen");
    // getsockname(2): the address really bound (with -p 0 the kernel chose the port).
    let local = getsockname::<SockaddrStorage>(listener.as_raw_fd()).or_die("getsockname");
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[]);

    // accept(2): sleep until a client has connected; returns a new socket for that client.
    let conn: OwnedFd = todo!("accept(2): the first client, again after EINTR or ECONNABORTED; man 2 accept");
    let peer = getpeername::<SockaddrStorage>(conn.as_raw_fd());
    let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));
    say!("client connected: {peer}");

    // write(2) the greeting, again if the socket took only part of it (a short write). A
    // client that already left makes it fail: EPIPE or ECONNRESET, an error, not a signal.
    let greeting = clock::greeting();
    let mut rest = greeting.as_bytes();
    todo!("write(2): the whole greeting, again after a short write; report a failure and go on; man 2 write");

    // close(2) both sockets: the connection first (this sends our FIN), then the listener.
    todo!("close(2): the connection (our FIN goes out); the listener's close follows; man 2 close");
    say!("client disconnected: {peer}");
    close(listener).or_die("close");
}
