//! The allowlist: a Redis client inside the relay's poll loop (lesson 12's [`Admission`]).
//!
//! One persistent, non-blocking connection. Each CONNECT queues `GET allowed:<ip>`; the
//! GETs go out together at the next POLLOUT (pipelining) and the replies come back in order,
//! so a FIFO says whose each reply is. Every Redis failure is a state ([`Link::Down`]),
//! never an exit: waiting clients are refused 0x01 (fail closed) and Redis is redialled
//! with a backoff. Each check has a deadline (`--redis-timeout`): a frozen Redis, which
//! accepts and never answers, costs a client that deadline and no more (fail fast).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{connect, getsockopt, socket, sockopt, SockFlag, SockType};
use nix::unistd::{close, read, write};
use protocols::logtext::Escaped;
use protocols::resp::{self, allowlist_key, allowlist_verdict, encode_command, parse, Value};
use protocols::socks5::{Reply, Target};
use sockets_by_hand::errors::{describe, report};
use sockets_by_hand::{net, say};

use crate::admission::{Admission, ConnId, Verdict};

/// Longest wait between two connection attempts (the backoff starts at [`FIRST_RETRY`] and
/// doubles up to this).
const MAX_RETRY: Duration = Duration::from_secs(1);
const FIRST_RETRY: Duration = Duration::from_millis(50);
/// A connect(2) to Redis that takes longer than this is given up (and retried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes of commands not yet taken by the kernel; above it new lookups are refused (0x01)
/// instead of buffered without bound (a Redis that stopped reading).
const MAX_OUTBOX: usize = 256 * 1024;
/// Lookups in flight at most (the FIFO's bound).
const MAX_IN_FLIGHT: usize = 8192;
/// Bytes read from Redis per read(2). The inbox is bounded by `resp::MAX_FRAME_LEN`: a
/// longer frame is a protocol error.
const READ_CHUNK: usize = 16 * 1024;

/// The Redis connection's state: one of these at any time, none of them fatal.
enum Link {
    /// No connection; dial again at `retry`.
    Down { retry: Instant },
    /// A non-blocking connect(2) in flight since `since` (POLLOUT says it finished).
    Connecting { sock: OwnedFd, since: Instant },
    /// Connected: commands go out, replies come in.
    Up(OwnedFd),
}

/// The admission hook: owns the Redis connection, the commands not yet written (`outbox`),
/// the reply bytes not yet parsed (`inbox`) and the FIFO of clients waiting for a reply.
pub struct Allowlist {
    redis: SocketAddr,
    /// How long a check may wait for its reply (`--redis-timeout`). Past it, Redis is taken
    /// as frozen: the connection is dropped (its late replies could no longer be matched to
    /// their clients) and every check waiting on it is refused 0x01.
    timeout: Duration,
    link: Link,
    backoff: Duration,
    outbox: Vec<u8>,
    inbox: Vec<u8>,
    /// One entry per GET sent, in order: Redis answers in order, so the front entry owns
    /// the next reply. A client that left keeps its entry as `None` (its reply must still
    /// be read and dropped, or every later reply would go to the wrong client).
    waiting: VecDeque<(Option<ConnId>, Instant)>,
    /// Why Redis is unavailable (for the refusals' log lines); logged when it changes.
    trouble: String,
    /// The last error Redis replied (`ERR max number of clients reached`, say), so that
    /// the close that follows it is logged with Redis's own reason.
    said: Option<String>,
}

impl Allowlist {
    pub fn new(redis: SocketAddr, timeout: Duration) -> Allowlist {
        Allowlist {
            redis,
            timeout,
            // The first dial happens inside the loop, at its first round.
            link: Link::Down {
                retry: Instant::now(),
            },
            backoff: FIRST_RETRY,
            outbox: Vec::new(),
            inbox: Vec::new(),
            waiting: VecDeque::new(),
            trouble: String::new(),
            said: None,
        }
    }

