//! Lessons 09–11 and 15, where the kernel tells the server what happened: signal-driven I/O
//! (F_SETSIG, SIGIO on overflow), an epoll reactor, and io_uring completions. Load,
//! backpressure, EMFILE and fd hygiene cases, and each lesson's strace signature.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{echo_suite, load, Client, Server, Traced, DEADLINE};

/// A client writes 8 MiB of lines without reading, so the server's send buffer fills,
/// its sends come back partial (or EAGAIN), and it stops reading at the backpressure mark.
/// Then the client reads: every reply must arrive, in order, and after the client's FIN
/// the server flushes the rest and closes. Data lost or reordered on a partial send fails.
fn slow_reader_gets_every_reply(server: &Server) {
    const LINES: usize = 200_000;
    let mut c = server.connect();
    c.expect_welcome();
    let mut stream = c.stream.try_clone().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    let writer = thread::spawn(move || {
        let mut chunk = String::new();
        for i in 0..LINES {
            chunk.push_str(&format!("line {i:06} abcdefghijklmnopqrstuvwxyz\n"));
            if chunk.len() > 64 * 1024 || i == LINES - 1 {
                stream.write_all(chunk.as_bytes()).expect("write lines");
                counter.fetch_add(chunk.len(), Ordering::SeqCst);
                chunk.clear();
            }
        }
        stream.shutdown(std::net::Shutdown::Write).unwrap();
    });
    // Wait until the writer stalls (every buffer on the way is full) or is done.
    let start = Instant::now();
    let mut last = (usize::MAX, Instant::now());
    while !writer.is_finished() {
        let now = written.load(Ordering::SeqCst);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(200) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "the writer never stalled");
        thread::sleep(Duration::from_millis(10));
    }
    let mut reader = BufReader::new(c.stream.try_clone().unwrap());
    let mut line = String::new();
    for i in 0..LINES {
        line.clear();
        reader.read_line(&mut line).expect("read a reply");
        let expected: String = format!("line {i:06} abcdefghijklmnopqrstuvwxyz")
            .chars()
            .rev()
            .collect();
        assert_eq!(line.trim_end_matches('\n'), expected, "reply {i}");
    }
    writer.join().unwrap();
    line.clear();
    assert_eq!(
        reader.read_line(&mut line).unwrap(),
        0,
        "EOF after the last reply"
    );
    server
        .log
        .wait_line("EOF logged", |l| l.contains("left without q"));
}

/// One client under strace: welcome, one round trip, `q`, the close; then the trace.
/// Before each step it waits until the lesson sleeps in its waiting call (under strace
/// the lesson is slow, and could otherwise find the next line already there and read it
/// without waiting for the kernel to tell it).
fn traced_session(exe: &str) -> common::Trace {
    traced_session_of(Traced::start(exe, &[]))
}

/// The same session, traced as `traced` is.
fn traced_session_of(traced: Traced) -> common::Trace {
    let pid = traced.lesson_pid();
    let asleep = || {
        common::wait_for("the lesson to sleep", DEADLINE, || {
            (common::proc_state(pid) == Some('S')).then_some(())
        })
    };
    asleep();
    let mut c = Client::connect(traced.server.addr);
    c.expect_welcome();
    asleep();
    assert_eq!(c.round_trip("kernel"), "lenrek");
    asleep();
    c.send("q\n");
    assert!(c.closed());
    traced
        .server
        .log
        .wait_line("disconnect", |l| l.starts_with("client disconnected"));
    traced.stop(libc::SIGTERM)
}

/// The cases lessons 09–11 share, with the number of concurrent clients and rounds.
macro_rules! single_threaded_cases {
    ($module:ident, $bin:literal, $clients:expr, $rounds:expr) => {
        mod $module {
            use super::*;

            fn start() -> Server {
                Server::start(exe!($bin), &[])
            }

            #[test]
            fn concurrent_clients_then_fds_steady() {
                let server = start();
                load::round_trips(server.addr, $clients, $rounds);
                echo_suite::fd_count_steady(&server, 30);
            }

            #[test]
            fn slow_reader_gets_every_reply() {
                super::slow_reader_gets_every_reply(&start());
            }

            #[test]
            fn partial_line_holder() {
                echo_suite::partial_line_holder(&start(), Duration::from_millis(300));
            }

            #[test]
            fn backpressure() {
                echo_suite::backpressure(&start(), 64);
            }

            #[test]
            fn emfile() {
                echo_suite::emfile(exe!($bin), &[], 64);
            }

            /// Ctrl-C closes the clients, prints the summary last and exits 0.
            #[test]
            fn stops_on_ctrl_c() {
                echo_suite::stops_on_ctrl_c(exe!($bin));
            }
        }
    };
}

