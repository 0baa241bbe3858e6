//! Captured frames, sans-IO: Ethernet, IPv4, IPv6, TCP and UDP headers read from the bytes a
//! packet socket (or a pcap file) hands over, and the one line per packet lesson 18 prints.
//!
//! [`parse_frame`] takes one frame as captured, perhaps cut short by the snap length, and
//! returns what it could read: a [`Frame`] with its [`Ethernet`] header, its [`Ip`] header
//! if it is IPv4 or IPv6, and its [`Transport`]: a [`Tcp`] or [`Udp`] header, another
//! protocol, or `Cut` when the capture ended inside the transport header. A frame cut
//! inside its Ethernet or IP header is an [`Error`]. On `lo`, Linux frames are Ethernet
//! with both addresses zero; [`LinkType::LinuxSll`] (tcpdump's `-i any`) and
//! [`LinkType::RawIp`] are read too. Lengths come from the headers, not from what was
//! captured: [`Tcp::payload_len`] is the segment's real payload even when the capture kept
//! none of it.
//!
//! [`Relative`] turns sequence numbers into numbers relative to each side's first one, and
//! [`summary`] writes tcpdump's line: `IP 127.0.0.1.40000 > 127.0.0.1.8080: Flags [S.], seq
//! 0, ack 1, win 65483, options [mss 65495,wscale 7], length 0`.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of an IEEE 802.1Q VLAN tag (one tag is skipped).
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
/// The Ethernet header's length (without a VLAN tag).
pub const ETHERNET_LEN: usize = 14;

/// How a frame begins: the pcap LINKTYPE_ values of the link layers read here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1): a 14-byte Ethernet header (what AF_PACKET's SOCK_RAW gives).
    Ethernet,
    /// LINKTYPE_LINUX_SLL (113): Linux "cooked" capture, a 16-byte header.
    LinuxSll,
    /// LINKTYPE_RAW (101): the IP header first.
    RawIp,
}

impl LinkType {
    /// The pcap LINKTYPE_ number.
    pub fn code(self) -> u32 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::LinuxSll => 113,
            LinkType::RawIp => 101,
        }
    }

    /// The link type of a pcap LINKTYPE_ number, if it is one read here.
    pub fn from_code(code: u32) -> Option<LinkType> {
        match code {
            1 => Some(LinkType::Ethernet),
            113 => Some(LinkType::LinuxSll),
            101 => Some(LinkType::RawIp),
            _ => None,
        }
    }
}

/// A layer of a frame, named by an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Link,
    Ipv4,
    Ipv6,
    Tcp,
    Udp,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Link => "link",
            Layer::Ipv4 => "ip",
            Layer::Ipv6 => "ip6",
            Layer::Tcp => "tcp",
            Layer::Udp => "udp",
        })
    }
}

/// Why a header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The capture ended inside this layer's header (a snap length too short).
    Cut(Layer),
    /// The header is not valid (wrong version, a length field smaller than the header).
    Malformed(Layer, &'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Cut(layer) => write!(f, "[|{layer}]"),
            Error::Malformed(layer, why) => write!(f, "bad {layer} header: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// The link-layer header. For [`LinkType::LinuxSll`] `src` is the sender's address (padded
/// or cut to 6 bytes) and `dst` is zero; for [`LinkType::RawIp`] both are zero and the
/// EtherType is taken from the IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ethernet {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// After a skipped VLAN tag, the inner EtherType.
    pub ethertype: u16,
    /// The length of the link-layer header, VLAN tag included.
    pub header_len: usize,
}

/// An IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub id: u16,
    /// Don't Fragment.
    pub dont_fragment: bool,
    /// More Fragments.
    pub more_fragments: bool,
    /// The fragment offset, in bytes.
    pub fragment_offset: u16,
    /// The header's length in bytes (IHL × 4).
    pub header_len: usize,
    /// The Total Length field: header and payload.
    pub total_len: usize,
}

/// An IPv6 header; extension headers (hop-by-hop, routing, destination options, fragment)
/// are skipped and `next_header` is the protocol after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The upper-layer protocol, after any extension headers.
    pub next_header: u8,
    pub hop_limit: u8,
    pub flow_label: u32,
    /// The Payload Length field (extension headers included).
    pub payload_len: usize,
    /// The fixed header plus the extension headers skipped.
    pub header_len: usize,
    /// A fragment header with a non-zero offset was seen: no upper-layer header here.
    pub later_fragment: bool,
}

/// The network layer of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ip {
    V4(Ipv4),
    V6(Ipv6),
}

impl Ip {
    pub fn src(&self) -> IpAddr {
        match self {
            Ip::V4(h) => IpAddr::V4(h.src),
            Ip::V6(h) => IpAddr::V6(h.src),
        }
    }

    pub fn dst(&self) -> IpAddr {
        match self {
            Ip::V4(h) => IpAddr::V4(h.dst),
            Ip::V6(h) => IpAddr::V6(h.dst),
        }
    }

