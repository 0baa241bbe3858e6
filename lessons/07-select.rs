//! Lesson 07 — select, many clients on one thread.
//! Select: one thread sleeps in the kernel until a client is ready, below FD_SETSIZE.
//! The reverse-echo protocol for many clients at once, multiplexed with select(2).
//!
//! Run `make lesson-07` and connect several `nc 127.0.0.1 23333` at once: all are served,
//! by one thread, and `top` shows it at 0 % CPU while they are idle (lesson 06 burned a
//! whole core). `make trace-07` shows the loop: a `select` (`pselect6` in the trace: glibc
//! makes that system call for select) that sleeps until something is ready and returns how
//! many fds are, then only the calls that will not block: `accept4` when the listener is
//! readable, one `read` per readable client, a `write` while replies are pending. Every
//! round rebuilds the fd sets (select overwrites them with its answer), and asks to write
//! to a client only while it has replies pending: asking always would wake the loop at
//! once, every time, as a socket with room in its send buffer is always writable. A client
//! sending lines without reading the replies stops being read once 1 MiB of replies is
//! pending (src/conn.rs), so it cannot grow the server's memory.
//!
//! Classic mistake it avoids: the FD_SETSIZE wall. An `fd_set` is a bitmap of FD_SETSIZE
//! (1024) bits, so select cannot watch fd 1024 or higher. In C, `FD_SET(1500, &set)`
//! silently writes past the end of the bitmap and corrupts the stack; nix's
//! `FdSet::insert` panics instead, which would kill the server for every client. This lesson
//! checks each accepted fd first: a client on fd ≥ FD_SETSIZE gets
//! `error: server full (FD_SETSIZE)` and is closed (try it with `ulimit -n 2048` and 1,100
//! clients). Lesson 08's poll has no such wall. Also shown: out of fds (EMFILE), the loop
//! stops watching the listener until a client leaves, instead of spinning on it.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use clap::Parser;
use nix::errno::Errno;
use nix::sys::select::{select, FdSet, FD_SETSIZE};
use nix::sys::socket::{
    accept4, bind, getpeername, getsockname, listen, setsockopt, socket, sockopt, Backlog,
    SockFlag, SockType, SockaddrStorage,
};
use nix::sys::time::{TimeVal, TimeValLike};
use nix::unistd::{close, read, write};
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::clients::{Client, Clients};
use sockets_by_hand::conn::{EchoConn, READ_CHUNK};
use sockets_by_hand::ending::Ending;
use sockets_by_hand::errors::{fatal, report, OrDie};
use sockets_by_hand::lesson;
use sockets_by_hand::net;
use sockets_by_hand::say;

const LESSON: Lesson = lesson!(23333, Hint::Nc);

/// What a client on an fd select cannot watch is told before it is closed.
const FULL: &[u8] = b"error: server full (FD_SETSIZE)\n";

/// Lesson 07: the reverse-echo protocol for many clients on one thread, multiplexed with
/// select(2). Each round rebuilds the read and write fd sets and sleeps in select until a
/// client is ready. select cannot watch fds at or above FD_SETSIZE (1024): a client that
/// lands on one is told "error: server full (FD_SETSIZE)" and closed.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    let addr = args.listen.addr();

    // socket(2), setsockopt(SO_REUSEADDR), bind(2), listen(2): as in lesson 01, but the
    // listener is non-blocking (SOCK_NONBLOCK): accept returns EAGAIN once the backlog is
    // empty, and a client that vanished between select and accept cannot block the loop.
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
    // One read buffer for every client: a read's bytes are fed to that client's protocol
    // state at once, so nothing needs to stay in it between reads.
    let mut buf = vec![0u8; READ_CHUNK];
    // The clients select found ready, as (fd, readable, writable); reused every round.
    let mut ready: Vec<(RawFd, bool, bool)> = Vec::new();

    loop {
        // The fd sets, rebuilt every round: select overwrites them with its answer, and
        // what each client wants changes as it goes. Read interest only while a client's
        // replies are under the backpressure mark; write interest only while some are pending.
        let mut read_set = FdSet::new();
        let mut write_set = FdSet::new();
        let watch_listener = clients.watch_listener();
        if watch_listener {
            read_set.insert(listener.as_fd());
        }
        for client in clients.iter() {
            if client.conn.wants_read() {
                read_set.insert(client.fd.as_fd());
            }
            if client.conn.wants_write() {
                write_set.insert(client.fd.as_fd());
            }
        }
        let mut timeout = clients
            .wait_limit()
            .map(|limit| TimeVal::milliseconds(limit.as_millis() as i64));

        // select(2): sleep until a watched fd is ready (or, after EMFILE, until the retry).
        // nix passes nfds = highest fd + 1; the kernel scans every fd below it, and returns
        // how many are ready, an fd ready both ways counting twice.
        let mut nready = match select(None, &mut read_set, &mut write_set, None, timeout.as_mut()) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(errno) => fatal("select", errno),
        };
        let listener_ready = watch_listener && read_set.contains(listener.as_fd());
        nready -= i32::from(listener_ready);
        // Which clients are ready: test each one's bits, lowest fd first, and stop once all
        // `nready` are found. The answers are copied out before anyone is served, because
        // the sets borrow the sockets they hold, and serving a client may close its socket.
        ready.clear();
        for client in clients.iter() {
            if nready <= 0 {
                break;
            }
            let fd = client.fd.as_fd();
            let (readable, writable) = (read_set.contains(fd), write_set.contains(fd));
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
            accept_clients(&listener, &mut clients);
        }
    }
}

/// Accepts every connection waiting in the backlog (until accept says EAGAIN).
fn accept_clients(listener: &OwnedFd, clients: &mut Clients) {
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
        // The FD_SETSIZE wall: select's sets have FD_SETSIZE bits, so this fd could never
        // be watched. C's FD_SET would write past the end of the set and corrupt memory;
        // nix's FdSet::insert would panic. Refuse the client before it gets near a set:
        // write(2) the message (a new socket's send buffer has room for it), then close(2).
        if fd.as_raw_fd() >= FD_SETSIZE as RawFd {
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
