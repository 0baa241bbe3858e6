//! SOCKS5's rules (lessons 12–14), each a step: written once, walked by the checker
//! (`make check-12`) and by the project's suite (tests/common/socks5.rs). Also the loopback
//! targets the proxy connects to.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use protocols::socks5::{client, Command as Cmd, Reply, Target};

use crate::client::{show, wait, Conn, Failure, Outcome};

/// Accepts on `listener` forever, one thread (small stack) per connection.
pub fn serve_each(listener: TcpListener, handle: impl Fn(TcpStream) + Send + Sync + 'static) {
    let handle = Arc::new(handle);
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let handle = handle.clone();
            let _ = thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || handle(conn));
        }
    });
}

/// A listener on a free loopback port.
pub fn loopback_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("getsockname");
    (listener, addr)
}

/// Echoes every byte back; passes the client's EOF on as its own.
pub fn echo_target() -> SocketAddr {
    let (listener, addr) = loopback_listener();
    serve_each(listener, |mut conn| {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = conn.shutdown(Shutdown::Write);
    });
    addr
}

/// Reads until EOF and only then answers `got N bytes`, and closes.
pub fn reply_after_eof_target() -> SocketAddr {
    let (listener, addr) = loopback_listener();
    serve_each(listener, |mut conn| {
        let mut all = Vec::new();
        if conn.read_to_end(&mut all).is_ok() {
            let _ = conn.write_all(format!("got {} bytes\n", all.len()).as_bytes());
        }
    });
    addr
}

/// Sends to whoever connects, as fast as it is taken, up to `limit` bytes, counting them in
/// the returned counter: the target of a client that stops reading. A write that waits
/// longer than the wait ends it, as does the relay's close.
pub fn flood_target(limit: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let (listener, addr) = loopback_listener();
    let sent = Arc::new(AtomicUsize::new(0));
    let count = sent.clone();
    serve_each(listener, move |mut conn| {
        conn.set_write_timeout(Some(wait() * 2)).ok();
        let chunk = vec![b'f'; 64 * 1024];
        let mut total = 0;
        while total < limit {
            match conn.write(&chunk) {
                Ok(n) => {
                    total += n;
                    count.fetch_add(n, Ordering::Relaxed);
                }
                Err(_) => break,
            }
        }
    });
    (addr, sent)
}

/// A TCP socket bound to a free port on 127.0.0.1 (not listening), and its address: the
/// kernel answers a SYN to it with RST, and no one else gets the port while it is kept.
pub fn bound_loopback() -> (OwnedFd, SocketAddr) {
    // SAFETY: plain socket calls on a fresh fd, with sockaddr structs of the sizes given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        assert_eq!(
            libc::bind(raw, (&sin as *const libc::sockaddr_in).cast(), len),
            0
        );
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut got_len = len;
        libc::getsockname(
            raw,
            (&mut got as *mut libc::sockaddr_in).cast(),
            &mut got_len,
        );
        let port = u16::from_be(got.sin_port);
        (fd, SocketAddr::from(([127, 0, 0, 1], port)))
    }
}

/// `len` pseudo-random bytes (xorshift, seeded): reproducible test data.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A stream's own read, bounded by the wait: bytes until `parse` has a whole message.
fn read_message<T>(
    c: &mut Conn,
    what: &str,
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, protocols::socks5::Error>,
) -> Result<T, Failure> {
    let mut buf = Vec::new();
    c.stream.set_read_timeout(Some(wait())).ok();
    loop {
        match parse(&buf) {
            Ok(Some((value, _))) => return Ok(value),
            Ok(None) => {}
            Err(e) => {
                return Err(Failure::new(
                    show(&c.sent),
                    what,
                    format!("{} ({e:?})", show(&buf)),
                ))
            }
        }
        let mut byte = [0u8; 1];
        // One byte at a time: nothing after the message is consumed.
        let got = match c.stream.read(&mut byte) {
            Ok(0) => format!("{}, then the connection closed", show(&buf)),
            Ok(_) => {
                buf.push(byte[0]);
                continue;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if buf.is_empty() {
                    format!("nothing within {} s", wait().as_secs())
                } else {
                    format!("{}, then nothing within {} s", show(&buf), wait().as_secs())
                }
            }
            Err(e) => format!("{}, then {e}", show(&buf)),
        };
        return Err(Failure::new(show(&c.sent), what, got));
    }
}

