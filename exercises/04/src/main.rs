// Generated from lessons/04-fork.rs by exercises/04/exercise.txt: write its todo!()s.
//! Lesson 04 — reverse echo, a process per client (fork).
//! Fork: the parent accepts and forks; each child serves one client with lesson 03's loop
//! and exits; a SIGCHLD handler reaps the children.
//!
//! Run `make lesson-04` and several `nc 127.0.0.1 23333` at once: all are answered.
//! `ps -o pid,stat,cmd --ppid PID` lists a child per client. `make trace-04` shows accept,
//! clone (fork), both sides' close, the child's reads and writes, `--- SIGCHLD ---`, the
//! wait4(WNOHANG) loop and accept called again after EINTR. Ctrl-C prints a summary.
//!
//! Classic failure: zombies. With `--mistake no-reap` every finished child stays `<defunct>`
//! (state Z) until the server exits; `--help` lists four more mistakes to switch on.
//! More: docs/lessons/04-fork.md.

// Until every todo!() is written, the code after one is unreachable and some imports and
// helpers are unused: these allows keep the compiler's output to errors.
#![allow(unused, unreachable_code)]

/// A call still to write. Reached, it prints one line naming the call and where it stands,
/// then ends the program (exit status 101); `make check-04` quotes that line.
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use clap::Parser;
use nix::errno::Errno;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::socket::{
    accept, bind, getpeername, getsockname, listen, setsockopt, socket, sockopt, Backlog, SockFlag,
    SockType, SockaddrStorage,
};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{close, fork, getpid, ForkResult};
use sockets_by_hand::accept::{AcceptPause, BLOCKING_RETRY};
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::errors::{report, OrDie};
use sockets_by_hand::{lesson, mistake, net, say};

const LESSON: Lesson = lesson!(23333, Hint::Nc);

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,
}

static STOP: AtomicBool = AtomicBool::new(false); // set on SIGINT/SIGTERM
static REAPED: AtomicUsize = AtomicUsize::new(0); // children reaped on SIGCHLD

fn main() {
    let args: Args = cli::parse(&LESSON);
    let addr = args.listen.addr();

    // socket(2), setsockopt(SO_REUSEADDR), bind(2), listen(2): as in lesson 01.
    let family = net::family(&addr);
    let listener = socket(family, SockType::Stream, SockFlag::empty(), None).or_die("socket");
    setsockopt(&listener, sockopt::ReuseAddr, &true).or_die("setsockopt(SO_REUSEADDR)");
    bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref()).or_die("bind");
    listen(&listener, Backlog::new(128).or_die("listen")).or_die("listen");
    let local = getsockname::<SockaddrStorage>(listener.as_raw_fd()).or_die("getsockname");

    // sigaction(2) without SA_RESTART: a signal makes the sleeping accept fail with EINTR, so
    // the loop sees STOP at once (signal-hook sets SA_RESTART: see docs/lessons/04-fork.md).
    let flags = SaFlags::empty();
    let stop = SigAction::new(SigHandler::Handler(request_stop), flags, SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &stop) }.or_die("sigaction");
    }
    // sigaction(2) for SIGCHLD, sent when a child exits (SA_NOCLDSTOP: not when stopped).
    todo!("sigaction(2): SIGCHLD to the handler, `SigHandler::Handler(reap_children)`, flags SA_NOCLDSTOP, no mask (SigAction::new); the call is `unsafe`; man 2 sigaction");
    let what = "one child per client, reaped on SIGCHLD";
    let watch = format!(
        "{what}; see them with: ps -o pid,stat,cmd --ppid {}",
        getpid()
    );
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[&watch]);

    let mut served = 0usize;
    let mut pause = AcceptPause::new(BLOCKING_RETRY);
    while !STOP.load(Ordering::Relaxed) {
        // accept(2): the next client, or EINTR when a handler ran: check STOP, accept again.
        let conn = match accept(&listener) {
            Ok(conn) => conn,
            Err(Errno::EINTR) => continue,
            Err(errno) => {
                pause.failed(errno); // reported; out of fds, it pauses before the next try
                pause.sleep_if_paused();
                continue;
            }
        };
        let peer = getpeername::<SockaddrStorage>(conn.as_raw_fd());
        let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));

        // fork(2): two processes go on from here, each with its own copy of both fds.
        // SAFETY: this process has one thread, so the child may do what any program does.
        todo!("fork(2): `unsafe { fork() }`; the child calls child(listener, conn, &peer); the parent counts served += 1; report a failure; man 2 fork");
        // close(2) the parent's copy: the client sees EOF only once both are closed.
        todo!("close(2): the parent's copy of conn, so that the child's close is the last; man 2 close");
    }

    let reaped = REAPED.load(Ordering::Relaxed);
    let left = served.saturating_sub(reaped);
    say!(
        "lesson 04 stopping · connections served: {served} · children reaped: {reaped} · \
         not reaped (still running, or zombies): {left}"
    );
}

/// The child: serves one client and exits. It never returns to the accept loop.
fn child(listener: OwnedFd, conn: OwnedFd, peer: &str) -> ! {
    // sigaction(2): SIGINT and SIGTERM back to their default, so Ctrl-C ends children too.
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: restoring the default action installs no handler.
        if let Err(errno) = unsafe { sigaction(signal, &default) } {
            report("sigaction", errno);
        }
    }
    // close(2) the listener: kept, it would outlive a stopped server with this child.
    todo!("close(2): the child's copy of the listener; man 2 close");
    say!("client connected: {peer} (child pid {})", getpid());

    // The conversation: read(2) and write(2) per line, lesson 03's loop.
    let ending = serve::serve_echo(&conn);

    // close(2) the connection: the client sees EOF (the parent closed its copy long ago).
    if let Err(errno) = close(conn) {
        report("close", errno);
    }
    say!("client disconnected: {peer} ({ending})");

    // _exit(2): never back into the accept loop, and none of the parent's exit handlers.
    // SAFETY: _exit ends the process at once; nothing after it runs.
    unsafe { libc::_exit(0) }
}

/// SIGINT/SIGTERM handler: asks the accept loop to stop (an atomic store is signal-safe).
extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGCHLD handler: reaps every child that has exited, since SIGCHLDs do not queue.
extern "C" fn reap_children(_signal: libc::c_int) {
    // waitpid sets errno: give the interrupted code its own back.
    let saved = Errno::last_raw();
    todo!("waitpid(2): -1 with WNOHANG in a loop, `waitpid(None, Some(WaitPidFlag::WNOHANG))` (None is -1: any child), each exited child counted in REAPED, until StillAlive or ECHILD; man 2 waitpid");
    Errno::set_raw(saved);
}
