//! The reverse-echo line protocol of lessons 03–11, sans-IO.
//!
//! An [`Echo`] value is one connection's protocol state. The server feeds it whatever bytes
//! `read(2)` returned and gets back, appended to a buffer it owns, the bytes to send; the
//! returned [`Status`] says whether to keep the connection open. It never touches a file
//! descriptor, so every I/O model (blocking, fork, threads, select, poll, epoll, io_uring)
//! runs the very same protocol, and the tests below cover it without sockets.
//!
//! The protocol:
//! - on connect the server sends [`WELCOME`];
//! - every line (ended by `\n`, one trailing `\r` stripped) is answered with the line
//!   reversed by Unicode characters (bytewise where it is not valid UTF-8) and `\n`;
//!   "characters" are code points, not grapheme clusters: a decomposed `é` (e + U+0301) or
//!   a flag comes back altered (a known limit, see docs/lessons/03-interactive.md);
//! - the line `q` closes the connection, after the replies to earlier lines;
//! - a line longer than [`MAX_LINE`] bytes is answered [`TOO_LONG`] and the connection closes.
//!
//! Memory is bounded: at most `MAX_LINE + 1` bytes of an unfinished line are held, and the
//! replies to one `feed` are never longer than its input plus [`TOO_LONG`].

/// Sent once, as soon as a connection is accepted.
pub const WELCOME: &[u8] = b"Welcome buddy!\n";
/// The longest line (without its `\n` and `\r`) that gets an answer.
pub const MAX_LINE: usize = 65_536;
/// The answer to a longer line; the connection closes after it.
pub const TOO_LONG: &[u8] = b"error: line too long\n";

/// What the server does after a [`Echo::feed`]: send what was appended, then keep going or
/// close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Keep reading.
    Open,
    /// The client sent `q`: send the replies, then close.
    Quit,
    /// The client sent a line over [`MAX_LINE`]: send the replies and [`TOO_LONG`], then close.
    TooLong,
}

impl Status {
    /// True while the connection should stay open.
    pub fn is_open(self) -> bool {
        self == Status::Open
    }
}

/// One connection's protocol state: the unfinished line, and whether it has ended.
#[derive(Debug)]
pub struct Echo {
    partial: Vec<u8>,
    status: Status,
}

impl Default for Echo {
    fn default() -> Self {
        Self::new()
    }
}

impl Echo {
    /// A fresh connection (send [`WELCOME`] yourself: it is not a reply to anything).
    pub fn new() -> Self {
        Echo {
            partial: Vec::new(),
            status: Status::Open,
        }
    }

    /// [`Status::Open`] until `q` or an over-long line has been seen.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Bytes of an unfinished line held since the last `\n`.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Consumes `input`, appends the replies to `out`, and says what to do next. Once the
    /// status is not [`Status::Open`], further input is ignored.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Status {
        if !self.status.is_open() {
            return self.status;
        }
        // First finish a line left over from an earlier read.
        if !self.partial.is_empty() {
            match input.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    if self.partial.len() + end > MAX_LINE + 1 {
                        return self.too_long(out);
                    }
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&input[..end]);
                    self.status = answer(&line, out);
                    line.clear();
                    self.partial = line; // keep the allocation for the next partial line
                    input = &input[end + 1..];
                    if !self.status.is_open() {
                        return self.status;
                    }
                }
                None => return self.hold(input, out),
            }
        }
        // Then every complete line straight from the input, without copying it.
        while let Some(end) = input.iter().position(|&b| b == b'\n') {
            self.status = answer(&input[..end], out);
            input = &input[end + 1..];
            if !self.status.is_open() {
                return self.status;
            }
        }
        self.hold(input, out)
    }

    /// Keeps the start of an unfinished line. A line is known to be too long once more than
    /// `MAX_LINE + 1` bytes are held (one of them may be the `\r` that will be stripped).
    fn hold(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Status {
        if self.partial.len() + rest.len() > MAX_LINE + 1 {
            return self.too_long(out);
        }
        self.partial.extend_from_slice(rest);
        self.status
    }

    fn too_long(&mut self, out: &mut Vec<u8>) -> Status {
        out.extend_from_slice(TOO_LONG);
        self.partial = Vec::new();
        self.status = Status::TooLong;
        self.status
    }
}

/// Answers one complete line (without its `\n`).
fn answer(line: &[u8], out: &mut Vec<u8>) -> Status {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        out.extend_from_slice(TOO_LONG);
        return Status::TooLong;
    }
    if line == b"q" {
        return Status::Quit;
    }
    reverse_into(line, out);
    out.push(b'\n');
    Status::Open
}

