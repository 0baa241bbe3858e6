//! Lesson 12 — SOCKS5 relay on poll.
//! SOCKS5 relay on poll: a real SOCKS5 proxy that relays every client in one thread.
//! It speaks RFC 1928 (CONNECT, IPv4, IPv6 and host names) and RFC 1929 (with `-u/-P`), and
//! takes microsocks' flags, so `-i ADDR -p PORT [-u USER -P PASS] [-b OUTGOING_ADDR]` work.
//!
//! Run `make lesson-12`, then use it as a real proxy:
//! `curl --socks5-hostname 127.0.0.1:1080 https://example.com/` (or point a browser at it).
//! Each finished connection logs one line: client → target, bytes up and down, how long, how
//! it ended. `make trace-12` shows the loop: `poll` over the listener, every client and every
//! upstream socket; `accept4`; the client's greeting `read`; then for the upstream
//! `socket(SOCK_NONBLOCK)`, `connect` = -1 EINPROGRESS, a `poll` that reports POLLOUT,
//! `getsockopt(SO_ERROR)` = 0, `getsockname` (the BND address of the reply), and the relay's
//! `read`/`write` pairs, `shutdown(SHUT_WR)` when one side ends, `close` ×2. A host name goes to
//! the resolver thread (its `write` of one byte to a pipe wakes the loop).
//!
//! Every connection walks a visible state machine ([`State`]): greeting → auth → request →
//! (admission) → resolving → connecting → relaying → half-closed → closed. The protocol is
//! sans-IO in src/socks5.rs; this file does the I/O.
//!
//! Classic mistakes it avoids (the ones EventMachine proxies made): a greeting split across
//! packets, or sent together with the request and the first payload, is parsed from exact
//! lengths and the early payload is forwarded; a refused target is answered 0x05, not
//! "success"; `getaddrinfo` blocks a thread, never the loop; a failed lookup is answered
//! 0x04, never a crash; a client's half-close (FIN) is relayed as `shutdown(SHUT_WR)`, so the
//! answer still comes back. Also: a slowloris client is cut at the handshake deadline; a full
//! destination buffer stops reading the source (backpressure, bounded memory); idle relays hold
//! no buffer at all (1,000 idle relays stay small: watch `ps -o rss`); EMFILE pauses `accept`
//! instead of spinning.
//!
//! Lesson 13 reuses this relay as it is: it plugs an [`Admission`] step in before CONNECT and
//! adds its own fd (a Redis connection) to the same poll loop.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    accept4, bind, connect, getpeername, getsockname, getsockopt, listen, setsockopt, shutdown,
    socket, sockopt, Backlog, Shutdown, SockFlag, SockType, SockaddrStorage,
};
use nix::unistd::{close, pipe2, read, write};
use protocols::socks5::{self, encode_error_reply, encode_reply, Handshake, Reply, Step};
use sockets_by_hand::accept::AcceptFailure;
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::errors::{describe, fatal, report, OrDie};
use sockets_by_hand::lesson;
use sockets_by_hand::{limits, net, say};

pub use protocols::socks5::Target;

const LESSON: Lesson = lesson!(1080, Hint::Socks5);

/// Lesson 12: a SOCKS5 proxy (RFC 1928; RFC 1929 username/password with -u/-P) that relays
/// all its clients in one thread with poll(2): non-blocking connects with a timeout, host
/// names resolved on a helper thread, half-close and reset relayed, bounded buffers. The
/// flags match microsocks. It listens on 127.0.0.1 unless -i says otherwise: never an open
/// proxy by default. Try: curl --socks5-hostname 127.0.0.1:1080 http://example.com/
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    relay: RelayArgs,
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    serve(&LESSON, &args.relay, &[], &mut AllowAll);
}

// ---------------------------------------------------------------------------------------
// What lesson 13 reuses: the flags, the admission hook and the relay loop itself.
// ---------------------------------------------------------------------------------------

/// The relay's flags (microsocks-compatible), for any lesson that runs [`serve`].
#[derive(clap::Args, Debug, Clone)]
pub struct RelayArgs {
    #[command(flatten)]
    pub listen: Listen,

    /// Username clients must give (RFC 1929); needs -P. Without -u/-P no authentication
    /// is asked for.
    #[arg(short = 'u', long = "user", value_name = "USER", requires = "password")]
    pub user: Option<String>,

    /// Password clients must give (RFC 1929); needs -u.
    #[arg(short = 'P', long = "password", value_name = "PASS", requires = "user")]
    pub password: Option<String>,

    /// Source address of outgoing connections (bound before connect), as microsocks' -b.
    #[arg(short = 'b', long = "outgoing", value_name = "OUTGOING_ADDR")]
    pub outgoing: Option<IpAddr>,

    /// Seconds a connect(2) to one target address may take before the next is tried.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    pub connect_timeout: Duration,

    /// Seconds a client has to finish the SOCKS handshake (greeting, auth, request).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    pub handshake_timeout: Duration,
}

fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if secs > 0.0 && secs <= 86_400.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err("expected seconds between 0 and 86400".into())
    }
}

/// Identifies one client connection to an [`Admission`] hook (slot and serial number, so
/// a reused slot is never mistaken for the client that left it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    slot: usize,
    serial: u64,
}

