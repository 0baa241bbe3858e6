//! loadgen: the echo-protocol load generator behind `make compare` (not a lesson).
//!
//! One thread, one epoll instance, N connections to an echo lesson on loopback. Each
//! connection waits for the welcome, then sends a fixed-size line, waits for its reversed
//! reply (checked byte for byte), and repeats. After a warm-up, the requests completed in
//! a fixed window are counted and their latencies recorded in an HDR histogram. Connections
//! the server never welcomes (a serial server starving them, a refused or reset connection,
//! select's FD_SETSIZE wall answering `error: server full`), wrong replies and timeouts are
//! counted and reported, never hidden. Every run is bounded in time (`--max-time`), and
//! only loopback targets are accepted.
//!
//! Output: one line of `key=value` pairs on stdout (or JSON with `--json`), e.g.
//! `connections=100 welcomed=100 requests=1210000 rps=242000 p50_us=390 p99_us=610 ...`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use clap::Parser;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{connect, getsockopt, socket, sockopt, SockFlag, SockType};
use nix::unistd::{read, write};
use sockets_by_hand::{limits, net};
use tools::load::{self, Counts, LoadArgs, MAX_HANDSHAKES, WELCOME};

/// Echo-protocol load generator: N connections from one thread on epoll, fixed-size lines,
/// every reply checked, latency in an HDR histogram. Loopback targets only.
#[derive(Parser, Debug)]
#[command(name = "loadgen")]
struct Args {
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Non-blocking connect in progress.
    Connecting,
    /// Connected; the welcome line not complete yet.
    Welcome,
    /// A request is (partly) written or its reply is (partly) read.
    Busy,
    /// An idle connection, welcomed, sending nothing.
    Idle,
    /// Done: closed by us or by the server, or failed.
    Dead,
}

struct Conn {
    fd: OwnedFd,
    state: State,
    /// Bytes of the current request written so far.
    written: usize,
    /// Bytes of the expected reply (or welcome) matched so far.
    matched: usize,
    /// When the current request's first byte was written (or the connect started).
    since: Instant,
    want_out: bool,
    /// Its index in the table, registered with epoll as the event's data.
    token: u64,
    /// One of the `--idle` connections.
    idle: bool,
}

