//! The call lists the docs give agree with the calls each lesson really makes.
//!
//! Each lesson runs under strace with the filter `make trace-NN` uses (lessons/lessons.toml's),
//! one client says `abc` and `q`, and the calls from the first `socket` on are collected.
//! Then, for the lesson's header (the paragraph naming `make trace-NN`), its README row (the
//! "what to watch" column) and its docs page (the "What the trace shows" section):
//! - the header and the README name no call the lesson does not make (no phantom calls);
//! - a chain from `socket` on (`socket → bind → …`) claims the whole life, so it names every
//!   call the trace shows;
//! - the docs page's trace section explains every call the trace shows (from lesson 03 on,
//!   but for the set-up every server repeats, which lessons 01 and 02 explain).
//!
//! A call is "named" when its name stands as a word (`accept`, `epoll_ctl`), or one of the
//! usual names for it (`fork` for glibc's `clone`, `select` for `pselect6`, `exit` for
//! `exit_group`, `sigaction` for `rt_sigaction`, `waitpid` for `wait4`).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;

use common::{Traced, DEADLINE};

/// The system calls the docs may name: a word in this list is a call, any other is prose.
const SYSCALLS: &[&str] = &[
    "socket",
    "setsockopt",
    "getsockopt",
    "bind",
    "listen",
    "accept",
    "accept4",
    "connect",
    "read",
    "write",
    "close",
    "shutdown",
    "getsockname",
    "getpeername",
    "poll",
    "ppoll",
    "pselect6",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "fcntl",
    "clone",
    "clone3",
    "vfork",
    "wait4",
    "kill",
    "rt_sigaction",
    "rt_sigtimedwait",
    "signalfd4",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "pipe2",
    "splice",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "socketpair",
    "execve",
    "recvmmsg",
    "sendmmsg",
    "exit_group",
];

/// The set-up and exit every server repeats, explained on lessons 01 and 02's pages: the later
/// pages need not explain them again.
const SET_UP: &[&str] = &[
    "socket",
    "setsockopt",
    "bind",
    "listen",
    "getsockname",
    "getpeername",
    "exit_group",
];

/// Calls a lesson makes on a path this test's clients do not take, and the test that shows
/// them: a header or README row may name them.
const OTHER_PATHS: &[(&str, &str, &str)] = &[
    (
        "12",
        "getsockopt",
        "SO_ERROR after POLLOUT, a distant target: socks5.rs trace_poll_and_nonblocking_connect",
    ),
    (
        "13",
        "getsockopt",
        "the same, lesson 12's connect; and Redis's own connect",
    ),
    ("14", "getsockopt", "the same, lesson 12's connect"),
    (
        "16",
        "recvfrom",
        "--no-batch: one recvfrom per datagram: socks5_udp.rs trace_batched_and_not",
    ),
    (
        "16",
        "getsockopt",
        "lesson 12's SO_ERROR after POLLOUT, a distant target",
    ),
];

/// Other names for a call, as the docs use them.
const ALIASES: &[(&str, &str)] = &[
    ("fork", "clone"),
    ("select", "pselect6"),
    ("exit", "exit_group"),
    ("sigaction", "rt_sigaction"),
    ("waitpid", "wait4"),
    ("sigtimedwait", "rt_sigtimedwait"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The calls `text` names, as words (case matters: "Read relay.rs" is prose).
fn named(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter_map(|word| {
            // "the reads and writes": a plural names the call too.
            let word = match word.strip_suffix('s') {
                Some(stem) if SYSCALLS.contains(&stem) => stem,
                _ => word,
            };
            let call = ALIASES
                .iter()
                .find(|(alias, _)| *alias == word)
                .map_or(word, |(_, call)| call);
            SYSCALLS.contains(&call).then(|| call.to_string())
        })
        .collect()
}

/// The strace filter `make trace-NN` uses: lesson `nn`'s in lessons/lessons.toml, expanded
/// (tests/lesson_index.rs checks that the Makefile's is the same).
fn make_filter(nn: &str) -> String {
    workshop::lessons::Index::load(&root())
        .and_then(|index| index.trace(nn))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The lesson's main file: lessons/NN-topic.rs or lessons/NN-topic/main.rs.
fn main_file(nn: &str) -> PathBuf {
    let dir = root().join("lessons");
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(&format!("{nn}-")) {
            return if path.is_dir() {
                path.join("main.rs")
            } else {
                path
            };
        }
    }
    panic!("no lesson {nn}")
}

fn docs_page(nn: &str) -> String {
    let dir = root().join("docs/lessons");
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("{nn}-"))
        {
            return fs::read_to_string(path).unwrap();
        }
    }
    panic!("no docs page for lesson {nn}")
}

