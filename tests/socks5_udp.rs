//! Lesson 16, SOCKS5 UDP ASSOCIATE on lesson 12's relay: lesson 12's whole SOCKS5 suite (it is
//! still a TCP relay), then the datagrams: PySocks' UDP support through the relay to a UDP echo
//! server of the test's own, a DNS query relayed to a DNS server the test starts in its own
//! network namespace (with a domain target and one that fails to resolve), and the corners:
//! fragments, a wrong source, a 65,507-byte datagram, an IPv6 target, the -u/-P gate, teardown
//! on close and on reset, 1,000 associations with the fds back, and each `--mistake`.

mod common;

use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::socks5 as s5;
use common::{mistake_args, wait_fd_count, Server, DEADLINE};
use protocols::socks5::{Command as Cmd, Reply, Target};
use protocols::socks5_udp::{parse_header, wrap, wrap_fragment};

fn start(args: &[&str]) -> Server {
    Server::start(exe!("lesson-16"), args)
}

socks5_suite!(lesson_16, super::start);

/// A UDP echo server on `ip`: every datagram goes back to its sender; counts them.
fn udp_echo(ip: IpAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
    let addr = sock.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = sock.send_to(&buf[..n], from);
        }
    });
    (addr, seen)
}

/// A UDP ASSOCIATE on a new control connection: (control connection, BND).
fn associate(proxy: SocketAddr, from: SocketAddr) -> (TcpStream, SocketAddr) {
    let mut control = s5::connect(proxy);
    assert_eq!(s5::greet(&mut control, &[0]), 0);
    let (rep, bnd) = s5::request(&mut control, Cmd::UdpAssociate, &Target::Ip(from));
    assert_eq!(rep, Reply::Succeeded);
    let Target::Ip(bnd) = bnd else {
        panic!("BND is a name: {bnd:?}")
    };
    assert!(!bnd.ip().is_unspecified() && bnd.port() != 0, "BND {bnd}");
    (control, bnd)
}

/// A client UDP socket on loopback, with the tests' deadline on reads.
fn client_socket(ip: IpAddr) -> UdpSocket {
    let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    sock
}

/// Sends `payload` for `target` through the relay at `bnd`; returns (source named in the
/// reply's header, reply payload).
fn round_trip(
    sock: &UdpSocket,
    bnd: SocketAddr,
    target: &Target,
    payload: &[u8],
) -> (Target, Vec<u8>) {
    sock.send_to(&wrap(target, payload).unwrap(), bnd).unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, from) = sock.recv_from(&mut buf).expect("a reply through the relay");
    assert_eq!(from, bnd, "the reply comes from the relay's UDP address");
    let (header, used) = parse_header(&buf[..n]).expect("a SOCKS5 UDP header");
    assert_eq!(header.frag, 0);
    (header.target, buf[used..n].to_vec())
}

/// The Ctrl-C summary's UDP line.
fn udp_summary(mut proxy: Server) -> String {
    proxy.signal(libc::SIGINT);
    proxy.wait_exit(DEADLINE).expect("exits on Ctrl-C");
    proxy
        .log
        .wait_line("the UDP summary", |l| l.starts_with("udp · "))
}

