//! Many clients at once, from one test thread: connect N sockets, then drive interleaved
//! round trips over all of them with poll(2), checking every reply.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{wait_for, DEADLINE};

/// Raises this process's RLIMIT_NOFILE soft limit to its hard limit (tests open thousands
/// of client sockets).
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    hard
}

struct Conn {
    stream: TcpStream,
    id: usize,
    inbox: Vec<u8>,
    outbox: VecDeque<u8>,
    expected: Option<Vec<u8>>,
    round: usize,
    welcomed: bool,
}

/// Connects `clients` sockets (in batches, each batch welcomed before the next connects,
/// so a backlog of 128 never overflows), then has every client do `rounds` round trips,
/// all interleaved: each sends its next line as soon as its previous reply is in. Every
/// reply is checked. Ends with `q` on every connection. Panics at the deadline.
pub fn round_trips(addr: SocketAddr, clients: usize, rounds: usize) {
    raise_nofile();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut conns: Vec<Conn> = Vec::with_capacity(clients);
    let batch = 100;
    while conns.len() < clients {
        let first = conns.len();
        for id in first..(first + batch).min(clients) {
            let stream = wait_for("connect", DEADLINE, || TcpStream::connect(addr).ok());
            stream.set_nonblocking(true).unwrap();
            conns.push(Conn {
                stream,
                id,
                inbox: Vec::new(),
                outbox: VecDeque::new(),
                expected: None,
                round: 0,
                welcomed: false,
            });
        }
        drive(&mut conns[first..], deadline, |c| c.welcomed);
    }
    // Every client sends its first line; then each reply triggers the next line.
    for c in conns.iter_mut() {
        next_line(c);
    }
    drive(&mut conns, deadline, |c| c.round == rounds);
    for c in conns.iter_mut() {
        c.stream.set_nonblocking(false).unwrap();
        c.stream.write_all(b"q\n").unwrap();
    }
    for c in conns.iter_mut() {
        c.stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut rest = Vec::new();
        match c.stream.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "client {} got {rest:?} after q", c.id),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("client {}: waiting for the close after q: {e}", c.id),
        }
    }
}

fn next_line(c: &mut Conn) {
    let line = format!("client {} round {} ü", c.id, c.round);
    c.expected = Some(line.chars().rev().collect::<String>().into_bytes());
    c.outbox.extend(line.as_bytes());
    c.outbox.push_back(b'\n');
}

/// Polls all `conns` until `done` holds for each of them.
fn drive(conns: &mut [Conn], deadline: Instant, done: impl Fn(&Conn) -> bool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let waiting: Vec<usize> = (0..conns.len()).filter(|&i| !done(&conns[i])).collect();
        if waiting.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let c = &conns[waiting[0]];
            panic!(
                "{} of {} clients not done at the deadline; e.g. client {} in round {} (welcomed: {}, holding {:?})",
                waiting.len(),
                conns.len(),
                c.id,
                c.round,
                c.welcomed,
                String::from_utf8_lossy(&c.inbox)
            );
        }
        let ready: Vec<(usize, PollFlags)> = {
            let mut fds: Vec<PollFd> = waiting
                .iter()
                .map(|&i| {
                    let mut events = PollFlags::POLLIN;
                    if !conns[i].outbox.is_empty() {
                        events |= PollFlags::POLLOUT;
                    }
                    PollFd::new(conns[i].stream.as_fd(), events)
                })
                .collect();
            poll(&mut fds, PollTimeout::from(200u16)).unwrap();
            waiting
                .iter()
                .zip(fds.iter())
                .filter_map(|(&i, fd)| fd.revents().filter(|r| !r.is_empty()).map(|r| (i, r)))
                .collect()
        };
        for (i, revents) in ready {
            let c = &mut conns[i];
            if revents.contains(PollFlags::POLLOUT) {
                let (a, _) = c.outbox.as_slices();
                match c.stream.write(a) {
                    Ok(n) => {
                        c.outbox.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("client {}: write: {e}", c.id),
                }
            }
            if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                match c.stream.read(&mut buf) {
                    Ok(0) => panic!(
                        "client {}: server closed in round {} (welcomed: {})",
                        c.id, c.round, c.welcomed
                    ),
                    Ok(n) => c.inbox.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("client {}: read: {e}", c.id),
                }
                while let Some(end) = c.inbox.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = c.inbox.drain(..=end).take(end).collect();
                    if !c.welcomed {
                        assert_eq!(line, b"Welcome buddy!", "client {}: first line", c.id);
                        c.welcomed = true;
                        continue;
                    }
                    let expected = c.expected.take().unwrap_or_else(|| {
                        panic!(
                            "client {}: unexpected line {:?}",
                            c.id,
                            String::from_utf8_lossy(&line)
                        )
                    });
                    assert_eq!(
                        String::from_utf8_lossy(&line),
                        String::from_utf8_lossy(&expected),
                        "client {} round {}",
                        c.id,
                        c.round
                    );
                    c.round += 1;
                    if !done(c) {
                        next_line(c);
                    }
                }
            }
        }
    }
}
