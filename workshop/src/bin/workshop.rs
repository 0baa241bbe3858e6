//! The hands-on half of the workshop, behind make:
//!
//! ```text
//! workshop new NN         make exercise-NN's copy: my-exercises/NN/, the first time only
//! workshop check NN       make check-NN: build my-exercises/NN/, walk its steps (exit 0/1/2)
//!     [--bin EXE]         check EXE instead (a lesson: the reference), no build
//!     [--dir DIR] [--target-dir DIR] [--debug]   another crate, target folder, profile
//!     [--wait SECS]       the bound on each wait for the server (default 5)
//!     [-- ARGS]           arguments for the server (a lesson's --mistake NAME)
//! workshop watch NN       make watch-NN (make check-NN WATCH=1): check, then again on every save
//! workshop progress       make check: a line per exercise
//! workshop hint NN        make hint-NN
//! workshop reset NN       make reset-NN: asks, keeps the old copy as my-exercises/NN.old.K
//! workshop gen [--check]  regenerate the tracked skeletons (exercises/NN/src/) from the lessons
//! workshop crate NN DIR   a fresh skeleton as a crate at DIR
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use workshop::check;
use workshop::learner::{self, root};

fn usage() -> ExitCode {
    eprintln!(
        "usage: workshop new|check|watch|hint|reset NN, workshop progress, workshop gen [--check]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = root();
    let Some(cmd) = args.first() else {
        return usage();
    };
    let nn = args.get(1).cloned().unwrap_or_default();
    let known = |nn: &str| {
        let ex = check::exercise(nn);
        if ex.is_none() {
            let all: Vec<&str> = check::exercises().iter().map(|e| e.nn).collect::<Vec<_>>();
            eprintln!("no exercise {nn:?}: there are {}", all.join(", "));
        }
        ex
    };
    match cmd.as_str() {
        "gen" => {
            let only_check = args.iter().any(|a| a == "--check");
            match learner::regenerate(&root, only_check) {
                Ok(changed) if only_check && !changed.is_empty() => {
                    eprintln!(
                        "stale skeletons (run `make regen-skeletons`): {}",
                        changed.join(", ")
                    );
                    ExitCode::FAILURE
                }
                Ok(changed) => {
                    for file in changed {
                        println!("updated: {file}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("workshop: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        "new" => {
            let Some(_) = known(&nn) else {
                return ExitCode::from(2);
            };
            match learner::new(&root, &nn) {
                Ok(msg) => {
                    eprintln!("{msg}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("workshop: {e}");
                    ExitCode::from(2)
                }
            }
        }
        "check" | "watch" => {
            let Some(ex) = known(&nn) else {
                return ExitCode::from(2);
            };
            if cmd == "check" {
                return check(&root, &ex, &args);
            }
            watch(&root, &ex, &args)
        }
        "crate" => {
            // workshop crate NN DIR: the pristine skeleton as a crate at DIR (tests, CI).
            let Some(dir) = args.get(2) else {
                return usage();
            };
            let root_ref = root.display().to_string();
            match learner::write_crate(&root, &nn, std::path::Path::new(dir), &root_ref) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("workshop: {e}");
                    ExitCode::from(2)
                }
            }
        }
        "progress" => {
            print!("{}", learner::progress_table(&root));
            ExitCode::SUCCESS
        }
        "hint" => {
            let Some(_) = known(&nn) else {
                return ExitCode::from(2);
            };
            print!("{}", learner::hint(&root, &nn));
            ExitCode::SUCCESS
        }
        "reset" => {
            let Some(_) = known(&nn) else {
                return ExitCode::from(2);
            };
            let answer = learner::ask_reset(&root, &nn);
            match learner::reset(&root, &nn, answer.as_deref()) {
                Ok(msg) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("workshop: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => usage(),
    }
}

/// The value after option `name`.
fn opt(args: &[String], name: &str) -> Option<PathBuf> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
}

/// The crate checked: `--dir`, else my-exercises/NN/.
fn crate_dir(root: &Path, nn: &str, args: &[String]) -> PathBuf {
    opt(args, "--dir").unwrap_or_else(|| learner::learner_dir(root, nn))
}

/// `workshop check NN …`: build, walk the steps, record the outcome (exit 0, 1 or 2).
fn check(root: &Path, ex: &check::Exercise, args: &[String]) -> ExitCode {
    let nn = ex.nn;
    let release = !args.iter().any(|a| a == "--debug");
    if let Some(secs) = opt(args, "--wait").and_then(|w| w.to_str()?.parse::<f64>().ok()) {
        workshop::client::set_wait(Duration::from_secs_f64(secs));
    }
    let reference = opt(args, "--bin");
    let exe = match &reference {
        Some(exe) => exe.clone(),
        None => {
            let dir = crate_dir(root, nn, args);
            if !dir.join("Cargo.toml").exists() {
                eprintln!("no exercise {nn} yet: `make exercise-{nn}` creates it");
                return ExitCode::from(2);
            }
            let target = opt(args, "--target-dir").unwrap_or_else(|| root.join("target"));
            match learner::build(&dir, nn, &target, release) {
                Ok(exe) => exe,
                Err(message) => {
                    eprint!("{message}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    // After `--`: arguments for the server (a lesson's `--mistake NAME`).
    let server_args: Vec<String> = args
        .iter()
        .skip_while(|a| *a != "--")
        .skip(1)
        .cloned()
        .collect();
    let walk = match reference {
        Some(_) => learner::check_binary(ex, &exe, &server_args),
        None => learner::check_build(ex, &exe, &server_args),
    };
    if reference.is_none() && opt(args, "--dir").is_none() {
        learner::record(root, nn, &walk);
    }
    match &walk.failed {
        None => {
            println!("all {} steps passed", walk.total);
            ExitCode::SUCCESS
        }
        Some(_) => ExitCode::FAILURE,
    }
}

/// `workshop watch NN …`: [`check`], then again after every save to the crate's files
/// (their modification times, looked at every 300 ms), until Ctrl-C or `--rounds N` checks.
fn watch(root: &Path, ex: &check::Exercise, args: &[String]) -> ExitCode {
    let dir = crate_dir(root, ex.nn, args);
    let rounds: Option<usize> = opt(args, "--rounds").and_then(|r| r.to_str()?.parse().ok());
    let shown = dir.strip_prefix(root).unwrap_or(&dir).display().to_string();
    let mut last = ExitCode::SUCCESS;
    for round in 1.. {
        let before = learner::stamp(&dir);
        last = check(root, ex, args);
        if rounds.is_some_and(|r| round >= r) {
            break;
        }
        println!("watching {shown}/ : save a file to check again (Ctrl-C stops)");
        let mut seen = before;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = learner::stamp(&dir);
            if now != seen {
                // A save may come as several writes: wait until the files hold still.
                std::thread::sleep(Duration::from_millis(200));
                if learner::stamp(&dir) == now {
                    break;
                }
                seen = now;
            }
        }
        println!();
    }
    last
}