    fn unavailable(&self) -> Verdict {
        // The mistake: no answer from Redis taken as a yes; an outage opens the proxy to all.
        if crate::mistake(crate::Mistake::FailOpen) {
            return Verdict::Allow;
        }
        let why = format!("allowlist unavailable ({})", self.trouble);
        Verdict::Refuse(Reply::GeneralFailure, why)
    }

    /// Starts a non-blocking connect(2) to Redis.
    fn dial(&mut self, now: Instant, verdicts: &mut Vec<(ConnId, Verdict)>) {
        // socket(SOCK_NONBLOCK): the connect below returns at once.
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let sock = match socket(net::family(&self.redis), SockType::Stream, flags, None) {
            Ok(sock) => sock,
            Err(errno) => return self.lost(now, describe("socket", errno), verdicts),
        };
        // connect(2) = -1 EINPROGRESS: the handshake goes on while the loop serves clients.
        // [connect]
        match connect(sock.as_raw_fd(), net::sockaddr(self.redis).as_ref()) {
            Ok(()) => {
                self.link = Link::Connecting { sock, since: now };
                self.connected(now);
            }
            Err(Errno::EINPROGRESS) => self.link = Link::Connecting { sock, since: now },
            Err(errno) => {
                if let Err(e) = close(sock) {
                    report("close", e);
                }
                self.lost(now, describe("connect", errno), verdicts)
            }
        }
        // [/connect]
    }

    /// The connect finished: the lookups queued meanwhile go out at the next POLLOUT.
    fn connected(&mut self, now: Instant) {
        let link = std::mem::replace(&mut self.link, Link::Down { retry: now });
        let Link::Connecting { sock, .. } = link else {
            self.link = link;
            return;
        };
        // In an outage, a connect is not yet a recovery (at maxclients Redis accepts, then
        // refuses): that is logged at the first real answer.
        if self.trouble.is_empty() {
            say!("allowlist: connected to Redis at {}", self.redis);
        }
        self.link = Link::Up(sock);
    }

    /// The connection failed or broke: close it, answer every waiting client "unavailable"
    /// now (never leave one hanging), and schedule the next attempt.
    fn lost(&mut self, now: Instant, why: String, verdicts: &mut Vec<(ConnId, Verdict)>) {
        // One line per outage, at its start: the reconnects that fail inside it (refused,
        // turned away) are the same outage, whatever their reason.
        if self.trouble.is_empty() {
            let why = format!("Redis at {}: {why}", self.redis);
            say!("allowlist unavailable: {why}; refusing clients (0x01), retrying every ≤1 s");
            self.trouble = why;
        }
        let link = std::mem::replace(
            &mut self.link,
            Link::Down {
                retry: now + self.backoff,
            },
        );
        if let Link::Connecting { sock, .. } | Link::Up(sock) = link {
            // close(2) the broken connection.
            if let Err(errno) = close(sock) {
                report("close", errno);
            }
        }
        self.backoff = (self.backoff * 2).min(MAX_RETRY);
        self.outbox.clear();
        self.inbox.clear();
        self.said = None;
        let refusal = self.unavailable();
        for (id, _) in self.waiting.drain(..) {
            if let Some(id) = id {
                verdicts.push((id, refusal.clone()));
            }
        }
    }

    /// POLLOUT: write(2) as much of the outbox as the socket takes (several GETs at once).
    fn send(&mut self, now: Instant, verdicts: &mut Vec<(ConnId, Verdict)>) {
        let Link::Up(sock) = &self.link else { return };
        let mut sent = 0;
        // [write]
        while sent < self.outbox.len() {
            match write(sock, &self.outbox[sent..]) {
                Ok(n) => sent += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(errno) => return self.lost(now, describe("write", errno), verdicts),
            }
        }
        // [/write]
        self.outbox.drain(..sent);
    }

