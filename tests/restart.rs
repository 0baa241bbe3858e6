//! Lesson 17, restarted as an operator does it: SIGHUP to the pid in the pid file, under a
//! steady load (the provoke binary's hot-restart scenario counts every connection refused,
//! reset or short), with established clients and a 64 MiB transfer in flight, under
//! systemd-socket-activate, against another uid, with a broken binary on disk, and 100 times
//! in a row (the fd table of each new process the same size).
//!
//! The processes a restart leaves behind are re-parented to this test process
//! (PR_SET_CHILD_SUBREAPER), killed and reaped at the end of each test.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_for, Server};

const LESSON: &str = env!("CARGO_BIN_EXE_lesson-17");

/// target/<profile>/provoke (built by `cargo nextest run --workspace` or `make test`).
fn provoke_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("provoke");
    assert!(
        bin.exists(),
        "{} is not built: cargo build -p provoke",
        bin.display()
    );
    bin
}

/// A private directory (mode 0700) under the temporary directory, removed when dropped,
/// and the family of processes: whatever pid the pid file names is killed at the end.
struct Family {
    dir: PathBuf,
}

impl Family {
    fn new(name: &str) -> Family {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) changes only this process's flag.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let dir = std::env::temp_dir().join(format!("l17-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Family { dir }
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("pid")
    }

    fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.pid_file()).ok()?;
        text.trim().parse().ok()
    }

    /// The pid in the pid file once it is not `old`.
    fn next_pid(&self, old: Option<u32>) -> u32 {
        wait_for("a new pid in the pid file", Duration::from_secs(15), || {
            self.pid().filter(|p| Some(*p) != old)
        })
    }

    fn start(&self, args: &[&str]) -> Server {
        let pid_file = self.pid_file();
        let mut all = vec!["--pid-file", pid_file.to_str().unwrap()];
        all.extend(args);
        Server::start(LESSON, &all)
    }
}

impl Drop for Family {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        // Reap whatever came back to us (drained processes, killed ones).
        let by = Instant::now() + Duration::from_secs(3);
        while Instant::now() < by {
            let mut status = 0;
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid < 0 {
                break;
            }
            if pid == 0 {
                thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sighup(pid: u32) {
    // SAFETY: kill(2) on a pid this test started (or its successor).
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
}

fn alive(pid: u32) -> bool {
    common::proc_state(pid).is_some_and(|s| s != 'Z')
}

/// One full round trip on a fresh connection: welcome, a line, its reverse, q, EOF.
fn round_trip(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"restart\nq\n").unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "Welcome buddy!\ntratser\n");
}

/// `provoke hot-restart ARGS`: exit code, and the counts its line reports.
fn hot_restart(args: &[&str]) -> (i32, Counts, String) {
    let out = Command::new(provoke_bin())
        .arg("hot-restart")
        .args(args)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    let counts = Counts::parse(&line).unwrap_or_else(|| panic!("no counts in {line:?} {err}"));
    (out.status.code().unwrap_or(-1), counts, line)
}

#[derive(Debug)]
struct Counts {
    took_over: u64,
    rate: u64,
    whole: u64,
    refused: u64,
    reset: u64,
    short: u64,
    stalled: u64,
}

impl Counts {
    /// "20 of 20 restarts took over, under 593 new connections/s: 2247 round trips whole,
    /// 0 refused, 0 reset, 0 short, 0 stalled"
    fn parse(line: &str) -> Option<Counts> {
        let before = |word: &str| -> Option<u64> {
            let at = line.find(word)?;
            line[..at].split_whitespace().last()?.parse().ok()
        };
        let rate = line
            .split("under ")
            .nth(1)?
            .split(' ')
            .next()?
            .parse()
            .ok()?;
        let took_over = line.split(": ").nth(1)?.split(' ').next()?.parse().ok()?;
        Some(Counts {
            took_over,
            rate,
            whole: before(" round trips whole")?,
            refused: before(" refused")?,
            reset: before(" reset")?,
            short: before(" short")?,
            stalled: before(" stalled")?,
        })
    }

