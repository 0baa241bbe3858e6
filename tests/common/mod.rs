//! Test support: start a real lesson binary, read its banner, talk to it with real sockets,
//! look at it through /proc, and run it under strace.
//!
//! Every wait here polls with a deadline; nothing sleeps for a fixed time and hopes.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The path of a lesson binary by name: `exe!("lesson-03")`.
#[macro_export]
macro_rules! exe {
    ($name:literal) => {
        env!(concat!("CARGO_BIN_EXE_", $name))
    };
}

/// A lesson's arguments for a paired mistake test: `--mistake NAME` when `on`, none when off.
pub fn mistake_args(on: bool, name: &'static str) -> Vec<&'static str> {
    if on {
        vec!["--mistake", name]
    } else {
        Vec::new()
    }
}

/// Walks one of the protocol steps the tests share with `make check-NN` (workshop/src/echo.rs,
/// socks.rs: each rule written once), with the tests' deadline; panics with its failure.
pub fn step(run: impl FnOnce(SocketAddr) -> workshop::client::Outcome, addr: SocketAddr) {
    workshop::client::set_wait(DEADLINE);
    if let Err(failure) = run(addr) {
        panic!("step failed:\n{failure}");
    }
}

/// Polls `check` until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(value) = check() {
            return value;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The stderr lines of a running server, collected by a reader thread.
#[derive(Default)]
struct LogInner {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

#[derive(Clone, Default)]
pub struct Log(Arc<LogInner>);

impl Log {
    fn follow(self, stream: impl Read + Send + 'static) {
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                self.0.lines.lock().unwrap().push(line);
                self.0.changed.notify_all();
            }
        });
    }

    /// All lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lines.lock().unwrap().clone()
    }

    /// Waits until some line satisfies `pred`, and returns it.
    pub fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        let mut lines = self.0.lines.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|l| pred(l)) {
                return line.clone();
            }
            let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_else(|| {
                panic!(
                    "timed out waiting for a log line: {what}; log so far:\n{}",
                    lines.join("\n")
                )
            });
            lines = self.0.changed.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// How many lines satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.0
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| pred(l))
            .count()
    }
}

/// A lesson server (or anything else that prints the banner) running as a child process.
/// Dropping it kills the process.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Log,
}

/// A command for `exe` that listens on a free loopback port (`-p 0`) unless `args` names one.
pub fn server_command(exe: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    if !args.iter().any(|a| *a == "-p" || a.starts_with("--port")) {
        cmd.args(["-p", "0"]);
    }
    cmd
}

impl Server {
    /// Starts `exe args -p 0` and waits for its banner.
    pub fn start(exe: &str, args: &[&str]) -> Server {
        Server::spawn(server_command(exe, args))
    }

    /// Starts `cmd` (stdin null, stderr captured) and waits for its banner.
    pub fn spawn(mut cmd: Command) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let log = Log::default();
        log.clone().follow(child.stderr.take().unwrap());
        let mut server = Server {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        let banner = server
            .log
            .wait_line("the banner", |l| l.contains("listening on "));
        server.addr = banner_addr(&banner);
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A connected client with a 20 s read timeout.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Open fds of the server process, from /proc/PID/fd.
    pub fn fd_count(&self) -> usize {
        fd_count(self.pid())
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (e.g. libc::SIGTERM) to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in `... listening on ADDR · ...`.
pub fn banner_addr(banner: &str) -> SocketAddr {
    let rest = banner
        .split("listening on ")
        .nth(1)
        .expect("banner names an address");
    let addr = rest.split(' ').next().unwrap();
    addr.parse()
        .unwrap_or_else(|e| panic!("banner address {addr:?}: {e}"))
}

/// Open fds of `pid`.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits until the fd count of `pid` is `expected`.
pub fn wait_fd_count(pid: u32, expected: usize) {
    let mut last = 0;
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("the fd count to settle", Duration::from_secs(10), || {
            last = fd_count(pid);
            (last == expected).then_some(())
        })
    }));
    if found.is_err() {
        panic!("fd count of {pid} is {last}, expected {expected}");
    }
}

/// Process state letter from /proc/PID/stat (R, S, Z, …).
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// Waits until `pid` sleeps in accept(2), so that a signal sent now finds it there and not
/// between its check of the stop flag and accept (the race lesson 04 documents). Where the
/// kernel names wait channels, that is wchan `inet_csk_accept` (true). Where it hides them it
/// shows "0", as it does for a running process too: then sleeping at all ('S') is the best
/// sign there is (false).
pub fn wait_in_accept(pid: u32) -> bool {
    let wchan = || fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    wait_for("the lesson to sleep in accept", DEADLINE, || {
        if proc_state(pid) != Some('S') {
            return None;
        }
        match wchan().trim() {
            "inet_csk_accept" => Some(true),
            "" | "0" => Some(false),
            _ => None,
        }
    })
}