single_threaded_cases!(lesson_09, "lesson-09", 500, 20);
single_threaded_cases!(lesson_10, "lesson-10", 5000, 3);
single_threaded_cases!(lesson_11, "lesson-11", 500, 20);
single_threaded_cases!(lesson_15, "lesson-15", 500, 20);

// --------------------------------------------------------------------------------------
// Lesson 10: epoll, EventMachine style.
// --------------------------------------------------------------------------------------

#[test]
fn lesson_10_banner_says_rlimit_raised() {
    let server = Server::start(exe!("lesson-10"), &[]);
    server
        .log
        .wait_line("the RLIMIT_NOFILE note", |l| l.contains("RLIMIT_NOFILE"));
}

/// The full 10,000, run by hand (`cargo nextest run --test kernel_notifies --run-ignored
/// only lesson_10_serves_10000`): 10,000 clients at once need 20,000 fds between client
/// and server, more than a CI runner's hard limit may allow.
#[test]
#[ignore]
fn lesson_10_serves_10000_concurrent_clients() {
    let server = Server::start(exe!("lesson-10"), &[]);
    load::round_trips(server.addr, 10_000, 3);
}

#[test]
fn lesson_10_trace_epoll() {
    let trace = traced_session(exe!("lesson-10"));
    let wait = if trace.calls().iter().any(|c| c == "epoll_pwait") {
        "epoll_pwait"
    } else {
        "epoll_wait"
    };
    trace.assert_in_order(&[
        "socket",
        "bind",
        "listen",
        "epoll_create1",
        "epoll_ctl",
        wait,
        "accept4",
        "epoll_ctl",
        "write",
        wait,
        "read",
        "write",
        "close",
    ]);
    trace.assert_absent(&["poll", "ppoll", "select", "pselect6"]);
    assert!(trace.text.contains("EPOLL_CTL_ADD"));
    // Every reply fit in the send buffer at once, so EPOLLOUT was never asked for: it is
    // watched only while output is pending.
    let ctls = trace.lines_of("epoll_ctl").join("\n");
    assert!(
        !ctls.contains("EPOLLOUT"),
        "EPOLLOUT watched needlessly:\n{ctls}"
    );
}

// --------------------------------------------------------------------------------------
// Lesson 09: signal-driven I/O.
// --------------------------------------------------------------------------------------

/// With room for only a few queued signals (RLIMIT_SIGPENDING, set before exec), many
/// clients at once overflow the real-time queue: the kernel falls back to plain SIGIO,
/// the server must say it rescans, and every client must still get every reply.
#[test]
fn lesson_09_signal_queue_overflow_rescans() {
    let mut cmd = common::server_command(exe!("lesson-09"), &[]);
    // SAFETY: pre_exec runs in the forked child before exec; setrlimit is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let rl = libc::rlimit {
                rlim_cur: 4,
                rlim_max: 4,
            };
            if libc::setrlimit(libc::RLIMIT_SIGPENDING, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::spawn(cmd);
    load::round_trips(server.addr, 300, 10);
    server.log.wait_line("a rescan after SIGIO", |l| {
        l.starts_with("signal queue overflowed (SIGIO): rescanning")
    });
    // And the server is still fine for a newcomer.
    let mut c = server.connect();
    c.expect_welcome();
    assert_eq!(c.round_trip("after the storm"), "mrots eht retfa");
}

