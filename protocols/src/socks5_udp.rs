//! # The header of a relayed UDP datagram (RFC 1928 §7), sans-IO
//!
//! After a UDP ASSOCIATE, a client sends each datagram to the relay's UDP address with this
//! header in front of its payload, and the relay puts the same header, naming the source, in
//! front of every datagram it relays back:
//!
//! ```text
//!  +-----+------+------+----------+----------+----------+
//!  | RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
//!  |  2  |  1   |  1   | Variable |    2     | Variable |
//!  +-----+------+------+----------+----------+----------+
//! ```
//!
//! A datagram is whole or absent (UDP keeps message boundaries), so unlike the TCP
//! handshake there is no "need more": a header cut short is malformed. Choices:
//!
//! * **RSV must be zero.** The TCP request's RSV is ignored, but a UDP socket receives
//!   whatever anyone sends: a datagram that does not even start like a SOCKS header is
//!   dropped rather than guessed at.
//! * **FRAG is returned, not judged.** RFC 1928 lets a relay that does not reassemble drop
//!   every fragment (FRAG ≠ 0); the relay does exactly that, and counts it.
//! * **Addresses are parsed by the TCP request's own parser** (ATYP 1, 3, 4; a domain must be
//!   safe for getaddrinfo), so both paths accept exactly the same targets.
//! * **Replies name an IP source** ([`encode_header`] writes at most [`MAX_IP_HEADER`] bytes
//!   into a fixed array): the relay receives from an address, never from a name.

use crate::socks5::{parse_address, Error, Target, ATYP_DOMAIN, ATYP_IPV4, ATYP_IPV6};
use std::fmt;
use std::net::SocketAddr;

/// The longest header with an IP address: RSV FRAG ATYP, 16 bytes of IPv6, the port.
pub const MAX_IP_HEADER: usize = 4 + 16 + 2;
/// The longest header of all: with a 255-byte domain name.
pub const MAX_HEADER: usize = 4 + 1 + 255 + 2;
/// The largest UDP payload over IPv4 (65,535 − 20 bytes of IP header − 8 of UDP); over IPv6
/// a datagram may carry 20 bytes more.
pub const MAX_IPV4_PAYLOAD: usize = 65_507;

/// A parsed header: which fragment, and where the payload goes (or, in a reply, whence it came).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 0 for a whole datagram; 1–127 a fragment's position, with the high bit on the last.
    pub frag: u8,
    pub target: Target,
}

/// Why a datagram's header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpError {
    /// Fewer bytes than the header needs.
    Short,
    /// RSV is not zero: not a SOCKS5 UDP header.
    Reserved(u16),
    /// The address is wrong (unknown ATYP, a domain that is empty, not UTF-8 or has a NUL).
    Address(Error),
}