/// utime + stime of `pid` in clock ticks (from /proc/PID/stat).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

/// Resident set size of `pid` in KiB (VmRSS from /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Pids of the children of `pid` (all its threads' children).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let path = task.path().join("children");
            if let Ok(text) = fs::read_to_string(path) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

/// A line-oriented test client over a real TCP connection.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = wait_for("connect", DEADLINE, || TcpStream::connect(addr).ok());
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.set_write_timeout(Some(DEADLINE)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream
            .write_all(bytes.as_ref())
            .expect("send to server");
    }

    /// One line, with its `\n` removed; panics on EOF or timeout.
    pub fn line(&mut self) -> String {
        String::from_utf8(self.line_bytes()).expect("reply is UTF-8")
    }

    /// One line as bytes, without its `\n`.
    pub fn line_bytes(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut line)
            .expect("read a line");
        assert!(
            n > 0 && line.ends_with(b"\n"),
            "connection ended inside or before a line: {line:?}"
        );
        line.pop();
        line
    }

    /// Reads exactly `n` bytes.
    pub fn exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.reader.read_exact(&mut buf).expect("read bytes");
        buf
    }

    /// Reads until the server closes; returns everything it sent. A reset after the data
    /// counts as a close.
    pub fn rest(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
                Err(e) => panic!(
                    "reading until the server closes: {e} (got {} bytes)",
                    all.len()
                ),
            }
        }
    }

    /// True if the server closes the connection (EOF or reset) without sending more.
    pub fn closed(&mut self) -> bool {
        self.rest().is_empty()
    }

    /// Half-close: shutdown(SHUT_WR).
    pub fn finish(&self) {
        self.stream.shutdown(Shutdown::Write).unwrap();
    }

    /// The echo protocol's greeting.
    pub fn expect_welcome(&mut self) {
        assert_eq!(self.line(), "Welcome buddy!");
    }

    /// Sends `line\n` and returns the reply line.
    pub fn round_trip(&mut self, line: &str) -> String {
        self.send(format!("{line}\n"));
        self.line()
    }

    /// Closes with an RST instead of a FIN (SO_LINGER 0, then close).
    pub fn reset(self) {
        reset(self.stream);
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }

    /// True if nothing arrives within `wait` (the read times out). What does arrive is
    /// kept for the next `line`/`rest`.
    pub fn silent_for(&mut self, wait: Duration) -> bool {
        self.set_read_timeout(wait);
        // fill_buf, not read: whatever arrives stays buffered for the next line().
        let silent = match self.reader.fill_buf() {
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            Ok(_) => false,
        };
        self.set_read_timeout(DEADLINE);
        silent
    }
}

/// Closes `stream` with an RST instead of a FIN (SO_LINGER 0, then close; any clone of
/// it must be gone too).
pub fn reset(stream: TcpStream) {
    sockets_by_hand::net::linger_zero(&stream).expect("setsockopt(SO_LINGER)");
    drop(stream);
}

/// A strace'd run of a lesson: `strace -f -o FILE -e trace=... exe args`.
pub struct Traced {
    pub server: Server,
    pub path: PathBuf,
}

static TRACE_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Every call the trace tests look at; the start-up calls of the Rust runtime come before
/// the first `socket` and are cut off by [`Trace::calls`].
pub const TRACE_SET: &str = "%network,read,write,close,fcntl,poll,ppoll,select,pselect6,\
epoll_create1,epoll_ctl,epoll_wait,epoll_pwait,clone,clone3,fork,vfork,wait4,kill,\
rt_sigtimedwait,signalfd4,io_uring_setup,io_uring_enter,exit_group";

impl Traced {
    /// Starts `exe args -p 0` under strace and waits for its banner.
    pub fn start(exe: &str, args: &[&str]) -> Traced {
        Traced::start_tracing(exe, args, TRACE_SET)
    }

    /// [`Traced::start`] with strace's `-e trace=` set of calls.
    pub fn start_tracing(exe: &str, args: &[&str], set: &str) -> Traced {
        let dir = std::env::temp_dir().join("sockets-by-hand-traces");
        fs::create_dir_all(&dir).unwrap();
        let n = TRACE_SEQ.fetch_add(1, Ordering::SeqCst);
        let path = dir.join(format!(
            "{}-{}-{n}.trace",
            Path::new(exe).file_name().unwrap().to_string_lossy(),
            std::process::id()
        ));
        let _ = fs::remove_file(&path);
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-yy", "-qq", "-e", &format!("trace={set}"), "-o"]);
        cmd.arg(&path).arg(exe).args(args);
        if !args.contains(&"-p") {
            cmd.args(["-p", "0"]);
        }
        Traced {
            server: Server::spawn(cmd),
            path,
        }
    }

