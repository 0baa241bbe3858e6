//! Lesson 11's server: what it keeps per client, and the loop that submits accept, recv and
//! send to the ring and reacts to their completions. main.rs sets the ring up.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};
use nix::errno::Errno;
use nix::sys::socket::{shutdown, Shutdown, SockaddrLike, SockaddrStorage};
use nix::unistd::close;
use sockets_by_hand::accept::{AcceptPause, RETRY};
use sockets_by_hand::cli::Lesson;
use sockets_by_hand::conn::{EchoConn, READ_CHUNK};
use sockets_by_hand::ending::Ending;
use sockets_by_hand::errors::{fatal, report};
use sockets_by_hand::{net, say, stop};

use crate::{mistake, Mistake, RING_ENTRIES};

/// The most one send takes from a client's pending replies.
const SEND_CHUNK: usize = 64 * 1024;

/// Accepts kept in flight at once: with one, a loaded loop takes one newcomer per round trip.
const ACCEPTS: usize = 16;

/// What an operation was for. Its user_data carries the kind and a number: the client's fd
/// for Recv, Send and Cancel, the accept's index for Accept (see `tag` and `untag`).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(u32)]
enum Op {
    Accept = 0,
    RetryAccept = 1,
    Stop = 2,
    Recv = 3,
    Send = 4,
    Cancel = 5,
}

/// user_data: the number in the high 32 bits, the kind in the low 32.
fn tag(op: Op, n: usize) -> u64 {
    (n as u64) << 32 | op as u64
}

/// Inverse of `tag`.
fn untag(user_data: u64) -> (Op, usize) {
    let op = match user_data as u32 {
        0 => Op::Accept,
        1 => Op::RetryAccept,
        2 => Op::Stop,
        3 => Op::Recv,
        4 => Op::Send,
        _ => Op::Cancel, // 5: `tag` makes no other
    };
    (op, (user_data >> 32) as usize)
}

/// Where an accept op writes the client's address, after the submission.
struct PeerAddr {
    addr: libc::sockaddr_storage,
    len: libc::socklen_t,
}

struct Client {
    fd: OwnedFd,
    peer: String,
    conn: EchoConn,
    /// The recv buffer: the kernel's from submission to completion.
    recv_buf: Box<[u8]>,
    /// A copy of the replies being sent: the kernel reads it until the send completes,
    /// while new replies pile up in `conn` (whose Vec may grow and move meanwhile).
    send_buf: Vec<u8>,
    /// How much of `send_buf` the kernel has taken so far.
    sent: usize,
    recv_in_flight: bool,
    send_in_flight: bool,
    /// Set once the conversation is over; the fd closes when nothing is in flight.
    ending: Option<Ending>,
    cancelled: bool,
    /// Cancel requests not yet completed. The fd is not closed (and its number not reused)
    /// before they are: a late cancel must not hit the next client's operation.
    cancels_in_flight: u8,
}

pub struct Server {
    /// The lesson being served, for the summary line at Ctrl-C.
    lesson: &'static Lesson,
    ring: IoUring,
    listener: OwnedFd,
    stop: OwnedFd,
    /// Clients by fd (user_data carries the fd). The buffers the kernel holds pointers
    /// into (recv_buf, send_buf) are heap allocations of their own, so they stay put when
    /// this Vec grows and moves the Client values. An fd closes only once nothing is in
    /// flight on it, so a completion never finds the next client on the same number.
    clients: Vec<Option<Client>>,
    /// Where accept i writes its client's address: a boxed slice, which can never grow
    /// and move while the kernel holds pointers into it.
    peers: Box<[PeerAddr]>,
    /// Accept i is in flight.
    accepting: [bool; ACCEPTS],
    /// The accept pause after EMFILE (src/accept.rs); while it lasts no accept is
    /// submitted, only a timeout op (retry_after) that ends it.
    pause: AcceptPause,
    retry_in_flight: bool,
    retry_after: Box<types::Timespec>,
    /// Completions of one round, (user_data, result); allocated once.
    done: Vec<(u64, i32)>,
    served: u64,
    /// `--mistake reuse-buffer` only: the one recv buffer every client's recv points into.
    shared_recv: Box<[u8]>,
    /// Ctrl-C came: no more accepts, and the loop ends once every client is closed.
    stopping: bool,
    open_at_stop: usize,
}

