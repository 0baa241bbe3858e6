//! compare: `make compare`, the I/O models side by side on the same protocol (not a lesson).
//!
//! For each echo lesson (03–11, 15) and the tokio reference, for each concurrency level and
//! each load client (`loadgen`, one epoll loop; `tokio-load`, one tokio task per connection),
//! it starts a fresh server pinned to one core, runs the load pinned to the other, and records
//! requests/s, p50/p99 latency, the server's CPU time per request over the measured window
//! (loadgen --server-pid), the server's CPU seconds (utime + stime of it and its
//! children, from /proc), its peak RSS summed over its processes, its thread and process
//! count, what failed (a serial server starving clients, select's FD_SETSIZE wall), and for
//! the io_uring lessons the completions each io_uring_enter brought (their Ctrl-C summary). A
//! separate short run under `strace -c -f` with a fixed request count gives system calls
//! per request. Results: a table on the terminal, `target/compare/report.md` and
//! `target/compare/report.svg` (requests/s against clients, log x axis).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use tools::procfs::{cpu_seconds, descendants, tree_usage};

/// Runs every echo lesson and the tokio reference under the same load and writes a report
/// (terminal table, target/compare/report.md, target/compare/report.svg).
#[derive(Parser, Debug)]
#[command(name = "compare")]
struct Args {
    /// The quick mode of `make compare QUICK=1`: fewer levels, shorter runs.
    #[arg(long)]
    quick: bool,
    /// Only these servers (lesson numbers such as 03,10, or "tokio").
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Concurrency levels (default 1,10,100,1000,5000; quick: 10,1000).
    #[arg(long, value_delimiter = ',')]
    levels: Vec<usize>,
    /// Seconds measured per run (default 1; quick: 0.5).
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of warm-up per run (default 0.5; quick: 0.2).
    #[arg(long)]
    warmup: Option<f64>,
    /// Requests in the strace -c run (default 10000; quick: 3000; 0 skips it).
    #[arg(long)]
    strace_requests: Option<u64>,
    /// Idle connections beside 100 busy clients in the idle-cost runs (default 5000;
    /// quick: 0, which skips them).
    #[arg(long)]
    idle: Option<usize>,
    /// The load clients, each run at every level: loadgen (one epoll loop drives every
    /// connection) and tokio-load (one tokio task per connection); the first also runs the
    /// idle-cost runs.
    #[arg(long, value_delimiter = ',', default_values = ["loadgen", "tokio-load"])]
    loads: Vec<String>,
    /// Interleaved rounds instead of the tables: each round runs every server once per level
    /// and load, in a rotated order, and the report gives each server's median CPU per
    /// request and its median ratio to the others within a round (a shared machine drifts
    /// between rounds, less within one).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Where the reports go.
    #[arg(long, default_value = "target/compare")]
    out: PathBuf,
}

/// One server under test.
struct Spec {
    key: &'static str,
    bin: &'static str,
    label: &'static str,
    /// The highest level the model is run at, and why not higher.
    max_level: usize,
    why_not: &'static str,
}

const SPECS: &[Spec] = &[
    Spec {
        key: "03",
        bin: "lesson-03",
        label: "03 serial",
        max_level: 100,
        why_not: "one client at a time: the rest starve",
    },
    Spec {
        key: "04",
        bin: "lesson-04",
        label: "04 fork",
        max_level: 1000,
        why_not: "5,000 processes",
    },
    Spec {
        key: "05",
        bin: "lesson-05",
        label: "05 threads",
        max_level: 1000,
        why_not: "--max-clients 1000",
    },
    Spec {
        key: "06",
        bin: "lesson-06",
        label: "06 nonblock",
        max_level: 1000,
        why_not: "a spin over 5,000 fds",
    },
    Spec {
        key: "07",
        bin: "lesson-07",
        label: "07 select",
        max_level: 5000,
        why_not: "",
    },
    Spec {
        key: "08",
        bin: "lesson-08",
        label: "08 poll",
        max_level: 5000,
        why_not: "",
    },
    Spec {
        key: "09",
        bin: "lesson-09",
        label: "09 sigio",
        max_level: 5000,
        why_not: "",
    },
    Spec {
        key: "10",
        bin: "lesson-10",
        label: "10 epoll",
        max_level: 5000,
        why_not: "",
    },
    Spec {
        key: "11",
        bin: "lesson-11",
        label: "11 io_uring",
        max_level: 5000,
        why_not: "",
    },
    Spec {
        key: "15",
        bin: "lesson-15",
        label: "15 io_uring multishot",
        max_level: 5000,
        why_not: "",
    },
    Spec {
        key: "tokio",
        bin: "tokio-echo",
        label: "tokio (current-thread)",
        max_level: 5000,
        why_not: "",
    },
];

