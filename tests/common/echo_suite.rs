//! The echo-protocol suite every echo lesson (03–11) passes. A lesson joins by one line in
//! tests/echo.rs: `echo_suite!(lesson_04, "lesson-04");` (optionally with extra flags).
//!
//! Each case starts its own server, so the cases run in parallel and a serial lesson
//! (03) is not disturbed by another case's clients.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use workshop::echo;

use super::{step, wait_for, Server, DEADLINE};

/// Generates one `#[test]` per echo case for a lesson binary.
#[macro_export]
macro_rules! echo_suite {
    ($module:ident, $bin:literal) => {
        echo_suite!($module, $bin, &[]);
    };
    ($module:ident, $bin:literal, $args:expr) => {
        mod $module {
            use super::common::echo_suite as cases;
            fn start() -> super::common::Server {
                super::common::Server::start($crate::exe!($bin), $args)
            }
            #[test]
            fn welcome() {
                cases::welcome(start())
            }
            #[test]
            fn reverse() {
                cases::reverse(start())
            }
            #[test]
            fn crlf() {
                cases::crlf(start())
            }
            #[test]
            fn coalesced_lines() {
                cases::coalesced_lines(start())
            }
            #[test]
            fn split_lines() {
                cases::split_lines(start())
            }
            #[test]
            fn utf8() {
                cases::utf8(start())
            }
            #[test]
            fn invalid_utf8() {
                cases::invalid_utf8(start())
            }
            #[test]
            fn empty_line() {
                cases::empty_line(start())
            }
            #[test]
            fn q_flushes_earlier_replies() {
                cases::q_flushes_earlier_replies(start())
            }
            #[test]
            fn leave_without_q() {
                cases::leave_without_q(start())
            }
            #[test]
            fn reset_by_client() {
                cases::reset_by_client(start())
            }
            #[test]
            fn line_too_long() {
                cases::line_too_long(start())
            }
            #[test]
            fn q_then_junk_keeps_replies() {
                cases::q_then_junk_keeps_replies(start())
            }
            #[test]
            fn slow_reader_keeps_replies() {
                cases::slow_reader_keeps_replies(start())
            }
            #[test]
            fn too_long_then_more_keeps_error() {
                cases::too_long_then_more_keeps_error(start())
            }
            #[test]
            fn pipelined_10000_lines() {
                cases::pipelined_10000_lines(start())
            }
        }
    };
}

// The protocol's rules are the steps of workshop/src/echo.rs, which `make check-NN` walks
// too; the log lines are these tests' own.

pub fn welcome(server: Server) {
    step(echo::welcome, server.addr);
    server.log.wait_line("connect log", |l| {
        l.starts_with("client connected: 127.0.0.1:")
    });
    server.log.wait_line("disconnect log", |l| {
        l.starts_with("client disconnected: ") && l.contains("sent q")
    });
}

pub fn reverse(server: Server) {
    step(echo::reverse, server.addr);
}

pub fn crlf(server: Server) {
    step(echo::crlf, server.addr);
}

pub fn coalesced_lines(server: Server) {
    step(echo::coalesced_lines, server.addr);
}

pub fn split_lines(server: Server) {
    step(echo::split_lines, server.addr);
}

pub fn utf8(server: Server) {
    step(echo::utf8, server.addr);
}

pub fn invalid_utf8(server: Server) {
    step(echo::invalid_utf8, server.addr);
}

pub fn empty_line(server: Server) {
    step(echo::empty_line, server.addr);
}

pub fn q_flushes_earlier_replies(server: Server) {
    step(echo::q_flushes_earlier_replies, server.addr);
    server
        .log
        .wait_line("quit logged", |l| l.contains("sent q"));
}

pub fn leave_without_q(server: Server) {
    step(echo::next_after_eof, server.addr);
    server
        .log
        .wait_line("EOF logged", |l| l.contains("left without q"));
}

pub fn reset_by_client(server: Server) {
    step(echo::next_after_reset, server.addr);
    server
        .log
        .wait_line("reset logged", |l| l.contains("ECONNRESET"));
}

pub fn line_too_long(server: Server) {
    step(echo::line_too_long, server.addr);
    server
        .log
        .wait_line("too long logged", |l| l.contains("line too long"));
}

/// How often the lingering-close cases try.
const LINGER_TRIES: usize = 10;

