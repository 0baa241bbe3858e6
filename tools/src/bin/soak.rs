//! soak: `make soak`, a bounded soak of the real lesson binaries (not a lesson).
//!
//! - 10,000 connections each against lessons 04 (fork), 05 (threads), 08 (poll), 10 (epoll):
//!   welcome line, one round trip, `q`, the server's close; 50 clients at once.
//! - 10,000 through lesson 12 (SOCKS5): greeting, CONNECT to a local echo target, one round
//!   trip, half-close, the relay's close.
//! - After each: no zombie (nor any child left), the fd count back to its start, RSS at most
//!   twice its start plus 4 MiB, no error line in the server's log.
//! - Lesson 13 with a real redis-server (started here on a free port), killed and restarted
//!   three times under steady load: every client answered 0x00, 0x01 while Redis is down,
//!   0x02 until the allowlist emptied by the restart is seeded again, never a hang; the time
//!   from each restart to admission working again; one outage line per outage.
//! - Lesson 12 under 1,000 clients that reset (SO_LINGER 0) in the middle of a download:
//!   fd count and RSS back.
//!
//! Loopback only; every loop is bounded in count and in time. `--quick` (`make soak QUICK=1`)
//! runs 1,000 connections and 200 resets, in well under a minute. The figures go to
//! `target/soak/report.md`; the exit status is non-zero if any check failed.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{setsockopt, sockopt};
use nix::unistd::Pid;
use protocols::resp::{self, encode_command};
use protocols::socks5::{client, Reply, Target};
use tools::procfs::{descendants, tree_usage};

/// Soaks lessons 04, 05, 08, 10, 12 and 13 with bounded loopback load; writes a report.
#[derive(Parser, Debug)]
#[command(name = "soak")]
struct Args {
    /// The short version (1,000 connections per server, 200 resets): under a minute.
    #[arg(long)]
    quick: bool,
    /// Connections per server (default 10,000; 1,000 with --quick).
    #[arg(long)]
    connections: Option<usize>,
    /// Resetting clients against lesson 12 (default 1,000; 200 with --quick).
    #[arg(long)]
    resets: Option<usize>,
    /// Only these parts: 04, 05, 08, 10, 12, 13, resets.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where the report goes.
    #[arg(long, default_value = "target/soak/report.md")]
    report: PathBuf,
    /// Extra flags for every lesson started, e.g. `--lesson-args=--no-reap` with
    /// `--only 04` to watch the zombie check fail.
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    lesson_args: String,
}

/// Clients at once.
const CONCURRENCY: usize = 50;
/// The longest any one socket operation of a client may take: past it, the client hung.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one part of the soak may take.
const PART_LIMIT: Duration = Duration::from_secs(150);
/// How long a server gets to settle (fds, children) after its load.
const SETTLE: Duration = Duration::from_secs(10);

