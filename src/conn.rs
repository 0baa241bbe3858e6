//! One echo connection's state in a single-threaded server (the event loops from lesson 06
//! on; lesson 10's handler keeps its own state, and takes only the constants from here):
//! the protocol state, the replies not yet written, and the backpressure rule. Sans-IO like
//! [`protocols::echo`]: the lesson does the `read`/`write` (or the io_uring submissions) and
//! tells this value what happened.
//!
//! Backpressure: a client that sends lines without reading the replies would make the
//! server buffer replies without bound. [`EchoConn::wants_read`] turns false once
//! [`HIGH_WATER`] bytes of replies are pending, so the lesson stops asking to read that
//! client (no POLLIN / no EPOLLIN / no read submission) until the replies drain. The bytes
//! it does not read stay in the kernel's socket buffers, the client's writes block, and the
//! server's memory stays bounded at about `HIGH_WATER + READ_CHUNK` per connection.
//!
//! Lingering close: once the conversation is over (`q`, or a line too long) and the replies
//! are written, [`EchoConn::wants_shutdown`] asks the lesson for `shutdown(SHUT_WR)`; then
//! the connection keeps reading, and drops, what the client still sends, until it closes,
//! [`LINGER_BYTES`] have been dropped or [`LINGER_TIME`] has passed (checked when the
//! client next wakes the loop). A plain `close` with unread input would send a reset, and
//! the reset throws away the replies still queued: see docs/conventions.md.
//!
//! No allocation per request: the reply buffer ([`OutBuf`]) keeps its capacity and is
//! compacted in place.

use std::time::{Duration, Instant};

use crate::outbuf::OutBuf;
use protocols::echo::{Echo, Status, TOO_LONG, WELCOME};

/// Replies pending for one client beyond which the server stops reading from it.
pub const HIGH_WATER: usize = 1 << 20;
/// The most a lesson reads from one client per wake-up (its read buffer size).
pub const READ_CHUNK: usize = 16 * 1024;

/// The longest a lingering close keeps reading after `shutdown(SHUT_WR)`.
pub const LINGER_TIME: Duration = Duration::from_secs(1);
/// The most a lingering close reads and drops after `shutdown(SHUT_WR)`.
pub const LINGER_BYTES: usize = 4 << 20;

/// Protocol state plus pending output for one client.
#[derive(Debug)]
pub struct EchoConn {
    echo: Echo,
    out: OutBuf,
    peer_done: bool,
    /// Set by [`shut_down`](Self::shut_down): until when, and how many bytes more, to drain.
    linger: Option<(Instant, usize)>,
}

impl Default for EchoConn {
    fn default() -> Self {
        Self::new()
    }
}

impl EchoConn {
    /// A new connection, with the welcome already queued.
    pub fn new() -> Self {
        Self::with_reply_capacity(4 * 1024)
    }

    /// The same, with room for `bytes` of replies before the reply buffer first grows (it
    /// keeps what it grew to). 0 allocates only what the welcome takes: an idle client then
    /// holds almost nothing (lesson 15).
    pub fn with_reply_capacity(bytes: usize) -> Self {
        let mut out = OutBuf::with_capacity(bytes);
        out.push(WELCOME);
        EchoConn {
            echo: Echo::new(),
            out,
            peer_done: false,
            linger: None,
        }
    }

    /// Feeds bytes the lesson read; their replies join the pending output. After
    /// [`shut_down`](Self::shut_down) they are only counted and dropped.
    pub fn received(&mut self, bytes: &[u8]) -> Status {
        if let Some((_, left)) = &mut self.linger {
            *left = left.saturating_sub(bytes.len());
            return self.echo.status();
        }
        let echo = &mut self.echo;
        self.out.append_with(|out| echo.feed(bytes, out))
    }

    /// The client closed its side (read returned 0): nothing more will arrive.
    pub fn peer_closed(&mut self) {
        self.peer_done = true;
    }

    /// The replies not yet written, for the next `write`/`send`.
    pub fn pending(&self) -> &[u8] {
        self.out.pending()
    }

    /// `n` bytes of [`pending`](Self::pending) were written.
    pub fn wrote(&mut self, n: usize) {
        self.out.wrote(n);
    }

    /// True while the lesson should read from this client: the protocol is still open,
    /// the client has not closed its side, and the pending replies are under
    /// [`HIGH_WATER`].
    /// While lingering after `shutdown(SHUT_WR)`, it is true until the client closes.
    pub fn wants_read(&self) -> bool {
        if self.linger.is_some() {
            return !self.peer_done;
        }
        self.echo.status().is_open() && !self.peer_done && self.pending().len() < HIGH_WATER
    }

    /// True while replies are waiting to be written.
    pub fn wants_write(&self) -> bool {
        !self.pending().is_empty()
    }

    /// True once the lesson should `shutdown(SHUT_WR)`: the client quit or sent an
    /// over-long line (and may still be sending), and every reply has been written.
    pub fn wants_shutdown(&self) -> bool {
        !self.echo.status().is_open()
            && !self.peer_done
            && self.linger.is_none()
            && self.pending().is_empty()
    }

