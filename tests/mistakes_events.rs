//! `--mistake NAME` for the event-loop lessons 06–11 and 15: each test runs one scenario twice,
//! with the mistake switched on (the failure is observed, as a count) and off (the same
//! scenario passes). Where the mistake shows only when events pile up, the test stops the
//! server (SIGSTOP), lets the events arrive, and lets it go on (SIGCONT): what the server
//! finds on waking is then the same every time.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::single_thread::nofile_command;
use common::{cpu_ticks, proc_state, server_command, wait_for, Server, Traced, DEADLINE};

/// `exe -p 0`, plus `--mistake NAME` when `mistake` is on.
fn args(name: &'static str, on: bool) -> Vec<&'static str> {
    if on {
        vec!["--mistake", name]
    } else {
        Vec::new()
    }
}

/// Starts `cmd` and, with the mistake on, checks the banner's extra line names it.
fn spawn(cmd: Command, name: &str, on: bool) -> Server {
    let server = Server::spawn(cmd);
    if on {
        let note = server
            .log
            .wait_line("the mistake's banner line", |l| l.contains("MISTAKE ON"));
        assert!(note.contains(&format!("--mistake {name}")), "{note}");
    }
    server
}

fn start(exe: &str, name: &'static str, on: bool) -> Server {
    spawn(server_command(exe, &args(name, on)), name, on)
}

/// Runs `during` while process `pid` is stopped (SIGSTOP), then lets it go on (SIGCONT).
fn while_stopped<T>(pid: u32, during: impl FnOnce() -> T) -> T {
    signal(pid, libc::SIGSTOP);
    wait_for("the server to stop", DEADLINE, || {
        (proc_state(pid) == Some('T')).then_some(())
    });
    let value = during();
    signal(pid, libc::SIGCONT);
    value
}

/// The same for a lesson under strace, where state `t` may be a mere syscall stop: it
/// waits for strace to write that the group stop happened.
fn while_stopped_traced<T>(traced: &Traced, during: impl FnOnce() -> T) -> T {
    let stops = || {
        let text = std::fs::read_to_string(&traced.path).unwrap_or_default();
        text.matches("stopped by SIGSTOP").count()
    };
    let before = stops();
    let pid = traced.lesson_pid();
    signal(pid, libc::SIGSTOP);
    wait_for("the traced server to stop", DEADLINE, || {
        (stops() > before && proc_state(pid) == Some('t')).then_some(())
    });
    let value = during();
    signal(pid, libc::SIGCONT);
    value
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child process of this test.
    unsafe { libc::kill(pid as i32, sig) };
}

/// A connection read line by line, where EOF, a reset or a timeout is an answer too.
struct Peer {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Peer {
    fn connect(addr: SocketAddr) -> Peer {
        let stream = wait_for("connect", DEADLINE, || TcpStream::connect(addr).ok());
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Peer { stream, reader }
    }

    /// The next line, or None if the connection ended (or nothing came in time).
    fn line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(_) if line.ends_with(b"\n") => {
                line.pop();
                Some(String::from_utf8_lossy(&line).into_owned())
            }
            _ => None,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// What has arrived without waiting: a whole line, or None.
    fn line_now(&mut self) -> Option<String> {
        self.stream.set_nonblocking(true).unwrap();
        let has = matches!(self.reader.fill_buf(), Ok(b) if b.contains(&b'\n'));
        self.stream.set_nonblocking(false).unwrap();
        if has {
            self.line()
        } else {
            None
        }
    }
}

fn reversed(line: &str) -> String {
    line.chars().rev().collect()
}

/// Waits for one line from each peer until all have answered or none has for `quiet`;
/// returns each peer's line (None: no answer).
fn answers(peers: &mut [Peer], quiet: Duration) -> Vec<Option<String>> {
    let mut got: Vec<Option<String>> = vec![None; peers.len()];
    let mut last = Instant::now();
    while got.iter().any(Option::is_none) && last.elapsed() < quiet {
        for (peer, slot) in peers.iter_mut().zip(got.iter_mut()) {
            if slot.is_none() {
                if let Some(line) = peer.line_now() {
                    *slot = Some(line);
                    last = Instant::now();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    got
}

// ---------------------------------------------------------------------------------------
// 06 no-eagain
// ---------------------------------------------------------------------------------------

/// Clients that connect and take their time before typing: how many were dropped (EOF
/// before the welcome, or before the reply to their line).
fn lesson_06_dropped(on: bool) -> usize {
    let server = start(exe!("lesson-06"), "no-eagain", on);
    let mut dropped = 0;
    for i in 0..5 {
        let mut peer = Peer::connect(server.addr);
        if peer.line().as_deref() != Some("Welcome buddy!") {
            dropped += 1;
            continue;
        }
        peer.send(format!("slow {i}\n").as_bytes());
        if peer.line() != Some(format!("{i} wols")) {
            dropped += 1;
        }
    }
    dropped
}

#[test]
fn lesson_06_no_eagain_drops_every_client_that_is_not_typing_yet() {
    assert_eq!(lesson_06_dropped(true), 5, "with --mistake no-eagain");
    assert_eq!(lesson_06_dropped(false), 0, "without the mistake");
}

// ---------------------------------------------------------------------------------------
// 07 no-fdsetsize-check
// ---------------------------------------------------------------------------------------

/// What happened when clients kept connecting until one landed on fd ≥ 1024.
#[derive(Debug)]
struct Wall {
    welcomed: usize,
    refused: usize,
    /// The first client still gets its replies afterwards.
    first_served: bool,
    /// The server process exited.
    died: bool,
}

fn lesson_07_wall(on: bool) -> Wall {
    // Room for ~1100 sockets here and in the lesson (which inherits the limit).
    let rl = libc::rlimit {
        rlim_cur: 4096,
        rlim_max: 4096,
    };
    // SAFETY: setrlimit on this test process; the hard limit here is at least 4096 or the
    // call fails and the assertion says so.
    let raised = unsafe {
        let mut old = std::mem::zeroed::<libc::rlimit>();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut old);
        old.rlim_cur >= 4096 || libc::setrlimit(libc::RLIMIT_NOFILE, &rl) == 0
    };
    assert!(
        raised,
        "RLIMIT_NOFILE of the test could not be raised to 4096"
    );
    let cmd = nofile_command(
        exe!("lesson-07"),
        &args("no-fdsetsize-check", on),
        4096,
        4096,
    );
    let mut server = spawn(cmd, "no-fdsetsize-check", on);
    let mut first = Peer::connect(server.addr);
    assert_eq!(first.line().as_deref(), Some("Welcome buddy!"));
    first.send(b"first\n");
    assert_eq!(first.line().as_deref(), Some("tsrif"));
    let mut held = Vec::new();
    let (mut welcomed, mut refused) = (1, 0);
    // The lesson's own fds (0–2, the stop pipe, the listener, the first client) come
    // before; 1100 connections go well past fd 1024.
    for _ in 0..1100 {
        let Ok(stream) = TcpStream::connect(server.addr) else {
            break; // the server is gone: nobody listens any more
        };
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut peer = Peer {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        };
        match peer.line().as_deref() {
            Some("Welcome buddy!") => welcomed += 1,
            Some("error: server full (FD_SETSIZE)") => {
                refused += 1;
                break;
            }
            _ => break, // the connection ended without a word
        }
        held.push(peer);
    }
    let died = server.wait_exit(Duration::from_millis(500)).is_some();
    first.send(b"again\n");
    let first_served = first.line().as_deref() == Some("niaga");
    Wall {
        welcomed,
        refused,
        first_served,
        died,
    }
}

/// The one mistake meant to die: nix's FdSet::insert panics at fd 1024 (C would write past
/// the fd_set), and every client loses its connection; the check refuses only the newcomer.
#[test]
fn lesson_07_no_fdsetsize_check_kills_the_server_for_everyone() {
    let wall = lesson_07_wall(true);
    assert!(wall.died, "with the mistake the server dies: {wall:?}");
    assert!(
        !wall.first_served,
        "and the first client is cut off: {wall:?}"
    );
    assert_eq!(wall.refused, 0, "{wall:?}");
    assert!(wall.welcomed > 1000, "{wall:?}");

    let wall = lesson_07_wall(false);
    assert!(!wall.died, "without the mistake the server lives: {wall:?}");
    assert_eq!(
        wall.refused, 1,
        "the client on fd 1024 is refused: {wall:?}"
    );
    assert!(
        wall.first_served,
        "and the first client is still served: {wall:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 08 skip-after-remove
// ---------------------------------------------------------------------------------------

/// Five times: the oldest client leaves while the newest (the last pollfd, which
/// swap_remove moves into the hole) has a line waiting. Returns (times the loop served the
/// two in that order, times a poll came between the leaver's close and the newest's read:
/// the newest was skipped for a round).
fn lesson_08_skips(on: bool) -> (usize, usize) {
    let traced = Traced::start(exe!("lesson-08"), &args("skip-after-remove", on));
    let addr = traced.server.addr;
    let welcome = |peer: &mut Peer| assert_eq!(peer.line().as_deref(), Some("Welcome buddy!"));
    let mut peers: Vec<Peer> = (0..4).map(|_| Peer::connect(addr)).collect();
    peers.iter_mut().for_each(welcome);
    let mut leavers = Vec::new();
    for attempt in 0..5 {
        // While the server is stopped: the oldest client closes and the newest sends a
        // line, so one poll reports both.
        let oldest = peers.remove(0);
        leavers.push(oldest.stream.local_addr().unwrap());
        while_stopped_traced(&traced, || {
            drop(oldest);
            peers
                .last_mut()
                .unwrap()
                .send(format!("n{attempt}\n").as_bytes());
        });
        let newest = peers.last_mut().unwrap();
        assert_eq!(newest.line(), Some(format!("{attempt}n")));
        let mut fresh = Peer::connect(addr);
        welcome(&mut fresh);
        peers.push(fresh);
    }
    let trace = traced.stop(libc::SIGINT);
    let lines = trace.lines();
    let (mut in_order, mut skipped) = (0, 0);
    for (attempt, leaver) in leavers.iter().enumerate() {
        // close(7<TCP:[127.0.0.1:PORT->LEAVER]>), then read(9<...>, "n0\n", ...).
        let closed = format!("->{leaver}]");
        let line = format!("\"n{attempt}\\n\"");
        let call = |l: &str, name: &str| common::syscall_of(l).as_deref() == Some(name);
        let close = lines
            .iter()
            .position(|l| call(l, "close") && l.contains(&closed));
        let read = lines
            .iter()
            .position(|l| call(l, "read") && l.contains(&line));
        if let (Some(close), Some(read)) = (close, read) {
            if close < read {
                in_order += 1;
                skipped += usize::from(lines[close..read].iter().any(|l| call(l, "poll")));
            }
        }
    }
    eprintln!("lesson 08, mistake {on}: {in_order} leaver-then-newest, {skipped} skipped");
    (in_order, skipped)
}

#[test]
fn lesson_08_skip_after_remove_leaves_a_ready_client_for_the_next_round() {
    let (in_order, skipped) = lesson_08_skips(true);
    assert!(
        in_order >= 1,
        "the scenario happened: {in_order} of 5 times"
    );
    assert!(
        skipped >= 1,
        "with the mistake the newest client is skipped: {skipped} of {in_order} times"
    );
    let (in_order, skipped) = lesson_08_skips(false);
    assert!(
        in_order >= 1,
        "the scenario happened: {in_order} of 5 times"
    );
    assert_eq!(skipped, 0, "without the mistake nobody is skipped");
}

// ---------------------------------------------------------------------------------------
// 09 no-rescan
// ---------------------------------------------------------------------------------------

/// 40 clients send a line each while the server is stopped, its real-time signal queue
/// limited to 4 (RLIMIT_SIGPENDING): most signals do not fit, the kernel raises SIGIO.
/// Returns (overflows logged, clients without a reply).
fn lesson_09_unanswered(on: bool) -> (usize, usize) {
    let mut cmd = server_command(exe!("lesson-09"), &args("no-rescan", on));
    // The limit is the lesson's, but the count is its user's (every process of that uid,
    // root included): run as a user of its own when the test is root, so that no other
    // process's pending signals (another lesson 09 test, say) use up the 4.
    let uid = 20_000 + std::process::id() % 20_000;
    // SAFETY: pre_exec runs in the forked child before exec; setrlimit, setgroups, setgid
    // and setuid are async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            let rl = libc::rlimit {
                rlim_cur: 4,
                rlim_max: 4,
            };
            if libc::setrlimit(libc::RLIMIT_SIGPENDING, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getuid() == 0
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = spawn(cmd, "no-rescan", on);
    let mut peers = Vec::new();
    for _ in 0..40 {
        // One at a time: a single event in the queue at once, which always fits.
        let mut peer = Peer::connect(server.addr);
        assert_eq!(peer.line().as_deref(), Some("Welcome buddy!"));
        peers.push(peer);
    }
    while_stopped(server.pid(), || {
        for (i, peer) in peers.iter_mut().enumerate() {
            peer.send(format!("line {i}\n").as_bytes());
        }
    });
    let got = answers(&mut peers, Duration::from_secs(2));
    let mut unanswered = 0;
    for (i, line) in got.iter().enumerate() {
        match line {
            Some(line) => assert_eq!(*line, reversed(&format!("line {i}"))),
            None => unanswered += 1,
        }
    }
    let overflows = server.log.count(|l| l.contains("signal queue overflowed"));
    eprintln!("lesson 09, mistake {on}: {overflows} overflows, {unanswered} of 40 unanswered");
    (overflows, unanswered)
}

#[test]
fn lesson_09_no_rescan_leaves_the_clients_whose_signals_were_lost_hanging() {
    let (overflows, unanswered) = lesson_09_unanswered(true);
    assert!(overflows >= 1, "the queue overflowed");
    assert!(
        unanswered >= 10,
        "with the mistake: {unanswered} of 40 clients got no reply"
    );
    let (overflows, unanswered) = lesson_09_unanswered(false);
    assert!(overflows >= 1, "the queue overflowed");
    assert_eq!(
        unanswered, 0,
        "without the mistake every client is answered"
    );
}

// ---------------------------------------------------------------------------------------
// 10 blocking-handler, epollout-always
// ---------------------------------------------------------------------------------------

/// Is `pid` inside a sleep call now (/proc/PID/syscall names the call it is blocked in)?
fn sleeping(pid: u32) -> bool {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    let nr = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<i64>().ok());
    nr == Some(libc::SYS_clock_nanosleep) || nr == Some(libc::SYS_nanosleep)
}

/// Client A sends a few bytes (its handler runs), then client B connects: how many times
/// B was seen waiting for its welcome while the server sat in a sleep call, and whether
/// B got its welcome in the end.
fn lesson_10_stalls(on: bool) -> (usize, bool) {
    let server = start(exe!("lesson-10"), "blocking-handler", on);
    let pid = server.pid();
    let mut a = Peer::connect(server.addr);
    assert_eq!(a.line().as_deref(), Some("Welcome buddy!"));
    let reads = || {
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        io.lines()
            .find_map(|l| l.strip_prefix("syscr:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = reads();
    a.send(b"half a line");
    // The server has read A's bytes (and called A's handler) once its read count moves.
    wait_for("the server to read A's bytes", DEADLINE, || {
        (reads() > before).then_some(())
    });
    let mut b = Peer::connect(server.addr);
    let mut stalled = 0;
    let mut welcomed = false;
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        let asleep = sleeping(pid);
        if let Some(line) = b.line_now() {
            welcomed = line == "Welcome buddy!";
            break;
        }
        stalled += usize::from(asleep);
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!("lesson 10, blocking handler {on}: {stalled} stalled samples");
    (stalled, welcomed)
}

#[test]
fn lesson_10_blocking_handler_stalls_every_other_client() {
    let (stalled, welcomed) = lesson_10_stalls(true);
    assert!(welcomed, "B is welcomed once the handler returns");
    assert!(
        stalled >= 5,
        "with the mistake B waits while the loop sleeps in A's handler: {stalled} samples"
    );
    let (stalled, welcomed) = lesson_10_stalls(false);
    assert!(welcomed);
    assert_eq!(
        stalled, 0,
        "without the mistake the loop never sleeps in a handler"
    );
}

/// CPU ticks the server uses over one second with one idle client connected.
fn lesson_10_idle_ticks(on: bool) -> u64 {
    let server = start(exe!("lesson-10"), "epollout-always", on);
    let mut idle = Peer::connect(server.addr);
    assert_eq!(idle.line().as_deref(), Some("Welcome buddy!"));
    let before = cpu_ticks(server.pid());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let used = cpu_ticks(server.pid()) - before;
    eprintln!("lesson 10, epollout always {on}: {used} ticks");
    idle.send(b"still there\n");
    assert_eq!(idle.line().as_deref(), Some("ereht llits"));
    used
}

#[test]
fn lesson_10_epollout_always_spins_with_an_idle_client() {
    // A spinning process gets a good share of a core even on a busy machine (as in
    // tests/single_thread.rs): 10 ticks of 100 is far below a spin, far above a sleep.
    let ticks = lesson_10_idle_ticks(true);
    assert!(ticks >= 10, "with the mistake: {ticks} ticks in 1 s idle");
    let ticks = lesson_10_idle_ticks(false);
    assert!(ticks <= 3, "without the mistake: {ticks} ticks in 1 s idle");
}

/// One client sends 1,024 lines (64 KiB, which the socket buffers take at once) while
/// the server is stopped, then reads the replies: how many never came.
fn lesson_10_unanswered_lines(on: bool) -> usize {
    const LINES: usize = 1024;
    let server = start(exe!("lesson-10"), "edge-triggered", on);
    let mut peer = Peer::connect(server.addr);
    assert_eq!(peer.line().as_deref(), Some("Welcome buddy!"));
    let line = format!("{}\n", "e".repeat(63));
    let mut writer = peer.stream.try_clone().unwrap();
    // A thread of their own all the same: were the buffers smaller, the writes would
    // block while the server is stopped, and the wait below would say so.
    let sender = std::thread::spawn(move || {
        for _ in 0..LINES {
            writer.write_all(line.as_bytes()).unwrap();
        }
    });
    while_stopped(server.pid(), || {
        wait_for("all lines handed to the kernel", DEADLINE, || {
            sender.is_finished().then_some(())
        });
    });
    sender.join().unwrap();
    peer.stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut answered = 0;
    while answered < LINES && peer.line().is_some() {
        answered += 1;
    }
    eprintln!("lesson 10, edge triggered {on}: {answered} of {LINES} lines answered");
    LINES - answered
}

#[test]
fn lesson_10_edge_triggered_with_one_read_per_event_leaves_lines_unanswered() {
    let unanswered = lesson_10_unanswered_lines(true);
    assert!(
        unanswered >= 1,
        "with the mistake: {unanswered} lines unanswered"
    );
    let unanswered = lesson_10_unanswered_lines(false);
    assert_eq!(unanswered, 0, "without the mistake every line is answered");
}

// ---------------------------------------------------------------------------------------
// 11 reuse-buffer
// ---------------------------------------------------------------------------------------

/// 32 clients each send a distinct line while the server is stopped, so that their recvs
/// complete in one io_uring_enter; up to `attempts` times. Returns the replies that were
/// wrong or missing.
fn lesson_11_corrupted(on: bool, attempts: usize) -> usize {
    let server = start(exe!("lesson-11"), "reuse-buffer", on);
    let mut peers: Vec<Peer> = (0..32).map(|_| Peer::connect(server.addr)).collect();
    for peer in &mut peers {
        assert_eq!(peer.line().as_deref(), Some("Welcome buddy!"));
    }
    let mut corrupted = 0;
    for attempt in 0..attempts {
        while_stopped(server.pid(), || {
            for (i, peer) in peers.iter_mut().enumerate() {
                peer.send(format!("client {i:02} line {attempt}{}\n", "x".repeat(i)).as_bytes());
            }
        });
        let got = answers(&mut peers, Duration::from_secs(2));
        for (i, line) in got.iter().enumerate() {
            let sent = format!("client {i:02} line {attempt}{}", "x".repeat(i));
            corrupted += usize::from(line.as_deref() != Some(reversed(&sent).as_str()));
        }
        if corrupted > 0 {
            break; // seen it: the connections are out of step from here on
        }
    }
    eprintln!("lesson 11, mistake {on}: {corrupted} of 32 replies wrong");
    corrupted
}

#[test]
fn lesson_11_reuse_buffer_gives_clients_each_others_replies() {
    let corrupted = lesson_11_corrupted(true, 5);
    assert!(
        corrupted >= 1,
        "with the mistake: {corrupted} replies wrong"
    );
    let corrupted = lesson_11_corrupted(false, 3);
    assert_eq!(corrupted, 0, "without the mistake every reply is right");
}

// ---------------------------------------------------------------------------------------
// 15 no-rearm
// ---------------------------------------------------------------------------------------

/// Lesson 15 with a ring of `bufs` buffers: 32 clients each send a distinct line while the
/// server is stopped, `rounds` times, so that their recvs all find bytes in one
/// io_uring_enter and the ring runs dry (ENOBUFS ends those multishot recvs). Returns how
/// many clients stopped getting replies, and the replies that arrived.
fn lesson_15_hung(extra: &[&'static str], rounds: usize) -> (usize, usize) {
    let on = extra.contains(&"--mistake");
    let server = spawn(server_command(exe!("lesson-15"), extra), "no-rearm", on);
    let mut peers: Vec<Peer> = (0..32).map(|_| Peer::connect(server.addr)).collect();
    for peer in &mut peers {
        assert_eq!(peer.line().as_deref(), Some("Welcome buddy!"));
    }
    let mut hung = vec![false; peers.len()];
    let mut replies = 0;
    for round in 0..rounds {
        while_stopped(server.pid(), || {
            for (i, peer) in peers.iter_mut().enumerate() {
                peer.send(format!("client {i:02} round {round}\n").as_bytes());
            }
        });
        let got = answers(&mut peers, Duration::from_secs(2));
        for (i, line) in got.iter().enumerate() {
            let sent = format!("client {i:02} round {round}");
            if hung[i] || line.as_deref() != Some(reversed(&sent).as_str()) {
                hung[i] = true;
            } else {
                replies += 1;
            }
        }
    }
    let hung = hung.iter().filter(|&&h| h).count();
    eprintln!("lesson 15 {extra:?}: {hung} of 32 clients hung, {replies} replies");
    (hung, replies)
}

#[test]
fn lesson_15_no_rearm_leaves_clients_hanging_when_the_ring_runs_dry() {
    let (hung, _) = lesson_15_hung(&["--bufs", "4", "--mistake", "no-rearm"], 3);
    assert!(hung >= 1, "with the mistake: {hung} clients hung");
    let (hung, replies) = lesson_15_hung(&["--bufs", "4"], 3);
    assert_eq!(hung, 0, "without the mistake every client is answered");
    assert_eq!(replies, 32 * 3);
}
