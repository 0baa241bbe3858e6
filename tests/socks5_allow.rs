//! Lesson 13, the SOCKS5 proxy with a Redis allowlist, against a real redis-server per test
//! (started here on a free port, no persistence, killed on drop): the allowlist rule, Redis
//! restarts, 200 lookups pipelined on one Redis connection, curl, lesson 12's SOCKS5 suite
//! with the test client allowed, and the strace check.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::socks5::{self as s5, Proxy};
use common::{wait_for, Server, Traced, DEADLINE};
use protocols::resp::Value;
use protocols::socks5::{client, Command as Cmd, Reply, Target};

/// Lesson 13 and its redis-server (dropped together).
struct Lesson13 {
    proxy: Server,
    redis: Redis,
}

impl Proxy for Lesson13 {
    fn proxy_addr(&self) -> SocketAddr {
        self.proxy.addr
    }
    fn server(&self) -> &Server {
        &self.proxy
    }
}

/// Lesson 13 with its own redis-server, nobody allowed yet.
fn start(args: &[&str]) -> Lesson13 {
    let redis = Redis::start();
    let addr = redis.addr_arg();
    let mut all = vec!["--redis", &addr];
    all.extend_from_slice(args);
    let proxy = Server::start(exe!("lesson-13"), &all);
    Lesson13 { proxy, redis }
}

/// Lesson 13 with the test client (127.0.0.1) allowed: what lesson 12's suite runs against.
fn start_allowed(args: &[&str]) -> Lesson13 {
    let mut p = start(args);
    p.redis.set("allowed:127.0.0.1", "1");
    p
}

socks5_suite!(lesson_13, super::start_allowed);

/// Greeting and a CONNECT to `target`: the reply code.
fn ask(proxy: SocketAddr, target: SocketAddr) -> (Reply, TcpStream) {
    let mut s = s5::connect(proxy);
    assert_eq!(s5::greet(&mut s, &[0]), 0, "greeting answered");
    let (rep, _) = s5::request(&mut s, Cmd::Connect, &Target::Ip(target));
    (rep, s)
}

/// The reply code, and for a refusal, that the proxy closes afterwards.
fn verdict(proxy: SocketAddr, target: SocketAddr) -> Reply {
    let (rep, mut s) = ask(proxy, target);
    if rep == Reply::Succeeded {
        s.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping", "relay works once allowed");
    } else {
        assert!(s5::closes(&mut s), "refused, then closed");
    }
    rep
}

/// No key: 0x02. SET 1: allowed, no restart. DEL: 0x02 again. "0": 0x02. Any other value,
/// even empty: allowed (the rule is "exists and is not 0").
#[test]
fn the_rule() {
    let mut p = start(&[]);
    let echo = s5::echo_target();
    let key = "allowed:127.0.0.1";
    assert_eq!(verdict(p.proxy.addr, echo), Reply::NotAllowed);
    p.proxy.log.wait_line("the denial logged", |l| {
        l.contains("refused connection not allowed by ruleset (0x02)")
    });
    p.redis.set(key, "1");
    assert_eq!(verdict(p.proxy.addr, echo), Reply::Succeeded);
    assert_eq!(p.redis.cmd(&["DEL", key]), Value::Integer(1));
    assert_eq!(verdict(p.proxy.addr, echo), Reply::NotAllowed);
    p.redis.set(key, "0");
    assert_eq!(verdict(p.proxy.addr, echo), Reply::NotAllowed);
    p.redis.set(key, "yes");
    assert_eq!(verdict(p.proxy.addr, echo), Reply::Succeeded);
    p.redis.set(key, "");
    assert_eq!(verdict(p.proxy.addr, echo), Reply::Succeeded);
    // A key of the wrong type: Redis answers an error, the proxy fails closed (0x01).
    assert_eq!(p.redis.cmd(&["DEL", key]), Value::Integer(1));
    assert_eq!(p.redis.cmd(&["RPUSH", key, "1"]), Value::Integer(1));
    assert_eq!(verdict(p.proxy.addr, echo), Reply::GeneralFailure);
}

