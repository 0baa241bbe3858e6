//! What a server does when `accept(2)` fails: one policy, sans-IO, for every lesson.
//!
//! [`AcceptPause`] makes no system call: the lesson tells it that accept failed (and that a
//! connection closed), and asks it whether to watch the listener and how long it may sleep.
//! Each lesson keeps only its own way of not watching: select leaves the listener out of its
//! read set, poll gives its entry no events, epoll takes it out with `EPOLL_CTL_MOD`,
//! io_uring submits no accept until a timeout, a blocking loop sleeps.
//!
//! **Why pause.** When `accept` fails because the process or the system is out of fds (or
//! memory), the connection stays in the listen backlog and the listener stays readable. A
//! loop that goes back to select/poll/epoll at once is woken at once, fails again, and spins
//! at 100 % CPU. So after EMFILE, ENFILE, ENOBUFS or ENOMEM the lesson stops asking about the
//! listener until a connection closes ([`AcceptPause::resume`]: an fd is free again) or the
//! retry interval passes (fds freed some other way: another process, for ENFILE). The
//! clients that could not be accepted wait in the backlog (the kernel completed their
//! handshake) and are served as soon as an fd is free. The other classic answer, a spare fd
//! to close, accept and close again (libev, nginx), turns the waiting clients away instead.

use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::errors::{fatal, report};

/// The retry interval of the event loops (their closes resume accepting sooner).
pub const RETRY: Duration = Duration::from_secs(1);
/// The retry interval of the blocking lessons, which cannot wait for a close.
pub const BLOCKING_RETRY: Duration = Duration::from_millis(100);

/// What an `accept(2)` errno means for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptFailure {
    /// Nothing is wrong with the listener: a signal interrupted the call, nothing was
    /// waiting (EAGAIN), the connection died in the queue (ECONNABORTED), or Linux passed a
    /// pending network error on (accept(2), "Error handling"). Call accept again.
    Retry,
    /// The process or the system is out of something (EMFILE, ENFILE, ENOBUFS, ENOMEM):
    /// calling accept again at once fails again. Pause.
    Exhausted,
    /// The listener itself is unusable (EBADF, EINVAL, ENOTSOCK, …): give up.
    Fatal,
}

impl AcceptFailure {
    /// Sorts an `accept(2)` errno.
    pub fn of(errno: Errno) -> AcceptFailure {
        match errno {
            Errno::EINTR
            | Errno::EAGAIN
            | Errno::ECONNABORTED
            | Errno::EPROTO
            | Errno::EPERM
            | Errno::ENETDOWN
            | Errno::ENOPROTOOPT
            | Errno::EHOSTDOWN
            | Errno::ENONET
            | Errno::EHOSTUNREACH
            | Errno::EOPNOTSUPP
            | Errno::ENETUNREACH => AcceptFailure::Retry,
            Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM => {
                AcceptFailure::Exhausted
            }
            _ => AcceptFailure::Fatal,
        }
    }
}

/// Whether the listener is being watched, and since when it is not.
#[derive(Debug, Clone)]
pub struct AcceptPause {
    retry: Duration,
    paused_since: Option<Instant>,
    /// Exhaustion is reported once per pause, not once per failed accept.
    reported: bool,
}

impl AcceptPause {
    /// A policy that retries `retry` after a pause began, if no close resumed it earlier.
    pub fn new(retry: Duration) -> Self {
        AcceptPause {
            retry,
            paused_since: None,
            reported: false,
        }
    }

    /// The sans-IO core: accept failed with `errno` at `now`. Returns what it means, and
    /// pauses on [`AcceptFailure::Exhausted`].
    pub fn on_error(&mut self, errno: Errno, now: Instant) -> AcceptFailure {
        let failure = AcceptFailure::of(errno);
        if failure == AcceptFailure::Exhausted {
            self.paused_since = Some(now);
        }
        failure
    }

