//! The SOCKS5 UDP header of lesson 16's datagrams (RFC 1928 §7): one datagram per input.
//! The checks are in ../checks.rs, which protocols/tests/corpus.rs also mounts to replay the
//! seeds and saved crashes on stable.
#![no_main]

// Each target calls one of the checks; the others are another target's.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::socks5_udp(data));
