//! The model, judged from the system calls (principle 11): what the server's process tree did
//! while the checker's clients came, talked, went quiet and left, as strace recorded it
//! ([`crate::trace`]). Not a snapshot of /proc, which a sleep in the right call, or clients
//! served by grandchildren, can satisfy.
//!
//! An exercise's model step is a [`Scenario`] and a list of [`Rule`]s:
//!
//! ```text
//! Step { name: "model: one thread waits only in poll, over every client",
//!        run: |c| calls::judge(c, Scenario::Echo, POLL_LOOP), hint: "…" }
//! const POLL_LOOP: &[Rule] = &[Rule::OneThreadServes, Rule::WaitsOnlyIn(POLLS), …];
//! ```
//!
//! [`judge`] plays the scenario against the server, reads the calls that returned meanwhile
//! ([`Analysis`]), and fails at the first rule broken, with `got` naming the model the calls
//! show ("found: a busy loop, not an event loop: …"). Whatever the rules, a program that
//! execs another fails, and so does a record that lacks the scenario's own accepts (the
//! check never passes on an empty record). The program running is checked to be the one
//! given at the banner already ([`crate::run::start`]).
//!
//! Adding an exercise's model: pick a scenario (or add one: a function that talks to the
//! server and returns the marks around its quiet part), list its rules in a const beside its
//! steps in check.rs, and write a wrong solution and two other right ones into
//! tests/variants.rs. A new rule is a [`Rule`] variant, its arm in `Analysis::breaks` and
//! its sentence in [`expected`]; a model that waits in another call (select, rt_sigtimedwait,
//! io_uring_enter) needs the call in [`trace::CALLS`], in [`is_wait`]'s lists, and its words
//! in [`Analysis::describe`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::thread;
use std::time::Duration;

use crate::check::Ctx;
use crate::client::{Failure, Outcome};
use crate::trace::{self, Call, Line};
use crate::{echo, socks};

/// The readiness calls, as rules name them.
pub const POLLS: &[&str] = &["poll", "ppoll"];
pub const EPOLLS: &[&str] = &["epoll_wait", "epoll_pwait", "epoll_pwait2"];
pub const SELECTS: &[&str] = &["select", "pselect6"];
/// The wait of signal-driven I/O: a signal taken, its si_fd naming the fd.
pub const SIGWAITS: &[&str] = &["rt_sigtimedwait"];
/// Calls that wait without naming an fd: a nap.
pub const SLEEPS: &[&str] = &["nanosleep", "clock_nanosleep"];
/// The ring's one call: it submits the operations queued and waits for completions.
pub const IORING: &[&str] = &["io_uring_enter"];
/// An io_uring server whose accept and recv stay armed submits about one entry per line
/// answered (its send); one that re-arms a recv per line submits two.
pub const ENTRIES_PER_LINE: f64 = 1.5;

/// More calls than this that find nothing (EAGAIN, a wait that returns empty) while nothing
/// arrives is a spin: an event loop makes none.
pub const SPIN_CALLS: usize = 20;
/// How long the clients stay quiet in a scenario.
pub const IDLE: Duration = Duration::from_millis(300);

/// What the model must be. Each is judged over the scenario's calls.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// One thread (of one process) accepts every client and reads every client; other
    /// threads (a resolver pool) may exist, but no process is forked.
    OneThreadServes,
    /// The first process accepts; every client is read in a child of it, never in the
    /// first process itself, and no threads serve.
    ProcessPerClient,
    /// Every call that waits is one of these (readiness calls and sleeps are waits).
    WaitsOnlyIn(&'static [&'static str]),
    /// Every client socket is among the fds one of these calls waits on (poll's array,
    /// select's sets, the epoll instance's interest list).
    WatchesEveryClient(&'static [&'static str]),
    /// Every read on a connection follows, in the same thread, a readiness report naming it
    /// (since that thread's last wait), or its accept.
    ReadsWhenReported,
    /// While nothing arrives, at most [`SPIN_CALLS`] calls that find nothing.
    NoSpin,
    /// No write on a socket without O_NONBLOCK, and no fcntl clearing O_NONBLOCK on one.
    NoBlockingWrite,
    /// No accept, and no read, write, recv or send on a TCP socket: every client's I/O is an
    /// operation submitted to the ring.
    OnlyThroughRing,
    /// At most [`ENTRIES_PER_LINE`] entries submitted per line answered: the accept and each
    /// client's recv are armed once (multishot), and keep completing.
    ArmedOnce,
    /// The first process accepts in one thread; each client is served (read or written) by
    /// one other thread of that process, a thread of its own; no process is forked.
    ThreadPerClient,
    /// No readiness call (poll, select, epoll, a signal wait): every call made in turn.
    NoReadiness,
    /// Every socket the server connect()ed and still holds (an upstream, a store) is among
    /// the fds one of these calls waits on.
    WatchesEveryConnection(&'static [&'static str]),
    /// Every signal a signal wait took names its fd (si_fd, which F_SETSIG gives): none is
    /// a plain SIGIO.
    SignalsNameTheirFd,
}

/// What the checker does while the calls are recorded.
#[derive(Debug, Clone, Copy)]
pub enum Scenario {
    /// One echo client: welcomed, a line, [`IDLE`] quiet, then q (a serial server's).
    Serial,
    /// Three echo clients: welcomed, a line each, [`IDLE`] quiet, then q.
    Echo,
    /// One SOCKS5 relay to the checker's echo target: bytes both ways, [`IDLE`] quiet, EOF.
    Socks,
    /// Three echo clients: welcomed, [`RING_LINES`] lines each one by one, [`IDLE`] quiet,
    /// then q; the record ends once the server has closed them (an io_uring server's accepts
    /// and reads are no calls of their own: its closes show the clients).
    Ring,
    /// Three clients one after another, each greeted and closed (lessons 01–02), [`IDLE`]
    /// quiet, then one more.
    Hello,
}

/// The lines each client of [`Scenario::Ring`] sends, one round trip each.
pub const RING_LINES: usize = 20;