    /// The upper-layer protocol (6 TCP, 17 UDP, ...).
    pub fn protocol(&self) -> u8 {
        match self {
            Ip::V4(h) => h.protocol,
            Ip::V6(h) => h.next_header,
        }
    }

    /// The upper layer's length on the wire, from the header's length fields.
    pub fn payload_len(&self) -> usize {
        match self {
            Ip::V4(h) => h.total_len - h.header_len,
            Ip::V6(h) => (h.payload_len + 40).saturating_sub(h.header_len),
        }
    }

    /// Not the first fragment of a datagram: it carries no upper-layer header.
    pub fn later_fragment(&self) -> bool {
        match self {
            Ip::V4(h) => h.fragment_offset != 0,
            Ip::V6(h) => h.later_fragment,
        }
    }
}

/// The TCP flags byte (plus NS is left out: nobody uses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;

    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    pub fn psh(self) -> bool {
        self.0 & Self::PSH != 0
    }
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
    pub fn urg(self) -> bool {
        self.0 & Self::URG != 0
    }
}

/// tcpdump's spelling: `S`, `S.`, `.`, `P.`, `F.`, `R`, `R.`, `FP.` ... (F S R P U E W in
/// that order, then `.` for ACK; `none` if no flag is set).
impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for (bit, c) in [
            (Self::FIN, 'F'),
            (Self::SYN, 'S'),
            (Self::RST, 'R'),
            (Self::PSH, 'P'),
            (Self::URG, 'U'),
            (Self::ECE, 'E'),
            (Self::CWR, 'W'),
            (Self::ACK, '.'),
        ] {
            if self.0 & bit != 0 {
                f.write_char(c)?;
                any = true;
            }
        }
        if !any {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// The TCP options this reader understands. Options cut by the capture are left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpOptions {
    /// Maximum segment size (kind 2).
    pub mss: Option<u16>,
    /// Window scale shift (kind 3).
    pub wscale: Option<u8>,
    /// SACK permitted (kind 4).
    pub sack_permitted: bool,
    /// Timestamps (kind 8): value and echo reply.
    pub timestamps: Option<(u32, u32)>,
    /// SACK blocks (kind 5) were present.
    pub sack: bool,
}

impl TcpOptions {
    fn is_empty(&self) -> bool {
        *self == TcpOptions::default()
    }
}

/// A TCP header; `payload` is what the capture kept of the segment's data, `payload_len`
/// how long the data really was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    /// The Window field, unscaled.
    pub window: u16,
    /// Data offset × 4.
    pub header_len: usize,
    pub options: TcpOptions,
    /// The data's length on the wire (IP payload minus TCP header).
    pub payload_len: usize,
    /// The captured part of the data.
    pub payload: &'a [u8],
}

/// A UDP header; `payload` is what the capture kept, `payload_len` the real length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    /// The Length field (header included).
    pub length: usize,
    /// The datagram's data length on the wire.
    pub payload_len: usize,
    pub payload: &'a [u8],
}

/// What an IP packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    Tcp(Tcp<'a>),
    Udp(Udp<'a>),
    /// Another protocol, or a later fragment: its number, and the captured bytes.
    Other(u8, &'a [u8]),
    /// The capture ended inside the TCP or UDP header (or the header was malformed).
    Bad(Error),
}

/// One captured frame, read as far as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub link: Ethernet,
    /// `None` for a frame that is not IPv4 or IPv6 (ARP, ...).
    pub ip: Option<Ip>,
    /// `None` when `ip` is.
    pub transport: Option<Transport<'a>>,
    /// The bytes after the link-layer header, as captured.
    pub network: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The TCP header, if this is a TCP segment whose header was captured.
    pub fn tcp(&self) -> Option<&Tcp<'a>> {
        match &self.transport {
            Some(Transport::Tcp(t)) => Some(t),
            _ => None,
        }
    }

    /// The frame's length on the wire as its headers give it (link header plus the IP
    /// packet's length field), when it is an IP packet: what a snap length cut stays known.
    pub fn wire_len(&self) -> Option<usize> {
        let ip = match self.ip? {
            Ip::V4(h) => h.total_len,
            Ip::V6(h) => 40 + h.payload_len,
        };
        Some(self.link.header_len + ip)
    }

    /// The UDP header, if this is a UDP datagram whose header was captured.
    pub fn udp(&self) -> Option<&Udp<'a>> {
        match &self.transport {
            Some(Transport::Udp(u)) => Some(u),
            _ => None,
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads one Ethernet frame (what AF_PACKET's SOCK_RAW and LINKTYPE_ETHERNET hold).
pub fn parse_frame(bytes: &[u8]) -> Result<Frame<'_>, Error> {
    parse_frame_as(LinkType::Ethernet, bytes)
}

/// Reads one frame of the given link type.
pub fn parse_frame_as(link: LinkType, bytes: &[u8]) -> Result<Frame<'_>, Error> {
    let (link, network) = match link {
        LinkType::Ethernet => parse_ethernet(bytes)?,
        LinkType::LinuxSll => parse_linux_sll(bytes)?,
        LinkType::RawIp => {
            let ethertype = match bytes.first().map(|b| b >> 4) {
                Some(4) => ETHERTYPE_IPV4,
                Some(6) => ETHERTYPE_IPV6,
                Some(_) => 0,
                None => return Err(Error::Cut(Layer::Link)),
            };
            let header = Ethernet {
                dst: [0; 6],
                src: [0; 6],
                ethertype,
                header_len: 0,
            };
            (header, bytes)
        }
    };
    let (ip, rest) = match link.ethertype {
        ETHERTYPE_IPV4 => {
            let (h, rest) = parse_ipv4(network)?;
            (Ip::V4(h), rest)
        }
        ETHERTYPE_IPV6 => {
            let (h, rest) = parse_ipv6(network)?;
            (Ip::V6(h), rest)
        }
        _ => {
            return Ok(Frame {
                link,
                ip: None,
                transport: None,
                network,
            })
        }
    };
    let transport = parse_transport(&ip, rest);
    Ok(Frame {
        link,
        ip: Some(ip),
        transport: Some(transport),
        network,
    })
}

