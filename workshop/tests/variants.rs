//! Other people's solutions, made from the lessons by small text edits (as the skeletons are
//! made from them): the correct ones in another shape pass every step (another buffer size,
//! ppoll for poll, libc for nix), and the wrong models fail at their model step with a
//! message naming what the calls show. All the variants are binaries of one crate, built
//! by one `cargo build`, then checked side by side.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use workshop::learner;

mod common;

fn root() -> PathBuf {
    learner::root()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// One variant: its binary's name, the exercise it is checked as, the lesson files it is
/// made of (lesson path, path in the binary's folder), and its edits (file, from, to).
struct Variant {
    name: &'static str,
    nn: &'static str,
    files: &'static [(&'static str, &'static str)],
    edits: Vec<(&'static str, &'static str, String)>,
}

const L01: &[(&str, &str)] = &[("lessons/01-hello.rs", "main.rs")];
const L03: &[(&str, &str)] = &[
    ("lessons/03-interactive/main.rs", "main.rs"),
    ("lessons/03-interactive/serve.rs", "serve.rs"),
];
const L04: &[(&str, &str)] = &[
    ("lessons/04-fork.rs", "main.rs"),
    ("lessons/03-interactive/serve.rs", "03-interactive/serve.rs"),
];
const L05: &[(&str, &str)] = &[
    ("lessons/05-threads.rs", "main.rs"),
    ("lessons/03-interactive/serve.rs", "03-interactive/serve.rs"),
];
const L00: &[(&str, &str)] = &[("lessons/00-client.rs", "main.rs")];
const L02: &[(&str, &str)] = &[("lessons/02-serial.rs", "main.rs")];
const L06: &[(&str, &str)] = &[("lessons/06-nonblock.rs", "main.rs")];
const L07: &[(&str, &str)] = &[("lessons/07-select.rs", "main.rs")];
const L09: &[(&str, &str)] = &[("lessons/09-sigio.rs", "main.rs")];
const L08: &[(&str, &str)] = &[("lessons/08-poll.rs", "main.rs")];
const L10: &[(&str, &str)] = &[
    ("lessons/10-epoll/main.rs", "main.rs"),
    ("lessons/10-epoll/handler.rs", "handler.rs"),
    ("lessons/10-epoll/reactor.rs", "reactor.rs"),
];
const L12: &[(&str, &str)] = &[
    ("lessons/12-socks5/main.rs", "main.rs"),
    ("lessons/12-socks5/admission.rs", "admission.rs"),
    ("lessons/12-socks5/conn.rs", "conn.rs"),
    ("lessons/12-socks5/connect.rs", "connect.rs"),
    ("lessons/12-socks5/flags.rs", "flags.rs"),
    ("lessons/12-socks5/flow.rs", "flow.rs"),
    ("lessons/12-socks5/guard.rs", "guard.rs"),
    ("lessons/12-socks5/relay.rs", "relay.rs"),
    ("lessons/12-socks5/resolver.rs", "resolver.rs"),
];

const L11: &[(&str, &str)] = &[
    ("lessons/11-uring/main.rs", "main.rs"),
    ("lessons/11-uring/server.rs", "server.rs"),
    ("lessons/11-uring/ring.rs", "ring.rs"),
];
const L15: &[(&str, &str)] = &[
    ("lessons/15-uring-multishot/main.rs", "main.rs"),
    ("lessons/15-uring-multishot/server.rs", "server.rs"),
    ("lessons/15-uring-multishot/bufs.rs", "bufs.rs"),
    ("lessons/11-uring/ring.rs", "ring.rs"),
];
/// Lesson 15's main.rs mounts lesson 11's ring.rs; a variant has its own copy beside it.
const RING_15: (&str, &str) = ("#[path = \"../11-uring/ring.rs\"]\n", "");
const LIBC_SHUTDOWN_15: &str =
    "match Errno::result(unsafe { libc::shutdown(client.fd.as_raw_fd(), \
    libc::SHUT_WR) }).map(drop) {";

const L18: &[(&str, &str)] = &[
    ("lessons/18-capture/main.rs", "main.rs"),
    ("lessons/18-capture/filter.rs", "filter.rs"),
    ("lessons/18-capture/ring.rs", "ring.rs"),
];
const SOCKET_18: &str = "    let sock = match socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    ) {";
const LIBC_SOCKET_18: &str =
    "    let sock = match Errno::result(unsafe { libc::socket(libc::AF_PACKET, \
    libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from((libc::ETH_P_ALL as u16).to_be())) }).map(|fd| \
    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }) {";

/// Lesson 12's files as 13, 14 and 16 mount them (`#[path = "../12-socks5/…"]`): one copy
/// beside the variants' folders, never edited.
const MOUNTED_12: &[(&str, &str)] = &[
    (
        "lessons/12-socks5/admission.rs",
        "../12-socks5/admission.rs",
    ),
    ("lessons/12-socks5/conn.rs", "../12-socks5/conn.rs"),
    ("lessons/12-socks5/connect.rs", "../12-socks5/connect.rs"),
    ("lessons/12-socks5/flags.rs", "../12-socks5/flags.rs"),
    ("lessons/12-socks5/flow.rs", "../12-socks5/flow.rs"),
    ("lessons/12-socks5/guard.rs", "../12-socks5/guard.rs"),
    ("lessons/12-socks5/relay.rs", "../12-socks5/relay.rs"),
    ("lessons/12-socks5/resolver.rs", "../12-socks5/resolver.rs"),
];
const L13: &[(&str, &str)] = &[
    ("lessons/13-socks5-allow/main.rs", "main.rs"),
    ("lessons/13-socks5-allow/allowlist.rs", "allowlist.rs"),
];
const L14: &[(&str, &str)] = &[
    ("lessons/14-splice/main.rs", "main.rs"),
    ("lessons/14-splice/flow.rs", "flow.rs"),
];
const L16: &[(&str, &str)] = &[
    ("lessons/16-socks5-udp/main.rs", "main.rs"),
    ("lessons/16-socks5-udp/counts.rs", "counts.rs"),
    ("lessons/16-socks5-udp/datagrams.rs", "datagrams.rs"),
    ("lessons/16-socks5-udp/names.rs", "names.rs"),
    ("lessons/16-socks5-udp/udp.rs", "udp.rs"),
];
const L17: &[(&str, &str)] = &[
    ("lessons/17-restart/main.rs", "main.rs"),
    ("lessons/17-restart/handover.rs", "handover.rs"),
    ("lessons/17-restart/successor.rs", "successor.rs"),
    ("lessons/10-epoll/handler.rs", "../10-epoll/handler.rs"),
    ("lessons/10-epoll/reactor.rs", "../10-epoll/reactor.rs"),
];
/// A lesson as it is, checked as another exercise: its own binary, nothing to build.
const AS_IS: &[(&str, &str)] = &[];

fn edit(file: &'static str, from: &'static str, to: &str) -> (&'static str, &'static str, String) {
    (file, from, to.to_string())
}

/// A `main` that execs the lesson's own binary: what runs is not what the crate builds.
fn execs_the_lesson(nn: &str) -> (&'static str, &'static str, String) {
    let lesson = target_dir().join("debug").join(format!("lesson-{nn}"));
    edit(
        "main.rs",
        "fn main() {\n",
        &format!(
            "fn main() {{\n    let _ = std::os::unix::process::CommandExt::exec(\
             std::process::Command::new({:?}).args(std::env::args_os().skip(1)));\n",
            lesson.display()
        ),
    )
}

const PPOLL_08: &str = "let mut nready = match nix::poll::ppoll(&mut pollfds, \
    Some(i32::from(timeout)).filter(|t| *t >= 0).map(|t| nix::sys::time::TimeSpec::from_duration(\
    std::time::Duration::from_millis(t as u64))), None) {";
const PPOLL_12: &str = "match nix::poll::ppoll(&mut fds, Some(i32::from(timeout_until(next)))\
    .filter(|t| *t >= 0).map(|t| nix::sys::time::TimeSpec::from_duration(\
    std::time::Duration::from_millis(t as u64))), None) {";
const LIBC_EPOLL_PWAIT: &str = "let n = match Errno::result(unsafe { libc::epoll_pwait(\
    self.epoll.0.as_raw_fd(), events.as_mut_ptr().cast(), events.len() as i32, \
    i32::from(timeout), std::ptr::null()) }).map(|n| n as usize) {";
const LIBC_WRITE_12: &str = "match Errno::result(unsafe { libc::write(dst.as_raw_fd(), \
    flow.pending().as_ptr().cast(), flow.pending().len()) }).map(|n| n as usize) {";
const LIBC_READ_03: &str = "let n = match Errno::result(unsafe { libc::read(\
    conn.as_fd().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }).map(|n| n as usize) {";
const LIBC_FORK_04: &str = "match match unsafe { libc::fork() } { -1 => Err(Errno::last()), \
    0 => Ok(ForkResult::Child), pid => Ok(ForkResult::Parent { child: \
    nix::unistd::Pid::from_raw(pid) }) } {";
/// A relay that clears O_NONBLOCK, writes it all, and sets it back.
const BLOCKING_WRITE_12: &str = "
/// The write that blocks: O_NONBLOCK off, every byte written, O_NONBLOCK back on.
fn write_all_blocking(fd: &OwnedFd, bytes: &[u8]) -> nix::Result<usize> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    let mut done = 0;
    while done < bytes.len() {
        done += write(fd, &bytes[done..])?;
    }
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(done)
}
";

