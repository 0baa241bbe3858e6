//! `--mistake NAME` in the blocking lessons 01–05: for each mistake, one test runs the same
//! scenario twice, with the mistake switched on (the failure is observed) and off (it
//! passes). Counts are asserted, never times; a mistake that shows only by chance is driven
//! until it shows, within a bounded number of attempts.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::echo_suite as cases;
use common::single_thread::nofile_command;
use common::{
    children, fd_count, load, mistake_args, proc_state, wait_fd_count, wait_for, wait_in_accept,
    Client, Server, DEADLINE,
};

/// `--help` lists every mistake of a lesson with its line; an unknown name is a usage
/// error (exit 2) that lists the valid ones.
#[test]
fn help_lists_the_mistakes_and_an_unknown_one_exits_2() {
    // clap lists each name, then its doc comment (aligned: so they are looked for apart).
    let lessons: [(&str, &[&str]); 5] = [
        (
            exe!("lesson-01"),
            &["- no-reuseaddr:", "no SO_REUSEADDR: a restart"],
        ),
        (
            exe!("lesson-02"),
            &["- leak-fd:", "no close: one fd leaked"],
        ),
        (
            exe!("lesson-03"),
            &[
                "- one-read-one-line:",
                "assumes one read is one line",
                "- plain-close:",
                "close with unread input",
                "- no-drain:",
                "then close at once, input unread",
            ],
        ),
        (
            exe!("lesson-04"),
            &[
                "- no-reap:",
                "no SIGCHLD handler",
                "- reap-once:",
                "one waitpid per SIGCHLD",
                "- parent-keeps-conn:",
                "the parent keeps its copy",
                "- child-keeps-listener:",
                "the child keeps the listener",
                "- sa-restart:",
                "SA_RESTART on SIGINT/SIGTERM",
            ],
        ),
        (
            exe!("lesson-05"),
            &["- unbounded:", "a thread per client without"],
        ),
    ];
    for (exe, names) in lessons {
        let out = Command::new(exe).arg("--help").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{exe}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("--mistake <NAME>"), "{exe}:\n{help}");
        for name in names {
            assert!(help.contains(name), "{exe} --help lacks {name:?}:\n{help}");
        }
    }
    let out = Command::new(exe!("lesson-03"))
        .args(["--mistake", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'nope' for '--mistake <NAME>'")
            && stderr.contains("[possible values: one-read-one-line, plain-close, no-drain]"),
        "{stderr}"
    );
}

/// The banner's extra line for the mistake switched on (`  MISTAKE ON: --mistake NAME
/// (its help). Run without --mistake for the fix.`), waited for: it follows the banner.
fn mistake_note(server: &Server) -> String {
    server.log.wait_line("the MISTAKE ON line", |l| {
        l.starts_with("  MISTAKE ON: --mistake ")
    })
}

/// Without `--mistake` there is no such line; called once the server has served a client,
/// so its banner is complete.
fn assert_no_note(server: &Server) {
    assert_eq!(server.log.count(|l| l.contains("MISTAKE ON")), 0);
}

// ---------------------------------------------------------------------------------------
// 01 no-reuseaddr
// ---------------------------------------------------------------------------------------

/// Runs lesson 01 on `port` with `args`, expecting it to fail at once (in bind, the port
/// being taken), and returns its exit code and stderr. One that listens instead is killed
/// after [`DEADLINE`] (code None).
fn run_01_failing(port: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(exe!("lesson-01"))
        .args(["-p", port])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = catch_unwind(AssertUnwindSafe(|| {
        wait_for("lesson 01 to fail", DEADLINE, || child.try_wait().unwrap())
    }));
    if status.is_err() {
        let _ = child.kill();
    }
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
    let _ = child.wait();
    (status.ok().and_then(|s| s.code()), stderr)
}

/// A restart while the last run's connection sits in TIME_WAIT: with the mistake (either
/// spelling) bind fails with EADDRINUSE; without it the restart works at once.
#[test]
fn lesson_01_no_reuseaddr_restart_fails_while_time_wait_lasts() {
    let mut first = Server::start(exe!("lesson-01"), &[]);
    let port = first.addr.port().to_string();
    let mut c = first.connect();
    assert!(c.line().starts_with("Hello there! "));
    assert!(c.closed());
    assert_eq!(first.wait_exit(DEADLINE).and_then(|s| s.code()), Some(0));
    assert_no_note(&first);

    for spelling in [&["--mistake", "no-reuseaddr"][..], &["--no-reuseaddr"]] {
        let (code, stderr) = run_01_failing(&port, spelling);
        assert_eq!(code, Some(1), "{spelling:?}: {stderr}");
        assert!(
            stderr.contains("bind: EADDRINUSE (Address already in use)"),
            "{spelling:?}: {stderr}"
        );
    }

    let mut again = Server::start(exe!("lesson-01"), &["-p", &port]);
    let mut c = again.connect();
    assert!(c.line().starts_with("Hello there! "));
    assert_eq!(again.wait_exit(DEADLINE).and_then(|s| s.code()), Some(0));
}

