// Generated from lessons/07-select.rs by exercises/07/exercise.txt: write its todo!()s.
//! Lesson 07 — select, many clients on one thread.
//! One thread sleeps in select(2) until a client is ready, then makes only the calls that
//! will not block; the fd sets are rebuilt every round, and only fds below FD_SETSIZE fit.
//!
//! Run `make lesson-07` and connect several `nc 127.0.0.1 23333`: `top` shows 0 % CPU while
//! they are idle. `make trace-07` shows `pselect6` (glibc's select), then `accept4`, `read`
//! and `write` only on the fds it reported. Ctrl-C closes every client, prints a summary and
//! exits 0.
//!
//! Classic failure: the FD_SETSIZE (1024) wall. C's FD_SET past it corrupts memory; here a
//! client on fd ≥ 1024 is told `error: server full (FD_SETSIZE)` and closed;
//! `--mistake no-fdsetsize-check` drops that check, and the server dies for everyone.
//! More: docs/lessons/07-select.md

// Until every todo!() is written, the code after one is unreachable and some imports and
// helpers are unused: these allows keep the compiler's output to errors.
#![allow(unused, unreachable_code)]

/// A call still to write. Reached, it prints one line naming the call and where it stands,
/// then ends the program (exit status 101); `make check-07` quotes that line.
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

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use clap::Parser;
use nix::errno::Errno;
use nix::sys::select::{select, FdSet, FD_SETSIZE};
use nix::sys::socket::{
    accept4, bind, getpeername, getsockname, listen, setsockopt, shutdown, socket, sockopt,
    Backlog, Shutdown, SockFlag, SockType, SockaddrStorage,
};
use nix::sys::time::{TimeVal, TimeValLike};
use nix::unistd::{close, read, write};
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::clients::{Client, Clients};
use sockets_by_hand::conn::{EchoConn, READ_CHUNK};
use sockets_by_hand::ending::Ending;
use sockets_by_hand::errors::{fatal, report, OrDie};
use sockets_by_hand::lesson;
use sockets_by_hand::{mistake, net};
use sockets_by_hand::{say, stop};

const LESSON: Lesson = lesson!(23333, Hint::Nc);

/// What a client on an fd select cannot watch is told before it is closed.
const FULL: &[u8] = b"error: server full (FD_SETSIZE)\n";

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    let addr = args.listen.addr();
    // Ctrl-C writes a byte to this pipe (src/stop.rs); select watches it like a socket.
    let stop = stop::stop_pipe();

    // socket(2), setsockopt(SO_REUSEADDR), bind(2), listen(2): as in lesson 01, but
    // non-blocking, so an accept with nobody waiting returns EAGAIN instead of sleeping.
    let listener = socket(
        net::family(&addr),
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK,
        None,
    )
    .or_die("socket");
    setsockopt(&listener, sockopt::ReuseAddr, &true).or_die("setsockopt(SO_REUSEADDR)");
    bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref()).or_die("bind");
    listen(&listener, Backlog::new(128).or_die("listen")).or_die("listen");
    let local = getsockname::<SockaddrStorage>(listener.as_raw_fd()).or_die("getsockname");
    let note = format!(
        "select watches fds below FD_SETSIZE = {FD_SETSIZE}; clients on higher fds are refused"
    );
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[&note]);

    let mut clients: Clients = Clients::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut served = 0;
    // The clients select found ready, as (fd, readable, writable); reused every round.
    let mut ready: Vec<(RawFd, bool, bool)> = Vec::new();

    loop {
        // The fd sets, rebuilt every round: select overwrites them with its answer. Write
        // interest only while replies are pending, or select would return at once, always.
        let mut read_set = FdSet::new();
        let mut write_set = FdSet::new();
        let watch_listener = clients.watch_listener();
        todo!("FD_SET, as FdSet::insert: the stop pipe in read_set (read_set.insert(stop.as_fd())), the listener too if watch_listener, each client's fd (client.fd.as_fd()) in read_set if client.conn.wants_read() and in write_set if client.conn.wants_write(); man 2 select");
        let mut timeout = clients
            .wait_limit()
            .map(|limit| TimeVal::milliseconds(limit.as_millis() as i64));

        // select(2): sleep until a watched fd is ready (or, after EMFILE, until the retry);
        // it returns how many are, an fd ready both ways counting twice.
        let mut nready: i32 = todo!("select(2): select(None, &mut read_set, &mut write_set, None, timeout.as_mut()) (None: nix counts nfds, the highest fd + 1; timeout.as_mut() is the Option<&mut TimeVal> it takes): how many are ready; EINTR: continue; another error is fatal(\"select\", errno); man 2 select");
        let stop_ready = read_set.contains(stop.as_fd());
        if stop_ready && stop::stop_requested(&stop) {
            break;
        }
        let listener_ready = watch_listener && read_set.contains(listener.as_fd());
        nready -= i32::from(stop_ready) + i32::from(listener_ready);
        // Which clients are ready: test each one's bits, lowest fd first, and stop once all
        // `nready` are found. The answers are copied out before anyone is served, because
        // the sets borrow the sockets they hold, and serving a client may close its socket.
        ready.clear();
        for client in clients.iter() {
            if nready <= 0 {
                break;
            }
            let fd = client.fd.as_fd();
            let (readable, writable): (bool, bool) = todo!("FD_ISSET, as FdSet::contains: is fd in read_set, is it in write_set, as select(2) left them; man 2 select");
            nready -= i32::from(readable) + i32::from(writable);
            if readable || writable {
                ready.push((fd.as_raw_fd(), readable, writable));
            }
        }

        for &(fd, readable, writable) in &ready {
            let Some(client) = clients.get_mut(fd) else {
                continue;
            };
            if let Some(ending) = serve(client, readable, writable, &mut buf) {
                drop_client(&mut clients, fd, ending);
            }
        }

        if listener_ready {
            served += accept_clients(&listener, &mut clients);
        }
    }
    // Ctrl-C: close every client (each reads EOF), then the summary.
    let open = clients.close_all();
    say!("{}", stop::summary(&LESSON, served, open));
}

/// Accepts every connection waiting in the backlog; returns how many.
fn accept_clients(listener: &OwnedFd, clients: &mut Clients) -> u64 {
    let mut accepted = 0;
    loop {
        // accept4(2) with SOCK_NONBLOCK: lesson 06's accept and fcntl in one call.
        let fd = match accept4(listener, SockFlag::SOCK_NONBLOCK) {
            Ok(fd) => fd,
            Err(Errno::EAGAIN) => return accepted,
            Err(errno) => {
                clients.accept_failed(errno);
                return accepted;
            }
        };
        let peer = getpeername::<SockaddrStorage>(fd.as_raw_fd());
        let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));
        // The FD_SETSIZE wall: no fd_set can hold this fd (nix's FdSet::insert would
        // panic), so write(2) the refusal, close(2), and never let it near a set.
        let refused = fd.as_raw_fd() >= FD_SETSIZE as RawFd;
        if refused {
            if let Err(errno) = write(&fd, FULL) {
                report("write", errno);
            }
            if let Err(errno) = close(fd) {
                report("close", errno);
            }
            say!("client refused: {peer} (fd past FD_SETSIZE)");
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
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(errno) => return Some(Ending::Failed("read", errno)),
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
