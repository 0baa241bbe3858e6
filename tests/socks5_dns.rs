//! Name resolution in lessons 12 and 14 (14 mounts 12's resolver) through the C library's
//! real resolver path: getaddrinfo, /etc/nsswitch.conf, /etc/resolv.conf, a DNS server over
//! UDP. Each test re-runs itself
//! inside `unshare -nm` (a network namespace with only its own loopback, and a private
//! mount namespace), bind-mounts its own resolv.conf (nameserver 127.0.0.1) and
//! nsswitch.conf (hosts: dns) over the real ones, and answers the proxy's queries with a
//! tiny DNS server written here: some names at once, some after a delay, some never, some
//! NXDOMAIN. Timings are taken from the clients.

mod common;

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket,
};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::socks5 as s5;
use common::{mistake_args, wait_for, Server, DEADLINE};
use protocols::dns;
use protocols::socks5::{client, Reply, Target};

/// Set in the re-run inside the namespaces.
const INSIDE: &str = "SBH_DNS_NAMESPACE";
/// What the DNS server makes the slow names wait.
const SLOW: Duration = Duration::from_secs(2);
/// The proxy's resolver pool (lessons/12-socks5/resolver.rs).
const CAP: usize = 32;
const FLOOR: usize = 1;

/// Runs `body` inside a fresh network + mount namespace (re-running this test binary there
/// under `unshare`), with the resolver pointed at a [`Dns`] server on 127.0.0.1:53.
fn in_namespace(test: &str, body: impl FnOnce(&Dns)) {
    if common::in_own_namespace(test, INSIDE, true) {
        let dns = Dns::start();
        body(&dns);
    }
}

/// The test's DNS server and the names it knows; also the namespace's set-up.
struct Dns {
    /// Every query seen: (name, qtype).
    seen: Arc<Mutex<Vec<(String, u16)>>>,
}

impl Dns {
    fn start() -> Dns {
        // The namespace's loopback starts down: ip link set lo up.
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        assert!(up.is_ok_and(|s| s.success()), "ip link set lo up");
        let dir = std::env::temp_dir().join(format!("sbh-dns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // timeout:30 attempts:1: a name that is never answered hangs for 30 s.
        let files = [
            (
                "resolv.conf",
                "nameserver 127.0.0.1\noptions timeout:30 attempts:1\n",
            ),
            ("nsswitch.conf", "hosts: dns\n"),
        ];
        for (name, text) in files {
            let ours = dir.join(name);
            std::fs::write(&ours, text).unwrap();
            let (src, dst) = (
                CString::new(ours.to_str().unwrap()).unwrap(),
                CString::new(format!("/etc/{name}")).unwrap(),
            );
            // SAFETY: mount(2) with valid C strings; private to this mount namespace.
            let rc = unsafe {
                libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            };
            assert_eq!(
                rc,
                0,
                "bind-mount {name}: {}",
                std::io::Error::last_os_error()
            );
        }
        let socket = UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        thread::spawn(move || serve(socket, log));
        Dns { seen }
    }

    /// Waits until the server has been asked about `name` (its lookup is in flight).
    fn wait_asked(&self, name: &str) {
        wait_for(&format!("a query for {name}"), DEADLINE, || {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .any(|(n, _)| n == name)
                .then_some(())
        });
    }

    fn asked(&self, prefix: &str) -> usize {
        let seen = self.seen.lock().unwrap();
        let mut names: Vec<&String> = seen
            .iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        names.dedup();
        names.len()
    }

    /// How many questions of type `qtype` (1 = A, 28 = AAAA) the server got for `name`.
    fn questions(&self, name: &str, qtype: u16) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(n, t)| n == name && *t == qtype)
            .count()
    }
}

/// DNS question types (RFC 1035, RFC 3596).
const A: u16 = 1;
const AAAA: u16 = 28;

/// What the server does with a name: its A and AAAA records and when it answers.
enum Answer {
    Records(Vec<Ipv4Addr>, Vec<Ipv6Addr>, Duration),
    Never,
    NxDomain,
}

fn answer_for(name: &str) -> Answer {
    let local = vec![Ipv4Addr::LOCALHOST];
    match name {
        "fast.test" => Answer::Records(local, vec![], Duration::ZERO),
        "v6only.test" => Answer::Records(vec![], vec![Ipv6Addr::LOCALHOST], Duration::ZERO),
        "both.test" => Answer::Records(local, vec![Ipv6Addr::LOCALHOST], Duration::ZERO),
        _ if name.starts_with("slow") => Answer::Records(local, vec![], SLOW),
        _ if name.starts_with("hung") => Answer::Never,
        _ => Answer::NxDomain,
    }
}

