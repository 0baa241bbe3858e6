//! Lessons 04 (a process per client) and 05 (a thread per client): load, concurrency, fd
//! hygiene, reaping and zombies, the client bound, and what strace shows of each. The echo
//! protocol itself is checked by tests/echo.rs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::echo_suite::{fd_count_steady, partial_line_holder};
use common::{
    children, load, proc_state, wait_for, wait_in_accept, Client, Server, Traced, DEADLINE,
};

// ---------------------------------------------------------------------------------------
// Both lessons: many clients at once, a slow client, fd hygiene.
// ---------------------------------------------------------------------------------------

#[test]
fn lesson_04_200_clients_20_round_trips() {
    let server = Server::start(exe!("lesson-04"), &[]);
    load::round_trips(server.addr, 200, 20);
}

#[test]
fn lesson_05_200_clients_20_round_trips() {
    let server = Server::start(exe!("lesson-05"), &[]);
    load::round_trips(server.addr, 200, 20);
}

#[test]
fn lesson_04_partial_line_does_not_block_others() {
    let server = Server::start(exe!("lesson-04"), &[]);
    partial_line_holder(&server, Duration::from_secs(3));
}

#[test]
fn lesson_05_partial_line_does_not_block_others() {
    let server = Server::start(exe!("lesson-05"), &[]);
    partial_line_holder(&server, Duration::from_secs(3));
}

/// The parent closes its copy of every connection: after 500 clients its fd count is back
/// where it started.
#[test]
fn lesson_04_parent_fd_count_steady() {
    let server = Server::start(exe!("lesson-04"), &[]);
    fd_count_steady(&server, 500);
    assert_no_bad_fd(&server);
}

/// Every thread closes its connection on every path (one fd table for all threads).
#[test]
fn lesson_05_fd_count_steady() {
    let server = Server::start(exe!("lesson-05"), &[]);
    fd_count_steady(&server, 500);
    assert_no_bad_fd(&server);
}

/// No call was made on a closed fd (the talk's thread version read on after `q` had
/// closed the socket, and got EBADF).
fn assert_no_bad_fd(server: &Server) {
    assert_eq!(
        server.log.count(|l| l.contains("EBADF")),
        0,
        "{:?}",
        server.log.lines()
    );
}

// ---------------------------------------------------------------------------------------
// Lesson 04: reaping, zombies, the summary on SIGTERM.
// ---------------------------------------------------------------------------------------

/// Connects `n` clients (each welcomed, so each has its child), then has all of them send
/// `q` at once, and waits until each connection is closed.
fn all_quit_together(server: &Server, n: usize) {
    load::raise_nofile();
    let mut clients: Vec<Client> = (0..n)
        .map(|_| {
            let mut c = server.connect();
            c.expect_welcome();
            c
        })
        .collect();
    assert_eq!(children(server.pid()).len(), n, "one child per client");
    for c in clients.iter_mut() {
        c.send("q\n");
    }
    for c in clients.iter_mut() {
        assert!(c.closed());
    }
}

/// Stops the server with `signal`: it exits 0 after its one-line summary, whose counts
/// must be `served` and `reaped`.
fn stop_with_summary(mut server: Server, signal: i32, served: usize, reaped: usize) {
    wait_in_accept(server.pid());
    server.signal(signal);
    let status = server.wait_exit(DEADLINE).expect("exits on the signal");
    assert!(status.success(), "exit status {status:?}");
    let summary = format!(
        "lesson 04 stopping · connections served: {served} · children reaped: {reaped} · \
         not reaped (still running, or zombies): {}",
        served - reaped
    );
    server.log.wait_line(&summary, |l| l == summary);
}

/// Children that exit together raise SIGCHLDs that coalesce; the handler's waitpid loop
/// still reaps every one: no zombie is left, and the summary counts them all.
#[test]
fn lesson_04_reaps_every_child() {
    let server = Server::start(exe!("lesson-04"), &[]);
    let pid = server.pid();
    all_quit_together(&server, 200);
    wait_for("every child reaped", DEADLINE, || {
        children(pid).is_empty().then_some(())
    });
    stop_with_summary(server, libc::SIGTERM, 200, 200);
}

/// SIGTERM stops the parent only: a child in the middle of a conversation finishes it. The
/// children closed their copies of the listener, so once the parent is gone the port
/// refuses connections (a child still holding it would leave new clients queued, unanswered).
#[test]
fn lesson_04_children_outlive_the_parent_but_not_the_listener() {
    let server = Server::start(exe!("lesson-04"), &[]);
    let addr = server.addr;
    let mut c = server.connect();
    c.expect_welcome();
    stop_with_summary(server, libc::SIGTERM, 1, 0);
    let refused = std::net::TcpStream::connect(addr).expect_err("nobody listens any more");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(c.round_trip("orphan"), "nahpro");
    c.send("q\n");
    assert!(c.closed());
}

