//! What an association counts: datagrams and bytes each way, and every drop by its reason
//! (UDP has no backpressure: a datagram that cannot go is dropped, and the count says so).

use std::fmt::Write as _;
use std::os::fd::OwnedFd;

use sockets_by_hand::udpstat;

use super::{Association, Associations};

/// Why the relay dropped a datagram; each is counted.
#[derive(Clone, Copy)]
pub enum Drop {
    Source,    // not from the association's client: the relay is not open
    Fragment,  // FRAG ≠ 0: this relay does not reassemble (RFC 1928 allows that)
    Malformed, // no valid SOCKS5 header
    Truncated, // longer than the buffer (MSG_TRUNC)
    Name,      // its name did not resolve, or too many wait for names
    Family,    // no socket of the target's family (-b fixes one)
    TooBig,    // a reply too big to carry its header back to the client
    Send,      // sendto/sendmmsg failed (a full send buffer: EAGAIN)
}
const DROPS: [&str; 8] = [
    "wrong source",
    "fragment",
    "malformed",
    "truncated",
    "name",
    "family",
    "too big",
    "send failed",
];

#[derive(Default, Clone)]
pub struct Counts {
    pub up: u64,
    pub down: u64,
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub dropped: [u64; 8],
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        (self.up, self.down) = (self.up + other.up, self.down + other.down);
        self.up_bytes += other.up_bytes;
        self.down_bytes += other.down_bytes;
        for (d, o) in self.dropped.iter_mut().zip(other.dropped) {
            *d += o;
        }
    }

    pub fn drops(&self) -> String {
        let mut text = String::new();
        for (name, n) in DROPS.iter().zip(self.dropped).filter(|(_, n)| *n > 0) {
            let _ = write!(
                text,
                "{}{name} {n}",
                if text.is_empty() { "" } else { ", " }
            );
        }
        if text.is_empty() {
            text.push_str("none");
        }
        text
    }
}

/// One more drop for `why`.
pub fn count(a: &mut Association, why: Drop) {
    a.counts.dropped[why as usize] += 1;
}

impl Associations {
    /// The Ctrl-C summary's line: every association's counts, the closed and the open.
    pub(in crate::udp) fn summary_line(&self) -> String {
        let mut c = self.totals.clone();
        let mut kernel = self.kernel_drops;
        for a in self.slots.iter().flatten() {
            c.add(&a.counts);
            let socks: Vec<&OwnedFd> = std::iter::once(&a.relay)
                .chain(a.out.iter().flatten())
                .collect();
            kernel += udpstat::drops(&socks);
        }
        format!(
            "udp · associations: {} · datagrams up {} ({} B), down {} ({} B) · dropped by the \
             relay: {} · dropped by the kernel (receive buffer full): {kernel} · SO_RCVBUF {}",
            self.opened,
            c.up,
            c.up_bytes,
            c.down,
            c.down_bytes,
            c.drops(),
            self.rcvbuf_got.map_or("-".into(), |b| format!("{b} B")),
        )
    }
}
