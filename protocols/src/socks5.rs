//! # SOCKS5 without sockets: a sans-IO codec and handshake state machine
//!
//! This module speaks SOCKS version 5 ([RFC 1928]) with the optional
//! username/password sub-negotiation ([RFC 1929]), but it never touches a file
//! descriptor, a socket or DNS. It takes bytes in and gives bytes (and
//! decisions) back. The poll(2) loop that owns the sockets (lesson 12, and the
//! Redis allowlist variant in lesson 13) does all the I/O; this module only
//! decides. That split is called *sans-IO*: the protocol logic can be tested
//! byte by byte, with no network, and the same code serves a blocking client,
//! a poll loop or a benchmark.
//!
//! ## The conversation (server side)
//!
//! ```text
//!  client                                server
//!  VER=5 NMETHODS METHODS...   ──►                         RFC 1928 §3
//!                              ◄──  VER=5 METHOD            (0xFF = go away)
//!  VER=1 ULEN UNAME PLEN PASSWD──►                         RFC 1929 §2 (only if METHOD=0x02)
//!                              ◄──  VER=1 STATUS            (0 = ok, else close)
//!  VER=5 CMD RSV ATYP ADDR PORT──►                         RFC 1928 §4, §5
//!                              ◄──  VER=5 REP RSV ATYP BND.ADDR BND.PORT   RFC 1928 §6
//!  ...payload in both directions...
//! ```
//!
//! [`Handshake`] walks through the states `Greeting → Auth → Request → Done`
//! (or `Closed`). Call [`Handshake::feed`] with whatever bytes `read(2)`
//! returned; it appends anything to send to your output buffer and returns a
//! [`Step`]:
//!
//! * [`Step::NeedMore`]: every input byte was used; read again.
//! * [`Step::Connect`]: the client asked to CONNECT to a [`Target`].
//!   `consumed` says how many bytes of *this* input were handshake; the rest
//!   is early payload to forward once the upstream connection exists. Then
//!   send the final reply with [`encode_reply`] (RFC 1928 §6).
//! * [`Step::Associate`]: a UDP ASSOCIATE, only from a handshake made with
//!   [`Handshake::udp_associate`] (lesson 16); the datagrams' own header is
//!   [`crate::socks5_udp`]'s.
//! * [`Step::Close`]: send what was appended (maybe nothing) and close.
//!
//! ## Design choices
//!
//! * **The machine buffers, not the caller.** A message split across several
//!   `read`s is kept in a fixed `[u8; MAX_MESSAGE_LEN]` array inside the
//!   [`Handshake`]. The relay never has to keep, compact or re-offer a partial
//!   message: it hands each read over once and forwards `input[consumed..]`.
//!   Because the array has a fixed size (513 bytes, the longest legal RFC 1929
//!   message), it *cannot* grow without bound, whatever a client sends.
//! * **Incremental parsers.** Every `parse_*` function takes a byte slice and
//!   returns `Ok(None)` ("need more bytes"), `Ok(Some((message, used)))`, or
//!   `Err`. They only look at the bytes they have, in order, so the answer
//!   never depends on how TCP chopped the stream: one segment holding
//!   greeting + auth + request + payload, or one byte per segment, give the
//!   same replies (the property tests check exactly that).
//! * **A message is read completely before it is answered**, whenever its
//!   length is known. A BIND or UDP ASSOCIATE request gets `0x07` only after
//!   its whole address arrived. The one exception is an unknown ATYP: the
//!   length of the rest cannot be known, so we answer `0x08` at once and close.
//! * **Strict where it matters, lenient where it doesn't.** A wrong VER byte
//!   (5 for greeting/request, 1 for RFC 1929) means the peer does not speak
//!   this protocol: close without a reply. A non-zero RSV byte in a request is
//!   accepted (RFC 1928 §4 says it "MUST" be 0, but nothing depends on it).
//!   ULEN or PLEN of 0 (RFC 1929 asks for 1..255) is parsed and then simply
//!   fails to match the configured credentials.
//! * **Domains must be safe for getaddrinfo(3).** A domain name that is empty,
//!   not UTF-8 or contains a NUL byte is refused with [`Reply::HostUnreachable`]
//!   (`0x04`): to the client it is a name that cannot be resolved, so it gets
//!   the same answer the relay gives when `getaddrinfo` fails. (RFC 1928 has
//!   no "malformed request" code; `0x01` would wrongly blame the server.)
//! * **Address checks come before the command check.** A BIND with an
//!   unknown ATYP gets `0x08`, a BIND with an empty domain gets `0x04`; a
//!   well-formed BIND gets `0x07`.
//! * **With credentials configured, only method `0x02` is acceptable** — a
//!   client offering only `0x00` gets `0xFF`. Without credentials, only `0x00`
//!   is. Credentials are compared without early exit ([`Handshake`] never
//!   stops at the first differing byte), and `Debug` never prints them.
//! * **No heap in the hot path.** Server replies are at most 22 bytes and are
//!   returned in a fixed array ([`EncodedReply`]). No function panics on any
//!   input; no `unwrap` is applied to anything derived from received data.
//!
//! The [`client`] module has the mirror image (encoders for what a client
//! sends, parsers for what a server answers) for integration tests and the
//! benchmark.
//!
//! [RFC 1928]: https://www.rfc-editor.org/rfc/rfc1928
//! [RFC 1929]: https://www.rfc-editor.org/rfc/rfc1929

use crate::logtext::Escaped;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

// ---------------------------------------------------------------------------
// Protocol constants
// ---------------------------------------------------------------------------

/// VER of every RFC 1928 message.
pub const VERSION: u8 = 5;
/// VER of the RFC 1929 username/password sub-negotiation (not 5!).
pub const AUTH_VERSION: u8 = 1;

/// METHOD `0x00`: no authentication required (RFC 1928 §3).
pub const METHOD_NO_AUTH: u8 = 0x00;
/// METHOD `0x02`: username/password (RFC 1929).
pub const METHOD_USER_PASS: u8 = 0x02;
/// METHOD `0xFF`: no acceptable methods; the client must close (RFC 1928 §3).
pub const METHOD_NO_ACCEPTABLE: u8 = 0xFF;

/// ATYP `0x01`: 4-byte IPv4 address.
pub const ATYP_IPV4: u8 = 0x01;
/// ATYP `0x03`: 1-byte length, then that many bytes of domain name.
pub const ATYP_DOMAIN: u8 = 0x03;
/// ATYP `0x04`: 16-byte IPv6 address.
pub const ATYP_IPV6: u8 = 0x04;

/// Longest greeting: VER, NMETHODS, 255 methods.
pub const MAX_GREETING_LEN: usize = 2 + 255;
/// Longest RFC 1929 request: VER, ULEN, 255 bytes, PLEN, 255 bytes.
pub const MAX_AUTH_LEN: usize = 1 + 1 + 255 + 1 + 255;
/// Longest request (or reply): VER, CMD, RSV, ATYP, LEN, 255-byte name, PORT.
pub const MAX_REQUEST_LEN: usize = 4 + 1 + 255 + 2;
/// Capacity of the [`Handshake`] buffer: the longest message it can receive.
pub const MAX_MESSAGE_LEN: usize = MAX_AUTH_LEN;
/// Longest reply [`encode_reply`] produces: 4 header bytes, IPv6, port.
pub const MAX_ENCODED_REPLY_LEN: usize = 4 + 16 + 2;

// Checked by the compiler: every message the server receives fits the buffer.
const _: () = assert!(MAX_MESSAGE_LEN >= MAX_GREETING_LEN && MAX_MESSAGE_LEN >= MAX_REQUEST_LEN);

/// BND.ADDR:BND.PORT for replies sent when no upstream socket exists.
pub const UNSPECIFIED_BND: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

// ---------------------------------------------------------------------------
// Reply codes (RFC 1928 §6)
// ---------------------------------------------------------------------------

/// The REP field of a reply (RFC 1928 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reply {
    /// `0x00` succeeded.
    Succeeded = 0x00,
    /// `0x01` general SOCKS server failure.
    GeneralFailure = 0x01,
    /// `0x02` connection not allowed by ruleset (used for allowlist denial).
    NotAllowed = 0x02,
    /// `0x03` network unreachable.
    NetworkUnreachable = 0x03,
    /// `0x04` host unreachable (also: name not found, invalid domain name).
    HostUnreachable = 0x04,
    /// `0x05` connection refused.
    ConnectionRefused = 0x05,
    /// `0x06` TTL expired (conventionally used for connect timeouts).
    TtlExpired = 0x06,
    /// `0x07` command not supported.
    CommandNotSupported = 0x07,
    /// `0x08` address type not supported.
    AddressTypeNotSupported = 0x08,
}

