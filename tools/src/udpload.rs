//! A UDP load client of the project's own (`udp-load`, and `make bench-socks`' UDP rows): it
//! opens a SOCKS5 UDP ASSOCIATE (or sends directly, with no proxy), sends datagrams of one
//! size through it to a sink of its own as fast as sendmmsg allows (or at a fixed rate), for
//! a bounded time and count, and counts what the sink received: the delivered rate and the
//! loss at the offered rate. Loopback only: every address it sends to or through must be.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use protocols::socks5::{client, Command, Reply, Target};
use protocols::socks5_udp::wrap;

/// Datagrams per sendmmsg/recvmmsg call of the load client itself.
const BATCH: usize = 32;

/// One load: datagram payload size, how long, how many at most, and at what rate.
#[derive(Clone, Debug)]
pub struct Load {
    pub size: usize,
    pub duration: Duration,
    /// At most this many datagrams are sent, whatever the time.
    pub max: u64,
    /// Datagrams per second offered; None: as fast as the sender can.
    pub rate: Option<u64>,
}

/// What one load did: datagrams sent and received, over how long the sending took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    pub sent: u64,
    pub received: u64,
    pub seconds: f64,
}

impl Outcome {
    /// Datagrams delivered per second.
    pub fn rate(&self) -> f64 {
        self.received as f64 / self.seconds.max(1e-9)
    }

    /// Datagrams offered per second.
    pub fn offered(&self) -> f64 {
        self.sent as f64 / self.seconds.max(1e-9)
    }

    /// The share of what was sent that never arrived.
    pub fn loss(&self) -> f64 {
        1.0 - self.received as f64 / (self.sent.max(1)) as f64
    }
}

