//! What the kernel says about a server's model, from /proc (BYU's driver checks the same):
//! its threads, its children and their states, its fds and their O_NONBLOCK flag, and the
//! system call each thread sleeps in.

use std::fs;

/// The thread ids of `pid` (/proc/PID/task).
pub fn threads(pid: u32) -> Vec<u32> {
    let mut out: Vec<u32> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The children of `pid`, from all its threads (/proc/PID/task/*/children).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for tid in threads(pid) {
        if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Every descendant of `pid`: its children, theirs, and so on.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut next = children(pid);
    while let Some(p) = next.pop() {
        if !out.contains(&p) {
            out.push(p);
            next.extend(children(p));
        }
    }
    out
}

/// The state letter of a process or thread (R, S, Z, …), from /proc/PID/stat.
pub fn state(path: &str) -> Option<char> {
    let stat = fs::read_to_string(format!("{path}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The children of `pid` that are zombies (state Z).
pub fn zombies(pid: u32) -> Vec<u32> {
    children(pid)
        .into_iter()
        .filter(|c| state(&format!("/proc/{c}")) == Some('Z'))
        .collect()
}

/// Open fds of `pid`.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The socket fds of `pid` and whether each is O_NONBLOCK (/proc/PID/fdinfo's flags).
pub fn sockets(pid: u32) -> Vec<(u32, bool)> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|f| f.parse::<u32>().ok())
        else {
            continue;
        };
        let is_socket =
            fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .unwrap_or(0);
        out.push((fd, flags & libc::O_NONBLOCK as u32 != 0));
    }
    out.sort();
    out
}

/// The system call thread `tid` of `pid` sleeps in: its name from /proc/PID/task/TID/syscall,
/// `running` if it is not in one, None if the kernel does not say.
pub fn syscall(pid: u32, tid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let first = text.split_whitespace().next()?;
    if first == "running" {
        return Some("running".into());
    }
    let nr: i64 = first.parse().ok()?;
    Some(syscall_name(nr).map_or_else(|| format!("syscall {nr}"), str::to_string))
}

/// The names of the calls a server sleeps in, by number, on this architecture.
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    const TABLE: &[(i64, &str)] = &[
        (0, "read"),
        (1, "write"),
        (7, "poll"),
        (23, "select"),
        (43, "accept"),
        (45, "recvfrom"),
        (61, "wait4"),
        (128, "rt_sigtimedwait"),
        (202, "futex"),
        (232, "epoll_wait"),
        (270, "pselect6"),
        (271, "ppoll"),
        (281, "epoll_pwait"),
        (288, "accept4"),
        (426, "io_uring_enter"),
        (441, "epoll_pwait2"),
    ];
    #[cfg(target_arch = "aarch64")]
    const TABLE: &[(i64, &str)] = &[
        (22, "epoll_pwait"),
        (63, "read"),
        (64, "write"),
        (72, "pselect6"),
        (73, "ppoll"),
        (98, "futex"),
        (137, "rt_sigtimedwait"),
        (202, "accept"),
        (207, "recvfrom"),
        (242, "accept4"),
        (260, "wait4"),
        (426, "io_uring_enter"),
        (441, "epoll_pwait2"),
    ];
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    const TABLE: &[(i64, &str)] = &[];
    TABLE.iter().find(|(n, _)| *n == nr).map(|(_, name)| *name)
}

/// One line naming the model the kernel shows for `pid`: its threads, its children and
/// what its first thread sleeps in.
pub fn describe(pid: u32) -> String {
    let threads = threads(pid).len();
    let children = children(pid).len();
    // A few looks: a thread seen running once, or in a passing call (a close), may be
    // asleep where its model waits the next moment.
    const WAITS: &[&str] = &[
        "poll",
        "ppoll",
        "epoll_wait",
        "epoll_pwait",
        "epoll_pwait2",
        "select",
        "pselect6",
        "read",
        "recvfrom",
        "accept",
        "accept4",
    ];
    let mut asleep = "?".to_string();
    for _ in 0..10 {
        asleep = syscall(pid, pid).unwrap_or_else(|| "?".into());
        if WAITS.contains(&asleep.as_str()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let model = if children > 0 {
        "a process per client (lesson 04's model)"
    } else if threads > 1 {
        "threads (lesson 05's thread per client)"
    } else {
        match asleep.as_str() {
            "poll" | "ppoll" => "one thread in poll (lesson 08's model)",
            "epoll_wait" | "epoll_pwait" | "epoll_pwait2" => {
                "one thread in epoll (lesson 10's model)"
            }
            "select" | "pselect6" => "one thread in select (lesson 07's model)",
            "read" | "recvfrom" | "accept" | "accept4" => {
                "one thread blocked in one call at a time (a serial server, lesson 03's model)"
            }
            "running" => "one thread that never sleeps (a busy loop, lesson 06's spin)",
            _ => "one thread",
        }
    };
    let doing = if asleep == "running" {
        "running (not asleep)".to_string()
    } else {
        format!("asleep in {asleep}")
    };
    format!("{threads} thread(s), {children} child process(es), first thread {doing}: {model}")
}
