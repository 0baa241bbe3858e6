//! Reading /proc for the measuring tools (`compare`, `bench-socks`): the descendants of a
//! process, their summed memory, threads and CPU time. No lesson uses it; it makes no system
//! call beyond reading files.

use std::fs;

/// CPU seconds of `pid` and its children (reaped: cutime/cstime; live: their own times).
pub fn cpu_seconds(pid: u32) -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    };
    // utime, stime, cutime, cstime are fields 14–17 of /proc/PID/stat.
    let sum = |f: &[u64], at: &[usize]| at.iter().filter_map(|&i| f.get(i)).sum::<u64>();
    let own = stat_fields(pid).map_or(0, |f| sum(&f, &[11, 12, 13, 14]));
    let kids: u64 = descendants(pid)
        .iter()
        .filter_map(|&k| stat_fields(k).map(|f| sum(&f, &[11, 12])))
        .sum();
    (own + kids) as f64 / ticks
}

/// Nanoseconds on a CPU of `pid` and its live descendants, every thread of each: the
/// first field of /proc/PID/task/TID/schedstat, the kernel's sum of the task's run time
/// (user + system, the same time as utime + stime, without their 10 ms ticks). Threads
/// and children that have exited no longer count, so take differences over a window in
/// which the server's processes and threads stay the same.
pub fn cpu_ns(pid: u32) -> u64 {
    std::iter::once(pid)
        .chain(descendants(pid))
        .flat_map(|p| {
            fs::read_dir(format!("/proc/{p}/task"))
                .into_iter()
                .flatten()
        })
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The numeric fields of /proc/PID/stat after the command name (index 0 = field 3).
pub fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(
        rest.split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .collect(),
    )
}

/// All descendants of `pid`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(text) = fs::read_to_string(t.path().join("children")) {
                    for c in text
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok())
                    {
                        out.push(c);
                        todo.push(c);
                    }
                }
            }
        }
    }
    out
}

/// (RSS KiB summed, threads summed, processes) over `pid` and its descendants.
pub fn tree_usage(pid: u32) -> (u64, u64, u64) {
    let mut rss = 0;
    let mut threads = 0;
    let mut procs = 0;
    for p in std::iter::once(pid).chain(descendants(pid)) {
        if let Ok(status) = fs::read_to_string(format!("/proc/{p}/status")) {
            procs += 1;
            for line in status.lines() {
                let num = |l: &str| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                if line.starts_with("VmRSS:") {
                    rss += num(line);
                } else if line.starts_with("Threads:") {
                    threads += num(line);
                }
            }
        }
    }
    (rss, threads, procs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let (rss, threads, procs) = tree_usage(me);
        assert!(rss > 0 && threads >= 1 && procs >= 1);
        assert!(stat_fields(me).is_some_and(|f| f.len() > 40));
        assert!(cpu_seconds(me) >= 0.0);
        assert_eq!(tree_usage(u32::MAX), (0, 0, 0)); // no such process
    }

    #[test]
    fn finds_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = descendants(std::process::id()).contains(&child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found);
    }
}
