//! The SOCKS5 suite: protocol cases with real clients (curl and raw bytes) that every SOCKS5
//! lesson passes. Lesson 12 joins in tests/socks5.rs with `socks5_suite!(lesson_12, start)`,
//! where `start(&[flags])` starts the proxy and returns anything that implements [`Proxy`]
//! (lesson 13 returns a guard that also owns its redis-server, with the test client allowed).
//!
//! Also here: loopback targets for the proxy to connect to (an HTTP file server, an echo
//! server, a "reply after EOF" server), and a small SOCKS5 client built on the sans-IO
//! helpers of `protocols::socks5::client`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use protocols::socks5::{client, Command as Cmd, Reply, Target};

use super::{Server, DEADLINE};

/// A running proxy under test.
pub trait Proxy {
    fn proxy_addr(&self) -> SocketAddr;
    /// The proxy's process (its log, its pid).
    fn server(&self) -> &Server;
}

impl Proxy for Server {
    fn proxy_addr(&self) -> SocketAddr {
        self.addr
    }
    fn server(&self) -> &Server {
        self
    }
}

/// Credentials the auth cases start the proxy with.
pub const USER: &str = "alice";
pub const PASS: &str = "s3cret";

/// Generates one `#[test]` per SOCKS5 case. `$start` is a `fn(&[&str]) -> impl Proxy`.
#[macro_export]
macro_rules! socks5_suite {
    ($module:ident, $start:path) => {
        mod $module {
            use super::common::socks5 as cases;
            use super::common::socks5::Proxy;
            fn addr(p: &impl Proxy) -> std::net::SocketAddr {
                p.proxy_addr()
            }
            #[test]
            fn curl_socks5() {
                let p = $start(&[]);
                cases::curl_socks5(addr(&p))
            }
            #[test]
            fn curl_socks5_hostname() {
                let p = $start(&[]);
                cases::curl_socks5_hostname(addr(&p))
            }
            #[test]
            fn curl_socks5h_with_password() {
                let p = $start(&["-u", cases::USER, "-P", cases::PASS]);
                cases::curl_socks5h_with_password(addr(&p))
            }
            #[test]
            fn greeting_byte_by_byte() {
                let p = $start(&[]);
                cases::greeting_byte_by_byte(addr(&p))
            }
            #[test]
            fn everything_in_one_write() {
                let p = $start(&[]);
                cases::everything_in_one_write(addr(&p))
            }
            #[test]
            fn only_password_offered_without_auth() {
                let p = $start(&[]);
                cases::only_password_offered_without_auth(addr(&p))
            }
            #[test]
            fn bind_not_supported() {
                let p = $start(&[]);
                cases::bind_not_supported(addr(&p))
            }
            #[test]
            fn unknown_address_type() {
                let p = $start(&[]);
                cases::unknown_address_type(addr(&p))
            }
            #[test]
            fn bad_version_closes_next_served() {
                let p = $start(&[]);
                cases::bad_version_closes_next_served(addr(&p))
            }
            #[test]
            fn closed_port_refused() {
                let p = $start(&[]);
                cases::closed_port_refused(addr(&p))
            }
            #[test]
            fn unknown_host() {
                let p = $start(&[]);
                cases::unknown_host(addr(&p))
            }
            #[test]
            fn auth_right_and_wrong() {
                let p = $start(&["-u", cases::USER, "-P", cases::PASS]);
                cases::auth_right_and_wrong(addr(&p))
            }
            #[test]
            fn half_close() {
                let p = $start(&[]);
                cases::half_close(addr(&p))
            }
            #[test]
            fn stalled_client_stalls_no_other() {
                let p = $start(&[]);
                cases::stalled_client_stalls_no_other(addr(&p))
            }
            #[test]
            fn half_close_from_target() {
                let p = $start(&[]);
                cases::half_close_from_target(addr(&p))
            }
            #[test]
            fn client_reset_reaches_target() {
                let p = $start(&[]);
                cases::client_reset_reaches_target(addr(&p))
            }
            #[test]
            fn target_reset_reaches_client() {
                let p = $start(&[]);
                cases::target_reset_reaches_client(addr(&p))
            }
            #[test]
            fn whitelist_skips_the_password() {
                let (u, p) = (cases::USER, cases::PASS);
                let proxy = $start(&["-u", u, "-P", p, "-w", "192.0.2.7,127.0.0.1"]);
                cases::whitelisted(addr(&proxy));
                let proxy = $start(&["-u", u, "-P", p, "-w", "192.0.2.7"]);
                cases::not_whitelisted(addr(&proxy));
            }
            #[test]
            fn auth_once() {
                let p = $start(&["-u", cases::USER, "-P", cases::PASS, "-1"]);
                cases::auth_once(addr(&p))
            }
            #[test]
            fn quiet() {
                let p = $start(&["-q"]);
                cases::quiet(p.server())
            }
            #[test]
            fn ipv6_target() {
                let p = $start(&[]);
                cases::ipv6_target(addr(&p))
            }
        }
    };
}