fn correct() -> Vec<Variant> {
    vec![
        Variant { name: "v01-libc-listen", nn: "01", files: L01, edits: vec![edit("main.rs", "listen(&listener, Backlog::new(128).or_die(\"listen\")).or_die(\"listen\");", "Errno::result(unsafe { libc::listen(listener.as_raw_fd(), 16) }).or_die(\"listen\");")] },
        Variant { name: "v01-byte-writes", nn: "01", files: L01, edits: vec![edit("main.rs", "match write(&conn, rest) {", "match write(&conn, &rest[..1]) {")] },
        Variant { name: "v03-3-byte-buffer", nn: "03", files: L03, edits: vec![edit("serve.rs", "let mut buf = [0u8; 16 * 1024];", "let mut buf = [0u8; 3];")] },
        Variant { name: "v03-libc-read", nn: "03", files: L03, edits: vec![edit("serve.rs", "let n = match read(&conn, &mut buf) {", LIBC_READ_03)] },
        Variant { name: "v04-libc-fork", nn: "04", files: L04, edits: vec![edit("main.rs", "match unsafe { fork() } {", LIBC_FORK_04)] },
        Variant { name: "v04-3-byte-buffer", nn: "04", files: L04, edits: vec![edit("03-interactive/serve.rs", "let mut buf = [0u8; 16 * 1024];", "let mut buf = [0u8; 3];")] },
        Variant { name: "v08-ppoll", nn: "08", files: L08, edits: vec![edit("main.rs", "let mut nready = match poll(&mut pollfds, timeout) {", PPOLL_08)] },
        Variant { name: "v08-7-byte-buffer", nn: "08", files: L08, edits: vec![edit("main.rs", "let mut buf = vec![0u8; READ_CHUNK];", "let mut buf = vec![0u8; 7];")] },
        Variant { name: "v10-libc-epoll-pwait", nn: "10", files: L10, edits: vec![edit("reactor.rs", "let n = match self.epoll.wait(&mut events, timeout) {", LIBC_EPOLL_PWAIT)] },
        Variant { name: "v10-5-byte-buffer", nn: "10", files: L10, edits: vec![edit("reactor.rs", "buf: vec![0; READ_CHUNK],", "buf: vec![0; 5],")] },
        Variant { name: "v12-ppoll", nn: "12", files: L12, edits: vec![edit("relay.rs", "match poll(&mut fds, timeout_until(next)) {", PPOLL_12)] },
        Variant { name: "v12-libc-write", nn: "12", files: L12, edits: vec![edit("flow.rs", "    match write(dst, flow.pending()) {", &format!("    {LIBC_WRITE_12}"))] },
        Variant { name: "v00-ppoll", nn: "00", files: L00, edits: vec![edit("main.rs", "match poll(&mut fds, PollTimeout::NONE) {", "match nix::poll::ppoll(&mut fds, None, None) {")] },
        Variant { name: "v00-5-byte-buffer", nn: "00", files: L00, edits: vec![edit("main.rs", "let mut buf = vec![0u8; 64 * 1024];", "let mut buf = vec![0u8; 5];")] },
        Variant { name: "v02-byte-writes", nn: "02", files: L02, edits: vec![edit("main.rs", "match write(&conn, rest) {", "match write(&conn, &rest[..1]) {")] },
        Variant { name: "v02-backlog-16", nn: "02", files: L02, edits: vec![edit("main.rs", "Backlog::new(128)", "Backlog::new(16)")] },
        Variant { name: "v05-3-byte-buffer", nn: "05", files: L05, edits: vec![edit("03-interactive/serve.rs", "let mut buf = [0u8; 16 * 1024];", "let mut buf = [0u8; 3];")] },
        Variant { name: "v05-256k-stacks", nn: "05", files: L05, edits: vec![edit("main.rs", "const STACK_SIZE: usize = 64 * 1024;", "const STACK_SIZE: usize = 256 * 1024;")] },
        Variant { name: "v06-7-byte-buffer", nn: "06", files: L06, edits: vec![edit("main.rs", "let mut buf = vec![0u8; READ_CHUNK];", "let mut buf = vec![0u8; 7];")] },
        Variant { name: "v06-ioctl-fionbio", nn: "06", files: L06, edits: vec![edit("main.rs", "    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);\n    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;", "    let on: libc::c_int = 1;\n    Errno::result(unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(fd), libc::FIONBIO, &on) })?;")] },
        Variant { name: "v07-7-byte-buffer", nn: "07", files: L07, edits: vec![edit("main.rs", "let mut buf = vec![0u8; READ_CHUNK];", "let mut buf = vec![0u8; 7];")] },
        Variant { name: "v07-write-set-first", nn: "07", files: L07, edits: vec![edit("main.rs", "            if client.conn.wants_read() {\n                read_set.insert(client.fd.as_fd());\n            }\n            if client.conn.wants_write() {\n                write_set.insert(client.fd.as_fd());\n            }", "            if client.conn.wants_write() {\n                write_set.insert(client.fd.as_fd());\n            }\n            if client.conn.wants_read() {\n                read_set.insert(client.fd.as_fd());\n            }")] },
        Variant { name: "v09-5-byte-buffer", nn: "09", files: L09, edits: vec![edit("main.rs", "buf: vec![0; READ_CHUNK],", "buf: vec![0; 5],")] },
        Variant { name: "v09-sigrtmin-plus-1", nn: "09", files: L09, edits: vec![edit("main.rs", "let rtsig = libc::SIGRTMIN();", "let rtsig = libc::SIGRTMIN() + 1;")] },
        Variant { name: "v13-3-byte-chunk", nn: "13", files: L13, edits: vec![edit("allowlist.rs", "let mut chunk = [0u8; READ_CHUNK];", "let mut chunk = [0u8; 3];")] },
        Variant { name: "v13-5-byte-writes", nn: "13", files: L13, edits: vec![edit("allowlist.rs", "match write(sock, &self.outbox[sent..]) {", "match write(sock, &self.outbox[sent..][..(self.outbox.len() - sent).min(5)]) {")] },
        Variant { name: "v14-1000-byte-splices", nn: "14", files: L14, edits: vec![edit("flow.rs", "match splice(src, None, &pipe.write, None, room, FLAGS) {", "match splice(src, None, &pipe.write, None, room.min(1000), FLAGS) {")] },
        Variant { name: "v14-777-byte-pours", nn: "14", files: L14, edits: vec![edit("flow.rs", "splice(p, None, dst, None, flow.in_pipe, FLAGS)", "splice(p, None, dst, None, flow.in_pipe.min(777), FLAGS)")] },
        Variant { name: "v16-batch-4", nn: "16", files: L16, edits: vec![edit("datagrams.rs", "pub const BATCH: usize = 32;", "pub const BATCH: usize = 4;")] },
        Variant { name: "v16-8-gso-segments", nn: "16", files: L16, edits: vec![edit("datagrams.rs", "const GSO_SEGMENTS: usize = 64;", "const GSO_SEGMENTS: usize = 8;")] },
        Variant { name: "v17-16-byte-recvmsg", nn: "17", files: L17, edits: vec![edit("handover.rs", "let mut byte = [0u8; 1];", "let mut byte = [0u8; 16];")] },
        Variant { name: "v17-cmsg-room-for-4", nn: "17", files: L17, edits: vec![edit("handover.rs", "let mut space = nix::cmsg_space!([RawFd; 1]);", "let mut space = nix::cmsg_space!([RawFd; 4]);")] },
        Variant { name: "v11-7-byte-recv", nn: "11", files: L11, edits: vec![edit("server.rs", "recv_buf: vec![0; READ_CHUNK].into_boxed_slice(),", "recv_buf: vec![0; 7].into_boxed_slice(),"), edit("server.rs", "buf, READ_CHUNK as u32)", "buf, 7)")] },
        Variant { name: "v11-one-accept", nn: "11", files: L11, edits: vec![edit("server.rs", "const ACCEPTS: usize = 16;", "const ACCEPTS: usize = 1;")] },
        Variant { name: "v15-64-byte-buffers", nn: "15", files: L15, edits: vec![edit("main.rs", RING_15.0, RING_15.1), edit("bufs.rs", "pub const BUF_SIZE: usize = 4096;", "pub const BUF_SIZE: usize = 64;")] },
        Variant { name: "v15-libc-shutdown", nn: "15", files: L15, edits: vec![edit("main.rs", RING_15.0, RING_15.1), edit("server.rs", "match shutdown(client.fd.as_raw_fd(), Shutdown::Write) {", LIBC_SHUTDOWN_15)] },
        Variant { name: "v18-65535-snaplen", nn: "18", files: L18, edits: vec![edit("main.rs", "default_value_t = 262_144", "default_value_t = 65_535")] },
        Variant { name: "v18-libc-socket", nn: "18", files: L18, edits: vec![edit("main.rs", SOCKET_18, LIBC_SOCKET_18)] },
    ]
}