/// The header's paragraph that names `make trace-NN`.
fn header_trace_paragraph(nn: &str) -> String {
    let text = fs::read_to_string(main_file(nn)).unwrap();
    let header: Vec<&str> = text
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").trim())
        .collect();
    let paragraphs = header.split(|l| l.is_empty()).map(|p| p.join(" "));
    let mark = format!("make trace-{nn}");
    paragraphs
        .filter(|p| p.contains(&mark))
        .map(|p| p[p.find(&mark).unwrap() + mark.len()..].to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The README row's "what to watch in `make trace-NN`" cell.
fn readme_watch_cell(nn: &str) -> String {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    // A row not yet in the README waits in lessons/NN.toml.part as `# README row: | NN | ...`.
    let part = fs::read_to_string(root().join(format!("lessons/{nn}.toml.part")));
    let start = format!("| {nn} |");
    let row = readme
        .lines()
        .map(str::to_string)
        .find(|l| l.starts_with(&start))
        .or_else(|| {
            let part = part.ok()?;
            part.lines()
                .find_map(|l| l.strip_prefix("# README row: "))
                .filter(|row| row.starts_with(&start))
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("README has no row for lesson {nn}"));
    let cells: Vec<String> = row
        .replace("\\|", "¦")
        .split('|')
        .map(str::to_string)
        .collect();
    cells[4].clone()
}

/// The docs page's "What the trace shows" section.
fn docs_trace_section(nn: &str) -> String {
    let page = docs_page(nn);
    let start = page
        .find("\n## What the trace shows")
        .unwrap_or_else(|| panic!("docs page of lesson {nn} has no \"What the trace shows\""));
    let rest = &page[start + 4..];
    rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
}

/// One client's whole conversation with an echo lesson: welcome, `abc`, `q`, EOF.
fn echo_client(addr: std::net::SocketAddr) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut lines = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line, "Welcome buddy!\n");
    conn.write_all(b"abc\nq\n").unwrap();
    line.clear();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line, "cba\n");
    let mut rest = Vec::new();
    lines.read_to_end(&mut rest).unwrap();
}

/// One client of lessons 01–02: the greeting, then EOF.
fn hello_client(addr: std::net::SocketAddr) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("Hello there! "), "{text}");
}

/// Two relayed connections through a SOCKS5 lesson: one to an IP, one to `localhost` (the
/// resolver's path), each a round trip and a half-close from the client.
fn socks_clients(proxy: std::net::SocketAddr) {
    use common::socks5::{echo_target, greet, open, request};
    use protocols::socks5::{Command as Cmd, Reply, Target};
    let target = echo_target();
    let mut by_ip = open(proxy, target);
    let mut by_name = common::socks5::connect(proxy);
    assert_eq!(greet(&mut by_name, &[0]), 0);
    let name = Target::Domain("localhost".into(), target.port());
    assert_eq!(
        request(&mut by_name, Cmd::Connect, &name).0,
        Reply::Succeeded
    );
    for conn in [&mut by_ip, &mut by_name] {
        conn.write_all(b"abc\n").unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        conn.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"abc\n");
    }
}

/// One UDP association through lesson 16: a datagram to a UDP echo target and back, then
/// the control connection closes (the association's teardown).
fn udp_client(proxy: std::net::SocketAddr) {
    use common::socks5::{connect, greet, request};
    use protocols::socks5::{Command as Cmd, Reply, Target};
    use std::net::UdpSocket;
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut control = connect(proxy);
    assert_eq!(greet(&mut control, &[0]), 0);
    let from = Target::Ip(sock.local_addr().unwrap());
    let (rep, bnd) = request(&mut control, Cmd::UdpAssociate, &from);
    assert_eq!(rep, Reply::Succeeded);
    let Target::Ip(bnd) = bnd else {
        panic!("BND {bnd:?}")
    };
    let target = Target::Ip(echo.local_addr().unwrap());
    let datagram = protocols::socks5_udp::wrap(&target, b"abc").unwrap();
    sock.send_to(&datagram, bnd).unwrap();
    let mut buf = [0u8; 100];
    let (n, from) = echo.recv_from(&mut buf).unwrap();
    echo.send_to(&buf[..n], from).unwrap();
    let n = sock.recv(&mut buf).unwrap();
    assert!(buf[..n].ends_with(b"abc"));
}

