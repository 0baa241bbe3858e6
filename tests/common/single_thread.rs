//! Support for the single-threaded lessons' tests (06–11): starting a lesson with a given
//! RLIMIT_NOFILE, and reading select/poll rounds out of a trace.

use std::collections::HashSet;
use std::process::Command;

use super::{server_command, syscall_of, Trace};

/// `exe args -p 0`, with RLIMIT_NOFILE set to (`soft`, `hard`) in the child before exec.
pub fn nofile_command(exe: &str, args: &[&str], soft: u64, hard: u64) -> Command {
    let mut cmd = server_command(exe, args);
    let rl = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: pre_exec runs in the forked child before exec; setrlimit is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// One wake-up of an event loop in a trace: what the wait call reported ready, and the
/// fds the lesson made a call on before its next wait.
#[derive(Debug)]
pub struct Round {
    pub wait: String,
    pub ready: Vec<i32>,
    pub touched: HashSet<i32>,
    pub closes: usize,
}

/// Splits a trace into rounds at each call named in `waits` (e.g. `["poll", "ppoll"]`).
pub fn rounds(trace: &Trace, waits: &[&str]) -> Vec<Round> {
    let mut out: Vec<Round> = Vec::new();
    for line in trace.lines() {
        let Some(call) = syscall_of(line) else {
            continue;
        };
        if waits.contains(&call.as_str()) {
            out.push(Round {
                wait: line.to_string(),
                ready: ready_fds(line),
                touched: HashSet::new(),
                closes: 0,
            });
        } else if let Some(round) = out.last_mut() {
            if let Some(fd) = first_fd(line, &call) {
                // The lesson's log lines go to fd 2; they are not calls on a client.
                if fd > 2 {
                    round.touched.insert(fd);
                    round.closes += usize::from(call == "close");
                }
            }
        }
    }
    out
}

/// The fd a call's first argument names: `read(5<TCP:...>, ...` → 5.
fn first_fd(line: &str, call: &str) -> Option<i32> {
    let args = &line[line.find(&format!("{call}("))? + call.len() + 1..];
    let digits: String = args.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The fds a poll/ppoll (`= 2 ([{fd=4, revents=POLLIN}, …])`) or select/pselect6
/// (`= 2 (in [4 5], out [5])`) line reports ready; an fd ready both ways is listed once.
pub fn ready_fds(line: &str) -> Vec<i32> {
    let Some(at) = line.rfind(") = ") else {
        return Vec::new();
    };
    let result = &line[at + 4..];
    let mut fds = Vec::new();
    let mut push = |fd: &str| {
        let digits: String = fd.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(fd) = digits.parse::<i32>() {
            if !fds.contains(&fd) {
                fds.push(fd);
            }
        }
    };
    if result.contains("fd=") {
        for part in result.split("fd=").skip(1) {
            push(part);
        }
    } else {
        for set in ["in [", "out [", "exc ["] {
            if let Some(start) = result.find(set) {
                let list = &result[start + set.len()..];
                let list = &list[..list.find(']').unwrap_or(list.len())];
                list.split(' ').for_each(&mut push);
            }
        }
    }
    fds
}
