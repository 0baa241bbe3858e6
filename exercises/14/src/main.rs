//! Lesson 14 — zero-copy SOCKS5 relay with splice.
//! Lesson 12's proxy (same handshake, loop and flags), but each direction's bytes go socket →
//! pipe → socket with splice(2) (SPLICE_F_MOVE | SPLICE_F_NONBLOCK): they never enter user
//! space. The cost is fds: a pipe per direction, made by pipe2 on the first byte and sized
//! by fcntl(F_SETPIPE_SZ), is 4 more fds per relayed connection (6 in all; RLIMIT_NOFILE is
//! raised to its hard limit). Only the handshake and the replies pass through a small buffer.
//!
//! Read flow.rs (the splices) after lesson 12's relay.rs. Run `make lesson-14`, then
//! `curl --socks5-hostname 127.0.0.1:1080 https://example.com/`. `make trace-14` shows
//! pipe2, fcntl(F_SETPIPE_SZ), then splice in pairs where lesson 12 reads and writes.
//! The classic failures: copying every byte through user space for nothing; and a side
//! closed while its pipe still holds bytes (`--mistake close-with-bytes-in-pipe`): on EOF
//! the pipe is poured out first, THEN shutdown(SHUT_WR); a reset loses what the pipe holds
//! and resets the other side. More: docs/lessons/14-splice.md

// Generated from the lesson by `make exercise-NN`: each todo!() is a call to write.
// Until they are all written, the code after a todo!() is unreachable and some
// imports and helpers are unused: these allows keep the compiler's output to errors.
#![allow(unused, unreachable_code)]

// Lesson 12's relay, mounted (not copied); only the flow (how bytes move) is this lesson's.
mod admission;
mod conn;
mod flags;
mod flow;
mod guard;
mod relay;
mod resolver;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use clap::Parser;
use protocols::socks5::Target;
use sockets_by_hand::cli::{self, Hint, Lesson};
use sockets_by_hand::{lesson, mistake};

use admission::{Admission, ConnId, Verdict};
use flags::RelayArgs;

const LESSON: Lesson = lesson!(1080, Hint::Socks5);

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    relay: RelayArgs,

    /// Each pipe's size, set with fcntl(F_SETPIPE_SZ); at most /proc/sys/fs/pipe-max-size.
    #[arg(long, value_name = "BYTES", default_value = "1048576")]
    pipe_size: usize,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    // The kernel's cap for an unprivileged F_SETPIPE_SZ (1 MiB by default).
    let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .unwrap_or(1024 * 1024);
    let size = args.pipe_size.clamp(4096, max);
    flow::PIPE_SIZE.store(size, Ordering::Relaxed);
    let notes = [format!(
        "splice through 2 pipes of {} KiB per relayed connection: 6 fds each (2 sockets, \
         4 pipe ends)",
        size / 1024
    )];
    relay::serve(&LESSON, &args.relay, &notes, &mut AllowAll);
}

/// Every client may CONNECT, as in lesson 12.
struct AllowAll;

impl Admission for AllowAll {
    fn admit(&mut self, _id: ConnId, _client: SocketAddr, _target: &Target) -> Verdict {
        Verdict::Allow
    }
}