/// Sends the greeting (no auth) and expects method 0x00.
pub fn greet(c: &mut Conn) -> Outcome {
    c.send(client::greeting(&[0]).expect("greeting"))?;
    let method = read_message(
        c,
        "\"\\x05\\x00\" (version 5, method 0: no auth)",
        client::parse_method_selection,
    )?;
    if method != 0 {
        return Err(Failure::new(
            show(&c.sent),
            "method 0x00",
            format!("method {method:#04x}"),
        ));
    }
    Ok(())
}

/// Reads a reply and expects `want`; returns BND.
pub fn expect_reply(c: &mut Conn, want: Reply) -> Result<Target, Failure> {
    let what = format!("a reply with REP {:#04x} ({want:?})", want as u8);
    let (rep, bnd) = read_message(c, &what, |b| {
        Ok(client::parse_reply(b)?.map(|(rep, bnd, used)| ((rep, bnd), used)))
    })?;
    if rep != want {
        return Err(Failure::new(
            show(&c.sent),
            what,
            format!("REP {:#04x} ({rep:?})", rep as u8),
        ));
    }
    Ok(bnd)
}

/// BND must be the relay's outgoing address: loopback and a real port, not 0.0.0.0:0.
fn bnd_is_outgoing(c: &Conn, bnd: &Target) -> Outcome {
    match bnd {
        Target::Ip(a) if a.ip().is_loopback() && a.port() != 0 => Ok(()),
        other => Err(Failure::new(
            show(&c.sent),
            "BND.ADDR:BND.PORT = the outgoing socket's address (getsockname)",
            format!("{other}"),
        )),
    }
}

/// A relayed connection to `target` through `proxy`, with the success reply read.
pub fn open(proxy: SocketAddr, target: SocketAddr) -> Result<Conn, Failure> {
    open_from(Conn::open(proxy)?, target)
}

/// [`open`] on a connection made already.
fn open_from(mut c: Conn, target: SocketAddr) -> Result<Conn, Failure> {
    greet(&mut c)?;
    c.send(client::connect_request(&Target::Ip(target)).expect("request"))?;
    let bnd = expect_reply(&mut c, Reply::Succeeded)?;
    bnd_is_outgoing(&c, &bnd)?;
    Ok(c)
}

/// The greeting is answered with method 0x00.
pub fn greeting(proxy: SocketAddr) -> Outcome {
    greet(&mut Conn::open(proxy)?)
}

/// CONNECT to an echo target: success, a real BND, and bytes relayed both ways.
pub fn connect_and_relay(proxy: SocketAddr) -> Outcome {
    let mut c = open(proxy, echo_target())?;
    c.send("ping")?;
    c.expect(b"ping")
}

/// The greeting and the request sent one byte per segment: the same answers.
pub fn byte_by_byte(proxy: SocketAddr) -> Outcome {
    let echo = echo_target();
    let mut c = Conn::open(proxy)?;
    let greeting = client::greeting(&[0]).expect("greeting");
    c.send_bytewise(&greeting)?;
    let method = read_message(&mut c, "method 0x00", client::parse_method_selection)?;
    if method != 0 {
        return Err(Failure::new(
            show(&c.sent),
            "method 0x00",
            format!("{method:#04x}"),
        ));
    }
    c.send_bytewise(&client::connect_request(&Target::Ip(echo)).expect("request"))?;
    let bnd = expect_reply(&mut c, Reply::Succeeded)?;
    bnd_is_outgoing(&c, &bnd)?;
    c.send("ping")?;
    c.expect(b"ping")
}

