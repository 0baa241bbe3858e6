//! One client connection with a deadline on every read, and what a read can end in.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use protocols::echo::{reverse_into, WELCOME};

/// How long one answer may take before it counts as never, in milliseconds (`--patience`).
static PATIENCE_MS: AtomicU64 = AtomicU64::new(3000);

pub fn set_patience(seconds: f64) {
    PATIENCE_MS.store((seconds * 1000.0) as u64, Ordering::Relaxed);
}

/// How long one answer may take before it counts as never (default 3 s).
pub fn patience() -> Duration {
    Duration::from_millis(PATIENCE_MS.load(Ordering::Relaxed).max(1))
}

/// What waiting for a line ended in.
#[derive(Debug, PartialEq)]
pub enum Got {
    Line(Vec<u8>),
    Eof,
    Reset,
    Timeout,
    Error(ErrorKind),
}

pub struct Peer {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    /// Connects (at most [`patience()`]), with TCP_NODELAY so that every write is a segment.
    pub fn connect(addr: SocketAddr) -> io::Result<Peer> {
        let stream = TcpStream::connect_timeout(&addr, patience())?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(patience()))?;
        Ok(Peer {
            stream,
            buf: Vec::new(),
        })
    }

    /// The next line (without `\n`), or how the wait ended, by `deadline` at the latest.
    pub fn line_by(&mut self, deadline: Instant) -> Got {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..=i);
                return Got::Line(line);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // A zero timeout means "block forever" to setsockopt: wait at least 1 ms.
            let _ = self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Got::Eof,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => match e.kind() {
                    ErrorKind::WouldBlock | ErrorKind::TimedOut => return Got::Timeout,
                    ErrorKind::ConnectionReset => return Got::Reset,
                    ErrorKind::Interrupted => {}
                    kind => return Got::Error(kind),
                },
            }
            if Instant::now() >= deadline && !self.buf.contains(&b'\n') {
                return Got::Timeout;
            }
        }
    }

    /// The next line within [`patience()`].
    pub fn line(&mut self) -> Got {
        self.line_by(Instant::now() + patience())
    }

    /// Reads the welcome line; a description of anything else.
    pub fn welcome(&mut self) -> Result<(), String> {
        match self.line() {
            Got::Line(l) if l == WELCOME[..WELCOME.len() - 1] => Ok(()),
            Got::Line(l) => Err(format!("first line {:?}, not the welcome", show(&l))),
            other => Err(format!("no welcome ({})", describe(&other))),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends `line\n` and reads the reply: true when it is the line reversed.
    pub fn round_trip(&mut self, line: &str) -> bool {
        self.send(format!("{line}\n").as_bytes()).is_ok()
            && self.line() == Got::Line(reversed(line.as_bytes()))
    }

    /// Lines until `want` have come and the server is then quiet for a moment, or until
    /// `deadline`, EOF or a reset: the lines, and how it ended.
    pub fn lines(&mut self, want: usize, deadline: Instant) -> (Vec<Vec<u8>>, Got) {
        let mut lines = Vec::new();
        loop {
            // Once `want` lines are in, wait a little for extra ones (a wrong server may send
            // more replies than lines), then stop.
            let by = if lines.len() >= want {
                deadline.min(Instant::now() + Duration::from_millis(200))
            } else {
                deadline
            };
            match self.line_by(by) {
                Got::Line(l) => lines.push(l),
                end => return (lines, end),
            }
        }
    }

    pub fn half_close(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    /// Closes with an RST instead of a FIN: SO_LINGER on with a zero timeout, then close.
    pub fn reset(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt(2) on our own open socket with a correctly sized linger.
        unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
    }
}

/// The reply the protocol wants to `line`.
pub fn reversed(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    reverse_into(line, &mut out);
    out
}

/// A line for the projector: lossy UTF-8, cut at 40 characters.
pub fn show(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text.into_owned()
    }
}

pub fn describe(got: &Got) -> String {
    match got {
        Got::Line(l) => format!("the line {:?}", show(l)),
        Got::Eof => "EOF".into(),
        Got::Reset => "connection reset".into(),
        Got::Timeout => format!("nothing within {:.1} s", patience().as_secs_f64()),
        Got::Error(kind) => format!("{kind}"),
    }
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (flood and many hold many
/// sockets); returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit(2) with a valid rlimit struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}