/// The answer to "may this client CONNECT?".
#[derive(Debug, Clone, PartialEq, Eq)]
// Lesson 12 only ever allows; lesson 13 refuses and answers later.
#[allow(dead_code)]
pub enum Verdict {
    /// Go on: resolve and connect.
    Allow,
    /// Send this reply (0x02 for "not allowed", 0x01 when the rule store is down) and
    /// close; the text goes into the connection's log line.
    Refuse(Reply, String),
    /// No answer yet: the hook answers later through [`Admission::ready`]'s `verdicts`.
    /// The client waits (its bytes stay in the kernel) until then or its handshake deadline.
    Later,
}

/// The hook between a complete CONNECT request and the connect: who may use the proxy.
/// Lesson 12 uses [`AllowAll`]. A hook that must ask someone (lesson 13 asks Redis) brings
/// its own fds into the relay's poll loop with [`watch`](Admission::watch) and gets their
/// events in [`ready`](Admission::ready); everything stays in one thread.
pub trait Admission {
    /// `client` finished its handshake and asks to CONNECT to `target`.
    fn admit(&mut self, id: ConnId, client: SocketAddr, target: &Target) -> Verdict;

    /// Push the fds to watch in the next poll(2), with the events wanted. Called before
    /// every poll.
    fn watch<'a>(&'a self, _fds: &mut Vec<PollFd<'a>>) {}

    /// When [`ready`](Admission::ready) wants to run even if none of its fds has an event
    /// (a reconnect backoff, say).
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Called after every poll(2): `revents[i]` is what poll reported for the i-th fd
    /// [`watch`](Admission::watch) pushed. Push answers for clients left at
    /// [`Verdict::Later`] into `verdicts` (answers for clients that are gone are ignored).
    fn ready(
        &mut self,
        _now: Instant,
        _revents: &[PollFlags],
        _verdicts: &mut Vec<(ConnId, Verdict)>,
    ) {
    }

    /// A client left at [`Verdict::Later`] is gone (closed, reset or timed out) before
    /// its answer: forget it.
    fn forget(&mut self, _id: ConnId) {}
}

/// Lets every client in: lesson 12's admission step.
pub struct AllowAll;

impl Admission for AllowAll {
    fn admit(&mut self, _id: ConnId, _client: SocketAddr, _target: &Target) -> Verdict {
        Verdict::Allow
    }
}

/// Bytes in flight per direction while a relay is busy; a source is not read while its
/// destination's buffer is full. Large reads mean few system calls per byte: on loopback a
/// single stream went ~7 % faster from 128 to 256 KiB, and ~15 % faster again at 1 MiB
/// (make bench-socks). Idle relays hold none: buffers are lent by a [`Pool`] only while
/// bytes are in flight, and only the pages a read touched count in RSS.
const RELAY_BUF: usize = 1024 * 1024;
/// How many free buffers the loop keeps for reuse after a burst.
const POOL_SPARE: usize = 4;
/// At most this many read/write rounds per direction per wake-up (fairness).
const PUMP_ROUNDS: usize = 4;
/// At most this many accepts per wake-up, so a connection storm cannot starve the relays.
const ACCEPT_BATCH: usize = 64;
/// After EMFILE, try accept again after this long even if no connection has closed.
const EMFILE_RETRY: Duration = Duration::from_secs(1);

/// Sets up the listener and runs the relay loop forever, with `admission` deciding who may
/// connect. `notes` are extra banner lines.
pub fn serve<A: Admission>(
    lesson: &Lesson,
    args: &RelayArgs,
    notes: &[String],
    admission: &mut A,
) -> ! {
    // setrlimit(RLIMIT_NOFILE): a relay needs two fds per client.
    let nofile = limits::nofile_note(limits::raise_nofile());
    let addr = args.listen.addr();

    // socket(2), setsockopt(SO_REUSEADDR), bind(2), listen(2), as in every lesson; the
    // listener is non-blocking (SOCK_NONBLOCK), so an accept with nothing queued returns
    // EAGAIN instead of stalling the loop.
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

    let credentials = match (&args.user, &args.password) {
        (Some(u), Some(p)) => Some((u.clone().into_bytes(), p.clone().into_bytes())),
        _ => None,
    };
    let mut lines = vec![nofile];
    lines.push(match &credentials {
        Some((u, _)) => format!(
            "auth: username/password (RFC 1929) required, user {:?}",
            String::from_utf8_lossy(u)
        ),
        None => "auth: none (add -u USER -P PASS to require a password)".to_string(),
    });
    if let Some(ip) = args.outgoing {
        lines.push(format!("outgoing connections from {ip}"));
    }
    lines.extend(notes.iter().cloned());
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    // The resolver (its pipe and thread) exists before the banner says we are ready.
    let resolver = Resolver::spawn();
    // Relay buffers go straight to mmap and back to the kernel when freed (glibc would
    // otherwise raise its threshold after the first free and keep freed buffers in the heap:
    // a proxy that once moved a lot of data would stay big while idle).
    // SAFETY: mallopt only changes a malloc tuning parameter.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, (RELAY_BUF / 2) as libc::c_int) };
    cli::banner(lesson, net::std_addr(&local).unwrap_or(addr), &lines);

    let mut relay = Relay {
        args: args.clone(),
        credentials,
        conns: Vec::new(),
        free: Vec::new(),
        serial: 0,
        pool: Pool { spare: Vec::new() },
        resolver,
        paused_until: None,
        hs_out: Vec::with_capacity(socks5::MAX_ENCODED_REPLY_LEN),
        admission,
    };
    relay.run(&listener)
}

