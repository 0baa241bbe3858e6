//! Lesson 09 — signal-driven I/O with F_SETSIG and sigtimedwait.
//! Every socket gets an owner (F_SETOWN), a real-time signal (F_SETSIG) and O_ASYNC; the
//! signals stay blocked, and one sigtimedwait loop takes them in turn, si_fd naming the fd.
//!
//! Run `make lesson-09` and connect with `nc 127.0.0.1 23333`. `make trace-09` shows three
//! fcntl calls per socket, then `rt_sigtimedwait` returning the signal, with read and write
//! until EAGAIN after each. Ctrl-C closes every client, prints a summary and exits 0.
//!
//! Classic failure: the real-time signal queue is finite. When it overflows the kernel sends
//! one plain SIGIO that names nothing, and the server must rescan every fd: try
//! `prlimit --sigpending=8 target/release/lesson-09` with many clients at once, and add
//! `--mistake no-rescan` to see the clients whose signals were lost hang.
//! More: docs/lessons/09-sigio.md

use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use clap::Parser;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    accept4, bind, getpeername, getsockname, listen, setsockopt, shutdown, socket, sockopt,
    Backlog, Shutdown, SockFlag, SockType, SockaddrStorage,
};
use nix::unistd::{close, read, write};
use sockets_by_hand::accept::{AcceptFailure, AcceptPause, RETRY};
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::conn::{EchoConn, READ_CHUNK};
use sockets_by_hand::ending::Ending;
use sockets_by_hand::errors::{fatal, report, OrDie};
use sockets_by_hand::lesson;
use sockets_by_hand::{mistake, net, say, stop};

const LESSON: Lesson = lesson!(23333, Hint::Nc);

sockets_by_hand::mistakes! {
    /// SIGIO without the rescan: the events lost when the signal queue overflowed stay lost
    NoRescan,
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,

    /// Switch on one classic mistake, on purpose (see the list below).
    #[arg(long, value_name = "NAME")]
    mistake: Option<Mistake>,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    let addr = args.listen.addr();
    // Ctrl-C writes a byte to this pipe (src/stop.rs); it signals like a socket (below).
    let stop = stop::stop_pipe();

    // The real-time signal the sockets will send (glibc keeps the first two for itself;
    // SIGRTMIN() already skips them), and SIGIO, the overflow fallback.
    let rtsig = libc::SIGRTMIN();
    let signals = [rtsig, libc::SIGIO];
    // sigprocmask(SIG_BLOCK) first: an unblocked real-time signal without a handler
    // would kill the process, and a blocked one stays queued until sigtimedwait takes it.
    // SAFETY: plain libc calls on a local sigset_t, initialised by sigemptyset.
    let set = unsafe {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        for sig in signals {
            libc::sigaddset(set.as_mut_ptr(), sig);
        }
        let set = set.assume_init();
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            fatal("sigprocmask", Errno::last());
        }
        set
    };

    // socket(2) with SOCK_NONBLOCK, then as in lesson 01.
    let listener = socket(
        net::family(&addr),
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .or_die("socket");
    setsockopt(&listener, sockopt::ReuseAddr, &true).or_die("setsockopt(SO_REUSEADDR)");
    bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref()).or_die("bind");
    listen(&listener, Backlog::new(1024).or_die("listen")).or_die("listen");
    let local = getsockname::<SockaddrStorage>(listener.as_raw_fd()).or_die("getsockname");
    // A connection arriving signals on the listener, like data on a client socket.
    signal_me(&listener, rtsig).or_die("fcntl");
    // A pipe supports signal-driven I/O too: Ctrl-C's byte raises the same signal.
    signal_me(&stop, rtsig).or_die("fcntl");
    let note = format!("signals: SIGRTMIN ({rtsig}) per event, SIGIO on queue overflow");
    mistake::switch_on(&MISTAKE, args.mistake);
    cli::banner(&LESSON, net::std_addr(&local).unwrap_or(addr), &[&note]);

    let mut server = Server {
        listener,
        stop,
        rtsig,
        clients: Vec::new(),
        buf: vec![0; READ_CHUNK],
        pause: AcceptPause::new(RETRY),
        served: 0,
        stopping: false,
    };
    // In case a client connected before O_ASYNC was set: no signal would tell us.
    server.accept_clients();
    server.run(&set);
    server.close_all();
}

/// `F_SETSIG` from <fcntl.h> (Linux-specific, 10 on x86-64 and arm64); the libc crate
/// does not export it.
const F_SETSIG: libc::c_int = 10;

