//! The table of connections a single-threaded server keeps (lessons 06–11), and its policy
//! for `accept(2)` failing with EMFILE.
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
//! **EMFILE policy: stop watching the listener.** When `accept` fails because the process
//! or the system is out of fds (or memory), the connection stays in the listen backlog and
//! the listener stays readable, so a server that goes back to select/poll/epoll at once is
//! woken at once, fails again, and spins at 100 % CPU. Instead, after
//! [`Clients::accept_failed`] the lesson stops asking about the listener
//! ([`Clients::watch_listener`] turns false) until a connection closes
//! ([`Clients::remove`] frees an fd), with a fallback retry after [`ACCEPT_RETRY`] in case
//! fds were freed some other way (another process, for ENFILE). The clients that could not
//! be accepted wait in the backlog (the kernel has completed their handshake) and are
//! served as soon as an fd is free. The other classic answer, keeping a spare fd open to
//! close, accept and close again (libev, nginx), turns waiting clients away instead.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::conn::EchoConn;
use crate::errors::{accept_failure, fatal, report, AcceptFailure};

/// How long the listener stays unwatched after EMFILE if no connection closes meanwhile.
pub const ACCEPT_RETRY: Duration = Duration::from_secs(1);

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
    /// Set when accept ran out of fds; cleared when a connection closes or on retry.
    accept_paused: Option<Instant>,
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
            accept_paused: None,
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
        self.accept_paused = None;
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

    /// `accept(2)` failed with `errno`: report it and apply the policy. EAGAIN (nothing
    /// to accept) is not a failure; the lesson handles it before calling this.
    /// - out of fds or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): stop watching the
    ///   listener until a connection closes or [`ACCEPT_RETRY`] passes (see the module
    ///   documentation for why);
    /// - the connection died in the queue, or a signal interrupted the call: nothing to do,
    ///   the next wake-up accepts the next one;
    /// - the listener itself is broken (EBADF, EINVAL, …): exit with the error.
    pub fn accept_failed(&mut self, errno: Errno) {
        match accept_failure(errno) {
            AcceptFailure::Retry => {
                if errno != Errno::EINTR && errno != Errno::EAGAIN {
                    report("accept", errno);
                }
            }
            AcceptFailure::Exhausted => {
                report("accept", errno);
                self.accept_paused = Some(Instant::now());
            }
            AcceptFailure::Fatal => fatal("accept", errno),
        }
    }

    /// True while the lesson should watch (or try) the listener: accept has not run out
    /// of fds, or a connection has closed since, or [`ACCEPT_RETRY`] has passed. Call it
    /// once per round, before waiting: select leaves the listener out of its read set,
    /// poll gives its entry no events, an epoll loop would take the listener out of its
    /// interest list (`EPOLL_CTL_DEL`) when this turns false and add it back when it turns
    /// true, a SIGIO or io_uring loop would not re-arm its accept.
    pub fn watch_listener(&mut self) -> bool {
        match self.accept_paused {
            Some(since) if since.elapsed() < ACCEPT_RETRY => false,
            Some(_) => {
                self.accept_paused = None;
                true
            }
            None => true,
        }
    }

    /// The longest the lesson may sleep in select/poll/epoll_wait: until the fallback
    /// retry while the listener is unwatched (rounded up to whole milliseconds, so a
    /// millisecond timeout does not wake early and spin), otherwise no limit.
    pub fn wait_limit(&self) -> Option<Duration> {
        let since = self.accept_paused?;
        let left = ACCEPT_RETRY.saturating_sub(since.elapsed());
        Some(Duration::from_millis(
            u64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u64::MAX),
        ))
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
        assert!(limit > Duration::ZERO && limit <= ACCEPT_RETRY);
        clients.remove(fd).unwrap();
        assert!(clients.watch_listener(), "a close resumes accepting");
        clients.accept_failed(Errno::ECONNABORTED);
        assert!(
            clients.watch_listener(),
            "a connection dying in the queue is no pause"
        );
    }
}
