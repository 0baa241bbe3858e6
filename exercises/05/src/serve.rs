//! Lesson 03's conversation with one client: the welcome, then a read(2) and a write(2) per
//! line. Lessons 04 and 05 mount this file (`#[path = "03-interactive/serve.rs"] mod serve;`)
//! and run the very same loop in a process or a thread per client, as Stevens'
//! tcpserv01–04 share one str_echo.
//!
//! Lesson 03's two mistakes live here, beside the code they break; lesson 03 switches them
//! on (`--mistake`), 04 and 05 never do, so for them `mistake(..)` is always false.

use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::{setsockopt, shutdown, sockopt, Shutdown};
use nix::sys::time::TimeVal;
use nix::unistd::{read, write};
use protocols::echo::{self, Echo, Status};
use sockets_by_hand::conn::{LINGER_BYTES, LINGER_TIME};
use sockets_by_hand::ending::Ending;

/// Talks the echo protocol with `conn` until `q`, EOF, a line too long or a failed call;
/// after `q` or a line too long, it lingers (see [`linger`]). It does not close `conn`:
/// the caller does, on every path.
pub fn serve_echo(conn: impl AsFd) -> Ending {
    let mut session = Echo::new();
    let mut buf = [0u8; 16 * 1024];
    let mut replies = Vec::with_capacity(buf.len() + echo::TOO_LONG.len());

    // write(2) the welcome before the client has said anything.
    if let Err(errno) = write_all(&conn, echo::WELCOME) {
        return Ending::Failed("write", errno);
    }
    loop {
        // read(2): sleeps until bytes arrive; they may be half a line or many lines.
        let n = match read(&conn, &mut buf) {
            Ok(0) => return Ending::Eof, // the client closed its side
            Ok(n) => n,
            Err(Errno::EINTR) => continue, // a signal handler ran: read again
            Err(errno) => return Ending::Failed("read", errno),
        };
        replies.clear();
        // The protocol keeps an unfinished line between reads and answers each whole one.
        let status = session.feed(&buf[..n], &mut replies);
        // write(2) the replies before reading more: a client that does not read blocks us
        // here, and that is the backpressure of a blocking server.
        if let Err(errno) = write_all(&conn, &replies) {
            return Ending::Failed("write", errno);
        }
        if let Some(ending) = Ending::from_status(status) {
            // The lingering close; `--mistake plain-close` goes straight to the caller's
            // close(2) with input unread: the kernel answers it with a reset, which throws
            // away the replies still on their way.
            return linger(&conn).unwrap_or(ending);
            return ending;
        }
    }
}

/// write(2) until every byte is taken (Stevens' writen): a socket may take fewer bytes
/// than it was given.
fn write_all(conn: impl AsFd, mut bytes: &[u8]) -> nix::Result<()> {
    while !bytes.is_empty() {
        match write(&conn, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

/// The lingering close, before the caller's close(2): the client may still be sending, and
/// a close with unread input sends a reset, which throws away the replies not yet
/// delivered. So: shutdown(SHUT_WR), then read and drop until the client closes, or
/// [`LINGER_BYTES`], or [`LINGER_TIME`]. Returns the failed call, if one did.
fn linger(conn: impl AsFd) -> Option<Ending> {
    // shutdown(SHUT_WR): the FIN goes out after the replies already written.
    if let Err(errno) = shutdown(conn.as_fd().as_raw_fd(), Shutdown::Write) {
        return Some(Ending::Failed("shutdown", errno));
    }
    // setsockopt(SO_RCVTIMEO): a read now waits LINGER_TIME at most, then fails EAGAIN.
    let timeout = TimeVal::new(LINGER_TIME.as_secs() as _, LINGER_TIME.subsec_micros() as _);
    if let Err(errno) = setsockopt(&conn, sockopt::ReceiveTimeout, &timeout) {
        return Some(Ending::Failed("setsockopt(SO_RCVTIMEO)", errno));
    }
    let until = Instant::now() + LINGER_TIME;
    let mut buf = [0u8; 16 * 1024];
    let mut left = LINGER_BYTES;
    while left > 0 && Instant::now() < until {
        // read(2) and drop; 0 (the client closed), EAGAIN (the timeout) or an error (it
        // reset) ends the lingering.
        match read(&conn, &mut buf) {
            Ok(0) => return None,
            Ok(n) => left = left.saturating_sub(n),
            Err(Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
    None
}