impl Server {
    /// The server around a ring just set up, with nothing submitted yet.
    pub fn new(lesson: &'static Lesson, ring: IoUring, listener: OwnedFd, stop: OwnedFd) -> Self {
        Server {
            lesson,
            ring,
            listener,
            stop,
            clients: Vec::new(),
            peers: (0..ACCEPTS)
                .map(|_| PeerAddr {
                    // SAFETY: sockaddr_storage is plain bytes; all zeros is a valid value.
                    addr: unsafe { std::mem::zeroed() },
                    len: 0,
                })
                .collect(),
            accepting: [false; ACCEPTS],
            pause: AcceptPause::new(RETRY),
            retry_in_flight: false,
            retry_after: Box::new(types::Timespec::from(RETRY)),
            done: Vec::with_capacity(2 * RING_ENTRIES as usize),
            served: 0,
            shared_recv: if mistake(Mistake::ReuseBuffer) {
                vec![0; READ_CHUNK].into_boxed_slice()
            } else {
                Box::default()
            },
            stopping: false,
            open_at_stop: 0,
        }
    }

    /// Submits the stop pipe's poll and the first accepts, then runs until Ctrl-C.
    pub fn serve(mut self) {
        self.submit_stop_poll();
        self.submit_accept();
        self.run();
    }

