//! Lessons 06–08: one thread, many clients (busy polling, select, poll). What each must do
//! beyond the shared echo suite (tests/echo.rs): many concurrent clients, a slow client
//! that delays nobody, backpressure, running out of fds, select's FD_SETSIZE wall, poll
//! past it, and the system calls each model shows under strace.

mod common;

use std::time::{Duration, Instant};

use common::single_thread::{nofile_command, ready_fds, rounds};
use common::{echo_suite, load, Client, Server, Trace, Traced};

/// The cases every single-threaded echo lesson passes, at the sizes the models must survive.
macro_rules! single_thread_cases {
    ($module:ident, $bin:literal) => {
        mod $module {
            use super::*;

            fn start() -> Server {
                Server::start(exe!($bin), &[])
            }

            /// 200 clients connected at once, each doing 20 interleaved round trips, every
            /// reply checked.
            #[test]
            fn clients_200_x_20_round_trips() {
                let server = start();
                load::round_trips(server.addr, 200, 20);
            }

            /// A client holding half a line for 3 s does not delay another client.
            #[test]
            fn partial_line_holder() {
                echo_suite::partial_line_holder(&start(), Duration::from_secs(3));
            }

            /// A client writing 100 MiB of lines without reading: the server stops reading
            /// it, stays under 64 MiB RSS, and serves others.
            #[test]
            fn backpressure() {
                echo_suite::backpressure(&start(), 64);
            }

            /// 300 connections ending every way leave the fd count where it was.
            #[test]
            fn fd_count_steady() {
                echo_suite::fd_count_steady(&start(), 300);
            }

            /// Ctrl-C closes the clients, prints the summary last and exits 0.
            #[test]
            fn stops_on_ctrl_c() {
                echo_suite::stops_on_ctrl_c(exe!($bin));
            }
        }
    };
}

single_thread_cases!(lesson_06, "lesson-06");
single_thread_cases!(lesson_07, "lesson-07");
single_thread_cases!(lesson_08, "lesson-08");

// ---------------------------------------------------------------------------------------
// Out of fds (EMFILE): no spinning, no dying, waiting clients served once others leave.
// ---------------------------------------------------------------------------------------

/// Lesson 06 spins by design whenever it is idle (that is its lesson; see
/// `lesson_06_spins_unless_it_naps`), so "small CPU while out of fds" can only be asked of
/// it with `--nap`. The EMFILE policy is still what is under test: without the pause, every
/// round would retry accept and report EMFILE again (the shared case counts the reports),
/// and the waiting clients are only served because a close re-enables accept.
#[test]
fn lesson_06_emfile() {
    echo_suite::emfile(exe!("lesson-06"), &["--nap", "2000"], 40);
}

#[test]
fn lesson_07_emfile() {
    echo_suite::emfile(exe!("lesson-07"), &[], 40);
}

#[test]
fn lesson_08_emfile() {
    echo_suite::emfile(exe!("lesson-08"), &[], 40);
}

// ---------------------------------------------------------------------------------------
// CPU: 06 burns it while idle (unless it naps); 07 and 08 sleep in the kernel.
// ---------------------------------------------------------------------------------------

/// CPU ticks (1/100 s) `server` uses in one second with `idle` connected, silent clients.
fn idle_ticks(server: &Server, idle: usize) -> u64 {
    let mut clients: Vec<Client> = (0..idle).map(|_| server.connect()).collect();
    for c in clients.iter_mut() {
        c.expect_welcome();
    }
    let before = common::cpu_ticks(server.pid());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(50));
    }
    common::cpu_ticks(server.pid()) - before
}

#[test]
fn lesson_06_spins_unless_it_naps() {
    let spinning = Server::start(exe!("lesson-06"), &[]);
    spinning
        .log
        .wait_line("the spin warning", |l| l.contains("100% CPU"));
    // A spinning process gets a good share of a core even on a busy machine; 10 ticks
    // out of 100 is far below what it takes, and far above what a sleeping loop uses.
    let ticks = idle_ticks(&spinning, 10);
    assert!(
        ticks >= 10,
        "lesson 06 used only {ticks} ticks in 1 s: is it spinning?"
    );
    drop(spinning);
    let napping = Server::start(exe!("lesson-06"), &["--nap", "100000"]);
    napping
        .log
        .wait_line("the nap note", |l| l.contains("naps 100ms"));
    let ticks = idle_ticks(&napping, 10);
    assert!(
        ticks < 10,
        "lesson 06 --nap 100000 used {ticks} ticks in 1 s"
    );
}

#[test]
fn lessons_07_08_sleep_while_idle() {
    for exe in [exe!("lesson-07"), exe!("lesson-08")] {
        let server = Server::start(exe, &[]);
        let ticks = idle_ticks(&server, 50);
        assert!(
            ticks < 10,
            "{exe} used {ticks} ticks in 1 s with 50 idle clients"
        );
    }
}

