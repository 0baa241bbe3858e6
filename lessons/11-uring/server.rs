//! Lesson 11's server: what it keeps per client, and the loop that submits accept, recv and
//! send and reacts to their completions. main.rs sets the ring up; ring.rs is the plumbing.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use io_uring::{opcode, types};
use nix::errno::Errno;
use nix::sys::socket::{shutdown, Shutdown};
use nix::unistd::close;
use sockets_by_hand::cli::Lesson;
use sockets_by_hand::conn::{EchoConn, READ_CHUNK};
use sockets_by_hand::ending::Ending;
use sockets_by_hand::errors::report;
use sockets_by_hand::say;

use crate::ring::{self, cancel_entry, send_entry, tag, untag, Op, Peers, Ring, SEND_CHUNK};
use crate::{mistake, Mistake};

/// Accepts kept in flight at once: with one, a loaded loop takes one newcomer per round trip.
const ACCEPTS: usize = 16;

struct Client {
    fd: OwnedFd,
    peer: String,
    conn: EchoConn,
    /// The recv buffer: the kernel's from submission to completion.
    recv_buf: Box<[u8]>,
    /// The client's own send buffer, 64 KiB, lent to `sending` while a send is in flight.
    send_buf: Vec<u8>,
    /// A copy of the replies being sent, only while a send is in flight: the kernel reads
    /// it until the send completes, while new replies pile up in `conn`.
    sending: Option<Vec<u8>>,
    /// How much of `sending` the kernel has taken so far.
    sent: usize,
    /// A recv is in the ring: it completes once, when bytes arrive.
    recv_armed: bool,
    /// Cancels in flight. The fd is not closed (and its number not reused) before they
    /// complete: a late cancel must not hit the next client's operation.
    cancelling_recv: bool,
    cancelling_send: bool,
    /// Set once the conversation is over; the fd closes when nothing is in flight.
    ending: Option<Ending>,
}

pub struct Server {
    /// The lesson being served, for the summary line at Ctrl-C.
    lesson: &'static Lesson,
    /// The ring, the stop pipe's poll and the accept pause (ring.rs).
    ring: Ring,
    listener: OwnedFd,
    /// Clients by fd (user_data carries the fd). A buffer the kernel holds a pointer into
    /// is a heap allocation of its own, which stays put when this Vec grows and moves the
    /// Client values. An fd closes only once nothing is in flight on it, so a completion
    /// never finds the next client on the same number.
    clients: Vec<Option<Client>>,
    /// Where accept i writes its client's address (ring.rs).
    peers: Peers,
    /// Accept i is in flight.
    accepting: [bool; ACCEPTS],
    served: u64,
    /// `--mistake reuse-buffer` only: the one recv buffer every client's recv points into.
    shared_recv: Box<[u8]>,
    /// Ctrl-C came: no more accepts, and the loop ends once every client is closed.
    stopping: bool,
    open_at_stop: usize,
}

impl Server {
    /// The server around a ring just set up, with nothing submitted yet.
    pub fn new(lesson: &'static Lesson, ring: Ring, listener: OwnedFd) -> Self {
        Server {
            lesson,
            ring,
            listener,
            clients: Vec::new(),
            peers: Peers::new(ACCEPTS),
            accepting: [false; ACCEPTS],
            served: 0,
            shared_recv: vec![0; READ_CHUNK].into_boxed_slice(),
            stopping: false,
            open_at_stop: 0,
        }
    }

    /// Submits the stop pipe's poll and the accept ops, then runs until Ctrl-C.
    pub fn serve(mut self) {
        self.ring.submit_stop_poll();
        self.submit_accept();
        self.run();
    }

    fn run(&mut self) {
        while !(self.stopping && self.clients.iter().all(Option::is_none)) {
            // io_uring_enter(2), then the completions it brought (ring.rs).
            self.ring.submit_and_wait();
            for i in 0..self.ring.done.len() {
                let (user_data, result, _) = self.ring.done[i];
                match untag(user_data) {
                    (Op::Accept, i) => self.accepted(i, result),
                    (Op::RetryAccept, _) => {
                        self.ring.retried();
                        self.submit_accept();
                    }
                    (Op::Stop, _) => self.stop(result),
                    (op, fd) => self.completed(fd, op, result),
                }
            }
        }
        self.ring
            .say_summary(self.lesson, self.served, self.open_at_stop);
    }

