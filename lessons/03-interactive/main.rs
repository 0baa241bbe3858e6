//! Lesson 03 — interactive reverse echo, one client at a time.
//! Interactive: every line a client types comes back reversed, `q` ends it. One blocking
//! loop, a read(2) and a write(2) per line (serve.rs), serves one client after another.
//!
//! Run `make lesson-03`, then `nc 127.0.0.1 23333` (or `make lesson-00`): type lines, then
//! `q`. `make trace-03` shows accept, the welcome's write, then per line a read (asleep until
//! you press Enter) and a write, and the close.
//!
//! Classic failure: open a second `nc` while the first is connected. It connects (the kernel
//! queues it in the listen backlog) but hears nothing until the first client types `q`.
//! `--mistake one-read-one-line`, `plain-close` and `no-drain` break serve.rs. More:
//! docs/lessons/03-interactive.md.

mod serve;

use std::os::fd::AsRawFd;

use clap::Parser;
use nix::sys::socket::{
    accept, bind, getpeername, getsockname, listen, setsockopt, socket, sockopt, Backlog, SockFlag,
    SockType, SockaddrStorage,
};
use nix::unistd::close;
use sockets_by_hand::accept::{AcceptPause, BLOCKING_RETRY};
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::errors::{report, OrDie};
use sockets_by_hand::{lesson, mistake, net, say};

const LESSON: Lesson = lesson!(23333, Hint::Nc);

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,

    /// Switch on one classic mistake, on purpose (see the list below).
    #[arg(long, value_name = "NAME")]
    mistake: Option<serve::Mistake>,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    // This lesson's mistakes are in serve.rs, beside the loop they break.
    mistake::switch_on(&serve::MISTAKE, args.mistake);
    let addr = args.listen.addr();

    // socket(2), setsockopt(SO_REUSEADDR), bind(2), listen(2): as in lesson 01.
    let family = net::family(&addr);
    let listener = socket(family, SockType::Stream, SockFlag::empty(), None).or_die("socket");
    setsockopt(&listener, sockopt::ReuseAddr, &true).or_die("setsockopt(SO_REUSEADDR)");
    bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref()).or_die("bind");
    listen(&listener, Backlog::new(128).or_die("listen")).or_die("listen");
    let local = getsockname::<SockaddrStorage>(listener.as_raw_fd()).or_die("getsockname");
    // The banner; with --mistake, a last line says so (MISTAKE ON: ...).
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[]);

    let mut pause = AcceptPause::new(BLOCKING_RETRY);
    loop {
        // accept(2): the next client. While we serve it, the others wait in the backlog.
        // [accept]
        let conn = match accept(&listener) {
            Ok(conn) => conn,
            Err(errno) => {
                pause.failed(errno); // reported; out of fds, it pauses before the next try
                pause.sleep_if_paused();
                continue;
            }
        };
        // [/accept]
        let peer = getpeername::<SockaddrStorage>(conn.as_raw_fd());
        let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));
        say!("client connected: {peer}");

        // The conversation: read(2) and write(2) per line until q, EOF or an error.
        let ending = serve::serve_echo(&conn);

        // close(2) on every path: quit, EOF, reset, line too long.
        // [close]
        if let Err(errno) = close(conn) {
            report("close", errno);
        }
        // [/close]
        say!("client disconnected: {peer} ({ending})");
    }
}
