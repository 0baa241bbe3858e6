//! The restart, on a thread of its own beside the reactor: SIGHUP → fork and execve the same
//! binary with the same arguments → hand it the listener (handover.rs) → when it says it is
//! ready, tell the reactor to stop accepting and drain. A successor that fails leaves this
//! process serving as before, with one line saying why.

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, read, write, ForkResult, Pid};
use sockets_by_hand::errors::describe;
use sockets_by_hand::say;

use crate::handover::{self, LINK_FD};

/// How long a successor may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// The path this process was started as, resolved now, at start: the successor is whatever
/// binary is there when SIGHUP comes (an upgrade replaces it). /proc/self/exe would name
/// the inode this process runs, the old binary, even after the file was replaced.
pub fn own_path() -> PathBuf {
    let arg0 = PathBuf::from(std::env::args_os().next().unwrap_or_default());
    if arg0.components().count() > 1 {
        return std::env::current_dir().unwrap_or_default().join(arg0);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(&arg0))
        .find(|candidate| candidate.is_file())
        .unwrap_or(arg0)
}

pub struct Restarter {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
    /// The listener's number; the reactor owns it and closes it only when told to drain.
    pub listener: RawFd,
    /// SIGHUP's self-pipe (read end), and the reactor's drain pipe (write end).
    pub hup: OwnedFd,
    pub drain: OwnedFd,
    /// `--handover PATH`: the path and its listening AF_UNIX socket.
    pub path: Option<(PathBuf, OwnedFd)>,
}

impl Restarter {
    /// The thread's loop: SIGHUP restarts; with a path, a process that connects there (same
    /// user only) takes over too. After a handover, SIGHUP is ignored: this process drains.
    pub fn run(mut self) {
        let mut taken_by: Option<i32> = None;
        loop {
            let mut fds = vec![PollFd::new(self.hup.as_fd(), PollFlags::POLLIN)];
            if let Some((_, sock)) = &self.path {
                fds.push(PollFd::new(sock.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(errno) => return say!("{}", describe("poll", errno)),
            }
            let hup = fds[0].any().unwrap_or(false);
            let knock = fds.get(1).is_some_and(|fd| fd.any().unwrap_or(false));
            if hup {
                empty(&self.hup);
                match taken_by {
                    Some(pid) => say!("SIGHUP ignored: pid {pid} has taken over; draining"),
                    None => taken_by = self.restart(),
                }
            } else if knock {
                let sock = &self.path.as_ref().expect("watched").1;
                match handover::accept_same_user(sock) {
                    Ok(Some((conn, pid))) => taken_by = self.finish(conn, pid, None),
                    Ok(None) => {}
                    Err(why) => say!("{why}"),
                }
            }
            if taken_by.is_some() {
                self.path = None; // the successor listens on the path now
            }
        }
    }

    /// SIGHUP: start the successor and hand it the listener. Returns its pid once it is ready.
    fn restart(&mut self) -> Option<i32> {
        say!("SIGHUP: restarting: {}", self.exe.display());
        let link = if self.path.is_none() {
            match handover::pair() {
                Ok(pair) => Some(pair),
                Err(errno) => {
                    say!(
                        "restart failed: {}; still serving",
                        describe("socketpair", errno)
                    );
                    return None;
                }
            }
        } else {
            None
        };
        let child = match self.spawn(link.as_ref().map(|(_, theirs)| theirs)) {
            Ok(child) => child,
            Err(why) => {
                say!("restart failed: {why}; still serving");
                return None;
            }
        };
        match link {
            // The socketpair road: our end is connected to the child's already.
            Some((ours, theirs)) => {
                drop(theirs); // close(2): only the child holds that end now
                self.finish(ours, child.as_raw(), Some(child))
            }
            // The path road: the child connects to the path; wait for it there.
            None => self.await_on_path(child),
        }
    }

    /// fork(2), then in the child execve(2) of the same binary with the same arguments.
    fn spawn(&self, link: Option<&OwnedFd>) -> Result<Pid, String> {
        // Everything execve needs is built before fork: in a process with threads the child
        // may only make async-signal-safe calls (no allocation, no lock) until execve.
        let cstr = |s: &[u8]| CString::new(s).map_err(|_| "a NUL byte in an argument");
        let exe = cstr(self.exe.as_os_str().as_bytes())?;
        let args = self.args.iter().map(|a| cstr(a.as_bytes()));
        let args = args.collect::<Result<Vec<_>, _>>()?;
        let mut env = Vec::new();
        for (key, value) in std::env::vars_os() {
            if key != LINK_FD {
                let mut pair = key.into_vec();
                pair.push(b'=');
                pair.extend(value.as_bytes());
                env.push(cstr(&pair)?);
            }
        }
        if let Some(link) = link {
            env.push(cstr(format!("{LINK_FD}={}", link.as_raw_fd()).as_bytes())?);
        }
        let argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        let argv = [argv, vec![std::ptr::null()]].concat();
        let envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        let envp = [envp, vec![std::ptr::null()]].concat();
        // fork(2): the child is a copy of this process, all its fds included.
        // SAFETY: the child makes only fcntl, execve and _exit, all async-signal-safe.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                if let Some(link) = link {
                    // fcntl(F_SETFD, 0): the one fd that must survive execve loses FD_CLOEXEC
                    // (here, in the child only). Every other fd keeps it and closes at execve.
                    // The mistake leaves the flag on: execve closes the socketpair end and the
                    // successor has nothing to receive the listener from.
                    unsafe { libc::fcntl(link.as_raw_fd(), libc::F_SETFD, 0) };
                }
                // execve(2): the binary at the path, re-read from disk. Only on failure does
                // it return; 127 tells the parent so (as a shell does).
                unsafe {
                    libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
                    libc::_exit(127)
                }
            }
            Ok(ForkResult::Parent { child }) => Ok(child),
            Err(errno) => Err(describe("fork", errno)),
        }
    }

    /// The path road: accept the successor on the handover path (same user only).
    fn await_on_path(&mut self, child: Pid) -> Option<i32> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let sock = &self.path.as_ref().expect("path road").1;
            let mut fds = [
                PollFd::new(sock.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.hup.as_fd(), PollFlags::POLLIN),
            ];
            let _ = poll(&mut fds, PollTimeout::from(100u8));
            if fds[1].any().unwrap_or(false) {
                empty(&self.hup);
                say!("SIGHUP ignored: a restart is under way (successor pid {child})");
            }
            if fds[0].any().unwrap_or(false) {
                match handover::accept_same_user(sock) {
                    Ok(Some((conn, pid))) => return self.finish(conn, pid, Some(child)),
                    Ok(None) => {}
                    Err(why) => say!("{why}"),
                }
            }
            if let Some(why) = gone(child, deadline) {
                say!("restart failed: {why}; still serving");
                return None;
            }
        }
    }

    /// Send the listener over `link` and wait for the successor's "ready". On success the
    /// reactor stops accepting and drains; on failure nothing changes here.
    fn finish(&mut self, link: OwnedFd, pid: i32, child: Option<Pid>) -> Option<i32> {
        // The listener goes across (with --mistake reuseport the successor binds its own).
        if let Err(errno) = handover::send_listener(&link, self.listener) {
            say!(
                "restart failed: {}; still serving",
                describe("sendmsg", errno)
            );
            if let Some(c) = child {
                let _ = kill(c, Signal::SIGKILL);
                reap(c, Duration::from_secs(2));
            }
            return None;
        }
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let mut fds = [
                PollFd::new(link.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.hup.as_fd(), PollFlags::POLLIN),
            ];
            let _ = poll(&mut fds, PollTimeout::from(100u8));
            if fds[1].any().unwrap_or(false) {
                empty(&self.hup);
                say!("SIGHUP ignored: a restart is under way (successor pid {pid})");
            }
            if fds[0].any().unwrap_or(false) {
                let mut byte = [0u8; 1];
                match read(&link, &mut byte) {
                    Ok(1) if byte[0] == b'R' => break,
                    Ok(_) | Err(_) => {
                        // EOF: the successor is gone (or closed its end) before it was ready.
                        let why = child.map_or_else(
                            || format!("pid {pid} left before it was ready"),
                            |c| reap(c, Duration::from_secs(2)),
                        );
                        say!("restart failed: {why}; still serving");
                        return None;
                    }
                }
            }
            if let Some(why) = child.and_then(|c| gone(c, deadline)) {
                say!("restart failed: {why}; still serving");
                return None;
            }
            if child.is_none() && Instant::now() >= deadline {
                say!("restart failed: pid {pid} not ready within {READY_WITHIN:?}");
                return None;
            }
        }
        say!("pid {pid} is ready: this process stops accepting and drains");
        self.stop_accepting();
        Some(pid)
    }

    /// One byte down the drain pipe: the reactor closes its listener and drains.
    fn stop_accepting(&self) {
        if let Err(errno) = write(&self.drain, b"D") {
            say!("{}", describe("write (the drain pipe)", errno));
        }
    }
}

