//! Lesson 14's flow: one direction of a relay, moved with splice(2) through a pipe, so the
//! relayed bytes never enter user space. Same API as lesson 12's flow.rs (which relay.rs and
//! conn.rs use unchanged): [`Flow`], [`Pool`], [`pump`], [`flush`], [`half_close`],
//! [`arm_reset`], [`Broken`].
//!
//! splice needs a pipe at one end, so a direction goes socket → pipe → socket: two splices,
//! no copy to user space. A small user-space buffer remains for what the relay itself writes
//! or parses: the handshake, the SOCKS replies, the payload that came in the same read as the
//! request. Those bytes go out first; only then does the pipe pour into the destination.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::errno::Errno;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::sys::socket::{setsockopt, shutdown, sockopt, Shutdown};
use nix::unistd::{pipe2, read, write};
use sockets_by_hand::errors::{describe, report};
use sockets_by_hand::say;

use crate::conn::close_fd;
use crate::Mistake::CloseWithBytesInPipe;

/// The user-space buffer: the handshake, the replies, early payload (and relaying when no
/// pipe could be made). Never the bulk of the bytes.
pub const USER_BUF: usize = 16 * 1024;
/// The pipe size asked with F_SETPIPE_SZ (`--pipe-size`; main sets it before the loop).
pub static PIPE_SIZE: AtomicUsize = AtomicUsize::new(1024 * 1024);
/// A pipe's size when F_SETPIPE_SZ is refused: 16 pages.
const DEFAULT_PIPE: usize = 64 * 1024;
/// How many free user-space buffers the pool keeps for reuse.
const POOL_SPARE: usize = 4;
/// At most this many splice rounds per direction per wake-up (fairness).
const PUMP_ROUNDS: usize = 4;

/// One pipe: what a direction's bytes pass through inside the kernel (2 fds).
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Its capacity in bytes, as F_SETPIPE_SZ set it.
    size: usize,
}

/// One direction: bytes from its source, not yet at its destination.
pub struct Flow {
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
    /// The pipe, made when the first byte is to be spliced (an idle relay holds none).
    pipe: Option<Pipe>,
    /// Bytes spliced into the pipe and not yet out of it.
    in_pipe: usize,
    /// The last splice into the pipe found it full (a pipe counts pages, not bytes).
    full: bool,
    /// No pipe could be made (EMFILE): this direction copies through user space, like 12.
    copying: bool,
    /// The source said EOF (splice or read returned 0).
    pub eof: bool,
    /// shutdown(SHUT_WR) was sent to the destination.
    pub shut: bool,
    /// Bytes taken from the source while relaying (for the log line).
    pub bytes: u64,
}

impl Flow {
    pub const fn new() -> Flow {
        Flow {
            buf: None,
            start: 0,
            end: 0,
            pipe: None,
            in_pipe: 0,
            full: false,
            copying: false,
            eof: false,
            shut: false,
            bytes: 0,
        }
    }

    /// The bytes waiting in user space (not those in the pipe).
    pub fn pending(&self) -> &[u8] {
        match &self.buf {
            Some(buf) => &buf[self.start..self.end],
            None => &[],
        }
    }

    /// Bytes waiting for the destination, in user space or in the pipe (POLLOUT wanted).
    pub fn waiting(&self) -> bool {
        !self.pending().is_empty() || self.in_pipe > 0
    }

    /// Can the source be read now (POLLIN wanted)?
    pub fn has_room(&self) -> bool {
        match &self.pipe {
            Some(pipe) => !self.full && self.in_pipe < pipe.size,
            None => self.end - self.start < USER_BUF,
        }
    }

    /// Free space in the user-space buffer (takes one from the pool if there is none).
    pub fn room(&mut self, pool: &mut Pool) -> &mut [u8] {
        let buf = self.buf.get_or_insert_with(|| pool.take());
        if self.end == buf.len() && self.start > 0 {
            buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut buf[self.end..]
    }

    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// `n` user-space bytes were written (or used); an empty buffer goes back to the pool.
    pub fn consumed(&mut self, n: usize, pool: &mut Pool) {
        self.start += n;
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
            if let Some(buf) = self.buf.take() {
                pool.give(buf);
            }
        }
    }

    /// Queues a short message (a SOCKS reply): it always fits.
    pub fn push(&mut self, bytes: &[u8], pool: &mut Pool) {
        let room = self.room(pool);
        let n = bytes.len().min(room.len());
        room[..n].copy_from_slice(&bytes[..n]);
        self.filled(n);
    }

    /// Drops what is pending and gives the buffer back; close(2) the pipe: bytes still in it
    /// are lost (the relay only does this when the connection is over, or on a reset).
    pub fn release(&mut self, pool: &mut Pool) {
        let pending = self.end - self.start;
        self.consumed(pending, pool);
        self.close_pipe();
    }

    fn close_pipe(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            close_fd(pipe.read);
            close_fd(pipe.write);
        }
        self.in_pipe = 0;
        self.full = false;
    }

    /// pipe2(2) then fcntl(F_SETPIPE_SZ): this direction's pipe, made on its first byte.
    fn make_pipe(&mut self, pool: &mut Pool) -> Result<(), Errno> {
        // pipe2(O_NONBLOCK): the pipe's own ends never block either.
        let (read_end, write_end) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // fcntl(F_SETPIPE_SZ): room for more than the default 64 KiB (16 pages) per splice.
        let wanted = PIPE_SIZE.load(Ordering::Relaxed) as libc::c_int;
        let size = match fcntl(&write_end, FcntlArg::F_SETPIPE_SZ(wanted)) {
            Ok(size) => size as usize,
            // EPERM past /proc/sys/fs/pipe-user-pages-soft: the default 64 KiB still works.
            Err(errno) => {
                if !pool.size_warned {
                    report("fcntl(F_SETPIPE_SZ)", errno);
                    pool.size_warned = true;
                }
                DEFAULT_PIPE
            }
        };
        self.pipe = Some(Pipe {
            read: read_end,
            write: write_end,
            size,
        });
        Ok(())
    }
}

