//! The hands-on half of the workshop, behind make:
//!
//! ```text
//! workshop new NN         make exercise-NN's copy: my-exercises/NN/, the first time only
//! workshop check NN       make check-NN: build my-exercises/NN/, walk its steps (exit 0/1/2)
//!     [--bin EXE]         check EXE instead (a lesson: the reference), no build
//!     [--dir DIR] [--target-dir DIR] [--debug]   another crate, target folder, profile
//!     [--wait SECS]       the bound on each wait for the server (default 5)
//!     [-- ARGS]           arguments for the server (a lesson's --mistake NAME)
//! workshop progress       make check: a line per exercise
//! workshop hint NN        make hint-NN
//! workshop reset NN       make reset-NN: asks, keeps the old copy beside
//! workshop gen [--check]  regenerate the pristine skeletons from the lessons
//! workshop crate NN DIR   the pristine skeleton as a crate at DIR
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use workshop::check;
use workshop::learner::{self, root};

fn usage() -> ExitCode {
    eprintln!("usage: workshop new|check|hint|reset NN, workshop progress, workshop gen [--check]");
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
                        println!("{file} regenerated");
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
        "check" => {
            let Some(ex) = known(&nn) else {
                return ExitCode::from(2);
            };
            let opt = |name: &str| {
                args.iter()
                    .position(|a| a == name)
                    .and_then(|i| args.get(i + 1))
                    .map(PathBuf::from)
            };
            let release = !args.iter().any(|a| a == "--debug");
            if let Some(secs) = opt("--wait").and_then(|w| w.to_str()?.parse::<f64>().ok()) {
                workshop::client::set_wait(std::time::Duration::from_secs_f64(secs));
            }
            let reference = opt("--bin");
            let exe = match &reference {
                Some(exe) => exe.clone(),
                None => {
                    let dir = opt("--dir").unwrap_or_else(|| learner::learner_dir(&root, &nn));
                    if !dir.join("Cargo.toml").exists() {
                        eprintln!("no exercise {nn} yet: `make exercise-{nn}` creates it");
                        return ExitCode::from(2);
                    }
                    let target = opt("--target-dir").unwrap_or_else(|| root.join("target"));
                    match learner::build(&dir, &nn, &target, release) {
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
            let walk = learner::check_binary(&ex, &exe, &server_args);
            if reference.is_none() && opt("--dir").is_none() {
                learner::record(&root, &nn, &walk);
            }
            match &walk.failed {
                None => {
                    println!("all {} steps passed", walk.total);
                    ExitCode::SUCCESS
                }
                Some(_) => ExitCode::FAILURE,
            }
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
            let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
            match learner::reset(&root, &nn, interactive) {
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