// ---------------------------------------------------------------------------------------
// Targets on loopback.
// ---------------------------------------------------------------------------------------

// The loopback targets and test data the SOCKS5 steps use (workshop/src/socks.rs, shared
// with `make check-12`).
#[allow(unused_imports)] // each test binary uses a different part
pub use workshop::socks::{
    bound_loopback, echo_target, loopback_listener, pseudo_random, reply_after_eof_target,
    serve_each,
};

/// An HTTP/1.0-style server that answers every request with `body`.
pub fn http_target(body: Arc<Vec<u8>>) -> SocketAddr {
    let (listener, addr) = loopback_listener();
    serve_each(listener, move |mut conn| {
        // Read the request head (up to the blank line).
        let mut head = Vec::new();
        let mut byte = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut byte) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&byte[..n]),
            }
        }
        let header = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = conn.write_all(header.as_bytes());
        let _ = conn.write_all(&body);
    });
    addr
}

/// Accepts, reads a line, then resets the connection (SO_LINGER 0 and close).
pub fn resetting_target() -> SocketAddr {
    let (listener, addr) = loopback_listener();
    serve_each(listener, |mut conn| {
        let mut buf = [0u8; 64];
        let _ = conn.read(&mut buf);
        super::reset(conn);
    });
    addr
}

/// A port on loopback where nothing listens: a socket bound to it but not listening, so
/// the kernel answers a SYN with RST, and no other test can be given the port meanwhile.
/// Keep the returned fd while the port is in use.
pub fn closed_port() -> (std::os::fd::OwnedFd, SocketAddr) {
    bound_loopback()
}

/// A target whose handshake does not finish inside connect(2), as a distant host's would
/// not: a listener with a backlog of 0 and one connection already in its accept queue, so
/// the kernel drops the next SYN and the connecting side retransmits it about a second
/// later. [`LateTarget::let_in`] makes room for that retransmission; without it the
/// handshake never finishes.
pub struct LateTarget {
    pub addr: SocketAddr,
    listener: TcpListener,
    _queued: TcpStream,
}

impl LateTarget {
    pub fn new() -> LateTarget {
        use nix::sys::socket::{listen, Backlog};
        let (sock, addr) = bound_loopback();
        listen(&sock, Backlog::new(0).unwrap()).unwrap();
        let listener = TcpListener::from(sock);
        let queued = TcpStream::connect(addr).unwrap();
        LateTarget {
            addr,
            listener,
            _queued: queued,
        }
    }

    /// Waits until a socket on this host is in SYN_SENT towards the target (its SYN was
    /// dropped), then accepts the queued connection, so the retransmitted SYN gets in.
    pub fn let_in(&self) {
        let remote = format!("0100007F:{:04X}", self.addr.port());
        let deadline = Instant::now() + DEADLINE;
        loop {
            let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
            // Columns: sl, local, remote, st (02 = SYN_SENT).
            let waiting = table.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && cols[2] == remote && cols[3] == "02"
            });
            if waiting {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no SYN_SENT socket towards {}",
                self.addr
            );
            thread::sleep(Duration::from_millis(5));
        }
        let _ = self.listener.accept().unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// A SOCKS5 client (raw bytes), built on the sans-IO client helpers.
// ---------------------------------------------------------------------------------------