    fn lost(&self) -> u64 {
        self.refused + self.reset + self.short + self.stalled
    }
}

#[test]
fn twenty_restarts_under_load_refuse_reset_and_lose_nothing() {
    let (code, c, line) = hot_restart(&["--restarts", "20", "--rate", "800"]);
    assert_eq!(c.took_over, 20, "{line}");
    assert!(
        c.rate >= 500,
        "the load was under 500 new connections/s: {line}"
    );
    assert_eq!(c.lost(), 0, "{line}");
    assert!(c.whole > 1000, "{line}");
    assert_eq!(code, 0, "{line}");
}

#[test]
fn restarts_through_a_handover_path_lose_nothing_either() {
    let (code, c, line) = hot_restart(&["--restarts", "10", "--rate", "800", "--handover"]);
    assert_eq!(c.took_over, 10, "{line}");
    assert_eq!(c.lost(), 0, "{line}");
    assert_eq!(code, 0, "{line}");
}

#[test]
fn close_then_bind_refuses_connections_under_the_same_load() {
    let (code, c, line) = hot_restart(&[
        "--restarts",
        "20",
        "--rate",
        "800",
        "--mistake",
        "close-then-bind",
    ]);
    assert!(c.refused > 0, "no connection refused: {line}");
    assert_eq!(code, 1, "{line}");
}

#[test]
fn reuseport_resets_connections_under_the_same_load() {
    let (code, c, line) = hot_restart(&[
        "--restarts",
        "20",
        "--rate",
        "800",
        "--mistake",
        "reuseport",
    ]);
    assert!(c.reset > 0, "no connection reset: {line}");
    assert_eq!(code, 1, "{line}");
}

/// The kernel's own fix for the SO_REUSEPORT road (Linux 5.14): with tcp_migrate_req=1 the
/// connections queued on a closing listener move to another listener of the group. Shown in
/// a network namespace of the test's own (the host's setting stays as it is).
#[test]
fn reuseport_loses_nothing_with_tcp_migrate_req_in_a_namespace_of_its_own() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a network namespace needs root");
        return;
    }
    if !Path::new("/proc/sys/net/ipv4/tcp_migrate_req").exists() {
        eprintln!("skipped: this kernel has no net.ipv4.tcp_migrate_req (Linux < 5.14)");
        return;
    }
    let script = format!(
        "ip link set lo up && echo 1 > /proc/sys/net/ipv4/tcp_migrate_req && \
         {} hot-restart --restarts 20 --rate 800 --mistake reuseport",
        provoke_bin().display()
    );
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    let c = Counts::parse(&line).unwrap_or_else(|| panic!("no counts in {line:?}: {err}"));
    assert_eq!(c.took_over, 20, "{line}");
    assert_eq!(c.lost(), 0, "with tcp_migrate_req=1: {line}");
}

#[test]
fn cloexec_on_the_handed_fd_leaves_the_successor_nothing() {
    let family = Family::new("cloexec");
    let server = family.start(&["--mistake", "cloexec"]);
    let first = family.next_pid(None);
    sighup(first);
    let failed = server
        .log
        .wait_line("restart failed", |l| l.starts_with("restart failed"));
    assert!(failed.contains("exited with status 1"), "{failed}");
    server
        .log
        .wait_line("the successor's reason", |l| l.contains("FD_CLOEXEC"));
    assert_eq!(family.pid(), Some(first));
    round_trip(server.addr);
}