/// Makes `fd` signal this process with `sig` on every I/O event.
fn signal_me(fd: &OwnedFd, sig: libc::c_int) -> nix::Result<()> {
    let raw = fd.as_raw_fd();
    // fcntl(F_SETOWN): which process gets the signals (nix has no wrapper).
    // [setown]
    // SAFETY: fcntl on an open fd with an integer argument.
    Errno::result(unsafe { libc::fcntl(raw, libc::F_SETOWN, libc::getpid()) })?;
    // [/setown]
    // fcntl(F_SETSIG): a real-time signal queues, one per event with si_fd set; the
    // default, SIGIO, would merge and name nothing.
    // [setsig]
    // SAFETY: as above.
    Errno::result(unsafe { libc::fcntl(raw, F_SETSIG, sig) })?;
    // [/setsig]
    // fcntl(F_SETFL, O_ASYNC | O_NONBLOCK): switch the signals on; keep reads non-blocking.
    // [async]
    fcntl(fd, FcntlArg::F_SETFL(OFlag::O_ASYNC | OFlag::O_NONBLOCK))?;
    // [/async]
    Ok(())
}

/// The SIGIO/SIGPOLL fields of a siginfo_t (sigaction(2)): `si_band` then `si_fd` after
/// the three ints. libc's `siginfo_t` has no accessor for them; C code says `info.si_fd`.
#[repr(C)]
struct SigPollInfo {
    si_signo: libc::c_int,
    si_errno: libc::c_int,
    si_code: libc::c_int,
    si_band: libc::c_long,
    si_fd: libc::c_int,
}

struct Client {
    fd: OwnedFd,
    peer: String,
    conn: EchoConn,
}

struct Server {
    listener: OwnedFd,
    stop: OwnedFd,
    rtsig: libc::c_int,
    /// The clients, indexed by fd number: si_fd is the key.
    clients: Vec<Option<Client>>,
    buf: Vec<u8>,
    pause: AcceptPause,
    served: u64,
    stopping: bool,
}

impl Server {
    fn run(&mut self, set: &libc::sigset_t) {
        let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
        while !self.stopping {
            // No timeout, except while accept is paused after EMFILE: then until the retry.
            let paused = self.pause.wait_limit(Instant::now());
            let retry = paused.map(|limit| libc::timespec {
                tv_sec: limit.as_secs() as libc::time_t,
                tv_nsec: limit.subsec_nanos() as libc::c_long,
            });
            let timeout = retry.as_ref().map_or(std::ptr::null(), |t| t as *const _);
            // sigtimedwait(2) (rt_sigtimedwait in strace): sleep until a blocked signal is
            // pending, dequeue it and fill in its siginfo.
            // [sigtimedwait]
            // SAFETY: `set` is initialised, `info` is a writable siginfo_t.
            let sig = unsafe { libc::sigtimedwait(set, info.as_mut_ptr(), timeout) };
            // [/sigtimedwait]
            if sig < 0 {
                match Errno::last() {
                    Errno::EAGAIN | Errno::EINTR => {} // the retry is due, or a Ctrl-C
                    errno => fatal("sigtimedwait", errno),
                }
            } else if sig == self.rtsig {
                // SAFETY: the kernel filled in a SIGPOLL-style siginfo for F_SETSIG signals.
                let fd = unsafe { (*info.as_ptr().cast::<SigPollInfo>()).si_fd };
                self.ready(fd);
            } else if !mistake(Mistake::NoRescan) {
                // Plain SIGIO: the real-time queue was full and events were lost. Which
                // fds? The signal does not say: look at all of them.
                let open = self.clients.iter().flatten().count();
                say!("signal queue overflowed (SIGIO): rescanning the listener and {open} clients");
                // [rescan]
                self.ready(self.stop.as_raw_fd());
                self.accept_clients();
                for fd in 0..self.clients.len() {
                    self.serve(fd as RawFd);
                }
                // [/rescan]
            } else {
                // `--mistake no-rescan`: SIGIO taken for one more event with nothing to do.
                // The clients whose signals did not fit in the queue are never served.
                say!("signal queue overflowed (SIGIO): ignored");
            }
            // Accept was paused and a client left, or the retry is due: the clients waiting
            // in the backlog raised their signals long ago, so try the listener now.
            if paused.is_some() && self.pause.watching(Instant::now()) {
                self.accept_clients();
            }
        }
    }

    fn ready(&mut self, fd: RawFd) {
        if fd == self.listener.as_raw_fd() {
            self.accept_clients();
        } else if fd == self.stop.as_raw_fd() {
            self.stopping |= stop::stop_requested(&self.stop);
        } else {
            // May be stale: the fd closed since (nothing to do), or closed and reused by
            // a new client (draining it finds EAGAIN). Both are harmless.
            self.serve(fd);
        }
    }

