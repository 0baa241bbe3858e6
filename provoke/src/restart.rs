//! The hot-restart scenario (lesson 17): the lesson started on a port of its own with a pid
//! file, a steady load of short echo connections at a fixed rate (each a full round trip:
//! welcome, a line and its reverse, q, EOF), and SIGHUP sent N times, each after the last
//! successor took over. Every connection is counted: served whole, refused (ECONNREFUSED),
//! reset (ECONNRESET, EPIPE), short (EOF or wrong bytes) or stalled (no answer in time).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::scenario::lesson_bin;
use crate::{Outcome, Provoked};

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    short: AtomicU64,
    stalled: AtomicU64,
}

/// What the run asks for.
pub struct Plan<'a> {
    pub mistake: Option<&'a str>,
    pub restarts: usize,
    pub rate: u64,
    pub workers: usize,
    /// Hand over through a socket file (`--handover PATH`) instead of a socketpair.
    pub handover: bool,
}

pub fn scenario(plan: &Plan) -> Provoked {
    // Orphans (each old process's successor outlives it) are re-parented to us, and reaped.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) changes only this process's flag.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let dir = std::env::temp_dir().join(format!("provoke-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let pid_file = dir.join("pid");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("bind: {e}"))?
        .port();
    let mut args = vec![
        "-p".to_string(),
        port.to_string(),
        "--pid-file".into(),
        pid_file.display().to_string(),
        "--drain-timeout".into(),
        "5".into(),
    ];
    if plan.handover {
        args.extend([
            "--handover".into(),
            dir.join("handover.sock").display().to_string(),
        ]);
    }
    if let Some(m) = plan.mistake {
        args.extend(["--mistake".to_string(), m.to_string()]);
    }
    let mut child = Command::new(lesson_bin("lesson-17")?)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn lesson-17: {e}"))?;
    // Every process's stderr is this one pipe (successors inherit it): read it all.
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr = child.stderr.take().expect("piped");
    let lines = log.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let first = wait_pid_change(&pid_file, None, Duration::from_secs(5)).ok_or_else(|| {
        format!(
            "lesson-17 wrote no pid file: {}",
            log.lock().unwrap().join(" | ")
        )
    })?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..plan.workers)
        .map(|w| {
            let (counts, stop) = (counts.clone(), stop.clone());
            let every = Duration::from_secs_f64(plan.workers as f64 / plan.rate as f64);
            thread::spawn(move || load(addr, w, every, &counts, &stop))
        })
        .collect();

    // SIGHUP once the load is steady, then each time the last successor has taken over.
    let mut pid = first;
    let mut took_over = 0;
    let mut long = Vec::new();
    for _ in 0..plan.restarts {
        thread::sleep(Duration::from_millis(150));
        // Two clients of the old process that are still talking when the restart comes:
        // they must finish whole (and keep the old process draining for a while).
        for _ in 0..2 {
            let counts = counts.clone();
            long.push(thread::spawn(move || {
                let counter = match long_trip(addr) {
                    Ok(()) => &counts.ok,
                    Err(Lost::Refused) => &counts.refused,
                    Err(Lost::Reset) => &counts.reset,
                    Err(Lost::Short) => &counts.short,
                    Err(Lost::Stalled) => &counts.stalled,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }));
        }
        thread::sleep(Duration::from_millis(20));
        // SAFETY: kill(2) with a pid read from the lesson's own pid file.
        unsafe { libc::kill(pid as i32, libc::SIGHUP) };
        if let Some(next) = wait_pid_change(&pid_file, Some(pid), Duration::from_secs(3)) {
            pid = next;
            took_over += 1;
        }
    }
    thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    for w in workers.into_iter().chain(long) {
        let _ = w.join();
    }
    let seconds = started.elapsed().as_secs_f64();
    // The last process stops (SIGTERM); the drained ones have exited or will within the
    // drain timeout: reap every child that comes back to us.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    reap_all(Duration::from_secs(6));
    let _ = std::fs::remove_dir_all(&dir);

    let c = |n: &AtomicU64| n.load(Ordering::Relaxed);
    let total = c(&counts.ok)
        + c(&counts.refused)
        + c(&counts.reset)
        + c(&counts.short)
        + c(&counts.stalled);
    let lost = total - c(&counts.ok);
    let failed = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("restart failed"))
        .count();
    let line = format!(
        "{took_over} of {} restarts took over, under {:.0} new connections/s: {} round \
         trips whole, {} refused, {} reset, {} short, {} stalled{}",
        plan.restarts,
        total as f64 / seconds,
        c(&counts.ok),
        c(&counts.refused),
        c(&counts.reset),
        c(&counts.short),
        c(&counts.stalled),
        if failed > 0 {
            format!(" ({failed} restarts failed: the old process served on)")
        } else {
            String::new()
        }
    );
    Ok(Outcome::new(lost == 0 && took_over == plan.restarts, line))
}