impl Scenario {
    fn said(self) -> String {
        let ms = IDLE.as_millis();
        match self {
            Scenario::Serial => {
                format!("one client: welcomed, a line, {ms} ms quiet, then q (the calls traced)")
            }
            Scenario::Echo => format!(
                "three clients: welcomed, a line each, {ms} ms quiet, then q (the calls traced)"
            ),
            Scenario::Socks => format!(
                "one relay: CONNECT, \"ping\" both ways, {ms} ms quiet, then EOF (the calls traced)"
            ),
            Scenario::Ring => format!(
                "three clients: welcomed, {RING_LINES} lines each one by one, {ms} ms quiet, \
                 then q (the calls traced)"
            ),
            Scenario::Hello => format!(
                "three clients in a row, each greeted and closed, {ms} ms quiet, then one more \
                 (the calls traced)"
            ),
        }
    }
}

/// A wait call as the analysis saw it.
#[derive(Debug, Clone)]
pub struct Wait {
    pub tid: u32,
    pub name: String,
    /// Milliseconds; None: no timeout (-1, NULL).
    pub timeout: Option<f64>,
    /// How many fds it waited on (for epoll: its instance's interest list).
    pub fds: usize,
    /// Whether it is epoll's.
    pub epoll: bool,
}

/// One connection the server accepted.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// Its identity in the walk.
    pub id: u64,
    /// What `-yy` showed it as when accepted.
    pub what: String,
    pub accepted_by: u32,
    /// (process, thread) of each read.
    pub read_by: BTreeSet<(u32, u32)>,
    /// (process, thread) of each write.
    pub written_by: BTreeSet<(u32, u32)>,
    /// The wait calls whose fds included it.
    pub watched_by: BTreeSet<String>,
}

/// The model the calls show, over a window of the trace.
#[derive(Debug, Default)]
pub struct Analysis {
    /// The server's first process.
    pub root: u32,
    /// Programs exec'd after the server's own start.
    pub execs: Vec<String>,
    /// Processes made: pid → parent pid.
    pub parents: BTreeMap<u32, u32>,
    /// Threads made (in the window): tid → its process.
    pub threads_made: BTreeMap<u32, u32>,
    /// Processes forked in the window.
    pub forked: usize,
    /// The threads that accepted a connection (in the window).
    pub acceptors: BTreeSet<u32>,
    pub clients: Vec<Client>,
    pub waits: Vec<Wait>,
    /// Reads on a connection no report named: (count, how many ended EAGAIN, an example).
    pub unreported_reads: usize,
    pub unreported_eagain: usize,
    pub unreported_example: String,
    /// Writes on a socket without O_NONBLOCK, and fcntls that cleared it: one line each.
    pub blocking_writes: Vec<String>,
    pub cleared_nonblock: Vec<String>,
    /// The calls in the quiet part, how many ended EAGAIN, and its length in seconds.
    pub idle_calls: usize,
    pub idle_eagain: usize,
    /// Waits in the quiet part that returned with nothing ready (timed out, or a sleep).
    pub idle_empty_waits: usize,
    pub idle_seconds: f64,
    /// io_uring_enter calls, and the entries they submitted (their results).
    pub ring_enters: usize,
    pub ring_entries: usize,
    /// Accepts, and reads, writes, recvs and sends on TCP sockets: one line each.
    pub plain_io: Vec<String>,
    /// Closes of TCP connections.
    pub conn_closes: usize,
    /// The lines the scenario had answered (for entries per line).
    pub lines_answered: usize,
    /// Signals a signal wait took, and those that named no fd (a plain SIGIO).
    pub signals: usize,
    pub signals_without_fd: usize,
    /// Sockets connect()ed and still open that no wait watched in the window: what each is.
    pub unwatched_connections: Vec<String>,
}

/// The state the walk keeps from the trace's first line on.
#[derive(Default)]
struct State {
    tgid: HashMap<u32, u32>,
    /// (process, fd) → what `-yy` last showed it as (for the messages).
    fds: HashMap<(u32, i32), String>,
    /// (process, fd) → the open socket's identity: a forked child shares its parent's, and
    /// it holds when `-yy` cannot show a socket's addresses.
    ids: HashMap<(u32, i32), u64>,
    next_id: u64,
    /// The sockets, and those that are connections (accepted, or connect()ed).
    sockets: HashSet<u64>,
    conns: HashSet<u64>,
    /// (process, fd) → O_NONBLOCK.
    nonblock: HashMap<(u32, i32), bool>,
    /// (process, epoll fd) → (identity, epoll data) for each fd in its interest list.
    interest: HashMap<(u32, i32), Vec<(u64, u64)>>,
    /// thread → what its last wait reported, and what it accepted since.
    reported: HashMap<u32, BTreeSet<u64>>,
    execs: usize,
    /// (process, fd) of each socket connect()ed, and every identity a wait watched in the
    /// window.
    connected: Vec<(u32, i32, u64)>,
    watched: HashSet<u64>,
}

impl State {
    fn process(&mut self, tid: u32) -> u32 {
        *self.tgid.entry(tid).or_insert(tid)
    }

    fn what(&self, pid: u32, fd: i32) -> String {
        self.fds.get(&(pid, fd)).cloned().unwrap_or_default()
    }

    /// The identity of `fd` in `pid` (a new one for an fd not seen made).
    fn id(&mut self, pid: u32, fd: i32) -> u64 {
        if let Some(id) = self.ids.get(&(pid, fd)) {
            return *id;
        }
        self.fresh(pid, fd)
    }

    /// A new identity: `fd` was just made.
    fn fresh(&mut self, pid: u32, fd: i32) -> u64 {
        self.next_id += 1;
        self.ids.insert((pid, fd), self.next_id);
        self.next_id
    }
}

/// The fd a call's first argument names.
fn first_fd(args: &[&str]) -> Option<i32> {
    args.first().and_then(|a| trace::fd_of(a)).map(|(fd, _)| fd)
}

/// Whether a call waits: a readiness call or a sleep.
pub fn is_wait(name: &str) -> bool {
    SIGWAITS.contains(&name)
        || POLLS.contains(&name)
        || EPOLLS.contains(&name)
        || SELECTS.contains(&name)
        || SLEEPS.contains(&name)
        || IORING.contains(&name)
}

/// A timeout argument in milliseconds: `-1`/`NULL` → None, `2` → 2, `{tv_sec=0,
/// tv_nsec=2000000}` → 2, `{tv_sec=0, tv_usec=2000}` → 2.
fn timeout_ms(arg: &str, unit_ms: bool) -> Option<f64> {
    let arg = arg.trim();
    if arg == "NULL" || arg.starts_with('-') {
        return None;
    }
    if arg.starts_with('{') {
        let secs = trace::numbers_after(arg, "tv_sec=")
            .first()
            .copied()
            .unwrap_or(0) as f64;
        let nsec = trace::numbers_after(arg, "tv_nsec=").first().copied();
        let usec = trace::numbers_after(arg, "tv_usec=").first().copied();
        return Some(
            secs * 1000.0
                + nsec.map_or(0.0, |n| n as f64 / 1e6)
                + usec.map_or(0.0, |u| u as f64 / 1e3),
        );
    }
    let n: f64 = arg.parse().ok()?;
    Some(if unit_ms { n } else { n * 1000.0 })
}

