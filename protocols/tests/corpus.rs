//! Replays the fuzz targets' committed seeds (protocols/fuzz/seeds/TARGET/) and every input
//! that ever crashed one (protocols/fuzz/crashes/TARGET/) through the same checks the
//! targets run (protocols/fuzz/checks.rs, mounted here), on stable and with no fuzzing
//! engine: deterministic, so `make test` keeps every fuzz finding fixed.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

/// The files in `protocols/fuzz/<kind>/<target>/`, sorted; none if the folder is missing.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    files.retain(|p| p.is_file());
    files.sort();
    files
}

/// Runs `check` on every seed and saved crash of `target`; returns how many seeds ran.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let seeds = inputs("seeds", target);
    for path in seeds.iter().chain(&inputs("crashes", target)) {
        let data = std::fs::read(path).unwrap();
        let name = path.display().to_string();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{name}: the {target} check failed (its message is above)");
        }
    }
    seeds.len()
}

#[test]
fn socks5_handshake_seeds_and_crashes() {
    assert!(replay("socks5_handshake", checks::socks5_handshake) >= 10);
}

#[test]
fn resp_seeds_and_crashes() {
    assert!(replay("resp", checks::resp) >= 5);
}

#[test]
fn echo_seeds_and_crashes() {
    assert!(replay("echo", checks::echo) >= 5);
}

/// The chunk plan itself: sizes are cycled, zeros feed empty slices, the stream is whole
/// when there are no sizes, and nothing is lost or reordered.
#[test]
fn plan_cuts_the_stream_as_documented() {
    let data = [2 | (1 << 3), 0, 2, b'a', b'b', b'c', b'd', b'e'];
    let plan = checks::Plan::of(&data);
    assert_eq!(plan.flags, 1);
    let chunks = plan.chunks();
    assert_eq!(chunks, [&b""[..], b"ab", b"", b"cd", b"", b"e"]);
    assert_eq!(chunks.concat(), b"abcde");
    assert_eq!(checks::Plan::of(&[0, b'x', b'y']).chunks(), [&b"xy"[..]]);
    assert_eq!(checks::Plan::of(&[3, 0, 0, 0, b'x']).chunks(), [&b"x"[..]]);
    assert_eq!(checks::Plan::of(&[7, 1]).chunks(), [&b""[..]]);
    assert!(checks::Plan::of(&[]).stream.is_empty());
}

/// The echo line limit, out of the fuzz inputs' reach: every length and cut around it.
#[test]
fn echo_line_limit_sweep() {
    checks::echo_limit_sweep();
}

#[test]
fn packet_seeds_and_crashes() {
    assert!(replay("packet", checks::packet) >= 10);
}

#[test]
fn pcap_seeds_and_crashes() {
    assert!(replay("pcap", checks::pcap) >= 5);
}

/// The frame and pcap seeds are what their names say, so the fuzzer starts from real
/// frames: a SYN reads as one, and the two-packet file holds a SYN and a SYN-ACK.
#[test]
fn packet_and_pcap_seeds_are_real() {
    use protocols::packet::{parse_frame, Frame};
    let seed = |target: &str, name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target)
            .join(name);
        std::fs::read(path).unwrap()
    };
    let syn = seed("packet", "syn-v4-whole");
    let frame: Frame = parse_frame(&syn[1..]).unwrap();
    let tcp = frame.tcp().unwrap();
    assert!(tcp.flags.syn() && tcp.options.mss == Some(65495));
    let file = seed("pcap", "two-packets-le-micros");
    let packets: Vec<_> = protocols::pcap::Reader::new(&file[1..])
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let flags: Vec<String> = packets
        .iter()
        .map(|p| {
            parse_frame(&p.data)
                .unwrap()
                .tcp()
                .unwrap()
                .flags
                .to_string()
        })
        .collect();
    assert_eq!(flags, ["S", "S."]);
}
