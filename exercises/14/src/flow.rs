// Generated from lessons/14-splice/flow.rs by exercises/14/exercise.txt: write its todo!()s.
//! Lesson 14's flow: one direction of a relay, moved with splice(2) through a pipe, so the
//! relayed bytes never enter user space. Same API as lesson 12's flow.rs (which relay.rs and
//! conn.rs use unchanged): [`Flow`], [`Pool`], [`pump`], [`flush`], [`half_close`],
//! [`arm_reset`], [`Broken`]. A flow here IS lesson 12's flow (mounted as `copy`, and reached
//! through Deref: its buffer, EOF, FIN and byte count) plus a pipe.
//!
//! splice needs a pipe at one end, so a direction goes socket → pipe → socket: two splices,
//! no copy to user space. A small user-space buffer remains for what the relay itself writes
//! or parses: the handshake, the SOCKS replies, the payload that came in the same read as the
//! request. Those bytes go out first; only then does the pipe pour into the destination.

use std::ops::{Deref, DerefMut};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::errno::Errno;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::unistd::pipe2;
use sockets_by_hand::errors::{describe, report};
use sockets_by_hand::say;

use crate::conn::close_fd;

/// Lesson 12's flow: the user-space buffer (the handshake, the SOCKS replies, the payload
/// that came in the same read as the request), its pool, and the copying pump a direction
/// falls back to when no pipe can be made.
// Mounted from the lesson as they are (no todo!() in them): read them there.
#[path = "../../../lessons/12-socks5/flow.rs"]
mod copy;

pub use copy::{arm_reset, flush, Broken, Pool};

/// The pipe size asked with F_SETPIPE_SZ (`--pipe-size`; main sets it before the loop).
pub static PIPE_SIZE: AtomicUsize = AtomicUsize::new(1024 * 1024);
/// A pipe's size when F_SETPIPE_SZ is refused: 16 pages.
const DEFAULT_PIPE: usize = 64 * 1024;
/// At most this many splice rounds per direction per wake-up (fairness).
const PUMP_ROUNDS: usize = 4;
/// Said once: F_SETPIPE_SZ refused; pipe2 refused (copying through user space).
static SIZE_WARNED: AtomicBool = AtomicBool::new(false);
static COPYING_WARNED: AtomicBool = AtomicBool::new(false);

/// One pipe: what a direction's bytes pass through inside the kernel (2 fds).
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Its capacity in bytes, as F_SETPIPE_SZ set it.
    size: usize,
}

/// One direction: bytes from its source, not yet at its destination.
pub struct Flow {
    /// Lesson 12's flow: user-space bytes, EOF, FIN sent, bytes counted.
    copy: copy::Flow,
    /// The pipe, made when the first byte is to be spliced (an idle relay holds none).
    pipe: Option<Pipe>,
    /// Bytes spliced into the pipe and not yet out of it.
    in_pipe: usize,
    /// The last splice into the pipe found it full (a pipe counts pages, not bytes).
    full: bool,
    /// No pipe could be made (EMFILE): this direction copies through user space, like 12.
    copying: bool,
}

impl Deref for Flow {
    type Target = copy::Flow;
    fn deref(&self) -> &copy::Flow {
        &self.copy
    }
}

impl DerefMut for Flow {
    fn deref_mut(&mut self) -> &mut copy::Flow {
        &mut self.copy
    }
}

impl Flow {
    pub const fn new() -> Flow {
        Flow {
            copy: copy::Flow::new(),
            pipe: None,
            in_pipe: 0,
            full: false,
            copying: false,
        }
    }

    /// Bytes waiting for the destination, in user space or in the pipe (POLLOUT wanted).
    pub fn waiting(&self) -> bool {
        self.copy.waiting() || self.in_pipe > 0
    }

    /// Can the source be read now (POLLIN wanted)?
    pub fn has_room(&self) -> bool {
        match &self.pipe {
            Some(pipe) => !self.full && self.in_pipe < pipe.size,
            None => self.copy.has_room(),
        }
    }

