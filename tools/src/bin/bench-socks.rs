//! bench-socks: `make bench-socks`, lesson 12's SOCKS5 relay against the SOCKS5 servers
//! people run (not a lesson).
//!
//! Servers: lesson 12, microsocks and dante (Debian's packages, skipped with a note when not
//! installed), and "direct" (no proxy) as the physical reference. All on loopback, in one
//! run on one machine, so the ratios mean something even though absolute numbers drift.
//! Runs: single-stream bulk throughput each way, 8 parallel streams, connection rate
//! (greeting + CONNECT + one 32-byte round trip + close) sequential and with 50 workers, and
//! the RSS of the proxy holding 1,000 idle relayed connections. Output: a table with ratios
//! to microsocks, `target/bench-socks/report.md` and `target/bench-socks/report.svg`.
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
use tools::procfs::{descendants, tree_usage};

/// Benchmarks lesson 12 against microsocks, dante and a direct connection, all on loopback.
#[derive(Parser, Debug)]
#[command(name = "bench-socks")]
struct Args {
    /// Seconds per throughput or connection-rate run.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Idle relayed connections held for the memory measurement.
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Only these servers (direct, lesson-12, microsocks, dante).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where the reports go.
    #[arg(long, default_value = "target/bench-socks")]
    out: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Direct,
    Lesson12,
    Microsocks,
    Dante,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Lesson12 => "lesson-12",
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
}

fn main() {
    let args = Args::parse();
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

    let kinds = [Kind::Direct, Kind::Lesson12, Kind::Microsocks, Kind::Dante];
    // Every proxy's port is picked now, before any load has filled the port space.
    let ports: Vec<u16> = kinds.iter().map(|_| free_port()).collect();
    let mut rows: Vec<(Kind, Option<Results>, String)> = Vec::new();
    for (kind, port) in kinds.into_iter().zip(ports) {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == kind.name()) {
            continue;
        }
        let proxy = match start_proxy(kind, &bin_dir, port) {
            Ok(p) => p,
            Err(note) => {
                eprintln!("bench-socks: {} skipped: {note}", kind.name());
                rows.push((kind, None, note));
                continue;
            }
        };
        eprintln!("bench-socks: {} ...", kind.name());
        let via = proxy.addr;
        let mut r = Results::default();
        let failures = Arc::new(AtomicU64::new(0));
        r.up_gbit = throughput(via, sink, 1, seconds, Direction::Up, &failures);
        r.down_gbit = throughput(via, source, 1, seconds, Direction::Down, &failures);
        r.par8_gbit = throughput(via, source, 8, seconds, Direction::Down, &failures);
        r.seq_cps = conn_rate(via, echo, 1, seconds, &failures);
        r.par50_cps = conn_rate(via, echo, 50, seconds, &failures);
        if let Some(child) = proxy.child.as_ref() {
            let (rss, procs) = idle_rss(via, holder, args.idle, child.id(), &failures);
            r.idle_rss_mib = rss;
            r.idle_procs = procs;
        }
        r.failures = failures.load(Ordering::Relaxed);
        eprintln!(
            "  up {:.2} Gbit/s, down {:.2}, 8 streams {:.2}; {:.0} conn/s sequential, {:.0} with 50 workers; idle RSS {}; failures {}",
            r.up_gbit,
            r.down_gbit,
            r.par8_gbit,
            r.seq_cps,
            r.par50_cps,
            r.idle_rss_mib.map_or("—".into(), |m| format!("{m:.1} MiB")),
            r.failures
        );
        let note = if kind == Kind::Microsocks {
            microsocks_note()
        } else {
            String::new()
        };
        rows.push((kind, Some(r), note));
        drop(proxy);
    }
    fs::create_dir_all(&args.out).unwrap_or_else(|e| fail(&format!("mkdir: {e}")));
    let md = report(&rows, &args);
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

fn start_proxy(kind: Kind, bin_dir: &Path, port: u16) -> Result<Proxy, String> {
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
        Kind::Lesson12 => {
            let exe = bin_dir.join("lesson-12");
            if !exe.exists() {
                return Err("lesson-12 not built".into());
            }
            let mut c = Command::new(exe);
            c.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
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
    let proxy = Proxy {
        kind,
        child: Some(child),
        addr: Some(addr),
        _conf: conf,
    };
    // Ready when a SOCKS5 greeting is answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
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

/// Gbit/s over `streams` connections for `time`.
fn throughput(
    via: Option<SocketAddr>,
    target: SocketAddr,
    streams: usize,
    time: Duration,
    dir: Direction,
    failures: &Arc<AtomicU64>,
) -> f64 {
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
    bytes as f64 * 8.0 / secs / 1e9
}

/// Connections per second: greeting + CONNECT + one 32-byte round trip + close.
fn conn_rate(
    via: Option<SocketAddr>,
    echo: SocketAddr,
    workers: usize,
    time: Duration,
    failures: &Arc<AtomicU64>,
) -> f64 {
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
    n as f64 / secs
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

fn report(rows: &[(Kind, Option<Results>, String)], args: &Args) -> String {
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
        "Machine: {cpus} CPUs, Linux {}. {} s per run; ratios in parentheses are to microsocks in this run; \
         \"vs direct\" is single-stream download against no proxy at all.\n",
        kernel.trim(),
        args.seconds
    );
    let _ = writeln!(md, "| server | upload Gbit/s | download Gbit/s | vs direct | 8 streams Gbit/s | conn/s sequential | conn/s, 50 workers | RSS, {} idle relays | failures | note |", args.idle);
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (kind, r, note) in rows {
        let Some(r) = r else {
            let _ = writeln!(
                md,
                "| {} | — | — | — | — | — | — | — | — | skipped: {note} |",
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
        let _ = writeln!(
            md,
            "| {} | {:.2}{} | {:.2}{} | {} | {:.2}{} | {:.0}{} | {:.0}{} | {} | {} | {} |",
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
            rss,
            r.failures,
            if note.is_empty() { "" } else { note }
        );
    }
    // The bars DESIGN.md sets for lesson 12, as ratios to "direct" taken in this run.
    if let (Some(d), Some((_, Some(l), _))) = (
        direct.as_ref(),
        rows.iter()
            .find(|(k, r, _)| *k == Kind::Lesson12 && r.is_some()),
    ) {
        let _ = writeln!(
            md,
            "\n## Lesson 12 against the bars (microsocks 1.0.5 as ratios to direct)\n"
        );
        let _ = writeln!(md, "| measure | lesson 12 | bar | met |");
        let _ = writeln!(md, "|---|---:|---:|---|");
        let mut bar = |name: &str, value: f64, goal: f64, higher: bool, unit: &str| {
            let met = if higher { value >= goal } else { value < goal };
            let _ = writeln!(
                md,
                "| {name} | {value:.2}{unit} | {}{goal:.2}{unit} | {} |",
                if higher { "≥ " } else { "< " },
                if met { "yes" } else { "no" }
            );
        };
        if d.down_gbit > 0.0 {
            bar(
                "single stream, × direct",
                l.down_gbit / d.down_gbit,
                0.62,
                true,
                "×",
            );
        }
        if d.seq_cps > 0.0 {
            bar(
                "conn/s sequential, × direct",
                l.seq_cps / d.seq_cps,
                0.28,
                true,
                "×",
            );
        }
        if let Some(rss) = l.idle_rss_mib {
            bar(
                &format!("RSS with {} idle relays", args.idle),
                rss,
                18.0,
                false,
                " MiB",
            );
        }
    }
    md
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