/// Lines, `q`, then 1 MB of junk: every reply must still arrive, not be thrown away by a
/// reset (the lingering close: shutdown(SHUT_WR), drain, close).
pub fn q_then_junk_keeps_replies(server: Server) {
    step(
        |a| echo::q_then_junk_keeps_replies(a, LINGER_TRIES),
        server.addr,
    );
}

/// A slow reader behind a 4 KiB receive buffer: 1,000 lines, q and 64 KiB more; every reply
/// must arrive (the lingering close drains before it closes).
pub fn slow_reader_keeps_replies(server: Server) {
    step(|a| echo::slow_reader_keeps_replies(a, 3), server.addr);
}

/// Lines, then a line over 64 KiB and more input: the replies and `error: line too long`
/// must all be readable, not reset away.
pub fn too_long_then_more_keeps_error(server: Server) {
    step(
        |a| echo::too_long_then_more_keeps_error(a, LINGER_TRIES),
        server.addr,
    );
}

pub fn pipelined_10000_lines(server: Server) {
    let mut c = server.connect();
    c.expect_welcome();
    let mut all = String::new();
    for i in 0..10_000 {
        all.push_str(&format!("line {i:05}\n"));
    }
    // Write every line before reading any reply; a thread, so that a server without
    // backpressure could not hang the test (it would fail at the deadline instead).
    let mut stream = c.stream.try_clone().unwrap();
    let writer = thread::spawn(move || stream.write_all(all.as_bytes()));
    let start = Instant::now();
    while !writer.is_finished() {
        assert!(
            start.elapsed() < DEADLINE,
            "the 10,000 lines could not be written without reading replies"
        );
        thread::sleep(Duration::from_millis(5));
    }
    writer.join().unwrap().expect("write 10,000 lines");
    for i in 0..10_000 {
        let expected: String = format!("line {i:05}").chars().rev().collect();
        assert_eq!(c.line(), expected, "reply {i}");
    }
    c.send("q\n");
    assert!(c.closed());
}

// ---------------------------------------------------------------------------------------
// Cases with a size or a setting that differs per lesson: called from each lesson's tests.
// ---------------------------------------------------------------------------------------

/// After `n` connections that end every way (q, EOF mid-line, reset), the server's fd
/// count is back where it started: every accepted fd is closed on every path.
///
/// The first and the last client half-close (EOF) and read until the server closes: after
/// `q` the server would linger, draining input until the client closes, so its close
/// would not be seen by the client.
pub fn fd_count_steady(server: &Server, n: usize) {
    step(|a| echo::fd_count_back(a, server.pid(), n), server.addr);
}

/// A client holding an unfinished line does not delay another client's round trip. No
/// timing is asserted: the second client's round trip must complete while the first is
/// still mid-line (a server stuck on the first would never answer it), and the first
/// then finishes its line after holding it for at least `hold`.
pub fn partial_line_holder(server: &Server, hold: Duration) {
    let mut holder = server.connect();
    holder.expect_welcome();
    let started = Instant::now();
    holder.send("slow");
    let mut other = server.connect();
    other.expect_welcome();
    assert_eq!(other.round_trip("quick one"), "eno kciuq");
    assert_eq!(other.round_trip("and another"), "rehtona dna");
    while started.elapsed() < hold {
        thread::sleep(Duration::from_millis(20));
    }
    holder.send("ly\n");
    assert_eq!(holder.line(), "ylwols");
}

/// A client that writes up to 100 MiB of lines and never reads: the server must stop
/// reading it once its replies back up (the writer blocks), keep its RSS under
/// `max_rss_mib`, and still serve another client.
pub fn backpressure(server: &Server, max_rss_mib: u64) {
    let mut flooder = server.connect();
    flooder.expect_welcome();
    let mut stream = flooder.stream.try_clone().unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let writer = thread::spawn(move || {
        let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n";
        let chunk: Vec<u8> = line
            .iter()
            .copied()
            .cycle()
            .take(line.len() * 900)
            .collect();
        let mut written = 0usize;
        while written < 100 << 20 {
            match stream.write(&chunk) {
                Ok(n) => written += n,
                // Blocked for 2 s: the server has stopped reading us.
                Err(_) => break,
            }
        }
        written
    });
    let mut peak = 0;
    while !writer.is_finished() {
        peak = peak.max(super::rss_kib(server.pid()));
        thread::sleep(Duration::from_millis(20));
    }
    let written = writer.join().unwrap();
    peak = peak.max(super::rss_kib(server.pid()));
    assert!(
        written < 100 << 20,
        "the server read all 100 MiB without the flooder reading a reply"
    );
    assert!(
        peak < max_rss_mib << 10,
        "server RSS peaked at {peak} KiB with a flooding client"
    );
    let mut other = server.connect();
    other.expect_welcome();
    assert_eq!(other.round_trip("still served"), "devres llits");
    // The replies the flooder never read are all there and correct, in order.
    flooder.set_read_timeout(Duration::from_secs(5));
    let first = flooder.line();
    assert_eq!(
        first,
        "zyxwvutsrqponmlkjihgfedcba9876543210zyxwvutsrqponmlkjihgfedcba9876543210"
    );
}

