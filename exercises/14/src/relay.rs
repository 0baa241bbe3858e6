//! The relay loop, then one connection's life in the order it happens. Read this file first.
//!
//! One thread, one poll(2) over every fd: the stop pipe, the resolver's pipe, the listener,
//! the admission hook's fds (lesson 13's Redis), and each connection's client and upstream
//! sockets. A connection walks [`State`]: accept → handshake (greeting, auth, request) →
//! admission → resolve → connect → relay (→ half-closed) → finish. The sections below follow
//! it; steps 2–4 (handshake to connect) are in connect.rs. Elsewhere: a connection's fields
//! and poll interest (conn.rs), buffers and pumping (flow.rs), the resolver's threads
//! (resolver.rs), the admission hook (admission.rs), the proxy's guard against CONNECTs to
//! itself (guard.rs), the flags (flags.rs), and the SOCKS5 parser, sans-IO
//! (protocols/src/socks5.rs).
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::socket::{
    bind, getsockname, listen, setsockopt, socket, sockopt, Backlog, SockFlag, SockType,
    SockaddrStorage,
};
use protocols::socks5::{self, encode_error_reply, Reply};
use protocols::whitelist::Whitelist;
use sockets_by_hand::accept::{AcceptFailure, AcceptPause, RETRY};
use sockets_by_hand::cli::{self, Lesson};
use sockets_by_hand::errors::{describe, fatal, OrDie};
use sockets_by_hand::{limits, net, say, stop};

use crate::admission::{Admission, ConnId, Verdict};
use crate::conn::{accept4_with_peer, close_fd, seen, timeout_until, Conn, State, POLLRDHUP};
use crate::flags::RelayArgs;
use crate::flow::{arm_reset, flush, half_close, pump, Broken, Pool};
use crate::guard::Guard;
use crate::resolver::Resolver;

// Steps 2–4 (handshake, admission, lookup, connect) continue this file's `impl Relay`.
#[path = "connect.rs"]
mod connect;

/// At most this many accepts per wake-up, so a connection storm cannot starve the relays.
const ACCEPT_BATCH: usize = 64;

/// Sets up the listener and runs the relay loop until Ctrl-C, with `hook` deciding who may
/// connect. `notes` are extra banner lines.
pub fn serve<A: Admission>(lesson: &Lesson, args: &RelayArgs, notes: &[String], hook: &mut A) -> ! {
    // The stop pipe (src/stop.rs): Ctrl-C writes a byte to it. Made before the first socket.
    let stop = stop::stop_pipe();
    // setrlimit(RLIMIT_NOFILE): a relay needs two fds per client.
    let nofile = limits::nofile_note(limits::raise_nofile());
    let addr = args.listen.addr();
    // socket(SOCK_NONBLOCK): an accept with nothing queued returns EAGAIN instead of blocking.
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let listener = socket(net::family(&addr), SockType::Stream, flags, None).or_die("socket");
    // setsockopt(SO_REUSEADDR), bind(2), listen(2), as in every lesson.
    setsockopt(&listener, sockopt::ReuseAddr, &true).or_die("setsockopt(SO_REUSEADDR)");
    bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref()).or_die("bind");
    listen(&listener, Backlog::new(1024).or_die("listen")).or_die("listen");
    let local = getsockname::<SockaddrStorage>(listener.as_raw_fd()).or_die("getsockname");
    let local = net::std_addr(&local).unwrap_or(addr);
    args.check_outgoing();

    // The resolver (its pipe and thread) and the guard (getifaddrs opens and closes a
    // netlink socket) exist before the banner says we are ready.
    let resolver = Resolver::spawn();
    // Never relay to ourselves, nor to what the hook guards (lesson 13's Redis).
    let guard = Guard::new(local, hook.guarded());
    let mut lines = vec![nofile];
    lines.extend(args.notes().into_iter().chain(notes.iter().cloned()));
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    cli::banner(lesson, local, &lines);

    let mut relay = Relay {
        args: args.clone(),
        conns: Vec::new(),
        free: Vec::new(),
        accepted: 0,
        pool: Pool::new(),
        resolver,
        pause: AcceptPause::new(RETRY),
        hs_out: Vec::with_capacity(socks5::MAX_ENCODED_REPLY_LEN),
        guard,
        admission: hook,
        whitelist: Whitelist::new(&args.whitelist, args.auth_once),
    };
    relay.run(lesson, &stop, &listener)
}