/// Redis is killed: clients are refused with 0x01 (greetings still answered), a log line
/// says the allowlist is unavailable, the proxy stays up. Redis comes back on the same port:
/// clients are allowed again within 2 s, without touching the proxy.
#[test]
fn redis_restart() {
    let mut p = start_allowed(&[]);
    let echo = s5::echo_target();
    assert_eq!(verdict(p.proxy.addr, echo), Reply::Succeeded);
    p.proxy
        .log
        .wait_line("the relay closed", |l| l.ends_with("· closed"));
    let fds = p.proxy.fd_count();
    p.redis.kill();
    for _ in 0..5 {
        assert_eq!(verdict(p.proxy.addr, echo), Reply::GeneralFailure);
    }
    p.proxy.log.wait_line("unavailable logged", |l| {
        l.starts_with("allowlist unavailable:")
    });
    p.proxy.log.wait_line("the refusal logged", |l| {
        l.contains("(0x01): allowlist unavailable")
    });
    // Down for a while: in Redis' place, a listener that hangs up on every connection
    // and notes when it came. The proxy neither exits nor blocks (greetings are answered
    // throughout), and its attempts never stop: at most 1 s apart once the backoff is capped.
    let port = p.redis.port;
    let hangup = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    hangup.set_nonblocking(true).unwrap();
    let down = Instant::now();
    let mut attempts = Vec::new();
    while down.elapsed() < Duration::from_millis(4000) {
        let mut s = s5::connect(p.proxy.addr);
        assert_eq!(s5::greet(&mut s, &[0]), 0);
        while let Ok((conn, _)) = hangup.accept() {
            attempts.push(down.elapsed());
            drop(conn);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(hangup);
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(attempts.len() >= 4, "attempts at {attempts:?}");
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(1500)),
        "reconnect attempts at {attempts:?}: more than 1 s apart"
    );
    assert!(
        p.proxy.wait_exit(Duration::from_millis(1)).is_none(),
        "the proxy died"
    );

    let mut redis = Redis::start_on(port).expect("redis-server again on the same port");
    redis.set("allowed:127.0.0.1", "1");
    let back = Instant::now();
    loop {
        match verdict(p.proxy.addr, echo) {
            Reply::Succeeded => break,
            Reply::GeneralFailure => {}
            other => panic!("{other} while Redis comes back"),
        }
        assert!(
            back.elapsed() < Duration::from_secs(2),
            "still refused 2 s after Redis came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p.proxy
        .log
        .wait_line("reconnect logged", |l| l.contains("connected to Redis"));
    // Every failed attempt closed its socket: the fd count is back where it was.
    common::wait_fd_count(p.proxy.pid(), fds);
    p.redis = redis;
}

/// A deadline per check longer than any freeze in the tests that pause Redis to see the
/// GETs queue up (each waits at most DEADLINE, 20 s, for them): their stall is not an outage.
const LONGER_THAN_THE_FREEZE: &str = "60";

/// The receive queue of Redis' side of its connections (bytes sent to Redis, not yet read):
/// from /proc/net/tcp, summed over the established sockets on `port`.
fn redis_rx_queue(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
            let established = f[3] == "01";
            let rx = usize::from_str_radix(f[4].split(':').nth(1)?, 16).ok()?;
            (local_port == port && established).then_some(rx)
        })
        .sum()
}

/// A client socket bound to `from` (any 127.x.y.z is loopback on Linux) connected to `to`.
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let sock: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    let [a, b, c, d] = from;
    bind(sock.as_raw_fd(), &SockaddrIn::new(a, b, c, d, 0)).unwrap();
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 proxy")
    };
    connect(sock.as_raw_fd(), &SockaddrIn::from(to)).unwrap();
    let s = TcpStream::from(sock);
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

