//! The ptrace loop: start the lesson, follow its threads and processes, stop before each
//! taught call, hold everyone while the prompt waits, print each call's result.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace::{self, Event, Options};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{execvp, fork, ForkResult, Pid};

use crate::decode;
use crate::frames::Frames;
use crate::kview::{Conns, Snapshot};

static SIGINT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: i32) {
    SIGINT.store(true, Ordering::SeqCst);
}

const PTRACE_SYSCALL_INFO_ENTRY: u8 = 1;
const PTRACE_SYSCALL_INFO_EXIT: u8 = 2;
/// The kernel's "restart this call" returns, seen at a syscall-exit stop when a signal (or
/// our PTRACE_INTERRUPT) broke into a blocked call; the program never sees them.
const RESTARTS: [i64; 4] = [-512, -513, -514, -516];

const HELP: &str = "  Enter    run this call (one step)
  c NAME   run on, stopping at the next call NAME (c accept)
  r        run free: no more stops, every call still printed
  q        end the lesson
  ?        this help";

#[derive(Clone)]
struct Call {
    nr: i64,
    args: [u64; 6],
    /// The block was printed: print the result too.
    shown: bool,
    /// The kernel view at the entry, to show what changed.
    before: Vec<(i32, String)>,
    /// When to say that the call is blocked, if it has not returned by then.
    notice_at: Option<Instant>,
    /// The wall-clock time of the entry stop and the call decoded there (for --record).
    entered_ns: u128,
    entry_text: String,
}

#[derive(PartialEq)]
enum State {
    Running,
    /// In a ptrace stop that the stepper has not resumed yet.
    Parked,
}

struct Task {
    tgid: Pid,
    state: State,
    call: Option<Call>,
    /// A call the kernel will restart (after an interrupt or a signal).
    restart: Option<Call>,
    /// A stop that came while everyone was being held, handled after the prompt.
    deferred: Option<WaitStatus>,
    /// A signal to deliver when resumed.
    sig: Option<Signal>,
}

enum Mode {
    Pause,
    Until(i64),
    Free,
}

struct Tracer {
    main: Pid,
    tasks: HashMap<Pid, Task>,
    queue: VecDeque<WaitStatus>,
    stops: Vec<i64>,
    tty: Option<File>,
    mode: Mode,
    started: bool,
    frames: Frames,
    /// The connections seen so far, remembered across stops.
    conns: Conns,
    status: Option<i32>,
    /// --record: one line per finished call goes here, and nothing is printed.
    record: Option<File>,
}

/// The wall clock in nanoseconds: the clock the kernel stamps packets with, so a recording
/// and a capture can be put in one order.
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn tgid_of(tid: Pid) -> Pid {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("Tgid:")
                        .map(|v| v.trim().parse::<i32>().ok())
                })
                .flatten()
        })
        .map_or(tid, Pid::from_raw)
}

fn who(tid: Pid, tgid: Pid) -> String {
    if tid == tgid {
        format!("[pid {tid}]")
    } else {
        format!("[pid {tgid} thread {tid}]")
    }
}

fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{text}");
    let _ = o.flush();
}

/// Closes every fd above stderr before the exec, so the lesson starts with 0, 1 and 2 only
/// and its fd numbers are the docs' whatever the shell left open (a terminal multiplexer or
/// a job runner often leaks one, and the lesson's first socket would be 4, not 3).
fn close_inherited() {
    // SAFETY: close_range(2) with plain integers; only this forked child's fds are touched.
    let closed = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if closed != 0 {
        // Kernels before 5.9: one close per possible fd, up to the soft limit.
        // SAFETY: sysconf with an integer.
        let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(3, 65_536) as i32;
        for fd in 3..max {
            // SAFETY: close with an integer; EBADF for an fd not open is fine.
            unsafe { libc::close(fd) };
        }
    }
}