/// `--no-reap`: the classic failure. Every finished child stays a zombie (state Z).
#[test]
fn lesson_04_no_reap_leaves_zombies() {
    let server = Server::start(exe!("lesson-04"), &["--no-reap"]);
    let pid = server.pid();
    let banner = server
        .log
        .wait_line("how to see zombies", |l| l.contains("--ppid"));
    assert!(
        banner.contains(&format!("ps -o pid,stat,cmd --ppid {pid}")),
        "{banner}"
    );
    all_quit_together(&server, 200);
    let zombies = wait_for("200 zombies", DEADLINE, || {
        let kids = children(pid);
        let zombies = kids.iter().filter(|&&k| proc_state(k) == Some('Z')).count();
        (zombies == 200).then_some(zombies)
    });
    assert_eq!(zombies, 200);
    stop_with_summary(server, libc::SIGINT, 200, 0);
}

// ---------------------------------------------------------------------------------------
// Lesson 05: the bound on clients.
// ---------------------------------------------------------------------------------------

/// With `--max-clients 10`, the eleventh concurrent client is told and closed, the ten keep
/// working, and a slot freed by a leaving client is taken by the next one.
#[test]
fn lesson_05_max_clients_refuses_the_eleventh() {
    let server = Server::start(exe!("lesson-05"), &["--max-clients", "10"]);
    let mut ten: Vec<Client> = (0..10)
        .map(|_| {
            let mut c = server.connect();
            c.expect_welcome();
            c
        })
        .collect();
    let mut eleventh = server.connect();
    assert_eq!(eleventh.line(), "error: server full");
    assert!(eleventh.closed());
    server
        .log
        .wait_line("refusal logged", |l| l.contains("client refused: "));
    for (i, c) in ten.iter_mut().enumerate() {
        let reply = c.round_trip(&format!("still here {i}"));
        assert_eq!(reply, format!("{i} ereh llits"));
    }
    // One leaves; once its thread has ended, the next client is served.
    let mut leaving = ten.pop().unwrap();
    leaving.send("q\n");
    assert!(leaving.closed());
    server
        .log
        .wait_line("the departure", |l| l.starts_with("client disconnected: "));
    let mut next = server.connect();
    next.expect_welcome();
    assert_eq!(next.round_trip("my turn"), "nrut ym");
    // Full again.
    let mut twelfth = server.connect();
    assert_eq!(twelfth.line(), "error: server full");
    assert!(twelfth.closed());
}

// ---------------------------------------------------------------------------------------
// Traces.
// ---------------------------------------------------------------------------------------

/// SIGKILLs a process when dropped (a no-op if it has exited and was reaped).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if proc_state(self.0).is_some_and(|s| s != 'Z') {
            // SAFETY: kill(2) on a pid this test started (through make and strace).
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}