/// 200 concurrent clients from 200 addresses (127.0.1.1 …), a third allowed, a third "0",
/// a third with no key, all waiting at once: every one gets its own right answer. Redis is
/// paused (SIGSTOP) while they ask, so the GETs pile up unread in its receive queue: all 200
/// were sent without waiting for replies (pipelined), on ONE connection (CLIENT LIST and
/// total_connections_received).
#[test]
fn load_200_lookups_pipelined_on_one_connection() {
    const N: usize = 200;
    common::load::raise_nofile();
    let mut p = start(&["--redis-timeout", LONGER_THAN_THE_FREEZE]);
    let echo = s5::echo_target();
    let ip = |i: usize| [127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8];
    let expect = |i: usize| match i % 3 {
        0 => Reply::Succeeded,
        _ => Reply::NotAllowed,
    };
    for i in 0..N {
        let [a, b, c, d] = ip(i);
        let key = format!("allowed:{a}.{b}.{c}.{d}");
        match i % 3 {
            0 => p.redis.set(&key, "1"),
            1 => p.redis.set(&key, "0"),
            _ => {}
        }
    }
    // Make sure the proxy's Redis connection is up before pausing Redis.
    p.redis.set("allowed:127.0.0.1", "1");
    assert_eq!(verdict(p.proxy.addr, echo), Reply::Succeeded);

    p.redis.child_signal(libc::SIGSTOP);
    let mut request = client::greeting(&[0]).unwrap();
    request.extend(client::connect_request(&Target::Ip(echo)).unwrap());
    let mut clients: Vec<TcpStream> = (0..N)
        .map(|i| {
            let mut s = connect_from(ip(i), p.proxy.addr);
            s.write_all(&request).unwrap();
            s
        })
        .collect();
    let get_len = 37; // *2 $3 GET $17 allowed:127.0.1.NNN, a few bytes less for short ones
    let queued = wait_for("200 GETs queued at the paused Redis", DEADLINE, || {
        let q = redis_rx_queue(p.redis.port);
        (q >= N * (get_len - 2)).then_some(q)
    });
    eprintln!("{queued} bytes of GETs waiting in Redis' receive queue");
    p.redis.child_signal(libc::SIGCONT);

    for (i, s) in clients.iter_mut().enumerate() {
        let mut method = [0u8; 2];
        s.read_exact(&mut method).unwrap();
        assert_eq!(method, [5, 0]);
        let (rep, _) = s5::reply(s);
        assert_eq!(rep, expect(i), "client {i} from {:?}", ip(i));
    }
    for (i, s) in clients.iter_mut().enumerate().filter(|(i, _)| i % 3 == 0) {
        let msg = format!("client {i}");
        s.write_all(msg.as_bytes()).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg.as_bytes());
    }
    // Redis saw two connections in all: this test's and the proxy's one.
    assert_eq!(p.redis.info("stats", "total_connections_received"), "2");
    let Value::Bulk(Some(list)) = p.redis.cmd(&["CLIENT", "LIST"]) else {
        panic!("CLIENT LIST is a bulk string");
    };
    let list = String::from_utf8(list).unwrap();
    assert_eq!(list.lines().count(), 2, "clients:\n{list}");
    let calls = p.redis.info("commandstats", "cmdstat_get");
    assert!(calls.starts_with(&format!("calls={},", N + 1)), "{calls}");
}

/// curl through lesson 13: refused before the key is set, the whole file once it is.
#[test]
fn curl_once_allowed() {
    let mut p = start(&[]);
    let body = Arc::new(s5::pseudo_random(1 << 20, 13));
    let http = s5::http_target(body.clone());
    let url = format!("http://localhost:{}/file.bin", http.port());
    let curl = || {
        Command::new("curl")
            .args(["-sS", "--max-time", "20", "--socks5-hostname"])
            .arg(p.proxy.addr.to_string())
            .arg(&url)
            .stdin(Stdio::null())
            .output()
            .expect("curl is installed")
    };
    let refused = curl();
    assert!(!refused.status.success(), "curl got through before SET");
    p.redis.set("allowed:127.0.0.1", "1");
    let out = curl();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == *body, "downloaded bytes differ");
}

