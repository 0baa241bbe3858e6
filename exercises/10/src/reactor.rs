// Generated from lessons/10-epoll/reactor.rs by exercises/10/exercise.txt: write its todo!()s.
//! Lesson 10's framework: what EventMachine provides, in plain sight. A reactor on epoll
//! (epoll_create1, epoll_ctl, an epoll_wait loop) that accepts clients and calls the
//! application's [`Handler`] (post_init, receive_data, unbind) with a [`Connection`] it can
//! `send_data` to. main.rs is the application: the echo protocol as one handler.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{accept4, getpeername, shutdown, Shutdown, SockFlag, SockaddrStorage};
use nix::unistd::{close, read, write};
use sockets_by_hand::accept::{AcceptFailure, AcceptPause, RETRY};
use sockets_by_hand::cli::Lesson;
use sockets_by_hand::conn::{HIGH_WATER, LINGER_BYTES, LINGER_TIME, READ_CHUNK};
use sockets_by_hand::errors::{fatal, report, OrDie};
use sockets_by_hand::outbuf::OutBuf;
use sockets_by_hand::{net, say, stop};

/// What an application implements; one value per connection (EM mixes the module into a
/// fresh Connection object for every client).
pub trait Handler: Default {
    /// The connection is set up (EM: `post_init`).
    fn post_init(&mut self, _conn: &mut Connection) {}
    /// Bytes arrived: any amount, part of a line or many lines (EM: `receive_data`).
    fn receive_data(&mut self, conn: &mut Connection, data: &[u8]);
    /// The connection is gone; `conn.error` says if a call failed (EM: `unbind`).
    fn unbind(&mut self, _conn: &Connection) {}
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Closing {
    No,
    AfterWriting,
    /// After shutdown(SHUT_WR): input is read and dropped until EOF, a byte count or a
    /// deadline (the lingering close, see src/conn.rs), then the fd closes.
    Lingering(Instant, usize),
    Now,
}

/// The handle a handler talks through. The reactor owns the fd and writes the output.
pub struct Connection {
    fd: OwnedFd,
    pub peer: String,
    out: OutBuf,
    closing: Closing,
    /// The client closed its side (read returned 0): no lingering needed.
    eof: bool,
    /// shutdown(SHUT_WR) was called, and the handler's unbind already ran.
    shut: bool,
    /// The events epoll is watching for on this fd (to skip needless epoll_ctl calls).
    watching: EpollFlags,
    /// The call that failed, if one did (EM: `error?`).
    pub error: Option<(&'static str, Errno)>,
}

impl Connection {
    /// Queues bytes for the client; the reactor writes them when the socket takes them.
    pub fn send_data(&mut self, data: &[u8]) {
        if self.closing == Closing::No {
            self.out.push(data);
        }
    }

    /// Closes at once; pending output is dropped.
    #[allow(dead_code)] // part of the API; the echo handler always flushes first
    pub fn close_connection(&mut self) {
        self.closing = Closing::Now;
    }

    /// Stops reading, writes what is pending, then closes.
    pub fn close_connection_after_writing(&mut self) {
        if self.closing == Closing::No {
            self.closing = Closing::AfterWriting;
        }
    }