fn main() {
    let args = Args::parse();
    let conns = args
        .connections
        .unwrap_or(if args.quick { 1_000 } else { 10_000 });
    let resets = args.resets.unwrap_or(if args.quick { 200 } else { 1_000 });
    let wanted = |part: &str| args.only.is_empty() || args.only.iter().any(|p| p == part);
    let started = Instant::now();
    let mut report = Report::default();
    let extra: Vec<&str> = args.lesson_args.split_whitespace().collect();
    let extra = &extra[..];

    let echo_target = EchoTarget::start(Upstream::Echo);
    for (nn, title) in [
        ("04", "fork"),
        ("05", "threads"),
        ("08", "poll"),
        ("10", "epoll"),
    ] {
        if wanted(nn) {
            let part = soak_server(nn, title, extra, conns, echo_once, &[]);
            report.add(part);
        }
    }
    if wanted("12") {
        let target = echo_target.addr;
        let part = soak_server(
            "12",
            "SOCKS5 relay",
            extra,
            conns,
            move |proxy, i| socks_round_trip(proxy, target, i),
            &[],
        );
        report.add(part);
    }
    if wanted("resets") {
        let source = EchoTarget::start(Upstream::Source);
        let target = source.addr;
        let part = soak_server(
            "12",
            "resets mid-transfer",
            extra,
            resets,
            move |proxy, i| socks_reset(proxy, target, i),
            // The resets are the point: the relay may log them, nothing else.
            &["ECONNRESET", "EPIPE"],
        );
        report.add(part);
        source.stop();
    }
    if wanted("13") {
        report.redis = Some(soak_redis(echo_target.addr, 3, args.quick, extra));
    }
    echo_target.stop();

    let text = report.markdown(conns, resets, args.quick, started.elapsed());
    if let Some(dir) = args.report.parent() {
        let _ = fs::create_dir_all(dir);
    }
    match fs::write(&args.report, &text) {
        Ok(()) => eprintln!("soak: report in {}", args.report.display()),
        Err(e) => eprintln!("soak: cannot write {}: {e}", args.report.display()),
    }
    print!("{text}");
    if !report.passed() {
        eprintln!("soak: FAILED (see the report)");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------

/// A lesson binary running as a child, its stderr lines collected by a thread.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `target/<profile>/lesson-NN -p 0 ARGS` and waits for its banner.
    fn start(nn: &str, args: &[&str]) -> Result<Server, String> {
        let bin = tools::lesson_bin(&format!("lesson-{nn}"));
        let mut child = Command::new(&bin)
            .args(["-p", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {bin}: {e}"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = Arc::clone(&log);
        thread::spawn(move || {
            let mut reader = io::BufReader::new(stderr);
            let mut line = String::new();
            while io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 0) {
                lines.lock().unwrap().push(line.trim_end().to_string());
                line.clear();
            }
        });
        let mut server = Server {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            log,
        };
        let banner = server
            .wait_line(Duration::from_secs(20), |l| l.contains("listening on "))
            .ok_or_else(|| format!("lesson {nn}: no banner in 20 s"))?;
        let addr = banner
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("lesson {nn}: no address in {banner:?}"))?;
        server.addr = addr;
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Polls the log until a line satisfies `pred`, for at most `limit`.
    fn wait_line(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let start = Instant::now();
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            if start.elapsed() > limit {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Is it still running?
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL if it has not exited within 5 s.
    fn stop(mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let start = Instant::now();
        while self.alive() && start.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What /proc says about a server: its fds, its RSS (KiB, with any children), its children
/// and how many of them are zombies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    fds: usize,
    rss_kib: u64,
    children: usize,
    zombies: usize,
}

fn usage(pid: u32) -> Usage {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let kids = descendants(pid);
    let zombies = kids.iter().filter(|&&k| state(k) == Some('Z')).count();
    Usage {
        fds,
        rss_kib: tree_usage(pid).0,
        children: kids.len(),
        zombies,
    }
}

/// The state letter of /proc/PID/stat (R, S, Z, …).
fn state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Is this log line an error the load did not cause on purpose? Errors are written TLPI
/// style (`call: EXXX (text)`); `allowed` names the errnos that are the point of a part.
fn unexpected(line: &str, allowed: &[&str]) -> bool {
    let errno = line.split_whitespace().any(|w| {
        let w = w.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        w.len() >= 4
            && w.starts_with('E')
            && w.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            && !allowed.contains(&w)
    });
    errno || line.contains("panicked") || line.contains("rror:")
}

// ---------------------------------------------------------------------------
// Load: many clients at once, bounded in count and time
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Load {
    ok: usize,
    failed: usize,
    hung: usize,
    not_run: usize,
    first_failures: Vec<String>,
    seconds: f64,
}

/// Runs `one(i)` for i in 0..n on [`CONCURRENCY`] threads, until done or [`PART_LIMIT`].
fn run_load(n: usize, one: &(dyn Fn(usize) -> Result<(), String> + Sync)) -> Load {
    let next = AtomicUsize::new(0);
    let result = Mutex::new(Load::default());
    let start = Instant::now();
    thread::scope(|s| {
        for _ in 0..CONCURRENCY.min(n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || start.elapsed() > PART_LIMIT {
                    break;
                }
                let outcome = one(i);
                let mut r = result.lock().unwrap();
                match outcome {
                    Ok(()) => r.ok += 1,
                    Err(e) => {
                        if e.contains("timed out") {
                            r.hung += 1;
                        }
                        r.failed += 1;
                        if r.first_failures.len() < 5 {
                            r.first_failures.push(format!("#{i}: {e}"));
                        }
                    }
                }
            });
        }
    });
    let mut r = result.into_inner().unwrap();
    r.not_run = n.saturating_sub(r.ok + r.failed);
    r.seconds = start.elapsed().as_secs_f64();
    r
}

/// A loopback connection with [`IO_TIMEOUT`] on connect, reads and writes.
fn dial(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Names the failed step; a read or write that ran into [`IO_TIMEOUT`] says "timed out",
/// which the load counts as a hang.
fn err(what: &str) -> impl Fn(io::Error) -> String + '_ {
    move |e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("{what}: timed out after {IO_TIMEOUT:?}")
        }
        _ => format!("{what}: {e}"),
    }
}

/// Reads until `buf` holds a whole line, returns it (without `\n`) and keeps the rest.
fn read_line(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line = buf[..end].to_vec();
            buf.drain(..=end);
            return Ok(line);
        }
        let n = s.read(&mut chunk).map_err(err("read"))?;
        if n == 0 {
            return Err("EOF before a whole line".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until EOF; anything received meanwhile is an error.
fn expect_eof(s: &mut TcpStream, after: &str) -> Result<(), String> {
    let mut chunk = [0u8; 512];
    match s.read(&mut chunk) {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!("{n} unexpected bytes after {after}")),
        Err(e) => Err(format!("waiting for the close after {after}: {e}")),
    }
}

/// The echo protocol once: welcome, one line and its reverse, `q`, the server's close.
fn echo_once(addr: SocketAddr, i: usize) -> Result<(), String> {
    let mut s = dial(addr).map_err(err("connect"))?;
    let mut buf = Vec::new();
    let welcome = read_line(&mut s, &mut buf)?;
    if welcome != b"Welcome buddy!" {
        return Err(format!(
            "welcome was {:?}",
            String::from_utf8_lossy(&welcome)
        ));
    }
    let line = format!("soak {i} héllo");
    s.write_all(format!("{line}\n").as_bytes())
        .map_err(err("write"))?;
    let reply = read_line(&mut s, &mut buf)?;
    let want: String = line.chars().rev().collect();
    if reply != want.as_bytes() {
        return Err(format!("reply {:?}", String::from_utf8_lossy(&reply)));
    }
    s.write_all(b"q\n").map_err(err("write q"))?;
    if !buf.is_empty() {
        return Err("bytes after the reply".into());
    }
    expect_eof(&mut s, "q")
}

/// Greeting and CONNECT through a SOCKS5 proxy: the reply code and the connection.
fn socks_connect(proxy: SocketAddr, target: SocketAddr) -> Result<(Reply, TcpStream), String> {
    let mut s = dial(proxy).map_err(err("connect"))?;
    s.write_all(&client::greeting(&[0]).unwrap())
        .map_err(err("write greeting"))?;
    let mut method = [0u8; 2];
    s.read_exact(&mut method)
        .map_err(err("read method selection"))?;
    if method != [5, 0] {
        return Err(format!("method selection {method:?}"));
    }
    s.write_all(&client::connect_request(&Target::Ip(target)).unwrap())
        .map_err(err("write request"))?;
    // Every reply this relay sends to an IPv4 client carries an IPv4 BND: 10 bytes.
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).map_err(err("read reply"))?;
    match client::parse_reply(&reply) {
        Ok(Some((rep, _, 10))) => Ok((rep, s)),
        other => Err(format!("reply {reply:?}: {other:?}")),
    }
}

/// Lesson 12 once: handshake, CONNECT to the echo target, a round trip, half-close, and
/// the relay's close once the target closed.
fn socks_round_trip(proxy: SocketAddr, target: SocketAddr, i: usize) -> Result<(), String> {
    let (rep, mut s) = socks_connect(proxy, target)?;
    if rep != Reply::Succeeded {
        return Err(format!("CONNECT answered {rep}"));
    }
    let payload = format!("soak {i}\n");
    s.write_all(payload.as_bytes()).map_err(err("write"))?;
    let mut back = vec![0u8; payload.len()];
    s.read_exact(&mut back).map_err(err("read echo"))?;
    if back != payload.as_bytes() {
        return Err("the payload came back changed".into());
    }
    s.shutdown(Shutdown::Write).map_err(err("shutdown"))?;
    expect_eof(&mut s, "the half-close")
}

/// Lesson 12 once, rudely: CONNECT to the source target, read part of its endless
/// download (16 KiB to about 1 MiB, every other client also sending), then reset.
fn socks_reset(proxy: SocketAddr, target: SocketAddr, i: usize) -> Result<(), String> {
    let (rep, mut s) = socks_connect(proxy, target)?;
    if rep != Reply::Succeeded {
        return Err(format!("CONNECT answered {rep}"));
    }
    let want = 16 * 1024 * (1 + i % 64);
    let mut got = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    while got < want {
        if i % 2 == 1 {
            s.write_all(&chunk[..4096]).map_err(err("write"))?;
        }
        let n = s.read(&mut chunk).map_err(err("read"))?;
        if n == 0 {
            return Err(format!("EOF after {got} bytes"));
        }
        got += n;
    }
    // SO_LINGER 0: close(2) sends RST instead of FIN, bytes in flight both ways.
    setsockopt(
        &s,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .map_err(|e| format!("SO_LINGER: {e}"))?;
    drop(s);
    Ok(())
}

// ---------------------------------------------------------------------------
// A soak of one server
// ---------------------------------------------------------------------------

/// What one part measured.
struct Part {
    name: String,
    connections: usize,
    load: Load,
    start: Usage,
    banner: Usage,
    end: Usage,
    settle_seconds: f64,
    alive: bool,
    unexpected: Vec<String>,
    error: Option<String>,
}

impl Part {
    fn rss_limit(&self) -> u64 {
        2 * self.start.rss_kib + 4096
    }

    fn checks(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("every client served", self.load.ok == self.connections),
            ("no hang", self.load.hung == 0),
            ("still running", self.alive),
            ("no zombie", self.end.zombies == 0),
            ("no child left", self.end.children == 0),
            ("fds back", self.end.fds == self.start.fds),
            (
                "RSS ≤ 2×start + 4 MiB",
                self.end.rss_kib <= self.rss_limit(),
            ),
            ("no unexpected log line", self.unexpected.is_empty()),
            ("ran", self.error.is_none()),
        ]
    }

    fn passed(&self) -> bool {
        self.checks().iter().all(|(_, ok)| *ok)
    }
}

/// Starts lesson `nn`, warms it up with 10 clients, measures, runs `n` clients, waits for
/// it to settle, measures again, stops it.
fn soak_server(
    nn: &str,
    title: &str,
    extra: &[&str],
    n: usize,
    one: impl Fn(SocketAddr, usize) -> Result<(), String> + Sync,
    allowed: &[&str],
) -> Part {
    let name = format!("lesson {nn} ({title})");
    eprintln!("soak: {name}: {n} connections");
    let mut part = Part {
        name,
        connections: n,
        load: Load::default(),
        start: Usage::default(),
        banner: Usage::default(),
        end: Usage::default(),
        settle_seconds: 0.0,
        alive: false,
        unexpected: Vec::new(),
        error: None,
    };
    let mut server = match Server::start(nn, extra) {
        Ok(s) => s,
        Err(e) => {
            part.error = Some(e);
            return part;
        }
    };
    let pid = server.pid();
    let addr = server.addr;
    part.banner = usage(pid);
    // A warm-up, so that what a server sets up once (a resolver thread, buffers kept for
    // reuse) is in the starting figures, not counted as a leak.
    let warm = run_load(10, &|i| one(addr, n + i));
    if warm.ok != 10 {
        part.error = Some(format!("warm-up failed: {:?}", warm.first_failures));
    }
    settle(pid, part.banner.fds.max(1), Duration::from_secs(2));
    part.start = usage(pid);
    part.load = run_load(n, &|i| one(addr, i));
    let t = Instant::now();
    part.end = settle(pid, part.start.fds, SETTLE);
    part.settle_seconds = t.elapsed().as_secs_f64();
    part.alive = server.alive();
    part.unexpected = server
        .lines()
        .into_iter()
        .filter(|l| unexpected(l, allowed))
        .take(10)
        .collect();
    server.stop();
    eprintln!(
        "soak: {}: {} ok, {} failed in {:.1} s; fds {} → {}, RSS {} → {} KiB",
        part.name,
        part.load.ok,
        part.load.failed,
        part.load.seconds,
        part.start.fds,
        part.end.fds,
        part.start.rss_kib,
        part.end.rss_kib
    );
    part
}

/// Polls until the server has `fds` fds and no children, for at most `limit`; the last
/// figures either way.
fn settle(pid: u32, fds: usize, limit: Duration) -> Usage {
    let start = Instant::now();
    loop {
        let u = usage(pid);
        if (u.fds <= fds && u.children == 0) || start.elapsed() > limit {
            return u;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Upstreams for lesson 12: an echo target and an endless source
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Upstream {
    /// Sends back what it reads; closes after the peer's EOF.
    Echo,
    /// Writes 64 KiB chunks until the peer goes (at most 256 MiB), reading what it gets.
    Source,
}

/// A thread-per-connection server on a free loopback port.
struct EchoTarget {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<()>,
}

impl EchoTarget {
    fn start(kind: Upstream) -> EchoTarget {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                thread::spawn(move || serve_upstream(conn, kind));
            }
        });
        EchoTarget { addr, stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wakes the accept
        let _ = self.thread.join();
    }
}

fn serve_upstream(mut conn: TcpStream, kind: Upstream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(30)));
    match kind {
        Upstream::Echo => {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
        Upstream::Source => {
            let _ = conn.set_nonblocking(false);
            let mut reader = conn.try_clone();
            // Drain what the client sends, so neither side stalls.
            let drain = thread::spawn(move || {
                if let Ok(r) = reader.as_mut() {
                    let mut buf = [0u8; 16 * 1024];
                    while r.read(&mut buf).is_ok_and(|n| n > 0) {}
                }
            });
            let chunk = vec![b's'; 64 * 1024];
            for _ in 0..4096 {
                if conn.write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = conn.shutdown(Shutdown::Both);
            let _ = drain.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Lesson 13 and Redis restarts
// ---------------------------------------------------------------------------

/// A redis-server child on 127.0.0.1:`port`, memory only.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// On a free port (tries a few).
    fn start() -> Result<Redis, String> {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| e.to_string())?
                .port();
            if let Some(r) = Redis::start_on(port)? {
                return Ok(r);
            }
        }
        Err("redis-server would not start on a free port".into())
    }

    /// On `port`, once it answers PING; None if it exited (port taken meanwhile).
    fn start_on(port: u16) -> Result<Option<Redis>, String> {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e} (make test and make soak install it)"))?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(None);
            }
            if redis_command(port, &[b"PING"]).is_ok() {
                return Ok(Some(Redis { child, port }));
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err("redis-server never answered PING".into())
    }

    fn allow(&mut self) -> Result<(), String> {
        match redis_command(self.port, &[b"SET", b"allowed:127.0.0.1", b"1"])? {
            resp::Value::SimpleString(ok) if ok == "OK" => Ok(()),
            other => Err(format!("SET answered {other:?}")),
        }
    }

    /// SIGKILL: no goodbye to its clients.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One command to the Redis on `port`, on a fresh connection: its reply.
fn redis_command(port: u16, args: &[&[u8]]) -> Result<resp::Value, String> {
    let mut s = dial(SocketAddr::from(([127, 0, 0, 1], port))).map_err(err("redis"))?;
    let mut out = Vec::new();
    encode_command(args, &mut out);
    s.write_all(&out).map_err(err("redis write"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match resp::parse(&buf) {
            Ok(Some((value, _))) => return Ok(value),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        let n = s.read(&mut chunk).map_err(err("redis read"))?;
        if n == 0 {
            return Err("redis closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One client of the steady load: when it asked and what it got.
#[derive(Clone, Copy, Debug)]
struct Asked {
    at: Duration,
    took: Duration,
    outcome: Option<u8>, // the reply code; None: an error or a hang
}

/// One restart: when Redis was killed, seen down, restarted, seen back (0x02), seeded, and
/// admission working again.
#[derive(Debug, Default, Clone, Copy)]
struct Restart {
    killed: Duration,
    first_01: Option<Duration>,
    restarted: Duration,
    first_02: Option<Duration>,
    seeded: Duration,
    first_00: Option<Duration>,
}

struct RedisPart {
    restarts: Vec<Restart>,
    asked: Vec<Asked>,
    outage_lines: Vec<String>,
    wrong: Vec<String>,
    start: Usage,
    end: Usage,
    alive: bool,
    unexpected: Vec<String>,
    error: Option<String>,
}

impl RedisPart {
    fn count(&self, code: Option<u8>) -> usize {
        self.asked.iter().filter(|a| a.outcome == code).count()
    }

    fn checks(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("ran", self.error.is_none()),
            (
                "three restarts recovered",
                self.restarts.len() == 3 && self.restarts.iter().all(|r| r.first_00.is_some()),
            ),
            ("no hang or error", self.count(None) == 0),
            (
                "only 0x00, 0x01, 0x02",
                self.asked
                    .iter()
                    .all(|a| matches!(a.outcome, Some(0..=2) | None)),
            ),
            ("each answer fits its phase", self.wrong.is_empty()),
            (
                "one outage line per outage",
                self.outage_lines.len() == self.restarts.len(),
            ),
            ("still running", self.alive),
            ("fds back", self.end.fds == self.start.fds),
            (
                "RSS ≤ 2×start + 4 MiB",
                self.end.rss_kib <= 2 * self.start.rss_kib + 4096,
            ),
            ("no unexpected log line", self.unexpected.is_empty()),
        ]
    }
}

/// Lesson 13 against a real Redis killed and restarted `restarts` times under steady load.
fn soak_redis(target: SocketAddr, restarts: usize, quick: bool, extra: &[&str]) -> RedisPart {
    eprintln!("soak: lesson 13: {restarts} Redis restarts under load");
    let mut part = RedisPart {
        restarts: Vec::new(),
        asked: Vec::new(),
        outage_lines: Vec::new(),
        wrong: Vec::new(),
        start: Usage::default(),
        end: Usage::default(),
        alive: false,
        unexpected: Vec::new(),
        error: None,
    };
    if let Err(e) = redis_restarts(target, restarts, quick, extra, &mut part) {
        part.error = Some(e);
    }
    part
}

fn redis_restarts(
    target: SocketAddr,
    restarts: usize,
    quick: bool,
    extra: &[&str],
    part: &mut RedisPart,
) -> Result<(), String> {
    let steady = Duration::from_millis(if quick { 300 } else { 1500 });
    let down = Duration::from_millis(if quick { 300 } else { 1500 });
    let wait = Duration::from_secs(10);

    let mut redis = Redis::start()?;
    let port = redis.port;
    redis.allow()?;
    let redis_arg = format!("127.0.0.1:{port}");
    let mut args = vec!["--redis", &redis_arg];
    args.extend_from_slice(extra);
    let mut server = Server::start("13", &args)?;
    server
        .wait_line(wait, |l| l.contains("connected to Redis"))
        .ok_or("lesson 13 never connected to Redis")?;
    let proxy = server.addr;
    let pid = server.pid();
    let connected = usage(pid);

    // Warm-up: ten admitted clients, and the starting figures once the relay closed them.
    let t0 = Instant::now();
    for _ in 0..10 {
        socks_round_trip(proxy, target, 0)?;
    }
    part.start = settle(pid, connected.fds, Duration::from_secs(2));

    // The steady load: 4 clients asking in turn, each every few milliseconds.
    let asked = Arc::new(Mutex::new(Vec::<Asked>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let asked = Arc::clone(&asked);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut i = 0;
                // Bounded: the stop flag, and at most 20,000 clients per worker.
                while !stop.load(Ordering::Relaxed) && i < 20_000 {
                    let at = t0.elapsed();
                    let outcome = match socks_connect(proxy, target) {
                        Ok((Reply::Succeeded, mut s)) => {
                            let ok = s.write_all(b"ping\n").is_ok()
                                && s.shutdown(Shutdown::Write).is_ok()
                                && {
                                    let mut back = Vec::new();
                                    s.read_to_end(&mut back).is_ok() && back == b"ping\n"
                                };
                            ok.then_some(0)
                        }
                        Ok((rep, mut s)) => {
                            // A refusal is followed by the relay's close.
                            expect_eof(&mut s, "a refusal").ok().map(|()| rep.code())
                        }
                        Err(_) => None,
                    };
                    let took = t0.elapsed() - at;
                    asked.lock().unwrap().push(Asked { at, took, outcome });
                    i += 1;
                    thread::sleep(Duration::from_millis(2 + w));
                }
            })
        })
        .collect();
    let seen = |code: u8, since: Duration| -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < wait {
            let found = asked
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.at >= since && a.outcome == Some(code))
                .map(|a| a.at + a.took)
                .min();
            if found.is_some() {
                return found;
            }
            thread::sleep(Duration::from_millis(5));
        }
        None
    };

    let mut result = Ok(());
    for _ in 0..restarts {
        thread::sleep(steady);
        let mut r = Restart {
            killed: t0.elapsed(),
            ..Restart::default()
        };
        redis.kill();
        r.first_01 = seen(1, r.killed);
        thread::sleep(down);
        r.restarted = t0.elapsed();
        redis = match Redis::start_on(port)? {
            Some(redis) => redis,
            None => {
                result = Err(format!("redis-server would not start again on {port}"));
                break;
            }
        };
        // Back, and empty: 0x02 until the allowlist is seeded again.
        r.first_02 = seen(2, r.restarted);
        r.seeded = t0.elapsed();
        redis.allow()?;
        r.first_00 = seen(0, r.seeded);
        part.restarts.push(r);
        if r.first_00.is_none() {
            result = Err("admission never came back".into());
            break;
        }
    }
    thread::sleep(steady);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    part.asked = std::mem::take(&mut *asked.lock().unwrap());
    part.wrong = judge(&part.asked, &part.restarts);
    part.end = settle(pid, part.start.fds, SETTLE);
    part.alive = server.alive();
    let lines = server.lines();
    part.outage_lines = lines
        .iter()
        .filter(|l| l.starts_with("allowlist unavailable:"))
        .cloned()
        .collect();
    // Redis going away is the point: its errnos are expected, and the outage lines.
    part.unexpected = lines
        .iter()
        .filter(|l| !l.starts_with("allowlist unavailable:"))
        .filter(|l| !l.contains("allowlist unavailable")) // the refusals that say why
        .filter(|l| unexpected(l, &["ECONNREFUSED", "ECONNRESET", "EPIPE"]))
        .take(10)
        .cloned()
        .collect();
    server.stop();
    result
}

/// Which answers do not fit the phase they were asked in: after admission came back and
/// before the next kill, only 0x00; once 0x01 was seen and until the restart, only 0x01;
/// from the restart to the seeding, 0x01 (not reconnected yet) or 0x02; after the seeding,
/// 0x02 (the lookup was already on its way) or 0x00.
fn judge(asked: &[Asked], restarts: &[Restart]) -> Vec<String> {
    let mut wrong = Vec::new();
    for a in asked {
        let Some(code) = a.outcome else { continue };
        let mut allowed: &[u8] = &[0, 1, 2];
        for (k, r) in restarts.iter().enumerate() {
            let up_from = if k == 0 {
                Duration::ZERO
            } else {
                restarts[k - 1].first_00.unwrap_or(Duration::MAX)
            };
            if a.at >= up_from && a.at + a.took < r.killed {
                allowed = &[0];
            } else if r.first_01.is_some_and(|t| a.at > t) && a.at + a.took < r.restarted {
                allowed = &[1];
            } else if a.at > r.restarted && a.at + a.took < r.seeded {
                allowed = &[1, 2];
            } else if a.at > r.seeded && r.first_00.is_some_and(|t| a.at + a.took < t) {
                allowed = &[2, 0];
            }
        }
        if let Some(last) = restarts.last().and_then(|r| r.first_00) {
            if a.at > last {
                allowed = &[0];
            }
        }
        if !allowed.contains(&code) && wrong.len() < 10 {
            wrong.push(format!(
                "0x{code:02x} at {:.3} s (allowed here: {allowed:?})",
                a.at.as_secs_f64()
            ));
        }
    }
    wrong
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Report {
    parts: Vec<Part>,
    redis: Option<RedisPart>,
}

impl Report {
    fn add(&mut self, part: Part) {
        self.parts.push(part);
    }

    fn passed(&self) -> bool {
        self.parts.iter().all(Part::passed)
            && self
                .redis
                .as_ref()
                .is_none_or(|r| r.checks().iter().all(|(_, ok)| *ok))
    }

    fn markdown(&self, conns: usize, resets: usize, quick: bool, took: Duration) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# Soak report{}\n\n{} connections per server, {} resetting clients, {} at once; \
             loopback only. Took {:.0} s. Verdict: **{}**.\n",
            if quick { " (quick)" } else { "" },
            conns,
            resets,
            CONCURRENCY,
            took.as_secs_f64(),
            if self.passed() { "PASS" } else { "FAIL" }
        );
        if !self.parts.is_empty() {
            md.push_str(
                "| server | clients ok / run | hung | s | conn/s | fds start → end | \
                 children, zombies after | RSS KiB banner / start → end (limit) | unexpected log lines | checks |\n\
                 |---|---|---|---|---|---|---|---|---|---|\n",
            );
        }
        for p in &self.parts {
            let failed: Vec<&str> = p
                .checks()
                .into_iter()
                .filter(|(_, ok)| !ok)
                .map(|(name, _)| name)
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} / {} | {} | {:.1} | {:.0} | {} → {} | {}, {} | {} / {} → {} ({}) | {} | {} |",
                p.name,
                p.load.ok,
                p.connections,
                p.load.hung,
                p.load.seconds,
                p.load.ok as f64 / p.load.seconds.max(1e-9),
                p.start.fds,
                p.end.fds,
                p.end.children,
                p.end.zombies,
                p.banner.rss_kib,
                p.start.rss_kib,
                p.end.rss_kib,
                p.rss_limit(),
                p.unexpected.len(),
                if failed.is_empty() {
                    "pass".to_string()
                } else {
                    format!("FAIL: {}", failed.join(", "))
                }
            );
        }
        for p in &self.parts {
            if let Some(e) = &p.error {
                let _ = writeln!(md, "\n{}: {e}", p.name);
            }
            for f in &p.load.first_failures {
                let _ = writeln!(md, "\n{}: client {f}", p.name);
            }
            for l in &p.unexpected {
                let _ = writeln!(md, "\n{}: log: `{l}`", p.name);
            }
        }
        if let Some(r) = &self.redis {
            r.markdown(&mut md);
        }
        md
    }
}

