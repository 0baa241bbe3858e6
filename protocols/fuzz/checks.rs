//! The checks every fuzz input goes through, in one place: the fuzz targets
//! (`protocols/fuzz/fuzz_targets/*.rs`) mount this file, and so does the plain replay test
//! (`protocols/tests/corpus.rs`), which runs the committed seeds and every input that ever
//! crashed a target through the very same code on stable, with no fuzzing engine.
//!
//! An input is a [`Plan`]: its first byte says how many of the bytes after it are chunk
//! sizes and carries a few flags; the rest is the byte stream a peer sends. Each check feeds
//! the stream in those chunks AND whole, and asserts more than "no panic":
//! - the buffer bounds hold after every feed;
//! - the chunked run gives exactly what the whole run gives;
//! - what the machine emits is valid (SOCKS5: method selection, RFC 1929 status, RFC 1928
//!   reply, each the right answer to what was sent) or equal to a plain model (echo).
//!
//! A failed check panics, which is what libFuzzer reports as a crash.

use protocols::{echo, resp, socks5};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// How one fuzz input is fed: `flags` for the target, chunk `sizes` (cycled; 0 feeds an
/// empty slice) and the `stream` itself.
#[derive(Debug)]
pub struct Plan<'a> {
    pub flags: u8,
    pub sizes: &'a [u8],
    pub stream: &'a [u8],
}

impl<'a> Plan<'a> {
    /// Byte 0: bits 0–2 = the number of size bytes that follow (0: feed the stream whole),
    /// bits 3–7 = flags. Then the size bytes, then the stream.
    pub fn of(data: &'a [u8]) -> Plan<'a> {
        let Some((&head, rest)) = data.split_first() else {
            return Plan {
                flags: 0,
                sizes: &[],
                stream: &[],
            };
        };
        let n = usize::from(head & 7).min(rest.len());
        let (sizes, stream) = rest.split_at(n);
        Plan {
            flags: head >> 3,
            sizes,
            stream,
        }
    }

    /// The stream cut into chunks of the planned sizes. Zero sizes give empty chunks (at
    /// most one per pass through the sizes, so this always ends); no sizes, or only zeros,
    /// give the stream whole.
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        let stream = self.stream;
        if self.sizes.iter().all(|&s| s == 0) {
            return vec![stream];
        }
        let mut chunks = Vec::new();
        let mut pos = 0;
        for &size in self.sizes.iter().cycle() {
            if pos >= stream.len() {
                break;
            }
            let end = (pos + usize::from(size)).min(stream.len());
            chunks.push(&stream[pos..end]);
            pos = end;
        }
        if chunks.is_empty() {
            chunks.push(stream);
        }
        chunks
    }
}

// ---------------------------------------------------------------------------
// Echo
// ---------------------------------------------------------------------------

/// The echo line protocol: chunked == whole == a plain model of the echo rules, the held
/// line never above `MAX_LINE + 1` bytes, the replies never longer than the input plus one
/// error line. (The 64 KiB line limit is out of reach of 4 KiB fuzz inputs; a line that
/// long in one input in four made the target fifty times slower. [`echo_limit_sweep`]
/// covers that boundary exhaustively instead, in the replay test.)
pub fn echo(data: &[u8]) {
    let plan = Plan::of(data);
    echo_stream(plan.stream, &plan.chunks());
}

/// Every line length from `MAX_LINE - 2` to `MAX_LINE + 3`, ended by `\n`, `\r\n` or
/// not at all, then a short line, cut at every point from 4 bytes before the limit to the
/// end, in two feeds and in three: through the same checks as a fuzz input.
pub fn echo_limit_sweep() {
    for len in echo::MAX_LINE - 2..=echo::MAX_LINE + 3 {
        for ending in [&b"\n"[..], b"\r\n", b""] {
            let mut stream = vec![b'x'; len];
            stream.extend_from_slice(ending);
            stream.extend_from_slice(b"ok\nq\n");
            for cut in echo::MAX_LINE - 4..=stream.len() {
                let (a, b) = stream.split_at(cut);
                echo_stream(&stream, &[a, b]);
                let (b, c) = b.split_at(b.len().min(2));
                echo_stream(&stream, &[a, b, c]);
            }
        }
    }
}