    fn run(&mut self) {
        while !(self.stopping && self.clients.iter().all(Option::is_none)) {
            // io_uring_enter(2): submit every operation queued since the last call and
            // sleep until at least one has completed. One call, many operations.
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(err) if err.raw_os_error() == Some(libc::EINTR) => {}
                Err(err) => fatal(
                    "io_uring_enter",
                    Errno::from_raw(err.raw_os_error().unwrap_or(0)),
                ),
            }
            // Take every completion off the ring (they come in any order), then act.
            self.done.clear();
            self.done.extend(
                self.ring
                    .completion()
                    .map(|cqe| (cqe.user_data(), cqe.result())),
            );
            for i in 0..self.done.len() {
                let (user_data, result) = self.done[i];
                match untag(user_data) {
                    (Op::Accept, i) => self.accepted(i, result),
                    (Op::RetryAccept, _) => {
                        self.retry_in_flight = false;
                        self.submit_accept();
                    }
                    (Op::Stop, _) => self.stop(result),
                    (op, fd) => self.completed(fd, op, result),
                }
            }
        }
        say!(
            "{}",
            stop::summary(self.lesson, self.served, self.open_at_stop)
        );
    }

    /// Keeps a poll on the stop pipe in the ring: it completes when Ctrl-C writes its byte.
    fn submit_stop_poll(&mut self) {
        let entry = opcode::PollAdd::new(types::Fd(self.stop.as_raw_fd()), libc::POLLIN as u32);
        push(&mut self.ring, entry.build().user_data(tag(Op::Stop, 0)));
    }

    /// Ctrl-C (a poll result > 0): stop accepting, and wind every client down as if its
    /// conversation were over (cancel what is in flight, close); `run` ends after the last.
    fn stop(&mut self, result: i32) {
        if result <= 0 {
            return self.submit_stop_poll();
        }
        self.stopping = true;
        self.open_at_stop = self.clients.iter().flatten().count();
        for fd in 0..self.clients.len() {
            if let Some(client) = self.clients[fd].as_mut() {
                client.end(Ending::Eof); // not logged while stopping
                self.drive(fd);
            }
        }
    }

    /// Puts every accept that is not in flight back in flight. While accept is paused
    /// after EMFILE it submits none, only a timeout op whose completion tries again.
    fn submit_accept(&mut self) {
        if self.stopping {
            return;
        }
        if !self.pause.watching(Instant::now()) {
            if !self.retry_in_flight {
                let limit = self.pause.wait_limit(Instant::now()).unwrap_or(RETRY);
                *self.retry_after = types::Timespec::from(limit);
                let timeout = opcode::Timeout::new(&*self.retry_after).build();
                push(&mut self.ring, timeout.user_data(tag(Op::RetryAccept, 0)));
                self.retry_in_flight = true;
            }
            return;
        }
        for i in 0..ACCEPTS {
            if self.accepting[i] {
                continue;
            }
            let peer = &mut self.peers[i];
            peer.len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // An accept op: it completes with the new fd, and the client's address in `peer`.
            let entry = opcode::Accept::new(
                types::Fd(self.listener.as_raw_fd()),
                (&mut peer.addr as *mut libc::sockaddr_storage).cast(),
                &mut peer.len,
            )
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(tag(Op::Accept, i));
            push(&mut self.ring, entry);
            self.accepting[i] = true;
        }
    }

    fn accepted(&mut self, i: usize, result: i32) {
        self.accepting[i] = false;
        if result < 0 {
            // Reports EMFILE once per pause (and pauses); a broken listener ends the program.
            self.pause.failed(Errno::from_raw(-result));
        } else {
            // SAFETY: the accept completed, so `result` is a new fd we own, and the kernel
            // wrote `len` bytes of the client's address into `addr`.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(result as RawFd) };
            if self.stopping {
                if let Err(errno) = close(fd) {
                    report("close", errno);
                }
                return;
            }
            let peer = unsafe {
                SockaddrStorage::from_raw(
                    (&self.peers[i].addr as *const libc::sockaddr_storage).cast(),
                    Some(self.peers[i].len),
                )
            };
            let peer = peer.map_or_else(|| "?".to_string(), |p| net::show(&p));
            say!("client connected: {peer}");
            self.served += 1;
            let client = Client {
                fd,
                peer,
                conn: EchoConn::new(),
                recv_buf: vec![0; READ_CHUNK].into_boxed_slice(),
                send_buf: Vec::with_capacity(SEND_CHUNK),
                sent: 0,
                recv_in_flight: false,
                send_in_flight: false,
                ending: None,
                cancelled: false,
                cancels_in_flight: 0,
            };
            let fd = result as usize;
            if fd >= self.clients.len() {
                self.clients.resize_with(fd + 1, || None);
            }
            self.clients[fd] = Some(client);
            self.drive(fd);
        }
        self.submit_accept(); // the next client
    }

    /// A client's operation completed.
    fn completed(&mut self, fd: usize, op: Op, result: i32) {
        let Some(client) = self.clients.get_mut(fd).and_then(Option::as_mut) else {
            return;
        };
        match op {
            Op::Recv => {
                client.recv_in_flight = false;
                match result {
                    0 => client.conn.peer_closed(),
                    n if n > 0 && mistake(Mistake::ReuseBuffer) => {
                        // The mistake's shared buffer holds whichever recv of this batch
                        // landed last, not necessarily this client's bytes.
                        client.conn.received(&self.shared_recv[..n as usize]);
                    }
                    n if n > 0 => {
                        client.conn.received(&client.recv_buf[..n as usize]);
                    }
                    err => match Errno::from_raw(-err) {
                        Errno::ECANCELED | Errno::EINTR | Errno::EAGAIN => {}
                        errno => client.end(Ending::Failed("recv", errno)),
                    },
                }
            }
            Op::Send => {
                client.send_in_flight = false;
                if result >= 0 {
                    let n = result as usize;
                    client.conn.wrote(n);
                    client.sent += n;
                    if client.sent < client.send_buf.len() && client.ending.is_none() {
                        // A partial send: resubmit the rest, from the same buffer.
                        let rest = &client.send_buf[client.sent..];
                        let entry = send_entry(client, rest.as_ptr(), rest.len());
                        client.send_in_flight = true;
                        push(&mut self.ring, entry);
                        return;
                    }
                } else {
                    match Errno::from_raw(-result) {
                        Errno::ECANCELED | Errno::EINTR | Errno::EAGAIN => {
                            // Nothing was taken: `conn` still holds those bytes, and
                            // the next send copies them again.
                            client.send_buf.clear();
                            client.sent = 0;
                        }
                        errno => client.end(Ending::Failed("send", errno)),
                    }
                }
            }
            // A cancel is done (its target completes on its own, with ECANCELED or a result).
            _ => client.cancels_in_flight -= 1,
        }
        self.drive(fd);
    }

    /// Submits what a client needs next (a recv, a send), or winds it down once its
    /// conversation is over: cancel what is in flight, close when nothing is.
    fn drive(&mut self, fd: usize) {
        let Some(client) = self.clients[fd].as_mut() else {
            return;
        };
        if client.ending.is_none() && client.conn.wants_shutdown() {
            // shutdown(2) SHUT_WR after the last reply, a plain call (it queues a FIN and
            // never waits); then recv and drop until the client closes: the lingering close.
            match shutdown(client.fd.as_raw_fd(), Shutdown::Write) {
                Ok(()) => {
                    client.conn.shut_down(&client.peer);
                }
                Err(errno) => client.end(Ending::Failed("shutdown", errno)),
            }
        }
        if client.ending.is_none() && client.conn.finished() {
            client.ending = Some(client.conn.ending());
        }
        if client.ending.is_none() {
            if !client.send_in_flight && client.conn.wants_write() {
                // Copy the next chunk of replies into send_buf (its capacity is fixed: no
                // reallocation) and submit a send of it.
                let pending = client.conn.pending();
                let n = pending.len().min(SEND_CHUNK);
                client.send_buf.clear();
                client.send_buf.extend_from_slice(&pending[..n]);
                client.sent = 0;
                let entry = send_entry(client, client.send_buf.as_ptr(), n);
                client.send_in_flight = true;
                push(&mut self.ring, entry);
            }
            if !client.recv_in_flight && client.conn.wants_read() {
                // Submit a recv into this client's buffer; it completes when bytes arrive.
                // [recv-buf]
                let mut buf = client.recv_buf.as_mut_ptr();
                if mistake(Mistake::ReuseBuffer) {
                    // The mistake: one buffer for all, handed to the kernel again while
                    // other recvs still own it. Memory stays safe (a plain byte array alive
                    // as long as the server; the kernel fills it inside our io_uring_enter,
                    // never while we read it), but every recv of a batch writes over the
                    // others' bytes: clients get answers to other clients' lines.
                    buf = self.shared_recv.as_mut_ptr();
                }
                // [/recv-buf]
                let entry =
                    opcode::Recv::new(types::Fd(client.fd.as_raw_fd()), buf, READ_CHUNK as u32)
                        .build()
                        .user_data(tag(Op::Recv, fd));
                client.recv_in_flight = true;
                push(&mut self.ring, entry);
            }
        } else if client.recv_in_flight || client.send_in_flight || client.cancels_in_flight > 0 {
            if !client.cancelled {
                // Cancel the outstanding ops; their completions (ECANCELED, or a late
                // result) come back to `completed`, and the fd closes after the last.
                client.cancelled = true;
                let n = client.recv_in_flight as u8 + client.send_in_flight as u8;
                say!(
                    "client {}: cancelling {n} operation(s) in flight before close",
                    client.peer
                );
                for (busy, op) in [
                    (client.recv_in_flight, Op::Recv),
                    (client.send_in_flight, Op::Send),
                ] {
                    if busy {
                        let cancel = opcode::AsyncCancel::new(tag(op, fd)).build();
                        push(&mut self.ring, cancel.user_data(tag(Op::Cancel, fd)));
                        client.cancels_in_flight += 1;
                    }
                }
            }
        } else {
            let client = self.clients[fd].take().expect("client present");
            // close(2): nothing is in flight, so the buffers are ours again and the fd can go.
            if let Err(errno) = close(client.fd) {
                report("close", errno);
            }
            let ending = client.ending.unwrap_or(Ending::Eof);
            if !self.stopping && !client.conn.lingering() {
                say!("client disconnected: {} ({ending})", client.peer);
            }
            self.pause.resume(); // a free fd: accept can go on
            self.submit_accept();
        }
    }
}

