//! bench-socks: `make bench-socks`, lessons 12 and 14 (the SOCKS5 relay, and the same with
//! splice) against the SOCKS5 servers people run (not a lesson).
//!
//! Servers: lessons 12 and 14, microsocks and dante (Debian's packages, skipped with a note when not
//! installed), and "direct" (no proxy) as the physical reference. All on loopback, in one
//! run on one machine, so the ratios mean something even though absolute numbers drift.
//! Runs: single-stream bulk throughput each way, 8 parallel streams, connection rate
//! (greeting + CONNECT + one 32-byte round trip + close) sequential and with 50 workers, and
//! the RSS of the proxy holding 1,000 idle relayed connections; and the proxy's CPU seconds
//! per GiB relayed over the three bulk runs (utime + stime of every process and thread of
//! the proxy, reaped children included), the fair measure of a relay's cost on a 2-core
//! machine where it competes with the client and the target. All servers of a run are up at
//! once: the bulk runs go server by server, the connection rates in slices taken in turn
//! across the servers (`--slices`), so that a slow moment of the machine falls on all of them
//! alike. `--runs N` repeats everything N times and reports medians. The whole benchmark runs
//! in a private network namespace under cubic, Linux's default, which the bars assume
//! (`--congestion NAME` picks another; tools/src/netns.rs says why it matters on loopback);
//! where cubic may not be selected there, or no namespace can be made, one line says so and
//! the run goes on under the host's default. The report names what the sockets got.
//! Output: a table with ratios to microsocks, the performance bars with pass/fail,
//! `target/bench-socks/report.md` and `target/bench-socks/report.svg`.
//!
//! The client side is this program's own (std sockets plus the sans-IO
//! `protocols::socks5::client`), not iperf3 through proxychains: the same client for
//! every server, no LD_PRELOAD in the measured path.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use protocols::socks5::{client, Reply, Target};
use tools::netns::Fallback;
use tools::procfs::{descendants, stat_fields, tree_usage};

/// Benchmarks lessons 12 and 14 against microsocks, dante and a direct connection, all on
/// loopback.
#[derive(Parser, Debug)]
#[command(name = "bench-socks")]
struct Args {
    /// Seconds per throughput or connection-rate run.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Idle relayed connections held for the memory measurement.
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Only these servers (direct, lesson-12, lesson-14, microsocks, dante).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Lesson 14's pipe size (its --pipe-size), to see what F_SETPIPE_SZ changes.
    #[arg(long, value_name = "BYTES")]
    pipe_size: Option<usize>,
    /// Runs of every measurement; the report shows the median of each.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Where the reports go.
    #[arg(long, default_value = "target/bench-socks")]
    out: PathBuf,
    /// The TCP congestion control of the private network namespace the benchmark runs in
    /// (one the kernel has: cubic, reno, bbr). The bars assume cubic, Linux's default.
    #[arg(long, value_name = "NAME", default_value = "cubic")]
    congestion: String,
    /// The connection-rate runs are cut into this many slices, taken in turn across the
    /// servers, so that a slow moment of the machine falls on every server alike.
    #[arg(long, default_value_t = 6)]
    slices: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Direct,
    Lesson12,
    Lesson14,
    Microsocks,
    Dante,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Lesson12 => "lesson-12",
            Kind::Lesson14 => "lesson-14",
            Kind::Microsocks => "microsocks",
            Kind::Dante => "dante",
        }
    }
}

