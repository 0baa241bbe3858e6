// Generated from lessons/05-threads.rs by exercises/05/exercise.txt: write its todo!()s.
//! Lesson 05 — reverse echo, a thread per client.
//! Threads: the main thread accepts; each client gets a thread that runs lesson 03's loop.
//! At most `--max-clients` at once: one more is told `error: server full` and closed.
//!
//! Run `make lesson-05` and several `nc 127.0.0.1 23333` at once: all are answered.
//! `ps -T -p PID` lists a thread `client-N` per client. `make trace-05` shows, per client,
//! accept, clone3 (a thread: it shares memory, fds and signal handlers) and that thread's
//! reads and writes; no new process, and no close of the listener: there is one fd table.
//!
//! Classic failure: shared state. Two threads that each do `SERVED += 1` on a plain integer
//! can lose an update: `--mistake racy-counter`; `unbounded` drops the limit.
//! More: docs/lessons/05-threads.md.

// Until every todo!() is written, the code after one is unreachable and some imports and
// helpers are unused: these allows keep the compiler's output to errors.
#![allow(unused, unreachable_code)]

/// A call still to write. Reached, it prints one line naming the call and where it stands,
/// then ends the program (exit status 101); `make check-05` quotes that line.
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

// The echo loop, a read(2) and a write(2) per line, is lesson 03's: 03-interactive/serve.rs.
// Mounted from the lesson as they are (no todo!() in them): read them there.
#[path = "../../../lessons/03-interactive/serve.rs"]
mod serve;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use clap::Parser;
use nix::errno::Errno;
use nix::sys::socket::{
    accept, bind, getpeername, getsockname, listen, setsockopt, socket, sockopt, Backlog, SockFlag,
    SockType, SockaddrStorage,
};
use nix::unistd::{close, getpid, write};
use sockets_by_hand::accept::{AcceptPause, BLOCKING_RETRY};
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::errors::{report, OrDie};
use sockets_by_hand::{lesson, limits, mistake, net, say};

const LESSON: Lesson = lesson!(23333, Hint::Nc);

/// Each client thread's stack: room for the loop's 16 KiB buffer, 1/32 of Rust's 2 MiB.
const STACK_SIZE: usize = 64 * 1024;
/// Sent to a client beyond `--max-clients`, just before it is closed.
const FULL: &[u8] = b"error: server full\n";

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,

    /// How many clients (threads) at once; one more is told "error: server full" and closed.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_clients: u32,
}

/// Clients being served now: the main thread adds before it spawns, each thread subtracts.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Clients served to the end, by all threads: `fetch_add` is one indivisible update.
static SERVED: AtomicUsize = AtomicUsize::new(0);

fn main() {
    let args: Args = cli::parse(&LESSON);
    let addr = args.listen.addr();
    let max_clients = args.max_clients as usize;
    // Each client holds one fd: make sure the fd limit allows --max-clients of them.
    let nofile = limits::nofile_note(limits::raise_nofile());

    // socket(2), setsockopt(SO_REUSEADDR), bind(2), listen(2): as in lesson 01.
    let family = net::family(&addr);
    let listener = socket(family, SockType::Stream, SockFlag::empty(), None).or_die("socket");
    setsockopt(&listener, sockopt::ReuseAddr, &true).or_die("setsockopt(SO_REUSEADDR)");
    bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref()).or_die("bind");
    listen(&listener, Backlog::new(128).or_die("listen")).or_die("listen");
    let local = getsockname::<SockaddrStorage>(listener.as_raw_fd()).or_die("getsockname");
    let watch = format!(
        "a thread per client ({} KiB stack), at most {max_clients}; see them with: ps -T -p {}",
        STACK_SIZE / 1024,
        getpid()
    );
    cli::banner(
        &LESSON,
        net::std_addr(&local).unwrap_or(addr),
        &[&watch, &nofile],
    );

    let mut accepted = 0u64;
    let mut pause = AcceptPause::new(BLOCKING_RETRY);
    loop {
        // accept(2): the next client. Only this thread accepts; the others each own a client.
        let conn = match accept(&listener) {
            Ok(conn) => conn,
            Err(errno) => {
                pause.failed(errno); // reported; out of fds, it pauses before the next try
                pause.sleep_if_paused();
                continue;
            }
        };
        accepted += 1;
        let peer = getpeername::<SockaddrStorage>(conn.as_raw_fd());
        let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));

        let active = ACTIVE.load(Ordering::SeqCst);
        // At most max_clients threads.
        let full = active >= max_clients;
        if full {
            // write(2) the refusal (one call: 19 bytes fit an empty send buffer), close(2).
            if let Err(errno) = write(&conn, FULL) {
                report("write", errno);
            }
            if let Err(errno) = close(conn) {
                report("close", errno);
            }
            say!("client refused: {peer} (server full: {active} clients)");
            continue;
        }
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        let n = active + 1;
        say!("client connected: {peer} (client-{accepted}, {n} active)");

        // clone3(2), through pthread_create: a thread with a STACK_SIZE stack that owns conn.
        let spawned: std::io::Result<thread::JoinHandle<()>> = todo!("pthread_create(3), through std::thread::Builder: Builder::new(), .name(..) client-N, .stack_size(STACK_SIZE), then .spawn(move || client(conn, peer)): the new thread owns conn; man 3 pthread_create");
        // EAGAIN: out of threads or memory. The unrun closure was dropped, closing conn.
        if let Err(err) = spawned {
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
            let errno = Errno::from_raw(err.raw_os_error().unwrap_or(libc::EAGAIN));
            report("pthread_create", errno);
        }
    }
}

/// A client's thread: lesson 03's conversation, the close, the counts; then it ends.
fn client(conn: OwnedFd, peer: String) {
    // The conversation: read(2) and write(2) per line, lesson 03's loop.
    let ending = serve::serve_echo(&conn);
    // close(2): once, after the last read; then the thread ends.
    todo!("close(2): conn (close(conn) takes the OwnedFd), in the client's own thread once the conversation is over; report a failure (report(\"close\", errno)); man 2 close");
    ACTIVE.fetch_sub(1, Ordering::SeqCst);
    // One indivisible read-modify-write: no update is lost.
    let served = SERVED.fetch_add(1, Ordering::SeqCst) + 1;
    say!("client disconnected: {peer} ({ending}) · {served} served so far");
}
