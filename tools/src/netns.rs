//! A private network namespace for a benchmark (`bench-socks`, cubic unless `--congestion
//! NAME`): its own loopback and its own default TCP congestion control, so a run can be taken
//! under a stated congestion control without touching the host's network settings. Where
//! the namespace may not select it (not in `net.ipv4.tcp_allowed_congestion_control`), or no
//! namespace can be made, [`Fallback`] says so and the run goes on under the host's default.
//!
//! Why it matters on loopback: a congestion control that paces (BBR does, through TCP's own
//! hrtimer when no fq qdisc is attached, and loopback has none) arms a timer for about every
//! packet a socket sends. In a virtual machine each timer costs an exit to the hypervisor,
//! and the work it triggers lands on whatever process is running then. That cost is the
//! same for every relay and every byte, so it hides what a relay itself does per byte.

use std::fs;

use nix::sched::{unshare, CloneFlags};

const DEFAULT_CC: &str = "/proc/sys/net/ipv4/tcp_congestion_control";
const ALLOWED_CC: &str = "net.ipv4.tcp_allowed_congestion_control";
const AVAILABLE_CC: &str = "net.ipv4.tcp_available_congestion_control";

/// Why a run goes on under the host's default congestion control: a line for the operator.
#[derive(Debug)]
pub enum Fallback {
    /// No network namespace could be made: the run is on the host's own loopback.
    NoNamespace(String),
    /// In a private namespace, but the congestion control asked for could not be selected.
    Congestion(String),
}

/// A sysctl's value, read from /proc/sys ("?" if unreadable).
fn sysctl(name: &str) -> String {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    fs::read_to_string(path).map_or_else(|_| "?".into(), |s| s.trim().to_string())
}

/// This network namespace's default TCP congestion control (`net.ipv4.tcp_congestion_control`).
pub fn congestion_control() -> String {
    fs::read_to_string(DEFAULT_CC)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The congestion control a new TCP socket here gets: getsockopt(TCP_CONGESTION) on one.
pub fn socket_congestion_control() -> Result<String, String> {
    // SAFETY: socket(2), getsockopt(2) into a buffer of the length passed, close(2) of the
    // socket made here.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut name = [0u8; 16];
        let mut len = name.len() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_mut_ptr().cast(),
            &mut len,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(format!("getsockopt(TCP_CONGESTION): {err}"));
        }
        let name = &name[..(len as usize).min(name.len())];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        Ok(String::from_utf8_lossy(&name[..end]).into_owned())
    }
}

/// Moves this process into a new network namespace with loopback up and `congestion` as TCP's
/// default congestion control; everything it starts afterwards runs there too. Call it
/// before any thread is started: without CAP_SYS_ADMIN (a user other than root, or root in a
/// container) it needs a new user namespace as well (our uid mapped to root inside), which
/// unshare(2) refuses to a threaded process.
/// It never changes the host's settings: when `congestion` cannot be had, the [`Fallback`]
/// names the sysctl or module and the command that would allow it, for the operator to run.
pub fn enter_private(congestion: &str) -> Result<(), Fallback> {
    // SAFETY: geteuid(2) and getegid(2) only read this process's ids.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let plain = sockets_by_hand::sandbox::has_cap_sys_admin();
    let flags = if plain {
        CloneFlags::CLONE_NEWNET
    } else {
        CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET
    };
    let no_namespace = |why: String| Fallback::NoNamespace(why);
    unshare(flags).map_err(|e| no_namespace(format!("unshare(CLONE_NEWNET): {e}")))?;
    if !plain {
        let write = |file: &str, text: String| {
            fs::write(format!("/proc/self/{file}"), text)
                .map_err(|e| no_namespace(format!("write /proc/self/{file}: {e}")))
        };
        write("setgroups", "deny".into())?;
        write("uid_map", format!("0 {uid} 1"))?;
        write("gid_map", format!("0 {gid} 1"))?;
    }
    loopback_up().map_err(no_namespace)?;
    let host = congestion_control();
    let refused = |why: String| {
        Fallback::Congestion(format!("{why}; running under this host's default, {host}"))
    };
    match fs::write(DEFAULT_CC, congestion).map_err(|e| e.raw_os_error()) {
        Ok(()) => {}
        // Only the host's own namespace may choose one that is not allowed (net/ipv4/tcp_cong.c).
        Err(Some(libc::EPERM)) => {
            let allowed = sysctl(ALLOWED_CC);
            return Err(refused(format!(
                "{congestion} is not in {ALLOWED_CC} ({allowed}), so a network namespace may \
                 not select it (EPERM); to allow it: sudo sysctl -w {ALLOWED_CC}=\"{allowed} \
                 {congestion}\""
            )));
        }
        Err(Some(libc::ENOENT)) => {
            return Err(refused(format!(
                "this kernel has no congestion control {congestion} ({AVAILABLE_CC}: {}); \
                 to load it: sudo modprobe tcp_{congestion}",
                sysctl(AVAILABLE_CC)
            )));
        }
        Err(errno) => {
            let e = std::io::Error::from_raw_os_error(errno.unwrap_or(libc::EIO));
            return Err(refused(format!(
                "set net.ipv4.tcp_congestion_control to {congestion}: {e}"
            )));
        }
    }
    match socket_congestion_control().map_err(refused)? {
        now if now == congestion => Ok(()),
        now => Err(refused(format!(
            "asked for congestion control {congestion}, a new socket has {now}"
        ))),
    }
}

/// A new network namespace's loopback starts down: ioctl(SIOCGIFFLAGS), then
/// ioctl(SIOCSIFFLAGS) with IFF_UP, through any socket.
fn loopback_up() -> Result<(), String> {
    // SAFETY: plain system calls on a socket we own and close; `ifr` is a zeroed ifreq whose
    // name is "lo" with its NUL, and the kernel reads and writes only that struct.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut result = Ok(());
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            result = Err(format!(
                "ioctl(SIOCGIFFLAGS, lo): {}",
                std::io::Error::last_os_error()
            ));
        } else {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) < 0 {
                result = Err(format!(
                    "ioctl(SIOCSIFFLAGS, lo up): {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        libc::close(fd);
        result
    }
}