/// The echo checks for one stream cut into `chunks`.
fn echo_stream(stream: &[u8], chunks: &[&[u8]]) {
    let run = |chunks: &[&[u8]]| {
        let mut machine = echo::Echo::new();
        let mut out = Vec::new();
        let mut status = echo::Status::Open;
        let mut fed = 0;
        for chunk in chunks {
            status = machine.feed(chunk, &mut out);
            fed += chunk.len();
            assert!(
                machine.buffered() <= echo::MAX_LINE + 1,
                "held line over the bound"
            );
            assert!(
                out.len() <= fed + echo::TOO_LONG.len(),
                "replies longer than the input"
            );
        }
        (out, status)
    };
    let whole = run(&[stream]);
    assert_eq!(run(chunks), whole, "chunked feed differs from whole");
    assert_eq!(whole, echo_model(stream), "differs from the model");
}

/// The echo rules, written as plainly as possible (whole input, no state).
fn echo_model(mut rest: &[u8]) -> (Vec<u8>, echo::Status) {
    let mut out = Vec::new();
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let raw = &rest[..end];
        rest = &rest[end + 1..];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.len() > echo::MAX_LINE {
            out.extend_from_slice(echo::TOO_LONG);
            return (out, echo::Status::TooLong);
        }
        if line == b"q" {
            return (out, echo::Status::Quit);
        }
        match std::str::from_utf8(line) {
            // (For ASCII, characters are bytes: the quick way, for the 64 KiB lines.)
            Ok(text) if !text.is_ascii() => {
                out.extend(text.chars().rev().collect::<String>().into_bytes())
            }
            _ => out.extend(line.iter().rev()),
        }
        out.push(b'\n');
    }
    // An unfinished line is known to be too long once it cannot shrink under the limit.
    if rest.len() > echo::MAX_LINE + 1 {
        out.extend_from_slice(echo::TOO_LONG);
        return (out, echo::Status::TooLong);
    }
    (out, echo::Status::Open)
}

// ---------------------------------------------------------------------------
// SOCKS5
// ---------------------------------------------------------------------------

/// SOCKS5 flag: the server requires RFC 1929 username/password ([`USER`]/[`PASS`]).
pub const SOCKS5_AUTH: u8 = 1;
/// The credentials of a server run with [`SOCKS5_AUTH`].
pub const USER: &[u8] = b"alice";
/// See [`USER`].
pub const PASS: &[u8] = b"s3cret";

/// What one run of the handshake ended with, `consumed` turned into the leftover bytes.
#[derive(Debug, PartialEq, Eq)]
struct Socks5Outcome {
    out: Vec<u8>,
    step: socks5::Step,
    leftover: Vec<u8>,
    state: socks5::State,
}

/// Feeds the chunks as the relay does: stop at the first step that is not `NeedMore`.
fn socks5_run(auth: bool, chunks: &[&[u8]]) -> Socks5Outcome {
    let creds = auth.then(|| (USER.to_vec(), PASS.to_vec()));
    let mut hs = socks5::Handshake::new(creds);
    let mut out = Vec::new();
    let mut step = socks5::Step::NeedMore;
    let mut leftover = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        step = hs.feed(chunk, &mut out);
        assert!(
            hs.buffered() <= socks5::MAX_MESSAGE_LEN,
            "buffer over its bound"
        );
        match &mut step {
            socks5::Step::NeedMore => {
                assert!(
                    hs.buffered() < socks5::MAX_MESSAGE_LEN,
                    "full buffer, no verdict"
                );
                continue;
            }
            socks5::Step::Connect { consumed, .. } => {
                assert!(*consumed <= chunk.len(), "consumed more than was fed");
                assert_eq!(hs.buffered(), 0, "bytes held after the handshake");
                leftover = chunk[*consumed..].to_vec();
                leftover.extend(chunks[i + 1..].concat());
                *consumed = 0;
            }
            socks5::Step::Close(_) => assert_eq!(hs.buffered(), 0, "bytes held after close"),
        }
        break;
    }
    Socks5Outcome {
        out,
        step,
        leftover,
        state: hs.state(),
    }
}

/// The SOCKS5 server handshake: bounded buffer, chunked == whole, and every byte it sent
/// is a valid message that answers what the client sent.
pub fn socks5_handshake(data: &[u8]) {
    let plan = Plan::of(data);
    let auth = plan.flags & SOCKS5_AUTH != 0;
    let whole = socks5_run(auth, &[plan.stream]);
    assert_eq!(
        socks5_run(auth, &plan.chunks()),
        whole,
        "chunked feed differs from whole"
    );
    socks5_valid(auth, plan.stream, &whole);
}

