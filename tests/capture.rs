//! Lesson 18, the capture, against real traffic: each test re-runs itself inside a network
//! namespace of its own (`unshare -n`; `-rn` where CAP_SYS_ADMIN is missing), whose loopback
//! carries only what the test sends, and reads the lesson's lines, its pcap files (through
//! tcpdump and tshark as well) and its counts. The mistakes are caught by provoke's
//! scenarios, run with and without each.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const LESSON: &str = env!("CARGO_BIN_EXE_lesson-18");
const DEADLINE: Duration = Duration::from_secs(20);
/// Set in the re-run inside the namespace.
const INSIDE: &str = "CAPTURE_TEST_NAMESPACE";

/// Runs `body` inside a fresh network namespace, loopback up (this test, run again there).
fn in_namespace(test: &str, body: impl FnOnce()) {
    if common::in_own_namespace(test, INSIDE, false) {
        common::loopback_up();
        body();
    }
}

/// Polls `check` until it gives Some, or panics naming `what`.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

type Lines = Arc<Mutex<Vec<String>>>;

/// lesson-18 running, its stdout and stderr lines collected.
struct Capture {
    child: Child,
    out: Lines,
    err: Lines,
}

fn collect(stream: impl Read + Send + 'static) -> Lines {
    let lines = Lines::default();
    let into = lines.clone();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    });
    lines
}

impl Capture {
    /// Starts the lesson and waits for its banner.
    fn start(args: &[&str]) -> Capture {
        let mut child = Command::new(LESSON)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        let mut capture = Capture { child, out, err };
        wait_for("the banner", || {
            if let Ok(Some(status)) = capture.child.try_wait() {
                panic!("lesson-18 exited {status}: {:?}", capture.err());
            }
            capture
                .err()
                .iter()
                .any(|l| l.contains("capturing on"))
                .then_some(())
        });
        capture
    }

    fn lines(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    fn err(&self) -> Vec<String> {
        self.err.lock().unwrap().clone()
    }

    /// Waits for a line containing `text`; returns every line up to it.
    fn until(&self, text: &str) -> Vec<String> {
        wait_for(&format!("a line with {text:?}"), || {
            let lines = self.lines();
            let at = lines.iter().position(|l| l.contains(text))?;
            Some(lines[..=at].to_vec())
        })
    }

    /// Ctrl-C; returns the count of "N packets captured".
    fn stop(mut self) -> u64 {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = wait_for("the lesson's exit", || self.child.try_wait().unwrap());
        assert!(status.success(), "{status}: {:?}", self.err());
        wait_for("its counts", || {
            self.err()
                .iter()
                .find_map(|l| l.strip_suffix(" packets captured")?.parse().ok())
        })
    }
}

/// A server on `addr` that reads to EOF, answers `bye`, closes; its port.
fn server(addr: &str) -> u16 {
    let listener = TcpListener::bind(addr).unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            let _ = conn.read_to_end(&mut Vec::new());
            let _ = conn.write_all(b"bye\n");
        }
    });
    port
}