/// Start COMMAND under ptrace and step through it; returns the exit status to exit with.
///
/// With `record`, nothing is printed and nobody waits: each shown call becomes one line,
/// tab-separated: entry time (ns), exit time (ns), pid, thread, name, the call decoded at its
/// entry, its result decoded (`make diagram-NN` reads these).
pub fn run(
    argv: Vec<std::ffi::CString>,
    stops: Vec<i64>,
    tty: Option<File>,
    record: Option<File>,
) -> i32 {
    let action = SigAction::new(
        SigHandler::Handler(on_sigint),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let _ = signal::sigaction(Signal::SIGINT, &action);
    }
    // Orphans of the lesson (a forked child whose parent was killed) come to the stepper,
    // which reaps them: no zombie is left behind.
    // SAFETY: plain prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    // SAFETY: the child only closes fds, raises a signal and execs (argv was built before
    // the fork).
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            close_inherited();
            let _ = signal::raise(Signal::SIGSTOP);
            let err = execvp(&argv[0], &argv).unwrap_err();
            eprintln!(
                "step: cannot run {}: {err:?} ({})",
                argv[0].to_string_lossy(),
                err.desc()
            );
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            eprintln!("step: fork: {e:?} ({})", e.desc());
            return 1;
        }
    };
    match waitpid(child, Some(WaitPidFlag::WSTOPPED)) {
        Ok(WaitStatus::Stopped(_, Signal::SIGSTOP)) => {}
        other => {
            eprintln!("step: the child did not stop as expected: {other:?}");
            return 1;
        }
    }
    let options = Options::PTRACE_O_TRACESYSGOOD
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_EXITKILL;
    if let Err(e) = ptrace::seize(child, options) {
        let _ = signal::kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        eprintln!("step: ptrace(PTRACE_SEIZE): {e:?} ({})", e.desc());
        if e == Errno::EPERM {
            eprintln!(
                "step: the kernel does not let the stepper trace the lesson. Either it is already \
                 traced (step run under strace or a debugger: run it alone), or this machine forbids \
                 it. In a container, start the container with the CAP_SYS_PTRACE capability \
                 (`podman run --cap-add=SYS_PTRACE …`, the same for docker; the dev container in \
                 .devcontainer/ has it); a container's seccomp profile can refuse ptrace too \
                 (--security-opt seccomp=unconfined). On Linux itself, where Yama is on, allow \
                 tracing a child: sudo sysctl kernel.yama.ptrace_scope=1 (a container shares its \
                 host's setting and cannot change it)."
            );
        }
        return 1;
    }
    let _ = signal::kill(child, Signal::SIGCONT);
    let mut t = Tracer {
        main: child,
        tasks: HashMap::new(),
        queue: VecDeque::new(),
        stops,
        tty,
        mode: Mode::Pause,
        started: false,
        frames: Frames::default(),
        conns: Conns::default(),
        status: None,
        record,
    };
    t.tasks.insert(child, Task::new(child));
    t.main_loop()
}

impl Task {
    fn new(tgid: Pid) -> Task {
        Task {
            tgid,
            state: State::Running,
            call: None,
            restart: None,
            deferred: None,
            sig: None,
        }
    }
}

impl Tracer {
    fn main_loop(&mut self) -> i32 {
        loop {
            if self.tasks.is_empty() {
                return self.status.unwrap_or(0);
            }
            let ws = match self.queue.pop_front() {
                Some(ws) => ws,
                None => match self.wait() {
                    Some(ws) => ws,
                    None => return self.status.unwrap_or(0),
                },
            };
            self.handle(ws);
        }
    }