/// Greeting + request + 20,000 bytes of payload in one write: the payload reaches the target.
pub fn everything_in_one_write(proxy: SocketAddr) -> Outcome {
    let echo = echo_target();
    let mut c = Conn::open(proxy)?;
    let mut bytes = client::greeting(&[0]).expect("greeting");
    bytes.extend(client::connect_request(&Target::Ip(echo)).expect("request"));
    let payload = pseudo_random(20_000, 3);
    bytes.extend_from_slice(&payload);
    c.send(&bytes)?;
    read_message(&mut c, "method 0x00", client::parse_method_selection)?;
    expect_reply(&mut c, Reply::Succeeded)?;
    c.expect(&payload).map_err(|f| Failure {
        expected: "the 20,000 payload bytes sent with the request, echoed".into(),
        ..f
    })
}

/// The client sends 100,000 bytes, then half-closes; the target answers only after that
/// EOF, and the answer still reaches the client.
pub fn half_close(proxy: SocketAddr) -> Outcome {
    let mut c = open(proxy, reply_after_eof_target())?;
    c.send(pseudo_random(100_000, 5))?;
    c.finish();
    c.sent = b"100,000 bytes, then shutdown(SHUT_WR)".to_vec();
    let got = c.rest()?;
    if got != b"got 100000 bytes\n" {
        return Err(Failure::new(
            "100,000 bytes, then shutdown(SHUT_WR)",
            "\"got 100000 bytes\\n\" (the target's answer to our EOF), then the close",
            format!("{}, then the close", show(&got)),
        ));
    }
    Ok(())
}

/// Nothing listens on the target port: REP 0x05 (connection refused), then the close.
pub fn refused(proxy: SocketAddr) -> Outcome {
    let (_kept, port) = bound_loopback();
    let mut c = Conn::open(proxy)?;
    greet(&mut c)?;
    c.send(client::request(Cmd::Connect, &Target::Ip(port)).expect("request"))?;
    expect_reply(&mut c, Reply::ConnectionRefused)?;
    c.expect_close()
}

// ---------------------------------------------------------------------------------------
// UDP ASSOCIATE (lesson 16).
// ---------------------------------------------------------------------------------------

/// A UDP echo server on 127.0.0.1: every datagram back to its sender; counts them.
pub fn udp_echo() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = sock.local_addr().expect("getsockname");
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = sock.send_to(&buf[..n], from);
        }
    });
    (addr, seen)
}

/// A UDP ASSOCIATE for datagrams from `from`: the control connection and BND (a real
/// address: not 0.0.0.0, not port 0).
pub fn associate(proxy: SocketAddr, from: SocketAddr) -> Result<(Conn, SocketAddr), Failure> {
    let mut c = Conn::open(proxy)?;
    greet(&mut c)?;
    c.send(client::request(Cmd::UdpAssociate, &Target::Ip(from)).expect("request"))?;
    match expect_reply(&mut c, Reply::Succeeded)? {
        Target::Ip(bnd) if !bnd.ip().is_unspecified() && bnd.port() != 0 => Ok((c, bnd)),
        bnd => Err(Failure::new(
            show(&c.sent),
            "BND: the relay's UDP address, one the client can send to",
            format!("{bnd:?}"),
        )),
    }
}

/// A client UDP socket on loopback with the checker's wait on reads.
pub fn udp_client() -> std::net::UdpSocket {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    sock.set_read_timeout(Some(wait())).ok();
    sock
}

