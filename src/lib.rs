//! `sockets_by_hand`: the plumbing the lessons share.
//!
//! Nothing here makes a lesson's defining calls for it: every `socket`, `bind`, `listen`,
//! `accept`, `connect`, `read`, `write`, `close` (and `poll`, `fork`, `epoll_wait`, …) a
//! lesson teaches is written out in that lesson's own files under `lessons/`. The loops that
//! lessons share are lessons' files too, mounted with `#[path]`: lesson 03's read/write loop
//! (`lessons/03-interactive/serve.rs`) in 04 and 05, lesson 12's relay in 13 and 14.
//!
//! This crate holds the rest: the command line, the banner and each lesson's title and
//! `--help` from its header ([`cli`]); TLPI-style error reporting ([`errors`]); address
//! conversions ([`net`]); the `--mistake` switch of failure-first runs ([`mistake`]); how a connection ended, for the log ([`ending`]); the one
//! accept-failure policy, sans-IO ([`accept`]); the self-pipe Ctrl-C of the single-threaded
//! loops ([`stop`]); the clock of lessons 01–02 ([`clock`]); the per-connection buffers and
//! backpressure of the single-threaded servers ([`conn`], over a reusable output buffer,
//! [`outbuf`]) and their table of connections ([`clients`]); the fd limit ([`limits`]); and
//! why a call was refused when the sandbox, not the kernel, refused it ([`sandbox`]).
//! What lesson 18 does with a captured frame (a tcpdump line or a pcap record) is [`capture`].
//! The protocols themselves (echo, SOCKS5, RESP) are the std-only `protocols` crate.

pub mod accept;
pub mod capture;
pub mod cli;
pub mod clients;
pub mod clock;
pub mod conn;
pub mod ending;
pub mod errors;
pub mod limits;
pub mod mistake;
pub mod net;
pub mod outbuf;
pub mod sandbox;
pub mod stop;

/// `eprintln!` in one `write(2)`: std's stderr is unbuffered, so `eprintln!` writes each
/// piece of its format separately, and the traces would show a log line as three writes.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::say_line(format!($($arg)*))
    };
}
