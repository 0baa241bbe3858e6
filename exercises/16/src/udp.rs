// Generated from lessons/16-socks5-udp/udp.rs by exercises/16/exercise.txt: write its todo!()s.
//! UDP ASSOCIATE (RFC 1928 §7): the association's life, in the order it happens. Read after
//! lesson 12's relay.rs, whose loop this plugs into as its hook (admission.rs): the relay
//! hands over a UDP ASSOCIATE ([`Associations::associate`]), polls the fds this file lists
//! ([`Associations::watch`]), hands back their events ([`Associations::ready`]), and says
//! when the control connection ended ([`Associations::forget`]).
//!
//! An association is two kinds of UDP socket: one the client sends to (its address is the
//! reply's BND), and one per address family the relay sends to targets from. A datagram from
//! the client loses its SOCKS header and goes to its target; one from a target gains a
//! header naming its source and goes to the client. Nothing waits: UDP has no backpressure,
//! so a datagram that cannot go now is dropped, and every drop is counted.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{
    bind, getsockname, getsockopt, setsockopt, socket, sockopt, SockFlag, SockType, SockaddrStorage,
};
use protocols::socks5::{Reply, Target};
use protocols::socks5_udp::{encode_header, parse_header, MAX_IP_HEADER};
use sockets_by_hand::errors::describe;
use sockets_by_hand::{net, say, udpstat};

use crate::admission::{Admission, ConnId, Verdict};
use crate::conn::close_fd;
use crate::datagrams::{Batch, MAX_DATAGRAM, ROOM};
use crate::resolver::Resolver;

/// At most this many batches per socket per wake-up (fairness between associations).
const ROUNDS: usize = 8;
/// The naive buffer of `--mistake small-buffer`: "an Ethernet frame's worth".
const SMALL_BUFFER: usize = 1_472;

// The counters (counts.rs), and the names in datagrams' headers (names.rs), which continues
// this file's `impl Associations`.
// Mounted from the lesson as they are (no todo!() in them): read them there.
#[path = "../../../lessons/16-socks5-udp/counts.rs"]
mod counts;
#[path = "../../../lessons/16-socks5-udp/names.rs"]
mod names;

use counts::{count, Counts, Drop};
use names::Name;

struct Association {
    id: ConnId,
    /// The client: the control connection's peer IP, and the port its datagrams come from
    /// (named in the request, or learnt from the first datagram).
    client: IpAddr,
    port: Option<u16>,
    /// The socket the client sends to (BND), and its address.
    relay: OwnedFd,
    bnd: SocketAddr,
    /// The sockets the relay sends to targets from: IPv4, IPv6 (made on first use).
    out: [Option<OwnedFd>; 2],
    names: HashMap<(String, u16), Name>,
    counts: Counts,
}

impl Association {
    fn client_addr(&self) -> Option<SocketAddr> {
        self.port.map(|port| SocketAddr::new(self.client, port))
    }
}

/// Which of an association's sockets a pollfd was.
#[derive(Clone, Copy)]
enum Which {
    Relay,
    Out(usize),
    Resolver,
}

pub struct Associations {
    /// By the control connection's slot.
    slots: Vec<Option<Association>>,
    batch: Batch,
    /// SO_RCVBUF asked for each socket (`--rcvbuf`), and what the kernel gave the first.
    rcvbuf: usize,
    rcvbuf_got: Option<usize>,
    outgoing: Option<IpAddr>,
    quiet: bool,
    /// The names the clients' datagrams go to: lesson 12's resolver pool (its threads, its
    /// shared lookups), a pool of its own so datagrams never queue behind CONNECTs.
    resolver: Resolver,
    lookups: HashMap<ConnId, (ConnId, String, u16)>,
    serial: u64,
    /// What the last watch() pushed, in order, for ready().
    watched: std::cell::RefCell<Vec<(ConnId, Which)>>,
    opened: u64,
    totals: Counts,
    /// Datagrams the kernel dropped on full receive buffers (/proc/net/udp's "drops"), of
    /// associations closed so far.
    kernel_drops: u64,
    failed: Vec<(SocketAddr, Errno)>,
}

impl Associations {
    pub fn new(batched: bool, rcvbuf: usize, outgoing: Option<IpAddr>, quiet: bool) -> Self {
        Associations {
            slots: Vec::new(),
            batch: Batch::new(batched),
            rcvbuf,
            rcvbuf_got: None,
            outgoing,
            quiet,
            resolver: Resolver::spawn(),
            lookups: HashMap::new(),
            serial: 0,
            watched: std::cell::RefCell::new(Vec::new()),
            opened: 0,
            totals: Counts::default(),
            kernel_drops: 0,
            failed: Vec::new(),
        }
    }

