//! The ring plumbing of lessons 11 and 15 (lesson 15 mounts this file): the ring's set-up
//! and its refusal, what each operation was for (its user_data), the poll on the stop pipe,
//! the accept pause's timeout, and the loop's one system call with its counters. Each
//! lesson's server.rs submits its own accepts, recvs and sends, and reacts to completions.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};
use nix::errno::Errno;
use nix::sys::socket::{SockaddrLike, SockaddrStorage};
use sockets_by_hand::accept::{AcceptPause, RETRY};
use sockets_by_hand::cli::Lesson;
use sockets_by_hand::errors::fatal;
use sockets_by_hand::{net, sandbox, say, stop};

/// Submission queue entries (the completion queue gets twice as many).
pub const RING_ENTRIES: u32 = 1024;

/// The most one send takes from a client's pending replies.
pub const SEND_CHUNK: usize = 64 * 1024;

/// io_uring_setup(2): the rings, mapped into our memory. SINGLE_ISSUER + DEFER_TASKRUN
/// (Linux 6.1+) batch the kernel's completion work into our io_uring_enter; an older kernel
/// says EINVAL to them, and gets a plain ring. No ring at all: why in words, exit 1.
pub fn setup() -> IoUring {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
        .or_else(|err| match err.raw_os_error() {
            Some(libc::EINVAL) => {
                let release = std::fs::read_to_string("/proc/sys/kernel/osrelease");
                say!(
                    "io_uring_setup: EINVAL for SINGLE_ISSUER | DEFER_TASKRUN (Linux 6.1+; this \
                     kernel: {}): a plain ring, woken for each completion's work",
                    release.unwrap_or_default().trim()
                );
                IoUring::new(RING_ENTRIES)
            }
            _ => Err(err),
        })
        .unwrap_or_else(|err| sandbox::io_uring_refused("io_uring_setup", errno(&err), None))
}

/// The kernel refused one of the io_uring features lesson 15 uses: the call, the feature and
/// the Linux it needs, in one line, and exit 1 ([`sandbox::io_uring_refused`]).
#[allow(dead_code)] // lesson 11 uses this file too, and has no use for it
pub fn refused(call: &str, errno: Errno, feature: &str, version: &str) -> ! {
    sandbox::io_uring_refused(call, errno, Some((feature, version)))
}

fn errno(err: &std::io::Error) -> Errno {
    Errno::from_raw(err.raw_os_error().unwrap_or(0))
}

/// What an operation was for. Its user_data carries the kind and a number: the client's fd
/// for Recv, Send and the cancels, the accept's index for Accept (see `tag` and `untag`).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(u32)]
pub enum Op {
    Accept = 0,
    RetryAccept = 1,
    Stop = 2,
    Recv = 3,
    Send = 4,
    CancelRecv = 5,
    CancelSend = 6,
}

/// user_data: the number in the high 32 bits, the kind in the low 32.
pub fn tag(op: Op, n: usize) -> u64 {
    (n as u64) << 32 | op as u64
}

/// Inverse of `tag`.
pub fn untag(user_data: u64) -> (Op, usize) {
    let op = match user_data as u32 {
        0 => Op::Accept,
        1 => Op::RetryAccept,
        2 => Op::Stop,
        3 => Op::Recv,
        4 => Op::Send,
        5 => Op::CancelRecv,
        _ => Op::CancelSend, // 6: `tag` makes no other
    };
    (op, (user_data >> 32) as usize)
}

/// The ring, and what every io_uring server keeps beside it.
pub struct Ring {
    ring: IoUring,
    stop: OwnedFd,
    /// The accept pause after EMFILE (src/accept.rs); while it lasts no accept is
    /// submitted, only a timeout op (retry_after) that ends it.
    pub pause: AcceptPause,
    retry_in_flight: bool,
    retry_after: Box<types::Timespec>,
    /// Completions of the last io_uring_enter, (user_data, result, flags); allocated once.
    pub done: Vec<(u64, i32, u32)>,
    /// For the summary at Ctrl-C: io_uring_enter calls, completions, lines answered.
    enters: u64,
    completions: u64,
    pub lines: u64,
}

impl Ring {
    pub fn new(ring: IoUring, stop: OwnedFd) -> Ring {
        Ring {
            ring,
            stop,
            pause: AcceptPause::new(RETRY),
            retry_in_flight: false,
            retry_after: Box::new(types::Timespec::from(RETRY)),
            done: Vec::with_capacity(2 * RING_ENTRIES as usize),
            enters: 0,
            completions: 0,
            lines: 0,
        }
    }