/// Answers A and AAAA queries from [`answer_for`]; a delayed answer is sent by a thread
/// of its own, so a slow name never delays the server's other answers.
fn serve(socket: UdpSocket, seen: Arc<Mutex<Vec<(String, u16)>>>) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            return;
        };
        let Some(q) = dns::question(&buf[..n]) else {
            continue;
        };
        seen.lock().unwrap().push((q.name.clone(), q.qtype));
        let (rcode, ips, delay): (u8, Vec<IpAddr>, Duration) = match answer_for(&q.name) {
            Answer::Never => continue,
            Answer::NxDomain => (dns::NXDOMAIN, vec![], Duration::ZERO),
            Answer::Records(a, aaaa, delay) => {
                let ips = a.into_iter().map(IpAddr::V4);
                (
                    0,
                    ips.chain(aaaa.into_iter().map(IpAddr::V6)).collect(),
                    delay,
                )
            }
        };
        let reply = dns::answer(&buf[..n], &q, rcode, &ips);
        let socket = socket.try_clone().unwrap();
        thread::spawn(move || {
            // The delay is the behaviour under test (a slow DNS server), not a wait.
            thread::sleep(delay);
            let _ = socket.send_to(&reply, from);
        });
    }
}

// ---------------------------------------------------------------------------------------
// Clients.
// ---------------------------------------------------------------------------------------

/// A client that has greeted and sent a CONNECT to `name:port`; its reply is read later.
fn ask(proxy: SocketAddr, name: &str, port: u16) -> TcpStream {
    let mut s = s5::connect(proxy);
    assert_eq!(s5::greet(&mut s, &[0]), 0);
    let target = Target::Domain(name.into(), port);
    s.write_all(&client::connect_request(&target).unwrap())
        .unwrap();
    s
}

/// CONNECT to `name:port`: the reply and how long it took.
fn timed(proxy: SocketAddr, name: &str, port: u16) -> (Reply, Duration, TcpStream) {
    let mut s = s5::connect(proxy);
    assert_eq!(s5::greet(&mut s, &[0]), 0);
    let start = Instant::now();
    let target = Target::Domain(name.into(), port);
    s.write_all(&client::connect_request(&target).unwrap())
        .unwrap();
    let (rep, _) = s5::reply(&mut s);
    (rep, start.elapsed(), s)
}

/// The proxy's threads, from /proc/PID/task.
fn threads(proxy: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", proxy.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The proxy's TCP sockets (its listener and clients' and targets' sockets): the fds in
/// /proc/PID/fd whose inode /proc/net/tcp{,6} lists. A hung lookup also holds a UDP socket
/// of the C library's, which nothing can close before getaddrinfo returns.
fn tcp_fds(proxy: &Server) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            if let Some(inode) = line.split_whitespace().nth(9) {
                inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", proxy.pid())) else {
        return 0;
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|link| inodes.contains(link.to_str().unwrap_or("")))
        .count()
}

fn echo_says(s: &mut TcpStream) {
    s.write_all(b"hi").unwrap();
    let mut got = [0u8; 2];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hi");
}

// ---------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------

// The same cases for lesson 12 and lesson 14 (which mounts 12's resolver).
dns_cases!(lesson_12, "lesson-12");
dns_cases!(lesson_14, "lesson-14");