/// The upper layer of an IP packet whose payload (as captured) is `rest`.
pub fn parse_transport<'a>(ip: &Ip, rest: &'a [u8]) -> Transport<'a> {
    if ip.later_fragment() {
        return Transport::Other(ip.protocol(), rest);
    }
    let wire = ip.payload_len();
    let parsed = match ip.protocol() {
        PROTO_TCP => parse_tcp(rest, wire).map(Transport::Tcp),
        PROTO_UDP => parse_udp(rest, wire).map(Transport::Udp),
        other => Ok(Transport::Other(other, rest)),
    };
    parsed.unwrap_or_else(Transport::Bad)
}

/// The Ethernet header (one 802.1Q tag skipped); returns it and the bytes after it.
pub fn parse_ethernet(bytes: &[u8]) -> Result<(Ethernet, &[u8]), Error> {
    if bytes.len() < ETHERNET_LEN {
        return Err(Error::Cut(Layer::Link));
    }
    let mut dst = [0; 6];
    let mut src = [0; 6];
    dst.copy_from_slice(&bytes[0..6]);
    src.copy_from_slice(&bytes[6..12]);
    let mut ethertype = be16(bytes, 12);
    let mut header_len = ETHERNET_LEN;
    if ethertype == ETHERTYPE_VLAN {
        if bytes.len() < ETHERNET_LEN + 4 {
            return Err(Error::Cut(Layer::Link));
        }
        ethertype = be16(bytes, 16);
        header_len += 4;
    }
    let header = Ethernet {
        dst,
        src,
        ethertype,
        header_len,
    };
    Ok((header, &bytes[header_len..]))
}

/// The 16-byte Linux cooked header (LINKTYPE_LINUX_SLL).
pub fn parse_linux_sll(bytes: &[u8]) -> Result<(Ethernet, &[u8]), Error> {
    if bytes.len() < 16 {
        return Err(Error::Cut(Layer::Link));
    }
    let addr_len = usize::from(be16(bytes, 4)).min(6);
    let mut src = [0; 6];
    src[..addr_len].copy_from_slice(&bytes[6..6 + addr_len]);
    let header = Ethernet {
        dst: [0; 6],
        src,
        ethertype: be16(bytes, 14),
        header_len: 16,
    };
    Ok((header, &bytes[16..]))
}

/// The IPv4 header; returns it and its payload as captured (cut to Total Length, so that
/// Ethernet padding is not taken for data).
pub fn parse_ipv4(bytes: &[u8]) -> Result<(Ipv4, &[u8]), Error> {
    const L: Layer = Layer::Ipv4;
    if bytes.is_empty() {
        return Err(Error::Cut(L));
    }
    if bytes[0] >> 4 != 4 {
        return Err(Error::Malformed(L, "version is not 4"));
    }
    let header_len = usize::from(bytes[0] & 0x0f) * 4;
    if header_len < 20 {
        return Err(Error::Malformed(L, "IHL under 5"));
    }
    if bytes.len() < header_len {
        return Err(Error::Cut(L));
    }
    let total_len = usize::from(be16(bytes, 2));
    if total_len < header_len {
        return Err(Error::Malformed(L, "total length under the header length"));
    }
    let frag = be16(bytes, 6);
    let header = Ipv4 {
        src: Ipv4Addr::new(bytes[12], bytes[13], bytes[14], bytes[15]),
        dst: Ipv4Addr::new(bytes[16], bytes[17], bytes[18], bytes[19]),
        protocol: bytes[9],
        ttl: bytes[8],
        id: be16(bytes, 4),
        dont_fragment: frag & 0x4000 != 0,
        more_fragments: frag & 0x2000 != 0,
        fragment_offset: (frag & 0x1fff) * 8,
        header_len,
        total_len,
    };
    let end = total_len.min(bytes.len());
    Ok((header, &bytes[header_len..end]))
}

