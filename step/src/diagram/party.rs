//! The scripted peers: a client (or an upstream server) that makes its own system calls with
//! libc, one function per call, and writes each one down with its entry and exit time, the
//! way the stepper records the lesson's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One call as a lane shows it, from the stepper's recording or a scripted peer's log.
#[derive(Clone, Debug)]
pub struct Call {
    pub lane: usize,
    /// Which thread or process of the lane made it (0, 1, ... in order of appearance).
    pub who: String,
    pub entered: u128,
    pub exited: u128,
    pub name: String,
    pub text: String,
    pub result: String,
    /// The connection the call is about, as (local port, remote port).
    pub ports: Option<(u16, u16)>,
    /// Bytes read (for read/recv results), to see what a reset destroyed.
    pub got: Option<usize>,
    /// Bytes written (for write/send results).
    pub wrote: Option<usize>,
}

/// A remark of the script, drawn across the lanes at that moment.
#[derive(Clone, Debug)]
pub struct Note {
    pub ns: u128,
    pub text: String,
}

#[derive(Default)]
pub struct Journal {
    pub calls: Vec<Call>,
    pub notes: Vec<Note>,
    /// When the script found everything quiet (see script::Ctx::settle).
    pub barriers: Vec<u128>,
    /// The fd numbers a lane's program would see: the scripted peers share this process
    /// with the recorder, whose own fds come and go, so each lane numbers its fds itself,
    /// lowest free first from 3, as a process of its own would.
    pub fds: HashMap<(usize, i32), i32>,
    /// Waits until all is quiet; a peer calls it before each call that sends.
    pub quiet: Option<Arc<dyn Fn() + Send + Sync>>,
}

pub type Shared = Arc<Mutex<Journal>>;

/// A scripted peer drawing on lane `lane`.
#[derive(Clone)]
pub struct Peer {
    pub lane: usize,
    pub who: String,
    pub journal: Shared,
    /// Each connected fd's (local port, remote port), kept: after a reset the kernel no
    /// longer knows the peer.
    fds: Arc<Mutex<HashMap<i32, (u16, u16)>>>,
}

fn errno_name() -> String {
    let e = std::io::Error::last_os_error();
    let errno = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0));
    format!("-1 {errno:?}")
}

