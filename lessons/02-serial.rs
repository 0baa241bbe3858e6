//! Lesson 02 — serial hello, one client after another.
//! Serial: lesson 01 in an accept loop. Each client gets
//! `Hello there! <local time>` and is closed; then the server accepts the next one.
//!
//! Run `make lesson-02`, then connect as often as you like: `nc 127.0.0.1 23333`.
//! `make trace-02` shows socket → setsockopt → bind → listen once, then the same
//! accept → write → close for every client, each `accept` returning a new fd (always the
//! same number, because the previous one was closed: the kernel hands out the lowest free fd).
//!
//! Classic mistake it makes visible: one client at a time. This server answers at once, so
//! nobody notices; but every client waits for the one before, queued in the listen backlog,
//! and lesson 03, whose clients stay connected, shows what that costs. The other classic bug
//! a loop like this invites, forgetting to close the accepted fd, would leak one fd per
//! client until accept fails with EMFILE; the tests count this server's fds after 500 clients.

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
use sockets_by_hand::lesson;
use sockets_by_hand::say;
use sockets_by_hand::{hello, io, net};

const LESSON: Lesson = lesson!(23333, Hint::Nc);

/// Lesson 02: a serial blocking TCP server. It accepts clients one after another, writes
/// "Hello there! <local time, RFC 3339>" to each and closes the connection. Stop it with
/// Ctrl-C. Watch it with `make trace-02`.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    let addr = args.listen.addr();
    hello::load_time_zone(); // before socket(), so the trace shows only what follows

    // socket(2), setsockopt(SO_REUSEADDR), bind(2), listen(2): as in lesson 01.
    let listener = socket(
        net::family(&addr),
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .or_die("socket");
    setsockopt(&listener, sockopt::ReuseAddr, &true).or_die("setsockopt(SO_REUSEADDR)");
    bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref()).or_die("bind");
    listen(&listener, Backlog::new(128).or_die("listen")).or_die("listen");
    let local = getsockname::<SockaddrStorage>(listener.as_raw_fd()).or_die("getsockname");
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[]);

    let mut pause = AcceptPause::new(BLOCKING_RETRY);
    loop {
        // accept(2): the next client in the backlog, or sleep until one arrives.
        let conn = match accept(&listener) {
            Ok(conn) => conn,
            Err(errno) => {
                // Report; accept again at once, or after a pause when out of fds.
                pause.failed(errno);
                pause.sleep_if_paused();
                continue;
            }
        };
        let peer = getpeername::<SockaddrStorage>(conn.as_raw_fd());
        let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));
        say!("client connected: {peer}");

        // write(2) the greeting; a client that already left only costs us this error.
        if let Err(errno) = io::write_all(&conn, hello::greeting().as_bytes()) {
            report("write", errno);
        }
        // close(2): without it, every client would leak one fd.
        if let Err(errno) = close(conn) {
            report("close", errno);
        }
        say!("client disconnected: {peer}");
    }
}