impl Reply {
    /// The byte on the wire.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The reply for a wire byte, or `None` above `0x08`.
    pub const fn from_code(code: u8) -> Option<Reply> {
        Some(match code {
            0x00 => Reply::Succeeded,
            0x01 => Reply::GeneralFailure,
            0x02 => Reply::NotAllowed,
            0x03 => Reply::NetworkUnreachable,
            0x04 => Reply::HostUnreachable,
            0x05 => Reply::ConnectionRefused,
            0x06 => Reply::TtlExpired,
            0x07 => Reply::CommandNotSupported,
            0x08 => Reply::AddressTypeNotSupported,
            _ => return None,
        })
    }

    /// The reply for a failed `connect(2)`. The protocol names no errno: the caller turns
    /// its errno into an [`io::Error`] (`io::Error::from_raw_os_error`, or nix's
    /// `Errno` with `.into()`), and std sorts it into a portable [`io::ErrorKind`]:
    /// ECONNREFUSED → `0x05`, ENETUNREACH → `0x03`, EHOSTUNREACH → `0x04`, and ETIMEDOUT →
    /// `0x06` (RFC 1928 has no "timed out" code; most servers send this one). Anything
    /// else is `0x01`.
    pub fn from_io_error(err: &io::Error) -> Reply {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
            io::ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
            io::ErrorKind::HostUnreachable => Reply::HostUnreachable,
            io::ErrorKind::TimedOut => Reply::TtlExpired,
            _ => Reply::GeneralFailure,
        }
    }

    /// A short human-readable text, for log lines.
    pub const fn describe(self) -> &'static str {
        match self {
            Reply::Succeeded => "succeeded",
            Reply::GeneralFailure => "general SOCKS server failure",
            Reply::NotAllowed => "connection not allowed by ruleset",
            Reply::NetworkUnreachable => "network unreachable",
            Reply::HostUnreachable => "host unreachable",
            Reply::ConnectionRefused => "connection refused",
            Reply::TtlExpired => "TTL expired",
            Reply::CommandNotSupported => "command not supported",
            Reply::AddressTypeNotSupported => "address type not supported",
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02x})", self.describe(), self.code())
    }
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

/// Where the client wants to go (DST.ADDR/DST.PORT), or where the server is
/// bound (BND.ADDR/BND.PORT).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// ATYP 1 or 4.
    Ip(SocketAddr),
    /// ATYP 3. Guaranteed non-empty, at most 255 bytes, UTF-8, no NUL: safe
    /// to pass to getaddrinfo(3) as a C string.
    Domain(String, u16),
}

impl Target {
    /// The port, whatever the address type.
    pub fn port(&self) -> u16 {
        match self {
            Target::Ip(addr) => addr.port(),
            Target::Domain(_, port) => *port,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Ip(addr) => write!(f, "{addr}"),
            // A client's name: escaped and capped, so it cannot forge a log line.
            Target::Domain(name, port) => write!(f, "{}:{port}", Escaped(name.as_bytes())),
        }
    }
}

/// CMD of a request (RFC 1928 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// `0x01` CONNECT: the only one this relay supports.
    Connect,
    /// `0x02` BIND.
    Bind,
    /// `0x03` UDP ASSOCIATE.
    UdpAssociate,
    /// Anything else.
    Unknown(u8),
}

impl Command {
    /// The command for a wire byte.
    pub const fn from_code(code: u8) -> Command {
        match code {
            0x01 => Command::Connect,
            0x02 => Command::Bind,
            0x03 => Command::UdpAssociate,
            other => Command::Unknown(other),
        }
    }

    /// The byte on the wire.
    pub const fn code(self) -> u8 {
        match self {
            Command::Connect => 0x01,
            Command::Bind => 0x02,
            Command::UdpAssociate => 0x03,
            Command::Unknown(code) => code,
        }
    }
}

/// A parsed greeting (RFC 1928 §3): the methods the client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting<'a> {
    pub methods: &'a [u8],
}

/// A parsed RFC 1929 username/password request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AuthRequest<'a> {
    pub username: &'a [u8],
    pub password: &'a [u8],
}

impl fmt::Debug for AuthRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRequest")
            .field("username", &String::from_utf8_lossy(self.username))
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A parsed request (RFC 1928 §4). RSV is not kept (we accept any value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub target: Target,
}

/// What can be wrong with bytes, whichever side parses or encodes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// VER is not 5 (greeting, request, method selection or reply).
    BadVersion(u8),
    /// VER of an RFC 1929 message is not 1.
    BadAuthVersion(u8),
    /// ATYP is not 1, 3 or 4 (the length of the rest is unknown).
    UnsupportedAddressType(u8),
    /// A domain name that is empty, not UTF-8, or contains a NUL byte.
    InvalidDomain,
    /// REP above `0x08` in a reply.
    UnknownReply(u8),
    /// A field longer than its 1-byte length allows (255), when encoding.
    TooLong,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadVersion(v) => write!(f, "not SOCKS5 (version byte 0x{v:02x})"),
            Error::BadAuthVersion(v) => {
                write!(f, "bad username/password version byte 0x{v:02x}")
            }
            Error::UnsupportedAddressType(t) => write!(f, "unsupported address type 0x{t:02x}"),
            Error::InvalidDomain => f.write_str("invalid domain name (empty, not UTF-8 or NUL)"),
            Error::UnknownReply(r) => write!(f, "unknown reply code 0x{r:02x}"),
            Error::TooLong => f.write_str("field longer than 255 bytes"),
        }
    }
}

impl std::error::Error for Error {}

// ---------------------------------------------------------------------------
// Incremental parsers (what a server receives)
// ---------------------------------------------------------------------------
//
// Each returns Ok(None) while the message is incomplete, and looks at the
// bytes strictly in order, so a verdict reached on a prefix is the verdict
// for every longer input. `buf.get(..)` instead of `buf[..]` means a short
// buffer is "need more", never a panic.

/// Parses a greeting: `VER NMETHODS METHODS...` (RFC 1928 §3).
pub fn parse_greeting(buf: &[u8]) -> Result<Option<(Greeting<'_>, usize)>, Error> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != VERSION {
        return Err(Error::BadVersion(ver));
    }
    let Some(&nmethods) = buf.get(1) else {
        return Ok(None);
    };
    let end = 2 + usize::from(nmethods);
    Ok(buf.get(2..end).map(|methods| (Greeting { methods }, end)))
}

/// Parses `VER ULEN UNAME PLEN PASSWD` (RFC 1929 §2).
pub fn parse_auth(buf: &[u8]) -> Result<Option<(AuthRequest<'_>, usize)>, Error> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != AUTH_VERSION {
        return Err(Error::BadAuthVersion(ver));
    }
    let Some((username, rest)) = length_prefixed(buf.get(1..)) else {
        return Ok(None);
    };
    let Some((password, _)) = length_prefixed(Some(rest)) else {
        return Ok(None);
    };
    let used = 1 + 1 + username.len() + 1 + password.len();
    Ok(Some((AuthRequest { username, password }, used)))
}

/// Splits `LEN BYTES... rest` into `(BYTES, rest)`, or `None` if incomplete.
fn length_prefixed(buf: Option<&[u8]>) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = buf?.split_first()?;
    rest.split_at_checked(usize::from(len))
}

/// Parses `VER CMD RSV ATYP DST.ADDR DST.PORT` (RFC 1928 §4). Any CMD is
/// returned (the caller decides what it supports); RSV is ignored.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, Error> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != VERSION {
        return Err(Error::BadVersion(ver));
    }
    let Some(&cmd) = buf.get(1) else {
        return Ok(None);
    };
    // buf[2] is RSV: lenient, any value accepted.
    let Some(address) = buf.get(3..) else {
        return Ok(None);
    };
    Ok(parse_address(address)?.map(|(target, used)| {
        let request = Request {
            command: Command::from_code(cmd),
            target,
        };
        (request, 3 + used)
    }))
}

