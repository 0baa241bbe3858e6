//! The echo protocol's rules (lessons 03–11), each a step: written once, walked by the checker
//! (`make check-NN`) and by the project's integration suite (tests/common/echo_suite.rs).
//!
//! A step connects to `addr`, talks, and returns what went wrong as a [`Failure`].

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use crate::client::{show, Conn, Failure, Outcome};

pub const WELCOME: &[u8] = b"Welcome buddy!\n";

/// Connects and expects the welcome.
pub fn welcomed(addr: SocketAddr) -> Result<Conn, Failure> {
    let mut c = Conn::open(addr)?;
    c.expect(WELCOME).map_err(|f| Failure {
        sent: "(nothing: just connected)".into(),
        ..f
    })?;
    Ok(c)
}

/// On connect the server sends `Welcome buddy!\n`; `q` then closes the connection.
pub fn welcome(addr: SocketAddr) -> Outcome {
    let mut c = welcomed(addr)?;
    c.send("q\n")?;
    c.expect_close()
}

/// Each line comes back reversed.
pub fn reverse(addr: SocketAddr) -> Outcome {
    let mut c = welcomed(addr)?;
    c.round_trip(b"hello", b"olleh")?;
    c.round_trip(b"Hello there, buddy!", b"!yddub ,ereht olleH")?;
    c.round_trip(b"a", b"a")
}

/// One trailing `\r` is stripped, any other is a character.
pub fn crlf(addr: SocketAddr) -> Outcome {
    let mut c = welcomed(addr)?;
    c.send("abc\r\n")?;
    c.expect(b"cba\n")?;
    c.send("a\rb\r\r\n")?;
    c.expect(b"\rb\ra\n")
}

/// Several lines in one segment: each answered.
pub fn coalesced_lines(addr: SocketAddr) -> Outcome {
    let mut c = welcomed(addr)?;
    c.send("one\ntwo\r\nthree\n")?;
    c.expect(b"eno\nowt\neerht\n")
}

/// A line in pieces (flushed one by one, then byte by byte): answered once whole.
pub fn split_lines(addr: SocketAddr) -> Outcome {
    let mut c = welcomed(addr)?;
    c.stream.set_nodelay(true).ok();
    let pieces = ["sp", "l", "it li", "ne", "\r", "\nnext", " one\n"];
    for piece in pieces {
        c.send(piece)?;
        // Separate reads are likely (nothing to wait for: no answer is due yet).
        thread::sleep(Duration::from_millis(5));
    }
    c.sent = pieces.concat().into_bytes();
    c.expect(b"enil tilps\neno txen\n")?;
    c.send_bytewise(b"bytes\n")?;
    c.expect(b"setyb\n")
}

/// Reversed by characters, not bytes.
pub fn utf8(addr: SocketAddr) -> Outcome {
    let mut c = welcomed(addr)?;
    c.round_trip("héllo wörld".as_bytes(), "dlröw olléh".as_bytes())?;
    c.round_trip("こんにちは 🦀".as_bytes(), "🦀 はちにんこ".as_bytes())
}

/// Bytewise where the line is not UTF-8.
pub fn invalid_utf8(addr: SocketAddr) -> Outcome {
    let mut c = welcomed(addr)?;
    c.send(b"a\xffb\xc3\x00z\n")?;
    c.expect(b"z\x00\xc3b\xffa\n")?;
    c.round_trip(b"still here", b"ereh llits")
}

/// Empty lines are lines.
pub fn empty_line(addr: SocketAddr) -> Outcome {
    let mut c = welcomed(addr)?;
    c.send("\n\r\nx\n")?;
    c.expect(b"\n\nx\n")
}

/// The replies to the lines before `q`, sent in the same write, arrive before the close.
pub fn q_flushes_earlier_replies(addr: SocketAddr) -> Outcome {
    let mut c = welcomed(addr)?;
    c.send("one\ntwo\nq\n")?;
    let got = c.rest()?;
    if got != b"eno\nowt\n" {
        return Err(Failure::new(
            "\"one\\ntwo\\nq\\n\"",
            "\"eno\\nowt\\n\", then the close",
            format!("{}, then the close", show(&got)),
        ));
    }
    Ok(())
}

