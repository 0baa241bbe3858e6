//! Lesson 18's plumbing: what happens to a packet once the lesson has it, and the words
//! around the capture. The lesson's own files make the calls (socket, setsockopt, bind,
//! recvfrom, the ring); this module prints tcpdump's line for a frame (read by
//! `protocols::packet`) or writes it to a pcap file (`protocols::pcap`), names the missing
//! privilege, and prints the counts at exit as tcpdump does.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::time::{Duration, SystemTime};

use protocols::packet::{self, LinkType, Relative};
use protocols::pcap;

/// Where captured frames go: one line each on stdout, or records of a pcap file.
pub struct Output {
    sink: Sink,
    relative: Relative,
    /// Frames handed to [`Output::frame`] so far.
    pub captured: u64,
}

enum Sink {
    Lines(BufWriter<io::Stdout>),
    Pcap(pcap::Writer<BufWriter<File>>),
}

impl Output {
    /// One tcpdump line per frame on stdout (flushed by [`Output::flush`], which the lesson
    /// calls after each batch, so a pipe sees lines as they come).
    pub fn lines() -> Output {
        Output {
            sink: Sink::Lines(BufWriter::with_capacity(64 * 1024, io::stdout())),
            relative: Relative::new(),
            captured: 0,
        }
    }

    /// A pcap file at `path` (`-w`): its global header now, a record per frame.
    pub fn pcap(path: &str, snaplen: u32) -> io::Result<Output> {
        let file = BufWriter::with_capacity(256 * 1024, File::create(path)?);
        Ok(Output {
            sink: Sink::Pcap(pcap::Writer::new(file, LinkType::Ethernet, snaplen)?),
            relative: Relative::new(),
            captured: 0,
        })
    }

    /// One frame captured at `time`: `data` is what was kept of it, `len` what the kernel
    /// said its length was (for a frame cut by the filter's snap length, its headers say more).
    pub fn frame(&mut self, time: Duration, data: &[u8], len: usize) -> io::Result<()> {
        self.captured += 1;
        let parsed = packet::parse_frame(data);
        let wire = parsed
            .as_ref()
            .ok()
            .and_then(packet::Frame::wire_len)
            .unwrap_or(0)
            .max(len)
            .max(data.len());
        match &mut self.sink {
            Sink::Pcap(w) => w.packet(time, data, wire as u32),
            Sink::Lines(out) => {
                let text = match &parsed {
                    Ok(frame) => packet::summary(frame, &mut self.relative),
                    Err(e) => format!("{e}"),
                };
                writeln!(out, "{} {text}", clock(time))
            }
        }
    }

    /// Hands what is buffered to the file or the pipe.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Lines(out) => out.flush(),
            Sink::Pcap(w) => w.flush(),
        }
    }
}

/// Now, since the Unix epoch (the recvfrom loop stamps each frame as it reads it).
pub fn now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// `HH:MM:SS.uuuuuu` in local time, as tcpdump starts its lines.
pub fn clock(time: Duration) -> String {
    let secs = time.as_secs() as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which is ours; a zeroed tm is valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = !unsafe { libc::localtime_r(&secs, &mut tm) }.is_null();
    let (h, m, s) = if ok {
        (tm.tm_hour, tm.tm_min, tm.tm_sec)
    } else {
        let day = (time.as_secs() % 86_400) as i32;
        (day / 3600, day / 60 % 60, day % 60)
    };
    format!("{h:02}:{m:02}:{s:02}.{:06}", time.subsec_micros())
}

/// Is `iface` a loopback device (ARPHRD_LOOPBACK in /sys/class/net/IFACE/type)? On one,
/// every packet passes the capture twice, going out and coming in.
pub fn is_loopback(iface: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/type"))
        .is_ok_and(|t| t.trim() == libc::ARPHRD_LOOPBACK.to_string())
}

/// The lines printed when socket(AF_PACKET) is refused for want of CAP_NET_RAW.
pub fn no_privilege(program: &str) -> [String; 2] {
    [
        "  capturing needs CAP_NET_RAW: run it as root, or in a user and network namespace of \
         your own, where you are root (the tests do this):"
            .to_string(),
        format!("  unshare -Urn sh -c 'ip link set lo up; {program} ...'"),
    ]
}

/// tcpdump's three lines at exit: `N packets captured`, `M packets received by filter`,
/// `K packets dropped by kernel` (M and K from PACKET_STATISTICS).
pub fn summary(captured: u64, received: u64, dropped: u64) -> [String; 3] {
    [
        format!("{captured} packets captured"),
        format!("{received} packets received by filter"),
        format!("{dropped} packets dropped by kernel"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_like_tcpdump() {
        let t = clock(Duration::new(1_700_000_000, 123_456_789));
        assert_eq!(t.len(), 15, "{t}");
        assert!(t.ends_with(".123456"), "{t}");
        assert_eq!(&t[2..3], ":");
    }

    #[test]
    fn exit_summary_names_what_tcpdump_names() {
        assert_eq!(
            summary(5, 7, 2),
            [
                "5 packets captured",
                "7 packets received by filter",
                "2 packets dropped by kernel"
            ]
        );
        assert!(no_privilege("lesson-18")[1].contains("unshare -Urn"));
    }
}