/// User-space buffers not in use, kept for the next connection.
pub struct Pool {
    spare: Vec<Box<[u8]>>,
    size_warned: bool,
    copying_warned: bool,
}

impl Pool {
    pub fn new() -> Pool {
        Pool {
            spare: Vec::new(),
            size_warned: false,
            copying_warned: false,
        }
    }

    fn take(&mut self) -> Box<[u8]> {
        self.spare
            .pop()
            .unwrap_or_else(|| vec![0u8; USER_BUF].into_boxed_slice())
    }

    fn give(&mut self, buf: Box<[u8]>) {
        if self.spare.len() < POOL_SPARE {
            self.spare.push(buf);
        }
    }
}

/// How a relay broke: which call failed, on which side.
pub enum Broken {
    /// Taking from the source failed (ECONNRESET: the peer reset).
    Read(Errno),
    /// Giving to (or shutting down) the destination failed (EPIPE, ECONNRESET).
    Write(&'static str, Errno),
}

/// What to splice with: move pages rather than copy them, never block on the pipe.
const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

/// Moves bytes from `src` to `dst` until neither side can go on now: user-space bytes first,
/// then splice(2) source → pipe and pipe → destination.
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
        if writable && !flow.pending().is_empty() {
            // write(2) what is in user space (a reply, early payload): it goes out first.
            match write(dst, flow.pending()) {
                Ok(n) => {
                    flow.consumed(n, pool);
                    progress = true;
                }
                Err(Errno::EAGAIN) => writable = false,
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(Broken::Write("write", errno)),
            }
        }
        if readable && !flow.eof && flow.has_room() {
            if flow.pipe.is_none() && !flow.copying {
                if let Err(errno) = flow.make_pipe(pool) {
                    // Out of fds for a pipe: copy through user space rather than drop it.
                    if !pool.copying_warned {
                        say!("{}: copying through user space", describe("pipe2", errno));
                        pool.copying_warned = true;
                    }
                    flow.copying = true;
                }
            }
            match take(src, flow, pool) {
                Ok(0) => {
                    flow.eof = true;
                    progress = true;
                }
                Ok(n) => {
                    flow.bytes += n as u64;
                    progress = true;
                }
                // Nothing to read, or a pipe full of partly filled pages.
                Err(Errno::EAGAIN) => {
                    readable = false;
                    flow.full = flow.in_pipe > 0;
                }
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(Broken::Read(errno)),
            }
        }
        if writable && flow.pending().is_empty() && flow.in_pipe > 0 {
            let pipe = flow.pipe.as_ref().map(|p| &p.read);
            // splice(2) pipe → destination socket: the pages go to the socket, no copy.
            match pipe.map(|p| splice(p, None, dst, None, flow.in_pipe, FLAGS)) {
                Some(Ok(n)) => {
                    flow.in_pipe -= n;
                    flow.full = false;
                    progress = true;
                }
                // The destination's send buffer is full: the rest waits for POLLOUT.
                Some(Err(Errno::EAGAIN)) => writable = false,
                Some(Err(Errno::EINTR)) | None => {}
                Some(Err(errno)) => return Err(Broken::Write("splice", errno)),
            }
        }
        if !progress {
            break;
        }
    }
    Ok(())
}

/// Takes bytes from the source: splice(2) socket → pipe, or read(2) when there is no pipe.
fn take(src: &OwnedFd, flow: &mut Flow, pool: &mut Pool) -> Result<usize, Errno> {
    match &flow.pipe {
        Some(pipe) => {
            let room = pipe.size - flow.in_pipe;
            // splice(2) source socket → pipe: the kernel hands the socket's pages to the pipe.
            let n = splice(src, None, &pipe.write, None, room, FLAGS)?;
            flow.in_pipe += n;
            Ok(n)
        }
        None => {
            let n = read(src, flow.room(pool))?;
            flow.filled(n);
            if flow.pending().is_empty() {
                flow.release(pool);
            }
            Ok(n)
        }
    }
}

/// setsockopt(SO_LINGER {on, 0 s}): the close(2) that follows sends RST instead of FIN.
/// That is how a reset on one side is passed on to the other; whatever the pipes still
/// hold is lost with it (a reset means "forget this stream", so that is right).
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

/// The source said EOF: first the pipe pours what it still holds into the destination, THEN
/// shutdown(SHUT_WR) sends our FIN. The other direction keeps flowing.
pub fn half_close(flow: &mut Flow, dst: &OwnedFd) -> Result<(), Broken> {
    if crate::mistake(CloseWithBytesInPipe) && flow.eof && !flow.shut {
        // The mistake: "EOF, so this direction is done": close the pipe and send FIN at
        // once. The bytes still in the pipe never reach the destination: the tail is lost.
        flow.close_pipe();
    }
    if flow.eof && !flow.shut && !flow.waiting() {
        shutdown(dst.as_raw_fd(), Shutdown::Write).map_err(|e| Broken::Write("shutdown", e))?;
        flow.shut = true;
    }
    Ok(())
}