/// The wrong models: (variant, the step it fails, words its message must hold).
fn wrong() -> Vec<(Variant, &'static str, &'static [&'static str])> {
    vec![
        (
            // A poll loop whose timeout is 0, plus a 2 ms epoll_wait on an empty epoll.
            Variant { name: "w10-poll-and-empty-epoll", nn: "10", files: L08, edits: vec![
                edit("main.rs", "    let mut served = 0;\n", "    let mut served = 0;\n    let nap = nix::sys::epoll::Epoll::new(nix::sys::epoll::EpollCreateFlags::empty()).unwrap();\n"),
                edit("main.rs", "let mut nready = match poll(&mut pollfds, timeout) {", "let _ = (timeout, nap.wait(&mut [nix::sys::epoll::EpollEvent::empty()], 2u8));\n        let mut nready = match poll(&mut pollfds, PollTimeout::ZERO) {"),
            ] },
            "FAIL   9. model: one thread waits only in epoll_wait",
            &["expected at most 20 calls that find nothing", "found: a busy loop, not an event loop", "poll ×", "timeout 0 ms", "epoll_wait ×", "timeout 2 ms, an epoll watching no fd"],
        ),
        (
            // Lesson 04, double-forked: the parent polls the listener, grandchildren serve.
            Variant { name: "w08-double-fork", nn: "08", files: L04, edits: vec![
                edit("main.rs", "        let conn = match accept(&listener) {", "        let _ = nix::poll::poll(&mut [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(&listener), nix::poll::PollFlags::POLLIN)], nix::poll::PollTimeout::NONE);\n        let conn = match accept(&listener) {"),
                edit("main.rs", "fn child(listener: OwnedFd, conn: OwnedFd, peer: &str) -> ! {\n", "fn child(listener: OwnedFd, conn: OwnedFd, peer: &str) -> ! {\n    if unsafe { libc::fork() } != 0 {\n        unsafe { libc::_exit(0) }\n    }\n"),
            ] },
            "FAIL   9. model: one thread waits only in poll",
            &["expected one thread accepts and reads every client", "found: a double-fork server", "grandchildren", "waits in poll"],
        ),
        (
            // Lesson 06's busy loop with a 2 ms nap taken as poll(&mut [], 2).
            Variant { name: "w08-busy-loop-poll-nap", nn: "08", files: L06, edits: vec![
                edit("main.rs", "        if let Some(nap) = nap {\n            std::thread::sleep(nap);\n        }\n", "        let _ = (nap, nix::poll::poll(&mut [], 2u8));\n"),
            ] },
            "FAIL   9. model: one thread waits only in poll",
            &["expected at most 20 calls that find nothing", "found: a busy loop, not an event loop", "poll ×", "timeout 2 ms, over no fd", "ended EAGAIN"],
        ),
        (
            // Lesson 05 as it is: a thread per client where exercise 04 forks.
            Variant { name: "lesson-05", nn: "04", files: AS_IS, edits: vec![] },
            "FAIL   9. model: a process per client",
            &["expected the first process accepts; each client is read in a child", "found: a thread per client (lesson 05's model)"],
        ),
        (
            Variant { name: "w04-execs-lesson", nn: "04", files: L04, edits: vec![execs_the_lesson("04")] },
            "FAIL   1. starts on port 0",
            &["lesson-04 running: the program execs another"],
        ),
        (
            Variant { name: "w08-execs-lesson", nn: "08", files: L08, edits: vec![execs_the_lesson("08")] },
            "FAIL   1. starts on port 0",
            &["lesson-08 running: the program execs another"],
        ),
        (
            Variant { name: "w12-execs-lesson", nn: "12", files: L12, edits: vec![execs_the_lesson("12")] },
            "FAIL   1. starts on port 0",
            &["lesson-12 running: the program execs another"],
        ),
        (
            // A relay whose writes block: O_NONBLOCK cleared, everything written, set back.
            Variant { name: "w12-blocking-write", nn: "12", files: L12, edits: vec![
                edit("flow.rs", "    match write(dst, flow.pending()) {", "    match write_all_blocking(dst, flow.pending()) {"),
                edit("flow.rs", "/// setsockopt(SO_LINGER {on, 0 s})", &format!("{BLOCKING_WRITE_12}\n/// setsockopt(SO_LINGER {{on, 0 s}})")),
            ] },
            "FAIL   8. a client that stops reading stalls no other",
            &["asleep in write"],
        ),
        (
            // A client that closes at the end of input instead of shutdown(SHUT_WR).
            Variant { name: "w00-no-half-close", nn: "00", files: L00, edits: vec![
                edit("main.rs", "if let Err(errno) = shutdown(sock.as_raw_fd(), Shutdown::Write) {", "if let Err(errno) = Err::<(), Errno>(Errno::ENOTCONN) {"),
            ] },
            "FAIL   2. piped lines come back, then it exits",
            &["the server never read EOF: no shutdown(SHUT_WR)"],
        ),
        (
            // Lesson 02 forking a child per client, which greets and exits.
            Variant { name: "w02-fork", nn: "02", files: L02, edits: vec![
                edit("main.rs", "        // [/accept]\n", "        // [/accept]\n        if unsafe { libc::fork() } != 0 {\n            drop(conn);\n            continue;\n        }\n"),
                edit("main.rs", "        // [/close]\n", "        // [/close]\n        unsafe { libc::_exit(0) }\n"),
            ] },
            "FAIL   5. model: one thread accepts and greets",
            &["expected one thread accepts and reads every client; no fork", "found: a process per client (lesson 04's model)"],
        ),
        (
            // Lesson 04 (a process per client) as exercise 05.
            Variant { name: "lesson-04", nn: "05", files: AS_IS, edits: vec![] },
            "FAIL   9. model: a thread per client",
            &["expected the first thread accepts; each client is served by a thread of its own", "found: a process per client (lesson 04's model)"],
        ),
        (
            // Lesson 08 (poll) as exercise 06, and as exercise 07.
            Variant { name: "lesson-08", nn: "06", files: AS_IS, edits: vec![] },
            "FAIL  10. model: one thread, no poll, select or epoll",
            &["expected no readiness call", "found: a poll loop (lesson 08's model)"],
        ),
        (
            Variant { name: "lesson-08", nn: "07", files: AS_IS, edits: vec![] },
            "FAIL   9. model: one thread waits only in select",
            &["expected every wait in select or pselect6", "found: a poll loop (lesson 08's model)", "poll ×"],
        ),
        (
            // Without F_SETSIG every event is a plain SIGIO, which names no fd.
            Variant { name: "w09-no-setsig", nn: "09", files: L09, edits: vec![
                edit("main.rs", "Errno::result(unsafe { libc::fcntl(raw, F_SETSIG, sig) })?;", "let _ = (F_SETSIG, sig);"),
            ] },
            "FAIL   9. model: one thread waits only in sigtimedwait",
            &["expected every signal taken names its fd", "found: a signal-driven loop on plain SIGIO", "naming no fd"],
        ),
        (
            // An allowlist that drops its Redis connection after every answer: a dial per check.
            Variant { name: "w13-dial-per-check", nn: "13", files: L13, edits: vec![
                edit("allowlist.rs", "verdicts.push((id, self.verdict(&value)));", "verdicts.push((id, self.verdict(&value)));\n                        self.link = Link::Down { retry: now };"),
            ] },
            "FAIL   6. five CONNECTs, one Redis connection",
            &["a connection per check"],
        ),
        (
            // A relay that takes datagrams from any source: an open UDP relay.
            Variant { name: "w16-any-source", nn: "16", files: L16, edits: vec![
                edit("udp.rs", "if !mistake(AnySource) {", "if mistake(AnySource) {"),
            ] },
            "FAIL   4. a datagram from another port is dropped",
            &["--mistake any-source"],
        ),
        (
            // The successor's end of the socketpair keeps FD_CLOEXEC: execve closes it.
            Variant { name: "w17-link-cloexec", nn: "17", files: L17, edits: vec![
                edit("successor.rs", "if !mistake(Mistake::Cloexec) {", "if mistake(Mistake::Cloexec) {"),
            ] },
            "FAIL   8. SIGHUP: the successor takes the listener and serves",
            &["received over SCM_RIGHTS"],
        ),
        (
            // Lesson 12 (read and write) as exercise 14 (splice).
            Variant { name: "lesson-12", nn: "14", files: AS_IS, edits: vec![] },
            "FAIL   8. model: relayed bytes go through pipes",
            &["lesson 12's copying relay"],
        ),
        (
            // Lesson 10 as it is: an epoll loop where exercise 11 submits to a ring.
            Variant { name: "w11-epoll", nn: "11", files: L10, edits: vec![] },
            "FAIL  10. model: one thread waits only in io_uring_enter",
            &["expected every wait in io_uring_enter", "found: an epoll loop (lesson 10's model)", "epoll_wait ×"],
        ),
        (
            // Lesson 11 as it is: a recv re-armed for every line where exercise 15 arms one.
            Variant { name: "w15-single-shot", nn: "15", files: L11, edits: vec![] },
            "FAIL   9. model: one thread waits only in io_uring_enter; accept and recvs armed once",
            &["expected at most 1.5 entries submitted per line answered", "lesson 11's model", "per line answered (60 lines)"],
        ),
        (
            // Lesson 15 with its mistake always on: a multishot recv that ran dry is never armed again.
            Variant { name: "w15-no-rearm", nn: "15", files: L15, edits: vec![
                edit("main.rs", RING_15.0, RING_15.1),
                edit("server.rs", "Errno::ENOBUFS if mistake(Mistake::NoRearm) => client.rearm = false,", "Errno::ENOBUFS => client.rearm = false,"),
            ] },
            "FAIL  11. with --bufs 4, 32 clients' lines in one batch are all answered",
            &["--mistake no-rearm", "nothing within"],
        ),
        (
            // Lesson 18 without its filter: every frame on the interface is printed.
            Variant { name: "w18-no-filter", nn: "18", files: L18, edits: vec![
                edit("main.rs", "filter::attach(&sock, &program).or_die(\"setsockopt(SO_ATTACH_FILTER)\");", "let _ = &program;"),
            ] },
            "FAIL   3. the filter keeps only its port",
            &["line(s) of another port", "--mistake no-filter"],
        ),
    ]
}

/// Writes `text` at `path` unless it is there already (an unchanged file keeps its time, so
/// cargo does not rebuild it); a write goes through a rename, never half-written.
fn put(path: &Path, text: &str) {
    if fs::read_to_string(path).ok().as_deref() == Some(text) {
        return;
    }
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, text).unwrap();
    fs::rename(tmp, path).unwrap();
}