/// A client that leaves while its lookup is pending: its reply is still read and dropped,
/// so the next client gets its own answer, not the leaver's.
#[test]
fn leaver_keeps_the_fifo_aligned() {
    let mut p = start(&["--redis-timeout", LONGER_THAN_THE_FREEZE]);
    let echo = s5::echo_target();
    p.redis.set("allowed:127.0.1.1", "1");
    // Warm up the Redis connection.
    assert_eq!(verdict(p.proxy.addr, echo), Reply::NotAllowed);
    p.redis.child_signal(libc::SIGSTOP);
    let mut request = client::greeting(&[0]).unwrap();
    request.extend(client::connect_request(&Target::Ip(echo)).unwrap());
    // The allowed client asks, then resets while Redis is paused.
    let mut leaver = connect_from([127, 0, 1, 1], p.proxy.addr);
    leaver.write_all(&request).unwrap();
    wait_for("the leaver's GET queued", DEADLINE, || {
        (redis_rx_queue(p.redis.port) > 0).then_some(())
    });
    common::reset(leaver);
    p.proxy.log.wait_line("the leaver logged", |l| {
        l.contains("client left while Admitting")
    });
    // A denied client asks next; then Redis answers both.
    let mut denied = connect_from([127, 0, 1, 2], p.proxy.addr);
    denied.write_all(&request).unwrap();
    p.redis.child_signal(libc::SIGCONT);
    let mut method = [0u8; 2];
    denied.read_exact(&mut method).unwrap();
    assert_eq!(s5::reply(&mut denied).0, Reply::NotAllowed);
}

/// A dual-stack listener (`-i ::`) sees an IPv4 client as ::ffff:127.0.0.1; the key is
/// still allowed:127.0.0.1 (skipped where IPv6 is off).
#[test]
fn ipv4_mapped_client_uses_the_ipv4_key() {
    if std::net::TcpListener::bind("[::]:0").is_err() {
        eprintln!("no IPv6 here; skipping");
        return;
    }
    let p = start_allowed(&["-i", "::"]);
    let echo = s5::echo_target();
    let v4 = SocketAddr::from(([127, 0, 0, 1], p.proxy.addr.port()));
    assert_eq!(verdict(v4, echo), Reply::Succeeded);
    p.proxy.log.wait_line("the client logged as mapped", |l| {
        l.contains("[::ffff:127.0.0.1]:") && l.ends_with("· closed")
    });
}

