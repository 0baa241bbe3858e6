// Generated from lessons/16-socks5-udp/datagrams.rs by exercises/16/exercise.txt: write its todo!()s.
//! The datagram calls, one batch at a time: recvfrom/sendto (one datagram a call, with
//! `--no-batch`) or recvmmsg/sendmmsg (up to [`BATCH`] a call). Read udp.rs first: it says
//! what to receive and where to send; this file makes the calls.
//!
//! One [`Batch`] serves every association (the loop is one thread): [`BATCH`] buffers, each
//! [`ROOM`] bytes of head room (where a reply's SOCKS header is written, just before its
//! payload, so no payload is ever copied) plus room for the largest datagram.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{SockaddrLike, SockaddrStorage};
use protocols::socks5_udp::MAX_IP_HEADER;
use sockets_by_hand::net;

/// Datagrams per recvmmsg/sendmmsg call.
pub const BATCH: usize = 32;
/// Head room before each received payload: the longest header naming an IP source.
pub const ROOM: usize = MAX_IP_HEADER;
/// The largest datagram a UDP socket can receive (a 16-bit length, less the UDP header).
pub const MAX_DATAGRAM: usize = 65_535;

/// One received datagram: who sent it, and its real length (MSG_TRUNC: even when it was
/// longer than the buffer, which then holds only the first part).
#[derive(Clone, Copy)]
pub struct Got {
    pub from: Option<SocketAddr>,
    pub len: usize,
    pub truncated: bool,
}

/// A datagram to send: from buffer `buf`, bytes `start..end`, to `to`.
struct Out {
    buf: usize,
    start: usize,
    end: usize,
    to: net::Sockaddr,
}

pub struct Batch {
    bufs: Vec<Box<[u8]>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    pub got: Vec<Got>,
    out: Vec<Out>,
    /// false: one recvfrom/sendto a datagram (`--no-batch`).
    pub batched: bool,
    /// UDP GSO: runs of equal-sized datagrams to one address go as one message (off after
    /// the kernel refuses it once).
    gso: bool,
    /// Per message: its UDP_SEGMENT control message, and how many datagrams it holds.
    cmsgs: Vec<Cmsg>,
    groups: Vec<usize>,
}

/// A control message carrying UDP_SEGMENT's u16, laid out as CMSG_SPACE(2) bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Cmsg {
    hdr: libc::cmsghdr,
    segment: u16,
    _pad: [u8; 6],
}

/// At most this many datagrams in one GSO message (the kernel's UDP_MAX_SEGMENTS), and
/// this many payload bytes (under the 65,507 an IPv4 datagram may carry).
const GSO_SEGMENTS: usize = 64;
const GSO_BYTES: usize = 65_000;

impl Batch {
    pub fn new(batched: bool) -> Batch {
        let n = if batched { BATCH } else { 1 };
        // Allocated once, touched only as far as datagrams fill them (RSS grows with use).
        let bufs = (0..n)
            .map(|_| vec![0u8; ROOM + MAX_DATAGRAM].into_boxed_slice())
            .collect();
        Batch {
            bufs,
            addrs: (0..n).map(|_| zeroed()).collect(),
            iovs: (0..n).map(|_| zeroed()).collect(),
            hdrs: (0..n).map(|_| zeroed()).collect(),
            got: Vec::with_capacity(n),
            out: Vec::with_capacity(n),
            batched,
            gso: batched,
            cmsgs: vec![zeroed(); n],
            groups: Vec::with_capacity(n),
        }
    }

    /// Datagrams per call: BATCH, or 1 with `--no-batch`.
    pub fn size(&self) -> usize {
        self.bufs.len()
    }