// ---------------------------------------------------------------------------------------
// 02 leak-fd
// ---------------------------------------------------------------------------------------

/// The lowest fd number `pid` does not use.
fn lowest_free_fd(pid: u32) -> usize {
    let used: Vec<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    (0..).find(|n| !used.contains(n)).unwrap()
}

/// Lesson 02 under RLIMIT_NOFILE = 16. Each client reads its greeting; with the mistake the
/// server's fd count grows by exactly one per client (and the client never sees EOF) until
/// accept fails with EMFILE and the next client is left unanswered; without it, twice as
/// many clients each get greeting and EOF, the fd count stays where it started and EMFILE
/// never shows.
fn lesson_02_fds(leak: bool) {
    const LIMIT: usize = 16;
    let args = &mistake_args(leak, "leak-fd");
    let server = Server::spawn(nofile_command(
        exe!("lesson-02"),
        args,
        LIMIT as u64,
        LIMIT as u64,
    ));
    let pid = server.pid();
    let start = fd_count(pid);
    let mut open = Vec::new();
    if leak {
        assert!(mistake_note(&server).contains("--mistake leak-fd (no close"));
        // Until every fd number below the limit is taken (fds inherited above it count in
        // /proc but take no slot): each client costs exactly one more fd.
        let mut leaked = 0;
        while lowest_free_fd(pid) < LIMIT {
            assert!(leaked < LIMIT, "the fd table never filled");
            let mut c = server.connect();
            assert!(c.line().starts_with("Hello there! "));
            leaked += 1;
            wait_fd_count(pid, start + leaked); // one more fd per client, never fewer
            assert!(
                c.silent_for(Duration::from_millis(50)),
                "no EOF: never closed"
            );
            open.push(c);
        }
        // Full: accept fails with EMFILE (at once: it takes the fd before it waits), and
        // the next client is accepted by the kernel, never by the server.
        server
            .log
            .wait_line("accept's EMFILE", |l| l.contains("accept: EMFILE"));
        let mut last = server.connect();
        assert!(last.silent_for(Duration::from_millis(300)), "no greeting");
        assert_eq!(fd_count(pid), start + leaked);
        println!("leak-fd: {leaked} clients leaked {leaked} fds, then accept: EMFILE");
    } else {
        for _ in 0..2 * LIMIT {
            let mut c = server.connect();
            assert!(c.line().starts_with("Hello there! "));
            assert!(c.closed(), "EOF after the greeting");
            wait_fd_count(pid, start);
        }
        assert_eq!(server.log.count(|l| l.contains("EMFILE")), 0);
        assert_no_note(&server);
    }
}

#[test]
fn lesson_02_leak_fd_grows_one_fd_per_client_until_emfile() {
    lesson_02_fds(true);
    lesson_02_fds(false);
}

// ---------------------------------------------------------------------------------------
// 03 one-read-one-line, plain-close
// ---------------------------------------------------------------------------------------

/// How often a chance-driven scenario is tried before the test gives up.
const ATTEMPTS: usize = 5;

/// Three lines in one write, and half a line on its own segment. Returns the wrong answers
/// seen: the three replies out of line, and a reply to the half line.
fn one_read_one_line_wrong_answers(server: &Server) -> usize {
    let mut wrong = 0;
    let mut c = server.connect();
    c.stream.set_nodelay(true).unwrap();
    c.expect_welcome();
    c.send("one\ntwo\nthree\n");
    let replies = [c.line(), c.line(), c.line()];
    wrong += usize::from(replies != ["eno", "owt", "eerht"]);
    c.send("sp");
    c.stream.flush().unwrap();
    if c.silent_for(Duration::from_millis(100)) {
        c.send("lit\n");
        wrong += usize::from(c.line() != "tilps");
    } else {
        wrong += 1; // half a line was answered
    }
    c.send("q\n");
    let _ = c.rest();
    wrong
}