/// Walks the server's output message by message beside the client's input.
fn socks5_valid(auth: bool, input: &[u8], got: &Socks5Outcome) {
    use socks5::{client, CloseReason, Error, Reply, State, Step, Target};
    let mut out = &got.out[..];
    let mut sent = input; // the client's bytes not yet matched to a message
    let closed = matches!(got.step, Step::Close(_));

    // The greeting, and its method selection.
    let Some((greeting, used)) = socks5::parse_greeting(sent).ok().flatten() else {
        assert!(out.is_empty(), "answered an incomplete or foreign greeting");
        return;
    };
    sent = &sent[used..];
    let (method, n) = client::parse_method_selection(out)
        .expect("method selection: VER 5")
        .expect("a complete greeting gets a method selection");
    out = &out[n..];
    let wanted = if auth {
        socks5::METHOD_USER_PASS
    } else {
        socks5::METHOD_NO_AUTH
    };
    let expected = if greeting.methods.contains(&wanted) {
        wanted
    } else {
        socks5::METHOD_NO_ACCEPTABLE
    };
    assert_eq!(method, expected, "wrong method for {:?}", greeting.methods);
    if method == socks5::METHOD_NO_ACCEPTABLE {
        assert!(out.is_empty(), "bytes after 0xFF");
        assert_eq!(got.step, Step::Close(CloseReason::NoAcceptableMethod));
        return;
    }

    // RFC 1929, when asked for.
    if auth {
        let Some((request, used)) = socks5::parse_auth(sent).ok().flatten() else {
            assert!(
                out.is_empty(),
                "answered an incomplete or foreign auth request"
            );
            return;
        };
        let right = request.username == USER && request.password == PASS;
        sent = &sent[used..];
        let (ok, n) = client::parse_auth_reply(out)
            .expect("RFC 1929 status: VER 1")
            .expect("a complete auth request gets a status");
        assert_eq!(
            (n, out.get(1).copied()),
            (2, Some(u8::from(!right))),
            "RFC 1929 status must be 0 or 1, and right"
        );
        out = &out[n..];
        if !ok {
            assert!(out.is_empty(), "bytes after a failed auth");
            assert_eq!(got.step, Step::Close(CloseReason::AuthFailed));
            return;
        }
    }

    // The request: CONNECT hands over; anything else gets one error reply and a close.
    match socks5::parse_request(sent) {
        Ok(Some((request, used))) => {
            if request.command == socks5::Command::Connect {
                assert!(
                    out.is_empty(),
                    "the success reply is the relay's, not the machine's"
                );
                assert_eq!(
                    got.step,
                    Step::Connect {
                        target: request.target.clone(),
                        consumed: 0
                    }
                );
                assert_eq!(got.leftover, &sent[used..], "early payload lost or changed");
                assert_eq!(got.state, State::Done);
                // The client encoder gives the same bytes (RSV aside).
                let again = client::connect_request(&request.target).expect("encodable target");
                let mut want = sent[..used].to_vec();
                want[2] = 0;
                assert_eq!(again, want, "request does not re-encode to itself");
                // The reply the relay will send parses back to what it encoded.
                let bnd = match request.target {
                    Target::Ip(addr) => addr,
                    Target::Domain(_, port) => {
                        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)
                    }
                };
                reply_round_trip(Reply::Succeeded, bnd);
                reply_round_trip(Reply::ConnectionRefused, bnd);
            } else {
                let want = Reply::CommandNotSupported;
                error_reply(out, want);
                assert_eq!(
                    got.step,
                    Step::Close(CloseReason::CommandNotSupported(request.command.code()))
                );
            }
        }
        Err(e) => {
            match e {
                Error::UnsupportedAddressType(_) => {
                    error_reply(out, Reply::AddressTypeNotSupported)
                }
                Error::InvalidDomain => error_reply(out, Reply::HostUnreachable),
                _ => assert!(out.is_empty(), "answered a foreign request"),
            }
            assert_eq!(got.step, Step::Close(CloseReason::Protocol(e)));
        }
        Ok(None) => {
            assert!(out.is_empty() && !closed, "answered an incomplete request");
            assert_eq!(got.step, Step::NeedMore);
        }
    }
}

/// `out` is exactly one RFC 1928 reply with code `want` and BND 0.0.0.0:0.
fn error_reply(out: &[u8], want: socks5::Reply) {
    let unspecified = socks5::Target::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    assert_eq!(
        socks5::client::parse_reply(out),
        Ok(Some((want, unspecified, out.len()))),
        "not one valid error reply"
    );
}

