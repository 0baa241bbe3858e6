//! What the two echo load clients (loadgen on epoll, tokio-load with one task per
//! connection) share apart from their I/O model: the flags, the checks on them, the
//! request and its expected reply, the counts, the server's CPU time over the measured
//! window and the one-line report that `compare` parses.

use std::net::SocketAddr;

use hdrhistogram::Histogram;

use crate::procfs::cpu_ns;

/// The line an echo lesson greets each client with.
pub const WELCOME: &[u8] = b"Welcome buddy!\n";
/// Connections opened but not yet welcomed, at most: a listen backlog of 128 is never
/// overrun by a SYN flood of our own making (a dropped SYN is retried only after a second,
/// and would look like a slow server).
pub const MAX_HANDSHAKES: usize = 64;

// The flags of both clients (flattened into each binary's own parser, which keeps its
// name and its about text).
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The echo server, as IP:PORT (loopback only).
    #[arg(long, default_value = "127.0.0.1:23333")]
    pub to: SocketAddr,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 100)]
    pub connections: usize,
    /// Bytes per request line, the newline included.
    #[arg(long, default_value_t = 32)]
    pub line_bytes: usize,
    /// Seconds of warm-up before measuring (counted from the last welcome).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Stop after this many measured requests instead (for syscall counting).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Seconds a connection may take to be welcomed before it counts as starved.
    #[arg(long, default_value_t = 3.0)]
    pub connect_timeout: f64,
    /// Seconds a request may wait for its reply before it counts as a timeout.
    #[arg(long, default_value_t = 5.0)]
    pub reply_timeout: f64,
    /// Hard bound on the whole run, in seconds.
    #[arg(long, default_value_t = 120.0)]
    pub max_time: f64,
    /// Extra connections that take the welcome and then sit idle (opened first): what an
    /// O(connections) wait such as poll pays for and epoll does not.
    #[arg(long, default_value_t = 0)]
    pub idle: usize,
    /// The server's pid: report its CPU time over the measured window (`server_cpu_ms`) and
    /// per request answered in it (`cpu_us_per_req`), from /proc (tools::procfs::cpu_ns).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Print JSON instead of key=value.
    #[arg(long)]
    pub json: bool,
}

impl LoadArgs {
    /// Exits with status 2 and a message naming the client `name` when the target is not
    /// on loopback or the line or the connection count makes no sense.
    pub fn check(&self, name: &str) {
        if !self.to.ip().is_loopback() {
            eprintln!(
                "{name}: {} is not a loopback address; {name} only targets this machine",
                self.to
            );
            std::process::exit(2);
        }
        if self.line_bytes < 2 || self.connections == 0 {
            eprintln!("{name}: --line-bytes must be at least 2 and --connections at least 1");
            std::process::exit(2);
        }
    }

    /// The request, printable bytes that differ so that a wrong reversal shows, and the
    /// reply it must get back.
    pub fn request_and_reply(&self) -> (Vec<u8>, Vec<u8>) {
        let request: Vec<u8> = (0..self.line_bytes - 1)
            .map(|i| b'a' + (i % 26) as u8)
            .chain(std::iter::once(b'\n'))
            .collect();
        let mut reply: Vec<u8> = request[..request.len() - 1].iter().rev().copied().collect();
        reply.push(b'\n');
        (request, reply)
    }

    /// The server's CPU time now (`--server-pid`), when the measured window opens.
    pub fn server_cpu_from(&self) -> Option<u64> {
        self.server_pid.map(cpu_ns)
    }

    /// The server's CPU time spent since `from` (0 without `--server-pid`).
    pub fn server_cpu_since(&self, from: Option<u64>) -> u64 {
        match (from, self.server_pid) {
            (Some(from), Some(pid)) => cpu_ns(pid).saturating_sub(from),
            _ => 0,
        }
    }
}

/// The latencies, in nanoseconds, from 1 ns to a minute, three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

/// What became of the connections and the requests.
#[derive(Default)]
pub struct Counts {
    pub welcomed: u64,
    pub idle: u64,
    pub requests: u64,
    pub warm_requests: u64,
    pub refused: u64,
    pub rejected: u64,
    pub closed: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub starved: u64,
}

/// Prints the run's one line on stdout: `key=value` pairs, or JSON with `--json`.
pub fn report(
    args: &LoadArgs,
    counts: &Counts,
    hist: &Histogram<u64>,
    secs: f64,
    server_cpu_ns: u64,
) {
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
    let max = if hist.is_empty() { 0.0 } else { us(hist.max()) };
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
        ("max_us", format!("{max:.1}")),
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
