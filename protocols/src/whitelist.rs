//! microsocks' `-w` and `-1`, sans-IO: which client addresses may use the proxy without the
//! `-u/-P` password. A fixed list (`-w IP[,IP...]`), and with auth-once (`-1`) every
//! address that has logged in once, at most [`AUTH_ONCE_MAX`] of them (the oldest dropped).

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;

/// How many addresses auth-once remembers; past it, the one that logged in first is dropped.
pub const AUTH_ONCE_MAX: usize = 4096;

/// The addresses that may skip the password.
#[derive(Debug, Default, Clone)]
pub struct Whitelist {
    fixed: HashSet<IpAddr>,
    auth_once: bool,
    /// Addresses that logged in, oldest first, and the same as a set for the look-up.
    learned: VecDeque<IpAddr>,
    known: HashSet<IpAddr>,
}

impl Whitelist {
    /// `fixed`: `-w`'s addresses; `auth_once`: `-1`.
    pub fn new(fixed: &[IpAddr], auth_once: bool) -> Whitelist {
        Whitelist {
            fixed: fixed.iter().map(|ip| ip.to_canonical()).collect(),
            auth_once,
            ..Whitelist::default()
        }
    }

    /// May a client from `ip` skip the password? (An IPv4 client of an IPv6 listener,
    /// `::ffff:a.b.c.d`, counts as `a.b.c.d`.)
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.fixed.contains(&ip) || self.known.contains(&ip)
    }

    /// A client from `ip` has just logged in (RFC 1929): with auth-once, it joins the list,
    /// and the oldest learned address leaves if the list is full.
    pub fn logged_in(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if !self.auth_once || self.allows(ip) {
            return;
        }
        if self.learned.len() == AUTH_ONCE_MAX {
            if let Some(oldest) = self.learned.pop_front() {
                self.known.remove(&oldest);
            }
        }
        self.learned.push_back(ip);
        self.known.insert(ip);
    }

    /// How many addresses auth-once has learned.
    pub fn learned(&self) -> usize {
        self.learned.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn fixed_list_only_without_auth_once() {
        let mut w = Whitelist::new(&[ip(1)], false);
        assert!(w.allows(ip(1)));
        assert!(!w.allows(ip(2)));
        w.logged_in(ip(2));
        assert!(!w.allows(ip(2)), "learned without -1");
    }

    #[test]
    fn ipv4_mapped_counts_as_ipv4() {
        let w = Whitelist::new(&["127.0.0.1".parse().unwrap()], false);
        assert!(w.allows("::ffff:127.0.0.1".parse().unwrap()));
        let w = Whitelist::new(&["::ffff:127.0.0.1".parse().unwrap()], false);
        assert!(w.allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn auth_once_is_bounded_and_drops_the_oldest() {
        let mut w = Whitelist::new(&[ip(0)], true);
        for n in 1..=AUTH_ONCE_MAX as u32 {
            w.logged_in(ip(n));
        }
        // A fixed address or one already known is not learned twice.
        w.logged_in(ip(0));
        w.logged_in(ip(5));
        assert_eq!(w.learned(), AUTH_ONCE_MAX);
        assert!(w.allows(ip(1)));
        w.logged_in(ip(AUTH_ONCE_MAX as u32 + 1));
        assert_eq!(w.learned(), AUTH_ONCE_MAX);
        assert!(!w.allows(ip(1)), "the oldest is dropped");
        assert!(w.allows(ip(2)) && w.allows(ip(AUTH_ONCE_MAX as u32 + 1)));
        assert!(w.allows(ip(0)), "-w's addresses are never dropped");
    }
}
