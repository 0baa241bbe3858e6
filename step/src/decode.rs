//! The lessons' system calls, decoded by hand the way strace shows them: names, flags by
//! name, sockaddrs spelled out, buffers as escaped strings, each fd as what it is. Only the
//! calls the lessons make are decoded; any other call is shown raw (`name(0x.., ..)`), never
//! as a crash. x86_64 numbers.

use nix::errno::Errno;
use nix::unistd::Pid;

use crate::kview::FdView;
use crate::mem;

/// (number, name) of every call the stepper knows by name.
pub const CALLS: &[(i64, &str)] = &[
    (libc::SYS_read, "read"),
    (libc::SYS_write, "write"),
    (libc::SYS_close, "close"),
    (libc::SYS_poll, "poll"),
    (libc::SYS_ppoll, "ppoll"),
    (libc::SYS_select, "select"),
    (libc::SYS_pselect6, "pselect6"),
    (libc::SYS_readv, "readv"),
    (libc::SYS_writev, "writev"),
    (libc::SYS_socket, "socket"),
    (libc::SYS_socketpair, "socketpair"),
    (libc::SYS_connect, "connect"),
    (libc::SYS_accept, "accept"),
    (libc::SYS_accept4, "accept4"),
    (libc::SYS_sendto, "sendto"),
    (libc::SYS_recvfrom, "recvfrom"),
    (libc::SYS_sendmsg, "sendmsg"),
    (libc::SYS_recvmsg, "recvmsg"),
    (libc::SYS_sendmmsg, "sendmmsg"),
    (libc::SYS_recvmmsg, "recvmmsg"),
    (libc::SYS_shutdown, "shutdown"),
    (libc::SYS_bind, "bind"),
    (libc::SYS_listen, "listen"),
    (libc::SYS_getsockname, "getsockname"),
    (libc::SYS_getpeername, "getpeername"),
    (libc::SYS_setsockopt, "setsockopt"),
    (libc::SYS_getsockopt, "getsockopt"),
    (libc::SYS_clone, "clone"),
    (libc::SYS_clone3, "clone3"),
    (libc::SYS_fork, "fork"),
    (libc::SYS_vfork, "vfork"),
    (libc::SYS_wait4, "wait4"),
    (libc::SYS_execve, "execve"),
    (libc::SYS_kill, "kill"),
    (libc::SYS_fcntl, "fcntl"),
    (libc::SYS_rt_sigaction, "rt_sigaction"),
    (libc::SYS_rt_sigtimedwait, "rt_sigtimedwait"),
    (libc::SYS_signalfd4, "signalfd4"),
    (libc::SYS_epoll_create1, "epoll_create1"),
    (libc::SYS_epoll_ctl, "epoll_ctl"),
    (libc::SYS_epoll_wait, "epoll_wait"),
    (libc::SYS_epoll_pwait, "epoll_pwait"),
    (libc::SYS_io_uring_setup, "io_uring_setup"),
    (libc::SYS_io_uring_enter, "io_uring_enter"),
    (libc::SYS_io_uring_register, "io_uring_register"),
    (libc::SYS_pipe2, "pipe2"),
    (libc::SYS_mmap, "mmap"),
    (libc::SYS_splice, "splice"),
    (libc::SYS_exit_group, "exit_group"),
    (libc::SYS_exit, "exit"),
    (libc::SYS_restart_syscall, "restart_syscall"),
];

/// The stop set used when neither make nor `--only` gives one: TRACE_DEFAULT's calls.
pub const DEFAULT_STOPS: &str = "socket,socketpair,connect,accept,accept4,sendto,recvfrom,\
sendmsg,recvmsg,shutdown,bind,listen,getsockname,getpeername,setsockopt,getsockopt,read,write,\
close,fcntl,poll,ppoll,select,pselect6,epoll_create1,epoll_ctl,epoll_wait,epoll_pwait,clone,\
clone3,fork,vfork,wait4,kill,rt_sigtimedwait,signalfd4,io_uring_setup,io_uring_enter,exit_group";

pub fn name(nr: i64) -> String {
    CALLS
        .iter()
        .find(|(n, _)| *n == nr)
        .map_or_else(|| format!("syscall_{nr}"), |(_, s)| s.to_string())
}

pub fn number(name: &str) -> Option<i64> {
    CALLS.iter().find(|(_, s)| *s == name).map(|(n, _)| *n)
}

/// Calls whose return value is a new file descriptor.
pub fn returns_fd(nr: i64) -> bool {
    [
        libc::SYS_socket,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_epoll_create1,
        libc::SYS_io_uring_setup,
        libc::SYS_signalfd4,
    ]
    .contains(&nr)
}

