//! provoke: the clients that make a lesson's classic mistake happen, and the short scripted
//! scenarios for the mistakes no client can provoke (Stevens' failure first: the broken
//! server, the client that breaks it, then the fix).
//!
//! Run a lesson with `--mistake NAME` in one terminal and `make provoke-NN` in another: each
//! kind prints ONE line saying what it did and what it saw, and exits 0 when the server
//! behaved, 1 when the failure showed. A binary of its own, not a mode of lesson 00: lesson
//! 00 is a client a learner reads in one sitting, and this is a test instrument.
//!
//! Modules: [`peer`] (a client connection with deadlines on every read), [`procs`] (what
//! /proc says about the server: pid, zombies, threads, CPU), [`echo`] (the kinds against the
//! reverse-echo lessons 03–11), [`socks`] (against the SOCKS5 relays 12–14), [`scenario`]
//! (restart, sigpending, fail-open, frozen-store: they start the lesson themselves), [`dns`] (the
//! private resolver of the blocking-dns scenario) and [`capture`] (lesson 18's, each in a
//! network namespace of its own).

mod capture;
mod dns;
mod echo;
mod peer;
mod procs;
mod scenario;
mod socks;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// What a provocation saw: whether the server behaved, and the one line that says so.
pub struct Outcome {
    pub ok: bool,
    pub line: String,
}

impl Outcome {
    pub fn new(ok: bool, line: impl Into<String>) -> Outcome {
        Outcome {
            ok,
            line: line.into(),
        }
    }
}

/// `Err` is "could not even try" (no server, no lesson binary): exit 2.
pub type Provoked = Result<Outcome, String>;

#[derive(Parser)]
#[command(
    name = "provoke",
    about = "The clients that provoke each lesson's classic mistake (make provoke-NN).",
    long_about = "The clients that provoke each lesson's classic mistake. Run a lesson with \
        --mistake NAME in one terminal and `make provoke-NN` (or `provoke KIND`) in another: \
        each kind prints one line, what it did and what it observed. Every read has a \
        deadline and every kind is bounded in count.",
    after_help = "Exit status: 0 when the server behaved (correct replies, no failure seen), \
        1 when the failure was observed, 2 when it could not try (no server at the address, \
        a lesson binary missing, a usage error)."
)]
struct Args {
    /// The server: an echo lesson (03–11, default 127.0.0.1:23333) or a SOCKS5 lesson
    /// (12–14, default 127.0.0.1:1080). Scenarios start their own lesson and ignore it.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    to: Option<String>,

    /// Seconds one answer may take before it counts as never (every read has a deadline).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 3.0)]
    patience: f64,

    #[command(subcommand)]
    kind: Kind,
}