/// PySocks (python3-socks), a real SOCKS5 client with UDP support: its socksocket(SOCK_DGRAM)
/// makes the association and wraps and unwraps the headers itself.
#[test]
fn pysocks_udp_round_trip() {
    let proxy = start(&[]);
    let (echo, seen) = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let script = r#"
import socks, socket, sys
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.set_proxy(socks.SOCKS5, sys.argv[1], int(sys.argv[2]))
s.settimeout(20)
for word in (b"hello", b"datagram", b"x" * 1400):
    s.sendto(word, (sys.argv[3], int(sys.argv[4])))
    data, source = s.recvfrom(65535)
    assert data == word, (data, word)
    print(len(data), source[0], source[1])
"#;
    // Debian's python3-socks is the system python's (a python3 earlier in PATH may not have it).
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let out = Command::new(python.unwrap_or("python3"))
        .args(["-c", script])
        .args([proxy.addr.ip().to_string(), proxy.addr.port().to_string()])
        .args([echo.ip().to_string(), echo.port().to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("python3 runs (scripts/ensure-tools.sh installs python3-socks)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "PySocks failed: {stdout}");
    let want = format!(
        "5 127.0.0.1 {p}\n8 127.0.0.1 {p}\n1400 127.0.0.1 {p}\n",
        p = echo.port()
    );
    assert_eq!(stdout, want);
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

/// FRAG ≠ 0 is dropped (and counted); the whole datagram after it goes through.
#[test]
fn fragments_are_dropped() {
    let proxy = start(&[]);
    let (echo, seen) = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let sock = client_socket(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (_control, bnd) = associate(proxy.addr, sock.local_addr().unwrap());
    let target = Target::Ip(echo);
    for frag in [1u8, 0x81] {
        let d = wrap_fragment(frag, &target, b"part").unwrap();
        sock.send_to(&d, bnd).unwrap();
    }
    // Datagrams on one socket are read in order: if a fragment were relayed, the echo
    // server would have seen it before this one.
    let (from, back) = round_trip(&sock, bnd, &target, b"whole");
    assert_eq!((from, back), (target, b"whole".to_vec()));
    assert_eq!(seen.load(Ordering::SeqCst), 1, "a fragment was relayed");
    assert!(udp_summary(proxy).contains("fragment 2"));
}

/// A datagram from another port than the one the request named is dropped: the relay is
/// no open relay. `--mistake any-source` relays it.
#[test]
fn wrong_source_dropped_and_any_source_mistake_relays_it() {
    for on in [false, true] {
        let proxy = start(&mistake_args(on, "any-source"));
        let (echo, seen) = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let sock = client_socket(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let stranger = client_socket(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let (_control, bnd) = associate(proxy.addr, sock.local_addr().unwrap());
        let target = Target::Ip(echo);
        stranger
            .send_to(&wrap(&target, b"bounce").unwrap(), bnd)
            .unwrap();
        if !on {
            let (_, back) = round_trip(&sock, bnd, &target, b"mine");
            assert_eq!(back, b"mine");
            let relayed = seen.load(Ordering::SeqCst);
            assert_eq!(relayed, 1, "the stranger's datagram was relayed");
            assert!(udp_summary(proxy).contains("wrong source 1"));
        } else {
            // The naive relay takes whoever sent last for its client: both echoes come here.
            let (_, first) = round_trip(&sock, bnd, &target, b"mine");
            assert_eq!(
                first, b"bounce",
                "--mistake any-source relays the stranger's datagram"
            );
            // Both datagrams reach the echo server; the second may still be on its way
            // there when the first one's echo is back.
            let until = Instant::now() + Duration::from_secs(5);
            while seen.load(Ordering::SeqCst) < 2 && Instant::now() < until {
                thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(seen.load(Ordering::SeqCst), 2);
        }
    }
}

/// The largest IPv4 datagram, 65,507 bytes (header included), there and back; with
/// `--mistake small-buffer` it is cut (MSG_TRUNC), dropped and counted.
#[test]
fn datagram_of_65507_bytes_and_the_small_buffer_mistake() {
    for on in [false, true] {
        let proxy = start(&mistake_args(on, "small-buffer"));
        let (echo, seen) = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let sock = client_socket(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let (_control, bnd) = associate(proxy.addr, sock.local_addr().unwrap());
        let target = Target::Ip(echo);
        let payload = s5::pseudo_random(65_507 - 10, 7);
        if !on {
            let (from, back) = round_trip(&sock, bnd, &target, &payload);
            assert_eq!(from, target);
            assert!(
                back == payload,
                "65,497 bytes came back changed ({} B)",
                back.len()
            );
        } else {
            sock.send_to(&wrap(&target, &payload).unwrap(), bnd)
                .unwrap();
            let (_, back) = round_trip(&sock, bnd, &target, b"small");
            assert_eq!(back, b"small");
            assert_eq!(
                seen.load(Ordering::SeqCst),
                1,
                "the big datagram went through"
            );
            assert!(udp_summary(proxy).contains("truncated 1"));
        }
    }
}

/// An IPv6 target, from a client on IPv4: the reply's header names the IPv6 source.
#[test]
fn ipv6_target() {
    let proxy = start(&[]);
    let (echo, _) = udp_echo(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let sock = client_socket(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (_control, bnd) = associate(proxy.addr, sock.local_addr().unwrap());
    let (from, back) = round_trip(&sock, bnd, &Target::Ip(echo), b"over six");
    assert_eq!((from, back), (Target::Ip(echo), b"over six".to_vec()));
}

/// A client on IPv6: the relay listens on ::1, and BND is an IPv6 address it can reach.
#[test]
fn ipv6_client() {
    let proxy = start(&["-i", "::1"]);
    let (echo, _) = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let sock = client_socket(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let (_control, bnd) = associate(proxy.addr, sock.local_addr().unwrap());
    assert_eq!(bnd.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    let (from, back) = round_trip(&sock, bnd, &Target::Ip(echo), b"v6 client");
    assert_eq!((from, back), (Target::Ip(echo), b"v6 client".to_vec()));
}

/// Listening on 0.0.0.0, BND is the address the client reached, never 0.0.0.0; the request
/// names port 0, so the client's port is its first datagram's.
#[test]
fn bnd_is_reachable_and_the_port_is_learnt() {
    let proxy = start(&["-i", "0.0.0.0"]);
    let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), proxy.addr.port());
    let (echo, _) = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let sock = client_socket(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (_control, bnd) = associate(addr, "0.0.0.0:0".parse().unwrap());
    assert_eq!(bnd.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (_, back) = round_trip(&sock, bnd, &Target::Ip(echo), b"first");
    assert_eq!(back, b"first");
}

/// -u/-P gate the control connection: no association without the password.
#[test]
fn password_gates_the_association() {
    let proxy = start(&["-u", s5::USER, "-P", s5::PASS]);
    let mut s = s5::connect(proxy.addr);
    assert_eq!(s5::greet(&mut s, &[0]), 0xFF);
    let mut s = s5::connect(proxy.addr);
    assert_eq!(s5::greet(&mut s, &[2]), 2);
    assert!(s5::login(&mut s, s5::USER, s5::PASS));
    let (rep, _) = s5::request(
        &mut s,
        Cmd::UdpAssociate,
        &Target::Ip("0.0.0.0:0".parse().unwrap()),
    );
    assert_eq!(rep, Reply::Succeeded);
}

/// Lesson 12 (and 13, 14) still has no UDP ASSOCIATE: 0x07, then close.
#[test]
fn lesson_12_answers_command_not_supported() {
    let proxy = Server::start(exe!("lesson-12"), &[]);
    let mut s = s5::connect(proxy.addr);
    assert_eq!(s5::greet(&mut s, &[0]), 0);
    let (rep, _) = s5::request(
        &mut s,
        Cmd::UdpAssociate,
        &Target::Ip("0.0.0.0:0".parse().unwrap()),
    );
    assert_eq!(rep, Reply::CommandNotSupported);
    assert!(s5::closes(&mut s));
}

/// The association ends with its control connection, closed or reset: every fd it held is
/// closed (its UDP sockets), and the fd count is back where it was.
#[test]
fn teardown_on_close_and_on_reset() {
    let proxy = start(&[]);
    let (echo4, _) = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (echo6, _) = udp_echo(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let before = proxy.fd_count();
    for reset in [false, true] {
        let sock = client_socket(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let (control, bnd) = associate(proxy.addr, sock.local_addr().unwrap());
        // Both outgoing sockets exist: 1 (client's) + 2 (targets') + 1 (control) fds.
        round_trip(&sock, bnd, &Target::Ip(echo4), b"4");
        round_trip(&sock, bnd, &Target::Ip(echo6), b"6");
        assert_eq!(proxy.fd_count(), before + 4);
        if reset {
            sockets_by_hand::net::linger_zero(&control).unwrap();
        }
        drop(control);
        wait_fd_count(proxy.pid(), before);
    }
}

/// `--mistake leak-association`: the control connection is gone, the association is not:
/// its sockets stay open and a datagram sent to the old BND is still relayed.
#[test]
fn leak_association_mistake_outlives_its_control_connection() {
    let proxy = start(&["--mistake", "leak-association"]);
    let (echo, _) = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let before = proxy.fd_count();
    let sock = client_socket(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (control, bnd) = associate(proxy.addr, sock.local_addr().unwrap());
    round_trip(&sock, bnd, &Target::Ip(echo), b"before");
    drop(control);
    proxy.log.wait_line("the control connection's end", |l| {
        l.contains("control connection closed")
    });
    assert_eq!(
        proxy.fd_count(),
        before + 2,
        "the association's 2 sockets leaked"
    );
    let (_, back) = round_trip(&sock, bnd, &Target::Ip(echo), b"after");
    assert_eq!(back, b"after");
}

/// 1,000 associations opened and closed, 50 at a time: the fd count is back where it was.
#[test]
fn a_thousand_associations_give_their_fds_back() {
    let proxy = start(&["-q"]);
    let before = proxy.fd_count();
    let from: SocketAddr = "0.0.0.0:0".parse().unwrap();
    for _ in 0..20 {
        let batch: Vec<_> = (0..50).map(|_| associate(proxy.addr, from)).collect();
        assert!(proxy.fd_count() >= before + 100);
        drop(batch);
    }
    wait_fd_count(proxy.pid(), before);
    let line = udp_summary(proxy);
    assert!(line.contains("associations: 1000"), "{line}");
}

// ---------------------------------------------------------------------------------------
// In a network namespace of the test's own: a DNS server on 127.0.0.1:53 that the relay's
// resolver asks (getaddrinfo through a bind-mounted resolv.conf), and that a client asks
// through the relay.
// ---------------------------------------------------------------------------------------

const INSIDE: &str = "SBH_UDP_NAMESPACE";

/// Runs this test again inside `unshare -nm`, where [`namespace_dns`] sets things up.
fn in_namespace(test: &str, body: impl FnOnce(SocketAddr)) {
    if common::in_own_namespace(test, INSIDE, true) {
        body(namespace_dns());
    }
}

/// Loopback up, resolv.conf and nsswitch.conf pointing at 127.0.0.1:53, and a DNS server
/// there that knows `udp.test` (127.0.0.1) and answers NXDOMAIN to anything else.
fn namespace_dns() -> SocketAddr {
    common::loopback_up();
    let dir = std::env::temp_dir().join(format!("sbh-udp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = [
        (
            "resolv.conf",
            "nameserver 127.0.0.1\noptions timeout:5 attempts:1\n",
        ),
        ("nsswitch.conf", "hosts: dns\n"),
    ];
    for (name, text) in files {
        let ours = dir.join(name);
        std::fs::write(&ours, text).unwrap();
        let src = CString::new(ours.to_str().unwrap()).unwrap();
        let dst = CString::new(format!("/etc/{name}")).unwrap();
        // SAFETY: mount(2) with valid C strings; private to this mount namespace.
        let rc = unsafe {
            let null = std::ptr::null();
            libc::mount(src.as_ptr(), dst.as_ptr(), null, libc::MS_BIND, null.cast())
        };
        assert_eq!(
            rc,
            0,
            "bind-mount {name}: {}",
            std::io::Error::last_os_error()
        );
    }
    let sock = UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53");
    let addr = sock.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Some(q) = protocols::dns::question(&buf[..n]) else {
                continue;
            };
            let (rcode, ips) = match (q.name.as_str(), q.qtype) {
                ("udp.test", protocols::dns::A) => (0, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
                ("udp.test", _) => (0, vec![]),
                _ => (protocols::dns::NXDOMAIN, vec![]),
            };
            let _ = sock.send_to(&protocols::dns::answer(&buf[..n], &q, rcode, &ips), from);
        }
    });
    addr
}

/// A DNS query relayed to the namespace's DNS server (an IP target); then datagrams for a
/// name the relay looks up (three sent before the answer: all go), and for a name that does
/// not resolve (dropped, counted).
#[test]
fn dns_query_and_domain_targets_in_a_namespace() {
    in_namespace("dns_query_and_domain_targets_in_a_namespace", |dns| {
        let proxy = start(&[]);
        let (echo, seen) = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let sock = client_socket(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let (_control, bnd) = associate(proxy.addr, sock.local_addr().unwrap());

        // A query for udp.test's A record, id 0x1616, recursion desired.
        let mut query = vec![0x16, 0x16, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["udp", "test"] {
            query.push(label.len() as u8);
            query.extend_from_slice(label.as_bytes());
        }
        query.extend_from_slice(&[0, 0, 1, 0, 1]);
        let (from, answer) = round_trip(&sock, bnd, &Target::Ip(dns), &query);
        assert_eq!(from, Target::Ip(dns));
        assert_eq!(answer[..2], [0x16, 0x16], "the answer to our query");
        assert_eq!(answer[3] & 0x0f, 0, "NOERROR");
        assert!(
            answer.ends_with(&[127, 0, 0, 1]),
            "an A record for 127.0.0.1"
        );

        // A name: the first datagrams wait for its lookup (none is lost), then it is known.
        let name = Target::Domain("udp.test".into(), echo.port());
        for word in [&b"one"[..], b"two", b"three"] {
            sock.send_to(&wrap(&name, word).unwrap(), bnd).unwrap();
        }
        let mut buf = [0u8; 100];
        let mut got = Vec::new();
        for _ in 0..3 {
            let n = sock
                .recv(&mut buf)
                .expect("an echo of a datagram sent to a name");
            let (header, used) = parse_header(&buf[..n]).unwrap();
            assert_eq!(
                header.target,
                Target::Ip(echo),
                "the source is named by its IP"
            );
            got.push(String::from_utf8_lossy(&buf[used..n]).into_owned());
        }
        got.sort();
        assert_eq!(got, ["one", "three", "two"]);

        // A name that does not resolve: dropped; the datagram after it still goes.
        let nx = Target::Domain("nx.test".into(), echo.port());
        sock.send_to(&wrap(&nx, b"lost").unwrap(), bnd).unwrap();
        let (_, back) = round_trip(&sock, bnd, &Target::Ip(echo), b"after");
        assert_eq!(back, b"after");
        assert_eq!(
            seen.load(Ordering::SeqCst),
            4,
            "the echo saw one, two, three, after"
        );
        // Counted when its lookup fails, or when the association ends while it waits.
        let line = udp_summary(proxy);
        assert!(line.contains("name 1"), "{line}");
    });
}

/// strace: an association is socket(SOCK_DGRAM), setsockopt(SO_RCVBUF), bind, getsockname;
/// its datagrams pass through recvmmsg/sendmmsg, or with --no-batch recvfrom (with
/// MSG_TRUNC) and sendto; its sockets are closed when the control connection ends.
#[test]
fn trace_batched_and_not() {
    for batched in [true, false] {
        let args: &[&str] = if batched { &[] } else { &["--no-batch"] };
        let set = "socket,setsockopt,bind,getsockname,accept4,poll,recvfrom,sendto,recvmmsg,sendmmsg,close";
        let traced = common::Traced::start_tracing(exe!("lesson-16"), args, set);
        let (echo, _) = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let sock = client_socket(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let (control, bnd) = associate(traced.server.addr, sock.local_addr().unwrap());
        round_trip(&sock, bnd, &Target::Ip(echo), b"traced");
        drop(control);
        let log = &traced.server.log;
        log.wait_line("the end", |l| l.contains("client disconnected"));
        let trace = traced.stop(libc::SIGTERM);
        let (recv, send) = match batched {
            true => ("recvmmsg", "sendmmsg"),
            false => ("recvfrom", "sendto"),
        };
        trace.assert_in_order(&[
            "accept4",
            "getsockname",
            "socket",
            "setsockopt",
            "bind",
            "getsockname",
            "poll",
            recv,
            "socket",
            "setsockopt",
            "bind",
            send,
            recv,
            send,
            "close",
            "close",
            "close",
        ]);
        fn udp(l: &&&str) -> bool {
            l.contains("UDP")
        }
        assert!(trace
            .lines_of("socket")
            .iter()
            .filter(udp)
            .all(|l| l.contains("SOCK_DGRAM")));
        let rcvbuf = trace.lines_of("setsockopt");
        assert!(rcvbuf.iter().filter(udp).all(|l| l.contains("SO_RCVBUF")));
        if batched {
            trace.assert_absent(&["recvfrom"]);
        } else {
            trace.assert_absent(&["recvmmsg", "sendmmsg"]);
            let recvs = trace.lines_of("recvfrom");
            assert!(
                recvs.iter().filter(udp).all(|l| l.contains("MSG_TRUNC")),
                "{recvs:?}"
            );
        }
    }
}

/// A burst of equal-sized datagrams with shorter ones among them, which the relay receives
/// in batches and sends in runs (UDP GSO: a shorter datagram ends a run): each arrives whole,
/// once, in order, both ways.
#[test]
fn a_burst_keeps_every_boundary() {
    let proxy = start(&[]);
    let (echo, seen) = udp_echo(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let sock = client_socket(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (_control, bnd) = associate(proxy.addr, sock.local_addr().unwrap());
    let target = Target::Ip(echo);
    let payload = |i: usize| {
        let len = match i {
            10 | 40 => 300,
            99 => 500,
            _ => 1000,
        };
        vec![i as u8; len]
    };
    for i in 0..100 {
        sock.send_to(&wrap(&target, &payload(i)).unwrap(), bnd)
            .unwrap();
    }
    let mut buf = vec![0u8; 2000];
    for i in 0..100 {
        let n = sock
            .recv(&mut buf)
            .expect("every datagram of the burst comes back");
        let (header, used) = parse_header(&buf[..n]).unwrap();
        assert_eq!(header.target, target);
        assert!(
            buf[used..n] == payload(i)[..],
            "datagram {i}: {} B",
            n - used
        );
    }
    assert_eq!(seen.load(Ordering::SeqCst), 100);
}

/// -b binds the outgoing UDP sockets: the target sees datagrams from -b's address, and a
/// target of the other family is dropped (counted).
#[test]
fn outgoing_address_binds_the_udp_sockets() {
    let proxy = start(&["-b", "127.0.0.2"]);
    let target = UdpSocket::bind("127.0.0.1:0").unwrap();
    target.set_read_timeout(Some(DEADLINE)).unwrap();
    let sock = client_socket(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (_control, bnd) = associate(proxy.addr, sock.local_addr().unwrap());
    let v6 = Target::Ip("[::1]:9".parse().unwrap());
    sock.send_to(&wrap(&v6, b"v6").unwrap(), bnd).unwrap();
    let to = Target::Ip(target.local_addr().unwrap());
    sock.send_to(&wrap(&to, b"from -b").unwrap(), bnd).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = target.recv_from(&mut buf).unwrap();
    assert_eq!(
        (&buf[..n], from.ip()),
        (&b"from -b"[..], "127.0.0.2".parse::<IpAddr>().unwrap())
    );
    assert!(udp_summary(proxy).contains("family 1"));
}