impl Analysis {
    /// The model shown by the calls that returned between marks `from` and `to` (the
    /// state, which fd is what, taken from the trace's start); `idle` is the quiet part
    /// (two marks).
    pub fn of(lines: &[Line], from: usize, to: usize, idle: (usize, usize)) -> Analysis {
        let mut a = Analysis::default();
        let mut s = State::default();
        let mut idle_times = (None, None);
        for line in lines {
            let Line::Call(call) = line else { continue };
            if a.root == 0 {
                a.root = call.tid;
            }
            if call.end >= to && call.end != usize::MAX {
                continue;
            }
            let inside = call.end >= from && call.end < to;
            if call.end >= idle.0 && call.end < idle.1 {
                a.idle_calls += 1;
                if call.errno.as_deref() == Some("EAGAIN") {
                    a.idle_eagain += 1;
                }
                if is_wait(&call.name) && call.ret == Some(0) {
                    a.idle_empty_waits += 1;
                }
                idle_times.0.get_or_insert(call.time);
                idle_times.1 = Some(call.time);
            }
            a.step(&mut s, call, inside);
        }
        if let (Some(t0), Some(t1)) = idle_times {
            a.idle_seconds = t1 - t0;
        }
        for (pid, fd, id) in &s.connected {
            if s.ids.get(&(*pid, *fd)) == Some(id) && !s.watched.contains(id) {
                a.unwatched_connections
                    .push(format!("{fd}<{}>", s.what(*pid, *fd)));
            }
        }
        a
    }

    fn client(&mut self, id: u64) -> Option<&mut Client> {
        self.clients.iter_mut().find(|c| c.id == id)
    }

    fn step(&mut self, s: &mut State, call: &Call, inside: bool) {
        let tid = call.tid;
        let pid = s.process(tid);
        let args = trace::split_args(&call.args);
        // Every fd shown says what it is now (a socket gets its addresses once connected).
        for (fd, what) in trace::fds_in(&call.args) {
            if !what.is_empty() {
                s.fds.insert((pid, fd), what);
            }
        }
        let first = args.first().and_then(|a| trace::fd_of(a)).map(|(fd, _)| fd);
        let name = call.name.as_str();
        if inside {
            self.ring_calls(s, pid, call, first);
        }
        match name {
            "execve" | "execveat" if call.done && call.ret == Some(0) => {
                s.execs += 1;
                if s.execs > 1 && inside {
                    let path = args.first().map_or("", |a| a.trim_matches('"'));
                    self.execs.push(path.to_string());
                }
            }
            "clone" | "clone3" | "fork" | "vfork" if call.done => {
                let Some(child) = call.ret.filter(|&r| r > 0).map(|r| r as u32) else {
                    return;
                };
                if call.args.contains("CLONE_THREAD") {
                    s.tgid.insert(child, pid);
                    if inside {
                        self.threads_made.insert(child, pid);
                    }
                    return;
                }
                s.tgid.insert(child, child);
                self.parents.insert(child, pid);
                if inside {
                    self.forked += 1;
                }
                // The child's fds are its parent's: the same sockets, the same flags.
                let fds: Vec<_> = s
                    .fds
                    .iter()
                    .filter(|(k, _)| k.0 == pid)
                    .map(|(k, v)| (k.1, v.clone()))
                    .collect();
                for (fd, what) in fds {
                    s.fds.insert((child, fd), what);
                }
                let ids: Vec<_> = s
                    .ids
                    .iter()
                    .filter(|(k, _)| k.0 == pid)
                    .map(|(k, v)| (k.1, *v))
                    .collect();
                for (fd, id) in ids {
                    s.ids.insert((child, fd), id);
                }
                let flags: Vec<_> = s
                    .nonblock
                    .iter()
                    .filter(|(k, _)| k.0 == pid)
                    .map(|(k, v)| (k.1, *v))
                    .collect();
                for (fd, nb) in flags {
                    s.nonblock.insert((child, fd), nb);
                }
            }
            "socket" | "accept" | "accept4" if call.done => {
                let Some((fd, what)) = trace::fd_of(&call.result) else {
                    return;
                };
                let id = s.fresh(pid, fd);
                s.sockets.insert(id);
                let nonblocking = name != "accept" && call.args.contains("SOCK_NONBLOCK");
                s.nonblock.insert((pid, fd), nonblocking);
                if name != "socket" {
                    s.conns.insert(id);
                    s.reported.entry(tid).or_default().insert(id);
                    if inside {
                        self.acceptors.insert(tid);
                        self.clients.push(Client {
                            id,
                            what,
                            accepted_by: tid,
                            ..Client::default()
                        });
                    }
                }
            }
            "connect" => {
                let Some(fd) = first else { return };
                let id = s.id(pid, fd);
                s.conns.insert(id);
                if s.sockets.contains(&id) && !s.connected.iter().any(|c| c.2 == id) {
                    s.connected.push((pid, fd, id));
                }
            }
            "fcntl" | "ioctl" => {
                let Some(fd) = first else { return };
                let setting = match (name, args.get(1).copied()) {
                    ("fcntl", Some("F_SETFL")) => args.get(2).map(|f| {
                        (
                            f.contains("O_NONBLOCK"),
                            format!("fcntl({fd}, F_SETFL, {f})"),
                        )
                    }),
                    ("ioctl", Some("FIONBIO")) => args
                        .get(2)
                        .map(|v| (v.trim() != "[0]", format!("ioctl({fd}, FIONBIO, {v})"))),
                    _ => None,
                };
                let Some((on, said)) = setting else { return };
                if !call.done || call.ret != Some(0) {
                    return;
                }
                let was = s.nonblock.insert((pid, fd), on);
                let id = s.id(pid, fd);
                if inside && !on && was == Some(true) && s.sockets.contains(&id) {
                    self.cleared_nonblock
                        .push(format!("{said} on {}", s.what(pid, fd)));
                }
            }
            "close" => {
                let Some(fd) = first else { return };
                s.fds.remove(&(pid, fd));
                s.nonblock.remove(&(pid, fd));
                s.interest.remove(&(pid, fd));
                if let Some(id) = s.ids.remove(&(pid, fd)) {
                    for list in s.interest.iter_mut().filter(|(k, _)| k.0 == pid) {
                        list.1.retain(|(i, _)| *i != id);
                    }
                }
            }
            "epoll_ctl" => {
                let (Some(epfd), Some((fd, _))) =
                    (first, args.get(2).and_then(|a| trace::fd_of(a)))
                else {
                    return;
                };
                let id = s.id(pid, fd);
                let data = trace::numbers_after(args.get(3).unwrap_or(&""), "u64=")
                    .first()
                    .map_or(fd as u64, |d| *d as u64);
                let list = s.interest.entry((pid, epfd)).or_default();
                list.retain(|(i, _)| *i != id);
                if args.get(1) != Some(&"EPOLL_CTL_DEL") {
                    list.push((id, data));
                }
            }
            "read" | "readv" | "recvfrom" | "recvmsg" => {
                let Some(fd) = first else { return };
                let id = s.id(pid, fd);
                if !s.conns.contains(&id) || !inside {
                    return;
                }
                let known = s.reported.get(&tid).is_some_and(|r| r.contains(&id));
                if let Some(client) = self.client(id) {
                    client.read_by.insert((pid, tid));
                }
                if !known {
                    self.unreported_reads += 1;
                    if call.errno.as_deref() == Some("EAGAIN") {
                        self.unreported_eagain += 1;
                    }
                    if self.unreported_example.is_empty() {
                        self.unreported_example =
                            format!("{name}({fd}<{}>) = {}", s.what(pid, fd), call.result);
                    }
                }
            }
            "write" | "writev" | "sendto" | "sendmsg" => {
                let Some(fd) = first else { return };
                let id = s.id(pid, fd);
                if inside {
                    if let Some(client) = self.client(id) {
                        client.written_by.insert((pid, tid));
                    }
                }
                if inside && s.conns.contains(&id) && s.nonblock.get(&(pid, fd)) == Some(&false) {
                    self.blocking_writes.push(format!(
                        "{name}({fd}<{}>) = {}",
                        s.what(pid, fd),
                        call.result
                    ));
                }
            }
            _ if is_wait(name) => self.wait(s, call, &args, inside),
            _ => {}
        }
    }

