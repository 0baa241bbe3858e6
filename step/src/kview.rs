//! The kernel's view of a process's sockets: the fd table from /proc/PID/fd, and for each
//! socket what the kernel says about it, asked through a duplicate of the lesson's fd
//! (pidfd_getfd(2), allowed to the tracer): family and type (SO_DOMAIN, SO_TYPE), both
//! addresses, the TCP state (TCP_INFO), the bytes queued each way (SIOCINQ, SIOCOUTQ) and,
//! for a listener, the accept queue's fill and size (TCP_INFO's tcpi_unacked and
//! tcpi_sacked: sk_ack_backlog and sk_max_ack_backlog, what `ss -lt` shows as Recv-Q and
//! Send-Q). The duplicate is closed at once, while the lesson is stopped.
//! (/proc/net/tcp has the same facts, but reading it costs time in proportion to every TCP
//! socket of the machine, TIME_WAITs included: 60 ms for 35,000, at every stop.)
//!
//! The close, to its end. TCP_INFO gives the state of the socket itself, whichever side
//! closes first: FIN_WAIT1, FIN_WAIT2, CLOSING, CLOSE_WAIT, LAST_ACK, CLOSE. But a socket in
//! CLOSE has no peer any more (getpeername: ENOTCONN), so [`Conns`] remembers each
//! connection's two addresses by the socket's inode, from the stops where it was up. And the
//! last steps belong to no fd: after close(2) the kernel finishes the close alone, and a
//! TIME_WAIT is a socket of its own, never the fd's (the fd's socket is in CLOSE by then).
//! Those are asked for by address pair (NETLINK_SOCK_DIAG, [`crate::diag`]) and shown on a
//! line of their own: `<TCP 127.0.0.1:23333↔127.0.0.1:41000 TIME_WAIT>  no fd: …`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use nix::unistd::Pid;

use crate::diag::Diag;

/// Whatever can name an fd: `3<TCP 127.0.0.1:23333 LISTEN>`.
pub trait FdView {
    fn fd(&self, fd: i32) -> String;
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sock {
    /// TCP, TCPv6, UDP, UDPv6, UNIX.
    pub kind: &'static str,
    /// The inode of /proc/PID/fd/N's `socket:[N]`: the socket's name across stops.
    pub inode: u64,
    pub local: Option<SocketAddr>,
    /// The peer: getpeername's, or the one remembered from an earlier stop.
    pub remote: Option<SocketAddr>,
    /// The TCP state, for TCP sockets.
    pub state: Option<&'static str>,
    /// A listener's accept queue (fill, size); a connection's bytes queued (recv, send).
    pub queues: (u64, u64),
}

/// One look at a process's fds.
pub struct Snapshot {
    /// fd → what /proc/PID/fd/N links to (`socket:[123]`, `pipe:[45]`, `/dev/pts/0`).
    pub links: BTreeMap<i32, String>,
    socks: BTreeMap<i32, Sock>,
    /// What the kernel still holds of remembered connections, no fd holding it.
    fdless: Vec<String>,
}

/// How many connections [`Conns`] remembers at most (the oldest are forgotten first).
const REMEMBERED: usize = 256;
/// How many connections with no fd the kernel view names one by one (the newest).
const FDLESS_SHOWN: usize = 3;

/// A connection seen up at some stop.
struct Known {
    kind: &'static str,
    local: SocketAddr,
    peer: SocketAddr,
    /// When it was last seen (a counter), to forget the oldest first.
    seen: u64,
}

/// What the stepper remembers across stops: each TCP connection's two addresses, by the
/// socket's inode (inodes of sockets are unique on the machine, so the processes of a
/// lesson that forks share this).
#[derive(Default)]
pub struct Conns {
    known: HashMap<u64, Known>,
    clock: u64,
    diag: Option<Diag>,
}

impl Conns {
    fn remember(&mut self, inode: u64, kind: &'static str, local: SocketAddr, peer: SocketAddr) {
        self.clock += 1;
        let seen = self.clock;
        self.known.insert(
            inode,
            Known {
                kind,
                local,
                peer,
                seen,
            },
        );
        if self.known.len() > REMEMBERED {
            if let Some(oldest) = self
                .known
                .iter()
                .min_by_key(|(_, k)| k.seen)
                .map(|(i, _)| *i)
            {
                self.known.remove(&oldest);
            }
        }
    }

    /// A socket that lost its peer (CLOSE) gets the remembered one back.
    fn fill(&mut self, sock: &mut Sock) {
        if !matches!(sock.kind, "TCP" | "TCPv6") {
            return;
        }
        match (sock.local, sock.remote) {
            (Some(l), Some(r)) => self.remember(sock.inode, sock.kind, l, r),
            (local, None) => {
                if let Some(k) = self.known.get(&sock.inode) {
                    sock.local = local.or(Some(k.local));
                    sock.remote = Some(k.peer);
                }
            }
            _ => {}
        }
    }

