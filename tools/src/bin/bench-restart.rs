//! bench-restart: the restart row of `make bench-socks`. Lesson 17 restarted (SIGHUP) N times
//! at a fixed rate of new connections, each a full echo round trip, for the fd-passing road
//! and for the two mistakes, with the same load: how many connections were refused, reset,
//! cut short or stalled. Where this process may make a network namespace (root, and a kernel
//! with net.ipv4.tcp_migrate_req), the SO_REUSEPORT road once more inside one, with
//! tcp_migrate_req=1: the kernel's own fix.
//!
//! It drives the provoke binary's hot-restart scenario (provoke/src/restart.rs), found beside
//! this one, so the bench and `make provoke-17` count the same way. Loopback only; bounded.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Parser;

/// The restart row: connections lost through restarts, per road.
#[derive(Parser, Debug)]
#[command(name = "bench-restart")]
struct Args {
    /// Restarts per road.
    #[arg(long, default_value_t = 10)]
    restarts: usize,
    /// New connections per second, the same for every road.
    #[arg(long, default_value_t = 800)]
    rate: u64,
}

fn provoke() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let bin = exe.with_file_name("provoke");
    bin.exists().then_some(bin.clone()).ok_or_else(|| {
        format!(
            "{} is not built: cargo build --release -p provoke",
            bin.display()
        )
    })
}

/// One road: `provoke hot-restart` with these arguments, maybe inside `unshare -n`.
fn road(provoke: &std::path::Path, args: &Args, mistake: Option<&str>, migrate: bool) -> String {
    let mut line = vec![
        provoke.display().to_string(),
        "hot-restart".into(),
        "--restarts".into(),
        args.restarts.to_string(),
        "--rate".into(),
        args.rate.to_string(),
    ];
    if let Some(m) = mistake {
        line.extend(["--mistake".into(), m.into()]);
    }
    let out = if migrate {
        let script = format!(
            "ip link set lo up && echo 1 > /proc/sys/net/ipv4/tcp_migrate_req && {}",
            line.join(" ")
        );
        Command::new("unshare")
            .args(["-n", "sh", "-c", &script])
            .output()
    } else {
        Command::new(&line[0]).args(&line[1..]).output()
    };
    match out {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let text = text.trim();
            match text.split_once(": ") {
                Some((_, rest)) => rest.to_string(),
                None => format!("no result: {text} {}", String::from_utf8_lossy(&out.stderr)),
            }
        }
        Err(e) => format!("could not run: {e}"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let provoke = match provoke() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench-restart: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "restart row: lesson 17, {} restarts at {} new connections/s each (provoke hot-restart)",
        args.restarts, args.rate
    );
    println!("| road | result |");
    println!("|---|---|");
    let roads = [
        ("listener passed (SCM_RIGHTS)", None),
        ("--mistake close-then-bind", Some("close-then-bind")),
        ("--mistake reuseport", Some("reuseport")),
    ];
    for (name, mistake) in roads {
        println!("| {name} | {} |", road(&provoke, &args, mistake, false));
    }
    let root = unsafe { libc::geteuid() } == 0;
    let migrate = std::path::Path::new("/proc/sys/net/ipv4/tcp_migrate_req").exists();
    if root && migrate {
        let result = road(&provoke, &args, Some("reuseport"), true);
        println!("| --mistake reuseport, tcp_migrate_req=1 (own netns) | {result} |");
    } else {
        println!(
            "| --mistake reuseport, tcp_migrate_req=1 | skipped: needs root and Linux ≥ 5.14 |"
        );
    }
    ExitCode::SUCCESS
}