/// What a step of a connection's life leaves: `Ok` it goes on, `Err(how it ended)` it is
/// over and [`Relay::finish`] closes it.
type Going = Result<(), String>;

struct Relay<'h, A: Admission> {
    args: RelayArgs,
    /// Connections by slot; a closed connection's slot is reused (see [`ConnId`]).
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    accepted: u64,
    pool: Pool,
    resolver: Resolver,
    pause: AcceptPause,
    hs_out: Vec<u8>,
    admission: &'h mut A,
    guard: Guard,
    whitelist: Whitelist,
}

impl<A: Admission> Relay<'_, A> {
    // -- The loop. ----------------------------------------------------------------------------

    fn run(&mut self, lesson: &Lesson, stop: &OwnedFd, listener: &OwnedFd) -> ! {
        let mut watched: Vec<(ConnId, Option<usize>, Option<usize>)> = Vec::new();
        let mut revents: Vec<PollFlags> = Vec::new();
        let mut verdicts: Vec<(ConnId, Verdict)> = Vec::new();
        loop {
            // This round's pollfd array, rebuilt every round because a connection's two
            // sockets change interest with its state (O(n), like poll's own scan).
            let now = Instant::now();
            let listening = self.pause.watching(now);
            let mut next = self.pause.wait_limit(now).map(|wait| now + wait);
            let mut fds: Vec<PollFd> = Vec::with_capacity(4 + 2 * self.conns.len());
            fds.push(PollFd::new(stop.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.resolver.wake.as_fd(), PollFlags::POLLIN));
            // While accept is paused (EMFILE), the listener is watched for no event.
            let accept = if listening {
                PollFlags::POLLIN
            } else {
                PollFlags::empty()
            };
            fds.push(PollFd::new(listener.as_fd(), accept));
            let hook = fds.len();
            self.admission.watch(&mut fds);
            let hook = hook..fds.len();
            next = next.into_iter().chain(self.admission.deadline()).min();
            watched.clear();
            for conn in self.conns.iter().flatten() {
                next = next.into_iter().chain(conn.deadline).min();
                let (client, upstream) = conn.interest();
                let client = client.map(|events| {
                    fds.push(PollFd::new(conn.client.as_fd(), events));
                    fds.len() - 1
                });
                let upstream = upstream.zip(conn.upstream.as_ref()).map(|(events, fd)| {
                    fds.push(PollFd::new(fd.as_fd(), events));
                    fds.len() - 1
                });
                watched.push((conn.id, client, upstream));
            }

            // poll(2): sleep until any of these fds is ready or the next deadline.
            match poll(&mut fds, timeout_until(next)) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(errno) => fatal("poll", errno),
            }
            revents.clear();
            revents.extend(fds.iter().map(seen));
            drop(fds);
            let now = Instant::now();

            if !revents[0].is_empty() && stop::stop_requested(stop) {
                self.stop(lesson);
            }
            if !revents[1].is_empty() {
                self.lookups_done();
            }
            if listening && !revents[2].is_empty() {
                self.accept_clients(listener, now);
            }
            self.admission.ready(now, &revents[hook], &mut verdicts);
            for (id, verdict) in verdicts.drain(..) {
                self.with(id, |relay, conn| relay.admitted(conn, verdict));
            }
            for &(id, client, upstream) in &watched {
                let pick = |i: Option<usize>| i.map_or(PollFlags::empty(), |i| revents[i]);
                let (client, upstream) = (pick(client), pick(upstream));
                if !(client.is_empty() && upstream.is_empty()) {
                    self.with(id, |relay, conn| relay.events(conn, client, upstream));
                }
            }
            if next.is_some_and(|at| at <= Instant::now()) {
                self.expire(Instant::now());
            }
        }
    }

    /// Runs one step of connection `id`'s life (taken out of its slot meanwhile, so the
    /// step may use the rest of the relay); puts it back, or finishes it if it ended.
    fn with(&mut self, id: ConnId, step: impl FnOnce(&mut Self, &mut Conn) -> Going) {
        let slot = self.conns.get_mut(id.slot);
        let Some(mut conn) = slot.and_then(|s| s.take_if(|c| c.id == id)) else {
            return;
        };
        match step(self, &mut conn) {
            Ok(()) => self.conns[id.slot] = Some(conn),
            Err(ending) => self.finish(conn, ending),
        }
    }

    /// poll said something about a connection's sockets; what it means depends on its state.
    fn events(&mut self, conn: &mut Conn, client: PollFlags, upstream: PollFlags) -> Going {
        let gone = PollFlags::POLLHUP | PollFlags::POLLERR;
        let readable = PollFlags::POLLIN | gone;
        match conn.state {
            State::Relaying | State::HalfClosed => {
                let (from_client, from_target) =
                    (client.intersects(readable), upstream.intersects(readable));
                return self.relay(conn, from_client, from_target);
            }
            State::Refusing => return self.refusing(conn),
            // Not reading the client while it waits: POLLHUP, POLLERR, POLLRDHUP say it left.
            State::Admitting | State::Resolving | State::Connecting
                if client.intersects(gone | POLLRDHUP) =>
            {
                return Err(format!("client left while {:?}", conn.state));
            }
            _ => {}
        }
        if client.contains(PollFlags::POLLOUT) {
            flush(&conn.client, &mut conn.down, &mut self.pool)?;
        }
        match conn.state {
            State::Handshake if client.intersects(readable) => self.handshake(conn),
            State::Connecting if !upstream.is_empty() => self.connect_done(conn),
            _ => Ok(()),
        }
    }

    // -- 1. Accept. ---------------------------------------------------------------------------

    /// accept4(2) what is queued, up to a batch.
    fn accept_clients(&mut self, listener: &OwnedFd, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            // accept4(SOCK_NONBLOCK): the client's socket is born non-blocking; the kernel
            // fills in the client's address too (for the log and -w).
            match accept4_with_peer(listener, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
                Ok((client, peer)) => self.add(client, peer, now),
                Err(Errno::EAGAIN) => return,
                // Out of fds (EMFILE): pause accepting (src/accept.rs), or poll would report
                // the listener readable at once and the loop would spin.
                Err(errno) => {
                    self.pause.failed(errno);
                    if AcceptFailure::of(errno) == AcceptFailure::Exhausted {
                        return;
                    }
                }
            }
        }
    }

    fn add(&mut self, client: OwnedFd, peer: Option<SocketAddr>, now: Instant) {
        let peer = peer.unwrap_or(socks5::UNSPECIFIED_BND);
        self.accepted += 1;
        let (slot, serial) = (self.free.pop().unwrap_or(self.conns.len()), self.accepted);
        let deadline = now + self.args.handshake_timeout;
        let (credentials, skip) = (self.args.credentials(), self.whitelist.allows(peer.ip()));
        let id = ConnId { slot, serial };
        let conn = Conn::new(id, client, peer, credentials, skip, deadline);
        if slot == self.conns.len() {
            self.conns.push(None);
        }
        self.conns[slot] = Some(conn);
        // A client sends its greeting right after connecting, so it is usually here by now:
        // read it at once instead of after one more poll (EAGAIN if not; poll waits then).
        self.with(id, |relay, conn| relay.handshake(conn));
    }

    // -- 5. Relay. ----------------------------------------------------------------------------

    /// Moves bytes both ways (flow.rs); passes on EOFs, resets and the end.
    fn relay(&mut self, conn: &mut Conn, from_client: bool, from_target: bool) -> Going {
        let Some(upstream) = &conn.upstream else {
            return Ok(());
        };
        let (client, pool) = (&conn.client, &mut self.pool);
        let up = pump(client, upstream, &mut conn.up, pool, from_client)
            .and_then(|()| half_close(&mut conn.up, upstream));
        let down = match up {
            Ok(()) => pump(upstream, client, &mut conn.down, pool, from_target)
                .and_then(|()| half_close(&mut conn.down, client)),
            Err(_) => Ok(()),
        };
        // A reset (or a dead socket) on one side resets the other.
        let (client_broke, why) = match (up, down) {
            (Err(Broken::Read(e)), _) => (true, format!("client reset ({})", describe("read", e))),
            (Err(Broken::Write(call, e)), _) => {
                (false, format!("target gone ({})", describe(call, e)))
            }
            (_, Err(Broken::Read(e))) => (false, format!("target reset ({})", describe("read", e))),
            (_, Err(Broken::Write(call, e))) => {
                (true, format!("client gone ({})", describe(call, e)))
            }
            _ if conn.up.shut && conn.down.shut => return Err("closed".into()),
            // The mistake: one side's EOF ends both directions; the other side's answer is lost.
            _ => {
                if conn.up.eof || conn.down.eof {
                    conn.state = State::HalfClosed;
                }
                return Ok(());
            }
        };
        arm_reset(if client_broke { upstream } else { client });
        Err(why)
    }

    // -- 6. Finish: refusals, deadlines, close. -----------------------------------------------

    /// Answers `reply` (after the handshake), and closes once it is written.
    fn refuse(&mut self, conn: &mut Conn, reply: Reply, why: String) -> Going {
        if conn.state == State::Admitting {
            self.admission.forget(conn.id);
        }
        conn.down
            .push(encode_error_reply(reply).as_bytes(), &mut self.pool);
        conn.ending = format!("refused {reply}: {why}");
        conn.state = State::Refusing;
        conn.deadline = Some(Instant::now() + self.args.handshake_timeout);
        if let Some(sock) = conn.upstream.take() {
            close_fd(sock);
        }
        self.refusing(conn)
    }

    /// Flushes the last reply; the connection ends when it is out.
    fn refusing(&mut self, conn: &mut Conn) -> Going {
        match flush(&conn.client, &mut conn.down, &mut self.pool) {
            Ok(()) if !conn.down.pending().is_empty() => Ok(()),
            Ok(()) => Err(std::mem::take(&mut conn.ending)),
            Err(why) => Err(format!("{} ({why})", conn.ending)),
        }
    }

    /// Deadlines: handshake (slowloris), admission, lookup, connect, a reply never read.
    fn expire(&mut self, now: Instant) {
        let due = |c: &Conn| c.deadline.is_some_and(|at| at <= now).then_some(c.id);
        for slot in 0..self.conns.len() {
            let Some(id) = self.conns[slot].as_ref().and_then(due) else {
                continue;
            };
            self.with(id, |relay, conn| match conn.state {
                State::Handshake => Err(format!("handshake timed out in {}", conn.phase())),
                State::Admitting => {
                    relay.refuse(conn, Reply::GeneralFailure, "admission timed out".into())
                }
                State::Resolving => {
                    relay.refuse(conn, Reply::HostUnreachable, "name lookup timed out".into())
                }
                State::Connecting => {
                    conn.last_error = ("connect", Errno::ETIMEDOUT);
                    relay.connect_next(conn)
                }
                State::Refusing => Err(format!("{} (reply never read)", conn.ending)),
                State::Relaying | State::HalfClosed => {
                    conn.deadline = None;
                    Ok(())
                }
            });
        }
    }

    /// close(2) both sockets, log one line, free the slot, and resume accepting.
    fn finish(&mut self, mut conn: Conn, ending: String) {
        self.free.push(conn.id.slot);
        let line = conn.summary(&ending);
        match conn.state {
            State::Admitting => self.admission.forget(conn.id),
            State::Resolving => self.resolver.forget(conn.id),
            _ => {}
        }
        conn.up.release(&mut self.pool);
        conn.down.release(&mut self.pool);
        if let Some(sock) = conn.upstream.take() {
            close_fd(sock);
        }
        close_fd(conn.client);
        // An fd is free again: if accept was paused by EMFILE, try now.
        self.pause.resume();
        if !self.args.quiet {
            say!("client disconnected: {line}");
        }
    }

    /// Ctrl-C (or SIGTERM) came through the stop pipe: accept no more, close every
    /// connection (each client sees EOF), print the summary and exit 0.
    fn stop(&mut self, lesson: &Lesson) -> ! {
        let open = self.conns.iter().flatten().count();
        for slot in 0..self.conns.len() {
            if let Some(conn) = self.conns[slot].take() {
                self.finish(conn, "proxy stopping".into());
            }
        }
        say!("{}", stop::summary(lesson, self.accepted, open));
        std::process::exit(0)
    }
}
