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
    &["quit-slow-reader", "--tries", "2"],
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
            &["socks-stalled-reader"],
        ],
    );
}

/// Lesson 16's UDP kinds: each passes against the lesson and catches its own mistake
/// (open-relay: any-source; truncation: small-buffer; leaky-association: leak-association).
#[test]
fn udp_kinds_pass_against_lesson_16_and_catch_its_mistakes() {
    let right = Server::start(exe!("lesson-16"), &[]);
    let kinds = ["open-relay", "truncation", "leaky-association"];
    let args: Vec<[&str; 3]> = kinds.iter().map(|k| [*k, "--patience", "1"]).collect();
    let args: Vec<&[&str]> = args.iter().map(|a| &a[..]).collect();
    all_pass(&right, &args);
    let mistakes = ["any-source", "small-buffer", "leak-association"];
    for (kind, mistake) in kinds.into_iter().zip(mistakes) {
        let wrong = Server::start(exe!("lesson-16"), &["--mistake", mistake]);
        let (code, line) = provoke(Some(wrong.addr), &[kind, "--patience", "1"]);
        assert_eq!(
            code, 1,
            "--mistake {mistake}: {kind} did not see it: {line}"
        );
    }
}

/// Lesson 03 with `--mistake no-drain` (shutdown, then close at once, input unread): the
/// slow reader loses replies to the reset; the other close mistake, `plain-close`, too.
#[test]
fn quit_slow_reader_catches_no_drain() {
    for mistake in ["no-drain", "plain-close"] {
        let server = Server::start(exe!("lesson-03"), &["--mistake", mistake]);
        let (code, line) = provoke(Some(server.addr), &["quit-slow-reader"]);
        assert_eq!(code, 1, "{mistake}: {line}");
        assert!(
            line.contains("the replies still queued were lost"),
            "{line}"
        );
    }
}

/// Lesson 12 with `--mistake blocking-write`: a client that stops reading holds the loop in
/// write(2), and the second client is never greeted.
#[test]
fn socks_stalled_reader_catches_blocking_write() {
    let server = Server::start(exe!("lesson-12"), &["--mistake", "blocking-write"]);
    let (code, line) = provoke(Some(server.addr), &["socks-stalled-reader"]);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("asleep in write"), "{line}");
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

/// `frozen-store` (lesson 13, Redis frozen with SIGSTOP): refused 0x01 promptly by the right
/// lesson; with `--mistake fail-open` the client is let in once the Redis deadline passes.
#[test]
fn frozen_store_catches_fail_open() {
    let (code, line) = provoke(None, &["frozen-store"]);
    assert_eq!(code, 0, "{line}");
    assert!(line.contains("fails closed and fast"), "{line}");
    let (code, line) = provoke(None, &["frozen-store", "--mistake", "fail-open"]);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("fail open"), "{line}");
}

/// How a broken server written here goes wrong.
#[derive(Clone, Copy)]
enum Broken {
    /// Takes each read for one line: answers the whole read reversed.
    OneReadOneLine,
    /// Right line by line, but at `q` a plain close with the rest of the input unread.
    PlainClose,
}

/// A loopback server that runs `serve` on a thread per client.
fn thread_per_client(serve: impl Fn(std::net::TcpStream) + Copy + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for s in listener.incoming().map_while(Result::ok) {
            thread::spawn(move || serve(s));
        }
    });
    addr
}

/// A reverse-echo server with one classic mistake; a thread per client.
fn broken_server(how: Broken) -> SocketAddr {
    thread_per_client(move |s| reverse_echo(s, how))
}

