//! The admission hook: who may CONNECT, asked between a complete request and the connect.
//!
//! Lesson 12 lets everyone in (`AllowAll`, in main.rs). Lesson 13 asks Redis: a hook that
//! must ask someone brings its own fds into the relay's poll loop ([`Admission::watch`]) and
//! gets their events back ([`Admission::ready`]); everything stays in one thread.

use std::net::SocketAddr;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags};
use protocols::socks5::{Reply, Target};

/// One client connection: its slot in the loop and a serial number, so a reused slot is
/// never mistaken for the client that left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub slot: usize,
    pub serial: u64,
}

/// The answer to "may this client CONNECT?".
#[derive(Debug, Clone, PartialEq, Eq)]
// Lesson 12 only ever allows; lesson 13 refuses and answers later.
#[allow(dead_code)]
pub enum Verdict {
    /// Go on: resolve and connect.
    Allow,
    /// Send this reply (0x02 "not allowed", 0x01 when the rule store is down) and close;
    /// the text goes into the connection's log line.
    Refuse(Reply, String),
    /// No answer yet: it comes later through [`Admission::ready`]. The client waits until
    /// then or until its handshake deadline.
    Later,
}

pub trait Admission {
    /// `client` finished its handshake and asks to CONNECT to `target`.
    fn admit(&mut self, id: ConnId, client: SocketAddr, target: &Target) -> Verdict;

    /// Push the fds to watch in the next poll(2), with the events wanted.
    fn watch<'a>(&'a self, _fds: &mut Vec<PollFd<'a>>) {}

    /// When [`ready`](Admission::ready) wants to run even if none of its fds has an event
    /// (a reconnect backoff, say).
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Called after every poll(2): `revents[i]` is what poll reported for the i-th fd
    /// [`watch`](Admission::watch) pushed. Answers for clients left at [`Verdict::Later`]
    /// go into `verdicts` (answers for clients that are gone are ignored).
    fn ready(
        &mut self,
        _now: Instant,
        _revents: &[PollFlags],
        _verdicts: &mut Vec<(ConnId, Verdict)>,
    ) {
    }

    /// An address no client may reach through the relay (lesson 13: its Redis).
    fn guarded(&self) -> Option<SocketAddr> {
        None
    }

    /// A client left at [`Verdict::Later`] is gone before its answer: forget it.
    fn forget(&mut self, _id: ConnId) {}
}
