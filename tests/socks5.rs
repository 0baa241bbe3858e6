//! Lessons 12 and 14, the SOCKS5 relay on poll (14: with splice): the shared SOCKS5 suite
//! (tests/common/socks5.rs, real curl and raw-byte clients) plus the relay's own cases, run
//! for both lessons: volume, a thousand relays and their memory, slowloris, garbage, EMFILE,
//! Ctrl-C, and the strace check. Then what only lesson 14 does (`mod splice`).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::socks5::{self as s5, pseudo_random};
use common::{Server, Traced, DEADLINE};
use protocols::socks5::{Handshake, Step, Target};

fn start(args: &[&str]) -> Server {
    Server::start(exe!("lesson-12"), args)
}

fn start_14(args: &[&str]) -> Server {
    Server::start(exe!("lesson-14"), args)
}
socks5_suite!(lesson_12, super::start);
socks5_suite!(lesson_14, super::start_14);

// Lesson 14's relayed connection holds 6 fds: 2 sockets and 2 pipes (one per direction).
relay_cases!(relay_12, "lesson-12", "12", 2);
relay_cases!(relay_14, "lesson-14", "14", 6);

/// The relay's own cases, for lesson `$num` (binary `$exe`, `$fds` fds per busy relay): one
/// module per lesson.
macro_rules! relay_cases {
    ($module:ident, $exe:literal, $num:literal, $fds:literal) => {
mod $module {
use super::*;

fn start(args: &[&str]) -> Server {
    Server::start(exe!($exe), args)
}

/// 64 MiB each way at the same time through one relay (an echo target), every byte
/// checked; the log line counts them.
#[test]
fn volume_64_mib_each_way() {
    const LEN: usize = 64 << 20;
    let proxy = start(&[]);
    let echo = s5::echo_target();
    let s = s5::open(proxy.addr, echo);
    let data = std::sync::Arc::new(pseudo_random(LEN, 99));
    let mut writer = s.try_clone().unwrap();
    let sent = data.clone();
    let feeder = thread::spawn(move || {
        for chunk in sent.chunks(256 * 1024) {
            writer.write_all(chunk).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reader = s;
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(got + n <= LEN, "more bytes came back than were sent");
        assert!(
            buf[..n] == data[got..got + n],
            "bytes differ at offset {got}"
        );
        got += n;
    }
    feeder.join().unwrap();
    assert_eq!(got, LEN);
    proxy.log.wait_line("the relay's log line", |l| {
        l.contains(&format!("up {LEN} B, down {LEN} B")) && l.ends_with("closed")
    });
}

/// 1,000 relays open at once, each used, then idle: the proxy's RSS stays far below
/// microsocks' 18.6 MiB (idle relays hold no buffers), and closing them all brings the
/// fd count back.
#[test]
fn thousand_concurrent_relays() {
    common::load::raise_nofile();
    let proxy = start(&[]);
    let echo = s5::echo_target();
    let before = proxy.fd_count();
    let mut relays: Vec<TcpStream> = (0..1000).map(|_| s5::open(proxy.addr, echo)).collect();
    // Every relay carries 32 KiB each way (so a relay that kept its buffers afterwards
    // would hold touched memory), then goes idle.
    let data = pseudo_random(32 << 10, 4);
    let mut got = vec![0u8; data.len()];
    for s in relays.iter_mut() {
        s.write_all(&data).unwrap();
        s.read_exact(&mut got).unwrap();
        assert!(got == data, "relayed bytes differ");
    }
    let per_relay = concat!($fds, " fds per relay");
    assert_eq!(proxy.fd_count(), before + $fds * 1000, "{per_relay}");
    let rss = common::rss_kib(proxy.pid());
    eprintln!("{} RSS with 1,000 idle relays: {rss} KiB", $exe);
    assert!(rss < 18 << 10, "RSS {rss} KiB with 1,000 idle relays");
    drop(relays);
    common::wait_fd_count(proxy.pid(), before);
}

/// A target that never reads: the client's writes stop (the proxy stops reading it once
/// its buffer toward the target is full) and the proxy's memory stays bounded.
#[test]
fn backpressure_bounds_memory() {
    let proxy = start(&[]);
    let (listener, sink) = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    };
    let holder = thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        thread::sleep(Duration::from_secs(30));
        drop(conn);
    });
    let mut s = s5::open(proxy.addr, sink);
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let mut written = 0usize;
    while written < 512 << 20 {
        match s.write(&chunk) {
            Ok(n) => written += n,
            Err(_) => break, // blocked for 2 s: nobody reads any more
        }
    }
    assert!(
        written < 512 << 20,
        "512 MiB went into a target that never reads"
    );
    let rss = common::rss_kib(proxy.pid());
    assert!(rss < 16 << 10, "proxy RSS {rss} KiB while backed up");
    drop(holder);
}

/// 300 clients that send one byte and stall do not stop a normal client's round trip, and
/// they are still connected afterwards (no timeout did the work).
#[test]
fn slowloris_does_not_block_others() {
    common::load::raise_nofile();
    let proxy = start(&["--handshake-timeout", "60"]);
    let echo = s5::echo_target();
    let stalled: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = s5::connect(proxy.addr);
            s.write_all(&[5]).unwrap();
            s
        })
        .collect();
    let mut s = s5::open(proxy.addr, echo);
    s.write_all(b"round trip").unwrap();
    let mut got = [0u8; 10];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"round trip");
    for mut st in stalled {
        st.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let e = st
            .read(&mut byte)
            .expect_err("a stalled client was answered or closed");
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
    }
}

