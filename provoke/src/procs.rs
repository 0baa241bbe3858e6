//! What /proc says about the server behind an address, when it runs on this machine as a
//! user we may look at: its pid, zombie children, threads, CPU ticks, open fds.

use std::fs;
use std::net::SocketAddr;

/// The pid of the process listening on `addr`'s port (the lowest, when a fork shares the
/// listener), found through /proc/net/tcp{,6} and /proc/PID/fd.
pub fn server_pid(addr: SocketAddr) -> Option<u32> {
    let port = format!(":{:04X}", addr.port());
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is f[1], st is f[3] (0A = LISTEN), inode is f[9].
            if f.len() > 9 && f[1].ends_with(&port) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    pids()
        .filter(|pid| {
            fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    fs::read_link(fd.path())
                        .is_ok_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
                })
            })
        })
        .min()
}

fn pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

/// The fields of /proc/PID/stat after the command name: [0] is the state, [1] the ppid.
fn stat(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(String::from).collect())
}

/// Children of `pid` in state Z (<defunct>: exited, never waited for).
pub fn zombies(pid: u32) -> usize {
    let ppid = pid.to_string();
    pids()
        .filter_map(stat)
        .filter(|f| f.len() > 1 && f[0] == "Z" && f[1] == ppid)
        .count()
}

pub fn threads(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

pub fn fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// User + system CPU time of `pid`, in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> u64 {
    stat(pid).map_or(0, |f| {
        f.get(11).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0)
    })
}

pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The state letter of `pid` (R, S, T for stopped, …), if it exists.
pub fn state(pid: u32) -> Option<char> {
    stat(pid)?.first()?.chars().next()
}

/// Runs `during` with `pid` stopped (SIGSTOP), then lets it go on (SIGCONT): whatever
/// arrives meanwhile, the server finds all at once when it wakes. Without a pid (the server
/// is not ours to signal), `during` just runs.
pub fn while_stopped<T>(pid: Option<u32>, during: impl FnOnce() -> T) -> T {
    let Some(pid) = pid else {
        return during();
    };
    // SAFETY: kill(2) with a pid and a signal number has no memory effects.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    let by = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while state(pid) != Some('T') && std::time::Instant::now() < by {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let value = during();
    // SAFETY: as above.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
    value
}