/// Under strace: the Redis connect (non-blocking, EINPROGRESS), its writes of GETs and its
/// reads happen in the thread that calls poll; the only thread created is the resolver.
#[test]
fn trace_redis_in_the_poll_loop() {
    let mut redis = Redis::start();
    redis.set("allowed:127.0.0.1", "1");
    let addr = redis.addr_arg();
    let traced = Traced::start(exe!("lesson-13"), &["--redis", &addr]);
    traced
        .server
        .log
        .wait_line("connected to Redis", |l| l.contains("connected to Redis"));
    let echo = s5::echo_target();
    for _ in 0..3 {
        assert_eq!(verdict(traced.server.addr, echo), Reply::Succeeded);
    }
    let port = redis.port;
    redis.kill();
    traced
        .server
        .log
        .wait_line("Redis lost", |l| l.starts_with("allowlist unavailable:"));
    assert_eq!(verdict(traced.server.addr, echo), Reply::GeneralFailure);
    let trace = traced.stop(libc::SIGTERM);

    let pid_of = |line: &str| line.split_whitespace().next().unwrap().to_string();
    let polls = trace.lines_of("poll");
    assert!(!polls.is_empty(), "no poll in the trace");
    let loop_pid = pid_of(polls[0]);
    assert!(
        polls.iter().all(|l| pid_of(l) == loop_pid),
        "poll in two threads"
    );
    let to_redis = format!(":{port}]>");
    let on_redis = |call: &str| -> Vec<String> {
        trace
            .lines_of(call)
            .into_iter()
            .filter(|l| l.contains(&to_redis) || l.contains(&format!("htons({port})")))
            .map(str::to_string)
            .collect()
    };
    let connects = on_redis("connect");
    assert!(
        connects.iter().any(|l| l.contains("EINPROGRESS")),
        "no non-blocking connect to Redis:\n{}",
        connects.join("\n")
    );
    let writes = on_redis("write");
    assert!(
        writes.iter().any(|l| l.contains("GET")),
        "no GET written to Redis:\n{}",
        writes.join("\n")
    );
    let reads = on_redis("read");
    assert!(!reads.is_empty(), "no read from Redis");
    for line in connects.iter().chain(&writes).chain(&reads) {
        assert_eq!(
            pid_of(line),
            loop_pid,
            "Redis I/O outside the poll loop: {line}"
        );
    }
    let threads = trace.lines_of("clone").len() + trace.lines_of("clone3").len();
    assert!(
        threads <= 1,
        "{threads} threads started (only the resolver may be)"
    );
}

/// A reply that is not a string (here WRONGTYPE, the key being a list) fails closed (0x01),
/// and the log names it briefly: Redis's error text escaped, never a Debug dump.
#[test]
fn redis_error_reply_logged_briefly() {
    let mut p = start(&[]);
    assert_eq!(
        p.redis.cmd(&["RPUSH", "allowed:127.0.0.1", "x\ny"]),
        Value::Integer(1)
    );
    assert_eq!(
        verdict(p.proxy.addr, s5::echo_target()),
        Reply::GeneralFailure
    );
    let line = p
        .proxy
        .log
        .wait_line("the refusal logged", |l| l.contains("Redis answered"));
    assert!(line.contains("Redis answered error \"WRONGTYPE "), "{line}");
}

/// Even an allowed client may not CONNECT to the allowlist's Redis: 0x02, logged, and the
/// allowlist cannot be rewritten through the proxy.
#[test]
fn redis_not_reachable_through_the_proxy() {
    let mut p = start_allowed(&[]);
    let redis: SocketAddr = p.redis.addr_arg().parse().unwrap();
    assert_eq!(verdict(p.proxy.addr, redis), Reply::NotAllowed);
    p.proxy.log.wait_line("the refusal logged", |l| {
        l.contains(&format!("{redis} is the allowlist's Redis server"))
    });
    assert_eq!(verdict(p.proxy.addr, s5::echo_target()), Reply::Succeeded);
    assert_eq!(p.redis.cmd(&["DBSIZE"]), Value::Integer(1));
}

