//! Where a destination's mail goes (RFC 5321 §5.1): its MX hosts by preference, equal
//! preferences in random order; the domain itself (A/AAAA) when it has no MX; none at all
//! for a null MX (RFC 7505); or a fixed next hop without any MX lookup.

use crate::config::outbound::NextHop;
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};
use std::net::{IpAddr, SocketAddr};

/// One host to try, with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hosts {
    /// In the order to try them.
    Try(Vec<Host>),
    /// The domain says it takes no mail (RFC 7505): fail at once, 5.1.10.
    NullMx,
    /// No such domain: fail at once, 5.1.2.
    NoDomain,
    /// DNS could not say now: try later.
    Later(String),
}

/// The hosts for mail to `domain` by `hop`; MX hosts on `mx_port`.
pub async fn hosts(resolver: Option<&TokioResolver>, hop: &NextHop, domain: &str, mx_port: u16) -> Hosts {
    match hop {
        NextHop::Host { host, port } => match host.parse::<IpAddr>() {
            Ok(ip) => Hosts::Try(vec![Host {
                name: host.clone(),
                addrs: vec![SocketAddr::new(ip, *port)],
            }]),
            Err(_) => match addresses(resolver, host, *port).await {
                Ok(addrs) if !addrs.is_empty() => Hosts::Try(vec![Host {
                    name: host.clone(),
                    addrs,
                }]),
                Ok(_) => Hosts::Later(format!("next hop {host} has no address")),
                Err(e) => Hosts::Later(e),
            },
        },
        NextHop::Mx => mx_hosts(resolver, domain, mx_port).await,
    }
}

async fn mx_hosts(resolver: Option<&TokioResolver>, domain: &str, port: u16) -> Hosts {
    let Some(resolver) = resolver else {
        return Hosts::Later("no DNS resolver".into());
    };
    let name = format!("{}.", domain.trim_end_matches('.'));
    let mut mx: Vec<(u16, String)> = match resolver.lookup(name.as_str(), RecordType::MX).await {
        Ok(l) => l
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(m) => Some((
                    m.preference,
                    m.exchange.to_ascii().trim_end_matches('.').to_ascii_lowercase(),
                )),
                _ => None,
            })
            .collect(),
        Err(e) if e.is_nx_domain() => return Hosts::NoDomain,
        Err(e) if e.is_no_records_found() => Vec::new(),
        Err(e) => return Hosts::Later(format!("MX lookup for {domain}: {e}")),
    };
    if mx.len() == 1 && mx[0].1.is_empty() {
        return Hosts::NullMx;
    }
    mx.retain(|(_, h)| !h.is_empty());
    if mx.is_empty() {
        // No MX: the domain is its own mail host (RFC 5321 §5.1, implicit MX).
        return match addresses(Some(resolver), domain, port).await {
            Ok(addrs) if !addrs.is_empty() => Hosts::Try(vec![Host {
                name: domain.to_string(),
                addrs,
            }]),
            Ok(_) => Hosts::NoDomain,
            Err(e) => Hosts::Later(e),
        };
    }
    shuffle_equal_preferences(&mut mx);
    let mut out = Vec::new();
    let mut later = None;
    for (_, host) in mx {
        match addresses(Some(resolver), &host, port).await {
            Ok(addrs) if !addrs.is_empty() => out.push(Host { name: host, addrs }),
            Ok(_) => {}
            Err(e) => later = Some(e),
        }
    }
    match (out.is_empty(), later) {
        (false, _) => Hosts::Try(out),
        (true, Some(e)) => Hosts::Later(e),
        (true, None) => Hosts::Later(format!("no MX host of {domain} has an address")),
    }
}

/// Sorted by preference; within one preference a random order (RFC 5321 §5.1), so load
/// spreads over equal hosts.
fn shuffle_equal_preferences(mx: &mut [(u16, String)]) {
    use std::hash::{BuildHasher, Hasher};
    let seed = std::collections::hash_map::RandomState::new();
    let key = |h: &str| {
        let mut s = seed.build_hasher();
        s.write(h.as_bytes());
        s.finish()
    };
    mx.sort_by_key(|(pref, host)| (*pref, key(host)));
}

async fn addresses(resolver: Option<&TokioResolver>, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let resolver = resolver.ok_or("no DNS resolver")?;
    let name = format!("{}.", host.trim_end_matches('.'));
    let mut out = Vec::new();
    for rtype in [RecordType::A, RecordType::AAAA] {
        match resolver.lookup(name.as_str(), rtype).await {
            Ok(l) => out.extend(l.answers().iter().filter_map(|r| match &r.data {
                RData::A(a) => Some(SocketAddr::new(IpAddr::V4(a.0), port)),
                RData::AAAA(a) => Some(SocketAddr::new(IpAddr::V6(a.0), port)),
                _ => None,
            })),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => {}
            Err(e) => return Err(format!("address of {host}: {e}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_first_then_random_among_equals() {
        let mut seen_first = std::collections::HashSet::new();
        for _ in 0..64 {
            let mut mx = vec![
                (20, "c".to_string()),
                (10, "a".into()),
                (10, "b".into()),
                (30, "d".into()),
            ];
            shuffle_equal_preferences(&mut mx);
            let prefs: Vec<u16> = mx.iter().map(|m| m.0).collect();
            assert_eq!(prefs, [10, 10, 20, 30]);
            seen_first.insert(mx[0].1.clone());
        }
        assert_eq!(seen_first.len(), 2, "either equal host may come first");
    }
}
