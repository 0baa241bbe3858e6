//! A tiny RESP2 (REdis Serialization Protocol) codec: only what a Redis
//! allowlist client needs.
//!
//! # Sans-IO
//!
//! This module never touches a socket. Sending is [`encode_command`], which
//! appends the bytes of one command to a `Vec<u8>` the caller owns; receiving
//! is [`parse`], which looks at whatever bytes the caller has read so far.
//! Because nothing here blocks or does a syscall, the same code works in a
//! blocking client, in a single-threaded `poll(2)` loop, and in unit tests
//! that just hand it byte slices.
//!
//! # The wire format, in brief
//!
//! Every frame starts with a type byte and ends with `\r\n`:
//!
//! | frame         | example                 | [`Value`]                         |
//! |---------------|-------------------------|-----------------------------------|
//! | simple string | `+OK\r\n`               | `SimpleString("OK")`              |
//! | error         | `-ERR oops\r\n`         | `Error("ERR oops")`               |
//! | integer       | `:-42\r\n`              | `Integer(-42)`                    |
//! | bulk string   | `$3\r\nabc\r\n`         | `Bulk(Some(b"abc"))`              |
//! | null bulk     | `$-1\r\n`               | `Bulk(None)` (e.g. GET, no key)   |
//! | array         | `*2\r\n:1\r\n:2\r\n`    | `Array(Some([Integer(1), ...]))`  |
//! | null array    | `*-1\r\n`               | `Array(None)`                     |
//!
//! A client always sends a command as an array of bulk strings, so
//! `GET allowed:127.0.0.1` goes out as
//! `*2\r\n$3\r\nGET\r\n$17\r\nallowed:127.0.0.1\r\n`. Bulk strings carry a
//! length prefix, so they are binary safe: the payload may contain `\r\n`.
//!
//! # Incremental parsing
//!
//! TCP is a byte stream: one `read(2)` may return half a reply, or three
//! replies at once (we *pipeline*: several `GET`s are in flight on one
//! connection, and Redis answers them in order). [`parse`] therefore has three
//! outcomes:
//!
//! * `Ok(None)`: the buffer holds only the start of a frame; read more and
//!   call again (with the whole buffer: the parser keeps no state).
//! * `Ok(Some((value, consumed)))`: one whole frame was at the front of the
//!   buffer; drop `consumed` bytes and call again, since more frames may
//!   follow.
//! * `Err(_)`: the server broke the protocol. There is no way to find the
//!   start of the next frame again, so close the connection (and fail every
//!   lookup still waiting for a reply).
//!
//! Being stateless, the parser re-scans the partial frame from its first byte
//! on each call. That costs `O(frame length)` per call, which is fine because
//! frames are small and capped (see below) and the caller reads in big chunks.
//!
//! # Limits
//!
//! A hostile or broken server must not make us allocate without bound, recurse
//! without bound, or wait forever for a frame that is never going to fit:
//!
//! * [`MAX_BULK_LEN`] (1 MiB): longest bulk string. Redis itself allows
//!   512 MiB, but an allowlist value is a few bytes.
//! * [`MAX_ARRAY_LEN`] (1024): most elements in one array.
//! * [`MAX_DEPTH`] (8): most arrays nested inside each other.
//! * [`MAX_LINE_LEN`] (4 KiB): longest simple string or error message.
//! * [`MAX_FRAME_LEN`] (2 MiB): longest whole frame. The other limits alone
//!   still allow 1024 arrays of 1024 arrays of ... of 1 MiB strings; this one
//!   bounds how much a caller ever has to buffer: once the buffer holds
//!   `MAX_FRAME_LEN` bytes and the front frame is still incomplete, [`parse`]
//!   returns an error instead of `Ok(None)`.
//!
//! Anything over a limit is an `Err`, exactly like malformed input. The
//! parser never panics, whatever the bytes.
//!
//! # The allowlist rule
//!
//! [`allowlist_key`] names the key for a client address and
//! [`allowlist_verdict`] turns the `GET` reply into a [`Verdict`]: a client is
//! allowed iff its key exists and its value is not `"0"`. Any reply that is
//! not a bulk string (an error, an integer, ...) means the allowlist is
//! [`Verdict::Unavailable`], and the proxy must fail closed, i.e. refuse.
//!
//! # Example: the shape of the proxy's loop
//!
//! ```
//! use protocols::resp::{
//!     allowlist_key, allowlist_verdict, encode_command, parse, Verdict,
//! };
//! use std::net::IpAddr;
//!
//! // Two clients connect: queue one GET each (pipelined, not waiting).
//! let mut outbox = Vec::new();
//! let mut waiting = std::collections::VecDeque::new();
//! for ip in ["10.0.0.1", "::ffff:10.0.0.2"] {
//!     let ip: IpAddr = ip.parse().unwrap();
//!     let key = allowlist_key(ip);
//!     encode_command(&[b"GET", key.as_bytes()], &mut outbox);
//!     waiting.push_back(ip);
//! }
//! assert!(outbox.starts_with(b"*2\r\n$3\r\nGET\r\n$16\r\nallowed:10.0.0.1\r\n"));
//!
//! // ... poll says the Redis socket is readable; read() appends to inbox.
//! // Here the second reply arrives only half-way.
//! let mut inbox = b"$1\r\n1\r\n$-".to_vec();
//! let mut verdicts = Vec::new();
//! while let Some((value, used)) = parse(&inbox).expect("protocol error: reconnect") {
//!     inbox.drain(..used);
//!     let ip = waiting.pop_front().expect("reply without a request");
//!     verdicts.push((ip, allowlist_verdict(&value)));
//! }
//! assert_eq!(verdicts, [("10.0.0.1".parse().unwrap(), Verdict::Allowed)]);
//! assert_eq!(inbox, b"$-"); // kept for the next read
//! ```