    /// What epoll should watch for now. Level-triggered: EPOLLIN while we want input
    /// (not closing, and under the backpressure mark: a client that does not read its
    /// replies is not read from either), EPOLLOUT only while output is pending.
    fn interest(&self) -> EpollFlags {
        let mut events = EpollFlags::empty();
        let lingering = matches!(self.closing, Closing::Lingering(..));
        if lingering || self.closing == Closing::No && self.out.len() < HIGH_WATER {
            events |= EpollFlags::EPOLLIN;
        }
        if !self.out.is_empty() {
            events |= EpollFlags::EPOLLOUT;
        }
        events
    }
}

/// epoll_event.data for the listener and the stop pipe; connections use their fd number.
const LISTENER: u64 = u64::MAX;
const STOP: u64 = u64::MAX - 1;
/// epoll_event.data for the drain signal (lesson 17 mounts this reactor: see `drain_on`).
const DRAIN: u64 = u64::MAX - 2;
/// How many clients one wake-up accepts at most, so that a connection storm cannot starve
/// the clients already connected (level-triggered: the rest are reported again).
const ACCEPTS_PER_WAKEUP: usize = 256;

pub struct Reactor<H: Handler> {
    /// The lesson being served, for the summary line at Ctrl-C.
    lesson: &'static Lesson,
    epoll: Epoll,
    listener: OwnedFd,
    stop: OwnedFd,
    /// The connection table, indexed by fd number.
    conns: Vec<Option<(Connection, H)>>,
    buf: Vec<u8>,
    /// The accept pause after EMFILE (src/accept.rs), and whether epoll watches the listener.
    pause: AcceptPause,
    listening: bool,
    served: u64,
    drain: Option<Drain>,
}

/// Lesson 17's graceful stop: when `signal` turns readable the reactor stops accepting and
/// serves its clients until the last one leaves or `limit` (from then) has passed.
struct Drain {
    signal: OwnedFd,
    limit: Duration,
    until: Option<Instant>,
}

impl<H: Handler> Reactor<H> {
    pub fn new(lesson: &'static Lesson, listener: OwnedFd, stop: OwnedFd) -> Self {
        // epoll_create1(2): a kernel object holding the interest list and the ready list.
        let epoll: Epoll = todo!("epoll_create1(2): a new epoll instance, EPOLL_CLOEXEC (Epoll::new); man 2 epoll_create1");
        // epoll_ctl(EPOLL_CTL_ADD): watch the listener for connections, the pipe for Ctrl-C.
        for (fd, data) in [(&listener, LISTENER), (&stop, STOP)] {
            let event = EpollEvent::new(EpollFlags::EPOLLIN, data);
            epoll.add(fd, event).or_die("epoll_ctl");
        }
        Reactor {
            lesson,
            epoll,
            listener,
            stop,
            conns: Vec::new(),
            buf: vec![0; READ_CHUNK],
            pause: AcceptPause::new(RETRY),
            listening: true,
            served: 0,
            drain: None,
        }
    }

    pub fn run(mut self) {
        let mut events = vec![EpollEvent::empty(); 1024];
        let mut stopping = false;
        while !stopping && !self.drained() {
            self.watch_listener();
            let now = Instant::now();
            let drain = self.drain.as_ref().and_then(|d| d.until);
            let drain = drain.map(|until| until.saturating_duration_since(now));
            let limit = self.pause.wait_limit(now).into_iter().chain(drain).min();
            let timeout = limit.map_or(EpollTimeout::NONE, |limit| {
                EpollTimeout::try_from(limit).unwrap_or(EpollTimeout::MAX)
            });
            // epoll_wait(2): sleep until a watched fd is ready (or the accept retry is due);
            // only the ready ones come back.
            let n: usize = todo!("epoll_wait(2) into events with this timeout: how many are ready; EINTR: continue; another error is fatal(\"epoll_wait\", errno); man 2 epoll_wait");
            for event in &events[..n] {
                match event.data() {
                    LISTENER => self.accept_clients(),
                    STOP => stopping = stop::stop_requested(&self.stop),
                    DRAIN => self.start_draining(),
                    fd => self.ready(fd as RawFd, event.events()),
                }
            }
        }
        self.close_all();
    }

    /// Out of fds (EMFILE) the listener stays readable, but accept would fail at once: a
    /// 100 % CPU spin. So epoll stops watching it until a client leaves or the retry is due.
    fn watch_listener(&mut self) {
        let watching = self.pause.watching(Instant::now());
        if self.drain.as_ref().is_some_and(|d| d.until.is_some()) {
            return; // draining: the listener has left epoll for good
        }
        if watching != self.listening {
            let events = if watching {
                EpollFlags::EPOLLIN
            } else {
                EpollFlags::empty()
            };
            // epoll_ctl(EPOLL_CTL_MOD): the listener's events to none, or back to EPOLLIN.
            let mut event = EpollEvent::new(events, LISTENER);
            self.epoll
                .modify(&self.listener, &mut event)
                .or_die("epoll_ctl");
            self.listening = watching;
        }
    }

