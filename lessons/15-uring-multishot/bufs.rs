//! Lesson 15's provided-buffer ring: `count` buffers of BUF_SIZE bytes, and a ring of
//! entries (address, length, buffer id) shared with the kernel. A multishot recv that names
//! the ring's group takes the buffer at the ring's head when bytes arrive, and its
//! completion says which (IORING_CQE_F_BUFFER, the id in the high 16 bits of the flags).
//! The lesson hands a buffer back by writing it at the tail and moving the tail on; when the
//! head catches up with the tail the ring is dry, and a recv that needs a buffer ends with
//! ENOBUFS.
//!
//! Memory: count × 4 KiB for the buffers (pages the kernel never wrote stay untouched) plus
//! 16 bytes per entry, whatever the number of clients.

use std::alloc::{alloc_zeroed, handle_alloc_error, Layout};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use nix::errno::Errno;

/// The buffer group id a recv names to take its buffer from this ring.
pub const GROUP: u16 = 0;
/// Bytes per buffer: the most one completion of a multishot recv carries.
pub const BUF_SIZE: usize = 4096;

pub struct BufRing {
    /// `count` entries, page-aligned; the kernel reads them, and the tail (see `give_back`).
    entries: *mut BufRingEntry,
    /// count - 1: entry i of the ring is `entries[i & mask]`.
    mask: u16,
    /// Where the next buffer handed back goes (it only grows, wrapping at 2^16).
    tail: u16,
    /// The buffers themselves, buffer id `b` at `b × BUF_SIZE`.
    bytes: &'static mut [u8],
}

impl BufRing {
    /// Allocates the ring and its buffers, registers them with the kernel as group GROUP,
    /// and puts every buffer in the ring.
    pub fn register(ring: &IoUring, count: u16) -> Result<BufRing, Errno> {
        // The entries must start on a page. They (and the buffers) are never freed: the
        // kernel may read them until the io_uring itself is gone, at exit.
        let layout = Layout::from_size_align(count as usize * size_of::<BufRingEntry>(), 4096)
            .expect("a valid layout");
        // SAFETY: the layout's size is not zero (count ≥ 1).
        let entries = unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if entries.is_null() {
            handle_alloc_error(layout);
        }
        let bytes = vec![0u8; count as usize * BUF_SIZE].leak();
        // SAFETY: `entries` holds `count` entries, page-aligned, and lives until exit.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, GROUP, 0)
        }
        .map_err(|err| Errno::from_raw(err.raw_os_error().unwrap_or(0)))?;
        let mut bufs = BufRing {
            entries,
            mask: count - 1,
            tail: 0,
            bytes,
        };
        for bid in 0..count {
            bufs.give_back(bid);
        }
        Ok(bufs)
    }

    /// The `n` bytes a recv completion put into buffer `bid`.
    pub fn bytes(&self, bid: u16, n: usize) -> &[u8] {
        let start = bid as usize * BUF_SIZE;
        &self.bytes[start..start + n.min(BUF_SIZE)]
    }

    /// Hands buffer `bid` back to the kernel: its bytes are consumed. Writes the entry at
    /// the tail, then publishes the new tail (a release store: the kernel must see the
    /// entry before the tail that covers it).
    pub fn give_back(&mut self, bid: u16) {
        // [give-back]
        let addr = self.bytes[bid as usize * BUF_SIZE..].as_mut_ptr() as u64;
        // SAFETY: `tail & mask` < count; the kernel only reads entries between its head and
        // our tail, and this one is past the tail until the store below.
        let entry = unsafe { &mut *self.entries.add((self.tail & self.mask) as usize) };
        entry.set_addr(addr);
        entry.set_len(BUF_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is the u16 at the first entry's `resv`, which the kernel reads
        // and set_addr/set_len/set_bid never write; it is 2-aligned, as an AtomicU16 must be.
        let tail = unsafe { &*BufRingEntry::tail(self.entries).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
        // [/give-back]
    }
}

/// `--bufs N`: a power of two from 1 to 32768, the kernel's limits for a buffer ring.
pub fn parse_count(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(n) if n.is_power_of_two() && n <= 32768 => Ok(n),
        _ => Err(format!("{text}: a power of two from 1 to 32768")),
    }
}