impl RedisPart {
    fn markdown(&self, md: &mut String) {
        let s = |d: Option<Duration>| {
            d.map_or("never".to_string(), |d| format!("{:.3}", d.as_secs_f64()))
        };
        let _ = writeln!(
            md,
            "\n## Lesson 13: Redis killed and restarted under steady load\n\n\
             {} clients asked: {} got 0x00, {} got 0x01, {} got 0x02, {} hung or failed. \
             fds {} → {}, RSS {} → {} KiB. Outage lines in the log: {}.\n",
            self.asked.len(),
            self.count(Some(0)),
            self.count(Some(1)),
            self.count(Some(2)),
            self.count(None),
            self.start.fds,
            self.end.fds,
            self.start.rss_kib,
            self.end.rss_kib,
            self.outage_lines.len(),
        );
        md.push_str(
            "| restart | killed at s | first 0x01 | restarted at | first 0x02 | seeded at | \
             first 0x00 | recovery (restart → 0x00) |\n|---|---|---|---|---|---|---|---|\n",
        );
        for (k, r) in self.restarts.iter().enumerate() {
            let recovery = r.first_00.map(|t| t.saturating_sub(r.restarted));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                k + 1,
                s(Some(r.killed)),
                s(r.first_01),
                s(Some(r.restarted)),
                s(r.first_02),
                s(Some(r.seeded)),
                s(r.first_00),
                s(recovery),
            );
        }
        let failed: Vec<&str> = self
            .checks()
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(name, _)| name)
            .collect();
        let _ = writeln!(
            md,
            "\nChecks: {}",
            if failed.is_empty() {
                "pass".to_string()
            } else {
                format!("FAIL: {}", failed.join(", "))
            }
        );
        if let Some(e) = &self.error {
            let _ = writeln!(md, "\nError: {e}");
        }
        for l in &self.outage_lines {
            let _ = writeln!(md, "\nOutage line: `{l}`");
        }
        for w in &self.wrong {
            let _ = writeln!(md, "\nOut of phase: {w}");
        }
        for l in &self.unexpected {
            let _ = writeln!(md, "\nUnexpected log line: `{l}`");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_are_told_apart() {
        assert!(unexpected("accept: EMFILE (Too many open files)", &[]));
        assert!(unexpected("thread 'main' panicked at src/x.rs:1:1", &[]));
        assert!(!unexpected(
            "client disconnected: 127.0.0.1:5 → 127.0.0.1:9 · closed",
            &[]
        ));
        assert!(!unexpected(
            "read: ECONNRESET (Connection reset by peer)",
            &["ECONNRESET"]
        ));
        assert!(unexpected(
            "write: EBADF (Bad file descriptor)",
            &["ECONNRESET"]
        ));
    }

    #[test]
    fn answers_are_judged_by_phase() {
        let s = Duration::from_secs_f64;
        let r = Restart {
            killed: s(10.0),
            first_01: Some(s(11.0)),
            restarted: s(20.0),
            first_02: Some(s(21.0)),
            seeded: s(22.0),
            first_00: Some(s(23.0)),
        };
        let asked = |at: f64, code: u8| Asked {
            at: s(at),
            took: s(0.1),
            outcome: Some(code),
        };
        let fit = [
            asked(5.0, 0),
            asked(9.95, 1), // asked while Redis was being killed: anything goes
            asked(12.0, 1),
            asked(20.5, 1),
            asked(20.5, 2),
            asked(22.2, 2),
            asked(22.2, 0),
            asked(24.0, 0),
        ];
        assert!(judge(&fit, &[r]).is_empty(), "{:?}", judge(&fit, &[r]));
        for misfit in [
            asked(5.0, 1),
            asked(12.0, 0),
            asked(20.5, 0),
            asked(24.0, 2),
        ] {
            assert_eq!(judge(&[misfit], &[r]).len(), 1, "{misfit:?}");
        }
    }
}