use std::fmt;
use std::net::IpAddr;

/// Longest bulk string accepted: 1 MiB (Redis' own limit is 512 MiB).
pub const MAX_BULK_LEN: usize = 1024 * 1024;
/// Most elements accepted in one array.
pub const MAX_ARRAY_LEN: usize = 1024;
/// Most arrays accepted nested inside each other (a top-level array is 1).
pub const MAX_DEPTH: usize = 8;
/// Longest simple string or error message accepted, `\r\n` not counted.
pub const MAX_LINE_LEN: usize = 4 * 1024;
/// Longest whole frame accepted, type byte to final `\r\n`: 2 MiB.
pub const MAX_FRAME_LEN: usize = 2 * 1024 * 1024;

/// One RESP2 frame.
///
/// Simple strings and errors are text lines; bytes that are not UTF-8 are
/// replaced with U+FFFD (they are only ever logged). Bulk strings are raw
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK\r\n`
    SimpleString(String),
    /// `-ERR message\r\n`: the command failed (the connection is still fine).
    Error(String),
    /// `:42\r\n`
    Integer(i64),
    /// `$3\r\nabc\r\n`; `None` is the null bulk string `$-1\r\n`.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...`; `None` is the null array `*-1\r\n`.
    Array(Option<Vec<Value>>),
}

/// Why [`parse`] rejected the input. After any of these, the connection is
/// out of sync and must be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespError {
    /// The frame starts with a byte that is not one of `+ - : $ *`.
    BadTypeByte(u8),
    /// A bulk or array length below -1.
    BadLength(i64),
    /// A line or a bulk payload not ended by `\r\n`, or a stray `\r`/`\n`.
    MissingCrlf,
    /// An integer or length that is not an optional `-` and digits.
    InvalidInteger,
    /// An integer or length that does not fit in an `i64`.
    IntegerOverflow,
    /// A bulk string longer than [`MAX_BULK_LEN`].
    BulkTooLong(i64),
    /// An array longer than [`MAX_ARRAY_LEN`].
    ArrayTooLong(i64),
    /// Arrays nested more than [`MAX_DEPTH`] deep.
    TooDeep,
    /// A simple string or error longer than [`MAX_LINE_LEN`].
    LineTooLong,
    /// A frame longer than [`MAX_FRAME_LEN`].
    FrameTooLarge,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::BadTypeByte(b) => {
                write!(f, "RESP: unknown type byte {:?}", char::from(*b))
            }
            RespError::BadLength(n) => write!(f, "RESP: invalid length {n}"),
            RespError::MissingCrlf => write!(f, "RESP: expected \\r\\n"),
            RespError::InvalidInteger => write!(f, "RESP: invalid integer"),
            RespError::IntegerOverflow => write!(f, "RESP: integer does not fit in 64 bits"),
            RespError::BulkTooLong(n) => {
                write!(f, "RESP: bulk string of {n} bytes exceeds {MAX_BULK_LEN}")
            }
            RespError::ArrayTooLong(n) => {
                write!(f, "RESP: array of {n} elements exceeds {MAX_ARRAY_LEN}")
            }
            RespError::TooDeep => write!(f, "RESP: arrays nested more than {MAX_DEPTH} deep"),
            RespError::LineTooLong => write!(f, "RESP: line longer than {MAX_LINE_LEN} bytes"),
            RespError::FrameTooLarge => write!(f, "RESP: frame longer than {MAX_FRAME_LEN} bytes"),
        }
    }
}

impl std::error::Error for RespError {}