    /// What the kernel still holds, with no fd, of the remembered connections that this
    /// process's fds no longer show up (closed, or in CLOSE while TIME_WAIT holds the pair):
    /// one line each for the newest [`FDLESS_SHOWN`], then how many more and in which states.
    /// A connection the kernel no longer holds at all is forgotten.
    fn fdless(&mut self, socks: &BTreeMap<i32, Sock>) -> Vec<String> {
        let mut known: Vec<(u64, u64)> = self.known.iter().map(|(i, k)| (k.seen, *i)).collect();
        known.sort();
        let mut held = Vec::new();
        for (_, inode) in known {
            let here = socks.values().find(|s| s.inode == inode);
            if here.is_some_and(|s| s.state != Some("CLOSE")) {
                continue;
            }
            if self.diag.is_none() {
                self.diag = Diag::open();
            }
            let k = &self.known[&inode];
            let found = self.diag.as_mut().and_then(|d| d.lookup(k.local, k.peer));
            match found {
                Some(f) if f.inode == 0 => {
                    let state = STATES.get(f.state as usize).copied().unwrap_or("?");
                    held.push((
                        format!("<{} {}↔{} {state}>", k.kind, k.local, k.peer),
                        state,
                    ));
                }
                // Still open in another process (a forked child has it).
                Some(f) if f.inode == inode => {}
                // Nothing left of it (or the pair is another connection's now).
                _ if here.is_none() => {
                    self.known.remove(&inode);
                }
                _ => {}
            }
        }
        let older = held.len().saturating_sub(FDLESS_SHOWN);
        let mut lines: Vec<String> = held[older..]
            .iter()
            .map(|(conn, state)| {
                let why = if *state == "TIME_WAIT" {
                    "no fd: the kernel keeps the pair 60 s"
                } else {
                    "no fd: the kernel finishes the close"
                };
                format!("{conn}  {why}")
            })
            .collect();
        if older > 0 {
            let mut states: Vec<(&str, usize)> = Vec::new();
            for (_, state) in &held[..older] {
                match states.iter_mut().find(|(s, _)| s == state) {
                    Some((_, n)) => *n += 1,
                    None => states.push((state, 1)),
                }
            }
            let states: Vec<String> = states.iter().map(|(s, n)| format!("{s} {n}")).collect();
            lines.push(format!(
                "… and {older} older with no fd ({})",
                states.join(", ")
            ));
        }
        lines
    }
}

const STATES: [&str; 13] = [
    "?",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

fn show_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(sin6.sin6_port))))
        }
        _ => None,
    }
}

fn int_opt(fd: i32, level: i32, name: i32) -> Option<i32> {
    let mut v: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: v and len are valid for the call.
    let r = unsafe { libc::getsockopt(fd, level, name, &mut v as *mut _ as *mut _, &mut len) };
    (r == 0).then_some(v)
}

fn name_of(fd: i32, peer: bool) -> Option<SocketAddr> {
    // SAFETY: zeroed sockaddr_storage is valid; len is its size.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = &mut ss as *mut _ as *mut libc::sockaddr;
    // SAFETY: ss and len are valid for the call.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if r != 0 {
        return None;
    }
    show_addr(&ss)
}

fn queued(fd: i32, req: libc::c_ulong) -> u64 {
    let mut v: libc::c_int = 0;
    // SAFETY: SIOCINQ/SIOCOUTQ write one int.
    let r = unsafe { libc::ioctl(fd, req, &mut v) };
    if r == 0 {
        v.max(0) as u64
    } else {
        0
    }
}

/// What the kernel says about a socket, through our own fd for it.
fn describe(fd: i32, inode: u64) -> Option<Sock> {
    let domain = int_opt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    let ty = int_opt(fd, libc::SOL_SOCKET, libc::SO_TYPE)?;
    let kind = match (domain, ty) {
        (libc::AF_INET, libc::SOCK_STREAM) => "TCP",
        (libc::AF_INET6, libc::SOCK_STREAM) => "TCPv6",
        (libc::AF_INET, libc::SOCK_DGRAM) => "UDP",
        (libc::AF_INET6, libc::SOCK_DGRAM) => "UDPv6",
        (libc::AF_UNIX, _) => "UNIX",
        (libc::AF_NETLINK, _) => "NETLINK",
        _ => "socket",
    };
    let local = name_of(fd, false).filter(|a| a.port() != 0);
    let remote = name_of(fd, true);
    let mut sock = Sock {
        kind,
        inode,
        local,
        remote,
        state: None,
        queues: (0, 0),
    };
    if ty == libc::SOCK_STREAM && (domain == libc::AF_INET || domain == libc::AF_INET6) {
        // SAFETY: zeroed tcp_info is valid; len is its size.
        let mut info: libc::tcp_info = unsafe { zeroed() };
        let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: info and len are valid for the call.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                &mut info as *mut _ as *mut _,
                &mut len,
            )
        };
        if r == 0 {
            sock.state = STATES.get(info.tcpi_state as usize).copied();
            sock.queues = if sock.state == Some("LISTEN") {
                (info.tcpi_unacked as u64, info.tcpi_sacked as u64)
            } else {
                (queued(fd, libc::FIONREAD), queued(fd, libc::TIOCOUTQ))
            };
        }
    }
    Some(sock)
}

