//! The protocols of sockets-by-hand, sans-IO: each takes the bytes a connection received
//! and returns the bytes to send and what to do next. None of them touches a file
//! descriptor (this crate depends on std alone), so every I/O model runs the same code and
//! the tests cover it without sockets.
//!
//! - [`dns`]: just enough DNS for a test's own name server (tests/socks5_dns.rs, provoke);
//! - [`echo`]: the reverse-echo line protocol of lessons 03–11;
//! - [`socks5`]: the RFC 1928 handshake with RFC 1929 username/password, lessons 12–13;
//! - [`resp`]: the few RESP frames lesson 13 needs for its Redis allowlist;
//! - [`logtext`]: untrusted text (names, Redis errors) escaped and capped for a log line;
//! - [`whitelist`]: microsocks' `-w`/`-1`, the client addresses that may skip the password;
//! - [`packet`]: captured frames read layer by layer (Ethernet, IPv4, IPv6, TCP, UDP) and
//!   tcpdump's one line per packet, lesson 18;
//! - [`pcap`]: the classic pcap file format, written by lesson 18 and read back.

pub mod dns;
pub mod echo;
pub mod logtext;
pub mod packet;
pub mod pcap;
pub mod resp;
pub mod socks5;
pub mod whitelist;
