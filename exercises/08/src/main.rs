// Generated from lessons/08-poll.rs by exercises/08/exercise.txt: write its todo!()s.
//! Lesson 08 — poll, many clients on one thread.
//! One thread sleeps in poll(2) over an array of pollfds, one per client, kept across
//! rounds: select's loop without the FD_SETSIZE wall.
//!
//! Run `make lesson-08` and connect several `nc 127.0.0.1 23333`: `top` shows 0 % CPU while
//! they are idle. `make trace-08` shows `poll` over the whole array, then `accept4`, `read`
//! and `write` only on the entries it reported. Ctrl-C closes every client, prints a
//! summary and exits 0.
//!
//! Classic failure: every poll hands the kernel the whole array and the loop walks it
//! after, O(clients) per wake-up, busy or idle (lesson 10's epoll fixes that).
//! `--mistake skip-after-remove` steps past a removed entry: Beej's skipped client.
//! More: docs/lessons/08-poll.md

// Until every todo!() is written, the code after one is unreachable and some imports and
// helpers are unused: these allows keep the compiler's output to errors.
#![allow(unused, unreachable_code)]

/// A call still to write. Reached, it prints one line naming the call and where it stands,
/// then ends the program (exit status 101); `make check-08` quotes that line.
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

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use clap::Parser;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    accept4, bind, getpeername, getsockname, listen, setsockopt, shutdown, socket, sockopt,
    Backlog, Shutdown, SockFlag, SockType, SockaddrStorage,
};
use nix::unistd::{close, read, write};
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::clients::{Client, Clients};
use sockets_by_hand::conn::{EchoConn, READ_CHUNK};
use sockets_by_hand::ending::Ending;
use sockets_by_hand::errors::{fatal, report, OrDie};
use sockets_by_hand::lesson;
use sockets_by_hand::{limits, mistake, net};
use sockets_by_hand::{say, stop};

const LESSON: Lesson = lesson!(23333, Hint::Nc);

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    let addr = args.listen.addr();

    // setrlimit(RLIMIT_NOFILE): the soft limit up to the hard limit, the only wall left.
    let nofile = limits::nofile_note(limits::raise_nofile());
    // Ctrl-C writes a byte to this pipe (src/stop.rs); poll watches it like a socket.
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
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[&nofile]);

    let mut clients: Clients = Clients::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut served = 0;
    // The pollfd array, kept across rounds: the listener, the stop pipe, then the clients.
    let mut pollfds = vec![
        PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        PollFd::new(stop.as_fd(), PollFlags::POLLIN),
    ];

    loop {
        // The listener's entry asks for nothing while accept is out of fds; the clients'
        // entries were brought up to date when each was last served.
        let watch_listener = clients.watch_listener();
        let listen_events = if watch_listener {
            PollFlags::POLLIN
        } else {
            PollFlags::empty()
        };
        pollfds[0].set_events(listen_events);
        let timeout = clients.wait_limit().map_or(PollTimeout::NONE, |limit| {
            PollTimeout::try_from(limit).unwrap_or(PollTimeout::MAX)
        });

        // poll(2): sleep until an entry is ready (or, after EMFILE, until the retry); it
        // fills in every entry's `revents` and returns how many have some.
        let mut nready: i32 = todo!("poll(2) over pollfds with this timeout: the number of entries with revents; EINTR: continue; another error is fatal(\"poll\", errno); man 2 poll");
        let stop_revents = pollfds[1].revents().unwrap_or(PollFlags::empty());
        if !stop_revents.is_empty() && stop::stop_requested(&stop) {
            break;
        }
        let listen_revents = pollfds[0].revents().unwrap_or(PollFlags::empty());
        let listener_ready = watch_listener && listen_revents.contains(PollFlags::POLLIN);
        nready -= i32::from(!stop_revents.is_empty()) + i32::from(!listen_revents.is_empty());
        // Which clients are ready: walk the array, and stop once all `nready` are found.
        let mut i = 2;
        while i < pollfds.len() && nready > 0 {
            let revents = pollfds[i].revents().unwrap_or(PollFlags::empty());
            if revents.is_empty() {
                i += 1;
                continue;
            }
            nready -= 1;
            let fd = pollfds[i].as_fd().as_raw_fd();
            let Some(client) = clients.get_mut(fd) else {
                i += 1;
                continue;
            };
            // POLLHUP/POLLERR count as readable: the read says what happened (0, ECONNRESET).
            let readable =
                revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR);
            let writable = revents.contains(PollFlags::POLLOUT);
            match serve(client, readable, writable, &mut buf) {
                None => {
                    pollfds[i].set_events(interest(&client.conn));
                    i += 1;
                }
                Some(ending) => {
                    // The entry goes before its fd closes; swap_remove moves the last entry
                    // into slot i, so i stays: stepping past it would skip it this round.
                    todo!("the entry out of pollfds (swap_remove(i): the last entry moves into slot i, which this loop looks at next), then drop_client(..) closes the fd");
                }
            }
        }

        if listener_ready {
            served += accept_clients(&listener, &mut clients, &mut pollfds);
        }
    }
    // Ctrl-C: close every client (each reads EOF), then the summary.
    let open = clients.close_all();
    say!("{}", stop::summary(&LESSON, served, open));
}

/// The events a client's pollfd asks for: POLLIN while its input is wanted (not past the
/// backpressure mark), POLLOUT while replies are pending.
fn interest(conn: &EchoConn) -> PollFlags {
    let mut events = PollFlags::empty();
    if conn.wants_read() {
        events |= PollFlags::POLLIN;
    }
    if conn.wants_write() {
        events |= PollFlags::POLLOUT;
    }
    events
}

/// Accepts every connection waiting in the backlog; returns how many.
fn accept_clients(listener: &OwnedFd, clients: &mut Clients, pollfds: &mut Vec<PollFd>) -> u64 {
    let mut accepted = 0;
    loop {
        // accept4(2) with SOCK_NONBLOCK: lesson 06's accept and fcntl in one call.
        let fd: OwnedFd = todo!("accept4(2) with SOCK_NONBLOCK: EAGAIN means the backlog is empty (return accepted); another error: clients.accept_failed(errno), return accepted; man 2 accept4");
        let peer = getpeername::<SockaddrStorage>(fd.as_raw_fd());
        let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));
        say!("client connected: {peer}");
        let conn = EchoConn::new();
        let events = interest(&conn);
        let fd = clients.insert(fd, peer, conn);
        todo!("the new client's pollfd: push watch(fd, events) on pollfds, so the next poll(2) watches it");
        accepted += 1;
    }
}

/// A pollfd entry for `fd`, kept across rounds while the table owns the socket.
fn watch(fd: RawFd, events: PollFlags) -> PollFd<'static> {
    // SAFETY: the entry names an fd the table owns; the scan in main removes the entry
    // before drop_client closes the fd.
    PollFd::new(unsafe { BorrowedFd::borrow_raw(fd) }, events)
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
