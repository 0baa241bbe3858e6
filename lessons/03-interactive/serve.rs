//! Lesson 03's conversation with one client: the welcome, then a read(2) and a write(2) per
//! line. Lessons 04 and 05 mount this file (`#[path = "03-interactive/serve.rs"] mod serve;`)
//! and run the very same loop in a process or a thread per client, as Stevens'
//! tcpserv01–04 share one str_echo.

use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::unistd::{read, write};
use protocols::echo::{self, Echo};
use sockets_by_hand::ending::Ending;

/// Talks the echo protocol with `conn` until `q`, EOF, a line too long or a failed call.
/// It does not close `conn`: the caller does, on every path.
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
        let status = session.feed(&buf[..n], &mut replies);
        // write(2) the replies before reading more: a client that does not read blocks us
        // here, and that is the backpressure of a blocking server.
        if let Err(errno) = write_all(&conn, &replies) {
            return Ending::Failed("write", errno);
        }
        if let Some(ending) = Ending::from_status(status) {
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
