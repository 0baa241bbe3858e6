// Generated from lessons/15-uring-multishot/server.rs by exercises/15/exercise.txt: write its todo!()s.
//! Lesson 15's server: what it keeps per client, and the loop that arms multishot accept and
//! recv, sends, and reacts to completions. bufs.rs is the buffer ring; ring.rs the plumbing.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use io_uring::{cqueue, opcode, types};
use nix::errno::Errno;
use nix::sys::socket::{getpeername, shutdown, Shutdown, SockaddrStorage};
use nix::unistd::close;
use sockets_by_hand::cli::Lesson;
use sockets_by_hand::conn::EchoConn;
use sockets_by_hand::ending::Ending;
use sockets_by_hand::errors::report;
use sockets_by_hand::{net, say};

use crate::bufs::{BufRing, GROUP};
use crate::ring::{self, cancel_entry, send_entry, tag, untag, Op, Ring, SEND_CHUNK};
use io_uring::squeue;

/// Send buffers kept for reuse once their send is done; beyond that they are freed.
const SPARE_SENDS: usize = 256;

struct Client {
    fd: OwnedFd,
    peer: String,
    conn: EchoConn,
    /// A copy of the replies being sent, only while a send is in flight: the kernel reads
    /// it until the send completes, while new replies pile up in `conn`.
    sending: Option<Vec<u8>>,
    /// How much of `sending` the kernel has taken so far.
    sent: usize,
    /// A multishot recv is in the ring: it completes each time bytes arrive, until a
    /// completion without IORING_CQE_F_MORE ends it.
    recv_armed: bool,
    /// `--mistake no-rearm` only: false once the mistake has let this client's recv lapse.
    rearm: bool,
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
    /// The provided buffers every recv takes from (bufs.rs).
    bufs: BufRing,
    listener: OwnedFd,
    /// Clients by fd (user_data carries the fd). A buffer the kernel holds a pointer into
    /// is a heap allocation of its own, which stays put when this Vec grows and moves the
    /// Client values. An fd closes only once nothing is in flight on it, so a completion
    /// never finds the next client on the same number.
    clients: Vec<Option<Client>>,
    /// Send buffers whose send is done, for the next send; allocated as sends need them.
    spare: Vec<Vec<u8>>,
    /// The multishot accept is in the ring.
    accepting: bool,
    served: u64,
    /// Ctrl-C came: no more accepts, and the loop ends once every client is closed.
    stopping: bool,
    open_at_stop: usize,
}

