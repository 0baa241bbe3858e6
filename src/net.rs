//! Address conversions between std's `SocketAddr` and the `sockaddr` the kernel takes.
//!
//! The lessons call `bind`, `connect`, `getsockname` and `getpeername` themselves; these
//! helpers only translate the addresses those calls take and return.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use nix::sys::socket::{AddressFamily, SockaddrIn, SockaddrIn6, SockaddrLike, SockaddrStorage};

/// The address family `socket(2)` needs for `addr`: AF_INET or AF_INET6.
pub fn family(addr: &SocketAddr) -> AddressFamily {
    match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// A `sockaddr_in` or `sockaddr_in6`, exactly the size of its family, for `bind(2)` and
/// `connect(2)`: `bind(fd, net::sockaddr(addr).as_ref())`. (nix's `SockaddrStorage` would work
/// too, but it passes the 128-byte length of `sockaddr_storage`, and strace shows that.)
pub enum Sockaddr {
    /// `struct sockaddr_in`, 16 bytes.
    V4(SockaddrIn),
    /// `struct sockaddr_in6`, 28 bytes.
    V6(SockaddrIn6),
}

impl AsRef<dyn SockaddrLike> for Sockaddr {
    fn as_ref(&self) -> &(dyn SockaddrLike + 'static) {
        match self {
            Sockaddr::V4(sin) => sin,
            Sockaddr::V6(sin6) => sin6,
        }
    }
}

/// The [`Sockaddr`] for `addr`.
pub fn sockaddr(addr: SocketAddr) -> Sockaddr {
    match addr {
        SocketAddr::V4(v4) => Sockaddr::V4(SockaddrIn::from(v4)),
        SocketAddr::V6(v6) => Sockaddr::V6(SockaddrIn6::from(v6)),
    }
}

/// What `getsockname(2)`/`getpeername(2)` returned, as a std address (None for a family
/// other than IPv4/IPv6).
pub fn std_addr(ss: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = ss.as_sockaddr_in() {
        Some(SocketAddr::from(*v4))
    } else {
        ss.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
    }
}

/// [`std_addr`], or a placeholder that says what the kernel returned, for log lines.
pub fn show(ss: &SockaddrStorage) -> String {
    match std_addr(ss) {
        Some(addr) => addr.to_string(),
        None => format!("<address family {:?}>", ss.family()),
    }
}

/// The address a client on this machine should dial to reach a server bound to `addr`:
/// the wildcard addresses (0.0.0.0, ::) become loopback.
pub fn dialable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// setsockopt(SO_LINGER, {on, 0 s}): the next close sends RST instead of FIN and leaves no
/// TIME_WAIT. For the tools and tests that reset connections on purpose; lesson 12 makes
/// this call itself, where relaying a reset is what it teaches.
pub fn linger_zero<F: std::os::fd::AsFd>(fd: &F) -> nix::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(fd, nix::sys::socket::sockopt::Linger, &linger)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_v4_and_v6() {
        for (s, len) in [
            ("127.0.0.1:23333", 16),
            ("[::1]:1080", 28),
            ("[fe80::1%2]:80", 28),
        ] {
            let addr: SocketAddr = s.parse().unwrap();
            let sa = sockaddr(addr);
            let sa = sa.as_ref();
            assert_eq!(sa.len(), len);
            // SAFETY: `sa` points at a valid sockaddr of `sa.len()` bytes.
            let ss = unsafe { SockaddrStorage::from_raw(sa.as_ptr(), Some(sa.len())) };
            assert_eq!(std_addr(&ss.unwrap()), Some(addr));
        }
    }

    #[test]
    fn wildcard_becomes_loopback() {
        let d = dialable("0.0.0.0:9".parse().unwrap());
        assert_eq!(d, "127.0.0.1:9".parse().unwrap());
        let d = dialable("[::]:9".parse().unwrap());
        assert_eq!(d, "[::1]:9".parse().unwrap());
    }
}
