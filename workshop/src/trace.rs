//! The server's system calls, recorded by strace over the whole check and read back as
//! [`Call`]s: `strace -f -qq -tt -yy -e trace=CALLS -o FILE exe args`, so every process and
//! thread the server makes is followed, each line carries its time, and every fd shows what
//! it is (`7<TCP:[127.0.0.1:23333->127.0.0.1:40000]>`). [`crate::calls`] judges the model
//! from them.
//!
//! strace writes a call's line as the call returns; a call another process interrupts is
//! split (`<unfinished ...>`, later `<... name resumed>`), and [`join_split_calls`] puts it
//! back together, so each call is one line in the order the calls began.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The calls the model is judged from (a `?` lets strace skip a call this architecture
/// lacks).
pub const CALLS: &str = "execve,execveat,?fork,?vfork,clone,?clone3,socket,accept,accept4,\
connect,read,readv,recvfrom,recvmsg,write,writev,sendto,sendmsg,close,shutdown,fcntl,ioctl,\
setsockopt,?poll,ppoll,?select,pselect6,epoll_create1,epoll_ctl,?epoll_wait,epoll_pwait,?epoll_pwait2,\
nanosleep,clock_nanosleep,rt_sigtimedwait,io_uring_enter,exit_group";

/// Whether strace is on this machine (`make deps` installs it) and may trace here (a
/// container without ptrace cannot): the model steps then say so, and the rest still runs.
pub fn strace_found() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        Command::new("strace")
            .args([
                "-f",
                "-qq",
                "--seccomp-bpf",
                "-e",
                "trace=write",
                "-o",
                "/dev/null",
            ])
            .arg("true")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh trace file's path, under the temporary folder.
pub fn new_trace_path() -> PathBuf {
    let dir = std::env::temp_dir().join("workshop-traces");
    let _ = fs::create_dir_all(&dir);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{}-{n}.trace", std::process::id()))
}

/// `strace … -o path exe`: the command that runs `exe` (its arguments still to add) under
/// strace, following every process and thread it makes.
pub fn command(exe: &Path, path: &Path) -> Command {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-tt", "-yy", "--seccomp-bpf", "-e"])
        .arg(format!("trace={CALLS}"))
        .arg("-o")
        .arg(path)
        .arg(exe);
    cmd
}

/// `text` with each call that strace split joined back into one line: when another process
/// or thread made a call meanwhile, strace ends the first line with `<unfinished ...>` and
/// prints the rest later as `PID  <... name resumed>rest`. Every call line then ends with
/// its result, whatever else ran; a call still running stays as it began.
pub fn join_split_calls(text: &str) -> String {
    joined(text).iter().map(|(l, _)| format!("{l}\n")).collect()
}

/// [`join_split_calls`]'s lines, each with the index of the line of `text` that ended it
/// (its resumed line, for a split call).
fn joined(text: &str) -> Vec<(String, usize)> {
    let pid = |line: &str| line.split_whitespace().next().unwrap_or("").to_string();
    let mut out: Vec<(String, usize)> = Vec::new();
    let mut pending: Vec<(String, usize)> = Vec::new();
    for (at, line) in text.lines().enumerate() {
        if let Some(start) = line.find("<... ") {
            if let Some(k) = pending.iter().position(|(p, _)| *p == pid(line)) {
                let (_, i) = pending.remove(k);
                out[i]
                    .0
                    .push_str(line[start..].split_once("resumed>").map_or("", |r| r.1));
                out[i].1 = at;
                continue;
            }
        }
        if let Some(head) = line.strip_suffix("<unfinished ...>") {
            pending.push((pid(line), out.len()));
            out.push((head.trim_end().to_string(), usize::MAX));
        } else {
            out.push((line.to_string(), at));
        }
    }
    out
}

/// One system call as strace showed it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Call {
    /// The thread that made it (a process's first thread: its pid).
    pub tid: u32,
    /// Seconds since midnight (strace's `-tt`).
    pub time: f64,
    pub name: String,
    /// The arguments as strace printed them, between the parentheses.
    pub args: String,
    /// What follows ` = `: `4<TCP:[…]>`, `-1 EAGAIN (…)`, `1 ([{fd=7, revents=POLLIN}])`.
    pub result: String,
    /// The return value, when it is a number.
    pub ret: Option<i64>,
    /// The symbolic errno of a failed call (`EAGAIN`).
    pub errno: Option<String>,
    /// Whether it returned (a call still running, or cut by the end, has no result).
    pub done: bool,
    /// The index of the trace line that ended it (its `resumed` line for a split call;
    /// usize::MAX while it runs): a [`mark`] before it means the call ended after the mark.
    pub end: usize,
}