/// The IPv6 header and its extension headers; returns it and the upper-layer bytes as
/// captured (cut to Payload Length).
pub fn parse_ipv6(bytes: &[u8]) -> Result<(Ipv6, &[u8]), Error> {
    const L: Layer = Layer::Ipv6;
    if bytes.is_empty() {
        return Err(Error::Cut(L));
    }
    if bytes[0] >> 4 != 6 {
        return Err(Error::Malformed(L, "version is not 6"));
    }
    if bytes.len() < 40 {
        return Err(Error::Cut(L));
    }
    let mut src = [0; 16];
    let mut dst = [0; 16];
    src.copy_from_slice(&bytes[8..24]);
    dst.copy_from_slice(&bytes[24..40]);
    let payload_len = usize::from(be16(bytes, 4));
    let mut next = bytes[6];
    let mut at = 40;
    let mut later_fragment = false;
    // Hop-by-hop (0), routing (43), fragment (44), destination options (60): at most a few.
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                if bytes.len() < at + 2 {
                    return Err(Error::Cut(L));
                }
                next = bytes[at];
                at += (usize::from(bytes[at + 1]) + 1) * 8;
            }
            44 => {
                if bytes.len() < at + 8 {
                    return Err(Error::Cut(L));
                }
                next = bytes[at];
                later_fragment = be16(bytes, at + 2) & 0xfff8 != 0;
                at += 8;
            }
            _ => break,
        }
    }
    if at > 40 + payload_len {
        return Err(Error::Malformed(
            L,
            "extension headers past the payload length",
        ));
    }
    if bytes.len() < at {
        return Err(Error::Cut(L));
    }
    let header = Ipv6 {
        src: Ipv6Addr::from(src),
        dst: Ipv6Addr::from(dst),
        next_header: next,
        hop_limit: bytes[7],
        flow_label: be32(bytes, 0) & 0x000f_ffff,
        payload_len,
        header_len: at,
        later_fragment,
    };
    let end = (40 + payload_len).min(bytes.len());
    Ok((header, &bytes[at..end]))
}

/// A TCP header at the start of `bytes` (as captured), in a segment `wire_len` long.
pub fn parse_tcp(bytes: &[u8], wire_len: usize) -> Result<Tcp<'_>, Error> {
    const L: Layer = Layer::Tcp;
    if bytes.len() < 20 {
        return Err(Error::Cut(L));
    }
    let header_len = usize::from(bytes[12] >> 4) * 4;
    if header_len < 20 {
        return Err(Error::Malformed(L, "data offset under 5"));
    }
    if wire_len < header_len {
        return Err(Error::Malformed(L, "header longer than the segment"));
    }
    let options_end = header_len.min(bytes.len());
    let options = parse_tcp_options(&bytes[20..options_end]);
    Ok(Tcp {
        src_port: be16(bytes, 0),
        dst_port: be16(bytes, 2),
        seq: be32(bytes, 4),
        ack: be32(bytes, 8),
        flags: TcpFlags(bytes[13]),
        window: be16(bytes, 14),
        header_len,
        options,
        payload_len: wire_len - header_len,
        payload: bytes.get(header_len..).unwrap_or_default(),
    })
}

/// The options in `bytes` (the header after its first 20 bytes, as far as captured).
pub fn parse_tcp_options(mut bytes: &[u8]) -> TcpOptions {
    let mut options = TcpOptions::default();
    while let Some((&kind, rest)) = bytes.split_first() {
        match kind {
            0 => break,
            1 => {
                bytes = rest;
                continue;
            }
            _ => {}
        }
        let Some(&len) = rest.first() else { break };
        let len = usize::from(len);
        if len < 2 || len > bytes.len() {
            break;
        }
        let body = &bytes[2..len];
        match (kind, body.len()) {
            (2, 2) => options.mss = Some(be16(body, 0)),
            (3, 1) => options.wscale = Some(body[0]),
            (4, 0) => options.sack_permitted = true,
            (5, _) => options.sack = true,
            (8, 8) => options.timestamps = Some((be32(body, 0), be32(body, 4))),
            _ => {}
        }
        bytes = &bytes[len..];
    }
    options
}

/// A UDP header at the start of `bytes` (as captured), in a datagram `wire_len` long.
pub fn parse_udp(bytes: &[u8], wire_len: usize) -> Result<Udp<'_>, Error> {
    const L: Layer = Layer::Udp;
    if bytes.len() < 8 {
        return Err(Error::Cut(L));
    }
    let length = usize::from(be16(bytes, 4));
    // IPv6 jumbograms put 0 here; take the IP length then.
    let length = if length == 0 { wire_len } else { length };
    if length < 8 || length > wire_len {
        return Err(Error::Malformed(L, "length outside the IP payload"));
    }
    Ok(Udp {
        src_port: be16(bytes, 0),
        dst_port: be16(bytes, 2),
        length,
        payload_len: length - 8,
        payload: &bytes[8..length.min(bytes.len())],
    })
}

/// One direction of a TCP connection: source address and port, destination address and port.
pub type FlowKey = (IpAddr, u16, IpAddr, u16);

