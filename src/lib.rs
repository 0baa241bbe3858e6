//! `sockets_by_hand`: what the lessons share.
//!
//! Nothing here makes a lesson's system calls for it: every `socket`, `bind`, `listen`,
//! `accept`, `read`, `write`, `close` (and `poll`, `fork`, …) is written out in the lesson file
//! under `lessons/`. This crate holds the rest: the command line and banner ([`cli`]), the
//! sans-IO echo protocol ([`echo`]), TLPI-style error reporting ([`errors`]), address
//! conversions ([`net`]), the `write(2)` loop of the blocking lessons ([`io`]) and their
//! echo serve loop ([`blocking`]), the clock of lessons 01–02 ([`hello`]), the
//! per-connection buffers and backpressure of the single-threaded servers ([`conn`], over a
//! reusable output buffer, [`outbuf`]) and their table of connections with its EMFILE
//! policy ([`clients`]), the fd limit ([`limits`]), and the sans-IO codecs of the SOCKS5
//! lessons: RFC 1928/1929 ([`socks5`]) and the few RESP frames of lesson 13's Redis
//! allowlist ([`resp`]).

pub mod accept;
pub mod blocking;
pub mod cli;
pub mod clients;
pub mod conn;
pub mod ending;
pub mod errors;
pub mod hello;
pub mod io;
pub mod limits;
pub mod net;
pub mod outbuf;
pub mod stop;

/// `eprintln!` in one `write(2)`: std's stderr is unbuffered, so `eprintln!` writes each
/// piece of its format separately, and the traces would show a log line as three writes.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::say_line(format!($($arg)*))
    };
}