/// The servers of the idle-cost runs.
const IDLE_COST: &[&str] = &["06", "08", "09", "10", "11", "15", "tokio"];

/// What loadgen printed, as key → value.
type Fields = BTreeMap<String, f64>;

#[derive(Clone, Default)]
struct Row {
    label: String,
    /// The load client that ran it.
    client: String,
    level: usize,
    load: Fields,
    cpu_s: f64,
    peak_rss_mib: f64,
    threads: u64,
    procs: u64,
    failure: String,
    skipped: Option<String>,
    /// io_uring lessons: completions per io_uring_enter, from the Ctrl-C summary.
    per_enter: Option<f64>,
}

fn main() {
    let args = Args::parse();
    let levels = if !args.levels.is_empty() {
        args.levels.clone()
    } else if args.quick {
        vec![10, 1000]
    } else {
        vec![1, 10, 100, 1000, 5000]
    };
    let duration = args.duration.unwrap_or(if args.quick { 0.5 } else { 1.0 });
    let warmup = args.warmup.unwrap_or(if args.quick { 0.2 } else { 0.5 });
    let strace_requests = args
        .strace_requests
        .unwrap_or(if args.quick { 3000 } else { 10_000 });
    let idle = args.idle.unwrap_or(if args.quick { 0 } else { 5000 });
    let bin_dir = tools::bin_dir();
    let loads: Vec<(String, PathBuf)> = args
        .loads
        .iter()
        .map(|name| (name.clone(), bin_dir.join(name)))
        .collect();
    for (_, path) in &loads {
        if !path.exists() {
            fail(&format!(
                "{} is missing: build with `cargo build --release --bins`",
                path.display()
            ));
        }
    }
    let loadgen = loads
        .first()
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| fail("no load"));
    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let pin = cpus >= 2;
    let started = Instant::now();

    let specs: Vec<&Spec> = SPECS
        .iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| o == s.key || o == s.bin))
        .filter(|s| {
            let found = bin_dir.join(s.bin).exists();
            if !found {
                eprintln!("compare: {} not built, skipped", s.bin);
            }
            found
        })
        .collect();
    if specs.is_empty() {
        fail("no server to compare");
    }
    eprintln!(
        "compare: {} servers × levels {:?}, {warmup} s warm-up + {duration} s each; server on CPU 0, load on CPU 1{}",
        specs.len(),
        levels,
        if pin { "" } else { " (only one CPU: not pinned)" }
    );

    if args.rounds > 1 {
        let md = rounds(
            &specs,
            &levels,
            &loads,
            args.rounds,
            &bin_dir,
            pin,
            warmup,
            duration,
        );
        fs::create_dir_all(&args.out)
            .unwrap_or_else(|e| fail(&format!("mkdir {}: {e}", args.out.display())));
        let md_path = args.out.join("rounds.md");
        fs::write(&md_path, &md)
            .unwrap_or_else(|e| fail(&format!("write {}: {e}", md_path.display())));
        println!("\n{md}");
        eprintln!("compare: wrote {}", md_path.display());
        return;
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut syscalls: Vec<(String, String, usize, Option<f64>)> = Vec::new();
    let mut idle_rows: Vec<Row> = Vec::new();
    for spec in &specs {
        for &level in &levels {
            for (client, load) in &loads {
                if level > spec.max_level {
                    rows.push(Row {
                        label: spec.label.to_string(),
                        client: client.clone(),
                        level,
                        skipped: Some(spec.why_not.to_string()),
                        ..Row::default()
                    });
                    continue;
                }
                let row = run_one(spec, level, 0, &bin_dir, load, pin, warmup, duration);
                let row = Row {
                    client: client.clone(),
                    ..row
                };
                print_row(&row);
                rows.push(row);
            }
        }
        // What idle connections cost: 100 busy clients beside `idle` silent ones. A wait
        // that scans every connection (06's loop, poll) pays for the silent ones on every
        // wake-up; epoll and io_uring do not. select cannot hold them (FD_SETSIZE).
        if idle > 0 && IDLE_COST.contains(&spec.key) {
            let row = run_one(spec, 100, idle, &bin_dir, &loadgen, pin, warmup, duration);
            let row = Row {
                client: loads[0].0.clone(),
                ..row
            };
            eprint!("  with {idle} idle:");
            print_row(&row);
            idle_rows.push(row);
        }
        if strace_requests > 0 {
            let level = 100
                .min(spec.max_level)
                .min(*levels.iter().max().unwrap_or(&100))
                .max(1);
            let level = if spec.key == "03" { 1 } else { level };
            for (client, load) in &loads {
                let per = syscalls_per_request(spec, level, &bin_dir, load, strace_requests);
                match per {
                    Some(v) => eprintln!(
                        "  {:<24} {v:>6.2} system calls per request at {level} clients ({client})",
                        spec.label
                    ),
                    None => eprintln!("  {:<24} strace run failed ({client})", spec.label),
                }
                syscalls.push((spec.label.to_string(), client.clone(), level, per));
            }
        }
    }
    fs::create_dir_all(&args.out)
        .unwrap_or_else(|e| fail(&format!("mkdir {}: {e}", args.out.display())));
    let md = report_md(
        &rows,
        &loads,
        &idle_rows,
        idle,
        &syscalls,
        &levels,
        warmup,
        duration,
        pin,
        started.elapsed(),
    );
    let md_path = args.out.join("report.md");
    fs::write(&md_path, &md).unwrap_or_else(|e| fail(&format!("write {}: {e}", md_path.display())));
    let svg_path = args.out.join("report.svg");
    // The chart: under the first load.
    let charted: Vec<Row> = rows
        .iter()
        .filter(|r| r.client == loads[0].0)
        .cloned()
        .collect();
    if let Err(e) = chart(&charted, &svg_path) {
        fail(&format!("chart {}: {e}", svg_path.display()));
    }
    println!("\n{md}");
    eprintln!(
        "compare: wrote {} and {} in {:.0} s",
        md_path.display(),
        svg_path.display(),
        started.elapsed().as_secs_f64()
    );
}

