//! The soak at a smaller count, against the lesson binaries of this build (target/debug
//! under `cargo nextest run --workspace`): every check of `make soak`, recovery times
//! reported in the report, never asserted.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `soak ARGS --report <tmp>`; its output and its report.
fn soak(args: &[&str]) -> (Output, String) {
    // One folder per call: the tests run at the same time.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("soak-test-{}-{call}", std::process::id()));
    let report = dir.join("report.md");
    let out = Command::new(env!("CARGO_BIN_EXE_soak"))
        .args(args)
        .arg("--report")
        .arg(&report)
        .output()
        .expect("run soak");
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    (out, text)
}

/// `soak --quick` with 300 connections per server and 50 resetting clients; lesson 13
/// through three Redis restarts.
#[test]
fn quick_soak_passes_every_check() {
    let (out, text) = soak(&["--quick", "--connections", "300", "--resets", "50"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (row, n) in [
        ("lesson 04 (fork)", 300),
        ("lesson 05 (threads)", 300),
        ("lesson 08 (poll)", 300),
        ("lesson 10 (epoll)", 300),
        ("lesson 12 (SOCKS5 relay)", 300),
        ("lesson 12 (resets mid-transfer)", 50),
    ] {
        let start = format!("| {row} | {n} / {n} | 0 |");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&start) && l.ends_with("| pass |")),
            "no passing row for {row}:\n{text}\n{stderr}"
        );
    }
    let restarts = text
        .lines()
        .filter(|l| ["| 1 |", "| 2 |", "| 3 |"].iter().any(|p| l.starts_with(p)))
        .filter(|l| !l.contains("never"))
        .count();
    assert_eq!(restarts, 3, "three Redis restarts, each recovered:\n{text}");
    let checks_13 = text
        .lines()
        .find_map(|l| l.strip_prefix("Checks: "))
        .unwrap_or("none");
    assert!(
        checks_13 == "pass",
        "lesson 13: {checks_13}\n{text}\n{stderr}"
    );
    assert!(
        out.status.success() && text.contains("Verdict: **PASS**"),
        "{text}\n{stderr}"
    );
}

/// Lesson 04 with its classic mistake switched on (`--no-reap`): the soak sees the zombies,
/// says so, and fails.
#[test]
fn soak_catches_zombies() {
    let (out, text) = soak(&[
        "--only",
        "04",
        "--connections",
        "30",
        "--lesson-args=--no-reap",
    ]);
    assert!(
        !out.status.success(),
        "soak passed a server that leaves zombies:\n{text}"
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("| lesson 04 (fork) | 30 / 30 "))
        .unwrap_or_else(|| panic!("no row for lesson 04:\n{text}"));
    assert!(row.contains("FAIL: no zombie"), "{row}");
    assert!(text.contains("Verdict: **FAIL**"));
}
