//! Lesson 17 — a restart that drops nothing: the listener handed over with SCM_RIGHTS.
//! Lesson 10's echo reactor (mounted), restartable under load. SIGHUP starts the same binary
//! again (fork, execve, the same arguments) and hands it the listening socket over a Unix
//! domain socket: sendmsg with an SCM_RIGHTS control message (handover.rs). The successor
//! checks it (getsockopt SO_ACCEPTCONN) and says ready; the old process stops accepting and
//! serves its clients to the end (--drain-timeout). One accept queue throughout: nothing lost.
//!
//! Run `make lesson-17 ARGS='--pid-file /tmp/l17.pid'` and send SIGHUP to that pid (`pkill
//! -HUP -F /tmp/l17.pid`). `make trace-17` shows socketpair, fork and execve, sendmsg with
//! SCM_RIGHTS in the old process, recvmsg and getsockopt(SO_ACCEPTCONN) in the new one.
//! `--handover PATH` uses a socket file (SO_PEERCRED); under systemd the listener is fd 3.
//! The classic failure: a successor that binds anew: `--mistake close-then-bind` refuses
//! connections, `--mistake reuseport` resets them. More: docs/lessons/17-restart.md

#[path = "../10-epoll/handler.rs"]
mod handler;
#[path = "../10-epoll/reactor.rs"]
mod reactor;

mod handover;
mod successor;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use handler::EchoHandler;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    bind, getsockname, listen, setsockopt, socket, sockopt, Backlog, SockFlag, SockType,
    SockaddrStorage,
};
use nix::unistd::{pipe2, write};
use reactor::Reactor;
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::errors::{describe, OrDie};
use sockets_by_hand::{lesson, limits, mistake, net, say, stop};

use handover::LINK_FD;
use successor::Restarter;

const LESSON: Lesson = lesson!(23333, Hint::Nc);
const ANEW: &str = "listener: bound anew (the mistake)";

// This lesson's mistakes, and lesson 10's (its reactor.rs and handler.rs are mounted here).
sockets_by_hand::mistakes! {
    /// on SIGHUP the listener is closed first and the successor binds anew: refused in the gap
    CloseThenBind,
    /// the successor binds its own SO_REUSEPORT socket: the old queue's connections are reset
    Reuseport,
    /// the socketpair end keeps FD_CLOEXEC: execve closes it, the successor gets nothing
    Cloexec,
    /// the handler sleeps 1 s per read (a slow lookup): every other client waits with it
    BlockingHandler,
    /// EPOLLOUT watched always: level-triggered epoll_wait returns at once, 100 % CPU
    EpolloutAlways,
    /// EPOLLET, but one read per wake-up: the bytes left behind raise no new event; hangs
    EdgeTriggered,
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,

    /// Write this process's pid here (write, then rename); each successor rewrites it.
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,

    /// Hand the listener over through a socket file at PATH (in a directory only this user
    /// can write) instead of a socketpair; a process started with the same PATH takes over.
    #[arg(long, value_name = "PATH")]
    handover: Option<PathBuf>,

    /// After the handover, serve the clients already here at most this long, then exit.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    drain_timeout: u64,

    /// Switch on one classic mistake, on purpose (see the list below).
    #[arg(long, value_name = "NAME")]
    mistake: Option<Mistake>,
}