    /// Ctrl-C (a poll result > 0): stop accepting, and wind every client down as if its
    /// conversation were over (cancel what is in flight, close); `run` ends after the last.
    fn stop(&mut self, result: i32) {
        if !self.ring.stop_requested(result) {
            return;
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

    /// Puts every accept op that is not in flight back in flight. While accept is paused
    /// after EMFILE it submits none, only a timeout op whose completion tries again.
    fn submit_accept(&mut self) {
        if self.stopping || self.ring.accept_paused() {
            return;
        }
        for i in 0..ACCEPTS {
            if self.accepting[i] {
                continue;
            }
            // An accept op: it completes with the new fd, and the client's address in slot i.
            let (addr, len) = self.peers.slot(i);
            // [accept-op]
            let entry = opcode::Accept::new(types::Fd(self.listener.as_raw_fd()), addr, len)
                .flags(libc::SOCK_CLOEXEC)
                .build()
                .user_data(tag(Op::Accept, i));
            // [/accept-op]
            self.ring.push(entry);
            self.accepting[i] = true;
        }
    }

    fn accepted(&mut self, i: usize, result: i32) {
        self.accepting[i] = false;
        if result < 0 {
            // Reports EMFILE once per pause (and pauses); a broken listener ends the program.
            self.ring.pause.failed(Errno::from_raw(-result));
        } else {
            // SAFETY: the accept completed, so `result` is a new fd we own.
            // [accept-done]
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(result as RawFd) };
            // [/accept-done]
            if self.stopping {
                if let Err(errno) = close(fd) {
                    report("close", errno);
                }
                return;
            }
            let peer = self.peers.show(i);
            say!("client connected: {peer}");
            self.served += 1;
            let client = Client {
                fd,
                peer,
                conn: EchoConn::new(),
                recv_buf: vec![0; READ_CHUNK].into_boxed_slice(),
                send_buf: Vec::with_capacity(SEND_CHUNK),
                sending: None,
                sent: 0,
                recv_armed: false,
                cancelling_recv: false,
                cancelling_send: false,
                ending: None,
            };
            let fd = result as usize;
            if fd >= self.clients.len() {
                self.clients.resize_with(fd + 1, || None);
            }
            self.clients[fd] = Some(client);
            self.drive(fd);
        }
        self.submit_accept(); // the next accept, if it is not in flight
    }

    /// A client's operation completed.
    fn completed(&mut self, fd: usize, op: Op, result: i32) {
        let Some(client) = self.clients.get_mut(fd).and_then(Option::as_mut) else {
            return;
        };
        match op {
            Op::Recv => {
                client.recv_armed = false;
                match result {
                    0 => client.conn.peer_closed(),
                    n if n > 0 => {
                        // The mistake's shared buffer holds whichever recv of this batch
                        // landed last, not necessarily this client's bytes.
                        let buf = if !mistake(Mistake::ReuseBuffer) {
                            &client.recv_buf
                        } else {
                            &self.shared_recv
                        };
                        // [recv-done]
                        let bytes = &buf[..n as usize];
                        self.ring.lines += ring::lines(bytes);
                        client.conn.received(bytes);
                        // [/recv-done]
                    }
                    err => match Errno::from_raw(-err) {
                        Errno::ECANCELED | Errno::EINTR | Errno::EAGAIN => {}
                        errno => client.end(Ending::Failed("recv", errno)),
                    },
                }
            }
            Op::Send => {
                let Some(buf) = client.sending.take() else {
                    return;
                };
                if result >= 0 {
                    // [send-done]
                    let n = result as usize;
                    client.conn.wrote(n);
                    client.sent += n;
                    // [/send-done]
                    if client.sent < buf.len() && client.ending.is_none() {
                        // A partial send: resubmit the rest, from the same buffer.
                        let rest = &buf[client.sent..];
                        let entry = send_entry(fd, rest.as_ptr(), rest.len());
                        client.sending = Some(buf);
                        self.ring.push(entry);
                        return;
                    }
                } else {
                    match Errno::from_raw(-result) {
                        // Nothing was taken: `conn` still holds those bytes, and the next
                        // send copies them again.
                        Errno::ECANCELED | Errno::EINTR | Errno::EAGAIN => {}
                        errno => client.end(Ending::Failed("send", errno)),
                    }
                }
                // The send is done, and its buffer the client's again.
                client.send_buf = buf;
            }
            // A cancel is done (its target completes on its own, with ECANCELED or a result).
            Op::CancelRecv => client.cancelling_recv = false,
            _ => client.cancelling_send = false,
        }
        self.drive(fd);
    }

    /// Submits what a client needs next (a send, a recv), or winds it down once its
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
            if client.sending.is_none() && client.conn.wants_write() {
                // Copy the next chunk of replies into a send buffer and submit a send of it.
                let pending = client.conn.pending();
                let n = pending.len().min(SEND_CHUNK);
                let mut buf = std::mem::take(&mut client.send_buf); // the client's, 64 KiB
                buf.clear();
                buf.extend_from_slice(&pending[..n]);
                client.sent = 0;
                self.ring.push(send_entry(fd, buf.as_ptr(), n));
                client.sending = Some(buf);
            }
            if !client.recv_armed && client.conn.wants_read() {
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
                // [recv-op]
                let entry =
                    opcode::Recv::new(types::Fd(client.fd.as_raw_fd()), buf, READ_CHUNK as u32)
                        .build()
                        .user_data(tag(Op::Recv, fd));
                // [/recv-op]
                client.recv_armed = true;
                self.ring.push(entry);
            }
        } else if client.recv_armed || client.sending.is_some() {
            // Cancel the outstanding ops; their completions (ECANCELED, or a late result)
            // come back to `completed`, and the fd closes after the last.
            let (recv, send) = (
                client.recv_armed && !client.cancelling_recv,
                client.sending.is_some() && !client.cancelling_send,
            );
            if recv || send {
                say!(
                    "client {}: cancelling {} operation(s) in flight before close",
                    client.peer,
                    recv as u8 + send as u8
                );
            }
            if recv {
                self.ring.push(cancel_entry(fd, Op::Recv));
                client.cancelling_recv = true;
            }
            if send {
                self.ring.push(cancel_entry(fd, Op::Send));
                client.cancelling_send = true;
            }
        } else if !client.cancelling_recv && !client.cancelling_send {
            let client = self.clients[fd].take().expect("client present");
            // close(2): nothing is in flight, so the buffers are ours again and the fd can go.
            if let Err(errno) = close(client.fd) {
                report("close", errno);
            }
            let ending = client.ending.unwrap_or(Ending::Eof);
            if !self.stopping && !client.conn.lingering() {
                say!("client disconnected: {} ({ending})", client.peer);
            }
            self.ring.pause.resume(); // a free fd: accept can go on
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
