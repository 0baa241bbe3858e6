//! The scripted scenarios, for the mistakes no client alone can provoke: they start the
//! lesson themselves (found next to this binary, in target/release or target/debug), pass
//! `--mistake NAME` on, and clean up after themselves.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use protocols::socks5::{Reply, Target};

use crate::peer::{patience, Peer};
use crate::{echo, socks, Outcome, Provoked};

/// The lesson binaries sit beside this one (a test's copy runs from target/*/deps).
pub fn lesson_bin(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut dir = exe.parent().ok_or("no directory")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is not built: cargo build --release --bin {name} (make provoke-NN does)",
            path.display()
        ))
    }
}

/// A lesson started by a scenario; killed when dropped.
pub struct Lesson {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Lesson {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a start ended: the banner, or the lesson's exit status and its stderr.
pub enum Started {
    Up(Lesson),
    Exited(i32, String),
}

/// Starts `name args`, with `setup` run in the child before exec, and waits for its
/// banner (`... listening on ADDR ...`) or its exit.
pub fn start(
    name: &str,
    args: &[String],
    setup: Option<fn() -> std::io::Result<()>>,
) -> Result<Started, String> {
    let mut cmd = Command::new(lesson_bin(name)?);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(f) = setup {
        // SAFETY: `f` makes only async-signal-safe calls (setrlimit).
        unsafe { cmd.pre_exec(f) };
    }
    let mut child = cmd.spawn().map_err(|e| format!("spawn {name}: {e}"))?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("piped");
    let lines = log.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(rest.split(' ').next().unwrap_or("").to_string());
            }
            lines.lock().unwrap().push(line);
        }
    });
    let by = Instant::now() + 4 * patience();
    loop {
        if let Ok(addr) = rx.recv_timeout(Duration::from_millis(20)) {
            let addr = addr
                .parse()
                .map_err(|e| format!("banner address {addr:?}: {e}"))?;
            return Ok(Started::Up(Lesson { child, addr }));
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Let the reader thread take the last lines.
            thread::sleep(Duration::from_millis(50));
            let text = log.lock().unwrap().join("\n");
            return Ok(Started::Exited(status.code().unwrap_or(-1), text));
        }
        if Instant::now() > by {
            let _ = child.kill();
            return Err(format!("{name} printed no banner"));
        }
    }
}

/// `--mistake NAME` for the lesson; a lesson from before `--mistake` existed (exit 2, a
/// usage error naming it) gets the older spelling `--NAME` (--no-reuseaddr, --no-reap).
pub fn start_with(
    name: &str,
    mistake: Option<&str>,
    args: &[&str],
    setup: Option<fn() -> std::io::Result<()>>,
) -> Result<Started, String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let Some(m) = mistake else {
        return start(name, &args, setup);
    };
    let with = [vec!["--mistake".to_string(), m.to_string()], args.clone()].concat();
    match start(name, &with, setup)? {
        Started::Exited(2, text) if text.contains("'--mistake'") => {
            start(name, &[vec![format!("--{m}")], args].concat(), setup)
        }
        other => Ok(other),
    }
}

fn up(started: Started, name: &str) -> Result<Lesson, String> {
    match started {
        Started::Up(l) => Ok(l),
        Started::Exited(code, text) => Err(format!("{name} exited {code}: {text}")),
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("bind: {e}"))
}

/// Lesson 01 twice on one port: the first run's client reads its hello (the server closes
/// first, so ITS side of the connection sits in TIME_WAIT), then at once the second run
/// must bind the same port.
pub fn restart(mistake: Option<&str>) -> Provoked {
    let port = free_port()?.to_string();
    let args = ["-p", port.as_str()];
    let first = up(start_with("lesson-01", mistake, &args, None)?, "lesson-01")?;
    let mut c = Peer::connect(first.addr).map_err(|e| format!("connect: {e}"))?;
    let hello = c.line();
    // Wait for the server's EOF before closing: the side that closes first keeps TIME_WAIT,
    // and it must be the server's.
    let eof = c.line();
    drop(c);
    let mut first = first;
    let by = Instant::now() + patience();
    while first.child.try_wait().ok().flatten().is_none() && Instant::now() < by {
        thread::sleep(Duration::from_millis(10));
    }
    if !matches!(hello, crate::peer::Got::Line(_)) || eof != crate::peer::Got::Eof {
        return Err("the first run sent no hello, or did not close".into());
    }
    let did = format!("lesson 01 ran once on port {port} and served a client; run again at once");
    Ok(match start_with("lesson-01", mistake, &args, None)? {
        Started::Up(_second) => Outcome::new(true, format!("{did}: it bound the port and listens")),
        Started::Exited(_, text) if text.contains("EADDRINUSE") => Outcome::new(
            false,
            format!(
                "{did}: bind failed with EADDRINUSE (the first run's connection is in TIME_WAIT)"
            ),
        ),
        Started::Exited(code, text) => {
            return Err(format!("the second run exited {code}: {text}"));
        }
    })
}