/// A client that vanishes mid-line: the next client is served.
pub fn next_after_eof(addr: SocketAddr) -> Outcome {
    let mut a = welcomed(addr)?;
    a.round_trip(b"first", b"tsrif")?;
    a.send("half a li")?;
    drop(a);
    let mut b = welcomed(addr)?;
    b.round_trip(b"next", b"txen")
}

/// A client that resets mid-line: the next client is served.
pub fn next_after_reset(addr: SocketAddr) -> Outcome {
    let mut a = welcomed(addr)?;
    a.round_trip(b"before reset", b"teser erofeb")?;
    a.send("partial")?;
    a.reset();
    let mut b = welcomed(addr)?;
    b.round_trip(b"after reset", b"teser retfa")
}

/// A line over 64 KiB: `error: line too long\n` and the close; the server lives on.
pub fn line_too_long(addr: SocketAddr) -> Outcome {
    let mut c = welcomed(addr)?;
    c.round_trip(b"short", b"trohs")?;
    let stream = c
        .stream
        .try_clone()
        .map_err(|e| Failure::new("", "", e.to_string()))?;
    let writer = thread::spawn(move || {
        use std::io::Write;
        let mut stream = stream;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..16 {
            if stream.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = stream.write_all(b"\n");
    });
    c.sent = b"1 MiB of x without a newline".to_vec();
    let result = c.expect(b"error: line too long\n");
    let _ = c.rest();
    let _ = writer.join();
    result.map_err(|f| Failure {
        sent: "1 MiB of x, no newline".into(),
        ..f
    })?;
    let mut d = welcomed(addr)?;
    d.round_trip(b"ok", b"ko")
}

/// 1,000 lines of 100 bytes: more replies than the client's receive buffer takes while it
/// is still writing, so some wait in the server's send queue when it stops reading.
fn lines_and_replies() -> (Vec<u8>, Vec<u8>) {
    let (mut lines, mut replies) = (Vec::new(), Vec::new());
    for i in 0..1000 {
        let line = format!("{i:0>99}");
        lines.extend(format!("{line}\n").bytes());
        replies.extend(line.bytes().rev().chain([b'\n']));
    }
    (lines, replies)
}

/// Sends `head`, then 1 MB of junk, then half-closes (write errors ignored: the server stops
/// reading), and only then reads: `tries` times, each must get `replies` then the close.
fn head_then_junk(
    addr: SocketAddr,
    head: &[u8],
    replies: &[u8],
    tries: usize,
    sent: &str,
) -> Outcome {
    for _ in 0..tries {
        let mut c = welcomed(addr)?;
        let mut bytes = head.to_vec();
        bytes.resize(head.len() + 1_000_000, b'x');
        let mut stream = c
            .stream
            .try_clone()
            .map_err(|e| Failure::new("", "", e.to_string()))?;
        let writer = thread::spawn(move || {
            use std::io::Write;
            let _ = stream.write_all(&bytes);
            let _ = stream.shutdown(std::net::Shutdown::Write);
        });
        let _ = writer.join();
        let got = c.rest()?;
        if got != replies {
            return Err(Failure::new(
                sent,
                format!("all {} bytes of replies, then the close", replies.len()),
                format!(
                    "{} bytes, then the close (a reset threw the rest away)",
                    got.len()
                ),
            ));
        }
    }
    Ok(())
}

/// 1,000 lines, `q`, then 1 MB of junk: every reply arrives (the lingering close:
/// shutdown(SHUT_WR), drain, close), none thrown away by a reset. `tries` connections.
pub fn q_then_junk_keeps_replies(addr: SocketAddr, tries: usize) -> Outcome {
    let (mut head, replies) = lines_and_replies();
    head.extend_from_slice(b"q\n");
    let sent = "1,000 lines, q, then 1 MB more before reading anything";
    head_then_junk(addr, &head, &replies, tries, sent)
}

/// From a client whose receive buffer is 4 KiB and who reads 1 KiB a millisecond: 1,000
/// lines, `q` and 64 KiB more. When the server reads the `q`, replies still wait in its send
/// queue for the slow reader; every one must arrive, then the close. The lingering close
/// (shutdown(SHUT_WR), then read until the client closes) lets them; a close right after the
/// shutdown, with input unread, resets and throws the queue away. `tries` connections.
pub fn slow_reader_keeps_replies(addr: SocketAddr, tries: usize) -> Outcome {
    let (mut bytes, replies) = lines_and_replies();
    bytes.extend_from_slice(b"q\n");
    bytes.resize(bytes.len() + 64 * 1024, b'x');
    let sent = "from a client with SO_RCVBUF 4 KiB: 1,000 lines, q and 64 KiB more, its replies \
                read 1 KiB a millisecond";
    for _ in 0..tries {
        let mut c = Conn::open_with_rcvbuf(addr, 4096)?;
        c.expect(WELCOME)?;
        let mut stream = c
            .stream
            .try_clone()
            .map_err(|e| Failure::new("", "", e.to_string()))?;
        let data = bytes.clone();
        let writer = thread::spawn(move || {
            use std::io::Write;
            // Write errors are ignored: a server that resets makes them.
            let _ = stream.write_all(&data);
            let _ = stream.shutdown(std::net::Shutdown::Write);
        });
        let outcome = c.rest_slowly(1024, Duration::from_millis(1));
        let _ = writer.join();
        let (got, end) = outcome.map_err(|f| Failure {
            sent: sent.into(),
            ..f
        })?;
        if got != replies {
            return Err(Failure::new(
                sent,
                format!("all {} bytes of replies, then the close", replies.len()),
                format!(
                    "{} bytes, then {end}: the replies still queued were lost",
                    got.len()
                ),
            ));
        }
    }
    Ok(())
}

/// 1,000 lines, then a line over 64 KiB and more input: the replies and `error: line too
/// long` all arrive, not reset away. `tries` connections.
pub fn too_long_then_more_keeps_error(addr: SocketAddr, tries: usize) -> Outcome {
    let (head, mut replies) = lines_and_replies();
    replies.extend_from_slice(b"error: line too long\n");
    let sent = "1,000 lines, then 1 MB without a newline, before reading anything";
    head_then_junk(addr, &head, &replies, tries, sent)
}

/// The fd count of `pid` after `n` clients that end every way (q, EOF mid-line, reset) is
/// the count before them: every accepted fd is closed on every path. The first and the last
/// client half-close and read until the server closes (after `q` a server lingers until the
/// client closes, so its close would not be seen).
pub fn fd_count_back(addr: SocketAddr, pid: u32, n: usize) -> Outcome {
    let mut first = welcomed(addr)?;
    first.finish();
    first.rest()?;
    let start = crate::model::fd_count(pid);
    for i in 0..n {
        let mut conn = welcomed(addr)?;
        match i % 3 {
            0 => {
                conn.send("abc\nq\n")?;
                let got = conn.rest()?;
                if got != b"cba\n" {
                    return Err(Failure::new(
                        "\"abc\\nq\\n\"",
                        "\"cba\\n\", then the close",
                        show(&got),
                    ));
                }
            }
            1 => {
                conn.send("half a line")?;
                drop(conn);
            }
            _ => conn.reset(),
        }
    }
    let mut last = welcomed(addr)?;
    last.finish();
    last.rest()?;
    let until = std::time::Instant::now() + crate::client::wait();
    loop {
        let now = crate::model::fd_count(pid);
        if now == start {
            return Ok(());
        }
        if std::time::Instant::now() > until {
            return Err(Failure::new(
                format!("{n} clients: q, EOF mid-line and reset"),
                format!("{start} open fds afterwards, as before them (/proc/PID/fd)"),
                format!("{now} open fds: {} never closed", now as i64 - start as i64),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}