/// An encoded reply is valid RFC 1928 and parses back to what was encoded.
fn reply_round_trip(rep: socks5::Reply, bnd: SocketAddr) {
    let reply = socks5::encode_reply(rep, bnd);
    let bytes = reply.as_bytes();
    assert!(bytes.len() <= socks5::MAX_ENCODED_REPLY_LEN);
    let want = SocketAddr::new(bnd.ip().to_canonical(), bnd.port());
    assert_eq!(
        socks5::client::parse_reply(bytes),
        Ok(Some((rep, socks5::Target::Ip(want), bytes.len()))),
        "reply does not parse back"
    );
}

// ---------------------------------------------------------------------------
// RESP
// ---------------------------------------------------------------------------

/// What a poll loop gets out of a byte stream: the frames in order, then how it ended
/// (`Ok(n)`: n bytes of an unfinished frame wait; `Err`: the connection must close).
type RespOutcome = (Vec<resp::Value>, Result<usize, resp::RespError>);

/// Appends each chunk to a buffer and takes every whole frame off its front after each
/// append, as lesson 13's loop does; checks each frame stands alone.
fn resp_run(chunks: &[&[u8]]) -> RespOutcome {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match resp::parse(&buf) {
                Ok(Some((value, used))) => {
                    assert!(used > 0 && used <= buf.len(), "consumed out of range");
                    assert!(used <= resp::MAX_FRAME_LEN, "frame over its bound");
                    // The frame alone parses the same; one byte less is unfinished.
                    assert_eq!(resp::parse(&buf[..used]), Ok(Some((value.clone(), used))));
                    assert_eq!(resp::parse(&buf[..used - 1]), Ok(None), "frame ends early");
                    resp_kind_matches(&buf[..used], &value);
                    frames.push(value);
                    buf.drain(..used);
                }
                Ok(None) => {
                    assert!(
                        buf.len() < resp::MAX_FRAME_LEN,
                        "waiting past the frame bound"
                    );
                    break;
                }
                Err(e) => return (frames, Err(e)),
            }
        }
    }
    (frames, Ok(buf.len()))
}

/// The value is the kind its type byte says, null exactly when the length is -1, and the
/// allowlist verdict follows the rule (a bulk string "0" or null denies, any other allows,
/// anything else is no answer).
fn resp_kind_matches(frame: &[u8], value: &resp::Value) {
    use resp::{Value, Verdict};
    // The length as a number: `*-01` is -1 too (the parser takes leading zeros).
    let header = frame.get(1..).unwrap_or_default();
    let header = &header[..header.iter().position(|&b| b == b'\r').unwrap_or(0)];
    let null = std::str::from_utf8(header)
        .ok()
        .and_then(|n| n.parse::<i64>().ok())
        == Some(-1);
    let ok = match (frame.first(), value) {
        (Some(b'+'), Value::SimpleString(_)) => true,
        (Some(b'-'), Value::Error(_)) => true,
        (Some(b':'), Value::Integer(_)) => true,
        (Some(b'$'), Value::Bulk(b)) => b.is_none() == null,
        (Some(b'*'), Value::Array(a)) => a.is_none() == null,
        _ => false,
    };
    assert!(ok, "{value:?} is not what its frame says");
    let verdict = match value {
        Value::Bulk(Some(v)) if v.as_slice() != b"0" => Verdict::Allowed,
        Value::Bulk(_) => Verdict::Denied,
        _ => Verdict::Unavailable,
    };
    assert_eq!(resp::allowlist_verdict(value), verdict);
}

/// The RESP parser: chunked == whole, frames stand alone, nothing waits past the bound, and
/// an encoded command parses back to its arguments.
pub fn resp(data: &[u8]) {
    let plan = Plan::of(data);
    let whole = resp_run(&[plan.stream]);
    assert_eq!(
        resp_run(&plan.chunks()),
        whole,
        "chunked feed differs from whole"
    );

    // The client side too: the stream's bytes cut at each NUL as a command's arguments.
    let args: Vec<&[u8]> = plan.stream.split(|&b| b == 0).take(8).collect();
    let mut command = Vec::new();
    resp::encode_command(&args, &mut command);
    let want = resp::Value::Array(Some(
        args.iter()
            .map(|a| resp::Value::Bulk(Some(a.to_vec())))
            .collect(),
    ));
    assert_eq!(resp::parse(&command), Ok(Some((want, command.len()))));
}

// ---------------------------------------------------------------------------
// Captured frames and pcap files
// ---------------------------------------------------------------------------