/// The crate of every variant, built once; the folder its binaries are in.
fn built() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = target_dir().join("exercises-test").join("variants");
        let all: Vec<Variant> = correct()
            .into_iter()
            .chain(wrong().into_iter().map(|(v, _, _)| v))
            .collect();
        let mut bins = String::new();
        for (lesson, at) in MOUNTED_12 {
            let text = fs::read_to_string(root().join(lesson)).unwrap();
            put(
                &dir.join("src/bin").join(at.trim_start_matches("../")),
                &text,
            );
        }
        for v in all.iter().filter(|v| !v.files.is_empty()) {
            for (lesson, at) in v.files {
                let mut text = fs::read_to_string(root().join(lesson)).unwrap();
                for (file, from, to) in v.edits.iter().filter(|(f, _, _)| f == at) {
                    assert!(
                        text.contains(from),
                        "{}: {lesson} no longer has {from:?} ({file})",
                        v.name
                    );
                    text = text.replacen(from, to, 1);
                }
                let path = match at.strip_prefix("../") {
                    Some(beside) => dir.join("src/bin").join(beside),
                    None => dir.join("src/bin").join(v.name).join(at),
                };
                put(&path, &text);
            }
            bins.push_str(&format!(
                "[[bin]]\nname = \"{0}\"\npath = \"src/bin/{0}/main.rs\"\n\n",
                v.name
            ));
        }
        let manifest = workshop::skeleton::manifest("08", root().to_str().unwrap());
        let (head, tail) = manifest.split_once("[[bin]]").unwrap();
        let deps = &tail[tail.find("[dependencies]").unwrap()..];
        let manifest = format!("{}{bins}{deps}", head.replace("exercise-08", "variants"));
        put(&dir.join("Cargo.toml"), &manifest);
        let lock = fs::read_to_string(root().join("Cargo.lock")).unwrap();
        put(&dir.join("Cargo.lock"), &lock);
        // The lessons the exec variants exec, and those checked as they are.
        let lessons = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "sockets-by-hand"])
            .args([
                "--bin",
                "lesson-04",
                "--bin",
                "lesson-05",
                "--bin",
                "lesson-08",
                "--bin",
                "lesson-12",
            ])
            .current_dir(root())
            .status()
            .unwrap();
        assert!(lessons.success(), "building the lessons");
        let out = Command::new(env!("CARGO"))
            .args(["build", "-q", "--bins", "--manifest-path"])
            .arg(dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", target_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target_dir().join("debug")
    })
}

