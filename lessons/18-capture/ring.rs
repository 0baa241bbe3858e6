//! Lesson 18's fast path, `--ring`: a PACKET_RX_RING of version TPACKET_V3, mapped into
//! this process, so that frames arrive without a system call each.
//!
//! The ring is `blocks` blocks of `block_size` bytes. The kernel fills one block with as
//! many frames as fit, each behind a `tpacket3_hdr`, and hands it over by setting
//! TP_STATUS_USER in the block's status word when it is full or `timeout_ms` after its first
//! frame. This process walks the block's frames, then hands it back (TP_STATUS_KERNEL).
//! One poll wakes it for a whole block: thousands of frames per system call, where the
//! recvfrom loop makes one call per frame. The status word is the only thing the two sides
//! share, so reading it is followed by an acquire fence and writing it is preceded by a
//! release fence.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};
use std::time::Duration;

use libc::{tpacket3_hdr, tpacket_block_desc, tpacket_req3};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use sockets_by_hand::capture::Output;
use sockets_by_hand::errors::fatal;
use sockets_by_hand::stop;

/// The ring's shape: `blocks` × `block_size` bytes, a block handed over at the latest
/// `timeout_ms` after its first frame.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub block_size: u32,
    pub blocks: u32,
    pub timeout_ms: u32,
}

/// The ring mapped into this process.
pub struct Ring {
    base: *mut u8,
    shape: Shape,
    next: u32,
}

/// setsockopt(PACKET_VERSION, TPACKET_V3), setsockopt(PACKET_RX_RING), mmap: the ring.
/// Call it before bind, so that the first frame already lands in the ring.
pub fn setup(sock: &OwnedFd, shape: Shape) -> Result<Ring, (&'static str, Errno)> {
    let fd = sock.as_raw_fd();
    // setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3): blocks of variable-size frames.
    let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
    set(fd, libc::PACKET_VERSION, &version).map_err(|e| ("setsockopt(PACKET_VERSION)", e))?;
    // setsockopt(SOL_PACKET, PACKET_RX_RING, tpacket_req3): the kernel allocates the
    // blocks. V3 packs frames of any size; the frame fields only have to be consistent.
    let frame_size = 2048;
    let req = tpacket_req3 {
        tp_block_size: shape.block_size,
        tp_block_nr: shape.blocks,
        tp_frame_size: frame_size,
        tp_frame_nr: shape.block_size / frame_size * shape.blocks,
        tp_retire_blk_tov: shape.timeout_ms,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    };
    set(fd, libc::PACKET_RX_RING, &req).map_err(|e| ("setsockopt(PACKET_RX_RING)", e))?;
    // mmap(MAP_SHARED) of the socket: the blocks, in this process's memory.
    let len = shape.block_size as usize * shape.blocks as usize;
    // SAFETY: a fresh shared mapping of the socket's ring; nothing else maps this range.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(("mmap", Errno::last()));
    }
    Ok(Ring {
        base: base.cast(),
        shape,
        next: 0,
    })
}

fn set<T>(fd: i32, option: libc::c_int, value: &T) -> Result<(), Errno> {
    // SAFETY: `value` is a live T of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            option,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    Errno::result(rc).map(drop)
}

impl Ring {
    /// The descriptor of block `i`.
    fn block(&self, i: u32) -> *mut tpacket_block_desc {
        // SAFETY: i < blocks, so the offset stays inside the mapping.
        unsafe { self.base.add(i as usize * self.shape.block_size as usize) }.cast()
    }

    /// Waits for blocks and walks their frames into `out` until Ctrl-C, `limit` frames, or
    /// an error. On `loopback`, the copy of each packet going out is skipped.
    pub fn run(&mut self, sock: &OwnedFd, stop_pipe: &OwnedFd, out: &mut Output, limit: u64) {
        loop {
            let block = self.block(self.next);
            // SAFETY: the block descriptor is in the mapping; the kernel writes the status
            // word, so it is read as a volatile, then fenced before the frames are read.
            let status = unsafe {
                std::ptr::read_volatile(std::ptr::addr_of!((*block).hdr.bh1.block_status))
            };
            if status & libc::TP_STATUS_USER == 0 {
                // poll(2): sleep until the kernel hands a block over (or Ctrl-C).
                let mut fds = [
                    PollFd::new(sock.as_fd(), PollFlags::POLLIN | PollFlags::POLLERR),
                    PollFd::new(stop_pipe.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(errno) => fatal("poll", errno),
                }
                if fds[1].any().unwrap_or(false) && stop::stop_requested(stop_pipe) {
                    return;
                }
                continue;
            }
            fence(Ordering::Acquire);
            // SAFETY: the block is ours until we hand it back; its frames lie inside it.
            let done = unsafe { self.walk(block, out, limit) };
            // Hand the block back: release fence, then the status word.
            fence(Ordering::Release);
            // SAFETY: as above; writing TP_STATUS_KERNEL returns the block to the kernel.
            unsafe {
                std::ptr::write_volatile(
                    std::ptr::addr_of_mut!((*block).hdr.bh1.block_status),
                    libc::TP_STATUS_KERNEL,
                )
            };
            self.next = (self.next + 1) % self.shape.blocks;
            if out.flush().is_err() || done {
                return;
            }
        }
    }

    /// The frames of one block; true once `limit` frames are out (0: no limit).
    ///
    /// # Safety
    /// `block` is a block of this ring that the kernel has handed over.
    unsafe fn walk(&self, block: *mut tpacket_block_desc, out: &mut Output, limit: u64) -> bool {
        let b = &(*block).hdr.bh1;
        let mut frame = block.cast::<u8>().add(b.offset_to_first_pkt as usize);
        // Where the sockaddr_ll sits after each frame's header.
        let sll_at = (std::mem::size_of::<tpacket3_hdr>() + 15) & !15;
        for _ in 0..b.num_pkts {
            let h = &*frame.cast::<tpacket3_hdr>();
            let sll = &*frame.add(sll_at).cast::<libc::sockaddr_ll>();
            // On a loopback device each packet passes twice; the filter drops the copy going
            // out, and this skips it when there is no filter.
            if !(sll.sll_pkttype == libc::PACKET_OUTGOING
                && sll.sll_hatype == libc::ARPHRD_LOOPBACK)
            {
                let data =
                    std::slice::from_raw_parts(frame.add(h.tp_mac as usize), h.tp_snaplen as usize);
                let time = Duration::new(u64::from(h.tp_sec), h.tp_nsec);
                if out.frame(time, data, h.tp_len as usize).is_err()
                    || (limit > 0 && out.captured >= limit)
                {
                    return true;
                }
            }
            frame = frame.add(h.tp_next_offset as usize);
        }
        false
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let len = self.shape.block_size as usize * self.shape.blocks as usize;
        // SAFETY: the mapping made in `setup`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), len) };
    }
}
