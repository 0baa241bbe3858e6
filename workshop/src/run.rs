//! The server under check: started on port 0 in a process group of its own, under strace
//! when it is installed (the model steps judge its calls, [`crate::calls`]), its stderr
//! collected, its address read from its banner, the program running checked to be the one
//! given, and every process of its group killed and reaped at the end.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::{self, wait, Failure};
use crate::trace;

/// The server's stderr lines, collected by a reader thread, and whether one says the server
/// reached a todo!() (then nothing more will come from it: see [`client::watch_server`]).
#[derive(Clone, Default)]
pub struct Log {
    lines: Arc<Mutex<Vec<String>>>,
    todo: Arc<AtomicBool>,
}

impl Log {
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.lines.lock().map(|l| l.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a line (a reader thread's).
    pub fn push(&self, line: String) {
        if line.starts_with("todo!() reached at ") || line.starts_with("not yet implemented") {
            self.todo.store(true, Ordering::SeqCst);
        }
        if let Ok(mut l) = self.lines.lock() {
            l.push(line);
        }
    }

    /// A panic in the lines from `from` on: (where, the message). A `todo!()` reached comes
    /// first: the skeleton's own (`todo!() reached at PLACE: SENTENCE`, one line) or std's
    /// (`panicked at PLACE:` then `not yet implemented: …`, which in a signal handler is
    /// followed by a second panic, "panic in a function that cannot unwind", saying less).
    /// A todo!() is returned as (PLACE, "not yet implemented: SENTENCE").
    pub fn panic_since(&self, from: usize) -> Option<(String, String)> {
        let lines = self.lines();
        let lines = lines.get(from..).unwrap_or(&[]);
        let mut panics: Vec<(String, String)> = Vec::new();
        for (at, l) in lines.iter().enumerate() {
            if let Some(rest) = l.strip_prefix("todo!() reached at ") {
                // PLACE is file:line; the sentence follows the next ": ".
                let (place, sentence) = rest.split_once(": ").unwrap_or((rest, ""));
                panics.push((
                    place.to_string(),
                    format!("not yet implemented: {sentence}"),
                ));
            } else if l.contains("panicked at") {
                let place = l.split("panicked at ").nth(1).unwrap_or("");
                let message = lines.get(at + 1).cloned().unwrap_or_default();
                panics.push((place.trim_end_matches(':').to_string(), message));
            }
        }
        let todo = panics
            .iter()
            .find(|(_, m)| m.starts_with("not yet implemented"));
        todo.or(panics.first()).cloned()
    }
}

/// A running server.
pub struct Server {
    /// What was started: the server, or strace running it.
    pub child: Child,
    /// The server's own pid (strace's child when traced).
    pub pid: u32,
    pub addr: SocketAddr,
    pub log: Log,
    /// The file strace writes the server's calls to, when traced.
    pub trace: Option<PathBuf>,
}

/// Starts `exe args… -p PORT` (0: any free port) in a new process group, under strace when it
/// is installed, and waits for the banner's address. A failure says what came instead: a
/// todo!() reached, a panic, an exit, silence, or another program than `exe` running.
pub fn start(exe: &Path, args: &[String], port: u16) -> Result<Server, Failure> {
    let trace_path = trace::strace_found().then(trace::new_trace_path);
    let mut cmd = match &trace_path {
        Some(path) => trace::command(exe, path),
        None => Command::new(exe),
    };
    cmd.args(args)
        .args(["-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| {
        Failure::new(
            format!("{} -p {port}", exe.display()),
            "the server running",
            format!("could not start it: {e}"),
        )
    })?;
    let group = child.id();
    let log = Log::default();
    client::watch_server(Some(log.todo.clone()));
    let stderr = child.stderr.take().expect("stderr is piped");
    let lines = log.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            lines.push(line);
        }
    });
    let mut server = Server {
        child,
        pid: group,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        log,
        trace: trace_path,
    };
    let until = Instant::now() + wait();
    loop {
        if let Some(addr) = server.log.lines().iter().find_map(|l| banner_addr(l)) {
            server.addr = addr;
            if server.trace.is_some() {
                // strace's child is the server (it printed the banner, so it is there).
                server.pid = crate::model::children(group)
                    .first()
                    .copied()
                    .unwrap_or(group);
            }
            server.running(exe)?;
            return Ok(server);
        }
        let exited = server.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > until {
            // Let the reader thread catch the last lines.
            thread::sleep(Duration::from_millis(50));
            if let Some(addr) = server.log.lines().iter().find_map(|l| banner_addr(l)) {
                // A banner, then the end: the next step reports what happened.
                server.addr = addr;
                server.pid = crate::model::children(group)
                    .first()
                    .copied()
                    .unwrap_or(group);
                return Ok(server);
            }
            let got = server.what_happened(0).unwrap_or_else(|| match exited {
                Some(status) => format!("it exited ({status}) without a banner"),
                None => format!("no banner on stderr within {} s", wait().as_secs()),
            });
            return Err(Failure::new(
                format!("(nothing: started {} -p {port})", exe.display()),
                "a banner on stderr: `… listening on ADDR …`",
                got,
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

impl Server {
    /// Fails unless the program running is `exe` itself, the one built from the learner's
    /// crate: a `main` that execs another program (a lesson's binary) is not a solution.
    /// A `#!` script (the checker's own tests) runs its interpreter and is let be.
    fn running(&self, exe: &Path) -> Result<(), Failure> {
        let script = std::fs::read(exe).is_ok_and(|b| b.starts_with(b"#!"));
        let Ok(running) = std::fs::read_link(format!("/proc/{}/exe", self.pid)) else {
            return Ok(()); // it has exited already: the next step says so
        };
        let want = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf());
        if script || running == want {
            return Ok(());
        }
        Err(Failure::new(
            format!("(nothing: started {})", exe.display()),
            format!("{} running (/proc/PID/exe)", want.display()),
            format!(
                "{} running: the program execs another, so what would be checked is not \
                 what your crate builds",
                running.display()
            ),
        )
        .hint("write the calls in your exercise's own crate (under my-exercises/): the check runs the program that crate builds, and one that execs another program is not a solution"))
    }

    /// A todo!() reached or a panic (since log line `from`, else earlier: a server that
    /// panicked right after its banner), or an exit, in words.
    pub fn what_happened(&mut self, from: usize) -> Option<String> {
        // A todo!() anywhere in the log explains the failure best (a later panic may be its
        // consequence); else the panic since the step began, else an earlier one.
        let first = self.log.panic_since(0);
        let todo = first
            .clone()
            .filter(|(_, m)| m.starts_with("not yet implemented"));
        let panic = todo.or_else(|| self.log.panic_since(from)).or(first);
        if let Some((place, message)) = panic {
            return Some(match message.strip_prefix("not yet implemented: ") {
                Some(sentence) => {
                    format!("the server reached a todo!() at {place}: \"{sentence}\"")
                }
                None => format!("the server panicked at {place}: {message}"),
            });
        }
        let status = self.child.try_wait().ok().flatten()?;
        let last = self.log.lines().last().cloned().unwrap_or_default();
        Some(format!(
            "the server exited ({status}); its last line: {last}"
        ))
    }

    /// Kills the whole process group and reaps the server (and strace); the trace goes.
    pub fn stop(&mut self) {
        client::watch_server(None);
        // SAFETY: kill(2) on our own child's process group.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(path) = self.trace.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The address in `… listening on ADDR · …`.
pub fn banner_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on ").nth(1)?;
    rest.split(' ').next()?.parse().ok()
}

/// Makes this process the reaper of its orphaned descendants (a forked server's children,
/// once the server is killed), so that [`reap_orphans`] can collect them.
pub fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes an integer flag.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
    }
}

/// Reaps every exited child of this process (orphans handed to it as subreaper).
pub fn reap_orphans() {
    // A child killed with its process group is on its way out, not gone: wait for it (a
    // moment), so that no process of the check outlives it.
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        // SAFETY: waitpid with a null status pointer.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if pid > 0 {
            continue;
        }
        // -1 (ECHILD): no child left; 0: some still running.
        if pid < 0 || Instant::now() > until {
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Starts the client `exe args… --to ADDR` (exercise 00) in a new process group, its stdin
/// and stdout piped for the step to use, and waits for its banner (`… connected to …`).
/// The returned [`Server`] is the client; its `addr` is the server it connected to.
pub fn start_client(exe: &Path, args: &[String], to: SocketAddr) -> Result<Server, Failure> {
    let started = format!("(nothing: started {} --to {to})", exe.display());
    let mut child = Command::new(exe)
        .args(args)
        .args(["--to", &to.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| {
            Failure::new(
                &started,
                "the client running",
                format!("could not start it: {e}"),
            )
        })?;
    let pid = child.id();
    let log = Log::default();
    let stderr = child.stderr.take().expect("stderr is piped");
    let lines = log.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            lines.push(line);
        }
    });
    let mut client = Server {
        child,
        pid,
        addr: to,
        log,
        trace: None,
    };
    let until = Instant::now() + wait();
    loop {
        let banner = |c: &Server| c.log.lines().iter().any(|l| l.contains("connected to"));
        if banner(&client) {
            return Ok(client);
        }
        let exited = client.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > until {
            thread::sleep(Duration::from_millis(50));
            if banner(&client) {
                return Ok(client);
            }
            let got = client.what_happened(0).unwrap_or_else(|| match exited {
                Some(status) => format!("it exited ({status}) without a banner"),
                None => format!("no banner on stderr within {} s", wait().as_secs()),
            });
            return Err(Failure::new(
                started,
                "a banner on stderr: `… connected to ADDR …`",
                got,
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}