/// Parses `ATYP ADDR PORT` (RFC 1928 §5), shared by requests and replies.
pub(crate) fn parse_address(buf: &[u8]) -> Result<Option<(Target, usize)>, Error> {
    let Some((&atyp, rest)) = buf.split_first() else {
        return Ok(None);
    };
    match atyp {
        ATYP_IPV4 => {
            let Some(&[a, b, c, d, p0, p1]) = rest.first_chunk::<6>() else {
                return Ok(None);
            };
            let addr = SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be_bytes([p0, p1]));
            Ok(Some((Target::Ip(addr.into()), 1 + 6)))
        }
        ATYP_IPV6 => {
            let Some((ip, rest)) = rest.split_first_chunk::<16>() else {
                return Ok(None);
            };
            let Some(port) = rest.first_chunk::<2>() else {
                return Ok(None);
            };
            let ip = Ipv6Addr::from(*ip);
            let addr = SocketAddrV6::new(ip, u16::from_be_bytes(*port), 0, 0);
            Ok(Some((Target::Ip(addr.into()), 1 + 16 + 2)))
        }
        ATYP_DOMAIN => {
            let Some((name, rest)) = length_prefixed(Some(rest)) else {
                return Ok(None);
            };
            let Some(port) = rest.first_chunk::<2>() else {
                return Ok(None);
            };
            // Judged only now that the whole message is here.
            let name = valid_domain(name)?;
            let used = 1 + 1 + name.len() + 2;
            Ok(Some((
                Target::Domain(name, u16::from_be_bytes(*port)),
                used,
            )))
        }
        other => Err(Error::UnsupportedAddressType(other)),
    }
}

/// A domain name we are willing to hand to getaddrinfo(3).
fn valid_domain(name: &[u8]) -> Result<String, Error> {
    if name.is_empty() || name.len() > 255 || name.contains(&0) {
        return Err(Error::InvalidDomain);
    }
    String::from_utf8(name.to_vec()).map_err(|_| Error::InvalidDomain)
}

/// Which METHOD to answer a greeting with (RFC 1928 §3). With credentials
/// configured only `0x02` is acceptable; without, only `0x00`.
pub fn choose_method(offered: &[u8], credentials_required: bool) -> u8 {
    let wanted = if credentials_required {
        METHOD_USER_PASS
    } else {
        METHOD_NO_AUTH
    };
    if offered.contains(&wanted) {
        wanted
    } else {
        METHOD_NO_ACCEPTABLE
    }
}

/// Compares two byte strings without stopping at the first difference, so
/// the time taken does not tell an attacker how many leading bytes were
/// right. (It does depend on the length of `given`, which they chose anyway.)
fn eq_no_early_exit(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, &g) in given.iter().enumerate() {
        diff |= g ^ expected.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(diff) == 0
}

// ---------------------------------------------------------------------------
// Reply encoding (RFC 1928 §6)
// ---------------------------------------------------------------------------

/// An encoded reply, kept in a small array (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedReply {
    buf: [u8; MAX_ENCODED_REPLY_LEN],
    len: usize,
}

impl EncodedReply {
    /// The bytes to send.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&self.buf)
    }
}

impl AsRef<[u8]> for EncodedReply {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Encodes `VER=5 REP RSV=0 ATYP BND.ADDR BND.PORT`. `bnd` is the relay's
/// local address of the upstream socket (getsockname), or [`UNSPECIFIED_BND`]
/// when there is none. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
/// dual-stack socket reports) is sent as plain IPv4 (ATYP 1).
pub fn encode_reply(rep: Reply, bnd: SocketAddr) -> EncodedReply {
    let mut buf = [0u8; MAX_ENCODED_REPLY_LEN];
    let port = bnd.port().to_be_bytes();
    let len = match bnd.ip().to_canonical() {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            let msg = [
                VERSION,
                rep.code(),
                0,
                ATYP_IPV4,
                a,
                b,
                c,
                d,
                port[0],
                port[1],
            ];
            buf[..msg.len()].copy_from_slice(&msg);
            msg.len()
        }
        IpAddr::V6(ip) => {
            buf[..4].copy_from_slice(&[VERSION, rep.code(), 0, ATYP_IPV6]);
            buf[4..20].copy_from_slice(&ip.octets());
            buf[20..22].copy_from_slice(&port);
            22
        }
    };
    EncodedReply { buf, len }
}

/// Encodes an error reply, with BND = 0.0.0.0:0.
pub fn encode_error_reply(rep: Reply) -> EncodedReply {
    encode_reply(rep, UNSPECIFIED_BND)
}

// ---------------------------------------------------------------------------
// The server-side handshake state machine
// ---------------------------------------------------------------------------

/// Where a [`Handshake`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for `VER NMETHODS METHODS`.
    Greeting,
    /// Method `0x02` chosen; waiting for the RFC 1929 request.
    Auth,
    /// Waiting for `VER CMD RSV ATYP ADDR PORT`.
    Request,
    /// [`Step::Connect`] was returned; the relay takes over.
    Done,
    /// [`Step::Close`] was returned.
    Closed,
}

/// Why the handshake ended with [`Step::Close`] (for log lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Malformed input. For [`Error::UnsupportedAddressType`] a `0x08` reply
    /// and for [`Error::InvalidDomain`] a `0x04` reply was appended; for a bad
    /// version byte nothing was.
    Protocol(Error),
    /// No offered method was acceptable; `[5, 0xFF]` was appended.
    NoAcceptableMethod,
    /// Wrong username or password; `[1, 1]` was appended.
    AuthFailed,
    /// A well-formed request with a command other than CONNECT; a `0x07`
    /// reply was appended. Holds the CMD byte.
    CommandNotSupported(u8),
    /// `feed` was called after the handshake had already finished.
    AlreadyFinished,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Protocol(e) => write!(f, "protocol error: {e}"),
            CloseReason::NoAcceptableMethod => f.write_str("no acceptable authentication method"),
            CloseReason::AuthFailed => f.write_str("authentication failed"),
            CloseReason::CommandNotSupported(c) => write!(f, "command 0x{c:02x} not supported"),
            CloseReason::AlreadyFinished => f.write_str("handshake already finished"),
        }
    }
}

/// What the relay should do after [`Handshake::feed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// All input was used (some of it may be buffered); read more.
    NeedMore,
    /// Connect to `target`. `input[consumed..]` is early payload for it.
    /// Then send [`encode_reply`] — success or an error code.
    Connect { target: Target, consumed: usize },
    /// A UDP ASSOCIATE (RFC 1928 §7), returned only by a handshake made with
    /// [`Handshake::udp_associate`]: `target` is where the client says it will
    /// send from (zeros if it does not know). Answer with [`encode_reply`]
    /// (BND = the relay's UDP address) and keep the connection open: the
    /// association lives as long as it.
    Associate { target: Target, consumed: usize },
    /// Send whatever was appended to `out`, then close.
    Close(CloseReason),
}

/// The server side of one SOCKS5 handshake. See the module docs.
pub struct Handshake {
    state: State,
    credentials: Option<(Vec<u8>, Vec<u8>)>,
    /// This client may skip the password (microsocks' `-w`/`-1`): `0x00` is accepted too.
    whitelisted: bool,
    /// The RFC 1929 login succeeded.
    logged_in: bool,
    /// UDP ASSOCIATE is answered with [`Step::Associate`] instead of `0x07`.
    udp_associate: bool,
    /// The part of a message received so far. Fixed size: the bound on
    /// buffering is in the type, not in a check someone could forget.
    buf: [u8; MAX_MESSAGE_LEN],
    len: usize,
}

/// One complete message, as the machine understood it.
enum Event {
    Method(u8),
    Auth(bool),
    Request(Request),
}

impl Handshake {
    /// `credentials = Some((username, password))` requires RFC 1929 auth
    /// (only method `0x02` is then accepted); `None` requires method `0x00`.
    /// Credentials longer than 255 bytes can never match.
    pub fn new(credentials: Option<(Vec<u8>, Vec<u8>)>) -> Handshake {
        Handshake {
            state: State::Greeting,
            credentials,
            whitelisted: false,
            logged_in: false,
            udp_associate: false,
            buf: [0; MAX_MESSAGE_LEN],
            len: 0,
        }
    }

    /// A client on the whitelist ([`crate::whitelist`]): with credentials configured, a
    /// greeting that offers `0x00` gets `0x00`, no password asked.
    pub fn whitelisted(mut self, yes: bool) -> Handshake {
        self.whitelisted = yes;
        self
    }

    /// The caller implements UDP ASSOCIATE: such a request ends the handshake with
    /// [`Step::Associate`] (without it, `0x07`).
    pub fn udp_associate(mut self, yes: bool) -> Handshake {
        self.udp_associate = yes;
        self
    }