/// The frame parser: flags pick the link type (0 Ethernet, 1 Linux cooked, 2 raw IP); the
/// whole stream is one frame and each planned chunk end is a snap length that cuts it.
/// A cut frame never reads differently from the whole one: the same headers, the same
/// lengths from the header fields, a payload that is a prefix of the whole one's; and a
/// frame that fails whole fails cut too.
pub fn packet(data: &[u8]) {
    use protocols::packet::{self, LinkType, Relative, Transport};
    let plan = Plan::of(data);
    let link = match plan.flags % 3 {
        0 => LinkType::Ethernet,
        1 => LinkType::LinuxSll,
        _ => LinkType::RawIp,
    };
    let frame = plan.stream;
    let whole = packet::parse_frame_as(link, frame);
    let mut relative = Relative::new();
    if let Ok(f) = &whole {
        packet_valid(f);
        packet::summary(f, &mut relative);
    }
    let mut cut = 0;
    for chunk in plan.chunks() {
        cut += chunk.len();
        let part = packet::parse_frame_as(link, &frame[..cut]);
        let (Ok(p), Ok(w)) = (&part, &whole) else {
            assert!(
                part.is_err() || whole.is_ok(),
                "a cut frame read, the whole failed"
            );
            continue;
        };
        packet_valid(p);
        packet::summary(p, &mut relative);
        assert_eq!(p.link, w.link, "the link header changed with the cut");
        assert_eq!(p.ip, w.ip, "the IP header changed with the cut");
        match (p.transport, w.transport) {
            (Some(Transport::Tcp(a)), Some(Transport::Tcp(b))) => {
                assert_eq!(
                    (a.src_port, a.dst_port, a.seq, a.ack, a.flags, a.window),
                    (b.src_port, b.dst_port, b.seq, b.ack, b.flags, b.window)
                );
                assert_eq!((a.header_len, a.payload_len), (b.header_len, b.payload_len));
                assert!(b.payload.starts_with(a.payload), "payload not a prefix");
            }
            (Some(Transport::Udp(a)), Some(Transport::Udp(b))) => {
                assert_eq!(
                    (a.src_port, a.dst_port, a.length),
                    (b.src_port, b.dst_port, b.length)
                );
                assert!(b.payload.starts_with(a.payload), "payload not a prefix");
            }
            // Cut inside the transport header, or another protocol.
            (Some(Transport::Bad(_)), _) | (Some(Transport::Other(..)), _) | (None, None) => {}
            (a, b) => panic!("cut frame reads {a:?}, whole {b:?}"),
        }
    }
}

/// What any frame that reads must satisfy: lengths that add up, slices within the frame.
fn packet_valid(f: &protocols::packet::Frame) {
    use protocols::packet::Transport;
    let Some(ip) = f.ip else {
        assert!(f.transport.is_none());
        return;
    };
    match f.transport {
        Some(Transport::Tcp(t)) => {
            assert_eq!(
                t.header_len + t.payload_len,
                ip.payload_len(),
                "TCP lengths"
            );
            assert!(
                t.payload.len() <= t.payload_len,
                "more payload than the segment"
            );
            assert!((20..=60).contains(&t.header_len));
        }
        Some(Transport::Udp(u)) => {
            assert_eq!(u.payload_len + 8, u.length, "UDP lengths");
            assert!(u.length <= ip.payload_len(), "UDP longer than its packet");
            assert!(u.payload.len() <= u.payload_len);
        }
        Some(_) => {}
        None => panic!("an IP packet without a transport"),
    }
}

/// The pcap reader: any bytes give records or an error, never a panic; what it read,
/// written again with the writer, reads back the same (times to the microsecond).
pub fn pcap(data: &[u8]) {
    use protocols::pcap::{Reader, Writer};
    let plan = Plan::of(data);
    let Ok(reader) = Reader::new(plan.stream) else {
        return;
    };
    let (link, nanos) = (reader.link_type(), reader.nanos());
    let packets: Vec<_> = reader.take(64).map_while(Result::ok).collect();
    let mut writer = Writer::new(Vec::new(), link, protocols::pcap::MAX_CAPTURED).unwrap();
    for p in &packets {
        writer.packet(p.time, &p.data, p.orig_len).unwrap();
    }
    let bytes = writer.into_inner();
    let again = Reader::new(&bytes[..]).unwrap();
    assert_eq!(again.link_type(), link);
    let back: Vec<_> = again.map(Result::unwrap).collect();
    assert_eq!(back.len(), packets.len(), "records lost in the round trip");
    for (a, b) in packets.iter().zip(&back) {
        assert_eq!((&a.data, a.orig_len), (&b.data, b.orig_len));
        let micros = |t: std::time::Duration| (t.as_secs() as u32, t.subsec_micros());
        assert_eq!(
            micros(a.time),
            micros(b.time),
            "time changed (nanos: {nanos})"
        );
    }
}