/// The pid strace prints at the start of a line (`-f` traces).
fn pid_of(line: &str) -> u32 {
    line.split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

/// The pid or tid a call line returned (`... = 4242` → 4242); None for `= -1 ECHILD …`.
fn returned(line: &str) -> Option<u32> {
    line.rsplit("= ")
        .next()
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
}

/// The listener as `-yy` shows it once it is bound (`3<TCP:[127.0.0.1:4000]>`), from the
/// listen line.
fn listener_of(lines: &[String]) -> String {
    let listen = lines
        .iter()
        .find(|l| common::syscall_of(l).as_deref() == Some("listen"))
        .expect("a listen call");
    let arg = listen.split_once('(').unwrap().1;
    arg.split_once(", ").unwrap().0.to_string()
}

/// Indexes of the lines that are calls to `name`.
fn calls_to(lines: &[String], name: &str) -> Vec<usize> {
    (0..lines.len())
        .filter(|&i| common::syscall_of(&lines[i]).as_deref() == Some(name))
        .collect()
}

#[test]
fn lesson_04_trace_fork_close_sigchld_wait4() {
    let traced = Traced::start(exe!("lesson-04"), &[]);
    for word in ["one", "two"] {
        let mut c = Client::connect(traced.server.addr);
        c.expect_welcome();
        assert_eq!(c.round_trip(word), word.chars().rev().collect::<String>());
        c.send("q\n");
        assert!(c.closed());
    }
    let parent = traced.lesson_pid();
    wait_for("both children reaped", DEADLINE, || {
        children(parent).is_empty().then_some(())
    });
    let idle_in_accept = wait_in_accept(parent);
    let trace = traced.stop(libc::SIGTERM);
    assert!(trace.status.success(), "status {:?}", trace.status);
    // (A child's SIGCHLD may come before or after the next accept returns.)
    trace.assert_in_order(&[
        "socket", "bind", "listen", "accept", "clone", "close", "accept", "clone", "close", "wait4",
    ]);
    trace.assert_absent(&["clone3", "poll", "select", "epoll_wait"]);
    let lines: Vec<String> = trace.lines().into_iter().map(String::from).collect();
    let all = lines.join("\n");
    assert_eq!(pid_of(&lines[0]), parent);
    let listener = listener_of(&lines);
    let by = |pid: u32, what: &str| lines.iter().any(|l| pid_of(l) == pid && l.contains(what));

    // fork is clone with SIGCHLD as the exit signal, called by the parent; the parent's next
    // call (apart from the handler's wait4, if an earlier child's SIGCHLD comes in between)
    // is the close of its copy of the connection.
    // (A fork that a SIGCHLD interrupts shows as `= ? ERESTARTNOINTR` and is repeated by the
    // kernel itself: count the ones that returned a pid.)
    let mut forks = calls_to(&lines, "clone");
    forks.retain(|&i| returned(&lines[i]).is_some());
    assert_eq!(forks.len(), 2, "one fork per client:\n{all}");
    for &i in &forks {
        let fork = &lines[i];
        assert_eq!(pid_of(fork), parent, "{fork}");
        assert!(fork.contains("SIGCHLD"), "{fork}");
        assert!(!fork.contains("CLONE_VM"), "a fork, not a thread: {fork}");
        let next = lines[i + 1..]
            .iter()
            .find(|l| {
                pid_of(l) == parent && common::syscall_of(l).is_some_and(|call| call != "wait4")
            })
            .unwrap();
        assert!(
            common::syscall_of(next).as_deref() == Some("close") && next.contains("->"),
            "the parent's next call closes the connection: {next}"
        );
        let kid = returned(fork).expect("fork returns the child's pid");
        // The child closes the listener, serves its client, and exits.
        assert!(
            by(kid, &format!("close({listener})")),
            "child {kid} does not close the listener {listener}:\n{all}"
        );
        assert!(by(kid, "Welcome buddy!"), "{all}");
        assert!(by(kid, "exit_group(0)"), "{all}");
        // The parent gets its SIGCHLD and reaps it with wait4(-1, ..., WNOHANG).
        assert!(
            by(parent, &format!("si_pid={kid},")),
            "no SIGCHLD for {kid}:\n{all}"
        );
        assert!(
            lines.iter().any(|l| pid_of(l) == parent
                && l.contains("wait4(-1,")
                && l.contains("WNOHANG")
                && returned(l) == Some(kid)),
            "child {kid} not reaped by wait4:\n{all}"
        );
    }
    // The parent closes the listener only as it exits.
    let closes = lines
        .iter()
        .filter(|l| pid_of(l) == parent && l.contains(&format!("close({listener})")))
        .count();
    assert!(closes <= 1, "{all}");
    // SIGTERM interrupted the idle accept (no SA_RESTART) and the loop stopped.
    assert!(by(parent, "--- SIGTERM"), "{all}");
    assert!(
        !idle_in_accept
            || lines
                .iter()
                .any(|l| pid_of(l) == parent && l.contains("accept(") && l.contains("ERESTARTSYS")),
        "no interrupted accept:\n{all}"
    );
}

#[test]
fn lesson_05_trace_clone3_per_client_no_fork() {
    let traced = Traced::start(exe!("lesson-05"), &[]);
    // Three clients at once, so three threads live together.
    let mut clients: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = Client::connect(traced.server.addr);
            c.expect_welcome();
            c
        })
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.round_trip(&format!("t{i}")), format!("{i}t"));
    }
    for c in clients.iter_mut() {
        c.send("q\n");
        assert!(c.closed());
    }
    wait_for("three departures", DEADLINE, || {
        let n = traced
            .server
            .log
            .count(|l| l.starts_with("client disconnected: "));
        (n == 3).then_some(())
    });
    let trace = traced.stop(libc::SIGTERM);
    trace.assert_absent(&["fork", "vfork", "wait4"]);
    trace.assert_in_order(&["socket", "listen", "accept", "clone3", "accept", "clone3"]);
    let lines: Vec<String> = trace.lines().into_iter().map(String::from).collect();
    let all = lines.join("\n");
    let main = pid_of(&lines[0]);
    let listener = listener_of(&lines);
    let mut spawns = calls_to(&lines, "clone3");
    spawns.extend(calls_to(&lines, "clone"));
    assert_eq!(spawns.len(), 3, "one clone per client:\n{all}");
    for &i in &spawns {
        let spawn = &lines[i];
        assert_eq!(pid_of(spawn), main, "the main thread spawns: {spawn}");
        assert!(
            spawn.contains("CLONE_VM") && spawn.contains("CLONE_THREAD"),
            "a thread, not a process: {spawn}"
        );
        // Each thread talks to its own client: the welcome and the reads, from its own tid.
        let tid = returned(spawn).expect("clone3 returns the thread's tid");
        assert!(
            lines
                .iter()
                .any(|l| pid_of(l) == tid && l.contains("write(") && l.contains("Welcome buddy!")),
            "thread {tid} wrote no welcome:\n{all}"
        );
        assert!(
            lines
                .iter()
                .any(|l| pid_of(l) == tid && l.contains("read(") && l.contains("->")),
            "thread {tid} read nothing:\n{all}"
        );
    }
    // One fd table for all threads: nobody closes the listener.
    assert!(!all.contains(&format!("close({listener})")), "{all}");
}

