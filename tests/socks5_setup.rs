//! Lesson 12's connection setup, the calls it costs: the client's
//! address comes with accept4 (no getpeername), the greeting is read right after the
//! accept when it is already there (no poll between), and short connections reuse the
//! pool's one-page buffers instead of mapping and unmapping 1 MiB each.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;

use common::socks5 as s5;
use common::{reset, Traced};

const SET: &str = "%network,read,write,close,poll,mmap,munmap,clone,clone3";

/// One short relayed exchange: greeting, CONNECT, 32 bytes there and back.
fn exchange(proxy: std::net::SocketAddr, target: std::net::SocketAddr) -> TcpStream {
    let mut s = s5::open(proxy, target);
    s.write_all(&[b'a'; 32]).unwrap();
    let mut back = [0u8; 32];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, [b'a'; 32]);
    s
}

#[test]
fn accept4_gives_the_address_and_the_greeting_is_read_at_once() {
    let traced = Traced::start_tracing(exe!("lesson-12"), &[], SET);
    let echo = s5::echo_target();
    for _ in 0..20 {
        reset(exchange(traced.server.addr, echo));
    }
    let trace = traced.stop(libc::SIGTERM);
    trace.assert_absent(&["getpeername"]);
    let lines = trace.lines();
    let mut accepted = 0;
    let mut read_at_once = 0;
    for (i, line) in lines.iter().enumerate() {
        if common::syscall_of(line).as_deref() != Some("accept4") || line.contains("EAGAIN") {
            continue;
        }
        accepted += 1;
        assert!(line.contains("sin_port=htons("), "no address: {line}");
        // The accepted fd's first read comes before the next poll: read at once.
        let fd = line
            .rsplit(" = ")
            .next()
            .and_then(|r| r.split('<').next())
            .unwrap();
        let first_read = format!("read({fd}<");
        let after = &lines[i + 1..];
        let read_at = after.iter().position(|l| l.contains(&first_read));
        let poll_at = after
            .iter()
            .position(|l| common::syscall_of(l).as_deref() == Some("poll"));
        if read_at.is_some_and(|r| poll_at.is_none_or(|p| r < p)) {
            read_at_once += 1;
        }
    }
    assert_eq!(accepted, 20, "{}", trace.text);
    // Whether the greeting is there yet is a race with the client; under strace it almost
    // always is. Half is a bar a missing read-at-once (0 of 20) cannot pass.
    assert!(
        read_at_once >= 10,
        "{read_at_once} of 20 greetings read at once"
    );
}

#[test]
fn short_connections_reuse_one_page_buffers() {
    let traced = Traced::start_tracing(exe!("lesson-12"), &[], SET);
    let (proxy, echo) = (traced.server.addr, s5::echo_target());
    // 5 rounds of 20 connections open at once: 20 buffers in flight, more than the 4 spare
    // 1 MiB buffers the pool keeps.
    for _ in 0..5 {
        let clients: Vec<_> = (0..20)
            .map(|_| thread::spawn(move || exchange(proxy, echo)))
            .collect();
        let streams: Vec<TcpStream> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        streams.into_iter().for_each(reset);
    }
    let trace = traced.stop(libc::SIGTERM);
    let calls = trace.calls();
    let first_accept = calls.iter().position(|c| c == "accept4").unwrap();
    let unmapped = calls[first_accept..]
        .iter()
        .filter(|c| *c == "munmap")
        .count();
    assert!(
        unmapped < 10,
        "{unmapped} munmap calls for 100 short connections (a buffer freed per connection)"
    );
}

/// After a bulk transfer the pool holds a spare 1 MiB buffer or two, every page resident;
/// once no bulk flow has reused them for a second, the next connection's buffer request
/// frees them (short exchanges meanwhile do not keep them alive).
#[test]
fn bulk_spares_are_freed_once_the_burst_is_over() {
    let proxy = common::Server::start(exe!("lesson-12"), &[]);
    // A target that reads nothing until told to: the relay's buffers fill to the brim (1 MiB
    // each, every page touched), then drain.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let targets = thread::spawn(move || {
        let conns: Vec<TcpStream> = (0..4).map(|_| listener.accept().unwrap().0).collect();
        go_rx.recv().unwrap();
        for mut c in conns {
            thread::spawn(move || {
                let mut all = Vec::new();
                c.read_to_end(&mut all).unwrap();
                c.write_all(format!("got {} bytes\n", all.len()).as_bytes())
                    .unwrap();
            });
        }
    });
    let streams: Vec<_> = (0..4)
        .map(|_| {
            let mut s = s5::open(proxy.addr, target);
            thread::spawn(move || {
                s.write_all(&s5::pseudo_random(8 << 20, 7)).unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                let mut answer = String::new();
                s.read_to_string(&mut answer).unwrap();
                assert_eq!(answer, format!("got {} bytes\n", 8 << 20));
            })
        })
        .collect();
    // Backed up: each relay's buffer full.
    common::wait_for("the relay's buffers full", common::DEADLINE, || {
        (common::rss_kib(proxy.pid()) > 4 << 10).then_some(())
    });
    go_tx.send(()).unwrap();
    targets.join().unwrap();
    streams.into_iter().for_each(|s| s.join().unwrap());
    let after_bulk = common::rss_kib(proxy.pid());
    let echo = s5::echo_target();
    let trimmed = common::wait_for("the spare bulk buffers freed", common::DEADLINE, || {
        reset(exchange(proxy.addr, echo));
        let rss = common::rss_kib(proxy.pid());
        (rss + 768 < after_bulk).then_some(rss)
    });
    eprintln!("RSS after the burst {after_bulk} KiB, once idle {trimmed} KiB");
}