/// A client: connect, `hello`, half-close, read the answer to EOF, close.
fn exchange(host: &str, port: u16) {
    let mut c = TcpStream::connect((host, port)).unwrap();
    c.write_all(b"hello\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "bye\n");
}

/// A datagram of `len` bytes to `host:port`: a marker that every earlier packet was seen.
fn datagram(host: &str, port: u16, len: usize) {
    let from = UdpSocket::bind((host, 0)).unwrap();
    from.send_to(&vec![b'm'; len], (host, port)).unwrap();
}

/// The line without its time: what two captures of the same packets share.
fn untimed(line: &str) -> &str {
    line.split_once(' ').map_or(line, |(_, rest)| rest)
}

/// Does `line` name `port` as one of its two ends (`.PORT ` or `.PORT:`)?
fn names_port(line: &str, port: u16) -> bool {
    line.contains(&format!(".{port} ")) || line.contains(&format!(".{port}:"))
}

#[test]
fn the_filter_keeps_only_its_port_over_ipv4_and_ipv6() {
    in_namespace("the_filter_keeps_only_its_port_over_ipv4_and_ipv6", || {
        let port = server("127.0.0.1:0");
        let port6 = TcpListener::bind(("::1", port)).unwrap();
        thread::spawn(move || {
            for mut conn in port6.incoming().map_while(Result::ok) {
                let _ = conn.read_to_end(&mut Vec::new());
                let _ = conn.write_all(b"bye\n");
            }
        });
        let other = server("127.0.0.1:0");
        let other6 = server("[::1]:0");
        let capture = Capture::start(&["--port", &port.to_string()]);
        exchange("127.0.0.1", other);
        exchange("127.0.0.1", port);
        exchange("::1", other6);
        exchange("::1", port);
        datagram("127.0.0.1", other, 5);
        datagram("::1", port, 7);
        let lines = capture.until("UDP, length 7");
        capture.stop();
        let stray: Vec<_> = lines.iter().filter(|l| !names_port(l, port)).collect();
        assert!(stray.is_empty(), "lines of other ports: {stray:#?}");
        assert!(
            lines.iter().any(|l| l.contains(" IP 127.0.0.1.")),
            "{lines:#?}"
        );
        assert!(lines.iter().any(|l| l.contains(" IP6 ::1.")), "{lines:#?}");
        // Each packet once: on lo the filter drops the copy going out.
        let syns = lines.iter().filter(|l| l.contains("Flags [S],")).count();
        assert_eq!(syns, 2, "{lines:#?}");
    });
}

#[test]
fn a_connection_reads_s_s_dot_dot_then_f() {
    in_namespace("a_connection_reads_s_s_dot_dot_then_f", || {
        let port = server("127.0.0.1:0");
        let capture = Capture::start(&["--port", &port.to_string()]);
        exchange("127.0.0.1", port);
        datagram("127.0.0.1", port, 3);
        let lines = capture.until("UDP, length 3");
        capture.stop();
        let flags: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.split("Flags [").nth(1)?.split(']').next())
            .collect();
        assert_eq!(flags[..3], ["S", "S.", "."], "{lines:#?}");
        assert!(flags.contains(&"P."), "no data: {lines:#?}");
        assert_eq!(flags.iter().filter(|f| f.starts_with('F')).count(), 2);
        // Relative numbers: the SYN is 0, its answer acknowledges 1, `hello\n` is 1:7.
        assert!(lines[0].contains(", seq 0, win"), "{}", lines[0]);
        assert!(lines[1].contains(", seq 0, ack 1, win"), "{}", lines[1]);
        assert!(
            lines.iter().any(|l| l.contains("seq 1:7, ack 1")),
            "{lines:#?}"
        );
    });
}