// ---------------------------------------------------------------------------------------
// select's FD_SETSIZE wall (07) and poll past it (08).
// ---------------------------------------------------------------------------------------

/// With RLIMIT_NOFILE at 2048, 1,100 clients connect to lesson 07: those whose fd would be
/// 1024 or more get the message and a close (no panic in FdSet::insert), the earlier ones
/// are all still served, and a client that leaves makes room for a new one.
#[test]
fn lesson_07_fd_setsize_wall() {
    load::raise_nofile();
    let server = Server::spawn(nofile_command(exe!("lesson-07"), &[], 2048, 2048));
    let mut served = Vec::new();
    let mut refused = 0;
    for i in 0..1100 {
        let mut c = server.connect();
        let first = c.line();
        if first == "Welcome buddy!" {
            assert_eq!(refused, 0, "client {i} served after the wall was reached");
            served.push(c);
        } else {
            assert_eq!(first, "error: server full (FD_SETSIZE)", "client {i}");
            assert!(c.closed(), "client {i}: closed after the message");
            refused += 1;
        }
    }
    // fds 0-2 and the listener come first; a few more may be inherited from the harness.
    assert!(
        (1000..=1020).contains(&served.len()),
        "{} served, {refused} refused",
        served.len()
    );
    assert_eq!(served.len() + refused, 1100);
    server.log.wait_line("a refusal logged", |l| {
        l.starts_with("client refused: ") && l.contains("FD_SETSIZE")
    });
    // The server is alive and every client below the wall is still served.
    for (i, c) in served.iter_mut().enumerate() {
        let line = format!("still {i}");
        assert_eq!(c.round_trip(&line), line.chars().rev().collect::<String>());
    }
    // One leaves; its fd (below the wall) goes to the next client.
    // (EOF, not q: after q the server lingers, and keeps the fd, until the client closes.)
    let mut leaving = served.pop().unwrap();
    leaving.finish();
    assert!(leaving.closed());
    server
        .log
        .wait_line("the leaving logged", |l| l.contains("left without q"));
    let mut next = server.connect();
    next.expect_welcome();
    assert_eq!(next.round_trip("room again"), "niaga moor");
}

/// Lesson 08 starts with a soft RLIMIT_NOFILE of 1024 (the common default), raises it to
/// the hard limit itself and says so, and serves 2,000 concurrent clients: fds far past
/// FD_SETSIZE.
#[test]
fn lesson_08_serves_2000_clients() {
    let hard = load::raise_nofile();
    assert!(
        hard >= 2100,
        "the hard RLIMIT_NOFILE ({hard}) is too low for this test"
    );
    let server = Server::spawn(nofile_command(exe!("lesson-08"), &[], 1024, hard));
    server.log.wait_line("the RLIMIT_NOFILE note", |l| {
        l.contains(&format!("RLIMIT_NOFILE raised from 1024 to {hard}"))
    });
    load::round_trips(server.addr, 2000, 5);
}

// ---------------------------------------------------------------------------------------
// Traces: each model's system calls, and nothing of the others'.
// ---------------------------------------------------------------------------------------

/// Quits `n` connected clients as close together as possible (so that one wake-up sees
/// several), and waits until the server has closed them all.
fn quit_together(clients: &mut Vec<Client>) {
    for c in clients.iter_mut() {
        c.send("one\nq\n");
    }
    for mut c in clients.drain(..) {
        assert_eq!(c.rest(), b"eno\n");
    }
}

/// `clients` connected and welcomed.
fn connect_many(server: &Server, n: usize) -> Vec<Client> {
    let mut clients: Vec<Client> = (0..n).map(|_| server.connect()).collect();
    for c in clients.iter_mut() {
        c.expect_welcome();
    }
    clients
}

/// Every fd a wait call reported ready got a call (accept, read, write or close) before the
/// next wait: the scan over the ready fds missed none, even when it stopped early on the
/// ready count or when a client closed during it. Also returns how many rounds closed a
/// client while several were ready (the rounds where a scan that skips the entry moved
/// into a freed slot would show).
fn assert_ready_fds_served(trace: &Trace, waits: &[&str]) -> usize {
    let rounds = rounds(trace, waits);
    assert!(!rounds.is_empty(), "no {waits:?} in the trace");
    let mut busy_closing_rounds = 0;
    // The last round may be cut short by the signal that ended the lesson.
    for round in &rounds[..rounds.len() - 1] {
        for fd in &round.ready {
            assert!(
                round.touched.contains(fd),
                "fd {fd} was reported ready but not served before the next wait:\n{}\n{:?}",
                round.wait,
                round.touched
            );
        }
        if round.closes > 0 && round.ready.len() > 1 {
            busy_closing_rounds += 1;
        }
    }
    busy_closing_rounds
}

