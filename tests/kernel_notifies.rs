//! Lessons 09–11, where the kernel tells the server what happened: signal-driven I/O
//! (F_SETSIG, SIGIO on overflow), an epoll reactor, and io_uring completions. Load,
//! backpressure, EMFILE and fd hygiene cases, and each lesson's strace signature.

mod common;

use std::time::Duration;

use common::{echo_suite, load, Client, Server, Traced, DEADLINE};

// --------------------------------------------------------------------------------------
// Lesson 10: epoll, EventMachine style.
// --------------------------------------------------------------------------------------

#[test]
fn lesson_10_serves_5000_concurrent_clients() {
    let server = Server::start(exe!("lesson-10"), &[]);
    server
        .log
        .wait_line("the RLIMIT_NOFILE note", |l| l.contains("RLIMIT_NOFILE"));
    load::round_trips(server.addr, 5000, 3);
    echo_suite::fd_count_steady(&server, 30);
}

#[test]
fn lesson_10_partial_line_holder() {
    let server = Server::start(exe!("lesson-10"), &[]);
    echo_suite::partial_line_holder(&server, Duration::from_millis(300));
}

#[test]
fn lesson_10_backpressure() {
    let server = Server::start(exe!("lesson-10"), &[]);
    echo_suite::backpressure(&server, 64);
}

#[test]
fn lesson_10_emfile() {
    echo_suite::emfile(exe!("lesson-10"), &[], 64);
}

#[test]
fn lesson_10_trace_epoll() {
    let traced = Traced::start(exe!("lesson-10"), &[]);
    let mut c = Client::connect(traced.server.addr);
    c.expect_welcome();
    assert_eq!(c.round_trip("epoll"), "llope");
    c.send("q\n");
    assert!(c.closed());
    traced
        .server
        .log
        .wait_line("disconnect", |l| l.starts_with("client disconnected"));
    let trace = traced.stop(libc::SIGTERM);
    let wait = if trace.calls().iter().any(|c| c == "epoll_pwait") {
        "epoll_pwait"
    } else {
        "epoll_wait"
    };
    trace.assert_in_order(&[
        "socket",
        "bind",
        "listen",
        "epoll_create1",
        "epoll_ctl",
        wait,
        "accept4",
        "epoll_ctl",
        "write",
        wait,
        "read",
        "write",
        "close",
    ]);
    trace.assert_absent(&["poll", "ppoll", "select", "pselect6"]);
    assert!(trace.text.contains("EPOLL_CTL_ADD"));
}

// --------------------------------------------------------------------------------------
// Lesson 09: signal-driven I/O.
// --------------------------------------------------------------------------------------

#[test]
fn lesson_09_serves_500_concurrent_clients() {
    let server = Server::start(exe!("lesson-09"), &[]);
    load::round_trips(server.addr, 500, 20);
    echo_suite::fd_count_steady(&server, 30);
}

#[test]
fn lesson_09_partial_line_holder() {
    let server = Server::start(exe!("lesson-09"), &[]);
    echo_suite::partial_line_holder(&server, Duration::from_millis(300));
}

#[test]
fn lesson_09_backpressure() {
    let server = Server::start(exe!("lesson-09"), &[]);
    echo_suite::backpressure(&server, 64);
}

#[test]
fn lesson_09_emfile() {
    echo_suite::emfile(exe!("lesson-09"), &[], 64);
}

/// With room for only a few queued signals (RLIMIT_SIGPENDING, set before exec), many
/// clients at once overflow the real-time queue: the kernel falls back to plain SIGIO,
/// the server must say it rescans, and every client must still get every reply.
#[test]
fn lesson_09_signal_queue_overflow_rescans() {
    let mut cmd = common::server_command(exe!("lesson-09"), &[]);
    // SAFETY: pre_exec runs in the forked child before exec; setrlimit is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let rl = libc::rlimit {
                rlim_cur: 4,
                rlim_max: 4,
            };
            if libc::setrlimit(libc::RLIMIT_SIGPENDING, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::spawn(cmd);
    load::round_trips(server.addr, 300, 10);
    server.log.wait_line("a rescan after SIGIO", |l| {
        l.starts_with("signal queue overflowed (SIGIO): rescanning")
    });
    // And the server is still fine for a newcomer.
    let mut c = server.connect();
    c.expect_welcome();
    assert_eq!(c.round_trip("after the storm"), "mrots eht retfa");
}

#[test]
fn lesson_09_trace_signals() {
    let traced = Traced::start(exe!("lesson-09"), &[]);
    // Each step waits until the lesson sleeps in sigtimedwait: under strace the lesson is
    // slow enough that it would otherwise find the next line already there and read it
    // without ever waiting for a signal.
    let pid = traced.lesson_pid();
    let asleep = || {
        common::wait_for("the lesson to sleep", DEADLINE, || {
            (common::proc_state(pid) == Some('S')).then_some(())
        })
    };
    asleep();
    let mut c = Client::connect(traced.server.addr);
    c.expect_welcome();
    asleep();
    assert_eq!(c.round_trip("sigio"), "oigis");
    asleep();
    c.send("q\n");
    assert!(c.closed());
    traced
        .server
        .log
        .wait_line("disconnect", |l| l.starts_with("client disconnected"));
    let trace = traced.stop(libc::SIGTERM);
    trace.assert_in_order(&[
        "socket",
        "bind",
        "listen",
        "fcntl",
        "fcntl",
        "fcntl",
        "rt_sigtimedwait",
        "accept4",
        "fcntl",
        "fcntl",
        "fcntl",
        "write",
        "rt_sigtimedwait",
        "read",
        "write",
        "close",
    ]);
    trace.assert_absent(&[
        "poll",
        "ppoll",
        "select",
        "pselect6",
        "epoll_wait",
        "epoll_pwait",
        "epoll_create1",
    ]);
    let fcntls = trace.lines_of("fcntl").join("\n");
    // strace spells O_ASYNC by its old name, FASYNC.
    for flag in ["F_SETOWN", "F_SETSIG", "FASYNC"] {
        assert!(fcntls.contains(flag), "no {flag} in:\n{fcntls}");
    }
    // si_fd at work: a signal's siginfo names the client's socket. (strace does not know
    // that a real-time signal sent by F_SETSIG carries SIGPOLL fields, and shows si_fd as
    // si_int; si_band appears as si_pid.)
    let accepted = trace
        .lines_of("accept4")
        .into_iter()
        .find_map(|l| {
            l.split(") = ")
                .nth(1)?
                .split('<')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .expect("an accepted fd");
    let waits = trace.lines_of("rt_sigtimedwait").join("\n");
    assert!(
        waits.contains(&format!("si_fd={accepted},"))
            || waits.contains(&format!("si_int={accepted},")),
        "no signal naming fd {accepted}:\n{waits}"
    );
}