    /// Whether this client logged in with the right username and password (for auth-once).
    pub fn logged_in(&self) -> bool {
        self.logged_in
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// How many bytes of an incomplete message are held (≤ [`MAX_MESSAGE_LEN`]).
    pub fn buffered(&self) -> usize {
        self.len
    }

    /// Feeds bytes received from the client. Appends any bytes to send to
    /// `out` and says what to do next. Never panics, whatever `input` is.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        if matches!(self.state, State::Done | State::Closed) {
            return Step::Close(CloseReason::AlreadyFinished);
        }
        let mut pos = 0; // bytes of `input` used by complete messages
        loop {
            // Top up the buffer with as much as fits. Invariant: `len` bytes
            // are an incomplete message, so `len < MAX_MESSAGE_LEN`.
            let rest = input.get(pos..).unwrap_or_default();
            let old = self.len;
            let take = rest.len().min(MAX_MESSAGE_LEN - old);
            let avail = old + take;
            self.buf[old..avail].copy_from_slice(&rest[..take]);

            let parsed = self.understand(&self.buf[..avail]);
            // The bytes seen this round may include a password: wipe them
            // unless they stay buffered as an incomplete message.
            let keep = if matches!(parsed, Ok(None)) { avail } else { 0 };
            self.buf[keep..avail].fill(0);

            let (event, used) = match parsed {
                Ok(None) if take == rest.len() => {
                    self.len = avail;
                    return Step::NeedMore;
                }
                Ok(None) => {
                    // Unreachable: a full buffer always holds a whole
                    // message. Refuse rather than drop bytes silently.
                    debug_assert!(take == rest.len(), "full buffer, incomplete message");
                    return self.close(CloseReason::Protocol(Error::TooLong));
                }
                Err(e) => {
                    let reply = match e {
                        Error::UnsupportedAddressType(_) => Some(Reply::AddressTypeNotSupported),
                        Error::InvalidDomain => Some(Reply::HostUnreachable),
                        _ => None, // not our protocol: say nothing
                    };
                    if let Some(rep) = reply {
                        out.extend_from_slice(encode_error_reply(rep).as_bytes());
                    }
                    return self.close(CloseReason::Protocol(e));
                }
                Ok(Some(complete)) => complete,
            };
            // The message started with `old` buffered bytes; the rest of it
            // came from `input`.
            pos += used.saturating_sub(old);
            self.len = 0;

            match event {
                Event::Method(method) => {
                    out.extend_from_slice(&[VERSION, method]);
                    self.state = match method {
                        METHOD_NO_AUTH => State::Request,
                        METHOD_USER_PASS => State::Auth,
                        _ => return self.close(CloseReason::NoAcceptableMethod),
                    };
                }
                Event::Auth(ok) => {
                    out.extend_from_slice(&[AUTH_VERSION, u8::from(!ok)]);
                    if !ok {
                        return self.close(CloseReason::AuthFailed);
                    }
                    self.logged_in = true;
                    self.state = State::Request;
                }
                Event::Request(Request {
                    command: Command::Connect,
                    target,
                }) => {
                    self.state = State::Done;
                    return Step::Connect {
                        target,
                        consumed: pos,
                    };
                }
                Event::Request(Request {
                    command: Command::UdpAssociate,
                    target,
                }) if self.udp_associate => {
                    self.state = State::Done;
                    return Step::Associate {
                        target,
                        consumed: pos,
                    };
                }
                Event::Request(Request { command, .. }) => {
                    out.extend_from_slice(
                        encode_error_reply(Reply::CommandNotSupported).as_bytes(),
                    );
                    return self.close(CloseReason::CommandNotSupported(command.code()));
                }
            }
        }
    }

    /// Parses the message expected in the current state and judges it.
    fn understand(&self, msg: &[u8]) -> Result<Option<(Event, usize)>, Error> {
        Ok(match self.state {
            State::Greeting => parse_greeting(msg)?.map(|(g, used)| {
                let required = self.credentials.is_some();
                let method = match choose_method(g.methods, required) {
                    // Whitelisted: no password, if the client offers to go without.
                    _ if self.whitelisted && g.methods.contains(&METHOD_NO_AUTH) => METHOD_NO_AUTH,
                    method => method,
                };
                (Event::Method(method), used)
            }),
            State::Auth => parse_auth(msg)?.map(|(a, used)| {
                let ok = match &self.credentials {
                    // `&`, not `&&`: always compare both.
                    Some((user, pass)) => {
                        eq_no_early_exit(a.username, user) & eq_no_early_exit(a.password, pass)
                    }
                    None => false,
                };
                (Event::Auth(ok), used)
            }),
            State::Request => parse_request(msg)?.map(|(r, used)| (Event::Request(r), used)),
            State::Done | State::Closed => None,
        })
    }

    fn close(&mut self, reason: CloseReason) -> Step {
        self.state = State::Closed;
        self.len = 0;
        Step::Close(reason)
    }
}

impl fmt::Debug for Handshake {
    // Hand-written so that credentials never end up in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("state", &self.state)
            .field("auth_required", &self.credentials.is_some())
            .field("buffered", &self.len)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// The client side, for tests and benchmarks
// ---------------------------------------------------------------------------

/// Encoders for what a SOCKS5 client sends and incremental parsers for what
/// a server answers. Same conventions as the server-side parsers.
pub mod client {
    use super::{
        parse_address, Command, Error, Reply, Target, ATYP_DOMAIN, ATYP_IPV4, ATYP_IPV6,
        AUTH_VERSION, VERSION,
    };
    use std::net::SocketAddr;

    /// `VER NMETHODS METHODS...`. At most 255 methods.
    pub fn greeting(methods: &[u8]) -> Result<Vec<u8>, Error> {
        let n = u8::try_from(methods.len()).map_err(|_| Error::TooLong)?;
        let mut msg = vec![VERSION, n];
        msg.extend_from_slice(methods);
        Ok(msg)
    }

    /// Parses the server's `VER METHOD` answer to the greeting.
    pub fn parse_method_selection(buf: &[u8]) -> Result<Option<(u8, usize)>, Error> {
        match *buf {
            [] => Ok(None),
            [ver, ..] if ver != VERSION => Err(Error::BadVersion(ver)),
            [_] => Ok(None),
            [_, method, ..] => Ok(Some((method, 2))),
        }
    }

    /// RFC 1929 `VER ULEN UNAME PLEN PASSWD`. Each field at most 255 bytes
    /// (empty fields are encoded as given, to let tests exercise servers).
    pub fn auth(username: &[u8], password: &[u8]) -> Result<Vec<u8>, Error> {
        let ulen = u8::try_from(username.len()).map_err(|_| Error::TooLong)?;
        let plen = u8::try_from(password.len()).map_err(|_| Error::TooLong)?;
        let mut msg = Vec::with_capacity(3 + username.len() + password.len());
        msg.extend_from_slice(&[AUTH_VERSION, ulen]);
        msg.extend_from_slice(username);
        msg.push(plen);
        msg.extend_from_slice(password);
        Ok(msg)
    }

    /// Parses the RFC 1929 `VER STATUS` answer: `true` means accepted.
    pub fn parse_auth_reply(buf: &[u8]) -> Result<Option<(bool, usize)>, Error> {
        match *buf {
            [] => Ok(None),
            [ver, ..] if ver != AUTH_VERSION => Err(Error::BadAuthVersion(ver)),
            [_] => Ok(None),
            [_, status, ..] => Ok(Some((status == 0, 2))),
        }
    }

    /// `VER CMD RSV=0 ATYP DST.ADDR DST.PORT` for any command. A domain
    /// must be 1..=255 bytes without NUL.
    pub fn request(command: Command, target: &Target) -> Result<Vec<u8>, Error> {
        let mut msg = vec![VERSION, command.code(), 0];
        match target {
            Target::Ip(SocketAddr::V4(a)) => {
                msg.push(ATYP_IPV4);
                msg.extend_from_slice(&a.ip().octets());
            }
            Target::Ip(SocketAddr::V6(a)) => {
                msg.push(ATYP_IPV6);
                msg.extend_from_slice(&a.ip().octets());
            }
            Target::Domain(name, _) => {
                let len = u8::try_from(name.len()).map_err(|_| Error::TooLong)?;
                if len == 0 || name.as_bytes().contains(&0) {
                    return Err(Error::InvalidDomain);
                }
                msg.extend_from_slice(&[ATYP_DOMAIN, len]);
                msg.extend_from_slice(name.as_bytes());
            }
        }
        msg.extend_from_slice(&target.port().to_be_bytes());
        Ok(msg)
    }