/// What one line of the trace is.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Call(Call),
    /// `--- SIGCHLD {…} ---`, `+++ exited with 0 +++`: (thread, text).
    Other(u32, String),
}

/// The lines of a trace (split calls joined; a last line strace is still writing left out).
pub fn parse(text: &str) -> Vec<Line> {
    joined(complete(text))
        .into_iter()
        .filter_map(|(line, end)| {
            let mut parsed = parse_line(&line)?;
            if let Line::Call(call) = &mut parsed {
                call.end = end;
            }
            Some(parsed)
        })
        .collect()
}

/// The text up to its last newline.
fn complete(text: &str) -> &str {
    match text.rfind('\n') {
        Some(at) => &text[..=at],
        None => "",
    }
}

/// Reads and parses the trace at `path`.
pub fn read(path: &Path) -> Vec<Line> {
    parse(&String::from_utf8_lossy(
        &fs::read(path).unwrap_or_default(),
    ))
}

/// A mark in the trace at `path`: how many whole lines it has now. A call whose
/// [`Call::end`] is at or after a mark returned after it.
pub fn mark(path: &Path) -> usize {
    let bytes = fs::read(path).unwrap_or_default();
    bytes.iter().filter(|b| **b == b'\n').count()
}

fn parse_line(line: &str) -> Option<Line> {
    // strace pads the pid (`123   12:00:00.000001 read(…`): words, not single spaces.
    let line = line.trim_start();
    let (tid, rest) = line.split_once(' ')?;
    let tid: u32 = tid.parse().ok()?;
    let rest = rest.trim_start();
    let (time, rest) = match rest
        .split_once(' ')
        .and_then(|(t, r)| Some((parse_time(t)?, r)))
    {
        Some((t, r)) => (t, r),
        None => (0.0, rest),
    };
    let rest = rest.trim_start();
    if rest.starts_with("---") || rest.starts_with("+++") || rest.starts_with('<') {
        return Some(Line::Other(tid, rest.to_string()));
    }
    let open = rest.find('(')?;
    let name = &rest[..open];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Some(Line::Other(tid, rest.to_string()));
    }
    let body = &rest[open + 1..];
    let close = closing_paren(body);
    let (args, after) = match close {
        Some(at) => (&body[..at], &body[at + 1..]),
        None => (body, ""),
    };
    let mut call = Call {
        tid,
        time,
        name: name.to_string(),
        args: args.to_string(),
        ..Call::default()
    };
    if let Some(result) = after.trim_start().strip_prefix("= ") {
        call.done = true;
        call.result = result.to_string();
        let mut parts = result.split_whitespace();
        let first = parts.next().unwrap_or("");
        let number = first.split('<').next().unwrap_or("");
        call.ret = match number.strip_prefix("0x") {
            Some(hex) => i64::from_str_radix(hex, 16).ok(),
            None => number.parse().ok(),
        };
        if first == "-1" || first == "?" {
            call.errno = parts.next().map(str::to_string);
        }
    }
    Some(Line::Call(call))
}