    /// The next stop of any tracee. While a shown call is running, wait only until its
    /// notice is due, then say it is blocked.
    fn wait(&mut self) -> Option<WaitStatus> {
        loop {
            let due = self
                .tasks
                .iter()
                .filter_map(|(tid, t)| {
                    t.call
                        .as_ref()
                        .and_then(|c| c.notice_at.map(|at| (*tid, at)))
                })
                .min_by_key(|(_, at)| *at);
            let flags = WaitPidFlag::__WALL
                | if due.is_some() {
                    WaitPidFlag::WNOHANG
                } else {
                    WaitPidFlag::empty()
                };
            match waitpid(None::<Pid>, Some(flags)) {
                Ok(WaitStatus::StillAlive) => {
                    let (tid, at) = due.unwrap();
                    if Instant::now() >= at {
                        self.notice(tid);
                    } else {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                Ok(ws) => return Some(ws),
                Err(Errno::EINTR) => {
                    // Ctrl-C while the lesson runs: the lesson got it too and decides.
                    SIGINT.store(false, Ordering::SeqCst);
                }
                Err(Errno::ECHILD) => return None,
                Err(e) => {
                    eprintln!("step: waitpid: {e:?}");
                    return None;
                }
            }
        }
    }

    /// Say that a shown call is blocked in the kernel (once).
    fn notice(&mut self, tid: Pid) {
        let Some(task) = self.tasks.get_mut(&tid) else {
            return;
        };
        let Some(call) = task.call.as_mut() else {
            return;
        };
        call.notice_at = None;
        if self.record.is_some() {
            return;
        }
        let state = std::fs::read_to_string(format!("/proc/{tid}/stat")).unwrap_or_default();
        let sleeping = state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'));
        if !sleeping {
            return;
        }
        let name = decode::name(call.nr);
        let why = match call.nr {
            libc::SYS_accept | libc::SYS_accept4 => "is waiting for a client: connect one now",
            libc::SYS_read | libc::SYS_recvfrom | libc::SYS_recvmsg => {
                "is waiting for bytes: nothing has arrived yet"
            }
            libc::SYS_connect => "is waiting for the handshake to finish",
            libc::SYS_poll
            | libc::SYS_ppoll
            | libc::SYS_select
            | libc::SYS_pselect6
            | libc::SYS_epoll_wait
            | libc::SYS_epoll_pwait
            | libc::SYS_io_uring_enter => "is waiting for an event",
            libc::SYS_wait4 => "is waiting for a child",
            _ => "is blocked in the kernel",
        };
        out(&format!("    … {} {name} {why}", who(tid, task.tgid)));
    }

    fn task(&mut self, tid: Pid) -> &mut Task {
        self.tasks
            .entry(tid)
            .or_insert_with(|| Task::new(tgid_of(tid)))
    }

    fn resume(&mut self, tid: Pid) {
        let sig = match self.tasks.get_mut(&tid) {
            Some(t) => {
                t.state = State::Running;
                t.sig.take()
            }
            None => None,
        };
        if let Err(e) = ptrace::syscall(tid, sig) {
            if e == Errno::ESRCH {
                // Gone (killed): its exit is reported by waitpid.
                return;
            }
            eprintln!("step: ptrace(PTRACE_SYSCALL, {tid}): {e:?}");
        }
    }

    fn handle(&mut self, ws: WaitStatus) {
        match ws {
            WaitStatus::PtraceSyscall(tid) => self.syscall_stop(tid),
            WaitStatus::PtraceEvent(tid, _, ev) => {
                if ev == Event::PTRACE_EVENT_CLONE as i32
                    || ev == Event::PTRACE_EVENT_FORK as i32
                    || ev == Event::PTRACE_EVENT_VFORK as i32
                {
                    self.adopt(tid);
                } else if ev == Event::PTRACE_EVENT_EXEC as i32 {
                    let tgid = self.task(tid).tgid;
                    self.frames.forget(tgid);
                }
                self.task(tid);
                self.resume(tid);
            }
            WaitStatus::Stopped(tid, sig) => {
                self.show_signal(tid, sig);
                self.task(tid).sig = Some(sig);
                self.resume(tid);
            }
            WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _) => self.gone(ws, pid),
            _ => {}
        }
    }

    /// A new thread or process from a clone/fork event of `tid`.
    fn adopt(&mut self, tid: Pid) {
        if let Ok(new) = ptrace::getevent(tid) {
            let new = Pid::from_raw(new as i32);
            self.tasks
                .entry(new)
                .or_insert_with(|| Task::new(tgid_of(new)));
        }
    }

    fn show_signal(&mut self, tid: Pid, sig: Signal) {
        if !self.started || self.record.is_some() {
            return;
        }
        let tgid = self.task(tid).tgid;
        let from = match ptrace::getsiginfo(tid) {
            // SAFETY: si_pid is valid for signals sent by a process or for SIGCHLD.
            Ok(info) if info.si_code <= 0 || sig == Signal::SIGCHLD => {
                let pid = unsafe { info.si_pid() };
                if pid > 0 {
                    format!(" (from pid {pid})")
                } else {
                    String::new()
                }
            }
            _ => String::new(),
        };
        out(&format!(
            "--- {} ---{from} {}",
            sig.as_str(),
            who(tid, tgid)
        ));
    }

    fn gone(&mut self, ws: WaitStatus, pid: Pid) {
        let Some(task) = self.tasks.remove(&pid) else {
            return;
        };
        if pid == task.tgid && self.started && self.record.is_none() {
            let how = match ws {
                WaitStatus::Exited(_, code) => format!("exited with {code}"),
                WaitStatus::Signaled(_, sig, _) => format!("killed by {}", sig.as_str()),
                _ => String::new(),
            };
            out(&format!("+++ {} {how} +++", who(pid, pid)));
        }
        if pid == self.main {
            self.status = Some(match ws {
                WaitStatus::Exited(_, code) => code,
                WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
                _ => 1,
            });
        }
    }

    fn syscall_stop(&mut self, tid: Pid) {
        let info = match ptrace::syscall_info(tid) {
            Ok(info) => info,
            Err(_) => return self.resume(tid),
        };
        match info.op {
            PTRACE_SYSCALL_INFO_ENTRY => {
                // SAFETY: op says the entry member is the valid one.
                let entry = unsafe { info.u.entry };
                let mut args = [0u64; 6];
                args.copy_from_slice(&entry.args);
                self.entry(tid, entry.nr as i64, args);
            }
            PTRACE_SYSCALL_INFO_EXIT => {
                // SAFETY: op says the exit member is the valid one.
                let exit = unsafe { info.u.exit };
                self.exit(tid, exit.sval);
            }
            _ => self.resume(tid),
        }
    }

    fn entry(&mut self, tid: Pid, nr: i64, args: [u64; 6]) {
        let task = self.task(tid);
        // The kernel restarting a call it interrupted: the same call, no new block.
        if let Some(restart) = task.restart.take() {
            if nr == restart.nr || nr == libc::SYS_restart_syscall {
                task.call = Some(restart);
                return self.resume(tid);
            }
            task.restart = Some(restart);
        }
        if !self.started && nr == libc::SYS_socket {
            self.started = true;
        }
        let log_line = (nr == libc::SYS_write || nr == libc::SYS_writev) && args[0] == 2;
        let show = self.started && self.stops.contains(&nr) && !log_line;
        self.task(tid).call = Some(Call {
            nr,
            args,
            shown: show,
            before: Vec::new(),
            notice_at: None,
            entered_ns: now_ns(),
            entry_text: String::new(),
        });
        if !show {
            return self.resume(tid);
        }
        let tgid = self.task(tid).tgid;
        let snap = Snapshot::take(tgid, &mut self.conns);
        if self.record.is_some() {
            let text = decode::entry(tid, nr, &args, &snap);
            if let Some(call) = self.task(tid).call.as_mut() {
                call.entry_text = text;
                call.entered_ns = now_ns();
            }
            return self.resume(tid);
        }
        let mut block = format!(
            "{} {}",
            who(tid, tgid),
            decode::entry(tid, nr, &args, &snap)
        );
        let lines = self.frames.lines(tgid, tid);
        for (i, line) in lines.iter().enumerate() {
            let label = if i + 1 < lines.len() {
                "in"
            } else if lines.len() > 1 {
                "from"
            } else {
                "at"
            };
            block.push_str(&format!("\n    {label} {line}"));
        }
        let view = snap.lines();
        for (i, (_, line)) in view.iter().enumerate() {
            block.push_str(&format!(
                "\n    {} {line}",
                if i == 0 { "kernel:" } else { "       " }
            ));
        }
        out(&block);
        if let Some(call) = self.task(tid).call.as_mut() {
            call.before = view;
        }
        let pause = match self.mode {
            Mode::Pause => true,
            Mode::Until(n) if n == nr => {
                self.mode = Mode::Pause;
                true
            }
            _ => false,
        };
        if pause && self.tty.is_some() {
            self.task(tid).state = State::Parked;
            self.hold_all(tid);
            self.prompt(nr);
            // What the kernel did while the prompt waited (a client's handshake, its FIN),
            // before the call runs.
            let now = Snapshot::take(tgid, &mut self.conns).lines();
            if let Some(call) = self.task(tid).call.as_mut() {
                let meanwhile = changes(&call.before, &now, "meanwhile:");
                if !meanwhile.is_empty() {
                    out(meanwhile.trim_start_matches('\n'));
                }
                call.before = now;
            }
            self.release();
        } else {
            self.resume(tid);
        }
        if let Some(call) = self.tasks.get_mut(&tid).and_then(|t| t.call.as_mut()) {
            call.notice_at = Some(Instant::now() + Duration::from_millis(300));
        }
    }

    fn exit(&mut self, tid: Pid, ret: i64) {
        let task = self.task(tid);
        let Some(call) = task.call.take() else {
            return self.resume(tid);
        };
        if RESTARTS.contains(&ret) {
            task.restart = Some(call);
            return self.resume(tid);
        }
        // A signal handler returning: a call it interrupted either restarts, or returns EINTR
        // (rt_sigreturn restores the program's rax: -EINTR then).
        if call.nr == libc::SYS_rt_sigreturn && ret == -(libc::EINTR as i64) {
            if let Some(broken) = task.restart.take() {
                self.result(tid, &broken, ret);
            }
        }
        if call.shown {
            self.result(tid, &call, ret);
        }
        self.resume(tid);
    }

    /// `[pid N] accept = 4<TCP ...>  peer ...`, then what changed in the kernel's view.
    fn result(&mut self, tid: Pid, call: &Call, ret: i64) {
        let tgid = self.task(tid).tgid;
        let snap = Snapshot::take(tgid, &mut self.conns);
        if let Some(file) = self.record.as_mut() {
            let exited = now_ns();
            let line = format!(
                "{}\t{}\t{tgid}\t{tid}\t{}\t{}\t{}\n",
                call.entered_ns,
                exited,
                decode::name(call.nr),
                call.entry_text.replace(['\t', '\n'], " "),
                decode::exit(tid, call.nr, &call.args, ret, &snap).replace(['\t', '\n'], " ")
            );
            let _ = file.write_all(line.as_bytes());
            return;
        }
        let mut text = format!(
            "{} {} = {}",
            who(tid, tgid),
            decode::name(call.nr),
            decode::exit(tid, call.nr, &call.args, ret, &snap)
        );
        if matches!(call.nr, libc::SYS_accept | libc::SYS_accept4) && ret >= 0 {
            if let Some(peer) = snap.sock(ret as i32).and_then(|s| s.remote) {
                text.push_str(&format!("  peer {peer}"));
            }
        }
        text.push_str(&changes(&call.before, &snap.lines(), "now:   "));
        out(&text);
    }

    /// Hold every thread and process but `except`: interrupt the running ones and collect
    /// their stops; what they stopped for is handled after the prompt.
    fn hold_all(&mut self, except: Pid) {
        let running: Vec<Pid> = self
            .tasks
            .iter()
            .filter(|(tid, t)| **tid != except && t.state == State::Running)
            .map(|(tid, _)| *tid)
            .collect();
        for tid in running {
            if ptrace::interrupt(tid).is_err() {
                // Already gone: its exit will come.
            }
        }
        while self.tasks.iter().any(|(_, t)| t.state == State::Running) {
            let ws = match waitpid(None::<Pid>, Some(WaitPidFlag::__WALL)) {
                Ok(ws) => ws,
                Err(Errno::EINTR) => {
                    if SIGINT.swap(false, Ordering::SeqCst) {
                        self.end(130);
                    }
                    continue;
                }
                Err(_) => return,
            };
            match ws {
                WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _) => self.gone(ws, pid),
                WaitStatus::PtraceEvent(tid, _, ev) => {
                    if ev == Event::PTRACE_EVENT_CLONE as i32
                        || ev == Event::PTRACE_EVENT_FORK as i32
                        || ev == Event::PTRACE_EVENT_VFORK as i32
                    {
                        self.adopt(tid);
                    } else if ev == Event::PTRACE_EVENT_EXEC as i32 {
                        let tgid = self.task(tid).tgid;
                        self.frames.forget(tgid);
                    }
                    self.task(tid).state = State::Parked;
                }
                WaitStatus::Stopped(tid, sig) => {
                    self.show_signal(tid, sig);
                    let t = self.task(tid);
                    t.sig = Some(sig);
                    t.state = State::Parked;
                }
                WaitStatus::PtraceSyscall(tid) => {
                    let t = self.task(tid);
                    t.deferred = Some(ws);
                    t.state = State::Parked;
                }
                _ => {}
            }
        }
    }