#[test]
fn lesson_06_trace_nonblocking_and_eagain() {
    let traced = Traced::start(exe!("lesson-06"), &[]);
    let mut c = Client::connect(traced.server.addr);
    c.expect_welcome();
    assert_eq!(c.round_trip("spin"), "nips");
    c.send("q\n");
    assert!(c.closed());
    traced
        .server
        .log
        .wait_line("the quit", |l| l.contains("sent q"));
    let trace = traced.stop(libc::SIGTERM);
    trace.assert_in_order(&[
        "socket",
        "setsockopt",
        "bind",
        "listen",
        "fcntl",
        "fcntl",
        "accept",
        "fcntl",
        "fcntl",
        "write",
        "read",
        "write",
        "read",
        "close",
    ]);
    let setfl = trace.lines_of("fcntl");
    let nonblocking = setfl
        .iter()
        .filter(|l| l.contains("F_SETFL") && l.contains("O_NONBLOCK"))
        .count();
    assert!(
        nonblocking >= 2,
        "fcntl O_NONBLOCK on the listener and the client:\n{setfl:#?}"
    );
    assert!(
        trace
            .lines_of("accept")
            .iter()
            .any(|l| l.contains("= -1 EAGAIN")),
        "accept returning EAGAIN"
    );
    assert!(
        trace
            .lines_of("read")
            .iter()
            .any(|l| l.contains("= -1 EAGAIN")),
        "read returning EAGAIN"
    );
    trace.assert_absent(&[
        "poll",
        "ppoll",
        "select",
        "pselect6",
        "epoll_wait",
        "epoll_pwait",
    ]);
}

/// Runs a multiplexing lesson under strace through three waves of 20 clients that quit
/// together (their connections close in the middle of a scan over the ready ones), checks
/// the calls every such lesson makes, in order, and that every fd reported ready was
/// served in its round. `waits` is the model's call and its signal-mask twin (glibc's
/// select is the pselect6 system call). Returns the trace and the wait call it used.
fn trace_waves(exe: &str, waits: [&'static str; 2]) -> (Trace, &'static str) {
    let traced = Traced::start(exe, &[]);
    let mut clients = connect_many(&traced.server, 20);
    assert_eq!(clients[0].round_trip("traced"), "decart");
    quit_together(&mut clients);
    for _ in 0..2 {
        let mut more = connect_many(&traced.server, 20);
        quit_together(&mut more);
    }
    let trace = traced.stop(libc::SIGTERM);
    let wait = if trace.calls().iter().any(|c| c == waits[1]) {
        waits[1]
    } else {
        waits[0]
    };
    trace.assert_in_order(&[
        "socket", "bind", "listen", wait, "accept4", wait, "write", wait, "read", "close",
    ]);
    let busy = assert_ready_fds_served(&trace, &[wait]);
    assert!(
        busy > 0,
        "no round closed a client while others were ready: the case was not exercised"
    );
    (trace, wait)
}

#[test]
fn lesson_07_trace_select() {
    let (trace, wait) = trace_waves(exe!("lesson-07"), ["select", "pselect6"]);
    // Write interest only while replies are pending: idle rounds ask for no writes.
    assert!(
        trace
            .lines_of(wait)
            .iter()
            .any(|l| l.contains("], [], NULL")),
        "a {wait} with an empty write set"
    );
    trace.assert_absent(&["poll", "ppoll", "epoll_wait", "epoll_pwait"]);
}

/// Also the removal of an entry from the pollfd array in the middle of the scan: the entry
/// swapped into the freed slot must still be served in that round (Beej's bug skips it).
#[test]
fn lesson_08_trace_poll() {
    let (trace, wait) = trace_waves(exe!("lesson-08"), ["poll", "ppoll"]);
    assert!(
        trace
            .lines_of(wait)
            .iter()
            .any(|l| l.contains("events=POLLIN|POLLOUT")),
        "POLLOUT asked for while the welcome is pending"
    );
    trace.assert_absent(&["select", "pselect6", "epoll_wait", "epoll_pwait"]);
}

#[test]
fn ready_fds_parses_strace() {
    assert_eq!(
        ready_fds("1 poll([{fd=3<TCP:[a]>, events=POLLIN}], 2, -1) = 2 ([{fd=4, revents=POLLIN|POLLOUT}, {fd=7, revents=POLLHUP}])"),
        [4, 7]
    );
    assert_eq!(
        ready_fds("1 pselect6(5, [3<x> 4<y>], [4<y>], NULL, NULL, NULL) = 3 (in [3 4], out [4])"),
        [3, 4]
    );
    assert!(ready_fds("1 poll([{fd=3, events=POLLIN}], 1, -1 <unfinished ...>").is_empty());
}