/// Relative sequence numbers, as tcpdump and Wireshark show them: each direction's numbers
/// count from the first sequence number seen in it (its SYN's, when the SYN was captured),
/// so a connection's first data byte is 1 and the numbers of two runs compare. Forgets a
/// direction when a new SYN starts it again, and everything past [`Relative::MAX_FLOWS`]
/// directions (then counts afresh), so that memory stays bounded.
#[derive(Debug, Default)]
pub struct Relative {
    first: HashMap<FlowKey, u32>,
}

impl Relative {
    /// The most directions remembered at once.
    pub const MAX_FLOWS: usize = 65_536;

    pub fn new() -> Relative {
        Relative::default()
    }

    /// `(seq, ack)` of this segment, relative to each direction's first number. `ack` is
    /// relative to the other direction's, when that one was seen; else it stays absolute.
    pub fn of(&mut self, ip: &Ip, tcp: &Tcp) -> (u32, u32) {
        let key = (ip.src(), tcp.src_port, ip.dst(), tcp.dst_port);
        let back = (ip.dst(), tcp.dst_port, ip.src(), tcp.src_port);
        if self.first.len() >= Self::MAX_FLOWS && !self.first.contains_key(&key) {
            self.first.clear();
        }
        if tcp.flags.syn() {
            self.first.insert(key, tcp.seq);
        }
        let isn = *self.first.entry(key).or_insert(tcp.seq);
        let ack = match self.first.get(&back) {
            Some(&peer) => tcp.ack.wrapping_sub(peer),
            None => tcp.ack,
        };
        (tcp.seq.wrapping_sub(isn), ack)
    }

    /// How many directions are remembered.
    pub fn len(&self) -> usize {
        self.first.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }
}

fn write_endpoint(out: &mut String, ip: IpAddr, port: u16) {
    let _ = write!(out, "{ip}.{port}");
}

/// The text of tcpdump's line for one frame, after the time: `IP a.p > b.q: Flags [P.],
/// seq 1:6, ack 1, win 512, length 5` (IPv6: `IP6`; UDP: `UDP, length 5`; a header cut by
/// the snap length: `[|tcp]`). Sequence numbers are made relative with `relative`.
pub fn summary(frame: &Frame, relative: &mut Relative) -> String {
    let mut out = String::new();
    let (Some(ip), Some(transport)) = (frame.ip, frame.transport) else {
        let _ = match frame.link.ethertype {
            ETHERTYPE_ARP => write!(out, "ARP, length {}", frame.network.len()),
            t => write!(out, "ethertype 0x{t:04x}, length {}", frame.network.len()),
        };
        return out;
    };
    out.push_str(match ip {
        Ip::V4(_) => "IP ",
        Ip::V6(_) => "IP6 ",
    });
    let ports = match transport {
        Transport::Tcp(t) => Some((t.src_port, t.dst_port)),
        Transport::Udp(u) => Some((u.src_port, u.dst_port)),
        _ => None,
    };
    match ports {
        Some((sp, dp)) => {
            write_endpoint(&mut out, ip.src(), sp);
            out.push_str(" > ");
            write_endpoint(&mut out, ip.dst(), dp);
        }
        None => {
            let _ = write!(out, "{} > {}", ip.src(), ip.dst());
        }
    }
    out.push_str(": ");
    match transport {
        Transport::Tcp(tcp) => {
            let (seq, ack) = relative.of(&ip, &tcp);
            let _ = write!(out, "Flags [{}]", tcp.flags);
            if tcp.payload_len > 0 {
                let end = seq.wrapping_add(tcp.payload_len as u32);
                let _ = write!(out, ", seq {seq}:{end}");
            } else if tcp.flags.syn() || tcp.flags.fin() || tcp.flags.rst() {
                let _ = write!(out, ", seq {seq}");
            }
            if tcp.flags.ack() {
                let _ = write!(out, ", ack {ack}");
            }
            let _ = write!(out, ", win {}", tcp.window);
            let o = tcp.options;
            if !o.is_empty() {
                let mut parts = Vec::new();
                if let Some(mss) = o.mss {
                    parts.push(format!("mss {mss}"));
                }
                if o.sack_permitted {
                    parts.push("sackOK".to_string());
                }
                if let Some((val, ecr)) = o.timestamps {
                    parts.push(format!("TS val {val} ecr {ecr}"));
                }
                if let Some(ws) = o.wscale {
                    parts.push(format!("wscale {ws}"));
                }
                if o.sack {
                    parts.push("sack".to_string());
                }
                let _ = write!(out, ", options [{}]", parts.join(","));
            }
            let _ = write!(out, ", length {}", tcp.payload_len);
        }
        Transport::Udp(udp) => {
            let _ = write!(out, "UDP, length {}", udp.payload_len);
        }
        Transport::Other(proto, _) => {
            let name = match proto {
                PROTO_ICMP => "ICMP".to_string(),
                PROTO_ICMPV6 => "ICMP6".to_string(),
                p => format!("ip-proto-{p}"),
            };
            let _ = write!(out, "{name}, length {}", ip.payload_len());
        }
        Transport::Bad(e) => {
            let _ = write!(out, "{e}");
        }
    }
    out
}

