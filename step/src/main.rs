//! step: run a lesson under ptrace(2) and stop before each system call it teaches. Each stop
//! shows the call decoded the way strace shows it, the lesson's source line that made it,
//! and the kernel's view of the process's sockets; Enter runs the call and shows its result
//! and what changed. `make step-01` runs lesson 01 under it.
//!
//! How it works (the way strace does): fork; the child stops itself and execs the lesson;
//! the stepper attaches with PTRACE_SEIZE (following clones, forks and execs) and resumes
//! it with PTRACE_SYSCALL, so the kernel stops it at every system call's entry and exit;
//! PTRACE_GET_SYSCALL_INFO says which and with what. While the prompt waits, every other
//! thread and process of the lesson is held with PTRACE_INTERRUPT.

mod decode;
mod diag;
mod frames;
mod kview;
mod mem;
mod tracer;

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::exit;

use clap::Parser;

/// Run COMMAND under the stepper: it stops before each system call that COMMAND's lesson
/// teaches, from the lesson's first socket() on, shows the call decoded with its source
/// line and the kernel's view of the sockets, and runs it on Enter.
///
/// At the prompt (read from /dev/tty): Enter runs one call; `c NAME` runs to the next call
/// NAME; `r` runs free, still printing; `q` ends the lesson; `?` shows this help.
#[derive(Parser)]
#[command(name = "step", override_usage = "step [OPTIONS] -- COMMAND [ARGS...]")]
struct Args {
    /// Stop only at these calls (comma-separated syscall names, e.g. accept,read,write).
    /// Given twice, the last one counts (make passes the lesson's list, STEP may narrow it).
    #[arg(
        long,
        value_delimiter = ',',
        overrides_with = "only",
        value_name = "CALLS"
    )]
    only: Option<Vec<String>>,

    /// Print every block without waiting for Enter (for scripts, tests, projecting a run).
    #[arg(long)]
    no_pause: bool,

    /// Print nothing and wait for nobody: write one line per call to FILE, tab-separated
    /// (entry and exit time in ns, pid, thread, name, the call, its result), for
    /// `make diagram-NN`.
    #[arg(long, value_name = "FILE")]
    record: Option<std::path::PathBuf>,

    /// The program to run and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// Where COMMAND would be found, as execvp looks: a path as is, a bare name in $PATH.
fn resolve(cmd: &OsString) -> Option<std::path::PathBuf> {
    let p = Path::new(cmd);
    if cmd.as_bytes().contains(&b'/') {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
}

fn main() {
    let args = Args::parse();
    let names: Vec<String> = match &args.only {
        Some(list) => list
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => decode::DEFAULT_STOPS
            .split(',')
            .map(str::to_string)
            .collect(),
    };
    let mut stops = Vec::new();
    for name in &names {
        match decode::number(name) {
            Some(nr) => stops.push(nr),
            None => {
                let known: Vec<&str> = decode::CALLS.iter().map(|c| c.1).collect();
                eprintln!(
                    "step: unknown system call name '{name}' in --only; known: {}",
                    known.join(",")
                );
                exit(2);
            }
        }
    }
    if cfg!(not(target_arch = "x86_64")) {
        eprintln!("step: this stepper decodes x86_64 system calls only");
        exit(2);
    }
    let cmd = &args.command[0];
    if resolve(cmd).is_none() {
        eprintln!(
            "step: cannot run {}: no such program (not a file{}); build it first (make step-NN builds the lesson)",
            cmd.to_string_lossy(),
            if cmd.as_bytes().contains(&b'/') { "" } else { " in $PATH" }
        );
        exit(127);
    }
    let argv: Vec<CString> = args
        .command
        .iter()
        .map(|a| {
            CString::new(a.as_bytes()).unwrap_or_else(|_| {
                eprintln!("step: an argument contains a NUL byte");
                exit(2)
            })
        })
        .collect();
    let record = match &args.record {
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("step: cannot write {}: {e}", path.display());
                exit(2);
            }
        },
        None => None,
    };
    let tty = if args.no_pause || record.is_some() {
        None
    } else {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
        {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!(
                    "step: no terminal to prompt on (/dev/tty: {e}); run it from a terminal, or with --no-pause"
                );
                exit(2);
            }
        }
    };
    exit(tracer::run(argv, stops, tty, record));
}