    /// io_uring_enter(2): submit every operation queued since the last call and sleep until
    /// at least one has completed. One call, many operations. Then take every completion
    /// off the ring into `done` (they come in any order).
    pub fn submit_and_wait(&mut self) {
        self.enters += 1;
        match self.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(err) if err.raw_os_error() == Some(libc::EINTR) => {}
            Err(err) => fatal("io_uring_enter", errno(&err)),
        }
        self.done.clear();
        let completion = self.ring.completion();
        self.done
            .extend(completion.map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())));
        self.completions += self.done.len() as u64;
    }

    /// Queues an entry for the next io_uring_enter.
    pub fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every buffer an entry points to (a client's buffers, a PeerAddr, the
            // Timespec, the buffer ring's) is a heap allocation owned by the server, neither
            // freed, moved nor touched until that entry's completion has been taken (except
            // the bytes of lesson 11's --mistake reuse-buffer: see its `drive`).
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // The submission ring is full: hand what it holds to the kernel now.
            self.enters += 1;
            if let Err(err) = self.ring.submit() {
                fatal("io_uring_enter", errno(&err));
            }
        }
    }

    /// Keeps a poll on the stop pipe in the ring: it completes when Ctrl-C writes its byte.
    pub fn submit_stop_poll(&mut self) {
        let entry = opcode::PollAdd::new(types::Fd(self.stop.as_raw_fd()), libc::POLLIN as u32);
        self.push(entry.build().user_data(tag(Op::Stop, 0)));
    }

    /// The stop poll completed: true for Ctrl-C (a result > 0); otherwise it goes back in.
    pub fn stop_requested(&mut self, result: i32) -> bool {
        if result <= 0 {
            self.submit_stop_poll();
        }
        result > 0
    }

    /// True while accept is paused after EMFILE: then no accept may be submitted, and a
    /// timeout op is kept in the ring whose completion (RetryAccept) tries again.
    pub fn accept_paused(&mut self) -> bool {
        if self.pause.watching(Instant::now()) {
            return false;
        }
        if !self.retry_in_flight {
            let limit = self.pause.wait_limit(Instant::now()).unwrap_or(RETRY);
            *self.retry_after = types::Timespec::from(limit);
            let timeout = opcode::Timeout::new(&*self.retry_after).build();
            self.push(timeout.user_data(tag(Op::RetryAccept, 0)));
            self.retry_in_flight = true;
        }
        true
    }

    /// The retry timeout completed: accept may be tried again.
    pub fn retried(&mut self) {
        self.retry_in_flight = false;
    }

    /// The last lines at Ctrl-C: what the ring saved, then the summary every lesson prints.
    /// System calls per request (a line answered) counts the io_uring_enter calls; the
    /// per-client plain calls (getpeername, shutdown, close) are left out.
    pub fn say_summary(&self, lesson: &Lesson, served: u64, open: usize) {
        let per = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        say!(
            "requests: {} · io_uring_enter calls per request: {:.3} · completions per enter: {:.1}",
            self.lines,
            per(self.enters, self.lines),
            per(self.completions, self.enters)
        );
        say!("{}", stop::summary(lesson, served, open));
    }
}

/// Where single-shot accept ops write their clients' addresses (lesson 11; a multishot
/// accept writes none): slot i for accept i, in a boxed slice, which can never grow and move
/// while the kernel holds pointers into it.
#[allow(dead_code)] // lesson 15 mounts this file too, and has no use for it
pub struct Peers(Box<[(libc::sockaddr_storage, libc::socklen_t)]>);

#[allow(dead_code)]
impl Peers {
    pub fn new(n: usize) -> Peers {
        // SAFETY: sockaddr_storage is plain bytes; all zeros is a valid value.
        Peers((0..n).map(|_| (unsafe { std::mem::zeroed() }, 0)).collect())
    }

    /// Slot i, made ready for an accept: where it writes the address, and its length.
    pub fn slot(&mut self, i: usize) -> (*mut libc::sockaddr, *mut libc::socklen_t) {
        let (addr, len) = &mut self.0[i];
        *len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        ((addr as *mut libc::sockaddr_storage).cast(), len)
    }

    /// The address accept i wrote, as text, once it completed.
    pub fn show(&self, i: usize) -> String {
        let (addr, len) = &self.0[i];
        // SAFETY: the accept completed: the kernel wrote `len` bytes of the address.
        let peer = unsafe {
            SockaddrStorage::from_raw((addr as *const libc::sockaddr_storage).cast(), Some(*len))
        };
        peer.map_or_else(|| "?".to_string(), |p| net::show(&p))
    }
}

/// Lines in `bytes`, each one request of the echo protocol (for the summary).
pub fn lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// A send of `len` bytes at `buf` (inside the client's send buffer) on socket `fd`.
pub fn send_entry(fd: usize, buf: *const u8, len: usize) -> squeue::Entry {
    // MSG_NOSIGNAL: a send to a reset connection fails with EPIPE instead of raising
    // SIGPIPE (which Rust's runtime ignores anyway).
    // [send-op]
    opcode::Send::new(types::Fd(fd as RawFd), buf, len as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(tag(Op::Send, fd))
    // [/send-op]
}

/// A cancel of client `fd`'s operation `op` (matched by its user_data).
pub fn cancel_entry(fd: usize, op: Op) -> squeue::Entry {
    let cancel = if op == Op::Recv {
        Op::CancelRecv
    } else {
        Op::CancelSend
    };
    opcode::AsyncCancel::new(tag(op, fd))
        .build()
        .user_data(tag(cancel, fd))
}
