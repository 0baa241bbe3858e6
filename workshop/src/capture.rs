//! Exercise 18, a capture: not a server, so the checker starts it its own way. The check
//! moves into a network namespace of its own first (root: `unshare(CLONE_NEWNET)`; otherwise
//! a user namespace too, as `unshare -Urn` does), whose loopback carries only the check's
//! traffic; starts a TCP server there (read to EOF, answer `bye`, close) and the capture with
//! `--port` naming that server's port, under strace like a server; then makes short
//! connections and reads the capture's lines (stdout, one tcpdump line per packet) from the
//! log, beside its banner and counts (stderr). A UDP datagram to the port, of a length of its
//! own, marks the end of each step's traffic: once its line is out, every earlier packet's is.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::check::Ctx;
use crate::client::{wait, Failure, Outcome};
use crate::run::{Log, Server};
use crate::trace::{self, Line};

/// The exercise that is a capture.
pub const NN: &str = "18";

/// Moves this thread (and what it starts from now on) into a network namespace of its own,
/// loopback up; once per process.
fn enter_namespace() -> Result<(), String> {
    static ENTERED: OnceLock<Result<(), String>> = OnceLock::new();
    ENTERED
        .get_or_init(|| {
            // SAFETY: unshare(2) with namespace flags only.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                // Not root: a user namespace of our own, where we are root, and its network.
                // SAFETY: as above; getuid and getgid cannot fail.
                let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
                if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) } != 0 {
                    return Err(format!(
                        "unshare(CLONE_NEWUSER | CLONE_NEWNET): {}",
                        std::io::Error::last_os_error()
                    ));
                }
                let maps = [
                    ("/proc/self/setgroups", "deny".to_string()),
                    ("/proc/self/uid_map", format!("0 {uid} 1")),
                    ("/proc/self/gid_map", format!("0 {gid} 1")),
                ];
                for (file, text) in maps {
                    std::fs::write(file, text).map_err(|e| format!("{file}: {e}"))?;
                }
            }
            let up = Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status();
            match up {
                Ok(s) if s.success() => Ok(()),
                other => Err(format!("ip link set lo up: {other:?}")),
            }
        })
        .clone()
}

/// A TCP server on the namespace's loopback: each connection read to EOF, answered `bye`,
/// closed. Its port.
fn target() -> Result<u16, Failure> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| {
        Failure::new(
            "(nothing yet)",
            "a TCP server of the check's",
            e.to_string(),
        )
    })?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            let _ = conn.read_to_end(&mut Vec::new());
            let _ = conn.write_all(b"bye\n");
        }
    });
    Ok(port)
}