/// The tests, for the lesson whose binary is `$exe`.
macro_rules! dns_cases {
    ($module:ident, $exe:literal) => {
mod $module {
use super::*;

fn start(args: &[&str]) -> Server {
    Server::start(exe!($exe), args)
}

/// A name whose server answers after 2 s, then one that answers at once: the fast one is
/// connected at once, not after the slow one. The same behind a name never answered.
#[test]
fn fast_name_behind_a_slow_one() {
    in_namespace(concat!(stringify!($module), "::fast_name_behind_a_slow_one"), |dns| {
        let proxy = start(&[]);
        let echo = s5::echo_target();
        let mut slow = ask(proxy.addr, "slow.test", echo.port());
        dns.wait_asked("slow.test");
        let (rep, took, mut fast) = timed(proxy.addr, "fast.test", echo.port());
        assert_eq!(rep, Reply::Succeeded);
        eprintln!("fast name behind a slow one: {took:?}");
        assert!(
            took < SLOW / 2,
            "the fast name took {took:?} behind a slow one"
        );
        echo_says(&mut fast);
        assert_eq!(s5::reply(&mut slow).0, Reply::Succeeded);
        echo_says(&mut slow);

        let _hung = ask(proxy.addr, "hung.test", echo.port());
        dns.wait_asked("hung.test");
        let (rep, took, _) = timed(proxy.addr, "fast.test", echo.port());
        assert_eq!(rep, Reply::Succeeded);
        eprintln!("fast name behind a hung one: {took:?}");
        assert!(
            took < SLOW / 2,
            "the fast name took {took:?} behind a hung one"
        );
    });
}

/// Twenty slow names at once (2 s each) are all answered in about 2 s, not 40: the pool
/// grows for them, and shrinks back to its floor once idle.
#[test]
fn many_slow_names_at_once() {
    in_namespace(concat!(stringify!($module), "::many_slow_names_at_once"), |dns| {
        let proxy = start(&[]);
        let idle = threads(&proxy);
        let echo = s5::echo_target();
        let start = Instant::now();
        let mut clients: Vec<TcpStream> = (0..20)
            .map(|i| ask(proxy.addr, &format!("slow{i}.test"), echo.port()))
            .collect();
        wait_for("20 slow names asked", DEADLINE, || {
            (dns.asked("slow") == 20).then_some(())
        });
        let busy = threads(&proxy);
        for s in clients.iter_mut() {
            assert_eq!(s5::reply(s).0, Reply::Succeeded);
        }
        let took = start.elapsed();
        eprintln!("20 slow names ({SLOW:?} each): {took:?}; threads {idle} idle, {busy} busy");
        assert!(took < SLOW * 3, "20 slow names took {took:?}");
        assert_eq!(busy, idle + 20 - FLOOR, "one thread per lookup in flight");
        echo_says(&mut clients[19]);
        wait_for("the pool back to its floor", DEADLINE, || {
            (threads(&proxy) == idle).then_some(())
        });
    });
}

/// Clients that leave while their names hang are dropped at once (the proxy's fd count is
/// back in well under the 30 s lookup deadline; only the
/// C library's own UDP sockets stay with the hung lookups), and a fast name still goes through.
#[test]
fn clients_leaving_during_hung_lookups() {
    in_namespace(concat!(stringify!($module), "::clients_leaving_during_hung_lookups"), |dns| {
        let proxy = start(&["--connect-timeout", "30"]);
        let echo = s5::echo_target();
        let before = tcp_fds(&proxy);
        let clients: Vec<TcpStream> = (0..10)
            .map(|i| ask(proxy.addr, &format!("hung{i}.test"), echo.port()))
            .collect();
        wait_for("10 hung names asked", DEADLINE, || {
            (dns.asked("hung") == 10).then_some(())
        });
        assert_eq!(tcp_fds(&proxy), before + 10);
        let start = Instant::now();
        drop(clients);
        wait_for("the TCP fd count back", DEADLINE, || {
            (tcp_fds(&proxy) == before).then_some(())
        });
        let took = start.elapsed();
        eprintln!("10 clients left during hung lookups: fds back in {took:?}");
        assert!(
            took < Duration::from_secs(2),
            "fds back only after {took:?}"
        );
        let left = |l: &str| l.contains("hung") && l.contains("client left while Resolving");
        wait_for("10 log lines", DEADLINE, || {
            (proxy.log.count(left) == 10).then_some(())
        });
        let (rep, took, _) = timed(proxy.addr, "fast.test", echo.port());
        assert_eq!(rep, Reply::Succeeded);
        assert!(took < SLOW / 2, "fast name after hung ones: {took:?}");
    });
}

/// More slow names than the pool's cap: the log says so once; names beyond the cap wait,
/// and those whose clients leave are never looked up (the DNS server is never asked about
/// them, even after the pool has room again).
#[test]
fn a_full_pool_logged_once_and_left_names_forgotten() {
    in_namespace(concat!(stringify!($module), "::a_full_pool_logged_once_and_left_names_forgotten"), |dns| {
        let proxy = start(&[]);
        let idle = threads(&proxy);
        let echo = s5::echo_target();
        let full = |l: &str| l.contains(&format!("all {CAP} threads are waiting"));
        let mut slow: Vec<TcpStream> = (0..CAP)
            .map(|i| ask(proxy.addr, &format!("slow{i}.test"), echo.port()))
            .collect();
        wait_for("CAP slow names asked", DEADLINE, || {
            (dns.asked("slow") == CAP).then_some(())
        });
        assert_eq!(proxy.log.count(full), 0, "logged before the pool was full");
        let waiting: Vec<TcpStream> = (0..8)
            .map(|i| ask(proxy.addr, &format!("queued{i}.test"), echo.port()))
            .collect();
        proxy.log.wait_line("the pool is full", full);
        // A relay by IP literal still works, and by then every request above was read.
        let mut literal = s5::open(proxy.addr, echo);
        echo_says(&mut literal);
        assert_eq!(proxy.log.count(full), 1, "one line per episode");
        let before = tcp_fds(&proxy);
        drop(waiting);
        wait_for("the TCP fd count back", DEADLINE, || {
            (tcp_fds(&proxy) == before - 8).then_some(())
        });
        for s in slow.iter_mut() {
            assert_eq!(s5::reply(s).0, Reply::Succeeded);
        }
        proxy
            .log
            .wait_line("the episode's end", |l| l.contains("queue is empty again"));
        wait_for("the pool back to its floor", DEADLINE, || {
            (threads(&proxy) == idle).then_some(())
        });
        assert_eq!(
            dns.asked("queued"),
            0,
            "names of clients that left were looked up"
        );
        assert_eq!(proxy.log.count(full), 1, "one line per episode");
    });
}

/// Fifty clients for one name that is never answered share one lookup: one thread waits for
/// it, not all 32. When they have left, a fast name is resolved at once (before, the 32
/// threads it filled hung for the resolver's 30 s and the fast name waited behind them).
#[test]
fn clients_for_one_hung_name_share_a_lookup() {
    in_namespace(concat!(stringify!($module), "::clients_for_one_hung_name_share_a_lookup"), |dns| {
        let proxy = start(&["--connect-timeout", "30"]);
        let idle = threads(&proxy);
        let echo = s5::echo_target();
        let clients: Vec<TcpStream> = (0..50)
            .map(|_| ask(proxy.addr, "hung-shared.test", echo.port()))
            .collect();
        dns.wait_asked("hung-shared.test");
        let left = |l: &str| l.contains("hung-shared") && l.contains("client left while Resolving");
        // A relay by IP literal: by the time it echoes, every request above was read.
        echo_says(&mut s5::open(proxy.addr, echo));
        let busy = threads(&proxy);
        drop(clients);
        wait_for("50 log lines", DEADLINE, || {
            (proxy.log.count(left) == 50).then_some(())
        });
        let (rep, took, _) = timed(proxy.addr, "fast.test", echo.port());
        let asked = (dns.questions("hung-shared.test", A), dns.questions("hung-shared.test", AAAA));
        eprintln!(
            "50 clients for one hung name: threads {idle} idle, {busy} busy; questions (A, AAAA) \
             {asked:?}; then a fast name in {took:?}"
        );
        assert_eq!(rep, Reply::Succeeded);
        assert!(took < SLOW / 2, "fast name after a shared hung one: {took:?}");
        assert!(busy <= idle + 1, "{busy} threads for one name ({idle} idle)");
    });
}

/// Twenty clients for one slow name: the DNS server is asked once (one A and one AAAA
/// question), and every client gets the answer, each for its own port (half of them an
/// echo target, half a closed port: 0x05).
#[test]
fn clients_for_one_slow_name_share_a_lookup() {
    in_namespace(concat!(stringify!($module), "::clients_for_one_slow_name_share_a_lookup"), |dns| {
        let proxy = start(&[]);
        let echo = s5::echo_target();
        let (_closed, closed) = s5::closed_port();
        let port = |i: usize| if i % 2 == 0 { echo.port() } else { closed.port() };
        let start = Instant::now();
        let mut clients: Vec<TcpStream> = (0..20)
            .map(|i| ask(proxy.addr, "slow-shared.test", port(i)))
            .collect();
        let replies: Vec<Reply> = clients.iter_mut().map(|s| s5::reply(s).0).collect();
        let took = start.elapsed();
        let asked = (dns.questions("slow-shared.test", A), dns.questions("slow-shared.test", AAAA));
        eprintln!("20 clients for one slow name: all answered in {took:?}; questions (A, AAAA) {asked:?}");
        for (i, rep) in replies.iter().enumerate() {
            let want = if i % 2 == 0 { Reply::Succeeded } else { Reply::ConnectionRefused };
            assert_eq!(*rep, want, "client {i}");
        }
        echo_says(&mut clients[0]);
        assert_eq!(asked, (1, 1), "one lookup for twenty clients");
    });
}

/// Distinct names that are never answered still fill the pool (one thread each, up to the
/// cap), and the log says so.
#[test]
fn distinct_hung_names_fill_the_pool() {
    in_namespace(concat!(stringify!($module), "::distinct_hung_names_fill_the_pool"), |dns| {
        let proxy = start(&["--connect-timeout", "30"]);
        let idle = threads(&proxy);
        let echo = s5::echo_target();
        let _clients: Vec<TcpStream> = (0..CAP + 4)
            .map(|i| ask(proxy.addr, &format!("hung{i}.test"), echo.port()))
            .collect();
        proxy.log.wait_line("the pool is full", |l| {
            l.contains(&format!("all {CAP} threads are waiting"))
        });
        wait_for("CAP hung names asked", DEADLINE, || {
            (dns.asked("hung") == CAP).then_some(())
        });
        assert_eq!(threads(&proxy), idle + CAP - FLOOR, "one thread per distinct name");
    });
}

/// A name with only an AAAA record; NXDOMAIN answered 0x04; a name whose first address
/// refuses is connected through its second.
#[test]
fn aaaa_only_nxdomain_and_every_address() {
    in_namespace(concat!(stringify!($module), "::aaaa_only_nxdomain_and_every_address"), |_dns| {
        let proxy = start(&[]);
        let six = TcpListener::bind("[::1]:0").expect("::1 in the namespace");
        let port = six.local_addr().unwrap().port();
        thread::spawn(move || {
            for mut conn in six.incoming().flatten() {
                let _ = conn.write_all(b"six\n");
            }
        });
        let (rep, _, mut s) = timed(proxy.addr, "v6only.test", port);
        assert_eq!(rep, Reply::Succeeded);
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert_eq!(got, "six\n");

        let (rep, took, mut s) = timed(proxy.addr, "missing.test", 80);
        assert_eq!(rep, Reply::HostUnreachable);
        assert!(took < SLOW / 2, "NXDOMAIN took {took:?}");
        assert!(s5::closes(&mut s));

        // both.test (::1 and 127.0.0.1): nothing listens on the address getaddrinfo puts
        // first (::1 by RFC 6724), an echo server on the second: the relay must try both.
        let order: Vec<SocketAddr> = ("both.test", 0).to_socket_addrs().unwrap().collect();
        assert_eq!(order.len(), 2, "both.test: {order:?}");
        let second = TcpListener::bind(SocketAddr::new(order[1].ip(), 0)).unwrap();
        let port = second.local_addr().unwrap().port();
        thread::spawn(move || {
            for mut conn in second.incoming().flatten() {
                thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = conn.read(&mut buf) {
                        let _ = conn.write_all(&buf[..n]);
                    }
                });
            }
        });
        let (rep, _, mut s) = timed(proxy.addr, "both.test", port);
        assert_eq!(
            rep,
            Reply::Succeeded,
            "first {} refused, then {}",
            order[0],
            order[1]
        );
        echo_says(&mut s);
    });
}
}
    };
}
use dns_cases;