/// A Redis at maxclients accepts, answers `-ERR max number of clients reached` unasked and
/// closes. The proxy fails closed, logs Redis's own reason once for the outage, and keeps
/// its backoff (≤ 1 attempt a second once it has grown), instead of redialling 20 times a
/// second and logging "a reply nobody asked for" each time.
#[test]
fn redis_at_maxclients() {
    // maxclients 1: the test's own connection is the one client.
    let mut redis = Redis::start_with(&["--maxclients", "1"]);
    let addr = redis.addr_arg();
    let proxy = Server::start(exe!("lesson-13"), &["--redis", &addr]);
    let reason = "max number of clients reached";
    proxy
        .log
        .wait_line("Redis's reason", |l| l.contains(reason));
    let rejected =
        |redis: &mut Redis| -> u64 { redis.info("stats", "rejected_connections").parse().unwrap() };
    // Watch for 3 s: the backoff grows 50 ms, 100, 200, 400, 800, then 1 s.
    let (start, before) = (Instant::now(), rejected(&mut redis));
    while start.elapsed() < Duration::from_secs(3) {
        let said = proxy.log.count(|l| l.contains(reason));
        assert_eq!(
            said,
            1,
            "Redis's reason logged {said} times:\n{:#?}",
            proxy.log.lines()
        );
        assert_eq!(proxy.log.count(|l| l.contains("nobody asked")), 0);
        // Connected once, at start; the redials that Redis turns away are no recovery.
        assert_eq!(proxy.log.count(|l| l.contains("connected to Redis")), 1);
        std::thread::sleep(Duration::from_millis(50));
    }
    let attempts = rejected(&mut redis) - before;
    assert!(attempts <= 8, "{attempts} connection attempts in 3 s");
    let mut s = s5::connect(proxy.addr);
    assert_eq!(s5::greet(&mut s, &[0]), 0);
    let (rep, _) = s5::request(&mut s, Cmd::Connect, &Target::Ip(s5::echo_target()));
    assert_eq!(rep, Reply::GeneralFailure, "fails closed");
}

/// On `-i ::1` clients are keyed `allowed:::1`, and the banner's hint says so: following
/// it lets the client in.
#[test]
fn ipv6_banner_names_the_real_key() {
    let mut p = start(&["-i", "::1"]);
    let hint = p
        .proxy
        .log
        .wait_line("the allow hint", |l| l.contains("allow: "));
    assert!(hint.ends_with(" set allowed:::1 1"), "{hint}");
    let echo = s5::echo_target();
    assert_eq!(verdict(p.proxy.addr, echo), Reply::NotAllowed);
    p.redis.set("allowed:::1", "1");
    assert_eq!(verdict(p.proxy.addr, echo), Reply::Succeeded);
}

/// Asks once: the reply code and how long it took from connect to reply.
fn timed_verdict(proxy: SocketAddr, target: SocketAddr) -> (Reply, Duration) {
    let start = Instant::now();
    let (rep, _) = ask(proxy, target);
    (rep, start.elapsed())
}

