//! The provoking client (provoke/, `make provoke-NN`) against the real lessons: every kind
//! reports success, with no false alarm, against a correct lesson; where a mistake can be
//! switched on, the kind catches it; and against broken servers written here (one read
//! taken for one line; a plain close with unread input) split, coalesced and
//! quit-then-junk report the failure.
//!
//! The provoke binary is another package of the workspace: it is found beside the lessons
//! (target/debug), built by `cargo nextest run --workspace` or `cargo build -p provoke`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::thread;

use common::single_thread::nofile_command;
use common::Server;

/// target/<profile>/provoke: this test runs from target/<profile>/deps.
fn provoke_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("provoke");
    assert!(
        bin.exists(),
        "{} is not built: cargo build -p provoke (cargo nextest run --workspace builds it)",
        bin.display()
    );
    bin
}

/// `provoke [--to addr] args...`: its exit code and its one line.
fn provoke(to: Option<SocketAddr>, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(provoke_bin());
    if let Some(addr) = to {
        cmd.arg("--to").arg(addr.to_string());
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.args(args).output().expect("run provoke");
    let line = String::from_utf8_lossy(&stdout).into_owned();
    let code = status.code().unwrap_or(-1);
    assert!(
        code != 2,
        "provoke {args:?} could not try: {}",
        String::from_utf8_lossy(&stderr)
    );
    assert_eq!(line.lines().count(), 1, "one line: {line:?}");
    (code, line)
}

/// Every kind in `kinds` passes against `server`.
fn all_pass(server: &Server, kinds: &[&[&str]]) {
    for kind in kinds {
        let (code, line) = provoke(Some(server.addr), kind);
        assert_eq!(code, 0, "a false alarm from {kind:?}: {line}");
        assert!(line.ends_with("[ok]\n"), "{line}");
    }
}

const ECHO_KINDS: &[&[&str]] = &[
    &["split"],
    &["coalesced"],
    &["quit-then-junk", "--tries", "2"],
    &["half-close"],
    &["rst"],
];

/// Lesson 03 is serial: only the one-client kinds fit it.
#[test]
fn echo_kinds_pass_against_lesson_03() {
    all_pass(&Server::start(exe!("lesson-03"), &[]), ECHO_KINDS);
}

#[test]
fn every_echo_kind_passes_against_lesson_08() {
    let server = Server::start(exe!("lesson-08"), &[]);
    all_pass(&server, ECHO_KINDS);
    all_pass(
        &server,
        &[
            &["many", "20"],
            &["slowloris", "5"],
            &["slow-reader", "--mib", "32"],
            &["idle", "--seconds", "1"],
        ],
    );
}

#[test]
fn every_echo_kind_passes_against_lesson_10() {
    let server = Server::start(exe!("lesson-10"), &[]);
    all_pass(&server, ECHO_KINDS);
    all_pass(
        &server,
        &[
            &["many", "20"],
            &["slowloris", "5"],
            &["slow-reader", "--mib", "32"],
        ],
    );
}

/// Lesson 08 with 64 fds: the flood fills its table, the server stops answering, and once
/// the flood leaves a fresh client is answered again.
#[test]
fn flood_fills_lesson_08_and_it_recovers() {
    let server = Server::spawn(nofile_command(exe!("lesson-08"), &[], 64, 64));
    let (code, line) = provoke(Some(server.addr), &["flood", "500"]);
    assert_eq!(code, 0, "{line}");
    assert!(
        line.contains("then one got no answer") && line.contains("a fresh client was answered"),
        "{line}"
    );
}

#[test]
fn socks_kinds_pass_against_lesson_12() {
    all_pass(
        &Server::start(exe!("lesson-12"), &[]),
        &[
            &["socks-refused"],
            &["socks-half-close", "--bytes", "2000000"],
        ],
    );
}

/// Lesson 04 with --no-reap: `many` sees the zombies; without it, none.
#[test]
fn many_sees_lesson_04s_zombies() {
    let right = Server::start(exe!("lesson-04"), &[]);
    let (code, line) = provoke(Some(right.addr), &["many", "10"]);
    assert_eq!(code, 0, "{line}");
    assert!(line.contains("0 zombie children"), "{line}");
    let wrong = Server::start(exe!("lesson-04"), &["--no-reap"]);
    let (code, line) = provoke(Some(wrong.addr), &["many", "10"]);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("10 zombie children"), "{line}");
}

/// The restart scenario: with the mistake the second bind fails with EADDRINUSE, without
/// it the second run listens.
#[test]
fn restart_catches_no_reuseaddr() {
    let (code, line) = provoke(None, &["restart"]);
    assert_eq!(code, 0, "{line}");
    let (code, line) = provoke(None, &["restart", "--mistake", "no-reuseaddr"]);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("EADDRINUSE"), "{line}");
}

/// The other scenarios against the correct lessons: no false alarm.
#[test]
fn scenarios_pass_against_correct_lessons() {
    for scenario in [&["sigpending", "50"][..], &["fail-open"], &["blocking-dns"]] {
        let (code, line) = provoke(None, scenario);
        assert_eq!(code, 0, "a false alarm from {scenario:?}: {line}");
    }
}

/// How a broken server written here goes wrong.
#[derive(Clone, Copy)]
enum Broken {
    /// Takes each read for one line: answers the whole read reversed.
    OneReadOneLine,
    /// Right line by line, but at `q` a plain close with the rest of the input unread.
    PlainClose,
}

/// A reverse-echo server with one classic mistake; a thread per client.
fn broken_server(how: Broken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            thread::spawn(move || {
                s.write_all(b"Welcome buddy!\n").unwrap();
                let mut buf = [0u8; 4096];
                let mut line = Vec::new();
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    match how {
                        Broken::OneReadOneLine => {
                            let mut reply: Vec<u8> =
                                buf[..n].iter().rev().filter(|&&b| b != b'\n').copied().collect();
                            reply.push(b'\n');
                            let _ = s.write_all(&reply);
                        }
                        Broken::PlainClose => {
                            for &b in &buf[..n] {
                                if b != b'\n' {
                                    line.push(b);
                                    continue;
                                }
                                if line == b"q" {
                                    // close(2) with unread input: the kernel sends RST.
                                    return;
                                }
                                line.reverse();
                                line.push(b'\n');
                                let _ = s.write_all(&line);
                                line.clear();
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn split_and_coalesced_catch_one_read_one_line() {
    let addr = broken_server(Broken::OneReadOneLine);
    let (code, line) = provoke(Some(addr), &["split"]);
    assert_eq!(code, 1, "{line}");
    let (code, line) = provoke(Some(addr), &["coalesced"]);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("got 1 replies for 5 lines"), "{line}");
    // The line-by-line server passes the same two.
    let right = broken_server(Broken::PlainClose);
    assert_eq!(provoke(Some(right), &["split"]).0, 0);
    assert_eq!(provoke(Some(right), &["coalesced"]).0, 0);
}

#[test]
fn quit_then_junk_catches_a_plain_close() {
    let addr = broken_server(Broken::PlainClose);
    let (code, line) = provoke(Some(addr), &["quit-then-junk", "--tries", "3"]);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("replies lost"), "{line}");
}