/// Appends one command to `out` as a RESP array of bulk strings.
///
/// `encode_command(&[b"GET", b"k"], &mut out)` appends
/// `*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`. Arguments may hold any bytes.
pub fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    push_header(out, b'*', args.len());
    for arg in args {
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `<kind><n>\r\n`, e.g. `$17\r\n`.
fn push_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Parses one frame from the front of `buf`.
///
/// * `Ok(None)`: `buf` holds only part of a frame (maybe nothing); read more
///   and call again with the whole, grown buffer.
/// * `Ok(Some((value, consumed)))`: the first `consumed` bytes were one
///   frame; anything after them belongs to the next frame.
/// * `Err(_)`: malformed input or a limit exceeded (see the module docs).
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, RespError> {
    let mut parser = Parser { buf, pos: 0 };
    match parser.value(0) {
        Ok(_) if parser.pos > MAX_FRAME_LEN => Err(RespError::FrameTooLarge),
        Ok(value) => Ok(Some((value, parser.pos))),
        // The frame is longer than the whole buffer; if the buffer is
        // already at the cap, the frame cannot fit.
        Err(Stop::Incomplete) if buf.len() >= MAX_FRAME_LEN => Err(RespError::FrameTooLarge),
        Err(Stop::Incomplete) => Ok(None),
        Err(Stop::Invalid(e)) => Err(e),
    }
}

/// Why the parser stopped early: out of bytes, or bad bytes. Internal, so
/// that `?` can carry both up through the recursion.
enum Stop {
    Incomplete,
    Invalid(RespError),
}

impl From<RespError> for Stop {
    fn from(e: RespError) -> Self {
        Stop::Invalid(e)
    }
}

/// A cursor over the buffer. `pos` only moves forward.
struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    /// Parses one value; `depth` is the number of arrays around it.
    fn value(&mut self, depth: usize) -> Result<Value, Stop> {
        match self.byte()? {
            b'+' => Ok(Value::SimpleString(self.line()?)),
            b'-' => Ok(Value::Error(self.line()?)),
            b':' => Ok(Value::Integer(self.integer()?)),
            b'$' => self.bulk(),
            b'*' => self.array(depth),
            other => Err(RespError::BadTypeByte(other).into()),
        }
    }

    /// Takes the next byte.
    fn byte(&mut self) -> Result<u8, Stop> {
        let b = *self.buf.get(self.pos).ok_or(Stop::Incomplete)?;
        self.pos += 1;
        Ok(b)
    }

    /// Takes the `\n` that must follow a `\r` just taken.
    fn lf(&mut self) -> Result<(), Stop> {
        match self.byte()? {
            b'\n' => Ok(()),
            _ => Err(RespError::MissingCrlf.into()),
        }
    }

    /// Takes a text line up to and including `\r\n`.
    fn line(&mut self) -> Result<String, Stop> {
        let start = self.pos;
        // Look at most one byte past the longest allowed line.
        let window = &self.buf[start..self.buf.len().min(start + MAX_LINE_LEN + 1)];
        match window.iter().position(|&b| b == b'\r' || b == b'\n') {
            Some(i) if window[i] == b'\r' => {
                self.pos = start + i + 1;
                self.lf()?;
                Ok(String::from_utf8_lossy(&window[..i]).into_owned())
            }
            Some(_) => Err(RespError::MissingCrlf.into()), // a bare '\n'
            None if window.len() > MAX_LINE_LEN => Err(RespError::LineTooLong.into()),
            None => Err(Stop::Incomplete),
        }
    }

    /// Takes `[-]digits\r\n`, checking for overflow as it goes.
    fn integer(&mut self) -> Result<i64, Stop> {
        let negative = self.buf.get(self.pos) == Some(&b'-');
        if negative {
            self.pos += 1;
        }
        let mut n: i64 = 0;
        let mut digits = 0;
        loop {
            match self.byte()? {
                b @ b'0'..=b'9' => {
                    let d = i64::from(b - b'0');
                    // Accumulate with the final sign so that i64::MIN fits.
                    n = n
                        .checked_mul(10)
                        .and_then(|n| {
                            if negative {
                                n.checked_sub(d)
                            } else {
                                n.checked_add(d)
                            }
                        })
                        .ok_or(RespError::IntegerOverflow)?;
                    digits += 1;
                }
                b'\r' => {
                    self.lf()?;
                    break;
                }
                _ => return Err(RespError::InvalidInteger.into()),
            }
        }
        if digits == 0 {
            return Err(RespError::InvalidInteger.into());
        }
        Ok(n)
    }

    /// Takes the rest of `$<len>\r\n<bytes>\r\n` (the `$` is already taken).
    fn bulk(&mut self) -> Result<Value, Stop> {
        let len = match self.integer()? {
            -1 => return Ok(Value::Bulk(None)),
            n if n < -1 => return Err(RespError::BadLength(n).into()),
            n if n as u64 > MAX_BULK_LEN as u64 => return Err(RespError::BulkTooLong(n).into()),
            n => n as usize, // 0..=MAX_BULK_LEN: fits
        };
        let end = self.pos + len; // no overflow: pos <= buf.len(), len <= 1 MiB
                                  // Fail early rather than wait for bytes that would not fit anyway.
        if end + 2 > MAX_FRAME_LEN {
            return Err(RespError::FrameTooLarge.into());
        }
        let Some(payload_and_crlf) = self.buf.get(self.pos..end + 2) else {
            return Err(Stop::Incomplete);
        };
        let (payload, crlf) = payload_and_crlf.split_at(len);
        if crlf != b"\r\n" {
            return Err(RespError::MissingCrlf.into());
        }
        self.pos = end + 2;
        Ok(Value::Bulk(Some(payload.to_vec())))
    }

    /// Takes the rest of `*<len>\r\n<values>` (the `*` is already taken).
    fn array(&mut self, depth: usize) -> Result<Value, Stop> {
        let len = self.integer()?;
        if depth >= MAX_DEPTH {
            return Err(RespError::TooDeep.into());
        }
        let len = match len {
            -1 => return Ok(Value::Array(None)),
            n if n < -1 => return Err(RespError::BadLength(n).into()),
            n if n as u64 > MAX_ARRAY_LEN as u64 => return Err(RespError::ArrayTooLong(n).into()),
            n => n as usize,
        };
        let mut items = Vec::with_capacity(len); // len <= MAX_ARRAY_LEN
        for _ in 0..len {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(Some(items)))
    }
}