/// A UDP ASSOCIATE on `proxy` for datagrams from `from`: the control connection (the
/// association lives as long as it) and the relay's address (BND).
pub fn associate(proxy: SocketAddr, from: SocketAddr) -> Result<(TcpStream, SocketAddr), String> {
    let mut s = TcpStream::connect_timeout(&proxy, Duration::from_secs(5))
        .map_err(|e| format!("connect to {proxy}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    // The greeting, its answer, then the request: some servers (microsocks) read the
    // request only after answering the greeting.
    s.write_all(&client::greeting(&[0]).expect("one method"))
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let method = read_until(&mut s, &mut buf, client::parse_method_selection)?;
    if method != 0 {
        return Err(format!("the proxy chose method {method:#04x}"));
    }
    let request = client::request(Command::UdpAssociate, &Target::Ip(from)).expect("an IP");
    s.write_all(&request).map_err(|e| format!("write: {e}"))?;
    let reply = read_until(&mut s, &mut buf, |b| {
        Ok(client::parse_reply(b)?.map(|(rep, bnd, used)| ((rep, bnd), used)))
    })?;
    match reply {
        (Reply::Succeeded, Target::Ip(bnd)) => {
            // A relay that answers 0.0.0.0 means "where you reached me".
            let bnd = match bnd.ip().is_unspecified() {
                true => SocketAddr::new(proxy.ip(), bnd.port()),
                false => bnd,
            };
            Ok((s, bnd))
        }
        (rep, _) => Err(format!("UDP ASSOCIATE refused: {rep}")),
    }
}

/// Reads until `parse` finds a whole message at the front of `buf`; takes it out of `buf`.
fn read_until<T>(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, protocols::socks5::Error>,
) -> Result<T, String> {
    loop {
        if let Some((value, used)) = parse(buf).map_err(|e| format!("a bad reply: {e}"))? {
            buf.drain(..used);
            return Ok(value);
        }
        let mut chunk = [0u8; 64];
        match s.read(&mut chunk) {
            Ok(0) => return Err("the proxy closed before its reply".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("waiting for the reply: {e}")),
        }
    }
}

fn loopback(addr: SocketAddr, what: &str) -> Result<(), String> {
    match addr.ip().to_canonical().is_loopback() {
        true => Ok(()),
        false => Err(format!(
            "{what} {addr} is not a loopback address: loopback only"
        )),
    }
}

/// Runs `load` through `proxy` (None: straight to the sink).
pub fn run(proxy: Option<SocketAddr>, load: &Load) -> Result<Outcome, String> {
    let sink = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let client_sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let sink_addr = sink.local_addr().map_err(|e| e.to_string())?;
    set_rcvbuf(&sink, 8 << 20);
    let payload = vec![0x5au8; load.size];
    let (control, dest, datagram) = match proxy {
        Some(proxy) => {
            loopback(proxy, "the proxy")?;
            let from = client_sock.local_addr().map_err(|e| e.to_string())?;
            let (control, bnd) = associate(proxy, from)?;
            loopback(bnd, "the relay's UDP address")?;
            let datagram = wrap(&Target::Ip(sink_addr), &payload).map_err(|e| e.to_string())?;
            (Some(control), bnd, datagram)
        }
        None => (None, sink_addr, payload),
    };
    // One datagram first: the path works (a relay that drops everything is an error, not a
    // 100 % loss), and everything is warm.
    sink.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; load.size + 64];
    client_sock
        .send_to(&datagram, dest)
        .map_err(|e| format!("sendto: {e}"))?;
    sink.recv(&mut buf)
        .map_err(|e| format!("the first datagram never reached the sink ({e})"))?;

    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let counter = {
        let (received, done) = (received.clone(), done.clone());
        let size = load.size + 64;
        thread::spawn(move || sink_loop(&sink, size, &received, &done))
    };
    let start = Instant::now();
    let mut sent = 0u64;
    let fd = client_sock.as_raw_fd();
    let to = nix::sys::socket::SockaddrStorage::from(dest);
    while sent < load.max {
        let elapsed = start.elapsed();
        if elapsed >= load.duration {
            break;
        }
        if let Some(rate) = load.rate {
            let due = (elapsed.as_secs_f64() * rate as f64) as u64;
            if sent >= due {
                thread::sleep(Duration::from_micros(200));
                continue;
            }
        }
        let n = (load.max - sent).min(BATCH as u64) as usize;
        sent += send_batch(fd, &to, &datagram, n);
    }
    let seconds = start.elapsed().as_secs_f64();
    // The stragglers: until the count stops moving for 200 ms (at most 2 s).
    let until = Instant::now() + Duration::from_secs(2);
    let mut last = received.load(Ordering::Relaxed);
    while Instant::now() < until {
        thread::sleep(Duration::from_millis(200));
        let now = received.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    done.store(true, Ordering::Relaxed);
    let _ = counter.join();
    drop(control);
    Ok(Outcome {
        sent,
        received: received.load(Ordering::Relaxed),
        seconds,
    })
}

/// sendmmsg: `n` copies of `datagram` to `to`; how many went.
fn send_batch(fd: i32, to: &nix::sys::socket::SockaddrStorage, datagram: &[u8], n: usize) -> u64 {
    use nix::sys::socket::SockaddrLike;
    let mut iovs: Vec<libc::iovec> = (0..n)
        .map(|_| libc::iovec {
            iov_base: datagram.as_ptr() as *mut libc::c_void,
            iov_len: datagram.len(),
        })
        .collect();
    // SAFETY: all-zero is a valid mmsghdr; the pointers set below outlive the call.
    let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
        m.msg_hdr.msg_namelen = to.len();
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `msgs` points at live iovecs, payload and address.
    let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, 0) };
    r.max(0) as u64
}

/// The sink: recvmmsg until told to stop, counting datagrams.
fn sink_loop(sink: &UdpSocket, size: usize, received: &AtomicU64, done: &AtomicBool) {
    let _ = sink.set_read_timeout(Some(Duration::from_millis(50)));
    let mut bufs = vec![vec![0u8; size]; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: all-zero is a valid mmsghdr.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    while !done.load(Ordering::Relaxed) {
        // SAFETY: every header points at a live buffer (a blocking socket with a timeout).
        let r = unsafe {
            libc::recvmmsg(
                sink.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r > 0 {
            received.fetch_add(r as u64, Ordering::Relaxed);
        }
    }
}

fn set_rcvbuf(sock: &UdpSocket, bytes: usize) {
    let _ = nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::RcvBuf, &bytes);
}
