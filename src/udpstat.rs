//! What the kernel counts for a UDP socket that the socket calls never say: the datagrams it
//! dropped because the socket's receive buffer (SO_RCVBUF) was full. /proc/net/udp and
//! /proc/net/udp6 have one line per socket; its inode (fstat of the fd) finds the line, and
//! the last column is "drops".

use std::os::fd::AsFd;

/// The datagrams the kernel dropped on `sock` so far (0 if its line cannot be found).
pub fn drops<F: AsFd>(sock: &F) -> u64 {
    let Ok(stat) = nix::sys::stat::fstat(sock.as_fd()) else {
        return 0;
    };
    let inode = stat.st_ino.to_string();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(9) == Some(&inode.as_str()) {
                return cols.last().and_then(|d| d.parse().ok()).unwrap_or(0);
            }
        }
    }
    0
}