    /// Resume everyone held; stops that came while holding are handled now, in order.
    fn release(&mut self) {
        let parked: Vec<Pid> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.state == State::Parked)
            .map(|(tid, _)| *tid)
            .collect();
        for tid in parked {
            match self.tasks.get_mut(&tid).and_then(|t| t.deferred.take()) {
                Some(ws) => self.queue.push_back(ws),
                None => self.resume(tid),
            }
        }
    }

    /// Answer at the prompt, on the terminal.
    fn tell(&mut self, text: &str) {
        if let Some(tty) = self.tty.as_mut() {
            let _ = writeln!(tty, "{text}");
        }
    }

    /// Read one command from the terminal; returns when the call may run.
    fn prompt(&mut self, nr: i64) {
        loop {
            let Some(tty) = self.tty.as_mut() else { return };
            // A line typed ahead was echoed already: end the prompt's line ourselves.
            let mut pfd = libc::pollfd {
                fd: tty.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, no wait.
            let typed_ahead = unsafe { libc::poll(&mut pfd, 1, 0) } > 0;
            let end = if typed_ahead { "\n" } else { "" };
            let _ = write!(tty, "step [Enter · c NAME · r · q · ?]> {end}");
            let _ = tty.flush();
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            let eof = loop {
                match tty.read(&mut byte) {
                    Ok(0) => break true,
                    Ok(_) if byte[0] == b'\n' => break false,
                    Ok(_) => line.push(byte[0]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                        if SIGINT.swap(false, Ordering::SeqCst) {
                            let _ = writeln!(tty);
                            self.end(130);
                        }
                    }
                    Err(_) => break true,
                }
            };
            if eof {
                out("step: the terminal closed: running free");
                self.mode = Mode::Free;
                return;
            }
            let line = String::from_utf8_lossy(&line).trim().to_string();
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (None, _) => return,
                (Some("c"), Some(name)) => match decode::number(name) {
                    Some(n) => {
                        self.mode = Mode::Until(n);
                        if !self.stops.contains(&n) {
                            self.stops.push(n);
                        }
                        return;
                    }
                    None => self.tell(&format!("step: no system call named {name}")),
                },
                (Some("r"), None) => {
                    self.mode = Mode::Free;
                    return;
                }
                (Some("q"), None) => {
                    out("step: ending the lesson (q)");
                    self.end(0);
                }
                (Some("?"), None) => self.tell(HELP),
                _ => self.tell(&format!("step: not a command: {line}\n{HELP}")),
            }
            let _ = nr;
        }
    }

    /// End the lesson: kill every process of it, reap everything, exit with `code`.
    fn end(&mut self, code: i32) -> ! {
        let mut groups: Vec<Pid> = self.tasks.values().map(|t| t.tgid).collect();
        groups.sort();
        groups.dedup();
        for pid in groups {
            let _ = signal::kill(pid, Signal::SIGKILL);
        }
        // Reap until none is left (ECHILD): the killed lesson, its threads, its children.
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(_) | Err(Errno::EINTR) = waitpid(None::<Pid>, Some(WaitPidFlag::__WALL)) {
            if Instant::now() > deadline {
                break;
            }
        }
        std::process::exit(code);
    }
}

/// The lines of the kernel view that are new or changed, the fds that went away, then what
/// the kernel holds with no fd (fd -1) that is new, each on its own line, the first one
/// labelled.
fn changes(before: &[(i32, String)], after: &[(i32, String)], label: &str) -> String {
    let new = |fdless: bool| {
        after
            .iter()
            .filter(move |(fd, line)| (*fd < 0) == fdless && !before.iter().any(|(_, l)| l == line))
            .map(|(_, line)| line.clone())
    };
    let mut lines: Vec<String> = new(false).collect();
    for (fd, _) in before {
        if *fd >= 0 && !after.iter().any(|(f, _)| f == fd) {
            lines.push(format!("{fd} closed"));
        }
    }
    lines.extend(new(true));
    let pad = " ".repeat(label.chars().count());
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| format!("\n    {} {l}", if i == 0 { label } else { &pad }))
        .collect()
}
