//! The checker's client: a TCP connection whose every wait is bounded, and whose failures
//! say what was sent, what was expected and what came back (CodeCrafters' style).

use std::cell::RefCell;
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a single read waits before it looks whether the server stopped at a todo!().
const SLICE: Duration = Duration::from_millis(100);

thread_local! {
    /// Set once the server this thread checks has reached a todo!() (run.rs watches its
    /// log). Nothing more will come from it, so a wait that finds nothing ends at once
    /// instead of after the whole [`wait`]: an untouched skeleton fails at once.
    static STOPPED: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Ties this thread's waits to a server's todo!() flag (None: to none).
pub fn watch_server(flag: Option<Arc<AtomicBool>>) {
    STOPPED.with(|s| *s.borrow_mut() = flag);
}

/// The server this thread checks has reached a todo!().
fn server_stopped() -> bool {
    STOPPED.with(|s| {
        s.borrow()
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    })
}

/// How long one wait for the server may take: 5 s for the checker; the project's tests,
/// sharing two cores with everything else, set more ([`set_wait`]).
static WAIT_MS: AtomicU64 = AtomicU64::new(5000);

/// Sets the bound on every wait.
pub fn set_wait(wait: Duration) {
    WAIT_MS.store(wait.as_millis() as u64, Ordering::Relaxed);
}

/// The bound on every wait.
pub fn wait() -> Duration {
    Duration::from_millis(WAIT_MS.load(Ordering::Relaxed))
}

/// A failed step: what was sent, expected and got, and one hint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failure {
    pub sent: String,
    pub expected: String,
    pub got: String,
    pub hint: String,
}

impl Failure {
    pub fn new(
        sent: impl Into<String>,
        expected: impl Into<String>,
        got: impl Into<String>,
    ) -> Self {
        Failure {
            sent: sent.into(),
            expected: expected.into(),
            got: got.into(),
            hint: String::new(),
        }
    }

    /// The same failure with `hint` (kept if one is already set: the closer one wins).
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        if self.hint.is_empty() {
            self.hint = hint.into();
        }
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (label, text) in [
            ("sent", &self.sent),
            ("expected", &self.expected),
            ("got", &self.got),
            ("hint", &self.hint),
        ] {
            if !text.is_empty() {
                writeln!(f, "    {label:<9}{text}")?;
            }
        }
        Ok(())
    }
}

/// A step's outcome.
pub type Outcome = Result<(), Failure>;

/// Bytes as a Rust-ish string literal, cut after 120 characters.
pub fn show(bytes: &[u8]) -> String {
    let text: String = bytes.escape_ascii().to_string();
    if text.len() > 120 {
        format!("\"{}…\" ({} bytes)", &text[..120], bytes.len())
    } else {
        format!("\"{text}\"")
    }
}

