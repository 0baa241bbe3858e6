//! The `write(2)` loop every blocking lesson needs.
//!
//! `write` on a socket may take fewer bytes than it was given (a short write): the send
//! buffer had less room, or a signal arrived part way. Stevens calls the loop `writen`; std
//! calls it `write_all`. This one calls nix's `write` (the real system call, visible in
//! `strace`) until every byte is taken, and retries after EINTR.

use std::os::fd::AsFd;

use nix::errno::Errno;

/// Writes all of `buf` to `fd` with as many `write(2)` calls as it takes.
pub fn write_all<Fd: AsFd>(fd: Fd, mut buf: &[u8]) -> nix::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(&fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}
