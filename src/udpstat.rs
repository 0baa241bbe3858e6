//! What the kernel counts for a UDP socket that the socket calls never say: the datagrams it
//! dropped because the socket's receive buffer (SO_RCVBUF) was full. /proc/net/udp and
//! /proc/net/udp6 have one line per socket; its inode (fstat of the fd) finds the line, and
//! the last column is "drops".

use std::io::Read;
use std::os::fd::AsFd;

/// The datagrams the kernel dropped on `socks` so far, together (0 for a socket whose line
/// cannot be found). One read of each table, however many sockets.
pub fn drops<F: AsFd>(socks: &[&F]) -> u64 {
    let inodes: Vec<String> = socks
        .iter()
        .filter_map(|s| nix::sys::stat::fstat(s.as_fd()).ok())
        .map(|stat| stat.st_ino.to_string())
        .collect();
    let mut total = 0;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        // Read whole in a few large reads (a /proc file has no size to size the buffer by).
        let mut text = Vec::with_capacity(1 << 16);
        let read = std::fs::File::open(table).and_then(|mut f| f.read_to_end(&mut text));
        if read.is_err() {
            continue;
        }
        for line in String::from_utf8_lossy(&text).lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols
                .get(9)
                .is_some_and(|inode| inodes.iter().any(|i| i == inode))
            {
                total += cols.last().and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    total
}
