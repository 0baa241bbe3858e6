//! tokio-load: the second load of `make compare` (not a lesson), one task per connection.
//!
//! loadgen drives every connection from one epoll loop; this client is what an independent
//! Rust user would write instead: a current-thread tokio runtime, one task per connection,
//! each reading the welcome, then sending a fixed-size line and awaiting its reversed reply
//! (checked byte for byte), again and again. The two clients load a server differently
//! (how many requests arrive per wake-up, how the client's own CPU time is spent), and a
//! server's cost per request can differ between them; `make compare` reports both.
//!
//! Same flags and output as loadgen (one line of `key=value` pairs, or JSON with `--json`),
//! so the two are interchangeable. Bounded in time (`--max-time`); loopback targets only.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use sockets_by_hand::limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tools::procfs::cpu_ns;

/// Echo-protocol load: one tokio task per connection on a current-thread runtime, every
/// reply checked, latency in an HDR histogram. Loopback targets only.
#[derive(Parser, Debug)]
#[command(name = "tokio-load")]
struct Args {
    /// The echo server, as IP:PORT (loopback only).
    #[arg(long, default_value = "127.0.0.1:23333")]
    to: SocketAddr,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 100)]
    connections: usize,
    /// Bytes per request line, the newline included.
    #[arg(long, default_value_t = 32)]
    line_bytes: usize,
    /// Seconds of warm-up before measuring (counted from the last welcome).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stop after this many measured requests instead (for syscall counting).
    #[arg(long)]
    requests: Option<u64>,
    /// Seconds a connection may take to be welcomed before it counts as starved.
    #[arg(long, default_value_t = 3.0)]
    connect_timeout: f64,
    /// Seconds a request may wait for its reply before it counts as a timeout.
    #[arg(long, default_value_t = 5.0)]
    reply_timeout: f64,
    /// Hard bound on the whole run, in seconds.
    #[arg(long, default_value_t = 120.0)]
    max_time: f64,
    /// Extra connections that take the welcome and then sit idle.
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// The server's pid: report its CPU time over the measured window (`server_cpu_ms`) and
    /// per request answered in it (`cpu_us_per_req`), from /proc.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Print JSON instead of key=value.
    #[arg(long)]
    json: bool,
}

const WELCOME: &[u8] = b"Welcome buddy!\n";
/// Connections opened but not yet welcomed, at most (as loadgen): a listen backlog is never
/// overrun by a SYN flood of our own making (a dropped SYN is retried only after a second,
/// and would look like a slow server).
const MAX_HANDSHAKES: usize = 64;

/// Where the run is: requests are counted as warm-up, then measured, then the tasks stop.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Warm,
    Measure,
    Done,
}

#[derive(Default)]
struct Counts {
    welcomed: u64,
    idle: u64,
    requests: u64,
    warm_requests: u64,
    refused: u64,
    rejected: u64,
    closed: u64,
    errors: u64,
    timeouts: u64,
    starved: u64,
}

struct Shared {
    phase: Cell<Phase>,
    counts: RefCell<Counts>,
    hist: RefCell<Histogram<u64>>,
    /// Connections not yet welcomed (or given up on): the warm-up starts when it is 0.
    pending: Cell<usize>,
    /// Connections between their connect and their welcome.
    handshakes: Cell<usize>,
    request: Vec<u8>,
    reply: Vec<u8>,
    limit: Option<u64>,
}

fn main() {
    let args = Args::parse();
    if !args.to.ip().is_loopback() {
        eprintln!(
            "tokio-load: {} is not a loopback address; tokio-load only targets this machine",
            args.to
        );
        std::process::exit(2);
    }
    if args.line_bytes < 2 || args.connections == 0 {
        eprintln!("tokio-load: --line-bytes must be at least 2 and --connections at least 1");
        std::process::exit(2);
    }
    let _ = limits::raise_nofile();
    // The request: printable bytes that differ, so a wrong reversal shows; and its reply.
    let request: Vec<u8> = (0..args.line_bytes - 1)
        .map(|i| b'a' + (i % 26) as u8)
        .chain(std::iter::once(b'\n'))
        .collect();
    let mut reply: Vec<u8> = request[..request.len() - 1].iter().rev().copied().collect();
    reply.push(b'\n');
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("tokio-load: tokio runtime: {e}");
            std::process::exit(1)
        });
    let shared = Rc::new(Shared {
        phase: Cell::new(Phase::Warm),
        counts: RefCell::default(),
        hist: RefCell::new(Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()),
        pending: Cell::new(args.connections + args.idle),
        handshakes: Cell::new(0),
        request,
        reply,
        limit: args.requests,
    });
    let local = tokio::task::LocalSet::new();
    let (secs, server_cpu_ns) = local.block_on(&runtime, run(&args, shared.clone()));
    report(&args, &shared, secs, server_cpu_ns);
    // The tasks still blocked on a reply are not waited for.
    std::process::exit(0)
}

