//! An output buffer for a non-blocking connection: bytes queued by the program, written
//! to the socket as the kernel takes them (lesson 10's `send_data`).
//!
//! The buffer keeps its allocation: once every byte is written it is cleared, and when
//! more than half has been written the rest moves to the front, so a steady stream of
//! small writes does not allocate. [`crate::conn::EchoConn`] keeps its replies in one.

/// Bytes waiting to be written, and how many of them already were.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    sent: usize,
}

impl OutBuf {
    /// An empty buffer with room for `capacity` bytes before it first grows.
    pub fn with_capacity(capacity: usize) -> Self {
        OutBuf {
            buf: Vec::with_capacity(capacity),
            sent: 0,
        }
    }

    /// Queues `bytes` after what is pending.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Lets `append` add bytes at the end of the buffer (a sans-IO codec that writes into
    /// a `Vec`); it must only append.
    pub fn append_with<R>(&mut self, append: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let before = self.buf.len();
        let result = append(&mut self.buf);
        debug_assert!(
            self.buf.len() >= before,
            "OutBuf::append_with may only append"
        );
        result
    }

    /// The bytes not yet written, for the next `write`/`send`.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.sent..]
    }

    /// `n` bytes of [`pending`](Self::pending) were written.
    pub fn wrote(&mut self, n: usize) {
        self.sent += n;
        debug_assert!(self.sent <= self.buf.len());
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
        } else if self.sent >= self.buf.len() / 2 {
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.sent == self.buf.len()
    }

    /// How many bytes are waiting.
    pub fn len(&self) -> usize {
        self.buf.len() - self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_partial_writes() {
        let mut out = OutBuf::with_capacity(16);
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for i in 0..500u32 {
            let piece = i.to_string();
            out.push(piece.as_bytes());
            want.extend_from_slice(piece.as_bytes());
            let n = (out.len() / 3).max(1);
            got.extend_from_slice(&out.pending()[..n]);
            out.wrote(n);
        }
        got.extend_from_slice(out.pending());
        let n = out.len();
        out.wrote(n);
        assert_eq!(got, want);
        assert_eq!(out.len(), 0);
        assert!(out.is_empty() && out.pending().is_empty());
    }

    #[test]
    fn reuses_its_allocation() {
        let mut out = OutBuf::with_capacity(64);
        let cap = out.buf.capacity();
        for _ in 0..1000 {
            out.push(b"0123456789");
            out.wrote(7);
            out.wrote(out.len());
        }
        assert_eq!(out.buf.capacity(), cap);
    }
}
