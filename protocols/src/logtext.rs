//! Untrusted text in a log line: host names a client sent, a Redis server's error messages.
//! Printed as is, a name holding `\n` forges a second log line, and one holding ESC
//! sequences recolours (or clears) the operator's terminal. [`Escaped`] prints printable
//! ASCII as is and every other byte as `\xNN` (a backslash as `\\`), and stops after
//! [`MAX_LOGGED`] bytes with a note of the full length, so one line stays one short line.

use std::fmt;

/// The most bytes of one untrusted string that a log line shows.
pub const MAX_LOGGED: usize = 256;

/// Displays untrusted bytes escaped and capped at [`MAX_LOGGED`].
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0.iter().take(MAX_LOGGED) {
            match b {
                b'\\' => f.write_str("\\\\")?,
                0x20..=0x7e => fmt::Write::write_char(f, b as char)?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        if self.0.len() > MAX_LOGGED {
            write!(f, "…({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_unchanged() {
        assert_eq!(Escaped(b"example.com").to_string(), "example.com");
    }

    #[test]
    fn newlines_and_escapes_cannot_forge_lines() {
        let name = b"x\nFAKE: admin logged in\n\x1b[31m\\";
        assert_eq!(
            Escaped(name).to_string(),
            "x\\x0aFAKE: admin logged in\\x0a\\x1b[31m\\\\"
        );
    }

    #[test]
    fn non_ascii_is_escaped_bytewise() {
        assert_eq!(Escaped("é".as_bytes()).to_string(), "\\xc3\\xa9");
    }

    #[test]
    fn long_text_is_capped() {
        let long = vec![b'a'; 8 << 20];
        let shown = Escaped(&long).to_string();
        assert_eq!(shown.len(), MAX_LOGGED + "…(8388608 bytes)".len());
        assert!(shown.ends_with("…(8388608 bytes)"));
    }
}