    fn accept_clients(&mut self) {
        if self.drain.as_ref().is_some_and(|d| d.until.is_some()) {
            return; // an event of the batch that began the drain
        }
        for _ in 0..ACCEPTS_PER_WAKEUP {
            // accept4(2) with SOCK_NONBLOCK: the new socket must not block the loop either.
            let fd = match accept4(
                &self.listener,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            ) {
                Ok(fd) => fd,
                Err(Errno::EAGAIN) => return, // the backlog is empty
                Err(errno) => {
                    self.pause.failed(errno);
                    if AcceptFailure::of(errno) == AcceptFailure::Exhausted {
                        return;
                    }
                    continue;
                }
            };
            self.attach(fd);
        }
    }

    fn attach(&mut self, fd: OwnedFd) {
        let peer = getpeername::<SockaddrStorage>(fd.as_raw_fd());
        let peer = peer.map_or_else(|_| "?".to_string(), |p| net::show(&p));
        let raw = fd.as_raw_fd();
        // epoll_ctl(EPOLL_CTL_ADD): watch the client for input, level-triggered (no EPOLLET).
        todo!("epoll_ctl(2) EPOLL_CTL_ADD: watch fd for EPOLLIN, its data the fd number, `EpollEvent::new(EpollFlags::EPOLLIN, raw as u64)`, then `self.epoll.add(&fd, event)`; on failure report(\"epoll_ctl\", errno), close the fd and return; man 2 epoll_ctl");
        self.served += 1;
        let mut conn = Connection {
            fd,
            peer,
            out: OutBuf::with_capacity(4096),
            closing: Closing::No,
            eof: false,
            shut: false,
            watching: EpollFlags::EPOLLIN,
            error: None,
        };
        let mut handler = H::default();
        handler.post_init(&mut conn);
        let slot = raw as usize;
        if self.conns.len() <= slot {
            self.conns.resize_with(slot + 1, || None);
        }
        self.conns[slot] = Some((conn, handler));
        self.settle(raw);
    }

    fn ready(&mut self, fd: RawFd, events: EpollFlags) {
        // An fd closed earlier in this batch (and perhaps reused by a new client since):
        // at worst a read finds nothing (EAGAIN), which is harmless.
        let Some((conn, handler)) = self.conns.get_mut(fd as usize).and_then(Option::as_mut) else {
            return;
        };
        let input = EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
        if events.intersects(input) && conn.interest().contains(EpollFlags::EPOLLIN) {
            // read(2): one chunk per wake-up; if more is waiting, level-triggered epoll
            // reports this fd again on the next epoll_wait.
            match read(&conn.fd, &mut self.buf) {
                Ok(0) if matches!(conn.closing, Closing::Lingering(..)) => {
                    conn.closing = Closing::Now; // the client closed: the lingering is over
                }
                Ok(0) => {
                    conn.eof = true; // EOF: flush, then close
                    conn.close_connection_after_writing();
                }
                Ok(n) => match &mut conn.closing {
                    Closing::Lingering(until, left) => {
                        *left = left.saturating_sub(n); // drained, not answered
                        if *left == 0 || Instant::now() >= *until {
                            conn.closing = Closing::Now;
                        }
                    }
                    _ => handler.receive_data(conn, &self.buf[..n]),
                },
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(errno) => {
                    conn.error = Some(("read", errno));
                    conn.closing = Closing::Now;
                }
            }
        }
        self.settle(fd);
    }