/// One worker: a connection every `every`, each a full round trip, until `stop`.
fn load(addr: SocketAddr, worker: usize, every: Duration, counts: &Counts, stop: &AtomicBool) {
    let mut next = Instant::now() + every.mul_f64(worker as f64 / 8.0);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
        next += every;
        n += 1;
        let line = format!("worker {worker} connection {n} .......");
        let counter = match round_trip(addr, &line) {
            Ok(()) => &counts.ok,
            Err(Lost::Refused) => &counts.refused,
            Err(Lost::Reset) => &counts.reset,
            Err(Lost::Short) => &counts.short,
            Err(Lost::Stalled) => &counts.stalled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

enum Lost {
    Refused,
    Reset,
    Short,
    Stalled,
}

/// A client that stays 300 ms between two lines: it outlives the restart.
fn long_trip(addr: SocketAddr) -> Result<(), Lost> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(how)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(how)?;
    let mut got = vec![0u8; protocols::echo::WELCOME.len() + 6];
    s.write_all(b"first\n").map_err(how)?;
    s.read_exact(&mut got).map_err(how)?;
    thread::sleep(Duration::from_millis(300));
    s.write_all(b"second\nq\n").map_err(how)?;
    s.read_to_end(&mut got).map_err(how)?;
    let mut want = protocols::echo::WELCOME.to_vec();
    want.extend(b"tsrif\ndnoces\n");
    if got == want {
        Ok(())
    } else {
        Err(Lost::Short)
    }
}

fn how(e: std::io::Error) -> Lost {
    match e.kind() {
        ErrorKind::ConnectionRefused => Lost::Refused,
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
            Lost::Reset
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Lost::Stalled,
        ErrorKind::UnexpectedEof => Lost::Short,
        _ => Lost::Short,
    }
}

fn round_trip(addr: SocketAddr, line: &str) -> Result<(), Lost> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(how)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(how)?;
    let mut want = protocols::echo::WELCOME.to_vec();
    want.extend(line.bytes().rev());
    want.push(b'\n');
    s.write_all(format!("{line}\nq\n").as_bytes())
        .map_err(how)?;
    let mut got = Vec::with_capacity(want.len());
    s.read_to_end(&mut got).map_err(how)?;
    if got == want {
        Ok(())
    } else {
        Err(Lost::Short)
    }
}

/// The pid in `file` once it differs from `old` (and names a live process), within `limit`.
pub fn wait_pid_change(file: &Path, old: Option<u32>, limit: Duration) -> Option<u32> {
    let by = Instant::now() + limit;
    while Instant::now() < by {
        let pid = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        if pid.is_some() && pid != old {
            return pid;
        }
        thread::sleep(Duration::from_millis(5));
    }
    None
}

/// waitpid(-1) until no child is left or `limit` has passed (then SIGKILL the stragglers).
fn reap_all(limit: Duration) {
    let by = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid pointer to an int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid < 0 {
            return; // ECHILD: none left
        }
        if pid == 0 {
            if Instant::now() > by {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}