    /// What an io_uring model is judged by: the ring's calls, the entries they submitted,
    /// the plain socket calls, the closes of connections.
    fn ring_calls(&mut self, s: &State, pid: u32, call: &Call, first: Option<i32>) {
        let name = call.name.as_str();
        if IORING.contains(&name) {
            self.ring_enters += 1;
            self.ring_entries += call.ret.filter(|_| call.done).unwrap_or(0).max(0) as usize;
            return;
        }
        let what = first.map(|fd| s.what(pid, fd)).unwrap_or_default();
        let on_tcp = what.starts_with("TCP");
        let io = [
            "read", "readv", "recvfrom", "recvmsg", "write", "writev", "sendto", "sendmsg",
        ];
        if name == "close" && trace::is_connection(&what) {
            self.conn_closes += 1;
        } else if name == "accept" || name == "accept4" || (on_tcp && io.contains(&name)) {
            let fd = first.unwrap_or(-1);
            self.plain_io
                .push(format!("{name}({fd}<{what}>) = {}", call.result));
        }
    }

    fn wait(&mut self, s: &mut State, call: &Call, args: &[&str], inside: bool) {
        let (tid, name) = (call.tid, call.name.as_str());
        let pid = s.process(tid);
        let mut watched: Vec<u64> = Vec::new();
        let mut reported: BTreeSet<u64> = BTreeSet::new();
        let mut epoll = false;
        let timeout = if POLLS.contains(&name) {
            let list = args.first().copied().unwrap_or("");
            for fd in trace::numbers_after(list, "fd=")
                .into_iter()
                .filter(|fd| *fd >= 0)
            {
                watched.push(s.id(pid, fd as i32));
            }
            // poll's result names the ready fds by number.
            for fd in trace::numbers_after(&call.result, "fd=") {
                reported.insert(s.id(pid, fd as i32));
            }
            timeout_ms(args.get(2).copied().unwrap_or("NULL"), name == "poll")
        } else if EPOLLS.contains(&name) {
            epoll = true;
            let epfd = first_fd(args).unwrap_or(-1);
            let list = s.interest.get(&(pid, epfd)).cloned().unwrap_or_default();
            watched = list.iter().map(|(id, _)| *id).collect();
            for data in trace::numbers_after(args.get(1).unwrap_or(&""), "u64=") {
                if let Some((id, _)) = list.iter().find(|(_, d)| *d == data as u64) {
                    reported.insert(*id);
                }
            }
            timeout_ms(
                args.get(3).copied().unwrap_or("NULL"),
                name != "epoll_pwait2",
            )
        } else if SELECTS.contains(&name) {
            // With -yy each fd in a set shows what it is: `[3<pipe:[…]> 7<TCP:[…]>]`.
            let fds = |set: &str| -> Vec<i32> {
                let shown: Vec<i32> = trace::fds_in(set).into_iter().map(|(fd, _)| fd).collect();
                if !shown.is_empty() {
                    return shown;
                }
                set.trim_matches(['[', ']'])
                    .split_whitespace()
                    .filter_map(|fd| fd.parse::<i32>().ok())
                    .collect()
            };
            for set in args.iter().skip(1).take(3) {
                for fd in fds(set) {
                    watched.push(s.id(pid, fd));
                }
            }
            // The result names the ready fds, by number only: `2 (in [7], out [7], left {…})`.
            if let Some(open) = call.result.find('(') {
                let ready = &call.result[open..];
                let ready = ready.split(", left").next().unwrap_or(ready);
                for fd in ready
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse::<i32>().ok())
                {
                    reported.insert(s.id(pid, fd));
                }
            }
            timeout_ms(args.get(4).copied().unwrap_or("NULL"), false)
        } else if IORING.contains(&name) {
            // The ring: no fd list, no timeout (the lessons' waits have none).
            None
        } else if SIGWAITS.contains(&name) {
            // rt_sigtimedwait(set, info, timeout, size): info's si_fd names the fd. strace
            // shows a real-time signal's info as a queued one's (`si_code=0x1, si_pid=BAND,
            // si_uid=0, si_int=FD`), so si_fd is there as si_int; a plain SIGIO (no F_SETSIG)
            // has neither (`si_code=SI_KERNEL`).
            let info = args.get(1).copied().unwrap_or("");
            let mut fds = trace::numbers_after(info, "si_fd=");
            if fds.is_empty() {
                fds = trace::numbers_after(info, "si_int=");
            }
            for fd in &fds {
                reported.insert(s.id(pid, *fd as i32));
            }
            if inside && call.done && call.ret.is_some_and(|r| r > 0) {
                self.signals += 1;
                if fds.is_empty() {
                    self.signals_without_fd += 1;
                }
            }
            timeout_ms(args.get(2).copied().unwrap_or("NULL"), true)
        } else {
            // A sleep: its time is the first timespec.
            let spec = args.iter().find(|a| a.starts_with('{')).copied();
            spec.and_then(|a| timeout_ms(a, true))
        };
        if call.done {
            s.reported.insert(tid, reported);
        }
        if !inside {
            return;
        }
        for id in &watched {
            s.watched.insert(*id);
            if let Some(client) = self.client(*id) {
                client.watched_by.insert(name.to_string());
            }
        }
        self.waits.push(Wait {
            tid,
            name: name.to_string(),
            timeout,
            fds: watched.len(),
            epoll,
        });
    }

    /// The processes that read a client, apart from the server's first.
    fn other_readers(&self) -> BTreeSet<u32> {
        self.clients
            .iter()
            .flat_map(|c| c.read_by.iter().chain(&c.written_by).map(|(p, _)| *p))
            .filter(|p| *p != self.root)
            .collect()
    }

    fn reading_threads(&self) -> BTreeSet<u32> {
        self.clients
            .iter()
            .flat_map(|c| c.read_by.iter().chain(&c.written_by).map(|(_, t)| *t))
            .collect()
    }

    /// A spin: while nothing arrives, calls that find nothing (EAGAIN, a wait that returns
    /// empty) again and again. A client's late EOF, served in the quiet part, is neither.
    fn spins(&self) -> bool {
        self.idle_eagain + self.idle_empty_waits > SPIN_CALLS
    }

    /// The waits, grouped: `poll ×57 (timeout 0 ms, over 5 fds)`.
    fn waits_said(&self) -> String {
        let mut groups: BTreeMap<&str, Vec<&Wait>> = BTreeMap::new();
        for w in &self.waits {
            groups.entry(w.name.as_str()).or_default().push(w);
        }
        let parts: Vec<String> = groups
            .iter()
            .map(|(name, ws)| {
                let mut timeouts: Vec<String> = ws
                    .iter()
                    .map(|w| w.timeout.map_or("none".into(), |t| format!("{t} ms")))
                    .collect();
                timeouts.sort();
                timeouts.dedup();
                let (lo, hi) = (
                    ws.iter().map(|w| w.fds).min().unwrap_or(0),
                    ws.iter().map(|w| w.fds).max().unwrap_or(0),
                );
                let fds = if lo == hi {
                    format!("{lo}")
                } else {
                    format!("{lo}–{hi}")
                };
                let over = if SLEEPS.contains(name) {
                    "a sleep, no fd".to_string()
                } else if IORING.contains(name) {
                    "on the ring".to_string()
                } else if SIGWAITS.contains(name) {
                    "a signal wait".to_string()
                } else if ws[0].epoll {
                    if hi == 0 {
                        "an epoll watching no fd".to_string()
                    } else {
                        format!("an epoll watching {fds} fds")
                    }
                } else if hi == 0 {
                    "over no fd".to_string()
                } else {
                    format!("over {fds} fds")
                };
                format!(
                    "{name} ×{} (timeout {}, {over})",
                    ws.len(),
                    timeouts.join("/")
                )
            })
            .collect();
        if parts.is_empty() {
            "no call that waits for readiness".into()
        } else {
            format!("waits in {}", parts.join(" and "))
        }
    }

    /// The model in a few words, then what showed it.
    pub fn describe(&self) -> String {
        let others = self.other_readers();
        let grandchildren: BTreeSet<u32> = others
            .iter()
            .filter(|p| self.parents.get(p) != Some(&self.root))
            .copied()
            .collect();
        let threads = self.reading_threads();
        let verdict = if !self.execs.is_empty() {
            "another program, not the one your crate builds".to_string()
        } else if !grandchildren.is_empty() {
            "a double-fork server: processes its children forked (not its own children) \
             serve the clients"
                .to_string()
        } else if !others.is_empty() {
            "a process per client (lesson 04's model)".to_string()
        } else if threads.len() > 1 {
            "a thread per client (lesson 05's model)".to_string()
        } else if self.spins() {
            "a busy loop, not an event loop (lesson 06's spin)".to_string()
        } else if !self.blocking_writes.is_empty() || !self.cleared_nonblock.is_empty() {
            "a loop whose writes block".to_string()
        } else if self.signals_without_fd > 0 {
            "a signal-driven loop on plain SIGIO, which names no fd (no F_SETSIG): a rescan \
             per signal"
                .to_string()
        } else if self.unreported_reads > 0 {
            "reads that no readiness report asked for".to_string()
        } else if let Some(verdict) = self.ring_verdict() {
            verdict
        } else {
            let has = |names: &[&str]| self.waits.iter().any(|w| names.contains(&w.name.as_str()));
            match (has(EPOLLS), has(POLLS), has(SELECTS)) {
                _ if has(SIGWAITS) && !has(EPOLLS) && !has(POLLS) && !has(SELECTS) => {
                    "a signal-driven loop (lesson 09's model)"
                }
                (true, false, false) => "an epoll loop (lesson 10's model)",
                (false, true, false) => "a poll loop (lesson 08's model)",
                (false, false, true) => "a select loop (lesson 07's model)",
                (false, false, false) => {
                    "blocking calls, one at a time (a serial server, lesson 03's model)"
                }
                _ => "a loop over more than one readiness call",
            }
            .to_string()
        };
        let mut said = vec![];
        for exe in &self.execs {
            said.push(format!("it execs {exe}"));
        }
        let readers = if !others.is_empty() {
            let kind = if grandchildren.is_empty() {
                "its children"
            } else {
                "grandchildren"
            };
            format!(
                "process {} accepts, {} other process(es) ({kind}) read the clients",
                self.root,
                others.len()
            )
        } else if self.ring_enters > 0 && self.acceptors.is_empty() && threads.is_empty() {
            format!(
                "no accept or read call: the ring accepts and reads, {} process(es) forked",
                self.forked
            )
        } else {
            format!(
                "{} thread(s) accept, {} thread(s) read the clients, {} process(es) forked",
                self.acceptors.len(),
                threads.len(),
                self.forked
            )
        };
        said.push(readers);
        said.push(self.waits_said());
        if self.unreported_reads > 0 {
            said.push(format!(
                "{} read(s) on a client that no readiness report named ({} ended EAGAIN; \
                 the first: {})",
                self.unreported_reads, self.unreported_eagain, self.unreported_example
            ));
        }
        if let Some(w) = self.blocking_writes.first() {
            said.push(format!(
                "{} write(s) on a socket without O_NONBLOCK (the first: {w})",
                self.blocking_writes.len()
            ));
        }
        if let Some(f) = self.cleared_nonblock.first() {
            said.push(format!("O_NONBLOCK cleared: {f}"));
        }
        said.extend(self.ring_said());
        if self.signals > 0 {
            said.push(format!(
                "{} signal(s) taken, {} of them naming no fd (a plain SIGIO: no F_SETSIG)",
                self.signals, self.signals_without_fd
            ));
        }
        if let Some(c) = self.unwatched_connections.first() {
            said.push(format!(
                "{} connected socket(s) no wait watched (the first: {c})",
                self.unwatched_connections.len()
            ));
        }
        said.push(format!(
            "{} call(s) in {:.2} s while nothing arrived ({} ended EAGAIN, {} wait(s) \
             returned with nothing ready)",
            self.idle_calls, self.idle_seconds, self.idle_eagain, self.idle_empty_waits
        ));
        format!("found: {verdict}: {}", said.join("; "))
    }

    /// The verdict for a server that uses a ring, if it does.
    fn ring_verdict(&self) -> Option<String> {
        let others = self
            .waits
            .iter()
            .any(|w| !IORING.contains(&w.name.as_str()));
        if self.ring_enters == 0 {
            return None;
        }
        Some(
            if others {
                "a ring beside another readiness call"
            } else if !self.plain_io.is_empty() {
                "a loop on io_uring that still makes plain socket calls"
            } else if self.armed_once() {
                "an io_uring loop whose accept and recvs stay armed (lesson 15's model)"
            } else {
                "an io_uring loop: operations submitted, completions reaped (lesson 11's model)"
            }
            .to_string(),
        )
    }

    fn entries_per_line(&self) -> f64 {
        self.ring_entries as f64 / self.lines_answered.max(1) as f64
    }

    fn armed_once(&self) -> bool {
        self.lines_answered > 0 && self.entries_per_line() <= ENTRIES_PER_LINE
    }

    /// The ring's part of [`Analysis::describe`].
    fn ring_said(&self) -> Vec<String> {
        if self.ring_enters == 0 {
            return Vec::new();
        }
        let per_line = if self.lines_answered > 0 {
            format!(
                ", {:.2} per line answered ({} lines)",
                self.entries_per_line(),
                self.lines_answered
            )
        } else {
            String::new()
        };
        let mut said = vec![format!(
            "{} io_uring_enter call(s) submitted {} entries{per_line}",
            self.ring_enters, self.ring_entries
        )];
        if let Some(first) = self.plain_io.first() {
            said.push(format!(
                "{} plain accept or socket I/O call(s) (the first: {first})",
                self.plain_io.len()
            ));
        }
        said
    }

    /// The first rule broken: what was expected.
    pub fn broken(&self, rules: &[Rule]) -> Option<String> {
        if !self.execs.is_empty() {
            return Some("the program your crate builds, serving (no execve)".into());
        }
        for rule in rules {
            if let Some(expected) = self.breaks(*rule) {
                return Some(expected);
            }
        }
        None
    }

    fn breaks(&self, rule: Rule) -> Option<String> {
        let fails = match rule {
            Rule::OneThreadServes => {
                let mut serving = self.acceptors.clone();
                serving.extend(self.reading_threads());
                serving.len() > 1 || self.forked > 0 || !self.other_readers().is_empty()
            }
            Rule::ProcessPerClient => {
                let acceptor_elsewhere = self.acceptors.iter().any(|t| *t != self.root);
                let bad = self.clients.iter().any(|c| {
                    c.read_by.is_empty()
                        || c.read_by.iter().any(|(p, _)| {
                            *p == self.root || self.parents.get(p) != Some(&self.root)
                        })
                });
                acceptor_elsewhere || bad || !self.threads_made.is_empty()
            }
            Rule::WaitsOnlyIn(names) => {
                self.waits.iter().any(|w| !names.contains(&w.name.as_str()))
            }
            Rule::WatchesEveryClient(names) => self
                .clients
                .iter()
                .any(|c| !c.watched_by.iter().any(|n| names.contains(&n.as_str()))),
            Rule::ReadsWhenReported => self.unreported_reads > 0,
            Rule::NoSpin => self.spins(),
            Rule::NoBlockingWrite => {
                !self.blocking_writes.is_empty() || !self.cleared_nonblock.is_empty()
            }
            Rule::OnlyThroughRing => !self.plain_io.is_empty(),
            Rule::ArmedOnce => !self.armed_once(),
            Rule::ThreadPerClient => {
                let acceptor_elsewhere = self.acceptors.iter().any(|t| *t != self.root);
                let mut servers = BTreeSet::new();
                let bad = self.clients.iter().any(|c| {
                    let served: BTreeSet<&(u32, u32)> =
                        c.read_by.iter().chain(&c.written_by).collect();
                    let one = served.len() == 1;
                    let fits = served
                        .iter()
                        .all(|(p, t)| *p == self.root && *t != self.root && servers.insert(*t));
                    !one || !fits
                });
                acceptor_elsewhere || bad || self.forked > 0
            }
            Rule::NoReadiness => self
                .waits
                .iter()
                .any(|w| !SLEEPS.contains(&w.name.as_str())),
            Rule::WatchesEveryConnection(_) => !self.unwatched_connections.is_empty(),
            Rule::SignalsNameTheirFd => self.signals_without_fd > 0,
        };
        fails.then(|| expected(rule))
    }
}