/// The handshake deadline closes a client that stalls mid-greeting.
#[test]
fn handshake_deadline() {
    let proxy = start(&["--handshake-timeout", "0.5"]);
    let mut s = s5::connect(proxy.addr);
    s.write_all(&[5, 2]).unwrap();
    assert!(s5::closes(&mut s));
    proxy
        .log
        .wait_line("timeout logged", |l| l.contains("handshake timed out"));
}

/// 2,000 connections of random bytes (some reset, some half-close): the fd count comes
/// back to where it started and the proxy still serves. Inputs that would complete a
/// CONNECT are skipped (checked with the sans-IO machine) so nothing leaves the machine.
#[test]
fn garbage_leaves_fd_count_steady() {
    common::load::raise_nofile();
    let proxy = start(&[]);
    let echo = s5::echo_target();
    drop(s5::open(proxy.addr, echo));
    // Count fds once that first relay is closed (and logged).
    proxy
        .log
        .wait_line("the first relay closed", |l| l.ends_with("closed"));
    let before = proxy.fd_count();
    let mut seed = 7u64;
    let mut sent = 0;
    while sent < 2000 {
        let batch: Vec<TcpStream> = (0..100)
            .map(|i| {
                seed += 1;
                let mut bytes = pseudo_random(1 + (seed as usize * 37) % 700, seed);
                if i % 2 == 0 {
                    bytes[0] = 5; // look like SOCKS5 for a while
                }
                let mut out = Vec::new();
                if matches!(
                    Handshake::new(None).feed(&bytes, &mut out),
                    Step::Connect { .. }
                ) {
                    bytes.truncate(1);
                }
                let mut s = s5::connect(proxy.addr);
                let _ = s.write_all(&bytes);
                s
            })
            .collect();
        for (i, s) in batch.into_iter().enumerate() {
            match i % 3 {
                0 => common::reset(s),
                1 => {
                    let _ = s.shutdown(Shutdown::Write);
                }
                _ => drop(s),
            }
        }
        sent += 100;
    }
    let mut s = s5::open(proxy.addr, echo);
    s.write_all(b"ok").unwrap();
    let mut got = [0u8; 2];
    s.read_exact(&mut got).unwrap();
    drop(s);
    common::wait_fd_count(proxy.pid(), before);
}