fn main() {
    // A successor's end of the socketpair, checked before this process opens anything.
    let link = inherited_link();
    let args: Args = cli::parse(&LESSON);
    mistake::switch_on(&MISTAKE, args.mistake);
    let exe = successor::own_path();
    let nofile = limits::nofile_note(limits::raise_nofile());
    let stop = stop::stop_pipe();
    // SIGHUP writes a byte to a pipe of its own (the self-pipe trick, as for Ctrl-C).
    let (hup, hup_write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).or_die("pipe2");
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGHUP, hup_write)
        .unwrap_or_else(|_| fail("sigaction(SIGHUP)".into()));
    // The path road: a process already serving there hands us its listener.
    let link = match (&args.handover, link) {
        (Some(path), None) => handover::connect_path(path).unwrap_or_else(|why| fail(why)),
        (_, link) => link,
    };
    if let Some(link) = &link {
        if let Some(path) = &args.handover {
            // SO_PEERCRED both ways: the listener is taken only from this user's process.
            let (pid, uid) = handover::peer(link).unwrap_or_else(|why| fail(why));
            if uid != handover::my_uid() {
                fail(format!(
                    "{}: served by pid {pid} of uid {uid}",
                    path.display()
                ));
            }
        }
    }

    let (listener, origin) = match &link {
        // A successor takes its predecessor's listener (the mistakes bind one of their own).
        Some(_) if mistake(Mistake::Reuseport) => (bind_listener(&args, true), ANEW.into()),
        Some(_) if mistake(Mistake::CloseThenBind) => (bind_listener(&args, true), ANEW.into()),
        Some(link) => {
            let fd = handover::recv_listener(link).unwrap_or_else(|why| fail(why));
            handover::check_listening(&fd, "the received fd").unwrap_or_else(|why| fail(why));
            let origin = format!("listener: fd {} received over SCM_RIGHTS", fd.as_raw_fd());
            (fd, origin)
        }
        None => match handover::systemd_listener().unwrap_or_else(|why| fail(why)) {
            Some(fd) => {
                handover::check_listening(&fd, "LISTEN_FDS's fd 3").unwrap_or_else(|w| fail(w));
                let origin = "listener: fd 3 from the service manager (LISTEN_FDS)";
                (fd, origin.into())
            }
            None => (bind_listener(&args, false), "listener: bound here".into()),
        },
    };
    let local = getsockname::<SockaddrStorage>(listener.as_raw_fd()).or_die("getsockname");
    let local = net::std_addr(&local).unwrap_or(args.listen.addr());
    // The path road: this process listens on the path now, for its own successor.
    let path = args.handover.as_ref().map(|path| {
        let sock = handover::listen_path(path).unwrap_or_else(|why| fail(why));
        (path.clone(), sock)
    });

    // The reactor, and the pipe that tells it to stop accepting and drain.
    let (drain, drain_write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).or_die("pipe2");
    let listener_fd = listener.as_raw_fd();
    let reactor = Reactor::<EchoHandler>::new(&LESSON, listener, stop)
        .drain_on(drain, Duration::from_secs(args.drain_timeout));
    let restart = format!("SIGHUP restarts from {}", exe.display());
    cli::banner(&LESSON, local, &[&nofile, &origin, &restart]);
    if let Some(link) = link {
        // "Ready": the predecessor stops accepting when it reads this byte. (It may have
        // exited already: --mistake close-then-bind closed its listener first.)
        if let Err(errno) = write(&link, b"R") {
            say!("{}", describe("write (ready)", errno));
        }
    } // close(2) of our end: a successor holds no fd its predecessor did not hold at start
    if let Some(file) = &args.pid_file {
        successor::write_pid_file(file).unwrap_or_else(|why| fail(why));
    }

    let restarter = Restarter {
        exe,
        args: std::env::args_os().collect(),
        listener: listener_fd,
        hup,
        drain: drain_write,
        path,
    };
    std::thread::spawn(move || restarter.run());
    let started = Instant::now();
    reactor.run();
    say!("exiting after {:.1} s", started.elapsed().as_secs_f64());
}

/// socket, setsockopt(SO_REUSEADDR), bind, listen: the first process's own listener.
fn bind_listener(args: &Args, successor: bool) -> OwnedFd {
    let addr = args.listen.addr();
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let listener = socket(net::family(&addr), SockType::Stream, flags, None).or_die("socket");
    setsockopt(&listener, sockopt::ReuseAddr, &true).or_die("setsockopt(SO_REUSEADDR)");
    // The mistake: SO_REUSEPORT lets the successor bind a second listener of its own.
    if mistake(Mistake::Reuseport) {
        setsockopt(&listener, sockopt::ReusePort, &true).or_die("setsockopt(SO_REUSEPORT)");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref()) {
            Ok(()) => break,
            // The close-then-bind successor waits for its predecessor to let the port go.
            Err(Errno::EADDRINUSE) if successor && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(errno) => fail(describe("bind", errno)),
        }
    }
    listen(&listener, Backlog::new(4096).or_die("listen")).or_die("listen");
    listener
}

/// A successor's end of the socketpair: the fd number its predecessor put in HANDOVER_FD,
/// checked with fcntl(F_GETFD) before anything else opens an fd (it could take the number).
fn inherited_link() -> Option<OwnedFd> {
    let fd: i32 = std::env::var(LINK_FD).ok()?.parse().ok()?;
    std::env::remove_var(LINK_FD);
    // SAFETY: only borrowed for the one fcntl that checks it is open.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if let Err(errno) = fcntl(borrowed, FcntlArg::F_GETFD) {
        fail(format!(
            "{}: nothing came across execve (did it keep FD_CLOEXEC?)",
            describe(&format!("fcntl({fd}, F_GETFD)"), errno)
        ));
    }
    // fcntl(F_SETFD, FD_CLOEXEC): the flag back on, so that no program we run inherits it.
    let _ = fcntl(borrowed, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    // SAFETY: the predecessor made this fd for us; it is open (just checked) and ours alone.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fail(why: String) -> ! {
    say!("{why}");
    std::process::exit(1)
}
