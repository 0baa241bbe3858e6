//! The frame parser (Ethernet, Linux cooked, raw IP; IPv4, IPv6, TCP, UDP), whole and cut
//! at the planned snap lengths.
//! The input's first bytes choose the chunks; the checks are in ../checks.rs, which
//! protocols/tests/corpus.rs also mounts to replay the seeds and saved crashes on stable.
#![no_main]

// Each target calls one of the checks; the others are another target's.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::packet(data));
