//! Buffers and pumping: one direction of a relay, and the bytes in flight in it.
//!
//! A source is not read while its destination's buffer is full (backpressure, bounded
//! memory). Buffers are lent by a [`Pool`] only while bytes are in flight, so an idle relay
//! holds none.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{setsockopt, shutdown, sockopt, Shutdown};
use nix::unistd::{read, write};
use sockets_by_hand::errors::{describe, report};

/// Bytes in flight per direction. Large reads mean few system calls per byte: 1 MiB moved
/// a single loopback stream ~20 % faster than 128 KiB (make bench-socks); only the pages a
/// read touched count in RSS.
pub const RELAY_BUF: usize = 1024 * 1024;
/// How many free buffers that moved bulk data the pool keeps for reuse during a burst.
const POOL_SPARE: usize = 4;
/// A bulk buffer not reused for this long is freed: the burst is over, and its resident
/// megabyte would otherwise stay with an idle relay.
const SPARE_IDLE: Duration = Duration::from_secs(1);
/// How many free buffers that only ever held a short message (a handshake, a small
/// exchange) the pool keeps: each has one resident page, and reusing it saves the mmap,
/// page fault and munmap of a new 1 MiB buffer per connection (docs/lessons/12-socks5.md,
/// "Bounded memory").
const LIGHT_SPARE: usize = 64;
/// A buffer whose bytes never went past this offset has touched one page.
const LIGHT: usize = 4000;
/// At most this many read/write rounds per direction per wake-up (fairness).
const PUMP_ROUNDS: usize = 4;

/// One direction: bytes read from its source, not yet written to its destination.
pub struct Flow {
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    /// How far into `buf` bytes have ever been written: the pages it made resident.
    touched: usize,
    /// How far into `buf` bytes were written while this flow held it, and when it last
    /// moved bulk data before: a short exchange does not keep a bulk buffer alive.
    used: usize,
    bulk_at: Option<Instant>,
    /// The source said EOF (read returned 0).
    pub eof: bool,
    /// shutdown(SHUT_WR) was sent to the destination.
    pub shut: bool,
    /// Bytes read from the source while relaying (for the log line).
    pub bytes: u64,
}

impl Flow {
    pub const fn new() -> Flow {
        Flow {
            buf: None,
            start: 0,
            end: 0,
            touched: 0,
            used: 0,
            bulk_at: None,
            eof: false,
            shut: false,
            bytes: 0,
        }
    }

    pub fn pending(&self) -> &[u8] {
        match &self.buf {
            Some(buf) => &buf[self.start..self.end],
            None => &[],
        }
    }

    /// Bytes waiting for the destination (POLLOUT wanted). Lesson 14's flow also counts
    /// those in its pipe.
    pub fn waiting(&self) -> bool {
        !self.pending().is_empty()
    }

    /// Room left, once the pending bytes are moved to the front.
    pub fn has_room(&self) -> bool {
        self.end - self.start < RELAY_BUF
    }

    /// Free space to read into (takes a buffer from the pool if there is none).
    pub fn room(&mut self, pool: &mut Pool) -> &mut [u8] {
        if self.buf.is_none() {
            (self.buf, self.touched, self.bulk_at) = pool.take();
            self.used = 0;
        }
        let Some(buf) = self.buf.as_mut() else {
            return &mut [];
        };
        if self.end == buf.len() && self.start > 0 {
            buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut buf[self.end..]
    }

    pub fn filled(&mut self, n: usize) {
        self.end += n;
        self.used = self.used.max(self.end);
        self.touched = self.touched.max(self.end);
    }

    /// `n` pending bytes were written (or used); an empty buffer goes back to the pool.
    pub fn consumed(&mut self, n: usize, pool: &mut Pool) {
        self.start += n;
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
            if let Some(buf) = self.buf.take() {
                pool.give(buf, self.touched, self.used, self.bulk_at);
            }
        }
    }

    /// Queues a short message (a SOCKS reply). Replies are a few bytes and come before any
    /// relayed data, so they always fit.
    pub fn push(&mut self, bytes: &[u8], pool: &mut Pool) {
        let room = self.room(pool);
        let n = bytes.len().min(room.len());
        room[..n].copy_from_slice(&bytes[..n]);
        self.filled(n);
    }

    /// Drops what is pending and gives the buffer back.
    pub fn release(&mut self, pool: &mut Pool) {
        let pending = self.end - self.start;
        self.consumed(pending, pool);
    }
}

/// Relay buffers not in use, kept for the next busy connection: no allocation per read.
pub struct Pool {
    /// Buffers that moved bulk data (up to [`POOL_SPARE`]), and when each last did.
    spare: Vec<(Box<[u8]>, Instant)>,
    /// Buffers with one touched page (up to [`LIGHT_SPARE`]): most connections' only ones.
    light: Vec<Box<[u8]>>,
}

impl Pool {
    pub fn new() -> Pool {
        // Buffers this big go straight to mmap and back to the kernel when freed (glibc
        // would otherwise raise its threshold after the first free and keep freed buffers
        // in its heap: a proxy that once moved a lot of data would stay big while idle).
        // SAFETY: mallopt only changes a malloc tuning parameter.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, (RELAY_BUF / 2) as libc::c_int) };
        Pool {
            spare: Vec::new(),
            light: Vec::new(),
        }
    }

