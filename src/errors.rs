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
}