#[test]
fn its_pcap_file_reads_in_tcpdump_and_tshark() {
    in_namespace("its_pcap_file_reads_in_tcpdump_and_tshark", || {
        let file = std::env::temp_dir().join(format!("capture-{}.pcap", std::process::id()));
        let path = file.to_str().unwrap();
        let port = server("127.0.0.1:0");
        let capture = Capture::start(&["--port", &port.to_string(), "-w", path]);
        exchange("127.0.0.1", port);
        exchange("127.0.0.1", port);
        // No line is printed with -w: wait for the file to hold both connections' FINs.
        wait_for("four FINs in the file", || {
            let bytes = std::fs::read(&file).ok()?;
            let reader = protocols::pcap::Reader::new(&bytes[..]).ok()?;
            let fins = reader
                .map_while(Result::ok)
                .filter(|p| {
                    let frame = protocols::packet::parse_frame(&p.data);
                    frame.is_ok_and(|f| f.tcp().is_some_and(|t| t.flags.fin()))
                })
                .count();
            (fins >= 4).then_some(())
        });
        let captured = capture.stop();
        let tcpdump = Command::new("tcpdump")
            .args(["-nn", "-r", path])
            .output()
            .expect("tcpdump (scripts/ensure-tools.sh installs it)");
        let text = String::from_utf8_lossy(&tcpdump.stdout);
        assert!(
            tcpdump.status.success(),
            "{}",
            String::from_utf8_lossy(&tcpdump.stderr)
        );
        assert_eq!(text.lines().count() as u64, captured, "{text}");
        for flags in ["Flags [S]", "Flags [S.]", "Flags [P.]", "Flags [F.]"] {
            assert!(text.contains(flags), "tcpdump shows no {flags}:\n{text}");
        }
        let tshark = Command::new("tshark")
            .args(["-n", "-r", path])
            .output()
            .expect("tshark (scripts/ensure-tools.sh installs it)");
        let text = String::from_utf8_lossy(&tshark.stdout);
        assert!(
            tshark.status.success(),
            "{}",
            String::from_utf8_lossy(&tshark.stderr)
        );
        assert_eq!(text.lines().count() as u64, captured, "{text}");
        assert!(text.contains("[SYN, ACK]"), "{text}");
        // And the crate's own reader agrees.
        let bytes = std::fs::read(&file).unwrap();
        let records = protocols::pcap::Reader::new(&bytes[..]).unwrap().count();
        assert_eq!(records as u64, captured);
        let _ = std::fs::remove_file(&file);
    });
}

#[test]
fn the_ring_sees_what_recvfrom_sees() {
    in_namespace("the_ring_sees_what_recvfrom_sees", || {
        let port = server("127.0.0.1:0");
        let p = port.to_string();
        let plain = Capture::start(&["--port", &p]);
        let ring = Capture::start(&["--port", &p, "--ring"]);
        for _ in 0..3 {
            exchange("127.0.0.1", port);
        }
        datagram("127.0.0.1", port, 9);
        let a = plain.until("UDP, length 9");
        let b = ring.until("UDP, length 9");
        plain.stop();
        ring.stop();
        let a: Vec<&str> = a.iter().map(|l| untimed(l)).collect();
        let b: Vec<&str> = b.iter().map(|l| untimed(l)).collect();
        assert_eq!(a, b);
        assert!(a.len() >= 3 * 8, "{a:#?}");
    });
}

#[test]
fn without_cap_net_raw_the_error_names_it_and_the_way_to_get_it() {
    // A user namespace of its own, no uid mapped: no capability over this network namespace.
    let out = Command::new("unshare")
        .args(["-U", "--", LESSON, "--port", "9"])
        .output()
        .expect("unshare (util-linux) runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("socket(AF_PACKET, SOCK_RAW): EPERM (Operation not permitted)"),
        "{err}"
    );
    assert!(
        err.contains("CAP_NET_RAW") && err.contains("unshare -Urn"),
        "{err}"
    );
}

/// target/<profile>/provoke, beside this test's directory.
fn provoke_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("provoke")
}

/// `provoke KIND [--mistake NAME]`: its exit code (0 behaved, 1 failure seen) and line.
fn provoke(kind: &str, mistake: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new(provoke_bin());
    cmd.arg(kind);
    if let Some(m) = mistake {
        cmd.args(["--mistake", m]);
    }
    let out = cmd.output().expect("provoke (cargo build -p provoke)");
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code != 2,
        "{kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, line)
}

fn caught(kind: &str, mistake: &str) {
    let (code, line) = provoke(kind, None);
    assert_eq!(code, 0, "false alarm without the mistake: {line}");
    let (code, line) = provoke(kind, Some(mistake));
    assert_eq!(code, 1, "--mistake {mistake} not caught: {line}");
}

#[test]
fn no_filter_sees_its_own_output() {
    caught("capture-echo", "no-filter");
}

#[test]
fn short_snaplen_cuts_the_tcp_headers() {
    caught("capture-ipv6", "short-snaplen");
}

#[test]
fn one_per_call_drops_under_a_burst() {
    caught("capture-burst", "one-per-call");
}