impl Server {
    /// The server around a ring just set up, with nothing submitted yet.
    pub fn new(lesson: &'static Lesson, ring: Ring, bufs: BufRing, listener: OwnedFd) -> Self {
        Server {
            lesson,
            ring,
            bufs,
            listener,
            clients: Vec::new(),
            spare: Vec::new(),
            accepting: false,
            served: 0,
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
                let (user_data, result, flags) = self.ring.done[i];
                match untag(user_data) {
                    (Op::Accept, _) => self.accepted(result, cqueue::more(flags)),
                    (Op::RetryAccept, _) => {
                        self.ring.retried();
                        self.submit_accept();
                    }
                    (Op::Stop, _) => self.stop(result),
                    (op, fd) => self.completed(fd, op, result, flags),
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
        if !self.accepting {
            // A multishot accept: one completion per new client, while they carry F_MORE.
            let entry: squeue::Entry = todo!("a multishot IORING_OP_ACCEPT on the listener, submitted once: opcode::AcceptMulti with `types::Fd(self.listener.as_raw_fd())`, SOCK_CLOEXEC in .flags(), .build(), .user_data(`tag(Op::Accept, 0)`); each new client is one completion of it; man 3 io_uring_prep_multishot_accept");
            self.ring.push(entry);
            self.accepting = true;
        }
    }

    fn accepted(&mut self, result: i32, more: bool) {
        if !more {
            // No F_MORE: the multishot accept ended (EMFILE, say); resubmitted below, or paused.
            self.accepting = false;
        }
        if result == -libc::EINVAL {
            ring::refused("accept", Errno::EINVAL, "multishot accept", "5.19");
        }
        if result < 0 {
            // Reports EMFILE once per pause (and pauses); a broken listener ends the program.
            self.ring.pause.failed(Errno::from_raw(-result));
        } else {
            // SAFETY: the accept completed, so `result` is a new fd we own.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(result as RawFd) };
            if self.stopping {
                if let Err(errno) = close(fd) {
                    report("close", errno);
                }
                return;
            }
            // getpeername(2): a multishot accept writes no address, so ask for it.
            let peer = getpeername::<SockaddrStorage>(fd.as_raw_fd())
                .map_or_else(|_| "?".to_string(), |p| net::show(&p));
            say!("client connected: {peer}");
            self.served += 1;
            let client = Client {
                fd,
                peer,
                conn: EchoConn::with_reply_capacity(0), // replies: none beyond the welcome
                sending: None,
                sent: 0,
                recv_armed: false,
                rearm: true,
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
    fn completed(&mut self, fd: usize, op: Op, result: i32, flags: u32) {
        let Some(client) = self.clients.get_mut(fd).and_then(Option::as_mut) else {
            return;
        };
        match op {
            Op::Recv => {
                todo!("a recv completion without IORING_CQE_F_MORE, `!cqueue::more(flags)`, ends the multishot recv (EOF, an error, ENOBUFS: the ring ran dry): set client.recv_armed = false, so that drive arms a new one");
                match result {
                    0 => client.conn.peer_closed(),
                    n if n > 0 => {
                        // The kernel took a buffer from the ring and says which: consume its
                        // bytes, then give it straight back.
                        todo!("the recv's completion: the buffer the kernel took is in the flags, `cqueue::buffer_select(flags)`; its n bytes are `self.bufs.bytes(bid, n as usize)`: add their lines to self.ring.lines (ring::lines), feed them to client.conn.received, then hand the buffer back: self.bufs.give_back(bid)");
                    }
                    err => match Errno::from_raw(-err) {
                        Errno::ENOBUFS | Errno::ECANCELED | Errno::EINTR | Errno::EAGAIN => {}
                        Errno::EINVAL => {
                            ring::refused("recv", Errno::EINVAL, "multishot recv", "6.0")
                        }
                        errno => client.end(Ending::Failed("recv", errno)),
                    },
                }
            }
            Op::Send => {
                let Some(buf) = client.sending.take() else {
                    return;
                };
                if result >= 0 {
                    let n = result as usize;
                    client.conn.wrote(n);
                    client.sent += n;
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
                // The send is done, and its buffer free for the next one, anyone's.
                if self.spare.len() < SPARE_SENDS {
                    self.spare.push(buf);
                }
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
                let mut buf = self.spare.pop().unwrap_or_default(); // a spare one, if any
                buf.clear();
                buf.extend_from_slice(&pending[..n]);
                client.sent = 0;
                self.ring.push(send_entry(fd, buf.as_ptr(), n));
                client.sending = Some(buf);
            }
            let idle = !client.recv_armed && !client.cancelling_recv;
            if idle && client.conn.wants_read() && client.rearm {
                // Arm a multishot recv: a ring buffer (GROUP) per arrival of bytes, until it ends.
                let entry: squeue::Entry = todo!("a multishot IORING_OP_RECV on the client, armed once: opcode::RecvMulti with `types::Fd(client.fd.as_raw_fd())` and the buffer group GROUP, .build(), .user_data(`tag(Op::Recv, fd)`): it takes a ring buffer each time bytes arrive; man 3 io_uring_prep_recv_multishot");
                client.recv_armed = true;
                self.ring.push(entry);
            } else if client.recv_armed && !client.cancelling_recv && !client.conn.wants_read() {
                // Backpressure: the replies are backed up (HIGH_WATER, src/conn.rs), and an
                // armed recv would go on taking buffers. Cancel it; drive re-arms it later.
                self.ring.push(cancel_entry(fd, Op::Recv));
                client.cancelling_recv = true;
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
