//! Errors the TLPI way: the failing call's name, the symbolic errno, and its text.
//!
//! `accept: EMFILE (Too many open files)` tells a learner which call failed and why, and the
//! symbolic name is what `man 2 accept` lists under ERRORS. nix's [`Errno`] prints its
//! symbolic name with `{:?}` and the C library's text with [`Errno::desc`].

use nix::errno::Errno;

/// `call: ESYMBOL (text)`, e.g. `accept: EMFILE (Too many open files)`.
pub fn describe(call: &str, errno: Errno) -> String {
    format!("{call}: {errno:?} ({})", errno.desc())
}

/// Prints [`describe`] on stderr; for failures that end one connection, not the server.
pub fn report(call: &str, errno: Errno) {
    crate::cli::say_line(describe(call, errno));
}

/// Prints [`describe`] on stderr and exits with status 1; for failures the lesson cannot
/// go on after (the listening socket cannot be created, bound, …).
pub fn fatal(call: &str, errno: Errno) -> ! {
    report(call, errno);
    std::process::exit(1)
}

/// `socket(...).or_die("socket")`: the lesson's set-up calls read as one line each.
pub trait OrDie<T> {
    /// The value, or [`fatal`] with the call's name.
    fn or_die(self, call: &str) -> T;
}

impl<T> OrDie<T> for nix::Result<T> {
    fn or_die(self, call: &str) -> T {
        self.unwrap_or_else(|errno| fatal(call, errno))
    }
}

/// What a server should do after `accept(2)` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptFailure {
    /// Nothing is wrong with the listener: a signal interrupted the call, or the connection
    /// died in the queue (ECONNABORTED), or Linux passed a pending network error on
    /// (accept(2), "Error handling"). Call accept again.
    Retry,
    /// The process or the system is out of something (EMFILE, ENFILE, ENOBUFS, ENOMEM).
    /// Calling accept again at once fails again: a loop that does so spins at 100 % CPU.
    /// Wait for a connection to close (or a short while), then try again.
    Exhausted,
    /// The listener itself is unusable (EBADF, EINVAL, ENOTSOCK, …): give up.
    Fatal,
}

/// Sorts an `accept(2)` errno into [`AcceptFailure`].
pub fn accept_failure(errno: Errno) -> AcceptFailure {
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
        Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM => AcceptFailure::Exhausted,
        _ => AcceptFailure::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_call_symbol_and_text() {
        assert_eq!(
            describe("accept", Errno::EMFILE),
            "accept: EMFILE (Too many open files)"
        );
        assert_eq!(
            describe("bind", Errno::EADDRINUSE),
            "bind: EADDRINUSE (Address already in use)"
        );
    }

    #[test]
    fn accept_failures_are_sorted() {
        assert_eq!(accept_failure(Errno::EINTR), AcceptFailure::Retry);
        assert_eq!(accept_failure(Errno::ECONNABORTED), AcceptFailure::Retry);
        assert_eq!(accept_failure(Errno::EMFILE), AcceptFailure::Exhausted);
        assert_eq!(accept_failure(Errno::ENFILE), AcceptFailure::Exhausted);
        assert_eq!(accept_failure(Errno::EBADF), AcceptFailure::Fatal);
    }
}
