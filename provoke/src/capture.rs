//! The capture scenarios (lesson 18), each in a network namespace of its own (`unshare -n`,
//! or `-rn` without CAP_SYS_ADMIN: the user namespace gives the capture its CAP_NET_RAW), so
//! the capture sees only the traffic made here:
//! - `capture-echo`: the capture's output is carried over a loopback TCP connection, as ssh
//!   carries a remote tcpdump's; with a filter it sees none of that connection's packets,
//!   without one (`no-filter`) it sees its own output, and the lines feed themselves;
//! - `capture-ipv6`: one IPv6 connection; no line may be cut inside the TCP header
//!   (`short-snaplen` cuts every one);
//! - `capture-burst`: a burst of UDP datagrams at the port; the kernel's PACKET_STATISTICS
//!   must count no drop. The lesson runs with its ring, the fix; with `--mistake
//!   one-per-call` it runs the recvfrom loop with a poll per frame, which drops.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::peer::patience;
use crate::scenario::lesson_bin;
use crate::{Outcome, Provoked};

/// Set in the re-run inside the namespace.
const INSIDE: &str = "PROVOKE_CAPTURE_NAMESPACE";
/// Datagrams in the burst: at a 96-byte snap length they fit the ring (4 MiB) whole, and
/// are hundreds of times what a socket's default receive queue holds.
const BURST: usize = 10_000;