fn reverse_echo(mut s: std::net::TcpStream, how: Broken) {
    s.write_all(b"Welcome buddy!\n").unwrap();
    let mut buf = [0u8; 4096];
    let mut line = Vec::new();
    while let Ok(n @ 1..) = s.read(&mut buf) {
        match how {
            Broken::OneReadOneLine => {
                let mut reply: Vec<u8> = buf[..n]
                    .iter()
                    .rev()
                    .filter(|&&b| b != b'\n')
                    .copied()
                    .collect();
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
}

#[test]
fn split_and_coalesced_catch_one_read_one_line() {
    let addr = broken_server(Broken::OneReadOneLine);
    let (code, line) = provoke(Some(addr), &["split"]);
    assert_eq!(code, 1, "{line}");
    let (code, line) = provoke(Some(addr), &["coalesced", "--patience", "0.5"]);
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

/// A server like lesson 02 with `leak-fd` once the fd table is full: it answers `room`
/// clients with a line, keeps every connection (the leak), then accepts no more.
fn leaking_server(room: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let mut leaked = Vec::new();
        for mut s in listener.incoming().map_while(Result::ok).take(room) {
            let _ = s.write_all(b"Hello there!\n");
            leaked.push(s);
        }
        // Out of fds for good: the listener stays open, nothing is accepted any more.
        thread::park();
        drop((leaked, listener));
    });
    addr
}

#[test]
fn flood_catches_a_server_that_never_recovers() {
    let (code, line) = provoke(
        Some(leaking_server(30)),
        &["flood", "100", "--patience", "0.5"],
    );
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("30 answered") && line.contains("NOT answered"),
        "{line}"
    );
}

/// How a fake SOCKS5 relay written here goes wrong.
#[derive(Clone, Copy)]
enum BrokenRelay {
    /// Answers success before (instead of) connecting: a refused target looks open.
    SuccessAlways,
    /// Relays, but an EOF from the client closes both directions.
    NoHalfClose,
}

/// A SOCKS5 relay (no auth, IPv4 CONNECT only) with one classic mistake.
fn broken_relay(how: BrokenRelay) -> SocketAddr {
    thread_per_client(move |c| relay(c, how))
}

fn relay(mut c: std::net::TcpStream, how: BrokenRelay) {
    use std::net::{Shutdown, TcpStream};
    let mut greeting = [0u8; 3];
    let mut request = [0u8; 10];
    c.read_exact(&mut greeting).unwrap();
    c.write_all(&[5, 0]).unwrap();
    c.read_exact(&mut request).unwrap();
    let [a, b, c3, d] = [request[4], request[5], request[6], request[7]];
    let port = u16::from_be_bytes([request[8], request[9]]);
    let ok = [5, 0, 0, 1, 127, 0, 0, 1, 0, 0];
    let up = match how {
        BrokenRelay::SuccessAlways => {
            let _ = c.write_all(&ok);
            return;
        }
        BrokenRelay::NoHalfClose => {
            TcpStream::connect(SocketAddr::from(([a, b, c3, d], port))).unwrap()
        }
    };
    c.write_all(&ok).unwrap();
    let (mut c2, mut up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
    thread::spawn(move || {
        let _ = std::io::copy(&mut up2, &mut c2);
    });
    let mut up = up;
    let _ = std::io::copy(&mut c, &mut up);
    // The mistake: EOF from the client closes both ways at once.
    let _ = up.shutdown(Shutdown::Both);
    let _ = c.shutdown(Shutdown::Both);
}

#[test]
fn socks_kinds_catch_a_broken_relay() {
    let (code, line) = provoke(
        Some(broken_relay(BrokenRelay::SuccessAlways)),
        &["socks-refused"],
    );
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("reply 0x00"), "{line}");
    let (code, line) = provoke(
        Some(broken_relay(BrokenRelay::NoHalfClose)),
        &["socks-half-close"],
    );
    assert_eq!(code, 1, "{line}");
}

/// Lesson 03 serves one client at a time and lesson 06 spins while idle: their built-in
/// failures are what `many`, `slowloris` and `idle` report.
#[test]
fn serial_and_spinning_lessons_fail_many_slowloris_and_idle() {
    let serial = Server::start(exe!("lesson-03"), &[]);
    // A short patience: here a silence is the expected answer.
    for kind in [
        &["many", "3", "--patience", "0.5"][..],
        &["slowloris", "2", "--patience", "0.5"],
    ] {
        let (code, line) = provoke(Some(serial.addr), kind);
        assert_eq!(code, 1, "{line}");
    }
    // The spin is measured in CPU ticks; on a machine busy with other tests a second may
    // give it less of a core, so up to three tries.
    let spinning = Server::start(exe!("lesson-06"), &[]);
    let runs: Vec<(i32, String)> = (0..3)
        .map_while(|_| {
            let run = provoke(Some(spinning.addr), &["idle", "--seconds", "1"]);
            (run.0 != 1).then_some(run)
        })
        .collect();
    assert!(runs.len() < 3, "the spin never showed: {runs:?}");
}

/// Every kind `make provoke-NN` runs (the lesson's `provoke` in lessons/lessons.toml) is one
/// provoke knows, with arguments it takes: `provoke KIND ARGS --help` succeeds.
#[test]
fn the_lesson_index_names_only_real_kinds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let index = workshop::lessons::Index::load(&root).unwrap_or_else(|e| panic!("{e}"));
    let mut lessons = 0;
    for lesson in &index.lessons {
        lessons += usize::from(!lesson.provoke.is_empty());
        for kind in &lesson.provoke {
            let args: Vec<&str> = kind.split('+').chain(["--help"]).collect();
            let out = Command::new(provoke_bin()).args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "lesson {}: provoke {args:?}: {}",
                lesson.number,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(lessons >= 15, "provocations for 01–15, found {lessons}");
}

/// `many --max-threads`: lesson 05 with --max-clients 10 tells the rest "server full" and
/// passes; the same lesson allowed 100 (a stand-in for no limit at all) runs a thread per
/// client and is caught.
#[test]
fn many_catches_a_thread_per_client_without_a_limit() {
    let bounded = Server::start(exe!("lesson-05"), &["--max-clients", "10"]);
    let (code, line) = provoke(Some(bounded.addr), &["many", "20", "--max-threads", "11"]);
    assert_eq!(code, 0, "{line}");
    assert!(line.contains("10 told the server is full"), "{line}");
    let unbounded = Server::start(exe!("lesson-05"), &["--max-clients", "100"]);
    let (code, line) = provoke(Some(unbounded.addr), &["many", "20", "--max-threads", "11"]);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("21 threads"), "{line}");
}

/// The provocations against the lessons' own `--mistake`s that need more than one look:
/// `flood` sees lesson 02's leaked fds (one per client, still held after they left),
/// `half-close` sees lesson 04's parent keep the connection (no EOF), and
/// `socks-half-close --tries` finds a size at which lesson 14 loses the tail still in its
/// pipe. Each passes against the same lesson without the mistake.
#[test]
fn provocations_catch_the_lessons_own_mistakes() {
    let cases: [(&str, &str, &[&str]); 3] = [
        ("lesson-02", "leak-fd", &["flood", "200"]),
        ("lesson-04", "parent-keeps-conn", &["half-close"]),
        (
            "lesson-14",
            "close-with-bytes-in-pipe",
            &["socks-half-close", "--bytes", "4000000", "--tries", "10"],
        ),
    ];
    for (lesson, mistake, kind) in cases {
        let exe = lesson_exe(lesson);
        let server = Server::start(&exe, &["--mistake", mistake]);
        let (code, line) = provoke(Some(server.addr), kind);
        assert_eq!(code, 1, "{lesson} --mistake {mistake}: not caught: {line}");
        drop(server);
        let server = Server::start(&exe, &[]);
        let (code, line) = provoke(Some(server.addr), kind);
        assert_eq!(code, 0, "{lesson}: a false alarm: {line}");
    }
}

/// The lesson binary this test crate was built with.
fn lesson_exe(name: &str) -> String {
    match name {
        "lesson-02" => exe!("lesson-02").to_string(),
        "lesson-04" => exe!("lesson-04").to_string(),
        _ => exe!("lesson-14").to_string(),
    }
}

/// `make provoke-15`: a burst of clients runs a small buffer ring dry; with the multishot
/// recvs never armed again, clients hang, and `burst` says so.
#[test]
fn burst_catches_lesson_15_no_rearm() {
    let exe = exe!("lesson-15");
    let server = Server::start(exe, &["--bufs", "4", "--mistake", "no-rearm"]);
    let (code, line) = provoke(Some(server.addr), &["burst", "64", "--rounds", "3"]);
    assert_eq!(code, 1, "lesson 15 --mistake no-rearm: not caught: {line}");
    drop(server);
    let server = Server::start(exe, &["--bufs", "4"]);
    let (code, line) = provoke(Some(server.addr), &["burst", "64", "--rounds", "3"]);
    assert_eq!(code, 0, "lesson 15: a false alarm: {line}");
}