    /// The lesson's pid (strace's child).
    pub fn lesson_pid(&self) -> u32 {
        wait_for("strace to start the lesson", DEADLINE, || {
            children(self.server.pid()).first().copied()
        })
    }

    /// Ends the lesson with `signal` (strace then exits too) and returns the trace.
    pub fn stop(self, signal: i32) -> Trace {
        let pid = self.lesson_pid();
        // SAFETY: kill(2) on a pid we just read from /proc as strace's child.
        unsafe { libc::kill(pid as i32, signal) };
        self.finish()
    }

    /// Waits for the lesson (and strace) to exit by itself and returns the trace.
    pub fn finish(mut self) -> Trace {
        let status = self
            .server
            .wait_exit(DEADLINE)
            .expect("strace exits with the lesson");
        Trace::read(&self.path, status)
    }
}

/// A finished trace: one entry per system call, from the lesson's first `socket()` on.
pub struct Trace {
    pub text: String,
    pub status: ExitStatus,
}

impl Trace {
    fn read(path: &Path, status: ExitStatus) -> Trace {
        let text = join_split_calls(&fs::read_to_string(path).unwrap_or_default());
        let _ = fs::remove_file(path);
        Trace { text, status }
    }

    /// The trace lines from the first `socket(` on.
    pub fn lines(&self) -> Vec<&str> {
        let all: Vec<&str> = self.text.lines().collect();
        let first = all
            .iter()
            .position(|l| syscall_of(l).as_deref() == Some("socket"))
            .unwrap_or_else(|| panic!("no socket() in the trace:\n{}", self.text));
        all[first..].to_vec()
    }

    /// The names of the calls from the first `socket` on, in order.
    pub fn calls(&self) -> Vec<String> {
        self.lines().iter().filter_map(|l| syscall_of(l)).collect()
    }

    /// Panics unless `expected` appear in this order (other calls may come between).
    pub fn assert_in_order(&self, expected: &[&str]) {
        let calls = self.calls();
        let mut at = 0;
        for want in expected {
            match calls[at..].iter().position(|c| c == want) {
                Some(i) => at += i + 1,
                None => panic!(
                    "expected {want} after {:?} in the trace; calls were:\n{}",
                    &expected[..expected.iter().position(|e| e == want).unwrap()],
                    self.lines().join("\n")
                ),
            }
        }
    }

    /// Panics if any of `forbidden` was called (after the first socket).
    pub fn assert_absent(&self, forbidden: &[&str]) {
        let calls = self.calls();
        for bad in forbidden {
            assert!(
                !calls.iter().any(|c| c == bad),
                "{bad} appears in the trace:\n{}",
                self.text
            );
        }
    }

    /// The lines for call `name`.
    pub fn lines_of(&self, name: &str) -> Vec<&str> {
        self.lines()
            .into_iter()
            .filter(|l| syscall_of(l).as_deref() == Some(name))
            .collect()
    }
}

/// `text` with each call that strace split (`<unfinished ...>`, `<... name resumed>`) joined
/// back into one line: the checker reads its traces the same way.
pub use workshop::trace::join_split_calls;

/// `1234  accept(3<TCP:...>, ...) = 4` → `accept`; `<... accept resumed>` lines are skipped
/// (their call was counted when it started), as are signals and exits.
pub fn syscall_of(line: &str) -> Option<String> {
    let rest = line
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start();
    if rest.starts_with('<') || rest.starts_with("---") || rest.starts_with("+++") {
        return None;
    }
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && rest[name.len()..].starts_with('(')).then_some(name)
}

pub mod echo_suite;
pub mod load;
pub mod redis;
pub mod single_thread;
pub mod socks5;

/// Runs the test `test` of this binary again inside a fresh network namespace (and a mount
/// namespace with `mount`, for a private resolv.conf), under `unshare`: plainly with
/// CAP_SYS_ADMIN (root, CI), else in a user namespace of its own. Asserts that it passed
/// there. Returns true when this process is that second run (`inside` is set in its
/// environment): the caller then sets the namespace up and does the test's work.
pub fn in_own_namespace(test: &str, inside: &str, mount: bool) -> bool {
    if std::env::var_os(inside).is_some() {
        return true;
    }
    let flags = match (sockets_by_hand::sandbox::has_cap_sys_admin(), mount) {
        (true, false) => "-n",
        (true, true) => "-nm",
        (false, false) => "-rn",
        (false, true) => "-rnm",
    };
    let out = std::process::Command::new("unshare")
        .args([flags, "--"])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(inside, "1")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("unshare (util-linux) runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} inside its namespace: {}\n{stdout}",
        out.status
    );
    false
}

/// `ip link set lo up`, in a namespace of the test's own.
pub fn loopback_up() {
    let up = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    assert!(up.is_ok_and(|s| s.success()), "ip link set lo up");
}