#[test]
fn lesson_03_one_read_one_line_answers_coalesced_and_split_lines_wrongly() {
    let server = Server::start(exe!("lesson-03"), &["--mistake", "one-read-one-line"]);
    assert!(
        mistake_note(&server).contains("--mistake one-read-one-line (assumes one read is one line")
    );
    let tries = (1..=ATTEMPTS)
        .find(|_| one_read_one_line_wrong_answers(&server) > 0)
        .unwrap_or_else(|| panic!("all {ATTEMPTS} tries were answered right"));
    println!("one-read-one-line: wrong answers seen in try {tries}");

    // The right code: the same scenario, and the suite's split and coalesced cases, pass.
    let server = Server::start(exe!("lesson-03"), &[]);
    for _ in 0..ATTEMPTS {
        assert_eq!(one_read_one_line_wrong_answers(&server), 0);
    }
    cases::split_lines(Server::start(exe!("lesson-03"), &[]));
    cases::coalesced_lines(Server::start(exe!("lesson-03"), &[]));
}

/// The suite's q-then-junk case (1,000 lines, q, then 1 MB the server never reads, each
/// run 10 tries): with a plain close it fails (replies lost to the reset) within
/// [`ATTEMPTS`] runs; with the lingering close it passes.
#[test]
fn lesson_03_plain_close_loses_the_replies_before_q() {
    let failed_run = (1..=ATTEMPTS).find(|_| {
        let server = Server::start(exe!("lesson-03"), &["--mistake", "plain-close"]);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            cases::q_then_junk_keeps_replies(server)
        }));
        match outcome {
            Ok(()) => false,
            Err(panic) => {
                let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
                assert!(
                    text.contains("a reset threw the rest away"),
                    "failed for another reason: {text}"
                );
                println!("plain-close: {text}");
                true
            }
        }
    });
    assert!(
        failed_run.is_some(),
        "no reply was lost in {ATTEMPTS} runs of 10 tries"
    );
    cases::q_then_junk_keeps_replies(Server::start(exe!("lesson-03"), &[]));
}

// ---------------------------------------------------------------------------------------
// 04 no-reap, reap-once, parent-keeps-conn, child-keeps-listener, sa-restart
// ---------------------------------------------------------------------------------------

/// Connects `n` clients (each welcomed, so each has its child), then closes them all at
/// once: their children read EOF and exit together, so their SIGCHLDs may coalesce.
fn all_leave_together(server: &Server, n: usize) {
    let clients: Vec<Client> = (0..n)
        .map(|_| {
            let mut c = server.connect();
            c.expect_welcome();
            c
        })
        .collect();
    drop(clients);
}

/// True if `pid`'s SIGCHLD is pending (SigPnd or ShdPnd of /proc/PID/status).
fn sigchld_pending(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().any(|l| {
        let Some((key, mask)) = l.split_once(':') else {
            return false;
        };
        matches!(key, "SigPnd" | "ShdPnd")
            && u64::from_str_radix(mask.trim(), 16).unwrap_or(0) & (1 << (libc::SIGCHLD - 1)) != 0
    })
}

/// Once every child of `pid` has exited and every SIGCHLD they raised has been handled
/// (none pending, the parent asleep again in accept), the zombies left are there to stay:
/// returns how many.
///
/// A child is a zombie a moment before its SIGCHLD is sent (the kernel's exit_notify), so
/// one calm look can catch a zombie that is about to be reaped: the same count must be seen
/// in five looks in a row.
fn settled_zombies(pid: u32) -> usize {
    let mut seen: Vec<usize> = Vec::new();
    wait_for(
        "every child exited and every SIGCHLD handled",
        DEADLINE,
        || {
            let kids = children(pid);
            let all_exited = kids.iter().all(|&k| proc_state(k).is_none_or(|s| s == 'Z'));
            let calm = !sigchld_pending(pid) && proc_state(pid) == Some('S');
            if !(all_exited && calm) || seen.last().is_some_and(|&n| n != kids.len()) {
                seen.clear();
            }
            if all_exited && calm {
                seen.push(kids.len());
            }
            (seen.len() >= 5).then_some(kids.len())
        },
    )
}

/// `--mistake no-reap` (and its older spelling `--no-reap`): ten children that finished
/// are ten zombies. Without it: none.
#[test]
fn lesson_04_no_reap_leaves_every_child_a_zombie() {
    for args in [&["--mistake", "no-reap"][..], &["--no-reap"], &[]] {
        let server = Server::start(exe!("lesson-04"), args);
        all_leave_together(&server, 10);
        if args.is_empty() {
            assert_no_note(&server);
        } else {
            assert!(mistake_note(&server).contains("--mistake no-reap (no SIGCHLD handler"));
        }
        let expected = if args.is_empty() { 0 } else { 10 };
        assert_eq!(settled_zombies(server.pid()), expected, "{args:?}");
    }
}

