// Generated from lessons/17-restart/handover.rs by exercises/17/exercise.txt: write its todo!()s.
//! Lesson 17's Unix domain socket calls, in the order a restart makes them: the socket the
//! two processes talk over (socketpair, or socket/bind/listen/connect on a path), the peer's
//! credentials (SO_PEERCRED), the listener sent and received as SCM_RIGHTS (sendmsg,
//! recvmsg), the check of what came (SO_ACCEPTCONN), and systemd's fd 3 (LISTEN_FDS).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::socket::{
    accept4, bind, connect, getsockopt, listen, recvmsg, sendmsg, socket, socketpair, sockopt,
    AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr,
};
use nix::sys::stat::{umask, Mode};
use nix::unistd::unlink;
use sockets_by_hand::errors::describe;

/// The environment variable that tells a successor which fd is its end of the socketpair.
pub const LINK_FD: &str = "HANDOVER_FD";

/// socketpair(2): two connected AF_UNIX stream sockets, ours and the successor's. Both carry
/// FD_CLOEXEC; the child clears it on its end only, between fork and execve.
pub fn pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

/// sendmsg(2): one byte of data (a message with no data carries no control part) and the
/// listener as an SCM_RIGHTS control message. The kernel installs a new fd in the receiver
/// that refers to the same open socket: the same accept queue, nothing reset, nothing lost.
pub fn send_listener(link: &OwnedFd, listener: RawFd) -> nix::Result<usize> {
    todo!("sendmsg(2) on link: one byte of data (IoSlice of b\"L\") and a ControlMessage::ScmRights with the listener's fd; return its result (bytes sent); man 3 cmsg, man 7 unix")
}

/// recvmsg(2) with MSG_CMSG_CLOEXEC (the fd arrives with FD_CLOEXEC set, so that it never
/// leaks into a program this one runs), then the listener out of the SCM_RIGHTS message.
pub fn recv_listener(link: &OwnedFd) -> Result<OwnedFd, String> {
    let (bytes, fds): (usize, Vec<OwnedFd>) = todo!("recvmsg(2) on link into a one-byte buffer with room for one fd (nix::cmsg_space!), MSG_CMSG_CLOEXEC; a failure is Err(describe(\"recvmsg\", errno)); the bytes received, and every fd of its ControlMessageOwned::ScmRights messages as an OwnedFd; man 7 unix");
    if bytes == 0 {
        return Err("recvmsg: the predecessor closed the socket without sending".into());
    }
    let mut fds = fds.into_iter();
    fds.next()
        .ok_or_else(|| "recvmsg: a message without SCM_RIGHTS (no fd came)".into())
}

/// getsockopt(SO_ACCEPTCONN): is what came a listening socket? (An fd is just a number; the
/// other side could have sent a pipe, a file, or a socket that never called listen.)
pub fn check_listening(fd: &OwnedFd, from: &str) -> Result<(), String> {
    match getsockopt(fd, sockopt::AcceptConn) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("{from}: fd {} is not listening", fd.as_raw_fd())),
        Err(errno) => Err(describe(
            &format!("getsockopt(SO_ACCEPTCONN) on {from}"),
            errno,
        )),
    }
}

/// The handover by path: socket(AF_UNIX), bind to `path` with mode 0600 (umask 0177 around
/// the bind, so the file is never open to others, not even for a moment), listen. The path
/// must lie in a directory only this user can write (else another user could replace it).
pub fn listen_path(path: &Path) -> Result<OwnedFd, String> {
    check_directory(path)?;
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let sock = socket(AddressFamily::Unix, SockType::Stream, flags, None)
        .map_err(|errno| describe("socket(AF_UNIX)", errno))?;
    let addr = UnixAddr::new(path).map_err(|errno| describe("socket path", errno))?;
    // A predecessor's file (or a stale one) is replaced; a process bound to it keeps its socket.
    match unlink(path) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(errno) => return Err(describe("unlink", errno)),
    }
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = bind(sock.as_raw_fd(), &addr);
    umask(old);
    bound.map_err(|errno| describe("bind(AF_UNIX)", errno))?;
    listen(&sock, Backlog::new(8).expect("small")).map_err(|errno| describe("listen", errno))?;
    Ok(sock)
}