/// Lesson 00, the client, against lesson 03: `abc`, then the end of its input.
fn client_calls(exe: &str) -> BTreeSet<String> {
    let server = common::Server::start(env!("CARGO_BIN_EXE_lesson-03"), &[]);
    let path = std::env::temp_dir().join(format!("call-lists-00-{}.trace", std::process::id()));
    let mut child = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            &format!("trace={}", make_filter("00")),
            "-o",
        ])
        .arg(&path)
        .arg(exe)
        .args(["--to", &server.addr.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Welcome buddy!\ncba\n"
    );
    let text = fs::read_to_string(&path).unwrap();
    let _ = fs::remove_file(&path);
    calls_of(&common::Trace {
        text,
        status: out.status,
    })
}

/// The calls lesson `nn` makes for one client, as `make trace-NN` filters them.
fn traced_calls(nn: &str, exe: &str) -> BTreeSet<String> {
    if nn == "00" {
        return client_calls(exe);
    }
    if nn == "18" {
        return capture_calls(exe);
    }
    // Lesson 13 asks its own redis-server, which lets this host in.
    let mut redis = (nn == "13").then(common::redis::Redis::start);
    let redis_addr = redis.as_ref().map(|r| r.addr_arg());
    if let Some(redis) = redis.as_mut() {
        redis.set("allowed:127.0.0.1", "1");
    }
    let mut args: Vec<&str> = redis_addr
        .iter()
        .flat_map(|a| ["--redis", a.as_str()])
        .collect();
    // Lesson 17 is restarted once under the trace: its pid file says who serves.
    let pid_file = std::env::temp_dir().join(format!("call-lists-17-{}.pid", std::process::id()));
    if nn == "17" {
        args.extend(["--pid-file", pid_file.to_str().unwrap()]);
    }
    let traced = Traced::start_tracing(exe, &args, &make_filter(nn));
    let addr = traced.server.addr;
    match nn {
        "01" | "02" => hello_client(addr),
        "12" | "13" | "14" => socks_clients(addr),
        "16" => {
            socks_clients(addr);
            udp_client(addr);
        }
        _ => echo_client(addr),
    }
    traced
        .server
        .log
        .wait_line("the end logged", |l| l.contains("client disconnected"));
    if nn == "17" {
        return restarted_calls(traced, &pid_file);
    }
    if nn == "04" {
        // The child has exited; its wait4 comes with the parent's SIGCHLD handler.
        let parent = traced.lesson_pid();
        common::wait_for("the child reaped", DEADLINE, || {
            common::children(parent).is_empty().then_some(())
        });
    }
    let trace = if nn == "01" {
        traced.finish()
    } else {
        traced.stop(libc::SIGTERM)
    };
    calls_of(&trace)
}

/// Lesson 17: SIGHUP, the successor serves a client too, then stops; the old one has
/// drained and left by itself.
fn restarted_calls(traced: Traced, pid_file: &std::path::Path) -> BTreeSet<String> {
    let pid = || -> Option<i32> { fs::read_to_string(pid_file).ok()?.trim().parse().ok() };
    let old = common::wait_for("the pid file", DEADLINE, pid);
    // SAFETY: kill(2) on the lesson's pid, from its own pid file.
    unsafe { libc::kill(old, libc::SIGHUP) };
    let new = common::wait_for("the successor's pid", DEADLINE, || {
        pid().filter(|p| *p != old)
    });
    echo_client(traced.server.addr);
    common::wait_for("the second client's end", DEADLINE, || {
        let ends = traced
            .server
            .log
            .count(|l| l.contains("client disconnected"));
        (ends >= 2).then_some(())
    });
    // SAFETY: as above, the successor's pid.
    unsafe { libc::kill(new, libc::SIGTERM) };
    let _ = fs::remove_file(pid_file);
    calls_of(&traced.finish())
}

/// The calls of a trace, from the first `socket` on.
fn calls_of(trace: &common::Trace) -> BTreeSet<String> {
    // A debug build's OwnedFd checks with fcntl(F_GETFD) that an fd is open before closing
    // it; `make trace-NN` runs the release build, which does not.
    trace
        .lines()
        .into_iter()
        .filter(|line| !line.contains(", F_GETFD)"))
        .filter_map(common::syscall_of)
        .collect()
}