#[test]
fn established_clients_and_a_64_mib_transfer_finish_across_the_restart() {
    let family = Family::new("established");
    let server = family.start(&[]);
    let old = family.next_pid(None);
    // A conversation begun with the old process.
    let mut talk = server.connect();
    assert_eq!(talk.line(), "Welcome buddy!");
    talk.send("before\n");
    assert_eq!(talk.line(), "erofeb");
    // 64 MiB of 1 KiB lines, written on one thread and read back on another.
    let stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    const LINES: usize = 64 * 1024;
    let sender = thread::spawn(move || {
        let mut line = [b'a'; 1024];
        line[1023] = b'\n';
        for i in 0..LINES {
            line[0] = b'0' + (i % 10) as u8; // first byte varies, comes back last
            writer.write_all(&line).unwrap();
        }
        writer.write_all(b"q\n").unwrap();
    });
    let mut reader = BufReader::new(stream);
    let mut welcome = String::new();
    reader.read_line(&mut welcome).unwrap();
    assert_eq!(welcome, "Welcome buddy!\n");
    let mut line = Vec::new();
    let mut got = 0usize;
    let mut restarted = None;
    while got < LINES {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).unwrap();
        assert_eq!(n, 1024, "line {got} came back short");
        assert_eq!(line[1022], b'0' + (got % 10) as u8, "line {got} wrong");
        got += 1;
        if got == LINES / 4 {
            // The restart, a quarter of the way through.
            sighup(old);
            restarted = Some(family.next_pid(Some(old)));
        }
    }
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "after q: {rest:?}");
    sender.join().unwrap();
    let new = restarted.expect("restarted");
    assert!(
        alive(old),
        "the old process left while a client was still talking"
    );
    // The conversation goes on with the old process; new clients reach the new one.
    talk.send("after\n");
    assert_eq!(talk.line(), "retfa");
    round_trip(server.addr);
    talk.send("q\n");
    assert!(talk.rest().is_empty());
    drop((talk, reader)); // close(2): the old process's lingering closes end
    wait_for(
        "the drained old process to exit",
        Duration::from_secs(10),
        || (!alive(old)).then_some(()),
    );
    assert!(alive(new));
}

#[test]
fn the_drain_timeout_counts_from_the_handover() {
    let family = Family::new("drain");
    // The old process has run 1.5 s before the handover: a timeout counted from its start
    // would end its drain at once.
    let server = family.start(&["--drain-timeout", "2"]);
    let old = family.next_pid(None);
    let mut idle = server.connect();
    assert_eq!(idle.line(), "Welcome buddy!");
    thread::sleep(Duration::from_millis(1500));
    sighup(old);
    family.next_pid(Some(old));
    let handed = Instant::now();
    thread::sleep(Duration::from_millis(1000));
    assert!(alive(old), "the old process left before its drain timeout");
    wait_for("the old process to exit", Duration::from_secs(10), || {
        (!alive(old)).then_some(())
    });
    assert!(handed.elapsed() >= Duration::from_millis(1900));
    // The idle client was closed at the end of the drain: EOF, nothing more.
    assert!(idle.rest().is_empty());
}

#[test]
fn systemd_socket_activate_hands_the_listener_as_fd_3() {
    if Command::new("systemd-socket-activate")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("systemd-socket-activate is missing: make tools installs it (systemd)");
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{port}"), LESSON])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.iter().any(|l: &String| l.contains("Listening on")) {
        log.push(
            rx.recv_timeout(deadline - Instant::now())
                .expect("systemd-socket-activate"),
        );
    }
    // The first connection starts the lesson, which serves it on the socket it was given.
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    round_trip(addr);
    while !log.iter().any(|l| l.contains("listener: ")) {
        log.push(
            rx.recv_timeout(deadline - Instant::now())
                .expect("the banner"),
        );
    }
    let origin = log.iter().find(|l| l.contains("listener: ")).unwrap();
    assert!(origin.contains("fd 3 from the service manager"), "{log:?}");
    round_trip(addr);
    // The socket systemd gave is handed on like any other: SIGHUP (the lesson runs as
    // systemd-socket-activate's own pid, which exec'd it).
    sighup(child.id());
    let ready = loop {
        let line = rx
            .recv_timeout(deadline - Instant::now())
            .expect("the handover");
        if line.contains("is ready") {
            break line;
        }
        log.push(line);
    };
    assert!(
        log.iter().any(|l| l.contains("received over SCM_RIGHTS")),
        "{log:?}"
    );
    round_trip(addr);
    let successor: i32 = ready.split(' ').nth(1).unwrap().parse().unwrap();
    unsafe { libc::kill(successor, libc::SIGTERM) };
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn another_uid_cannot_take_the_socket() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: running as another uid needs root");
        return;
    }
    let family = Family::new("peercred");
    // The lesson's directory is private; the test's own parent is open to `nobody`.
    let open = family.dir.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&family.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o700)).unwrap();
    let sock = open.join("handover.sock");
    let server = family.start(&["--handover", sock.to_str().unwrap()]);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket file's mode");
    // `nobody` runs the same lesson on the same path: the file's mode stops it...
    let as_nobody = || {
        let mut cmd = Command::new(LESSON);
        cmd.args(["-p", "0", "--handover", sock.to_str().unwrap()]);
        cmd.uid(65534).gid(65534).stdin(Stdio::null());
        cmd.output().unwrap()
    };
    let out = as_nobody();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("EACCES"), "{err}");
    // ... and where the modes were opened by mistake, SO_PEERCRED does.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        !err.contains("listener: fd"),
        "nobody got the listener: {err}"
    );
    let refused = server
        .log
        .wait_line("the refusal", |l| l.contains("handover refused"));
    assert!(refused.contains("uid 65534"), "{refused}");
    assert_eq!(family.pid(), Some(server.pid()));
    round_trip(server.addr);
    // The directory private again: a SIGHUP hands over through the path.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o700)).unwrap();
    sighup(server.pid());
    let next = family.next_pid(Some(server.pid()));
    server.log.wait_line("the successor's banner", |l| {
        l.contains("received over SCM_RIGHTS")
    });
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the successor's socket file's mode");
    assert_eq!(family.pid(), Some(next));
    round_trip(server.addr);
}

