//! The blocking-dns scenario (lesson 12): a slow name through the C library's real
//! resolver path, in a network and mount namespace of its own, so nothing of the machine's
//! own resolver is touched.
//!
//! The approach is tests/socks5_dns.rs's (re-run under `unshare -nm`, loopback up, our own
//! resolv.conf and nsswitch.conf bind-mounted over /etc's, a tiny DNS server on
//! 127.0.0.1:53); the code is not shared because that file is a test of the root package,
//! which this crate cannot link, and it answers many more kinds of names. This one answers
//! two names: `slow.test` after [`SLOW`], `fast.test` at once, both 127.0.0.1.

use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use protocols::dns;
use protocols::socks5::{Reply, Target};

use crate::peer::patience;
use crate::scenario::{start_with, Started};
use crate::{socks, Outcome, Provoked};

/// Set in the re-run inside the namespaces.
const INSIDE: &str = "PROVOKE_DNS_NAMESPACE";
/// How long the DNS server makes `slow.test` wait.
const SLOW: Duration = Duration::from_secs(3);

pub fn scenario(mistake: Option<&str>) -> Provoked {
    if std::env::var_os(INSIDE).is_some() {
        return inside(mistake);
    }
    // With CAP_SYS_ADMIN (root) a plain unshare; otherwise (another user, or root in a
    // container) in a user namespace of our own (-r).
    let flags = if has_cap_sys_admin() { "-nm" } else { "-rnm" };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new("unshare");
    cmd.args([flags, "--"]).arg(exe).arg("blocking-dns");
    if let Some(m) = mistake {
        cmd.args(["--mistake", m]);
    }
    let out = cmd
        .env(INSIDE, "1")
        .output()
        .map_err(|e| format!("unshare (util-linux): {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.trim().trim_start_matches("provoke blocking-dns: ");
    let line = line
        .trim_end_matches(" [ok]")
        .trim_end_matches(" [FAILURE SEEN]");
    match out.status.code() {
        Some(0) => Ok(Outcome::new(true, line)),
        Some(1) => Ok(Outcome::new(false, line)),
        _ => Err(format!(
            "inside the namespace: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout.trim()
        )),
    }
}

/// CAP_SYS_ADMIN (number 21) in this process's effective set, from /proc/self/status: the
/// lessons' library has the same (sockets_by_hand::sandbox), which this crate does not link.
pub(crate) fn has_cap_sys_admin() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 21) != 0)
}

/// In the namespaces: set up the resolver, start lesson 12, ask for the slow name, and
/// while its lookup is in flight, CONNECT to an IP literal and to a fast name.
fn inside(mistake: Option<&str>) -> Provoked {
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    if !up.is_ok_and(|s| s.success()) {
        return Err("ip link set lo up failed".into());
    }
    let dir = std::env::temp_dir().join(format!("provoke-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for (name, text) in [
        (
            "resolv.conf",
            "nameserver 127.0.0.1\noptions timeout:30 attempts:1\n",
        ),
        ("nsswitch.conf", "hosts: dns\n"),
    ] {
        let ours = dir.join(name);
        std::fs::write(&ours, text).map_err(|e| e.to_string())?;
        let src = CString::new(ours.to_string_lossy().as_bytes()).expect("no NUL");
        let dst = CString::new(format!("/etc/{name}")).expect("no NUL");
        // SAFETY: mount(2) with valid C strings; private to this mount namespace.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "bind-mount /etc/{name}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let udp = UdpSocket::bind("127.0.0.1:53").map_err(|e| format!("bind 127.0.0.1:53: {e}"))?;
    let (asked_slow, slow_answered) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let flags = (asked_slow.clone(), slow_answered.clone());
    thread::spawn(move || serve(udp, flags));
    // The target every CONNECT goes to (its accepts are never read: a connect is enough).
    let target = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = target.local_addr().map_err(|e| e.to_string())?.port();
    let lesson = match start_with("lesson-12", mistake, &["-p", "0"], None)? {
        Started::Up(l) => l,
        Started::Exited(code, text) => return Err(format!("lesson-12 exited {code}: {text}")),
    };
    let proxy = lesson.addr;
    // The slow CONNECT runs in a thread; its reply is awaited later.
    let slow =
        thread::spawn(move || socks::connect(proxy, &Target::Domain("slow.test".into(), port)));
    let by = Instant::now() + patience();
    while !asked_slow.load(Ordering::Relaxed) {
        if Instant::now() > by {
            return Err("lesson 12 never asked for slow.test".into());
        }
        thread::sleep(Duration::from_millis(10));
    }
    let ip = SocketAddr::from(([127, 0, 0, 1], port));
    let fast = [
        (format!("127.0.0.1:{port}"), Target::Ip(ip)),
        (
            "fast.test".to_string(),
            Target::Domain("fast.test".into(), port),
        ),
    ];
    let mut behind = Vec::new();
    let mut answers = Vec::new();
    for (what, t) in fast {
        let (rep, _s) = socks::connect(proxy, &t)?;
        answers.push(format!("{what} {:#04x}", rep.code()));
        // Answered only after the DNS server sent slow.test's answer: it waited behind it.
        if slow_answered.load(Ordering::SeqCst) || rep != Reply::Succeeded {
            behind.push(what);
        }
    }
    let slow_rep = slow.join().map_err(|_| "the slow client panicked")??.0;
    let did = format!(
        "while slow.test took {} s to resolve, CONNECT to {}",
        SLOW.as_secs(),
        answers.join(" and ")
    );
    Ok(if behind.is_empty() {
        Outcome::new(
            true,
            format!(
                "{did} were answered before it (slow.test then {:#04x})",
                slow_rep.code()
            ),
        )
    } else {
        Outcome::new(
            false,
            format!(
                "{did}: {} waited behind the slow lookup (the loop was frozen)",
                behind.join(" and ")
            ),
        )
    })
}

/// Answers A queries for slow.test (after [`SLOW`], from a thread of its own) and
/// fast.test (at once) with 127.0.0.1; anything else, and AAAA, gets no records.
fn serve(socket: UdpSocket, (asked_slow, slow_answered): (Arc<AtomicBool>, Arc<AtomicBool>)) {
    let mut buf = [0u8; 1500];
    while let Ok((n, from)) = socket.recv_from(&mut buf) {
        let Some(q) = dns::question(&buf[..n]) else {
            continue;
        };
        let slow = q.name == "slow.test";
        asked_slow.fetch_or(slow, Ordering::Relaxed);
        // 127.0.0.1 for the two names it knows (no AAAA); NXDOMAIN for any other.
        let reply = match slow || q.name == "fast.test" {
            true => dns::answer(&buf[..n], &q, 0, &[IpAddr::V4(Ipv4Addr::LOCALHOST)]),
            false => dns::answer(&buf[..n], &q, dns::NXDOMAIN, &[]),
        };
        let Ok(socket) = socket.try_clone() else {
            return;
        };
        let answered = slow_answered.clone();
        thread::spawn(move || {
            if slow {
                // The delay is the behaviour being shown: a slow DNS server.
                thread::sleep(SLOW);
                // Set before the answer leaves: nothing can act on it earlier.
                answered.store(true, Ordering::SeqCst);
            }
            let _ = socket.send_to(&reply, from);
        });
    }
}