/// Sends `payload` for `target` through `bnd`, and expects it back with a header naming
/// `target`.
pub fn udp_round_trip(
    sock: &std::net::UdpSocket,
    bnd: SocketAddr,
    target: SocketAddr,
    payload: &[u8],
) -> Outcome {
    let datagram = protocols::socks5_udp::wrap(&Target::Ip(target), payload).expect("wrap");
    let sent = show(&datagram);
    sock.send_to(&datagram, bnd)
        .map_err(|e| Failure::new(&sent, "sendto the relay", e.to_string()))?;
    let mut buf = vec![0u8; 65_536];
    let n = sock.recv(&mut buf).map_err(|e| {
        Failure::new(
            &sent,
            "the echo, back through the relay",
            format!("nothing ({e})"),
        )
    })?;
    let want = protocols::socks5_udp::wrap(&Target::Ip(target), payload).expect("wrap");
    if buf[..n] != want[..] {
        return Err(Failure::new(&sent, show(&want), show(&buf[..n])));
    }
    Ok(())
}

/// UDP ASSOCIATE, then a datagram to a UDP echo server and back, with its header.
pub fn udp_relay(proxy: SocketAddr) -> Outcome {
    let (echo, _) = udp_echo();
    let sock = udp_client();
    let (_control, bnd) = associate(proxy, sock.local_addr().expect("getsockname"))?;
    udp_round_trip(&sock, bnd, echo, b"ping")?;
    udp_round_trip(&sock, bnd, echo, &[7u8; 4000])
}

/// A datagram from another port than the client's is dropped: only the client's own
/// datagram reaches the target.
pub fn udp_wrong_source(proxy: SocketAddr) -> Outcome {
    let (echo, seen) = udp_echo();
    let (sock, stranger) = (udp_client(), udp_client());
    let (_control, bnd) = associate(proxy, sock.local_addr().expect("getsockname"))?;
    let bounce = protocols::socks5_udp::wrap(&Target::Ip(echo), b"bounce").expect("wrap");
    let _ = stranger.send_to(&bounce, bnd);
    udp_round_trip(&sock, bnd, echo, b"mine")?;
    match seen.load(std::sync::atomic::Ordering::SeqCst) {
        1 => Ok(()),
        n => Err(Failure::new(
            show(&bounce),
            "a datagram from another port dropped: 1 datagram at the target",
            format!("{n} datagrams at the target: an open relay"),
        )),
    }
}

/// A client that stops reading while its target keeps sending must stall no one else: the
/// relay stops reading that target once its buffer is full (backpressure, POLLOUT), and a
/// second client's greeting, CONNECT and round trip are answered meanwhile. A relay whose
/// write blocks sleeps in write(2) to the first client, and the second hears nothing.
/// `observe` says what the server is doing, while the first client is still stalled.
pub fn stalled_client_stalls_no_other(
    proxy: SocketAddr,
    observe: &dyn Fn() -> Option<String>,
) -> Outcome {
    let (target, sent) = flood_target(1 << 30);
    let mut stalled = open_from(Conn::open_with_rcvbuf(proxy, 4096)?, target)?;
    stalled.sent = b"nothing: it reads nothing".to_vec();
    // Until the target's bytes stop moving (every buffer on the way is full), within the wait.
    let until = Instant::now() + wait();
    let mut last = sent.load(Ordering::Relaxed);
    loop {
        thread::sleep(Duration::from_millis(100));
        let now = sent.load(Ordering::Relaxed);
        if (now == last && now > 0) || Instant::now() > until {
            break;
        }
        last = now;
    }
    let second = open(proxy, echo_target()).and_then(|mut c| {
        c.send("ping")?;
        c.expect(b"ping")
    });
    let seen = second.is_err().then(observe).flatten();
    stalled.reset();
    second.map_err(|f| Failure {
        sent: format!(
            "a second client's greeting, CONNECT and \"ping\", while a first one (SO_RCVBUF \
             4 KiB) reads nothing of the {} bytes its target has sent",
            sent.load(Ordering::Relaxed)
        ),
        got: match seen {
            Some(what) => format!("{}; meanwhile {what}", f.got),
            None => f.got,
        },
        ..f
    })
}