/// The allowlist's answer for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The key exists and its value is not `"0"`.
    Allowed,
    /// The key is missing (null bulk), or its value is `"0"`.
    Denied,
    /// Redis answered with an error or something other than a bulk string:
    /// we cannot tell, so the proxy must refuse (fail closed).
    Unavailable,
}

/// Applies the allowlist rule to the reply of `GET allowed:<ip>`.
///
/// | reply                      | verdict       |
/// |----------------------------|---------------|
/// | `Bulk(Some(v))`, `v != "0"`| `Allowed`     |
/// | `Bulk(Some("0"))`          | `Denied`      |
/// | `Bulk(None)` (no such key) | `Denied`      |
/// | anything else              | `Unavailable` |
pub fn allowlist_verdict(reply: &Value) -> Verdict {
    match reply {
        Value::Bulk(Some(v)) if v.as_slice() == b"0" => Verdict::Denied,
        Value::Bulk(Some(_)) => Verdict::Allowed,
        Value::Bulk(None) => Verdict::Denied,
        _ => Verdict::Unavailable,
    }
}

/// The Redis key holding the allowlist entry for `ip`: `allowed:<ip>`.
///
/// An IPv4 client reaching a dual-stack (`[::]`) listener shows up as the
/// IPv4-mapped address `::ffff:a.b.c.d`; it is turned back into `a.b.c.d`
/// first so that one key covers the client however it connected.
/// Other IPv6 addresses use their standard text form: `::1` gives
/// `allowed:::1`.
pub fn allowlist_key(ip: IpAddr) -> String {
    format!("allowed:{}", ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Test-only encoder for any `Value` (the client only ever sends
    /// arrays of bulk strings, so the real code has no need for it).
    fn encode_value(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::SimpleString(s) => {
                out.push(b'+');
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Value::Error(s) => {
                out.push(b'-');
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Value::Integer(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Value::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Value::Bulk(Some(b)) => {
                push_header(out, b'$', b.len());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Value::Array(Some(items)) => {
                push_header(out, b'*', items.len());
                for item in items {
                    encode_value(item, out);
                }
            }
        }
    }

    fn encoded(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_value(value, &mut out);
        out
    }

    fn bulk(b: &[u8]) -> Value {
        Value::Bulk(Some(b.to_vec()))
    }

    /// Parses `input`, which must be exactly one whole frame.
    fn parse_exact(input: &[u8]) -> Value {
        match parse(input) {
            Ok(Some((value, used))) => {
                assert_eq!(used, input.len(), "consumed for {input:?}");
                value
            }
            other => panic!("{input:?} gave {other:?}"),
        }
    }

    /// `depth` arrays of one element around `:1`.
    fn nested(depth: usize) -> Vec<u8> {
        let mut out = b"*1\r\n".repeat(depth);
        out.extend_from_slice(b":1\r\n");
        out
    }

    // ---- encode_command ----

    #[test]
    fn encode_get_exact_bytes() {
        let mut out = Vec::new();
        encode_command(&[b"GET", b"allowed:127.0.0.1"], &mut out);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$17\r\nallowed:127.0.0.1\r\n");
    }

    #[test]
    fn encode_appends_and_is_binary_safe() {
        let mut out = b"previous".to_vec();
        encode_command(&[b"SET", b"k\r\n", b"", b"\0\xff"], &mut out);
        assert_eq!(
            out,
            b"previous*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$0\r\n\r\n$2\r\n\0\xff\r\n"
        );
    }

    #[test]
    fn encode_no_args() {
        let mut out = Vec::new();
        encode_command(&[], &mut out);
        assert_eq!(out, b"*0\r\n");
    }

    #[test]
    fn encoded_command_parses_as_array_of_bulks() {
        let mut out = Vec::new();
        encode_command(&[b"GET", b"a\r\nb"], &mut out);
        assert_eq!(
            parse_exact(&out),
            Value::Array(Some(vec![bulk(b"GET"), bulk(b"a\r\nb")]))
        );
    }

    // ---- each frame type ----

    #[test]
    fn simple_string() {
        assert_eq!(parse_exact(b"+OK\r\n"), Value::SimpleString("OK".into()));
        assert_eq!(parse_exact(b"+\r\n"), Value::SimpleString(String::new()));
    }

    #[test]
    fn simple_string_lossy_utf8() {
        assert_eq!(
            parse_exact(b"+a\xffb\r\n"),
            Value::SimpleString("a\u{fffd}b".into())
        );
    }

    #[test]
    fn error_frame() {
        assert_eq!(
            parse_exact(b"-ERR unknown command 'FOO'\r\n"),
            Value::Error("ERR unknown command 'FOO'".into())
        );
        assert_eq!(
            parse_exact(b"-WRONGTYPE Operation against a key\r\n"),
            Value::Error("WRONGTYPE Operation against a key".into())
        );
    }

    #[test]
    fn integers() {
        assert_eq!(parse_exact(b":0\r\n"), Value::Integer(0));
        assert_eq!(parse_exact(b":42\r\n"), Value::Integer(42));
        assert_eq!(parse_exact(b":-42\r\n"), Value::Integer(-42));
        assert_eq!(parse_exact(b":-0\r\n"), Value::Integer(0));
        assert_eq!(parse_exact(b":007\r\n"), Value::Integer(7));
        assert_eq!(
            parse_exact(b":9223372036854775807\r\n"),
            Value::Integer(i64::MAX)
        );
        assert_eq!(
            parse_exact(b":-9223372036854775808\r\n"),
            Value::Integer(i64::MIN)
        );
    }

    #[test]
    fn bulk_strings() {
        assert_eq!(parse_exact(b"$3\r\nabc\r\n"), bulk(b"abc"));
        assert_eq!(parse_exact(b"$4\r\na\r\nb\r\n"), bulk(b"a\r\nb"));
        assert_eq!(parse_exact(b"$2\r\n\0\xff\r\n"), bulk(b"\0\xff"));
    }

    #[test]
    fn empty_bulk_is_not_null() {
        assert_eq!(parse_exact(b"$0\r\n\r\n"), bulk(b""));
        assert_ne!(parse_exact(b"$0\r\n\r\n"), Value::Bulk(None));
    }

    #[test]
    fn null_bulk() {
        assert_eq!(parse_exact(b"$-1\r\n"), Value::Bulk(None));
    }

    #[test]
    fn arrays() {
        assert_eq!(parse_exact(b"*0\r\n"), Value::Array(Some(vec![])));
        assert_eq!(
            parse_exact(b"*3\r\n:1\r\n$1\r\nx\r\n+OK\r\n"),
            Value::Array(Some(vec![
                Value::Integer(1),
                bulk(b"x"),
                Value::SimpleString("OK".into()),
            ]))
        );
    }

    #[test]
    fn null_array() {
        assert_eq!(parse_exact(b"*-1\r\n"), Value::Array(None));
    }

    #[test]
    fn nested_arrays() {
        assert_eq!(
            parse_exact(b"*2\r\n*2\r\n:1\r\n$-1\r\n*-1\r\n"),
            Value::Array(Some(vec![
                Value::Array(Some(vec![Value::Integer(1), Value::Bulk(None)])),
                Value::Array(None),
            ]))
        );
    }

    // ---- streams ----

    #[test]
    fn empty_buffer_needs_more() {
        assert_eq!(parse(b""), Ok(None));
    }

    #[test]
    fn pipelined_frames_in_one_buffer() {
        let mut buf: &[u8] = b"$1\r\n1\r\n$-1\r\n-ERR x\r\n$1\r\n0\r\n$2\r\n";
        let mut got = Vec::new();
        while let Some((value, used)) = parse(buf).unwrap() {
            got.push(value);
            buf = &buf[used..];
        }
        assert_eq!(
            got,
            [
                bulk(b"1"),
                Value::Bulk(None),
                Value::Error("ERR x".into()),
                bulk(b"0"),
            ]
        );
        assert_eq!(buf, b"$2\r\n"); // the start of a fifth reply
    }

    #[test]
    fn consumed_stops_at_frame_end() {
        assert_eq!(parse(b":1\r\ngarbage"), Ok(Some((Value::Integer(1), 4))));
    }

    #[test]
    fn every_truncation_needs_more() {
        let frames: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR oops\r\n",
            b":-123\r\n",
            b"$5\r\nhe\r\no\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n*1\r\n$3\r\nabc\r\n:7\r\n",
            b"*2\r\n$3\r\nGET\r\n$17\r\nallowed:127.0.0.1\r\n",
        ];
        for frame in frames {
            for cut in 0..frame.len() {
                assert_eq!(parse(&frame[..cut]), Ok(None), "{frame:?} cut at {cut}");
            }
            assert_eq!(parse(frame).unwrap().unwrap().1, frame.len());
        }
    }

    // ---- malformed input ----

    #[test]
    fn malformed_inputs_are_errors() {
        use RespError::*;
        let cases: &[(&[u8], RespError)] = &[
            (b"!", BadTypeByte(b'!')),
            (b"hello\r\n", BadTypeByte(b'h')),
            (b"\r\n", BadTypeByte(b'\r')),
            (b"_\r\n", BadTypeByte(b'_')), // RESP3 null: not spoken here
            (b"+OK\rX", MissingCrlf),
            (b"+OK\n", MissingCrlf),
            (b"-ERR\nx\r\n", MissingCrlf),
            (b":12\rx", MissingCrlf),
            (b":\r\n", InvalidInteger),
            (b":-\r\n", InvalidInteger),
            (b":+1\r\n", InvalidInteger),
            (b": 1\r\n", InvalidInteger),
            (b":1.5\r\n", InvalidInteger),
            (b":12a", InvalidInteger),
            (b":1\n", InvalidInteger),
            (b":9223372036854775808\r\n", IntegerOverflow),
            (b":-9223372036854775809\r\n", IntegerOverflow),
            (b":99999999999999999999999", IntegerOverflow),
            (b"$abc\r\n", InvalidInteger),
            (b"$\r\n", InvalidInteger),
            (b"$-2\r\n", BadLength(-2)),
            (b"$-9223372036854775808\r\n", BadLength(i64::MIN)),
            (b"$99999999999999999999\r\n", IntegerOverflow),
            (b"$3\r\nabcd\r\n", MissingCrlf),
            (b"$3\r\nabc\n\r", MissingCrlf),
            (b"$3\r\nab\r\nXY", MissingCrlf),
            (b"*x\r\n", InvalidInteger),
            (b"*-5\r\n", BadLength(-5)),
            (b"*1\r\n?", BadTypeByte(b'?')),
            (b"*2\r\n:1\r\n:x\r\n", InvalidInteger),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), Err(want.clone()), "input {input:?}");
        }
    }

    #[test]
    fn error_display() {
        assert_eq!(
            RespError::BadTypeByte(b'!').to_string(),
            "RESP: unknown type byte '!'"
        );
        assert_eq!(
            RespError::BulkTooLong(2_000_000).to_string(),
            "RESP: bulk string of 2000000 bytes exceeds 1048576"
        );
        assert_eq!(
            RespError::TooDeep.to_string(),
            "RESP: arrays nested more than 8 deep"
        );
        let boxed: Box<dyn std::error::Error> = Box::new(RespError::MissingCrlf);
        assert_eq!(boxed.to_string(), "RESP: expected \\r\\n");
    }

    // ---- limits ----

    #[test]
    fn bulk_length_limit() {
        let header = format!("${}\r\n", MAX_BULK_LEN + 1);
        // Rejected from the header alone: no waiting for a megabyte.
        assert_eq!(
            parse(header.as_bytes()),
            Err(RespError::BulkTooLong(MAX_BULK_LEN as i64 + 1))
        );
        assert_eq!(
            parse(b"$9223372036854775807\r\n"),
            Err(RespError::BulkTooLong(i64::MAX))
        );
        let mut at_limit = format!("${MAX_BULK_LEN}\r\n").into_bytes();
        at_limit.resize(at_limit.len() + MAX_BULK_LEN, b'x');
        assert_eq!(parse(&at_limit), Ok(None));
        at_limit.extend_from_slice(b"\r\n");
        assert_eq!(parse_exact(&at_limit), bulk(&vec![b'x'; MAX_BULK_LEN]));
    }

    #[test]
    fn array_length_limit() {
        let too_long = format!("*{}\r\n", MAX_ARRAY_LEN + 1);
        assert_eq!(
            parse(too_long.as_bytes()),
            Err(RespError::ArrayTooLong(MAX_ARRAY_LEN as i64 + 1))
        );
        let mut at_limit = format!("*{MAX_ARRAY_LEN}\r\n").into_bytes();
        at_limit.extend_from_slice(&b":1\r\n".repeat(MAX_ARRAY_LEN));
        assert_eq!(
            parse_exact(&at_limit),
            Value::Array(Some(vec![Value::Integer(1); MAX_ARRAY_LEN]))
        );
    }

    #[test]
    fn depth_limit() {
        assert!(matches!(parse(&nested(MAX_DEPTH)), Ok(Some(_))));
        assert_eq!(parse(&nested(MAX_DEPTH + 1)), Err(RespError::TooDeep));
        // Null and empty arrays count too.
        let mut deep_null = b"*1\r\n".repeat(MAX_DEPTH);
        deep_null.extend_from_slice(b"*-1\r\n");
        assert_eq!(parse(&deep_null), Err(RespError::TooDeep));
        // Detected as soon as the ninth header arrives.
        assert_eq!(
            parse(&b"*1\r\n".repeat(MAX_DEPTH + 1)),
            Err(RespError::TooDeep)
        );
        // A deep stack that never gets that far is just incomplete.
        assert_eq!(parse(&b"*1\r\n".repeat(MAX_DEPTH)), Ok(None));
    }

    #[test]
    fn line_length_limit() {
        let mut at_limit = b"+".to_vec();
        at_limit.resize(1 + MAX_LINE_LEN, b'a');
        assert_eq!(parse(&at_limit), Ok(None));
        at_limit.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&at_limit), Ok(Some(_))));

        let mut over = b"-".to_vec();
        over.resize(2 + MAX_LINE_LEN, b'a');
        // Rejected without waiting for the '\r'.
        assert_eq!(parse(&over), Err(RespError::LineTooLong));
    }

    #[test]
    fn frame_length_limit() {
        // Two 1 MiB bulks: each fine, together over the frame cap. The
        // second header is enough to know it: no waiting for its payload.
        let mut frame = b"*2\r\n".to_vec();
        frame.extend_from_slice(format!("${MAX_BULK_LEN}\r\n").as_bytes());
        frame.resize(frame.len() + MAX_BULK_LEN, b'x');
        frame.extend_from_slice(b"\r\n");
        frame.extend_from_slice(format!("${MAX_BULK_LEN}\r\n").as_bytes());
        assert!(frame.len() < MAX_FRAME_LEN);
        assert_eq!(parse(&frame), Err(RespError::FrameTooLarge));

        // Many short lines: each fine, but once the buffer is at the cap
        // with the frame still open, waiting for more cannot help.
        let line = [b"+".as_slice(), &[b'a'; 4000], b"\r\n"].concat();
        let mut frame = format!("*{MAX_ARRAY_LEN}\r\n").into_bytes();
        // (about 524 lines: fewer than the 1024 the array announces)
        while frame.len() + line.len() < MAX_FRAME_LEN {
            frame.extend_from_slice(&line);
        }
        assert_eq!(parse(&frame), Ok(None));
        frame.extend_from_slice(&line);
        assert_eq!(parse(&frame), Err(RespError::FrameTooLarge));

        // A frame of exactly MAX_FRAME_LEN bytes is accepted.
        let mut exact = b"*2\r\n".to_vec();
        exact.extend_from_slice(format!("${MAX_BULK_LEN}\r\n").as_bytes());
        exact.resize(exact.len() + MAX_BULK_LEN, b'x');
        exact.extend_from_slice(b"\r\n");
        let header = format!("${MAX_BULK_LEN}\r\n");
        let rest = MAX_FRAME_LEN - exact.len() - header.len() - 2;
        let rest_header = format!("${rest}\r\n");
        assert_eq!(header.len(), rest_header.len()); // both 7 digits
        exact.extend_from_slice(rest_header.as_bytes());
        exact.resize(exact.len() + rest, b'y');
        exact.extend_from_slice(b"\r\n");
        assert_eq!(exact.len(), MAX_FRAME_LEN);
        assert!(matches!(parse(&exact), Ok(Some((_, MAX_FRAME_LEN)))));
    }

    // ---- allowlist ----

    #[test]
    fn verdict_table() {
        use Verdict::*;
        let table = [
            (bulk(b"1"), Allowed),
            (bulk(b"yes"), Allowed),
            (bulk(b"00"), Allowed),
            (bulk(b"0 "), Allowed),
            (bulk(b""), Allowed), // exists and is not "0"
            (bulk(b"0"), Denied),
            (Value::Bulk(None), Denied),
            (Value::Error("ERR oops".into()), Unavailable),
            (Value::Error("0".into()), Unavailable),
            (Value::SimpleString("1".into()), Unavailable),
            (Value::Integer(1), Unavailable),
            (Value::Integer(0), Unavailable),
            (Value::Array(None), Unavailable),
            (Value::Array(Some(vec![bulk(b"1")])), Unavailable),
        ];
        for (reply, want) in table {
            assert_eq!(allowlist_verdict(&reply), want, "{reply:?}");
        }
    }

    #[test]
    fn key_ipv4() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(allowlist_key(ip), "allowed:127.0.0.1");
    }

    #[test]
    fn key_ipv4_mapped_is_normalised() {
        let ip: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(allowlist_key(ip), "allowed:127.0.0.1");
        let ip: IpAddr = "::ffff:c0a8:0101".parse().unwrap();
        assert_eq!(allowlist_key(ip), "allowed:192.168.1.1");
    }

    #[test]
    fn key_ipv6() {
        let ip: IpAddr = "::1".parse().unwrap();
        assert_eq!(allowlist_key(ip), "allowed:::1");
        let ip: IpAddr = "2001:DB8:0:0::1".parse().unwrap();
        assert_eq!(allowlist_key(ip), "allowed:2001:db8::1");
        // Only ::ffff:a.b.c.d is IPv4; the old "compatible" form is not.
        let ip: IpAddr = "::127.0.0.1".parse().unwrap();
        assert_eq!(allowlist_key(ip), "allowed:::7f00:1");
    }

    #[test]
    fn key_then_command_then_verdict() {
        let mut out = Vec::new();
        let key = allowlist_key("::ffff:10.1.2.3".parse().unwrap());
        encode_command(&[b"GET", key.as_bytes()], &mut out);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$16\r\nallowed:10.1.2.3\r\n");
        let (reply, _) = parse(b"$1\r\n1\r\n").unwrap().unwrap();
        assert_eq!(allowlist_verdict(&reply), Verdict::Allowed);
    }

    // ---- property tests ----

    /// Any `Value`, arrays nested at most 4 deep (well inside MAX_DEPTH).
    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            "[^\r\n]{0,16}".prop_map(Value::SimpleString),
            "[^\r\n]{0,16}".prop_map(Value::Error),
            any::<i64>().prop_map(Value::Integer),
            Just(Value::Bulk(None)),
            // Bytes biased towards the ones that matter to the framing.
            prop::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'$'), any::<u8>()],
                0..32
            )
            .prop_map(|b| Value::Bulk(Some(b))),
            Just(Value::Array(None)),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop::collection::vec(inner, 0..6).prop_map(|v| Value::Array(Some(v)))
        })
    }

    /// Bytes that look a bit like RESP, so the parser gets past the first
    /// byte more often than with uniform noise.
    fn resp_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            Just(b'*'),
            Just(b'$'),
            Just(b':'),
            Just(b'+'),
            Just(b'-'),
            Just(b'\r'),
            Just(b'\n'),
            b'0'..=b'9',
            any::<u8>(),
        ];
        prop::collection::vec(byte, 0..64)
    }

    /// Feeds `stream` in chunks of the given sizes (cycled), parsing after
    /// each append as a poll loop would; returns the values in order.
    fn parse_in_chunks(stream: &[u8], sizes: &[usize]) -> Vec<Value> {
        let mut buf = Vec::new();
        let mut got = Vec::new();
        let mut rest = stream;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            rest = tail;
            buf.extend_from_slice(chunk);
            while let Some((value, used)) = parse(&buf).unwrap() {
                got.push(value);
                buf.drain(..used);
            }
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        got
    }

    proptest! {
        #[test]
        fn prop_round_trip(value in arb_value()) {
            let bytes = encoded(&value);
            prop_assert_eq!(parse(&bytes), Ok(Some((value.clone(), bytes.len()))));
            // Trailing bytes are left for the next call.
            let mut more = bytes.clone();
            more.extend_from_slice(b"$-1\r\n");
            prop_assert_eq!(parse(&more), Ok(Some((value, bytes.len()))));
        }

        #[test]
        fn prop_truncated_frame_needs_more(value in arb_value(), cut in any::<prop::sample::Index>()) {
            let bytes = encoded(&value);
            let cut = cut.index(bytes.len()); // 0..len: always a strict prefix
            prop_assert_eq!(parse(&bytes[..cut]), Ok(None));
        }

        #[test]
        fn prop_chunking_does_not_matter(
            values in prop::collection::vec(arb_value(), 1..6),
            sizes in prop::collection::vec(1usize..16, 1..8),
        ) {
            let mut stream = Vec::new();
            for v in &values {
                encode_value(v, &mut stream);
            }
            // Whole stream in one buffer, then arbitrary chunks.
            prop_assert_eq!(&parse_in_chunks(&stream, &[stream.len()]), &values);
            prop_assert_eq!(&parse_in_chunks(&stream, &sizes), &values);
            prop_assert_eq!(&parse_in_chunks(&stream, &[1]), &values);
        }

        #[test]
        fn prop_encode_command_round_trip(
            args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 0..6),
        ) {
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let mut out = Vec::new();
            encode_command(&refs, &mut out);
            let want = Value::Array(Some(args.into_iter().map(|a| Value::Bulk(Some(a))).collect()));
            prop_assert_eq!(parse(&out), Ok(Some((want, out.len()))));
        }

        #[test]
        fn prop_never_panics_on_noise(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn prop_resp_ish_noise_is_consistent(bytes in resp_ish_bytes(), extra in resp_ish_bytes()) {
            let result = parse(&bytes);
            let mut longer = bytes.clone();
            longer.extend_from_slice(&extra);
            match &result {
                // A frame found is a prefix; every shorter prefix is
                // incomplete, and extra bytes after it change nothing.
                Ok(Some((value, used))) => {
                    prop_assert!(*used > 0 && *used <= bytes.len());
                    for cut in 0..*used {
                        prop_assert_eq!(parse(&bytes[..cut]), Ok(None));
                    }
                    prop_assert_eq!(parse(&longer), Ok(Some((value.clone(), *used))));
                }
                // More bytes never turn an error into a success.
                Err(e) => prop_assert_eq!(parse(&longer), Err(e.clone())),
                Ok(None) => {}
            }
        }
    }
}