/// Appends `line` reversed: by Unicode characters where it is valid UTF-8 (so `héllo`
/// becomes `olléh`, not broken bytes), bytewise where it is not.
pub fn reverse_into(line: &[u8], out: &mut Vec<u8>) {
    if line.is_ascii() {
        out.extend(line.iter().rev());
        return;
    }
    match std::str::from_utf8(line) {
        Ok(text) => {
            let mut utf8 = [0u8; 4];
            for c in text.chars().rev() {
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
        Err(_) => out.extend(line.iter().rev()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, Status) {
        let mut echo = Echo::new();
        let mut out = Vec::new();
        let mut status = Status::Open;
        for chunk in chunks {
            status = echo.feed(chunk, &mut out);
        }
        (out, status)
    }

    #[test]
    fn reverses_a_line() {
        assert_eq!(run(&[b"hello\n"]), (b"olleh\n".to_vec(), Status::Open));
    }

    #[test]
    fn strips_one_carriage_return() {
        assert_eq!(run(&[b"abc\r\n"]).0, b"cba\n");
        assert_eq!(run(&[b"abc\r\r\n"]).0, b"\rcba\n");
    }

    #[test]
    fn empty_line_gets_empty_reply() {
        assert_eq!(run(&[b"\n", b"\r\n"]).0, b"\n\n");
    }

    #[test]
    fn lines_split_across_reads() {
        assert_eq!(run(&[b"ab", b"c", b"\r", b"\nde", b"f\n"]).0, b"cba\nfed\n");
    }

    #[test]
    fn several_lines_in_one_read() {
        assert_eq!(run(&[b"one\ntwo\nthree\n"]).0, b"eno\nowt\neerht\n");
    }

    #[test]
    fn unicode_reversed_by_characters() {
        assert_eq!(
            run(&["héllo wörld 🦀\n".as_bytes()]).0,
            "🦀 dlröw olléh\n".as_bytes()
        );
    }

    /// The known limit: code points, not grapheme clusters. The combining accent of a
    /// decomposed `é` moves to the letter before it; a flag's two halves swap.
    #[test]
    fn code_points_not_graphemes() {
        assert_eq!(run(&["xe\u{301}\n".as_bytes()]).0, "\u{301}ex\n".as_bytes());
        assert_eq!(run(&["🇫🇷\n".as_bytes()]).0, "🇷🇫\n".as_bytes());
    }

    #[test]
    fn invalid_utf8_reversed_bytewise() {
        assert_eq!(run(&[b"a\xffb\xc3\n"]).0, b"\xc3b\xffa\n");
    }

    #[test]
    fn q_closes_after_earlier_replies() {
        let (out, status) = run(&[b"abc\nq\nnever\n"]);
        assert_eq!(out, b"cba\n");
        assert_eq!(status, Status::Quit);
        let (out, status) = run(&[b"abc\nq\r\n"]);
        assert_eq!((out.as_slice(), status), (&b"cba\n"[..], Status::Quit));
    }

    #[test]
    fn q_only_as_whole_line() {
        assert_eq!(run(&[b"q \nqq\n"]), (b" q\nqq\n".to_vec(), Status::Open));
    }

    #[test]
    fn input_after_close_is_ignored() {
        let mut echo = Echo::new();
        let mut out = Vec::new();
        assert_eq!(echo.feed(b"q\n", &mut out), Status::Quit);
        assert_eq!(echo.feed(b"abc\n", &mut out), Status::Quit);
        assert!(out.is_empty());
    }

    #[test]
    fn longest_line_is_answered() {
        let mut line = vec![b'x'; MAX_LINE];
        line.extend_from_slice(b"\r\n");
        let (out, status) = run(&[&line[..MAX_LINE / 2], &line[MAX_LINE / 2..]]);
        assert_eq!(status, Status::Open);
        assert_eq!(out.len(), MAX_LINE + 1);
    }

    #[test]
    fn over_long_line_is_refused_whole_or_split() {
        let mut line = vec![b'x'; MAX_LINE + 1];
        line.push(b'\n');
        assert_eq!(run(&[&line]), (TOO_LONG.to_vec(), Status::TooLong));
        let (out, status) = run(&[b"ok\n", &line[..10], &line[10..]]);
        assert_eq!(out, [&b"ko\n"[..], TOO_LONG].concat());
        assert_eq!(status, Status::TooLong);
    }

    #[test]
    fn endless_line_is_refused_without_buffering_it() {
        let mut echo = Echo::new();
        let mut out = Vec::new();
        let chunk = vec![b'y'; 4096];
        let mut status = Status::Open;
        for _ in 0..64 {
            status = echo.feed(&chunk, &mut out);
            assert!(echo.buffered() <= MAX_LINE + 1);
        }
        assert_eq!(status, Status::TooLong);
        assert_eq!(out, TOO_LONG);
    }

    /// Input streams that reach every branch: ASCII, UTF-8, invalid bytes, CR, empty lines,
    /// the odd `q`, and now and then a line near the limit.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            8 => proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'\n'), Just(b'\r'), any::<u8>()], 0..40),
            2 => "[a-zé🦀 ]{0,12}\r?\n".prop_map(String::into_bytes),
            1 => Just(b"q\n".to_vec()),
            1 => (MAX_LINE - 2..MAX_LINE + 3).prop_map(|n| { let mut v = vec![b'z'; n]; v.push(b'\n'); v }),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any split of an input stream into chunks gives exactly the replies (and the
        /// ending) that feeding it whole gives.
        #[test]
        fn chunking_does_not_matter(input in stream(), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20)) {
            let whole = run(&[&input]);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
            points.push(0);
            points.push(input.len());
            points.sort_unstable();
            let chunks: Vec<&[u8]> = points.windows(2).map(|w| &input[w[0]..w[1]]).collect();
            prop_assert_eq!(run(&chunks), whole);
        }

        /// Byte by byte, the extreme split, also agrees.
        #[test]
        fn byte_by_byte(input in stream()) {
            let chunks: Vec<&[u8]> = input.chunks(1).collect();
            prop_assert_eq!(run(&chunks), run(&[&input]));
        }

        /// Replies never outgrow the input (plus the one error line): no amplification.
        #[test]
        fn replies_bounded_by_input(input in stream()) {
            let (out, _) = run(&[&input]);
            prop_assert!(out.len() <= input.len() + TOO_LONG.len());
        }

        /// Reversing valid UTF-8 twice gives the line back.
        #[test]
        fn reverse_twice_is_identity(s in "\\PC{0,40}") {
            let mut once = Vec::new();
            reverse_into(s.as_bytes(), &mut once);
            let mut twice = Vec::new();
            reverse_into(&once, &mut twice);
            prop_assert_eq!(twice, s.into_bytes());
        }
    }
}
