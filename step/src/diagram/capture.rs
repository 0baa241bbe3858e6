//! The packets: a network namespace of the diagram's own (so only the lesson's traffic is
//! on its loopback), and an AF_PACKET socket on its `lo` that keeps every frame with the
//! kernel's time stamp (SO_TIMESTAMPNS), the clock the stepper's recording uses too.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A captured frame: the kernel's receive time in ns since the epoch, and its bytes.
pub struct Frame {
    pub ns: u128,
    pub bytes: Vec<u8>,
}

fn errno_text(call: &str) -> String {
    let e = std::io::Error::last_os_error();
    let name = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0));
    format!("{call}: {name:?} ({e})")
}

/// unshare(CLONE_NEWNET), then `lo` up (SIOCSIFFLAGS). Call it before any thread starts:
/// everything started afterwards (the stepper, the lesson, the scripted peers) shares it.
pub fn enter_private_net() -> Result<(), String> {
    // SAFETY: unshare(2) with a flag; no memory is passed.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "{}: a network namespace of its own needs CAP_SYS_ADMIN (run as root, as `make \
             diagram-NN` does in CI, or under `unshare -rn`)",
            errno_text("unshare(CLONE_NEWNET)")
        ));
    }
    // SAFETY: a datagram socket for the ioctls, an ifreq of the right size, closed after.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(errno_text("socket"));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            let e = errno_text("ioctl(SIOCGIFFLAGS)");
            libc::close(fd);
            return Err(e);
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) != 0 {
            let e = errno_text("ioctl(SIOCSIFFLAGS)");
            libc::close(fd);
            return Err(e);
        }
        libc::close(fd);
    }
    // Delayed ACKs off on this loopback (the route's quickack), here only: an ACK the
    // kernel may hold up to 200 ms lands anywhere between the calls, differently each
    // run; sent at once, every run draws the same ACKs.
    for dest in ["127.0.0.0/8", "127.0.0.1"] {
        let ok = std::process::Command::new("ip")
            .args([
                "route", "replace", "local", dest, "dev", "lo", "table", "local",
            ])
            .args([
                "proto",
                "kernel",
                "scope",
                "host",
                "src",
                "127.0.0.1",
                "quickack",
                "1",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "ip route replace local {dest} ... quickack 1 failed (is iproute2 installed?)"
            ));
        }
    }
    Ok(())
}

/// The capture thread: runs until `stop`, counting frames in `seen` as they come.
pub struct Capture {
    stop: Arc<AtomicBool>,
    pub seen: Arc<AtomicUsize>,
    thread: JoinHandle<Vec<Frame>>,
}

impl Capture {
    pub fn start() -> Result<Capture, String> {
        // SAFETY: socket(2), setsockopt(2) and bind(2) with values of the sizes passed.
        let fd = unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            );
            if fd < 0 {
                return Err(errno_text("socket(AF_PACKET)"));
            }
            let one: libc::c_int = 1;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&one as *const libc::c_int).cast(),
                4,
            );
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sll.sll_ifindex = libc::if_nametoindex(c"lo".as_ptr()) as i32;
            if libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ) != 0
            {
                let e = errno_text("bind(AF_PACKET, lo)");
                libc::close(fd);
                return Err(e);
            }
            fd
        };
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicUsize::new(0));
        let (s, n) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || run(fd, &s, &n));
        Ok(Capture { stop, seen, thread })
    }

    /// Stop after the frames already queued; all the frames, in order.
    pub fn finish(self) -> Vec<Frame> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_default()
    }
}

fn run(fd: i32, stop: &AtomicBool, seen: &AtomicUsize) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 65_600];
    let mut control = [0u64; 16];
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 20) };
        if ready <= 0 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            continue;
        }
        // SAFETY: recvmsg(2) into buffers owned here, of the lengths given.
        unsafe {
            let mut from: libc::sockaddr_ll = std::mem::zeroed();
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            let n = libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT);
            if n < 0 {
                continue;
            }
            // Loopback shows each packet twice: going out and coming in. Keep the one in.
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let mut ns = 0u128;
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                    ns = ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            if ns == 0 {
                ns = crate::now_ns();
            }
            frames.push(Frame {
                ns,
                bytes: buf[..n as usize].to_vec(),
            });
            seen.fetch_add(1, Ordering::SeqCst);
        }
    }
    // SAFETY: the socket opened in start(), closed once.
    unsafe { libc::close(fd) };
    frames
}
