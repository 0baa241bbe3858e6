//! Reading the tracee's memory (process_vm_readv, allowed to a ptrace tracer).

use std::io::IoSliceMut;

use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

/// `len` bytes at `addr` in `pid`'s memory, or None where they cannot be read.
pub fn read(pid: Pid, addr: u64, len: usize) -> Option<Vec<u8>> {
    if len == 0 {
        return Some(Vec::new());
    }
    if addr == 0 {
        return None;
    }
    let mut buf = vec![0u8; len];
    let remote = [RemoteIoVec {
        base: addr as usize,
        len,
    }];
    let n = process_vm_readv(pid, &mut [IoSliceMut::new(&mut buf)], &remote).ok()?;
    buf.truncate(n);
    Some(buf)
}

pub fn read_u64(pid: Pid, addr: u64) -> Option<u64> {
    let raw = read(pid, addr, 8)?;
    Some(u64::from_ne_bytes(raw.get(..8)?.try_into().ok()?))
}