impl Snapshot {
    pub fn take(pid: Pid, conns: &mut Conns) -> Snapshot {
        let mut links = BTreeMap::new();
        if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) {
            for entry in dir.flatten() {
                let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                if let Ok(target) = fs::read_link(entry.path()) {
                    links.insert(fd, target.to_string_lossy().into_owned());
                }
            }
        }
        let mut socks = BTreeMap::new();
        let wanted: Vec<(i32, u64)> = links
            .iter()
            .filter_map(|(fd, l)| {
                let inode = l.strip_prefix("socket:[")?.strip_suffix(']')?;
                Some((*fd, inode.parse().ok()?))
            })
            .collect();
        if !wanted.is_empty() {
            // SAFETY: pidfd_open and pidfd_getfd take integers and return new fds we own.
            let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) } as i32;
            if pidfd >= 0 {
                for (fd, inode) in wanted {
                    let ours = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) } as i32;
                    if ours >= 0 {
                        if let Some(mut sock) = describe(ours, inode) {
                            conns.fill(&mut sock);
                            socks.insert(fd, sock);
                        }
                        // SAFETY: ours is our own duplicate, closed once.
                        unsafe { libc::close(ours) };
                    }
                }
                // SAFETY: pidfd is ours, closed once.
                unsafe { libc::close(pidfd) };
            }
        }
        let fdless = conns.fdless(&socks);
        Snapshot {
            links,
            socks,
            fdless,
        }
    }

    pub fn sock(&self, fd: i32) -> Option<&Sock> {
        self.socks.get(&fd)
    }

    /// Queue details for a socket fd: a listener's accept queue, a connection's bytes queued.
    fn queues(&self, fd: i32) -> Option<String> {
        let s = self.socks.get(&fd)?;
        match s.state? {
            "LISTEN" => Some(format!("accept queue {} of {}", s.queues.0, s.queues.1)),
            "CLOSE" if s.remote.is_none() => None,
            _ => Some(format!("recv-q {} · send-q {}", s.queues.0, s.queues.1)),
        }
    }

    /// The kernel view: one line per socket, epoll or io_uring instance (files and pipes,
    /// inherited ones included, are named where a call uses them, not listed here), then one
    /// per connection the kernel holds with no fd (its fd number: -1).
    pub fn lines(&self) -> Vec<(i32, String)> {
        self.links
            .iter()
            .filter(|(_, l)| l.starts_with("socket:") || l.starts_with("anon_inode:"))
            .map(|(fd, _)| fd)
            .map(|&fd| {
                let mut line = self.fd(fd);
                if let Some(q) = self.queues(fd) {
                    line = format!("{line}  {q}");
                }
                (fd, line)
            })
            .chain(self.fdless.iter().map(|l| (-1, l.clone())))
            .collect()
    }
}

impl FdView for Snapshot {
    fn fd(&self, fd: i32) -> String {
        let Some(link) = self.links.get(&fd) else {
            return fd.to_string();
        };
        let what = if let Some(s) = self.socks.get(&fd) {
            let mut w = s.kind.to_string();
            match (&s.local, &s.remote) {
                (Some(l), Some(r)) => w.push_str(&format!(" {l}↔{r}")),
                (Some(l), None) => w.push_str(&format!(" {l}")),
                _ => {}
            }
            // A socket never connected is in CLOSE too: the state is said once it had a peer.
            match s.state {
                Some("CLOSE") if s.remote.is_none() => {}
                None => {}
                Some(state) => w.push_str(&format!(" {state}")),
            }
            w
        } else if let Some(rest) = link.strip_prefix("anon_inode:") {
            match rest {
                "[eventpoll]" => "epoll".into(),
                "[io_uring]" => "io_uring".into(),
                "[signalfd]" => "signalfd".into(),
                "[eventfd]" => "eventfd".into(),
                other => other.trim_matches(|c| c == '[' || c == ']').to_string(),
            }
        } else {
            link.clone()
        };
        format!("{fd}<{what}>")
    }
}