impl Client {
    fn end(&mut self, ending: Ending) {
        if self.ending.is_none() {
            self.ending = Some(ending);
        }
    }
}

/// A send of `len` bytes at `buf` (inside the client's send_buf) on the client's socket.
fn send_entry(client: &Client, buf: *const u8, len: usize) -> squeue::Entry {
    // MSG_NOSIGNAL: a send to a reset connection fails with EPIPE instead of raising
    // SIGPIPE (which Rust's runtime ignores anyway).
    opcode::Send::new(types::Fd(client.fd.as_raw_fd()), buf, len as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(tag(Op::Send, client.fd.as_raw_fd() as usize))
}

/// Queues an entry for the next io_uring_enter.
fn push(ring: &mut IoUring, entry: squeue::Entry) {
    loop {
        // SAFETY: every buffer an entry points to (a client's recv_buf or send_buf, a
        // PeerAddr, the Timespec) is a heap allocation owned by the Server, neither freed,
        // moved nor touched until that entry's completion has been taken (except the bytes
        // of --mistake reuse-buffer's shared buffer: see `drive`).
        if unsafe { ring.submission().push(&entry) }.is_ok() {
            return;
        }
        // The submission ring is full: hand what it holds to the kernel now.
        if let Err(err) = ring.submit() {
            fatal(
                "io_uring_enter",
                Errno::from_raw(err.raw_os_error().unwrap_or(0)),
            );
        }
    }
}