/// `make trace-04` shows the sigaction calls (SIGCHLD with SA_NOCLDSTOP and without
/// SA_RESTART), the fork, the child's close of the listener, SIGCHLD and wait4, from the
/// first socket() on; SIGTERM gives the summary and exit 0.
#[test]
fn make_trace_04_shows_sigaction_fork_and_reaping() {
    let mut make = Command::new("make")
        .args(["-s", "trace-04", "PROFILE=dev", "ARGS=-p 0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // make's stderr (the lesson's log), line by line, so that each wait has a deadline.
    let (tx, log) = mpsc::channel();
    let stderr = make.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = |what: &str, pred: &dyn Fn(&str) -> bool| loop {
        match log.recv_timeout(DEADLINE) {
            Ok(line) if pred(&line) => return line,
            Ok(_) => continue,
            Err(e) => panic!("make trace-04: no {what} ({e})"),
        }
    };
    let banner = next_line("banner", &|l| l.contains("listening on "));
    let note = next_line("ps hint", &|l| l.contains("--ppid "));
    let lesson_pid: u32 = note
        .rsplit("--ppid ")
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in the banner note {note:?}"));
    // Whatever happens below, the lesson (and with it strace and make) does not outlive
    // the test.
    let _lesson = KillOnDrop(lesson_pid);
    let mut c = Client::connect(common::banner_addr(&banner));
    c.expect_welcome();
    assert_eq!(c.round_trip("make"), "ekam");
    c.send("q\n");
    assert!(c.closed());
    wait_for("the child reaped", DEADLINE, || {
        children(lesson_pid).is_empty().then_some(())
    });
    wait_in_accept(lesson_pid);
    // SAFETY: kill(2) on the lesson's pid, read from its own banner.
    unsafe { libc::kill(lesson_pid as i32, libc::SIGTERM) };
    let summary = next_line("summary after SIGTERM", &|l| {
        l.contains("lesson 04 stopping")
    });
    assert!(
        summary.contains("connections served: 1 · children reaped: 1 ·"),
        "{summary:?}"
    );
    let status = wait_for("make trace-04 to finish", DEADLINE, || {
        make.try_wait().unwrap()
    });
    assert!(status.success(), "make trace-04: {status:?}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut make.stdout.take().unwrap(), &mut out).unwrap();
    let first = out.lines().next().unwrap_or_default();
    assert_eq!(
        common::syscall_of(first).as_deref(),
        Some("socket"),
        "first traced line: {first:?}\n{out}"
    );
    // The parent's handlers (the first rt_sigaction of each signal; the children's later
    // ones put SIG_DFL back): none with SA_RESTART, so accept sees EINTR.
    for signal in ["SIGINT", "SIGTERM", "SIGCHLD"] {
        let install = out
            .lines()
            .find(|l| l.contains(&format!("rt_sigaction({signal},")))
            .unwrap_or_else(|| panic!("no rt_sigaction({signal}) in:\n{out}"));
        assert!(!install.contains("SA_RESTART"), "{install}");
        let handler = format!("rt_sigaction({signal}, {{sa_handler=0x");
        assert!(install.contains(&handler), "a handler: {install}");
        if signal == "SIGCHLD" {
            assert!(install.contains("SA_NOCLDSTOP"), "{install}");
        }
    }
    for want in [
        "clone(",
        "--- SIGCHLD",
        "wait4(-1",
        "WNOHANG",
        "--- SIGTERM",
        "exit_group(0)",
    ] {
        assert!(
            out.contains(want),
            "{want} missing from make trace-04:\n{out}"
        );
    }
    assert!(
        !out.contains("write(2<"),
        "log lines are filtered out:\n{out}"
    );
}
