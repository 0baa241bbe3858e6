//! Lesson 01 — hello, one client and done.
//! Hello: the smallest TCP server. It accepts one client, writes
//! `Hello there! <local time>` to it, closes both sockets and exits 0.
//!
//! Run `make lesson-01`, then in a second terminal `nc 127.0.0.1 23333` (or `make lesson-00`).
//! `make trace-01` shows the whole life of a server in eight calls: socket → setsockopt
//! (SO_REUSEADDR) → bind → listen → accept (it sleeps here until a client arrives) → write →
//! close, close → exit_group(0). The second number in `accept`'s result is the new connected
//! socket: the listening socket stays as it was, ready for the next client.
//!
//! Classic mistakes it makes visible: run it twice in a row with `--no-reuseaddr` and the
//! second `bind` fails with EADDRINUSE, because the first run's connection still sits in
//! TIME_WAIT on this port (the side that closes first keeps it for a minute); SO_REUSEADDR is
//! the fix every server uses. And the backlog passed to `listen` is the queue of finished
//! handshakes that wait for `accept`: clients that connect while the server is busy wait
//! there, and `ss -ltn` shows its fill (Recv-Q) and size (Send-Q).

use std::os::fd::AsRawFd;

use clap::Parser;
use nix::errno::Errno;
use nix::sys::socket::{
    accept, bind, getpeername, getsockname, listen, setsockopt, socket, sockopt, Backlog, SockFlag,
    SockType, SockaddrStorage,
};
use nix::unistd::close;
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::errors::{fatal, report, OrDie};
use sockets_by_hand::lesson;
use sockets_by_hand::say;
use sockets_by_hand::{hello, io, net};

const LESSON: Lesson = lesson!(23333, Hint::Nc);

/// Lesson 01: a one-shot blocking TCP server. It waits for one client, writes
/// "Hello there! <local time, RFC 3339>", closes the connection and the listening socket,
/// and exits 0. Watch it with `make trace-01`.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,

    /// Leave out setsockopt(SO_REUSEADDR), to see bind fail with EADDRINUSE when the
    /// previous run's connection is still in TIME_WAIT.
    #[arg(long)]
    no_reuseaddr: bool,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    let addr = args.listen.addr();
    hello::load_time_zone(); // before socket(), so the trace shows only what follows

    // socket(2): a TCP endpoint (SOCK_STREAM) of the address's family, bound to nothing yet.
    let listener = socket(
        net::family(&addr),
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .or_die("socket");
    if !args.no_reuseaddr {
        // setsockopt(SO_REUSEADDR): let bind succeed while old connections on this port
        // are still in TIME_WAIT, so the server can be restarted at once.
        setsockopt(&listener, sockopt::ReuseAddr, &true).or_die("setsockopt(SO_REUSEADDR)");
    }
    // bind(2): give the socket its local address and port.
    bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref()).or_die("bind");
    // listen(2): make it a listening socket; the kernel now completes handshakes for us
    // and queues up to 128 finished connections until we accept them.
    listen(&listener, Backlog::new(128).or_die("listen")).or_die("listen");
    // getsockname(2): the address really bound (with -p 0 the kernel chose the port).
    let local = getsockname::<SockaddrStorage>(listener.as_raw_fd()).or_die("getsockname");
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[]);

    // accept(2): sleep until a client has connected; returns a new socket for that client.
    let conn = loop {
        match accept(&listener) {
            Ok(conn) => break conn,
            // A signal or a connection that died in the queue: nothing wrong, try again.
            Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
            Err(errno) => fatal("accept", errno),
        }
    };
    let peer = getpeername::<SockaddrStorage>(conn.as_raw_fd());
    let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));
    say!("client connected: {peer}");

    // write(2): the greeting. A client that already left makes this fail (EPIPE or
    // ECONNRESET; Rust ignores SIGPIPE, so it is an error, not a dead server).
    if let Err(errno) = io::write_all(&conn, hello::greeting().as_bytes()) {
        report("write", errno);
    }

    // close(2) both sockets: the connection first (this sends our FIN), then the listener.
    close(conn).or_die("close");
    say!("client disconnected: {peer}");
    close(listener).or_die("close");
}