/// The lesson started with RLIMIT_NOFILE = `limit`, and more clients than fit: the
/// server neither dies nor spins (its CPU time over 2 s is small), keeps serving the
/// clients it has, and serves the waiting ones once others leave.
pub fn emfile(exe: &str, args: &[&str], limit: u64) {
    let cmd = super::single_thread::nofile_command(exe, args, limit, limit);
    let mut server = Server::spawn(cmd);
    let pid = server.pid();
    // Fill the fd table: every fd the server can still open goes to a client.
    let mut served = Vec::new();
    let mut waiting = Vec::new();
    for _ in 0..limit + 20 {
        let mut c = super::Client::connect(server.addr);
        // Silent, and the server's fd table is full: this client waits in the backlog.
        // Silent with room left: the server is only slow (a loaded machine); its welcome
        // is on the way.
        if c.silent_for(Duration::from_millis(300)) && super::fd_count(pid) as u64 >= limit {
            waiting.push(c);
            if waiting.len() == 5 {
                break;
            }
        } else {
            c.expect_welcome();
            served.push(c);
        }
    }
    assert!(
        waiting.len() == 5,
        "the fd table never filled: {} served",
        served.len()
    );
    server
        .log
        .wait_line("EMFILE reported", |l| l.contains("EMFILE"));
    // While out of fds: no spinning, and the connected clients are still served.
    let before = super::cpu_ticks(pid);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        for c in served.iter_mut().take(3) {
            assert_eq!(c.round_trip("busy"), "ysub");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let used = super::cpu_ticks(pid) - before;
    // 2 s of spinning would be ~200 ticks; a quiet loop uses a handful.
    assert!(
        used < 50,
        "server used {used} clock ticks of CPU in 2 s while out of fds"
    );
    assert!(
        server.wait_exit(Duration::from_millis(1)).is_none(),
        "server died"
    );
    // Clients leave; the waiting ones get their welcome.
    for mut c in served.drain(..10) {
        c.send("q\n");
        assert!(c.closed());
    }
    for c in waiting.iter_mut() {
        c.expect_welcome();
        assert_eq!(c.round_trip("finally"), "yllanif");
    }
    // Out of fds, accept is not retried in a loop: EMFILE is reported once per pause
    // (a few times in all), not once per spin.
    let reports = server.log.count(|l| l.contains("EMFILE"));
    assert!(reports < 50, "EMFILE reported {reports} times");
}

/// Ctrl-C: with one client gone and one still connected, SIGINT makes the server stop
/// accepting, close the connected client (it reads EOF), print the stop summary as its
/// last line and exit 0 (not die of the signal).
pub fn stops_on_ctrl_c(exe: &str) {
    let mut server = Server::start(exe, &[]);
    let mut gone = server.connect();
    gone.expect_welcome();
    // EOF, not q: after q the server lingers until the client closes, and counts it open.
    gone.finish();
    assert!(gone.closed());
    let mut open = server.connect();
    open.expect_welcome();
    assert_eq!(open.round_trip("stop"), "pots");
    server.signal(libc::SIGINT);
    assert!(open.closed(), "the connected client reads EOF");
    let status = server
        .wait_exit(DEADLINE)
        .expect("the server exits after SIGINT");
    assert_eq!(status.code(), Some(0), "exit status after SIGINT: {status}");
    let summary = server
        .log
        .wait_line("the stop summary", |l| l.contains(" stopping · "));
    let program = std::path::Path::new(exe)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('-', " ");
    assert_eq!(
        summary,
        format!("{program} stopping · connections served: 2 · still open, closed now: 1")
    );
    let lines = wait_for("the log to end", DEADLINE, || {
        let lines = server.log.lines();
        (lines.last() == Some(&summary)).then_some(lines)
    });
    assert_eq!(lines.last(), Some(&summary), "the summary is the last line");
}
