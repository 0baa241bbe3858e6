//! `make check-NN`: the exercises, their named steps, and the walk through them (CS144's
//! checkN): in order, one line per step, stopping at the first failure, which shows what was
//! sent, what was expected, what came back and one hint. The protocol steps are the rules of
//! [`crate::echo`] and [`crate::socks`], which the project's own tests walk too; the model
//! steps ask the kernel, by a look at /proc ([`crate::model`]) or by the calls a second
//! instance of the server makes under strace over a while ([`crate::trace`]).
//!
//! An exercise is its list of [`Step`]s (`steps_NN` below, in [`exercises`]); the first
//! step, the banner (and, for a learner's build, that every process runs that build), is
//! every exercise's. To add a step: a `fn(&mut Ctx) -> Outcome` (a protocol rule belongs in
//! echo.rs or socks.rs, taking the address, so the suites can walk it too), a name that says
//! what must hold, and a hint; when a lesson's `--mistake` fails it, the hint names the
//! mistake and its `make` lines. Append it to the list, so the numbers the tests quote stay.
//! The checker's tests (workshop/tests/checker.rs) run every reference lesson through every
//! step, and wrong solutions made from a lesson by a small edit (a crate of an edited lesson,
//! or a lesson's `--mistake`) through the step that must catch them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::calls::{self, Rule, Scenario, EPOLLS, IORING, POLLS, SELECTS, SIGWAITS};
use crate::client::{wait, Conn, Failure, Outcome};
use crate::run::{self, Server};
use crate::{capture, echo, model, socks};

/// Exercise 08's model, from its calls: one thread, waiting only in poll over every client,
/// reading only what poll reported, and quiet while its clients are.
const POLL_LOOP: &[Rule] = &[
    Rule::OneThreadServes,
    Rule::NoSpin,
    Rule::WaitsOnlyIn(POLLS),
    Rule::WatchesEveryClient(POLLS),
    Rule::ReadsWhenReported,
];
/// Exercise 10's: the same on epoll (every client epoll_ctl'd into the instance it waits on).
const EPOLL_LOOP: &[Rule] = &[
    Rule::OneThreadServes,
    Rule::NoSpin,
    Rule::WaitsOnlyIn(EPOLLS),
    Rule::WatchesEveryClient(EPOLLS),
    Rule::ReadsWhenReported,
];
/// Exercise 12's relay: one thread on poll, and no write that blocks.
const RELAY_LOOP: &[Rule] = &[
    Rule::OneThreadServes,
    Rule::NoSpin,
    Rule::WaitsOnlyIn(POLLS),
    Rule::WatchesEveryClient(POLLS),
    Rule::ReadsWhenReported,
    Rule::NoBlockingWrite,
];

/// Exercise 13's: the relay's, and the Redis connection one more fd in the same poll.
const REDIS_RELAY_LOOP: &[Rule] = &[
    Rule::OneThreadServes,
    Rule::NoSpin,
    Rule::WaitsOnlyIn(POLLS),
    Rule::WatchesEveryClient(POLLS),
    Rule::WatchesEveryConnection(POLLS),
    Rule::ReadsWhenReported,
    Rule::NoBlockingWrite,
];
/// Exercise 07's: the poll loop's, on select.
const SELECT_LOOP: &[Rule] = &[
    Rule::OneThreadServes,
    Rule::NoSpin,
    Rule::WaitsOnlyIn(SELECTS),
    Rule::WatchesEveryClient(SELECTS),
    Rule::ReadsWhenReported,
];
/// Exercise 09's: one thread, waiting only for signals, and quiet while its clients are.
const SIGNAL_LOOP: &[Rule] = &[
    Rule::OneThreadServes,
    Rule::NoSpin,
    Rule::WaitsOnlyIn(SIGWAITS),
    Rule::SignalsNameTheirFd,
];
/// Exercise 06's: one thread and no readiness call; it spins, and that is its model.
const BUSY_LOOP: &[Rule] = &[Rule::OneThreadServes, Rule::NoReadiness];
/// Exercise 02's: one thread accepts and greets each client in turn, quiet in between.
const ACCEPT_LOOP: &[Rule] = &[Rule::OneThreadServes, Rule::NoSpin, Rule::NoReadiness];

/// What a step gets: the server under check (restartable) and how it was started.
pub struct Ctx {
    pub server: Server,
    pub exe: PathBuf,
    pub args: Vec<String>,
}

impl Ctx {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
    pub fn pid(&self) -> u32 {
        self.server.pid
    }
}

/// One named step: what it checks, how, and the hint a failure shows.
pub struct Step {
    pub name: &'static str,
    pub run: fn(&mut Ctx) -> Outcome,
    pub hint: &'static str,
}

/// One exercise: lesson NN with its gaps.
pub struct Exercise {
    pub nn: &'static str,
    pub title: &'static str,
    pub steps: Vec<Step>,
}

const ONE_READ: &str = "a read(2) returns whatever bytes have come, part of a line or several: \
    feed them all to the protocol (Echo::feed); lesson 03's `--mistake one-read-one-line` fails \
    this way: `make lesson-03 ARGS='--mistake one-read-one-line'`, then `make provoke-03`";
const PLAIN_CLOSE: &str = "after q, shutdown(SHUT_WR) and drain before close(2): a close with \
    unread input sends a reset that throws the last replies away. This is lesson 03's \
    `--mistake plain-close`: `make lesson-03 ARGS='--mistake plain-close'`, then `make provoke-03`";
const ZOMBIES: &str =
    "zombies left: this is lesson 04 with `--mistake reap-once` (one waitpid per \
    SIGCHLD; signals coalesce) or `--mistake no-reap`: `make lesson-04 ARGS='--mistake reap-once'` \
    and `make provoke-04` show it happening. Loop on waitpid(-1, WNOHANG) in the handler";
const PARENT_KEEPS: &str = "the client's EOF must end the child's loop and the child's close(2) \
    must be the last: the parent closes its copy right after fork. This is lesson 04's \
    `--mistake parent-keeps-conn`: `make lesson-04 ARGS='--mistake parent-keeps-conn'`";
const NO_DRAIN: &str = "after q, shutdown(SHUT_WR), then read and drop what the client still \
    sends until it closes, and only then close(2): a close with input unread resets the \
    connection and throws away the replies still queued for a slow reader. This is lesson \
    03's `--mistake no-drain`: `make lesson-03 ARGS='--mistake no-drain'`, then `make provoke-03`";
const BLOCKING_WRITE: &str = "write(2) only what the socket takes now: on EAGAIN keep the rest \
    and wait for POLLOUT; never clear O_NONBLOCK to write it all, for a write that sleeps holds \
    every client. This is lesson 12's `--mistake blocking-write`: `make lesson-12 \
    ARGS='--mistake blocking-write'`, then `make provoke-12`";
const SKIPPED: &str = "after swap_remove(i) the last entry moved into slot i: look at slot i again \
    (lesson 08's `--mistake skip-after-remove`: `make lesson-08 ARGS='--mistake skip-after-remove'`, \
    then `make provoke-08`)";

/// The echo exercises' shared protocol steps.
fn echo_steps() -> Vec<Step> {
    vec![
            Step { name: "welcome, and q closes", run: |c| echo::welcome(c.addr()), hint: "write(2) `Welcome buddy!\\n` on accept; after q, close" },
            Step { name: "lines come back reversed", run: |c| echo::reverse(c.addr()), hint: "read(2) the bytes, feed them to the protocol, write(2) what it returns" },
            Step { name: "a line in pieces", run: |c| echo::split_lines(c.addr()), hint: ONE_READ },
            Step { name: "lines coalesced", run: |c| echo::coalesced_lines(c.addr()), hint: ONE_READ },
            Step { name: "q flushes the replies before it", run: |c| echo::q_flushes_earlier_replies(c.addr()), hint: "write every reply before the close" },
            Step { name: "the next client after an EOF and a reset", run: |c| echo::next_after_eof(c.addr()).and_then(|()| echo::next_after_reset(c.addr())), hint: "read(2) returning 0 (EOF) or failing ECONNRESET ends that client only: close it, accept the next" },
    ]
}

fn steps_03() -> Vec<Step> {
    let mut steps = echo_steps();
    steps.extend([
        Step {
            name: "unicode and invalid UTF-8",
            run: |c| echo::utf8(c.addr()).and_then(|()| echo::invalid_utf8(c.addr())),
            hint: "the protocol reverses; pass it the bytes as they came",
        },
        Step {
            name: "a line too long",
            run: |c| echo::line_too_long(c.addr()),
            hint: "write the protocol's error reply, then close",
        },
        Step {
            name: "the lingering close keeps the last replies",
            run: |c| echo::q_then_junk_keeps_replies(c.addr(), 3),
            hint: PLAIN_CLOSE,
        },
        Step {
            name: "a slow reader behind a small receive buffer gets every reply",
            run: |c| echo::slow_reader_keeps_replies(c.addr(), 3),
            hint: NO_DRAIN,
        },
        Step {
            name: "model: one thread, no child, fds back",
            run: serial_model,
            hint: "lesson 03 is one blocking loop: no thread, no fork; close(2) every client",
        },
    ]);
    steps
}

fn steps_04() -> Vec<Step> {
    let mut steps = echo_steps();
    steps.extend([
        Step {
            name: "three clients at once",
            run: clients_at_once,
            hint: "fork(2) after accept: the child serves, the parent goes back to accept at once",
        },
        Step {
            name: "model: a process per client",
            run: |c| calls::judge(c, Scenario::Echo, &[Rule::ProcessPerClient]),
            hint: "fork(2) per client: the child serves and _exit(2)s; no threads",
        },
        Step {
            name: "a client's EOF ends its child and closes",
            run: eof_first,
            hint: PARENT_KEEPS,
        },
        Step {
            name: "model: no zombie when ten leave at once",
            run: no_zombies,
            hint: ZOMBIES,
        },
    ]);
    steps
}