    // -- 1. The association: a UDP socket for the client. -------------------------------------

    /// A UDP socket, non-blocking, SO_RCVBUF set, bound to `addr`.
    fn udp_socket(&mut self, addr: SocketAddr) -> Result<OwnedFd, String> {
        // socket(SOCK_DGRAM): a datagram socket. No listen, no accept, no connection: one
        // socket receives from anyone and sends to anyone, a message at a time.
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let sock = socket(net::family(&addr), SockType::Datagram, flags, None)
            .map_err(|e| describe("socket", e))?;
        // setsockopt(SO_RCVBUF): room for a burst. When it is full the kernel drops what
        // arrives (and counts it: /proc/net/udp's "drops"); nobody is told.
        if let Err(errno) = setsockopt(&sock, sockopt::RcvBuf, &self.rcvbuf) {
            return Err(describe("setsockopt(SO_RCVBUF)", errno));
        }
        if self.rcvbuf_got.is_none() {
            // getsockopt(SO_RCVBUF): what the kernel granted (twice the request, for its own
            // bookkeeping, capped by net.core.rmem_max), for the Ctrl-C summary.
            self.rcvbuf_got = getsockopt(&sock, sockopt::RcvBuf).ok();
        }
        // bind(2): its own address; port 0 lets the kernel pick a free one.
        if let Err(errno) = bind(sock.as_raw_fd(), net::sockaddr(addr).as_ref()) {
            close_fd(sock);
            return Err(describe("bind", errno));
        }
        Ok(sock)
    }

    /// The client's UDP socket, bound where the client reached the control connection, so
    /// BND is an address it can reach (never 0.0.0.0, even when -i 0.0.0.0).
    fn open(
        &mut self,
        id: ConnId,
        control: &OwnedFd,
        client: SocketAddr,
        from: &Target,
    ) -> Result<SocketAddr, String> {
        // getsockname(2) on the control connection: the address the client connected to.
        let local = getsockname::<SockaddrStorage>(control.as_raw_fd())
            .map_err(|e| describe("getsockname", e))?;
        let local = net::std_addr(&local).ok_or("getsockname: not an IP address")?;
        let relay = self.udp_socket(SocketAddr::new(local.ip(), 0))?;
        // getsockname(2) again: the port the kernel gave the UDP socket: BND.PORT.
        let bnd = getsockname::<SockaddrStorage>(relay.as_raw_fd())
            .map_err(|e| describe("getsockname", e));
        let bnd = match bnd.map(|ss| net::std_addr(&ss)) {
            Ok(Some(bnd)) => bnd,
            Ok(None) => return Err("getsockname: not an IP address".into()),
            Err(why) => {
                close_fd(relay);
                return Err(why);
            }
        };
        // The client's port, if the request names one (zeros: it does not know yet).
        let port = Some(from.port()).filter(|&p| p != 0);
        let association = Association {
            id,
            client: client.ip().to_canonical(),
            port,
            relay,
            bnd,
            out: [None, None],
            names: HashMap::new(),
            counts: Counts::default(),
        };
        if self.slots.len() <= id.slot {
            self.slots.resize_with(id.slot + 1, || None);
        }
        if let Some(old) = self.slots[id.slot].replace(association) {
            std::mem::forget(old);
        }
        self.opened += 1;
        if !self.quiet {
            let port = port.map_or("its first datagram's port".into(), |p| p.to_string());
            say!("udp association: {client} → relay {bnd} (client port: {port})");
        }
        Ok(bnd)
    }

    // -- 2. From the client: header off, to the target. ---------------------------------------

