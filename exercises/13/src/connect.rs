//! A connection's way to its target, steps 2 to 4 of relay.rs's order: the handshake and the
//! admission hook, the name lookup, the non-blocking connect. Read relay.rs first: this file
//! continues its `impl Relay` (a child module, so it sees the loop's fields).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, connect, getsockname, getsockopt, socket, sockopt, SockFlag, SockType, SockaddrStorage,
};
use nix::unistd::read;
use protocols::socks5::{self, encode_reply, Reply, Step, Target};
use sockets_by_hand::errors::describe;
use sockets_by_hand::net;

use super::{Going, Relay};
use crate::admission::{Admission, Verdict};
use crate::conn::{close_fd, Conn, State};
use crate::flow::flush;

impl<A: Admission> Relay<'_, A> {
    // -- 2. The handshake, then the admission hook. -------------------------------------------

    /// read(2) handshake bytes and feed them to the sans-IO handshake (protocols::socks5).
    pub(super) fn handshake(&mut self, conn: &mut Conn) -> Going {
        // Into the up flow's buffer: whatever follows the request in the same read is
        // early payload for the target, and stays there.
        match read(&conn.client, conn.up.room(&mut self.pool)) {
            Ok(0) => return Err(format!("client left during {}", conn.phase())),
            Ok(n) => conn.up.filled(n),
            Err(Errno::EAGAIN | Errno::EINTR) => {
                conn.up.release(&mut self.pool);
                return Ok(());
            }
            Err(errno) => return Err(describe("read", errno)),
        }
        let Some(handshake) = conn.handshake.as_mut() else {
            return Ok(());
        };
        self.hs_out.clear();
        let step = handshake.feed(conn.up.pending(), &mut self.hs_out);
        conn.down.push(&self.hs_out, &mut self.pool);
        match step {
            Step::NeedMore => {
                conn.up.release(&mut self.pool);
                flush(&conn.client, &mut conn.down, &mut self.pool)
            }
            Step::Close(reason) => {
                conn.up.release(&mut self.pool);
                conn.ending = reason.to_string();
                conn.state = State::Refusing;
                self.refusing(conn)
            }
            Step::Connect { target, consumed } => {
                if handshake.logged_in() {
                    self.whitelist.logged_in(conn.peer.ip()); // -1: auth-once
                }
                conn.up.consumed(consumed, &mut self.pool);
                conn.up.bytes = conn.up.pending().len() as u64;
                conn.handshake = None;
                conn.state = State::Admitting;
                let verdict = self.admission.admit(conn.id, conn.peer, &target);
                conn.target = Some(target);
                self.admitted(conn, verdict)
            }
        }
    }

    /// The admission hook's answer, at once or later: go on, refuse, or wait.
    pub(super) fn admitted(&mut self, conn: &mut Conn, verdict: Verdict) -> Going {
        if conn.state != State::Admitting {
            return Ok(());
        }
        match verdict {
            Verdict::Allow => self.resolve(conn),
            Verdict::Refuse(reply, why) => {
                // Answered: out of Admitting, so the hook is not asked to forget it.
                conn.state = State::Refusing;
                self.refuse(conn, reply, why)
            }
            Verdict::Later => Ok(()),
        }
    }

    // -- 3. Resolve. --------------------------------------------------------------------------

    /// IP literals go straight to connect; names go to the resolver's queue.
    fn resolve(&mut self, conn: &mut Conn) -> Going {
        let until = Instant::now() + self.args.connect_timeout;
        match &conn.target {
            Some(Target::Ip(addr)) => self.connect_to(conn, vec![*addr]),
            // curl --socks5-hostname sends an IP host as a "name" too.
            Some(Target::Domain(name, port)) => match name.parse::<IpAddr>() {
                Ok(ip) => self.connect_to(conn, vec![SocketAddr::new(ip, *port)]),
                // A name: to the resolver's threads, and the loop goes on.
                // The mistake: getaddrinfo here, on the loop: every other client waits for it.
                Err(_) => match (name.as_str(), *port).to_socket_addrs() {
                    Ok(addrs) => self.connect_to(conn, addrs.collect()),
                    Err(err) => {
                        let why = format!("getaddrinfo: {err}");
                        self.refuse(conn, Reply::HostUnreachable, why)
                    }
                },
            },
            None => Ok(()),
        }
    }

    /// The addresses to try, less those the guard forbids (guard.rs); refused 0x02 if
    /// that leaves none.
    fn connect_to(&mut self, conn: &mut Conn, addrs: Vec<SocketAddr>) -> Going {
        let forbidden;
        (conn.addrs, forbidden) = self.guard.sift(addrs);
        match forbidden {
            Some(why) if conn.addrs.is_empty() => self.refuse(conn, Reply::NotAllowed, why),
            _ => self.connect_next(conn),
        }
    }

    /// The resolver's pipe woke the loop: connect to what it found, or answer 0x04.
    pub(super) fn lookups_done(&mut self) {
        let outgoing = self.args.outgoing;
        for (id, result) in self.resolver.done() {
            self.with(id, |relay, conn| match result {
                _ if conn.state != State::Resolving => Ok(()),
                Ok(addrs) => {
                    // With -b, only addresses of the outgoing address's family can work.
                    let fits =
                        |a: &SocketAddr| outgoing.is_none_or(|ip| ip.is_ipv4() == a.is_ipv4());
                    let addrs: Vec<_> = addrs.into_iter().filter(fits).collect();
                    match outgoing {
                        Some(ip) if addrs.is_empty() => {
                            let why = format!("no address of -b {ip}'s family (IPv4/IPv6)");
                            relay.refuse(conn, Reply::HostUnreachable, why)
                        }
                        _ => relay.connect_to(conn, addrs),
                    }
                }
                Err(err) => {
                    let why = format!("getaddrinfo: {err}");
                    relay.refuse(conn, Reply::HostUnreachable, why)
                }
            });
        }
    }

    // -- 4. Connect. --------------------------------------------------------------------------

    /// Starts a non-blocking connect(2) to the next address, or answers the last error.
    pub(super) fn connect_next(&mut self, conn: &mut Conn) -> Going {
        if let Some(old) = conn.upstream.take() {
            close_fd(old);
        }
        while let Some(addr) = conn.addrs.pop_front() {
            // socket(SOCK_NONBLOCK): connect returns at once instead of blocking for the
            // whole TCP handshake.
            let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
            let sock = match socket(net::family(&addr), SockType::Stream, flags, None) {
                Ok(sock) => sock,
                Err(errno) => {
                    conn.last_error = ("socket", errno);
                    continue;
                }
            };
            if let Some(ip) = self.args.outgoing {
                // bind(2) to the -b address (port 0: any) before connecting.
                let from = net::sockaddr(SocketAddr::new(ip, 0));
                if let Err(errno) = bind(sock.as_raw_fd(), from.as_ref()) {
                    conn.last_error = ("bind", errno);
                    close_fd(sock);
                    continue;
                }
            }
            // connect(2): EINPROGRESS means "started"; asked again at once, 0 says done.
            let (fd, to) = (sock.as_raw_fd(), net::sockaddr(addr));
            let connected = match connect(fd, to.as_ref()) {
                // The mistake: EINPROGRESS taken for "connected"; the client hears success
                // before the handshake's outcome is known.
                // connect(2) again: 0 if the handshake is done already (for a target on
                // this host the kernel ran it inside the first call), EALREADY if not yet.
                Err(Errno::EINPROGRESS) => match connect(fd, to.as_ref()) {
                    Err(Errno::EALREADY) => Ok(false),
                    again => again.map(|()| true),
                },
                first => first.map(|()| true),
            };
            match connected {
                Ok(connected) => {
                    conn.upstream = Some(sock);
                    if connected {
                        return self.connected(conn);
                    }
                    conn.state = State::Connecting;
                    conn.deadline = Some(Instant::now() + self.args.connect_timeout);
                    return Ok(());
                }
                Err(errno) => {
                    conn.last_error = ("connect", errno);
                    close_fd(sock);
                }
            }
        }
        let (call, errno) = conn.last_error;
        let reply = Reply::from_io_error(&errno.into());
        self.refuse(conn, reply, describe(call, errno))
    }

    /// POLLOUT (or an error) on the connecting socket: did it work?
    pub(super) fn connect_done(&mut self, conn: &mut Conn) -> Going {
        let Some(sock) = &conn.upstream else {
            return Ok(());
        };
        // getsockopt(SO_ERROR): the result of the non-blocking connect (0 = connected).
        match getsockopt(sock, sockopt::SocketError) {
            Ok(0) => return self.connected(conn),
            Ok(code) => conn.last_error = ("connect", Errno::from_raw(code)),
            Err(errno) => conn.last_error = ("getsockopt", errno),
        }
        self.connect_next(conn)
    }

    /// Connected: reply success with BND = the outgoing socket's address, then relay.
    fn connected(&mut self, conn: &mut Conn) -> Going {
        let Some(sock) = &conn.upstream else {
            return Ok(());
        };
        // getsockname(2): the address and port the relay connects from (BND in the reply).
        let bnd = getsockname::<SockaddrStorage>(sock.as_raw_fd()).ok();
        let bnd = bnd.and_then(|ss| net::std_addr(&ss));
        let reply = encode_reply(Reply::Succeeded, bnd.unwrap_or(socks5::UNSPECIFIED_BND));
        conn.down.push(reply.as_bytes(), &mut self.pool);
        conn.addrs = VecDeque::new();
        conn.state = State::Relaying;
        conn.deadline = None;
        // Send the reply and any early payload now.
        self.relay(conn, false, false)
    }
}
