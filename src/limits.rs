//! RLIMIT_NOFILE: how many fds this process may have open.
//!
//! The soft limit is often 1024 (a relic of select's FD_SETSIZE) while the hard limit is far
//! higher. A server that wants thousands of clients raises its soft limit to the hard
//! limit at start (any process may, up to the hard limit) and says so.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns (before, after).
pub fn raise_nofile() -> nix::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, hard))
}

/// The banner note for [`raise_nofile`]'s result.
pub fn nofile_note(result: nix::Result<(u64, u64)>) -> String {
    match result {
        Ok((before, after)) if before < after => {
            format!("RLIMIT_NOFILE raised from {before} to {after}: up to ~{after} clients")
        }
        Ok((_, after)) => format!("RLIMIT_NOFILE is {after}: up to ~{after} clients"),
        Err(errno) => format!(
            "RLIMIT_NOFILE unchanged: {}",
            crate::errors::describe("setrlimit", errno)
        ),
    }
}