// ---------------------------------------------------------------------------------------
// One connection: its state, its two sockets, its two directions.
// ---------------------------------------------------------------------------------------

/// Where a connection is. Closed connections are removed from the loop (and logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for `VER NMETHODS METHODS` (handshake deadline running).
    Greeting,
    /// Waiting for the RFC 1929 username/password.
    Auth,
    /// Waiting for `VER CMD RSV ATYP DST.ADDR DST.PORT`.
    Request,
    /// The [`Admission`] hook has not answered yet.
    Admitting,
    /// The resolver thread is looking the host name up.
    Resolving,
    /// A non-blocking connect(2) is in flight; POLLOUT on the upstream socket ends it.
    Connecting,
    /// Bytes flow both ways.
    Relaying,
    /// One side sent EOF, which was passed on as shutdown(SHUT_WR); the other way flows.
    HalfClosed,
    /// An error reply (or a handshake refusal) is being flushed; then close.
    Refusing,
}

/// One direction of a relay: bytes read from its source, not yet written to its
/// destination. The buffer is borrowed from the [`Pool`] only while bytes are in flight.
struct Flow {
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    /// The source said EOF (read returned 0).
    eof: bool,
    /// shutdown(SHUT_WR) was sent to the destination.
    shut: bool,
    /// Bytes read from the source while relaying (for the log line).
    bytes: u64,
}

