//! udp-load: datagrams through a SOCKS5 UDP ASSOCIATE (lesson 16, danted, …) to a sink of its
//! own, as fast as it can or at `--rate`, for `--seconds` and at most `--max` datagrams; it
//! prints what was sent, what arrived, the rate and the loss. Loopback only. `make
//! bench-socks` runs the same load (tools/src/udpload.rs) for its UDP rows.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tools::udpload::{run, Load};

#[derive(Parser)]
#[command(name = "udp-load")]
struct Args {
    /// The SOCKS5 server (loopback); without it, straight to the sink.
    #[arg(long, value_name = "HOST:PORT")]
    via: Option<SocketAddr>,
    /// Payload bytes per datagram.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Seconds of sending (at most 60).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Datagrams at most.
    #[arg(long, default_value_t = 10_000_000)]
    max: u64,
    /// Datagrams per second offered (default: as fast as sendmmsg goes).
    #[arg(long)]
    rate: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let load = Load {
        size: args.size,
        duration: Duration::from_secs_f64(args.seconds.clamp(0.1, 60.0)),
        max: args.max,
        rate: args.rate,
    };
    match run(args.via, &load) {
        Ok(o) => {
            println!(
                "udp-load: {} B datagrams, {:.2} s: sent {} ({:.0}/s), received {} ({:.0}/s), loss {:.2} %",
                load.size,
                o.seconds,
                o.sent,
                o.offered(),
                o.received,
                o.rate(),
                o.loss() * 100.0
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("udp-load: {e}");
            ExitCode::FAILURE
        }
    }
}