impl fmt::Display for UdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UdpError::Short => f.write_str("datagram shorter than its SOCKS5 header"),
            UdpError::Reserved(rsv) => write!(f, "RSV 0x{rsv:04x}, not 0: not a SOCKS5 header"),
            UdpError::Address(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for UdpError {}

/// Parses the header at the front of `datagram`: the header, and how many bytes it took
/// (the payload is `datagram[used..]`, possibly empty). Never panics, whatever the bytes.
pub fn parse_header(datagram: &[u8]) -> Result<(Header, usize), UdpError> {
    let Some(&[r0, r1, frag]) = datagram.first_chunk::<3>() else {
        return Err(UdpError::Short);
    };
    let rsv = u16::from_be_bytes([r0, r1]);
    if rsv != 0 {
        return Err(UdpError::Reserved(rsv));
    }
    match parse_address(&datagram[3..]) {
        Ok(Some((target, used))) => Ok((Header { frag, target }, 3 + used)),
        Ok(None) => Err(UdpError::Short),
        Err(e) => Err(UdpError::Address(e)),
    }
}

/// Writes the header naming `from` (FRAG 0) into the front of `out` and returns its length
/// (10 bytes for IPv4, 22 for IPv6). The relay writes it just before a received payload,
/// so a reply goes out without its payload being copied.
pub fn encode_header(from: SocketAddr, out: &mut [u8; MAX_IP_HEADER]) -> usize {
    out[..3].fill(0);
    let len = match from {
        SocketAddr::V4(a) => {
            out[3] = ATYP_IPV4;
            out[4..8].copy_from_slice(&a.ip().octets());
            8
        }
        SocketAddr::V6(a) => {
            out[3] = ATYP_IPV6;
            out[4..20].copy_from_slice(&a.ip().octets());
            20
        }
    };
    out[len..len + 2].copy_from_slice(&from.port().to_be_bytes());
    len + 2
}

/// The client side, for tests and the benchmark: a datagram for `target` carrying `payload`.
/// A domain must be 1..=255 bytes without NUL.
pub fn wrap(target: &Target, payload: &[u8]) -> Result<Vec<u8>, Error> {
    wrap_fragment(0, target, payload)
}

/// As [`wrap`], with FRAG set (a relay that does not reassemble drops it).
pub fn wrap_fragment(frag: u8, target: &Target, payload: &[u8]) -> Result<Vec<u8>, Error> {
    let mut msg = Vec::with_capacity(MAX_HEADER + payload.len());
    msg.extend_from_slice(&[0, 0, frag]);
    match target {
        Target::Ip(addr) => {
            let mut head = [0u8; MAX_IP_HEADER];
            let len = encode_header(*addr, &mut head);
            msg.extend_from_slice(&head[3..len]);
        }
        Target::Domain(name, port) => {
            let len = u8::try_from(name.len()).map_err(|_| Error::TooLong)?;
            if len == 0 || name.as_bytes().contains(&0) {
                return Err(Error::InvalidDomain);
            }
            msg.extend_from_slice(&[ATYP_DOMAIN, len]);
            msg.extend_from_slice(name.as_bytes());
            msg.extend_from_slice(&port.to_be_bytes());
        }
    }
    msg.extend_from_slice(payload);
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

    fn v4(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddrV4::new(Ipv4Addr::from(ip), port).into()
    }

    #[test]
    fn ipv4_header_and_payload() {
        let d = [0, 0, 0, ATYP_IPV4, 127, 0, 0, 1, 0x1f, 0x90, b'h', b'i'];
        let (h, used) = parse_header(&d).unwrap();
        assert_eq!(h.frag, 0);
        assert_eq!(h.target, Target::Ip(v4([127, 0, 0, 1], 8080)));
        assert_eq!(&d[used..], b"hi");
    }

    #[test]
    fn ipv6_and_domain_headers() {
        let mut d = vec![0, 0, 0, ATYP_IPV6];
        d.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        d.extend_from_slice(&[0, 53]);
        let (h, used) = parse_header(&d).unwrap();
        let want = SocketAddrV6::new(Ipv6Addr::LOCALHOST, 53, 0, 0);
        assert_eq!((h.target, used), (Target::Ip(want.into()), 22));
        let d = [0, 0, 0, ATYP_DOMAIN, 3, b'a', b'.', b'b', 0, 53, 9];
        let (h, used) = parse_header(&d).unwrap();
        assert_eq!((h.target, used), (Target::Domain("a.b".into(), 53), 10));
    }

    #[test]
    fn fragment_is_reported_not_judged() {
        let d = wrap_fragment(0x81, &Target::Ip(v4([1, 2, 3, 4], 5)), b"x").unwrap();
        assert_eq!(parse_header(&d).unwrap().0.frag, 0x81);
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_header(&[]), Err(UdpError::Short));
        assert_eq!(parse_header(&[0, 0, 0, 1, 127, 0]), Err(UdpError::Short));
        assert_eq!(parse_header(&[0, 1, 0, 1]), Err(UdpError::Reserved(1)));
        let unknown = Err(UdpError::Address(Error::UnsupportedAddressType(9)));
        assert_eq!(parse_header(&[0, 0, 0, 9, 1, 2, 3]), unknown);
        let nul = [0, 0, 0, ATYP_DOMAIN, 2, b'a', 0, 0, 53];
        assert_eq!(
            parse_header(&nul),
            Err(UdpError::Address(Error::InvalidDomain))
        );
        assert_eq!(
            wrap(&Target::Domain(String::new(), 1), b""),
            Err(Error::InvalidDomain)
        );
    }

    #[test]
    fn encode_sizes() {
        let mut out = [0xAA; MAX_IP_HEADER];
        assert_eq!(encode_header(v4([10, 0, 0, 1], 1), &mut out), 10);
        let v6 = SocketAddrV6::new(Ipv6Addr::LOCALHOST, 2, 0, 0).into();
        assert_eq!(encode_header(v6, &mut out), MAX_IP_HEADER);
    }

    fn arb_target() -> impl Strategy<Value = Target> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| Target::Ip(v4(ip, p))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| {
                Target::Ip(SocketAddrV6::new(Ipv6Addr::from(ip), p, 0, 0).into())
            }),
            ("[a-z0-9.-]{1,255}", any::<u16>()).prop_map(|(n, p)| Target::Domain(n, p)),
        ]
    }

    proptest! {
        /// What `wrap` builds, `parse_header` reads back, and the payload follows untouched.
        #[test]
        fn round_trip(frag in any::<u8>(), target in arb_target(),
                      payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let d = wrap_fragment(frag, &target, &payload).unwrap();
            let (h, used) = parse_header(&d).unwrap();
            prop_assert_eq!(h, Header { frag, target });
            prop_assert_eq!(&d[used..], &payload[..]);
        }

        /// Any bytes: no panic, and a header that parses never claims more than it has.
        #[test]
        fn any_bytes(d in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok((_, used)) = parse_header(&d) {
                prop_assert!(used <= d.len());
            }
        }

        /// A reply header written for an IP source parses back to that source.
        #[test]
        fn encode_parses_back(target in arb_target()) {
            if let Target::Ip(addr) = target {
                let mut out = [0; MAX_IP_HEADER];
                let len = encode_header(addr, &mut out);
                prop_assert_eq!(parse_header(&out[..len]), Ok((Header { frag: 0, target }, len)));
            }
        }
    }
}