/// A connection to the server under check.
pub struct Conn {
    pub stream: TcpStream,
    /// What this connection sent last (for a failure's `sent`).
    pub sent: Vec<u8>,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects (retrying a refused connect within the wait).
    pub fn open(addr: SocketAddr) -> Result<Conn, Failure> {
        let start = Instant::now();
        let stream = loop {
            match TcpStream::connect_timeout(&addr, wait()) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < wait() && !server_stopped() => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(Failure::new(
                        format!("a connect to {addr}"),
                        "the connection accepted",
                        format!("connect: {e}"),
                    ))
                }
            }
        };
        stream.set_write_timeout(Some(wait())).ok();
        Ok(Conn {
            stream,
            sent: Vec::new(),
            buf: Vec::new(),
        })
    }

    /// Connects with SO_RCVBUF set to `rcvbuf` before the handshake, so that the window the
    /// server sees is small from the start: a slow reader's connection.
    pub fn open_with_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> Result<Conn, Failure> {
        let fail = |call: &str| {
            Failure::new(
                format!("a connect to {addr} with SO_RCVBUF {rcvbuf}"),
                "the connection accepted",
                format!("{call}: {}", std::io::Error::last_os_error()),
            )
        };
        let family = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: socket(2) with constant arguments; the fd is owned at once.
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(fail("socket"));
        }
        // SAFETY: a fresh fd of ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SO_SNDTIMEO bounds connect(2) too.
        let timeout = libc::timeval {
            tv_sec: wait().as_secs() as libc::time_t,
            tv_usec: wait().subsec_micros() as libc::suseconds_t,
        };
        let (storage, len) = sockaddr(addr);
        // SAFETY: setsockopt with values of the sizes given; connect with a sockaddr of `len`.
        let connected = set_rcvbuf(fd.as_raw_fd(), rcvbuf).is_ok()
            && unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDTIMEO,
                    (&timeout as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                ) == 0
                    && libc::connect(
                        fd.as_raw_fd(),
                        (&storage as *const libc::sockaddr_storage).cast(),
                        len,
                    ) == 0
            };
        if !connected {
            return Err(fail("connect"));
        }
        let stream = TcpStream::from(fd);
        stream.set_write_timeout(Some(wait())).ok();
        Ok(Conn {
            stream,
            sent: Vec::new(),
            buf: Vec::new(),
        })
    }

    /// Sends `bytes` (remembered as this connection's `sent`).
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) -> Outcome {
        let bytes = bytes.as_ref();
        self.sent = bytes.to_vec();
        self.stream
            .write_all(bytes)
            .map_err(|e| Failure::new(show(bytes), "the bytes taken", format!("write failed: {e}")))
    }

    /// Sends `bytes` one byte per segment.
    pub fn send_bytewise(&mut self, bytes: &[u8]) -> Outcome {
        self.stream.set_nodelay(true).ok();
        for b in bytes {
            self.stream.write_all(&[*b]).map_err(|e| {
                Failure::new(show(bytes), "the bytes taken", format!("write failed: {e}"))
            })?;
            std::thread::sleep(Duration::from_millis(2));
        }
        self.sent = bytes.to_vec();
        Ok(())
    }

    /// Reads more into the buffer; Ok(false) on EOF; Err(what happened) on a timeout or error.
    fn fill(&mut self, until: Instant) -> Result<bool, String> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("nothing more within {} s", wait().as_secs()));
            }
            self.stream.set_read_timeout(Some(left.min(SLICE))).ok();
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if server_stopped() {
                        return Err("nothing more: the server stopped at a todo!()".into());
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    return Err("a reset (ECONNRESET)".into())
                }
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// What came so far and how it ended, for a failure's `got`.
    fn got(&self, why: &str) -> String {
        if self.buf.is_empty() {
            why.replace("nothing more", "nothing")
        } else {
            format!("{}, then {why}", show(&self.buf))
        }
    }

    /// Expects exactly `want` next (more may follow and stays buffered).
    pub fn expect(&mut self, want: &[u8]) -> Outcome {
        let until = Instant::now() + wait();
        while self.buf.len() < want.len() && self.buf == want[..self.buf.len()] {
            match self.fill(until) {
                Ok(true) => {}
                Ok(false) => return Err(self.fail(want, "the connection closed")),
                Err(why) => return Err(self.fail(want, &why)),
            }
        }
        if self.buf.starts_with(want) {
            self.buf.drain(..want.len());
            Ok(())
        } else {
            Err(self.fail(want, "that instead"))
        }
    }

    fn fail(&self, want: &[u8], why: &str) -> Failure {
        let got = if why == "that instead" {
            show(&self.buf)
        } else {
            self.got(why)
        };
        Failure::new(show(&self.sent), show(want), got)
    }

    /// Sends `line\n`, expects `reply\n`.
    pub fn round_trip(&mut self, line: &[u8], reply: &[u8]) -> Outcome {
        let mut out = line.to_vec();
        out.push(b'\n');
        self.send(&out)?;
        let mut want = reply.to_vec();
        want.push(b'\n');
        self.expect(&want)
    }

    /// Expects the server to close (EOF or reset) with nothing more.
    pub fn expect_close(&mut self) -> Outcome {
        let until = Instant::now() + wait();
        loop {
            match self.fill(until) {
                Ok(true) => {}
                Ok(false) if self.buf.is_empty() => return Ok(()),
                Ok(false) => break,
                Err(why) if why.contains("reset") && self.buf.is_empty() => return Ok(()),
                Err(why) => {
                    return Err(Failure::new(
                        show(&self.sent),
                        "the server closes the connection",
                        self.got(&why),
                    ))
                }
            }
        }
        Err(Failure::new(
            show(&self.sent),
            "the server closes the connection, sending nothing more",
            self.got("the close"),
        ))
    }

    /// Reads until the server closes; what came (a reset after data counts as a close).
    pub fn rest(&mut self) -> Result<Vec<u8>, Failure> {
        let until = Instant::now() + wait();
        loop {
            match self.fill(until) {
                Ok(true) => {}
                Ok(false) => return Ok(std::mem::take(&mut self.buf)),
                Err(why) if why.contains("reset") => return Ok(std::mem::take(&mut self.buf)),
                Err(why) => {
                    return Err(Failure::new(
                        show(&self.sent),
                        "the server closes the connection",
                        self.got(&why),
                    ))
                }
            }
        }
    }

    /// Reads until the server closes, `chunk` bytes a read with `pause` between reads (a slow
    /// reader): what came, and how it ended (`the close` or `a reset (ECONNRESET)`).
    pub fn rest_slowly(
        &mut self,
        chunk: usize,
        pause: Duration,
    ) -> Result<(Vec<u8>, String), Failure> {
        let mut got = std::mem::take(&mut self.buf);
        let mut buf = vec![0u8; chunk];
        loop {
            self.stream.set_read_timeout(Some(wait())).ok();
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok((got, "the close".into())),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    return Ok((got, "a reset (ECONNRESET)".into()))
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    let why = if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                        format!("nothing more within {} s", wait().as_secs())
                    } else {
                        format!("read failed: {e}")
                    };
                    return Err(Failure::new(
                        show(&self.sent),
                        "the server closes the connection",
                        format!("{} bytes, then {why}", got.len()),
                    ));
                }
            }
            // The pause is the provocation (a reader slower than the server), not a wait.
            std::thread::sleep(pause);
        }
    }

    /// True if nothing arrives within `wait` (what does arrive stays buffered).
    pub fn silent_for(&mut self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        let before = self.buf.len();
        let _ = self.fill(until);
        self.buf.len() == before
    }

    /// Half-close: shutdown(SHUT_WR).
    pub fn finish(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Closes with a reset (SO_LINGER 0).
    pub fn reset(self) {
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid fd and a linger struct of the size given.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.stream),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&l as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
}

/// `addr` as a sockaddr_in or sockaddr_in6 in a sockaddr_storage, and its length.
/// setsockopt(SO_RCVBUF): a receive buffer of `bytes`, fixed. The kernel's autotuning is off
/// for that socket, and a listener's accepted sockets inherit it: a peer that cannot take in
/// megabytes while it does not read.
pub fn set_rcvbuf(fd: RawFd, bytes: usize) -> std::io::Result<()> {
    let size = bytes as libc::c_int;
    // SAFETY: setsockopt(2) with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage; the casts stay within its size.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        match addr {
            SocketAddr::V4(v4) => {
                let sin =
                    &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = v4.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
                (
                    storage,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(v6) => {
                let sin6 = &mut *(&mut storage as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in6>();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = v6.port().to_be();
                sin6.sin6_addr.s6_addr = v6.ip().octets();
                sin6.sin6_scope_id = v6.scope_id();
                (
                    storage,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    }
}
