//! Lesson 08 — poll, many clients on one thread.
//! Poll: one thread, one array of pollfds, and no FD_SETSIZE wall.
//! The reverse-echo protocol for many clients at once, multiplexed with poll(2).
//!
//! Run `make lesson-08` and connect several `nc 127.0.0.1 23333` at once: all are served,
//! by one thread, and `top` shows it at 0 % CPU while they are idle. `make trace-08` shows
//! the loop: a `poll` over the whole pollfd array that sleeps until something is ready and
//! returns how many entries are, then only the calls that will not block: `accept4` when
//! the listener has POLLIN, one `read` per client with POLLIN (or POLLHUP/POLLERR), a
//! `write` while replies are pending. The array lives across rounds: an entry is added on
//! accept, its `events` change as the client goes (POLLOUT only while replies are pending:
//! a socket with room in its send buffer is always writable, and asking always would wake
//! the loop at once, every time), and it is removed on close. A client sending lines
//! without reading the replies stops being read once 1 MiB of replies is pending
//! (src/conn.rs), so it cannot grow the server's memory.
//!
//! What changed from lesson 07: no FD_SETSIZE wall (an entry names its fd as a number, so
//! fd 5000 is as good as fd 5), and the array is not rebuilt each round. The limit left is
//! RLIMIT_NOFILE, which the lesson raises to its hard limit at start (the banner says so).
//! What did not change: every poll still hands the kernel the whole array, and the loop
//! walks it after, so each wake-up costs O(clients), busy or idle: lesson 10's epoll fixes
//! that. Classic mistake it avoids: removing a closed client's entry by moving the last
//! entry into its slot and then stepping past that slot, which skips the moved client for a
//! round (Beej's pollserver.c did exactly this until 2025). Also shown: out of fds (EMFILE),
//! the loop stops asking about the listener until a client leaves, instead of spinning.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use clap::Parser;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    accept4, bind, getpeername, getsockname, listen, setsockopt, socket, sockopt, Backlog,
    SockFlag, SockType, SockaddrStorage,
};
use nix::unistd::{close, read, write};
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::clients::{Client, Clients};
use sockets_by_hand::conn::{EchoConn, READ_CHUNK};
use sockets_by_hand::ending::Ending;
use sockets_by_hand::errors::{fatal, report, OrDie};
use sockets_by_hand::lesson;
use sockets_by_hand::say;
use sockets_by_hand::{limits, net};

const LESSON: Lesson = lesson!(23333, Hint::Nc);

/// Lesson 08: the reverse-echo protocol for many clients on one thread, multiplexed with
/// poll(2) over an array of pollfds, one per client. No FD_SETSIZE wall: the only limit is
/// RLIMIT_NOFILE, which the lesson raises to its hard limit at start.
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

    // socket(2), setsockopt(SO_REUSEADDR), bind(2), listen(2): as in lesson 01, but the
    // listener is non-blocking (SOCK_NONBLOCK): accept returns EAGAIN once the backlog is
    // empty, and a client that vanished between poll and accept cannot block the loop.
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
    // One read buffer for every client: a read's bytes are fed to that client's protocol
    // state at once, so nothing needs to stay in it between reads.
    let mut buf = vec![0u8; READ_CHUNK];
    // The pollfd array, kept across rounds: the listener first, then one entry per client.
    let mut pollfds = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];

    loop {
        // The listener's entry asks for POLLIN only while accept has fds to give out; the
        // clients' entries were brought up to date when each was last served.
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

        // poll(2): sleep until an entry is ready (or, after EMFILE, until the retry). The
        // kernel checks every entry, and fills in its `revents`; it returns how many
        // entries have some. POLLHUP and POLLERR come whether asked for or not.
        let mut nready = match poll(&mut pollfds, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(errno) => fatal("poll", errno),
        };
        let listen_revents = pollfds[0].revents().unwrap_or(PollFlags::empty());
        let listener_ready = watch_listener && listen_revents.contains(PollFlags::POLLIN);
        nready -= i32::from(!listen_revents.is_empty());
        // Which clients are ready: walk the array, and stop once all `nready` are found.
        let mut i = 1;
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
                    // The entry goes before the fd is closed (the array must never name a
                    // closed fd, or a reused one): swap_remove moves the last entry into
                    // slot i. So i stays: that entry has not been looked at yet. Stepping
                    // past it (Beej's bug) would leave it for the next round.
                    pollfds.swap_remove(i);
                    drop_client(&mut clients, fd, ending);
                }
            }
        }

        if listener_ready {
            accept_clients(&listener, &mut clients, &mut pollfds);
        }
    }
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

/// Accepts every connection waiting in the backlog (until accept says EAGAIN).
fn accept_clients(listener: &OwnedFd, clients: &mut Clients, pollfds: &mut Vec<PollFd>) {
    loop {
        // accept4(2) with SOCK_NONBLOCK: the connection comes out non-blocking (lesson 06's
        // fcntl, in the same call), so no read or write on it can put the loop to sleep.
        let fd = match accept4(listener, SockFlag::SOCK_NONBLOCK) {
            Ok(fd) => fd,
            Err(Errno::EAGAIN) => return,
            Err(errno) => return clients.accept_failed(errno),
        };
        let peer = getpeername::<SockaddrStorage>(fd.as_raw_fd());
        let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));
        say!("client connected: {peer}");
        let conn = EchoConn::new();
        let events = interest(&conn);
        let fd = clients.insert(fd, peer, conn);
        // A new entry at the end of the array. It names the fd without owning it (the
        // table does), so Rust cannot check that the fd outlives the entry.
        // SAFETY: the fd stays open while its entry exists: the scan in main removes the
        // entry before drop_client closes the fd.
        pollfds.push(PollFd::new(unsafe { BorrowedFd::borrow_raw(fd) }, events));
    }
}

/// One client's turn: read(2) once if it is readable and its input is wanted, then write(2)
/// what is pending if it is writable or was just read (the replies just made usually fit
/// in the send buffer at once). Returns how the connection ended, once it has.
fn serve(client: &mut Client, readable: bool, writable: bool, buf: &mut [u8]) -> Option<Ending> {
    if readable && client.conn.wants_read() {
        // read(2) at most one buffer, so one busy client cannot keep the others waiting.
        // 0: the client closed its side; ECONNRESET: it reset the connection.
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
    // the next accept (and, after EMFILE, the listener is watched again).
    if let Err(errno) = close(client.fd) {
        report("close", errno);
    }
    say!("client disconnected: {} ({ending})", client.peer);
}
