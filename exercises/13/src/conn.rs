//! One connection: where it is in its life, its two sockets and two flows, and what poll
//! should watch on it in this state.

use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{SockFlag, SockaddrLike, SockaddrStorage};
use nix::unistd::close;
use protocols::socks5::{Handshake, Target};
use sockets_by_hand::errors::report;
use sockets_by_hand::net;

use crate::admission::ConnId;
use crate::flow::Flow;

/// poll's "the peer sent FIN" (nix 0.32 has no name for it).
pub const POLLRDHUP: PollFlags = PollFlags::from_bits_retain(libc::POLLRDHUP);

/// What poll reported on `fd`. nix's `revents()` is None when a bit it has no name for is
/// set, and the one such bit the loop asks for is POLLRDHUP, which it asks for only while a
/// client waits for its name (State::Resolving). There POLLRDHUP alone decides (the client
/// left), whatever came with it, so None reads as POLLRDHUP. The kernel reports only the bits
/// asked for plus POLLERR, POLLHUP and POLLNVAL, all of which nix names.
pub fn seen(fd: &PollFd) -> PollFlags {
    fd.revents().unwrap_or(POLLRDHUP)
}

/// Where a connection is in its life (the names appear in the log lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Handshake, // greeting, auth, request: the sans-IO `Handshake` knows which (a deadline runs)
    Admitting, // the admission hook has not answered yet
    Resolving, // the resolver thread is looking the host name up
    Connecting, // a non-blocking connect(2) is in flight; POLLOUT ends it
    Relaying,  // bytes flow both ways
    HalfClosed, // one side sent EOF, passed on as shutdown(SHUT_WR); the other way flows
    Refusing,  // an error reply (or a handshake refusal) is being flushed; then close
}

pub struct Conn {
    pub id: ConnId,
    pub state: State,
    pub client: OwnedFd,
    pub peer: SocketAddr,
    /// The SOCKS handshake, until the request is complete.
    pub handshake: Option<Box<Handshake>>,
    pub target: Option<Target>,
    /// Addresses still to try, and the last failed call (socket, bind, connect) and errno.
    pub addrs: VecDeque<SocketAddr>,
    pub last_error: (&'static str, Errno),
    pub upstream: Option<OwnedFd>,
    /// Client → target (it also holds the handshake bytes while they are parsed).
    pub up: Flow,
    /// Target → client (it also holds the SOCKS replies).
    pub down: Flow,
    /// The handshake, admission, lookup or connect deadline; none while relaying.
    pub deadline: Option<Instant>,
    pub started: Instant,
    /// How it ended, for the log line (set when refusing).
    pub ending: String,
}

impl Conn {
    /// A client just accepted: its handshake starts, with `deadline` to finish it
    /// (`whitelisted`: -w/-1 let it skip the password).
    pub fn new(
        id: ConnId,
        client: OwnedFd,
        peer: SocketAddr,
        credentials: Option<(Vec<u8>, Vec<u8>)>,
        whitelisted: bool,
        deadline: Instant,
    ) -> Conn {
        Conn {
            id,
            state: State::Handshake,
            client,
            peer,
            handshake: Some(Box::new(
                Handshake::new(credentials).whitelisted(whitelisted),
            )),
            target: None,
            addrs: VecDeque::new(),
            last_error: ("connect", Errno::EHOSTUNREACH),
            upstream: None,
            up: Flow::new(),
            down: Flow::new(),
            deadline: Some(deadline),
            started: Instant::now(),
            ending: String::new(),
        }
    }

    /// The poll events wanted on the client and on the upstream socket (None: leave the fd
    /// out of this round, so a hung-up socket we are not reading cannot make poll spin).
    pub fn interest(&self) -> (Option<PollFlags>, Option<PollFlags>) {
        let mut client = PollFlags::empty();
        if self.down.waiting() {
            client |= PollFlags::POLLOUT;
        }
        let mut upstream = PollFlags::empty();
        match self.state {
            State::Handshake => client |= PollFlags::POLLIN,
            // Not reading the client, but watched: POLLHUP/POLLERR say it left.
            State::Admitting => return (Some(client), None),
            // POLLRDHUP too: a client that closes while its name is looked up has sent
            // its FIN; it is dropped at once (a lookup cannot be cancelled, a client can).
            State::Resolving => return (Some(client | POLLRDHUP), None),
            State::Connecting => return (Some(client), Some(PollFlags::POLLOUT)),
            State::Relaying | State::HalfClosed => {
                if !self.up.eof && self.up.has_room() {
                    client |= PollFlags::POLLIN;
                }
                if !self.down.eof && self.down.has_room() {
                    upstream |= PollFlags::POLLIN;
                }
                if self.up.waiting() {
                    upstream |= PollFlags::POLLOUT;
                }
            }
            State::Refusing => {}
        }
        let some = |f: PollFlags| (!f.is_empty()).then_some(f);
        (some(client), some(upstream))
    }

    /// Where it is, for a log line: the handshake's step (Greeting, Auth, Request) or the state.
    pub fn phase(&self) -> String {
        match &self.handshake {
            Some(handshake) => format!("{:?}", handshake.state()),
            None => format!("{:?}", self.state),
        }
    }

    /// The log line's text: `client → target · up N B, down N B · S s · how it ended`.
    pub fn summary(&self, ending: &str) -> String {
        let target = self.target.as_ref();
        format!(
            "{} → {} · up {} B, down {} B · {:.3} s · {ending}",
            self.peer,
            target.map_or("(no request)".into(), Target::to_string),
            self.up.bytes,
            self.down.bytes,
            self.started.elapsed().as_secs_f64()
        )
    }
}

/// poll's timeout: until `at`, in whole milliseconds rounded up (at most a minute).
pub fn timeout_until(at: Option<Instant>) -> PollTimeout {
    let Some(at) = at else {
        return PollTimeout::NONE;
    };
    let ms = at
        .saturating_duration_since(Instant::now())
        .as_nanos()
        .div_ceil(1_000_000);
    PollTimeout::try_from(ms.min(60_000)).unwrap_or(PollTimeout::MAX)
}

/// close(2), reported if it fails; the fd is gone either way.
pub fn close_fd(fd: OwnedFd) {
    if let Err(errno) = close(fd) {
        report("close", errno);
    }
}

/// accept4(2) as C calls it, `accept4(fd, &addr, &len, flags)`: the client's socket and its
/// address in one call. nix's `accept4` passes NULL for the address, and a getpeername(2)
/// after it would cost one more system call per connection.
pub fn accept4_with_peer(
    listener: &OwnedFd,
    flags: SockFlag,
) -> Result<(OwnedFd, Option<SocketAddr>), Errno> {
    let mut ss = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes of an address into `ss`.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            ss.as_mut_ptr().cast(),
            &mut len,
            flags.bits(),
        )
    };
    // SAFETY: a new fd that nothing else owns.
    let client = unsafe { OwnedFd::from_raw_fd(Errno::result(fd)?) };
    // SAFETY: `ss` holds the `len` bytes of address the kernel wrote.
    let peer = unsafe { SockaddrStorage::from_raw(ss.as_ptr().cast(), Some(len)) };
    Ok((client, peer.as_ref().and_then(net::std_addr)))
}
