// Generated from lessons/06-nonblock.rs by exercises/06/exercise.txt: write its todo!()s.
//! Lesson 06 — O_NONBLOCK busy polling, many clients on one thread.
//! Every socket is non-blocking, so accept, read and write fail at once with EAGAIN when
//! there is nothing to do; one thread tries them all, over and over, with no readiness API.
//!
//! Run `make lesson-06` and connect several `nc 127.0.0.1 23333`; `make trace-06` shows a
//! torrent of `accept(...) = -1 EAGAIN` and `read(...) = -1 EAGAIN`, even with nobody
//! connected. Ctrl-C closes every client, prints a summary and exits 0.
//!
//! Classic failure: busy polling. `top` shows the loop at 100 % of a core while idle;
//! `--nap MICROS` trades that CPU for latency, and no setting is good. `--mistake no-eagain`
//! shows the newcomer's mistake: EAGAIN taken for an error, and every idle client dropped.
//! More: docs/lessons/06-nonblock.md

// Until every todo!() is written, the code after one is unreachable and some imports and
// helpers are unused: these allows keep the compiler's output to errors.
#![allow(unused, unreachable_code)]

/// A call still to write. Reached, it prints one line naming the call and where it stands,
/// then ends the program (exit status 101); `make check-06` quotes that line.
macro_rules! todo {
    ($call:literal) => {{
        let line = concat!("todo!() reached at ", file!(), ":", line!(), ": ", $call, "\n");
        // SAFETY: write(2) and _exit(2) on a valid buffer; both are async-signal-safe.
        unsafe {
            libc::write(2, line.as_ptr().cast(), line.len());
            libc::_exit(101)
        }
    }};
}

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use clap::Parser;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    accept, bind, getpeername, getsockname, listen, setsockopt, shutdown, socket, sockopt, Backlog,
    Shutdown, SockFlag, SockType, SockaddrStorage,
};
use nix::unistd::{close, read, write};
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::clients::{Client, Clients};
use sockets_by_hand::conn::{EchoConn, READ_CHUNK};
use sockets_by_hand::ending::Ending;
use sockets_by_hand::errors::{report, OrDie};
use sockets_by_hand::lesson;
use sockets_by_hand::{mistake, net};
use sockets_by_hand::{say, stop};

const LESSON: Lesson = lesson!(23333, Hint::Nc);

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,

    /// Sleep this many microseconds between rounds: less CPU, slower replies.
    #[arg(long, value_name = "MICROS")]
    nap: Option<u64>,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    let addr = args.listen.addr();
    let nap = args
        .nap
        .filter(|&micros| micros > 0)
        .map(Duration::from_micros);
    // Ctrl-C writes a byte to this pipe (src/stop.rs); the loop tries it like a socket.
    let stop = stop::stop_pipe();

    // socket(2), setsockopt(SO_REUSEADDR), bind(2), listen(2): as in lesson 01.
    let listener = socket(
        net::family(&addr),
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .or_die("socket");
    setsockopt(&listener, sockopt::ReuseAddr, &true).or_die("setsockopt(SO_REUSEADDR)");
    bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref()).or_die("bind");
    listen(&listener, Backlog::new(128).or_die("listen")).or_die("listen");
    // fcntl(O_NONBLOCK) on the listener: accept returns EAGAIN when nobody is waiting.
    set_nonblocking(&listener).or_die("fcntl(O_NONBLOCK)");
    let local = getsockname::<SockaddrStorage>(listener.as_raw_fd()).or_die("getsockname");
    let note = match nap {
        None => "this loop never sleeps: top shows it at 100% CPU, even with no clients \
                 (try --nap 1000)"
            .to_string(),
        Some(nap) => format!("naps {nap:?} between rounds: less CPU, replies up to {nap:?} later"),
    };
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[&note]);

    let mut clients: Clients = Clients::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut served = 0;

    // Every round tries everything, ready or not: most of these calls return EAGAIN.
    while !stop::stop_requested(&stop) {
        if clients.watch_listener() {
            served += accept_clients(&listener, &mut clients);
        }
        for fd in clients.fds() {
            let Some(client) = clients.get_mut(fd) else {
                continue;
            };
            if let Some(ending) = serve(client, true, true, &mut buf) {
                drop_client(&mut clients, fd, ending);
            }
        }
        // And again, at once: this is the spin. --nap puts a sleep here instead.
        if let Some(nap) = nap {
            std::thread::sleep(nap);
        }
    }
    // Ctrl-C: close every client (each reads EOF), then the summary.
    let open = clients.close_all();
    say!("{}", stop::summary(&LESSON, served, open));
}