/// connect(2) to the handover path: `Ok(None)` when nobody listens there (no file, or a file
/// left behind: ENOENT, ECONNREFUSED), so this process is the first and binds its own.
pub fn connect_path(path: &Path) -> Result<Option<OwnedFd>, String> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|errno| describe("socket(AF_UNIX)", errno))?;
    let addr = UnixAddr::new(path).map_err(|errno| describe("socket path", errno))?;
    match connect(sock.as_raw_fd(), &addr) {
        Ok(()) => Ok(Some(sock)),
        Err(Errno::ENOENT | Errno::ECONNREFUSED) => Ok(None),
        Err(errno) => Err(describe(&format!("connect({})", path.display()), errno)),
    }
}

/// accept4(2) on the handover path, then getsockopt(SO_PEERCRED): the peer's pid and uid as
/// the kernel saw them at connect. Only this user may take the listener.
pub fn accept_same_user(listener: &OwnedFd) -> Result<Option<(OwnedFd, i32)>, String> {
    let conn = match accept4(listener, SockFlag::SOCK_CLOEXEC) {
        Ok(fd) => fd,
        Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNABORTED) => return Ok(None),
        Err(errno) => return Err(describe("accept4(AF_UNIX)", errno)),
    };
    let (pid, uid) = peer(&conn)?;
    if uid != my_uid() {
        return Err(format!(
            "handover refused: the peer (pid {pid}) is uid {uid}, not uid {}",
            my_uid()
        ));
    }
    Ok(Some((conn, pid)))
}

/// getsockopt(SO_PEERCRED): (pid, uid) of the process at the other end.
pub fn peer(conn: &OwnedFd) -> Result<(i32, u32), String> {
    let cred = getsockopt(conn, sockopt::PeerCredentials)
        .map_err(|errno| describe("getsockopt(SO_PEERCRED)", errno))?;
    Ok((cred.pid(), cred.uid()))
}

/// The directory of a handover path must belong to this user and be writable by nobody else.
fn check_directory(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if meta.uid() != my_uid() || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{}: the handover directory must be this user's and writable by nobody else \
             (mkdir -m 700)",
            dir.display()
        ));
    }
    Ok(())
}

/// sd_listen_fds(3), by hand: with LISTEN_PID = our pid and LISTEN_FDS ≥ 1, the service
/// manager passed the listener as fd 3. The variables are removed, so no child takes them.
pub fn systemd_listener() -> Result<Option<OwnedFd>, String> {
    const SD_LISTEN_FDS_START: RawFd = 3;
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let ours = pid.and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let count: usize = count.and_then(|n| n.parse().ok()).unwrap_or(0);
    if !ours || count == 0 {
        return Ok(None);
    }
    // SAFETY: LISTEN_PID names us, so fd 3 was given to this process to own.
    let fd = unsafe { OwnedFd::from_raw_fd(SD_LISTEN_FDS_START) };
    // fcntl(F_SETFD, FD_CLOEXEC): systemd passes it without, and no program we run may get
    // it; fcntl(F_SETFL, O_NONBLOCK): the reactor's accept must never block.
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|errno| describe("fcntl(3, F_SETFD)", errno))?;
    let fl = fcntl(&fd, FcntlArg::F_GETFL).map_err(|errno| describe("fcntl(3, F_GETFL)", errno))?;
    let fl = OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK;
    fcntl(&fd, FcntlArg::F_SETFL(fl)).map_err(|errno| describe("fcntl(3, F_SETFL)", errno))?;
    Ok(Some(fd))
}

/// getuid(2).
pub fn my_uid() -> u32 {
    // SAFETY: getuid cannot fail and touches no memory of ours.
    unsafe { libc::getuid() }
}
