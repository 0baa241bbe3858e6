//! bench-socks' network set-up, in a short run against "direct" only: cubic in a private
//! network namespace by default, or one line saying why not (the sysctl or the module, and
//! the command that would allow it) and a run under the host's default, named in the report.

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A short `bench-socks ARGS` against "direct" only: its output and its report.
fn bench(args: &[&str]) -> (Output, String) {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("bench-socks-test-{}-{call}", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bench-socks"))
        .args(["--only", "direct", "--seconds", "0.1", "--idle", "5"])
        .args(["--slices", "1", "--out"])
        .arg(&dir)
        .args(args)
        .output()
        .expect("run bench-socks");
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{out:?}");
    (out, report)
}

fn sysctl(name: &str) -> String {
    let path = format!("/proc/sys/net/ipv4/{name}");
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

/// The one line of `stderr` that contains `needle` (exactly one says why).
fn one_line<'a>(stderr: &'a str, needle: &str) -> &'a str {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(lines.len(), 1, "one line says why:\n{stderr}");
    lines[0]
}

/// The report's network note (the "Machine: …" line).
fn network(report: &str) -> &str {
    report
        .lines()
        .find(|l| l.starts_with("Machine:"))
        .expect("a Machine line")
}

/// By default: cubic, where this host allows a namespace to select it; otherwise one line
/// naming net.ipv4.tcp_allowed_congestion_control and the sysctl command, and the host's
/// default in the report. The host's own setting is left as it was.
#[test]
fn cubic_by_default_or_one_line_why_not() {
    let host = sysctl("tcp_congestion_control");
    let allowed = sysctl("tcp_allowed_congestion_control");
    let (out, report) = bench(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = network(&report);
    if allowed.split_whitespace().any(|cc| cc == "cubic") {
        assert!(
            line.contains("private network namespace, TCP congestion control cubic"),
            "{line}"
        );
    } else {
        let why = one_line(&stderr, "tcp_allowed_congestion_control");
        assert!(why.contains("sudo sysctl -w"), "{why}");
        let under = format!("TCP congestion control {host}, not cubic");
        assert!(line.contains(&under), "{line}");
    }
    assert_eq!(
        sysctl("tcp_congestion_control"),
        host,
        "the host's default changed"
    );
    assert_eq!(sysctl("tcp_allowed_congestion_control"), allowed);
}

/// A congestion control this kernel does not have: one line naming the module to load, and
/// the run goes on under the host's default, which the report names.
#[test]
fn unknown_congestion_control_runs_under_the_host_default() {
    let host = sysctl("tcp_congestion_control");
    let (out, report) = bench(&["--congestion", "nosuchcc"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let why = one_line(&stderr, "no congestion control nosuchcc");
    assert!(why.contains("modprobe tcp_nosuchcc"), "{why}");
    let line = network(&report);
    assert!(
        line.contains(&format!("TCP congestion control {host}, not nosuchcc")),
        "{line}"
    );
}
