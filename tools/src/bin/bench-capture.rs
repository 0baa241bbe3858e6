//! bench-capture: `make bench-capture`, lesson 18's capture against tcpdump (Debian's) on
//! the same traffic (not a lesson).
//!
//! Captures: lesson 18's recvfrom loop, lesson 18 with `--ring` (TPACKET_V3), and tcpdump,
//! each run alone on `lo` with snap length 96, writing to /dev/null, one after the other,
//! rounds interleaved (`--rounds`). The traffic of every run is the same script: an iperf3
//! stream over loopback for `--seconds` and, at the same time, 10,000 short connections
//! (connect, one byte, half-close, the server's close) from 4 threads. Reported per capture:
//! packets seen (captured), packets received by the filter and dropped (PACKET_STATISTICS,
//! which both lesson 18 and tcpdump print at exit), and the capture's CPU time (utime +
//! stime, from wait4's rusage) per packet captured. Everything runs in a private network
//! namespace (tools/src/netns.rs), so the captures see only this traffic.
//! The bar: `--ring` drops no more packets than tcpdump, at no more than 1.0× its CPU per
//! packet, compared within each round and judged on the median.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
#[command(name = "bench-capture", about = "lesson 18's capture against tcpdump")]
struct Args {
    /// Rounds; each runs every capture once on the same traffic.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of the iperf3 stream in each run.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Short connections in each run.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Snap length of every capture.
    #[arg(long, default_value_t = 96)]
    snaplen: u32,
    /// Extra arguments for lesson 18's ring run (e.g. "--ring-block-kib 256").
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    ring_args: String,
    /// Only these captures (comma separated: recvfrom, ring, tcpdump).
    #[arg(long, default_value = "recvfrom,ring,tcpdump")]
    only: String,
}

/// What one capture run reported.
#[derive(Debug, Clone, Default)]
struct Run {
    captured: u64,
    received: u64,
    dropped: u64,
    cpu: Duration,
}

impl Run {
    fn cpu_per_packet_ns(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.captured.max(1) as f64
    }
}