fn main() {
    let args = Args::parse().load;
    args.check("loadgen");
    let _ = limits::raise_nofile();
    let (request, reply) = args.request_and_reply();

    let epoll =
        Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap_or_else(|e| die("epoll_create1", e));
    let start = Instant::now();
    let hard_stop = start + Duration::from_secs_f64(args.max_time);
    let connect_timeout = Duration::from_secs_f64(args.connect_timeout);
    let reply_timeout = Duration::from_secs_f64(args.reply_timeout);
    let mut counts = Counts::default();
    let total = args.connections + args.idle;
    let mut conns: Vec<Conn> = Vec::with_capacity(total);
    let mut hist = load::histogram();
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = vec![EpollEvent::empty(); 1024];

    // Connections are opened in waves of at most MAX_HANDSHAKES not yet welcomed, so a
    // listen backlog of 128 is never overrun by a SYN flood of our own making (a dropped
    // SYN is retried only after a second, and would look like a slow server).
    let mut opened = 0usize;
    let mut in_flight = 0usize;
    let mut measure_from: Option<Instant> = None;
    let mut measure_until: Option<Instant> = None;
    // The server's CPU time when the measured window opened (--server-pid).
    let mut cpu_from: Option<u64> = None;
    let mut last_open = Instant::now();

    loop {
        let now = Instant::now();
        // Open more connections while the wave allows.
        while opened < total && in_flight < MAX_HANDSHAKES {
            let fd = match socket(
                net::family(&args.to),
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                None,
            ) {
                Ok(fd) => fd,
                Err(e) => die("socket", e),
            };
            let _ = nix::sys::socket::setsockopt(&fd, sockopt::TcpNoDelay, &true);
            match connect(fd.as_raw_fd(), net::sockaddr(args.to).as_ref()) {
                Ok(()) | Err(Errno::EINPROGRESS) => {}
                Err(Errno::ECONNREFUSED) => {
                    counts.refused += 1;
                    opened += 1;
                    continue;
                }
                Err(e) => die("connect", e),
            }
            let token = conns.len() as u64;
            epoll
                .add(
                    &fd,
                    EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT, token),
                )
                .unwrap_or_else(|e| die("epoll_ctl", e));
            conns.push(Conn {
                fd,
                state: State::Connecting,
                written: 0,
                matched: 0,
                since: now,
                want_out: true,
                token,
                idle: opened < args.idle,
            });
            opened += 1;
            in_flight += 1;
            last_open = now;
        }
        // All opened and either welcomed or given up on: start the clock.
        if measure_from.is_none()
            && opened == total
            && (in_flight == 0 || now.duration_since(last_open) > connect_timeout)
        {
            let from = now + Duration::from_secs_f64(args.warmup);
            measure_from = Some(from);
            measure_until = Some(from + Duration::from_secs_f64(args.duration));
        }
        let measuring = measure_from.is_some_and(|from| now >= from);
        if measuring && cpu_from.is_none() {
            cpu_from = args.server_cpu_from();
        }
        let finished = match (measure_until, args.requests) {
            (_, Some(n)) if measuring && counts.requests >= n => true,
            (Some(until), None) => now >= until,
            _ => false,
        };
        if finished || now >= hard_stop {
            break;
        }
        if measure_from.is_some()
            && conns
                .iter()
                .all(|c| matches!(c.state, State::Dead | State::Idle))
        {
            break; // nothing left to drive
        }

        let n = match epoll.wait(&mut events, EpollTimeout::from(20u16)) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => die("epoll_wait", e),
        };
        let now = Instant::now();
        for ev in &events[..n] {
            let i = ev.data() as usize;
            let flags = ev.events();
            let c = &mut conns[i];
            if c.state == State::Dead {
                continue;
            }
            if c.state == State::Connecting {
                if !flags
                    .intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP)
                {
                    continue;
                }
                match getsockopt(&c.fd, sockopt::SocketError) {
                    Ok(0) => {
                        c.state = State::Welcome;
                        c.matched = 0;
                        // Connected: from now on EPOLLOUT only while a request is unsent.
                        let _ =
                            epoll.modify(&c.fd, &mut EpollEvent::new(EpollFlags::EPOLLIN, c.token));
                        c.want_out = false;
                    }
                    Ok(err) => {
                        if Errno::from_raw(err) == Errno::ECONNREFUSED {
                            counts.refused += 1;
                        } else {
                            counts.errors += 1;
                        }
                        kill(&epoll, c, &mut in_flight);
                        continue;
                    }
                    Err(e) => die("getsockopt", e),
                }
            }
            // Write the rest of the current request.
            if c.state == State::Busy
                && c.written < request.len()
                && flags.intersects(EpollFlags::EPOLLOUT)
            {
                send_rest(&epoll, c, &request, &mut counts, &mut in_flight);
            }
            if !flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
            {
                continue;
            }
            // Read what arrived and match it against what we expect.
            let got = match read(&c.fd, &mut buf) {
                Ok(0) => {
                    counts.closed += 1;
                    kill(&epoll, c, &mut in_flight);
                    continue;
                }
                Ok(got) => got,
                Err(Errno::EAGAIN) => continue,
                Err(_) => {
                    counts.closed += 1;
                    kill(&epoll, c, &mut in_flight);
                    continue;
                }
            };
            let mut data = &buf[..got];
            while !data.is_empty() && c.state != State::Dead {
                let expected: &[u8] = if c.state == State::Welcome {
                    WELCOME
                } else {
                    &reply
                };
                let take = data.len().min(expected.len() - c.matched);
                if c.state == State::Welcome && c.matched == 0 && data.starts_with(b"error:") {
                    counts.rejected += 1; // e.g. "error: server full (FD_SETSIZE)"
                    kill(&epoll, c, &mut in_flight);
                    break;
                }
                if data[..take] != expected[c.matched..c.matched + take]
                    || c.state == State::Connecting
                {
                    counts.errors += 1;
                    kill(&epoll, c, &mut in_flight);
                    break;
                }
                c.matched += take;
                data = &data[take..];
                if c.matched < expected.len() {
                    break;
                }
                // A whole line matched.
                if c.state == State::Welcome {
                    in_flight -= 1;
                    if c.idle {
                        counts.idle += 1;
                        c.state = State::Idle;
                        break;
                    }
                    counts.welcomed += 1;
                } else {
                    if measure_from.is_some_and(|from| c.since >= from)
                        && measure_until.is_none_or(|u| now <= u)
                    {
                        counts.requests += 1;
                        let _ = hist.record(now.duration_since(c.since).as_nanos().max(1) as u64);
                    } else {
                        counts.warm_requests += 1;
                    }
                }
                if !data.is_empty() {
                    counts.errors += 1; // bytes beyond the one reply we asked for
                    kill(&epoll, c, &mut in_flight);
                    break;
                }
                // Next request.
                c.state = State::Busy;
                c.matched = 0;
                c.written = 0;
                c.since = now;
                send_rest(&epoll, c, &request, &mut counts, &mut in_flight);
            }
        }
        // Timeouts: handshakes never welcomed, replies never coming.
        for c in conns.iter_mut() {
            let limit = match c.state {
                State::Connecting | State::Welcome => connect_timeout,
                State::Busy => reply_timeout,
                State::Dead | State::Idle => continue,
            };
            if now.duration_since(c.since) > limit {
                if c.state == State::Busy {
                    counts.timeouts += 1;
                } else {
                    counts.starved += 1;
                }
                kill(&epoll, c, &mut in_flight);
            }
        }
    }

    let server_cpu_ns = args.server_cpu_since(cpu_from);
    let window = match (measure_from, measure_until) {
        (Some(from), Some(until)) => Instant::now().min(until).saturating_duration_since(from),
        _ => Duration::ZERO,
    };
    // Connections still waiting for a welcome at the end are starved too.
    counts.starved += conns
        .iter()
        .filter(|c| matches!(c.state, State::Connecting | State::Welcome))
        .count() as u64;
    load::report(&args, &counts, &hist, window.as_secs_f64(), server_cpu_ns);
}

