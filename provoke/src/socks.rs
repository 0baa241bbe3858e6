//! The kinds against a SOCKS5 relay (lessons 12–14), with protocols::socks5's client
//! encoders and parsers.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::Duration;

use protocols::socks5::{client, Reply, Target};

use crate::peer::patience;
use crate::{Outcome, Provoked};

/// Greets with "no authentication" and sends a CONNECT to `target`: the reply code, or
/// what went wrong.
pub fn connect(proxy: SocketAddr, target: &Target) -> Result<(Reply, TcpStream), String> {
    let mut s = TcpStream::connect_timeout(&proxy, patience())
        .map_err(|e| format!("connect to {proxy}: {e}"))?;
    s.set_read_timeout(Some(patience()))
        .map_err(|e| e.to_string())?;
    let mut hello = client::greeting(&[0]).expect("one method");
    hello.extend(client::connect_request(target).map_err(|e| format!("{e:?}"))?);
    s.write_all(&hello).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let method = loop {
        if let Some((m, used)) =
            client::parse_method_selection(&buf).map_err(|e| format!("{e:?}"))?
        {
            buf.drain(..used);
            break m;
        }
        read_more(&mut s, &mut buf)?;
    };
    if method != 0 {
        return Err(format!("the proxy chose method {method:#04x}, not 0x00"));
    }
    loop {
        if let Some((rep, _, _)) = client::parse_reply(&buf).map_err(|e| format!("{e:?}"))? {
            return Ok((rep, s));
        }
        read_more(&mut s, &mut buf)?;
    }
}

fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 512];
    match s.read(&mut chunk) {
        Ok(0) => Err("the proxy closed before its reply".into()),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(format!("waiting for the proxy's reply: {e}")),
    }
}

fn code(rep: Reply) -> String {
    format!("{:#04x} {}", rep.code(), rep.describe())
}

/// CONNECT to a loopback port where nothing listens: 0x05, never 0x00.
pub fn refused(proxy: SocketAddr) -> Provoked {
    // A port that was free a moment ago: bound, read, closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("bind: {e}"))?
        .port();
    let target = Target::Ip(SocketAddr::from(([127, 0, 0, 1], port)));
    let (rep, _) = connect(proxy, &target)?;
    let did = format!(
        "CONNECT to 127.0.0.1:{port}, where nothing listens: reply {}",
        code(rep)
    );
    Ok(match rep {
        Reply::ConnectionRefused => Outcome::new(true, did),
        Reply::Succeeded => Outcome::new(false, format!("{did}: a refused target looks open")),
        _ => Outcome::new(false, format!("{did}, not 0x05")),
    })
}

/// Deterministic bytes, so that a lost or reordered tail shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// A target that reads until EOF, then answers `len` bytes and closes: its address, and a
/// handle that says how many bytes it read and whether they were the right ones.
fn answers_after_eof(len: usize) -> io::Result<(SocketAddr, thread::JoinHandle<(usize, bool)>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    // A small receive buffer, fixed, which the accepted socket inherits: the target cannot
    // take in megabytes while it waits.
    workshop::client::set_rcvbuf(listener.as_raw_fd(), 64 * 1024)?;
    let addr = listener.local_addr()?;
    let handle = thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return (0, false);
        };
        let _ = s.set_read_timeout(Some(4 * patience()));
        // A target that takes its time, as a remote one behind a slow link does: it reads
        // 64 KiB a millisecond, slower than any relay moves bytes. Its side of the relay
        // stays full, so once the client has sent more than that side holds, its EOF reaches
        // the relay while the relay still holds bytes for it, however fast or loaded the
        // machine.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = s.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
            thread::sleep(Duration::from_millis(1));
        }
        let _ = s.write_all(&pattern(len, 0x5A));
        (got.len(), got == pattern(len, 0xA5))
    });
    Ok((addr, handle))
}

/// [`half_close`] with `len`, then `len` + 512 KiB, … (`tries` sizes) until one fails:
/// bytes are still inside the relay when the client's EOF reaches it once the client has
/// sent more than the relay's side of the slow target holds (its send buffer grows up to
/// tcp_wmem's maximum, 4 MiB by default), and that size depends on the machine.
pub fn half_close_tries(proxy: SocketAddr, len: usize, tries: usize) -> Provoked {
    let mut last = None;
    for i in 0..tries.max(1) {
        let outcome = half_close(proxy, len + i * 512 * 1024)?;
        if !outcome.ok {
            return Ok(outcome);
        }
        last = Some(outcome);
    }
    last.ok_or_else(|| "no try".to_string())
}

/// Sends `len` bytes through the proxy, half-closes, and must read the target's whole
/// `len`-byte answer, then EOF.
pub fn half_close(proxy: SocketAddr, len: usize) -> Provoked {
    let (target, seen) = answers_after_eof(len).map_err(|e| format!("target: {e}"))?;
    let (rep, mut s) = connect(proxy, &Target::Ip(target))?;
    if rep != Reply::Succeeded {
        return Err(format!(
            "CONNECT to the target {target}: reply {}",
            code(rep)
        ));
    }
    let _ = s.set_read_timeout(Some(4 * patience()));
    let mut w = s.try_clone().map_err(|e| format!("dup: {e}"))?;
    let writer = thread::spawn(move || {
        let sent = w.write_all(&pattern(len, 0xA5)).is_ok();
        sent && w.shutdown(Shutdown::Write).is_ok()
    });
    let mut answer = Vec::new();
    let ended = match s.read_to_end(&mut answer) {
        Ok(_) => "EOF".to_string(),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => "a timeout".to_string(),
        Err(e) => e.to_string(),
    };
    let _ = writer.join();
    // The target thread ends once it has answered; a relay that never passed the EOF on
    // leaves it waiting until its own timeout.
    let _ = s.shutdown(Shutdown::Both);
    let (read, intact) = seen.join().unwrap_or((0, false));
    let ok = read == len && intact && answer == pattern(len, 0x5A);
    let did = format!("sent {len} bytes through the proxy, then shutdown(SHUT_WR)");
    Ok(Outcome::new(
        ok,
        if ok {
            format!("{did}; the target read them all and its {len}-byte answer came back whole")
        } else {
            format!(
                "{did}; the target read {read} bytes{}; {} of its {len}-byte answer came back{}, then {ended}",
                if intact || read != len { "" } else { " (corrupted)" },
                answer.len(),
                if answer.len() == len && answer != pattern(len, 0x5A) { " (corrupted)" } else { "" },
            )
        },
    ))
}

/// The checker's step (workshop's SOCKS5 rules): a client that stops reading while its target
/// floods it, and a second client's handshake and round trip meanwhile.
pub fn stalled_reader(proxy: SocketAddr) -> Provoked {
    workshop::client::set_wait(patience());
    let pid = crate::procs::server_pid(proxy);
    let observe = || {
        let pid = pid?;
        let call = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
        let nr: i64 = call.split_whitespace().next()?.parse().ok()?;
        let name = workshop::model::syscall_name(nr)?;
        Some(format!("the relay's first thread is asleep in {name}"))
    };
    match workshop::socks::stalled_client_stalls_no_other(proxy, &observe) {
        Ok(()) => Ok(Outcome::new(
            true,
            "a client stopped reading while its target flooded it; a second client was \
             greeted, connected and echoed meanwhile",
        )),
        Err(f) if f.expected == "the connection accepted" => Err(f.got),
        Err(f) => Ok(Outcome::new(
            false,
            format!(
                "a client stopped reading while its target flooded it; a second client \
                 expected {} and got {}",
                f.expected, f.got
            ),
        )),
    }
}