fn main() {
    let args = Args::parse();
    // First, before any thread: unshare(2) refuses a threaded process a user namespace.
    let network = match tools::netns::enter_private("cubic") {
        Ok(()) => "a private network namespace".to_string(),
        Err(tools::netns::Fallback::Congestion(why)) => {
            format!("a private network namespace ({why})")
        }
        Err(tools::netns::Fallback::NoNamespace(why)) => {
            eprintln!("bench-capture: no network namespace ({why}): it would capture this host's loopback; stopping");
            std::process::exit(2);
        }
    };
    for tool in ["iperf3", "tcpdump"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!(
                "bench-capture: {tool} is missing (scripts/ensure-tools.sh --bench installs it)"
            );
            std::process::exit(2);
        }
    }
    let lesson = tools::lesson_bin("lesson-18");
    let tcpdump_version = version("tcpdump");
    let uname = Command::new("uname")
        .arg("-r")
        .output()
        .map_or(String::new(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        });
    println!(
        "bench-capture: {} rounds; traffic per run: iperf3 for {} s plus {} short connections; \
         snap length {}, written to /dev/null; {network}; kernel {uname}; {tcpdump_version}",
        args.rounds, args.seconds, args.connections, args.snaplen
    );

    let short_port = short_server();
    let iperf = IperfServer::start();
    let wanted: Vec<&str> = args.only.split(',').map(str::trim).collect();
    let captures: Vec<(&str, Vec<String>)> = [
        ("recvfrom", lesson_args(&lesson, args.snaplen, false, "")),
        (
            "ring",
            lesson_args(&lesson, args.snaplen, true, &args.ring_args),
        ),
        ("tcpdump", tcpdump_args(args.snaplen)),
    ]
    .into_iter()
    .filter(|(name, _)| wanted.contains(name))
    .collect();

    let mut results: Vec<Vec<Run>> = vec![Vec::new(); captures.len()];
    for round in 1..=args.rounds {
        for (i, (name, argv)) in captures.iter().enumerate() {
            let run = measure(argv, || traffic(&args, iperf.port, short_port));
            println!(
                "round {round} {name:<9} seen {:>9}  by filter {:>9}  dropped {:>8}  cpu {:>7.3} s  {:>7.0} ns/packet",
                run.captured,
                run.received,
                run.dropped,
                run.cpu.as_secs_f64(),
                run.cpu_per_packet_ns()
            );
            results[i].push(run);
        }
    }
    drop(iperf);

    println!();
    println!(
        "| capture | packets seen | dropped | drop % | CPU ns/packet | (medians of {} rounds) |",
        args.rounds
    );
    println!("|---|---|---|---|---|---|");
    for ((name, _), runs) in captures.iter().zip(&results) {
        let seen = median(runs.iter().map(|r| r.captured as f64).collect());
        let dropped = median(runs.iter().map(|r| r.dropped as f64).collect());
        let pct = median(
            runs.iter()
                .map(|r| 100.0 * r.dropped as f64 / r.received.max(1) as f64)
                .collect(),
        );
        let ns = median(runs.iter().map(Run::cpu_per_packet_ns).collect());
        println!("| {name} | {seen:.0} | {dropped:.0} | {pct:.2} | {ns:.0} | |");
    }
    let ring = captures.iter().position(|(n, _)| *n == "ring");
    let dump = captures.iter().position(|(n, _)| *n == "tcpdump");
    if let (Some(r), Some(t)) = (ring, dump) {
        let ratios: Vec<f64> = results[r]
            .iter()
            .zip(&results[t])
            .map(|(a, b)| a.cpu_per_packet_ns() / b.cpu_per_packet_ns())
            .collect();
        let fewer: Vec<bool> = results[r]
            .iter()
            .zip(&results[t])
            .map(|(a, b)| a.dropped <= b.dropped)
            .collect();
        let ratio = median(ratios.clone());
        let drops_ok = fewer.iter().filter(|&&b| b).count() * 2 > fewer.len();
        println!();
        println!(
            "ring / tcpdump CPU per packet, per round: {}; median {ratio:.2}×",
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "ring dropped no more than tcpdump in {} of {} rounds",
            fewer.iter().filter(|&&b| b).count(),
            fewer.len()
        );
        let met = ratio <= 1.0 && drops_ok;
        println!(
            "bar (--ring: drops ≤ tcpdump's, CPU per packet ≤ 1.0× tcpdump's): {}",
            if met { "MET" } else { "NOT MET" }
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn version(tool: &str) -> String {
    let out = Command::new(tool).arg("--version").output();
    out.map_or(String::new(), |o| {
        let text = [o.stdout, o.stderr].concat();
        String::from_utf8_lossy(&text)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    })
}

fn lesson_args(lesson: &str, snaplen: u32, ring: bool, extra: &str) -> Vec<String> {
    let mut v: Vec<String> = vec![lesson.into(), "-i".into(), "lo".into()];
    v.extend([
        "-s".into(),
        snaplen.to_string(),
        "-w".into(),
        "/dev/null".into(),
    ]);
    if ring {
        v.push("--ring".into());
    }
    v.extend(extra.split_whitespace().map(String::from));
    v
}

fn tcpdump_args(snaplen: u32) -> Vec<String> {
    // -n: no name lookups; -Z root: no change of user (the output is /dev/null anyway).
    [
        "tcpdump",
        "-i",
        "lo",
        "-n",
        "-Z",
        "root",
        "-s",
        &snaplen.to_string(),
        "-w",
        "/dev/null",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Starts the capture `argv`, waits until it captures, runs `traffic`, stops it with
/// SIGINT, and reads its counts and its CPU time.
fn measure(argv: &[String], traffic: impl FnOnce()) -> Run {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", argv[0]));
    let log = Arc::new(Mutex::new(String::new()));
    let into = log.clone();
    let stderr = child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = into.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    // Ready: lesson 18's banner, or tcpdump's "listening on".
    let by = Instant::now() + Duration::from_secs(10);
    while !log.lock().unwrap().contains("capturing on")
        && !log.lock().unwrap().contains("listening on")
    {
        assert!(
            Instant::now() < by,
            "{} did not start: {}",
            argv[0],
            log.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(10));
    }
    traffic();
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) and wait4(2) on our own child, which nothing else reaps.
    let usage = unsafe {
        libc::kill(pid, libc::SIGINT);
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(pid, &mut status, 0, &mut usage);
        usage
    };
    std::mem::forget(child);
    let _ = reader.join();
    let log = log.lock().unwrap().clone();
    let count = |what: &str| {
        log.lines()
            .find_map(|l| l.trim().strip_suffix(what)?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{}: no \"{what}\" in {log}", argv[0]))
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Run {
        captured: count(" packets captured"),
        received: count(" packets received by filter"),
        dropped: count(" packets dropped by kernel"),
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
    }
}

/// The server of the short connections: reads to EOF, closes. Its port.
fn short_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut buf = [0u8; 64];
        for mut conn in listener.incoming().map_while(Result::ok) {
            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    port
}

/// One run's traffic: the iperf3 stream and the short connections, at the same time.
fn traffic(args: &Args, iperf_port: u16, short_port: u16) {
    let seconds = args.seconds;
    let stream = thread::spawn(move || {
        let out = Command::new("iperf3")
            .args([
                "-c",
                "127.0.0.1",
                "-p",
                &iperf_port.to_string(),
                "-t",
                &seconds.to_string(),
            ])
            .output()
            .expect("iperf3");
        assert!(
            out.status.success(),
            "iperf3 -c: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    });
    let per = args.connections / 4;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..per {
                    let mut c = TcpStream::connect(("127.0.0.1", short_port)).unwrap();
                    let _ = c.write_all(b"x");
                    let _ = c.shutdown(Shutdown::Write);
                    let _ = c.read(&mut [0u8; 8]);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stream.join().unwrap();
}

/// `iperf3 -s` on a free port, for the whole benchmark.
struct IperfServer {
    child: Child,
    port: u16,
}

impl IperfServer {
    fn start() -> IperfServer {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let mut child = Command::new("iperf3")
            .args([
                "-s",
                "--forceflush",
                "-B",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 -s");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while out.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line.contains("listening") {
                break;
            }
            line.clear();
        }
        thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
        IperfServer { child, port }
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