/// A frozen Redis (SIGSTOP: it still completes handshakes and takes writes, never answers).
/// With the default deadline (0.5 s) the proxy fails closed *and* fast: a relay already
/// allowed keeps echoing; a new client is refused 0x01 within deadline + 1 s; 200 clients at
/// once, on the redialled connection, are all refused within deadline + 2 s (none allowed)
/// and the fd count comes back;
/// one log line starts the outage, one ends it; after SIGCONT a client is allowed within
/// 3 s. The margins are for a loaded 2-core machine; the real figures are printed.
#[test]
fn frozen_redis_refused_fast() {
    const N: usize = 200;
    const TIMEOUT: Duration = Duration::from_millis(500);
    common::load::raise_nofile();
    let p = start_allowed(&[]);
    let echo = s5::echo_target();
    let mut relay = s5::open(p.proxy.addr, echo);
    let echoes = |relay: &mut TcpStream, round: usize| {
        let msg = format!("round {round}");
        relay.write_all(msg.as_bytes()).unwrap();
        let mut got = vec![0u8; msg.len()];
        relay.read_exact(&mut got).unwrap();
        assert_eq!(
            got,
            msg.as_bytes(),
            "the allowed relay echoes during the freeze"
        );
    };
    echoes(&mut relay, 0);
    let fds = p.proxy.fd_count();

    p.redis.child_signal(libc::SIGSTOP);
    let frozen = Instant::now();
    let (first, first_took) = timed_verdict(p.proxy.addr, echo);
    echoes(&mut relay, 1);
    // The burst comes once the proxy has redialled the frozen Redis (its fd count is back:
    // the kernel still completes the handshake), so all 200 checks wait on that connection.
    common::wait_fd_count(p.proxy.pid(), fds);

    let mut request = client::greeting(&[0]).unwrap();
    request.extend(client::connect_request(&Target::Ip(echo)).unwrap());
    let burst = Instant::now();
    let mut clients: Vec<TcpStream> = (0..N)
        .map(|_| {
            let mut s = s5::connect(p.proxy.addr);
            s.write_all(&request).unwrap();
            s
        })
        .collect();
    let mut answers = Vec::with_capacity(N);
    for s in clients.iter_mut() {
        let mut method = [0u8; 2];
        s.read_exact(&mut method).unwrap();
        answers.push(s5::reply(s).0);
    }
    let burst_took = burst.elapsed();
    drop(clients);
    echoes(&mut relay, 2);
    let allowed = answers.iter().filter(|r| **r == Reply::Succeeded).count();
    let failed = answers
        .iter()
        .filter(|r| **r == Reply::GeneralFailure)
        .count();
    common::wait_fd_count(p.proxy.pid(), fds);
    let frozen_for = frozen.elapsed();

    p.redis.child_signal(libc::SIGCONT);
    let thawed = Instant::now();
    let (back, back_took) = loop {
        let (rep, _) = timed_verdict(p.proxy.addr, echo);
        if rep == Reply::Succeeded || thawed.elapsed() > DEADLINE {
            break (rep, thawed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "frozen Redis, deadline {TIMEOUT:?}: first client {first} after {first_took:?}; \
         {N} clients all answered in {burst_took:?} ({failed} refused 0x01, {allowed} allowed); \
         frozen {frozen_for:?} in all; allowed again {back_took:?} after SIGCONT"
    );
    assert_eq!(first, Reply::GeneralFailure, "refused 0x01 while frozen");
    assert!(
        first_took < TIMEOUT + Duration::from_secs(1),
        "{first_took:?}"
    );
    assert_eq!((failed, allowed), (N, 0), "every client refused 0x01");
    assert!(
        burst_took < TIMEOUT + Duration::from_secs(2),
        "{burst_took:?}"
    );
    assert_eq!(back, Reply::Succeeded, "allowed again after SIGCONT");
    assert!(back_took < Duration::from_secs(3), "{back_took:?}");
    echoes(&mut relay, 3);
    // One line per outage: its start, and its end once Redis answers again.
    p.proxy
        .log
        .wait_line("the outage's end", |l| l.contains("it answers again"));
    let starts = p
        .proxy
        .log
        .count(|l| l.starts_with("allowlist unavailable:"));
    let ends = p.proxy.log.count(|l| l.contains("it answers again"));
    assert_eq!((starts, ends), (1, 1), "{:#?}", p.proxy.log.lines());
    let start = |l: &str| l.starts_with("allowlist unavailable:");
    assert_eq!(
        p.proxy
            .log
            .count(|l| start(l) && l.contains("no reply within 500 ms")),
        1,
        "the outage's line says why"
    );
}

/// `--redis-timeout` sets how long a check waits for a frozen Redis: with 2 s, the first
/// client is refused no sooner than 2 s after it asked, and the log names the 2 s.
#[test]
fn redis_timeout_flag_sets_the_wait() {
    let p = start_allowed(&["--redis-timeout", "2"]);
    let echo = s5::echo_target();
    assert_eq!(verdict(p.proxy.addr, echo), Reply::Succeeded);
    p.redis.child_signal(libc::SIGSTOP);
    let (rep, took) = timed_verdict(p.proxy.addr, echo);
    p.redis.child_signal(libc::SIGCONT);
    eprintln!("frozen Redis, --redis-timeout 2: refused after {took:?}");
    assert_eq!(rep, Reply::GeneralFailure);
    assert!(took >= Duration::from_secs(2), "refused after {took:?}");
    assert!(took < Duration::from_secs(5), "refused after {took:?}");
    p.proxy.log.wait_line("the deadline named", |l| {
        l.starts_with("allowlist unavailable:") && l.contains("no reply within 2 s")
    });
}
