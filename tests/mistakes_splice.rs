//! Lesson 14's classic mistake, `--mistake close-with-bytes-in-pipe`: on a source's EOF the
//! relay closes the pipe and shuts the destination at once, so the bytes still in the pipe
//! (the tail of the transfer) never arrive. Flag off, the same transfer arrives whole.
//!
//! The scenario puts bytes in the pipe at the EOF on purpose: the client sends N bytes and
//! shuts down its writing side; the target reads nothing until the proxy has taken the
//! client's EOF (its socket in CLOSE_WAIT with nothing left to read, /proc/net/tcp), so the
//! tail waits in the pipe behind a full target. Only then does the target read, to EOF.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::Duration;

use common::socks5 as s5;
use common::Server;

/// The byte at offset `i` of a transfer: a pattern that shows where bytes went missing.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// What one transfer did.
struct Outcome {
    /// Bytes the target read before EOF, and whether they were the first ones in order.
    got: usize,
    in_order: bool,
    /// The proxy took the client's EOF before the target read anything.
    eof_first: bool,
    /// Bytes in the pipe when the target started reading (sent less what the two
    /// sockets' queues held).
    in_pipe: usize,
    /// The target's answer, read by the client after its half-close.
    answer: String,
}

/// The socket `local` → `remote` in /proc/net/tcp: (state, tx_queue, rx_queue).
fn tcp_row(local: SocketAddr, remote: SocketAddr) -> Option<(u8, usize, usize)> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[1] != local || f[2] != remote {
            return None;
        }
        let (tx, rx) = f[4].split_once(':')?;
        let n = |h: &str| usize::from_str_radix(h, 16).ok();
        Some((u8::from_str_radix(f[3], 16).ok()?, n(tx)?, n(rx)?))
    })
}

/// Has the proxy taken the client's EOF: its end of the client's connection in CLOSE_WAIT
/// (0x08) with nothing left to read?
fn eof_taken(proxy: SocketAddr, client: SocketAddr) -> bool {
    tcp_row(proxy, client).is_some_and(|(state, _, rx)| state == 0x08 && rx == 0)
}

/// Sends `n` bytes through `proxy` to a target that reads only once the proxy took the
/// client's EOF; the target answers `got <count>` after its EOF.
fn transfer(proxy: SocketAddr, n: usize) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // A small receive buffer (inherited by the accepted socket): the target's window is
    // small, so most of what it has not read yet waits in the proxy.
    workshop::client::set_rcvbuf(listener.as_raw_fd(), 16 * 1024).expect("setsockopt(SO_RCVBUF)");
    let mut client = s5::open(proxy, listener.local_addr().unwrap());
    let (mut target, _) = listener.accept().unwrap();
    target.set_read_timeout(Some(common::DEADLINE)).unwrap();
    let from = client.local_addr().unwrap();
    let mut writer = client.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let data: Vec<u8> = (0..n).map(pattern).collect();
        writer.write_all(&data).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    // Bounded: if the proxy cannot take the EOF (everything did not fit), read anyway.
    let mut eof_first = false;
    for _ in 0..300 {
        if eof_taken(proxy, from) {
            eof_first = true;
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    // Where the bytes are: in the proxy's send queue toward the target, in the target's
    // receive queue, and the rest in the pipe.
    let up = target.peer_addr().unwrap();
    let to = target.local_addr().unwrap();
    let queued = tcp_row(up, to).map_or(0, |r| r.1) + tcp_row(to, up).map_or(0, |r| r.2);
    let in_pipe = n.saturating_sub(queued);
    let mut got = Vec::with_capacity(n);
    target.read_to_end(&mut got).unwrap();
    let in_order = got.iter().enumerate().all(|(i, &b)| b == pattern(i));
    target
        .write_all(format!("got {}", got.len()).as_bytes())
        .unwrap();
    drop(target);
    sender.join().unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    Outcome {
        in_pipe,
        got: got.len(),
        in_order,
        eof_first,
        answer,
    }
}

/// Runs the transfer against lesson 14 with `args`, from `first` bytes up or down by
/// 512 KiB (12 attempts at most), until the proxy took the EOF with bytes still in the pipe: how many
/// bytes that took, and what happened.
fn scenario(args: &[&str], first: usize) -> (usize, Outcome) {
    let proxy = Server::start(exe!("lesson-14"), args);
    let mut tried = Vec::new();
    let mut n = first;
    for _ in 0..12 {
        // The proxy's send queue toward a target that does not read holds a few MiB (it
        // grows to net.ipv4.tcp_wmem's max); the next bytes stay in the 1 MiB pipe.
        let outcome = transfer(proxy.addr, n);
        if outcome.eof_first && outcome.in_pipe > 0 {
            return (n, outcome);
        }
        tried.push((n, outcome.eof_first, outcome.in_pipe));
        // No EOF while the target slept: too much to be in flight at once, try less. The
        // EOF but an empty pipe: it all fitted in the socket buffers, try more.
        n = match outcome.eof_first {
            false => n.saturating_sub(512 << 10).max(512 << 10),
            true => n + (512 << 10),
        };
    }
    panic!("never had bytes in the pipe at the EOF: (sent, EOF first, in pipe) {tried:?}");
}

#[test]
fn close_with_bytes_in_pipe_loses_the_tail() {
    // Flag on: the proxy took the EOF while the pipe held bytes, and they never arrived.
    let (n, on) = scenario(&["--mistake", "close-with-bytes-in-pipe"], 2 << 20);
    eprintln!(
        "mistake on: sent {n}, {} in the pipe at the EOF, the target got {}",
        on.in_pipe, on.got
    );
    assert!(on.got < n, "sent {n} bytes, all arrived: no tail lost");
    assert!(on.in_order, "what did arrive is the start of the transfer");
    assert_eq!(
        on.answer,
        format!("got {}", on.got),
        "the answer comes back"
    );

    // Flag off, the same scenario: every byte, then EOF, then the answer.
    let (n, off) = scenario(&[], n);
    eprintln!(
        "mistake off: sent {n}, {} in the pipe at the EOF, the target got {}",
        off.in_pipe, off.got
    );
    assert_eq!(off.got, n, "bytes lost with the mistake off");
    assert!(off.in_order, "bytes out of order");
    assert_eq!(off.answer, format!("got {n}"));
}