fn parse_time(word: &str) -> Option<f64> {
    let mut parts = word.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    let h: f64 = h.parse().ok()?;
    let m: f64 = m.parse().ok()?;
    let s: f64 = s.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The index of the `)` that closes the call's argument list (quotes and brackets skipped).
fn closing_paren(body: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut quoted = false;
    let mut escaped = false;
    for (i, ch) in body.char_indices() {
        if quoted {
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match ch {
            '"' => quoted = true,
            '>' if body[..i].ends_with(['-', '=']) => {} // `a->b`, `[128 => 16]`
            '(' | '[' | '{' | '<' => depth += 1,
            ']' | '}' | '>' => depth -= 1,
            ')' if depth == 0 => return Some(i),
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The top-level arguments of an argument list (commas inside quotes or brackets kept).
pub fn split_args(args: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, ch) in args.char_indices() {
        if quoted {
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match ch {
            '"' => quoted = true,
            '>' if args[..i].ends_with(['-', '=']) => {}
            '(' | '[' | '{' | '<' => depth += 1,
            ')' | ']' | '}' | '>' => depth -= 1,
            ',' if depth == 0 => {
                out.push(args[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = args[start..].trim();
    if !last.is_empty() {
        out.push(last);
    }
    out
}

/// Every `N<what>` in `text` (strace's `-yy` fds): (N, what).
pub fn fds_in(text: &str) -> Vec<(i32, String)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i < bytes.len() && bytes[i] == b'<' {
                let mut depth = 0;
                let open = i;
                while i < bytes.len() {
                    match bytes[i] {
                        b'<' => depth += 1,
                        b'>' if matches!(bytes[i - 1], b'-' | b'=') => {}
                        b'>' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                if let Ok(n) = text[start..open].parse() {
                    let end = i.min(text.len());
                    out.push((n, text[open + 1..end].to_string()));
                }
            }
        }
        i += 1;
    }
    out
}

/// The fd a text starts with: `7<TCP:[…]>` → (7, "TCP:[…]"); a bare `7` → (7, "").
pub fn fd_of(arg: &str) -> Option<(i32, String)> {
    let digits: String = arg.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n = digits.parse().ok()?;
    let what = fds_in(arg)
        .into_iter()
        .next()
        .filter(|(m, _)| *m == n)
        .map(|(_, w)| w)
        .unwrap_or_default();
    Some((n, what))
}

/// Every number after `key` in `text` (`fd=` in poll's result, `u64=` in epoll's events).
pub fn numbers_after(text: &str, key: &str) -> Vec<i64> {
    text.match_indices(key)
        .filter_map(|(at, _)| {
            let rest = &text[at + key.len()..];
            let n: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '-')
                .collect();
            n.parse().ok()
        })
        .collect()
}

/// A connected TCP socket as `-yy` shows it: `TCP:[127.0.0.1:23333->127.0.0.1:40000]`.
pub fn is_connection(what: &str) -> bool {
    (what.starts_with("TCP:[") || what.starts_with("TCPv6:[")) && what.contains("->")
}

/// Any socket as `-yy` shows it (TCP, UDP, UNIX, …).
pub fn is_socket(what: &str) -> bool {
    ["TCP", "UDP", "UNIX", "NETLINK", "socket:"]
        .iter()
        .any(|p| what.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_calls_are_joined_and_a_line_is_parsed() {
        let text = "10 12:00:00.000001 accept(3<TCP:[127.0.0.1:5]>, NULL, NULL <unfinished ...>\n\
                    11 12:00:00.000002 read(4<TCP:[127.0.0.1:5->127.0.0.1:9]>, \"a)b\\\"\", 16) = 3\n\
                    10 12:00:00.000003 <... accept resumed>) = 4<TCP:[127.0.0.1:5->127.0.0.1:9]>\n\
                    10 12:00:00.000004 read(4<TCP:[1]>, 0x1, 16) = -1 EAGAIN (Resource temporarily unavailable)\n\
                    10 12:00:00.000005 poll([{fd=3<TCP:[127.0.0.1:5]>, events=POLLIN}], 1, -1";
        let lines = parse(text);
        assert_eq!(lines.len(), 3, "{lines:?}");
        let padded =
            parse("6438  15:35:29.994389 accept(6<TCP:[a]>, NULL, NULL) = 7<TCP:[a->b]>\n");
        assert!(
            matches!(&padded[0], Line::Call(c) if c.tid == 6438 && c.name == "accept" && c.ret == Some(7)),
            "{padded:?}"
        );
        let Line::Call(accept) = &lines[0] else {
            panic!()
        };
        assert_eq!(accept.name, "accept");
        assert_eq!(accept.ret, Some(4));
        assert!(accept.done);
        assert_eq!(
            fd_of(&accept.result),
            Some((4, "TCP:[127.0.0.1:5->127.0.0.1:9]".into()))
        );
        let Line::Call(read) = &lines[1] else {
            panic!()
        };
        assert_eq!(read.tid, 11);
        assert_eq!(split_args(&read.args).len(), 3);
        let Line::Call(again) = &lines[2] else {
            panic!()
        };
        assert_eq!(again.errno.as_deref(), Some("EAGAIN"));
    }

    #[test]
    fn fds_and_numbers() {
        let args =
            "[{fd=0</dev/null<char 1:3>>, events=0}, {fd=7<TCP:[a->b]>, events=POLLIN}], 2, 0";
        assert_eq!(
            fds_in(args),
            vec![(0, "/dev/null<char 1:3>".into()), (7, "TCP:[a->b]".into())]
        );
        assert_eq!(
            numbers_after("([{fd=7, revents=POLLIN}, {fd=9, revents=POLLHUP}])", "fd="),
            vec![7, 9]
        );
        assert_eq!(split_args(args).last(), Some(&"0"));
    }
}
