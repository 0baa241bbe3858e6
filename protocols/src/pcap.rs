//! The classic pcap file format (what `tcpdump -w` writes and `tcpdump -r`, `tshark -r` and
//! Wireshark read), written and read over any `std::io::Write`/`Read`.
//!
//! A file is a 24-byte global header (magic, version 2.4, time zone 0, sigfigs 0, snap
//! length, link type), then one record per packet: a 16-byte header (seconds, micro- or
//! nanoseconds, captured length, original length) and the captured bytes. [`Writer`] writes
//! microsecond files in this machine's byte order, as libpcap does; [`Reader`] reads either
//! byte order, microseconds or nanoseconds.

use crate::packet::LinkType;
use std::fmt;
use std::io::{self, Read, Write};
use std::time::Duration;

/// The magic number of a microsecond pcap file.
pub const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
/// The magic number of a nanosecond pcap file.
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// The global header's length.
pub const HEADER_LEN: usize = 24;
/// A packet record header's length.
pub const RECORD_HEADER_LEN: usize = 16;
/// The largest captured length [`Reader`] accepts, whatever the file's snap length says
/// (tcpdump's own limit is 262,144; this leaves room for 64 KiB segments and more).
pub const MAX_CAPTURED: u32 = 1 << 20;

/// Writes a pcap file: the global header on [`Writer::new`], one record per
/// [`Writer::packet`]. Buffer `out` (a `BufWriter`) yourself when it is a file.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    snaplen: u32,
}

impl<W: Write> Writer<W> {
    /// Writes the global header for `link` frames of at most `snaplen` bytes.
    pub fn new(mut out: W, link: LinkType, snaplen: u32) -> io::Result<Writer<W>> {
        let mut header = [0u8; HEADER_LEN];
        header[0..4].copy_from_slice(&MAGIC_MICROS.to_ne_bytes());
        header[4..6].copy_from_slice(&2u16.to_ne_bytes());
        header[6..8].copy_from_slice(&4u16.to_ne_bytes());
        // thiszone and sigfigs: 0.
        header[16..20].copy_from_slice(&snaplen.to_ne_bytes());
        header[20..24].copy_from_slice(&link.code().to_ne_bytes());
        out.write_all(&header)?;
        Ok(Writer { out, snaplen })
    }

    /// Writes one packet captured at `time` (since the Unix epoch) whose first bytes are
    /// `data` (cut to the snap length here if longer) and whose length on the wire was
    /// `orig_len`.
    pub fn packet(&mut self, time: Duration, data: &[u8], orig_len: u32) -> io::Result<()> {
        let caplen = data.len().min(self.snaplen as usize);
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[0..4].copy_from_slice(&(time.as_secs() as u32).to_ne_bytes());
        header[4..8].copy_from_slice(&time.subsec_micros().to_ne_bytes());
        header[8..12].copy_from_slice(&(caplen as u32).to_ne_bytes());
        header[12..16].copy_from_slice(&orig_len.max(caplen as u32).to_ne_bytes());
        self.out.write_all(&header)?;
        self.out.write_all(&data[..caplen])
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The output, for the caller to flush or close.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Why a file could not be read.
#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    /// Not a pcap file (pcapng, or not a capture at all): the first four bytes.
    BadMagic(u32),
    /// A link type this crate does not read.
    UnknownLinkType(u32),
    /// A record longer than its original length, or than [`MAX_CAPTURED`].
    BadRecord {
        caplen: u32,
        orig_len: u32,
    },
    /// The file ends inside a record.
    Truncated,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::BadMagic(m) => write!(f, "not a pcap file (magic 0x{m:08x})"),
            Error::UnknownLinkType(t) => write!(f, "link type {t} is not read here"),
            Error::BadRecord { caplen, orig_len } => {
                write!(f, "bad record: {caplen} bytes captured of {orig_len}")
            }
            Error::Truncated => write!(f, "the file ends inside a record"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// One record of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Since the Unix epoch.
    pub time: Duration,
    /// The length on the wire; `data` may be shorter (the snap length).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// Reads a pcap file record by record.
#[derive(Debug)]
pub struct Reader<R: Read> {
    input: R,
    swapped: bool,
    nanos: bool,
    link: LinkType,
    snaplen: u32,
}

impl<R: Read> Reader<R> {
    /// Reads and checks the global header.
    pub fn new(mut input: R) -> Result<Reader<R>, Error> {
        let mut header = [0u8; HEADER_LEN];
        if !read_full(&mut input, &mut header)? {
            return Err(Error::Truncated);
        }
        let magic = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]);
        let (swapped, nanos) = match magic {
            MAGIC_MICROS => (false, false),
            MAGIC_NANOS => (false, true),
            m if m.swap_bytes() == MAGIC_MICROS => (true, false),
            m if m.swap_bytes() == MAGIC_NANOS => (true, true),
            m => return Err(Error::BadMagic(u32::from_be_bytes(m.to_ne_bytes()))),
        };
        let word = |at: usize| {
            let v =
                u32::from_ne_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
            if swapped {
                v.swap_bytes()
            } else {
                v
            }
        };
        let snaplen = word(16);
        // The upper 16 bits may carry FCS information; the link type is the low 16.
        let code = word(20) & 0xffff;
        let link = LinkType::from_code(code).ok_or(Error::UnknownLinkType(code))?;
        Ok(Reader {
            input,
            swapped,
            nanos,
            link,
            snaplen,
        })
    }

    /// The file's link type.
    pub fn link_type(&self) -> LinkType {
        self.link
    }

    /// The snap length the file's header names.
    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    /// Whether the file's times are in nanoseconds.
    pub fn nanos(&self) -> bool {
        self.nanos
    }

    /// The next record, or `None` at the end of the file.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, Error> {
        let mut header = [0u8; RECORD_HEADER_LEN];
        if !read_full(&mut self.input, &mut header)? {
            return Ok(None);
        }
        let word = |at: usize| {
            let v =
                u32::from_ne_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
            if self.swapped {
                v.swap_bytes()
            } else {
                v
            }
        };
        let (secs, frac, caplen, orig_len) = (word(0), word(4), word(8), word(12));
        if caplen > MAX_CAPTURED || caplen > orig_len {
            return Err(Error::BadRecord { caplen, orig_len });
        }
        let nanos = if self.nanos {
            frac.min(999_999_999)
        } else {
            frac.min(999_999) * 1000
        };
        let mut data = vec![0u8; caplen as usize];
        if !read_full(&mut self.input, &mut data)? && caplen > 0 {
            return Err(Error::Truncated);
        }
        Ok(Some(Packet {
            time: Duration::new(u64::from(secs), nanos),
            orig_len,
            data,
        }))
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Packet, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_packet().transpose()
    }
}

