//! Lesson 12 — SOCKS5 relay on poll.
//! A real SOCKS5 proxy (RFC 1928 CONNECT; RFC 1929 with -u/-P) that relays every client in
//! one thread with poll(2): non-blocking connects, host names resolved on helper threads,
//! half-close and resets passed on, bounded buffers. microsocks' flags work: -i -p -u -P -b
//! -q -w -1.
//!
//! Read relay.rs first: the loop, then a connection's life in order (accept → handshake →
//! resolve → connect → relay → finish). Run `make lesson-12`, then
//! `curl --socks5-hostname 127.0.0.1:1080 https://example.com/`. `make trace-12` shows poll,
//! accept4, connect = -1 EINPROGRESS and connect again (0, or EALREADY: then POLLOUT and
//! getsockopt(SO_ERROR)), shutdown(SHUT_WR), close.
//! The classic failure: a blocking DNS lookup freezes every relay; here getaddrinfo runs on a
//! pool of threads (clone3 per extra thread, up to 32) that wake the loop through a pipe.
//! `--mistake` blocking-dns, success-always, no-half-close, blocking-write show the classic
//! mistakes. More: docs/lessons/12-socks5.md

mod admission;
mod conn;
mod flags;
mod flow;
mod guard;
mod relay;
mod resolver;

use std::net::SocketAddr;

use clap::Parser;
use protocols::socks5::Target;
use sockets_by_hand::cli::{self, Hint, Lesson};
use sockets_by_hand::{lesson, mistake};

use admission::{Admission, ConnId, Verdict};
use flags::RelayArgs;

const LESSON: Lesson = lesson!(1080, Hint::Socks5);

sockets_by_hand::mistakes! {
    /// getaddrinfo on the loop: one slow name freezes every relay
    BlockingDns,
    /// "success" answered before the connect finished: refused targets look open
    SuccessAlways,
    /// EOF closes both ways: a client that half-closes loses the answer
    NoHalfClose,
    /// blocking writes: a client that stops reading stalls every other client
    BlockingWrite,
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    relay: RelayArgs,

    /// Switch on one classic mistake, on purpose (docs/lessons/12-socks5.md).
    #[arg(long, value_name = "NAME")]
    mistake: Option<Mistake>,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    mistake::switch_on(&MISTAKE, args.mistake);
    // flow.rs declares its mistake itself (13 and 14 mount it without offering it).
    if mistake(Mistake::BlockingWrite) {
        mistake::switch_on(&flow::MISTAKE, Some(flow::Mistake::BlockingWrite));
    }
    relay::serve(&LESSON, &args.relay, &[], &mut AllowAll);
}

/// Lesson 12's admission step: every client may CONNECT (lesson 13 asks Redis instead).
struct AllowAll;

impl Admission for AllowAll {
    fn admit(&mut self, _id: ConnId, _client: SocketAddr, _target: &Target) -> Verdict {
        Verdict::Allow
    }
}
