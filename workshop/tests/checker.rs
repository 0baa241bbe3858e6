//! The exercises and their checker, end to end through the `workshop` binary (what `make
//! check-NN` runs): the drift check, every pristine skeleton built and stopped at its first
//! step by its todo!(), every reference lesson passing, the model checks failing against
//! servers of the wrong model, and bad programs (a compile error, a panic, a hang, no banner)
//! reported within a bounded time, with no process left behind.
//!
//! The lessons' binaries come from `make test`'s `cargo build --workspace --bins`; the
//! skeletons build into the project's target/ with its Cargo.lock, so the dependencies the
//! lessons built are reused and each skeleton compiles in seconds.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use workshop::learner;

mod common;

fn root() -> PathBuf {
    learner::root()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// A lesson's debug binary, built first if `make test` has not.
fn lesson(nn: &str) -> PathBuf {
    let exe = target_dir().join("debug").join(format!("lesson-{nn}"));
    if !exe.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "sockets-by-hand", "--bin"])
            .arg(format!("lesson-{nn}"))
            .current_dir(root())
            .status()
            .expect("cargo build");
        assert!(status.success(), "building lesson-{nn}");
    }
    exe
}

/// A scratch folder of this test's own under target/.
fn scratch(name: &str) -> PathBuf {
    let dir = target_dir().join("exercises-test").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn workshop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_workshop"))
        .args(args)
        .output()
        .expect("run workshop")
}

/// `workshop check NN --dir DIR --target-dir TARGET --debug [--wait SECS]`.
fn check_dir(nn: &str, dir: &Path, target: &Path, wait: Option<&str>) -> Output {
    let (dir, target) = (dir.to_str().unwrap(), target.to_str().unwrap());
    let mut args = vec!["check", nn, "--dir", dir, "--target-dir", target, "--debug"];
    args.extend(wait.map(|w| ["--wait", w]).into_iter().flatten());
    workshop(&args)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `workshop check NN --bin EXE [--wait S] [-- args]`: (exit code, stdout).
fn check_bin(nn: &str, exe: &Path, wait: &str, server_args: &[&str]) -> (i32, String) {
    let mut args = vec!["check", nn, "--bin", exe.to_str().unwrap(), "--wait", wait];
    if !server_args.is_empty() {
        args.push("--");
        args.extend_from_slice(server_args);
    }
    let out = workshop(&args);
    (out.status.code().unwrap_or(-1), text(&out))
}

/// Processes whose executable is `exe` (a copy of this test's own, so no other test's).
fn running(exe: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == exe) {
            out.push(pid);
        }
    }
    out
}

/// A copy of lesson `nn` under a name of this test's own.
fn private_copy(nn: &str, name: &str) -> PathBuf {
    let dir = scratch(name);
    let exe = dir.join(format!("lesson-{nn}"));
    fs::copy(lesson(nn), &exe).unwrap();
    exe
}

/// Gives the crate at `dir` (package and binary `exercise-NN`) a name of its own: crates
/// of one name built into one target folder share cargo's fingerprint, and a learner's
/// my-exercises/NN must never be taken for a test's copy, nor the other way round.
fn rename_crate(dir: &Path, nn: &str, name: &str) {
    let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let renamed = manifest.replace(&format!("\"exercise-{nn}\""), &format!("\"{name}\""));
    assert_ne!(manifest, renamed, "the manifest names exercise-{nn}");
    fs::write(dir.join("Cargo.toml"), renamed).unwrap();
}

#[test]
fn skeletons_are_their_lessons_with_the_gaps_cut_out() {
    let stale = learner::regenerate(&root(), true).expect("every spec matches its lesson");
    assert!(
        stale.is_empty(),
        "stale skeletons (make regen-skeletons): {stale:?}"
    );
}

