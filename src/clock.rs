//! The clock of lessons 01 and 02: the local time as RFC 3339, and the greeting that
//! carries it, `Hello there! <local time>\n`.

/// `Hello there! 2026-11-24T23:45:01+01:00\n`, in the machine's local time zone.
pub fn greeting() -> String {
    format!("Hello there! {}\n", rfc3339_now())
}

/// Reads the time zone now: glibc opens /etc/localtime on the first `localtime_r`, and a
/// lesson that calls this before its first `socket()` keeps that out of its trace.
pub fn load_time_zone() {
    rfc3339_now();
}

/// The local time as RFC 3339 with the zone's offset, e.g. `2026-11-24T23:45:01+01:00`.
pub fn rfc3339_now() -> String {
    // SAFETY: time(NULL) only reads the clock; localtime_r writes into our own `tm`.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return String::from("1970-01-01T00:00:00Z");
        }
        tm
    };
    format_rfc3339(&tm)
}

fn format_rfc3339(tm: &libc::tm) -> String {
    let offset = tm.tm_gmtoff;
    let sign = if offset < 0 { '-' } else { '+' };
    let minutes = offset.abs() / 60;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        sign,
        minutes / 60,
        minutes % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_offset() {
        // SAFETY: an all-zero tm is a valid value of the plain C struct.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        tm.tm_year = 126;
        tm.tm_mon = 10;
        tm.tm_mday = 24;
        tm.tm_hour = 23;
        tm.tm_min = 5;
        tm.tm_sec = 9;
        tm.tm_gmtoff = -(5 * 3600 + 30 * 60);
        assert_eq!(format_rfc3339(&tm), "2026-11-24T23:05:09-05:30");
        tm.tm_gmtoff = 3600;
        assert_eq!(format_rfc3339(&tm), "2026-11-24T23:05:09+01:00");
    }

    #[test]
    fn greeting_shape() {
        let g = greeting();
        assert!(
            g.starts_with("Hello there! 20") && g.ends_with('\n'),
            "{g:?}"
        );
        assert_eq!(g.len(), "Hello there! 2026-11-24T23:05:09+01:00\n".len());
    }
}
