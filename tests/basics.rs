//! Lessons 00–03: what is particular to each (and 00–05's headers) (the echo protocol itself is tests/echo.rs).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::{wait_fd_count, Client, Server, DEADLINE};

/// Runs `exe args` with `input` on stdin; returns (exit status, stdout, stderr).
fn run_with_input(
    exe: &str,
    args: &[&str],
    input: Vec<u8>,
) -> (std::process::ExitStatus, Vec<u8>, String) {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut out = Vec::new();
    stdout.read_to_end(&mut out).unwrap();
    let status = common::wait_for("the process to exit", DEADLINE, || {
        child.try_wait().unwrap()
    });
    feeder.join().unwrap();
    (status, out, err_reader.join().unwrap())
}

fn is_rfc3339(s: &str) -> bool {
    // 2026-11-24T23:05:09+01:00 or ...Z
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    s.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (s[19..] == *"Z"
            || (s.len() == 25
                && (b[19] == b'+' || b[19] == b'-')
                && digits(20..22)
                && b[22] == b':'
                && digits(23..25)))
}

#[test]
fn lesson_01_greets_one_client_and_exits_0() {
    let mut server = Server::start(exe!("lesson-01"), &[]);
    let mut c = server.connect();
    let line = c.line();
    let time = line
        .strip_prefix("Hello there! ")
        .unwrap_or_else(|| panic!("greeting: {line:?}"));
    assert!(is_rfc3339(time), "not RFC 3339: {time:?}");
    assert!(c.closed(), "server closes after the greeting");
    let status = server
        .wait_exit(DEADLINE)
        .expect("lesson 01 exits after one client");
    assert_eq!(status.code(), Some(0));
    // The listening socket is gone with it.
    assert!(TcpStream::connect(server.addr).is_err());
}

#[test]
fn help_explains_and_bad_flags_exit_2() {
    for exe in [
        exe!("lesson-00"),
        exe!("lesson-01"),
        exe!("lesson-02"),
        exe!("lesson-03"),
    ] {
        let out = Command::new(exe).arg("--help").output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("Lesson 0") && help.contains("Usage: lesson-0"),
            "{exe} --help:\n{help}"
        );
        let out = Command::new(exe).arg("--no-such-flag").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{exe}");
    }
    let out = Command::new(exe!("lesson-03"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("-i, --bind <ADDR>") && help.contains("[default: 23333]"),
        "{help}"
    );
}

/// Lessons 00–05 describe themselves in a TLPI-size header (`--help` prints it whole) whose
/// link to the longer explanation, `docs/lessons/NN-topic.md`, names a file that exists.
#[test]
fn help_is_a_short_header_linking_to_the_lessons_doc() {
    let lessons = [
        ("00", exe!("lesson-00")),
        ("01", exe!("lesson-01")),
        ("02", exe!("lesson-02")),
        ("03", exe!("lesson-03")),
        ("04", exe!("lesson-04")),
        ("05", exe!("lesson-05")),
    ];
    for (nn, exe) in lessons {
        let out = Command::new(exe).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        let header: Vec<&str> = help
            .lines()
            .take_while(|l| !l.starts_with("Usage:"))
            .collect();
        assert!(
            header[0].starts_with(&format!("Lesson {nn} — ")),
            "{exe}: {help}"
        );
        assert!(
            header.len() <= 13,
            "{exe}: header of {} lines",
            header.len()
        );
        let prefix = format!("docs/lessons/{nn}-");
        let at = help
            .find(&prefix)
            .unwrap_or_else(|| panic!("{exe}: no {prefix}*.md link"));
        let end = help[at..].find(".md").expect("link ends in .md") + 3;
        let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(&help[at..at + end]);
        let text = std::fs::read_to_string(&doc)
            .unwrap_or_else(|err| panic!("{exe} links {}: {err}", doc.display()));
        assert!(
            text.starts_with(&format!("# Lesson {nn} — ")),
            "{}",
            doc.display()
        );
    }
}