/// Starts the connections, runs the warm-up and the measured window, and returns the
/// window's length and the server's CPU time in it.
async fn run(args: &Args, shared: Rc<Shared>) -> (f64, u64) {
    let start = Instant::now();
    let hard_stop = start + Duration::from_secs_f64(args.max_time);
    for i in 0..args.connections + args.idle {
        let idle = i < args.idle;
        tokio::task::spawn_local(connection(
            args.to,
            idle,
            Duration::from_secs_f64(args.connect_timeout),
            Duration::from_secs_f64(args.reply_timeout),
            shared.clone(),
        ));
        // Let the runtime start it (and its connect) before the next.
        tokio::task::yield_now().await;
    }
    // Wait for every welcome (or every give-up), then warm up.
    while shared.pending.get() > 0 && Instant::now() < hard_stop {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let cpu_from = args.server_pid.map(cpu_ns);
    let from = Instant::now();
    shared.phase.set(Phase::Measure);
    let until = from + Duration::from_secs_f64(args.duration);
    loop {
        let now = Instant::now();
        let enough = shared
            .limit
            .is_some_and(|n| shared.counts.borrow().requests >= n);
        if enough || now >= hard_stop || (shared.limit.is_none() && now >= until) {
            break;
        }
        let step = if shared.limit.is_some() {
            Duration::from_millis(2)
        } else {
            until.saturating_duration_since(now).min(hard_stop - now)
        };
        tokio::time::sleep(step).await;
    }
    shared.phase.set(Phase::Done);
    let secs = from.elapsed().as_secs_f64();
    let cpu = match (cpu_from, args.server_pid) {
        (Some(from), Some(pid)) => cpu_ns(pid).saturating_sub(from),
        _ => 0,
    };
    (secs, cpu)
}

/// One connection's life: connect, the welcome, then requests until the run is done.
async fn connection(
    to: SocketAddr,
    idle: bool,
    connect_timeout: Duration,
    reply_timeout: Duration,
    shared: Rc<Shared>,
) {
    while shared.handshakes.get() >= MAX_HANDSHAKES {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    shared.handshakes.set(shared.handshakes.get() + 1);
    let welcomed = timeout(connect_timeout, async {
        let mut stream = TcpStream::connect(to).await?;
        stream.set_nodelay(true)?;
        let mut welcome = [0u8; WELCOME.len()];
        stream.read_exact(&mut welcome).await?;
        Ok::<_, std::io::Error>((stream, welcome == WELCOME))
    })
    .await;
    shared.handshakes.set(shared.handshakes.get() - 1);
    shared.pending.set(shared.pending.get() - 1);
    let mut stream = match welcomed {
        Ok(Ok((stream, true))) => stream,
        // Not the welcome: a server that turns clients away (select's `error: server full`).
        Ok(Ok((_, false))) => return shared.counts.borrow_mut().rejected += 1,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return shared.counts.borrow_mut().refused += 1
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return shared.counts.borrow_mut().closed += 1
        }
        Ok(Err(_)) => return shared.counts.borrow_mut().errors += 1,
        Err(_) => return shared.counts.borrow_mut().starved += 1,
    };
    shared.counts.borrow_mut().welcomed += 1;
    if idle {
        shared.counts.borrow_mut().idle += 1;
        // Hold the connection, silent, until the run ends.
        while shared.phase.get() != Phase::Done {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        return;
    }
    let mut got = vec![0u8; shared.reply.len()];
    while shared.phase.get() != Phase::Done {
        let sent = Instant::now();
        let round = timeout(reply_timeout, async {
            stream.write_all(&shared.request).await?;
            stream.read_exact(&mut got).await
        })
        .await;
        let mut counts = shared.counts.borrow_mut();
        match round {
            Ok(Ok(_)) if got == shared.reply => {}
            Ok(Ok(_)) => return counts.errors += 1,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return counts.closed += 1
            }
            Ok(Err(_)) => return counts.errors += 1,
            Err(_) => return counts.timeouts += 1,
        }
        match shared.phase.get() {
            Phase::Warm => counts.warm_requests += 1,
            Phase::Measure => {
                counts.requests += 1;
                let ns = sent.elapsed().as_nanos() as u64;
                let _ = shared.hist.borrow_mut().record(ns.max(1));
            }
            Phase::Done => {}
        }
    }
}

fn report(args: &Args, shared: &Shared, secs: f64, server_cpu_ns: u64) {
    let counts = shared.counts.borrow();
    let hist = shared.hist.borrow();
    let rps = if secs > 0.0 {
        counts.requests as f64 / secs
    } else {
        0.0
    };
    let us = |ns: u64| ns as f64 / 1000.0;
    let q = |p: f64| {
        if hist.is_empty() {
            0.0
        } else {
            us(hist.value_at_quantile(p))
        }
    };
    let per_req = if counts.requests > 0 {
        server_cpu_ns as f64 / 1e3 / counts.requests as f64
    } else {
        0.0
    };
    let fields: Vec<(&str, String)> = vec![
        ("connections", args.connections.to_string()),
        ("welcomed", counts.welcomed.to_string()),
        ("idle", counts.idle.to_string()),
        ("requests", counts.requests.to_string()),
        ("warm_requests", counts.warm_requests.to_string()),
        ("seconds", format!("{secs:.3}")),
        ("rps", format!("{rps:.0}")),
        ("p50_us", format!("{:.1}", q(0.50))),
        ("p99_us", format!("{:.1}", q(0.99))),
        ("max_us", format!("{:.1}", us(hist.max()))),
        (
            "server_cpu_ms",
            format!("{:.1}", server_cpu_ns as f64 / 1e6),
        ),
        ("cpu_us_per_req", format!("{per_req:.3}")),
        ("errors", counts.errors.to_string()),
        ("refused", counts.refused.to_string()),
        ("rejected", counts.rejected.to_string()),
        ("closed", counts.closed.to_string()),
        ("timeouts", counts.timeouts.to_string()),
        ("starved", counts.starved.to_string()),
    ];
    if args.json {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        println!("{{{}}}", body.join(","));
    } else {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("{}", body.join(" "));
    }
}
