//! The comparison tools: the two load clients' reply checks (loadgen, tokio-load), the compare harness in its quickest mode,
//! and bench-socks against "direct". (Their numbers are measured by `make compare` and
//! `make bench-socks`, never asserted here.)

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::thread;

fn fields(stdout: &[u8]) -> HashMap<String, f64> {
    String::from_utf8_lossy(stdout)
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// Runs `cmd` to its end and checks that it succeeded (its stderr is the failure message).
fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a report-writing tool (`compare`, `bench-socks`) with `args` and `--out dir`, checks
/// that it succeeded, and returns its report.md.
fn report_of(exe: &str, args: &[&str], dir: &std::path::Path) -> String {
    run_ok(Command::new(exe).args(args).arg("--out").arg(dir));
    std::fs::read_to_string(dir.join("report.md")).unwrap()
}

/// Both load clients of `make compare`.
const LOADS: [&str; 2] = [exe!("loadgen"), exe!("tokio-load")];

/// A deliberately wrong echo server: it welcomes, then sends each line back unreversed.
#[test]
fn loadgen_reports_wrong_replies_as_errors() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let _ = out.write_all(b"Welcome buddy!\n");
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if out.write_all(format!("{line}\n").as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    for load in LOADS {
        let out = run_ok(Command::new(load).args([
            "--to",
            &addr.to_string(),
            "-c",
            "3",
            "--warmup",
            "0",
            "--duration",
            "0.3",
        ]));
        let f = fields(&out.stdout);
        assert_eq!(f["welcomed"], 3.0, "{load}: {f:?}");
        assert_eq!(
            f["errors"], 3.0,
            "{load}: every connection's first reply is wrong: {f:?}"
        );
        assert_eq!(f["requests"], 0.0, "{load}: {f:?}");
    }
}

#[test]
fn loadgen_counts_real_replies_and_refuses_other_networks() {
    let server = common::Server::start(&tools::lesson_bin("lesson-05"), &[]);
    let serial = common::Server::start(&tools::lesson_bin("lesson-03"), &[]);
    for load in LOADS {
        let out = Command::new(load)
            .args([
                "--to",
                &server.addr.to_string(),
                "-c",
                "4",
                "--warmup",
                "0.1",
                "--duration",
                "0.3",
            ])
            .output()
            .unwrap();
        let f = fields(&out.stdout);
        assert!(
            f["requests"] > 0.0 && f["errors"] == 0.0 && f["welcomed"] == 4.0,
            "{load}: {f:?}"
        );
        // A serial server starves all clients but one, and the load says so.
        let out = Command::new(load)
            .args([
                "--to",
                &serial.addr.to_string(),
                "-c",
                "3",
                "--warmup",
                "0",
                "--duration",
                "0.2",
                "--connect-timeout",
                "0.3",
            ])
            .output()
            .unwrap();
        let f = fields(&out.stdout);
        assert_eq!((f["welcomed"], f["starved"]), (1.0, 2.0), "{load}: {f:?}");
        // Only loopback.
        let out = Command::new(load)
            .args(["--to", "192.0.2.1:9"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{load}");
    }
}

#[test]
fn compare_quickest_run_writes_reports() {
    let dir = std::env::temp_dir().join(format!("compare-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let args = [
        "--only",
        "03,tokio",
        "--levels",
        "1",
        "--duration",
        "0.3",
        "--warmup",
        "0.1",
        "--strace-requests",
        "300",
        "--idle",
        "200",
    ];
    let md = report_of(exe!("compare"), &args, &dir);
    for label in ["03 serial", "tokio (current-thread)"] {
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| {label} | 1 |")))
            .unwrap_or_else(|| panic!("no row for {label}:\n{md}"));
        let rps: f64 = row.split('|').nth(3).unwrap().trim().parse().unwrap();
        assert!(rps > 0.0, "{row}");
        // The server's CPU per request over the measured window (loadgen --server-pid).
        let cpu: f64 = row.split('|').nth(7).unwrap().trim().parse().unwrap();
        assert!(cpu > 0.0, "{label}: no server CPU per request: {row}");
        let per_request = md
            .lines()
            .rfind(|l| l.starts_with(&format!("| {label} |")))
            .and_then(|l| l.split('|').nth(3))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no system calls per request for {label}:\n{md}"));
        assert!(per_request > 0.5, "{label}: {per_request}");
    }
    // The idle-cost section: tokio with 100 busy clients beside 200 idle ones.
    let idle_row = md
        .lines()
        .skip_while(|l| !l.starts_with("## What idle connections cost"))
        .find(|l| l.starts_with("| tokio (current-thread) |"))
        .unwrap_or_else(|| panic!("no idle-cost row:\n{md}"));
    let rps: f64 = idle_row.split('|').nth(3).unwrap().trim().parse().unwrap();
    assert!(rps > 0.0 && idle_row.ends_with("| — |"), "{idle_row}");
    let svg = std::fs::read_to_string(dir.join("report.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("tokio (current-thread)"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_socks_direct_row() {
    let dir = std::env::temp_dir().join(format!("bench-socks-smoke-{}", std::process::id()));
    let args = ["--only", "direct", "--seconds", "0.2", "--idle", "10"];
    let md = report_of(exe!("bench-socks"), &args, &dir);
    let row = md
        .lines()
        .find(|l| l.starts_with("| direct |"))
        .unwrap_or_else(|| panic!("{md}"));
    let upload: f64 = row.split('|').nth(2).unwrap().trim().parse().unwrap();
    assert!(upload > 0.0, "{row}");
    assert!(std::fs::read_to_string(dir.join("report.svg"))
        .unwrap()
        .starts_with("<svg"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--congestion NAME`: the whole run happens in a network namespace of its own whose
/// sockets get NAME (the report says what a socket made there was given, asked of the
/// socket), and the host's own setting is left as it was.
#[test]
fn bench_socks_congestion_runs_in_a_namespace_of_its_own() {
    let sysctl = "/proc/sys/net/ipv4/tcp_congestion_control";
    let host = std::fs::read_to_string(sysctl).unwrap();
    let host = host.trim();
    // reno is always built in; cubic is the kernel's usual default.
    let want = if host == "reno" { "cubic" } else { "reno" };
    let dir = std::env::temp_dir().join(format!("bench-socks-cc-{}", std::process::id()));
    let args = ["--only", "direct", "--seconds", "0.2", "--idle", "10"];
    let md = report_of(
        exe!("bench-socks"),
        &[&args[..], &["--congestion", want]].concat(),
        &dir,
    );
    let line = format!(
        "network: a private network namespace, TCP congestion control {want} (this host's default: {host})"
    );
    assert!(md.contains(&line), "wanted {line:?} in\n{md}");
    assert!(md.lines().any(|l| l.starts_with("| direct |")), "{md}");
    assert_eq!(std::fs::read_to_string(sysctl).unwrap().trim(), host);
    let _ = std::fs::remove_dir_all(&dir);
}
