//! Lesson 05 — reverse echo, a thread per client.
//! Threads: a thread per connection, at most `--max-clients` of them.
//! The main thread only accepts; each client gets its own thread, which talks the echo
//! protocol of lesson 03 with blocking reads and writes, and ends when the client leaves.
//!
//! Run `make lesson-05`, connect with several `nc 127.0.0.1 23333` at once: all are answered
//! at once. `ps -T -p PID` or `top -H -p PID` (the banner names PID) lists one thread per
//! client, named `client-N`. `make trace-05` shows, per client: accept, then clone3 (a thread
//! is a clone that shares the address space, the fd table and the signal handlers:
//! CLONE_VM|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD…, and its `stack_size` is the one asked
//! for below), and the new thread's reads and writes; no fork, and no close of the listener:
//! there is only one fd table.
//!
//! What a thread costs: its stack, a mapping of the size asked for, of which only the pages
//! the thread touches become memory; a guard page; the kernel's task and its 16 KiB kernel
//! stack. Measured here with 1,000 idle clients: about 30 KiB of RSS per client (half of it
//! the 16 KiB read buffer on each stack) whatever the stack size, but address space of 3 GiB with
//! Rust's default 2 MiB stacks against about 100 MiB with 64 KiB ones (glibc's per-thread
//! malloc arenas add up to 64 MiB each on top; `MALLOC_ARENA_MAX=1` shows the stacks alone).
//! Cheaper than a process (no copy of the page tables, no second fd table); dearer than a
//! client's state in an event loop (lessons 07–11), which needs no stack of its own.
//!
//! Classic mistakes it shows or avoids:
//! - An unbounded spawn: a thread per connection with no limit lets a flood of clients
//!   exhaust memory or the thread limit. Here client N+1 gets `error: server full` and is
//!   closed (try `--max-clients 2` and three `nc`).
//! - A shared counter updated without synchronisation: see [`SERVED`].
//! - A thread that goes on reading a socket after `q` closed it (the talk's version): here
//!   the thread closes the connection exactly once, after its last read, and ends.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use clap::Parser;
use nix::errno::Errno;
use nix::sys::socket::{
    accept, bind, getpeername, getsockname, listen, setsockopt, socket, sockopt, Backlog, SockFlag,
    SockType, SockaddrStorage,
};
use nix::unistd::{close, getpid};
use sockets_by_hand::accept::{AcceptPause, BLOCKING_RETRY};
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::errors::{report, OrDie};
use sockets_by_hand::lesson;
use sockets_by_hand::say;
use sockets_by_hand::{blocking, io, limits, net};

const LESSON: Lesson = lesson!(23333, Hint::Nc);

/// The stack each client thread asks for. The echo loop keeps its 16 KiB read buffer on the
/// stack, with a few KiB of frames around it; 64 KiB leaves room (also for the larger frames
/// of an unoptimised build) and is 32 times less address space than Rust's default of 2 MiB.
/// Too small a stack is not an error a thread can handle: it overflows into the guard page,
/// and Rust reports "has overflowed its stack" and aborts the whole server.
const STACK_SIZE: usize = 64 * 1024;

/// Sent to a client beyond `--max-clients`, just before it is closed.
const FULL: &[u8] = b"error: server full\n";

/// Lesson 05: the reverse-echo protocol with a thread per client. The main thread accepts
/// and spawns; each thread serves its client with blocking reads and writes. At most
/// --max-clients clients are served at once; one more gets "error: server full" and is
/// closed. Watch the threads with `ps -T -p PID` and the clone3 calls with `make trace-05`.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,

    /// How many clients (threads) at once; one more is told "error: server full" and closed.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_clients: u32,
}

/// Clients being served now: one per client thread. Only the main thread adds to it (before
/// it spawns), and each client thread subtracts its own one as it ends, so the check against
/// --max-clients followed by the add cannot let two clients past the bound.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Clients served to the end, by all threads together: the shared-state example. With a plain
/// `static mut SERVED: usize` and `SERVED += 1` in each thread, two threads could both load
/// 41, both add one and both store 42: one client lost. (Rust rejects that without `unsafe`
/// because it is a data race, which is undefined behaviour.) `fetch_add` is one indivisible
/// read-modify-write (`lock xadd` on x86), so no update is lost.
static SERVED: AtomicUsize = AtomicUsize::new(0);

fn main() {
    let args: Args = cli::parse(&LESSON);
    let addr = args.listen.addr();
    let max_clients = args.max_clients as usize;
    // Each client holds one fd: make sure the fd limit allows --max-clients of them.
    let nofile = limits::nofile_note(limits::raise_nofile());

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
                // Report; accept again at once, or after a pause when out of fds.
                pause.failed(errno);
                pause.sleep_if_paused();
                continue;
            }
        };
        accepted += 1;
        let peer = getpeername::<SockaddrStorage>(conn.as_raw_fd());
        let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));

        // The bound: beyond --max-clients, write(2) the refusal and close(2), no thread.
        let active = ACTIVE.load(Ordering::SeqCst);
        if active >= max_clients {
            if let Err(errno) = io::write_all(&conn, FULL) {
                report("write", errno);
            }
            if let Err(errno) = close(conn) {
                report("close", errno);
            }
            say!("client refused: {peer} (server full: {active} clients)");
            continue;
        }
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        say!(
            "client connected: {peer} (client-{accepted}, {} active)",
            active + 1
        );

        // clone3(2), through pthread_create: a new thread with a stack of STACK_SIZE. The
        // connection moves into it; the thread closes it.
        let client = move || {
            // The echo conversation, the same blocking read/write loop as lesson 03
            // (src/blocking.rs); only this thread sleeps in its reads.
            let ending = blocking::serve_echo(&conn);
            // close(2): once, after the last read; then the thread ends.
            if let Err(errno) = close(conn) {
                report("close", errno);
            }
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
            let served = SERVED.fetch_add(1, Ordering::SeqCst) + 1;
            say!("client disconnected: {peer} ({ending}) · {served} served so far");
        };
        // The JoinHandle is dropped at once: the thread runs detached, nobody joins it.
        let spawned = thread::Builder::new()
            .name(format!("client-{accepted}"))
            .stack_size(STACK_SIZE)
            .spawn(client);
        if let Err(err) = spawned {
            // EAGAIN: out of threads (RLIMIT_NPROC, kernel.threads-max) or memory. The
            // closure was dropped unrun, and with it the connection: OwnedFd's drop closed it.
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
            report(
                "pthread_create",
                Errno::from_raw(err.raw_os_error().unwrap_or(libc::EAGAIN)),
            );
        }
    }
}
