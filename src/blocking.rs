//! The blocking serve loop of the echo protocol: one client, one thread of control, plain
//! `read(2)` and `write(2)` that sleep until they can go on.
//!
//! Lessons 03 (serial), 04 (a process per client) and 05 (a thread per client) differ in who
//! runs this loop, not in the loop itself, so it lives here once; each lesson's own file
//! shows what it teaches: the accept loop, `fork`, `clone3`. The calls are still nix's thin
//! wrappers, so `strace` shows a `read` and a `write` per line whichever lesson runs it.

use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::unistd::read;

use crate::ending::Ending;
use crate::io;
use protocols::echo::{self, Echo};

/// Talks the echo protocol with one client until it quits, leaves or fails: writes the
/// welcome, then reads whatever arrives and writes the replies, until `q`, an over-long
/// line, EOF or an error. Does not close `conn`: the caller does, on every path.
pub fn serve_echo<Fd: AsFd>(conn: Fd) -> Ending {
    let mut session = Echo::new();
    let mut buf = [0u8; 16 * 1024];
    let mut replies = Vec::with_capacity(buf.len() + echo::TOO_LONG.len());

    // write(2) the welcome before the client has said anything.
    if let Err(errno) = io::write_all(&conn, echo::WELCOME) {
        return Ending::Failed("write", errno);
    }
    loop {
        // read(2): sleeps until the client sends something. It returns whatever has
        // arrived (part of a line, or many lines), 0 when the client has closed its side,
        // or an error such as ECONNRESET when it reset the connection. EINTR (a signal
        // handler ran, and it was installed without SA_RESTART): just read again.
        let n = match read(&conn, &mut buf) {
            Ok(0) => return Ending::Eof,
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(errno) => return Ending::Failed("read", errno),
        };
        replies.clear();
        let status = session.feed(&buf[..n], &mut replies);
        // write(2) the replies before reading more: a client that sends without reading
        // fills its receive buffer, our write blocks, and we stop reading it. That
        // blocking is the backpressure of the blocking lessons: nothing piles up here.
        if let Err(errno) = io::write_all(&conn, &replies) {
            return Ending::Failed("write", errno);
        }
        if let Some(ending) = Ending::from_status(status) {
            return ending;
        }
    }
}