/// RLIMIT_SIGPENDING 8 in the child before exec: what `prlimit --sigpending=8` does.
fn low_sigpending() -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: 8,
        rlim_max: 8,
    };
    // SAFETY: setrlimit(2) with a valid struct; async-signal-safe.
    if unsafe { libc::setrlimit(libc::RLIMIT_SIGPENDING, &lim) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Lesson 09 with a real-time signal queue of 8 entries, `n` clients at once.
pub fn sigpending(mistake: Option<&str>, n: usize) -> Provoked {
    let lesson = up(
        start_with("lesson-09", mistake, &["-p", "0"], Some(low_sigpending))?,
        "lesson-09",
    )?;
    let o = echo::many(lesson.addr, n, None)?;
    Ok(Outcome::new(
        o.ok,
        format!("lesson 09 under RLIMIT_SIGPENDING 8: {}", o.line),
    ))
}

/// A private redis-server on a free loopback port (memory only); killed when dropped.
struct Redis(Child, u16);

impl Redis {
    fn start() -> Result<Redis, String> {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server (make deps installs it): {e}"))?;
        let redis = Redis(child, port);
        let by = Instant::now() + patience();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > by {
                return Err("redis-server never answered".into());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private redis-server, lesson 13 (with `mistake`) asking it, and a target that accepts,
/// so that "let through" would really connect (keep the listener while it is used).
fn lesson_13(mistake: Option<&str>) -> Result<(Redis, Lesson, TcpListener, Target), String> {
    let redis = Redis::start()?;
    let store = format!("127.0.0.1:{}", redis.1);
    let lesson = up(
        start_with("lesson-13", mistake, &["-p", "0", "--redis", &store], None)?,
        "lesson-13",
    )?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let target = Target::Ip(listener.local_addr().map_err(|e| e.to_string())?);
    Ok((redis, lesson, listener, target))
}

/// Lesson 13 with an empty allowlist: a CONNECT is refused (0x02) while Redis runs; Redis
/// is stopped; the same CONNECT must still be refused, never let through.
pub fn fail_open(mistake: Option<&str>) -> Provoked {
    let (redis, lesson, _listener, target) = lesson_13(mistake)?;
    let (before, _) = socks::connect(lesson.addr, &target)?;
    drop(redis);
    let (after, _) = socks::connect(lesson.addr, &target)?;
    let said = format!(
        "a client not on the allowlist: with Redis up, reply {:#04x} ({}); Redis stopped, reply {:#04x} ({})",
        before.code(),
        before.describe(),
        after.code(),
        after.describe()
    );
    Ok(match (before, after) {
        (_, Reply::Succeeded) => Outcome::new(
            false,
            format!("{said}: the store is down and everyone is let in (fail open)"),
        ),
        (Reply::Succeeded, _) => Outcome::new(false, format!("{said}: let in while Redis said no")),
        _ => Outcome::new(true, format!("{said}: fails closed")),
    })
}

/// How long a refusal may take while Redis is frozen: lesson 13's default `--redis-timeout`
/// (0.5 s), and a second of margin.
const FROZEN_PROMPT: Duration = Duration::from_millis(1500);

/// Lesson 13, then its redis-server frozen (SIGSTOP: the kernel still completes handshakes
/// and takes the GETs, Redis never answers): a client must be refused 0x01 promptly, never
/// let in and never left waiting.
pub fn frozen_store(mistake: Option<&str>) -> Provoked {
    let (redis, lesson, _listener, target) = lesson_13(mistake)?;
    // A first client while Redis runs: the proxy's Redis connection is up before the freeze.
    socks::connect(lesson.addr, &target)?;
    let freeze = |signal| {
        // SAFETY: kill(2) on the redis-server this scenario started.
        unsafe { libc::kill(redis.0.id() as i32, signal) }
    };
    freeze(libc::SIGSTOP);
    let asked = Instant::now();
    let got = socks::connect(lesson.addr, &target);
    let took = asked.elapsed();
    freeze(libc::SIGCONT);
    let said = |what: String| format!("Redis frozen (SIGSTOP): {what} after {took:.2?}");
    Ok(match got {
        Ok((Reply::GeneralFailure, _)) if took < FROZEN_PROMPT => Outcome::new(
            true,
            said("refused 0x01".into()) + ": fails closed and fast",
        ),
        Ok((Reply::Succeeded, _)) => Outcome::new(
            false,
            said("let in".into()) + ": the store cannot answer and everyone is let in (fail open)",
        ),
        Ok((rep, _)) => Outcome::new(
            false,
            said(format!("reply {:#04x} ({})", rep.code(), rep.describe()))
                + ": every client waits that long while the store is frozen",
        ),
        Err(e) => Outcome::new(false, said(format!("no reply ({e})"))),
    })
}
