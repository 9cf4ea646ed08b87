//! `[outbound]` (the delivery side), `[[relay]]` (domains we filter for and pass on) and
//! `smtp.relay_networks` (clients that may relay anywhere).

use serde::{Deserialize, Deserializer};
use std::net::IpAddr;
use std::time::Duration;

/// A duration as written in the config: `30s`, `5m`, `4h`, `5d`, or `0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Span {
    pub fn parse(s: &str) -> Result<Span, String> {
        let s = s.trim();
        if s == "0" {
            return Ok(Span(Duration::ZERO));
        }
        let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
        let n: u64 = n
            .parse()
            .map_err(|_| format!("{s:?} is not a duration (such as 30s, 5m, 4h, 5d)"))?;
        let secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
        };
        Ok(Span(Duration::from_secs(n.saturating_mul(secs))))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let s = String::deserialize(d)?;
        Span::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// STARTTLS toward other servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutboundTls {
    /// Never.
    None,
    /// When offered, without checking the certificate (Postfix's `may`).
    #[default]
    Opportunistic,
    /// Always; a server that does not offer it gets the message deferred, never in clear.
    Require,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outbound {
    /// Name in our EHLO; empty: `server.hostname`.
    pub helo_name: String,
    /// Port of MX hosts (tests use a loopback port).
    pub port: u16,
    pub tls: OutboundTls,
    /// Waits between attempts; the last one repeats.
    pub retry_schedule: Vec<Span>,
    /// A message still undeliverable this long after arrival fails (and bounces).
    pub max_lifetime: Span,
    /// Tell the sender once when a message has waited this long; `0`: never.
    pub delay_warning: Span,
    /// Outbound connections at once, over all destinations.
    pub max_connections: usize,
    /// Outbound connections at once to one destination.
    pub max_connections_per_destination: usize,
    /// With a store several nodes share: how long a node's claim on the messages it is
    /// delivering lasts. Another node takes over the messages of a node that died once its
    /// lease has run out, so it must outlast one delivery pass (RFC 5321's client timeouts
    /// add up to about 20 minutes for one slow transaction).
    pub lease: Span,
}

impl Default for Outbound {
    fn default() -> Self {
        let m = |n: u64| Span(Duration::from_secs(n * 60));
        Outbound {
            helo_name: String::new(),
            port: 25,
            tls: OutboundTls::Opportunistic,
            retry_schedule: vec![m(1), m(5), m(15), m(30), m(60), m(120), m(240)],
            max_lifetime: Span(Duration::from_secs(5 * 86400)),
            delay_warning: m(240),
            max_connections: 100,
            max_connections_per_destination: 10,
            lease: m(30),
        }
    }
}

impl Outbound {
    /// The wait after the `attempts`-th failed attempt.
    pub fn retry_after(&self, attempts: u32) -> Duration {
        let i = (attempts.max(1) as usize - 1).min(self.retry_schedule.len().saturating_sub(1));
        self.retry_schedule.get(i).map_or(Duration::from_secs(300), |s| s.0)
    }
}

/// Where mail for a destination goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// The recipient domain's MX hosts (A/AAAA without MX).
    Mx,
    /// A fixed host and port; no MX lookup (`host:port` or `[host]:port`).
    Host { host: String, port: u16 },
}

impl NextHop {
    /// `mx`, `host:port` or `[host]:port` (the port defaults to 25).
    pub fn parse(s: &str) -> Result<NextHop, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("mx") {
            return Ok(NextHop::Mx);
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| format!("{s:?}: no closing ]"))?;
            (h, after.strip_prefix(':'))
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                _ => (s, None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("{s:?}: bad port"))?,
            None => 25,
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{s:?}: expected mx, host:port or [host]:port"));
        }
        Ok(NextHop::Host {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl std::fmt::Display for NextHop {
    /// As written in the config: `mx` or `[host]:port`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NextHop::Mx => f.write_str("mx"),
            NextHop::Host { host, port } => write!(f, "[{host}]:{port}"),
        }
    }
}

impl serde::Serialize for NextHop {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NextHop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NextHop, D::Error> {
        NextHop::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A domain we accept mail for and pass on after filtering (edge gateway).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    pub domain: String,
    #[serde(default = "mx")]
    pub next_hop: NextHop,
    /// Hold its mail until its server says ETRN.
    #[serde(default)]
    pub etrn: bool,
    /// Ask the next hop about each recipient at RCPT time.
    #[serde(default)]
    pub verify_recipients: bool,
}

fn mx() -> NextHop {
    NextHop::Mx
}

/// An address block (`192.0.2.0/24`, `2001:db8::/32`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub net: IpAddr,
    pub bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, bits) = match s.trim().split_once('/') {
            Some((ip, b)) => (ip, Some(b)),
            None => (s.trim(), None),
        };
        let net: IpAddr = ip.parse().map_err(|_| format!("{s:?} is not an address block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { net, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.bits as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.bits as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        Cidr::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_next_hops_and_blocks() {
        assert_eq!(Span::parse("5m").unwrap().0, Duration::from_secs(300));
        assert_eq!(Span::parse("5d").unwrap().0, Duration::from_secs(5 * 86400));
        assert_eq!(Span::parse("0").unwrap().0, Duration::ZERO);
        assert!(Span::parse("5").is_err() && Span::parse("m").is_err() && Span::parse("5w").is_err());
        assert_eq!(NextHop::parse("MX").unwrap(), NextHop::Mx);
        let host = |h: &str, port| NextHop::Host { host: h.into(), port };
        assert_eq!(
            NextHop::parse("mail.example.com:2525").unwrap(),
            host("mail.example.com", 2525)
        );
        assert_eq!(NextHop::parse("[192.0.2.7]:26").unwrap(), host("192.0.2.7", 26));
        assert_eq!(NextHop::parse("[2001:db8::1]").unwrap(), host("2001:db8::1", 25));
        assert_eq!(NextHop::parse("internal").unwrap(), host("internal", 25));
        for h in [
            NextHop::Mx,
            host("192.0.2.7", 26),
            host("2001:db8::1", 25),
            host("mx.example", 25),
        ] {
            assert_eq!(NextHop::parse(&h.to_string()).unwrap(), h, "round trip of {h}");
        }
        assert!(NextHop::parse("a b:25").is_err() && NextHop::parse("x:port").is_err());
        let c = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(c.contains("192.0.2.200".parse().unwrap()) && !c.contains("192.0.3.1".parse().unwrap()));
        assert!(c.contains("::ffff:192.0.2.9".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("203.0.113.1".parse().unwrap())
        );
        assert!(
            Cidr::parse("2001:db8::/32")
                .unwrap()
                .contains("2001:db8:1::5".parse().unwrap())
        );
        assert!(Cidr::parse("127.0.0.1").unwrap().contains("127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err() && Cidr::parse("nope").is_err());
        let o = Outbound::default();
        assert_eq!(o.retry_after(1), Duration::from_secs(60));
        assert_eq!(o.retry_after(99), Duration::from_secs(4 * 3600), "the last one repeats");
    }
}