    /// The lesson called `shutdown(SHUT_WR)`: from now on, input is drained, not answered.
    /// Logs the client's goodbye (`client disconnected: PEER (how it ended)`): the FIN is out.
    pub fn shut_down(&mut self, peer: &str) {
        self.linger = Some((Instant::now() + LINGER_TIME, LINGER_BYTES));
        crate::say!("client disconnected: {peer} ({})", self.ending());
    }

    /// True once `shutdown(SHUT_WR)` was called (the ending is already logged).
    pub fn lingering(&self) -> bool {
        self.linger.is_some()
    }

    /// True once the connection should be closed: every reply is written, and the client
    /// closed its side, or the lingering after `q` / a line too long is over (the client
    /// closed, [`LINGER_BYTES`] drained or [`LINGER_TIME`] passed).
    pub fn finished(&self) -> bool {
        if let Some((until, left)) = self.linger {
            return self.peer_done || left == 0 || Instant::now() >= until;
        }
        self.peer_done && self.pending().is_empty()
    }

    /// The protocol status (`Open`, `Quit`, `TooLong`).
    pub fn status(&self) -> Status {
        self.echo.status()
    }

    /// How the connection ended, once [`finished`](Self::finished): `q`, too long, or EOF.
    pub fn ending(&self) -> crate::ending::Ending {
        crate::ending::Ending::from_status(self.echo.status()).unwrap_or(crate::ending::Ending::Eof)
    }

    /// Bytes held for this client (pending replies and an unfinished line).
    pub fn held(&self) -> usize {
        self.pending().len() + self.echo.buffered()
    }
}

/// The largest reply one [`READ_CHUNK`] of input can produce.
pub const MAX_REPLY_PER_READ: usize = READ_CHUNK + TOO_LONG.len();

#[cfg(test)]
mod tests {
    use super::*;
    use protocols::echo;

    #[test]
    fn welcome_then_replies() {
        let mut c = EchoConn::new();
        assert_eq!(c.pending(), WELCOME);
        c.wrote(WELCOME.len());
        assert!(!c.wants_write());
        c.received(b"abc\n");
        assert_eq!(c.pending(), b"cba\n");
        c.wrote(1);
        assert_eq!(c.pending(), b"ba\n");
        c.wrote(3);
        assert!(!c.wants_write() && c.wants_read() && !c.finished());
    }

    #[test]
    fn quit_shuts_down_after_flush_then_drains() {
        let mut c = EchoConn::new();
        c.received(b"x\nq\n");
        assert!(!c.wants_read());
        assert!(
            !c.wants_shutdown() && !c.finished(),
            "replies still pending"
        );
        let n = c.pending().len();
        c.wrote(n);
        assert!(c.wants_shutdown() && !c.finished());
        c.shut_down("test");
        assert!(!c.wants_shutdown() && c.lingering());
        assert!(
            c.wants_read() && !c.finished(),
            "drains what the client still sends"
        );
        c.received(b"junk\nmore junk\n");
        assert!(!c.wants_write(), "drained input is not answered");
        c.peer_closed();
        assert!(c.finished() && !c.wants_read());
        assert_eq!(c.ending(), crate::ending::Ending::Quit);
    }

    #[test]
    fn lingering_is_bounded_in_bytes() {
        let mut c = EchoConn::new();
        c.wrote(WELCOME.len());
        c.received(&vec![b'x'; echo::MAX_LINE + 2]);
        let n = c.pending().len();
        c.wrote(n);
        c.shut_down("test");
        let chunk = vec![b'x'; READ_CHUNK];
        let mut reads = 0;
        while !c.finished() {
            c.received(&chunk);
            reads += 1;
            assert!(reads <= LINGER_BYTES / READ_CHUNK);
        }
        assert_eq!(c.ending(), crate::ending::Ending::TooLong);
    }

    #[test]
    fn eof_finishes_after_flush() {
        let mut c = EchoConn::new();
        c.received(b"abc\n");
        c.peer_closed();
        assert!(!c.finished() && !c.wants_read());
        let n = c.pending().len();
        c.wrote(n);
        assert!(c.finished());
        assert_eq!(c.ending(), crate::ending::Ending::Eof);
    }

    #[test]
    fn stops_reading_at_high_water_and_resumes() {
        let mut c = EchoConn::new();
        let chunk = b"0123456789012345678901234567890\n".repeat(READ_CHUNK / 32);
        let mut reads = 0;
        while c.wants_read() {
            c.received(&chunk);
            reads += 1;
            assert!(reads < 10_000);
        }
        assert!(c.pending().len() >= HIGH_WATER);
        assert!(c.pending().len() < HIGH_WATER + MAX_REPLY_PER_READ);
        // The client reads half: still above? drain until under the mark.
        while !c.wants_read() {
            let n = c.pending().len().min(7000);
            c.wrote(n);
        }
        assert!(c.pending().len() < HIGH_WATER);
    }

    #[test]
    fn compaction_keeps_order() {
        let mut c = EchoConn::new();
        c.wrote(WELCOME.len());
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for i in 0..1000 {
            let line = format!("{i}\n");
            c.received(line.as_bytes());
            expected
                .extend(format!("{}\n", i.to_string().chars().rev().collect::<String>()).bytes());
            let n = (c.pending().len() / 2).max(1);
            got.extend_from_slice(&c.pending()[..n]);
            c.wrote(n);
        }
        got.extend_from_slice(c.pending());
        assert_eq!(got, expected);
    }
}