/// Does `text` list a life as a chain of calls from `socket` (`socket → bind → …`)?
/// (`splice(socket → pipe)` is no such chain: a pipe is no call.)
fn chain(text: &str) -> bool {
    text.match_indices("socket → ").any(|(at, arrow)| {
        let next =
            text[at + arrow.len()..].split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        named(next.into_iter().next().unwrap_or("")).len() == 1
    })
}

fn check(nn: &str, exe: &str) {
    let made = traced_calls(nn, exe);
    let mut wrong = Vec::new();
    for (place, text) in [
        ("its header", header_trace_paragraph(nn)),
        ("its README row", readme_watch_cell(nn)),
    ] {
        let elsewhere = |call: &String| OTHER_PATHS.iter().any(|(n, c, _)| *n == nn && c == call);
        let phantom: Vec<_> = named(&text)
            .difference(&made)
            .filter(|call| !elsewhere(call))
            .cloned()
            .collect();
        if !phantom.is_empty() {
            wrong.push(format!(
                "{place} names {phantom:?}, which the lesson never calls"
            ));
        }
        let missing: Vec<_> = made.difference(&named(&text)).cloned().collect();
        if chain(&text) && !missing.is_empty() {
            wrong.push(format!(
                "{place} lists the whole life as a chain but leaves out {missing:?}"
            ));
        }
    }
    let section = docs_trace_section(nn);
    let missing: Vec<_> = made
        .difference(&named(&section))
        .filter(|call| nn <= "02" || !SET_UP.contains(&call.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        wrong.push(format!(
            "its docs page's trace section never names {missing:?}"
        ));
    }
    assert!(
        wrong.is_empty(),
        "lesson {nn} (the trace shows {made:?}):\n  {}",
        wrong.join("\n  ")
    );
}

macro_rules! call_lists {
    ($($name:ident: $nn:literal,)*) => {$(
        #[test]
        fn $name() {
            check($nn, env!(concat!("CARGO_BIN_EXE_lesson-", $nn)));
        }
    )*};
}

call_lists! {
    lesson_00: "00",
    lesson_01: "01",
    lesson_02: "02",
    lesson_03: "03",
    lesson_04: "04",
    lesson_05: "05",
    lesson_06: "06",
    lesson_07: "07",
    lesson_08: "08",
    lesson_09: "09",
    lesson_10: "10",
    lesson_11: "11",
    lesson_12: "12",
    lesson_13: "13",
    lesson_14: "14",
    lesson_15: "15",
    lesson_16: "16",
    lesson_17: "17",
}

/// Lesson 18 captures; it runs in a network namespace of its own (this test again, under
/// `unshare -n`, or `-rn` without CAP_SYS_ADMIN), whose loopback carries one connection.
#[test]
fn lesson_18() {
    if common::in_own_namespace("lesson_18", "CALL_LISTS_NAMESPACE", false) {
        common::loopback_up();
        check("18", env!("CARGO_BIN_EXE_lesson-18"));
    }
}

/// Lesson 18 under strace, its filter on a port of this test's, stopping by itself after
/// one connection's first three frames (S, S., .).
fn capture_calls(exe: &str) -> BTreeSet<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let path = std::env::temp_dir().join(format!("call-lists-18-{}.trace", std::process::id()));
    let mut child = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            &format!("trace={}", make_filter("18")),
            "-o",
        ])
        .arg(&path)
        .arg(exe)
        .args(["--port", &port, "-c", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut banner = String::new();
    while err.read_line(&mut banner).unwrap() > 0 && !banner.contains("capturing on") {}
    assert!(banner.contains("capturing on"), "{banner}");
    let _conn = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{banner}{rest}");
    assert!(rest.contains("3 packets captured"), "{rest}");
    let text = fs::read_to_string(&path).unwrap();
    let _ = fs::remove_file(&path);
    calls_of(&common::Trace {
        text,
        status: out.status,
    })
}

#[test]
fn named_reads_words_and_aliases_only() {
    let text = "socket → bind; a fork, a select(…), epoll_ctl(ADD), writes. Read relay.rs; reading";
    let words = named(text);
    let want = ["bind", "clone", "epoll_ctl", "pselect6", "socket", "write"];
    assert_eq!(words, want.iter().map(|s| s.to_string()).collect());
}
