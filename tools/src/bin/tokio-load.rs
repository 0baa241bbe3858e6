//! tokio-load: the second load of `make compare` (not a lesson), one task per connection.
//!
//! loadgen drives every connection from one epoll loop; this client is what an independent
//! Rust user would write instead: a current-thread tokio runtime, one task per connection,
//! each reading the welcome, then sending a fixed-size line and awaiting its reversed reply
//! (checked byte for byte), again and again. The two clients load a server differently
//! (how many requests arrive per wake-up, how the client's own CPU time is spent), and a
//! server's cost per request can differ between them; `make compare` reports both.
//!
//! Same flags and output as loadgen, both from `tools::load` (one line of `key=value` pairs,
//! or JSON with `--json`), so the two are interchangeable. Bounded in time (`--max-time`); loopback targets only.

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
use tools::load::{self, Counts, LoadArgs, MAX_HANDSHAKES, WELCOME};

/// Echo-protocol load: one tokio task per connection on a current-thread runtime, every
/// reply checked, latency in an HDR histogram. Loopback targets only.
#[derive(Parser, Debug)]
#[command(name = "tokio-load")]
struct Args {
    #[command(flatten)]
    load: LoadArgs,
}

/// Where the run is: requests are counted as warm-up, then measured, then the tasks stop.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Warm,
    Measure,
    Done,
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
    let args = Args::parse().load;
    args.check("tokio-load");
    let _ = limits::raise_nofile();
    let (request, reply) = args.request_and_reply();
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
        hist: RefCell::new(load::histogram()),
        pending: Cell::new(args.connections + args.idle),
        handshakes: Cell::new(0),
        request,
        reply,
        limit: args.requests,
    });
    let local = tokio::task::LocalSet::new();
    let (secs, server_cpu_ns) = local.block_on(&runtime, run(&args, shared.clone()));
    load::report(
        &args,
        &shared.counts.borrow(),
        &shared.hist.borrow(),
        secs,
        server_cpu_ns,
    );
    // The tasks still blocked on a reply are not waited for.
    std::process::exit(0)
}

/// Starts the connections, runs the warm-up and the measured window, and returns the
/// window's length and the server's CPU time in it.
async fn run(args: &LoadArgs, shared: Rc<Shared>) -> (f64, u64) {
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
    let cpu_from = args.server_cpu_from();
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
    (secs, args.server_cpu_since(cpu_from))
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