/// fcntl(F_GETFL), then fcntl(F_SETFL) with O_NONBLOCK added.
fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    todo!("fcntl(2): F_GETFL for the flags (OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?) makes them an OFlag), then F_SETFL with them and O_NONBLOCK (FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)); a failure returns Err (the ? does it); man 2 fcntl");
    Ok(())
}

/// Accepts every connection waiting in the backlog; returns how many.
fn accept_clients(listener: &OwnedFd, clients: &mut Clients) -> u64 {
    let mut accepted = 0;
    loop {
        // accept(2) on the non-blocking listener: a connection, or EAGAIN at once.
        let fd = match accept(listener) {
            Ok(fd) => fd,
            Err(Errno::EAGAIN) => return accepted,
            Err(errno) => {
                clients.accept_failed(errno);
                return accepted;
            }
        };
        let peer = getpeername::<SockaddrStorage>(fd.as_raw_fd());
        let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));
        // fcntl(O_NONBLOCK) on the connection too: on Linux it does not inherit the
        // listener's flag, and one blocking read would stop the loop for every client.
        if let Err(errno) = set_nonblocking(&fd) {
            report("fcntl(O_NONBLOCK)", errno);
            if let Err(errno) = close(fd) {
                report("close", errno);
            }
            continue;
        }
        say!("client connected: {peer}");
        clients.insert(fd, peer, EchoConn::new());
        accepted += 1;
    }
}

/// One client's turn: a read if it is readable, then a write of what is pending.
/// Returns how the connection ended, once it has.
fn serve(client: &mut Client, readable: bool, writable: bool, buf: &mut [u8]) -> Option<Ending> {
    if readable && client.conn.wants_read() {
        // read(2) one buffer at most, so one busy client cannot hold up the others.
        match read(&client.fd, buf) {
            Ok(0) => client.conn.peer_closed(),
            Ok(n) => {
                client.conn.received(&buf[..n]);
            }
            // EAGAIN only means "nothing yet": the client waits for the next round.
            Err(errno) => todo!("read(2)'s errors: EAGAIN (no bytes yet on a non-blocking socket) and EINTR are no error: leave this client for the next round; another errno ends it: return Some(Ending::Failed(\"read\", errno)); man 2 read"),
        }
    }
    if (readable || writable) && client.conn.wants_write() {
        // write(2) what the send buffer takes now; the rest waits for the next round.
        match write(&client.fd, client.conn.pending()) {
            Ok(n) => client.conn.wrote(n),
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(errno) => return Some(Ending::Failed("write", errno)),
        }
    }
    // shutdown(2) SHUT_WR once the replies after q (or a line too long) are out: the FIN
    // follows them, and from then on input is read and dropped until the client closes
    // (the lingering close: a close with unread input would reset, losing the replies).
    if client.conn.wants_shutdown() {
        if let Err(errno) = shutdown(client.fd.as_raw_fd(), Shutdown::Write) {
            return Some(Ending::Failed("shutdown", errno));
        }
        client.conn.shut_down(&client.peer);
    }
    client.conn.finished().then(|| client.conn.ending())
}

/// Takes a client that is done out of the table, closes it and logs how it ended.
fn drop_client(clients: &mut Clients, fd: RawFd, ending: Ending) {
    let Some(client) = clients.remove(fd) else {
        return;
    };
    // close(2) on every path: quit, EOF, reset, line too long; after the lingering.
    if let Err(errno) = close(client.fd) {
        report("close", errno);
    }
    if !client.conn.lingering() {
        say!("client disconnected: {} ({ending})", client.peer);
    }
}
