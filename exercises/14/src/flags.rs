//! The relay's flags: microsocks' `-i -p -u -P -b -q -w -1`, plus the two timeouts.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{bind, socket, SockFlag, SockType};
use nix::unistd::close;
use sockets_by_hand::cli::{say_line, Listen};
use sockets_by_hand::errors::{describe, report, OrDie};
use sockets_by_hand::net;

#[derive(clap::Args, Debug, Clone)]
pub struct RelayArgs {
    #[command(flatten)]
    pub listen: Listen,

    /// Username clients must give (RFC 1929); needs -P. Without -u/-P no authentication
    /// is asked for.
    #[arg(short = 'u', long = "user", value_name = "USER", requires = "password", value_parser = rfc1929)]
    pub user: Option<String>,

    /// Password clients must give (RFC 1929); needs -u.
    #[arg(short = 'P', long = "password", value_name = "PASS", requires = "user", value_parser = rfc1929)]
    pub password: Option<String>,

    /// Source address of outgoing connections (bound before connect), as microsocks' -b.
    #[arg(short = 'b', long = "outgoing", value_name = "OUTGOING_ADDR")]
    pub outgoing: Option<IpAddr>,

    /// Quiet: no log line per connection (microsocks' -q).
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Client addresses that may use the proxy without -u/-P's password, comma-separated
    /// (microsocks' -w); needs -u/-P.
    #[arg(
        short = 'w',
        long,
        value_name = "IP[,IP...]",
        value_delimiter = ',',
        requires = "user"
    )]
    pub whitelist: Vec<IpAddr>,

    /// Auth-once: a client address that logs in once joins the whitelist (microsocks' -1);
    /// needs -u/-P. The list keeps the last 4,096 addresses: the oldest is dropped.
    #[arg(short = '1', long, requires = "user")]
    pub auth_once: bool,

    /// Seconds a connect(2) to one target address may take before the next is tried.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    pub connect_timeout: Duration,

    /// Seconds a client has to finish the SOCKS handshake (greeting, auth, request).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    pub handshake_timeout: Duration,
}

/// A timeout: from a millisecond (0.001) to a day (86400); shorter would cut every client.
pub fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if (0.001..=86_400.0).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err("expected seconds from 0.001 to 86400".into())
    }
}

/// RFC 1929 sends the username and the password with a one-byte length, and at least one
/// byte each: 1 to 255 bytes, or no client could ever log in.
fn rfc1929(text: &str) -> Result<String, String> {
    match text.len() {
        1..=255 => Ok(text.to_string()),
        n => Err(format!("RFC 1929 needs 1 to 255 bytes, not {n}")),
    }
}

impl RelayArgs {
    /// The RFC 1929 username and password, when both are given.
    pub fn credentials(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let (user, password) = (self.user.as_ref()?, self.password.as_ref()?);
        Some((user.clone().into_bytes(), password.clone().into_bytes()))
    }

    /// `-b` must be an address of this machine: bind(2) a test socket to it at start, so a
    /// wrong `-b` stops the proxy (status 1, the failing call named) instead of failing
    /// every CONNECT later.
    pub fn check_outgoing(&self) {
        let Some(ip) = self.outgoing else { return };
        let from = SocketAddr::new(ip, 0);
        // socket(2), then bind(2) to the -b address, port 0: does this machine have it?
        let sock = socket(
            net::family(&from),
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .or_die("socket");
        if let Err(errno) = bind(sock.as_raw_fd(), net::sockaddr(from).as_ref()) {
            let why = describe("bind", errno);
            say_line(format!("-b {ip}: {why}: not an address of this machine"));
            std::process::exit(1);
        }
        // close(2): the test socket has told us what we needed.
        if let Err(errno) = close(sock) {
            report("close", errno);
        }
    }

    /// The banner's notes about authentication and the outgoing address.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = vec![match &self.user {
            Some(user) if self.password.is_some() => {
                format!("auth: username/password (RFC 1929) required, user {user:?}")
            }
            _ => "auth: none (add -u USER -P PASS to require a password)".to_string(),
        }];
        if !self.whitelist.is_empty() {
            notes.push(format!("whitelist (no password): {:?}", self.whitelist));
        }
        if self.auth_once {
            let max = protocols::whitelist::AUTH_ONCE_MAX;
            notes.push(format!(
                "auth-once: a client that logs in joins the whitelist (last {max})"
            ));
        }
        if let Some(ip) = self.outgoing {
            notes.push(format!("outgoing connections from {ip}"));
        }
        if self.quiet {
            notes.push("quiet: no line per connection (-q)".into());
        }
        let ip = self.listen.addr().ip();
        if !ip.is_loopback() && self.user.is_none() {
            // First, before the auth note: a warning is read first.
            let warning = format!(
                "WARNING: open proxy: on {ip} without -u/-P, anyone who can reach this \
                 machine may relay through it, to any host and to its loopback-only services"
            );
            notes.insert(0, warning);
        }
        notes
    }
}
