//! Lesson 03 — interactive: the reverse-echo protocol, served by one blocking loop.
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

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use clap::Parser;
use nix::errno::Errno;
use nix::sys::socket::{
    accept, bind, getpeername, getsockname, listen, setsockopt, socket, sockopt, Backlog, SockFlag,
    SockType, SockaddrStorage,
};
use nix::unistd::{close, read};
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::echo::{self, Echo, Ending};
use sockets_by_hand::errors::{accept_failure, fatal, report, AcceptFailure, OrDie};
use sockets_by_hand::say;
use sockets_by_hand::{io, net};

const LESSON: Lesson = Lesson {
    number: "03",
    title: "interactive reverse echo, one client at a time",
    default_port: 23333,
    hint: Hint::Nc,
};

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

    loop {
        // accept(2): the next client. While we serve it, others wait in the backlog.
        let conn = match accept(&listener) {
            Ok(conn) => conn,
            Err(errno) => {
                report("accept", errno);
                match accept_failure(errno) {
                    AcceptFailure::Retry => continue,
                    AcceptFailure::Exhausted => {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    AcceptFailure::Fatal => fatal("accept", errno),
                }
            }
        };
        let peer = getpeername::<SockaddrStorage>(conn.as_raw_fd());
        let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));
        say!("client connected: {peer}");

        let ending = serve(&conn);

        // close(2) on every path: quit, EOF, reset, line too long.
        if let Err(errno) = close(conn) {
            report("close", errno);
        }
        say!("client disconnected: {peer} ({ending})");
    }
}

/// Talks the echo protocol with one client until it quits, leaves or fails.
fn serve(conn: &OwnedFd) -> Ending {
    let mut session = Echo::new();
    let mut buf = [0u8; 16 * 1024];
    let mut replies = Vec::with_capacity(buf.len() + echo::TOO_LONG.len());

    // write(2) the welcome before the client has said anything.
    if let Err(errno) = io::write_all(conn, echo::WELCOME) {
        return Ending::Failed("write", errno);
    }
    loop {
        // read(2): sleeps until the client sends something. It returns whatever has
        // arrived (part of a line, or many lines), 0 when the client has closed its side,
        // or an error such as ECONNRESET when it reset the connection.
        let n = match read(conn, &mut buf) {
            Ok(0) => return Ending::Eof,
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(errno) => return Ending::Failed("read", errno),
        };
        replies.clear();
        let status = session.feed(&buf[..n], &mut replies);
        // write(2) the replies before reading more: a client that sends without reading
        // fills its receive buffer, our write blocks, and we stop reading it. That
        // blocking is this lesson's backpressure: nothing piles up in the server.
        if let Err(errno) = io::write_all(conn, &replies) {
            return Ending::Failed("write", errno);
        }
        if let Some(ending) = Ending::from_status(status) {
            return ending;
        }
    }
}