fn steps_08() -> Vec<Step> {
    let mut steps = echo_steps();
    steps.extend([
        Step { name: "a client mid-line does not hold up another", run: clients_at_once, hint: SKIPPED },
        Step { name: "model: one thread waits only in poll, over every client", run: |c| calls::judge(c, Scenario::Echo, POLL_LOOP), hint: "one thread, one poll(2) over every fd, and a read or write only where poll reported: no fork, no thread, no blocking read, no nap. A loop that tries every fd and then naps is lesson 06's busy loop: `make lesson-06 ARGS='--nap 2000'`, then `make trace-06`" },
        Step { name: "model: non-blocking sockets", run: nonblocking_echo, hint: "socket(.., SOCK_NONBLOCK) for the listener, accept4(.., SOCK_NONBLOCK) for each client: a read after a spurious wake-up must not block the loop" },
        Step { name: "model: the fd count comes back", run: fd_count_back, hint: "remove the pollfd entry, then close(2) the fd, on every ending" },
    ]);
    steps
}

fn steps_10() -> Vec<Step> {
    let mut steps = echo_steps();
    steps.extend([
        Step { name: "a client mid-line does not hold up another", run: clients_at_once, hint: "serve only the fds epoll_wait returned, and go back to epoll_wait; a handler that blocks stalls every client (lesson 10's `--mistake blocking-handler`)" },
        Step { name: "model: one thread waits only in epoll_wait, over every client", run: |c| calls::judge(c, Scenario::Echo, EPOLL_LOOP), hint: "one thread, epoll_create1 once, epoll_ctl per fd, epoll_wait in the loop; a thread that never sleeps is lesson 10's `--mistake epollout-always` (EPOLLOUT watched with nothing to write): `make lesson-10 ARGS='--mistake epollout-always'`, then `make provoke-10`" },
        Step { name: "model: non-blocking sockets", run: nonblocking_echo, hint: "SOCK_NONBLOCK on the listener and on every accepted fd: the reactor must never block in read" },
        Step { name: "model: the fd count comes back", run: fd_count_back, hint: "EPOLL_CTL_DEL (or the close) and close(2) on every ending; connections left open are also what lesson 10's `--mistake edge-triggered` does (EPOLLET, one read per wake-up: the bytes left raise no new event): `make lesson-10 ARGS='--mistake edge-triggered'`" },
    ]);
    steps
}

fn steps_01() -> Vec<Step> {
    vec![
    Step { name: "greets one client and closes", run: hello, hint: "accept(2) one client, write(2) the greeting, close(2) it" },
    Step { name: "exits 0 after its one client", run: exits_after_one, hint: "close both sockets and return from main" },
    Step { name: "a restart binds at once (SO_REUSEADDR)", run: restart_binds, hint: "setsockopt(SO_REUSEADDR) before bind: without it the first run's TIME_WAIT holds the port. This is lesson 01's `--mistake no-reuseaddr`: `make lesson-01 ARGS='--mistake no-reuseaddr'` twice, or `make provoke-01`" },
    ]
}

fn steps_12() -> Vec<Step> {
    vec![
    Step { name: "the greeting: method 0x00", run: |c| socks::greeting(c.addr()), hint: "feed the bytes to protocols::socks5::Handshake and write what it returns" },
    Step { name: "CONNECT, and bytes relayed both ways", run: |c| socks::connect_and_relay(c.addr()), hint: "after the reply, every byte read from one side is written to the other: POLLIN on one, POLLOUT on the other when it backs up" },
    Step { name: "greeting and request byte by byte", run: |c| socks::byte_by_byte(c.addr()), hint: "keep the bytes of a message that is not whole yet: the handshake buffers them" },
    Step { name: "greeting, request and payload in one write", run: |c| socks::everything_in_one_write(c.addr()), hint: "bytes after the request are payload: forward them once the target is connected" },
    Step { name: "a half-close is relayed", run: |c| socks::half_close(c.addr()), hint: "EOF from one side: shutdown(SHUT_WR) on the other, and keep relaying the other way (lesson 12's `--mistake no-half-close` fails this way: `make lesson-12 ARGS='--mistake no-half-close'`, then `make provoke-12`)" },
    Step { name: "a refused target: REP 0x05", run: |c| socks::refused(c.addr()), hint: "the connect's outcome is SO_ERROR once POLLOUT comes: ECONNREFUSED is REP 0x05 (a success here is lesson 12's `--mistake success-always`: `make lesson-12 ARGS='--mistake success-always'`, then `make provoke-12`)" },
    Step { name: "a client that stops reading stalls no other", run: stalled_reader, hint: BLOCKING_WRITE },
    Step { name: "model: one thread relays, waiting only in poll; no write blocks", run: |c| calls::judge(c, Scenario::Socks, RELAY_LOOP), hint: "one loop thread in poll(2) (the resolver threads aside), every socket SOCK_NONBLOCK, and never a write that blocks: a client that stops reading would stall every other. Write what the socket takes, keep the rest, and ask poll for POLLOUT" },
    Step { name: "model: the fd count comes back", run: socks_fds_back, hint: "close both sides of a relay once both directions are done" },
    ]
}

fn steps_17() -> Vec<Step> {
    let mut steps = echo_steps();
    steps.push(Step { name: "SIGHUP: the successor takes the listener and serves", run: hands_over, hint: "the old process sends the listener with sendmsg(2) and one SCM_RIGHTS control message; the new one takes it with recvmsg(2) and finds it in ControlMessageOwned::ScmRights. Watch both with `make step-17 STEP='--only sendmsg,recvmsg'` and a SIGHUP" });
    steps
}