#[test]
fn lesson_09_trace_signals() {
    let trace = traced_session(exe!("lesson-09"));
    trace.assert_in_order(&[
        "socket",
        "bind",
        "listen",
        "fcntl",
        "fcntl",
        "fcntl",
        "rt_sigtimedwait",
        "accept4",
        "fcntl",
        "fcntl",
        "fcntl",
        "write",
        "rt_sigtimedwait",
        "read",
        "write",
        "close",
    ]);
    trace.assert_absent(&[
        "poll",
        "ppoll",
        "select",
        "pselect6",
        "epoll_wait",
        "epoll_pwait",
        "epoll_create1",
    ]);
    let fcntls = trace.lines_of("fcntl").join("\n");
    // strace spells O_ASYNC by its old name, FASYNC.
    for flag in ["F_SETOWN", "F_SETSIG", "FASYNC"] {
        assert!(fcntls.contains(flag), "no {flag} in:\n{fcntls}");
    }
    // si_fd at work: a signal's siginfo names the client's socket. (strace does not know
    // that a real-time signal sent by F_SETSIG carries SIGPOLL fields, and shows si_fd as
    // si_int; si_band appears as si_pid.)
    let accepted = trace
        .lines_of("accept4")
        .into_iter()
        .find_map(|l| {
            l.split(") = ")
                .nth(1)?
                .split('<')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .expect("an accepted fd");
    let waits = trace.lines_of("rt_sigtimedwait").join("\n");
    assert!(
        waits.contains(&format!("si_fd={accepted},"))
            || waits.contains(&format!("si_int={accepted},")),
        "no signal naming fd {accepted}:\n{waits}"
    );
}

// --------------------------------------------------------------------------------------
// Lesson 11: io_uring.
// --------------------------------------------------------------------------------------

/// What an io_uring lesson never calls: no readiness call, and no accept, read or write on
/// a socket (the kernel does those inside the ring).
const NOT_IN_A_RING_LESSON: &[&str] = &[
    "epoll_wait",
    "epoll_pwait",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "accept",
    "accept4",
    "read",
    "recvfrom",
    "sendto",
];

#[test]
fn lesson_11_trace_uring() {
    let trace = traced_session(exe!("lesson-11"));
    trace.assert_in_order(&[
        "socket",
        "bind",
        "listen",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_enter",
        "close",
    ]);
    // The I/O happens inside the kernel: no readiness calls, and no accept/read/write
    // on sockets either (the only writes are the log lines on fd 2, and the byte the
    // SIGTERM handler writes to the stop pipe).
    trace.assert_absent(NOT_IN_A_RING_LESSON);
    assert!(
        trace
            .lines_of("write")
            .iter()
            .all(|l| l.contains("write(2<") || l.contains("<pipe:")),
        "a write other than the log's:\n{}",
        trace.lines_of("write").join("\n")
    );
}

/// Under load, one io_uring_enter submits many operations: the batching the lesson claims.
#[test]
fn lesson_11_batches_submissions() {
    let traced = Traced::start(exe!("lesson-11"), &[]);
    load::round_trips(traced.server.addr, 200, 3);
    let trace = traced.stop(libc::SIGTERM);
    // io_uring_enter(FD, TO_SUBMIT, MIN_COMPLETE, FLAGS, ...)
    let biggest = trace
        .lines_of("io_uring_enter")
        .iter()
        .filter_map(|l| l.split(", ").nth(1)?.parse::<u32>().ok())
        .max()
        .expect("io_uring_enter calls");
    assert!(
        biggest >= 20,
        "no io_uring_enter submitted more than {biggest} operations at once"
    );
}

/// A seccomp policy that forbids io_uring, as a container runtime's default profile does
/// (podman's answers ENOSYS, Docker's EPERM): the lesson says so in words and exits 1,
/// without a panic. A seccomp filter installed before exec makes io_uring_setup fail with
/// the chosen errno.
#[test]
fn lesson_11_without_io_uring_exits_cleanly() {
    for (errno, words) in [
        (libc::ENOSYS, "io_uring_setup: ENOSYS"),
        (libc::EPERM, "io_uring_setup: EPERM"),
    ] {
        let mut cmd = common::server_command(exe!("lesson-11"), &[]);
        let filter = [
            // A = seccomp_data.nr (offset 0)
            bpf(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
            // if A == io_uring_setup: next, else skip one
            bpf(
                libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                0,
                1,
                libc::SYS_io_uring_setup as u32,
            ),
            bpf(
                libc::BPF_RET | libc::BPF_K,
                0,
                0,
                libc::SECCOMP_RET_ERRNO | errno as u32,
            ),
            bpf(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        ];
        with_seccomp(&mut cmd, filter.to_vec());
        let out = cmd.output().expect("run lesson-11");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
        assert!(stderr.contains(words), "stderr:\n{stderr}");
        assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");
        // This kernel has io_uring (the other tests run the lesson): the words name seccomp
        // and the container run option (src/sandbox.rs), never a kernel without io_uring.
        assert!(stderr.contains("seccomp"), "stderr:\n{stderr}");
        assert!(
            stderr.contains("--security-opt seccomp=unconfined"),
            "stderr:\n{stderr}"
        );
        assert!(!stderr.contains("has no io_uring"), "stderr:\n{stderr}");
    }
}

// --------------------------------------------------------------------------------------
// Lesson 15: io_uring multishot, a provided-buffer ring.
// --------------------------------------------------------------------------------------

/// The calls of a session: the buffer ring registered once, then io_uring_enter, a
/// getpeername per client (a multishot accept writes no address), the lingering close's
/// shutdown, and no accept, read or write on a socket.
#[test]
fn lesson_15_trace_multishot() {
    let set = format!("{},io_uring_register", common::TRACE_SET);
    let trace = traced_session_of(Traced::start_tracing(exe!("lesson-15"), &[], &set));
    trace.assert_in_order(&[
        "socket",
        "bind",
        "listen",
        "io_uring_setup",
        "io_uring_register",
        "io_uring_enter",
        "getpeername",
        "io_uring_enter",
        "shutdown",
        "close",
    ]);
    trace.assert_absent(NOT_IN_A_RING_LESSON);
    let registers = trace.lines_of("io_uring_register");
    assert_eq!(registers.len(), 1, "{registers:?}");
    assert!(
        registers[0].contains("IORING_REGISTER_PBUF_RING"),
        "{registers:?}"
    );
}

/// A ring of one buffer under 300 busy clients: nearly every round the kernel finds bytes on
/// more sockets than it has buffers, and ends their multishot recvs with ENOBUFS. Every client
/// must still get every reply (the lesson arms those recvs again), and the fds come back.
/// tests/mistakes_events.rs shows the same burst leaving clients hanging when they are not.
#[test]
fn lesson_15_ring_runs_dry_and_every_client_gets_every_reply() {
    let server = Server::start(exe!("lesson-15"), &["--bufs", "1"]);
    load::round_trips(server.addr, 300, 10);
    echo_suite::fd_count_steady(&server, 30);
}

/// A kernel that refuses the provided-buffer ring (older than 5.19): the lesson says which
/// feature and which kernel in one line and exits 1. A seccomp filter makes
/// io_uring_register(IORING_REGISTER_PBUF_RING) fail with EINVAL, as such a kernel does.
#[test]
fn lesson_15_without_a_buffer_ring_names_the_feature_and_kernel() {
    const IORING_REGISTER_PBUF_RING: u32 = 22;
    let mut cmd = common::server_command(exe!("lesson-15"), &[]);
    let filter = [
        // A = seccomp_data.nr; if A == io_uring_register: next, else allow
        bpf(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        bpf(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            3,
            libc::SYS_io_uring_register as u32,
        ),
        // A = the low half of args[1] (the opcode: offset 16 + 8, little-endian)
        bpf(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 24),
        bpf(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            IORING_REGISTER_PBUF_RING,
        ),
        bpf(
            libc::BPF_RET | libc::BPF_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::EINVAL as u32,
        ),
        bpf(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    with_seccomp(&mut cmd, filter.to_vec());
    let out = cmd.output().expect("run lesson-15");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("IORING_REGISTER_PBUF_RING"))
        .unwrap_or_else(|| panic!("no line naming the registration:\n{stderr}"));
    assert!(line.contains("EINVAL"), "{line}");
    assert!(
        line.contains("provided-buffer ring needs Linux 5.19"),
        "{line}"
    );
    assert!(line.contains("this kernel: "), "{line}");
    assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");
}

/// Installs `filter` as a seccomp filter in the child, before exec.
fn with_seccomp(cmd: &mut std::process::Command, filter: Vec<libc::sock_filter>) {
    // SAFETY: pre_exec runs in the forked child before exec; prctl is a plain system call,
    // and `filter` outlives the call (it is moved into the closure).
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn bpf(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}
