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

/// Lesson 14 under strace, with pipe2 and splice added to the filter (as `make trace-14`
/// does): the relay's pipes come from pipe2 and fcntl(F_SETPIPE_SZ), and the payload moves
/// by splice(SPLICE_F_MOVE|SPLICE_F_NONBLOCK) only. The payload is sent once the CONNECT's
/// reply is in, so no handshake read can hold it; it is a marker repeated, so any read or
/// write of it would show the marker in strace's 32 printed bytes. None may.
#[test]
fn lesson_14_splices_the_payload_and_never_reads_it() {
    use std::io::Read;
    use std::net::Shutdown;

    let dir = std::env::temp_dir().join("sockets-by-hand-traces");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("lesson-14-splice-{}.trace", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-yy", "-qq", "-e"])
        .arg(format!("trace={},pipe2,splice", common::TRACE_SET))
        .arg("-o")
        .arg(&path)
        .arg(exe!("lesson-14"))
        .args(["-p", "0"]);
    let traced = Traced {
        server: common::Server::spawn(cmd),
        path,
    };
    let echo = common::socks5::echo_target();
    let mut s = common::socks5::open(traced.server.addr, echo);
    let payload = b"zerocopy".repeat(64 << 10); // 512 KiB
    let mut writer = s.try_clone().unwrap();
    let sent = payload.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    sender.join().unwrap();
    assert!(back == payload, "the echo came back different");
    traced.server.log.wait_line("the relay logged", |l| {
        l.starts_with("client disconnected") && l.contains(&format!("→ {echo} "))
    });
    let trace = traced.stop(libc::SIGTERM);
    trace.assert_in_order(&[
        "socket", "bind", "listen", "poll", "accept4", "read", "connect", "write", "pipe2",
        "fcntl", "splice", "splice", "shutdown", "close",
    ]);
    let setsz = trace.lines_of("fcntl");
    assert!(
        setsz.iter().any(|l| l.contains("F_SETPIPE_SZ")),
        "no fcntl(F_SETPIPE_SZ):\n{}",
        setsz.join("\n")
    );
    let splices = trace.lines_of("splice");
    let moved = |l: &&str| {
        l.contains("SPLICE_F_MOVE|SPLICE_F_NONBLOCK") && l.contains("TCP:[") && l.contains("pipe:[")
    };
    assert!(
        splices.iter().filter(|l| moved(l)).count() >= 4,
        "too few socket↔pipe splices:\n{}",
        splices.join("\n")
    );
    assert!(
        !trace.text.contains("zerocopy"),
        "the payload went through user space:\n{}",
        trace
            .lines()
            .into_iter()
            .filter(|l| l.contains("zerocopy"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// strace splits a call when another process or thread ran in between; the trace tests see
/// it joined back into one line, with its result.
#[test]
fn split_calls_are_joined_with_their_result() {
    let text = "7  accept4(6<TCP>,  <unfinished ...>\n8  read(3, \"x\", 1) = 1\n7  <... accept4 resumed>{sa_family=AF_INET}, [16], SOCK_NONBLOCK) = 9\n";
    assert_eq!(
        common::join_split_calls(text),
        "7  accept4(6<TCP>,{sa_family=AF_INET}, [16], SOCK_NONBLOCK) = 9\n8  read(3, \"x\", 1) = 1\n"
    );
}