/// `workshop check NN --bin EXE --wait 10` for each variant, four at a time: (exit code, stdout).
fn check_all(variants: &[(&str, &str)]) -> Vec<(i32, String)> {
    let bin = built();
    common::four_at_a_time(variants, |(nn, name)| {
        let out = Command::new(env!("CARGO_BIN_EXE_workshop"))
            .args(["check", nn, "--bin"])
            .arg(bin.join(name))
            .args(["--wait", "10"])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
}

#[test]
fn correct_solutions_of_another_shape_pass_every_step() {
    let variants = correct();
    let mut per_exercise = std::collections::BTreeMap::<&str, usize>::new();
    for v in &variants {
        *per_exercise.entry(v.nn).or_default() += 1;
    }
    for ex in workshop::check::exercises() {
        assert!(
            per_exercise.get(ex.nn).copied().unwrap_or(0) >= 2,
            "exercise {} needs two correct variants",
            ex.nn
        );
    }
    let pairs: Vec<(&str, &str)> = variants.iter().map(|v| (v.nn, v.name)).collect();
    let mut failed = Vec::new();
    for ((nn, name), (code, out)) in pairs.iter().zip(check_all(&pairs)) {
        if code != 0 {
            failed.push(format!("{name}, checked as exercise {nn}:\n{out}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn wrong_models_fail_naming_what_their_calls_show() {
    let cases = wrong();
    let pairs: Vec<(&str, &str)> = cases.iter().map(|(v, _, _)| (v.nn, v.name)).collect();
    let mut failed = Vec::new();
    for ((v, step, words), (code, out)) in cases.iter().zip(check_all(&pairs)) {
        let name = format!("{}, checked as exercise {}", v.name, v.nn);
        if code != 1 || !out.contains(step) {
            failed.push(format!(
                "{name}: exit {code}, should fail at {step:?}:\n{out}"
            ));
        }
        for word in words.iter().filter(|w| !out.contains(*w)) {
            failed.push(format!("{name}: no {word:?} in:\n{out}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
