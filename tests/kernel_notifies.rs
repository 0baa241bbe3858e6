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