    /// [`on_error`](Self::on_error) now, with the TLPI-style report: exhaustion once per
    /// episode (`accept: EMFILE (Too many open files)`), a transient error each time
    /// (EINTR and EAGAIN, which are not errors, never), and a broken listener ends the
    /// program with the error.
    pub fn failed(&mut self, errno: Errno) {
        match self.on_error(errno, Instant::now()) {
            AcceptFailure::Retry => {
                if errno != Errno::EINTR && errno != Errno::EAGAIN {
                    report("accept", errno);
                }
            }
            AcceptFailure::Exhausted => {
                if !self.reported {
                    report("accept", errno);
                    self.reported = true;
                }
            }
            AcceptFailure::Fatal => fatal("accept", errno),
        }
    }

    /// A connection closed: an fd is free, so accept can go on at once.
    pub fn resume(&mut self) {
        self.paused_since = None;
    }

    /// True while the lesson should watch (or try) the listener at `now`: no pause, or the
    /// pause has lasted its retry interval. Ask once per round, before waiting.
    pub fn watching(&mut self, now: Instant) -> bool {
        match self.paused_since {
            Some(since) if now.saturating_duration_since(since) < self.retry => false,
            Some(_) => {
                self.paused_since = None;
                true
            }
            None => {
                self.reported = false;
                true
            }
        }
    }

    /// The longest the lesson may sleep at `now` (in select, poll, epoll_wait, a blocking
    /// sleep): until the retry while paused, rounded up to whole milliseconds so that a
    /// millisecond timeout does not wake early and spin; otherwise no limit.
    pub fn wait_limit(&self, now: Instant) -> Option<Duration> {
        let since = self.paused_since?;
        let left = self
            .retry
            .saturating_sub(now.saturating_duration_since(since));
        Some(Duration::from_millis(
            u64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u64::MAX),
        ))
    }

    /// For a blocking accept loop, after [`failed`](Self::failed): sleep out the pause
    /// (a blocking lesson has nothing else to wait on), then accept again.
    pub fn sleep_if_paused(&mut self) {
        if let Some(limit) = self.wait_limit(Instant::now()) {
            std::thread::sleep(limit);
        }
        self.watching(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_are_sorted() {
        assert_eq!(AcceptFailure::of(Errno::EINTR), AcceptFailure::Retry);
        assert_eq!(AcceptFailure::of(Errno::ECONNABORTED), AcceptFailure::Retry);
        assert_eq!(AcceptFailure::of(Errno::EMFILE), AcceptFailure::Exhausted);
        assert_eq!(AcceptFailure::of(Errno::ENFILE), AcceptFailure::Exhausted);
        assert_eq!(AcceptFailure::of(Errno::EBADF), AcceptFailure::Fatal);
    }

    #[test]
    fn exhaustion_pauses_until_a_close_or_the_retry() {
        let t0 = Instant::now();
        let mut pause = AcceptPause::new(RETRY);
        assert!(pause.watching(t0));
        assert_eq!(pause.wait_limit(t0), None);
        assert_eq!(pause.on_error(Errno::EMFILE, t0), AcceptFailure::Exhausted);
        assert!(!pause.watching(t0 + Duration::from_millis(10)));
        assert_eq!(
            pause.wait_limit(t0 + Duration::from_micros(300_500)),
            Some(Duration::from_millis(700)),
            "rounded up to whole milliseconds"
        );
        pause.resume();
        assert!(pause.watching(t0), "a close resumes accepting");
        pause.on_error(Errno::ENFILE, t0);
        assert!(!pause.watching(t0 + RETRY - Duration::from_millis(1)));
        assert!(pause.watching(t0 + RETRY), "the retry resumes it too");
        assert_eq!(
            pause.on_error(Errno::ECONNABORTED, t0),
            AcceptFailure::Retry
        );
        assert!(
            pause.watching(t0),
            "a connection dying in the queue is no pause"
        );
    }
}