    /// Drops what is pending and gives the buffer back; close(2) the pipe: bytes still in it
    /// are lost (the relay only does this when the connection is over, or on a reset).
    pub fn release(&mut self, pool: &mut Pool) {
        self.copy.release(pool);
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
    fn make_pipe(&mut self) -> Result<(), Errno> {
        // pipe2(O_NONBLOCK): the pipe's own ends never block either.
        let (read_end, write_end): (OwnedFd, OwnedFd) = todo!("pipe2(2): this direction's pipe, both ends non-blocking and close-on-exec: pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)? (a failure is returned: the flow then copies through user space); man 2 pipe2");
        // fcntl(F_SETPIPE_SZ): room for more than the default 64 KiB (16 pages) per splice.
        let wanted = PIPE_SIZE.load(Ordering::Relaxed) as libc::c_int;
        let size = match fcntl(&write_end, FcntlArg::F_SETPIPE_SZ(wanted)) {
            Ok(size) => size as usize,
            // EPERM past /proc/sys/fs/pipe-user-pages-soft: the default 64 KiB still works.
            Err(errno) => {
                if !SIZE_WARNED.swap(true, Ordering::Relaxed) {
                    report("fcntl(F_SETPIPE_SZ)", errno);
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
    if flow.pipe.is_none() && !flow.copying && readable && !flow.eof {
        if let Err(errno) = flow.make_pipe() {
            // Out of fds for a pipe: copy through user space (lesson 12's pump), not drop it.
            if !COPYING_WARNED.swap(true, Ordering::Relaxed) {
                say!("{}: copying through user space", describe("pipe2", errno));
            }
            flow.copying = true;
        }
    }
    if flow.copying {
        return copy::pump(src, dst, &mut flow.copy, pool, readable);
    }
    let mut writable = true;
    for _ in 0..PUMP_ROUNDS {
        let mut progress = false;
        if writable && !flow.pending().is_empty() {
            // write(2) what is in user space (a reply, early payload): it goes out first.
            progress |= copy::write_pending(dst, &mut flow.copy, pool, &mut writable)?;
        }
        let to_pipe = readable && !flow.eof && flow.has_room();
        if let Some(pipe) = flow.pipe.as_ref().filter(|_| to_pipe) {
            let room = pipe.size - flow.in_pipe;
            // splice(2) source socket → pipe: the kernel hands the socket's pages to the pipe.
            todo!("splice(2) src → the pipe's write end, room bytes at most: splice(src, None, &pipe.write, None, room, FLAGS) (None: no offsets, sockets have none); Ok(0) is EOF: flow.eof = true; Ok(n): flow.in_pipe += n, flow.bytes += n as u64; either sets progress; EAGAIN: readable = false, flow.full = flow.in_pipe > 0; EINTR: again; another error: return Err(Broken::Read(errno)); man 2 splice");
        }
        if writable && flow.pending().is_empty() && flow.in_pipe > 0 {
            let pipe = flow.pipe.as_ref().map(|p| &p.read);
            // splice(2) pipe → destination socket: the pages go to the socket, no copy.
            todo!("splice(2) the pipe's read end → dst, flow.in_pipe bytes: pipe.map(|p| splice(p, None, dst, None, flow.in_pipe, FLAGS)) (pipe is an Option<&OwnedFd>); Some(Ok(n)): flow.in_pipe -= n, flow.full = false, progress = true; EAGAIN: writable = false; EINTR or None: nothing; another error: return Err(Broken::Write(\"splice\", errno)); man 2 splice");
        }
        if !progress {
            break;
        }
    }
    Ok(())
}

/// The source said EOF: first the pipe pours what it still holds into the destination, THEN
/// shutdown(SHUT_WR) sends our FIN (lesson 12's half_close, once the pipe is empty). The
/// other direction keeps flowing. A reset (arm_reset) loses what the pipes hold: a reset
/// means "forget this stream", so that is right.
pub fn half_close(flow: &mut Flow, dst: &OwnedFd) -> Result<(), Broken> {
    if flow.in_pipe == 0 {
        copy::half_close(&mut flow.copy, dst)?;
    }
    Ok(())
}
