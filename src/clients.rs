//! The table of connections the select and poll lessons keep (06–08), with the accept
//! pause after EMFILE.
//!
//! [`Clients`] is a slab keyed by file descriptor: the entry for fd 7 is slot 7. Every
//! readiness API names connections by fd (select's bit sets, a pollfd's `fd`, the `si_fd`
//! of a SIGIO, the `data` of an epoll event, the `user_data` of an io_uring completion), so
//! the lesson finds a connection's state from what the kernel reported in O(1), and the
//! kernel never hands out an fd number that is already in use, so slots never collide.
//! Each entry owns its socket ([`OwnedFd`]) and the connection's state (an
//! [`EchoConn`](crate::conn::EchoConn) by default). The table makes no system calls: the
//! lesson accepts, reads, writes and closes, and tells the table what it did.
//!
//! **EMFILE:** the table holds the lesson's [`AcceptPause`] (src/accept.rs says why a loop
//! stops watching the listener when accept runs out of fds) and resumes it whenever a
//! connection is removed, since a close frees an fd.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::accept::{AcceptPause, RETRY};
use crate::conn::EchoConn;

/// One connection: its socket, the peer's address (for log lines) and its state.
#[derive(Debug)]
pub struct Client<S = EchoConn> {
    /// The connected socket; dropping it would close it, but the lessons `close(2)` it
    /// themselves (see [`Clients::remove`]).
    pub fd: OwnedFd,
    /// `getpeername(2)` as text, e.g. `127.0.0.1:53422`.
    pub peer: String,
    /// The protocol state and pending output.
    pub conn: S,
}

/// The connections of a single-threaded server, keyed by fd, and whether it is accepting.
#[derive(Debug)]
pub struct Clients<S = EchoConn> {
    slots: Vec<Option<Client<S>>>,
    count: usize,
    /// Whether accept is paused after running out of fds.
    pause: AcceptPause,
}

impl<S> Default for Clients<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Clients<S> {
    /// An empty table.
    pub fn new() -> Self {
        Clients {
            slots: Vec::new(),
            count: 0,
            pause: AcceptPause::new(RETRY),
        }
    }

    /// Adds a just-accepted connection with state `conn`; returns its fd, the key.
    pub fn insert(&mut self, fd: OwnedFd, peer: String, conn: S) -> RawFd {
        let key = fd.as_raw_fd();
        let slot = usize::try_from(key).expect("an open fd is not negative");
        if slot >= self.slots.len() {
            self.slots.resize_with(slot + 1, || None);
        }
        debug_assert!(self.slots[slot].is_none(), "fd {key} is already a client");
        if self.slots[slot]
            .replace(Client { fd, peer, conn })
            .is_none()
        {
            self.count += 1;
        }
        key
    }

    /// The connection on fd `fd`, if there is one.
    pub fn get_mut(&mut self, fd: RawFd) -> Option<&mut Client<S>> {
        let slot = usize::try_from(fd).ok()?;
        self.slots.get_mut(slot)?.as_mut()
    }

    /// Takes the connection on fd `fd` out of the table, for the lesson to `close(2)`.
    /// A connection closing frees an fd, so a listener paused by [`Self::accept_failed`]
    /// is watched again.
    pub fn remove(&mut self, fd: RawFd) -> Option<Client<S>> {
        let slot = usize::try_from(fd).ok()?;
        let client = self.slots.get_mut(slot)?.take()?;
        self.count -= 1;
        self.pause.resume();
        // Keep the slab no longer than the highest fd in use, so scans over `fds()` stay short.
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        Some(client)
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when there are no connections.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every fd number that may hold a connection, lowest first (up to the highest in use).
    /// A range, not a borrow, so the lesson can remove connections while it walks it;
    /// [`Self::get_mut`] returns None for the numbers that are not connections.
    pub fn fds(&self) -> std::ops::Range<RawFd> {
        0..RawFd::try_from(self.slots.len()).unwrap_or(RawFd::MAX)
    }

    /// The connections, lowest fd first.
    pub fn iter(&self) -> impl Iterator<Item = &Client<S>> {
        self.slots.iter().flatten()
    }

    /// Ctrl-C: closes every connection (each client reads EOF), reporting a failed close;
    /// returns how many were open, for the summary line. The lesson's own `close` of a
    /// client that leaves stays in the lesson: this is the stop path only.
    pub fn close_all(&mut self) -> usize {
        let open = self.len();
        for fd in self.fds() {
            if let Some(client) = self.remove(fd) {
                if let Err(errno) = nix::unistd::close(client.fd) {
                    crate::errors::report("close", errno);
                }
            }
        }
        open
    }

    /// `accept(2)` failed with `errno`: report it and apply the policy of
    /// [`AcceptPause::failed`]. EAGAIN (nothing to accept) is no failure; the lesson handles
    /// it before calling this.
    pub fn accept_failed(&mut self, errno: Errno) {
        self.pause.failed(errno);
    }

    /// True while the lesson should watch (or try) the listener ([`AcceptPause::watching`]).
    /// Call it once per round, before waiting (or trying): lesson 06 does not try accept,
    /// select leaves the listener out of its read set, poll gives its entry no events.
    pub fn watch_listener(&mut self) -> bool {
        self.pause.watching(Instant::now())
    }

    /// The longest the lesson may sleep in select or poll ([`AcceptPause::wait_limit`]).
    pub fn wait_limit(&self) -> Option<Duration> {
        self.pause.wait_limit(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn socket() -> OwnedFd {
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
        socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap()
    }

    #[test]
    fn keyed_by_fd() {
        let mut clients: Clients<u32> = Clients::new();
        let a = socket();
        let b = socket();
        let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
        assert_eq!(clients.insert(a, "a".into(), 1), fa);
        assert_eq!(clients.insert(b, "b".into(), 2), fb);
        assert_eq!(clients.len(), 2);
        assert_eq!(clients.get_mut(fb).unwrap().conn, 2);
        assert_eq!(clients.fds().end, fa.max(fb) + 1);
        let taken = clients.remove(fa).unwrap();
        assert_eq!(taken.fd.as_fd().as_raw_fd(), fa);
        assert!(clients.get_mut(fa).is_none());
        assert!(clients.remove(fa).is_none());
        assert_eq!(clients.iter().map(|c| c.conn).collect::<Vec<_>>(), [2]);
        clients.remove(fb).unwrap();
        assert!(clients.is_empty());
        assert_eq!(clients.fds(), 0..0, "the slab shrinks with the highest fd");
    }

    #[test]
    fn emfile_pauses_until_a_close() {
        let mut clients: Clients<()> = Clients::new();
        let s = socket();
        let fd = clients.insert(s, "x".into(), ());
        assert!(clients.watch_listener());
        assert_eq!(clients.wait_limit(), None);
        clients.accept_failed(Errno::EMFILE);
        assert!(!clients.watch_listener());
        let limit = clients.wait_limit().unwrap();
        assert!(limit > Duration::ZERO && limit <= RETRY);
        clients.remove(fd).unwrap();
        assert!(clients.watch_listener(), "a close resumes accepting");
        clients.accept_failed(Errno::ECONNABORTED);
        assert!(
            clients.watch_listener(),
            "a connection dying in the queue is no pause"
        );
    }
}