    fn client_sent(&mut self, slot: usize) {
        let Some(mut a) = self.slots[slot].take() else {
            return;
        };
        let cap = MAX_DATAGRAM;
        for _ in 0..ROUNDS {
            let n = match self.batch.recv(&a.relay, cap) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    say!("udp {}: {}", a.bnd, describe("recvfrom", errno));
                    break;
                }
            };
            for i in 0..n {
                self.up_one(&mut a, i);
            }
            self.flush_up(&mut a);
            if self.batch.batched && n < self.batch.size() {
                break; // a short batch: the socket is drained
            }
        }
        self.slots[slot] = Some(a);
    }

    /// One datagram from the client's socket: checked, unwrapped, queued for its target.
    fn up_one(&mut self, a: &mut Association, i: usize) {
        let got = self.batch.got[i];
        if got.truncated {
            return count(a, Drop::Truncated);
        }
        let Some(from) = got.from else {
            return count(a, Drop::Source);
        };
        let (ip, port) = (from.ip().to_canonical(), from.port());
        // Only the client may send: its IP, and its port once known. Anyone else would be
        // using this relay as an open one.
        if ip != a.client || a.port.is_some_and(|p| p != port) {
            return count(a, Drop::Source);
        }
        a.port.get_or_insert(port);
        let datagram = &self.batch.buf(i)[ROOM..ROOM + got.len];
        let (header, used) = match parse_header(datagram) {
            Ok(parsed) => parsed,
            Err(_) => return count(a, Drop::Malformed),
        };
        if header.frag != 0 {
            return count(a, Drop::Fragment);
        }
        let to = match header.target {
            Target::Ip(to) => to,
            Target::Domain(name, port) => match name.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, port),
                Err(_) => match self.name(a, name, port, used, i) {
                    Some(to) => to,
                    None => return,
                },
            },
        };
        self.queue_up(a, i, ROOM + used, ROOM + got.len, to);
    }

    /// Queues bytes `start..end` of buffer `i` for `to`, on the socket of its family.
    fn queue_up(
        &mut self,
        a: &mut Association,
        i: usize,
        start: usize,
        end: usize,
        to: SocketAddr,
    ) {
        let family = usize::from(to.is_ipv6());
        if a.out[family].is_none() {
            let from = match (self.outgoing, to.is_ipv6()) {
                // -b: the outgoing sockets bind to it; the other family has none.
                (Some(ip), v6) if ip.is_ipv6() == v6 => SocketAddr::new(ip, 0),
                (Some(_), _) => return count(a, Drop::Family),
                (None, false) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
                (None, true) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
            };
            match self.udp_socket(from) {
                Ok(sock) => a.out[family] = Some(sock),
                Err(why) => {
                    say!("udp {}: outgoing socket: {why}", a.bnd);
                    return count(a, Drop::Family);
                }
            }
        }
        a.counts.up_bytes += (end - start) as u64;
        self.batch.queue(i, start, end, to);
    }

    /// Sends what client_sent queued: one family at a time (IPv4 first).
    fn flush_up(&mut self, a: &mut Association) {
        // Queued entries of both families are in one list; split by family on the way out.
        let sent = match (&a.out[0], &a.out[1]) {
            (Some(v4), None) => self.batch.send(v4, &mut self.failed),
            (None, Some(v6)) => self.batch.send(v6, &mut self.failed),
            (Some(v4), Some(v6)) => self.batch.send_split(v4, v6, &mut self.failed),
            (None, None) => 0,
        };
        a.counts.up += sent as u64;
        self.report_failed(a);
    }

    fn report_failed(&mut self, a: &mut Association) {
        for (to, errno) in self.failed.drain(..) {
            a.counts.dropped[Drop::Send as usize] += 1;
            if errno != Errno::EAGAIN && !self.quiet {
                say!("udp {} → {to}: {}", a.bnd, describe("sendto", errno));
            }
        }
    }

    // -- 4. From a target: a header naming it, to the client. ---------------------------------

    fn targets_sent(&mut self, slot: usize, family: usize) {
        let Some(mut a) = self.slots[slot].take() else {
            return;
        };
        let client = a.client_addr();
        for _ in 0..ROUNDS {
            let Some(sock) = &a.out[family] else { break };
            let n = match self.batch.recv(sock, MAX_DATAGRAM) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                // An ICMP error for an earlier datagram, on some kernels: nothing to relay.
                Err(_) => continue,
            };
            for i in 0..n {
                let got = self.batch.got[i];
                let (Some(from), Some(client)) = (got.from, client) else {
                    count(&mut a, Drop::Source);
                    continue;
                };
                let mut head = [0u8; MAX_IP_HEADER];
                let from = SocketAddr::new(from.ip().to_canonical(), from.port());
                let len = encode_header(from, &mut head);
                // The client's own family caps what a datagram may carry.
                let max = if client.is_ipv4() { 65_507 } else { 65_527 };
                if got.truncated || got.len + len > max {
                    count(&mut a, Drop::TooBig);
                    continue;
                }
                // The header goes just before the payload: no copy of the payload.
                self.batch.buf(i)[ROOM - len..ROOM].copy_from_slice(&head[..len]);
                a.counts.down_bytes += got.len as u64;
                self.batch.queue(i, ROOM - len, ROOM + got.len, client);
            }
            a.counts.down += self.batch.send(&a.relay, &mut self.failed) as u64;
            self.report_failed(&mut a);
            if self.batch.batched && n < self.batch.size() {
                break;
            }
        }
        self.slots[slot] = Some(a);
    }

    // -- 5. Teardown: the control connection ended. -------------------------------------------

    fn close(&mut self, mut a: Association) {
        let socks: Vec<&OwnedFd> = std::iter::once(&a.relay)
            .chain(a.out.iter().flatten())
            .collect();
        let drops = udpstat::drops(&socks);
        self.kernel_drops += drops;
        // Datagrams still waiting for a name are lost with the association: counted.
        for name in a.names.values() {
            if let Name::Pending(waiting) = name {
                a.counts.dropped[Drop::Name as usize] += waiting.len() as u64;
            }
        }
        self.totals.add(&a.counts);
        let pending: Vec<ConnId> = self
            .lookups
            .iter()
            .filter(|(_, v)| v.0 == a.id)
            .map(|(k, _)| *k)
            .collect();
        for lookup in pending {
            self.lookups.remove(&lookup);
            self.resolver.forget(lookup);
        }
        if !self.quiet {
            let c = &a.counts;
            say!(
                "udp association closed: relay {} · up {} datagrams ({} B), down {} ({} B) · dropped: {} · kernel drops: {drops}",
                a.bnd, c.up, c.up_bytes, c.down, c.down_bytes, c.drops()
            );
        }
        todo!("close(2) the association's sockets: a.relay, and each of a.out that exists (close_fd); man 2 close");
    }
}