pub fn connect(proxy: SocketAddr) -> TcpStream {
    let s = super::wait_for("connect to the proxy", DEADLINE, || {
        TcpStream::connect(proxy).ok()
    });
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Reads until `parse` says a whole message is there; returns the parsed value. Panics on
/// EOF before that.
fn read_message<T>(
    s: &mut TcpStream,
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, protocols::socks5::Error>,
) -> T {
    let mut buf = Vec::new();
    loop {
        if let Some((value, used)) = parse(&buf).expect("a well-formed SOCKS5 answer") {
            assert_eq!(used, buf.len(), "the proxy sent more than one message");
            return value;
        }
        let mut byte = [0u8; 1];
        // One byte at a time: nothing after the message is consumed.
        match s.read(&mut byte) {
            Ok(0) => panic!("the proxy closed after {buf:?}"),
            Ok(_) => buf.push(byte[0]),
            Err(e) => panic!("reading a SOCKS5 answer: {e} (after {buf:?})"),
        }
    }
}

/// Greeting → the method the proxy chose.
pub fn greet(s: &mut TcpStream, methods: &[u8]) -> u8 {
    s.write_all(&client::greeting(methods).unwrap()).unwrap();
    read_message(s, client::parse_method_selection)
}

/// RFC 1929 → accepted?
pub fn login(s: &mut TcpStream, user: &str, pass: &str) -> bool {
    s.write_all(&client::auth(user.as_bytes(), pass.as_bytes()).unwrap())
        .unwrap();
    read_message(s, client::parse_auth_reply)
}

/// Sends a request and reads the reply: (REP, BND).
pub fn request(s: &mut TcpStream, cmd: Cmd, target: &Target) -> (Reply, Target) {
    s.write_all(&client::request(cmd, target).unwrap()).unwrap();
    reply(s)
}

/// Reads one reply.
pub fn reply(s: &mut TcpStream) -> (Reply, Target) {
    read_message(s, |b| {
        Ok(client::parse_reply(b)?.map(|(rep, bnd, used)| ((rep, bnd), used)))
    })
}

/// A relayed connection to `target` through `proxy` (no auth), with the success reply read.
pub fn open(proxy: SocketAddr, target: SocketAddr) -> TcpStream {
    let mut s = connect(proxy);
    assert_eq!(greet(&mut s, &[0]), 0);
    let (rep, bnd) = request(&mut s, Cmd::Connect, &Target::Ip(target));
    assert_eq!(rep, Reply::Succeeded);
    assert_bnd_is_outgoing(&bnd);
    s
}

/// BND must be the relay's real outgoing address: loopback and a real port, not 0.0.0.0:0.
pub fn assert_bnd_is_outgoing(bnd: &Target) {
    match bnd {
        Target::Ip(a) => assert!(
            a.ip().is_loopback() && a.port() != 0,
            "BND {a} is not the outgoing socket's address"
        ),
        other => panic!("BND as a name: {other}"),
    }
}

/// True if the peer closes (EOF or reset) without sending anything more.
pub fn closes(s: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset && rest.is_empty(),
    }
}

fn curl(args: &[String]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl is installed (make test installs it)");
    assert!(
        out.status.success(),
        "curl {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// ---------------------------------------------------------------------------------------
// The cases.
// ---------------------------------------------------------------------------------------

fn served_file() -> (Arc<Vec<u8>>, SocketAddr) {
    let body = Arc::new(pseudo_random(3 << 20, 12));
    let addr = http_target(body.clone());
    (body, addr)
}

fn assert_same_file(got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "downloaded size");
    assert!(got == want, "downloaded bytes differ from the served file");
}

/// `curl --socks5` (the client resolves; ATYP 1).
pub fn curl_socks5(proxy: SocketAddr) {
    let (body, http) = served_file();
    let got = curl(&[
        "--socks5".into(),
        proxy.to_string(),
        format!("http://{http}/file.bin"),
    ]);
    assert_same_file(&got, &body);
}

/// `curl --socks5-hostname` (the proxy resolves; ATYP 3 with "localhost").
pub fn curl_socks5_hostname(proxy: SocketAddr) {
    let (body, http) = served_file();
    let got = curl(&[
        "--socks5-hostname".into(),
        proxy.to_string(),
        format!("http://localhost:{}/file.bin", http.port()),
    ]);
    assert_same_file(&got, &body);
}

/// `socks5h://user:pass@` against a proxy started with -u/-P; a wrong password fails.
pub fn curl_socks5h_with_password(proxy: SocketAddr) {
    let (body, http) = served_file();
    let url = format!("http://localhost:{}/file.bin", http.port());
    let got = curl(&[
        "-x".into(),
        format!("socks5h://{USER}:{PASS}@{proxy}"),
        url.clone(),
    ]);
    assert_same_file(&got, &body);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-x"])
        .arg(format!("socks5h://{USER}:wrong@{proxy}"))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "curl with a wrong password succeeded"
    );
}

/// The greeting and the request sent one byte per segment: the same answers.
pub fn greeting_byte_by_byte(proxy: SocketAddr) {
    super::step(workshop::socks::byte_by_byte, proxy);
}

/// Greeting + request + first payload in one write: the payload reaches the target.
pub fn everything_in_one_write(proxy: SocketAddr) {
    super::step(workshop::socks::everything_in_one_write, proxy);
}

/// Only 0x02 offered to a proxy without -u/-P: 0xFF, then close.
pub fn only_password_offered_without_auth(proxy: SocketAddr) {
    let mut s = connect(proxy);
    assert_eq!(greet(&mut s, &[2]), 0xFF);
    assert!(closes(&mut s));
}

