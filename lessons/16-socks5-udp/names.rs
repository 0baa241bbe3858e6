//! Names in datagrams' headers, resolved by lesson 12's resolver pool, never on the loop.
//! Read udp.rs first: this file continues its `impl Associations` (a child module, so it sees
//! the association's fields). A name is looked up once per association and kept a minute
//! (a failure, five seconds); the datagrams that arrive meanwhile wait with it, a few.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::admission::ConnId;
use crate::datagrams::ROOM;

use super::{count, Association, Associations, Drop};

/// Names an association keeps (resolved, failed or pending), and datagrams one waits with.
const NAMES: usize = 64;
const WAITING: usize = 16;
/// How long a looked-up name is reused, and how long a failure is.
const NAME_TTL: Duration = Duration::from_secs(60);
const FAILED_TTL: Duration = Duration::from_secs(5);

/// A name a client sends datagrams to, as this association knows it.
pub enum Name {
    /// Being looked up: the datagrams (payloads) waiting for the answer.
    Pending(Vec<Vec<u8>>),
    Resolved(SocketAddr, Instant),
    Failed(Instant),
}

impl Associations {
    // -- 3. Names: lesson 12's resolver pool, never the loop. ---------------------------------

    /// The address of `name`, if known; else the datagram waits for its lookup (a copy of
    /// its payload, bounded) and None.
    pub(super) fn name(
        &mut self,
        a: &mut Association,
        name: String,
        port: u16,
        used: usize,
        i: usize,
    ) -> Option<SocketAddr> {
        let now = Instant::now();
        let key = (name.to_ascii_lowercase(), port);
        match a.names.get_mut(&key) {
            Some(Name::Resolved(to, until)) if *until > now => return Some(*to),
            Some(Name::Failed(until)) if *until > now => {
                count(a, Drop::Name);
                return None;
            }
            Some(Name::Pending(waiting)) => {
                if waiting.len() < WAITING {
                    let got = self.batch.got[i];
                    waiting.push(self.batch.buf(i)[ROOM + used..ROOM + got.len].to_vec());
                } else {
                    count(a, Drop::Name);
                }
                return None;
            }
            _ => {}
        }
        a.names
            .retain(|_, n| !matches!(n, Name::Resolved(_, t) | Name::Failed(t) if *t <= now));
        if a.names.len() >= NAMES {
            count(a, Drop::Name);
            return None;
        }
        let got = self.batch.got[i];
        let payload = self.batch.buf(i)[ROOM + used..ROOM + got.len].to_vec();
        a.names.insert(key.clone(), Name::Pending(vec![payload]));
        self.serial += 1;
        let lookup = ConnId {
            slot: a.id.slot,
            serial: self.serial,
        };
        self.lookups.insert(lookup, (a.id, key.0.clone(), port));
        self.resolver
            .lookup(lookup, &key.0, port, now + Duration::from_secs(10));
        None
    }

    /// The resolver's pipe woke the loop: send what waited for each answer.
    pub(super) fn lookups_done(&mut self) {
        for (lookup, result) in self.resolver.done() {
            let Some((id, name, port)) = self.lookups.remove(&lookup) else {
                continue;
            };
            let Some(mut a) = self
                .slots
                .get_mut(id.slot)
                .and_then(|s| s.take_if(|a| a.id == id))
            else {
                continue;
            };
            let now = Instant::now();
            let fits =
                |to: &SocketAddr| self.outgoing.is_none_or(|ip| ip.is_ipv4() == to.is_ipv4());
            let to = result.ok().and_then(|addrs| addrs.into_iter().find(fits));
            let state = match to {
                Some(to) => Name::Resolved(to, now + NAME_TTL),
                None => Name::Failed(now + FAILED_TTL),
            };
            let waiting = match a.names.insert((name, port), state) {
                Some(Name::Pending(waiting)) => waiting,
                _ => Vec::new(),
            };
            match to {
                Some(to) => {
                    for payload in waiting {
                        let len = payload.len();
                        self.batch.buf(0)[ROOM..ROOM + len].copy_from_slice(&payload);
                        self.queue_up(&mut a, 0, ROOM, ROOM + len, to);
                        self.flush_up(&mut a);
                    }
                }
                None => a.counts.dropped[Drop::Name as usize] += waiting.len() as u64,
            }
            self.slots[id.slot] = Some(a);
        }
    }
}
