//! Ctrl-C for the single-threaded loops (every lesson from 06 on): the self-pipe trick.
//!
//! A signal handler may do almost nothing safely (no allocation, no lock, no `println!`), and
//! a loop asleep in select/poll/epoll_wait must still learn that the signal came. The
//! classic answer: the handler writes one byte to a pipe, and the loop watches the pipe's
//! read end like any other fd. signal-hook's `pipe::register` installs exactly that handler
//! (an async-signal-safe, non-blocking `write` that saves and restores errno). The loop then
//! stops accepting, closes its clients (each sees EOF), prints one summary line and exits 0.
//!
//! Lesson 04 does not use this: it needs its SIGINT and SIGTERM handlers installed without
//! SA_RESTART (so the `accept` it sleeps in returns EINTR and it sees the stop at once), and
//! signal-hook installs its handlers with SA_RESTART, which is why it calls sigaction itself.

use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::unistd::{dup, pipe2, read};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::errors::{fatal, OrDie};

/// `pipe2(O_NONBLOCK | O_CLOEXEC)`, with SIGINT and SIGTERM each writing a byte to its write
/// end; returns the read end, for the loop to watch. Call it before the lesson's first
/// `socket()`, so that the traces, which start there, show only the lesson's calls.
pub fn stop_pipe() -> OwnedFd {
    let (read_end, write_end) =
        pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).or_die("pipe2 (the stop pipe)");
    let second = dup(&write_end).or_die("dup (the stop pipe)");
    for (signal, end) in [(SIGINT, write_end), (SIGTERM, second)] {
        if let Err(err) = signal_hook::low_level::pipe::register(signal, end) {
            let errno = nix::errno::Errno::from_raw(err.raw_os_error().unwrap_or(0));
            fatal("sigaction (the stop pipe)", errno);
        }
    }
    read_end
}

/// True once a stop signal has come: reads (and empties) the pipe. Call it when the pipe's
/// read end is reported readable, or, in a loop that polls nothing (lesson 06), each round.
pub fn stop_requested(pipe: &OwnedFd) -> bool {
    let mut bytes = [0u8; 16];
    matches!(read(pipe, &mut bytes), Ok(n) if n > 0)
}

/// The last line a lesson prints when it stops: `lesson 08 stopping · connections served:
/// 12 · still open, closed now: 2`.
pub fn summary(lesson: &crate::cli::Lesson, served: u64, open: usize) -> String {
    format!(
        "{} stopping · connections served: {served} · still open, closed now: {open}",
        lesson.program().replace('-', " ")
    )
}