    /// POLLIN: read(2) replies and hand each to the client at the front of the FIFO.
    fn receive(&mut self, now: Instant, verdicts: &mut Vec<(ConnId, Verdict)>) {
        let Link::Up(sock) = &self.link else { return };
        let mut chunk = [0u8; READ_CHUNK];
        // [read]
        loop {
            match read(sock.as_fd(), &mut chunk) {
                Ok(0) => {
                    let why = match self.said.take() {
                        Some(error) => format!("it said \"{error}\""),
                        None => "it closed the connection".into(),
                    };
                    return self.lost(now, why, verdicts);
                }
                Ok(n) => {
                    self.inbox.extend_from_slice(&chunk[..n]);
                    if n < chunk.len() || self.inbox.len() >= resp::MAX_FRAME_LEN {
                        break;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(errno) => return self.lost(now, describe("read", errno), verdicts),
            }
        }
        // [/read]
        // Replies come back in the order the GETs went out; a pipelined read holds several.
        let mut used = 0;
        loop {
            match parse(&self.inbox[used..]) {
                Ok(None) => break,
                Ok(Some((value, n))) => {
                    used += n;
                    self.said = match &value {
                        Value::Error(text) => Some(Escaped(text.as_bytes()).to_string()),
                        _ => None,
                    };
                    let Some((waiter, _)) = self.waiting.pop_front() else {
                        // Redis speaks first only to turn us away (at maxclients, say).
                        let why = match self.said.take() {
                            Some(error) => format!("it said \"{error}\""),
                            None => "a reply nobody asked for".into(),
                        };
                        return self.lost(now, why, verdicts);
                    };
                    if self.said.is_none() && !self.trouble.is_empty() {
                        // Redis answers: the next outage starts again from the shortest wait
                        // (and is logged again). Not after an error: it may be a refusal.
                        say!(
                            "allowlist: connected to Redis at {} (it answers again)",
                            self.redis
                        );
                        self.backoff = FIRST_RETRY;
                        self.trouble.clear();
                    }
                    if let Some(id) = waiter {
                        verdicts.push((id, self.verdict(&value)));
                    }
                }
                Err(err) => return self.lost(now, err.to_string(), verdicts),
            }
        }
        self.inbox.drain(..used);
    }

    /// The rule (protocols/src/resp.rs): allowed iff the key exists and is not "0".
    fn verdict(&self, value: &resp::Value) -> Verdict {
        match allowlist_verdict(value) {
            resp::Verdict::Allowed => Verdict::Allow,
            resp::Verdict::Denied => Verdict::Refuse(
                Reply::NotAllowed,
                "not on the allowlist (key missing or \"0\")".into(),
            ),
            resp::Verdict::Unavailable => Verdict::Refuse(
                Reply::GeneralFailure,
                format!("allowlist unavailable (Redis answered {})", brief(value)),
            ),
        }
    }
}

impl Admission for Allowlist {
    /// A client asks to CONNECT: queue `GET allowed:<ip>` (sent at the next POLLOUT) and
    /// answer later; while Redis is down (an outage), refuse at once.
    fn admit(&mut self, id: ConnId, client: SocketAddr, _target: &Target) -> Verdict {
        // Down in an outage: refuse. Down before the first dial (the relay reads a client's
        // request in the same round as its accept, before the loop's first dial): queue it.
        if let Link::Down { .. } = self.link {
            if !self.trouble.is_empty() {
                return self.unavailable();
            }
        }
        let key = allowlist_key(client.ip());
        if self.waiting.len() >= MAX_IN_FLIGHT || self.outbox.len() >= MAX_OUTBOX {
            let why = "allowlist unavailable (too many lookups waiting for Redis)";
            return Verdict::Refuse(Reply::GeneralFailure, why.into());
        }
        encode_command(&[b"GET", key.as_bytes()], &mut self.outbox);
        self.waiting.push_back((Some(id), Instant::now()));
        Verdict::Later
    }

    /// The Redis socket joins the poll set: POLLOUT while connecting or while commands wait,
    /// POLLIN while replies are due.
    fn watch<'a>(&'a self, fds: &mut Vec<PollFd<'a>>) {
        // [watch]
        match &self.link {
            Link::Down { .. } => {}
            Link::Connecting { sock, .. } => {
                fds.push(PollFd::new(sock.as_fd(), PollFlags::POLLOUT))
            }
            Link::Up(sock) => {
                // Always POLLIN: an EOF (Redis went away) must be seen even when idle.
                let mut events = PollFlags::POLLIN;
                if !self.outbox.is_empty() {
                    events |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(sock.as_fd(), events));
            }
        }
        // [/watch]
    }

    fn deadline(&self) -> Option<Instant> {
        let link = match &self.link {
            Link::Down { retry } => Some(*retry),
            Link::Connecting { since, .. } => Some(*since + CONNECT_TIMEOUT),
            Link::Up(_) => None,
        };
        // The oldest check's deadline, whatever the link is doing.
        let check = self.waiting.front().map(|(_, at)| *at + self.timeout);
        link.into_iter().chain(check).min()
    }

    fn ready(
        &mut self,
        now: Instant,
        revents: &[PollFlags],
        verdicts: &mut Vec<(ConnId, Verdict)>,
    ) {
        let events = revents.first().copied().unwrap_or(PollFlags::empty());
        match &self.link {
            Link::Down { retry } => {
                if *retry <= now {
                    self.dial(now, verdicts);
                }
            }
            Link::Connecting { sock, since } => {
                let outcome = if !events.is_empty() {
                    // getsockopt(SO_ERROR): how the non-blocking connect ended (0 = connected).
                    match getsockopt(sock, sockopt::SocketError) {
                        Ok(0) => Some(Ok(())),
                        Ok(code) => Some(Err(describe("connect", Errno::from_raw(code)))),
                        Err(errno) => Some(Err(describe("getsockopt", errno))),
                    }
                } else if *since + CONNECT_TIMEOUT <= now {
                    Some(Err(describe("connect", Errno::ETIMEDOUT)))
                } else {
                    None
                };
                match outcome {
                    Some(Ok(())) => self.connected(now),
                    Some(Err(why)) => self.lost(now, why, verdicts),
                    None => {}
                }
            }
            Link::Up(_) => {
                if events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                    self.receive(now, verdicts);
                }
                if events.contains(PollFlags::POLLOUT) {
                    self.send(now, verdicts);
                }
            }
        }
        // The oldest check is past its deadline (a frozen Redis, or a connect that hangs):
        // drop the connection, refuse every waiting client at once (0x01), redial.
        if self
            .waiting
            .front()
            .is_some_and(|(_, at)| *at + self.timeout <= now)
        {
            let why = format!("no reply within {}", millis(self.timeout));
            self.lost(now, why, verdicts);
        }
    }