    /// Buffer `i`: [`ROOM`] bytes of head room, then the datagram received into it.
    pub fn buf(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i]
    }

    /// Receives one datagram from `fd` into buffer 0 at [`ROOM`], `cap` bytes at most (with
    /// batching: what is queued, up to a batch, each into its buffer). Fills [`Batch::got`];
    /// Err(EAGAIN): nothing was queued.
    pub fn recv(&mut self, fd: &OwnedFd, cap: usize) -> Result<usize, Errno> {
        self.got.clear();
        let cap = cap.min(MAX_DATAGRAM);
        let (n, len): (usize, libc::socklen_t) = todo!("recvfrom(2) one datagram from fd into self.bufs[0][ROOM..], cap bytes at most, flags MSG_TRUNC (then n is the datagram's real length, even if it was cut), its sender's address into self.addrs[0] (len: its size in, the address's length out); EAGAIN: return Err(Errno::EAGAIN); man 2 recvfrom");
        let from = address(&self.addrs[0], len);
        self.got.push(Got {
            from,
            len: n,
            truncated: n > cap,
        });
        Ok(1)
    }

    /// The fast path of [`Batch::recv`]: recvmmsg.
    fn recv_many(&mut self, fd: &OwnedFd, cap: usize) -> Result<usize, Errno> {
        let socklen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        for i in 0..self.bufs.len() {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i][ROOM..].as_mut_ptr().cast(),
                iov_len: cap,
            };
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = (&raw mut self.addrs[i]).cast();
            hdr.msg_namelen = socklen;
            hdr.msg_iov = &raw mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
        }
        // recvmmsg(2): up to BATCH datagrams in one call, each with its sender's address
        // and its real length (MSG_TRUNC; msg_flags says which were cut).
        // SAFETY: every header points at a live buffer, iovec and address of this batch.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                self.bufs.len() as libc::c_uint,
                libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        let n = Errno::result(n)? as usize;
        for i in 0..n {
            let hdr = &self.hdrs[i];
            let len = hdr.msg_len as usize;
            let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > cap;
            let from = address(&self.addrs[i], hdr.msg_hdr.msg_namelen);
            self.got.push(Got {
                from,
                len,
                truncated,
            });
        }
        Ok(n)
    }

    /// Queues bytes `start..end` of buffer `buf` for `to` (sent by [`Batch::send`]).
    pub fn queue(&mut self, buf: usize, start: usize, end: usize, to: SocketAddr) {
        let to = net::sockaddr(to);
        self.out.push(Out {
            buf,
            start,
            end,
            to,
        });
    }

    /// Sends what is queued through `fd`, one sendto each (with batching: sendmmsg). Returns
    /// how many went out, and the failures (the datagram is dropped: UDP has no backpressure).
    pub fn send(&mut self, fd: &OwnedFd, failed: &mut Vec<(SocketAddr, Errno)>) -> usize {
        let mut sent = 0;
        for out in &self.out {
            let payload = &self.bufs[out.buf][out.start..out.end];
            todo!("sendto(2) payload to out.to (out.to.as_ref().as_ptr(), .len()): one datagram; Ok: sent += 1; an error (EAGAIN: the send buffer is full): failed.push((target(&out.to), errno)), the datagram is dropped; man 2 sendto");
        }
        self.out.clear();
        sent
    }

    /// The fast path of [`Batch::send`]: sendmmsg, runs of datagrams with UDP GSO.
    fn send_many(&mut self, fd: &OwnedFd, failed: &mut Vec<(SocketAddr, Errno)>) -> usize {
        let mut sent = 0;
        let mut next = 0;
        while next < self.out.len() {
            let groups = self.prepare(next);
            // sendmmsg(2): up to BATCH messages, each to its own address, in one call; a
            // message of equal-sized datagrams to one address goes as one, with UDP_SEGMENT
            // (UDP GSO: the kernel cuts it into datagrams). It stops at the first message that
            // fails: that one is dropped, the rest go next round.
            // SAFETY: every header points at live payloads, an address and a control buffer.
            let n =
                unsafe { libc::sendmmsg(fd.as_raw_fd(), self.hdrs.as_mut_ptr(), groups as _, 0) };
            match Errno::result(n) {
                Ok(n) => {
                    let went: usize = self.groups[..n as usize].iter().sum();
                    sent += went;
                    next += went;
                }
                // No UDP GSO on this path (an old kernel, a device without checksum offload):
                // send one datagram a message from now on.
                Err(Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT) if self.groups[0] > 1 => {
                    self.gso = false;
                }
                Err(errno) => {
                    for _ in 0..self.groups[0] {
                        failed.push((target(&self.out[next].to), errno));
                        next += 1;
                    }
                }
            }
        }
        self.out.clear();
        sent
    }
}

