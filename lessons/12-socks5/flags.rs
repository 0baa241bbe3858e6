//! The relay's flags: microsocks' `-i -p -u -P -b`, plus the two timeouts.

use std::net::IpAddr;
use std::time::Duration;

use sockets_by_hand::cli::Listen;

#[derive(clap::Args, Debug, Clone)]
pub struct RelayArgs {
    #[command(flatten)]
    pub listen: Listen,

    /// Username clients must give (RFC 1929); needs -P. Without -u/-P no authentication
    /// is asked for.
    #[arg(short = 'u', long = "user", value_name = "USER", requires = "password")]
    pub user: Option<String>,

    /// Password clients must give (RFC 1929); needs -u.
    #[arg(short = 'P', long = "password", value_name = "PASS", requires = "user")]
    pub password: Option<String>,

    /// Source address of outgoing connections (bound before connect), as microsocks' -b.
    #[arg(short = 'b', long = "outgoing", value_name = "OUTGOING_ADDR")]
    pub outgoing: Option<IpAddr>,

    /// Seconds a connect(2) to one target address may take before the next is tried.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    pub connect_timeout: Duration,

    /// Seconds a client has to finish the SOCKS handshake (greeting, auth, request).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    pub handshake_timeout: Duration,
}

fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if secs > 0.0 && secs <= 86_400.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err("expected seconds between 0 and 86400".into())
    }
}

impl RelayArgs {
    /// The RFC 1929 username and password, when both are given.
    pub fn credentials(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let (user, password) = (self.user.as_ref()?, self.password.as_ref()?);
        Some((user.clone().into_bytes(), password.clone().into_bytes()))
    }

    /// The banner's notes about authentication and the outgoing address.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = vec![match &self.user {
            Some(user) if self.password.is_some() => {
                format!("auth: username/password (RFC 1929) required, user {user:?}")
            }
            _ => "auth: none (add -u USER -P PASS to require a password)".to_string(),
        }];
        if let Some(ip) = self.outgoing {
            notes.push(format!("outgoing connections from {ip}"));
        }
        notes
    }
}