/// What a rule expects, in words.
pub fn expected(rule: Rule) -> String {
    match rule {
        Rule::OneThreadServes => "one thread accepts and reads every client; no fork".into(),
        Rule::ProcessPerClient => {
            "the first process accepts; each client is read in a child it forked, no threads".into()
        }
        Rule::WaitsOnlyIn(names) => format!("every wait in {}", names.join(" or ")),
        Rule::WatchesEveryClient(names) => {
            format!(
                "every client socket among the fds {} waits on",
                names.join(" or ")
            )
        }
        Rule::ReadsWhenReported => {
            "every read on a client after a readiness report that named it".into()
        }
        Rule::NoSpin => format!(
            "at most {SPIN_CALLS} calls that find nothing (EAGAIN, an empty wait) while \
             nothing arrives: no spin"
        ),
        Rule::NoBlockingWrite => {
            "every write on a non-blocking socket (O_NONBLOCK never cleared)".into()
        }
        Rule::OnlyThroughRing => "no accept, read, write, recv or send on a socket: every \
            client's I/O an operation submitted to the ring"
            .into(),
        Rule::ArmedOnce => format!(
            "at most {ENTRIES_PER_LINE} entries submitted per line answered: one multishot \
             accept, one multishot recv per client, then only the sends"
        ),
        Rule::ThreadPerClient => "the first thread accepts; each client is served by a thread \
                                  of its own in the same process; no fork"
            .into(),
        Rule::NoReadiness => {
            "no readiness call (poll, select, epoll, a signal wait): each call made in turn".into()
        }
        Rule::WatchesEveryConnection(names) => format!(
            "every socket it connect()ed (the upstreams, the store) among the fds {} waits on",
            names.join(" or ")
        ),
        Rule::SignalsNameTheirFd => {
            "every signal taken names its fd (si_fd, as F_SETSIG makes it): no plain SIGIO".into()
        }
    }
}