/// Out of fds (RLIMIT_NOFILE 32): the proxy stops accepting without spinning, keeps serving
/// its relays, and serves the clients waiting in the backlog once fds free up.
#[test]
fn emfile_neither_spins_nor_crashes() {
    let limit = 32;
    let args = ["--handshake-timeout", "60"];
    let cmd = common::single_thread::nofile_command(exe!($exe), &args, limit, limit);
    let mut proxy = Server::spawn(cmd);
    let echo = s5::echo_target();
    let mut relay = s5::open(proxy.addr, echo);
    let mut held = Vec::new();
    let mut waiting = Vec::new();
    for _ in 0..limit + 10 {
        let mut s = s5::connect(proxy.addr);
        s.write_all(&[5, 1, 0]).unwrap();
        // Waiting in the backlog means: no answer, and the proxy's fd table is full (no
        // answer with room left only means a slow proxy on a loaded machine). peek, so a
        // late answer stays unread for the loop below.
        let full = || common::fd_count(proxy.pid()) as u64 >= limit;
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut answer = [0u8; 2];
        let silent = !matches!(s.peek(&mut answer), Ok(n) if n > 0);
        if silent && full() {
            waiting.push(s);
            if waiting.len() == 3 {
                break;
            }
        } else {
            s.set_read_timeout(Some(common::DEADLINE)).unwrap();
            s.read_exact(&mut answer).unwrap();
            assert_eq!(answer, [5, 0]);
            held.push(s);
        }
    }
    assert_eq!(waiting.len(), 3, "the fd table never filled");
    proxy
        .log
        .wait_line("EMFILE reported", |l| l.contains("EMFILE"));
    let ticks = common::cpu_ticks(proxy.pid());
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        relay.write_all(b"busy").unwrap();
        let mut got = [0u8; 4];
        relay.read_exact(&mut got).unwrap();
        thread::sleep(Duration::from_millis(100));
    }
    let used = common::cpu_ticks(proxy.pid()) - ticks;
    assert!(
        used < 50,
        "{used} clock ticks of CPU in 2 s while out of fds"
    );
    assert!(proxy.wait_exit(Duration::from_millis(1)).is_none(), "died");
    held.truncate(held.len() - 5);
    for s in &mut waiting {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut answer = [0u8; 2];
        s.read_exact(&mut answer).unwrap();
        assert_eq!(answer, [5, 0]);
    }
}

/// Under strace: poll is the only readiness call; the upstream connect is non-blocking
/// (EINPROGRESS) and asked again at once: a target on this host is connected by then (0),
/// one whose SYN was dropped is not (EALREADY), and poll's POLLOUT and getsockopt(SO_ERROR)
/// finish it; BND comes from getsockname.
#[test]
fn trace_poll_and_nonblocking_connect() {
    let traced = Traced::start(exe!($exe), &[]);
    let echo = s5::echo_target();
    let mut s = s5::open(traced.server.addr, echo);
    s.write_all(b"traced").unwrap();
    let mut got = [0u8; 6];
    s.read_exact(&mut got).unwrap();
    drop(s);
    // And a name, through the resolver thread.
    let mut s = s5::connect(traced.server.addr);
    assert_eq!(s5::greet(&mut s, &[0]), 0);
    let name = Target::Domain("localhost".into(), echo.port());
    let (rep, _) = s5::request(&mut s, protocols::socks5::Command::Connect, &name);
    assert_eq!(rep, protocols::socks5::Reply::Succeeded);
    drop(s);
    // And a target whose handshake takes a SYN retransmission.
    let late = s5::LateTarget::new();
    let mut s = s5::connect(traced.server.addr);
    assert_eq!(s5::greet(&mut s, &[0]), 0);
    let request = protocols::socks5::client::connect_request(&Target::Ip(late.addr)).unwrap();
    s.write_all(&request).unwrap();
    late.let_in();
    assert_eq!(s5::reply(&mut s).0, protocols::socks5::Reply::Succeeded);
    drop(s);
    for target in [
        format!("→ {echo} "),
        format!("→ localhost:{} ", echo.port()),
    ] {
        let log = &traced.server.log;
        log.wait_line("both relays logged", |l| l.contains(&target));
    }
    let trace = traced.stop(libc::SIGTERM);
    trace.assert_in_order(&[
        "socket",
        "setsockopt",
        "bind",
        "listen",
        "poll",
        "accept4",
        "read",
        "socket",
        "connect",
        "connect",
        "getsockname",
        "write",
        "shutdown",
        "close",
        "socket",
        "connect",
        "connect",
        "poll",
        "getsockopt",
        "getsockname",
    ]);
    let connects = trace.lines_of("connect");
    // "connect(FD" (strace -y's "<TCP:…>" after the fd left out): the call and its socket, so
    // both lines of a pair are about one socket.
    fn socket_of(line: &str) -> Option<&str> {
        let at = line.find("connect(")?;
        line[at..].split([',', '<']).next()
    }
    let pair = |second: &str| {
        connects.windows(2).any(|w| {
            socket_of(w[0]) == socket_of(w[1])
                && w[0].contains("EINPROGRESS")
                && w[1].contains(second)
        })
    };
    assert!(
        pair(") = 0") && pair("EALREADY"),
        "no EINPROGRESS followed by 0, and by EALREADY:\n{}",
        connects.join("\n")
    );
    assert!(
        trace
            .lines_of("getsockopt")
            .iter()
            .any(|l| l.contains("SO_ERROR")),
        "no getsockopt(SO_ERROR)"
    );
    // The resolver's pool: its floor thread's clone, and a lookup's wake-up byte.
    let clones = trace.lines_of("clone3").len() + trace.lines_of("clone").len();
    assert!(clones >= 1, "no clone for the resolver's thread");
    assert!(
        trace
            .lines_of("write")
            .iter()
            .any(|l| l.contains("pipe:") && l.contains("\"!\"")),
        "no wake-up byte through the resolver's pipe"
    );
    trace.assert_absent(&[
        "epoll_create1",
        "epoll_ctl",
        "epoll_wait",
        "epoll_pwait",
        "select",
        "pselect6",
    ]);
}