impl Flow {
    const fn new() -> Flow {
        Flow {
            buf: None,
            start: 0,
            end: 0,
            eof: false,
            shut: false,
            bytes: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        match &self.buf {
            Some(buf) => &buf[self.start..self.end],
            None => &[],
        }
    }

    /// Room left, once the pending bytes are moved to the front.
    fn has_room(&self) -> bool {
        self.end - self.start < RELAY_BUF
    }

    /// Free space to read into (takes a buffer from the pool if there is none).
    fn room(&mut self, pool: &mut Pool) -> &mut [u8] {
        let buf = self.buf.get_or_insert_with(|| pool.take());
        if self.end == buf.len() && self.start > 0 {
            buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut buf[self.end..]
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// `n` pending bytes were written (or used); an empty buffer goes back to the pool.
    fn consumed(&mut self, n: usize, pool: &mut Pool) {
        self.start += n;
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
            if let Some(buf) = self.buf.take() {
                pool.give(buf);
            }
        }
    }

    /// Queues a short message (a SOCKS reply). Replies are a few bytes and come before any
    /// relayed data, so they always fit.
    fn push(&mut self, bytes: &[u8], pool: &mut Pool) {
        let room = self.room(pool);
        let n = bytes.len().min(room.len());
        room[..n].copy_from_slice(&bytes[..n]);
        self.filled(n);
    }

    fn release(&mut self, pool: &mut Pool) {
        let pending = self.end - self.start;
        self.consumed(pending, pool);
    }
}

/// Relay buffers not in use, kept for the next busy connection: no allocation per read,
/// and no buffer held by an idle relay.
struct Pool {
    spare: Vec<Box<[u8]>>,
}

impl Pool {
    fn take(&mut self) -> Box<[u8]> {
        self.spare
            .pop()
            .unwrap_or_else(|| vec![0u8; RELAY_BUF].into_boxed_slice())
    }

    fn give(&mut self, buf: Box<[u8]>) {
        if self.spare.len() < POOL_SPARE {
            self.spare.push(buf);
        }
    }
}

struct Conn {
    serial: u64,
    state: State,
    client: OwnedFd,
    peer: SocketAddr,
    /// The SOCKS handshake, until the request is complete.
    handshake: Option<Box<Handshake>>,
    target: Option<Target>,
    /// Addresses still to try, and the last connect error.
    addrs: VecDeque<SocketAddr>,
    last_error: Errno,
    upstream: Option<OwnedFd>,
    /// Client → target (also holds handshake bytes while they are parsed).
    up: Flow,
    /// Target → client (also holds the SOCKS replies).
    down: Flow,
    /// Handshake deadline, then resolve/connect deadline; none while relaying.
    deadline: Option<Instant>,
    started: Instant,
    /// How it ended, for the log line (set when refusing).
    ending: String,
}

impl Conn {
    fn id(&self, slot: usize) -> ConnId {
        ConnId {
            slot,
            serial: self.serial,
        }
    }

    /// The poll events wanted on the client and on the upstream socket (None: leave the fd
    /// out of this round, so a hung-up socket we are not reading cannot make poll spin).
    fn interest(&self) -> (Option<PollFlags>, Option<PollFlags>) {
        let mut client = PollFlags::empty();
        if !self.down.pending().is_empty() {
            client |= PollFlags::POLLOUT;
        }
        let mut upstream = PollFlags::empty();
        match self.state {
            State::Greeting | State::Auth | State::Request => client |= PollFlags::POLLIN,
            // Not reading the client, but watched: POLLHUP/POLLERR say it left.
            State::Admitting | State::Resolving => return (Some(client), None),
            State::Connecting => return (Some(client), Some(PollFlags::POLLOUT)),
            State::Relaying | State::HalfClosed => {
                if !self.up.eof && self.up.has_room() {
                    client |= PollFlags::POLLIN;
                }
                if !self.down.eof && self.down.has_room() {
                    upstream |= PollFlags::POLLIN;
                }
                if !self.up.pending().is_empty() {
                    upstream |= PollFlags::POLLOUT;
                }
            }
            State::Refusing => {}
        }
        let some = |f: PollFlags| (!f.is_empty()).then_some(f);
        (some(client), some(upstream))
    }
}

/// How a relay broke.
enum Broken {
    /// Reading the source failed (ECONNRESET: the peer reset).
    Read(Errno),
    /// Writing (or shutting down) the destination failed (EPIPE, ECONNRESET: it is gone).
    Write(Errno),
}

/// Moves bytes from `src` to `dst` through `flow` until neither side can go on now:
/// read while there is room, write what was read at once (usually the socket takes it
/// without waiting for POLLOUT), and pass an EOF on as shutdown(SHUT_WR) once drained.
fn pump(
    src: &OwnedFd,
    dst: &OwnedFd,
    flow: &mut Flow,
    pool: &mut Pool,
    mut readable: bool,
) -> Result<(), Broken> {
    let mut writable = true;
    for _ in 0..PUMP_ROUNDS {
        let mut progress = false;
        if readable && !flow.eof && flow.has_room() {
            let room = flow.room(pool);
            let wanted = room.len();
            // read(2) from the source into the free part of the buffer.
            match read(src, room) {
                Ok(0) => {
                    flow.eof = true;
                    progress = true;
                }
                Ok(n) => {
                    flow.filled(n);
                    flow.bytes += n as u64;
                    progress = true;
                    // A short read means the socket is drained: skip the EAGAIN read.
                    readable = n == wanted;
                }
                Err(Errno::EAGAIN) => readable = false,
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(Broken::Read(errno)),
            }
            if flow.pending().is_empty() {
                flow.release(pool);
            }
        }
        if writable && !flow.pending().is_empty() {
            // write(2) to the destination: it may take only part (its send buffer is full).
            match write(dst, flow.pending()) {
                Ok(n) => {
                    flow.consumed(n, pool);
                    progress = true;
                }
                // Full: the rest waits for POLLOUT.
                Err(Errno::EAGAIN) => writable = false,
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(Broken::Write(errno)),
            }
        }
        if flow.eof && !flow.shut && flow.pending().is_empty() {
            // shutdown(SHUT_WR): the source is done, so the destination gets our FIN;
            // the other direction keeps flowing.
            shutdown(dst.as_raw_fd(), Shutdown::Write).map_err(Broken::Write)?;
            flow.shut = true;
        }
        if !progress {
            break;
        }
    }
    Ok(())
}

/// Writes what `flow` holds to `dst` (SOCKS replies during the handshake).
fn flush(dst: &OwnedFd, flow: &mut Flow, pool: &mut Pool) -> Result<(), Errno> {
    while !flow.pending().is_empty() {
        match write(dst, flow.pending()) {
            Ok(n) => flow.consumed(n, pool),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Ok(()),
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

/// setsockopt(SO_LINGER {on, 0 s}): the close(2) that follows sends RST instead of FIN.
/// That is how a reset on one side is passed on to the other.
fn arm_reset(fd: &OwnedFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    if let Err(errno) = setsockopt(fd, sockopt::Linger, &linger) {
        report("setsockopt(SO_LINGER)", errno);
    }
}

// ---------------------------------------------------------------------------------------
// The name resolver: the one thing that blocks, on its own thread.
// ---------------------------------------------------------------------------------------

type Lookup = (ConnId, std::io::Result<Vec<SocketAddr>>);

/// getaddrinfo(3) has no non-blocking form: a lookup can take seconds. The loop hands names
/// to a helper thread and goes on; the thread writes one byte to a pipe when an answer is
/// ready, and the pipe's read end is in the poll set (EventMachine's `EM.defer`).
/// A lookup to do: for whom, what, and until when the client waits for it.
type Job = (ConnId, String, u16, Instant);

struct Resolver {
    jobs: mpsc::Sender<Job>,
    answers: mpsc::Receiver<Lookup>,
    /// The pipe's read end, watched by poll.
    wake: OwnedFd,
}

impl Resolver {
    fn spawn() -> Resolver {
        // pipe2(O_NONBLOCK): the loop drains it without blocking; a full pipe means a
        // wake-up is already pending, so the thread's write may fail with EAGAIN.
        let (wake, waker) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).or_die("pipe2");
        let (jobs, job_queue) = mpsc::channel::<Job>();
        let (answer, answers) = mpsc::channel::<Lookup>();
        let thread = std::thread::Builder::new()
            .name("resolver".into())
            .spawn(move || {
                for (id, name, port, until) in job_queue {
                    // A client whose lookup waited past its deadline has been answered
                    // (0x04) and closed already: skip it, so one slow name does not make
                    // every lookup queued behind it late too.
                    if Instant::now() >= until {
                        continue;
                    }
                    // getaddrinfo(3), through std: may block here, never in the loop.
                    let addrs = (name.as_str(), port)
                        .to_socket_addrs()
                        .map(|a| a.collect::<Vec<_>>());
                    if answer.send((id, addrs)).is_err() {
                        break;
                    }
                    // write(2) one byte: the loop's poll wakes up.
                    let _ = write(&waker, b"!");
                }
            });
        if let Err(err) = thread {
            say!("cannot start the resolver thread: {err}");
            std::process::exit(1);
        }
        Resolver {
            jobs,
            answers,
            wake,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The loop.
// ---------------------------------------------------------------------------------------

struct Relay<'h, A: Admission> {
    args: RelayArgs,
    credentials: Option<(Vec<u8>, Vec<u8>)>,
    /// Connections by slot; a closed connection's slot is reused (see [`ConnId`]).
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    serial: u64,
    pool: Pool,
    resolver: Resolver,
    /// Set after EMFILE: the listener is left out of poll until then (or until a
    /// connection closes and frees an fd).
    paused_until: Option<Instant>,
    hs_out: Vec<u8>,
    admission: &'h mut A,
}

/// Which pollfd entries belong to which connection.
struct Watched {
    slot: usize,
    serial: u64,
    client: Option<usize>,
    upstream: Option<usize>,
}

impl<A: Admission> Relay<'_, A> {
    fn run(&mut self, listener: &OwnedFd) -> ! {
        let mut watched: Vec<Watched> = Vec::new();
        let mut revents: Vec<PollFlags> = Vec::new();
        let mut verdicts: Vec<(ConnId, Verdict)> = Vec::new();
        loop {
            // Build this round's pollfd array: the resolver's pipe, the listener (unless
            // paused by EMFILE), the admission hook's fds, then each connection's sockets.
            // Unlike lesson 08's array, kept across rounds, this one is rebuilt every round:
            // a connection has two sockets whose interest changes with its state, and
            // rebuilding costs O(n), like the kernel's own scan of the array in poll
            // (lesson 10's epoll avoids both).
            watched.clear();
            let mut next = self.paused_until;
            let mut fds: Vec<PollFd> = Vec::with_capacity(3 + 2 * self.conns.len());
            fds.push(PollFd::new(self.resolver.wake.as_fd(), PollFlags::POLLIN));
            let listening = self.paused_until.is_none();
            if listening {
                fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
            }
            let hook_from = fds.len();
            self.admission.watch(&mut fds);
            let hook_to = fds.len();
            next = earliest(next, self.admission.deadline());
            for (slot, conn) in self.conns.iter().enumerate() {
                let Some(conn) = conn else { continue };
                next = earliest(next, conn.deadline);
                let (client, upstream) = conn.interest();
                let mut w = Watched {
                    slot,
                    serial: conn.serial,
                    client: None,
                    upstream: None,
                };
                if let Some(events) = client {
                    w.client = Some(fds.len());
                    fds.push(PollFd::new(conn.client.as_fd(), events));
                }
                if let (Some(events), Some(fd)) = (upstream, &conn.upstream) {
                    w.upstream = Some(fds.len());
                    fds.push(PollFd::new(fd.as_fd(), events));
                }
                watched.push(w);
            }
            let timeout = match next {
                None => PollTimeout::NONE,
                Some(at) => {
                    let ms = at.saturating_duration_since(Instant::now()).as_nanos();
                    PollTimeout::try_from(ms.div_ceil(1_000_000).min(60_000))
                        .unwrap_or(PollTimeout::MAX)
                }
            };

            // poll(2): sleep until any of these fds is ready or the next deadline.
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(errno) => fatal("poll", errno),
            }
            revents.clear();
            revents.extend(
                fds.iter()
                    .map(|fd| fd.revents().unwrap_or(PollFlags::empty())),
            );
            drop(fds);
            let now = Instant::now();

            if !revents[0].is_empty() {
                self.lookups_done();
            }
            if listening && !revents[1].is_empty() {
                self.accept_clients(listener, now);
            }
            self.admission
                .ready(now, &revents[hook_from..hook_to], &mut verdicts);
            for (id, verdict) in verdicts.drain(..) {
                self.verdict(id, verdict);
            }
            for w in &watched {
                let pick = |i: Option<usize>| i.map_or(PollFlags::empty(), |i| revents[i]);
                let (client, upstream) = (pick(w.client), pick(w.upstream));
                if !(client.is_empty() && upstream.is_empty()) {
                    self.events(w.slot, w.serial, client, upstream);
                }
            }
            if next.is_some_and(|at| at <= Instant::now()) {
                self.expire(Instant::now());
            }
        }
    }

    fn conn(&mut self, slot: usize, serial: u64) -> Option<&mut Conn> {
        self.conns
            .get_mut(slot)?
            .as_mut()
            .filter(|c| c.serial == serial)
    }

    /// accept4(2) what is queued, up to a batch. On EMFILE (out of fds) stop watching the
    /// listener: a level-triggered poll would report it readable again at once, and the
    /// loop would spin at 100 % CPU. Clients wait in the backlog meanwhile.
    fn accept_clients(&mut self, listener: &OwnedFd, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            // accept4(SOCK_NONBLOCK): the client's socket is born non-blocking.
            match accept4(listener, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
                Ok(client) => self.add(client, now),
                Err(Errno::EAGAIN) => return,
                Err(errno) => match AcceptFailure::of(errno) {
                    AcceptFailure::Retry => continue,
                    AcceptFailure::Exhausted => {
                        say!(
                            "{}: not accepting until a connection closes (or {} s)",
                            describe("accept", errno),
                            EMFILE_RETRY.as_secs()
                        );
                        self.paused_until = Some(now + EMFILE_RETRY);
                        return;
                    }
                    AcceptFailure::Fatal => fatal("accept", errno),
                },
            }
        }
    }

    fn add(&mut self, client: OwnedFd, now: Instant) {
        // getpeername(2): who this is, for the log line.
        let peer = getpeername::<SockaddrStorage>(client.as_raw_fd())
            .ok()
            .and_then(|ss| net::std_addr(&ss))
            .unwrap_or(socks5::UNSPECIFIED_BND);
        self.serial += 1;
        let conn = Conn {
            serial: self.serial,
            state: State::Greeting,
            client,
            peer,
            handshake: Some(Box::new(Handshake::new(self.credentials.clone()))),
            target: None,
            addrs: VecDeque::new(),
            last_error: Errno::EHOSTUNREACH,
            upstream: None,
            up: Flow::new(),
            down: Flow::new(),
            deadline: Some(now + self.args.handshake_timeout),
            started: now,
            ending: String::new(),
        };
        match self.free.pop() {
            Some(slot) => self.conns[slot] = Some(conn),
            None => self.conns.push(Some(conn)),
        }
    }

    /// poll said something about this connection's sockets.
    fn events(&mut self, slot: usize, serial: u64, client: PollFlags, upstream: PollFlags) {
        let conn = self.conns.get_mut(slot).and_then(Option::as_mut);
        let Some(conn) = conn.filter(|c| c.serial == serial) else {
            return;
        };
        let gone = PollFlags::POLLHUP | PollFlags::POLLERR;
        let readable = PollFlags::POLLIN | gone;
        match conn.state {
            State::Greeting | State::Auth | State::Request => {
                if client.contains(PollFlags::POLLOUT) {
                    if let Err(errno) = flush(&conn.client, &mut conn.down, &mut self.pool) {
                        return self.finish(slot, describe("write", errno));
                    }
                }
                if client.intersects(readable) {
                    self.handshake_input(slot);
                }
            }
            State::Admitting | State::Resolving | State::Connecting => {
                if client.intersects(gone) {
                    let state = conn.state;
                    return self.finish(slot, format!("client left while {state:?}"));
                }
                if client.contains(PollFlags::POLLOUT) {
                    if let Err(errno) = flush(&conn.client, &mut conn.down, &mut self.pool) {
                        return self.finish(slot, describe("write", errno));
                    }
                }
                if conn.state == State::Connecting && !upstream.is_empty() {
                    self.connect_done(slot);
                }
            }
            State::Relaying | State::HalfClosed => self.relay(
                slot,
                client.intersects(readable),
                upstream.intersects(readable),
            ),
            State::Refusing => self.refusing(slot),
        }
    }

    /// read(2) handshake bytes and feed them to the sans-IO machine in src/socks5.rs.
    fn handshake_input(&mut self, slot: usize) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        // The bytes go into the up flow's buffer: whatever follows the request in the same
        // read is early payload for the target, and stays there.
        match read(&conn.client, conn.up.room(&mut self.pool)) {
            Ok(0) => {
                let state = conn.state;
                return self.finish(slot, format!("client left during {state:?}"));
            }
            Ok(n) => conn.up.filled(n),
            Err(Errno::EAGAIN | Errno::EINTR) => return conn.up.release(&mut self.pool),
            Err(errno) => return self.finish(slot, describe("read", errno)),
        }
        let Some(handshake) = conn.handshake.as_mut() else {
            return;
        };
        self.hs_out.clear();
        let step = handshake.feed(conn.up.pending(), &mut self.hs_out);
        conn.down.push(&self.hs_out, &mut self.pool);
        match step {
            Step::NeedMore => {
                conn.state = match handshake.state() {
                    socks5::State::Auth => State::Auth,
                    socks5::State::Request => State::Request,
                    _ => State::Greeting,
                };
                conn.up.release(&mut self.pool);
                if let Err(errno) = flush(&conn.client, &mut conn.down, &mut self.pool) {
                    self.finish(slot, describe("write", errno));
                }
            }
            Step::Close(reason) => {
                conn.up.release(&mut self.pool);
                conn.ending = reason.to_string();
                conn.state = State::Refusing;
                self.refusing(slot);
            }
            Step::Connect { target, consumed } => {
                conn.up.consumed(consumed, &mut self.pool);
                conn.up.bytes = conn.up.pending().len() as u64;
                conn.handshake = None;
                conn.state = State::Admitting;
                let (id, peer) = (conn.id(slot), conn.peer);
                match self.admission.admit(id, peer, &target) {
                    Verdict::Allow => self.resolve(slot, target),
                    Verdict::Refuse(reply, why) => {
                        conn.target = Some(target);
                        conn.state = State::Refusing;
                        self.refuse(slot, reply, why);
                    }
                    Verdict::Later => conn.target = Some(target),
                }
            }
        }
    }

    /// The admission hook answered a client it had left at [`Verdict::Later`].
    fn verdict(&mut self, id: ConnId, verdict: Verdict) {
        let Some(conn) = self.conn(id.slot, id.serial) else {
            return;
        };
        if conn.state != State::Admitting {
            return;
        }
        let Some(target) = conn.target.take() else {
            return;
        };
        match verdict {
            Verdict::Allow => self.resolve(id.slot, target),
            Verdict::Refuse(reply, why) => {
                conn.target = Some(target);
                conn.state = State::Refusing;
                self.refuse(id.slot, reply, why);
            }
            Verdict::Later => conn.target = Some(target),
        }
    }

    /// IP literals go straight to connect; names go to the resolver thread.
    fn resolve(&mut self, slot: usize, target: Target) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        let literal = match &target {
            Target::Ip(addr) => Some(*addr),
            // curl --socks5-hostname sends an IP host as a "name" too.
            Target::Domain(name, port) => name.parse::<IpAddr>().ok().map(|ip| (ip, *port).into()),
        };
        match literal {
            Some(addr) => {
                conn.target = Some(target);
                conn.addrs = VecDeque::from([addr]);
                self.connect_next(slot);
            }
            None => {
                let Target::Domain(name, port) = &target else {
                    return;
                };
                let until = Instant::now() + self.args.connect_timeout;
                let job = (conn.id(slot), name.clone(), *port, until);
                conn.target = Some(target);
                conn.state = State::Resolving;
                conn.deadline = Some(until);
                if self.resolver.jobs.send(job).is_err() {
                    self.refuse(slot, Reply::GeneralFailure, "resolver thread gone".into());
                }
            }
        }
    }

    /// The pipe woke us: drain it, then take every finished lookup.
    fn lookups_done(&mut self) {
        let mut bytes = [0u8; 256];
        // read(2) the wake-up bytes until the pipe is empty (EAGAIN).
        while let Ok(n) = read(&self.resolver.wake, &mut bytes) {
            if n == 0 {
                break;
            }
        }
        while let Ok((id, result)) = self.resolver.answers.try_recv() {
            let outgoing = self.args.outgoing;
            let Some(conn) = self.conn(id.slot, id.serial) else {
                continue;
            };
            if conn.state != State::Resolving {
                continue;
            }
            match result {
                Ok(addrs) => {
                    // With -b, only addresses of the outgoing address's family can work.
                    conn.addrs = addrs
                        .into_iter()
                        .filter(|a| outgoing.is_none_or(|ip| ip.is_ipv4() == a.is_ipv4()))
                        .collect();
                    self.connect_next(id.slot);
                }
                Err(err) => {
                    let why = format!("getaddrinfo: {err}");
                    self.refuse(id.slot, Reply::HostUnreachable, why);
                }
            }
        }
    }

    /// Starts a non-blocking connect(2) to the next address, or answers with the last error.
    fn connect_next(&mut self, slot: usize) {
        let outgoing = self.args.outgoing;
        let timeout = self.args.connect_timeout;
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        if let Some(old) = conn.upstream.take() {
            let _ = close(old);
        }
        while let Some(addr) = conn.addrs.pop_front() {
            // socket(SOCK_NONBLOCK): connect will return at once instead of blocking for
            // the whole TCP handshake.
            let sock = match socket(
                net::family(&addr),
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                None,
            ) {
                Ok(sock) => sock,
                Err(errno) => {
                    conn.last_error = errno;
                    continue;
                }
            };
            if let Some(ip) = outgoing {
                // bind(2) to the -b address (port 0: any) before connecting.
                let from = net::sockaddr(SocketAddr::new(ip, 0));
                if let Err(errno) = bind(sock.as_raw_fd(), from.as_ref()) {
                    conn.last_error = errno;
                    let _ = close(sock);
                    continue;
                }
            }
            // connect(2): EINPROGRESS means "started"; POLLOUT will say when it is done.
            match connect(sock.as_raw_fd(), net::sockaddr(addr).as_ref()) {
                Ok(()) => {
                    conn.upstream = Some(sock);
                    return self.connected(slot);
                }
                Err(Errno::EINPROGRESS) => {
                    conn.upstream = Some(sock);
                    conn.state = State::Connecting;
                    conn.deadline = Some(Instant::now() + timeout);
                    return;
                }
                Err(errno) => {
                    conn.last_error = errno;
                    let _ = close(sock);
                }
            }
        }
        let errno = conn.last_error;
        self.refuse(
            slot,
            Reply::from_io_error(&errno.into()),
            describe("connect", errno),
        );
    }

    /// POLLOUT (or an error) on a connecting socket: did it work?
    fn connect_done(&mut self, slot: usize) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        let Some(sock) = &conn.upstream else { return };
        // getsockopt(SO_ERROR): the result of the non-blocking connect (0 = connected).
        match getsockopt(sock, sockopt::SocketError) {
            Ok(0) => self.connected(slot),
            Ok(code) => {
                conn.last_error = Errno::from_raw(code);
                self.connect_next(slot);
            }
            Err(errno) => {
                conn.last_error = errno;
                self.connect_next(slot);
            }
        }
    }