/// `compare --rounds N`: every server once per round, level and load, the order rotated each
/// round; the medians of CPU per request and of the ratios within a round.
#[allow(clippy::too_many_arguments)]
fn rounds(
    specs: &[&Spec],
    levels: &[usize],
    loads: &[(String, PathBuf)],
    rounds: usize,
    bin_dir: &Path,
    pin: bool,
    warmup: f64,
    duration: f64,
) -> String {
    let loadavg = || {
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string()
    };
    // (load, level) → per server, one Row per round.
    let mut runs: BTreeMap<(String, usize), Vec<Vec<Row>>> = BTreeMap::new();
    let mut loads_seen = Vec::new();
    for round in 0..rounds {
        loads_seen.push(loadavg());
        for &level in levels {
            for (client, load) in loads {
                let mut by_spec = vec![Row::default(); specs.len()];
                for k in 0..specs.len() {
                    let i = (k + round) % specs.len();
                    let row = run_one(specs[i], level, 0, bin_dir, load, pin, warmup, duration);
                    eprint!("  round {} {client}:", round + 1);
                    print_row(&row);
                    by_spec[i] = row;
                }
                runs.entry((client.clone(), level))
                    .or_default()
                    .push(by_spec);
            }
        }
    }
    loads_seen.push(loadavg());
    let median = |mut v: Vec<f64>| {
        v.retain(|x| x.is_finite());
        v.sort_by(|a, b| a.total_cmp(b));
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let cpu = |r: &Row| r.load.get("cpu_us_per_req").copied().unwrap_or(f64::NAN);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Interleaved rounds: server CPU per request\n\n{rounds} rounds, {warmup} s warm-up + {duration} s measured per run; {}. Load average (1 min) at each round's start and at the end: {}.\n",
        if pin { "server pinned to CPU 0, the load to CPU 1" } else { "not pinned (one CPU)" },
        loads_seen.join(", ")
    );
    for ((client, level), per_round) in &runs {
        let _ = writeln!(md, "\n## {client}, {level} clients\n");
        let mut head = "| server | CPU µs/request, median | per round | completions per io_uring_enter, median | failures |".to_string();
        let mut rule = "|---|---:|---|---:|---|".to_string();
        for other in specs {
            head.push_str(&format!(" ratio to {}, median (per round) |", other.key));
            rule.push_str("---|");
        }
        let _ = writeln!(md, "{head}\n{rule}");
        for (i, spec) in specs.iter().enumerate() {
            let mine: Vec<f64> = per_round.iter().map(|r| cpu(&r[i])).collect();
            let enters: Vec<f64> = per_round.iter().filter_map(|r| r[i].per_enter).collect();
            let failures: Vec<&str> = per_round
                .iter()
                .map(|r| r[i].failure.as_str())
                .filter(|f| !f.is_empty())
                .collect();
            let _ = write!(
                md,
                "| {} | {:.2} | {} | {} | {} |",
                spec.label,
                median(mine.clone()),
                mine.iter()
                    .map(|v| format!("{v:.2}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                if enters.is_empty() {
                    "—".to_string()
                } else {
                    format!("{:.1}", median(enters))
                },
                if failures.is_empty() {
                    "—".to_string()
                } else {
                    failures.join("; ")
                }
            );
            for j in 0..specs.len() {
                let ratios: Vec<f64> = per_round.iter().map(|r| cpu(&r[i]) / cpu(&r[j])).collect();
                let _ = write!(
                    md,
                    " {:.2} ({}) |",
                    median(ratios.clone()),
                    ratios
                        .iter()
                        .map(|v| format!("{v:.2}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            let _ = writeln!(md);
        }
    }
    md
}

fn fail(msg: &str) -> ! {
    eprintln!("compare: {msg}");
    std::process::exit(1)
}

/// A server process, its stderr drained by a thread (its log lines must not fill a pipe).
struct Running {
    child: Child,
    addr: SocketAddr,
    /// The last stderr line naming completions per enter (the io_uring lessons' summary).
    ring_line: Arc<Mutex<String>>,
    drain: Option<thread::JoinHandle<()>>,
}

impl Running {
    /// Ctrl-C, as a learner would: the io_uring lessons then print completions per
    /// io_uring_enter, returned here (None for the other servers, or if it never exits).
    fn stop_for_summary(&mut self) -> Option<f64> {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
        let line = self.ring_line.lock().unwrap().clone();
        line.split("completions per enter: ")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = self.child.id();
        let kids = descendants(pid);
        // SAFETY: kill(2) on our child and its descendants.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        for k in kids {
            unsafe { libc::kill(k as i32, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

fn pinned(mut cmd: Command, cpu: Option<usize>) -> Command {
    if let Some(cpu) = cpu {
        // SAFETY: pre_exec runs in the child between fork and exec; sched_setaffinity is a
        // plain system call.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                let mut set = nix::sched::CpuSet::new();
                set.set(cpu).map_err(std::io::Error::from)?;
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                    .map_err(std::io::Error::from)
            });
        }
    }
    cmd
}

fn start_server(mut cmd: Command) -> Option<Running> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().ok()?;
    let stderr = child.stderr.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let ring_line = Arc::new(Mutex::new(String::new()));
    let ring = ring_line.clone();
    let drain = thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("completions per enter: ") {
                *ring.lock().unwrap() = line.clone();
            }
            if !sent && line.contains("listening on ") {
                let addr = line
                    .split("listening on ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .and_then(|a| a.parse::<SocketAddr>().ok());
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).ok().flatten();
    let running = Running {
        child,
        addr: addr.unwrap_or_else(|| "0.0.0.0:0".parse().unwrap()),
        ring_line,
        drain: Some(drain),
    };
    addr.map(|_| running)
}

fn run_loadgen(
    loadgen: &Path,
    addr: SocketAddr,
    clients: usize,
    extra: &[String],
    pin: bool,
) -> Option<Fields> {
    let mut cmd = pinned(Command::new(loadgen), pin.then_some(1));
    cmd.args([
        "--to",
        &addr.to_string(),
        "-c",
        &clients.to_string(),
        "--connect-timeout",
        "2",
        "--max-time",
        "60",
    ]);
    cmd.args(extra);
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Fields = text
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse::<f64>().ok()?)))
        .collect();
    (!fields.is_empty()).then_some(fields)
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    spec: &Spec,
    level: usize,
    idle: usize,
    bin_dir: &Path,
    loadgen: &Path,
    pin: bool,
    warmup: f64,
    duration: f64,
) -> Row {
    let mut row = Row {
        label: spec.label.to_string(),
        level,
        ..Row::default()
    };
    let cmd = pinned(Command::new(bin_dir.join(spec.bin)), pin.then_some(0));
    let mut cmd = cmd;
    cmd.args(["-p", "0"]);
    let Some(mut server) = start_server(cmd) else {
        row.failure = "server did not start".into();
        return row;
    };
    let pid = server.child.id();
    let cpu_before = cpu_seconds(pid);
    // Sample memory and thread/process counts while the load runs.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(Mutex::new((0u64, 0u64, 0u64)));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (rss, threads, procs) = tree_usage(pid);
                let mut p = peak.lock().unwrap();
                *p = (p.0.max(rss), p.1.max(threads), p.2.max(procs));
                drop(p);
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let extra = vec![
        "--warmup".to_string(),
        warmup.to_string(),
        "--duration".to_string(),
        duration.to_string(),
        "--idle".to_string(),
        idle.to_string(),
        "--server-pid".to_string(),
        pid.to_string(),
    ];
    let load = run_loadgen(loadgen, server.addr, level, &extra, pin);
    let cpu_after = cpu_seconds(pid);
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let (rss_kib, threads, procs) = *peak.lock().unwrap();
    row.per_enter = server.stop_for_summary();
    drop(server);
    row.cpu_s = (cpu_after - cpu_before).max(0.0);
    row.peak_rss_mib = rss_kib as f64 / 1024.0;
    row.threads = threads;
    row.procs = procs;
    match load {
        Some(f) => {
            let get = |k: &str| f.get(k).copied().unwrap_or(0.0);
            let mut failures = Vec::new();
            if get("starved") > 0.0 {
                failures.push(format!("{} of {level} starved", get("starved")));
            }
            if get("rejected") > 0.0 {
                failures.push(format!("{} refused by the server", get("rejected")));
            }
            for k in ["errors", "refused", "closed", "timeouts"] {
                if get(k) > 0.0 {
                    failures.push(format!("{} {k}", get(k)));
                }
            }
            row.failure = failures.join(", ");
            row.load = f;
        }
        None => row.failure = "loadgen failed".into(),
    }
    row
}

fn syscalls_per_request(
    spec: &Spec,
    level: usize,
    bin_dir: &Path,
    loadgen: &Path,
    requests: u64,
) -> Option<f64> {
    let path = std::env::temp_dir().join(format!(
        "compare-strace-{}-{}.txt",
        spec.bin,
        std::process::id()
    ));
    let mut cmd = Command::new("strace");
    cmd.args(["-c", "-f", "-o"])
        .arg(&path)
        .arg(bin_dir.join(spec.bin))
        .args(["-p", "0"]);
    let server = start_server(cmd)?;
    let extra = vec![
        "--warmup".to_string(),
        "0".to_string(),
        "--requests".to_string(),
        requests.to_string(),
    ];
    let load = run_loadgen(loadgen, server.addr, level, &extra, false)?;
    // strace writes its summary when the traced processes end: SIGTERM the lesson (not
    // strace), then wait for strace.
    let mut server = server;
    let kids = descendants(server.child.id());
    for k in &kids {
        // SAFETY: kill(2) on processes we started.
        unsafe { libc::kill(*k as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = server.child.try_wait() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    drop(server);
    let text = fs::read_to_string(&path).ok()?;
    let _ = fs::remove_file(&path);
    let total: f64 = text
        .lines()
        .find(|l| l.trim_end().ends_with("total"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    let done = load.get("requests").copied().unwrap_or(0.0)
        + load.get("warm_requests").copied().unwrap_or(0.0);
    (done > 0.0).then(|| total / done)
}

fn print_row(r: &Row) {
    let get = |k: &str| r.load.get(k).copied().unwrap_or(0.0);
    eprintln!(
        "  {:<24} {:<10} {:>5} clients {:>9.0} req/s  p50 {:>8.1} µs  p99 {:>8.1} µs  cpu {:>5.2} s  {:>6.2} µs/req  rss {:>7.1} MiB  {} thr/{} proc{}  {}",
        r.label,
        r.client,
        r.level,
        get("rps"),
        get("p50_us"),
        get("p99_us"),
        r.cpu_s,
        get("cpu_us_per_req"),
        r.peak_rss_mib,
        r.threads,
        r.procs,
        r.per_enter
            .map_or(String::new(), |v| format!("  {v:.1} completions/enter")),
        r.failure
    );
}

#[allow(clippy::too_many_arguments)]
fn report_md(
    rows: &[Row],
    loads: &[(String, PathBuf)],
    idle_rows: &[Row],
    idle: usize,
    syscalls: &[(String, String, usize, Option<f64>)],
    levels: &[usize],
    warmup: f64,
    duration: f64,
    pin: bool,
    took: Duration,
) -> String {
    let mut md = String::new();
    let host = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(
        md,
        "# I/O models compared: the echo protocol, 32-byte lines\n"
    );
    let _ = writeln!(
        md,
        "Machine: {cpus} CPUs ({host}), Linux {}. {warmup} s warm-up + {duration} s measured per run, levels {levels:?}; {}. Run took {:.0} s.\n",
        kernel.trim(),
        if pin { "server pinned to CPU 0, the load to CPU 1" } else { "not pinned (one CPU)" },
        took.as_secs_f64()
    );
    let _ = writeln!(md, "Server CPU per request: the server's on-CPU time (utime + stime, from /proc/PID/task/*/schedstat) over the measured window, divided by the requests answered in it; the fair measure when server and load share the machine. Compare ratios within one run.\n");
    let _ = writeln!(md, "Two load clients: loadgen drives every connection from one epoll loop; tokio-load runs one task per connection on a current-thread tokio runtime. Each connection reads the welcome, then sends a 32-byte line and waits for the reversed reply, again and again. The same server can cost a different CPU time per request under each.\n");
    for (n, (client, _)) in loads.iter().enumerate() {
        if n > 0 {
            let _ = writeln!(md, "\n## The same under {client}\n");
        }
        let _ = writeln!(md, "| server | clients | requests/s | p50 µs | p99 µs | server CPU s | server CPU µs/request | peak RSS MiB | threads | processes | completions per io_uring_enter | failures |");
        let _ = writeln!(
            md,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for r in rows.iter().filter(|r| &r.client == client) {
            if let Some(why) = &r.skipped {
                let _ = writeln!(
                    md,
                    "| {} | {} | — | — | — | — | — | — | — | — | — | not run: {why} |",
                    r.label, r.level
                );
                continue;
            }
            let get = |k: &str| r.load.get(k).copied().unwrap_or(0.0);
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.1} | {:.1} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} |",
                r.label,
                r.level,
                get("rps"),
                get("p50_us"),
                get("p99_us"),
                r.cpu_s,
                get("cpu_us_per_req"),
                r.peak_rss_mib,
                r.threads,
                r.procs,
                r.per_enter.map_or("—".to_string(), |v| format!("{v:.1}")),
                if r.failure.is_empty() {
                    "—"
                } else {
                    &r.failure
                }
            );
        }
    }
    if !idle_rows.is_empty() {
        let _ = writeln!(
            md,
            "\n## What idle connections cost: 100 busy clients beside {idle} idle ones\n"
        );
        let _ = writeln!(
            md,
            "| server | requests/s, no idle | requests/s, {idle} idle | ratio | p99 µs with idle | server CPU s with idle | server CPU µs/request with idle | peak RSS MiB with idle | failures |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
        for r in idle_rows {
            let base = rows
                .iter()
                .find(|b| {
                    b.label == r.label
                        && b.client == r.client
                        && b.level == 100
                        && b.skipped.is_none()
                })
                .and_then(|b| b.load.get("rps").copied());
            let rps = r.load.get("rps").copied().unwrap_or(0.0);
            let mut failure = r.failure.clone();
            let idle_ok = r.load.get("idle").copied().unwrap_or(0.0);
            if idle_ok < idle as f64 {
                failure = format!("{failure} only {idle_ok} idle connected")
                    .trim()
                    .to_string();
            }
            let _ = writeln!(
                md,
                "| {} | {} | {rps:.0} | {} | {:.1} | {:.2} | {:.2} | {:.1} | {} |",
                r.label,
                base.map_or("—".to_string(), |b| format!("{b:.0}")),
                base.filter(|b| *b > 0.0)
                    .map_or("—".to_string(), |b| format!("{:.2}×", rps / b)),
                r.load.get("p99_us").copied().unwrap_or(0.0),
                r.cpu_s,
                r.load.get("cpu_us_per_req").copied().unwrap_or(0.0),
                r.peak_rss_mib,
                if failure.is_empty() { "—" } else { &failure }
            );
        }
    }
    if !syscalls.is_empty() {
        let _ = writeln!(
            md,
            "\n## System calls per request (strace -c -f, fixed request count)\n"
        );
        let _ = writeln!(md, "| server | clients | system calls per request | load |");
        let _ = writeln!(md, "|---|---:|---:|---|");
        for (label, client, level, per) in syscalls {
            let v = per.map_or("strace failed".to_string(), |v| format!("{v:.2}"));
            let _ = writeln!(md, "| {label} | {level} | {v} | {client} |");
        }
    }
    md
}

fn chart(rows: &[Row], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let mut series: BTreeMap<&str, Vec<(usize, f64)>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| r.skipped.is_none()) {
        if !order.contains(&r.label.as_str()) {
            order.push(&r.label);
        }
        series
            .entry(&r.label)
            .or_default()
            .push((r.level, r.load.get("rps").copied().unwrap_or(0.0)));
    }
    let max_level = rows.iter().map(|r| r.level).max().unwrap_or(10).max(10);
    // Headroom above the highest point for the legend.
    let ymax = series.values().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.45;
    let root = SVGBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Echo requests/s by concurrent clients (higher is better)",
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((1usize..max_level * 3 / 2).log_scale(), 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (log scale)")
        .y_desc("requests/s")
        .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()?;
    for (i, label) in order.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = series[label].clone();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label.to_string())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
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