/// A byte string as C would write it, cut at `max` characters.
pub fn quoted(bytes: &[u8], max: usize) -> String {
    let text = crate::model::no_times(&String::from_utf8_lossy(bytes));
    let bytes = text.as_bytes();
    let mut s = String::from("\"");
    for (i, b) in bytes.iter().enumerate() {
        if i == max {
            s.push_str("\"…");
            return s;
        }
        match *b {
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'"' => s.push_str("\\\""),
            0x20..=0x7e => s.push(*b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

fn ports_of(fd: i32) -> Option<(u16, u16)> {
    // SAFETY: getsockname/getpeername into a sockaddr_in of the size given.
    unsafe {
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        if libc::getsockname(fd, (&mut a as *mut libc::sockaddr_in).cast(), &mut len) != 0 {
            return None;
        }
        let local = u16::from_be(a.sin_port);
        let mut b: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        if libc::getpeername(fd, (&mut b as *mut libc::sockaddr_in).cast(), &mut len) != 0 {
            return Some((local, 0));
        }
        Some((local, u16::from_be(b.sin_port)))
    }
}

fn loopback(port: u16) -> libc::sockaddr_in {
    // SAFETY: a plain C struct, all zeroes is valid.
    let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    a.sin_family = libc::AF_INET as u16;
    a.sin_port = port.to_be();
    a.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    a
}

impl Peer {
    pub fn new(lane: usize, who: &str, journal: &Shared) -> Peer {
        Peer {
            lane,
            who: who.to_string(),
            journal: journal.clone(),
            fds: Arc::default(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn log(
        &self,
        entered: u128,
        name: &str,
        text: String,
        result: String,
        ports: Option<(u16, u16)>,
        got: Option<usize>,
    ) {
        let wrote = if name == "write" {
            result.parse::<usize>().ok()
        } else {
            None
        };
        let exited = crate::now_ns();
        self.journal.lock().unwrap().calls.push(Call {
            lane: self.lane,
            who: self.who.clone(),
            entered,
            exited,
            name: name.to_string(),
            text,
            result,
            ports,
            got,
            wrote,
        });
    }

    /// The number lane `self.lane` shows for a new real fd.
    fn number(&self, real: i32) -> i32 {
        let mut j = self.journal.lock().unwrap();
        let used: Vec<i32> = j
            .fds
            .iter()
            .filter(|((l, _), _)| *l == self.lane)
            .map(|(_, n)| *n)
            .collect();
        let n = (3..).find(|n| !used.contains(n)).unwrap_or(3);
        j.fds.insert((self.lane, real), n);
        n
    }

    /// The number shown for a real fd (the real one if unknown).
    fn shown(&self, real: i32) -> i32 {
        let j = self.journal.lock().unwrap();
        j.fds.get(&(self.lane, real)).copied().unwrap_or(real)
    }

    fn forget(&self, real: i32) {
        self.journal.lock().unwrap().fds.remove(&(self.lane, real));
    }

    /// Wait for quiet before a call that sends: the lesson's recorded calls before it are
    /// all in (a traced call's exit is seen a little after it happened).
    fn wait_quiet(&self) {
        let quiet = self.journal.lock().unwrap().quiet.clone();
        if let Some(q) = quiet {
            q();
        }
    }

    fn ports(&self, fd: i32) -> Option<(u16, u16)> {
        let known = self.fds.lock().unwrap().get(&fd).copied();
        known.or_else(|| ports_of(fd))
    }

    fn remember(&self, fd: i32) -> Option<(u16, u16)> {
        let p = ports_of(fd);
        if let Some(p) = p {
            self.fds.lock().unwrap().insert(fd, p);
        }
        p
    }

    pub fn note(&self, text: &str) {
        self.journal.lock().unwrap().notes.push(Note {
            ns: crate::now_ns(),
            text: text.to_string(),
        });
    }

    pub fn socket(&self) -> i32 {
        let t = crate::now_ns();
        // SAFETY: socket(2) with constants.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        let n = self.number(fd);
        self.log(
            t,
            "socket",
            "socket(AF_INET, SOCK_STREAM)".into(),
            n.to_string(),
            None,
            None,
        );
        fd
    }

    pub fn connect(&self, fd: i32, port: u16) -> bool {
        let a = loopback(port);
        self.wait_quiet();
        let t = crate::now_ns();
        // SAFETY: connect(2) with a sockaddr_in of the size given.
        let rc = unsafe {
            libc::connect(
                fd,
                (&a as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        let result = if rc == 0 { "0".into() } else { errno_name() };
        self.log(
            t,
            "connect",
            format!("connect({}, 127.0.0.1:{port})", self.shown(fd)),
            result,
            self.remember(fd),
            None,
        );
        rc == 0
    }

    /// socket, SO_REUSEADDR, bind and listen on 127.0.0.1:port (only listen is drawn).
    pub fn listen(&self, port: u16) -> i32 {
        // SAFETY: socket(2), setsockopt(2), bind(2) with values of the sizes given.
        let fd = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            let one: libc::c_int = 1;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                4,
            );
            let a = loopback(port);
            libc::bind(
                fd,
                (&a as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            fd
        };
        let n = self.number(fd);
        let t = crate::now_ns();
        // SAFETY: listen(2) on the socket made above.
        let rc = unsafe { libc::listen(fd, 16) };
        let result = if rc == 0 { "0".into() } else { errno_name() };
        self.log(
            t,
            "listen",
            format!("listen({n}, 16)"),
            result,
            Some((port, 0)),
            None,
        );
        fd
    }

    pub fn accept(&self, fd: i32) -> i32 {
        let t = crate::now_ns();
        // SAFETY: accept(2) without the peer's address.
        let c = unsafe { libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut()) };
        let result = if c >= 0 {
            self.number(c).to_string()
        } else {
            errno_name()
        };
        let ports = if c >= 0 { self.remember(c) } else { None };
        self.log(
            t,
            "accept",
            format!("accept({})", self.shown(fd)),
            result,
            ports,
            None,
        );
        c
    }

    pub fn write(&self, fd: i32, bytes: &[u8]) -> isize {
        let ports = self.ports(fd);
        self.wait_quiet();
        let t = crate::now_ns();
        // SAFETY: write(2) from a slice of the length given.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        let result = if n >= 0 { n.to_string() } else { errno_name() };
        self.log(
            t,
            "write",
            format!("write({}, {})", self.shown(fd), quoted(bytes, 24)),
            result,
            ports,
            None,
        );
        n
    }

    /// One read(2) of up to 4096 bytes: what it returned (empty at 0 or on an error).
    pub fn read(&self, fd: i32) -> Vec<u8> {
        let ports = self.ports(fd);
        let mut buf = vec![0u8; 4096];
        let t = crate::now_ns();
        // SAFETY: read(2) into a buffer of the length given.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        let (result, got) = if n >= 0 {
            buf.truncate(n as usize);
            if n == 0 {
                ("0".to_string(), Some(0))
            } else {
                // Binary bytes (a SOCKS reply holds a port) as their count alone.
                let text = buf
                    .iter()
                    .all(|b| b.is_ascii_graphic() || b" \n\r".contains(b));
                if text {
                    (format!("{n} {}", quoted(&buf, 24)), Some(n as usize))
                } else {
                    (n.to_string(), Some(n as usize))
                }
            }
        } else {
            buf.clear();
            (errno_name(), None)
        };
        self.log(
            t,
            "read",
            format!("read({})", self.shown(fd)),
            result,
            ports,
            got,
        );
        buf
    }

    /// setsockopt(SO_RCVBUF): a small receive buffer, so a small window.
    pub fn rcvbuf(&self, fd: i32, bytes: i32) {
        let t = crate::now_ns();
        // SAFETY: setsockopt(2) with an int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&bytes as *const i32).cast(),
                4,
            )
        };
        let result = if rc == 0 { "0".into() } else { errno_name() };
        self.log(
            t,
            "setsockopt",
            format!("setsockopt({}, SO_RCVBUF, {bytes})", self.shown(fd)),
            result,
            None,
            None,
        );
    }

    pub fn shutdown_wr(&self, fd: i32) {
        let ports = self.ports(fd);
        self.wait_quiet();
        let t = crate::now_ns();
        // SAFETY: shutdown(2) with a constant.
        let rc = unsafe { libc::shutdown(fd, libc::SHUT_WR) };
        let result = if rc == 0 { "0".into() } else { errno_name() };
        self.log(
            t,
            "shutdown",
            format!("shutdown({}, SHUT_WR)", self.shown(fd)),
            result,
            ports,
            None,
        );
    }

    /// A UDP socket: socket(SOCK_DGRAM), no connection.
    pub fn udp_socket(&self) -> i32 {
        let t = crate::now_ns();
        // SAFETY: socket(2) with constants.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        let n = self.number(fd);
        self.log(
            t,
            "socket",
            "socket(AF_INET, SOCK_DGRAM)".into(),
            n.to_string(),
            None,
            None,
        );
        fd
    }

    /// bind(2) on 127.0.0.1:port: where a UDP socket's datagrams come from and go to.
    pub fn bind(&self, fd: i32, port: u16) {
        let a = loopback(port);
        let t = crate::now_ns();
        // SAFETY: bind(2) with a sockaddr_in of the size given.
        let rc = unsafe {
            libc::bind(
                fd,
                (&a as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        let result = if rc == 0 { "0".into() } else { errno_name() };
        self.log(
            t,
            "bind",
            format!("bind({}, 127.0.0.1:{port})", self.shown(fd)),
            result,
            Some((port, 0)),
            None,
        );
    }

    /// sendto(2): one datagram to 127.0.0.1:port; `what` says what it holds.
    pub fn sendto(&self, fd: i32, bytes: &[u8], port: u16, what: &str) -> isize {
        let a = loopback(port);
        let local = ports_of(fd).map_or(0, |p| p.0);
        self.wait_quiet();
        let t = crate::now_ns();
        // SAFETY: sendto(2) from a slice of the length given, to a sockaddr_in of its size.
        let n = unsafe {
            libc::sendto(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&a as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        let result = if n >= 0 { n.to_string() } else { errno_name() };
        self.log(
            t,
            "sendto",
            format!("sendto({}, {what}, 127.0.0.1:{port})", self.shown(fd)),
            result,
            Some((local, port)),
            None,
        );
        n
    }

    /// One recvfrom(2) of up to 4096 bytes: the datagram and the port it came from.
    pub fn recvfrom(&self, fd: i32) -> (Vec<u8>, u16) {
        let local = ports_of(fd).map_or(0, |p| p.0);
        let mut buf = vec![0u8; 4096];
        // SAFETY: a plain C struct, all zeroes is valid.
        let mut from: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        let t = crate::now_ns();
        // SAFETY: recvfrom(2) into a buffer and a sockaddr_in of the sizes given.
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_in).cast(),
                &mut len,
            )
        };
        let port = u16::from_be(from.sin_port);
        let (result, got) = if n >= 0 {
            buf.truncate(n as usize);
            (format!("{n} from 127.0.0.1:{port}"), Some(n as usize))
        } else {
            buf.clear();
            (errno_name(), None)
        };
        self.log(
            t,
            "recvfrom",
            format!("recvfrom({})", self.shown(fd)),
            result,
            Some((local, port)),
            got,
        );
        (buf, port)
    }

    pub fn close(&self, fd: i32) {
        let ports = self.ports(fd);
        let n = self.shown(fd);
        self.wait_quiet();
        let t = crate::now_ns();
        // SAFETY: close(2) of a descriptor this peer opened.
        let rc = unsafe { libc::close(fd) };
        self.fds.lock().unwrap().remove(&fd);
        self.forget(fd);
        let result = if rc == 0 { "0".into() } else { errno_name() };
        self.log(t, "close", format!("close({n})"), result, ports, None);
    }
}