/// Where each untouched skeleton stops, and the todo!() it names.
const FIRST_FAILURES: &[(&str, &str, &str)] = &[
    (
        "00",
        "piped lines come back, then it exits",
        "the pollfd array",
    ),
    ("01", "starts on port 0 and prints its banner", "socket(2)"),
    ("02", "greets a client and closes", "accept(2)"),
    ("03", "welcome, and q closes", "accept(2)"),
    ("05", "welcome, and q closes", "pthread_create(3)"),
    (
        "04",
        "starts on port 0 and prints its banner",
        "sigaction(2): SIGCHLD",
    ),
    ("06", "starts on port 0 and prints its banner", "fcntl(2)"),
    ("07", "welcome, and q closes", "FD_SET"),
    ("08", "welcome, and q closes", "poll(2)"),
    (
        "09",
        "starts on port 0 and prints its banner",
        "fcntl(2) F_SETOWN",
    ),
    ("10", "welcome, and q closes", "epoll_create1(2)"),
    (
        "13",
        "the greeting: method 0x00",
        "the Redis socket in the poll set",
    ),
    ("14", "CONNECT, and bytes relayed both ways", "pipe2(2)"),
    (
        "12",
        "CONNECT, and bytes relayed both ways",
        "write(2) flow.pending()",
    ),
    (
        "16",
        "UDP ASSOCIATE, and a datagram there and back",
        "recvfrom(2) one datagram",
    ),
    (
        "17",
        "SIGHUP: the successor takes the listener and serves",
        "sendmsg(2) on link",
    ),
    (
        "11",
        "welcome, and q closes",
        "IORING_OP_ACCEPT on the listener",
    ),
    (
        "15",
        "starts on port 0 and prints its banner",
        "give buffer bid back",
    ),
    (
        "18",
        "starts on port 0 and prints its banner",
        "socket(2): AddressFamily::Packet",
    ),
];

