//! Lesson 06 — O_NONBLOCK busy polling, many clients on one thread.
//! O_NONBLOCK busy polling: one thread tries every socket, over and over.
//! The reverse-echo protocol for many clients at once, with no readiness API at all.
//!
//! Run `make lesson-06` and connect several `nc 127.0.0.1 23333` at once: all are served,
//! by one thread. Every socket is non-blocking (`fcntl(F_SETFL, O_NONBLOCK)`), so `accept`,
//! `read` and `write` never sleep: when there is nothing to do they fail at once with
//! EAGAIN ("try again later"). The loop tries accept, then a read and a pending write on
//! every client, and starts over. `make trace-06` shows the cost: a torrent of
//! `accept(...) = -1 EAGAIN` and `read(...) = -1 EAGAIN`, thousands a second, even with
//! nobody connected; `top` shows the lesson at 100 % of a core while it does nothing.
//! `--nap MICROS` sleeps between rounds: the CPU use falls, and every reply waits up to
//! that long. There is no good setting, and that is the lesson: the kernel knows when a
//! socket is ready, and lessons 07–11 ask it instead of guessing.
//!
//! Classic mistake it shows: busy polling (100 % CPU while idle). Mistakes it avoids:
//! forgetting that an accepted socket does not inherit the listener's O_NONBLOCK on Linux
//! (one blocking read would freeze every client); treating EAGAIN as an error; buffering
//! without bound for a client that sends without reading (it stops being read once 1 MiB of
//! replies is pending, src/conn.rs); and spinning on accept when out of fds (EMFILE): the
//! loop stops trying the listener until a client leaves.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use clap::Parser;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    accept, bind, getpeername, getsockname, listen, setsockopt, socket, sockopt, Backlog, SockFlag,
    SockType, SockaddrStorage,
};
use nix::unistd::{close, read, write};
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::clients::{Client, Clients};
use sockets_by_hand::conn::{EchoConn, READ_CHUNK};
use sockets_by_hand::ending::Ending;
use sockets_by_hand::errors::{report, OrDie};
use sockets_by_hand::lesson;
use sockets_by_hand::net;
use sockets_by_hand::say;

const LESSON: Lesson = lesson!(23333, Hint::Nc);

/// Lesson 06: the reverse-echo protocol for many clients on one thread, with non-blocking
/// sockets and no readiness API: the loop tries accept, read and write on everything, over
/// and over, and treats EAGAIN as "nothing yet". It uses a whole CPU core even when idle;
/// --nap trades that CPU for latency.
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
    // One read buffer for every client: a read's bytes are fed to that client's protocol
    // state at once, so nothing needs to stay in it between reads.
    let mut buf = vec![0u8; READ_CHUNK];

    loop {
        // Try the listener, unless accept ran out of fds (EMFILE) and no client has left
        // since: trying again at once would only fail again.
        if clients.watch_listener() {
            accept_clients(&listener, &mut clients);
        }
        // Then every client, ready or not: most of these reads and writes return EAGAIN.
        // fds() is a range of fd numbers, so a client can be removed during the walk.
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
}

/// fcntl(F_GETFL), then fcntl(F_SETFL) with O_NONBLOCK added: from now on, a call on this
/// fd that would sleep fails with EAGAIN instead.
fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Accepts every connection waiting in the backlog (until accept says EAGAIN).
fn accept_clients(listener: &OwnedFd, clients: &mut Clients) {
    loop {
        // accept(2) on the non-blocking listener: a connection, or EAGAIN at once.
        let fd = match accept(listener) {
            Ok(fd) => fd,
            Err(Errno::EAGAIN) => return,
            Err(errno) => return clients.accept_failed(errno),
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
    }
}

/// One client's turn: read(2) once if it is readable and its input is wanted, then write(2)
/// what is pending if it is writable or was just read (the replies just made usually fit
/// in the send buffer at once). Returns how the connection ended, once it has.
fn serve(client: &mut Client, readable: bool, writable: bool, buf: &mut [u8]) -> Option<Ending> {
    if readable && client.conn.wants_read() {
        // read(2) at most one buffer, so one busy client cannot keep the others waiting.
        // 0: the client closed its side; ECONNRESET: it reset the connection; EAGAIN:
        // nothing has arrived yet, the answer to almost every read this lesson makes.
        match read(&client.fd, buf) {
            Ok(0) => client.conn.peer_closed(),
            Ok(n) => {
                client.conn.received(&buf[..n]);
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(errno) => return Some(Ending::Failed("read", errno)),
        }
    }
    if (readable || writable) && client.conn.wants_write() {
        // write(2) as much as the send buffer takes now; the rest waits for the next round.
        // A client that is gone gives EPIPE or ECONNRESET (Rust ignores SIGPIPE for us).
        match write(&client.fd, client.conn.pending()) {
            Ok(n) => client.conn.wrote(n),
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(errno) => return Some(Ending::Failed("write", errno)),
        }
    }
    client.conn.finished().then(|| client.conn.ending())
}

/// Takes a client that is done out of the table, closes it and logs how it ended.
fn drop_client(clients: &mut Clients, fd: RawFd, ending: Ending) {
    let Some(client) = clients.remove(fd) else {
        return;
    };
    // close(2) on every path: quit, EOF, reset, line too long. The fd number is free for
    // the next accept (and, after EMFILE, the listener is tried again).
    if let Err(errno) = close(client.fd) {
        report("close", errno);
    }
    say!("client disconnected: {} ({ending})", client.peer);
}