/// Runs `kind` inside a new network namespace (this binary again, under unshare).
pub fn scenario(kind: &str, mistake: Option<&str>) -> Provoked {
    if std::env::var_os(INSIDE).is_some() {
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        if !up.is_ok_and(|s| s.success()) {
            return Err("ip link set lo up failed inside the namespace".into());
        }
        return match kind {
            "capture-echo" => echo(mistake),
            "capture-ipv6" => ipv6(mistake),
            _ => burst(mistake),
        };
    }
    let flags = if crate::dns::has_cap_sys_admin() {
        "-n"
    } else {
        "-rn"
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new("unshare");
    cmd.args([flags, "--"]).arg(exe).arg(kind);
    if let Some(m) = mistake {
        cmd.args(["--mistake", m]);
    }
    let out = cmd
        .env(INSIDE, "1")
        .output()
        .map_err(|e| format!("unshare (util-linux): {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .trim()
        .trim_start_matches(&format!("provoke {kind}: "));
    let line = line
        .trim_end_matches(" [ok]")
        .trim_end_matches(" [FAILURE SEEN]");
    match out.status.code() {
        Some(0) => Ok(Outcome::new(true, line)),
        Some(1) => Ok(Outcome::new(false, line)),
        _ => Err(format!(
            "inside the namespace: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout.trim()
        )),
    }
}

/// Lesson 18 running: its stdout and stderr read by threads.
struct Capture {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Option<mpsc::Receiver<String>>,
}

impl Capture {
    /// Starts lesson-18 with `args` (and `--mistake`), and waits for its banner.
    fn start(mistake: Option<&str>, args: &[String]) -> Result<Capture, String> {
        let mut cmd = Command::new(lesson_bin("lesson-18")?);
        if let Some(m) = mistake {
            cmd.args(["--mistake", m]);
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn lesson-18: {e}"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (err, out) = (child.stderr.take().unwrap(), child.stdout.take().unwrap());
        let lines = stderr.clone();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let (tx, stdout) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut capture = Capture {
            child,
            stderr,
            stdout: Some(stdout),
        };
        let by = Instant::now() + 4 * patience();
        while Instant::now() < by {
            if capture.log().contains("capturing on") {
                return Ok(capture);
            }
            if let Ok(Some(status)) = capture.child.try_wait() {
                return Err(format!("lesson-18 exited {status}: {}", capture.log()));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Err(format!("lesson-18 printed no banner: {}", capture.log()))
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The lines the lesson prints on stdout, as they come (taken once).
    fn lines(&mut self) -> mpsc::Receiver<String> {
        self.stdout.take().expect("the lines are taken once")
    }

    /// Ctrl-C, then its counts: (captured, dropped).
    fn stop(mut self) -> Result<(u64, u64), String> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let by = Instant::now() + 4 * patience();
        while Instant::now() < by {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let by = Instant::now() + patience();
        loop {
            let log = self.log();
            let count = |what: &str| {
                log.lines()
                    .find_map(|l| l.strip_suffix(what))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            };
            if let (Some(c), Some(d)) = (
                count(" packets captured"),
                count(" packets dropped by kernel"),
            ) {
                return Ok((c, d));
            }
            if Instant::now() > by {
                return Err(format!("lesson-18 printed no counts: {log}"));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The bytes a sink received.
type Carried = Arc<Mutex<Vec<u8>>>;

/// A listener on `addr` that accepts and reads everything, each connection in a thread.
fn sink(addr: &str) -> Result<(u16, Carried), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let all = got.clone();
    thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let all = all.clone();
            thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    all.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    Ok((port, got))
}

/// One short exchange on `port` of `host`: connect, a line each way, close.
fn exchange(host: &str, port: u16) -> Result<(), String> {
    let mut c = TcpStream::connect((host, port)).map_err(|e| format!("connect: {e}"))?;
    c.write_all(b"hello\n").map_err(|e| e.to_string())?;
    c.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    Ok(())
}

/// An echo-ish server on `addr`: reads to EOF, answers `bye`, closes.
fn server(addr: &str) -> Result<u16, String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            let mut buf = Vec::new();
            let _ = conn.read_to_end(&mut buf);
            let _ = conn.write_all(b"bye\n");
        }
    });
    Ok(port)
}

/// no-filter: the capture's output goes over a loopback TCP connection to a sink; count the
/// lines about that connection's own port.
fn echo(mistake: Option<&str>) -> Provoked {
    let port = server("127.0.0.1:0")?;
    let (out_port, carried) = sink("127.0.0.1:0")?;
    let mut capture = Capture::start(
        mistake,
        &["--port".into(), port.to_string(), "-c".into(), "500".into()],
    )?;
    // What ssh would do: the capture's lines go out over a TCP connection.
    let mut carrier =
        TcpStream::connect(("127.0.0.1", out_port)).map_err(|e| format!("connect: {e}"))?;
    let lines = capture.lines();
    let forward = thread::spawn(move || {
        for line in lines {
            if carrier.write_all(format!("{line}\n").as_bytes()).is_err() {
                break;
            }
        }
    });
    for _ in 0..3 {
        exchange("127.0.0.1", port)?;
    }
    // A last connection from a port of our choosing marks the end: once its FIN's line has
    // come through the carrier, every line before it has too.
    let marker = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let mark = format!(
        ".{} > 127.0.0.1.{port}: Flags [F.]",
        marker.local_addr().unwrap().port()
    );
    drop(marker);
    let by = Instant::now() + 4 * patience();
    let text = loop {
        let text = String::from_utf8_lossy(&carried.lock().unwrap()).into_owned();
        if text.contains(&mark) || Instant::now() > by {
            break text;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let (captured, _) = capture.stop()?;
    let _ = forward.join();
    let own = format!(".{out_port}");
    let about_own = text
        .lines()
        .filter(|l| l.contains(&format!("{own} ")) || l.contains(&format!("{own}:")))
        .count();
    let about_port = text
        .lines()
        .filter(|l| l.contains(&format!(".{port}")))
        .count();
    let line = format!(
        "{captured} lines captured; {about_port} about port {port}, {about_own} about the \
         connection carrying the capture's own output (port {out_port})"
    );
    if about_port == 0 {
        return Err(format!("saw no packet of port {port}: {line}"));
    }
    Ok(Outcome::new(about_own == 0, line))
}

/// short-snaplen: one IPv6 connection; count the lines cut inside the TCP header.
fn ipv6(mistake: Option<&str>) -> Provoked {
    let port = server("[::1]:0")?;
    let mut capture = Capture::start(mistake, &["--port".into(), port.to_string()])?;
    let stdout = capture.lines();
    exchange("::1", port)?;
    let mut lines = Vec::new();
    let by = Instant::now() + 4 * patience();
    while lines.len() < 8 && Instant::now() < by {
        if let Ok(line) = stdout.recv_timeout(Duration::from_millis(20)) {
            lines.push(line);
        }
    }
    let (captured, _) = capture.stop()?;
    let cut = lines.iter().filter(|l| l.contains("[|tcp]")).count();
    let syn = lines.iter().any(|l| l.contains("Flags [S]"));
    let line = format!(
        "{captured} lines for one IPv6 connection; {cut} cut inside the TCP header ([|tcp]), \
         SYN seen: {syn}"
    );
    if lines.is_empty() {
        return Err(format!("no line at all: {line}"));
    }
    Ok(Outcome::new(cut == 0 && syn, line))
}

/// one-per-call: a burst of datagrams; count what the kernel dropped.
fn burst(mistake: Option<&str>) -> Provoked {
    let target = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = target.local_addr().map_err(|e| e.to_string())?.port();
    let mut args: Vec<String> = ["--port", &port.to_string(), "-s", "96", "-w", "/dev/null"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if mistake.is_none() {
        args.push("--ring".into());
    }
    let capture = Capture::start(mistake, &args)?;
    let sender = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let payload = [0u8; 64];
    let mut sent = 0;
    for _ in 0..BURST {
        // The target never reads: its queue fills and the kernel drops there, after the
        // capture has seen the datagram.
        if sender.send_to(&payload, ("127.0.0.1", port)).is_ok() {
            sent += 1;
        }
    }
    // Let the capture take what is queued: its count stops growing.
    let (captured, dropped) = capture.stop()?;
    let how = if mistake.is_none() {
        "--ring"
    } else {
        "recvfrom"
    };
    let line = format!(
        "{sent} datagrams sent at once; the capture ({how}) saw {captured}, the kernel \
         dropped {dropped} (PACKET_STATISTICS)"
    );
    Ok(Outcome::new(dropped == 0, line))
}
