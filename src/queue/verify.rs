//! Recipient verification for relay domains (`[[relay]] verify_recipients = true`), as
//! Postfix's `reject_unverified_recipient`: at our RCPT time, ask the domain's next hop
//! whether it would take the address (`MAIL FROM:<>`, `RCPT TO`, `RSET`), and refuse the
//! recipient there when it would not. A gateway that accepted mail for unknown users would
//! have to bounce it later to senders who are mostly forged: backscatter.
//!
//! Answers are cached in memory: deliverable for [`POSITIVE_TTL`], undeliverable for
//! [`NEGATIVE_TTL`]; "could not tell" (4xx, unreachable, too slow) is not cached and gives
//! the client a 450 to try again.

use super::client::Connection;
use super::mx;
use crate::config::Config;
use crate::config::outbound::NextHop;
use hickory_resolver::TokioResolver;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a "deliverable" answer is trusted.
pub const POSITIVE_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long an "undeliverable" answer is trusted (a user created meanwhile waits this long).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(3600);
/// How long one verification may take before the client is told to try later.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// Addresses the cache holds at most; past it, expired entries go, then everything.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Deliverable,
    /// The next hop refused it for good: its reply.
    Undeliverable(String),
    /// Could not tell now: why.
    Unknown(String),
}

pub struct Verifier {
    config: Arc<Config>,
    resolver: Option<Arc<TokioResolver>>,
    cache: Mutex<HashMap<String, (Verdict, Instant)>>,
}

impl Verifier {
    pub fn new(config: Arc<Config>, resolver: Option<Arc<TokioResolver>>) -> Verifier {
        Verifier {
            config,
            resolver,
            cache: Mutex::default(),
        }
    }

    fn cached(&self, address: &str) -> Option<Verdict> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (verdict, at) = cache.get(address)?;
        let ttl = match verdict {
            Verdict::Deliverable => POSITIVE_TTL,
            _ => NEGATIVE_TTL,
        };
        (at.elapsed() < ttl).then(|| verdict.clone())
    }

    fn remember(&self, address: &str, verdict: &Verdict) {
        if matches!(verdict, Verdict::Unknown(_)) {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_ENTRIES {
            cache.retain(|_, (v, at)| {
                at.elapsed()
                    < if *v == Verdict::Deliverable {
                        POSITIVE_TTL
                    } else {
                        NEGATIVE_TTL
                    }
            });
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(address.to_string(), (verdict.clone(), Instant::now()));
    }

    /// Whether `hop` takes mail for `address` (lowercased for the cache).
    pub async fn verify(&self, address: &str, hop: &NextHop) -> Verdict {
        let key = address.to_ascii_lowercase();
        if let Some(v) = self.cached(&key) {
            return v;
        }
        let verdict = match tokio::time::timeout(TIMEOUT, self.probe(address, hop)).await {
            Ok(v) => v,
            Err(_) => Verdict::Unknown("the next hop did not answer in time".into()),
        };
        tracing::info!(address, ?verdict, "recipient verification");
        self.remember(&key, &verdict);
        verdict
    }

    async fn probe(&self, address: &str, hop: &NextHop) -> Verdict {
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        let port = self.config.outbound.port;
        let hosts = match mx::hosts(self.resolver.as_deref(), hop, domain, port).await {
            mx::Hosts::Try(h) => h,
            mx::Hosts::NullMx => return Verdict::Undeliverable("the domain accepts no mail (null MX)".into()),
            mx::Hosts::NoDomain => return Verdict::Undeliverable(format!("domain {domain} not found")),
            mx::Hosts::Later(e) => return Verdict::Unknown(e),
        };
        let helo = self.config.helo_name();
        let mut last = String::from("no host could be reached");
        for host in &hosts {
            for addr in &host.addrs {
                let mut conn = match Connection::open(*addr, &host.name, helo, self.config.outbound.tls).await {
                    Ok(c) => c,
                    Err(Ok(r)) => {
                        last = format!("{} said: {r}", host.name);
                        continue;
                    }
                    Err(Err(b)) => {
                        last = format!("{} ({addr}): {}", host.name, b.0);
                        continue;
                    }
                };
                let reply = conn.probe(address).await;
                conn.quit().await;
                return match reply {
                    Ok(r) if r.is_ok() => Verdict::Deliverable,
                    Ok(r) if r.is_permanent() => Verdict::Undeliverable(format!("{} said: {r}", host.name)),
                    Ok(r) => Verdict::Unknown(format!("{} said: {r}", host.name)),
                    Err(b) => Verdict::Unknown(format!("{}: {}", host.name, b.0)),
                };
            }
        }
        Verdict::Unknown(last)
    }
}
