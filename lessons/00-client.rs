//! Lesson 00 — the client side.
//! What you type goes to the server, what it sends is printed.
//! It notices the server closing even while you are not typing.
//!
//! Run a server (`make lesson-03`), then `make lesson-00` (or `lesson-00 --to HOST:PORT`);
//! type lines, `q` to quit, Ctrl-D to end input. `make trace-00` shows socket → connect →
//! getsockname → fcntl(O_NONBLOCK) → a poll over stdin and the socket that wakes for
//! whichever is ready → the reads and writes → shutdown(SHUT_WR) when stdin ends → the last
//! read, which returns 0 → close → exit.
//!
//! Classic failure (Stevens' str_cli): a client asleep in `read` on stdin cannot see the
//! server close. Waiting on both with `poll` fixes it. More: docs/lessons/00-client.md.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use clap::Parser;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    connect, getsockname, shutdown, socket, Shutdown, SockFlag, SockType, SockaddrStorage,
};
use nix::unistd::{close, read, write};
use sockets_by_hand::cli::{self, Hint, Lesson};
use sockets_by_hand::errors::{describe, fatal, report, OrDie};
use sockets_by_hand::{lesson, net, say};

const LESSON: Lesson = lesson!(23333, Hint::None);

#[derive(Parser)]
struct Args {
    /// The server to connect to, as HOST:PORT (an IPv6 literal as [::1]:23333).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:23333")]
    to: String,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    let sock = connect_to(&args.to);
    let local = getsockname::<SockaddrStorage>(sock.as_raw_fd()).or_die("getsockname");
    say!(
        "lesson 00 · {} · connected to {} from {} · type lines, q to quit, Ctrl-D to end input",
        LESSON.title(),
        args.to,
        net::show(&local)
    );

    // fcntl(O_NONBLOCK): a write the socket cannot take returns EAGAIN instead of blocking
    // us while the server's replies pile up unread.
    let flags = OFlag::from_bits_retain(fcntl(&sock, FcntlArg::F_GETFL).or_die("fcntl(F_GETFL)"));
    fcntl(&sock, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).or_die("fcntl(F_SETFL)");

    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut stdin_open = true;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::with_capacity(buf.len()); // read from stdin, not yet sent

    loop {
        // poll(2): sleep until the socket is readable (or closed) or can take `pending`, or
        // stdin has input; stdin only while nothing is pending, so we hold one read at most.
        let mut socket_events = PollFlags::POLLIN;
        if !pending.is_empty() {
            socket_events |= PollFlags::POLLOUT;
        }
        // [pollfds]
        let mut fds = vec![PollFd::new(sock.as_fd(), socket_events)];
        if stdin_open && pending.is_empty() {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        // [/pollfds]
        // [poll]
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(errno) => fatal("poll", errno),
        }
        // [/poll]
        let sock_ready = fds[0].revents().unwrap_or(PollFlags::empty());
        let stdin_ready = fds.get(1).and_then(PollFd::any).unwrap_or(false);

        // The socket first: a server that closed is noticed even while stdin is idle.
        if sock_ready.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            match read(&sock, &mut buf) {
                Ok(0) => break, // read(2) returned 0: the server closed the connection
                Ok(n) => write_out(&stdout, &buf[..n]),
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(errno) => fatal("read", errno),
            }
        }

        if sock_ready.contains(PollFlags::POLLOUT) {
            // write(2) as much as the socket's send buffer takes now; keep the rest.
            match write(&sock, &pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                // The server is gone: stop sending, keep reading what it sent before leaving.
                Err(errno) => {
                    report("write", errno);
                    pending.clear();
                    stdin_open = false;
                }
            }
        }

        if stdin_ready {
            // read(2) from stdin: a line from the terminal, or a chunk of a pipe.
            match read(&stdin, &mut buf) {
                Ok(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                end => {
                    if let Err(errno) = end {
                        report("read(stdin)", errno);
                    }
                    // End of input: shutdown(SHUT_WR) sends FIN ("no more from me"); the
                    // replies still on their way keep coming.
                    stdin_open = false;
                    // [shutdown]
                    if let Err(errno) = shutdown(sock.as_raw_fd(), Shutdown::Write) {
                        report("shutdown", errno); // ENOTCONN: the server reset us already
                    }
                    // [/shutdown]
                }
            }
        }
    }

    // close(2): the server has closed its side; now ours.
    close(sock).or_die("close");
}

/// socket(2) and connect(2) to the first address of `target` that accepts.
fn connect_to(target: &str) -> OwnedFd {
    // getaddrinfo, through std: turns "localhost:23333" into addresses to try.
    let addrs: Vec<SocketAddr> = match target.to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(err) => {
            say!("cannot resolve {target:?}: {err} (expected HOST:PORT)");
            std::process::exit(1);
        }
    };
    let mut last = String::from("no address to connect to");
    for addr in addrs {
        // socket(2): a TCP socket of the address's family.
        let sock = socket(
            net::family(&addr),
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .or_die("socket");
        // connect(2): the three-way handshake (ECONNREFUSED if nothing listens there).
        match connect(sock.as_raw_fd(), net::sockaddr(addr).as_ref()) {
            Ok(()) => return sock,
            Err(errno) => {
                last = format!("{} to {addr}", describe("connect", errno));
                // close(2) this socket; the next address gets a new one.
                if let Err(errno) = close(sock) {
                    report("close", errno);
                }
            }
        }
    }
    say!("{last}");
    std::process::exit(1);
}

/// write(2) all of `bytes` to stdout, again after a short write.
fn write_out(stdout: &std::io::Stdout, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match write(stdout, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(errno) => fatal("write(stdout)", errno),
        }
    }
}