/// Writes what is left of the request; asks for EPOLLOUT only while some is left.
fn send_rest(
    epoll: &Epoll,
    c: &mut Conn,
    request: &[u8],
    counts: &mut Counts,
    in_flight: &mut usize,
) {
    while c.written < request.len() {
        match write(&c.fd, &request[c.written..]) {
            Ok(n) => c.written += n,
            Err(Errno::EAGAIN) => break,
            Err(_) => {
                counts.closed += 1;
                kill(epoll, c, in_flight);
                return;
            }
        }
    }
    let want_out = c.written < request.len();
    if want_out != c.want_out {
        let mut flags = EpollFlags::EPOLLIN;
        if want_out {
            flags |= EpollFlags::EPOLLOUT;
        }
        let _ = epoll.modify(&c.fd, &mut EpollEvent::new(flags, c.token));
        c.want_out = want_out;
    }
}

fn kill(epoll: &Epoll, c: &mut Conn, in_flight: &mut usize) {
    if matches!(c.state, State::Connecting | State::Welcome) {
        *in_flight -= 1;
    }
    let _ = epoll.delete(&c.fd);
    // FIN now, so the server sees us leave; the fd itself is closed when the run ends.
    let _ = nix::sys::socket::shutdown(c.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    c.state = State::Dead;
}

fn die(call: &str, errno: Errno) -> ! {
    eprintln!(
        "loadgen: {}",
        sockets_by_hand::errors::describe(call, errno)
    );
    std::process::exit(1)
}
