//! Just enough DNS (RFC 1035) for a test's own name server, sans-IO: read the question of a
//! query, and build its answer with A or AAAA records or an error code. The tests of lesson
//! 12's resolver (tests/socks5_dns.rs) and `provoke blocking-dns` answer the C library's
//! resolver with it inside a network namespace of their own.

use std::net::IpAddr;

/// QTYPE A (an IPv4 address).
pub const A: u16 = 1;
/// QTYPE AAAA (an IPv6 address).
pub const AAAA: u16 = 28;
/// RCODE: no such name.
pub const NXDOMAIN: u8 = 3;

/// The question of a query: the name (lower case), its QTYPE, and where it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    /// The offset just past the question (QNAME, QTYPE, QCLASS).
    pub end: usize,
}

/// Reads the (first) question of `query`; `None` if it is cut short.
pub fn question(query: &[u8]) -> Option<Question> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    query.get(at + 3)?;
    Some(Question {
        name: labels.join("."),
        qtype,
        end: at + 4,
    })
}

/// The answer to `query` (whose question is `q`): the header and question echoed, `rcode`,
/// and one record per address of the question's type (class IN, TTL 0).
pub fn answer(query: &[u8], q: &Question, rcode: u8, addrs: &[IpAddr]) -> Vec<u8> {
    let fits = |ip: &&IpAddr| match q.qtype {
        A => ip.is_ipv4(),
        AAAA => ip.is_ipv6(),
        _ => false,
    };
    let records: Vec<Vec<u8>> = addrs
        .iter()
        .filter(fits)
        .map(|ip| match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        })
        .collect();
    let mut reply = query[..q.end].to_vec();
    reply[2] = 0x81; // QR, RD
    reply[3] = 0x80 | (rcode & 0x0F); // RA, the rcode
    let count = (records.len() as u16).to_be_bytes();
    reply[6..12].copy_from_slice(&[count[0], count[1], 0, 0, 0, 0]);
    for ip in &records {
        // The name as a pointer to the question, the type, class IN, TTL 0, the address.
        let qtype = q.qtype.to_be_bytes();
        reply.extend_from_slice(&[0xC0, 12, qtype[0], qtype[1], 0, 1, 0, 0, 0, 0]);
        reply.extend_from_slice(&[0, ip.len() as u8]);
        reply.extend_from_slice(ip);
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A query for `name`, type `qtype`, as a resolver sends it (id 0x1234, RD).
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[test]
    fn a_question_is_read_and_answered_with_its_type_only() {
        let q = query("Fast.Test", A);
        let parsed = question(&q).unwrap();
        assert_eq!(parsed.name, "fast.test");
        assert_eq!((parsed.qtype, parsed.end), (A, q.len()));
        let addrs = [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        let reply = answer(&q, &parsed, 0, &addrs);
        assert_eq!(&reply[..2], &[0x12, 0x34]);
        assert_eq!(&reply[2..4], &[0x81, 0x80]);
        assert_eq!(&reply[6..8], &[0, 1], "one A record, the AAAA left out");
        assert_eq!(&reply[reply.len() - 6..], &[0, 4, 127, 0, 0, 1]);
        let q6 = query("v6only.test", AAAA);
        let reply = answer(&q6, &question(&q6).unwrap(), 0, &addrs);
        assert_eq!(&reply[6..8], &[0, 1]);
        assert_eq!(reply[reply.len() - 17], 16);
    }

    #[test]
    fn nxdomain_and_cut_queries() {
        let q = query("nope.test", A);
        let reply = answer(&q, &question(&q).unwrap(), NXDOMAIN, &[]);
        assert_eq!(reply[3], 0x83);
        assert_eq!(&reply[6..8], &[0, 0]);
        for cut in 0..q.len() {
            assert_eq!(question(&q[..cut]), None, "cut at {cut}");
        }
    }
}
