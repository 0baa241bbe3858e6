//! How a connection ended, for the `client disconnected: ADDR (…)` log line: the protocol's
//! own endings (`q`, a line too long), the peer leaving, or a failed call named TLPI style.
//! It lives here, not in the protocols crate, because a failed call is I/O.

use std::fmt;

use nix::errno::Errno;
use protocols::echo::Status;

use crate::errors;

/// How a connection ended, for the `client disconnected: ADDR (…)` log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The client sent `q`.
    Quit,
    /// The client sent a line over [`MAX_LINE`](protocols::echo::MAX_LINE).
    TooLong,
    /// `read(2)` returned 0: the client closed (or shut down) its side without `q`.
    Eof,
    /// A call on the connection failed, e.g. `read: ECONNRESET` after the client reset.
    Failed(&'static str, Errno),
}

impl Ending {
    /// The ending a [`Status`] other than `Open` asks for.
    pub fn from_status(status: Status) -> Option<Ending> {
        match status {
            Status::Open => None,
            Status::Quit => Some(Ending::Quit),
            Status::TooLong => Some(Ending::TooLong),
        }
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Quit => f.write_str("sent q"),
            Ending::TooLong => f.write_str("line too long"),
            Ending::Eof => f.write_str("left without q"),
            Ending::Failed(call, errno) => f.write_str(&errors::describe(call, *errno)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endings_read_well() {
        assert_eq!(Ending::Quit.to_string(), "sent q");
        assert_eq!(
            Ending::Failed("read", Errno::ECONNRESET).to_string(),
            "read: ECONNRESET (Connection reset by peer)"
        );
    }
}
