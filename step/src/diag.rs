//! NETLINK_SOCK_DIAG, asked about one TCP connection by its address pair: what `ss` asks for
//! a whole table, here for one entry. The kernel looks the pair up in its hash of
//! connections, TIME_WAIT entries included, and answers with the state and the inode (0 when
//! no fd holds the socket: closed, the kernel finishing the close alone). One round trip,
//! whatever the number of sockets on the machine (sock_diag(7)).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// linux/sock_diag.h and linux/inet_diag.h (the libc crate has no constant for them).
const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const INET_DIAG_NOCOOKIE: u32 = !0;
/// nlmsghdr (16 bytes) + inet_diag_req_v2 (56).
const REQ_LEN: usize = 72;
/// nlmsghdr (16 bytes) + inet_diag_msg (72).
const MSG_LEN: usize = 88;

/// What the kernel holds for an address pair.
#[derive(Debug, PartialEq)]
pub struct Found {
    /// The TCP state number (a TIME_WAIT entry answers with its substate: TIME_WAIT, or
    /// FIN_WAIT2 for a closed socket that waits for the peer's FIN).
    pub state: u8,
    /// 0: no fd holds it.
    pub inode: u64,
}

pub struct Diag {
    fd: OwnedFd,
    seq: u32,
}

/// The pair as the kernel hashes it: a v4-mapped IPv6 address is looked up as IPv4 (an
/// AF_INET6 socket talking to an IPv4 peer is hashed as an IPv4 connection).
fn plain(a: SocketAddr) -> (IpAddr, u16) {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), v6.port()),
            None => (IpAddr::V6(*v6.ip()), v6.port()),
        },
        SocketAddr::V4(v4) => (IpAddr::V4(*v4.ip()), v4.port()),
    }
}

fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

/// The request for one connection: nlmsghdr, then inet_diag_req_v2 whose inet_diag_sockid
/// names the pair from the local side (ports and addresses in network order).
fn request(local: SocketAddr, peer: SocketAddr, seq: u32) -> Option<[u8; REQ_LEN]> {
    let ((lip, lport), (pip, pport)) = (plain(local), plain(peer));
    let family = match (lip, pip) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6,
        _ => return None,
    };
    let mut r = [0u8; REQ_LEN];
    r[0..4].copy_from_slice(&(REQ_LEN as u32).to_ne_bytes());
    r[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    r[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    r[8..12].copy_from_slice(&seq.to_ne_bytes());
    // inet_diag_req_v2: family, protocol, ext, pad, states (all).
    r[16] = family as u8;
    r[17] = libc::IPPROTO_TCP as u8;
    r[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
    // inet_diag_sockid: sport, dport, src, dst, if, cookie.
    r[24..26].copy_from_slice(&lport.to_be_bytes());
    r[26..28].copy_from_slice(&pport.to_be_bytes());
    r[28..44].copy_from_slice(&ip_bytes(lip));
    r[44..60].copy_from_slice(&ip_bytes(pip));
    r[64..68].copy_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    r[68..72].copy_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    Some(r)
}

/// The answer to request `seq`: Some(Found) for an inet_diag_msg, None for an error
/// (ENOENT: the kernel holds nothing for the pair); Err(()) for an answer to another request.
fn answer(msg: &[u8], seq: u32) -> Result<Option<Found>, ()> {
    if msg.len() < 16 || u32::from_ne_bytes(msg[8..12].try_into().unwrap()) != seq {
        return Err(());
    }
    let ty = u16::from_ne_bytes(msg[4..6].try_into().unwrap());
    if ty == NLMSG_ERROR || ty != SOCK_DIAG_BY_FAMILY || msg.len() < MSG_LEN {
        return Ok(None);
    }
    // inet_diag_msg: family, state, timer, retrans, id (48 bytes), expires, rqueue, wqueue,
    // uid, inode.
    Ok(Some(Found {
        state: msg[17],
        inode: u32::from_ne_bytes(msg[84..88].try_into().unwrap()) as u64,
    }))
}

impl Diag {
    pub fn open() -> Option<Diag> {
        // SAFETY: plain socket(2); the fd is ours.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd is a new fd owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // The kernel answers inside our send; a bound on the wait all the same.
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: tv is valid for the call.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const _,
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Some(Diag { fd, seq: 0 })
    }

    /// What the kernel holds for the connection from `local` to `peer`, if anything.
    pub fn lookup(&mut self, local: SocketAddr, peer: SocketAddr) -> Option<Found> {
        self.seq = self.seq.wrapping_add(1);
        let req = request(local, peer, self.seq)?;
        // SAFETY: req is valid for its length; the kernel address is the default (pid 0).
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr() as *const _, REQ_LEN, 0) };
        if sent != REQ_LEN as isize {
            return None;
        }
        let mut buf = [0u8; 1024];
        // Answers to earlier requests that timed out are skipped: at most a few.
        for _ in 0..4 {
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut _,
                    buf.len(),
                    0,
                )
            };
            if n <= 0 {
                return None;
            }
            if let Ok(found) = answer(&buf[..n as usize], self.seq) {
                return found;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::fs::MetadataExt;

    fn inode(fd: i32) -> u64 {
        std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino()
    }

    #[test]
    fn finds_a_connection_by_its_pair_and_says_when_nothing_is_left() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut diag = Diag::open().expect("NETLINK_SOCK_DIAG");
        let (local, peer) = (server.local_addr().unwrap(), server.peer_addr().unwrap());
        assert_eq!(
            diag.lookup(local, peer),
            Some(Found {
                state: 1, // ESTABLISHED
                inode: inode(server.as_raw_fd()),
            })
        );
        // The pair seen from the client is the client's socket.
        assert_eq!(
            diag.lookup(peer, local).map(|f| f.inode),
            Some(inode(client.as_raw_fd()))
        );
        // The server closes first: its side of the pair has no fd any more.
        drop(server);
        let after = diag.lookup(local, peer).expect("the closing pair");
        assert_eq!(after.inode, 0);
        assert!([4, 5].contains(&after.state), "{after:?}"); // FIN_WAIT1, FIN_WAIT2
        drop(client);
        drop(listener);
        // A pair nobody ever used: nothing.
        let nobody: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(diag.lookup(nobody, peer), None);
    }
}