    fn accept_clients(&mut self) {
        // Out of fds (EMFILE): the listener's signals are ignored until a client leaves.
        if self.stopping || !self.pause.watching(Instant::now()) {
            return;
        }
        loop {
            // accept4(2) until EAGAIN: one signal may stand for many connections.
            let fd = match accept4(
                &self.listener,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            ) {
                Ok(fd) => fd,
                Err(Errno::EAGAIN) => return,
                Err(errno) => {
                    self.pause.failed(errno);
                    if AcceptFailure::of(errno) == AcceptFailure::Exhausted {
                        return;
                    }
                    continue;
                }
            };
            if let Err(errno) = signal_me(&fd, self.rtsig) {
                report("fcntl", errno);
                if let Err(errno) = close(fd) {
                    report("close", errno);
                }
                continue;
            }
            let peer = getpeername::<SockaddrStorage>(fd.as_raw_fd());
            let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));
            say!("client connected: {peer}");
            self.served += 1;
            let slot = fd.as_raw_fd() as usize;
            if self.clients.len() <= slot {
                self.clients.resize_with(slot + 1, || None);
            }
            self.clients[slot] = Some(Client {
                fd,
                peer,
                conn: EchoConn::new(),
            });
            // Bytes that arrived before O_ASYNC was set raised no signal; the welcome is
            // waiting too: serve it now.
            self.serve(slot as RawFd);
        }
    }

    /// Serves `fd` if it is one of our clients, and closes it when the conversation ends.
    fn serve(&mut self, fd: RawFd) {
        let Some(client) = self.clients.get_mut(fd as usize).and_then(Option::as_mut) else {
            return;
        };
        if let Some(ending) = drain(client, &mut self.buf) {
            self.close_client(fd, ending);
        }
    }

    fn close_client(&mut self, fd: RawFd, ending: Ending) {
        let Some(client) = self.clients[fd as usize].take() else {
            return;
        };
        // close(2): signals already queued for this fd stay queued; they are stale now.
        if let Err(errno) = close(client.fd) {
            report("close", errno);
        }
        if !client.conn.lingering() {
            say!("client disconnected: {} ({ending})", client.peer);
        }
        self.pause.resume(); // a free fd: the end of the round tries the listener
    }

    /// Ctrl-C: closes every client (each reads EOF) and prints the summary.
    fn close_all(&mut self) {
        let open = self.clients.iter().flatten().count();
        for client in self.clients.drain(..).flatten() {
            if let Err(errno) = close(client.fd) {
                report("close", errno);
            }
        }
        say!("{}", stop::summary(&LESSON, self.served, open));
    }
}

/// Writes and reads one client until the kernel says EAGAIN (or backpressure says stop).
/// Returns how the conversation ended, or None while it goes on.
fn drain(client: &mut Client, buf: &mut [u8]) -> Option<Ending> {
    let mut writable = true;
    loop {
        while writable && client.conn.wants_write() {
            // write(2) until all is out or the send buffer is full (EAGAIN); a signal
            // comes when it has room again.
            match write(&client.fd, client.conn.pending()) {
                Ok(n) => client.conn.wrote(n),
                Err(Errno::EAGAIN) => writable = false,
                Err(Errno::EINTR) => {}
                Err(errno) => return Some(Ending::Failed("write", errno)),
            }
        }
        // shutdown(2) SHUT_WR once the replies after q (or a line too long) are out: the FIN
        // follows them, and from then on input is read and dropped until the client closes
        // (the lingering close: a close with unread input would reset, losing the replies).
        if client.conn.wants_shutdown() {
            if let Err(errno) = shutdown(client.fd.as_raw_fd(), Shutdown::Write) {
                return Some(Ending::Failed("shutdown", errno));
            }
            client.conn.shut_down(&client.peer);
        }
        if client.conn.finished() {
            return Some(client.conn.ending());
        }
        if !client.conn.wants_read() {
            return None; // replies back up, or q sent: wait for room to write
        }
        // read(2) until EAGAIN: the signal said "something happened", not how much.
        match read(&client.fd, buf) {
            Ok(0) => client.conn.peer_closed(),
            Ok(n) => {
                client.conn.received(&buf[..n]);
            }
            Err(Errno::EAGAIN) => return None,
            Err(Errno::EINTR) => {}
            Err(errno) => return Some(Ending::Failed("read", errno)),
        }
    }
}
