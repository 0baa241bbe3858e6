//! The kinds against lesson 16's UDP ASSOCIATE: each opens an association (a TCP control
//! connection and the relay's UDP address, BND), relays through it to a UDP echo server of
//! its own on loopback, and watches for the mistake: a stranger's datagram relayed (an open
//! relay), a big datagram cut (truncation), an association still relaying after its control
//! connection closed (a leak).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use protocols::socks5::{client, Command, Reply, Target};
use protocols::socks5_udp::{parse_header, wrap};

use crate::peer::patience;
use crate::{Outcome, Provoked};

/// A UDP echo server on 127.0.0.1: every datagram back to its sender; counts them.
fn echo() -> Result<(SocketAddr, Arc<AtomicUsize>), String> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = sock.send_to(&buf[..n], from);
        }
    });
    Ok((addr, seen))
}

/// A UDP ASSOCIATE from `from`: the control connection and BND.
fn associate(proxy: SocketAddr, from: SocketAddr) -> Result<(TcpStream, SocketAddr), String> {
    let mut s = TcpStream::connect_timeout(&proxy, patience())
        .map_err(|e| format!("connect to {proxy}: {e}"))?;
    s.set_read_timeout(Some(patience()))
        .map_err(|e| e.to_string())?;
    let mut hello = client::greeting(&[0]).expect("one method");
    hello.extend(client::request(Command::UdpAssociate, &Target::Ip(from)).expect("an IP"));
    s.write_all(&hello).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    loop {
        let parsed = client::parse_method_selection(&buf)
            .ok()
            .flatten()
            .map(|(_, used)| client::parse_reply(&buf[used..]));
        match parsed {
            Some(Ok(Some((Reply::Succeeded, Target::Ip(bnd), _)))) => return Ok((s, bnd)),
            Some(Ok(Some((rep, _, _)))) => return Err(format!("UDP ASSOCIATE refused: {rep}")),
            Some(Err(e)) => return Err(format!("a bad reply: {e}")),
            _ => {}
        }
        let mut chunk = [0u8; 64];
        match s.read(&mut chunk) {
            Ok(0) => return Err("the proxy closed before its reply".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("waiting for the reply: {e}")),
        }
    }
}

fn client_socket() -> Result<UdpSocket, String> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    sock.set_read_timeout(Some(patience()))
        .map_err(|e| e.to_string())?;
    Ok(sock)
}

/// Sends `payload` to `target` through `bnd`; the payload of the reply, if one came.
fn round_trip(
    sock: &UdpSocket,
    bnd: SocketAddr,
    target: SocketAddr,
    payload: &[u8],
) -> Option<Vec<u8>> {
    sock.send_to(&wrap(&Target::Ip(target), payload).ok()?, bnd)
        .ok()?;
    let mut buf = vec![0u8; 65_536];
    let n = sock.recv(&mut buf).ok()?;
    let (_, used) = parse_header(&buf[..n]).ok()?;
    Some(buf[used..n].to_vec())
}

/// A stranger (another port of this machine) sends through the client's association: the
/// relay must drop it (`--mistake any-source` relays it: an open relay).
pub fn open_relay(proxy: SocketAddr) -> Provoked {
    let (target, seen) = echo()?;
    let (sock, stranger) = (client_socket()?, client_socket()?);
    let from = sock.local_addr().map_err(|e| e.to_string())?;
    let (_control, bnd) = associate(proxy, from)?;
    let d = wrap(&Target::Ip(target), b"bounced").map_err(|e| e.to_string())?;
    stranger
        .send_to(&d, bnd)
        .map_err(|e| format!("sendto: {e}"))?;
    // The client's own datagram, sent after: once its echo is back, the stranger's (read
    // first from the same socket) was relayed or dropped.
    let mut echoes = 0;
    while let Some(back) = round_trip(&sock, bnd, target, b"mine") {
        echoes += 1;
        if back == b"mine" || echoes > 2 {
            break;
        }
    }
    let relayed = seen.load(Ordering::SeqCst);
    let did = format!(
        "association for {from}; a datagram from {} to {bnd}",
        stranger.local_addr().map_err(|e| e.to_string())?
    );
    Ok(match relayed {
        0 => {
            return Err(format!(
                "{did}: the client's own datagram never reached {target}"
            ))
        }
        1 => Outcome::new(
            true,
            format!("{did}: dropped (only the client's reached the target)"),
        ),
        _ => Outcome::new(
            false,
            format!("{did}: relayed to {target}: an open UDP relay"),
        ),
    })
}

/// Datagrams of 1,000, 4,000 and 65,000 bytes there and back: each must come back whole
/// (`--mistake small-buffer` cuts what is longer than its buffer: MSG_TRUNC).
pub fn truncation(proxy: SocketAddr) -> Provoked {
    let (target, _) = echo()?;
    let sock = client_socket()?;
    let from = sock.local_addr().map_err(|e| e.to_string())?;
    let (_control, bnd) = associate(proxy, from)?;
    for size in [1_000, 4_000, 65_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        match round_trip(&sock, bnd, target, &payload) {
            Some(back) if back == payload => {}
            Some(back) => {
                let line = format!(
                    "a {size}-byte datagram came back as {} bytes: cut",
                    back.len()
                );
                return Ok(Outcome::new(false, line));
            }
            None => {
                let line =
                    format!("a {size}-byte datagram never came back (truncated and dropped?)");
                return Ok(Outcome::new(false, line));
            }
        }
    }
    Ok(Outcome::new(
        true,
        "datagrams of 1,000, 4,000 and 65,000 bytes came back whole",
    ))
}

/// Uses an association, closes its control connection, then sends to the old BND from a
/// connected UDP socket: the relay's port must close (the kernel answers ICMP port
/// unreachable, which the connected socket reports as ECONNREFUSED); a leaked association
/// keeps relaying.
pub fn leaky_association(proxy: SocketAddr) -> Provoked {
    let (target, seen) = echo()?;
    let sock = client_socket()?;
    let from = sock.local_addr().map_err(|e| e.to_string())?;
    let (control, bnd) = associate(proxy, from)?;
    if round_trip(&sock, bnd, target, b"before").is_none() {
        return Err(format!("nothing came back through {bnd}"));
    }
    drop(control);
    // connect(2) on a UDP socket: it now hears the ICMP errors for what it sends.
    sock.connect(bnd).map_err(|e| format!("connect: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    let d = wrap(&Target::Ip(target), b"after").map_err(|e| e.to_string())?;
    let deadline = Instant::now() + patience();
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        // Paced (each try waits up to 50 ms for an answer, and 10 ms after one): bounded.
        thread::sleep(Duration::from_millis(10));
        let _ = sock.send(&d);
        match sock.recv(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                let line = format!("control connection closed: {bnd} refuses datagrams (ECONNREFUSED): the association is gone");
                return Ok(Outcome::new(true, line));
            }
            _ => {}
        }
    }
    let relayed = seen.load(Ordering::SeqCst) - 1;
    let line = format!(
        "control connection closed {:.1} s ago: {bnd} still open, {relayed} datagrams relayed after it: a leaked association",
        patience().as_secs_f64()
    );
    Ok(Outcome::new(false, line))
}