    /// After a handler ran or the socket became writable: write what is pending, close
    /// if the connection is done, else tell epoll what to watch for now.
    fn settle(&mut self, fd: RawFd) {
        let Some((conn, handler)) = self.conns[fd as usize].as_mut() else {
            return;
        };
        while !conn.out.is_empty() && conn.closing != Closing::Now {
            // write(2): as much as the socket's send buffer takes; EAGAIN when it is full.
            match write(&conn.fd, conn.out.pending()) {
                Ok(n) => conn.out.wrote(n),
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    conn.error = Some(("write", errno));
                    conn.closing = Closing::Now;
                }
            }
        }
        if conn.closing == Closing::AfterWriting && conn.out.is_empty() && !conn.eof {
            // shutdown(SHUT_WR): the FIN follows the replies; then linger, reading and
            // dropping the client's input: a close with unread input would reset.
            match shutdown(conn.fd.as_raw_fd(), Shutdown::Write) {
                Ok(()) => {
                    conn.closing = Closing::Lingering(Instant::now() + LINGER_TIME, LINGER_BYTES);
                    conn.shut = true;
                    handler.unbind(conn); // the conversation is over: EM's unbind
                }
                Err(errno) => {
                    conn.error = Some(("shutdown", errno));
                    conn.closing = Closing::Now;
                }
            }
        }
        let done = match conn.closing {
            Closing::Now => true,
            Closing::AfterWriting => conn.out.is_empty(),
            Closing::No | Closing::Lingering(..) => false,
        };
        if done {
            return self.detach(fd);
        }
        let wanted = conn.interest();
        if wanted != conn.watching {
            // epoll_ctl(EPOLL_CTL_MOD): add EPOLLOUT while output waits, drop EPOLLIN
            // above the backpressure mark, and back.
            let mut event = EpollEvent::new(wanted, fd as u64);
            match self.epoll.modify(&conn.fd, &mut event) {
                Ok(()) => conn.watching = wanted,
                Err(errno) => {
                    conn.error = Some(("epoll_ctl", errno));
                    self.detach(fd);
                }
            }
        }
    }

    fn detach(&mut self, fd: RawFd) {
        let Some((conn, mut handler)) = self.conns[fd as usize].take() else {
            return;
        };
        if !conn.shut {
            handler.unbind(&conn); // unless it ran at the shutdown, before the lingering
        }
        // close(2): the last reference to the socket, so epoll forgets it too (no CTL_DEL).
        if let Err(errno) = close(conn.fd) {
            report("close", errno);
        }
        self.pause.resume(); // a free fd: if accept was paused, it can go on
    }

    /// Lesson 17: drain once `signal` is readable (see [`Drain`]). Lesson 10 never calls it.
    #[allow(dead_code)] // lesson 10 mounts no drain
    pub fn drain_on(mut self, signal: OwnedFd, limit: Duration) -> Self {
        let event = EpollEvent::new(EpollFlags::EPOLLIN, DRAIN);
        self.epoll.add(&signal, event).or_die("epoll_ctl");
        self.drain = Some(Drain {
            signal,
            limit,
            until: None,
        });
        self
    }

    /// epoll_ctl(EPOLL_CTL_DEL): accept no more. The listener stays open until the process
    /// exits; what still arrives on it is accepted by whoever else holds the same socket.
    fn start_draining(&mut self) {
        let Some(drain) = self.drain.as_mut() else {
            return;
        };
        let mut bytes = [0u8; 16];
        let _ = read(&drain.signal, &mut bytes);
        if drain.until.is_none() {
            drain.until = Some(Instant::now() + drain.limit);
            self.epoll.delete(&self.listener).or_die("epoll_ctl");
        }
    }

    /// A drain has begun and the last client has left, or its time is up.
    fn drained(&self) -> bool {
        let until = self.drain.as_ref().and_then(|d| d.until);
        until.is_some_and(|until| {
            self.conns.iter().flatten().next().is_none() || Instant::now() >= until
        })
    }

    /// Ctrl-C: closes every connection (each client reads EOF) and prints the summary.
    fn close_all(mut self) {
        let open = self.conns.iter().flatten().count();
        for (conn, _) in self.conns.drain(..).flatten() {
            if let Err(errno) = close(conn.fd) {
                report("close", errno);
            }
        }
        say!("{}", stop::summary(self.lesson, self.served, open));
    }
}