/// The value of a flag set, by name: `SOCK_STREAM|SOCK_CLOEXEC`.
fn flags(value: u64, names: &[(u64, &str)]) -> String {
    let mut out = Vec::new();
    let mut rest = value;
    for &(bit, name) in names {
        if bit != 0 && value & bit == bit {
            out.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 || out.is_empty() {
        out.push(format!("{rest:#x}"));
    }
    out.join("|")
}

fn one_of(value: u64, names: &[(u64, &str)]) -> String {
    names
        .iter()
        .find(|(v, _)| *v == value)
        .map_or_else(|| value.to_string(), |(_, n)| n.to_string())
}

const FAMILIES: &[(u64, &str)] = &[
    (libc::AF_UNIX as u64, "AF_UNIX"),
    (libc::AF_INET as u64, "AF_INET"),
    (libc::AF_INET6 as u64, "AF_INET6"),
    (libc::AF_NETLINK as u64, "AF_NETLINK"),
    (libc::AF_PACKET as u64, "AF_PACKET"),
];
const SOCK_FLAGS: &[(u64, &str)] = &[
    (libc::SOCK_NONBLOCK as u64, "SOCK_NONBLOCK"),
    (libc::SOCK_CLOEXEC as u64, "SOCK_CLOEXEC"),
];
const O_FLAGS: &[(u64, &str)] = &[
    (libc::O_WRONLY as u64, "O_WRONLY"),
    (libc::O_RDWR as u64, "O_RDWR"),
    (libc::O_APPEND as u64, "O_APPEND"),
    (libc::O_NONBLOCK as u64, "O_NONBLOCK"),
    (libc::O_ASYNC as u64, "O_ASYNC"),
    (libc::O_CLOEXEC as u64, "O_CLOEXEC"),
    (libc::O_DIRECT as u64, "O_DIRECT"),
];
const PROT_BITS: &[(u64, &str)] = &[
    (libc::PROT_READ as u64, "PROT_READ"),
    (libc::PROT_WRITE as u64, "PROT_WRITE"),
    (libc::PROT_EXEC as u64, "PROT_EXEC"),
];
const MAP_BITS: &[(u64, &str)] = &[
    (libc::MAP_SHARED as u64, "MAP_SHARED"),
    (libc::MAP_PRIVATE as u64, "MAP_PRIVATE"),
    (libc::MAP_FIXED as u64, "MAP_FIXED"),
    (libc::MAP_ANONYMOUS as u64, "MAP_ANONYMOUS"),
    (libc::MAP_NORESERVE as u64, "MAP_NORESERVE"),
    (libc::MAP_POPULATE as u64, "MAP_POPULATE"),
    (libc::MAP_LOCKED as u64, "MAP_LOCKED"),
];
const POLL_BITS: &[(u64, &str)] = &[
    (libc::POLLIN as u64, "POLLIN"),
    (libc::POLLPRI as u64, "POLLPRI"),
    (libc::POLLOUT as u64, "POLLOUT"),
    (libc::POLLERR as u64, "POLLERR"),
    (libc::POLLHUP as u64, "POLLHUP"),
    (libc::POLLNVAL as u64, "POLLNVAL"),
    (libc::POLLRDHUP as u64, "POLLRDHUP"),
];
const EPOLL_BITS: &[(u64, &str)] = &[
    (libc::EPOLLIN as u64, "EPOLLIN"),
    (libc::EPOLLPRI as u64, "EPOLLPRI"),
    (libc::EPOLLOUT as u64, "EPOLLOUT"),
    (libc::EPOLLERR as u64, "EPOLLERR"),
    (libc::EPOLLHUP as u64, "EPOLLHUP"),
    (libc::EPOLLRDHUP as u64, "EPOLLRDHUP"),
    (libc::EPOLLET as u32 as u64, "EPOLLET"),
    (libc::EPOLLONESHOT as u64, "EPOLLONESHOT"),
];
const CLONE_BITS: &[(u64, &str)] = &[
    (libc::CLONE_VM as u64, "CLONE_VM"),
    (libc::CLONE_FS as u64, "CLONE_FS"),
    (libc::CLONE_FILES as u64, "CLONE_FILES"),
    (libc::CLONE_SIGHAND as u64, "CLONE_SIGHAND"),
    (libc::CLONE_PIDFD as u64, "CLONE_PIDFD"),
    (libc::CLONE_VFORK as u64, "CLONE_VFORK"),
    (libc::CLONE_THREAD as u64, "CLONE_THREAD"),
    (libc::CLONE_SYSVSEM as u64, "CLONE_SYSVSEM"),
    (libc::CLONE_SETTLS as u64, "CLONE_SETTLS"),
    (libc::CLONE_PARENT_SETTID as u64, "CLONE_PARENT_SETTID"),
    (libc::CLONE_CHILD_CLEARTID as u64, "CLONE_CHILD_CLEARTID"),
    (libc::CLONE_CHILD_SETTID as u64, "CLONE_CHILD_SETTID"),
];
const SA_BITS: &[(u64, &str)] = &[
    (libc::SA_NOCLDSTOP as u64, "SA_NOCLDSTOP"),
    (libc::SA_SIGINFO as u64, "SA_SIGINFO"),
    (libc::SA_ONSTACK as u64, "SA_ONSTACK"),
    (libc::SA_RESTART as u64, "SA_RESTART"),
    (libc::SA_NODEFER as u64, "SA_NODEFER"),
    (libc::SA_RESETHAND as u64, "SA_RESETHAND"),
    (0x0400_0000, "SA_RESTORER"),
];

pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map_or_else(|_| format!("SIG{sig}"), |s| s.as_str().to_string())
}

/// `-1 EAGAIN (Resource temporarily unavailable)` for a failed call's raw return value.
pub fn errno_text(ret: i64) -> Option<String> {
    if (-4095..0).contains(&ret) {
        let e = Errno::from_raw((-ret) as i32);
        Some(format!("-1 {e:?} ({})", e.desc()))
    } else {
        None
    }
}

/// A byte string the way strace prints one: printable ASCII as is, the rest escaped, cut at
/// `max` bytes with `...`.
pub fn escape(bytes: &[u8], max: usize) -> String {
    let mut s = String::from("\"");
    for &b in bytes.iter().take(max) {
        match b {
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    if bytes.len() > max {
        s.push_str("...");
    }
    s
}

/// A sockaddr in the tracee's memory, spelled out: `{AF_INET, 127.0.0.1:23333}`.
pub fn sockaddr(pid: Pid, addr: u64, len: u64) -> String {
    if addr == 0 {
        return "NULL".into();
    }
    let len = len.min(128) as usize;
    let Some(raw) = mem::read(pid, addr, len) else {
        return format!("{addr:#x}");
    };
    sockaddr_bytes(&raw)
}

pub fn sockaddr_bytes(raw: &[u8]) -> String {
    if raw.len() < 2 {
        return "{?}".into();
    }
    let family = u16::from_ne_bytes([raw[0], raw[1]]) as i32;
    match family {
        libc::AF_INET if raw.len() >= 8 => {
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            format!(
                "{{AF_INET, {}.{}.{}.{}:{port}}}",
                raw[4], raw[5], raw[6], raw[7]
            )
        }
        libc::AF_INET6 if raw.len() >= 24 => {
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&raw[8..24]);
            format!(
                "{{AF_INET6, [{}]:{port}}}",
                std::net::Ipv6Addr::from(octets)
            )
        }
        libc::AF_UNIX => {
            let path: Vec<u8> = raw[2..].iter().take_while(|&&b| b != 0).copied().collect();
            format!("{{AF_UNIX, {}}}", escape(&path, 108))
        }
        // sockaddr_ll: family, protocol (big-endian), ifindex, hatype, pkttype, halen, addr.
        libc::AF_PACKET if raw.len() >= 12 => {
            let proto = u16::from_be_bytes([raw[2], raw[3]]);
            let ifindex = i32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
            let pkttype = raw.get(10).copied().unwrap_or(0);
            let pkttype = one_of(
                u64::from(pkttype),
                &[
                    (0, "PACKET_HOST"),
                    (1, "PACKET_BROADCAST"),
                    (2, "PACKET_MULTICAST"),
                    (3, "PACKET_OTHERHOST"),
                    (4, "PACKET_OUTGOING"),
                ],
            );
            format!(
                "{{AF_PACKET, {}, ifindex {ifindex}, {pkttype}}}",
                ethertype(proto)
            )
        }
        other => format!("{{family {other}}}"),
    }
}

/// `htons(ETH_P_ALL)`, `htons(ETH_P_IP)`, ...: a packet socket's protocol, as strace shows it.
fn ethertype(value: u16) -> String {
    let name = match i32::from(value) {
        libc::ETH_P_ALL => "ETH_P_ALL",
        libc::ETH_P_IP => "ETH_P_IP",
        libc::ETH_P_IPV6 => "ETH_P_IPV6",
        libc::ETH_P_ARP => "ETH_P_ARP",
        _ => return format!("htons({value:#06x})"),
    };
    format!("htons({name})")
}

fn read_u32(pid: Pid, addr: u64) -> Option<u32> {
    let raw = mem::read(pid, addr, 4)?;
    Some(u32::from_ne_bytes(raw[..4].try_into().ok()?))
}

fn read_u64(pid: Pid, addr: u64) -> Option<u64> {
    let raw = mem::read(pid, addr, 8)?;
    Some(u64::from_ne_bytes(raw[..8].try_into().ok()?))
}

fn int_at(pid: Pid, addr: u64) -> String {
    if addr == 0 {
        return "NULL".into();
    }
    read_u32(pid, addr).map_or_else(|| format!("{addr:#x}"), |v| format!("[{}]", v as i32))
}

fn buffer(pid: Pid, addr: u64, len: u64) -> String {
    match mem::read(pid, addr, len.min(64) as usize) {
        Some(bytes) => {
            let mut s = escape(&bytes, 64);
            if len > 64 && !s.ends_with("...") {
                s.push_str("...");
            }
            s
        }
        None => format!("{addr:#x}"),
    }
}

fn pollfds(pid: Pid, addr: u64, n: u64, fds: &dyn FdView, revents: bool) -> String {
    let mut out = Vec::new();
    for i in 0..n.min(8) {
        let Some(raw) = mem::read(pid, addr + i * 8, 8) else {
            break;
        };
        let fd = i32::from_ne_bytes(raw[0..4].try_into().unwrap());
        let ev = i16::from_ne_bytes(raw[4..6].try_into().unwrap()) as u16 as u64;
        let rev = i16::from_ne_bytes(raw[6..8].try_into().unwrap()) as u16 as u64;
        if revents {
            if rev != 0 {
                out.push(format!(
                    "{{fd={}, revents={}}}",
                    fds.fd(fd),
                    flags(rev, POLL_BITS)
                ));
            }
        } else {
            out.push(format!(
                "{{fd={}, events={}}}",
                fds.fd(fd),
                flags(ev, POLL_BITS)
            ));
        }
    }
    if n > 8 {
        out.push("...".into());
    }
    format!("[{}]", out.join(", "))
}

fn fd_set(pid: Pid, addr: u64, nfds: u64, fds: &dyn FdView) -> String {
    if addr == 0 {
        return "NULL".into();
    }
    let bytes = nfds.div_ceil(8).min(128) as usize;
    let Some(raw) = mem::read(pid, addr, bytes) else {
        return format!("{addr:#x}");
    };
    let set: Vec<String> = (0..nfds as usize)
        .filter(|&i| i / 8 < raw.len() && raw[i / 8] & (1 << (i % 8)) != 0)
        .take(8)
        .map(|i| fds.fd(i as i32))
        .collect();
    format!("[{}]", set.join(" "))
}

fn epoll_events(pid: Pid, addr: u64, n: u64, fds: &dyn FdView) -> String {
    // struct epoll_event is packed on x86_64: u32 events, u64 data.
    let mut out = Vec::new();
    for i in 0..n.min(8) {
        let Some(raw) = mem::read(pid, addr + i * 12, 12) else {
            break;
        };
        let ev = u32::from_ne_bytes(raw[0..4].try_into().unwrap()) as u64;
        let data = u64::from_ne_bytes(raw[4..12].try_into().unwrap());
        let who = if data < 65536 {
            fds.fd(data as i32)
        } else {
            format!("{data:#x}")
        };
        out.push(format!("{{{}, data={who}}}", flags(ev, EPOLL_BITS)));
    }
    if n > 8 {
        out.push("...".into());
    }
    format!("[{}]", out.join(", "))
}

const LEVELS: &[(u64, &str)] = &[
    (libc::SOL_SOCKET as u64, "SOL_SOCKET"),
    (libc::SOL_TCP as u64, "SOL_TCP"),
    (libc::SOL_IP as u64, "SOL_IP"),
    (libc::SOL_IPV6 as u64, "SOL_IPV6"),
    (libc::SOL_PACKET as u64, "SOL_PACKET"),
];
/// SO_RCVTIMEO and SO_SNDTIMEO are 20 and 21 on x86_64, what the lessons' headers (and
/// libc's) call them; strace 6 says SO_RCVTIMEO_OLD, against the _NEW pair (66, 67) that
/// takes a 64-bit time on 32-bit machines. Same layout here.
const SOCKET_OPTS: &[(u64, &str)] = &[
    (libc::SO_REUSEADDR as u64, "SO_REUSEADDR"),
    (libc::SO_REUSEPORT as u64, "SO_REUSEPORT"),
    (libc::SO_ERROR as u64, "SO_ERROR"),
    (libc::SO_KEEPALIVE as u64, "SO_KEEPALIVE"),
    (libc::SO_LINGER as u64, "SO_LINGER"),
    (libc::SO_RCVBUF as u64, "SO_RCVBUF"),
    (libc::SO_SNDBUF as u64, "SO_SNDBUF"),
    (libc::SO_RCVLOWAT as u64, "SO_RCVLOWAT"),
    (libc::SO_RCVTIMEO as u64, "SO_RCVTIMEO"),
    (libc::SO_SNDTIMEO as u64, "SO_SNDTIMEO"),
    (66, "SO_RCVTIMEO_NEW"),
    (67, "SO_SNDTIMEO_NEW"),
    (libc::SO_TYPE as u64, "SO_TYPE"),
    (libc::SO_DOMAIN as u64, "SO_DOMAIN"),
    (libc::SO_ACCEPTCONN as u64, "SO_ACCEPTCONN"),
    (libc::SO_BROADCAST as u64, "SO_BROADCAST"),
    (libc::SO_BINDTODEVICE as u64, "SO_BINDTODEVICE"),
    (26, "SO_ATTACH_FILTER"),
];
/// Lesson 18's packet socket options.
const PACKET_OPTS: &[(u64, &str)] = &[
    (libc::PACKET_RX_RING as u64, "PACKET_RX_RING"),
    (libc::PACKET_STATISTICS as u64, "PACKET_STATISTICS"),
    (libc::PACKET_VERSION as u64, "PACKET_VERSION"),
];
const TCP_OPTS: &[(u64, &str)] = &[
    (libc::TCP_NODELAY as u64, "TCP_NODELAY"),
    (libc::TCP_MAXSEG as u64, "TCP_MAXSEG"),
    (libc::TCP_CORK as u64, "TCP_CORK"),
    (libc::TCP_KEEPIDLE as u64, "TCP_KEEPIDLE"),
    (libc::TCP_KEEPINTVL as u64, "TCP_KEEPINTVL"),
    (libc::TCP_KEEPCNT as u64, "TCP_KEEPCNT"),
    (libc::TCP_DEFER_ACCEPT as u64, "TCP_DEFER_ACCEPT"),
    (libc::TCP_INFO as u64, "TCP_INFO"),
    (libc::TCP_QUICKACK as u64, "TCP_QUICKACK"),
    (libc::TCP_CONGESTION as u64, "TCP_CONGESTION"),
    (libc::TCP_USER_TIMEOUT as u64, "TCP_USER_TIMEOUT"),
    (libc::TCP_FASTOPEN as u64, "TCP_FASTOPEN"),
];
const IP_OPTS: &[(u64, &str)] = &[
    (libc::IP_TOS as u64, "IP_TOS"),
    (libc::IP_TTL as u64, "IP_TTL"),
    (libc::IP_FREEBIND as u64, "IP_FREEBIND"),
    (libc::IP_TRANSPARENT as u64, "IP_TRANSPARENT"),
];
const IPV6_OPTS: &[(u64, &str)] = &[
    (libc::IPV6_V6ONLY as u64, "IPV6_V6ONLY"),
    (libc::IPV6_TCLASS as u64, "IPV6_TCLASS"),
];

/// A socket option's level and name, the way strace names them.
fn sockopt(level: u64, name: u64) -> (String, String) {
    let names = match level as i32 {
        libc::SOL_SOCKET => SOCKET_OPTS,
        libc::SOL_TCP => TCP_OPTS,
        libc::SOL_IP => IP_OPTS,
        libc::SOL_IPV6 => IPV6_OPTS,
        libc::SOL_PACKET => PACKET_OPTS,
        _ => &[],
    };
    (one_of(level, LEVELS), one_of(name, names))
}

/// A socket option's value in the tracee's memory: `[1]`, `{l_onoff=1, l_linger=0}`,
/// `{tv_sec=1, tv_usec=0}`, `"cubic"`, SO_ERROR's errno by name (`[ECONNREFUSED]`).
fn sockopt_value(pid: Pid, level: u64, name: u64, addr: u64, len: u64) -> String {
    if addr == 0 {
        return "NULL".into();
    }
    let (level, name) = (level as i32, name as i32);
    let raw = match mem::read(pid, addr, len.min(64) as usize) {
        Some(raw) if raw.len() == len.min(64) as usize => raw,
        _ => return format!("{addr:#x}"),
    };
    let int = |at: usize| i32::from_ne_bytes(raw[at..at + 4].try_into().unwrap());
    let long = |at: usize| i64::from_ne_bytes(raw[at..at + 8].try_into().unwrap());
    match (level, name, len) {
        (libc::SOL_SOCKET, libc::SO_LINGER, 8) => {
            format!("{{l_onoff={}, l_linger={}}}", int(0), int(4))
        }
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO | libc::SO_SNDTIMEO | 66 | 67, 16) => {
            format!("{{tv_sec={}, tv_usec={}}}", long(0), long(8))
        }
        (libc::SOL_SOCKET, libc::SO_ERROR, 4) if int(0) != 0 => {
            format!("[{:?}]", Errno::from_raw(int(0)))
        }
        // SO_ATTACH_FILTER (26): a sock_fprog, the program's length and where it is.
        (libc::SOL_SOCKET, 26, 16) => {
            let len = u16::from_ne_bytes([raw[0], raw[1]]);
            format!("{{len={len}, filter={:#x}}}", long(8))
        }
        (libc::SOL_TCP, libc::TCP_CONGESTION, _) | (libc::SOL_SOCKET, libc::SO_BINDTODEVICE, _) => {
            let text: Vec<u8> = raw.iter().take_while(|&&b| b != 0).copied().collect();
            escape(&text, 64)
        }
        (_, _, 4) => format!("[{}]", int(0)),
        _ => format!("{addr:#x}"),
    }
}

/// Linux's F_SETSIG/F_GETSIG (fcntl.h; the libc crate has no constant for them).
const F_SETSIG: i32 = 10;
const F_GETSIG: i32 = 11;

fn fcntl_cmd(cmd: u64) -> String {
    one_of(
        cmd,
        &[
            (libc::F_DUPFD as u64, "F_DUPFD"),
            (libc::F_GETFD as u64, "F_GETFD"),
            (libc::F_SETFD as u64, "F_SETFD"),
            (libc::F_GETFL as u64, "F_GETFL"),
            (libc::F_SETFL as u64, "F_SETFL"),
            (libc::F_SETOWN as u64, "F_SETOWN"),
            (libc::F_GETOWN as u64, "F_GETOWN"),
            (F_SETSIG as u64, "F_SETSIG"),
            (F_GETSIG as u64, "F_GETSIG"),
            (libc::F_DUPFD_CLOEXEC as u64, "F_DUPFD_CLOEXEC"),
            (libc::F_SETPIPE_SZ as u64, "F_SETPIPE_SZ"),
            (libc::F_GETPIPE_SZ as u64, "F_GETPIPE_SZ"),
        ],
    )
}

/// The call at its entry: `accept(3<TCP 127.0.0.1:23333 LISTEN>, NULL, NULL)`.
pub fn entry(pid: Pid, nr: i64, a: &[u64; 6], fds: &dyn FdView) -> String {
    let fd = |i: usize| fds.fd(a[i] as i32);
    let args: Vec<String> = match nr {
        libc::SYS_socket => {
            let ty = a[1] & !(SOCK_FLAGS.iter().map(|f| f.0).sum::<u64>());
            let mut t = one_of(
                ty,
                &[
                    (libc::SOCK_STREAM as u64, "SOCK_STREAM"),
                    (libc::SOCK_DGRAM as u64, "SOCK_DGRAM"),
                    (libc::SOCK_RAW as u64, "SOCK_RAW"),
                ],
            );
            if a[1] != ty {
                t = format!("{t}|{}", flags(a[1] & !ty, SOCK_FLAGS));
            }
            let proto = one_of(
                a[2],
                &[(0, "IPPROTO_IP"), (6, "IPPROTO_TCP"), (17, "IPPROTO_UDP")],
            );
            // A packet socket's protocol is an EtherType in network byte order.
            let proto = if a[0] == libc::AF_PACKET as u64 {
                ethertype(u16::from_be(a[2] as u16))
            } else {
                proto
            };
            vec![one_of(a[0], FAMILIES), t, proto]
        }
        libc::SYS_setsockopt => {
            let (lvl, opt) = sockopt(a[1], a[2]);
            let val = sockopt_value(pid, a[1], a[2], a[3], a[4]);
            vec![fd(0), lvl, opt, val, a[4].to_string()]
        }
        // The value is the kernel's answer: shown with the result.
        libc::SYS_getsockopt => {
            let (lvl, opt) = sockopt(a[1], a[2]);
            vec![fd(0), lvl, opt, ptr(a[3]), int_at(pid, a[4])]
        }
        libc::SYS_bind | libc::SYS_connect => {
            vec![fd(0), sockaddr(pid, a[1], a[2]), a[2].to_string()]
        }
        libc::SYS_listen => vec![fd(0), a[1].to_string()],
        libc::SYS_accept => vec![fd(0), ptr(a[1]), ptr(a[2])],
        libc::SYS_accept4 => vec![fd(0), ptr(a[1]), ptr(a[2]), flags(a[3], SOCK_FLAGS)],
        libc::SYS_getsockname | libc::SYS_getpeername => vec![fd(0), ptr(a[1]), int_at(pid, a[2])],
        libc::SYS_shutdown => vec![
            fd(0),
            one_of(a[1], &[(0, "SHUT_RD"), (1, "SHUT_WR"), (2, "SHUT_RDWR")]),
        ],
        libc::SYS_read | libc::SYS_recvfrom => {
            let mut v = vec![fd(0), ptr(a[1]), a[2].to_string()];
            if nr == libc::SYS_recvfrom {
                v.extend([format!("{:#x}", a[3]), ptr(a[4]), ptr(a[5])]);
            }
            v
        }
        libc::SYS_write | libc::SYS_sendto => {
            let mut v = vec![fd(0), buffer(pid, a[1], a[2]), a[2].to_string()];
            if nr == libc::SYS_sendto {
                v.extend([
                    format!("{:#x}", a[3]),
                    sockaddr(pid, a[4], a[5]),
                    a[5].to_string(),
                ]);
            }
            v
        }
        libc::SYS_close => vec![fd(0)],
        libc::SYS_fcntl => {
            let arg = match a[1] as i32 {
                libc::F_SETFL => flags(a[2], O_FLAGS),
                libc::F_SETFD => one_of(a[2], &[(1, "FD_CLOEXEC")]),
                F_SETSIG => signal_name(a[2] as i32),
                libc::F_GETFL | libc::F_GETFD | libc::F_GETOWN | F_GETSIG => String::new(),
                _ => a[2].to_string(),
            };
            let mut v = vec![fd(0), fcntl_cmd(a[1])];
            if !arg.is_empty() {
                v.push(arg);
            }
            v
        }
        libc::SYS_poll | libc::SYS_ppoll => {
            let timeout = if nr == libc::SYS_poll {
                (a[2] as i32).to_string()
            } else if a[2] == 0 {
                "NULL".into()
            } else {
                timespec(pid, a[2])
            };
            vec![
                pollfds(pid, a[0], a[1], fds, false),
                a[1].to_string(),
                timeout,
            ]
        }
        libc::SYS_select | libc::SYS_pselect6 => vec![
            a[0].to_string(),
            fd_set(pid, a[1], a[0], fds),
            fd_set(pid, a[2], a[0], fds),
            fd_set(pid, a[3], a[0], fds),
            if a[4] == 0 {
                "NULL".into()
            } else {
                format!("{:#x}", a[4])
            },
        ],
        libc::SYS_epoll_create1 => vec![flags(
            a[0],
            &[(libc::EPOLL_CLOEXEC as u64, "EPOLL_CLOEXEC")],
        )],
        libc::SYS_epoll_ctl => {
            let op = one_of(
                a[1],
                &[
                    (libc::EPOLL_CTL_ADD as u64, "EPOLL_CTL_ADD"),
                    (libc::EPOLL_CTL_MOD as u64, "EPOLL_CTL_MOD"),
                    (libc::EPOLL_CTL_DEL as u64, "EPOLL_CTL_DEL"),
                ],
            );
            let ev = if a[3] == 0 {
                "NULL".into()
            } else {
                epoll_events(pid, a[3], 1, fds)
            };
            vec![fd(0), op, fd(2), ev]
        }
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait => {
            vec![
                fd(0),
                ptr(a[1]),
                a[2].to_string(),
                (a[3] as i32).to_string(),
            ]
        }
        libc::SYS_clone => vec![format!("flags={}", clone_flags(a[0]))],
        libc::SYS_clone3 => {
            let f = read_u64(pid, a[0]).map_or_else(|| format!("{:#x}", a[0]), clone_flags);
            vec![format!("{{flags={f}, ...}}"), a[1].to_string()]
        }
        libc::SYS_wait4 => vec![
            (a[0] as i32).to_string(),
            ptr(a[1]),
            flags(
                a[2],
                &[(libc::WNOHANG as u64, "WNOHANG"), (0x4000_0000, "__WALL")],
            ),
            ptr(a[3]),
        ],
        libc::SYS_kill => vec![(a[0] as i32).to_string(), signal_name(a[1] as i32)],
        libc::SYS_rt_sigaction => {
            let act = if a[1] == 0 {
                "NULL".into()
            } else {
                match (read_u64(pid, a[1]), read_u64(pid, a[1] + 8)) {
                    (Some(handler), Some(fl)) => {
                        let h = match handler {
                            0 => "SIG_DFL".into(),
                            1 => "SIG_IGN".into(),
                            h => format!("{h:#x}"),
                        };
                        format!("{{sa_handler={h}, sa_flags={}}}", flags(fl, SA_BITS))
                    }
                    _ => format!("{:#x}", a[1]),
                }
            };
            vec![signal_name(a[0] as i32), act, ptr(a[2]), a[3].to_string()]
        }
        libc::SYS_io_uring_setup => vec![a[0].to_string(), ptr(a[1])],
        libc::SYS_io_uring_enter => vec![
            fd(0),
            a[1].to_string(),
            a[2].to_string(),
            flags(
                a[3],
                &[(1, "IORING_ENTER_GETEVENTS"), (2, "IORING_ENTER_SQ_WAKEUP")],
            ),
        ],
        libc::SYS_pipe2 => vec![ptr(a[0]), flags(a[1], O_FLAGS)],
        // The message header: its data and control messages (SCM_RIGHTS: which fds go).
        libc::SYS_sendmsg => vec![fd(0), msghdr(pid, a[1], None, fds), msg_flags(a[2])],
        libc::SYS_recvmsg => vec![fd(0), ptr(a[1]), msg_flags(a[2])],
        // The program a child turns into: the path, then argv's pointer and envp's.
        libc::SYS_execve => {
            let path = mem::read(pid, a[0], 256).unwrap_or_default();
            let path = &path[..path.iter().position(|&b| b == 0).unwrap_or(path.len())];
            vec![escape(path, 256), ptr(a[1]), ptr(a[2])]
        }
        libc::SYS_socketpair => vec![
            one_of(a[0], FAMILIES),
            pair_type(a[1]),
            a[2].to_string(),
            ptr(a[3]),
        ],
        libc::SYS_splice => vec![
            fd(0),
            ptr(a[1]),
            fd(2),
            ptr(a[3]),
            a[4].to_string(),
            flags(
                a[5],
                &[
                    (1, "SPLICE_F_MOVE"),
                    (2, "SPLICE_F_NONBLOCK"),
                    (4, "SPLICE_F_MORE"),
                ],
            ),
        ],
        libc::SYS_exit_group | libc::SYS_exit => vec![(a[0] as i32).to_string()],
        // A mapping: a packet socket's ring (MAP_SHARED of its fd) or plain memory.
        libc::SYS_mmap => {
            let anon = a[3] & libc::MAP_ANONYMOUS as u64 != 0;
            vec![
                ptr(a[0]),
                a[1].to_string(),
                flags(a[2], PROT_BITS),
                flags(a[3], MAP_BITS),
                if anon {
                    (a[4] as i32).to_string()
                } else {
                    fd(4)
                },
                a[5].to_string(),
            ]
        }
        _ => a.iter().map(|v| format!("{v:#x}")).collect(),
    };
    format!("{}({})", name(nr), args.join(", "))
}

fn ptr(v: u64) -> String {
    if v == 0 {
        "NULL".into()
    } else {
        format!("{v:#x}")
    }
}

fn clone_flags(v: u64) -> String {
    let sig = v & 0xff;
    let rest = flags(v & !0xff, CLONE_BITS);
    match (sig, v & !0xff) {
        (0, _) => rest,
        (s, 0) => signal_name(s as i32),
        (s, _) => format!("{rest}|{}", signal_name(s as i32)),
    }
}

fn timespec(pid: Pid, addr: u64) -> String {
    match (read_u64(pid, addr), read_u64(pid, addr + 8)) {
        (Some(s), Some(ns)) => format!("{{tv_sec={s}, tv_nsec={ns}}}"),
        _ => format!("{addr:#x}"),
    }
}

/// The result at the call's exit: `4<TCP ...>`, `23 "Hello there!..."`, `-1 EAGAIN (...)`.
pub fn exit(pid: Pid, nr: i64, a: &[u64; 6], ret: i64, fds: &dyn FdView) -> String {
    if let Some(err) = errno_text(ret) {
        return err;
    }
    match nr {
        n if returns_fd(n) => fds.fd(ret as i32),
        libc::SYS_read | libc::SYS_recvfrom => {
            let bytes = mem::read(pid, a[1], (ret as usize).min(64)).unwrap_or_default();
            let mut s = format!("{ret} {}", escape(&bytes, 64));
            if ret > 64 && !s.ends_with("...") {
                s.push_str("...");
            }
            if ret == 0 {
                s = if fds.fd(a[0] as i32).contains("<TCP") {
                    "0 (end of file: the peer closed its side)".into()
                } else {
                    "0 (end of file)".into()
                };
            }
            s
        }
        libc::SYS_getsockname | libc::SYS_getpeername => {
            let len = read_u32(pid, a[2]).unwrap_or(0) as u64;
            format!("0 ({})", sockaddr(pid, a[1], len))
        }
        libc::SYS_getsockopt => {
            let len = read_u32(pid, a[4]).unwrap_or(0) as u64;
            format!("0 ({})", sockopt_value(pid, a[1], a[2], a[3], len))
        }
        libc::SYS_poll | libc::SYS_ppoll => {
            format!("{ret} {}", pollfds(pid, a[0], a[1], fds, true))
        }
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait => {
            format!("{ret} {}", epoll_events(pid, a[1], ret as u64, fds))
        }
        libc::SYS_select | libc::SYS_pselect6 => {
            format!("{ret} (in {})", fd_set(pid, a[1], a[0], fds))
        }
        libc::SYS_recvmsg => format!("{ret} {}", msghdr(pid, a[1], Some(ret as u64), fds)),
        libc::SYS_socketpair => match (read_u32(pid, a[3]), read_u32(pid, a[3] + 4)) {
            (Some(x), Some(y)) => format!("0 [{}, {}]", fds.fd(x as i32), fds.fd(y as i32)),
            _ => "0".into(),
        },
        libc::SYS_pipe2 => match (read_u32(pid, a[0]), read_u32(pid, a[0] + 4)) {
            (Some(r), Some(w)) => format!("0 [{}, {}]", fds.fd(r as i32), fds.fd(w as i32)),
            _ => "0".into(),
        },
        libc::SYS_wait4 => {
            let status = if a[1] != 0 { read_u32(pid, a[1]) } else { None };
            match status {
                Some(st) if ret > 0 => format!("{ret} (status {})", wait_status(st as i32)),
                _ => ret.to_string(),
            }
        }
        libc::SYS_fcntl if a[1] as i32 == libc::F_GETFL => {
            format!("{ret:#x} ({})", flags(ret as u64, O_FLAGS))
        }
        libc::SYS_clone | libc::SYS_clone3 | libc::SYS_fork | libc::SYS_vfork => {
            format!("{ret} (the child's id)")
        }
        libc::SYS_mmap => format!("{ret:#x}"),
        _ => ret.to_string(),
    }
}

// -- sendmsg and recvmsg: the message header, and the fds an SCM_RIGHTS message carries. --

/// `{data "L", SCM_RIGHTS [8<TCP 127.0.0.1:23333 LISTEN>]}`: a struct msghdr's first iovec
/// (at most `data_len` bytes of it: recvmsg's result) and its control messages, each fd as
/// the kernel view names it (the sender's fds at sendmsg, the receiver's new ones at recvmsg).
fn msghdr(pid: Pid, addr: u64, data_len: Option<u64>, fds: &dyn FdView) -> String {
    // struct msghdr (x86_64): name 0, namelen 8, iov 16, iovlen 24, control 32, controllen 40.
    let field = |at: u64| read_u64(pid, addr + at);
    let (Some(iov), Some(iovlen), Some(control), Some(controllen)) =
        (field(16), field(24), field(32), field(40))
    else {
        return ptr(addr);
    };
    let mut parts = Vec::new();
    if iovlen > 0 {
        if let (Some(base), Some(len)) = (read_u64(pid, iov), read_u64(pid, iov + 8)) {
            let len = data_len.map_or(len, |n| n.min(len));
            parts.push(format!("data {}", buffer(pid, base, len)));
        }
    }
    let raw = mem::read(pid, control, controllen.min(4096) as usize).unwrap_or_default();
    parts.extend(cmsgs(&raw, fds));
    format!("{{{}}}", parts.join(", "))
}

/// The control messages in `raw` (struct cmsghdr: len 0, level 8, type 12, data from 16,
/// each padded to 8 bytes): SCM_RIGHTS with its fds, SCM_CREDENTIALS, or level/type.
fn cmsgs(raw: &[u8], fds: &dyn FdView) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= raw.len() {
        let len = u64::from_ne_bytes(raw[at..at + 8].try_into().unwrap()) as usize;
        let level = i32::from_ne_bytes(raw[at + 8..at + 12].try_into().unwrap());
        let kind = i32::from_ne_bytes(raw[at + 12..at + 16].try_into().unwrap());
        if len < 16 || at + len > raw.len() {
            break;
        }
        let data = &raw[at + 16..at + len];
        out.push(match (level, kind) {
            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                let sent: Vec<String> = data
                    .chunks_exact(4)
                    .map(|b| fds.fd(i32::from_ne_bytes(b.try_into().unwrap())))
                    .collect();
                format!("SCM_RIGHTS [{}]", sent.join(", "))
            }
            (libc::SOL_SOCKET, libc::SCM_CREDENTIALS) => "SCM_CREDENTIALS".to_string(),
            _ => format!("cmsg level {level} type {kind}"),
        });
        at += (len + 7) & !7;
    }
    out
}