/// A mark in the server's trace (its whole lines so far).
fn mark(c: &Ctx) -> Result<usize, Failure> {
    let path = c.server.trace.as_ref().ok_or_else(no_strace)?;
    Ok(trace::mark(path))
}

fn no_strace() -> Failure {
    Failure::new(
        "(nothing: the model is judged from the system calls)",
        "strace, to record them",
        "strace is not on this machine, or may not trace here (ptrace refused)",
    )
    .hint("`make deps` installs strace; in a container, run it with ptrace allowed")
}

/// Plays `scenario` against the server, and judges the calls made meanwhile by `rules`
/// (and by the rule every exercise has: no execve of another program).
pub fn judge(c: &mut Ctx, scenario: Scenario, rules: &[Rule]) -> Outcome {
    let from = mark(c)?;
    let idle = match scenario {
        Scenario::Serial => echo_scenario(c, 1)?,
        Scenario::Echo => echo_scenario(c, 3)?,
        Scenario::Socks => socks_scenario(c)?,
        Scenario::Ring => ring_scenario(c, from)?,
        Scenario::Hello => hello_scenario(c)?,
    };
    let to = mark(c)?;
    let lines = trace::read(c.server.trace.as_ref().ok_or_else(no_strace)?);
    let mut a = Analysis::of(&lines, from, to, idle);
    // The scenario's own clients must be in the record, or the record says nothing.
    let clients = match scenario {
        Scenario::Echo | Scenario::Ring | Scenario::Hello => 3,
        Scenario::Serial | Scenario::Socks => 1,
    };
    let seen = match scenario {
        // A ring's accepts are no calls: the closes of its clients show them.
        Scenario::Ring => {
            a.lines_answered = clients * RING_LINES;
            a.clients.len().max(a.conn_closes)
        }
        _ => a.clients.len(),
    };
    if seen < clients {
        return Err(Failure::new(
            scenario.said(),
            format!("the accept of each of the {clients} client(s) among the calls traced"),
            format!(
                "{} accept(s) in trace lines {from}..{to} of {}: the calls were not recorded",
                a.clients.len(),
                lines.len()
            ),
        ));
    }
    match a.broken(rules) {
        None => Ok(()),
        Some(expected) => Err(Failure::new(scenario.said(), expected, a.describe())),
    }
}

