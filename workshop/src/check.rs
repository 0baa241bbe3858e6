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

use crate::calls::{self, Rule, Scenario, EPOLLS, IORING, POLLS};
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

/// Every exercise, in lesson order.
pub fn exercises() -> Vec<Exercise> {
    vec![
        Exercise {
            nn: "01",
            title: "hello, one client and done",
            steps: steps_01(),
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
            nn: "08",
            title: "poll, many clients on one thread",
            steps: steps_08(),
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
    let started = if ex.nn == capture::NN {
        capture::start(exe, args)
    } else {
        run::start(exe, args, 0)
    };
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
            let f = todo_hint(
                ex.nn,
                f.hint("the banner comes after socket, bind, listen and getsockname"),
            );
            fail(&mut w, 1, BANNER_STEP, f, out);
            run::reap_orphans();
            return w;
        }
    };
    out(&format!("  ok    {:>2}. {BANNER_STEP}", 1));
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