/// Ctrl-C comes through the stop pipe: the proxy closes every connection (a relaying client
/// and one mid-handshake both read EOF), prints the one-line summary and exits 0.
#[test]
fn ctrl_c_closes_every_connection_and_exits_0() {
    let mut proxy = start(&[]);
    let mut relaying = s5::open(proxy.addr, s5::echo_target());
    relaying.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    relaying.read_exact(&mut got).unwrap();
    let mut greeted = s5::connect(proxy.addr);
    assert_eq!(s5::greet(&mut greeted, &[0]), 0);
    proxy.signal(libc::SIGINT);
    let status = proxy
        .wait_exit(DEADLINE)
        .expect("the proxy exits on Ctrl-C");
    assert!(status.success(), "exit status {status:?}");
    for s in [&mut relaying, &mut greeted] {
        assert_eq!(s.read(&mut got).unwrap(), 0, "EOF, not a reset");
    }
    let summary = concat!("lesson ", $num, " stopping · connections served: 2 · still open, closed now: 2");
    proxy.log.wait_line("the summary", |l| l == summary);
    proxy
        .log
        .wait_line("the relay closed", |l| l.ends_with("· proxy stopping"));
}

/// `-u` without `-P` (and the reverse) is a usage error, as in microsocks.
#[test]
fn user_without_password_is_a_usage_error() {
    for args in [&["-u", "bob"][..], &["-P", "secret"][..]] {
        let out = std::process::Command::new(exe!($exe))
            .args(args)
            .args(["-p", "0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("required"));
    }
}

/// `-b ADDR`: outgoing connections come from that address, and the reply's BND says so.
#[test]
fn outgoing_address() {
    let proxy = start(&["-b", "127.0.0.2"]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let mut s = s5::connect(proxy.addr);
    assert_eq!(s5::greet(&mut s, &[0]), 0);
    let cmd = protocols::socks5::Command::Connect;
    let (rep, bnd) = s5::request(&mut s, cmd, &Target::Ip(target));
    assert_eq!(rep, protocols::socks5::Reply::Succeeded);
    let (_, from) = listener.accept().unwrap();
    assert_eq!(from.ip().to_string(), "127.0.0.2");
    assert_eq!(
        bnd,
        Target::Ip(from),
        "BND is the outgoing socket's address"
    );
}

/// A target that never answers the SYN (its accept queue is full, so the kernel drops it):
/// after --connect-timeout the client gets 0x06, and the proxy is fine.
#[test]
fn connect_timeout() {
    let late = s5::LateTarget::new();
    let proxy = start(&["--connect-timeout", "0.5"]);
    let mut s = s5::connect(proxy.addr);
    assert_eq!(s5::greet(&mut s, &[0]), 0);
    let cmd = protocols::socks5::Command::Connect;
    let (rep, _) = s5::request(&mut s, cmd, &Target::Ip(late.addr));
    assert_eq!(rep, protocols::socks5::Reply::TtlExpired);
    assert!(s5::closes(&mut s));
    proxy
        .log
        .wait_line("timeout logged", |l| l.contains("ETIMEDOUT"));
}

/// A host name holding `\n` and an ESC sequence is logged escaped: no forged log line, no
/// raw control byte reaches the operator's terminal.
#[test]
fn hostile_name_is_logged_escaped() {
    use protocols::socks5::{Command as Cmd, Reply};
    let proxy = start(&[]);
    let mut s = s5::connect(proxy.addr);
    assert_eq!(s5::greet(&mut s, &[0]), 0);
    let name = "x\nFAKE: admin logged in\n\x1b[31mred";
    let (rep, _) = s5::request(&mut s, Cmd::Connect, &Target::Domain(name.into(), 80));
    assert_eq!(rep, Reply::HostUnreachable);
    let line = proxy
        .log
        .wait_line("the refusal logged", |l| l.contains("FAKE"));
    assert!(
        line.contains("x\\x0aFAKE: admin logged in\\x0a\\x1b[31mred:80"),
        "{line}"
    );
    let lines = proxy.log.lines();
    assert!(
        lines
            .iter()
            .all(|l| !l.starts_with("FAKE") && !l.contains('\x1b')),
        "{lines:#?}"
    );
}

/// A CONNECT to the proxy's own listening address (or its port on another local address,
/// here 127.0.0.2) is refused 0x02 and logged: no relay nested inside the relay.
#[test]
fn connect_to_itself_refused() {
    use protocols::socks5::{Command as Cmd, Reply};
    let proxy = start(&[]);
    let other = std::net::SocketAddr::new([127, 0, 0, 2].into(), proxy.addr.port());
    for target in [proxy.addr, other] {
        let mut s = s5::connect(proxy.addr);
        assert_eq!(s5::greet(&mut s, &[0]), 0);
        let (rep, _) = s5::request(&mut s, Cmd::Connect, &Target::Ip(target));
        assert_eq!(rep, Reply::NotAllowed, "CONNECT to {target}");
        assert!(s5::closes(&mut s));
        proxy.log.wait_line("the refusal logged", |l| {
            l.contains(&format!("{target} is this proxy's own listening address"))
        });
    }
    // And by name: localhost resolves to this machine too.
    let mut s = s5::connect(proxy.addr);
    assert_eq!(s5::greet(&mut s, &[0]), 0);
    let by_name = Target::Domain("localhost".into(), proxy.addr.port());
    let (rep, _) = s5::request(&mut s, Cmd::Connect, &by_name);
    assert_eq!(rep, Reply::NotAllowed);
}

/// RFC 1929 limits: `-u`/`-P` empty or over 255 bytes would start a proxy nobody can log
/// into: a usage error (status 2) instead. So is a timeout under a millisecond.
#[test]
fn impossible_flags_are_usage_errors() {
    let long = "x".repeat(256);
    let cases: [&[&str]; 6] = [
        &["-u", "", "-P", "secret"],
        &["-u", "bob", "-P", ""],
        &["-u", &long, "-P", "secret"],
        &["-u", "bob", "-P", &long],
        &["--handshake-timeout", "1e-10"],
        &["--connect-timeout", "0.0001"],
    ];
    for args in cases {
        let (status, err) = exit_of(args);
        assert_eq!(status, Some(2), "{args:?}: {err}");
        assert!(
            err.contains("RFC 1929 needs 1 to 255 bytes") || err.contains("from 0.001 to 86400"),
            "{args:?}: {err}"
        );
    }
}

/// On a wildcard address without -u/-P the proxy starts, with one warning line saying it is
/// open to everyone and reaches this machine's loopback-only services. (Run in a private
/// network namespace, `unshare -rn`, so that nothing is ever exposed; not on loopback, not
/// with a password.)
#[test]
fn open_proxy_warning() {
    let warns = |args: &[&str], unshare: bool| {
        let mut cmd = if unshare {
            let mut cmd = std::process::Command::new("unshare");
            cmd.args(["-rn", exe!($exe)]);
            cmd
        } else {
            std::process::Command::new(exe!($exe))
        };
        cmd.args(args).args(["-p", "0"]);
        let server = Server::spawn(cmd);
        // The notes come in order, the warning before the auth note.
        server
            .log
            .wait_line("the auth note", |l| l.contains("auth: "));
        let lines = server.log.lines();
        lines
            .into_iter()
            .filter(|l| l.contains("WARNING"))
            .collect::<Vec<_>>()
    };
    for any in ["0.0.0.0", "::"] {
        let warning = warns(&["-i", any], true);
        assert_eq!(warning.len(), 1, "{any}: {warning:?}");
        assert!(
            warning[0].contains("open proxy") && warning[0].contains("its loopback-only services"),
            "{warning:?}"
        );
    }
    assert!(warns(&["-i", "0.0.0.0", "-u", "u", "-P", "p"], true).is_empty());
    assert!(warns(&[], false).is_empty());
}

/// `-b` with an address this machine does not have: the proxy does not start (status 1),
/// and says which call failed on which address.
#[test]
fn outgoing_address_checked_at_start() {
    let (status, err) = exit_of(&["-b", "192.0.2.1"]);
    assert_eq!(status, Some(1), "{err}");
    assert!(err.contains("-b 192.0.2.1: bind: EADDRNOTAVAIL"), "{err}");
}

/// With `-b ::1`, an IPv4 target fails in bind (named so, not "connect"), and a name with
/// only IPv4 addresses (`127.1`, which getaddrinfo reads as 127.0.0.1) is refused 0x04 with
/// the reason, not an invented EHOSTUNREACH.
#[test]
fn outgoing_family_mismatch_named() {
    use protocols::socks5::{Command as Cmd, Reply};
    let proxy = start(&["-b", "::1"]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let by_name = Target::Domain("127.1".into(), target.port());
    for (asked, expected, logged) in [
        (Target::Ip(target), None, "bind: E".to_string()),
        (
            by_name,
            Some(Reply::HostUnreachable),
            "no address of -b ::1's family".to_string(),
        ),
    ] {
        let mut s = s5::connect(proxy.addr);
        assert_eq!(s5::greet(&mut s, &[0]), 0);
        let (rep, _) = s5::request(&mut s, Cmd::Connect, &asked);
        assert_ne!(rep, Reply::Succeeded, "{asked}");
        if let Some(expected) = expected {
            assert_eq!(rep, expected, "{asked}");
        }
        let line = proxy
            .log
            .wait_line("the refusal", |l| l.contains(&format!("→ {asked}")));
        assert!(line.contains(&logged), "{line}");
    }
}

/// Runs `lesson-12 ARGS -p 0`, expecting it to refuse to start: its exit status (None if it
/// was still running after 5 s, and was killed) and its stderr.
fn exit_of(args: &[&str]) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(exe!($exe))
        .args(args)
        .args(["-p", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        match child.try_wait().unwrap() {
            Some(status) => break status.code(),
            None if start.elapsed() > Duration::from_secs(5) => break None,
            None => thread::sleep(Duration::from_millis(10)),
        }
    };
    if status.is_none() {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

/// microsocks' whole command line: --help names -q, -w and -1 and says auth-once's list is
/// bounded (4,096, the oldest dropped); -w and -1 need -u/-P, as in microsocks.
#[test]
fn microsocks_flags_in_help() {
    let help = std::process::Command::new(exe!($exe))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "-q, --quiet",
        "-w, --whitelist",
        "-1, --auth-once",
        "4,096",
        "oldest",
    ] {
        assert!(help.contains(flag), "--help lacks {flag:?}:\n{help}");
    }
    for args in [&["-1"][..], &["-w", "127.0.0.1"]] {
        let out = std::process::Command::new(exe!($exe))
            .args(args)
            .args(["-p", "0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?} without -u/-P");
    }
}
}
    };
}
use relay_cases;

/// What only lesson 14 does: the pipes (their fds, made on the first byte), bulk bytes both
/// ways through them, a half-close and a reset while they hold bytes.
mod splice {
    use std::net::{SocketAddr, TcpListener};

    use super::*;

    /// The byte at offset `i` of a transfer (a pattern: a lost or moved byte shows).
    fn pattern(i: usize, seed: usize) -> u8 {
        ((i + seed) % 251) as u8
    }

    /// Reads `s` to EOF, checking the pattern as it goes; the byte count.
    fn read_pattern(s: &mut TcpStream, seed: usize) -> usize {
        let mut buf = vec![0u8; 256 << 10];
        let mut at = 0;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                return at;
            }
            for (k, &b) in buf[..n].iter().enumerate() {
                assert_eq!(b, pattern(at + k, seed), "byte {} differs", at + k);
            }
            at += n;
        }
    }

    /// Writes `n` bytes of the pattern, then shutdown(SHUT_WR).
    fn write_pattern(s: &mut TcpStream, n: usize, seed: usize) {
        let chunk: Vec<u8> = (0..1 << 20).map(|i| pattern(i, seed)).collect();
        let mut at = 0;
        while at < n {
            let len = (n - at).min(chunk.len() - at % 251 - 251);
            s.write_all(&chunk[at % 251..at % 251 + len]).unwrap();
            at += len;
        }
        s.shutdown(Shutdown::Write).unwrap();
    }

    /// The proxy's fds that are pipe ends (/proc/PID/fd links `pipe:[…]`), less the stop
    /// pipe and the resolver's (present from the start).
    fn pipe_fds(proxy: &Server) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", proxy.pid()))
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|link| link.to_string_lossy().starts_with("pipe:"))
            .count()
    }

    /// A listener for one target connection, and its address.
    fn target() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    }

    /// 32 MiB client → target, then the client's half-close: the target reads every byte in
    /// order and then EOF (the pipe poured out before the FIN), and only then answers 32 MiB
    /// back, which the client reads whole, then EOF.
    #[test]
    fn bulk_both_ways_with_a_half_close_in_flight() {
        let proxy = super::start_14(&[]);
        let before = proxy.fd_count();
        let (listener, addr) = target();
        let mut client = s5::open(proxy.addr, addr);
        let (mut t, _) = listener.accept().unwrap();
        t.set_read_timeout(Some(DEADLINE)).unwrap();
        const N: usize = 32 << 20;
        let mut writer = client.try_clone().unwrap();
        let sender = thread::spawn(move || write_pattern(&mut writer, N, 0));
        assert_eq!(
            read_pattern(&mut t, 0),
            N,
            "bytes the target got before EOF"
        );
        sender.join().unwrap();
        let answer = thread::spawn(move || write_pattern(&mut t, N, 7));
        assert_eq!(read_pattern(&mut client, 7), N, "bytes the client got back");
        answer.join().unwrap();
        let line = proxy.log.wait_line("the relay's end", |l| {
            l.starts_with("client disconnected") && l.contains(&format!("→ {addr}"))
        });
        assert!(line.contains(&format!("up {N} B, down {N} B")), "{line}");
        drop(client);
        common::wait_fd_count(proxy.pid(), before);
    }

    /// The fds a connection holds, read from /proc/PID/fd at each step: a client in its
    /// handshake 1; connected, idle 2 (no pipe yet); after bytes one way 4 (a pipe), both
    /// ways 6 (two pipes: 4 more fds than lesson 12); closed, back to the resting count.
    #[test]
    fn four_more_fds_per_relayed_connection() {
        let proxy = super::start_14(&[]);
        let echo = s5::echo_target();
        let (listener, addr) = target();
        let rest = proxy.fd_count();
        let pipes = pipe_fds(&proxy);
        let mut greeting = s5::connect(proxy.addr);
        assert_eq!(s5::greet(&mut greeting, &[0]), 0);
        common::wait_fd_count(proxy.pid(), rest + 1);
        let mut client = s5::open(proxy.addr, addr);
        let (mut t, _) = listener.accept().unwrap();
        common::wait_fd_count(proxy.pid(), rest + 3);
        assert_eq!(pipe_fds(&proxy), pipes, "an idle relay holds no pipe");
        client.write_all(b"up").unwrap();
        let mut got = [0u8; 2];
        t.read_exact(&mut got).unwrap();
        assert_eq!(proxy.fd_count(), rest + 5, "a pipe for the bytes going up");
        t.write_all(b"down").unwrap();
        let mut got = [0u8; 4];
        client.read_exact(&mut got).unwrap();
        assert_eq!(proxy.fd_count(), rest + 7, "a pipe each way");
        assert_eq!(pipe_fds(&proxy), pipes + 4, "4 pipe ends");
        // And a second relayed connection costs the same 6.
        let mut other = s5::open(proxy.addr, echo);
        other.write_all(b"x").unwrap();
        other.read_exact(&mut got[..1]).unwrap();
        assert_eq!(proxy.fd_count(), rest + 13);
        drop((greeting, client, t, other));
        common::wait_fd_count(proxy.pid(), rest);
    }

    /// Fills the pipe toward a side that does not read, then resets one side: what the
    /// pipe held is lost and the other side is reset (it sees ECONNRESET, not EOF); the
    /// proxy serves the next client and its fd count comes back. Both directions, and
    /// either the reader or the sender resets.
    #[test]
    fn a_reset_with_bytes_in_the_pipe_resets_the_other_side() {
        let proxy = super::start_14(&[]);
        let rest = proxy.fd_count();
        for (client_sends, sender_resets) in
            [(true, false), (false, false), (true, true), (false, true)]
        {
            let (listener, addr) = target();
            let client = s5::open(proxy.addr, addr);
            let (t, _) = listener.accept().unwrap();
            // The side that sends, and the side that does not read (yet).
            let (mut sender, sink) = if client_sends {
                (client, t)
            } else {
                (t, client)
            };
            sender.set_nonblocking(true).unwrap();
            let chunk = vec![0x5au8; 256 << 10];
            let mut sent = 0usize;
            // Until the pipe, the proxy's socket buffers and the sender's are full (polled:
            // 50 refusals in a row, 2 ms apart).
            let mut still = 0;
            while still < 50 {
                match sender.write(&chunk) {
                    Ok(n) => {
                        sent += n;
                        still = 0;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        still += 1;
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => panic!("write: {e}"),
                }
                assert!(sent < 1 << 30, "1 GiB went in: no backpressure");
            }
            // The other side, which must now see a reset.
            let mut survivor = if sender_resets {
                common::reset(sender);
                sink
            } else {
                common::reset(sink);
                sender.set_nonblocking(false).unwrap();
                sender
            };
            survivor.set_read_timeout(Some(DEADLINE)).unwrap();
            let mut buf = vec![0u8; 256 << 10];
            let mut got = 0;
            let err = loop {
                match survivor.read(&mut buf) {
                    Ok(0) => panic!("EOF instead of a reset (sent {sent}, got {got})"),
                    Ok(n) => got += n,
                    Err(e) => break e,
                }
            };
            assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
            if sender_resets {
                assert!(
                    got < sent,
                    "sent {sent}, all {got} arrived despite the reset"
                );
            }
            let line = proxy.log.wait_line("the reset logged", |l| {
                l.starts_with("client disconnected") && l.contains(&format!("→ {addr}"))
            });
            let who = if client_sends == sender_resets {
                "client"
            } else {
                "target"
            };
            assert!(line.contains(who), "{who} reset/gone not said: {line}");
        }
        // The proxy goes on serving.
        let mut s = s5::open(proxy.addr, s5::echo_target());
        s.write_all(b"still here").unwrap();
        let mut got = [0u8; 10];
        s.read_exact(&mut got).unwrap();
        drop(s);
        common::wait_fd_count(proxy.pid(), rest);
    }
}