/// Test frames, built field by field (for this crate's tests and its users' tests).
pub mod build {
    use super::*;

    /// A TCP segment over IPv4 or IPv6 inside an Ethernet frame with zero addresses, as `lo`
    /// carries it; the checksums are left zero.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_frame(
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        options: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        assert!(options.len() % 4 == 0 && options.len() <= 40);
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&src.1.to_be_bytes());
        tcp.extend_from_slice(&dst.1.to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&ack.to_be_bytes());
        tcp.push((((20 + options.len()) / 4) as u8) << 4);
        tcp.push(flags);
        tcp.extend_from_slice(&window.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        tcp.extend_from_slice(options);
        tcp.extend_from_slice(payload);
        ip_frame(src.0, dst.0, PROTO_TCP, &tcp)
    }

    /// A UDP datagram over IPv4 or IPv6 inside an Ethernet frame with zero addresses.
    pub fn udp_frame(src: (IpAddr, u16), dst: (IpAddr, u16), payload: &[u8]) -> Vec<u8> {
        let mut udp = Vec::new();
        udp.extend_from_slice(&src.1.to_be_bytes());
        udp.extend_from_slice(&dst.1.to_be_bytes());
        udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(payload);
        ip_frame(src.0, dst.0, PROTO_UDP, &udp)
    }

    /// An IP packet of `protocol` carrying `upper`, in an Ethernet frame with zero addresses.
    pub fn ip_frame(src: IpAddr, dst: IpAddr, protocol: u8, upper: &[u8]) -> Vec<u8> {
        let mut frame = vec![0u8; 12];
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                frame.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
                frame.extend_from_slice(&[0x45, 0]);
                frame.extend_from_slice(&((20 + upper.len()) as u16).to_be_bytes());
                frame.extend_from_slice(&[0, 1, 0x40, 0, 64, protocol, 0, 0]);
                frame.extend_from_slice(&s.octets());
                frame.extend_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
                frame.extend_from_slice(&[0x60, 0, 0, 0]);
                frame.extend_from_slice(&(upper.len() as u16).to_be_bytes());
                frame.extend_from_slice(&[protocol, 64]);
                frame.extend_from_slice(&s.octets());
                frame.extend_from_slice(&d.octets());
            }
            _ => panic!("mixed address families"),
        }
        frame.extend_from_slice(upper);
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    const A: (IpAddr, u16) = (IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);
    const B: (IpAddr, u16) = (IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
    const A6: (IpAddr, u16) = (IpAddr::V6(Ipv6Addr::LOCALHOST), 40000);
    const B6: (IpAddr, u16) = (IpAddr::V6(Ipv6Addr::LOCALHOST), 8080);
    // mss 65495, sackOK, TS val 1 ecr 0, nop, wscale 7: Linux's SYN options.
    const SYN_OPTIONS: [u8; 20] = [
        2, 4, 0xff, 0xd7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];

    #[test]
    fn reads_a_syn_with_its_options() {
        let f = tcp_frame(A, B, 1000, 0, TcpFlags::SYN, 65495, &SYN_OPTIONS, b"");
        let frame = parse_frame(&f).unwrap();
        assert_eq!(frame.link.ethertype, ETHERTYPE_IPV4);
        assert_eq!(frame.link.src, [0; 6]);
        let ip = frame.ip.unwrap();
        assert_eq!(ip.src(), A.0);
        assert_eq!(ip.protocol(), PROTO_TCP);
        let tcp = frame.tcp().unwrap();
        assert_eq!((tcp.src_port, tcp.dst_port), (40000, 8080));
        assert_eq!((tcp.seq, tcp.ack, tcp.window), (1000, 0, 65495));
        assert!(tcp.flags.syn() && !tcp.flags.ack());
        assert_eq!(tcp.header_len, 40);
        assert_eq!(tcp.payload_len, 0);
        assert_eq!(
            tcp.options,
            TcpOptions {
                mss: Some(65495),
                wscale: Some(7),
                sack_permitted: true,
                timestamps: Some((1, 0)),
                sack: false,
            }
        );
    }

    #[test]
    fn flags_are_spelled_as_tcpdump_does() {
        let f = |b: u8| TcpFlags(b).to_string();
        assert_eq!(f(TcpFlags::SYN), "S");
        assert_eq!(f(TcpFlags::SYN | TcpFlags::ACK), "S.");
        assert_eq!(f(TcpFlags::ACK), ".");
        assert_eq!(f(TcpFlags::PSH | TcpFlags::ACK), "P.");
        assert_eq!(f(TcpFlags::FIN | TcpFlags::ACK), "F.");
        assert_eq!(f(TcpFlags::FIN | TcpFlags::PSH | TcpFlags::ACK), "FP.");
        assert_eq!(f(TcpFlags::RST), "R");
        assert_eq!(f(TcpFlags::RST | TcpFlags::ACK), "R.");
        assert_eq!(f(0), "none");
    }

    #[test]
    fn a_connection_reads_as_tcpdump_prints_it() {
        let mut rel = Relative::new();
        let mut line = |f: Vec<u8>| summary(&parse_frame(&f).unwrap(), &mut rel);
        let syn = tcp_frame(A, B, 1000, 0, TcpFlags::SYN, 65495, &SYN_OPTIONS, b"");
        assert_eq!(
            line(syn),
            "IP 127.0.0.1.40000 > 127.0.0.1.8080: Flags [S], seq 0, win 65495, \
             options [mss 65495,sackOK,TS val 1 ecr 0,wscale 7], length 0"
        );
        let synack = tcp_frame(B, A, 7000, 1001, 0x12, 65483, &[], b"");
        assert_eq!(
            line(synack),
            "IP 127.0.0.1.8080 > 127.0.0.1.40000: Flags [S.], seq 0, ack 1, win 65483, length 0"
        );
        let data = tcp_frame(A, B, 1001, 7001, 0x18, 512, &[], b"hello");
        assert_eq!(
            line(data),
            "IP 127.0.0.1.40000 > 127.0.0.1.8080: Flags [P.], seq 1:6, ack 1, win 512, length 5"
        );
        let fin = tcp_frame(B, A, 7001, 1006, 0x11, 512, &[], b"");
        assert_eq!(
            line(fin),
            "IP 127.0.0.1.8080 > 127.0.0.1.40000: Flags [F.], seq 1, ack 6, win 512, length 0"
        );
        let rst = tcp_frame(A, B, 1006, 0, TcpFlags::RST, 0, &[], b"");
        assert_eq!(
            line(rst),
            "IP 127.0.0.1.40000 > 127.0.0.1.8080: Flags [R], seq 6, win 0, length 0"
        );
    }

    #[test]
    fn ipv6_and_udp() {
        let f = tcp_frame(A6, B6, 5, 9, 0x10, 100, &[], b"abc");
        let frame = parse_frame(&f).unwrap();
        assert!(matches!(frame.ip, Some(Ip::V6(_))));
        assert_eq!(frame.tcp().unwrap().payload_len, 3);
        let mut rel = Relative::new();
        assert_eq!(
            summary(&frame, &mut rel),
            "IP6 ::1.40000 > ::1.8080: Flags [.], seq 0:3, ack 9, win 100, length 3"
        );
        let u = udp_frame(A, B, b"ping");
        let frame = parse_frame(&u).unwrap();
        let udp = frame.udp().unwrap();
        assert_eq!(
            (udp.src_port, udp.dst_port, udp.payload),
            (40000, 8080, &b"ping"[..])
        );
        assert_eq!(
            summary(&frame, &mut rel),
            "IP 127.0.0.1.40000 > 127.0.0.1.8080: UDP, length 4"
        );
        let u6 = udp_frame(A6, B6, b"");
        assert_eq!(parse_frame(&u6).unwrap().udp().unwrap().payload_len, 0);
    }

    #[test]
    fn ipv6_extension_headers_are_skipped() {
        // A hop-by-hop header (8 bytes: next = TCP, len 0, padding) before a TCP header.
        let f = tcp_frame(A6, B6, 1, 0, TcpFlags::SYN, 10, &[], b"");
        let mut g = f[..ETHERNET_LEN + 40].to_vec();
        g[ETHERNET_LEN + 6] = 0; // next header: hop-by-hop
        let len = u16::from_be_bytes([g[ETHERNET_LEN + 4], g[ETHERNET_LEN + 5]]) + 8;
        g[ETHERNET_LEN + 4..ETHERNET_LEN + 6].copy_from_slice(&len.to_be_bytes());
        g.extend_from_slice(&[PROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
        g.extend_from_slice(&f[ETHERNET_LEN + 40..]);
        let frame = parse_frame(&g).unwrap();
        let Some(Ip::V6(h)) = frame.ip else { panic!() };
        assert_eq!((h.next_header, h.header_len), (PROTO_TCP, 48));
        assert_eq!(frame.tcp().unwrap().seq, 1);
        assert_eq!(frame.tcp().unwrap().payload_len, 0);
    }

    #[test]
    fn a_short_snap_length_cuts_but_lengths_stay_true() {
        let f = tcp_frame(A, B, 1, 1, 0x18, 512, &[], &[b'x'; 1000]);
        // 96 bytes: the headers and some data.
        let frame = parse_frame(&f[..96]).unwrap();
        assert_eq!(frame.wire_len(), Some(f.len()));
        let tcp = frame.tcp().unwrap();
        assert_eq!(tcp.payload_len, 1000);
        assert_eq!(tcp.payload.len(), 96 - 54);
        // 40 bytes: inside the TCP header.
        let frame = parse_frame(&f[..40]).unwrap();
        assert_eq!(
            frame.transport,
            Some(Transport::Bad(Error::Cut(Layer::Tcp)))
        );
        let line = summary(&frame, &mut Relative::new());
        assert_eq!(line, "IP 127.0.0.1 > 127.0.0.1: [|tcp]");
        // 20 bytes: inside the IP header.
        assert_eq!(parse_frame(&f[..20]), Err(Error::Cut(Layer::Ipv4)));
        assert_eq!(parse_frame(&f[..10]), Err(Error::Cut(Layer::Link)));
    }

    #[test]
    fn padding_is_not_data() {
        let mut f = tcp_frame(A, B, 1, 1, 0x10, 512, &[], b"");
        f.extend_from_slice(&[0; 6]); // Ethernet's minimum frame size
        let frame = parse_frame(&f).unwrap();
        assert_eq!(frame.tcp().unwrap().payload, b"");
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        let f = tcp_frame(A, B, 1, 1, 0x10, 512, &[], b"");
        let mut g = f.clone();
        g[ETHERNET_LEN] = 0x44; // IHL 4
        assert!(matches!(
            parse_frame(&g),
            Err(Error::Malformed(Layer::Ipv4, _))
        ));
        let mut g = f.clone();
        g[ETHERNET_LEN] = 0x55;
        assert!(matches!(
            parse_frame(&g),
            Err(Error::Malformed(Layer::Ipv4, _))
        ));
        let mut g = f.clone();
        g[ETHERNET_LEN + 20 + 12] = 0x40; // data offset 4
        assert_eq!(
            parse_frame(&g).unwrap().transport,
            Some(Transport::Bad(Error::Malformed(
                Layer::Tcp,
                "data offset under 5"
            )))
        );
        let mut g = f.clone();
        g[ETHERNET_LEN + 20 + 12] = 0xf0; // 60-byte header in a 20-byte segment
        assert!(matches!(
            parse_frame(&g).unwrap().transport,
            Some(Transport::Bad(Error::Malformed(Layer::Tcp, _)))
        ));
        // A TCP option whose length runs past the header is ignored, not read.
        assert_eq!(parse_tcp_options(&[2, 40, 1, 2]), TcpOptions::default());
        assert_eq!(parse_tcp_options(&[3, 0]), TcpOptions::default());
    }

    #[test]
    fn other_link_layers() {
        let f = tcp_frame(A, B, 1, 1, 0x10, 512, &[], b"x");
        let raw = &f[ETHERNET_LEN..];
        let frame = parse_frame_as(LinkType::RawIp, raw).unwrap();
        assert_eq!(frame.tcp().unwrap().payload, b"x");
        let mut sll = vec![0, 0, 0x03, 0x04, 0, 6];
        sll.resize(14, 0); // type, ARPHRD_LOOPBACK, address length 6, address
        sll.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        sll.extend_from_slice(raw);
        let frame = parse_frame_as(LinkType::LinuxSll, &sll).unwrap();
        assert_eq!(frame.tcp().unwrap().payload, b"x");
        let arp = [&[0u8; 12][..], &ETHERTYPE_ARP.to_be_bytes(), &[0; 28]].concat();
        let frame = parse_frame(&arp).unwrap();
        assert_eq!(frame.ip, None);
        assert_eq!(summary(&frame, &mut Relative::new()), "ARP, length 28");
        for t in [LinkType::Ethernet, LinkType::LinuxSll, LinkType::RawIp] {
            assert_eq!(LinkType::from_code(t.code()), Some(t));
        }
    }

    #[test]
    fn relative_numbers_wrap_and_stay_bounded() {
        let mut rel = Relative::new();
        let f = tcp_frame(A, B, u32::MAX, 0, TcpFlags::SYN, 1, &[], b"");
        let frame = parse_frame(&f).unwrap();
        assert_eq!(rel.of(&frame.ip.unwrap(), frame.tcp().unwrap()), (0, 0));
        let f = tcp_frame(A, B, 4, 0, 0x10, 1, &[], b"");
        let frame = parse_frame(&f).unwrap();
        assert_eq!(rel.of(&frame.ip.unwrap(), frame.tcp().unwrap()).0, 5);
        for i in 0..(Relative::MAX_FLOWS as u32 + 10) {
            let src = (A.0, (i >> 16) as u16 + 1);
            let f = tcp_frame(src, (B.0, i as u16), 1, 0, 0x10, 1, &[], b"");
            let frame = parse_frame(&f).unwrap();
            rel.of(&frame.ip.unwrap(), frame.tcp().unwrap());
            assert!(rel.len() <= Relative::MAX_FLOWS);
        }
        assert!(rel.len() < 20, "the map was never cleared");
    }

    proptest::proptest! {
        /// Any bytes, under any link type, read or fail without a panic, and a TCP segment
        /// behind any prefix of a real header reads or fails the same way.
        #[test]
        fn any_bytes_read_or_fail(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), cut in 0usize..120) {
            let mut rel = Relative::new();
            for link in [LinkType::Ethernet, LinkType::LinuxSll, LinkType::RawIp] {
                if let Ok(frame) = parse_frame_as(link, &bytes) {
                    summary(&frame, &mut rel);
                }
            }
            let mut f = tcp_frame(A6, B6, 1, 2, 0x18, 3, &SYN_OPTIONS, &bytes);
            f.truncate(cut.max(1));
            if let Ok(frame) = parse_frame(&f) {
                summary(&frame, &mut rel);
            }
        }
    }
}