/// BIND: 0x07, then close.
pub fn bind_not_supported(proxy: SocketAddr) {
    let mut s = connect(proxy);
    assert_eq!(greet(&mut s, &[0]), 0);
    let target = Target::Ip("127.0.0.1:9".parse().unwrap());
    let (rep, _) = request(&mut s, Cmd::Bind, &target);
    assert_eq!(rep, Reply::CommandNotSupported);
    assert!(closes(&mut s));
}

/// ATYP 5: 0x08, then close.
pub fn unknown_address_type(proxy: SocketAddr) {
    let mut s = connect(proxy);
    assert_eq!(greet(&mut s, &[0]), 0);
    s.write_all(&[5, 1, 0, 5, 1, 2, 3, 4, 0, 80]).unwrap();
    assert_eq!(reply(&mut s).0, Reply::AddressTypeNotSupported);
    assert!(closes(&mut s));
}

/// A SOCKS4 greeting (version 4): closed without a word; the next client is served.
pub fn bad_version_closes_next_served(proxy: SocketAddr) {
    let echo = echo_target();
    let mut s = connect(proxy);
    s.write_all(&[4, 1, 0, 80, 127, 0, 0, 1, 0]).unwrap();
    assert!(closes(&mut s));
    let mut next = open(proxy, echo);
    next.write_all(b"next").unwrap();
    let mut got = [0u8; 4];
    next.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"next");
}

/// Nothing listens on the target port: 0x05 (connection refused), not "success".
pub fn closed_port_refused(proxy: SocketAddr) {
    super::step(workshop::socks::refused, proxy);
}

/// A name that cannot resolve (`.invalid` is reserved, RFC 6761): 0x04, and the proxy lives.
pub fn unknown_host(proxy: SocketAddr) {
    let mut s = connect(proxy);
    assert_eq!(greet(&mut s, &[0]), 0);
    let target = Target::Domain("nonexistent.invalid".into(), 80);
    let (rep, _) = request(&mut s, Cmd::Connect, &target);
    assert_eq!(rep, Reply::HostUnreachable);
    assert!(closes(&mut s));
    let echo = echo_target();
    drop(open_with_auth(proxy, echo, None));
}

/// The right password opens a relay; a wrong one gets status 1 and a close; 0x00 alone is
/// not enough when a password is required.
pub fn auth_right_and_wrong(proxy: SocketAddr) {
    let echo = echo_target();
    let mut s = open_with_auth(proxy, echo, Some((USER, PASS)));
    s.write_all(b"authed").unwrap();
    let mut got = [0u8; 6];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"authed");

    let mut s = connect(proxy);
    assert_eq!(greet(&mut s, &[0, 2]), 2);
    assert!(!login(&mut s, USER, "wrong"));
    assert!(closes(&mut s));

    let mut s = connect(proxy);
    assert_eq!(greet(&mut s, &[0]), 0xFF);
    assert!(closes(&mut s));
}

/// Greeting (with optional RFC 1929 login) and CONNECT; success asserted.
pub fn open_with_auth(
    proxy: SocketAddr,
    target: SocketAddr,
    creds: Option<(&str, &str)>,
) -> TcpStream {
    let mut s = connect(proxy);
    match creds {
        None => assert_eq!(greet(&mut s, &[0]), 0),
        Some((u, p)) => {
            assert_eq!(greet(&mut s, &[2]), 2);
            assert!(login(&mut s, u, p), "login refused");
        }
    }
    let (rep, _) = request(&mut s, Cmd::Connect, &Target::Ip(target));
    assert_eq!(rep, Reply::Succeeded);
    s
}

/// `-w` names the client's address: a greeting offering only 0x00 gets 0x00 and connects,
/// no password asked; one offering only 0x02 still logs in.
pub fn whitelisted(proxy: SocketAddr) {
    let echo = echo_target();
    let mut s = open_with_auth(proxy, echo, None);
    s.write_all(b"free").unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"free");
    drop(open_with_auth(proxy, echo, Some((USER, PASS))));
}

/// `-w` names other addresses: 0x00 alone is refused (0xFF) as without -w.
pub fn not_whitelisted(proxy: SocketAddr) {
    let mut s = connect(proxy);
    assert_eq!(greet(&mut s, &[0]), 0xFF);
    assert!(closes(&mut s));
}