#[test]
fn a_failed_successor_leaves_the_service_up() {
    let family = Family::new("failed");
    // A copy of the binary in a directory of the test's: the successor is whatever is at
    // this path when SIGHUP comes (not /proc/self/exe, which would be the old binary).
    let exe = family.dir.join("lesson-17");
    std::fs::copy(LESSON, &exe).unwrap();
    let pid_file = family.pid_file();
    let server = Server::start(
        exe.to_str().unwrap(),
        &["--pid-file", pid_file.to_str().unwrap()],
    );
    let first = family.next_pid(None);
    // An upgrade gone wrong: the new "binary" exits at once.
    std::fs::remove_file(&exe).unwrap();
    std::fs::write(&exe, "#!/bin/sh\necho 'broken upgrade' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    sighup(first);
    let line = server
        .log
        .wait_line("restart failed", |l| l.starts_with("restart failed"));
    assert!(line.contains("exited with status 3"), "{line}");
    assert!(line.contains("still serving"), "{line}");
    server
        .log
        .wait_line("the broken binary ran", |l| l.contains("broken upgrade"));
    assert_eq!(server.log.count(|l| l.starts_with("restart failed")), 1);
    assert_eq!(family.pid(), Some(first));
    round_trip(server.addr);
    // The real binary back at the path: the next SIGHUP hands over.
    std::fs::remove_file(&exe).unwrap();
    std::fs::copy(LESSON, &exe).unwrap();
    sighup(first);
    let next = family.next_pid(Some(first));
    assert_ne!(next, first);
    round_trip(server.addr);
}

#[test]
fn a_hundred_restarts_leak_no_fd_and_a_sighup_during_a_restart_is_ignored() {
    let family = Family::new("fds");
    let server = family.start(&[]);
    let mut pid = family.next_pid(None);
    let fds = common::fd_count(pid);
    let mut sizes = Vec::new();
    for _ in 0..100 {
        sighup(pid);
        pid = family.next_pid(Some(pid));
        sizes.push(common::fd_count(pid));
    }
    assert!(
        sizes.iter().all(|&n| n == fds),
        "fd table sizes: {fds} at start, then {sizes:?}"
    );
    round_trip(server.addr);
    // Two SIGHUPs, the second while the first restart runs: one successor, one log line.
    let mut held = TcpStream::connect(server.addr).unwrap(); // keeps the old one draining
    let mut welcome = [0u8; 15];
    held.read_exact(&mut welcome).unwrap();
    let ignored = server.log.count(|l| l.starts_with("SIGHUP ignored"));
    let restarts = server.log.count(|l| l.starts_with("SIGHUP: restarting"));
    sighup(pid);
    wait_for("the restart to begin", Duration::from_secs(10), || {
        let now = server.log.count(|l| l.starts_with("SIGHUP: restarting"));
        (now > restarts).then_some(())
    });
    sighup(pid);
    let next = family.next_pid(Some(pid));
    server
        .log
        .wait_line("SIGHUP ignored", |l| l.starts_with("SIGHUP ignored"));
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.log.count(|l| l.starts_with("SIGHUP ignored")),
        ignored + 1
    );
    assert_eq!(family.pid(), Some(next), "a second successor was started");
    held.write_all(b"q\n").unwrap();
}