/// SIGHUP to the server: within the deadline a successor's banner says it received the
/// listener over SCM_RIGHTS and the old process says it is ready; then a new client is
/// welcomed on the same port, and the successor is stopped.
fn hands_over(c: &mut Ctx) -> Outcome {
    let from = c.server.log.len();
    // SAFETY: kill(2) on the server this check started.
    unsafe { libc::kill(c.pid() as i32, libc::SIGHUP) };
    let until = Instant::now() + wait();
    let successor = loop {
        let lines = c.server.log.lines();
        let new = &lines[from.min(lines.len())..];
        let received = new.iter().any(|l| l.contains("received over SCM_RIGHTS"));
        let ready = new.iter().find_map(|l| {
            let pid = l.strip_prefix("pid ")?.split(' ').next()?;
            l.contains("is ready").then(|| pid.parse::<i32>().ok())?
        });
        if let (true, Some(pid)) = (received, ready) {
            break pid;
        }
        if Instant::now() > until {
            return Err(Failure::new(
                "SIGHUP",
                "a successor's banner with `listener: fd N received over SCM_RIGHTS`, then \
                 the old process's `pid N is ready`",
                new.join("\n"),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    };
    let served = echo::welcome(c.addr());
    // SAFETY: kill(2) on the successor the server started (its pid from the server's log).
    unsafe { libc::kill(successor, libc::SIGTERM) };
    served
}

fn steps_16() -> Vec<Step> {
    vec![
    Step { name: "the greeting: method 0x00", run: |c| socks::greeting(c.addr()), hint: "lesson 12's handshake, unchanged: feed the bytes to protocols::socks5::Handshake" },
    Step { name: "UDP ASSOCIATE, and a datagram there and back", run: |c| socks::udp_relay(c.addr()), hint: "recvfrom(2) on the client's UDP socket gives the datagram and its sender; after the header, sendto(2) the payload to its target; the answer goes back with sendto(2), a header naming its source in front" },
    Step { name: "a datagram from another port is dropped", run: |c| socks::udp_wrong_source(c.addr()), hint: "only the client may use its association: its IP, and the port it sends from (lesson 16's `--mistake any-source` fails this way: `make lesson-16 ARGS='--mistake any-source'`, then `make provoke-16`)" },
    Step { name: "model: one thread relays, waiting only in poll; no write blocks", run: |c| calls::judge(c, Scenario::Socks, RELAY_LOOP), hint: "one loop thread in poll(2) (the resolver threads aside), every socket SOCK_NONBLOCK, and never a write that blocks" },
    Step { name: "model: an association's fds close with its control connection", run: udp_fds_back, hint: "when the control connection ends, close(2) every UDP socket of its association (`--mistake leak-association` keeps them)" },
    ]
}

fn udp_fds_back(c: &mut Ctx) -> Outcome {
    let pid = c.pid();
    let (echo, _) = socks::udp_echo();
    let until = Instant::now() + wait();
    let start = loop {
        // The earlier steps' connections close first: wait until the count holds still.
        let n = model::fd_count(pid);
        thread::sleep(Duration::from_millis(50));
        if n == model::fd_count(pid) || Instant::now() > until {
            break n;
        }
    };
    for _ in 0..10 {
        let sock = socks::udp_client();
        let (control, bnd) = socks::associate(c.addr(), sock.local_addr().expect("getsockname"))?;
        socks::udp_round_trip(&sock, bnd, echo, b"x")?;
        drop(control);
    }
    let until = Instant::now() + wait();
    loop {
        let now = model::fd_count(pid);
        if now == start {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(Failure::new(
                "ten associations, each used once, then their control connections closed",
                format!("{start} open fds afterwards, as before them"),
                format!("{now} open fds"),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

const LEAK_FD: &str = "close(2) every client once its greeting is written: the client reads \
    EOF only then, and its fd is free for the next. Lesson 02's `--mistake leak-fd` forgets it: \
    `make lesson-02 ARGS='--mistake leak-fd'`, then `make provoke-02`";

fn steps_02() -> Vec<Step> {
    vec![
        Step { name: "greets a client and closes", run: hello, hint: LEAK_FD },
        Step { name: "ten clients, one after another", run: clients_in_a_row, hint: "accept(2) in a loop: after a client's close(2), back to accept(2) for the next; never exit" },
        Step { name: "a client gone before its greeting", run: gone_before_greeting, hint: "a write(2) that fails (EPIPE, ECONNRESET) costs that client only: report it, close(2), accept(2) the next" },
        Step { name: "model: one thread accepts and greets, no readiness call", run: |c| calls::judge(c, Scenario::Hello, ACCEPT_LOOP), hint: "lesson 02 is one loop on one thread: accept(2), write(2), close(2), again; no thread, no fork, no poll" },
        Step { name: "model: the fd count comes back", run: model_02_fds, hint: LEAK_FD },
    ]
}

const THREAD_PER_CLIENT: &str = "spawn a thread per client right after accept(2), moving the \
    connection into it; the main thread goes straight back to accept(2); no fork";

fn steps_05() -> Vec<Step> {
    let mut steps = echo_steps();
    steps.extend([
        Step { name: "three clients at once", run: clients_at_once, hint: THREAD_PER_CLIENT },
        Step { name: "model: a thread per client, no child", run: |c| calls::judge(c, Scenario::Echo, &[Rule::ThreadPerClient]), hint: THREAD_PER_CLIENT },
        Step { name: "model: each thread ends with its client, fds back", run: model_05_threads_end, hint: "the thread closes its connection after the conversation and returns: one thread and one fd fewer per client gone" },
        Step { name: "--max-clients 2: the third is told the server is full", run: model_05_full, hint: "with --max-clients clients already served, write(2) `error: server full` and close(2) instead of a thread; lesson 05's `--mistake unbounded` has no limit: `make lesson-05 ARGS='--mistake unbounded'`. Its other mistake, `--mistake racy-counter`, loses counts: SERVED.fetch_add, never a load then a store" },
    ]);
    steps
}

fn steps_07() -> Vec<Step> {
    let mut steps = echo_steps();
    steps.extend([
        Step { name: "a client mid-line does not hold up another", run: clients_at_once, hint: "serve only the fds select(2) left in its sets, then go back to select(2): a read on any other fd may block the loop" },
        Step { name: "model: one thread waits only in select, over every client", run: |c| calls::judge(c, Scenario::Echo, SELECT_LOOP), hint: "one thread, the fd sets rebuilt every round, one select(2) over them: no fork, no thread, no poll; a thread seen never asleep watches write_set with nothing to write" },
        Step { name: "model: non-blocking sockets", run: nonblocking_echo, hint: "SOCK_NONBLOCK on the listener, accept4(.., SOCK_NONBLOCK) for each client: a read after a spurious wake-up must not block the loop" },
        Step { name: "model: the fd count comes back", run: fd_count_back, hint: "take a leaving client out of the table and close(2) it, on every ending. An fd past FD_SETSIZE must be refused before it nears a set: lesson 07's `--mistake no-fdsetsize-check` (`make lesson-07 ARGS='--mistake no-fdsetsize-check'`) dies there" },
    ]);
    steps
}

const NO_EAGAIN: &str = "on a non-blocking socket, read(2) failing with EAGAIN means no \
    bytes yet, not an error: keep the client and try it again next round. Lesson 06's \
    `--mistake no-eagain` drops it instead: `make lesson-06 ARGS='--mistake no-eagain'`";

fn steps_06() -> Vec<Step> {
    let mut steps = vec![Step {
        name: "an idle client is kept",
        run: model_06_idle_kept,
        hint: NO_EAGAIN,
    }];
    steps.extend(echo_steps());
    steps.extend([
        Step { name: "a client mid-line does not hold up another", run: clients_at_once, hint: "every call on every socket must return at once: fcntl(O_NONBLOCK) on the listener and on each accepted client" },
        Step { name: "model: one thread, no poll, select or epoll", run: |c| calls::judge(c, Scenario::Echo, BUSY_LOOP), hint: "lesson 06 tries every socket in turn, over and over, with no readiness call: one thread, no fork, no poll(2), select(2) or epoll_wait(2) (those are lessons 07, 08 and 10)" },
        Step { name: "model: non-blocking sockets", run: nonblocking_echo, hint: "fcntl(F_GETFL), then fcntl(F_SETFL, flags | O_NONBLOCK), on the listener and on every accepted fd: on Linux an accepted socket does not inherit O_NONBLOCK" },
        Step { name: "model: the fd count comes back", run: fd_count_back, hint: "take a leaving client out of the table and close(2) it, on every ending" },
    ]);
    steps
}

fn steps_00() -> Vec<Step> {
    vec![
        Step { name: "piped lines come back, then it exits", run: client_00_piped, hint: "at the end of input (read(2) on stdin returns 0), shutdown(SHUT_WR): the server sees EOF, sends the last replies and closes; keep reading the socket until read(2) returns 0, then close(2) and exit" },
        Step { name: "q: the server closes, the client exits", run: client_00_quit, hint: "poll(2) the socket with stdin: its read(2) returning 0 is the server's close, whatever stdin does" },
        Step { name: "a server's close is noticed while stdin stays open", run: client_00_server_closes, hint: "one poll(2) over the socket and stdin, the socket's events looked at first: a client asleep in read(2) on stdin cannot see the server go (Stevens' str_cli, docs/lessons/00-client.md)" },
        Step { name: "model: one thread asleep in poll over both", run: model_00, hint: "one thread, one poll(2) over the socket (POLLIN) and stdin (POLLIN): no thread per direction, no read(2) that blocks on one fd" },
    ]
}

const SIGIO_OVERFLOW: &str = "lesson 09 is one thread in sigtimedwait(2): every socket F_SETOWN \
    (this process), F_SETSIG (SIGRTMIN, which queues and names the fd in si_fd) and O_ASYNC | \
    O_NONBLOCK. When the real-time queue overflows, a plain SIGIO names nothing: rescan every \
    fd. Lesson 09's `--mistake no-rescan` does not: `make lesson-09 ARGS='--mistake no-rescan'`, \
    then `make provoke-09`";

fn steps_09() -> Vec<Step> {
    let mut steps = echo_steps();
    steps.extend([
        Step { name: "a client mid-line does not hold up another", run: clients_at_once, hint: "serve only the fd the signal's si_fd names, and drain it until EAGAIN: one signal may stand for many bytes" },
        Step { name: "model: one thread waits only in sigtimedwait, each signal naming its fd", run: |c| calls::judge(c, Scenario::Echo, SIGNAL_LOOP), hint: SIGIO_OVERFLOW },
        Step { name: "model: every socket O_ASYNC, signals named by si_fd", run: model_09_signals, hint: "fcntl(F_SETOWN, getpid()), fcntl(F_SETSIG, SIGRTMIN) and fcntl(F_SETFL, O_ASYNC | O_NONBLOCK) on the listener and on every accepted client; without F_SETSIG each event is a plain SIGIO, which names no fd, and every one costs a rescan" },
        Step { name: "model: the fd count comes back", run: fd_count_back, hint: "close(2) a client on every ending; signals still queued for its fd are stale, and harmless" },
    ]);
    steps
}

fn steps_14() -> Vec<Step> {
    vec![
    Step { name: "the greeting: method 0x00", run: |c| socks::greeting(c.addr()), hint: "the handshake is lesson 12's and given: the greeting's reply goes out through the user-space buffer first" },
    Step { name: "CONNECT, and bytes relayed both ways", run: |c| socks::connect_and_relay(c.addr()), hint: "pipe2(2) makes a direction's pipe on its first byte; then splice(2) source → pipe and pipe → destination, each until EAGAIN" },
    Step { name: "greeting and request byte by byte", run: |c| socks::byte_by_byte(c.addr()), hint: "the handshake buffers a message that is not whole yet (given, lesson 12's)" },
    Step { name: "greeting, request and payload in one write", run: |c| socks::everything_in_one_write(c.addr()), hint: "the payload that came with the request sits in the user-space buffer: it goes out before the pipe pours" },
    Step { name: "a half-close is relayed, the pipe emptied first", run: |c| socks::half_close(c.addr()), hint: "EOF from the source (splice returns 0): pour what the pipe still holds into the destination, then shutdown(SHUT_WR). Lesson 14's `--mistake close-with-bytes-in-pipe` sends the FIN at once and loses the tail: `make lesson-14 ARGS='--mistake close-with-bytes-in-pipe'`, then `make provoke-14`" },
    Step { name: "a refused target: REP 0x05", run: |c| socks::refused(c.addr()), hint: "the connect's outcome is SO_ERROR once POLLOUT comes (given, lesson 12's)" },
    Step { name: "model: relayed bytes go through pipes, not read or write", run: model_14, hint: "splice(2) moves the relayed bytes socket → pipe → socket inside the kernel: a direction with a pipe never read(2)s or write(2)s them; that is lesson 12's copying relay" },
    Step { name: "model: the fd count comes back", run: socks_fds_back, hint: "close both sockets and both ends of both pipes once both directions are done" },
    Step { name: "model: one thread relays, waiting only in poll; no write blocks", run: |c| calls::judge(c, Scenario::Socks, RELAY_LOOP), hint: "one loop thread in poll(2) (the resolver threads aside), every socket and pipe end non-blocking, and a splice(2) only where poll reported: a splice that blocks stalls every other client" },
    ]
}

const FAIL_OPEN: &str = "Redis down is no answer, and no answer is no: refuse with REP 0x01 \
    (general failure) within --redis-timeout, and redial. Lesson 13's `--mistake fail-open` \
    lets everyone in instead: `make lesson-13 ARGS='--mistake fail-open'`, then `make provoke-13`";

fn steps_13() -> Vec<Step> {
    vec![
    Step { name: "the greeting: method 0x00", run: |c| socks::greeting(c.addr()), hint: "the handshake is lesson 12's and given; a todo!() here is the Redis connection's, which the loop starts at once" },
    Step { name: "not on the allowlist: REP 0x02", run: allow_13_denied, hint: "each CONNECT waits for Redis's answer to GET allowed:<client ip>: connect(2) to Redis, its socket in the poll set, the GET written, the reply read; a missing key or \"0\" is REP 0x02" },
    Step { name: "on the allowlist: CONNECT, and bytes relayed both ways", run: allow_13_allowed, hint: "the reply to GET comes back on the Redis socket's POLLIN: read(2) it until EAGAIN and hand it to the client at the front of the queue" },
    Step { name: "a half-close is relayed", run: allow_13_half_close, hint: "once allowed, the relay is lesson 12's: EOF from one side is a shutdown(SHUT_WR) on the other. Lesson 13 mounts its mistakes too: `make lesson-13 ARGS='--mistake no-half-close'` fails this way" },
    Step { name: "five CONNECTs, one Redis connection", run: allow_13_one_connection, hint: "one persistent Redis connection for every check, the GETs pipelined on it: never a connection per client" },
    Step { name: "model: one thread relays, waiting only in poll, Redis in the same poll", run: model_13, hint: "the Redis socket is one more fd in the relay's poll set, SOCK_NONBLOCK like the others: no thread, no blocking call to Redis" },
    Step { name: "Redis down: REP 0x01 at once; back: served again", run: allow_13_redis_down, hint: FAIL_OPEN },
    Step { name: "model: the fd count comes back", run: socks_fds_back, hint: "close both sides of a relay once both directions are done" },
    ]
}

/// Every exercise, in lesson order.
pub fn exercises() -> Vec<Exercise> {
    vec![
        Exercise {
            nn: "00",
            title: "the client: poll over stdin and the socket, and the half-close",
            steps: steps_00(),
        },
        Exercise {
            nn: "01",
            title: "hello, one client and done",
            steps: steps_01(),
        },
        Exercise {
            nn: "02",
            title: "serial hello, one client after another",
            steps: steps_02(),
        },
        Exercise {
            nn: "03",
            title: "interactive reverse echo, one client at a time",
            steps: steps_03(),
        },
        Exercise {
            nn: "04",
            title: "reverse echo, a process per client (fork)",
            steps: steps_04(),
        },
        Exercise {
            nn: "05",
            title: "reverse echo, a thread per client",
            steps: steps_05(),
        },
        Exercise {
            nn: "06",
            title: "O_NONBLOCK busy polling, many clients on one thread",
            steps: steps_06(),
        },
        Exercise {
            nn: "07",
            title: "select, many clients on one thread",
            steps: steps_07(),
        },
        Exercise {
            nn: "08",
            title: "poll, many clients on one thread",
            steps: steps_08(),
        },
        Exercise {
            nn: "09",
            title: "signal-driven I/O: F_SETSIG and sigtimedwait",
            steps: steps_09(),
        },
        Exercise {
            nn: "10",
            title: "epoll, an event loop",
            steps: steps_10(),
        },
        Exercise {
            nn: "11",
            title: "io_uring: accept, recv and send submitted, their completions",
            steps: steps_11(),
        },
        Exercise {
            nn: "12",
            title: "SOCKS5 on poll: the relay",
            steps: steps_12(),
        },
        Exercise {
            nn: "13",
            title: "SOCKS5 with a Redis allowlist in the poll loop",
            steps: steps_13(),
        },
        Exercise {
            nn: "14",
            title: "zero-copy SOCKS5 relay: pipe2 and splice",
            steps: steps_14(),
        },
        Exercise {
            nn: "15",
            title: "io_uring multishot: armed once, a provided-buffer ring",
            steps: steps_15(),
        },
        Exercise {
            nn: "16",
            title: "datagrams: recvfrom, sendto and the teardown",
            steps: steps_16(),
        },
        Exercise {
            nn: "17",
            title: "the restart: the listener across in SCM_RIGHTS",
            steps: steps_17(),
        },
        Exercise {
            nn: "18",
            title: "a capture by hand: the packet socket, its filter, a frame per recvfrom",
            steps: steps_18(),
        },
    ]
}

/// Exercise `nn`, if there is one.
pub fn exercise(nn: &str) -> Option<Exercise> {
    exercises().into_iter().find(|e| e.nn == nn)
}

/// The first step, before every exercise's own.
pub const BANNER_STEP: &str = "starts on port 0 and prints its banner";

/// The first step of a client exercise.
pub const CLIENT_BANNER_STEP: &str = "connects to the checker's server and prints its banner";

/// The exercises whose program is a client: the checker runs it against servers of its own.
pub const CLIENT_EXERCISES: &[&str] = &["00"];

/// The result of a walk: how many steps passed, and the failed one (its name and failure).
pub struct Walk {
    pub passed: usize,
    pub total: usize,
    pub failed: Option<(String, Failure)>,
}

/// Walks `ex`'s steps against `exe args`, printing one line per step to `out`.
pub fn walk(ex: &Exercise, exe: &Path, args: &[String], out: &mut dyn FnMut(&str)) -> Walk {
    walk_with(ex, exe, args, false, out)
}

/// [`walk`] for a learner's own build: the banner step also asks that every process of the
/// server runs `exe` itself, not a program it started.
pub fn walk_build(ex: &Exercise, exe: &Path, args: &[String], out: &mut dyn FnMut(&str)) -> Walk {
    walk_with(ex, exe, args, true, out)
}

fn walk_with(
    ex: &Exercise,
    exe: &Path,
    args: &[String],
    own_build: bool,
    out: &mut dyn FnMut(&str),
) -> Walk {
    run::become_subreaper();
    let total = ex.steps.len() + 1;
    let mut w = Walk {
        passed: 0,
        total,
        failed: None,
    };
    let fail = |w: &mut Walk, n: usize, name: &str, f: Failure, out: &mut dyn FnMut(&str)| {
        out(&format!("  FAIL  {n:>2}. {name}\n{f}"));
        w.failed = Some((name.to_string(), f));
    };
    // Exercise 13's allowlist lives in a redis-server of the check's own, stopped at the end.
    let mut args = args.to_vec();
    let _redis = match ex.nn {
        "13" => match redis_13(&mut args) {
            Ok(guard) => Some(guard),
            Err(f) => {
                fail(&mut w, 1, BANNER_STEP, f, out);
                return w;
            }
        },
        _ => None,
    };
    let args = &args[..];
    // A client exercise (00) starts the client against the checker's own server instead.
    let client = CLIENT_EXERCISES.contains(&ex.nn);
    let (banner_step, started) = match client {
        true => (CLIENT_BANNER_STEP, start_client_00(exe, args)),
        false if ex.nn == capture::NN => (BANNER_STEP, capture::start(exe, args)),
        false => (BANNER_STEP, run::start(exe, args, 0)),
    };
    // The program that runs must be the one the learner's crate built.
    let started =
        started.and_then(
            |mut s| match own_build.then(|| own_program(s.pid, exe)).flatten() {
                None => Ok(s),
                Some(f) => {
                    s.stop();
                    Err(f)
                }
            },
        );
    let server = match started {
        Ok(s) => s,
        Err(f) => {
            let f = match client {
                true => f.hint("the banner comes after socket and connect"),
                false => f.hint("the banner comes after socket, bind, listen and getsockname"),
            };
            fail(&mut w, 1, banner_step, todo_hint(ex.nn, f), out);
            run::reap_orphans();
            return w;
        }
    };
    out(&format!("  ok    {:>2}. {banner_step}", 1));
    w.passed = 1;
    let mut ctx = Ctx {
        server,
        exe: exe.to_path_buf(),
        args: args.to_vec(),
    };
    for (i, step) in ex.steps.iter().enumerate() {
        let from = ctx.server.log.len();
        let outcome = (step.run)(&mut ctx);
        match outcome {
            Ok(()) => {
                out(&format!("  ok    {:>2}. {}", i + 2, step.name));
                w.passed += 1;
            }
            Err(mut f) => {
                thread::sleep(Duration::from_millis(50)); // the log's last lines
                                                          // A todo!() reached or a panic explains any failure; an exit, one where the
                                                          // server did not answer.
                let exited = ctx.server.child.try_wait().ok().flatten();
                if let Some(what) = ctx.server.what_happened(from) {
                    if ctx.server.log.panic_since(0).is_some()
                        || exited.is_some_and(|s| !s.success())
                    {
                        f.got = what;
                    }
                }
                let f = todo_hint(ex.nn, f.hint(step.hint));
                fail(&mut w, i + 2, step.name, f, out);
                break;
            }
        }
    }
    ctx.server.stop();
    drop(ctx);
    drop(_redis);
    run::reap_orphans();
    w
}

/// Every process of the server (it and its descendants) runs `exe`, the build checked: a
/// program that execs another (a lesson's binary, say) is not the exercise. A failure names
/// what runs instead.
fn own_program(pid: u32, exe: &Path) -> Option<Failure> {
    let want = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf());
    let mut others = Vec::new();
    for p in std::iter::once(pid).chain(model::descendants(pid)) {
        match std::fs::read_link(format!("/proc/{p}/exe")) {
            Ok(runs) if runs != want => others.push(format!("pid {p} runs {}", runs.display())),
            _ => {}
        }
    }
    if others.is_empty() {
        return None;
    }
    Some(
        Failure::new(
            format!("(nothing: started {})", exe.display()),
            format!(
                "every process of the server running {} (/proc/PID/exe)",
                want.display()
            ),
            format!("{}: another program, started by exec", others.join(", ")),
        )
        .hint("the exercise is your own code: write its calls, do not exec another program"),
    )
}

/// A failure at a todo!() gets the hint to write that call.
fn todo_hint(nn: &str, mut f: Failure) -> Failure {
    if f.got.contains("todo!()") {
        f.hint = format!(
            "write the call this todo!() stands for, at the place it names (`make hint-{nn}` \
             lists the todo!()s left)"
        );
    }
    f
}

// ---------------------------------------------------------------------------------------
// Steps that are not a protocol rule alone: lesson 01's life, concurrency, the model.
// ---------------------------------------------------------------------------------------

fn hello(c: &mut Ctx) -> Outcome {
    let mut conn = Conn::open(c.addr())?;
    let got = conn.rest()?;
    let text = String::from_utf8_lossy(&got);
    if text.starts_with("Hello there! ") && text.ends_with('\n') && text.lines().count() == 1 {
        return Ok(());
    }
    Err(Failure::new(
        "(nothing: just connected)",
        "\"Hello there! <local time>\\n\", then the close",
        crate::client::show(&got),
    ))
}

fn exits_after_one(c: &mut Ctx) -> Outcome {
    let until = Instant::now() + wait();
    while Instant::now() < until {
        if let Ok(Some(status)) = c.server.child.try_wait() {
            if status.success() {
                return Ok(());
            }
            return Err(Failure::new(
                "one client",
                "exit status 0",
                format!("{status}"),
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
    Err(Failure::new(
        "one client",
        "the server exits",
        format!("still running after {} s", wait().as_secs()),
    ))
}

/// Lesson 01 again on the port the first run used, whose connection is in TIME_WAIT.
fn restart_binds(c: &mut Ctx) -> Outcome {
    let port = c.addr().port();
    match run::start(&c.exe, &c.args, port) {
        Ok(server) => {
            c.server = server;
            Ok(())
        }
        Err(f) => {
            let got = c.server.log.lines().join(" / ");
            let _ = got;
            Err(Failure {
                sent: format!("a second run on port {port}, right after the first"),
                ..f
            })
        }
    }
}

/// Opens `n` clients, each welcomed.
fn welcomed_clients(addr: SocketAddr, n: usize) -> Result<Vec<Conn>, Failure> {
    (0..n).map(|_| echo::welcomed(addr)).collect()
}

/// The model the kernel shows, added to a failure's `got`.
fn with_model(pid: u32, mut f: Failure) -> Failure {
    f.got = format!("{}; the kernel shows {}", f.got, model::describe(pid));
    f
}

/// Three clients connected at once, the first mid-line: each is welcomed and answered.
fn clients_at_once(c: &mut Ctx) -> Outcome {
    let addr = c.addr();
    let run = || -> Outcome {
        let mut first = echo::welcomed(addr)?;
        first.send("slow")?;
        let mut others = welcomed_clients(addr, 2)?;
        for o in &mut others {
            o.round_trip(b"quick one", b"eno kciuq")?;
        }
        first.send("ly\n")?;
        first.expect(b"ylwols\n")
    };
    run().map_err(|f| with_model(c.pid(), f))
}

fn serial_model(c: &mut Ctx) -> Outcome {
    let pid = c.pid();
    let mut conn = echo::welcomed(c.addr())?;
    let (threads, children) = (model::threads(pid).len(), model::children(pid).len());
    if threads != 1 || children != 0 {
        return Err(Failure::new(
            "one client, connected",
            "1 thread and no child process (the serial model)",
            model::describe(pid),
        ));
    }
    conn.send("q\n")?;
    conn.expect_close()?;
    // From the calls: one thread serves (a double fork leaves the snapshot above clean).
    calls::judge(c, Scenario::Serial, &[Rule::OneThreadServes, Rule::NoSpin])?;
    fd_count_back(c)
}

fn eof_first(c: &mut Ctx) -> Outcome {
    let mut conn = echo::welcomed(c.addr())?;
    conn.send("abc\n")?;
    conn.finish();
    let sent = |f| Failure {
        sent: "\"abc\\n\", then shutdown(SHUT_WR) (EOF)".into(),
        ..f
    };
    conn.expect(b"cba\n").map_err(sent)?;
    conn.expect_close().map_err(sent)
}

fn no_zombies(c: &mut Ctx) -> Outcome {
    // Three rounds: a reaper that takes one child per SIGCHLD passes a round whose children
    // happen to exit one by one; it cannot pass three where they exit together.
    for _ in 0..3 {
        zombie_round(c)?;
    }
    Ok(())
}

/// Ten clients quit and, once their children linger, all close at once: the children exit
/// together and their SIGCHLDs coalesce. Every child must then be reaped, none left in Z.
fn zombie_round(c: &mut Ctx) -> Outcome {
    let pid = c.pid();
    let mut clients = welcomed_clients(c.addr(), 10)?;
    for conn in &mut clients {
        conn.send("q\n")?;
    }
    for conn in &mut clients {
        conn.expect_close()?; // its child has shut down its side and lingers in read(2)
    }
    for conn in &clients {
        conn.finish();
    }
    drop(clients);
    let sent = "ten clients that send q, then close at the same moment";
    let until = Instant::now() + wait();
    loop {
        let children = model::children(pid);
        if children.is_empty() {
            return Ok(());
        }
        if Instant::now() > until {
            let zombies = model::zombies(pid);
            if zombies.is_empty() {
                return Err(Failure::new(
                    sent,
                    "every child exits once its client has closed",
                    format!("{} child(ren) still running: {children:?}", children.len()),
                ));
            }
            return Err(Failure::new(
                sent,
                "no child left in state Z (every child reaped by waitpid)",
                format!(
                    "{} zombie(s) (state Z in /proc/PID/stat): {zombies:?}",
                    zombies.len()
                ),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The fd count after twenty clients that end every way is the count before them.
fn fd_count_back(c: &mut Ctx) -> Outcome {
    echo::fd_count_back(c.addr(), c.pid(), 20)
}

fn blocking_sockets(pid: u32, sent: &str) -> Outcome {
    let sockets = model::sockets(pid);
    let blocking: Vec<u32> = sockets
        .iter()
        .filter(|(_, nb)| !nb)
        .map(|(fd, _)| *fd)
        .collect();
    if blocking.is_empty() && !sockets.is_empty() {
        return Ok(());
    }
    Err(Failure::new(
        sent,
        "every socket O_NONBLOCK (flags in /proc/PID/fdinfo)",
        format!(
            "blocking socket fds {blocking:?} of {} sockets",
            sockets.len()
        ),
    ))
}

fn nonblocking_echo(c: &mut Ctx) -> Outcome {
    let _clients = welcomed_clients(c.addr(), 3)?;
    blocking_sockets(c.pid(), "three clients, connected")
}

/// [`socks::stalled_client_stalls_no_other`], saying which call the loop's thread sleeps in.
fn stalled_reader(c: &mut Ctx) -> Outcome {
    let pid = c.pid();
    let observe = || {
        let call = model::syscall(pid, pid)?;
        Some(format!("the loop's thread (the first) is asleep in {call}"))
    };
    socks::stalled_client_stalls_no_other(c.addr(), &observe)
}

fn socks_fds_back(c: &mut Ctx) -> Outcome {
    let pid = c.pid();
    let echo_target = socks::echo_target();
    let mut first = socks::open(c.addr(), echo_target)?;
    first.finish();
    first.rest()?;
    let until = Instant::now() + wait();
    let start = loop {
        // The first relay's two fds close once both directions are done.
        let n = model::fd_count(pid);
        thread::sleep(Duration::from_millis(50));
        if n == model::fd_count(pid) || Instant::now() > until {
            break n;
        }
    };
    for i in 0..10 {
        let mut relay = socks::open(c.addr(), echo_target)?;
        relay.send("x")?;
        relay.expect(b"x")?;
        if i % 2 == 0 {
            relay.finish();
            relay.rest()?;
        } else {
            relay.reset();
        }
    }
    let until = Instant::now() + wait();
    loop {
        let now = model::fd_count(pid);
        if now == start {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(Failure::new(
                "ten relays, half closed by EOF, half reset",
                format!("{start} open fds afterwards, as before them"),
                format!("{now} open fds"),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Exercise 02: the serial accept loop.
// ---------------------------------------------------------------------------------------

/// Ten clients in a row, each greeted and closed; a server gone after one is lesson 01.
fn clients_in_a_row(c: &mut Ctx) -> Outcome {
    for i in 0..10 {
        if let Err(f) = hello(c) {
            // A server that exits after its client may still be on its way out.
            let until = Instant::now() + Duration::from_millis(500);
            while c.server.child.try_wait().ok().flatten().is_none() && Instant::now() < until {
                thread::sleep(Duration::from_millis(20));
            }
            let got = match c.server.child.try_wait().ok().flatten() {
                Some(status) => format!(
                    "{}; the server had exited ({status}): one client, then exit, is lesson \
                     01's model",
                    f.got
                ),
                None => with_model(c.pid(), f.clone()).got,
            };
            return Err(Failure {
                sent: format!(
                    "client {} of 10, each after the one before was closed",
                    i + 1
                ),
                got,
                ..f
            });
        }
    }
    Ok(())
}

/// A client that resets before it is accepted: the server writes into a dead connection,
/// and the next client is greeted.
fn gone_before_greeting(c: &mut Ctx) -> Outcome {
    for _ in 0..3 {
        Conn::open(c.addr())?.reset();
    }
    hello(c).map_err(|f| Failure {
        sent: "three clients that reset at once, then one more".into(),
        ..f
    })
}

/// Twenty more clients leave the fd count where it was.
fn model_02_fds(c: &mut Ctx) -> Outcome {
    let pid = c.pid();
    hello(c)?;
    let start = model::fd_count(pid);
    for _ in 0..20 {
        hello(c)?;
    }
    let until = Instant::now() + wait();
    loop {
        let now = model::fd_count(pid);
        if now == start {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(Failure::new(
                "twenty clients, each greeted",
                format!("{start} open fds afterwards, as before them (/proc/PID/fd)"),
                format!("{now} open fds: {} never closed", now as i64 - start as i64),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Exercise 05: a thread per client.
// ---------------------------------------------------------------------------------------

/// Clients that leave every way take their threads and fds with them.
fn model_05_threads_end(c: &mut Ctx) -> Outcome {
    let pid = c.pid();
    // The clients of the steps before are gone: their threads end, their fds close.
    threads_back_to_one(pid, "the three clients of the step before, gone")?;
    fd_count_back(c)?;
    threads_back_to_one(pid, "twenty clients, gone (q, EOF mid-line and reset)")
}

/// Waits until `pid` has one thread left, the accepting one.
fn threads_back_to_one(pid: u32, sent: &str) -> Outcome {
    let until = Instant::now() + wait();
    loop {
        let threads = model::threads(pid).len();
        if threads == 1 {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(Failure::new(
                sent,
                "one thread left: the accepting one",
                format!("{threads} threads"),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The same server with `--max-clients 2`: a third client is refused, and once one of the
/// two leaves, a new one is served.
fn model_05_full(c: &mut Ctx) -> Outcome {
    let mut args = c.args.clone();
    args.extend(["--max-clients".to_string(), "2".to_string()]);
    let limited = run::start(&c.exe, &args, 0)?;
    let addr = limited.addr;
    let mut two = welcomed_clients(addr, 2)?;
    let sent = "two clients connected and idle, then a third (the server started with \
                --max-clients 2)";
    let mut third = Conn::open(addr)?;
    let got = third.rest().map_err(|f| Failure {
        sent: sent.into(),
        ..f
    })?;
    if got != b"error: server full\n" {
        return Err(Failure::new(
            sent,
            "\"error: server full\\n\", then the close",
            format!(
                "{}; the kernel shows {}",
                crate::client::show(&got),
                model::describe(limited.pid)
            ),
        ));
    }
    let mut gone = two.remove(0);
    gone.send("q\n")?;
    gone.expect_close()?;
    drop(gone);
    let until = Instant::now() + wait();
    loop {
        // The thread of the client gone ends, and a fourth client is served.
        let mut next = Conn::open(addr)?;
        let got = next.expect(echo::WELCOME);
        if got.is_ok() {
            return next.round_trip(b"served", b"devres");
        }
        if Instant::now() > until {
            return got.map_err(|f| Failure {
                sent: "one of the two clients quits; then another connects".into(),
                ..f
            });
        }
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// Exercise 06: non-blocking sockets, no readiness call.
// ---------------------------------------------------------------------------------------

/// A client that says nothing for a while is welcomed, kept, and answered.
fn model_06_idle_kept(c: &mut Ctx) -> Outcome {
    let mut conn = echo::welcomed(c.addr())?;
    thread::sleep(Duration::from_millis(200));
    conn.round_trip(b"still here", b"ereh llits")
        .map_err(|f| Failure {
            sent: "nothing for 0.2 s after the welcome, then \"still here\\n\"".into(),
            ..f
        })
}

// ---------------------------------------------------------------------------------------
// Exercise 00: the client, run against the checker's own reverse-echo server.
// ---------------------------------------------------------------------------------------

/// How the checker's server for the client behaves.
#[derive(Clone, Copy, PartialEq)]
enum Serve {
    /// `Welcome buddy!`, each line reversed 50 ms after it came, `q` closes; at EOF it
    /// closes once every reply is written.
    Slow,
    /// `Welcome buddy!`, then the close, whatever the client does.
    CloseAfterWelcome,
}

/// The checker's server: its address, and whether a client's EOF (a half-close) came.
struct TestServer {
    addr: SocketAddr,
    saw_eof: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn test_server(how: Serve) -> Result<TestServer, Failure> {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| Ok((l.local_addr()?, l)))
        .map_err(|e| Failure::new("", "the checker's server listening", e.to_string()))?;
    let (addr, listener) = listener;
    let saw_eof = std::sync::Arc::new(AtomicBool::new(false));
    let eof = saw_eof.clone();
    // The listener lives as long as the check: the process ends with it.
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let eof = eof.clone();
            thread::spawn(move || {
                let mut out = conn.try_clone()?;
                out.write_all(echo::WELCOME)?;
                if how == Serve::CloseAfterWelcome {
                    return Ok(());
                }
                for line in BufReader::new(conn).split(b'\n') {
                    let mut line = line?;
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if line == b"q" {
                        return out.shutdown(std::net::Shutdown::Both);
                    }
                    thread::sleep(Duration::from_millis(50));
                    let mut reply: Vec<u8> = String::from_utf8_lossy(&line)
                        .chars()
                        .rev()
                        .collect::<String>()
                        .into_bytes();
                    reply.push(b'\n');
                    out.write_all(&reply)?;
                }
                eof.store(true, Ordering::SeqCst);
                Ok::<(), std::io::Error>(())
            });
        }
    });
    Ok(TestServer { addr, saw_eof })
}

/// The walk's first step for the client: the checker's server up, the client connected.
fn start_client_00(exe: &Path, args: &[String]) -> Result<run::Server, Failure> {
    let server = test_server(Serve::Slow)?;
    run::start_client(exe, args, server.addr)
}

/// The client's stdout, collected by a thread as it comes.
fn collect_stdout(client: &mut run::Server) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::io::Read;
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    if let Some(mut stdout) = client.child.stdout.take() {
        let into = got.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut g) = into.lock() {
                    g.extend_from_slice(&buf[..n]);
                }
            }
        });
    }
    got
}

/// Waits for the client to exit: its status, or None after the wait.
fn client_exit(client: &mut run::Server) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + wait();
    while Instant::now() < until {
        if let Ok(Some(status)) = client.child.try_wait() {
            thread::sleep(Duration::from_millis(20)); // the stdout reader's last bytes
            return Some(status);
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

/// What the client was doing when it should have exited: the call it sleeps in, named.
fn client_model(pid: u32) -> String {
    let asleep = model::syscall(pid, pid).unwrap_or_else(|| "?".into());
    let threads = model::threads(pid).len();
    let what = match asleep.as_str() {
        "poll" | "ppoll" | "select" | "pselect6" => "waiting on both fds",
        "read" => {
            "asleep in read(2) on one fd: a client that cannot see the other (Stevens' str_cli)"
        }
        _ => "",
    };
    format!(
        "still running after {} s, {threads} thread(s), asleep in {asleep} {what}",
        wait().as_secs()
    )
}

/// Runs the client against `how`, writes `input` to its stdin (then closes stdin if
/// `eof`), and expects `want` on its stdout and exit status 0.
fn client_run(
    c: &mut Ctx,
    how: Serve,
    input: &[u8],
    eof: bool,
    want: &[u8],
    sent: &str,
) -> Outcome {
    use std::io::Write;
    let server = test_server(how)?;
    let mut client = run::start_client(&c.exe, &c.args, server.addr)?;
    let stdout = collect_stdout(&mut client);
    let mut stdin = client.child.stdin.take();
    if let Some(s) = stdin.as_mut() {
        let _ = s.write_all(input);
    }
    if eof {
        drop(stdin.take());
    }
    let exited = client_exit(&mut client);
    let got = stdout.lock().map(|g| g.clone()).unwrap_or_default();
    let shown = crate::client::show(&got);
    let failure = |expected: String, got: String, client: &mut run::Server| {
        // A todo!() or a panic in the client explains the rest.
        let panicked = client.log.panic_since(0).is_some();
        let got = match client.what_happened(0).filter(|_| panicked) {
            Some(what) => format!("{got}; {what}"),
            None => got,
        };
        Err(Failure::new(sent, expected, got))
    };
    let expected = format!(
        "{} on stdout, then exit status 0",
        crate::client::show(want)
    );
    match exited {
        None => {
            let why = if eof
                && how == Serve::Slow
                && !server.saw_eof.load(std::sync::atomic::Ordering::SeqCst)
            {
                "; the server never read EOF: no shutdown(SHUT_WR) at the end of input"
            } else {
                ""
            };
            failure(
                expected,
                format!("{shown}, and the client {}{why}", client_model(client.pid)),
                &mut client,
            )
        }
        Some(status) if !status.success() || got != want => {
            let why = if got.len() < want.len() && eof && status.success() {
                "; it exited before the replies came: a close(2) at the end of input throws them away, shutdown(SHUT_WR) keeps them coming"
            } else {
                ""
            };
            failure(
                expected,
                format!("{shown}, then exit ({status}){why}"),
                &mut client,
            )
        }
        Some(_) => Ok(()),
    }
}

fn client_00_piped(c: &mut Ctx) -> Outcome {
    client_run(
        c,
        Serve::Slow,
        b"abc\nhello there\n",
        true,
        b"Welcome buddy!\ncba\nereht olleh\n",
        "\"abc\\nhello there\\n\" on stdin, then its end (the server replies 50 ms after each line)",
    )
}

fn client_00_quit(c: &mut Ctx) -> Outcome {
    client_run(
        c,
        Serve::Slow,
        b"one\nq\n",
        false,
        b"Welcome buddy!\neno\n",
        "\"one\\nq\\n\" on stdin, which stays open; the server closes after q",
    )
}

fn client_00_server_closes(c: &mut Ctx) -> Outcome {
    client_run(
        c,
        Serve::CloseAfterWelcome,
        b"",
        false,
        b"Welcome buddy!\n",
        "nothing on stdin, which stays open; the server closes right after its welcome",
    )
}

/// Connected and idle, stdin open: one thread asleep in poll (or select).
fn model_00(c: &mut Ctx) -> Outcome {
    let server = test_server(Serve::Slow)?;
    let client = run::start_client(&c.exe, &c.args, server.addr)?;
    let pid = client.pid;
    let until = Instant::now() + wait();
    loop {
        let asleep = model::syscall(pid, pid).unwrap_or_default();
        let threads = model::threads(pid).len();
        if threads == 1 && ["poll", "ppoll", "select", "pselect6"].contains(&asleep.as_str()) {
            return Ok(());
        }
        if Instant::now() > until {
            let what = match (threads, asleep.as_str()) {
                (t, _) if t > 1 => "a thread per fd",
                (_, "read") => "asleep in read(2) on one fd: a client that cannot see the other (Stevens' str_cli)",
                (_, "running") => "never asleep: a loop that spins",
                _ => "",
            };
            return Err(Failure::new(
                "the client connected and welcomed; stdin open and idle",
                "one thread, asleep in poll (or select) over the socket and stdin",
                format!("{threads} thread(s), asleep in {asleep}: {what}"),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Exercise 09: signal-driven I/O.
// ---------------------------------------------------------------------------------------

/// The socket fds of `pid` that lack any of `want` in their flags (/proc/PID/fdinfo).
fn sockets_without(pid: u32, want: i32) -> Result<Vec<u32>, String> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|f| f.parse::<u32>().ok())
        else {
            continue;
        };
        let socket = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        if !socket {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| i32::from_str_radix(f.trim(), 8).ok())
            .unwrap_or(0);
        if flags & want != want {
            out.push(fd);
        }
    }
    out.sort();
    Ok(out)
}

/// Three clients talk: every socket is O_ASYNC | O_NONBLOCK, and no event came as the plain
/// SIGIO that the lesson's loop takes for an overflow (F_SETSIG left out makes every event one).
fn model_09_signals(c: &mut Ctx) -> Outcome {
    let pid = c.pid();
    let from = c.server.log.len();
    let mut clients = welcomed_clients(c.addr(), 3)?;
    for conn in &mut clients {
        conn.round_trip(b"signal me", b"em langis")?;
    }
    let sent = "three clients, each a line";
    let missing = sockets_without(pid, libc::O_ASYNC | libc::O_NONBLOCK)
        .map_err(|e| Failure::new(sent, "the server's fds in /proc", e))?;
    if !missing.is_empty() {
        return Err(Failure::new(
            sent,
            "every socket O_ASYNC | O_NONBLOCK (flags in /proc/PID/fdinfo)",
            format!(
                "socket fds {missing:?} without them; the kernel shows {}",
                model::describe(pid)
            ),
        ));
    }
    // The server's stderr reaches the log through a reader thread: give it a moment.
    thread::sleep(Duration::from_millis(300));
    let overflows = c.server.log.lines()[from..]
        .iter()
        .filter(|l| l.contains("signal queue overflowed"))
        .count();
    if overflows > 0 {
        return Err(Failure::new(
            sent,
            "a real-time signal per event, its si_fd naming the socket (F_SETSIG)",
            format!("{overflows} plain SIGIO(s) for three clients: the log says \"signal queue overflowed\"; without F_SETSIG every event is one"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Exercise 14: the splice relay.
// ---------------------------------------------------------------------------------------

/// The bytes `pid` has passed through read-like and write-like calls (/proc/PID/io's rchar
/// and wchar; splice(2) counts in neither).
fn io_chars(pid: u32) -> Result<(u64, u64), Failure> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .map_err(|e| Failure::new("", "the server's /proc/PID/io", e.to_string()))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("rchar:"), field("wchar:")))
}

/// The pipe fds of `pid` (/proc/PID/fd links `pipe:[…]`).
fn pipe_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("pipe:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// 1,000,000 bytes relayed add far less than that to the server's read and write counts,
/// and a relay that has carried bytes holds pipes.
fn model_14(c: &mut Ctx) -> Outcome {
    let pid = c.pid();
    let before = io_chars(pid)?;
    let mut relay = socks::open(c.addr(), socks::reply_after_eof_target())?;
    relay.send(socks::pseudo_random(1_000_000, 14))?;
    relay.finish();
    let sent = "1,000,000 bytes through a relay, then shutdown(SHUT_WR)";
    let got = relay.rest().map_err(|f| Failure {
        sent: sent.into(),
        ..f
    })?;
    if got != b"got 1000000 bytes\n" {
        return Err(Failure::new(
            sent,
            "\"got 1000000 bytes\\n\" from the target, then the close",
            crate::client::show(&got),
        ));
    }
    let after = io_chars(pid)?;
    let (read, written) = (after.0 - before.0, after.1 - before.1);
    if read >= 500_000 || written >= 500_000 {
        return Err(Failure::new(
            sent,
            "the relayed bytes moved by splice(2): far less than 1,000,000 read or written",
            format!(
                "{read} bytes read and {written} written (rchar and wchar in /proc/PID/io): \
                 the bytes went through read(2) and write(2), lesson 12's copying relay"
            ),
        ));
    }
    // The big relay's pipes close meanwhile: count once the number holds still.
    let until = Instant::now() + wait();
    let pipes = loop {
        let n = pipe_count(pid);
        thread::sleep(Duration::from_millis(100));
        if n == pipe_count(pid) || Instant::now() > until {
            break n;
        }
    };
    let mut relay = socks::open(c.addr(), socks::echo_target())?;
    relay.send("ping")?;
    relay.expect(b"ping")?;
    let now = pipe_count(pid);
    if now < pipes + 2 {
        return Err(Failure::new(
            "one relay, \"ping\" there and back",
            "a pipe per direction that has carried bytes (pipe2): 2 pipe fds or more than before",
            format!("{pipes} pipe fds before the relay, {now} with it"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Exercise 13: the Redis allowlist, against a redis-server of the check's own.
// ---------------------------------------------------------------------------------------

/// The redis-servers this check started: killed and reaped when the guard goes.
static REDIS: std::sync::Mutex<Vec<std::process::Child>> = std::sync::Mutex::new(Vec::new());

/// Stops every redis-server the check started.
struct RedisGuard;

impl Drop for RedisGuard {
    fn drop(&mut self) {
        if let Ok(mut children) = REDIS.lock() {
            for mut child in children.drain(..) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// One command to the redis-server on `port`, on a connection of its own: its reply.
fn redis_cmd(port: u16, args: &[&[u8]]) -> Result<protocols::resp::Value, String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(wait()))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    protocols::resp::encode_command(args, &mut out);
    conn.write_all(&out).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Some((value, _))) = protocols::resp::parse(&buf) {
            return Ok(value);
        }
        match conn.read(&mut chunk) {
            Ok(0) => return Err("redis-server closed the connection".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Starts redis-server (memory only) on `port` and waits for its PING.
fn redis_start(port: u16) -> Result<(), Failure> {
    let started = format!("redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no");
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            Failure::new(&started, "redis-server running", format!("{e}"))
                .hint("exercise 13 needs redis-server: `make deps` installs it")
        })?;
    if let Ok(mut children) = REDIS.lock() {
        children.push(child);
    }
    let until = Instant::now() + wait();
    while Instant::now() < until {
        if redis_cmd(port, &[b"PING"]).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(Failure::new(
        started,
        "PONG",
        format!("no answer within {} s", wait().as_secs()),
    ))
}

/// Exercise 13's walk: a redis-server on a free port, named to the server by `--redis`.
fn redis_13(args: &mut Vec<String>) -> Result<RedisGuard, Failure> {
    let guard = RedisGuard;
    let mut last = Failure::new("", "", "");
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Failure::new("", "a free port", e.to_string()))?
            .port();
        match redis_start(port) {
            Ok(()) => {
                args.extend(["--redis".to_string(), format!("127.0.0.1:{port}")]);
                return Ok(guard);
            }
            Err(f) => last = f,
        }
    }
    Err(last)
}

/// The Redis port the server under check was given.
fn redis_port(c: &Ctx) -> u16 {
    c.args
        .iter()
        .skip_while(|a| *a != "--redis")
        .nth(1)
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .map_or(0, |a| a.port())
}

/// `SET allowed:127.0.0.1 value`, or `DEL` it when `value` is None.
fn allow_13(c: &Ctx, value: Option<&str>) -> Outcome {
    let key = b"allowed:127.0.0.1";
    let reply = match value {
        Some(v) => redis_cmd(redis_port(c), &[b"SET", key, v.as_bytes()]),
        None => redis_cmd(redis_port(c), &[b"DEL", key]),
    };
    reply
        .map(|_| ())
        .map_err(|e| Failure::new("(the checker's own command to Redis)", "its reply", e))
}

/// A CONNECT from a client whose key is missing, then one whose key is "0": REP 0x02.
fn allow_13_denied(c: &mut Ctx) -> Outcome {
    for value in [None, Some("0")] {
        allow_13(c, value)?;
        let mut conn = Conn::open(c.addr())?;
        socks::greet(&mut conn)?;
        let target = socks::echo_target();
        let request =
            protocols::socks5::client::connect_request(&protocols::socks5::Target::Ip(target))
                .expect("request");
        conn.send(request)?;
        socks::expect_reply(&mut conn, protocols::socks5::Reply::NotAllowed).map_err(|f| {
            let key = value.map_or("no key allowed:127.0.0.1".to_string(), |v| {
                format!("allowed:127.0.0.1 = \"{v}\"")
            });
            Failure {
                sent: format!("CONNECT, with {key} in Redis"),
                ..f
            }
        })?;
    }
    Ok(())
}

fn allow_13_allowed(c: &mut Ctx) -> Outcome {
    allow_13(c, Some("1"))?;
    socks::connect_and_relay(c.addr())
}

fn allow_13_half_close(c: &mut Ctx) -> Outcome {
    allow_13(c, Some("1"))?;
    socks::half_close(c.addr())
}

/// Redis's count of connections it has accepted.
fn redis_connections(port: u16) -> Result<u64, Failure> {
    let info = redis_cmd(port, &[b"INFO", b"stats"])
        .map_err(|e| Failure::new("INFO stats", "Redis's statistics", e))?;
    let text = match info {
        protocols::resp::Value::Bulk(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        other => format!("{other:?}"),
    };
    text.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| Failure::new("INFO stats", "total_connections_received", text))
}

/// Five CONNECTs in a row: Redis accepts no connection from the server meanwhile.
fn allow_13_one_connection(c: &mut Ctx) -> Outcome {
    allow_13(c, Some("1"))?;
    let port = redis_port(c);
    let before = redis_connections(port)?;
    for _ in 0..5 {
        let mut relay = socks::open(c.addr(), socks::echo_target())?;
        relay.send("x")?;
        relay.expect(b"x")?;
    }
    // The checker's own INFO is one connection: any other is the server's.
    let new = redis_connections(port)? - before - 1;
    if new > 0 {
        return Err(Failure::new(
            "five CONNECTs, one after another",
            "no new connection to Redis: one persistent connection, GETs pipelined on it",
            format!("{new} new connection(s) to Redis (INFO stats): a connection per check"),
        ));
    }
    Ok(())
}

/// Redis shut down: a CONNECT is refused with REP 0x01 within the wait (not let in, not
/// left hanging); Redis back on its port: a CONNECT is served again once redialled.
fn allow_13_redis_down(c: &mut Ctx) -> Outcome {
    let port = redis_port(c);
    let _ = redis_cmd(port, &[b"SHUTDOWN", b"NOSAVE"]);
    let until = Instant::now() + wait();
    while redis_cmd(port, &[b"PING"]).is_ok() && Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
    let mut conn = Conn::open(c.addr())?;
    socks::greet(&mut conn)?;
    let request = protocols::socks5::client::connect_request(&protocols::socks5::Target::Ip(
        socks::echo_target(),
    ))
    .expect("request");
    conn.send(request)?;
    socks::expect_reply(&mut conn, protocols::socks5::Reply::GeneralFailure).map_err(|f| {
        Failure {
            sent: "CONNECT, with Redis shut down".into(),
            ..f
        }
    })?;
    redis_start(port)?;
    allow_13(c, Some("1"))?;
    // The server redials within its backoff (at most a second or so).
    let until = Instant::now() + wait() + Duration::from_secs(2);
    loop {
        match socks::open(c.addr(), socks::echo_target()) {
            Ok(mut relay) => {
                relay.send("back")?;
                return relay.expect(b"back");
            }
            Err(f) if Instant::now() > until => {
                return Err(Failure {
                    sent: "CONNECT, Redis back on its port and the key set".into(),
                    ..f
                })
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Exercise 13's model: an allowed relay, its calls judged; the Redis socket must be in the
/// same poll.
fn model_13(c: &mut Ctx) -> Outcome {
    allow_13(c, Some("1"))?;
    calls::judge(c, Scenario::Socks, REDIS_RELAY_LOOP)
}

// ---------------------------------------------------------------------------------------
// Exercises 11 and 15: io_uring.
// ---------------------------------------------------------------------------------------

/// Exercise 11's model, from its calls: one thread, waiting only in io_uring_enter, and no
/// accept, read or write of its own on a socket: the ring does them.
const RING_LOOP: &[Rule] = &[
    Rule::OneThreadServes,
    Rule::NoSpin,
    Rule::WaitsOnlyIn(IORING),
    Rule::OnlyThroughRing,
];
/// Exercise 15's: the same, with the accept and each client's recv armed once.
const MULTISHOT_LOOP: &[Rule] = &[
    Rule::OneThreadServes,
    Rule::NoSpin,
    Rule::WaitsOnlyIn(IORING),
    Rule::OnlyThroughRing,
    Rule::ArmedOnce,
];

const RING_MODEL: &str = "submit IORING_OP_ACCEPT, RECV and SEND and sleep only in \
    io_uring_enter: no poll, epoll or select, and no accept(2), read(2) or write(2) of your own \
    on a socket (only shutdown and close stay plain calls). Watch it with `make trace-11`";
const REUSE_BUFFER: &str = "each client's recv needs a buffer of its own, the kernel's until the \
    recv completes: a buffer shared by the recvs of one batch holds only the last one's bytes. \
    This is lesson 11's `--mistake reuse-buffer`: `make lesson-11 ARGS='--mistake \
    reuse-buffer'`, then `make provoke-11`";
const NO_REARM: &str = "a recv completion without IORING_CQE_F_MORE (ENOBUFS: the buffer ring \
    ran dry) ends the multishot recv: clear recv_armed so that drive arms it again, and give \
    every buffer back once consumed. This is lesson 15's `--mistake no-rearm`: `make lesson-15 \
    ARGS='--mistake no-rearm --bufs 4'`, then `make provoke-15`";

fn steps_11() -> Vec<Step> {
    let mut steps = echo_steps();
    steps.extend([
        Step { name: "a client mid-line does not hold up another", run: clients_at_once, hint: "keep a recv in flight for every client: a completion is one client's, the others' operations stay in the ring" },
        Step { name: "32 clients' lines in one batch, each answered with its own", run: |c| burst(c, 32, 3), hint: REUSE_BUFFER },
        Step { name: "model: one thread waits only in io_uring_enter; the ring does the I/O", run: |c| calls::judge(c, Scenario::Ring, RING_LOOP), hint: RING_MODEL },
        Step { name: "model: the fd count comes back", run: fd_count_back, hint: "close(2) each client once nothing is in flight on it: cancel its recv (IORING_OP_ASYNC_CANCEL) and wait for the completions first" },
    ]);
    steps
}

fn steps_15() -> Vec<Step> {
    let mut steps = echo_steps();
    steps.extend([
        Step { name: "a client mid-line does not hold up another", run: clients_at_once, hint: "keep each client's multishot recv armed: each completion is one client's bytes" },
        Step { name: "model: one thread waits only in io_uring_enter; accept and recvs armed once", run: |c| calls::judge(c, Scenario::Ring, MULTISHOT_LOOP), hint: "one AcceptMulti for every client and one RecvMulti per client, armed again only when a completion comes without IORING_CQE_F_MORE: a line answered costs one entry, its send. Re-arming a single-shot recv per line is lesson 11's model; `make trace-15` and `make trace-11` show the difference in io_uring_enter's counts" },
        Step { name: "model: the fd count comes back", run: fd_count_back, hint: "close(2) each client once nothing is in flight on it: cancel its multishot recv and wait for its last completion first" },
        Step { name: "with --bufs 4, 32 clients' lines in one batch are all answered", run: burst_few_buffers, hint: NO_REARM },
    ]);
    steps
}

/// `n` clients, each a line sent while the server is stopped (SIGSTOP), so that the lines
/// arrive together and their completions come back in one io_uring_enter, `rounds` times:
/// each client must get its own line back.
fn burst(c: &mut Ctx, n: usize, rounds: usize) -> Outcome {
    let (addr, pid) = (c.addr(), c.pid() as i32);
    let mut clients = welcomed_clients(addr, n)?;
    for round in 0..rounds {
        // SAFETY: kill(2) on the server this check started.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let until = Instant::now() + wait();
        while model::state(&format!("/proc/{pid}")).is_some_and(|s| s != 'T' && s != 't')
            && Instant::now() < until
        {
            thread::sleep(Duration::from_millis(5));
        }
        let sent = clients
            .iter_mut()
            .enumerate()
            .try_for_each(|(i, conn)| conn.send(format!("client {i} round {round}\n")));
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        sent?;
        for (i, conn) in clients.iter_mut().enumerate() {
            let line = format!("client {i} round {round}");
            let back: String = line.chars().rev().collect();
            conn.expect(format!("{back}\n").as_bytes())
                .map_err(|f| Failure {
                    sent: format!(
                        "{n} clients, each a line sent while the server was stopped (SIGSTOP), \
                     round {}: client {i} sent {line:?}",
                        round + 1
                    ),
                    ..f
                })?;
        }
    }
    Ok(())
}

/// The burst against a second instance whose buffer ring has 4 buffers (`--bufs 4`): the
/// ring runs dry (ENOBUFS), and each multishot recv that ends must be armed again.
fn burst_few_buffers(c: &mut Ctx) -> Outcome {
    let mut args = c.args.clone();
    if !args.iter().any(|a| a == "--bufs") {
        args.extend(["--bufs".to_string(), "4".to_string()]);
    }
    c.server.stop();
    c.server = run::start(&c.exe, &args, 0)?;
    burst(c, 32, 3)
}

// ---------------------------------------------------------------------------------------
// Exercise 18: a capture, in a network namespace of the check's own (capture.rs).
// ---------------------------------------------------------------------------------------

fn steps_18() -> Vec<Step> {
    vec![
        Step { name: "a connection on the port: [S], [S.], [.], then the FINs", run: capture::connection_flags, hint: "socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)), bind to the interface, then poll and recvfrom(2) each frame with its sockaddr_ll: every packet becomes one line" },
        Step { name: "the filter keeps only its port: another port's traffic unseen", run: capture::only_its_port, hint: "attach the BPF program with setsockopt(SO_ATTACH_FILTER) before bind: the kernel then queues only the port's frames. Without it every frame is copied up: lesson 18's `--mistake no-filter`, `make lesson-18 ARGS='--mistake no-filter --port 23333'`, then `make provoke-18`" },
        Step { name: "model: socket(AF_PACKET), setsockopt(SO_ATTACH_FILTER), a recvfrom per packet", run: capture::model, hint: "the capture's calls, in order: socket(AF_PACKET), setsockopt(SO_ATTACH_FILTER), bind, then poll and one recvfrom(2) per frame until EAGAIN. Watch them with `make trace-18`" },
    ]
}
