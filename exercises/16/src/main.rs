//! Lesson 16 — datagrams: SOCKS5 UDP ASSOCIATE on the relay.
//! Lesson 12's proxy plus UDP ASSOCIATE (RFC 1928 §7), in the same poll loop: each association
//! gets a UDP socket (socket(SOCK_DGRAM), bind, getsockname: the reply's BND) that lives exactly
//! as long as its TCP control connection. Datagrams have no connection, keep their boundaries,
//! and are dropped, not delayed, when a buffer is full: recvfrom/sendto with MSG_TRUNC, or
//! recvmmsg/sendmmsg, 32 a call (`--no-batch`: one). Ctrl-C counts every drop.
//!
//! Read udp.rs (the association) after lesson 12's relay.rs. Run `make lesson-16`, then a UDP
//! client through it (PySocks: the docs page has the lines). `make trace-16` shows, per
//! association, socket(SOCK_DGRAM), setsockopt(SO_RCVBUF), bind, getsockname, then recvmmsg
//! and sendmmsg as datagrams pass, and close when the control connection ends.
//! The classic failure: an open UDP relay (`--mistake any-source`); also small-buffer and
//! leak-association. More: docs/lessons/16-socks5-udp.md

// Generated from the lesson by `make exercise-NN`: each todo!() is a call to write.
// Until they are all written, the code after a todo!() is unreachable and some
// imports and helpers are unused: these allows keep the compiler's output to errors.
#![allow(unused, unreachable_code)]

// Lesson 12's relay, mounted (not copied): its flags, its loop and the hook this plugs in.
#[path = "../12-socks5/admission.rs"]
mod admission;
#[path = "../12-socks5/conn.rs"]
mod conn;
#[path = "../12-socks5/flags.rs"]
mod flags;
#[path = "../12-socks5/flow.rs"]
mod flow;
#[path = "../12-socks5/guard.rs"]
mod guard;
#[path = "../12-socks5/relay.rs"]
mod relay;
#[path = "../12-socks5/resolver.rs"]
mod resolver;

mod datagrams;
mod udp;

use clap::Parser;
use sockets_by_hand::cli::{self, Hint, Lesson};
use sockets_by_hand::{lesson, mistake};

use flags::RelayArgs;

const LESSON: Lesson = lesson!(1080, Hint::Socks5);

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    relay: RelayArgs,

    /// One recvfrom/sendto per datagram instead of recvmmsg/sendmmsg's 32 (to measure).
    #[arg(long)]
    no_batch: bool,

    /// SO_RCVBUF asked for each UDP socket (the kernel caps it at net.core.rmem_max, ×2).
    #[arg(long, value_name = "BYTES", default_value = "4194304")]
    rcvbuf: usize,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    let calls = match args.no_batch {
        false => "recvmmsg/sendmmsg, 32 datagrams a call",
        true => "recvfrom/sendto, one datagram a call (--no-batch)",
    };
    let notes = [
        format!(
            "UDP ASSOCIATE: yes ({calls}); SO_RCVBUF {} B asked per UDP socket",
            args.rcvbuf
        ),
        "-u/-P, -w and -1 gate the control connection; datagrams are taken only from its \
         client's IP"
            .to_string(),
    ];
    let r = &args.relay;
    let mut associations = udp::Associations::new(!args.no_batch, args.rcvbuf, r.outgoing, r.quiet);
    relay::serve(&LESSON, &args.relay, &notes, &mut associations);
}