/// Starts `exe args --port PORT` (PORT: a server of the check's) in the namespace, under
/// strace when it is there, its stdout and stderr in the log, and waits for its banner
/// (`… capturing on …`). The server's address is the port the capture filters.
pub fn start(exe: &Path, args: &[String]) -> Result<Server, Failure> {
    let started = format!("(nothing: started {} --port PORT)", exe.display());
    enter_namespace().map_err(|e| {
        Failure::new(
            &started,
            "a network namespace of the check's own",
            e.to_string(),
        )
        .hint("run the check as root, or where user namespaces are allowed")
    })?;
    let port = target()?;
    let trace_path = trace::strace_found().then(trace::new_trace_path);
    let mut cmd = match &trace_path {
        Some(path) => trace::command(exe, path),
        None => Command::new(exe),
    };
    cmd.args(args)
        .args(["--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| {
        Failure::new(
            &started,
            "the capture running",
            format!("could not start it: {e}"),
        )
    })?;
    let log = Log::default();
    let out = child.stdout.take().expect("stdout is piped");
    let err = child.stderr.take().expect("stderr is piped");
    collect(out, log.clone());
    collect(err, log.clone());
    let group = child.id();
    let mut server = Server {
        child,
        pid: group,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        log,
        trace: trace_path,
    };
    let until = Instant::now() + wait();
    loop {
        let banner = server
            .log
            .lines()
            .iter()
            .any(|l| l.contains("capturing on"));
        if banner {
            if server.trace.is_some() {
                server.pid = crate::model::children(group)
                    .first()
                    .copied()
                    .unwrap_or(group);
            }
            return Ok(server);
        }
        let exited = server.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > until {
            thread::sleep(Duration::from_millis(50));
            let got = server.what_happened(0).unwrap_or_else(|| match exited {
                Some(status) => format!("it exited ({status}) without a banner"),
                None => format!("no banner on stderr within {} s", wait().as_secs()),
            });
            return Err(Failure::new(
                &started,
                "a banner on stderr: `… capturing on lo …`",
                got,
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn collect(stream: impl Read + Send + 'static, log: Log) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            log.push(line);
        }
    });
}

/// A client: connect, `hello`, half-close, read the answer to EOF, close.
fn exchange(port: u16) -> Outcome {
    let sent = format!("a connection to 127.0.0.1:{port}: \"hello\\n\", EOF, \"bye\\n\" back");
    let fail = |e: std::io::Error| Failure::new(&sent, "the exchange done", e.to_string());
    let mut c = TcpStream::connect(("127.0.0.1", port)).map_err(fail)?;
    c.set_read_timeout(Some(wait())).map_err(fail)?;
    c.write_all(b"hello\n").map_err(fail)?;
    c.shutdown(Shutdown::Write).map_err(fail)?;
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).map_err(fail)?;
    Ok(())
}

/// Sends the end marker, a datagram of `len` bytes to `port`, and waits for its line: the
/// packet lines since log line `from`, through the marker's.
fn until_marker(c: &Ctx, from: usize, len: usize, sent: &str) -> Result<Vec<String>, Failure> {
    let port = c.addr().port();
    let marker = format!("UDP, length {len}");
    if let Ok(sock) = UdpSocket::bind("127.0.0.1:0") {
        let _ = sock.send_to(&vec![b'm'; len], ("127.0.0.1", port));
    }
    let until = Instant::now() + wait();
    loop {
        let lines = c.server.log.lines();
        let new = lines.get(from..).unwrap_or(&[]);
        if let Some(at) = new.iter().position(|l| l.contains(&marker)) {
            return Ok(new[..=at]
                .iter()
                .filter(|l| is_packet(l))
                .cloned()
                .collect());
        }
        if Instant::now() > until {
            return Err(Failure::new(
                format!("{sent}, then a {len}-byte datagram to port {port}"),
                format!("a line with \"{marker}\" (one line per packet on stdout)"),
                show(new),
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A tcpdump line of a packet: `TIME IP 127.0.0.1.40000 > 127.0.0.1.23333: …`.
fn is_packet(line: &str) -> bool {
    line.contains(" IP ") || line.contains(" IP6 ")
}

/// Does `line` name `port` as one of its two ends (`.PORT ` or `.PORT:`)?
fn names_port(line: &str, port: u16) -> bool {
    line.contains(&format!(".{port} ")) || line.contains(&format!(".{port}:"))
}

fn show(lines: &[String]) -> String {
    if lines.is_empty() {
        return "no line".into();
    }
    let shown: Vec<&str> = lines.iter().take(4).map(String::as_str).collect();
    format!("{} line(s): {}", lines.len(), shown.join(" / "))
}

/// A connection on the port: its lines' flags begin S, S., . and hold the two FINs.
pub fn connection_flags(c: &mut Ctx) -> Outcome {
    let from = c.server.log.len();
    let port = c.addr().port();
    exchange(port)?;
    let sent = format!("a connection to port {port}: \"hello\\n\", EOF, \"bye\\n\" back");
    let lines = until_marker(c, from, 3, &sent)?;
    let flags: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split("Flags [").nth(1)?.split(']').next())
        .collect();
    let fins = flags.iter().filter(|f| f.starts_with('F')).count();
    if flags.len() >= 3 && flags[..3] == ["S", "S.", "."] && fins >= 2 {
        return Ok(());
    }
    Err(Failure::new(
        format!("{sent}, then a 3-byte datagram to port {port}"),
        "lines whose flags begin [S], [S.], [.] and hold two FINs ([F.])",
        format!("flags {flags:?} in {}", show(&lines)),
    ))
}

/// Traffic on another port leaves no line: the filter keeps only `--port`.
pub fn only_its_port(c: &mut Ctx) -> Outcome {
    let from = c.server.log.len();
    let port = c.addr().port();
    let other = target()?;
    exchange(other)?;
    exchange(port)?;
    let sent = format!("a connection to port {other}, then one to port {port}");
    let lines = until_marker(c, from, 5, &sent)?;
    let stray: Vec<String> = lines
        .iter()
        .filter(|l| !names_port(l, port))
        .cloned()
        .collect();
    if stray.is_empty() && lines.iter().any(|l| l.contains("Flags [S]")) {
        return Ok(());
    }
    Err(Failure::new(
        format!("{sent}, then a 5-byte datagram to port {port}"),
        format!("lines of port {port} only, its connection's among them"),
        format!("{} line(s) of another port: {}", stray.len(), show(&stray)),
    ))
}

/// From the calls: a packet socket (socket(AF_PACKET)), the filter attached to it
/// (setsockopt(SO_ATTACH_FILTER) = 0), and a recvfrom on it for each packet printed.
pub fn model(c: &mut Ctx) -> Outcome {
    let path = c.server.trace.clone().ok_or_else(|| {
        Failure::new(
            "(nothing: the model is judged from the system calls)",
            "strace, to record them",
            "strace is not on this machine, or may not trace here (ptrace refused)",
        )
    })?;
    let mark = trace::mark(&path);
    let from = c.server.log.len();
    let port = c.addr().port();
    exchange(port)?;
    let sent = format!("a connection to port {port} (the calls traced)");
    let printed = until_marker(c, from, 7, &sent)?.len();
    let to = trace::mark(&path);
    let (mut packet, mut attached, mut received) = (None, false, 0);
    let mut said = Vec::new();
    for line in trace::read(&path) {
        let Line::Call(call) = line else { continue };
        let fd = trace::split_args(&call.args)
            .first()
            .and_then(|a| trace::fd_of(a))
            .map(|(fd, _)| fd);
        match call.name.as_str() {
            "socket" if call.args.starts_with("AF_PACKET") && call.done => {
                packet = trace::fd_of(&call.result).map(|(fd, _)| fd);
                said.push(format!("socket({}) = {}", call.args, call.result));
            }
            "setsockopt"
                if fd.is_some() && fd == packet && call.args.contains("SO_ATTACH_FILTER") =>
            {
                attached |= call.ret == Some(0);
                said.push(format!(
                    "setsockopt(…, SO_ATTACH_FILTER, …) = {}",
                    call.result
                ));
            }
            "recvfrom" if fd.is_some() && fd == packet => {
                let in_window = call.end >= mark && call.end < to;
                received += usize::from(in_window && call.ret.is_some_and(|n| n > 0));
            }
            _ => {}
        }
    }
    said.push(format!(
        "{received} recvfrom(s) on it that returned a frame, for {printed} line(s) printed"
    ));
    if packet.is_some() && attached && received >= printed && printed > 0 {
        return Ok(());
    }
    Err(Failure::new(
        format!("{sent}, then a 7-byte datagram to port {port}"),
        "socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)), then setsockopt(SO_ATTACH_FILTER) on it \
         returning 0, and a recvfrom(2) on it for each packet printed",
        format!("found: {}", said.join("; ")),
    ))
}