/// Fills `buf`; `Ok(false)` if the input ended before the first byte, `Truncated` if it
/// ended after it.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<bool, Error> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(Error::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_libpcap_writes_and_reads_it_back() {
        let mut w = Writer::new(Vec::new(), LinkType::Ethernet, 96).unwrap();
        let t = Duration::new(1_700_000_000, 123_456_789);
        w.packet(t, &[1u8; 100], 100).unwrap();
        w.packet(t + Duration::from_micros(5), &[2u8; 10], 10)
            .unwrap();
        let bytes = w.into_inner();
        assert_eq!(bytes.len(), HEADER_LEN + 2 * RECORD_HEADER_LEN + 96 + 10);
        // The global header, field by field.
        assert_eq!(&bytes[0..4], &MAGIC_MICROS.to_ne_bytes());
        assert_eq!(
            &bytes[4..8],
            &[2u16.to_ne_bytes(), 4u16.to_ne_bytes()].concat()[..]
        );
        assert_eq!(&bytes[8..16], &[0; 8]);
        assert_eq!(&bytes[16..20], &96u32.to_ne_bytes());
        assert_eq!(&bytes[20..24], &1u32.to_ne_bytes());

        let mut r = Reader::new(&bytes[..]).unwrap();
        assert_eq!(
            (r.link_type(), r.snaplen(), r.nanos()),
            (LinkType::Ethernet, 96, false)
        );
        let p = r.next_packet().unwrap().unwrap();
        assert_eq!(p.time, Duration::new(1_700_000_000, 123_456_000));
        assert_eq!((p.orig_len, p.data), (100, vec![1u8; 96]));
        let p = r.next_packet().unwrap().unwrap();
        assert_eq!((p.orig_len, p.data.len()), (10, 10));
        assert!(r.next_packet().unwrap().is_none());
    }

    #[test]
    fn reads_the_other_byte_order_and_nanoseconds() {
        let mut f = Vec::new();
        let be = |v: u32| v.to_be_bytes();
        f.extend_from_slice(&be(MAGIC_NANOS));
        f.extend_from_slice(&[0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&be(65535));
        f.extend_from_slice(&be(113));
        f.extend_from_slice(&be(7));
        f.extend_from_slice(&be(999));
        f.extend_from_slice(&be(3));
        f.extend_from_slice(&be(50));
        f.extend_from_slice(b"abc");
        // Read as big-endian data on any machine: the magic's byte order decides.
        let r = Reader::new(&f[..]).unwrap();
        assert_eq!(r.link_type(), LinkType::LinuxSll);
        assert!(r.nanos());
        let all: Vec<Packet> = r.map(Result::unwrap).collect();
        assert_eq!(
            all,
            [Packet {
                time: Duration::new(7, 999),
                orig_len: 50,
                data: b"abc".to_vec()
            }]
        );
    }

    #[test]
    fn refuses_what_is_not_a_pcap_file() {
        assert!(matches!(Reader::new(&b"short"[..]), Err(Error::Truncated)));
        let pcapng = [0x0a, 0x0d, 0x0d, 0x0a].repeat(6);
        assert!(matches!(
            Reader::new(&pcapng[..]),
            Err(Error::BadMagic(0x0a0d0d0a))
        ));
        let mut w = Writer::new(Vec::new(), LinkType::Ethernet, 64).unwrap();
        w.packet(Duration::ZERO, b"0123456789", 10).unwrap();
        let good = w.into_inner();
        // Cut inside a record's data, and inside its header.
        for cut in [good.len() - 1, HEADER_LEN + 3] {
            let mut r = Reader::new(&good[..cut]).unwrap();
            assert!(matches!(r.next_packet(), Err(Error::Truncated)));
        }
        // A captured length over the original one.
        let mut bad = good.clone();
        bad[HEADER_LEN + 12..HEADER_LEN + 16].copy_from_slice(&5u32.to_ne_bytes());
        let mut r = Reader::new(&bad[..]).unwrap();
        assert!(matches!(r.next_packet(), Err(Error::BadRecord { .. })));
        // An unknown link type.
        let mut bad = good;
        bad[20..24].copy_from_slice(&9999u32.to_ne_bytes());
        assert!(matches!(
            Reader::new(&bad[..]),
            Err(Error::UnknownLinkType(9999))
        ));
    }
}
