//! Lesson 04 — reverse echo, a process per client (fork).
//! Fork: a process per connection, and a SIGCHLD handler that reaps them.
//! The parent only accepts; each client gets its own child process, a copy of the server,
//! which talks the echo protocol of lesson 03 with blocking reads and writes and then exits.
//!
//! Run `make lesson-04`, connect with several `nc 127.0.0.1 23333` at once: each is answered
//! at once, unlike lesson 03. `ps -o pid,stat,cmd --ppid PID` (the banner names PID) lists one
//! child per client. `make trace-04` shows, per client: accept, then clone (that is fork(2):
//! glibc's fork is clone with SIGCHLD as the exit signal), the parent's close of the new
//! connection, the child's close of the listener, the child's reads and writes, its
//! exit_group, then in the parent `--- SIGCHLD ---`, the wait4(-1, …, WNOHANG) loop of the
//! handler, and the interrupted accept (strace writes `= ? ERESTARTSYS`; the program gets
//! EINTR) called again. Ctrl-C or SIGTERM prints a one-line summary (connections served,
//! children reaped) and exits 0.
//!
//! Classic mistakes it shows or avoids:
//! - Zombies. A child that has exited stays in the process table, state Z, until its parent
//!   collects its exit status with wait. `--no-reap` skips the handler: every finished
//!   client leaves a zombie behind (`ps` shows them `Z`, `<defunct>`) until the parent exits;
//!   a long-running server that never reaps eventually cannot fork any more.
//! - One wait per SIGCHLD. Signals of one kind do not queue: ten children exiting together
//!   may raise a single SIGCHLD, so the handler calls waitpid in a loop until none is left.
//! - accept's EINTR taken for an error. The handler is installed without SA_RESTART, so a
//!   child's exit interrupts the parent's accept, which fails with EINTR: call it again.
//! - Forgetting to close: the parent must close each connection (or the client never sees
//!   EOF from its child's close, and the parent leaks an fd per client); the child must close
//!   the listener (or the listening socket outlives a stopped server for as long as any
//!   child lives: new clients are queued in its backlog and never answered, and a restart
//!   fails with EADDRINUSE).
//! - A child that returns into the accept loop instead of exiting becomes a second server.

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
use sockets_by_hand::lesson;
use sockets_by_hand::say;
use sockets_by_hand::{blocking, net};

const LESSON: Lesson = lesson!(23333, Hint::Nc);

/// Lesson 04: the reverse-echo protocol with a child process per client. The parent
/// accepts and forks; the child serves its client with blocking reads and writes and
/// exits; a SIGCHLD handler reaps the finished children. Ctrl-C or SIGTERM prints how many
/// connections were served and children reaped. Watch it with `make trace-04` and with
/// `ps -o pid,stat,cmd --ppid PID`.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,

    /// Do not reap: no SIGCHLD handler, so every finished child stays a zombie (state Z in
    /// ps) until the server exits. The classic bug, on purpose.
    #[arg(long)]
    no_reap: bool,
}

/// Set by the SIGINT/SIGTERM handler; the accept loop stops when it sees it.
static STOP: AtomicBool = AtomicBool::new(false);
/// Children the SIGCHLD handler has reaped.
static REAPED: AtomicUsize = AtomicUsize::new(0);

