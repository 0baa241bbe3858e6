//! The stepper against the real lessons: real binaries, real sockets, a real pty.
//!
//! The lessons are another package of the workspace: their binaries are found beside this
//! test's (target/<profile>/), so `cargo nextest run -p step` alone needs
//! `cargo build --workspace --bins` first; `make test` builds the whole workspace.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lessons 01's and 04's filters, as lessons/lessons.toml gives them (tests/lesson_index.rs
/// checks that they are).
const TRACE_01: &str =
    "socket,setsockopt,bind,listen,getsockname,accept,accept4,getpeername,write,close,exit_group";
const TRACE_04: &str = "socket,setsockopt,bind,listen,getsockname,accept,accept4,getpeername,write,close,exit_group,read,shutdown,rt_sigaction,clone,clone3,fork,vfork,wait4";
const DEADLINE: Duration = Duration::from_secs(20);

fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap().to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn lesson(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` (make test does)",
        path.display()
    );
    path
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A child's output, collected by a thread as it comes.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<String>>);

impl Sink {
    fn drain(&self, mut from: impl Read + Send + 'static) {
        let sink = self.0.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
    /// Wait until the text satisfies `ok`, or fail with what came.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let text = self.text();
            if ok(&text) {
                return text;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}; output so far:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

struct Run {
    child: Child,
    out: Sink,
    err: Sink,
}

impl Run {
    fn start(args: &[&str], lesson_args: &[&str], lesson_name: &str) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_step"));
        cmd.args(args)
            .arg("--")
            .arg(lesson(lesson_name))
            .args(lesson_args);
        Self::spawn(cmd)
    }
    fn spawn(mut cmd: Command) -> Run {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn step");
        let (out, err) = (Sink::default(), Sink::default());
        out.drain(child.stdout.take().unwrap());
        err.drain(child.stderr.take().unwrap());
        Run { child, out, err }
    }
    /// The port from the lesson's banner (`listening on 127.0.0.1:PORT`).
    fn port(&self) -> u16 {
        let text = self
            .err
            .wait_for("the banner", |t| t.contains("listening on 127.0.0.1:"));
        let rest = &text[text.find("listening on 127.0.0.1:").unwrap() + 23..];
        rest.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    }
    /// Waits for the stepper to end, checks that it succeeded, and returns what it printed.
    fn finish(&mut self) -> String {
        let status = self.wait();
        assert!(
            status.success(),
            "step exited {status:?}: {}",
            self.err.text()
        );
        self.out.text()
    }
    fn wait(&mut self) -> ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Let the drain threads take the last bytes.
                std::thread::sleep(Duration::from_millis(50));
                return st;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!(
                    "step did not end; output:\n{}\n{}",
                    self.out.text(),
                    self.err.text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The blocks of a run: (pid, call name, the whole block's text), in order.
fn blocks(text: &str) -> Vec<(i32, String, String)> {
    let mut out: Vec<(i32, String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("[pid ") {
            let pid: i32 = rest
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap();
            let after = &rest[rest.find(']').unwrap() + 2..];
            if let Some(paren) = after.find('(') {
                let name = &after[..paren];
                if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    out.push((pid, name.to_string(), line.to_string()));
                    continue;
                }
            }
        }
        if line.starts_with("    ") {
            if let Some(last) = out.last_mut() {
                last.2.push('\n');
                last.2.push_str(line);
            }
        }
    }
    out
}

/// The source lines a block names: (file, line number, the text the stepper quoted).
fn source_lines(block: &str) -> Vec<(String, usize)> {
    block
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l
                .strip_prefix("at")
                .or(l.strip_prefix("in"))
                .or(l.strip_prefix("from"))?;
            let (file, more) = rest.trim_start().split_once(':')?;
            let n = more.split_whitespace().next()?.parse().ok()?;
            Some((file.to_string(), n))
        })
        .collect()
}

fn file_line(file: &str, n: usize) -> String {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    text.lines().nth(n - 1).unwrap().to_string()
}

#[test]
fn lesson_01_blocks_in_order_with_real_source_lines() {
    let mut run = Run::start(
        &["--no-pause", "--only", TRACE_01],
        &["-p", "0"],
        "lesson-01",
    );
    let port = run.port();
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let client_port = client.local_addr().unwrap().port();
    let mut hello = String::new();
    client.read_to_string(&mut hello).unwrap();
    assert!(hello.starts_with("Hello there!"), "{hello}");
    let text = run.finish();

    let want = [
        ("socket", "socket("),
        ("setsockopt", "setsockopt("),
        ("bind", "bind("),
        ("listen", "listen("),
        ("accept", "accept("),
        ("write", "write("),
        ("close", "close("),
        ("close", "close("),
    ];
    let all = blocks(&text);
    let mut at = 0;
    for (name, call) in want {
        let Some(i) = all[at..].iter().position(|(_, n, _)| n == name) else {
            panic!("no {name} block after block {at}; output:\n{text}");
        };
        let block = &all[at + i].2;
        let lines = source_lines(block);
        let (file, n) = lines
            .last()
            .unwrap_or_else(|| panic!("no source line in:\n{block}"));
        assert_eq!(file, "lessons/01-hello.rs", "{block}");
        let src = file_line(file, *n);
        assert!(
            src.contains(call),
            "{file}:{n} is `{src}`, not a {call}...) call:\n{block}"
        );
        at += i + 1;
    }
    // The accept's result names the client's own port as the peer.
    assert!(
        text.contains(&format!("accept = 4<TCP 127.0.0.1:{port}↔127.0.0.1:{client_port} ESTABLISHED>  peer 127.0.0.1:{client_port}")),
        "no accept result with peer port {client_port}:\n{text}"
    );
    // The server closed first and did not linger: once its fd is closed, the kernel alone
    // finishes the close, waiting for the client's FIN (the client is still open).
    let closes: Vec<_> = all.iter().filter(|(_, n, _)| n == "close").collect();
    let last = &closes.last().unwrap().2;
    let pair = format!("<TCP 127.0.0.1:{port}↔127.0.0.1:{client_port} ");
    assert!(
        ["FIN_WAIT1", "FIN_WAIT2"]
            .iter()
            .any(|st| last.contains(&format!(
                "{pair}{st}>  no fd: the kernel finishes the close"
            ))),
        "the listener's close shows no fd-less {pair}...>:\n{last}"
    );
    // The lesson's own log lines (writes to fd 2) are no stops.
    assert!(!text.contains("write(2"), "{text}");
    // Nothing before the first socket().
    assert!(text.starts_with("[pid ") && all[0].1 == "socket", "{text}");
}

/// fds the stepper was given beyond 0–2 (a job runner or a terminal multiplexer often leaves
/// one open) do not reach the lesson: its first socket is fd 3, as the docs and pictures say.
#[test]
fn the_lesson_starts_with_stdin_stdout_and_stderr_only() {
    let null = std::fs::File::open("/dev/null").unwrap();
    let null_fd = null.as_raw_fd();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_step"));
    cmd.args(["--no-pause", "--only", TRACE_01, "--"])
        .arg(lesson("lesson-01"))
        .args(["-p", "0"]);
    // SAFETY: only dup2 and fcntl, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // dup2's copies lack FD_CLOEXEC (and dup2 onto itself does nothing, so then the
            // flag is cleared by hand): the stepper inherits fds 3 and 10.
            for fd in [3, 10] {
                let done = if fd == null_fd {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(null_fd, fd)
                };
                if done < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut run = Run::spawn(cmd);
    let port = run.port();
    let mut hello = String::new();
    TcpStream::connect(("127.0.0.1", port))
        .unwrap()
        .read_to_string(&mut hello)
        .unwrap();
    let text = run.finish();
    drop(null);
    assert!(
        text.contains("socket = 3<TCP>"),
        "the lesson's socket is not fd 3:\n{text}"
    );
    assert!(
        text.contains("accept = 4<TCP"),
        "the lesson's accept is not fd 4:\n{text}"
    );
}

#[test]
fn lesson_04_parent_and_child_closes_and_sigchld() {
    let mut run = Run::start(
        &["--no-pause", "--only", TRACE_04],
        &["-p", "0"],
        "lesson-04",
    );
    let port = run.port();
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.write_all(b"q\n").unwrap();
    let mut reply = String::new();
    client.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("Welcome buddy!"), "{reply}");
    let text = run
        .out
        .wait_for("the SIGCHLD", |t| t.contains("--- SIGCHLD ---"));
    let all = blocks(&text);
    let parent = all[0].0;
    let child_close = all
        .iter()
        .find(|(_, n, b)| n == "close" && b.lines().next().unwrap().contains("LISTEN>)"))
        .unwrap_or_else(|| panic!("no close of the listener:\n{text}"));
    let parent_close = all
        .iter()
        .find(|(_, n, b)| n == "close" && b.lines().next().unwrap().contains("ESTABLISHED>)"))
        .unwrap_or_else(|| panic!("no close of the connection:\n{text}"));
    assert_eq!(
        parent_close.0, parent,
        "the parent closes the connection:\n{text}"
    );
    assert_ne!(
        child_close.0, parent,
        "the child closes the listener:\n{text}"
    );
    assert!(
        text.contains(&format!(
            "--- SIGCHLD --- (from pid {}) [pid {parent}]",
            child_close.0
        )),
        "{text}"
    );
    stop(&mut run, parent, 0);
}

/// Reads /proc/PID/net/tcp and tcp6 for a socket with these two ports, in this state.
fn tcp_state(local_port: u16, remote_port: u16, state: &str) -> bool {
    let want = format!(":{local_port:04X} ");
    let want_remote = format!(":{remote_port:04X} {state} ");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .any(|l| {
                let l = format!("{} ", l.trim());
                l.contains(&want) && l.contains(&want_remote)
            })
    })
}

#[test]
fn kernel_view_shows_the_accept_queue_and_close_wait() {
    let mut run = Run::start(
        &["--no-pause", "--only", "accept,write,read,close"],
        &["-p", "0"],
        "lesson-03",
    );
    let port = run.port();
    // The first client is served; the second waits in the accept queue, and says it is done
    // (shutdown: its FIN) before the lesson even accepts it.
    let mut first = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut welcome = [0u8; 15];
    first.read_exact(&mut welcome).unwrap();
    let second = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let second_port = second.local_addr().unwrap().port();
    second.shutdown(Shutdown::Write).unwrap();
    let end = Instant::now() + DEADLINE;
    while !tcp_state(port, second_port, "08") {
        assert!(
            Instant::now() < end,
            "the server side never reached CLOSE_WAIT"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    first.write_all(b"q\n").unwrap();
    let text = run.out.wait_for("the read's end of file", |t| {
        t.contains("read = 0 (end of file")
    });
    let all = blocks(&text);
    let accepts: Vec<_> = all.iter().filter(|(_, n, _)| n == "accept").collect();
    assert!(accepts.len() >= 2, "{text}");
    assert!(
        accepts[1].2.contains("LISTEN>  accept queue 1 of 128"),
        "the second accept's block shows no waiting connection:\n{}",
        accepts[1].2
    );
    let conn = format!("127.0.0.1:{port}↔127.0.0.1:{second_port} CLOSE_WAIT");
    let read_block = all
        .iter()
        .find(|(_, n, b)| n == "read" && b.contains(&conn))
        .unwrap_or_else(|| panic!("no read block showing {conn}:\n{text}"));
    let eof = text.find("read = 0 (end of file").unwrap();
    assert!(text.find(&read_block.2).unwrap() < eof, "{text}");
    drop(second);
    drop(first);
    stop(&mut run, all[0].0, 130);
}

/// Ctrl-C (SIGINT) to the lesson: it stops, and the stepper ends with its status.
/// `code` is the lesson's: 0 where it handles SIGINT, 130 (128 + 2) where SIGINT kills it.
fn stop(run: &mut Run, lesson_pid: i32, code: i32) {
    let pid = nix::unistd::Pid::from_raw(lesson_pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = run.wait();
    assert_eq!(status.code(), Some(code), "{status:?}");
}

/// A pty, made the controlling terminal of the stepper (so its /dev/tty), and a thread that
/// drains what is written to it.
fn with_tty(cmd: &mut Command) -> (OwnedFd, Sink) {
    let pty = nix::pty::openpty(None, None).unwrap();
    for fd in [pty.master.as_raw_fd(), pty.slave.as_raw_fd()] {
        // SAFETY: setting FD_CLOEXEC on our own fds: the lesson inherits only its stdin.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let slave = pty.slave;
    let slave_fd = slave.as_raw_fd();
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let screen = Sink::default();
    screen.drain(std::fs::File::from(pty.master.try_clone().unwrap()));
    std::mem::forget(slave); // kept open for the child's whole life
    (pty.master, screen)
}

fn syscall_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default()
}

/// Wait until the lesson is held at the entry of call `nr`.
fn held_at(pid: i32, nr: i64) {
    let end = Instant::now() + DEADLINE;
    let want = format!("{nr} ");
    while !syscall_of(pid).starts_with(&want) {
        assert!(
            Instant::now() < end,
            "pid {pid} never stopped at call {nr}: {}",
            syscall_of(pid)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn type_line(master: &OwnedFd, line: &str) {
    nix::unistd::write(master, line.as_bytes()).unwrap();
}

#[test]
fn one_enter_runs_exactly_one_taught_call() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_step"));
    cmd.args([
        "--only",
        "socket,setsockopt,bind,listen,accept,write,close",
        "--",
    ])
    .arg(lesson("lesson-01"))
    .args(["-p", "0"]);
    let (master, screen) = with_tty(&mut cmd);
    let mut run = Run::spawn(cmd);
    let text = run
        .out
        .wait_for("the socket block", |t| t.contains("socket("));
    let pid = blocks(&text)[0].0;
    screen.wait_for("the prompt", |t| t.contains("step ["));
    held_at(pid, libc::SYS_socket);
    let socks = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
            })
            .count()
    };
    assert_eq!(socks(), 0, "socket() ran before Enter");
    // Each Enter: one call runs, and the lesson is held at the entry of the next one.
    for (nr, name) in [
        (libc::SYS_setsockopt, "setsockopt("),
        (libc::SYS_bind, "bind("),
        (libc::SYS_listen, "listen("),
        (libc::SYS_accept, "accept("),
    ] {
        let before = blocks(&run.out.text()).len();
        type_line(&master, "\n");
        run.out
            .wait_for(name, |t| blocks(t).len() == before + 1 && t.contains(name));
        held_at(pid, nr);
        assert_eq!(socks(), 1);
    }
    // Held at accept: a client's handshake completes in the kernel, but nothing is accepted.
    let port = run.port();
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let client_port = client.local_addr().unwrap().port();
    held_at(pid, libc::SYS_accept);
    assert_eq!(socks(), 1);
    // Enter: the accept runs and the lesson stops before its write.
    type_line(&master, "\n");
    run.out
        .wait_for("the write block", |t| t.contains("write(4<TCP"));
    held_at(pid, libc::SYS_write);
    assert_eq!(socks(), 2);
    assert!(run
        .out
        .text()
        .contains(&format!("peer 127.0.0.1:{client_port}")));
    // While the prompt waited, the handshake finished: the listener had one in its queue.
    let meanwhile = format!("meanwhile: 3<TCP 127.0.0.1:{port} LISTEN>  accept queue 1 of 128");
    assert!(run.out.text().contains(&meanwhile), "{}", run.out.text());
    // r: run free to the end, every call still printed.
    type_line(&master, "r\n");
    let mut hello = String::new();
    client.read_to_string(&mut hello).unwrap();
    assert!(hello.starts_with("Hello there!"));
    assert!(run.wait().success());
    assert!(run.out.text().contains("+++ [pid"), "{}", run.out.text());
}

#[test]
fn ctrl_c_at_the_prompt_leaves_no_process_behind() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_step"));
    cmd.args(["--only", "socket,accept", "--"])
        .arg(lesson("lesson-01"))
        .args(["-p", "0"]);
    let (master, screen) = with_tty(&mut cmd);
    let mut run = Run::spawn(cmd);
    let text = run
        .out
        .wait_for("the socket block", |t| t.contains("socket("));
    let pid = blocks(&text)[0].0;
    screen.wait_for("the prompt", |t| t.contains("step ["));
    held_at(pid, libc::SYS_socket);
    type_line(&master, "\x03"); // Ctrl-C: the terminal sends SIGINT to the foreground group
    let status = run.wait();
    assert_eq!(status.code(), Some(130), "{status:?}");
    // The lesson is gone: neither stopped nor a zombie.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "lesson pid {pid} is still there: {}",
        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()
    );
}

#[test]
fn a_missing_program_is_named() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_step"));
    cmd.args(["--no-pause", "--", "/nonexistent/lesson-77"]);
    let mut run = Run::spawn(cmd);
    let status = run.wait();
    assert_eq!(status.code(), Some(127));
    let err = run.err.text();
    assert!(
        err.contains("cannot run /nonexistent/lesson-77: no such program"),
        "{err}"
    );
}

#[test]
fn ptrace_refused_is_explained() {
    // Under strace -f, the lesson is already traced when the stepper tries to attach: the
    // kernel refuses (EPERM), as it does without CAP_SYS_PTRACE or under Yama.
    if Command::new("strace").arg("-V").output().is_err() {
        panic!("strace is missing: make test installs it (scripts/ensure-tools.sh)");
    }
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-o",
        "/dev/null",
        env!("CARGO_BIN_EXE_step"),
        "--no-pause",
        "--",
    ])
    .arg(lesson("lesson-01"));
    let mut run = Run::spawn(cmd);
    let status = run.wait();
    assert!(!status.success());
    let err = run.err.text();
    assert!(err.contains("ptrace(PTRACE_SEIZE): EPERM"), "{err}");
    assert!(
        err.contains("--cap-add=SYS_PTRACE") && err.contains("ptrace_scope"),
        "{err}"
    );
}

#[test]
fn a_call_made_in_src_shows_that_line_then_the_lessons() {
    // Lesson 08 reads its stop pipe in src/stop.rs, called from the lesson's poll loop.
    let mut run = Run::start(&["--no-pause", "--only", "read"], &["-p", "0"], "lesson-08");
    run.port();
    // The lesson is the stepper's only child.
    let pid = run.child.id() as i32;
    let lesson = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let lesson: i32 = lesson.trim().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(lesson),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    run.wait();
    let text = run.out.text();
    let all = blocks(&text);
    let (_, _, block) = all
        .iter()
        .find(|(_, n, b)| n == "read" && b.contains("<pipe:"))
        .unwrap_or_else(|| panic!("no read of the stop pipe:\n{text}"));
    let lines = source_lines(block);
    assert_eq!(lines.len(), 2, "{block}");
    assert!(
        lines[0].0.starts_with("src/") && file_line(&lines[0].0, lines[0].1).contains("read("),
        "{block}"
    );
    assert_eq!(lines[1].0, "lessons/08-poll.rs", "{block}");
    assert!(
        file_line(&lines[1].0, lines[1].1).contains("stop_requested"),
        "{block}"
    );
}

#[test]
fn c_runs_to_the_named_call_and_q_ends_the_lesson() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_step"));
    cmd.args(["--only", TRACE_01, "--"])
        .arg(lesson("lesson-01"))
        .args(["-p", "0"]);
    let (master, screen) = with_tty(&mut cmd);
    let mut run = Run::spawn(cmd);
    let text = run
        .out
        .wait_for("the socket block", |t| t.contains("socket("));
    let pid = blocks(&text)[0].0;
    screen.wait_for("the prompt", |t| t.contains("step ["));
    type_line(&master, "?\n");
    screen.wait_for("the help", |t| t.contains("c NAME   run on"));
    type_line(&master, "c accept\n");
    // setsockopt, bind, listen, getsockname printed on the way, held at accept.
    run.out
        .wait_for("the accept block", |t| t.contains("accept(3<TCP"));
    held_at(pid, libc::SYS_accept);
    let names: Vec<String> = blocks(&run.out.text()).into_iter().map(|b| b.1).collect();
    assert_eq!(
        names,
        [
            "socket",
            "setsockopt",
            "bind",
            "listen",
            "getsockname",
            "accept"
        ]
    );
    // Enter with no client yet: accept sleeps, and the stepper says so.
    type_line(&master, "\n");
    run.out.wait_for("the waiting notice", |t| {
        t.contains(&format!(
            "[pid {pid}] accept is waiting for a client: connect one now"
        ))
    });
    let port = run.port();
    let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    run.out
        .wait_for("the accept's result", |t| t.contains("accept = 4<TCP"));
    held_at(pid, libc::SYS_getpeername);
    type_line(&master, "q\n");
    assert_eq!(run.wait().code(), Some(0));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "lesson {pid} left behind"
    );
}

/// A rebuild that replaces the lesson's binary while it runs (make trace-01 in another
/// terminal, or another test) must not confuse the stepper: it reads the running program
/// through /proc/PID/exe, not the file now at its path.
#[test]
fn a_binary_replaced_on_disk_still_gives_the_lessons_lines() {
    let dir = std::env::temp_dir().join(format!("step-replaced-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lesson-01");
    std::fs::copy(lesson("lesson-01"), &path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_step"));
    cmd.args(["--no-pause", "--only", "close", "--"])
        .arg(&path)
        .args(["-p", "0"]);
    let mut run = Run::spawn(cmd);
    let port = run.port();
    // Running, not yet stopped (its first close comes after a client): now replace it.
    let other = dir.join("other");
    std::fs::copy(lesson("lesson-02"), &other).unwrap();
    std::fs::rename(&other, &path).unwrap();
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut hello = String::new();
    client.read_to_string(&mut hello).unwrap();
    let text = run.finish();
    let all = blocks(&text);
    let close = all
        .iter()
        .find(|(_, n, _)| n == "close")
        .unwrap_or_else(|| panic!("no close block:\n{text}"));
    let lines = source_lines(&close.2);
    let (file, n) = lines
        .last()
        .unwrap_or_else(|| panic!("no source line in:\n{}", close.2));
    assert_eq!(file, "lessons/01-hello.rs", "{}", close.2);
    assert!(file_line(file, *n).contains("close("), "{}", close.2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The stepper under a pty, held at each stop of `stops`: `go` types a command and waits for
/// what it prints.
struct Stepping {
    run: Run,
    master: OwnedFd,
    pid: i32,
}

impl Stepping {
    fn start(stops: &str, lesson_name: &str) -> Stepping {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_step"));
        cmd.args(["--only", stops, "--"])
            .arg(lesson(lesson_name))
            .args(["-p", "0"]);
        let (master, screen) = with_tty(&mut cmd);
        let run = Run::spawn(cmd);
        let text = run
            .out
            .wait_for("the first block", |t| !blocks(t).is_empty());
        screen.wait_for("the prompt", |t| t.contains("step ["));
        let pid = blocks(&text)[0].0;
        Stepping { run, master, pid }
    }
    /// Type `line`, wait for the block of call `nr` after the `n`th block, and for the lesson
    /// to be held at that call; returns that block.
    fn go(&self, line: &str, name: &str, nr: i64) -> String {
        let before = blocks(&self.run.out.text()).len();
        type_line(&self.master, line);
        let text = self.run.out.wait_for(name, |t| {
            blocks(t)
                .get(before..)
                .is_some_and(|b| b.iter().any(|(_, n, _)| n == name))
        });
        held_at(self.pid, nr);
        let all = blocks(&text);
        let (_, _, block) = all[before..].iter().find(|(_, n, _)| n == name).unwrap();
        block.clone()
    }
}

/// Waits until /proc/net/tcp shows (or no longer shows) the server's side of the pair in
/// `state` (hex, as the file gives it).
fn until_tcp_state(local_port: u16, remote_port: u16, state: &str, shown: bool) {
    let end = Instant::now() + DEADLINE;
    while tcp_state(local_port, remote_port, state) != shown {
        assert!(
            Instant::now() < end,
            "the server's side of :{local_port}↔:{remote_port} never {} state {state}",
            if shown { "reached" } else { "left" }
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The client closes first (its FIN before the lesson's shutdown): CLOSE_WAIT, then after the
/// lesson's shutdown(SHUT_WR) LAST_ACK (often gone before shutdown returns) and CLOSE, where
/// getpeername fails: the stepper still names the peer it saw. The options by name.
#[test]
fn the_close_when_the_client_closes_first() {
    let s = Stepping::start("setsockopt,accept,shutdown,close", "lesson-03");
    let first = &blocks(&s.run.out.text())[0].2;
    assert!(
        first.contains("setsockopt(3<TCP>, SOL_SOCKET, SO_REUSEADDR, [1], 4)"),
        "{first}"
    );
    s.go("c accept\n", "accept", libc::SYS_accept);
    let port = s.run.port();
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let cport = client.local_addr().unwrap().port();
    client.write_all(b"abc\nq\n").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    until_tcp_state(port, cport, "08", true);
    let conn = format!("4<TCP 127.0.0.1:{port}↔127.0.0.1:{cport}");
    let block = s.go("c shutdown\n", "shutdown", libc::SYS_shutdown);
    assert!(
        block.contains(&format!("shutdown({conn} CLOSE_WAIT>, SHUT_WR)")),
        "{block}"
    );
    let block = s.go("\n", "setsockopt", libc::SYS_setsockopt);
    let after = |block: &str, rest: &str| {
        ["LAST_ACK", "CLOSE"]
            .iter()
            .any(|st| block.contains(&format!("{conn} {st}>{rest}")))
    };
    assert!(
        after(
            &block,
            ", SOL_SOCKET, SO_RCVTIMEO, {tv_sec=1, tv_usec=0}, 16)"
        ),
        "{block}"
    );
    // Held at the close: once the client's ACK has taken LAST_ACK away, the socket is in
    // CLOSE, getpeername fails, and the peer shown is the one remembered.
    let block = s.go("c close\n", "close", libc::SYS_close);
    assert!(after(&block, ")"), "{block}");
    until_tcp_state(port, cport, "09", false);
    s.go("c accept\n", "accept", libc::SYS_accept);
    let text = s.run.out.text();
    let closed = &text[text.find(&format!("close({conn}")).unwrap()..];
    assert!(closed.contains(&format!("{conn} CLOSE>")), "{closed}");
    let mut reply = String::new();
    client.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "Welcome buddy!\ncba\n");
    type_line(&s.master, "q\n");
    let mut run = s.run;
    assert_eq!(run.wait().code(), Some(0));
}

/// The lesson closes first (shutdown(SHUT_WR) on `q`, the client still open): FIN_WAIT1 or
/// FIN_WAIT2 while it lingers; the client's FIN then turns the fd's socket to CLOSE and
/// leaves the pair in TIME_WAIT, a socket of no fd, shown on a line of its own, after the
/// close too.
#[test]
fn the_close_when_the_server_closes_first_ends_in_time_wait() {
    let s = Stepping::start("accept,read,shutdown,setsockopt,close", "lesson-03");
    s.go("c accept\n", "accept", libc::SYS_accept);
    let port = s.run.port();
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let cport = client.local_addr().unwrap().port();
    client.write_all(b"abc\nq\n").unwrap();
    let conn = format!("4<TCP 127.0.0.1:{port}↔127.0.0.1:{cport}");
    let block = s.go("c shutdown\n", "shutdown", libc::SYS_shutdown);
    assert!(block.contains(&format!("{conn} ESTABLISHED>")), "{block}");
    // Held at the lingering read: the FIN is out, the client has not closed.
    s.go("c read\n", "read", libc::SYS_read);
    let text = s.run.out.text();
    let all = blocks(&text);
    let set = &all
        .iter()
        .rev()
        .find(|(_, n, _)| n == "setsockopt")
        .unwrap()
        .2;
    assert!(
        ["FIN_WAIT1", "FIN_WAIT2"]
            .iter()
            .any(|st| set.contains(&format!(
                "setsockopt({conn} {st}>, SOL_SOCKET, SO_RCVTIMEO, {{tv_sec=1, tv_usec=0}}, 16)"
            ))),
        "{set}"
    );
    let mut reply = String::new();
    client.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "Welcome buddy!\ncba\n");
    drop(client);
    until_tcp_state(port, cport, "06", true);
    let time_wait = format!(
        "<TCP 127.0.0.1:{port}↔127.0.0.1:{cport} TIME_WAIT>  no fd: the kernel keeps the pair 60 s"
    );
    let block = s.go("c close\n", "close", libc::SYS_close);
    assert!(block.contains(&format!("close({conn} CLOSE>)")), "{block}");
    assert!(block.contains(&time_wait), "{block}");
    let text = s.run.out.text();
    let meanwhile = &text[text.rfind("read(4<").unwrap()..];
    assert!(
        meanwhile.contains(&format!("meanwhile: {conn} CLOSE>")),
        "{meanwhile}"
    );
    let block = s.go("c accept\n", "accept", libc::SYS_accept);
    assert!(block.contains(&time_wait), "{block}");
    assert!(!block.contains("4<TCP"), "{block}");
    type_line(&s.master, "q\n");
    let mut run = s.run;
    assert_eq!(run.wait().code(), Some(0));
}

/// A serial server that closes first leaves a TIME_WAIT per client: the kernel view names the
/// newest three and counts the older ones, so that it stays readable.
#[test]
fn connections_with_no_fd_beyond_three_are_counted() {
    let mut run = Run::start(
        &["--no-pause", "--only", "accept,close"],
        &["-p", "0"],
        "lesson-02",
    );
    let port = run.port();
    for _ in 0..5 {
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let cport = client.local_addr().unwrap().port();
        let mut hello = String::new();
        client.read_to_string(&mut hello).unwrap();
        drop(client);
        until_tcp_state(port, cport, "06", true);
    }
    let text = run.out.wait_for("the sixth accept", |t| {
        blocks(t).iter().filter(|(_, n, _)| n == "accept").count() == 6
    });
    let all = blocks(&text);
    let sixth = &all
        .iter()
        .filter(|(_, n, _)| n == "accept")
        .nth(5)
        .unwrap()
        .2;
    assert_eq!(sixth.matches("  no fd: ").count(), 3, "{sixth}");
    assert!(
        sixth.contains("… and 2 older with no fd (TIME_WAIT 2)"),
        "{sixth}"
    );
    stop(&mut run, all[0].0, 130);
}

#[test]
fn lesson_17_shows_the_listener_that_went_across_in_scm_rights() {
    let dir = std::env::temp_dir().join(format!("step-17-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let pid_file = dir.join("pid");
    let read_pid =
        || -> Option<i32> { std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok() };
    let mut run = Run::start(
        &[
            "--no-pause",
            "--only",
            "socketpair,sendmsg,recvmsg,getsockopt",
        ],
        &["-p", "0", "--pid-file", pid_file.to_str().unwrap()],
        "lesson-17",
    );
    let port = run.port();
    let old = wait_some(read_pid);
    // SIGHUP: the lesson starts its successor and hands it the listener.
    unsafe { libc::kill(old, libc::SIGHUP) };
    let new = wait_some(|| read_pid().filter(|p| *p != old));
    let text = run
        .out
        .wait_for("the successor's check", |t| t.contains("SO_ACCEPTCONN"));
    let listener = format!("<TCP 127.0.0.1:{port} LISTEN>");
    let all = blocks(&text);
    let block = |name: &str| {
        all.iter()
            .find(|(_, n, _)| n == name)
            .map(|(_, _, b)| b.clone())
            .unwrap_or_else(|| panic!("no {name} block:\n{text}"))
    };
    // The old process sends the listener's fd; the new one receives its own fd for it.
    let sent = block("sendmsg");
    assert!(
        sent.contains("SCM_RIGHTS [") && sent.contains(&listener),
        "{sent}"
    );
    assert!(sent.contains("lessons/17-restart/handover.rs"), "{sent}");
    let received = block("recvmsg");
    assert!(received.contains("MSG_CMSG_CLOEXEC"), "{received}");
    let result = text
        .lines()
        .find(|l| l.contains("recvmsg = 1"))
        .unwrap_or_else(|| panic!("no recvmsg result:\n{text}"));
    assert!(
        result.contains("SCM_RIGHTS [") && result.contains(&listener),
        "{result}"
    );
    assert!(block("socketpair").contains("AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC"));
    unsafe { libc::kill(new, libc::SIGTERM) };
    run.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn wait_some<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out");
        std::thread::sleep(Duration::from_millis(10));
    }
}
