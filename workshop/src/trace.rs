//! The server's calls as strace sees them, for the model steps that judge by what the
//! process does over a while rather than by one look at /proc ([`crate::model`]): a second
//! instance of the server is started under `strace -f` (as its parent, so no privilege is
//! needed), a step does its clients, and the trace is read back as [`Call`]s.
//!
//! Only the calls a step asks for are traced (`--seccomp-bpf`: every other call runs at full
//! speed). The trace is read once strace has exited, after the server is killed: strace
//! writes its file only then for sure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::client::Failure;
use crate::model;
use crate::run::{self, Server};

/// The calls a thread waits in: the multiplexers and the sleeps.
pub const WAITS: &[&str] = &[
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "nanosleep",
    "clock_nanosleep",
];

/// One call's start as strace printed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub pid: u32,
    /// Seconds since the epoch (strace -ttt).
    pub at: f64,
    pub name: String,
    /// Its arguments, split at the top-level commas.
    pub args: Vec<String>,
}

impl Call {
    /// The call as a short text: `poll([…], 4, -1)` (an array argument elided).
    pub fn show(&self) -> String {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| {
                if a.starts_with('[') && a.len() > 2 {
                    "[…]".to_string()
                } else {
                    a.clone()
                }
            })
            .collect();
        format!("{}({})", self.name, args.join(", "))
    }
}

/// A server running under strace, and where its trace goes.
pub struct Traced {
    pub server: Server,
    file: PathBuf,
}

/// Seconds since the epoch, as strace -ttt prints them.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Starts `exe args -p 0` under `strace -f`, tracing `calls`; its address read from its
/// banner, its pid the server's own (strace's child).
pub fn start(exe: &Path, args: &[String], calls: &[&str]) -> Result<Traced, Failure> {
    if Command::new("strace").arg("-V").output().is_err() {
        return Err(Failure::new(
            "(nothing: strace -V)",
            "strace installed: this step reads the server's calls with it",
            "no strace on this machine",
        )
        .hint("`make deps` installs strace (apt-get install strace)"));
    }
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("workshop-trace-{}-{n}", std::process::id()));
    let wrapper: Vec<String> = vec![
        "strace".into(),
        "-f".into(),
        "-qq".into(),
        "--seccomp-bpf".into(),
        "-ttt".into(),
        "-e".into(),
        format!("trace=/^({})$", calls.join("|")),
        "-o".into(),
        file.display().to_string(),
        "--".into(),
    ];
    let mut server = run::start_under(&wrapper, exe, args, 0)?;
    match model::children(server.pid).first() {
        Some(&pid) => server.pid = pid,
        None => {
            return Err(Failure::new(
                format!("(nothing: started {} under strace)", exe.display()),
                "the server, a child of strace",
                "no child of strace: the server is gone",
            ))
        }
    }
    Ok(Traced { server, file })
}

impl Traced {
    /// Kills the server, lets strace finish its file, and reads the calls back.
    pub fn finish(mut self) -> Vec<Call> {
        // SAFETY: kill(2) on the server we started (strace exits once it is gone).
        unsafe {
            libc::kill(self.server.pid as i32, libc::SIGKILL);
        }
        let _ = self.server.child.wait();
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        let _ = std::fs::remove_file(&self.file);
        parse(&text)
    }
}

/// The calls in a `strace -f -ttt` trace: `PID SECONDS name(args…) = …`, or `… <unfinished
/// ...>` when another thread's line came between (its arguments are whole by then). The
/// `<... name resumed>` halves, signals and exits are left out.
pub fn parse(text: &str) -> Vec<Call> {
    let mut out = Vec::new();
    for line in text.lines() {
        // strace pads the pid column (`123   1.5 poll(…`): split at runs of spaces.
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some((at, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let (Ok(pid), Ok(at)) = (pid.parse::<u32>(), at.parse::<f64>()) else {
            continue;
        };
        let Some(open) = rest.find('(') else {
            continue;
        };
        let name = &rest[..open];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let body = &rest[open + 1..];
        let body = match body.find(" <unfinished ...>") {
            Some(at) => &body[..at],
            // strace pads before its ` = RESULT`: `…)        = 0`.
            None => body.rsplit_once(" = ").map_or(body, |(args, _)| {
                let args = args.trim_end();
                args.strip_suffix(')').unwrap_or(args)
            }),
        };
        out.push(Call {
            pid,
            at,
            name: name.to_string(),
            args: split_args(body),
        });
    }
    out
}

/// `a, [b, c], {d=1, e=2}` → `a`, `[b, c]`, `{d=1, e=2}`: commas inside brackets, braces,
/// parentheses or quotes do not split.
fn split_args(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut escaped) = (0i32, false, false);
    let mut current = String::new();
    for ch in body.chars() {
        if quoted {
            current.push(ch);
            match (escaped, ch) {
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => escaped = false,
            }
            continue;
        }
        match ch {
            '"' => quoted = true,
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(ch);
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

/// How many fds a poll or ppoll call watches (its second argument); None for other calls.
pub fn nfds(call: &Call) -> Option<usize> {
    match call.name.as_str() {
        "poll" | "ppoll" => call.args.get(1)?.parse().ok(),
        _ => None,
    }
}

/// `calls` grouped by their short text, most frequent first: `poll([], 0, 2) ×247`.
pub fn summary(calls: &[&Call]) -> String {
    let mut groups: Vec<(String, usize)> = Vec::new();
    for call in calls {
        let text = call.show();
        match groups.iter_mut().find(|(t, _)| *t == text) {
            Some((_, n)) => *n += 1,
            None => groups.push((text, 1)),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.1));
    let shown: Vec<String> = groups
        .iter()
        .take(3)
        .map(|(t, n)| format!("{t} ×{n}"))
        .collect();
    let more = groups.len().saturating_sub(3);
    if more > 0 {
        format!("{} and {more} other kind(s)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_their_arguments_are_read_from_a_trace() {
        let text = "\
101   1.5 poll([{fd=3, events=POLLIN}, {fd=4, events=POLLIN}], 2, -1 <unfinished ...>
102 1.6 clock_nanosleep(CLOCK_REALTIME, 0, {tv_sec=0, tv_nsec=2000000}, NULL) = 0
101 1.7 <... poll resumed>)              = 1 ([{fd=3, revents=POLLIN}])
101 1.8 poll([], 0, 2)                   = 0 (Timeout)
101 1.9 epoll_wait(5, [], 1024, 0)       = 0
101 2.0 --- SIGINT {si_signo=SIGINT} ---
101 2.1 +++ killed by SIGKILL +++
";
        let calls = parse(text);
        let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["poll", "clock_nanosleep", "poll", "epoll_wait"]);
        assert_eq!(calls[0].args.len(), 3);
        assert_eq!((nfds(&calls[0]), nfds(&calls[2])), (Some(2), Some(0)));
        assert_eq!(calls[1].args[2], "{tv_sec=0, tv_nsec=2000000}");
        assert_eq!(calls[3].args, ["5", "[]", "1024", "0"]);
        assert_eq!((calls[1].pid, calls[1].at), (102, 1.6));
        let all: Vec<&Call> = calls.iter().collect();
        assert_eq!(
            summary(&all[..3]),
            "poll([…], 2, -1) ×1, clock_nanosleep(CLOCK_REALTIME, 0, {tv_sec=0, tv_nsec=2000000}, NULL) ×1, poll([], 0, 2) ×1"
        );
    }
}
