//! Targets the relay refuses (0x02) whoever asks: its own listening address, and what the
//! admission hook guards (lesson 13's Redis). A CONNECT to the proxy itself nests a relay
//! inside the relay, two fds a level: 200 pipelined requests in one connection cost 400 fds.
//! A CONNECT to the allowlist's Redis would let a client rewrite the allowlist: the control
//! plane must not be reachable through the data plane.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use nix::ifaddrs::getifaddrs;

pub struct Guard {
    /// (address, what it is) pairs never to connect to.
    guarded: Vec<(SocketAddr, &'static str)>,
    /// This machine's addresses, read once at start (getifaddrs(3)).
    local: Vec<IpAddr>,
}

impl Guard {
    /// Guards the proxy's own listening address `local`, and `hooked` (lesson 13's Redis).
    pub fn new(local: SocketAddr, hooked: Option<SocketAddr>) -> Guard {
        let mut guarded = vec![(local, "this proxy's own listening address")];
        guarded.extend(hooked.map(|redis| (redis, "the allowlist's Redis server")));
        // getifaddrs(3): every address of every interface, to know what "this machine" is.
        let local = getifaddrs().map_or_else(
            |_| Vec::new(),
            |ifs| {
                let ips = ifs.filter_map(|i| i.address.and_then(|a| interface_ip(&a)));
                ips.collect()
            },
        );
        Guard { guarded, local }
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_loopback() || ip.is_unspecified() || self.local.contains(&ip)
    }

    /// Why `target` is refused, if it is: it is a guarded address, or a guarded port on any
    /// of this machine's addresses when the guarded address is local (a listener on
    /// 0.0.0.0 or 127.0.0.1 is also reached through 127.0.0.2, ::1 or the LAN address).
    pub fn forbids(&self, target: SocketAddr) -> Option<String> {
        let (ip, port) = (target.ip().to_canonical(), target.port());
        self.guarded.iter().find_map(|&(addr, what)| {
            let same =
                addr.ip().to_canonical() == ip || self.is_local(addr.ip()) && self.is_local(ip);
            (same && addr.port() == port).then(|| format!("{target} is {what}"))
        })
    }

    /// `addrs` less the forbidden ones, and why (the last) one was forbidden.
    pub fn sift(&self, addrs: Vec<SocketAddr>) -> (VecDeque<SocketAddr>, Option<String>) {
        let mut why = None;
        let kept = addrs.into_iter().filter(|&a| match self.forbids(a) {
            Some(reason) => {
                why = Some(reason);
                false
            }
            None => true,
        });
        (kept.collect(), why)
    }
}

/// The IP of an interface address (IPv4 or IPv6), if it is one.
fn interface_ip(addr: &nix::sys::socket::SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}