/// One proxy (or none) under test.
struct Proxy {
    kind: Kind,
    child: Option<Child>,
    addr: Option<SocketAddr>,
    _conf: Option<PathBuf>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let pid = child.id();
            for k in descendants(pid) {
                // SAFETY: kill(2) on processes we started.
                unsafe { libc::kill(k as i32, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A server, its results in each run (with the run's number), and why it was skipped if it was.
type Measured = (Kind, Vec<(usize, Results)>, String);

#[derive(Default, Clone)]
struct Results {
    up_gbit: f64,
    down_gbit: f64,
    par8_gbit: f64,
    seq_cps: f64,
    par50_cps: f64,
    idle_rss_mib: Option<f64>,
    idle_procs: u64,
    failures: u64,
    /// Proxy CPU seconds per GiB relayed over the bulk runs (none for "direct").
    cpu_per_gib: Option<f64>,
    /// Proxy CPU microseconds per connection, sequential and with 50 workers.
    seq_cpu_us: Option<f64>,
    par50_cpu_us: Option<f64>,
}

fn main() {
    let args = Args::parse();
    // First, before any thread: unshare(2) refuses a threaded process a user namespace.
    // First, before any thread: unshare(2) refuses a threaded process a user namespace.
    let host_cc = tools::netns::congestion_control();
    let entered = tools::netns::enter_private(&args.congestion);
    // What a socket made here gets, asked of one (not what was asked for).
    let sockets_cc = tools::netns::socket_congestion_control().unwrap_or_else(|e| e);
    let network = match entered {
        Ok(()) => format!(
            "a private network namespace, TCP congestion control {sockets_cc} (this host's default: {host_cc})"
        ),
        Err(Fallback::Congestion(why)) => {
            eprintln!("bench-socks: {why}");
            format!(
                "a private network namespace, TCP congestion control {sockets_cc}, not {}: {why}",
                args.congestion
            )
        }
        Err(Fallback::NoNamespace(why)) => {
            eprintln!(
                "bench-socks: no network namespace could be made ({why}); running on this \
                 host's loopback under its default, {sockets_cc}"
            );
            format!(
                "this host's loopback (no network namespace could be made: {why}), TCP \
                 congestion control {sockets_cc}, this host's default"
            )
        }
    };
    let _ = sockets_by_hand::limits::raise_nofile();
    let bin_dir = tools::bin_dir();
    let seconds = Duration::from_secs_f64(args.seconds);

    // The targets: a sink (upload), a source (download), an echo server, an idle holder.
    let sink = serve(|mut s| {
        let mut buf = vec![0u8; 256 * 1024];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let source = serve(|mut s| {
        let buf = vec![0x5au8; 256 * 1024];
        while s.write_all(&buf).is_ok() {}
    });
    let echo = serve(|mut s| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let holder = serve(|mut s| {
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf); // holds the connection until the client closes
    });

    let kinds = [
        Kind::Direct,
        Kind::Lesson12,
        Kind::Lesson14,
        Kind::Microsocks,
        Kind::Dante,
    ];
    let kinds: Vec<Kind> = kinds
        .into_iter()
        .filter(|k| args.only.is_empty() || args.only.iter().any(|o| o == k.name()))
        .collect();
    let runs = args.runs.max(1);
    // Every proxy's port is picked now, before any load has filled the port space.
    let ports: Vec<u16> = (0..runs * kinds.len()).map(|_| free_port()).collect();
    // Per server: its results in each run, or why it was skipped.
    // Per server: its results in each run (with the run's number), or why it was skipped.
    let mut measured: Vec<Measured> = kinds
        .iter()
        .map(|&k| (k, Vec::new(), String::new()))
        .collect();
    for run in 0..runs {
        // Every server of this run is started first and stays up through the run.
        let mut live: Vec<(usize, Proxy)> = Vec::new();
        for (i, &kind) in kinds.iter().enumerate() {
            let entry = &mut measured[i];
            if run > 0 && entry.1.is_empty() {
                continue; // skipped in the first run
            }
            // A port picked at the start may have been taken since by one of the tens of
            // thousands of client sockets of the runs before: then once more, on a port
            // free now.
            let started = start_proxy(kind, &bin_dir, ports[run * kinds.len() + i], args.pipe_size)
                .or_else(|first| {
                    eprintln!("bench-socks: {first}; once more on another port");
                    start_proxy(kind, &bin_dir, free_port(), args.pipe_size)
                });
            match started {
                Ok(p) => live.push((i, p)),
                Err(note) => {
                    eprintln!("bench-socks: {} skipped: {note}", kind.name());
                    entry.2 = format!("run {} of {runs}: {note}", run + 1);
                }
            }
        }
        let names: Vec<&str> = live.iter().map(|(_, p)| p.kind.name()).collect();
        eprintln!(
            "bench-socks: run {} of {runs}: {} ...",
            run + 1,
            names.join(", ")
        );
        let failures: Vec<Arc<AtomicU64>> = live.iter().map(|_| Arc::default()).collect();
        let mut results = vec![Results::default(); live.len()];
        // Bulk, server by server: each one's CPU time is taken around its own three runs.
        for (j, (_, proxy)) in live.iter().enumerate() {
            bulk(proxy, seconds, sink, source, &failures[j], &mut results[j]);
        }
        // Connection rates, in slices taken in turn across the servers.
        let seq = conn_rates(&live, echo, 1, seconds, args.slices, &failures);
        let par50 = conn_rates(&live, echo, 50, seconds, args.slices, &failures);
        for (j, (i, proxy)) in live.into_iter().enumerate() {
            let r = &mut results[j];
            ((r.seq_cps, r.seq_cpu_us), (r.par50_cps, r.par50_cpu_us)) = (seq[j], par50[j]);
            if let Some(pid) = proxy.child.as_ref().map(Child::id) {
                (r.idle_rss_mib, r.idle_procs) =
                    idle_rss(proxy.addr, holder, args.idle, pid, &failures[j]);
            }
            r.failures = failures[j].load(Ordering::Relaxed);
            eprintln!(
                "  {}: up {:.2} Gbit/s, down {:.2}, 8 streams {:.2}; {:.0} conn/s sequential, {:.0} with 50 workers; CPU µs/conn {}; idle RSS {}; CPU {} s/GiB; failures {}",
                proxy.kind.name(),
                r.up_gbit,
                r.down_gbit,
                r.par8_gbit,
                r.seq_cps,
                r.par50_cps,
                per_conn(r),
                r.idle_rss_mib.map_or("—".into(), |m| format!("{m:.1} MiB")),
                r.cpu_per_gib.map_or("—".into(), |c| format!("{c:.3}")),
                r.failures
            );
            if proxy.kind == Kind::Microsocks {
                measured[i].2 = microsocks_note();
            }
            measured[i].1.push((run, r.clone()));
            drop(proxy);
        }
    }
    let rows: Vec<(Kind, Option<Results>, String)> = measured
        .iter()
        .map(|(k, rs, note)| {
            let rs: Vec<Results> = rs.iter().map(|(_, r)| r.clone()).collect();
            (*k, median(&rs), note.clone())
        })
        .collect();
    fs::create_dir_all(&args.out).unwrap_or_else(|e| fail(&format!("mkdir: {e}")));
    let md = report(&rows, &measured, &args, &network, &sockets_cc);
    fs::write(args.out.join("report.md"), &md)
        .unwrap_or_else(|e| fail(&format!("write report.md: {e}")));
    if let Err(e) = chart(&rows, &args.out.join("report.svg")) {
        fail(&format!("chart: {e}"));
    }
    println!("\n{md}");
    eprintln!(
        "bench-socks: wrote {}/report.md and report.svg",
        args.out.display()
    );
}

/// The three bulk runs against `proxy` (up, down, 8 streams down), with the proxy's CPU time
/// around them and every byte they moved.
fn bulk(
    proxy: &Proxy,
    seconds: Duration,
    sink: SocketAddr,
    source: SocketAddr,
    failures: &Arc<AtomicU64>,
    r: &mut Results,
) {
    let via = proxy.addr;
    let pid = proxy.child.as_ref().map(Child::id);
    let cpu_before = pid.map(tree_cpu_seconds);
    let (up, up_bytes) = throughput(via, sink, 1, seconds, Direction::Up, failures);
    let (down, down_bytes) = throughput(via, source, 1, seconds, Direction::Down, failures);
    let (par8, par8_bytes) = throughput(via, source, 8, seconds, Direction::Down, failures);
    let cpu = pid.zip(cpu_before).map(|(p, b)| tree_cpu_seconds(p) - b);
    let gib = (up_bytes + down_bytes + par8_bytes) as f64 / (1u64 << 30) as f64;
    r.cpu_per_gib = cpu.filter(|_| gib > 0.0).map(|c| c / gib);
    (r.up_gbit, r.down_gbit, r.par8_gbit) = (up, down, par8);
}

/// CPU seconds (user + system) used so far by `pid`'s whole process tree: for each live
/// process, its own utime + stime (all its threads, dead ones included) plus cutime +
/// cstime (every child it has reaped, and what they had reaped). A child that exits during
/// a run moves from "live" into its parent's cutime, and is counted once either way.
fn tree_cpu_seconds(pid: u32) -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    };
    // utime, stime, cutime, cstime: fields 14–17 of /proc/PID/stat (11–14 after the name).
    let total: u64 = std::iter::once(pid)
        .chain(descendants(pid))
        .filter_map(stat_fields)
        .map(|f| f.iter().skip(11).take(4).sum::<u64>())
        .sum();
    total as f64 / ticks
}

/// The median of each measurement over the runs (none if the server never ran).
fn median(runs: &[Results]) -> Option<Results> {
    fn mid(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    let first = runs.first()?;
    let of = |f: fn(&Results) -> f64| mid(runs.iter().map(f).collect());
    let opt = |f: fn(&Results) -> Option<f64>| {
        let v: Vec<f64> = runs.iter().filter_map(f).collect();
        (v.len() == runs.len()).then(|| mid(v))
    };
    Some(Results {
        up_gbit: of(|r| r.up_gbit),
        down_gbit: of(|r| r.down_gbit),
        par8_gbit: of(|r| r.par8_gbit),
        seq_cps: of(|r| r.seq_cps),
        par50_cps: of(|r| r.par50_cps),
        idle_rss_mib: opt(|r| r.idle_rss_mib),
        idle_procs: first.idle_procs,
        failures: runs.iter().map(|r| r.failures).sum(),
        cpu_per_gib: opt(|r| r.cpu_per_gib),
        seq_cpu_us: opt(|r| r.seq_cpu_us),
        par50_cpu_us: opt(|r| r.par50_cpu_us),
    })
}

fn fail(msg: &str) -> ! {
    eprintln!("bench-socks: {msg}");
    std::process::exit(1)
}

/// A loopback server running `handle` on a thread per connection.
fn serve(handle: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| fail(&format!("bind: {e}")));
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let _ = s.set_nodelay(true);
            thread::spawn(move || handle(s));
        }
    });
    addr
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn start_proxy(
    kind: Kind,
    bin_dir: &Path,
    port: u16,
    pipe_size: Option<usize>,
) -> Result<Proxy, String> {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (mut cmd, conf) = match kind {
        Kind::Direct => {
            return Ok(Proxy {
                kind,
                child: None,
                addr: None,
                _conf: None,
            })
        }
        Kind::Lesson12 | Kind::Lesson14 => {
            let exe = bin_dir.join(kind.name());
            if !exe.exists() {
                return Err(format!("{} not built", kind.name()));
            }
            let mut c = Command::new(exe);
            c.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
            if let Some(size) = pipe_size.filter(|_| kind == Kind::Lesson14) {
                c.args(["--pipe-size", &size.to_string()]);
            }
            (c, None)
        }
        Kind::Microsocks => {
            let exe = which("microsocks")
                .ok_or("microsocks not installed (apt-get install microsocks)")?;
            let mut c = Command::new(exe);
            c.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
            (c, None)
        }
        Kind::Dante => {
            let exe = which("danted")
                .or_else(|| which("sockd"))
                .ok_or("dante not installed (apt-get install dante-server)")?;
            let conf = std::env::temp_dir()
                .join(format!("bench-socks-danted-{}.conf", std::process::id()));
            let text = format!(
                "logoutput: /dev/null\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.3\n\
                 socksmethod: none\nclientmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n\
                 client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
                 socks pass {{ from: 127.0.0.0/8 to: 127.0.0.0/8 command: connect }}\n"
            );
            fs::write(&conf, text).map_err(|e| format!("write dante config: {e}"))?;
            let mut c = Command::new(exe);
            c.arg("-f").arg(&conf).args(["-N", "8"]);
            (c, Some(conf))
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().map_err(|e| format!("{}: {e}", kind.name()))?;
    let mut proxy = Proxy {
        kind,
        child: Some(child),
        addr: Some(addr),
        _conf: conf,
    };
    // Ready when a SOCKS5 greeting is answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Gone already: its bind failed, most likely (the port was taken meanwhile).
        if let Some(Ok(Some(status))) = proxy.child.as_mut().map(Child::try_wait) {
            return Err(format!(
                "{} exited ({status}) before answering on {addr}",
                proxy.kind.name()
            ));
        }
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut reply = [0u8; 2];
            if s.write_all(&[5, 1, 0]).is_ok()
                && s.read_exact(&mut reply).is_ok()
                && reply == [5, 0]
            {
                return Ok(proxy);
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not answer a SOCKS5 greeting on {addr}",
                proxy.kind.name()
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn microsocks_note() -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "microsocks"])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let v = String::from_utf8_lossy(&o.stdout).to_string();
            if v.starts_with("1.0.3") {
                format!(
                    "Debian's microsocks {v}: 1 KiB relay buffer, slower than the current 1.0.5"
                )
            } else {
                format!("microsocks {v}")
            }
        }
        _ => String::new(),
    }
}

/// Connects to `target`, through the SOCKS5 proxy at `via` if there is one.
fn dial(via: Option<SocketAddr>, target: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(proxy) = via else {
        let s = TcpStream::connect(target)?;
        s.set_nodelay(true)?;
        return Ok(s);
    };
    let mut s = TcpStream::connect(proxy)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    // Greeting, then the request once the method is chosen: the two round trips curl makes
    // (microsocks 1.0.3 loses a request that arrives in the greeting's segment). Replies are
    // read to their exact length, so data the target sends at once is left for the caller.
    s.write_all(&client::greeting(&[0]).map_err(|_| invalid("greeting"))?)?;
    let mut method = [0u8; 2];
    s.read_exact(&mut method)?;
    if method != [5, 0] {
        return Err(invalid("method refused"));
    }
    s.write_all(&client::connect_request(&Target::Ip(target)).map_err(|_| invalid("request"))?)?;
    let mut reply = vec![0u8; 5];
    s.read_exact(&mut reply)?;
    let rest = match reply[3] {
        1 => 4 - 1 + 2,
        4 => 16 - 1 + 2,
        3 => reply[4] as usize + 2,
        _ => return Err(invalid("bad reply address type")),
    };
    let mut tail = vec![0u8; rest];
    s.read_exact(&mut tail)?;
    reply.extend_from_slice(&tail);
    match client::parse_reply(&reply) {
        Ok(Some((Reply::Succeeded, _, used))) if used == reply.len() => {
            s.set_read_timeout(None)?;
            Ok(s)
        }
        Ok(Some((rep, _, _))) => Err(invalid(&format!("proxy replied {rep}"))),
        _ => Err(invalid("bad reply")),
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Up,
    Down,
}

/// Gbit/s over `streams` connections for `time` (after a warm-up), and every byte moved
/// from the first to the last (what the proxy's CPU time is divided by).
fn throughput(
    via: Option<SocketAddr>,
    target: SocketAddr,
    streams: usize,
    time: Duration,
    dir: Direction,
    failures: &Arc<AtomicU64>,
) -> (f64, u64) {
    let total = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..streams {
        let (total, stop, failures) = (total.clone(), stop.clone(), failures.clone());
        workers.push(thread::spawn(move || {
            let Ok(mut s) = dial(via, target) else {
                failures.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
            let mut buf = vec![0x42u8; 256 * 1024];
            while !stop.load(Ordering::Relaxed) {
                let r = match dir {
                    Direction::Up => s.write(&buf),
                    Direction::Down => s.read(&mut buf),
                };
                match r {
                    Ok(0) => break,
                    Ok(n) => {
                        total.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            let _ = s.shutdown(Shutdown::Both);
        }));
    }
    // Warm-up: 10 % of the time, then measure.
    thread::sleep(time / 10);
    let from = total.load(Ordering::Relaxed);
    let t0 = Instant::now();
    thread::sleep(time);
    let bytes = total.load(Ordering::Relaxed) - from;
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    (
        bytes as f64 * 8.0 / secs / 1e9,
        total.load(Ordering::Relaxed),
    )
}

/// "seq / 50 w" CPU microseconds per connection, or "—" (direct has no proxy to measure).
fn per_conn(r: &Results) -> String {
    match (r.seq_cpu_us, r.par50_cpu_us) {
        (Some(s), Some(p)) => format!("{s:.0} / {p:.0}"),
        _ => "—".into(),
    }
}

/// Each live server's connections per second, `workers` clients at a time, and its proxy's
/// CPU microseconds per connection: `slices` slices of `time / slices`, taken in turn across
/// the servers.
fn conn_rates(
    live: &[(usize, Proxy)],
    echo: SocketAddr,
    workers: usize,
    time: Duration,
    slices: usize,
    failures: &[Arc<AtomicU64>],
) -> Vec<(f64, Option<f64>)> {
    let slices = slices.max(1);
    // Per server: connections and seconds measured; CPU seconds and connections in all.
    let mut done = vec![(0u64, 0f64, 0f64, 0u64); live.len()];
    for _ in 0..slices {
        for (j, (_, proxy)) in live.iter().enumerate() {
            let pid = proxy.child.as_ref().map(Child::id);
            let before = pid.map(tree_cpu_seconds);
            let (n, secs, all) = conn_count(
                proxy.addr,
                echo,
                workers,
                time / slices as u32,
                &failures[j],
            );
            let cpu = pid.zip(before).map(|(p, b)| tree_cpu_seconds(p) - b);
            let d = &mut done[j];
            (d.0, d.1, d.2, d.3) = (d.0 + n, d.1 + secs, d.2 + cpu.unwrap_or(0.0), d.3 + all);
        }
    }
    live.iter()
        .zip(done)
        .map(|((_, proxy), (n, secs, cpu, all))| {
            let rate = if secs > 0.0 { n as f64 / secs } else { 0.0 };
            let per_conn = (proxy.child.is_some() && all > 0).then(|| cpu * 1e6 / all as f64);
            (rate, per_conn)
        })
        .collect()
}

/// Connections completed in `time` (after a tenth of it as warm-up), the seconds measured, and
/// the connections completed in all: greeting + CONNECT + one 32-byte round trip + close.
fn conn_count(
    via: Option<SocketAddr>,
    echo: SocketAddr,
    workers: usize,
    time: Duration,
    failures: &Arc<AtomicU64>,
) -> (u64, f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (done, stop, failures) = (done.clone(), stop.clone(), failures.clone());
        handles.push(thread::spawn(move || {
            let payload = [0x61u8; 32];
            let mut back = [0u8; 32];
            while !stop.load(Ordering::Relaxed) {
                let ok = dial(via, echo).and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    s.write_all(&payload)?;
                    s.read_exact(&mut back)?;
                    // Close with a reset (SO_LINGER 0): tens of thousands of client-side
                    // TIME_WAITs would otherwise use up the ephemeral ports and fail the
                    // servers measured next. The same for every server.
                    let _ = sockets_by_hand::net::linger_zero(&s);
                    Ok(back == payload)
                });
                match ok {
                    Ok(true) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }));
    }
    thread::sleep(time / 10);
    let from = done.load(Ordering::Relaxed);
    let t0 = Instant::now();
    thread::sleep(time);
    let n = done.load(Ordering::Relaxed) - from;
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    (n, secs, done.load(Ordering::Relaxed))
}

/// RSS (MiB, summed over the proxy's processes) with `n` idle relayed connections open.
fn idle_rss(
    via: Option<SocketAddr>,
    holder: SocketAddr,
    n: usize,
    pid: u32,
    failures: &Arc<AtomicU64>,
) -> (Option<f64>, u64) {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        match dial(via, holder) {
            Ok(s) => conns.push(s),
            Err(_) => {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // Let the proxy settle, then take the peak of a few samples.
    let mut peak = 0u64;
    let mut procs = 0u64;
    for _ in 0..10 {
        let (rss, p) = procfs_rss(pid);
        peak = peak.max(rss);
        procs = procs.max(p);
        thread::sleep(Duration::from_millis(50));
    }
    let ok = conns.len() == n;
    drop(conns);
    (ok.then_some(peak as f64 / 1024.0), procs)
}

/// (VmRSS KiB summed, process count) over `pid` and its descendants.
fn procfs_rss(pid: u32) -> (u64, u64) {
    let (rss, _threads, procs) = tree_usage(pid);
    (rss, procs)
}

fn report(
    rows: &[(Kind, Option<Results>, String)],
    runs: &[Measured],
    args: &Args,
    network: &str,
    cc: &str,
) -> String {
    let base = rows
        .iter()
        .find(|(k, r, _)| *k == Kind::Microsocks && r.is_some())
        .and_then(|(_, r, _)| r.clone());
    let direct = rows
        .iter()
        .find(|(k, r, _)| *k == Kind::Direct && r.is_some())
        .and_then(|(_, r, _)| r.clone());
    let ratio = |v: f64, b: Option<f64>| match b {
        Some(b) if b > 0.0 => format!(" ({:.2}×)", v / b),
        _ => String::new(),
    };
    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut md = String::new();
    let _ = writeln!(md, "# SOCKS5 relays compared on loopback\n");
    let _ = writeln!(
        md,
        "Machine: {cpus} CPUs, Linux {}; network: {network}. {} s per run (connection rates in {} slices taken in turn across the servers); ratios in parentheses are to microsocks in this run; \
         \"vs direct\" is single-stream download against no proxy at all; CPU s/GiB is the proxy's \
         user + system time over the three bulk runs divided by the bytes they moved, CPU µs/conn its \
         time over the connection-rate runs divided by the connections they made.{}\n",
        kernel.trim(),
        args.seconds,
        args.slices.max(1),
        if args.runs > 1 {
            format!(" Every figure is the median of {} runs.", args.runs)
        } else {
            String::new()
        }
    );
    let _ = writeln!(md, "| server | upload Gbit/s | download Gbit/s | vs direct | 8 streams Gbit/s | conn/s sequential | conn/s, 50 workers | CPU µs/conn, seq / 50 w | RSS, {} idle relays | CPU s/GiB | failures | note |", args.idle);
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for (kind, r, note) in rows {
        let Some(r) = r else {
            let _ = writeln!(
                md,
                "| {} | — | — | — | — | — | — | — | — | — | — | skipped: {note} |",
                kind.name()
            );
            continue;
        };
        let b = base.as_ref();
        let vs_direct = direct
            .as_ref()
            .filter(|d| d.down_gbit > 0.0)
            .map_or(String::from("—"), |d| {
                format!("{:.2}×", r.down_gbit / d.down_gbit)
            });
        let rss = match (r.idle_rss_mib, b.and_then(|b| b.idle_rss_mib)) {
            (Some(m), base) => format!(
                "{m:.1} MiB{} in {} process{}",
                ratio(m, base),
                r.idle_procs,
                if r.idle_procs == 1 { "" } else { "es" }
            ),
            (None, _) if *kind == Kind::Direct => "—".into(),
            (None, _) => "failed".into(),
        };
        let cpu = r.cpu_per_gib.map_or(String::from("—"), |c| {
            format!("{c:.3}{}", ratio(c, b.and_then(|b| b.cpu_per_gib)))
        });
        let _ = writeln!(
            md,
            "| {} | {:.2}{} | {:.2}{} | {} | {:.2}{} | {:.0}{} | {:.0}{} | {} | {} | {} | {} | {} |",
            kind.name(),
            r.up_gbit,
            ratio(r.up_gbit, b.map(|b| b.up_gbit)),
            r.down_gbit,
            ratio(r.down_gbit, b.map(|b| b.down_gbit)),
            vs_direct,
            r.par8_gbit,
            ratio(r.par8_gbit, b.map(|b| b.par8_gbit)),
            r.seq_cps,
            ratio(r.seq_cps, b.map(|b| b.seq_cps)),
            r.par50_cps,
            ratio(r.par50_cps, b.map(|b| b.par50_cps)),
            per_conn(r),
            rss,
            cpu,
            r.failures,
            if note.is_empty() { "" } else { note }
        );
    }
    bars(&mut md, rows, runs, args, cc);
    md
}

/// The median, over the runs both `a` and `b` took part in (paired by run number), of
/// f(a's result, b's result).
fn paired_median(
    a: &[(usize, Results)],
    b: &[(usize, Results)],
    f: fn(&Results, &Results) -> Option<f64>,
) -> Option<f64> {
    let mut v: Vec<f64> = a
        .iter()
        .filter_map(|(run, ra)| {
            let (_, rb) = b.iter().find(|(r, _)| r == run)?;
            f(ra, rb).filter(|x| x.is_finite())
        })
        .collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The performance bars, with pass/fail: lesson 12's
/// connection rates against microsocks (sequentially at ≤ 0.9× its CPU per connection) and its
/// RSS with idle relays; lesson 14's own two, CPU per GiB and single stream against lesson
/// 12's. A ratio is taken within each run, where the two servers were measured side by side,
/// and the median of those is checked (not the ratio of two medians, which may come from
/// different runs). The other ratios follow, without a bar.
fn bars(
    md: &mut String,
    rows: &[(Kind, Option<Results>, String)],
    runs: &[Measured],
    args: &Args,
    cc: &str,
) {
    let get = |kind: Kind| {
        rows.iter()
            .find(|(k, r, _)| *k == kind && r.is_some())
            .and_then(|(_, r, _)| r.clone())
    };
    let runs_of = |kind: Kind| {
        runs.iter()
            .find(|(k, rs, _)| *k == kind && !rs.is_empty())
            .map(|(_, rs, _)| rs.as_slice())
    };
    let (direct, micro, l12, l14) = (
        runs_of(Kind::Direct),
        runs_of(Kind::Microsocks),
        runs_of(Kind::Lesson12),
        runs_of(Kind::Lesson14),
    );
    let (mut lines, mut others) = (Vec::new(), Vec::new());
    let mut bar = |name: &str, target: &str, value: String, met: Option<bool>| {
        let met = match met {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "—",
        };
        lines.push(format!("| {name} | {target} | {value} | {met} |"));
    };
    let mut other = |name: &str, value: Option<f64>, unit: &str| {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            others.push(format!("- {name}: {v:.2}{unit}"));
        }
    };
    fn over(a: f64, b: f64) -> Option<f64> {
        (b > 0.0).then(|| a / b)
    }
    // Single stream: the mean of the upload and the download.
    fn single(r: &Results) -> f64 {
        (r.up_gbit + r.down_gbit) / 2.0
    }
    // Two decimals, or three where two would round the ratio onto its bar (0.947 is no 0.95).
    let x = |v: f64, goal: f64| match (v - goal).abs() < 0.005 {
        true => format!("{v:.3}×"),
        false => format!("{v:.2}×"),
    };
    if let (Some(l), Some(m)) = (l12, micro) {
        let seq = paired_median(l, m, |a, b| over(a.seq_cps, b.seq_cps));
        let cpu = paired_median(l, m, |a, b| over(a.seq_cpu_us?, b.seq_cpu_us?));
        if let (Some(seq), Some(cpu)) = (seq, cpu) {
            let value = format!("{}, at {}", x(seq, 1.0), x(cpu, 0.9));
            let target = "≥ 1.00× microsocks, at ≤ 0.90× its CPU per connection";
            let met = seq >= 1.0 && cpu <= 0.9;
            bar(
                "lesson 12, sequential connection rate",
                target,
                value,
                Some(met),
            );
            let stretch = "(stretch) ≥ 1.10× microsocks";
            bar(
                "lesson 12, sequential connection rate",
                stretch,
                x(seq, 1.1),
                Some(seq >= 1.1),
            );
        }
        if let Some(par) = paired_median(l, m, |a, b| over(a.par50_cps, b.par50_cps)) {
            let target = "≥ 1.10× microsocks";
            bar(
                "lesson 12, with 50 workers",
                target,
                x(par, 1.1),
                Some(par >= 1.1),
            );
        }
    }
    if let (Some(f), Some(t)) = (l14, l12) {
        if let Some(cpu) = paired_median(f, t, |a, b| over(a.cpu_per_gib?, b.cpu_per_gib?)) {
            let target = "≤ 0.60× lesson 12's";
            bar(
                "lesson 14, CPU seconds per GiB",
                target,
                x(cpu, 0.6),
                Some(cpu <= 0.6),
            );
        }
        if let Some(one) = paired_median(f, t, |a, b| over(single(a), single(b))) {
            let target = "≥ 0.95× lesson 12's";
            bar(
                "lesson 14, single stream",
                target,
                x(one, 0.95),
                Some(one >= 0.95),
            );
        }
    }
    if let Some(rss) = get(Kind::Lesson12).and_then(|l| l.idle_rss_mib) {
        // The bar is set for 1,000 idle relays: with another --idle it is shown, not judged.
        let met = (args.idle == 1000).then_some(rss < 4.0);
        let name = format!("lesson 12, RSS with {} idle relays", args.idle);
        bar(&name, "< 4 MiB (with 1,000)", format!("{rss:.1} MiB"), met);
    }
    for (kind, lr) in [(Kind::Lesson12, l12), (Kind::Lesson14, l14)] {
        let (Some(lr), who) = (lr, kind.name()) else {
            continue;
        };
        if let Some(d) = direct {
            let seq = paired_median(lr, d, |a, b| over(a.seq_cps, b.seq_cps));
            other(&format!("{who}: conn/s sequential, × direct"), seq, "×");
            let par = paired_median(lr, d, |a, b| over(a.par50_cps, b.par50_cps));
            other(&format!("{who}: conn/s 50 workers, × direct"), par, "×");
            let one = paired_median(lr, d, |a, b| over(single(a), single(b)));
            other(&format!("{who}: single stream, × direct"), one, "×");
        }
        if let (Kind::Lesson14, Some(m)) = (kind, micro) {
            let seq = paired_median(lr, m, |a, b| over(a.seq_cps, b.seq_cps));
            other(&format!("{who}: conn/s sequential, × microsocks"), seq, "×");
            let par = paired_median(lr, m, |a, b| over(a.par50_cps, b.par50_cps));
            other(&format!("{who}: conn/s 50 workers, × microsocks"), par, "×");
            let rss = get(kind).and_then(|l| l.idle_rss_mib);
            other(
                &format!("{who}: RSS with {} idle relays", args.idle),
                rss,
                " MiB",
            );
        }
    }
    if lines.is_empty() && others.is_empty() {
        return;
    }
    let runs = if args.runs > 1 {
        format!(
            "each ratio taken within a run, the median of {} runs",
            args.runs
        )
    } else {
        "one run: a bar wants the median of 3 (--runs 3)".into()
    };
    let under = match cc {
        "cubic" => "under cubic".to_string(),
        other => format!("under {other}, NOT cubic, which the bars assume"),
    };
    let _ = writeln!(md, "\n## The bars ({runs}; {under})\n");
    let _ = writeln!(md, "| bar | target | measured | met |");
    let _ = writeln!(md, "|---|---|---:|---|");
    for line in lines {
        let _ = writeln!(md, "{line}");
    }
    if !others.is_empty() {
        let _ = writeln!(md, "\nWithout a bar (medians of within-run ratios):\n");
        for line in others {
            let _ = writeln!(md, "{line}");
        }
    }
}

fn chart(
    rows: &[(Kind, Option<Results>, String)],
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let metrics = [
        "upload",
        "download",
        "8 streams",
        "conn/s seq",
        "conn/s ×50",
    ];
    let values = |r: &Results| [r.up_gbit, r.down_gbit, r.par8_gbit, r.seq_cps, r.par50_cps];
    let measured: Vec<(Kind, [f64; 5])> = rows
        .iter()
        .filter_map(|(k, r, _)| r.as_ref().map(|r| (*k, values(r))))
        .collect();
    // Each metric normalised to its best server, so one axis serves throughput and rates.
    let best: Vec<f64> = (0..5)
        .map(|i| {
            measured
                .iter()
                .map(|(_, v)| v[i])
                .fold(0.0, f64::max)
                .max(1e-9)
        })
        .collect();
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "SOCKS5 relays on loopback, each metric relative to the best (higher is better)",
            ("sans-serif", 20),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..5f64, 0f64..1.15f64)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        // Ticks every 0.5: the label goes under the middle of each group.
        .x_labels(11)
        .x_label_formatter(&|x| {
            let i = x.floor();
            if (x - i - 0.5).abs() < 0.01 {
                metrics
                    .get(i as usize)
                    .map(|m| m.to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("fraction of the best")
        .draw()?;
    let n = measured.len().max(1) as f64;
    for (j, (kind, v)) in measured.iter().enumerate() {
        let color = Palette99::pick(j).to_rgba();
        let bars: Vec<Rectangle<(f64, f64)>> = (0..5)
            .map(|i| {
                let x0 = i as f64 + 0.1 + 0.8 * j as f64 / n;
                let x1 = x0 + 0.8 / n - 0.02;
                Rectangle::new([(x0, 0.0), (x1, v[i] / best[i])], color.filled())
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(kind.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(rates: &[(usize, f64)]) -> Vec<(usize, Results)> {
        rates
            .iter()
            .map(|&(run, seq_cps)| {
                let r = Results {
                    seq_cps,
                    ..Results::default()
                };
                (run, r)
            })
            .collect()
    }

    /// A run where the whole machine was slow pairs with itself: the median of the per-run
    /// ratios (1.04, 1.14, 0.97), not the ratio of the medians (2019 / 1778 = 1.14).
    #[test]
    fn a_bar_is_the_median_of_ratios_within_runs() {
        let l12 = seq(&[(0, 367.0), (1, 2019.0), (2, 2046.0)]);
        let micro = seq(&[(0, 353.0), (1, 1778.0), (2, 2105.0)]);
        let ratio = paired_median(&l12, &micro, |a, b| Some(a.seq_cps / b.seq_cps)).unwrap();
        assert!((ratio - 367.0 / 353.0).abs() < 1e-9, "{ratio}");
    }

    /// A run one server missed is left out, not paired with another run.
    #[test]
    fn runs_pair_by_number() {
        let a = seq(&[(0, 100.0), (2, 300.0)]);
        let b = seq(&[(1, 10.0), (2, 100.0)]);
        assert_eq!(
            paired_median(&a, &b, |a, b| Some(a.seq_cps / b.seq_cps)),
            Some(3.0)
        );
        assert_eq!(paired_median(&a, &[], |_, _| Some(1.0)), None);
    }
}