    /// A CONNECT request.
    pub fn connect_request(target: &Target) -> Result<Vec<u8>, Error> {
        request(Command::Connect, target)
    }

    /// Parses `VER REP RSV ATYP BND.ADDR BND.PORT`: the reply code, the
    /// bound address (which a server may send as a domain) and the bytes used.
    pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, Target, usize)>, Error> {
        let Some(&ver) = buf.first() else {
            return Ok(None);
        };
        if ver != VERSION {
            return Err(Error::BadVersion(ver));
        }
        let Some(&code) = buf.get(1) else {
            return Ok(None);
        };
        let rep = Reply::from_code(code).ok_or(Error::UnknownReply(code))?;
        let Some(address) = buf.get(3..) else {
            return Ok(None);
        };
        Ok(parse_address(address)?.map(|(bnd, used)| (rep, bnd, 3 + used)))
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn creds() -> Option<(Vec<u8>, Vec<u8>)> {
        Some((b"alice".to_vec(), b"s3cret".to_vec()))
    }

    /// Feeds `input` in one call to a fresh machine.
    fn run(credentials: Option<(Vec<u8>, Vec<u8>)>, input: &[u8]) -> (Vec<u8>, Step, Handshake) {
        let mut hs = Handshake::new(credentials);
        let mut out = Vec::new();
        let step = hs.feed(input, &mut out);
        (out, step, hs)
    }

    fn v4(a: [u8; 4], port: u16) -> Target {
        Target::Ip(SocketAddr::from((a, port)))
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    const GREET_NO_AUTH: &[u8] = &[5, 1, 0];
    const REQ_V4: &[u8] = &[5, 1, 0, 1, 10, 0, 0, 1, 0x1f, 0x90]; // 10.0.0.1:8080

    // --- greeting ---------------------------------------------------------

    #[test]
    fn greeting_picks_no_auth() {
        let (out, step, hs) = run(None, &[5, 2, 2, 0]);
        assert_eq!(out, [5, 0]);
        assert_eq!(step, Step::NeedMore);
        assert_eq!(hs.state(), State::Request);
    }

    #[test]
    fn greeting_only_user_pass_without_credentials_is_refused() {
        let (out, step, hs) = run(None, &[5, 1, 2]);
        assert_eq!(out, [5, 0xFF]);
        assert_eq!(step, Step::Close(CloseReason::NoAcceptableMethod));
        assert_eq!(hs.state(), State::Closed);
    }

    #[test]
    fn greeting_with_credentials_picks_user_pass() {
        let (out, step, hs) = run(creds(), &[5, 2, 0, 2]);
        assert_eq!(out, [5, 2]);
        assert_eq!(step, Step::NeedMore);
        assert_eq!(hs.state(), State::Auth);
    }

    #[test]
    fn greeting_with_credentials_refuses_no_auth() {
        let (out, step, _) = run(creds(), &[5, 1, 0]);
        assert_eq!(out, [5, 0xFF]);
        assert_eq!(step, Step::Close(CloseReason::NoAcceptableMethod));
    }

    #[test]
    fn greeting_with_zero_methods_gets_ff() {
        let (out, step, _) = run(None, &[5, 0]);
        assert_eq!(out, [5, 0xFF]);
        assert_eq!(step, Step::Close(CloseReason::NoAcceptableMethod));
    }

    #[test]
    fn greeting_incomplete_needs_more() {
        let (out, step, hs) = run(None, &[5, 3, 1, 2]);
        assert!(out.is_empty());
        assert_eq!(step, Step::NeedMore);
        assert_eq!(hs.buffered(), 4);
        assert_eq!(parse_greeting(&[5, 3, 1, 2]), Ok(None));
        assert_eq!(parse_greeting(&[]), Ok(None));
    }

    #[test]
    fn bad_version_closes_silently() {
        let (out, step, _) = run(None, &[4, 1, 0]);
        assert!(out.is_empty());
        assert_eq!(
            step,
            Step::Close(CloseReason::Protocol(Error::BadVersion(4)))
        );
        // Even the very first byte is enough to know.
        let (out, step, _) = run(None, b"G");
        assert!(out.is_empty());
        assert_eq!(
            step,
            Step::Close(CloseReason::Protocol(Error::BadVersion(b'G')))
        );
    }

    #[test]
    fn bad_request_version_closes_silently() {
        let (out, step, _) = run(None, &cat(&[GREET_NO_AUTH, &[4, 1, 0, 1]]));
        assert_eq!(out, [5, 0]); // only the method selection
        assert_eq!(
            step,
            Step::Close(CloseReason::Protocol(Error::BadVersion(4)))
        );
    }

    // --- RFC 1929 ---------------------------------------------------------

    #[test]
    fn auth_right_credentials() {
        let input = cat(&[&[5, 1, 2], &client::auth(b"alice", b"s3cret").unwrap()]);
        let (out, step, hs) = run(creds(), &input);
        assert_eq!(out, [5, 2, 1, 0]);
        assert_eq!(step, Step::NeedMore);
        assert_eq!(hs.state(), State::Request);
    }

    #[test]
    fn auth_wrong_credentials() {
        for (user, pass) in [
            (&b"alice"[..], &b"s3creT"[..]),
            (b"alicE", b"s3cret"),
            (b"alice", b"s3cret!"),
            (b"alic", b"s3cret"),
            (b"", b""),
        ] {
            let input = cat(&[&[5, 1, 2], &client::auth(user, pass).unwrap(), REQ_V4]);
            let (out, step, hs) = run(creds(), &input);
            assert_eq!(out, [5, 2, 1, 1], "{user:?}/{pass:?}");
            assert_eq!(step, Step::Close(CloseReason::AuthFailed));
            assert_eq!(hs.state(), State::Closed);
        }
    }

    #[test]
    fn auth_bad_version_closes_silently() {
        let (out, step, _) = run(creds(), &[5, 1, 2, 5, 1, b'a', 1, b'b']);
        assert_eq!(out, [5, 2]);
        assert_eq!(
            step,
            Step::Close(CloseReason::Protocol(Error::BadAuthVersion(5)))
        );
    }

    #[test]
    fn auth_parser_is_incremental() {
        let msg = client::auth(b"bob", b"pw").unwrap();
        for cut in 0..msg.len() {
            assert_eq!(parse_auth(&msg[..cut]), Ok(None), "cut {cut}");
        }
        let (a, used) = parse_auth(&msg).unwrap().unwrap();
        assert_eq!(
            (a.username, a.password, used),
            (&b"bob"[..], &b"pw"[..], msg.len())
        );
        assert!(!format!("{a:?}").contains("pw"));
    }

    #[test]
    fn longest_auth_fits_the_buffer() {
        let user = vec![b'u'; 255];
        let pass = vec![b'p'; 255];
        let msg = client::auth(&user, &pass).unwrap();
        assert_eq!(msg.len(), MAX_AUTH_LEN);
        let input = cat(&[&[5, 1, 2], &msg, REQ_V4, b"tail"]);
        let mut hs = Handshake::new(Some((user, pass)));
        let mut out = Vec::new();
        for (i, b) in input.iter().enumerate() {
            let step = hs.feed(std::slice::from_ref(b), &mut out);
            assert!(hs.buffered() <= MAX_MESSAGE_LEN);
            if let Step::Connect { consumed, .. } = step {
                assert_eq!(consumed, 1);
                assert_eq!(&input[i + 1..], b"tail");
                break;
            }
        }
        assert_eq!(out, [5, 2, 1, 0]);
        assert_eq!(hs.state(), State::Done);
    }

    #[test]
    fn whitelisted_client_skips_the_password_only_if_it_offers_to() {
        let creds = || Some((b"u".to_vec(), b"p".to_vec()));
        let mut out = Vec::new();
        // Offers 0x00 (and 0x02): no password asked.
        let mut hs = Handshake::new(creds()).whitelisted(true);
        let step = hs.feed(&cat(&[&[5, 2, 2, 0], REQ_V4]), &mut out);
        assert_eq!(out, [5, 0]);
        assert!(matches!(step, Step::Connect { .. }));
        assert!(!hs.logged_in());
        // Offers only 0x02: it logs in as anyone else.
        out.clear();
        let mut hs = Handshake::new(creds()).whitelisted(true);
        let auth = client::auth(b"u", b"p").unwrap();
        let step = hs.feed(&cat(&[&[5, 1, 2], &auth, REQ_V4]), &mut out);
        assert_eq!(out, [5, 2, 1, 0]);
        assert!(matches!(step, Step::Connect { .. }));
        assert!(hs.logged_in());
        // Not whitelisted: 0x00 alone is refused.
        out.clear();
        let mut hs = Handshake::new(creds());
        assert_eq!(
            hs.feed(&[5, 1, 0], &mut out),
            Step::Close(CloseReason::NoAcceptableMethod)
        );
        assert_eq!(out, [5, 0xFF]);
    }

    // --- requests -----------------------------------------------------------

    #[test]
    fn request_ipv4() {
        let (out, step, hs) = run(None, &cat(&[GREET_NO_AUTH, REQ_V4]));
        assert_eq!(out, [5, 0]);
        assert_eq!(
            step,
            Step::Connect {
                target: v4([10, 0, 0, 1], 8080),
                consumed: 13
            }
        );
        assert_eq!(hs.state(), State::Done);
    }

    #[test]
    fn request_domain() {
        let req = [&[5u8, 1, 0, 3, 11][..], b"example.com", &[0, 80]].concat();
        let (_, step, _) = run(None, &cat(&[GREET_NO_AUTH, &req]));
        let target = Target::Domain("example.com".into(), 80);
        assert_eq!(
            step,
            Step::Connect {
                target,
                consumed: 3 + req.len()
            }
        );
    }

    #[test]
    fn request_ipv6() {
        let mut req = vec![5, 1, 0, 4];
        req.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        req.extend_from_slice(&443u16.to_be_bytes());
        let (_, step, _) = run(None, &cat(&[GREET_NO_AUTH, &req]));
        let target = Target::Ip("[::1]:443".parse().unwrap());
        assert_eq!(
            step,
            Step::Connect {
                target,
                consumed: 3 + 22
            }
        );
    }

    #[test]
    fn request_nonzero_rsv_is_accepted() {
        let (_, step, _) = run(
            None,
            &cat(&[GREET_NO_AUTH, &[5, 1, 0xAA, 1, 1, 2, 3, 4, 0, 1]]),
        );
        assert_eq!(
            step,
            Step::Connect {
                target: v4([1, 2, 3, 4], 1),
                consumed: 13
            }
        );
    }

    #[test]
    fn zero_length_domain_gets_host_unreachable() {
        let req = [5, 1, 0, 3, 0, 0, 80];
        // Not judged before the whole message is there.
        let (out, step, _) = run(None, &cat(&[GREET_NO_AUTH, &req[..6]]));
        assert_eq!((out.as_slice(), step), (&[5u8, 0][..], Step::NeedMore));
        let (out, step, _) = run(None, &cat(&[GREET_NO_AUTH, &req]));
        assert_eq!(
            out,
            [&[5u8, 0][..], &[5, 4, 0, 1, 0, 0, 0, 0, 0, 0]].concat()
        );
        assert_eq!(
            step,
            Step::Close(CloseReason::Protocol(Error::InvalidDomain))
        );
    }

    #[test]
    fn domain_with_nul_or_bad_utf8_is_refused() {
        for name in [&b"a\0b"[..], &[0xff, 0xfe], &[b'x', 0xc3]] {
            let req = [&[5, 1, 0, 3, name.len() as u8][..], name, &[0, 80]].concat();
            let (out, step, _) = run(None, &cat(&[GREET_NO_AUTH, &req]));
            assert_eq!(out[2..], [5, 4, 0, 1, 0, 0, 0, 0, 0, 0]);
            assert_eq!(
                step,
                Step::Close(CloseReason::Protocol(Error::InvalidDomain))
            );
        }
        // Non-ASCII UTF-8 is fine (getaddrinfo gets the bytes as they are).
        let name = "bücher.example".as_bytes();
        let req = [&[5, 1, 0, 3, name.len() as u8][..], name, &[0, 80]].concat();
        let (_, step, _) = run(None, &cat(&[GREET_NO_AUTH, &req]));
        assert!(matches!(
            step,
            Step::Connect {
                target: Target::Domain(..),
                ..
            }
        ));
    }

    #[test]
    fn udp_associate_only_when_asked() {
        let req = [5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0, b'x'];
        let mut out = Vec::new();
        let step = Handshake::new(None)
            .udp_associate(true)
            .feed(&req, &mut out);
        let zeros = Target::Ip(SocketAddr::from(([0, 0, 0, 0], 0)));
        let want = Step::Associate {
            target: zeros,
            consumed: 13,
        };
        assert_eq!((step, out), (want, vec![5, 0]));
        let mut out = Vec::new();
        let step = Handshake::new(None).feed(&req, &mut out);
        assert_eq!(step, Step::Close(CloseReason::CommandNotSupported(3)));
        assert_eq!(out[2..4], [5, 7]);
    }

    #[test]
    fn bind_and_udp_get_command_not_supported_after_whole_message() {
        for cmd in [2u8, 3, 0, 9, 0xff] {
            let req = [5, cmd, 0, 1, 127, 0, 0, 1, 0, 80];
            // One byte short: nothing is answered yet.
            let (out, step, _) = run(None, &cat(&[GREET_NO_AUTH, &req[..req.len() - 1]]));
            assert_eq!((out.as_slice(), step), (&[5u8, 0][..], Step::NeedMore));
            let (out, step, _) = run(None, &cat(&[GREET_NO_AUTH, &req, b"junk"]));
            assert_eq!(out, [5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
            assert_eq!(step, Step::Close(CloseReason::CommandNotSupported(cmd)));
        }
    }

    #[test]
    fn unknown_atyp_gets_08_at_once() {
        let (out, step, hs) = run(None, &cat(&[GREET_NO_AUTH, &[5, 1, 0, 5]]));
        assert_eq!(out, [5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            step,
            Step::Close(CloseReason::Protocol(Error::UnsupportedAddressType(5)))
        );
        assert_eq!(hs.state(), State::Closed);
        // Also for BIND: the address is judged first.
        let (out, _, _) = run(None, &cat(&[GREET_NO_AUTH, &[5, 2, 0, 0]]));
        assert_eq!(out[2..4], [5, 8]);
    }

    #[test]
    fn coalesced_greeting_auth_request_payload() {
        let payload = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
        let target = Target::Domain("example.com".into(), 80);
        let input = cat(&[
            &client::greeting(&[0, 2]).unwrap(),
            &client::auth(b"alice", b"s3cret").unwrap(),
            &client::connect_request(&target).unwrap(),
            payload,
        ]);
        let (out, step, _) = run(creds(), &input);
        assert_eq!(out, [5, 2, 1, 0]);
        let Step::Connect {
            target: got,
            consumed,
        } = step
        else {
            panic!("{step:?}")
        };
        assert_eq!(got, target);
        assert_eq!(&input[consumed..], payload);

        // Without auth: greeting + request + payload in one segment.
        let input = cat(&[GREET_NO_AUTH, REQ_V4, payload]);
        let (_, step, _) = run(None, &input);
        assert_eq!(
            step,
            Step::Connect {
                target: v4([10, 0, 0, 1], 8080),
                consumed: 13
            }
        );
    }

    #[test]
    fn request_split_across_feeds_reports_consumed_of_last_feed() {
        let mut hs = Handshake::new(None);
        let mut out = Vec::new();
        assert_eq!(
            hs.feed(&[5, 1, 0, 5, 1, 0, 1, 10], &mut out),
            Step::NeedMore
        );
        assert_eq!(hs.buffered(), 5);
        let step = hs.feed(&[0, 0, 1, 0x1f, 0x90, b'x', b'y'], &mut out);
        assert_eq!(
            step,
            Step::Connect {
                target: v4([10, 0, 0, 1], 8080),
                consumed: 5
            }
        );
        assert_eq!(hs.buffered(), 0);
        assert_eq!(out, [5, 0]);
    }

    #[test]
    fn feeding_after_the_end_does_nothing() {
        let (_, _, mut hs) = run(None, &cat(&[GREET_NO_AUTH, REQ_V4]));
        let mut out = Vec::new();
        assert_eq!(
            hs.feed(b"more", &mut out),
            Step::Close(CloseReason::AlreadyFinished)
        );
        assert!(out.is_empty());
        let (_, _, mut hs) = run(None, &[9]);
        assert_eq!(
            hs.feed(&[5, 1, 0], &mut out),
            Step::Close(CloseReason::AlreadyFinished)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn empty_feed_needs_more() {
        let mut hs = Handshake::new(None);
        let mut out = Vec::new();
        assert_eq!(hs.feed(&[], &mut out), Step::NeedMore);
        assert_eq!(hs.state(), State::Greeting);
    }

    #[test]
    fn debug_hides_credentials() {
        let hs = Handshake::new(creds());
        let text = format!("{hs:?}");
        assert!(
            !text.contains("s3cret") && !text.contains("alice"),
            "{text}"
        );
    }

    #[test]
    fn no_early_exit_compare_is_correct() {
        assert!(eq_no_early_exit(b"", b""));
        assert!(eq_no_early_exit(b"abc", b"abc"));
        assert!(!eq_no_early_exit(b"abc", b"abd"));
        assert!(!eq_no_early_exit(b"ab", b"abc"));
        assert!(!eq_no_early_exit(b"abc", b"ab"));
        assert!(!eq_no_early_exit(b"ab\0", b"ab"));
        assert!(!eq_no_early_exit(b"", b"a"));
    }

    // --- replies ------------------------------------------------------------

    #[test]
    fn reply_ipv4() {
        let r = encode_reply(Reply::Succeeded, "192.168.1.2:5000".parse().unwrap());
        assert_eq!(r.as_bytes(), [5, 0, 0, 1, 192, 168, 1, 2, 0x13, 0x88]);
    }

    #[test]
    fn reply_ipv6() {
        let r = encode_reply(Reply::Succeeded, "[2001:db8::1]:443".parse().unwrap());
        let mut want = vec![5, 0, 0, 4, 0x20, 0x01, 0x0d, 0xb8];
        want.extend_from_slice(&[0; 11]);
        want.extend_from_slice(&[1, 1, 0xbb]);
        assert_eq!(r.as_bytes(), want);
        assert_eq!(r.as_bytes().len(), MAX_ENCODED_REPLY_LEN);
    }

    #[test]
    fn reply_ipv4_mapped_is_sent_as_ipv4() {
        let r = encode_reply(Reply::Succeeded, "[::ffff:10.1.2.3]:80".parse().unwrap());
        assert_eq!(r.as_ref(), [5, 0, 0, 1, 10, 1, 2, 3, 0, 80]);
        // ::1 is not mapped and stays IPv6.
        let r = encode_reply(Reply::Succeeded, "[::1]:80".parse().unwrap());
        assert_eq!(r.as_bytes()[3], ATYP_IPV6);
    }

    #[test]
    fn error_reply_has_zero_bnd() {
        let r = encode_error_reply(Reply::ConnectionRefused);
        assert_eq!(r.as_bytes(), [5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn connect_errors_map_to_replies() {
        // Linux's numbers: ECONNREFUSED 111, ENETUNREACH 101, EHOSTUNREACH 113, ETIMEDOUT 110.
        let reply = |errno| Reply::from_io_error(&io::Error::from_raw_os_error(errno));
        assert_eq!(reply(111), Reply::ConnectionRefused);
        assert_eq!(reply(101), Reply::NetworkUnreachable);
        assert_eq!(reply(113), Reply::HostUnreachable);
        assert_eq!(reply(110), Reply::TtlExpired);
        for other in [0, 1, 2, 4, 11, 22, 104, 112, -1, i32::MAX, i32::MIN] {
            assert_eq!(reply(other), Reply::GeneralFailure, "{other}");
        }
        let e = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(Reply::from_io_error(&e), Reply::TtlExpired);
        let e = io::Error::other("boom");
        assert_eq!(Reply::from_io_error(&e), Reply::GeneralFailure);
    }

    #[test]
    fn reply_codes_round_trip_and_describe() {
        let mut seen = std::collections::HashSet::new();
        for code in 0..=8u8 {
            let rep = Reply::from_code(code).unwrap();
            assert_eq!(rep.code(), code);
            assert!(seen.insert(rep.describe()));
            assert!(rep.to_string().contains(&format!("0x{code:02x}")));
        }
        assert_eq!(Reply::from_code(9), None);
        assert_eq!(Reply::HostUnreachable.code(), 4);
        assert_eq!(Reply::NotAllowed.code(), 2);
    }

    #[test]
    fn displays_are_not_empty() {
        let errors = [
            Error::BadVersion(4),
            Error::BadAuthVersion(2),
            Error::UnsupportedAddressType(9),
            Error::InvalidDomain,
            Error::UnknownReply(9),
            Error::TooLong,
        ];
        for e in errors {
            assert!(!e.to_string().is_empty());
            assert!(!CloseReason::Protocol(e).to_string().is_empty());
        }
        assert_eq!(v4([1, 2, 3, 4], 5).to_string(), "1.2.3.4:5");
        assert_eq!(Target::Domain("a.b".into(), 7).to_string(), "a.b:7");
    }

    // --- client helpers -------------------------------------------------------

    /// A whole client conversation against the server machine.
    fn client_round_trip(credentials: Option<(Vec<u8>, Vec<u8>)>, target: Target) {
        let mut hs = Handshake::new(credentials.clone());
        let mut from_server = Vec::new();

        let methods: &[u8] = if credentials.is_some() { &[0, 2] } else { &[0] };
        assert_eq!(
            hs.feed(&client::greeting(methods).unwrap(), &mut from_server),
            Step::NeedMore
        );
        let (method, used) = client::parse_method_selection(&from_server)
            .unwrap()
            .unwrap();
        from_server.drain(..used);

        if let Some((user, pass)) = &credentials {
            assert_eq!(method, METHOD_USER_PASS);
            let step = hs.feed(&client::auth(user, pass).unwrap(), &mut from_server);
            assert_eq!(step, Step::NeedMore);
            let (ok, used) = client::parse_auth_reply(&from_server).unwrap().unwrap();
            assert!(ok);
            from_server.drain(..used);
        } else {
            assert_eq!(method, METHOD_NO_AUTH);
        }

        let step = hs.feed(&client::connect_request(&target).unwrap(), &mut from_server);
        let Step::Connect { target: got, .. } = step else {
            panic!("{step:?}")
        };
        assert_eq!(got, target);
        assert!(from_server.is_empty());

        let bnd: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
        let reply = encode_reply(Reply::Succeeded, bnd);
        let parsed = client::parse_reply(reply.as_bytes()).unwrap();
        assert_eq!(
            parsed,
            Some((Reply::Succeeded, Target::Ip(bnd), reply.as_bytes().len()))
        );
    }

    #[test]
    fn client_helpers_round_trip() {
        for target in [
            v4([127, 0, 0, 1], 6379),
            Target::Ip("[fe80::1]:22".parse().unwrap()),
            Target::Domain("localhost".into(), 8080),
        ] {
            client_round_trip(None, target.clone());
            client_round_trip(creds(), target);
        }
    }

    #[test]
    fn client_parse_reply_is_incremental() {
        let bnd: SocketAddr = "10.9.8.7:65535".parse().unwrap();
        let reply = encode_reply(Reply::NotAllowed, bnd);
        let bytes = reply.as_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(client::parse_reply(&bytes[..cut]), Ok(None), "cut {cut}");
        }
        let with_data = cat(&[bytes, b"data"]);
        let (rep, got, used) = client::parse_reply(&with_data).unwrap().unwrap();
        assert_eq!(
            (rep, got, &with_data[used..]),
            (Reply::NotAllowed, Target::Ip(bnd), &b"data"[..])
        );
        // Servers may answer with a domain BND.
        let domain = [&[5, 0, 0, 3, 4][..], b"host", &[1, 0]].concat();
        let want = Some((
            Reply::Succeeded,
            Target::Domain("host".into(), 256),
            domain.len(),
        ));
        assert_eq!(client::parse_reply(&domain), Ok(want));
        assert_eq!(client::parse_reply(&[5, 9]), Err(Error::UnknownReply(9)));
        assert_eq!(client::parse_reply(&[4]), Err(Error::BadVersion(4)));
        assert_eq!(
            client::parse_reply(&[5, 0, 0, 7]),
            Err(Error::UnsupportedAddressType(7))
        );
    }

    #[test]
    fn client_small_parsers() {
        assert_eq!(client::parse_method_selection(&[]), Ok(None));
        assert_eq!(client::parse_method_selection(&[5]), Ok(None));
        assert_eq!(
            client::parse_method_selection(&[5, 0xff, 1]),
            Ok(Some((0xff, 2)))
        );
        assert_eq!(
            client::parse_method_selection(&[4]),
            Err(Error::BadVersion(4))
        );
        assert_eq!(client::parse_auth_reply(&[1]), Ok(None));
        assert_eq!(client::parse_auth_reply(&[1, 0]), Ok(Some((true, 2))));
        assert_eq!(client::parse_auth_reply(&[1, 1]), Ok(Some((false, 2))));
        assert_eq!(
            client::parse_auth_reply(&[5, 0]),
            Err(Error::BadAuthVersion(5))
        );
    }

    #[test]
    fn client_encoders_refuse_what_cannot_be_sent() {
        assert_eq!(client::greeting(&[0; 256]), Err(Error::TooLong));
        assert_eq!(client::greeting(&[]).unwrap(), [5, 0]);
        assert_eq!(client::auth(&[b'a'; 256], b"p"), Err(Error::TooLong));
        assert_eq!(client::auth(b"u", &[b'a'; 256]), Err(Error::TooLong));
        let long = Target::Domain("a".repeat(256), 1);
        assert_eq!(client::connect_request(&long), Err(Error::TooLong));
        let empty = Target::Domain(String::new(), 1);
        assert_eq!(client::connect_request(&empty), Err(Error::InvalidDomain));
        let nul = Target::Domain("a\0b".into(), 1);
        assert_eq!(client::connect_request(&nul), Err(Error::InvalidDomain));
        let max = Target::Domain("a".repeat(255), 1);
        assert_eq!(
            client::connect_request(&max).unwrap().len(),
            MAX_REQUEST_LEN
        );
        let bind = client::request(Command::Bind, &v4([0; 4], 0)).unwrap();
        assert_eq!(bind, [5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
    }

    // --- property tests -------------------------------------------------------

    fn arb_target() -> impl Strategy<Value = Target> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| v4(ip, port)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| Target::Ip(SocketAddr::from((Ipv6Addr::from(ip), port)))),
            // Printable ASCII, 1..=255 bytes (any non-NUL UTF-8 is legal).
            (prop::collection::vec(0x21u8..0x7f, 1..=255), any::<u16>()).prop_map(
                |(name, port)| Target::Domain(String::from_utf8(name).unwrap_or_default(), port)
            ),
        ]
    }

    fn arb_credentials() -> impl Strategy<Value = Option<(Vec<u8>, Vec<u8>)>> {
        prop::option::of((
            prop::collection::vec(any::<u8>(), 1..=255),
            prop::collection::vec(any::<u8>(), 1..=255),
        ))
    }

    /// The outcome of feeding a whole stream: bytes sent, final step with
    /// `consumed` turned into the leftover bytes, and the final state.
    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        out: Vec<u8>,
        step: Step,
        leftover: Vec<u8>,
        state: State,
    }

    /// Feeds `input` cut into pieces of the given sizes (cycled; a size of
    /// 0 means "feed an empty slice"), stopping at the first step that is not
    /// NeedMore, as a relay would. Checks the buffer bound after every call.
    fn feed_chunked(
        credentials: Option<(Vec<u8>, Vec<u8>)>,
        input: &[u8],
        sizes: &[usize],
    ) -> Outcome {
        let mut hs = Handshake::new(credentials);
        let mut out = Vec::new();
        let mut pos = 0;
        let mut sizes = sizes.iter().copied().cycle();
        loop {
            let size = sizes.next().unwrap_or(input.len());
            let end = (pos + size).min(input.len());
            let chunk = &input[pos..end];
            let step = hs.feed(chunk, &mut out);
            assert!(hs.buffered() <= MAX_MESSAGE_LEN);
            assert!(hs.buffered() < MAX_MESSAGE_LEN || step != Step::NeedMore);
            let leftover = match &step {
                Step::NeedMore if end < input.len() => {
                    pos = end;
                    continue;
                }
                Step::NeedMore => Vec::new(),
                Step::Connect { consumed, .. } | Step::Associate { consumed, .. } => {
                    assert!(*consumed <= chunk.len());
                    input[pos + consumed..].to_vec()
                }
                Step::Close(_) => Vec::new(),
            };
            let step = match step {
                Step::Connect { target, .. } => Step::Connect {
                    target,
                    consumed: 0,
                },
                other => other,
            };
            return Outcome {
                out,
                step,
                leftover,
                state: hs.state(),
            };
        }
    }

    fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(0usize..40, 1..50)
            .prop_filter("some progress", |v| v.iter().any(|&s| s > 0))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any chunking of a valid exchange, down to one byte per feed, gives
        /// the same replies, target and leftover payload as one big feed.
        #[test]
        fn chunking_is_invisible_for_valid_exchanges(
            credentials in arb_credentials(),
            target in arb_target(),
            payload in prop::collection::vec(any::<u8>(), 0..600),
            sizes in chunk_sizes(),
        ) {
            let mut input = Vec::new();
            let mut expected_out = Vec::new();
            if let Some((user, pass)) = &credentials {
                input.extend(client::greeting(&[0, 1, 2]).unwrap());
                input.extend(client::auth(user, pass).unwrap());
                expected_out.extend([5, 2, 1, 0]);
            } else {
                input.extend(client::greeting(&[0]).unwrap());
                expected_out.extend([5, 0]);
            }
            input.extend(client::connect_request(&target).unwrap());
            input.extend(&payload);

            let whole = feed_chunked(credentials.clone(), &input, &[input.len().max(1)]);
            prop_assert_eq!(&whole, &Outcome {
                out: expected_out,
                step: Step::Connect { target, consumed: 0 },
                leftover: payload,
                state: State::Done,
            });
            prop_assert_eq!(&feed_chunked(credentials.clone(), &input, &sizes), &whole);
            prop_assert_eq!(&feed_chunked(credentials, &input, &[1]), &whole);
        }

        /// Arbitrary bytes (often after a valid start, to get past VER):
        /// no panic, bounded buffer, and chunking still changes nothing.
        #[test]
        fn arbitrary_input_is_handled_the_same_whatever_the_chunking(
            credentials in arb_credentials(),
            prefix in prop_oneof![
                Just(vec![]),
                Just(vec![5, 1, 0]),
                Just(vec![5, 2, 0, 2]),
                Just(vec![5, 1, 2, 1]),
                Just(vec![5, 1, 0, 5, 1, 0]),
            ],
            noise in prop::collection::vec(any::<u8>(), 0..1200),
            sizes in chunk_sizes(),
        ) {
            let input = [prefix, noise].concat();
            let whole = feed_chunked(credentials.clone(), &input, &[input.len().max(1)]);
            prop_assert_eq!(&feed_chunked(credentials.clone(), &input, &sizes), &whole);
            prop_assert_eq!(&feed_chunked(credentials, &input, &[1]), &whole);
        }

        /// Every parser survives arbitrary bytes, and "need more" is only
        /// ever said about fewer bytes than the longest message.
        #[test]
        fn parsers_never_panic(buf in prop::collection::vec(any::<u8>(), 0..700)) {
            if let Ok(None) = parse_greeting(&buf) { prop_assert!(buf.len() < MAX_GREETING_LEN); }
            if let Ok(None) = parse_auth(&buf) { prop_assert!(buf.len() < MAX_AUTH_LEN); }
            if let Ok(None) = parse_request(&buf) { prop_assert!(buf.len() < MAX_REQUEST_LEN); }
            if let Ok(Some((_, used))) = parse_request(&buf) { prop_assert!(used <= buf.len()); }
            let _ = client::parse_reply(&buf);
            let _ = client::parse_method_selection(&buf);
            let _ = client::parse_auth_reply(&buf);
        }

        /// encode_reply → client::parse_reply gives back the address
        /// (IPv4-mapped ones as IPv4) for every code.
        #[test]
        fn reply_round_trip(code in 0u8..=8, ip in any::<IpAddr>(), port in any::<u16>()) {
            let rep = Reply::from_code(code).unwrap_or(Reply::GeneralFailure);
            let reply = encode_reply(rep, SocketAddr::new(ip, port));
            let want = SocketAddr::new(ip.to_canonical(), port);
            let got = client::parse_reply(reply.as_bytes());
            prop_assert_eq!(got, Ok(Some((rep, Target::Ip(want), reply.as_bytes().len()))));
        }

        /// Request encoding and parsing agree, for every command.
        #[test]
        fn request_round_trip(cmd in any::<u8>(), target in arb_target()) {
            let msg = client::request(Command::from_code(cmd), &target).unwrap();
            let want = Request { command: Command::from_code(cmd), target };
            prop_assert_eq!(parse_request(&msg), Ok(Some((want, msg.len()))));
        }
    }
}