    /// Redis is the control plane: no client may CONNECT to it through the relay.
    fn guarded(&self) -> Option<SocketAddr> {
        Some(self.redis)
    }

    /// A waiting client left: keep its FIFO entry (its reply will still come), drop its id.
    fn forget(&mut self, id: ConnId) {
        if let Some(entry) = self.waiting.iter_mut().find(|(w, _)| *w == Some(id)) {
            entry.0 = None;
        }
    }
}

/// A duration for a log line: "500 ms", "2.5 s".
fn millis(d: Duration) -> String {
    match d.as_millis() {
        ms if ms < 1000 => format!("{ms} ms"),
        _ => format!("{} s", d.as_secs_f64()),
    }
}

/// A Redis reply for a log line: its kind and size, the text of an error escaped and capped
/// (a Redis we do not control may answer anything, 8 MB included).
fn brief(value: &Value) -> String {
    match value {
        Value::Error(text) => format!("error \"{}\"", Escaped(text.as_bytes())),
        Value::SimpleString(text) => format!("\"{}\"", Escaped(text.as_bytes())),
        Value::Integer(n) => format!("the integer {n}"),
        Value::Bulk(None) | Value::Array(None) => "null".into(),
        Value::Bulk(Some(bytes)) => format!("a {}-byte string", bytes.len()),
        Value::Array(Some(items)) => format!("an array of {}", items.len()),
    }
}