/// `--mistake reap-once` (Stevens' tcpserv03): 20 children exit together, again and again
/// until zombies show (coalesced SIGCHLDs, one waitpid each), within [`ATTEMPTS`] rounds.
/// Without it the same rounds leave no zombie (tcpserv04's waitpid loop).
#[test]
fn lesson_04_reap_once_leaves_zombies_when_sigchlds_coalesce() {
    load::raise_nofile();
    let server = Server::start(exe!("lesson-04"), &["--mistake", "reap-once"]);
    let mut rounds = 0;
    let mut zombies = 0;
    while zombies == 0 && rounds < ATTEMPTS {
        rounds += 1;
        all_leave_together(&server, 20);
        zombies = settled_zombies(server.pid());
    }
    assert!(zombies > 0, "no zombie after {rounds} rounds of 20");
    println!("reap-once: {zombies} zombies after {rounds} rounds of 20 children");

    let server = Server::start(exe!("lesson-04"), &[]);
    for _ in 0..rounds.max(2) {
        all_leave_together(&server, 20);
        assert_eq!(settled_zombies(server.pid()), 0);
    }
}

/// A client that ends first (half-close: shutdown(SHUT_WR), as `nc -N` does at the end of
/// its input) waits for the server's EOF. With `--mistake parent-keeps-conn` its child has
/// closed and exited, but the parent's copy keeps the connection open: no EOF, and the
/// parent holds one more fd per client. Without it: EOF, and the fd count is steady.
fn lesson_04_ends_first(keep: bool) {
    let args = &mistake_args(keep, "parent-keeps-conn");
    let server = Server::start(exe!("lesson-04"), args);
    let pid = server.pid();
    let start = fd_count(pid);
    for i in 1..=3 {
        let mut c = server.connect();
        c.expect_welcome();
        assert_eq!(c.round_trip("bye"), "eyb");
        c.finish();
        // The child has read the EOF, closed its copy and is gone.
        wait_for("the child's goodbye", DEADLINE, || {
            let left = server.log.count(|l| l.contains("(left without q)"));
            (left == i).then_some(())
        });
        if keep {
            assert!(c.silent_for(Duration::from_millis(300)), "EOF came");
            wait_fd_count(pid, start + i);
        } else {
            assert!(c.closed(), "EOF after the child's close");
            wait_fd_count(pid, start);
        }
    }
}

#[test]
fn lesson_04_parent_keeps_conn_client_never_sees_eof() {
    lesson_04_ends_first(true);
    lesson_04_ends_first(false);
}

/// A client is being served when the server gets SIGTERM and stops. With `--mistake
/// child-keeps-listener` its child still holds the listener: a new client connects (the
/// kernel queues it in the backlog) but is never welcomed. Without it: refused.
fn lesson_04_after_the_stop(keep: bool) {
    let args = &mistake_args(keep, "child-keeps-listener");
    let mut server = Server::start(exe!("lesson-04"), args);
    let addr = server.addr;
    let mut c = server.connect();
    c.expect_welcome();
    wait_in_accept(server.pid());
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(DEADLINE).is_some(), "the server stops");
    match TcpStream::connect(addr) {
        Ok(mut late) => {
            assert!(
                keep,
                "a stopped server without the mistake still accepts connections"
            );
            late.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let silent = std::io::Read::read(&mut late, &mut [0u8; 64]).is_err_and(|e| {
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            });
            assert!(silent, "no welcome, and no close: queued, never accepted");
        }
        Err(e) => {
            assert!(!keep, "with child-keeps-listener the port was closed: {e}");
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        }
    }
    // The served client is not disturbed either way.
    assert_eq!(c.round_trip("still"), "llits");
    c.send("q\n");
    assert!(c.closed());
}

#[test]
fn lesson_04_child_keeps_listener_queues_clients_after_the_stop() {
    lesson_04_after_the_stop(true);
    lesson_04_after_the_stop(false);
}