/// Why the child is gone, if it is (waitpid with WNOHANG), or past `deadline`: then it is
/// killed and reaped. `None`: it is still running and there is time.
fn gone(child: Pid, deadline: Instant) -> Option<String> {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, 127)) => {
                return Some(format!("successor pid {child}: execve failed (exit 127)"))
            }
            Ok(WaitStatus::Exited(_, code)) => {
                return Some(format!("successor pid {child} exited with status {code}"))
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return Some(format!("successor pid {child} killed by {signal:?}"))
            }
            Ok(_) if Instant::now() < deadline => return None,
            Ok(_) => {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Some(format!(
                    "successor pid {child} not ready within {READY_WITHIN:?}: killed"
                ));
            }
            Err(Errno::EINTR) => continue,
            Err(errno) => return Some(describe("waitpid", errno)),
        }
    }
}

/// Waits (at most `within`, then kills) for the child to end; says how it ended.
fn reap(child: Pid, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(why) = gone(child, deadline) {
            return why;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Empties a self-pipe (non-blocking).
fn empty(pipe: &OwnedFd) {
    let mut bytes = [0u8; 64];
    while matches!(read(pipe, &mut bytes), Ok(n) if n > 0) {}
}

/// The pid file, written atomically: a temporary file beside it, then rename(2) over it, so a
/// reader sees the old pid or the new one, never an empty or half-written file.
pub fn write_pid_file(path: &Path) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, format!("{}\n", std::process::id()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("pid file {}: {e}", path.display()))
}