impl Admission for Associations {
    /// TCP CONNECTs go through as in lesson 12.
    fn admit(&mut self, _id: ConnId, _client: SocketAddr, _target: &Target) -> Verdict {
        Verdict::Allow
    }

    fn associate(
        &mut self,
        id: ConnId,
        control: &OwnedFd,
        client: SocketAddr,
        from: &Target,
    ) -> Result<SocketAddr, (Reply, String)> {
        self.open(id, control, client, from)
            .map_err(|why| (Reply::GeneralFailure, why))
    }

    fn watch<'a>(&'a self, fds: &mut Vec<PollFd<'a>>) {
        let mut watched = self.watched.borrow_mut();
        watched.clear();
        fds.push(PollFd::new(self.resolver.wake.as_fd(), PollFlags::POLLIN));
        watched.push((ConnId { slot: 0, serial: 0 }, Which::Resolver));
        for a in self.slots.iter().flatten() {
            fds.push(PollFd::new(a.relay.as_fd(), PollFlags::POLLIN));
            watched.push((a.id, Which::Relay));
            for (family, sock) in a.out.iter().enumerate() {
                if let Some(sock) = sock {
                    fds.push(PollFd::new(sock.as_fd(), PollFlags::POLLIN));
                    watched.push((a.id, Which::Out(family)));
                }
            }
        }
    }

    fn ready(
        &mut self,
        _now: Instant,
        revents: &[PollFlags],
        _verdicts: &mut Vec<(ConnId, Verdict)>,
    ) {
        let watched = std::mem::take(&mut *self.watched.borrow_mut());
        for (&(id, which), events) in watched.iter().zip(revents) {
            if events.is_empty() {
                continue;
            }
            let here = self
                .slots
                .get(id.slot)
                .and_then(Option::as_ref)
                .is_some_and(|a| a.id == id);
            match which {
                Which::Resolver => self.lookups_done(),
                Which::Relay if here => self.client_sent(id.slot),
                Which::Out(family) if here => self.targets_sent(id.slot, family),
                _ => {}
            }
        }
        *self.watched.borrow_mut() = watched;
    }

    /// The control connection ended (EOF, reset, Ctrl-C): so does the association.
    fn forget(&mut self, id: ConnId) {
        let Some(a) = self
            .slots
            .get_mut(id.slot)
            .and_then(|s| s.take_if(|a| a.id == id))
        else {
            return;
        };
        self.close(a);
    }

    fn summary(&self) -> Option<String> {
        Some(self.summary_line())
    }
}
