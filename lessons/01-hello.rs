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

const LESSON: Lesson = lesson!(23333, Hint::Nc);

sockets_by_hand::mistakes! {
    /// no SO_REUSEADDR: a restart fails in bind with EADDRINUSE while TIME_WAIT lasts
    NoReuseaddr,
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,

    /// Switch on one classic mistake, on purpose (see the list below).
    #[arg(long, value_name = "NAME")]
    mistake: Option<Mistake>,

    /// The same as `--mistake no-reuseaddr` (its older spelling).
    #[arg(long)]
    no_reuseaddr: bool,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    let chosen = args
        .mistake
        .or(args.no_reuseaddr.then_some(Mistake::NoReuseaddr));
    mistake::switch_on(&MISTAKE, chosen);
    let addr = args.listen.addr();
    clock::load_time_zone(); // before socket(), so the trace shows only what follows

    // AF_INET or AF_INET6, as the address says.
    let family = net::family(&addr);
    // socket(2): a TCP endpoint (SOCK_STREAM) of that family, bound to nothing yet.
    // [socket]
    let listener = socket(family, SockType::Stream, SockFlag::empty(), None).or_die("socket");
    // [/socket]
    // setsockopt(SO_REUSEADDR): bind even while old connections on this port are in
    // TIME_WAIT, so the server can be restarted at once. `--mistake no-reuseaddr` leaves it
    // out: a restart within a minute then fails in bind with EADDRINUSE.
    // [reuseaddr]
    if !mistake(Mistake::NoReuseaddr) {
        setsockopt(&listener, sockopt::ReuseAddr, &true).or_die("setsockopt(SO_REUSEADDR)");
    }
    // [/reuseaddr]
    // bind(2): give the socket its local address and port.
    // [bind]
    bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref()).or_die("bind");
    // [/bind]
    // listen(2): the kernel now completes handshakes for us and queues up to 128 finished
    // connections until we accept them.
    // [listen]
    listen(&listener, Backlog::new(128).or_die("listen")).or_die("listen");
    // [/listen]
    // getsockname(2): the address really bound (with -p 0 the kernel chose the port).
    let local = getsockname::<SockaddrStorage>(listener.as_raw_fd()).or_die("getsockname");
    // The banner; with --mistake, a last line says so (MISTAKE ON: ...).
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[]);

    // accept(2): sleep until a client has connected; returns a new socket for that client.
    // [accept]
    let conn = loop {
        match accept(&listener) {
            Ok(conn) => break conn,
            // A signal, or a connection that died in the queue: nothing wrong, try again.
            Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
            Err(errno) => fatal("accept", errno),
        }
    };
    // [/accept]
    let peer = getpeername::<SockaddrStorage>(conn.as_raw_fd());
    let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));
    say!("client connected: {peer}");

    // write(2) the greeting, again if the socket took only part of it (a short write). A
    // client that already left makes it fail: EPIPE or ECONNRESET, an error, not a signal.
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

    // close(2) both sockets: the connection first (this sends our FIN), then the listener.
    // [close]
    close(conn).or_die("close");
    // [/close]
    say!("client disconnected: {peer}");
    close(listener).or_die("close");
}