fn main() {
    let args: Args = cli::parse(&LESSON);
    let addr = args.listen.addr();

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

    // sigaction(2) for SIGINT and SIGTERM: a handler that only sets STOP. Flags empty, so no
    // SA_RESTART: the signal makes accept fail with EINTR and the loop sees STOP at once.
    // (signal-hook's flag::register sets such a flag too, but it installs its handler with
    // SA_RESTART: the kernel would restart accept and the flag would wait for the next
    // client.)
    let stop = SigAction::new(
        SigHandler::Handler(request_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &stop) }.or_die("sigaction");
    }

    // sigaction(2) for SIGCHLD: the kernel sends it to the parent when a child exits.
    // SA_NOCLDSTOP: not when a child is merely stopped (kill -STOP). No SA_RESTART, on
    // purpose: an accept interrupted by a child's exit fails with EINTR, which the loop below
    // shows how to handle. With --no-reap there is no handler: SIGCHLD keeps its default
    // action, which is to do nothing, and the children stay zombies. (Setting it to SIG_IGN
    // instead would not show the bug: then Linux reaps children itself.)
    if !args.no_reap {
        let reap = SigAction::new(
            SigHandler::Handler(reap_children),
            SaFlags::SA_NOCLDSTOP,
            SigSet::empty(),
        );
        // SAFETY: the handler only calls waitpid and touches errno and atomics, all
        // async-signal-safe.
        unsafe { sigaction(Signal::SIGCHLD, &reap) }.or_die("sigaction");
    }

    let what = if args.no_reap {
        "--no-reap: finished children stay zombies"
    } else {
        "one child per client, reaped on SIGCHLD"
    };
    let watch = format!(
        "{what}; see them with: ps -o pid,stat,cmd --ppid {}",
        getpid()
    );
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[&watch]);

    let mut served = 0usize;
    let mut pause = AcceptPause::new(BLOCKING_RETRY);
    // A stop request that lands after this check but before accept goes to sleep is seen
    // only when accept next returns (a client or a child's exit): the classic race that
    // pselect(2), ppoll(2) and signalfd(2) exist to close.
    while !STOP.load(Ordering::Relaxed) {
        // accept(2): the next client, or sleep until one arrives or a signal interrupts.
        let conn = match accept(&listener) {
            Ok(conn) => conn,
            // A handler ran (a child exited, or a stop request): not an error. Check STOP
            // and call accept again.
            Err(Errno::EINTR) => continue,
            Err(errno) => {
                // Report; accept again at once, or after a pause when out of fds.
                pause.failed(errno);
                pause.sleep_if_paused();
                continue;
            }
        };
        let peer = getpeername::<SockaddrStorage>(conn.as_raw_fd());
        let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));

        // fork(2): from here on two processes run this code, each with its own copy of
        // every fd: both hold the listener and the connection. (A SIGCHLD during fork does
        // not make it fail: the kernel starts it again, whatever SA_RESTART says; strace
        // shows that as `= ? ERESTARTNOINTR` followed by a second clone.)
        // SAFETY: in a process with several threads, the child of fork gets only the
        // calling thread, and a lock another thread held (malloc's, stderr's) stays locked
        // forever in the child, so it may only call async-signal-safe functions. This
        // process has a single thread (it never spawns one; signal handlers are not
        // threads), so the child may allocate and log like any program.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => child(listener, conn, &peer),
            Ok(ForkResult::Parent { .. }) => served += 1,
            // EAGAIN: out of processes (RLIMIT_NPROC) or memory. This client is closed
            // below, unanswered; the next one may be luckier.
            Err(errno) => report("fork", errno),
        }
        // close(2) in the parent, at once: the child has its own copy of the connection.
        // The client sees EOF only when both copies are closed.
        if let Err(errno) = close(conn) {
            report("close", errno);
        }
    }

    let reaped = REAPED.load(Ordering::Relaxed);
    let left = served.saturating_sub(reaped);
    say!(
        "lesson 04 stopping · connections served: {served} · children reaped: {reaped} · \
         not reaped (still running, or zombies): {left}"
    );
    // Children still serving a client go on until it leaves; once the parent has exited,
    // init (or the nearest subreaper) adopts and reaps them.
}

/// The child: serves one client and exits. It never returns to the accept loop.
fn child(listener: OwnedFd, conn: OwnedFd, peer: &str) -> ! {
    // sigaction(2): the child inherited the parent's handlers. SIGINT and SIGTERM get their
    // default action back, so that Ctrl-C (sent to the whole process group) or
    // `kill CHILD_PID` ends a child as it ends any program.
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: restoring the default action installs no handler.
        if let Err(errno) = unsafe { sigaction(signal, &default) } {
            report("sigaction", errno);
        }
    }
    // close(2) the listener: the child never accepts. Kept open, it would keep the
    // listening socket alive as long as this client stays, even after the server is stopped.
    if let Err(errno) = close(listener) {
        report("close", errno);
    }
    say!("client connected: {peer} (child pid {})", getpid());

    // The echo conversation, the same blocking read/write loop as lesson 03 (src/blocking.rs).
    let ending = blocking::serve_echo(&conn);

    // close(2) the connection: the client sees EOF (the parent closed its copy long ago).
    if let Err(errno) = close(conn) {
        report("close", errno);
    }
    say!("client disconnected: {peer} ({ending})");

    // _exit(2), not exit(3) and not a return: a return would take the child back into the
    // parent's accept loop; exit(3) would run the parent's atexit handlers and flush a copy
    // of its C stdio buffers. The kernel now sends SIGCHLD to the parent.
    // SAFETY: _exit ends the process at once; nothing after it runs.
    unsafe { libc::_exit(0) }
}

/// SIGINT/SIGTERM handler: ask the accept loop to stop. Storing to an atomic is
/// async-signal-safe; printing or allocating here would not be.
extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGCHLD handler: reap every child that has exited.
extern "C" fn reap_children(_signal: libc::c_int) {
    // waitpid sets errno when it fails (ECHILD below, every time): save the errno of
    // whatever call the main program was in the middle of, and put it back.
    let saved = Errno::last_raw();
    // waitpid(-1, WNOHANG) in a loop: several children may have exited for this one
    // signal (SIGCHLDs do not queue), so reap until none is left. WNOHANG: return at once
    // when the remaining children are still running, instead of sleeping in the handler.
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => break, // children left, all still running
            Ok(_) => {
                REAPED.fetch_add(1, Ordering::Relaxed);
            }
            Err(Errno::EINTR) => continue,
            Err(_) => break, // ECHILD: no children left at all
        }
    }
    Errno::set_raw(saved);
}