#[test]
fn bind_failures_name_the_call_and_errno() {
    let taken = Server::start(exe!("lesson-03"), &[]);
    let port = taken.addr.port().to_string();
    let out = Command::new(exe!("lesson-03"))
        .args(["-p", &port])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bind: EADDRINUSE (Address already in use)")
    );
    // An address this machine does not have.
    let out = Command::new(exe!("lesson-03"))
        .args(["-i", "192.0.2.1", "-p", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bind: EADDRNOTAVAIL"));
}

#[test]
fn lesson_03_listens_on_ipv6_loopback() {
    let server = Server::start(exe!("lesson-03"), &["-i", "::1"]);
    assert!(server.addr.is_ipv6());
    let mut c = server.connect();
    c.expect_welcome();
    assert_eq!(c.round_trip("six"), "xis");
}

#[test]
fn lesson_02_serves_clients_one_after_another() {
    let server = Server::start(exe!("lesson-02"), &[]);
    for _ in 0..3 {
        let mut c = server.connect();
        assert!(c.line().starts_with("Hello there! "));
        assert!(c.closed());
    }
}

#[test]
fn lesson_02_fd_count_back_after_500_connections() {
    let server = Server::start(exe!("lesson-02"), &[]);
    let mut c = server.connect();
    assert!(c.line().starts_with("Hello there! "));
    assert!(c.closed());
    let start = server.fd_count();
    for _ in 0..500 {
        let mut c = server.connect();
        assert!(c.line().starts_with("Hello there! "));
        assert!(c.closed());
    }
    wait_fd_count(server.pid(), start);
}

#[test]
fn lesson_03_fd_count_back_after_500_connections() {
    let server = Server::start(exe!("lesson-03"), &[]);
    common::echo_suite::fd_count_steady(&server, 500);
}

#[test]
fn lesson_03_second_client_waits_for_the_first() {
    let server = Server::start(exe!("lesson-03"), &[]);
    let mut first = server.connect();
    first.expect_welcome();
    // The second client connects (the kernel completes the handshake and queues it in the
    // backlog) but hears nothing while the server is busy with the first.
    let mut second = Client::connect(server.addr);
    assert!(
        second.silent_for(Duration::from_millis(500)),
        "second client was served while the first was connected"
    );
    assert_eq!(first.round_trip("still mine"), "enim llits");
    first.send("q\n");
    assert!(first.closed());
    second.expect_welcome();
    assert_eq!(second.round_trip("my turn"), "nrut ym");
}

#[test]
fn lesson_00_scripted_against_lesson_03() {
    let server = Server::start(exe!("lesson-03"), &[]);
    let to = server.addr.to_string();
    let (status, out, err) =
        run_with_input(exe!("lesson-00"), &["--to", &to], b"abc\nq\n".to_vec());
    assert_eq!(String::from_utf8_lossy(&out), "Welcome buddy!\ncba\n");
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    assert!(err.contains("connected to"), "{err}");
}

#[test]
fn lesson_00_half_closes_at_end_of_input_and_gets_every_reply() {
    let server = Server::start(exe!("lesson-03"), &[]);
    let to = server.addr.to_string();
    // No q: at EOF the client sends FIN (shutdown SHUT_WR), the server answers the last
    // line, sees EOF, closes, and the client exits 0 with every reply printed.
    let (status, out, _) =
        run_with_input(exe!("lesson-00"), &["--to", &to], b"one\ntwo\n".to_vec());
    assert_eq!(String::from_utf8_lossy(&out), "Welcome buddy!\neno\nowt\n");
    assert_eq!(status.code(), Some(0));
    server
        .log
        .wait_line("server saw EOF", |l| l.contains("left without q"));
}

#[test]
fn lesson_00_pipes_a_big_input_without_deadlock() {
    let server = Server::start(exe!("lesson-03"), &[]);
    let to = server.addr.to_string();
    // 4 MB of lines: far more than the socket buffers hold, so a client that wrote all of
    // its input before reading would deadlock with the server blocked on its replies.
    let mut input = Vec::new();
    for i in 0..400_000 {
        input.extend_from_slice(format!("{i:09}\n").as_bytes());
    }
    let (status, out, err) = run_with_input(exe!("lesson-00"), &["--to", &to], input);
    assert_eq!(status.code(), Some(0), "{err}");
    let text = String::from_utf8(out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("Welcome buddy!"));
    let mut n = 0;
    for (i, line) in lines.enumerate() {
        let expected: String = format!("{i:09}").chars().rev().collect();
        assert_eq!(line, expected);
        n += 1;
    }
    assert_eq!(n, 400_000);
}

#[test]
fn lesson_00_reports_a_refused_connection() {
    // A port that was just free: bind it, note it, let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (status, out, err) = run_with_input(
        exe!("lesson-00"),
        &["--to", &format!("127.0.0.1:{port}")],
        Vec::new(),
    );
    assert_eq!(status.code(), Some(1));
    assert!(out.is_empty());
    assert!(
        err.contains("connect: ECONNREFUSED (Connection refused)"),
        "{err}"
    );
    let (status, _, err) = run_with_input(exe!("lesson-00"), &["--to", "no-port-here"], Vec::new());
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("HOST:PORT"), "{err}");
}

#[test]
fn nc_talks_to_lesson_03() {
    let server = Server::start(exe!("lesson-03"), &[]);
    let out = Command::new("nc")
        .args([
            "-N",
            &server.addr.ip().to_string(),
            &server.addr.port().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut nc| {
            nc.stdin.take().unwrap().write_all(b"hello nc\nq\n")?;
            nc.wait_with_output()
        })
        .expect("nc (netcat-openbsd) runs; `make test` installs it");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Welcome buddy!\ncn olleh\n"
    );
}
