//! Trace tests: each lesson runs under strace and its defining calls must appear, in order.
//! A refactor that hides the lesson's system calls (or swaps them for others) fails here.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{banner_addr, Client, Traced, DEADLINE};

#[test]
fn lesson_01_socket_to_exit() {
    let traced = Traced::start(exe!("lesson-01"), &[]);
    let mut c = Client::connect(traced.server.addr);
    assert!(c.line().starts_with("Hello there! "));
    let trace = traced.finish();
    assert!(
        trace.status.success(),
        "strace/lesson status {:?}",
        trace.status
    );
    trace.assert_in_order(&[
        "socket",
        "setsockopt",
        "bind",
        "listen",
        "accept",
        "write",
        "close",
        "close",
        "exit_group",
    ]);
    assert!(trace.text.contains("SO_REUSEADDR"));
    assert!(
        trace.text.contains("+++ exited with 0 +++")
            || trace
                .lines_of("exit_group")
                .iter()
                .any(|l| l.contains("exit_group(0)"))
    );
    // The greeting goes to the accepted socket, which is then closed before the listener.
    let write = trace
        .lines_of("write")
        .into_iter()
        .find(|l| l.contains("Hello there!"))
        .expect("greeting write");
    assert!(write.contains("TCP:[127.0.0.1:"), "{write}");
}

#[test]
fn lesson_02_accepts_in_a_loop() {
    let traced = Traced::start(exe!("lesson-02"), &[]);
    for _ in 0..2 {
        let mut c = Client::connect(traced.server.addr);
        assert!(c.line().starts_with("Hello there! "));
        assert!(c.closed());
    }
    common::wait_for("two disconnects logged", DEADLINE, || {
        (traced
            .server
            .log
            .count(|l| l.starts_with("client disconnected"))
            == 2)
            .then_some(())
    });
    let trace = traced.stop(libc::SIGTERM);
    trace.assert_in_order(&[
        "socket",
        "setsockopt",
        "bind",
        "listen",
        "accept",
        "write",
        "close",
        "accept",
        "write",
        "close",
    ]);
}

#[test]
fn lesson_03_reads_and_writes_per_line() {
    let traced = Traced::start(exe!("lesson-03"), &[]);
    let mut c = Client::connect(traced.server.addr);
    c.expect_welcome();
    assert_eq!(c.round_trip("traced"), "decart");
    c.send("q\n");
    assert!(c.closed());
    traced
        .server
        .log
        .wait_line("disconnect", |l| l.contains("sent q"));
    let trace = traced.stop(libc::SIGTERM);
    trace.assert_in_order(&[
        "socket",
        "setsockopt",
        "bind",
        "listen",
        "accept",
        "write",
        "read",
        "write",
        "read",
        "close",
    ]);
    assert!(trace.text.contains("\"Welcome buddy!\\n\""));
    assert!(trace.text.contains("\"decart\\n\""));
    trace.assert_absent(&["poll", "select", "epoll_wait", "clone", "clone3", "fork"]);
}

#[test]
fn lesson_00_polls_stdin_and_socket_and_half_closes() {
    let server = common::Server::start(exe!("lesson-03"), &[]);
    let path = std::env::temp_dir().join(format!("lesson-00-{}.trace", std::process::id()));
    let mut child = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            &format!("trace={}", common::TRACE_SET),
            "-o",
        ])
        .arg(&path)
        .arg(exe!("lesson-00"))
        .args(["--to", &server.addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Welcome buddy!\ncba\n"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let trace = common::Trace {
        text,
        status: out.status,
    };
    trace.assert_in_order(&[
        "socket", "connect", "fcntl", "poll", "read", "write", "shutdown", "read", "close",
    ]);
    assert!(trace.text.contains("SHUT_WR"));
    // The last read before close is the server's EOF: read(...) = 0.
    let reads = trace.lines_of("read");
    assert!(
        reads.last().unwrap().trim_end().ends_with("= 0"),
        "last read: {:?}",
        reads.last()
    );
}

/// `make trace-01` itself: the trace starts at socket() (no start-up noise) and shows the
/// lesson to its exit.
#[test]
fn make_trace_01_starts_at_socket() {
    let mut make = Command::new("make")
        .args(["-s", "trace-01", "PROFILE=dev", "ARGS=-p 0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = make.stderr.take().unwrap();
    let mut banner = String::new();
    let mut err_lines = BufReader::new(stderr).lines();
    for line in err_lines.by_ref() {
        let line = line.unwrap();
        if line.contains("listening on ") {
            banner = line;
            break;
        }
    }
    assert!(!banner.is_empty(), "no banner from make trace-01");
    let mut c = Client::connect(banner_addr(&banner));
    assert!(c.line().starts_with("Hello there! "));
    let status = common::wait_for("make trace-01 to finish", DEADLINE, || {
        make.try_wait().unwrap()
    });
    assert!(status.success());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut make.stdout.take().unwrap(), &mut out).unwrap();
    let first = out.lines().next().unwrap_or_default();
    assert!(
        common::syscall_of(first).as_deref() == Some("socket"),
        "first traced line: {first:?}\n{out}"
    );
    for call in [
        "bind(",
        "listen(",
        "accept(",
        "write(",
        "close(",
        "exit_group(0)",
    ] {
        assert!(
            out.contains(call),
            "{call} missing from make trace-01:\n{out}"
        );
    }
    assert!(!out.contains("execve") && !out.contains("mmap"), "{out}");
}