impl Batch {
    /// Fills the mmsghdrs from `self.out[next..]`: one message per datagram, or, with UDP
    /// GSO, one per run of equal-sized datagrams to the same address (a shorter one may end
    /// a run). Returns how many messages; `self.groups` says how many datagrams each holds.
    fn prepare(&mut self, next: usize) -> usize {
        let (mut i, mut iov) = (next, 0);
        self.groups.clear();
        while i < self.out.len() && self.groups.len() < self.hdrs.len() {
            let first = &self.out[i];
            let (seg, to) = (first.end - first.start, target(&first.to));
            let mut k = 1;
            while self.gso && seg > 0 && i + k < self.out.len() && iov + k < self.iovs.len() {
                let o = &self.out[i + k];
                let len = o.end - o.start;
                if k == GSO_SEGMENTS
                    || len > seg
                    || seg * (k + 1) > GSO_BYTES
                    || target(&o.to) != to
                {
                    break;
                }
                k += 1;
                if len < seg {
                    break;
                }
            }
            for (j, out) in self.out[i..i + k].iter().enumerate() {
                let payload = &mut self.bufs[out.buf][out.start..out.end];
                self.iovs[iov + j] = libc::iovec {
                    iov_base: payload.as_mut_ptr().cast(),
                    iov_len: payload.len(),
                };
            }
            let m = self.groups.len();
            let cmsg = &mut self.cmsgs[m];
            let hdr = &mut self.hdrs[m].msg_hdr;
            let to = &self.out[i].to;
            hdr.msg_name = to.as_ref().as_ptr() as *mut libc::c_void;
            hdr.msg_namelen = to.as_ref().len();
            hdr.msg_iov = &raw mut self.iovs[iov];
            hdr.msg_iovlen = k;
            (hdr.msg_control, hdr.msg_controllen) = (std::ptr::null_mut(), 0);
            if k > 1 {
                // The control message: UDP_SEGMENT, the size of each datagram.
                cmsg.hdr.cmsg_len = size_of::<libc::cmsghdr>() + size_of::<u16>();
                (cmsg.hdr.cmsg_level, cmsg.hdr.cmsg_type) = (libc::SOL_UDP, libc::UDP_SEGMENT);
                cmsg.segment = seg as u16;
                hdr.msg_control = (&raw mut *cmsg).cast();
                hdr.msg_controllen = size_of::<Cmsg>();
            }
            self.groups.push(k);
            (i, iov) = (i + k, iov + k);
        }
        self.groups.len()
    }

    /// [`Batch::send`] with IPv4 datagrams through `v4` and IPv6 ones through `v6`.
    pub fn send_split(
        &mut self,
        v4: &OwnedFd,
        v6: &OwnedFd,
        failed: &mut Vec<(SocketAddr, Errno)>,
    ) -> usize {
        let is_v6 = |o: &Out| matches!(o.to, net::Sockaddr::V6(_));
        let (six, four): (Vec<Out>, Vec<Out>) = self.out.drain(..).partition(is_v6);
        self.out = four;
        let sent = self.send(v4, failed);
        self.out = six;
        sent + self.send(v6, failed)
    }
}

/// An all-zero C struct (sockaddr_storage, iovec, mmsghdr: null pointers, zero lengths).
fn zeroed<T: Copy>() -> T {
    // SAFETY: used only for the plain C structs above, for which all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// The sender's address the kernel wrote (`len` bytes of it).
fn address(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    // SAFETY: the kernel wrote `len` bytes of a socket address into `ss`.
    let ss = unsafe {
        SockaddrStorage::from_raw((ss as *const libc::sockaddr_storage).cast(), Some(len))
    };
    ss.as_ref().and_then(net::std_addr)
}

fn target(to: &net::Sockaddr) -> SocketAddr {
    match to {
        net::Sockaddr::V4(sin) => SocketAddr::from(*sin),
        net::Sockaddr::V6(sin6) => SocketAddr::from(*sin6),
    }
}