/// `-1`: no password, no entry (0xFF); a wrong password, still none; after one login the
/// client's address may connect without it.
pub fn auth_once(proxy: SocketAddr) {
    let echo = echo_target();
    not_whitelisted(proxy);
    let mut s = connect(proxy);
    assert_eq!(greet(&mut s, &[2]), 2);
    assert!(!login(&mut s, USER, "wrong"));
    not_whitelisted(proxy);
    drop(open_with_auth(proxy, echo, Some((USER, PASS))));
    let mut s = open_with_auth(proxy, echo, None);
    s.write_all(b"once").unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"once");
}

/// `-q`: a relay and a refusal, then Ctrl-C: the summary line comes, and no line per
/// connection before it.
pub fn quiet(proxy: &Server) {
    let mut s = open(proxy.addr, echo_target());
    s.write_all(b"hush").unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).unwrap();
    drop(s);
    let mut s = connect(proxy.addr);
    assert_eq!(greet(&mut s, &[2]), 0xFF);
    assert!(closes(&mut s));
    // Ctrl-C: whether the proxy saw them close or closes them now, each would have its line.
    proxy.signal(libc::SIGTERM);
    let summary = proxy
        .log
        .wait_line("the summary", |l| l.contains("stopping"));
    assert!(summary.contains("served: 2"), "{summary}");
    let lines = proxy.log.lines();
    let per_connection: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("client disconnected"))
        .collect();
    assert!(per_connection.is_empty(), "-q, yet: {per_connection:?}");
}

/// The client sends, then half-closes; the target answers only after that EOF, and the
/// answer still reaches the client.
pub fn half_close(proxy: SocketAddr) {
    super::step(workshop::socks::half_close, proxy);
}

/// A client stops reading while its target floods it: a second client is still served.
pub fn stalled_client_stalls_no_other(proxy: SocketAddr) {
    super::step(
        |p| workshop::socks::stalled_client_stalls_no_other(p, &|| None),
        proxy,
    );
}

/// The target resets the connection: the client sees a reset too, not a clean EOF.
pub fn target_reset_reaches_client(proxy: SocketAddr) {
    let target = resetting_target();
    let mut s = open(proxy, target);
    s.write_all(b"hello\n").unwrap();
    let mut buf = [0u8; 16];
    let err = loop {
        match s.read(&mut buf) {
            Ok(0) => panic!("clean EOF instead of a reset"),
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

/// ATYP 4: an IPv6 target (skipped where ::1 is not configured).
pub fn ipv6_target(proxy: SocketAddr) {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        eprintln!("no ::1 here; skipping");
        return;
    };
    let addr = listener.local_addr().unwrap();
    serve_each(listener, |mut conn| {
        let _ = conn.write_all(b"six\n");
    });
    let mut s = connect(proxy);
    assert_eq!(greet(&mut s, &[0]), 0);
    let (rep, bnd) = request(&mut s, Cmd::Connect, &Target::Ip(addr));
    assert_eq!(rep, Reply::Succeeded);
    assert_bnd_is_outgoing(&bnd);
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "six\n");
}

/// A target that reports, through a channel, what its read of the relayed stream ended
/// with: the bytes it got, then EOF (Ok) or an error. `first` is sent to the client first,
/// and with `shut` the target half-closes right after it.
fn reporting_target(
    first: &'static [u8],
    shut: bool,
) -> (
    SocketAddr,
    std::sync::mpsc::Receiver<std::io::Result<usize>>,
) {
    let (listener, addr) = loopback_listener();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(DEADLINE)).unwrap();
        conn.write_all(first).unwrap();
        if shut {
            conn.shutdown(Shutdown::Write).unwrap();
        }
        let mut got = Vec::new();
        let _ = tx.send(conn.read_to_end(&mut got).map(|_| got.len()));
    });
    (addr, rx)
}

/// The target half-closes first: the client sees EOF and can still send, and the target
/// gets every byte and then the client's EOF.
pub fn half_close_from_target(proxy: SocketAddr) {
    let (target, report) = reporting_target(b"bye\n", true);
    let mut s = open(proxy, target);
    let mut first = Vec::new();
    s.read_to_end(&mut first).unwrap();
    assert_eq!(first, b"bye\n");
    s.write_all(&pseudo_random(50_000, 8)).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let got = report.recv_timeout(DEADLINE).unwrap();
    assert_eq!(got.unwrap(), 50_000);
}

/// The client resets: the target sees a reset too, not a clean EOF.
pub fn client_reset_reaches_target(proxy: SocketAddr) {
    let (target, report) = reporting_target(b"hi", false);
    let mut s = open(proxy, target);
    let mut hi = [0u8; 2];
    s.read_exact(&mut hi).unwrap();
    super::reset(s);
    let err = report
        .recv_timeout(DEADLINE)
        .unwrap()
        .expect_err("the target saw a clean EOF instead of a reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}