/// The quiet part: marks before and after it.
fn quiet(c: &Ctx) -> Result<(usize, usize), Failure> {
    let start = mark(c)?;
    thread::sleep(IDLE);
    Ok((start, mark(c)?))
}

fn echo_scenario(c: &mut Ctx, n: usize) -> Result<(usize, usize), Failure> {
    let addr = c.addr();
    let mut clients = (0..n)
        .map(|_| echo::welcomed(addr))
        .collect::<Result<Vec<_>, _>>()?;
    for conn in &mut clients {
        conn.round_trip(b"abc", b"cba")?;
    }
    let idle = quiet(c)?;
    for conn in &mut clients {
        conn.send("q\n")?;
    }
    for conn in &mut clients {
        conn.expect_close()?;
    }
    Ok(idle)
}

/// [`Scenario::Ring`]: the idle marks; returns once the trace since `from` holds the
/// server's close of each client (or the wait is over: the judge then says what is missing).
fn ring_scenario(c: &mut Ctx, from: usize) -> Result<(usize, usize), Failure> {
    let addr = c.addr();
    let mut clients = (0..3)
        .map(|_| echo::welcomed(addr))
        .collect::<Result<Vec<_>, _>>()?;
    for i in 0..RING_LINES {
        for conn in &mut clients {
            let line = format!("line {i}");
            let back: String = line.chars().rev().collect();
            conn.round_trip(line.as_bytes(), back.as_bytes())?;
        }
    }
    let idle = quiet(c)?;
    for conn in &mut clients {
        conn.send("q\n")?;
    }
    for conn in &mut clients {
        conn.expect_close()?;
    }
    drop(clients);
    let path = c.server.trace.clone().ok_or_else(no_strace)?;
    let until = std::time::Instant::now() + crate::client::wait();
    while std::time::Instant::now() < until {
        let lines = trace::read(&path);
        let to = trace::mark(&path);
        if Analysis::of(&lines, from, to, idle).conn_closes >= 3 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(idle)
}

fn socks_scenario(c: &mut Ctx) -> Result<(usize, usize), Failure> {
    let mut relay = socks::open(c.addr(), socks::echo_target())?;
    relay.send("ping")?;
    relay.expect(b"ping")?;
    let idle = quiet(c)?;
    relay.send("pong")?;
    relay.expect(b"pong")?;
    relay.finish();
    relay.rest()?;
    Ok(idle)
}

/// A greeting read to its end: "Hello there! …\n", then the close.
fn greeted(addr: std::net::SocketAddr) -> Result<(), Failure> {
    let got = crate::client::Conn::open(addr)?.rest()?;
    if got.starts_with(b"Hello there! ") && got.ends_with(b"\n") {
        return Ok(());
    }
    Err(Failure::new(
        "(nothing: just connected)",
        "\"Hello there! <local time>\\n\", then the close",
        crate::client::show(&got),
    ))
}

fn hello_scenario(c: &mut Ctx) -> Result<(usize, usize), Failure> {
    for _ in 0..3 {
        greeted(c.addr())?;
    }
    let idle = quiet(c)?;
    greeted(c.addr())?;
    Ok(idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The analysis of `text` (strace's lines), every call inside the window.
    fn analysis(text: &str) -> Analysis {
        let lines = trace::parse(text);
        Analysis::of(&lines, 0, usize::MAX - 1, (0, 0))
    }

    const ACCEPT: &str =
        "10 12:00:00.000001 accept4(3<TCP:[127.0.0.1:5]>, NULL, NULL, SOCK_NONBLOCK) = 7<TCP:[127.0.0.1:5->127.0.0.1:9]>\n";

    #[test]
    fn select_names_its_ready_fds_by_number() {
        let text = format!(
            "{ACCEPT}10 12:00:00.000002 pselect6(8, [3<TCP:[127.0.0.1:5]> 7<TCP:[127.0.0.1:5->127.0.0.1:9]>], [7<TCP:[127.0.0.1:5->127.0.0.1:9]>], NULL, NULL, NULL) = 2 (in [7], out [7])\n\
             10 12:00:00.000003 read(7<TCP:[127.0.0.1:5->127.0.0.1:9]>, \"q\\n\", 16384) = 2\n\
             10 12:00:00.000004 pselect6(8, [3<TCP:[127.0.0.1:5]>], [], NULL, {{tv_sec=1, tv_usec=0}}, NULL) = 1 (in [3], left {{tv_sec=0, tv_usec=7}})\n\
             10 12:00:00.000005 read(7<TCP:[127.0.0.1:5->127.0.0.1:9]>, \"\", 16384) = 0\n"
        );
        let a = analysis(&text);
        assert_eq!(a.waits.len(), 2);
        assert_eq!(a.waits[0].fds, 3);
        // The first read follows a report naming 7; the second follows one naming only 3
        // (the numbers of `left {…}` are no fd).
        assert_eq!(a.unreported_reads, 1, "{}", a.describe());
        assert!(a.breaks(Rule::WatchesEveryClient(SELECTS)).is_none());
        assert!(a.breaks(Rule::ReadsWhenReported).is_some());
    }

    #[test]
    fn a_signal_names_its_fd_unless_it_is_a_plain_sigio() {
        let named = format!(
            "{ACCEPT}10 12:00:00.000002 rt_sigtimedwait([IO RT_2], {{si_signo=SIGRT_2, si_code=0x1, si_pid=65, si_uid=0, si_int=7, si_ptr=0x7}}, NULL, 8) = 34 (SIGRT_2)\n\
             10 12:00:00.000003 read(7<TCP:[127.0.0.1:5->127.0.0.1:9]>, \"q\\n\", 16384) = 2\n"
        );
        let a = analysis(&named);
        assert_eq!(
            (a.signals, a.signals_without_fd, a.unreported_reads),
            (1, 0, 0)
        );
        assert!(a.breaks(Rule::SignalsNameTheirFd).is_none());
        assert!(a.breaks(Rule::WaitsOnlyIn(SIGWAITS)).is_none());
        let plain = named.replace(
            "si_signo=SIGRT_2, si_code=0x1, si_pid=65, si_uid=0, si_int=7, si_ptr=0x7",
            "si_signo=SIGIO, si_code=SI_KERNEL",
        );
        let a = analysis(&plain);
        assert_eq!((a.signals, a.signals_without_fd), (1, 1));
        assert!(a.breaks(Rule::SignalsNameTheirFd).is_some());
        assert!(a.describe().contains("plain SIGIO"), "{}", a.describe());
    }

    #[test]
    fn a_connection_no_wait_watches_is_named() {
        let connect = "10 12:00:00.000001 socket(AF_INET, SOCK_STREAM|SOCK_NONBLOCK, IPPROTO_IP) = 5<TCP:[4]>\n\
                       10 12:00:00.000002 connect(5<TCP:[4]>, {sa_family=AF_INET, sin_port=htons(6379), sin_addr=inet_addr(\"127.0.0.1\")}, 16) = -1 EINPROGRESS (Operation now in progress)\n";
        let watched = format!(
            "{connect}10 12:00:00.000003 poll([{{fd=3<TCP:[127.0.0.1:5]>, events=POLLIN}}, {{fd=5<TCP:[127.0.0.1:4->127.0.0.1:6379]>, events=POLLOUT}}], 2, -1) = 1 ([{{fd=5, revents=POLLOUT}}])\n"
        );
        assert!(analysis(&watched)
            .breaks(Rule::WatchesEveryConnection(POLLS))
            .is_none());
        let unwatched = format!(
            "{connect}10 12:00:00.000003 poll([{{fd=3<TCP:[127.0.0.1:5]>, events=POLLIN}}], 1, -1) = 1 ([{{fd=3, revents=POLLIN}}])\n"
        );
        let a = analysis(&unwatched);
        assert!(a.breaks(Rule::WatchesEveryConnection(POLLS)).is_some());
        assert!(a
            .describe()
            .contains("connected socket(s) no wait watched (the first: 5<"));
    }

    #[test]
    fn a_thread_per_client_and_no_readiness() {
        let text = format!(
            "{ACCEPT}10 12:00:00.000002 clone3({{flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM, exit_signal=0}}, 88) = 11\n\
             11 12:00:00.000003 read(7<TCP:[127.0.0.1:5->127.0.0.1:9]>, \"q\\n\", 16384) = 2\n\
             11 12:00:00.000004 write(7<TCP:[127.0.0.1:5->127.0.0.1:9]>, \"\\n\", 1) = 1\n"
        );
        let a = analysis(&text);
        assert!(
            a.breaks(Rule::ThreadPerClient).is_none(),
            "{}",
            a.describe()
        );
        assert!(a.breaks(Rule::NoReadiness).is_none());
        assert!(a.breaks(Rule::OneThreadServes).is_some());
        // The accepting thread serving the client itself is not a thread per client.
        let serial = text.replace("11 12:00:00.000003", "10 12:00:00.000003");
        assert!(analysis(&serial).breaks(Rule::ThreadPerClient).is_some());
    }
}