/// `--mistake blocking-dns`: getaddrinfo called on the loop. A CONNECT to a fast
/// name sent while a slow name's lookup is pending is answered after the slow one: the whole
/// loop waited for the slow name. Without the mistake the fast one is answered first.
#[test]
fn blocking_dns_mistake_makes_a_fast_name_wait() {
    in_namespace("blocking_dns_mistake_makes_a_fast_name_wait", |dns| {
        for (mistake, slow_name) in [(true, "slow1.test"), (false, "slow2.test")] {
            let args = &mistake_args(mistake, "blocking-dns");
            let proxy = Server::start(exe!("lesson-12"), args);
            let echo = s5::echo_target();
            let order = Arc::new(Mutex::new(Vec::new()));
            let mut slow = ask(proxy.addr, slow_name, echo.port());
            dns.wait_asked(slow_name);
            let done = order.clone();
            let slow = thread::spawn(move || {
                let rep = s5::reply(&mut slow).0;
                done.lock().unwrap().push("slow");
                rep
            });
            let done = order.clone();
            let addr = proxy.addr;
            let fast = thread::spawn(move || {
                let mut s = ask(addr, "fast.test", echo.port());
                let rep = s5::reply(&mut s).0;
                done.lock().unwrap().push("fast");
                rep
            });
            assert_eq!(fast.join().unwrap(), Reply::Succeeded);
            assert_eq!(slow.join().unwrap(), Reply::Succeeded);
            let order = order.lock().unwrap().clone();
            let expected = if mistake {
                ["slow", "fast"]
            } else {
                ["fast", "slow"]
            };
            assert_eq!(order, expected, "--mistake blocking-dns: {mistake}");
        }
    });
}