/// socketpair's type: SOCK_STREAM (or DGRAM, SEQPACKET) and its flags.
fn pair_type(v: u64) -> String {
    let extra: u64 = SOCK_FLAGS.iter().map(|f| f.0).sum();
    let kinds = [
        (libc::SOCK_STREAM as u64, "SOCK_STREAM"),
        (libc::SOCK_DGRAM as u64, "SOCK_DGRAM"),
        (libc::SOCK_SEQPACKET as u64, "SOCK_SEQPACKET"),
    ];
    let kind = one_of(v & !extra, &kinds);
    match v & extra {
        0 => kind,
        f => format!("{kind}|{}", flags(f, SOCK_FLAGS)),
    }
}

fn msg_flags(v: u64) -> String {
    if v == 0 {
        return "0".into();
    }
    flags(
        v,
        &[
            (libc::MSG_DONTWAIT as u64, "MSG_DONTWAIT"),
            (libc::MSG_NOSIGNAL as u64, "MSG_NOSIGNAL"),
            (libc::MSG_CMSG_CLOEXEC as u64, "MSG_CMSG_CLOEXEC"),
            (libc::MSG_PEEK as u64, "MSG_PEEK"),
            (libc::MSG_WAITALL as u64, "MSG_WAITALL"),
        ],
    )
}