    /// Connected: reply success with BND = getsockname of the outgoing socket, then relay.
    fn connected(&mut self, slot: usize) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        let Some(sock) = &conn.upstream else { return };
        // getsockname(2): the address and port the relay connects from (BND in the reply).
        let bnd = getsockname::<SockaddrStorage>(sock.as_raw_fd())
            .ok()
            .and_then(|ss| net::std_addr(&ss))
            .unwrap_or(socks5::UNSPECIFIED_BND);
        conn.down.push(
            encode_reply(Reply::Succeeded, bnd).as_bytes(),
            &mut self.pool,
        );
        conn.addrs = VecDeque::new();
        conn.state = State::Relaying;
        conn.deadline = None;
        // Send the reply and any early payload now.
        self.relay(slot, false, false);
    }

    /// Moves bytes both ways; notices EOFs, resets and the end.
    fn relay(&mut self, slot: usize, client_readable: bool, upstream_readable: bool) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        let Some(upstream) = &conn.upstream else {
            return;
        };
        let pool = &mut self.pool;
        let up = pump(&conn.client, upstream, &mut conn.up, pool, client_readable);
        let down = match up {
            Ok(()) => pump(
                upstream,
                &conn.client,
                &mut conn.down,
                pool,
                upstream_readable,
            ),
            Err(_) => Ok(()),
        };
        // A reset (or a dead socket) on one side resets the other.
        let broken = match (up, down) {
            (Err(Broken::Read(e)), _) => {
                Some((true, format!("client reset ({})", describe("read", e))))
            }
            (Err(Broken::Write(e)), _) => {
                Some((false, format!("target gone ({})", describe("write", e))))
            }
            (_, Err(Broken::Read(e))) => {
                Some((false, format!("target reset ({})", describe("read", e))))
            }
            (_, Err(Broken::Write(e))) => {
                Some((true, format!("client gone ({})", describe("write", e))))
            }
            _ => None,
        };
        if let Some((client_broke, why)) = broken {
            arm_reset(if client_broke { upstream } else { &conn.client });
            return self.finish(slot, why);
        }
        if conn.up.shut && conn.down.shut {
            return self.finish(slot, "closed".into());
        }
        if conn.up.eof || conn.down.eof {
            conn.state = State::HalfClosed;
        }
    }

    /// Answers `reply` (after the handshake) and closes once it is written.
    fn refuse(&mut self, slot: usize, reply: Reply, why: String) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.state == State::Admitting {
            let id = conn.id(slot);
            self.admission.forget(id);
        }
        conn.down
            .push(encode_error_reply(reply).as_bytes(), &mut self.pool);
        conn.ending = format!("refused {reply}: {why}");
        conn.state = State::Refusing;
        conn.deadline = Some(Instant::now() + self.args.handshake_timeout);
        if let Some(sock) = conn.upstream.take() {
            let _ = close(sock);
        }
        self.refusing(slot);
    }

    /// Flushes the last reply; closes when it is out.
    fn refusing(&mut self, slot: usize) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        match flush(&conn.client, &mut conn.down, &mut self.pool) {
            Ok(()) if !conn.down.pending().is_empty() => {}
            Ok(()) => {
                let why = std::mem::take(&mut conn.ending);
                self.finish(slot, why);
            }
            Err(errno) => {
                let why = format!("{} ({})", conn.ending, describe("write", errno));
                self.finish(slot, why);
            }
        }
    }

    /// Deadlines: handshake (slowloris), admission, lookup, connect, the EMFILE pause.
    fn expire(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|at| at <= now) {
            self.paused_until = None;
        }
        for slot in 0..self.conns.len() {
            let Some(conn) = &mut self.conns[slot] else {
                continue;
            };
            if conn.deadline.is_none_or(|at| at > now) {
                continue;
            }
            match conn.state {
                State::Greeting | State::Auth | State::Request => {
                    let state = conn.state;
                    self.finish(slot, format!("handshake timed out in {state:?}"))
                }
                State::Admitting => {
                    self.refuse(slot, Reply::GeneralFailure, "admission timed out".into())
                }
                State::Resolving => {
                    self.refuse(slot, Reply::HostUnreachable, "name lookup timed out".into())
                }
                State::Connecting => {
                    conn.last_error = Errno::ETIMEDOUT;
                    self.connect_next(slot);
                }
                State::Refusing => {
                    let why = format!("{} (reply never read)", conn.ending);
                    self.finish(slot, why);
                }
                State::Relaying | State::HalfClosed => conn.deadline = None,
            }
        }
    }

    /// close(2) both sockets, log one line, free the slot (and resume accepting).
    fn finish(&mut self, slot: usize, ending: String) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        if conn.state == State::Admitting {
            self.admission.forget(conn.id(slot));
        }
        conn.up.release(&mut self.pool);
        conn.down.release(&mut self.pool);
        if let Some(sock) = conn.upstream.take() {
            if let Err(errno) = close(sock) {
                report("close", errno);
            }
        }
        if let Err(errno) = close(conn.client) {
            report("close", errno);
        }
        // An fd is free again: if accept was paused by EMFILE, try now.
        self.paused_until = None;
        let target = conn
            .target
            .as_ref()
            .map_or_else(|| "(no request)".to_string(), Target::to_string);
        say!(
            "client disconnected: {} → {target} · up {} B, down {} B · {:.3} s · {ending}",
            conn.peer,
            conn.up.bytes,
            conn.down.bytes,
            conn.started.elapsed().as_secs_f64()
        );
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