#[derive(Subcommand)]
enum Kind {
    /// Lines sent one byte per write: each must come back whole and reversed.
    Split,
    /// Many lines in one write: one reply per line.
    Coalesced {
        #[arg(default_value_t = 5)]
        lines: usize,
    },
    /// 1,000 lines, q and 1 MB more in one write: every reply must arrive before a clean EOF
    /// (a plain close with unread input resets and loses them).
    QuitThenJunk {
        #[arg(long, default_value_t = 5)]
        tries: usize,
    },
    /// N clients connect at once, each sends a line, then all send q at once: every one
    /// must see its reply and EOF, and the server must leave no zombie children.
    Many {
        #[arg(default_value_t = 20)]
        n: usize,
        /// Also a failure: the server ran more threads than this with the N clients on
        /// (a thread per client without a limit).
        #[arg(long, value_name = "M")]
        max_threads: Option<usize>,
    },
    /// N clients send half a line and dawdle: a fresh client must still be served, and the
    /// slow ones answered when their lines end.
    Slowloris {
        #[arg(default_value_t = 10)]
        n: usize,
    },
    /// Lines, then shutdown(SHUT_WR): every reply must still arrive, then EOF.
    HalfClose,
    /// Connections reset (SO_LINGER 0) mid-line: the server must serve the next client.
    Rst {
        #[arg(default_value_t = 5)]
        n: usize,
    },
    /// Connections until the server stops answering or N: how many were answered, and is
    /// a fresh client served once they leave?
    Flood {
        #[arg(default_value_t = 2000)]
        n: usize,
    },
    /// Writes lines and never reads: the server must stop reading from it (bounded) and
    /// keep serving others.
    SlowReader {
        /// MiB to try to push without reading.
        #[arg(long, default_value_t = 64)]
        mib: usize,
    },
    /// N clients send a line each at the same moment, ROUNDS times: every client must get
    /// every reply (a burst runs a small provided-buffer ring dry: ENOBUFS).
    Burst {
        #[arg(default_value_t = 64)]
        n: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Idle clients for a few seconds: the server's CPU time meanwhile (a spinning loop
    /// shows in ticks, as in top).
    Idle {
        #[arg(long, default_value_t = 2)]
        seconds: u64,
    },
    /// SOCKS5 CONNECT to a loopback port where nothing listens: the reply must be 0x05.
    SocksRefused,
    /// Through the proxy to a target that answers only after EOF: send BYTES, half-close,
    /// and the whole answer (BYTES long) must still come back. With --tries K, again with
    /// BYTES + 512 KiB, + 1 MiB, …: bytes still inside the relay at the EOF show at some size.
    SocksHalfClose {
        #[arg(long, default_value_t = 100_000)]
        bytes: usize,
        #[arg(long, default_value_t = 1)]
        tries: usize,
    },
    /// Scenario (lesson 01): run it, connect once, run it again at once on the same port.
    Restart {
        #[arg(long, value_name = "NAME")]
        mistake: Option<String>,
    },
    /// Scenario (lesson 09): under RLIMIT_SIGPENDING 8 (prlimit --sigpending=8), N clients
    /// at once: every one must be answered.
    Sigpending {
        #[arg(long, value_name = "NAME")]
        mistake: Option<String>,
        #[arg(default_value_t = 100)]
        n: usize,
    },
    /// Scenario (lesson 12, in a namespace of its own): a slow name through a private
    /// resolver; a fast CONNECT must not wait behind it.
    BlockingDns {
        #[arg(long, value_name = "NAME")]
        mistake: Option<String>,
    },
    /// Scenario (lesson 18, in a namespace of its own): the capture's output carried over a
    /// loopback TCP connection; it must see none of that connection's packets.
    CaptureEcho {
        #[arg(long, value_name = "NAME")]
        mistake: Option<String>,
    },
    /// Scenario (lesson 18): one IPv6 connection; no line may be cut in the TCP header.
    CaptureIpv6 {
        #[arg(long, value_name = "NAME")]
        mistake: Option<String>,
    },
    /// Scenario (lesson 18): 10,000 datagrams at once; the kernel must drop none (the ring,
    /// or with --mistake one-per-call the recvfrom loop with a poll per frame).
    CaptureBurst {
        #[arg(long, value_name = "NAME")]
        mistake: Option<String>,
    },
    /// Scenario (lesson 13): a private redis-server, then stopped: a client not on the
    /// allowlist must still be refused.
    FailOpen {
        #[arg(long, value_name = "NAME")]
        mistake: Option<String>,
    },
    /// Scenario (lesson 13): a private redis-server, then frozen (SIGSTOP): a client must be
    /// refused 0x01 within the proxy's Redis deadline and a second, never let in.
    FrozenStore {
        #[arg(long, value_name = "NAME")]
        mistake: Option<String>,
    },
}

/// `--to`, or the default for the kind of server.
fn target(to: &Option<String>, default: &str) -> Result<SocketAddr, String> {
    let text = to.as_deref().unwrap_or(default);
    text.to_socket_addrs()
        .map_err(|e| format!("--to {text}: {e}"))?
        .next()
        .ok_or_else(|| format!("--to {text}: no address"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    peer::set_patience(args.patience);
    let (name, outcome) = match &args.kind {
        Kind::Restart { mistake } => ("restart", scenario::restart(mistake.as_deref())),
        Kind::Sigpending { mistake, n } => {
            ("sigpending", scenario::sigpending(mistake.as_deref(), *n))
        }
        Kind::BlockingDns { mistake } => ("blocking-dns", dns::scenario(mistake.as_deref())),
        Kind::CaptureEcho { mistake } => (
            "capture-echo",
            capture::scenario("capture-echo", mistake.as_deref()),
        ),
        Kind::CaptureIpv6 { mistake } => (
            "capture-ipv6",
            capture::scenario("capture-ipv6", mistake.as_deref()),
        ),
        Kind::CaptureBurst { mistake } => (
            "capture-burst",
            capture::scenario("capture-burst", mistake.as_deref()),
        ),
        Kind::FailOpen { mistake } => ("fail-open", scenario::fail_open(mistake.as_deref())),
        Kind::FrozenStore { mistake } => {
            ("frozen-store", scenario::frozen_store(mistake.as_deref()))
        }
        kind @ (Kind::SocksRefused | Kind::SocksHalfClose { .. }) => {
            let proxy = match target(&args.to, "127.0.0.1:1080") {
                Ok(a) => a,
                Err(e) => return usage(&e),
            };
            match kind {
                Kind::SocksRefused => ("socks-refused", socks::refused(proxy)),
                Kind::SocksHalfClose { bytes, tries } => (
                    "socks-half-close",
                    socks::half_close_tries(proxy, *bytes, *tries),
                ),
                _ => unreachable!("matched above"),
            }
        }
        kind => {
            let addr = match target(&args.to, "127.0.0.1:23333") {
                Ok(a) => a,
                Err(e) => return usage(&e),
            };
            match kind {
                Kind::Split => ("split", echo::split(addr)),
                Kind::Coalesced { lines } => ("coalesced", echo::coalesced(addr, *lines)),
                Kind::QuitThenJunk { tries } => {
                    ("quit-then-junk", echo::quit_then_junk(addr, *tries))
                }
                Kind::Many { n, max_threads } => ("many", echo::many(addr, *n, *max_threads)),
                Kind::Slowloris { n } => ("slowloris", echo::slowloris(addr, *n)),
                Kind::HalfClose => ("half-close", echo::half_close(addr)),
                Kind::Rst { n } => ("rst", echo::rst(addr, *n)),
                Kind::Flood { n } => ("flood", echo::flood(addr, *n)),
                Kind::SlowReader { mib } => ("slow-reader", echo::slow_reader(addr, *mib)),
                Kind::Idle { seconds } => ("idle", echo::idle(addr, *seconds)),
                Kind::Burst { n, rounds } => ("burst", echo::burst(addr, *n, *rounds)),
                _ => unreachable!("matched above"),
            }
        }
    };
    match outcome {
        Ok(o) => {
            let verdict = if o.ok { "ok" } else { "FAILURE SEEN" };
            println!("provoke {name}: {} [{verdict}]", o.line);
            ExitCode::from(if o.ok { 0 } else { 1 })
        }
        Err(e) => usage(&format!("provoke {name}: could not try: {e}")),
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("{msg}");
    ExitCode::from(2)
}
