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

// The echo loop, a read(2) and a write(2) per line, is lesson 03's: 03-interactive/serve.rs.
#[path = "03-interactive/serve.rs"]
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

sockets_by_hand::mistakes! {
    /// no SIGCHLD handler: every finished child stays a zombie (state Z)
    NoReap,
    /// one waitpid per SIGCHLD: signals that coalesce leave zombies
    ReapOnce,
    /// the parent keeps its copy of the connection: a client that ends first never sees EOF
    ParentKeepsConn,
    /// the child keeps the listener: after the server stops, new clients queue unanswered
    ChildKeepsListener,
    /// SA_RESTART on SIGINT/SIGTERM: accept is restarted, the server stops only at the next client
    SaRestart,
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,

    /// Switch on one classic mistake, on purpose (see the list below).
    #[arg(long, value_name = "NAME")]
    mistake: Option<Mistake>,

    /// The same as `--mistake no-reap` (its older spelling).
    #[arg(long)]
    no_reap: bool,
}

static STOP: AtomicBool = AtomicBool::new(false); // set on SIGINT/SIGTERM
static REAPED: AtomicUsize = AtomicUsize::new(0); // children reaped on SIGCHLD

fn main() {
    let args: Args = cli::parse(&LESSON);
    let chosen = args.mistake.or(args.no_reap.then_some(Mistake::NoReap));
    mistake::switch_on(&MISTAKE, chosen);
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
    // `--mistake sa-restart` sets SA_RESTART: the kernel then restarts the interrupted accept
    // itself, the loop never sees STOP, and Ctrl-C works only when the next client arrives.
    // [no-restart]
    let flags = if !mistake(Mistake::SaRestart) {
        SaFlags::empty()
    } else {
        SaFlags::SA_RESTART
    };
    // [/no-restart]
    let stop = SigAction::new(SigHandler::Handler(request_stop), flags, SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &stop) }.or_die("sigaction");
    }
    // sigaction(2) for SIGCHLD, sent when a child exits (SA_NOCLDSTOP: not when stopped).
    // `--mistake no-reap` leaves it out, and with it every waitpid: a child that exits keeps
    // its entry in the process table (a zombie, with its exit status) until we exit.
    // [sigchld]
    if !mistake(Mistake::NoReap) {
        let reap = SigAction::new(
            SigHandler::Handler(reap_children),
            SaFlags::SA_NOCLDSTOP,
            SigSet::empty(),
        );
        // SAFETY: the handler only calls waitpid and touches errno and atomics (mistake()
        // is one atomic load).
        unsafe { sigaction(Signal::SIGCHLD, &reap) }.or_die("sigaction");
    }
    // [/sigchld]
    let what = if !mistake(Mistake::NoReap) {
        "one child per client, reaped on SIGCHLD"
    } else {
        "no reaping: finished children stay zombies"
    };
    let watch = format!(
        "{what}; see them with: ps -o pid,stat,cmd --ppid {}",
        getpid()
    );
    // The banner; with --mistake, a last line says so (MISTAKE ON: ...).
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
        // [fork]
        match unsafe { fork() } {
            Ok(ForkResult::Child) => child(listener, conn, &peer),
            Ok(ForkResult::Parent { .. }) => served += 1,
            Err(errno) => report("fork", errno), // EAGAIN: this client is closed unanswered
        }
        // [/fork]
        // close(2) the parent's copy: the client sees EOF only once both are closed.
        // `--mistake parent-keeps-conn` forgets it instead (a drop would close it), as C code
        // that leaves out the close: the child's close is then not the last, no FIN goes out,
        // a client that ends first waits forever for ours, and the parent leaks an fd each.
        // [parent-close]
        if !mistake(Mistake::ParentKeepsConn) {
            if let Err(errno) = close(conn) {
                report("close", errno);
            }
        } else {
            std::mem::forget(conn);
        }
        // [/parent-close]
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
    // `--mistake child-keeps-listener` forgets it instead: the port then stays open as long
    // as this child lives, and once the server has stopped, new clients wait unanswered.
    // [child-close]
    if !mistake(Mistake::ChildKeepsListener) {
        if let Err(errno) = close(listener) {
            report("close", errno);
        }
    } else {
        std::mem::forget(listener);
    }
    // [/child-close]
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
    // `--mistake reap-once` (Stevens' tcpserv03) stops after one waitpid per SIGCHLD. But
    // signals do not queue: children that exit together raise one SIGCHLD, and the rest stay
    // zombies.
    // [reap-loop]
    loop {
        // waitpid(-1, WNOHANG): one exited child, or at once StillAlive / ECHILD.
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => break, // the others are still running
            Ok(_) => {
                REAPED.fetch_add(1, Ordering::Relaxed);
            }
            Err(Errno::EINTR) => continue,
            Err(_) => break, // ECHILD: no children left
        }
        if mistake(Mistake::ReapOnce) {
            break;
        }
    }
    // [/reap-loop]
    Errno::set_raw(saved);
}