/// SIGTERM while the server sleeps in accept. With `--mistake sa-restart` the kernel
/// restarts accept: the server is still running after the signal, and stops only once a
/// client arrives (the accept returns and the loop sees the flag). Without it the accept
/// fails with EINTR and the server stops at once.
fn lesson_04_sigterm_in_accept(restart: bool) {
    let args = &mistake_args(restart, "sa-restart");
    let mut server = Server::start(exe!("lesson-04"), args);
    wait_in_accept(server.pid());
    server.signal(libc::SIGTERM);
    if restart {
        let stopped = server.wait_exit(Duration::from_millis(500));
        assert!(stopped.is_none(), "stopped on SIGTERM despite SA_RESTART");
        let _nudge = TcpStream::connect(server.addr).expect("still listening");
    }
    let status = server.wait_exit(DEADLINE).expect("the server stops");
    assert!(status.success(), "{status:?}");
    server
        .log
        .wait_line("the stop summary", |l| l.contains(" stopping · "));
}

#[test]
fn lesson_04_sa_restart_stops_only_at_the_next_client() {
    lesson_04_sigterm_in_accept(true);
    lesson_04_sigterm_in_accept(false);
}

// ---------------------------------------------------------------------------------------
// 05 unbounded, racy-counter
// ---------------------------------------------------------------------------------------

/// Threads of `pid` (the Threads: line of /proc/PID/status).
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// 15 clients at once against `--max-clients 5`: with `--mistake unbounded` each gets a
/// thread (1 + 15 threads); without it 5 are served, 10 are told `error: server full`, and
/// the threads stay at 1 + 5.
fn lesson_05_fifteen(unbounded: bool) {
    let mut args = vec!["--max-clients", "5"];
    if unbounded {
        args.extend(["--mistake", "unbounded"]);
    }
    let server = Server::start(exe!("lesson-05"), &args);
    let pid = server.pid();
    assert_eq!(threads(pid), 1);
    let mut served = Vec::new();
    let mut refused = 0;
    for _ in 0..15 {
        let mut c = server.connect();
        match c.line().as_str() {
            "Welcome buddy!" => served.push(c),
            "error: server full" => refused += 1,
            other => panic!("unexpected first line {other:?}"),
        }
    }
    let (want_served, want_threads) = if unbounded { (15, 16) } else { (5, 6) };
    assert_eq!((served.len(), refused), (want_served, 15 - want_served));
    wait_for("the thread count", DEADLINE, || {
        (threads(pid) == want_threads).then_some(())
    });
    for (i, c) in served.iter_mut().enumerate() {
        let line = format!("n{i}");
        assert_eq!(c.round_trip(&line), line.chars().rev().collect::<String>());
    }
    assert_eq!(threads(pid), want_threads);
}

#[test]
fn lesson_05_unbounded_grows_a_thread_per_client_past_max_clients() {
    lesson_05_fifteen(true);
    lesson_05_fifteen(false);
}

/// The counts in the `… · N served so far` lines: with `fetch_add` each is unique (1, 2, …);
/// two threads that loaded the same value both print the same count, one update lost.
fn served_counts(server: &Server) -> Vec<usize> {
    server
        .log
        .lines()
        .iter()
        .filter_map(|l| {
            l.split(" · ")
                .last()?
                .strip_suffix(" served so far")?
                .parse()
                .ok()
        })
        .collect()
}

/// Rounds of 50 clients leaving at once (their threads end together) until a count is
/// printed twice, at most [`ATTEMPTS`] rounds: `--mistake racy-counter` loses updates.
/// Without it the same rounds print each count once, and the last is the number served.
#[test]
fn lesson_05_racy_counter_loses_updates_when_threads_end_together() {
    fn rounds(server: &Server, max: usize) -> (usize, usize) {
        let mut clients = 0;
        for round in 1..=max {
            all_leave_together(server, 50);
            clients += 50;
            wait_for("every thread's goodbye", DEADLINE, || {
                (served_counts(server).len() == clients).then_some(())
            });
            let mut counts = served_counts(server);
            counts.sort_unstable();
            counts.dedup();
            let lost = clients - counts.len();
            if lost > 0 || round == max {
                return (round, lost);
            }
        }
        unreachable!()
    }
    let server = Server::start(exe!("lesson-05"), &["--mistake", "racy-counter"]);
    let (round, lost) = rounds(&server, ATTEMPTS);
    assert!(lost > 0, "no update lost in {round} rounds of 50");
    println!("racy-counter: {lost} updates lost in {round} rounds of 50");

    let server = Server::start(exe!("lesson-05"), &[]);
    let (_, lost) = rounds(&server, round);
    assert_eq!(lost, 0);
    assert_eq!(served_counts(&server).into_iter().max(), Some(50 * round));
}