pub fn wait_status(st: i32) -> String {
    if libc::WIFEXITED(st) {
        format!("exited {}", libc::WEXITSTATUS(st))
    } else if libc::WIFSIGNALED(st) {
        format!("killed by {}", signal_name(libc::WTERMSIG(st)))
    } else {
        format!("{st:#x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoFds;
    impl FdView for NoFds {
        fn fd(&self, fd: i32) -> String {
            fd.to_string()
        }
    }

    #[test]
    fn a_call_it_cannot_decode_is_shown_raw() {
        let me = nix::unistd::getpid();
        let text = entry(me, 999, &[1, 0x20, 0, 0, 0, 7], &NoFds);
        assert_eq!(text, "syscall_999(0x1, 0x20, 0x0, 0x0, 0x0, 0x7)");
        assert_eq!(exit(me, 999, &[0; 6], -11, &NoFds), "-1 EAGAIN (Try again)");
    }

    #[test]
    fn flags_and_sockaddrs_by_name() {
        let me = nix::unistd::getpid();
        let ty = (libc::SOCK_STREAM | libc::SOCK_NONBLOCK) as u64;
        assert_eq!(
            entry(
                me,
                libc::SYS_socket,
                &[libc::AF_INET6 as u64, ty, 0, 0, 0, 0],
                &NoFds
            ),
            "socket(AF_INET6, SOCK_STREAM|SOCK_NONBLOCK, IPPROTO_IP)"
        );
        let mut sin = [0u8; 16];
        sin[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        sin[2..4].copy_from_slice(&23333u16.to_be_bytes());
        sin[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(sockaddr_bytes(&sin), "{AF_INET, 127.0.0.1:23333}");
        assert_eq!(escape(b"hi\n\x01", 64), "\"hi\\n\\x01\"");
    }

    #[test]
    fn sendmsg_and_recvmsg_show_the_fds_scm_rights_carries() {
        let me = nix::unistd::getpid();
        let data = *b"L";
        let iov = [data.as_ptr() as u64, 1u64];
        // One cmsghdr: len 20 (16 + one int), SOL_SOCKET, SCM_RIGHTS, fd 8; padded to 24.
        let mut control = [0u8; 24];
        control[..8].copy_from_slice(&20u64.to_ne_bytes());
        control[8..12].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        control[12..16].copy_from_slice(&libc::SCM_RIGHTS.to_ne_bytes());
        control[16..20].copy_from_slice(&8i32.to_ne_bytes());
        let hdr: [u64; 7] = [
            0,
            0,
            iov.as_ptr() as u64,
            1,
            control.as_ptr() as u64,
            control.len() as u64,
            0,
        ];
        let at = hdr.as_ptr() as u64;
        assert_eq!(
            entry(me, libc::SYS_sendmsg, &[5, at, 0, 0, 0, 0], &NoFds),
            "sendmsg(5, {data \"L\", SCM_RIGHTS [8]}, 0)"
        );
        let flags = libc::MSG_CMSG_CLOEXEC as u64;
        assert_eq!(
            entry(me, libc::SYS_recvmsg, &[6, at, flags, 0, 0, 0], &NoFds),
            format!("recvmsg(6, {at:#x}, MSG_CMSG_CLOEXEC)")
        );
        assert_eq!(
            exit(me, libc::SYS_recvmsg, &[6, at, flags, 0, 0, 0], 1, &NoFds),
            "1 {data \"L\", SCM_RIGHTS [8]}"
        );
    }

    #[test]
    fn a_ring_mapped_from_a_packet_socket() {
        let me = nix::unistd::getpid();
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let shared = libc::MAP_SHARED as u64;
        assert_eq!(
            entry(
                me,
                libc::SYS_mmap,
                &[0, 2097152, prot, shared, 3, 0],
                &NoFds
            ),
            "mmap(NULL, 2097152, PROT_READ|PROT_WRITE, MAP_SHARED, 3, 0)"
        );
        let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        assert_eq!(
            entry(
                me,
                libc::SYS_mmap,
                &[0, 4096, prot, anon, u64::MAX, 0],
                &NoFds
            ),
            "mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)"
        );
        assert_eq!(
            exit(me, libc::SYS_mmap, &[0; 6], 0x7f00_0000_0000, &NoFds),
            "0x7f0000000000"
        );
        assert_eq!(
            exit(me, libc::SYS_mmap, &[0; 6], -12, &NoFds),
            "-1 ENOMEM (Out of memory)"
        );
    }

    #[test]
    fn a_packet_socket_its_filter_and_its_sockaddr_ll() {
        let me = nix::unistd::getpid();
        let all = u64::from((libc::ETH_P_ALL as u16).to_be());
        assert_eq!(
            entry(
                me,
                libc::SYS_socket,
                &[libc::AF_PACKET as u64, libc::SOCK_RAW as u64, all, 0, 0, 0],
                &NoFds
            ),
            "socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL))"
        );
        let mut prog = [0u8; 16];
        prog[..2].copy_from_slice(&24u16.to_ne_bytes());
        prog[8..].copy_from_slice(&0x1000u64.to_ne_bytes());
        assert_eq!(
            entry(
                me,
                libc::SYS_setsockopt,
                &[3, libc::SOL_SOCKET as u64, 26, prog.as_ptr() as u64, 16, 0],
                &NoFds
            ),
            "setsockopt(3, SOL_SOCKET, SO_ATTACH_FILTER, {len=24, filter=0x1000}, 16)"
        );
        let mut ll = [0u8; 20];
        ll[..2].copy_from_slice(&(libc::AF_PACKET as u16).to_ne_bytes());
        ll[2..4].copy_from_slice(&(libc::ETH_P_IP as u16).to_be_bytes());
        ll[4..8].copy_from_slice(&1i32.to_ne_bytes());
        ll[10] = libc::PACKET_OUTGOING;
        assert_eq!(
            sockaddr_bytes(&ll),
            "{AF_PACKET, htons(ETH_P_IP), ifindex 1, PACKET_OUTGOING}"
        );
    }

    #[test]
    fn socket_options_by_name_with_their_values() {
        let me = nix::unistd::getpid();
        let at = |v: &[u8]| v.as_ptr() as u64;
        let sol = libc::SOL_SOCKET as u64;
        let one = 1i32.to_ne_bytes();
        let set = |level: u64, name: i32, val: &[u8]| {
            entry(
                me,
                libc::SYS_setsockopt,
                &[3, level, name as u64, at(val), val.len() as u64, 0],
                &NoFds,
            )
        };
        assert_eq!(
            set(sol, libc::SO_REUSEADDR, &one),
            "setsockopt(3, SOL_SOCKET, SO_REUSEADDR, [1], 4)"
        );
        let mut tv = [0u8; 16];
        tv[..8].copy_from_slice(&1i64.to_ne_bytes());
        tv[8..].copy_from_slice(&250_000i64.to_ne_bytes());
        assert_eq!(
            set(sol, libc::SO_RCVTIMEO, &tv),
            "setsockopt(3, SOL_SOCKET, SO_RCVTIMEO, {tv_sec=1, tv_usec=250000}, 16)"
        );
        assert_eq!(
            set(sol, libc::SO_SNDTIMEO, &tv),
            "setsockopt(3, SOL_SOCKET, SO_SNDTIMEO, {tv_sec=1, tv_usec=250000}, 16)"
        );
        let mut linger = [0u8; 8];
        linger[..4].copy_from_slice(&1i32.to_ne_bytes());
        assert_eq!(
            set(sol, libc::SO_LINGER, &linger),
            "setsockopt(3, SOL_SOCKET, SO_LINGER, {l_onoff=1, l_linger=0}, 8)"
        );
        assert_eq!(
            set(sol, libc::SO_KEEPALIVE, &one),
            "setsockopt(3, SOL_SOCKET, SO_KEEPALIVE, [1], 4)"
        );
        let tcp = libc::SOL_TCP as u64;
        assert_eq!(
            set(tcp, libc::TCP_NODELAY, &one),
            "setsockopt(3, SOL_TCP, TCP_NODELAY, [1], 4)"
        );
        assert_eq!(
            set(tcp, libc::TCP_DEFER_ACCEPT, &5i32.to_ne_bytes()),
            "setsockopt(3, SOL_TCP, TCP_DEFER_ACCEPT, [5], 4)"
        );
        assert_eq!(
            set(tcp, libc::TCP_CONGESTION, b"cubic"),
            "setsockopt(3, SOL_TCP, TCP_CONGESTION, \"cubic\", 5)"
        );
        assert_eq!(
            set(
                libc::SOL_IPV6 as u64,
                libc::IPV6_V6ONLY,
                &0i32.to_ne_bytes()
            ),
            "setsockopt(3, SOL_IPV6, IPV6_V6ONLY, [0], 4)"
        );
        // getsockopt: the value is the kernel's answer, read at the exit.
        let err = libc::ECONNREFUSED.to_ne_bytes();
        let len = 4u32.to_ne_bytes();
        let args = [3, sol, libc::SO_ERROR as u64, at(&err), at(&len), 0];
        assert_eq!(
            entry(me, libc::SYS_getsockopt, &args, &NoFds),
            format!("getsockopt(3, SOL_SOCKET, SO_ERROR, {:#x}, [4])", at(&err))
        );
        assert_eq!(
            exit(me, libc::SYS_getsockopt, &args, 0, &NoFds),
            "0 ([ECONNREFUSED])"
        );
        let none = 0i32.to_ne_bytes();
        let args = [3, sol, libc::SO_ERROR as u64, at(&none), at(&len), 0];
        assert_eq!(exit(me, libc::SYS_getsockopt, &args, 0, &NoFds), "0 ([0])");
    }
}
