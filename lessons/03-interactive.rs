//! Lesson 03 — interactive reverse echo, one client at a time.
//! Interactive: the reverse-echo protocol, served by one blocking loop.
//! A client gets `Welcome buddy!`, then every line it types comes back reversed; `q` ends it.
//!
//! Run `make lesson-03`, connect with `nc 127.0.0.1 23333` (or `make lesson-00`), type a few
//! lines, then `q`. `make trace-03` shows the conversation: accept, write of the welcome, then
//! a read (asleep until you press Enter) and a write for each line, and close.
//!
//! Classic mistake it makes visible: a serial server serves one client at a time. Open a
//! second `nc` while the first is connected: it connects at once (the kernel finished its
//! handshake and queued it in the listen backlog) but gets no welcome until the first client
//! types `q`, because the only thread is asleep in that client's `read`. Lessons 04–11 are
//! five ways out. Also shown: TCP is a byte stream, not a message stream: one `read` may hold
//! half a line or many lines, so the protocol (src/echo.rs) keeps the unfinished line between
//! reads instead of assuming one read is one line.

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
use sockets_by_hand::{blocking, net};

const LESSON: Lesson = lesson!(23333, Hint::Nc);

/// Lesson 03: the reverse-echo protocol on a serial blocking server. Each client gets
/// "Welcome buddy!", every line it sends comes back reversed, and "q" closes the
/// connection. A second client waits, connected but unanswered, until the first leaves.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    let addr = args.listen.addr();

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
        // accept(2): the next client. While we serve it, others wait in the backlog.
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

        // The conversation: a write(2) of the welcome, then a read(2) and a write(2) per
        // line until q, EOF or an error. The loop is src/blocking.rs, shared with lessons
        // 04 and 05, which run the very same loop in a process or a thread per client.
        let ending = blocking::serve_echo(&conn);

        // close(2) on every path: quit, EOF, reset, line too long.
        if let Err(errno) = close(conn) {
            report("close", errno);
        }
        say!("client disconnected: {peer} ({ending})");
    }
}