#[test]
fn every_pristine_skeleton_compiles_and_stops_at_its_first_todo() {
    let target = target_dir();
    let exercises: Vec<&str> = workshop::check::exercises().iter().map(|e| e.nn).collect();
    assert_eq!(
        exercises.len(),
        FIRST_FAILURES.len(),
        "a first failure per exercise"
    );
    let failed = common::four_at_a_time(FIRST_FAILURES, |(nn, step, call)| {
        let dir = scratch(&format!("skeleton-{nn}"));
        let made = workshop(&["crate", nn, dir.to_str().unwrap()]);
        if !made.status.success() {
            return vec![format!(
                "exercise {nn}: {}",
                String::from_utf8_lossy(&made.stderr)
            )];
        }
        rename_crate(&dir, nn, &format!("skeleton-{nn}"));
        let out = check_dir(nn, &dir, &target, None);
        let stdout = text(&out);
        if out.status.code() != Some(1) {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return vec![format!(
                "exercise {nn}: {:?}, not 1:\n{stdout}{stderr}",
                out.status
            )];
        }
        let fail = stdout.lines().find(|l| l.contains("FAIL")).unwrap_or("");
        let mut wrong = Vec::new();
        if !fail.ends_with(step) {
            wrong.push(format!(
                "exercise {nn} failed at {fail:?}, not {step:?}:\n{stdout}"
            ));
        }
        if !(stdout.contains("reached a todo!() at src/") && stdout.contains(&format!("\"{call}")))
        {
            wrong.push(format!(
                "exercise {nn}'s failure does not quote its todo!() ({call}):\n{stdout}"
            ));
        }
        if !stdout.contains(&format!("`make hint-{nn}` lists the todo!()s left")) {
            wrong.push(format!(
                "exercise {nn}'s hint does not name its number:\n{stdout}"
            ));
        }
        wrong
    });
    let failed: Vec<String> = failed.into_iter().flatten().collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Each skeleton with its gaps filled as the lesson fills them passes every step: cutting
/// the mistakes out and the gaps' surroundings leave a working server.
#[test]
fn every_skeleton_filled_as_its_lesson_passes_every_step() {
    let target = target_dir();
    let exercises = workshop::check::exercises();
    let failed = common::four_at_a_time(&exercises, |ex| {
        let dir = scratch(&format!("solved-{}", ex.nn));
        learner::write_crate_as(&root(), ex.nn, &dir, root().to_str().unwrap(), true).unwrap();
        rename_crate(&dir, ex.nn, &format!("solved-{}", ex.nn));
        let out = check_dir(ex.nn, &dir, &target, Some("10"));
        (out.status.code() != Some(0)).then(|| {
            let stderr = String::from_utf8_lossy(&out.stderr);
            format!("{}: {:?}:\n{}{stderr}", ex.nn, out.status, text(&out))
        })
    });
    let failed: Vec<String> = failed.into_iter().flatten().collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn every_reference_lesson_passes_every_step() {
    for ex in workshop::check::exercises() {
        let (code, out) = check_bin(ex.nn, &lesson(ex.nn), "10", &[]);
        let total = ex.steps.len() + 1;
        assert_eq!(code, 0, "lesson {}:\n{out}", ex.nn);
        assert!(out.contains(&format!("all {total} steps passed")), "{out}");
        assert_eq!(out.matches("  ok  ").count(), total, "{out}");
    }
}

/// Exercise 02: lesson 01 (no loop) and a leaked fd fail, naming what they are.
#[test]
fn the_serial_hello_fails_one_client_and_exit_and_a_leaked_fd() {
    // Lesson 01 is lesson 02 without the loop: one client, then exit.
    let (code, out) = check_bin("02", &lesson("01"), "2", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL   3. ten clients, one after another"),
        "{out}"
    );
    assert!(out.contains("lesson 01's model"), "{out}");
    let (code, out) = check_bin("02", &lesson("02"), "2", &["--mistake", "leak-fd"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL   2. greets a client and closes"),
        "{out}"
    );
    assert!(out.contains("--mistake leak-fd"), "{out}");
}

#[test]
fn a_serial_server_fails_the_fork_exercise_naming_its_model() {
    let (code, out) = check_bin("04", &lesson("03"), "2", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL   8. three clients at once"), "{out}");
    assert!(out.contains("a serial server, lesson 03's model"), "{out}");
}

/// Exercise 05: a serial server fails naming its model; no limit fails too.
#[test]
fn a_serial_server_and_no_limit_fail_the_thread_exercise() {
    let (code, out) = check_bin("05", &lesson("03"), "2", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL   8. three clients at once"), "{out}");
    assert!(out.contains("a serial server, lesson 03's model"), "{out}");
    let (code, out) = check_bin("05", &lesson("05"), "2", &["--mistake", "unbounded"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  11. --max-clients 2"), "{out}");
    assert!(out.contains("--mistake unbounded"), "{out}");
}

#[test]
fn threads_fail_the_poll_exercise_naming_their_model() {
    let (code, out) = check_bin("08", &lesson("05"), "2", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL   9. model: one thread waits only in poll"),
        "{out}"
    );
    assert!(
        out.contains("found: a thread per client (lesson 05's model)"),
        "{out}"
    );
}

/// Exercise 06: EAGAIN taken for an error fails the idle client (poll: tests/variants.rs).
#[test]
fn no_eagain_fails_the_nonblocking_exercise() {
    let (code, out) = check_bin("06", &lesson("06"), "2", &["--mistake", "no-eagain"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL   2. an idle client is kept"), "{out}");
    assert!(out.contains("--mistake no-eagain"), "{out}");
}

/// Exercise 09: poll fails the model, named (no F_SETSIG: tests/variants.rs).
#[test]
fn poll_fails_the_signal_exercise_naming_its_model() {
    let (code, out) = check_bin("09", &lesson("08"), "2", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL   9. model: one thread waits only in sigtimedwait"),
        "{out}"
    );
    assert!(
        out.contains("found: a poll loop (lesson 08's model)"),
        "{out}"
    );
}

/// Exercise 13: an allowlist that lets everyone in while Redis is down fails, naming the
/// mistake (one that dials Redis for every check: tests/variants.rs).
#[test]
fn fail_open_fails_the_allowlist_exercise_naming_the_mistake() {
    let (code, out) = check_bin("13", &lesson("13"), "2", &["--mistake", "fail-open"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL   8. Redis down"), "{out}");
    assert!(out.contains("--mistake fail-open"), "{out}");
}

#[test]
fn poll_fails_the_epoll_exercise_naming_its_model() {
    let (code, out) = check_bin("10", &lesson("08"), "2", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("found: a poll loop (lesson 08's model)"),
        "{out}"
    );
}

#[test]
fn zombies_fail_the_fork_exercise_and_the_hint_names_the_mistake() {
    let exe = private_copy("04", "reap-once");
    for mistake in ["reap-once", "no-reap"] {
        let (code, out) = check_bin("04", &exe, "2", &["--mistake", mistake]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("FAIL  11. model: no zombie when ten leave at once"),
            "{out}"
        );
        assert!(
            out.contains("zombie(s)") && out.contains("--mistake reap-once"),
            "{out}"
        );
    }
    // The checker killed and reaped the server and every child it forked.
    assert_eq!(running(&exe), Vec::<u32>::new(), "processes left behind");
}

#[test]
fn a_parent_that_keeps_the_connection_fails_at_the_eof_step() {
    let (code, out) = check_bin(
        "04",
        &lesson("04"),
        "2",
        &["--mistake", "parent-keeps-conn"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  10. a client's EOF ends its child"),
        "{out}"
    );
    assert!(out.contains("--mistake parent-keeps-conn"), "{out}");
}

#[test]
fn the_relays_mistakes_fail_at_their_steps_and_the_hints_name_them() {
    let cases = [
        ("no-half-close", "FAIL   6. a half-close is relayed"),
        ("success-always", "FAIL   7. a refused target: REP 0x05"),
        (
            "blocking-write",
            "FAIL   8. a client that stops reading stalls no other",
        ),
    ];
    for (mistake, step) in cases {
        let (code, out) = check_bin("12", &lesson("12"), "3", &["--mistake", mistake]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(step), "{mistake}: {out}");
        assert!(
            out.contains(&format!("--mistake {mistake}")),
            "{mistake}: {out}"
        );
    }
}

/// Lesson 03's close mistakes: `plain-close` fails at the lingering close, `no-drain`
/// (shutdown, then close at once) passes it and fails at the slow reader.
#[test]
fn the_close_mistakes_fail_at_their_steps_and_the_hints_name_them() {
    let cases = [
        (
            "plain-close",
            "FAIL  10. the lingering close keeps the last replies",
        ),
        (
            "no-drain",
            "FAIL  11. a slow reader behind a small receive buffer gets every reply",
        ),
    ];
    for (mistake, step) in cases {
        let (code, out) = check_bin("03", &lesson("03"), "3", &["--mistake", mistake]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(step), "{mistake}: {out}");
        assert!(
            out.contains(&format!("--mistake {mistake}")),
            "{mistake}: {out}"
        );
    }
}

#[test]
fn a_blocking_socket_fails_where_the_model_needs_o_nonblock() {
    // Lesson 08 itself, but accepting its clients without SOCK_NONBLOCK.
    let dir = scratch("blocking-08");
    let source = fs::read_to_string(root().join("lessons/08-poll.rs")).unwrap();
    let nonblocking = "accept4(listener, SockFlag::SOCK_NONBLOCK)";
    assert!(
        source.contains(nonblocking),
        "lesson 08 changed its accept4"
    );
    let blocking = source.replace(nonblocking, "accept4(listener, SockFlag::empty())");
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(dir.join("src/main.rs"), blocking).unwrap();
    let manifest = workshop::skeleton::manifest("08", root().to_str().unwrap())
        .replace("exercise-08", "blocking-08");
    fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    fs::copy(root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let target = target_dir();
    let out = check_dir("08", &dir, &target, Some("3"));
    let stdout = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("FAIL  10. model: non-blocking sockets"),
        "{stdout}"
    );
    assert!(stdout.contains("blocking socket fds"), "{stdout}");
}

#[test]
fn a_compile_error_is_exit_2_with_the_compilers_message_only() {
    let dir = scratch("broken-03");
    let made = workshop(&["crate", "03", dir.to_str().unwrap()]);
    assert!(made.status.success());
    rename_crate(&dir, "03", "broken-03");
    let main = dir.join("src/main.rs");
    let mut source = fs::read_to_string(&main).unwrap();
    source.push_str("\nfn broken() -> u8 { \"not a number\" }\n");
    fs::write(&main, source).unwrap();
    let target = target_dir();
    let out = check_dir("03", &dir, &target, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("error[E0308]: mismatched types"),
        "{stderr}"
    );
    assert!(text(&out).is_empty(), "no step ran: {}", text(&out));
}

/// A shell script as the server: `body` runs with the checker's `-p 0` ignored.
fn script(name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch(name);
    let path = dir.join("server.sh");
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn no_banner_fails_the_first_step_within_the_wait() {
    let exe = script("silent", "exec sleep 60");
    let (code, out) = check_bin("03", &exe, "1", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL   1. starts on port 0 and prints its banner"),
        "{out}"
    );
    assert!(out.contains("no banner on stderr within 1 s"), "{out}");
    assert!(running(Path::new("/bin/sleep")).iter().all(|pid| {
        // no sleep of ours: the group was killed (another test's sleep has another parent)
        fs::read_to_string(format!("/proc/{pid}/cmdline")).map_or(true, |c| !c.contains("60"))
    }));
}

#[test]
fn a_panic_is_reported_at_the_step_it_breaks() {
    let body = "echo 'lesson 03 · x · listening on 127.0.0.1:9 · y' >&2\n\
                printf \"\\nthread 'main' panicked at src/serve.rs:7:9:\\nindex out of bounds\\n\" >&2\n\
                exit 101";
    let exe = script("panics", body);
    let (code, out) = check_bin("03", &exe, "1", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL   2. welcome, and q closes"), "{out}");
    assert!(
        out.contains("the server panicked at src/serve.rs:7:9: index out of bounds"),
        "{out}"
    );
}

#[test]
fn a_server_that_never_answers_fails_within_the_wait() {
    // A listener that never accepts: the kernel completes the handshake, nobody answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body =
        format!("echo 'lesson 03 · x · listening on 127.0.0.1:{port} · y' >&2\nexec sleep 60");
    let exe = script("hangs", &body);
    let (code, out) = check_bin("03", &exe, "1", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL   2. welcome, and q closes"), "{out}");
    assert!(out.contains("got      nothing within 1 s"), "{out}");
}

#[test]
fn progress_hint_and_a_reset_that_asks_first() {
    // A project root of this test's own: my-exercises/ with exercise 03 started.
    let fake = scratch("fake-root");
    let mine = fake.join("my-exercises/03");
    fs::create_dir_all(mine.join("src")).unwrap();
    let work = "fn main() {\n    let n: usize = todo!(\"read(2) into buf\");\n}\n";
    fs::write(mine.join("src/main.rs"), work).unwrap();
    fs::write(mine.join("Cargo.toml"), "[package]\n").unwrap();
    let failure = workshop::client::Failure::new("x", "y", "z").hint("read the bytes");
    let walk = workshop::check::Walk {
        passed: 1,
        total: 11,
        failed: Some(("welcome, and q closes".into(), failure)),
    };
    learner::record(&fake, "03", &walk);
    let table = learner::progress_table(&fake);
    assert!(
        table.contains("1/11 steps, stuck at: welcome, and q closes"),
        "{table}"
    );
    assert!(table.contains("not started (make exercise-04)"), "{table}");
    let hint = learner::hint(&fake, "03");
    assert!(hint.contains("hint: read the bytes"), "{hint}");
    assert!(hint.contains("src/main.rs:2: read(2) into buf"), "{hint}");
    // Without a terminal to ask on, reset refuses, and the learner's work is untouched.
    let refused = learner::reset(&fake, "03", None).unwrap_err();
    assert!(refused.contains("asks first"), "{refused}");
    assert_eq!(fs::read_to_string(mine.join("src/main.rs")).unwrap(), work);
    // "n" changes nothing.
    assert_eq!(
        learner::reset(&fake, "03", Some("n\n")).unwrap(),
        "nothing changed"
    );
    assert_eq!(fs::read_to_string(mine.join("src/main.rs")).unwrap(), work);
}

#[test]
fn resets_keep_every_old_copy_and_forget_the_pass() {
    // A project root of this test's own, its lessons and specs the project's.
    let fake = scratch("reset-root");
    for dir in ["lessons", "exercises"] {
        std::os::unix::fs::symlink(root().join(dir), fake.join(dir)).unwrap();
    }
    let mine = fake.join("my-exercises/01");
    fs::create_dir_all(fake.join("my-exercises/03")).unwrap();
    let walk = |failed: bool| workshop::check::Walk {
        passed: 4,
        total: 4,
        failed: failed.then(|| ("x".into(), workshop::client::Failure::default())),
    };
    let mut solved = Vec::new();
    assert!(learner::new(&fake, "01").unwrap().contains("created"));
    for round in 1..=2 {
        let work = format!("// my solution, round {round}\n");
        fs::write(mine.join("src/main.rs"), &work).unwrap();
        solved.push(work);
        learner::record(&fake, "01", &walk(false));
        learner::record(&fake, "03", &walk(true));
        assert!(learner::progress_table(&fake).contains("passed (4/4 steps)"));
        assert!(
            learner::reset_question(&fake, "01").contains(&format!("my-exercises/01.old.{round}/"))
        );
        let said = learner::reset(&fake, "01", Some("y\n")).unwrap();
        assert!(
            said.contains(&format!("my-exercises/01.old.{round}/")),
            "{said}"
        );
        // The fresh copy is the skeleton; the pass is forgotten, the other exercise's line kept.
        let fresh = fs::read_to_string(mine.join("src/main.rs")).unwrap();
        assert!(
            fresh.starts_with("// Generated from lessons/01-hello.rs"),
            "{fresh}"
        );
        let table = learner::progress_table(&fake);
        assert!(
            table.contains("started, not checked yet (make check-01)"),
            "{table}"
        );
        assert!(table.contains("stuck at: x (make hint-03)"), "{table}");
    }
    // Both solved copies are there, each under its own name.
    for (k, work) in solved.iter().enumerate() {
        let old = fake.join(format!("my-exercises/01.old.{}/src/main.rs", k + 1));
        assert_eq!(&fs::read_to_string(old).unwrap(), work);
    }
}

#[test]
fn watch_checks_again_after_a_save() {
    let dir = scratch("watch-01");
    let made = workshop(&["crate", "01", dir.to_str().unwrap()]);
    assert!(made.status.success());
    rename_crate(&dir, "01", "watch-01");
    let (d, t) = (dir.to_str().unwrap(), target_dir());
    let mut child = Command::new(env!("CARGO_BIN_EXE_workshop"))
        .args(["watch", "01", "--dir", d, "--target-dir"])
        .arg(&t)
        .args(["--debug", "--rounds", "2", "--wait", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Never a hang: the watcher is killed after a minute whatever happens.
    let pid = child.id() as i32;
    let guard = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        // SAFETY: kill(2) on our own child (gone by then if all went well: ESRCH).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        out.push_str(&line);
        out.push('\n');
        if line.starts_with("watching ") {
            break;
        }
    }
    assert!(out.contains("FAIL   1. starts on port 0"), "{out}");
    // A save: the file's modification time moves.
    let main = dir.join("src/main.rs");
    let text = fs::read_to_string(&main).unwrap();
    fs::write(&main, text + "// saved\n").unwrap();
    for line in lines {
        out.push_str(&line.unwrap());
        out.push('\n');
    }
    let status = child.wait().unwrap();
    drop(guard);
    assert_eq!(out.matches("check 01 · ").count(), 2, "{out}");
    assert_eq!(status.code(), Some(1), "{out}");
}

#[test]
fn a_todo_reached_prints_one_line_whatever_rust_backtrace_says() {
    let dir = scratch("todo-line-01");
    let made = workshop(&["crate", "01", dir.to_str().unwrap()]);
    assert!(made.status.success());
    rename_crate(&dir, "01", "todo-line-01");
    let exe = learner::build(&dir, "01", &target_dir(), false).expect("the skeleton builds");
    for backtrace in ["0", "1", "full"] {
        // Exercise 01's first gap is its socket(2): reached at once, before any banner.
        let out = Command::new(&exe)
            .args(["-p", "0"])
            .env("RUST_BACKTRACE", backtrace)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(101), "{stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "RUST_BACKTRACE={backtrace}: {stderr}"
        );
        assert!(
            stderr.starts_with("todo!() reached at src/main.rs:")
                && stderr.contains(": socket(2): "),
            "{stderr}"
        );
    }
}

/// The io_uring lessons' mistakes: a recv buffer shared by every client (11) fails at the
/// burst, a multishot recv never armed again (15) at the burst against 4 buffers, which the
/// step starts itself.
#[test]
fn the_ring_mistakes_fail_at_their_bursts_and_the_hints_name_them() {
    let cases = [
        (
            "11",
            "reuse-buffer",
            "FAIL   9. 32 clients' lines in one batch, each answered with its own",
        ),
        (
            "15",
            "no-rearm",
            "FAIL  11. with --bufs 4, 32 clients' lines in one batch are all answered",
        ),
    ];
    for (nn, mistake, step) in cases {
        let (code, out) = check_bin(nn, &lesson(nn), "3", &["--mistake", mistake]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(step), "{mistake}: {out}");
        assert!(
            out.contains(&format!("--mistake {mistake}")),
            "{mistake}: {out}"
        );
    }
}

/// A server that reached a todo!() will say nothing more: a wait on it ends as soon as its log
/// says so, with that reason, instead of running out its whole bound (5 s), which is what a
/// learner's `make check-NN` on an untouched skeleton used to sit through.
#[test]
fn a_wait_ends_once_the_server_reached_a_todo() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    workshop::client::watch_server(Some(flag.clone()));
    let mut conn = workshop::client::Conn::open(listener.local_addr().unwrap()).unwrap();
    let (_held, _) = listener.accept().unwrap(); // accepted, and silent
    let raised = flag.clone();
    let todo = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        raised.store(true, Ordering::SeqCst);
    });
    let failure = conn.expect(b"hello\n").unwrap_err();
    todo.join().unwrap();
    workshop::client::watch_server(None);
    assert!(
        failure.got.contains("the server stopped at a todo!()"),
        "{failure}"
    );
}