    /// A buffer, how far into it bytes have been written before, and when it last moved
    /// bulk data. Bulk buffers unused for [`SPARE_IDLE`] are freed first.
    fn take(&mut self) -> (Option<Box<[u8]>>, usize, Option<Instant>) {
        let now = Instant::now();
        self.spare
            .retain(|(_, bulk_at)| now - *bulk_at < SPARE_IDLE);
        if let Some(buf) = self.light.pop() {
            return (Some(buf), LIGHT, None);
        }
        match self.spare.pop() {
            Some((buf, bulk_at)) => (Some(buf), RELAY_BUF, Some(bulk_at)),
            None => (Some(vec![0u8; RELAY_BUF].into_boxed_slice()), 0, None),
        }
    }

    /// Keeps `buf` for reuse, or frees it (munmap) when the pool has enough of its kind.
    fn give(&mut self, buf: Box<[u8]>, touched: usize, used: usize, bulk_at: Option<Instant>) {
        if touched <= LIGHT && self.light.len() < LIGHT_SPARE {
            self.light.push(buf);
        } else if touched > LIGHT && self.spare.len() < POOL_SPARE {
            let bulk_at = match bulk_at {
                Some(at) if used <= LIGHT => at,
                _ => Instant::now(),
            };
            self.spare.push((buf, bulk_at));
        }
    }
}

/// How a relay broke: which call failed, on which side.
pub enum Broken {
    /// Reading the source failed (ECONNRESET: the peer reset).
    Read(Errno),
    /// Writing to (or shutting down) the destination failed (EPIPE, ECONNRESET).
    Write(&'static str, Errno),
}

/// Moves bytes from `src` to `dst` through `flow` until neither side can go on now: read
/// while there is room, and write what was read at once (usually the socket takes it without
/// waiting for POLLOUT).
pub fn pump(
    src: &OwnedFd,
    dst: &OwnedFd,
    flow: &mut Flow,
    pool: &mut Pool,
    mut readable: bool,
) -> Result<(), Broken> {
    let mut writable = true;
    for _ in 0..PUMP_ROUNDS {
        let mut progress = false;
        if readable && !flow.eof && flow.has_room() {
            let room = flow.room(pool);
            let wanted = room.len();
            // read(2) from the source into the free part of the buffer.
            match read(src, room) {
                Ok(0) => {
                    flow.eof = true;
                    progress = true;
                }
                Ok(n) => {
                    flow.filled(n);
                    flow.bytes += n as u64;
                    progress = true;
                    // A short read means the socket is drained: skip the EAGAIN read.
                    readable = n == wanted;
                }
                Err(Errno::EAGAIN) => readable = false,
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(Broken::Read(errno)),
            }
            if flow.pending().is_empty() {
                flow.release(pool);
            }
        }
        if writable && !flow.pending().is_empty() {
            progress |= write_pending(dst, flow, pool, &mut writable)?;
        }
        if !progress {
            break;
        }
    }
    Ok(())
}

/// write(2) what waits in the buffer to the destination: it may take only part. Says whether
/// any went out; a full send buffer (EAGAIN) clears `writable`: the rest waits for POLLOUT.
pub fn write_pending(
    dst: &OwnedFd,
    flow: &mut Flow,
    pool: &mut Pool,
    writable: &mut bool,
) -> Result<bool, Broken> {
    match write(dst, flow.pending()) {
        Ok(n) => {
            flow.consumed(n, pool);
            Ok(true)
        }
        Err(Errno::EAGAIN) => {
            *writable = false;
            Ok(false)
        }
        Err(Errno::EINTR) => Ok(false),
        Err(errno) => Err(Broken::Write("write", errno)),
    }
}

/// setsockopt(SO_LINGER {on, 0 s}): the close(2) that follows sends RST instead of FIN.
/// That is how a reset on one side is passed on to the other.
pub fn arm_reset(fd: &OwnedFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    if let Err(errno) = setsockopt(fd, sockopt::Linger, &linger) {
        report("setsockopt(SO_LINGER)", errno);
    }
}

/// write(2) the SOCKS replies `flow` holds to the client, as far as it takes them now.
pub fn flush(client: &OwnedFd, flow: &mut Flow, pool: &mut Pool) -> Result<(), String> {
    while !flow.pending().is_empty() {
        match write(client, flow.pending()) {
            Ok(n) => flow.consumed(n, pool),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Ok(()),
            Err(errno) => return Err(describe("write", errno)),
        }
    }
    Ok(())
}

/// The source said EOF and its bytes are all written: shutdown(SHUT_WR) sends the
/// destination our FIN, and the other direction keeps flowing.
pub fn half_close(flow: &mut Flow, dst: &OwnedFd) -> Result<(), Broken> {
    if flow.eof && !flow.shut && flow.pending().is_empty() {
        shutdown(dst.as_raw_fd(), Shutdown::Write).map_err(|e| Broken::Write("shutdown", e))?;
        flow.shut = true;
    }
    Ok(())
}
