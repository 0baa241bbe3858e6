//! Lesson 00 — the client side.
//! What you type goes to the server, what it sends is printed.
//! It notices the server closing even while you are not typing.
//!
//! Run a server (`make lesson-03`), then `make lesson-00` (or `lesson-00 --to HOST:PORT`);
//! type lines, `q` to quit, or Ctrl-D to finish. It is scriptable:
//! `printf 'abc\nq\n' | lesson-00` prints the welcome and `cba`, and exits 0 when the server
//! closes. `make trace-00` shows socket → connect, then a `poll` over stdin and the socket that
//! wakes for whichever is ready, the reads and writes, `shutdown(SHUT_WR)` when stdin ends,
//! and the final read that returns 0.
//!
//! Classic mistake it avoids: a client that blocks in `read` on stdin cannot see the server
//! close (Stevens' str_cli, section 5.12): it only learns of it at the next write. Waiting
//! for both with `poll` fixes that. Two more: on stdin EOF it does not `close` (which would
//! throw away the replies still on their way) but `shutdown(SHUT_WR)`, a half-close that
//! sends FIN and keeps reading until the server has answered everything and closed; and its
//! socket is non-blocking with a bounded buffer, so piping a big file in cannot deadlock with
//! a server that is blocked writing replies we are not reading.

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
use sockets_by_hand::lesson;
use sockets_by_hand::say;
use sockets_by_hand::{io, net};

const LESSON: Lesson = lesson!(23333, Hint::None);

/// Lesson 00: a line client for the lessons' servers. It connects, sends what you type
/// (or what is piped in), prints what the server sends, and exits 0 when the server
/// closes. At the end of input (Ctrl-D) it half-closes (shutdown SHUT_WR) and keeps
/// printing until the server is done.
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

    // fcntl(O_NONBLOCK) on the socket: a write that cannot complete returns EAGAIN instead
    // of blocking us while the server's replies pile up unread.
    let flags = OFlag::from_bits_retain(fcntl(&sock, FcntlArg::F_GETFL).or_die("fcntl(F_GETFL)"));
    fcntl(&sock, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).or_die("fcntl(F_SETFL)");

    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut stdin_open = true;
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes read from stdin and not yet taken by the socket: at most one read's worth,
    // because stdin is not read again until they are gone.
    let mut pending: Vec<u8> = Vec::with_capacity(buf.len());

    loop {
        // poll(2): sleep until the socket has something to read (or has closed), the socket
        // can take more of `pending`, or stdin has a line. Watch stdin only while nothing
        // is pending, so our buffer never holds more than one read.
        let mut socket_events = PollFlags::POLLIN;
        if !pending.is_empty() {
            socket_events |= PollFlags::POLLOUT;
        }
        let mut fds = vec![PollFd::new(sock.as_fd(), socket_events)];
        let watch_stdin = stdin_open && pending.is_empty();
        if watch_stdin {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(errno) => fatal("poll", errno),
        }
        let sock_ready = fds[0].revents().unwrap_or(PollFlags::empty());
        let stdin_ready = if watch_stdin {
            fds[1].revents().unwrap_or(PollFlags::empty())
        } else {
            PollFlags::empty()
        };
        drop(fds);

        // The socket first: a server that closed is noticed even while stdin is idle.
        if sock_ready.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            match read(&sock, &mut buf) {
                // read(2) returned 0: the server closed the connection. We are done.
                Ok(0) => break,
                Ok(n) => {
                    if let Err(errno) = io::write_all(&stdout, &buf[..n]) {
                        fatal("write(stdout)", errno);
                    }
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(errno) => fatal("read", errno),
            }
        }

        if sock_ready.contains(PollFlags::POLLOUT) && !pending.is_empty() {
            // write(2) as much as the socket's send buffer takes now; keep the rest.
            match write(&sock, &pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                // The server is gone; what it sent before leaving is still readable, so
                // stop sending and keep reading until it says EOF or reset.
                Err(errno) => {
                    report("write", errno);
                    pending.clear();
                    stdin_open = false;
                }
            }
        }

        if stdin_ready.intersects(
            PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL,
        ) {
            // read(2) from stdin: a line from the terminal, or a chunk of a pipe.
            match read(&stdin, &mut buf) {
                Ok(0) => {
                    // End of input. shutdown(SHUT_WR) sends FIN: "no more from me".
                    stdin_open = false;
                    half_close(&sock);
                }
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(errno) => {
                    report("read(stdin)", errno);
                    stdin_open = false;
                    half_close(&sock);
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
        // connect(2): the three-way handshake; returns when the server's kernel has
        // answered (ECONNREFUSED if nothing listens there).
        match connect(sock.as_raw_fd(), net::sockaddr(addr).as_ref()) {
            Ok(()) => return sock,
            Err(errno) => last = format!("{} to {addr}", describe("connect", errno)),
        }
    }
    say!("{last}");
    std::process::exit(1);
}

/// shutdown(SHUT_WR) once `pending` has drained: FIN after the last byte, reads go on.
fn half_close(sock: &OwnedFd) {
    if let Err(errno) = shutdown(sock.as_raw_fd(), Shutdown::Write) {
        // ENOTCONN: the server already reset the connection; the next read says so.
        report("shutdown", errno);
    }
}
