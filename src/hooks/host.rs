//! Host services plugins may call (the Lua `mailgate` table; WASM host imports mirror it):
//! DNS through hickory, a per-plugin key-value store kept in the mail store, and a regex cache.

use super::analyzers::{Analyzers, NoAnalyzers};
use crate::store::MailStore;
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};
use regex::Regex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Regexes a plugin may keep compiled at once (a plugin building patterns from message text
/// must not grow memory without bound).
const REGEX_CACHE: usize = 256;

/// The longest key a plugin may store (bytes, its own name not counted).
pub const KV_MAX_KEY: usize = 1024;
/// The largest value a plugin may store (bytes): the key-value store holds small state
/// (greylisting triplets, counters), kept in memory pages of the store; a plugin that needs
/// more is keeping documents, not state.
pub const KV_MAX_VALUE: usize = 64 * 1024;
/// How often the server removes expired plugin entries.
pub const KV_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Shared by all plugins of a server (or of one `policy test` run).
pub struct HostServices {
    pub store: Option<Arc<dyn MailStore>>,
    pub resolver: Option<Arc<TokioResolver>>,
    pub dns_timeout: Duration,
    /// `mailgate.bayes`, `.keywords`, `.letters`: registered by the spam filter.
    pub analyzers: Arc<dyn Analyzers>,
    /// Answers of `dns`/`dnsbl`, shared by every policy and message.
    pub dns_cache: super::dns_cache::DnsCache,
}

/// Host services for a run outside the server (`policy test`, `spam classify|eval`): DNS as
/// configured, the given analyzers, and a scratch key-value store that goes with this value
/// (a policy's state from such a run never reaches the real store).
pub struct Offline {
    pub host: Arc<HostServices>,
    scratch: std::path::PathBuf,
}

impl Offline {
    pub fn new(config: &crate::config::Config, analyzers: Arc<dyn Analyzers>) -> Offline {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scratch = std::env::temp_dir().join(format!("mailgate-policy-{}-{n}", std::process::id()));
        let store = crate::store::SledStore::open(&scratch, 8)
            .ok()
            .map(|s| Arc::new(s) as Arc<dyn MailStore>);
        let host = HostServices {
            store,
            resolver: resolver(&config.dns).ok(),
            dns_timeout: Duration::from_millis(config.dns.timeout_ms),
            analyzers,
            dns_cache: Default::default(),
        };
        Offline {
            host: Arc::new(host),
            scratch,
        }
    }
}

impl Drop for Offline {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
        let _ = std::fs::remove_dir_all(self.scratch.with_extension("journal"));
    }
}

impl HostServices {
    pub fn none() -> Arc<HostServices> {
        Arc::new(HostServices {
            store: None,
            resolver: None,
            dns_timeout: Duration::from_secs(2),
            analyzers: Arc::new(NoAnalyzers),
            dns_cache: Default::default(),
        })
    }

    /// DNS blocklist lookup (RFC 5782): the A answers for `target` (an IP, reversed, or a
    /// domain) under `zone`; empty when not listed.
    pub async fn dnsbl(&self, target: &str, zone: &str) -> Result<Vec<String>, String> {
        let name = dnsbl_query(target, zone)?;
        self.dns("A", &name).await
    }

    /// Looks up `name` (`A`, `AAAA`, `MX`, `TXT`, `PTR`); answers as strings (MX as
    /// "preference exchange", TXT strings joined). NXDOMAIN and no-data give an empty list.
    /// Answers, negative answers and failures are cached ([`super::dns_cache`]).
    pub async fn dns(&self, kind: &str, name: &str) -> Result<Vec<String>, String> {
        use super::dns_cache::{Answer, FAILURE_TTL, NEGATIVE_TTL, until};
        let resolver = self.resolver.as_ref().ok_or("DNS is not available here")?;
        let kind = kind.to_ascii_uppercase();
        let rtype = match kind.as_str() {
            "A" => RecordType::A,
            "AAAA" => RecordType::AAAA,
            "MX" => RecordType::MX,
            "TXT" => RecordType::TXT,
            "PTR" => RecordType::PTR,
            other => return Err(format!("unsupported DNS type {other}")),
        };
        let ptr_ip = if rtype == RecordType::PTR {
            Some(
                name.parse::<IpAddr>()
                    .map_err(|_| format!("PTR needs an IP address, got {name:?}"))?,
            )
        } else {
            None
        };
        // NXDOMAIN and no-data: empty, kept for the zone's negative TTL (RFC 2308).
        let failed = |e: hickory_resolver::net::NetError| -> Answer {
            match &e {
                hickory_resolver::net::NetError::Dns(hickory_resolver::net::DnsError::NoRecordsFound(nr)) => Answer {
                    result: Ok(Vec::new()),
                    until: until(nr.negative_ttl.map_or(NEGATIVE_TTL, |t| Duration::from_secs(t.into()))),
                },
                _ => Answer {
                    result: Err(e.to_string()),
                    until: until(FAILURE_TTL),
                },
            }
        };
        let (resolver, name_owned) = (resolver.clone(), name.to_string());
        let lookup = async move {
            let name = name_owned.as_str();
            if let Some(ip) = ptr_ip {
                return match resolver.reverse_lookup(ip).await {
                    Ok(l) => Answer {
                        result: Ok(l.answers().iter().map(|r| rdata_string(&r.data)).collect()),
                        until: l.valid_until(),
                    },
                    Err(e) => failed(e),
                };
            }
            match resolver.lookup(name, rtype).await {
                Ok(l) => Answer {
                    result: Ok(l
                        .answers()
                        .iter()
                        .filter(|r| r.record_type() == rtype)
                        .map(|r| rdata_string(&r.data))
                        .collect()),
                    until: l.valid_until(),
                },
                Err(e) => failed(e),
            }
        };
        let timeout = self.dns_timeout;
        let what = format!("DNS {kind} {name}");
        // The message's shared DNS time bounds the wait, not the query: a lookup others
        // share runs on for them and for the cache.
        let deadline = super::dns_budget::deadline();
        if deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
            return Err(super::dns_budget::spent(&what));
        }
        let what_spent = what.clone();
        let answer = self.dns_cache.get(&kind, name, || async move {
            match tokio::time::timeout(timeout, lookup).await {
                Ok(a) => a,
                Err(_) => Answer {
                    result: Err(format!("{what}: timed out")),
                    until: until(FAILURE_TTL),
                },
            }
        });
        match deadline {
            Some(d) => tokio::time::timeout_at(d, answer)
                .await
                .unwrap_or_else(|_| Err(super::dns_budget::spent(&what_spent))),
            None => answer.await,
        }
    }

    fn kv_key(plugin: &str, key: &str) -> String {
        format!("{plugin}\0{key}")
    }

    /// Whether a stored plugin value (expiry, 8 bytes big-endian, 0 for none; then the value)
    /// has expired by `now`.
    fn kv_expired(raw: &[u8], now: i64) -> bool {
        let expiry = raw
            .get(..8)
            .map_or(0, |b| i64::from_be_bytes(b.try_into().unwrap_or_default()));
        expiry != 0 && expiry < now
    }

    /// Removes every plugin entry whose time to live has passed (their reads already say
    /// nil; without this a greylisting MX would keep every triplet it ever saw). Other
    /// key-value state (the Bayes model's marks) is not plugin state and stays. Returns how
    /// many went.
    pub fn kv_sweep(&self) -> Result<usize, String> {
        let store = self.store.as_ref().ok_or("no store here")?;
        let now = crate::store::now_secs();
        store
            .kv_retain(&mut |k, v| !(k.contains(&0) && Self::kv_expired(v, now)))
            .map_err(|e| e.to_string())
    }

    /// A value set by this plugin, unless expired.
    pub fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<String>, String> {
        let store = self.store.as_ref().ok_or("no store here")?;
        let Some(raw) = store.kv_get(&Self::kv_key(plugin, key)).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if Self::kv_expired(&raw, crate::store::now_secs()) {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(&raw[8.min(raw.len())..]).into_owned()))
    }

    /// Sets a value, optionally expiring after `ttl_secs` (more than 0). Keys up to
    /// [`KV_MAX_KEY`] bytes, values up to [`KV_MAX_VALUE`].
    pub fn kv_set(&self, plugin: &str, key: &str, value: &str, ttl_secs: Option<i64>) -> Result<(), String> {
        let store = self.store.as_ref().ok_or("no store here")?;
        if key.len() > KV_MAX_KEY {
            return Err(format!("kv_set: key of {} bytes, more than {KV_MAX_KEY}", key.len()));
        }
        if value.len() > KV_MAX_VALUE {
            return Err(format!(
                "kv_set: value of {} bytes, more than {KV_MAX_VALUE}",
                value.len()
            ));
        }
        let expiry = match ttl_secs {
            None => 0,
            Some(t) if t > 0 => crate::store::now_secs().saturating_add(t),
            Some(t) => {
                return Err(format!(
                    "kv_set: ttl_secs must be more than 0, not {t} (kv_del removes)"
                ));
            }
        };
        let mut raw = expiry.to_be_bytes().to_vec();
        raw.extend_from_slice(value.as_bytes());
        store
            .kv_set(&Self::kv_key(plugin, key), Some(&raw))
            .map_err(|e| e.to_string())
    }

    pub fn kv_del(&self, plugin: &str, key: &str) -> Result<(), String> {
        let store = self.store.as_ref().ok_or("no store here")?;
        store
            .kv_set(&Self::kv_key(plugin, key), None)
            .map_err(|e| e.to_string())
    }
}

fn rdata_string(d: &RData) -> String {
    match d {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::MX(mx) => format!("{} {}", mx.preference, mx.exchange),
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|s| String::from_utf8_lossy(s))
            .collect::<Vec<_>>()
            .join(""),
        RData::PTR(p) => p.0.to_string(),
        other => other.to_string(),
    }
}

/// Compiled regexes of one plugin, compiled once and reused across calls. Shared as `Arc`s:
/// a cloned `Regex` starts a pool of its own, so every call paid for fresh search caches.
#[derive(Default)]
pub struct RegexCache {
    map: Mutex<HashMap<String, Arc<Regex>>>,
}

impl RegexCache {
    pub fn get(&self, pattern: &str) -> Result<Arc<Regex>, String> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = map.get(pattern) {
            return Ok(r.clone());
        }
        let r = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map(Arc::new)
            .map_err(|e| format!("bad regex {pattern:?}: {e}"))?;
        if map.len() >= REGEX_CACHE {
            map.clear();
        }
        map.insert(pattern.to_string(), r.clone());
        Ok(r)
    }
}

/// Tries of one DNS lookup within `[dns] timeout_ms` (unbound and BIND also ask again well
/// before giving up; glibc's stub asks twice).
const DNS_TRIES: u64 = 4;

/// The shortest wait for one try, however small `timeout_ms` is.
const MIN_DNS_TRY_MS: u64 = 50;

/// The resolver policies use: the configured name servers, or the system's.
pub fn resolver(cfg: &crate::config::Dns) -> Result<Arc<TokioResolver>, String> {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    let builder = if cfg.servers.is_empty() {
        hickory_resolver::Resolver::builder_tokio().map_err(|e| format!("system DNS configuration: {e}"))?
    } else {
        let servers = cfg
            .servers
            .iter()
            .map(|a| {
                let mut ns = NameServerConfig::udp_and_tcp(a.ip());
                for c in &mut ns.connections {
                    c.port = a.port();
                }
                ns
            })
            .collect();
        hickory_resolver::Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let mut opts = ResolverOpts::default();
    // A lookup is tried up to `DNS_TRIES` times within `timeout_ms`, a share each: a query
    // the network or a busy resolver drops is asked again after a quarter of the time, not
    // after all of it (2 s by default): on a resolver losing ~2 % of queries, 1,086
    // messages sent one after another took 92 s instead of 178 (docs/config.md, `[dns]`).
    // (hickory's `attempts` counts the tries after the first.)
    opts.timeout = Duration::from_millis((cfg.timeout_ms / DNS_TRIES).max(MIN_DNS_TRY_MS));
    opts.attempts = (DNS_TRIES - 1) as usize;
    builder
        .with_options(opts)
        .build()
        .map(Arc::new)
        .map_err(|e| format!("DNS resolver: {e}"))
}

/// The name to look up in a DNS blocklist: an IP's reversed octets (IPv4) or nibbles (IPv6),
/// or a domain, under `zone` (RFC 5782 §2.1, §2.3).
pub fn dnsbl_query(target: &str, zone: &str) -> Result<String, String> {
    let zone = zone.trim_matches('.');
    if zone.is_empty() || !zone.contains('.') {
        return Err(format!("not a blocklist zone: {zone:?}"));
    }
    let target = target.trim().trim_start_matches('[').trim_end_matches(']');
    let name = match target.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        Ok(IpAddr::V6(v6)) => {
            let mut nibbles = Vec::with_capacity(32);
            for b in v6.octets().iter().rev() {
                nibbles.push(format!("{:x}", b & 0xf));
                nibbles.push(format!("{:x}", b >> 4));
            }
            nibbles.join(".")
        }
        Err(_) => {
            let d = target.trim_matches('.').to_ascii_lowercase();
            let valid = !d.is_empty()
                && d.len() <= 253
                && d.contains('.')
                && d.split('.').all(|l| {
                    !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                return Err(format!("neither an IP address nor a domain: {target:?}"));
            }
            d
        }
    };
    Ok(format!("{name}.{zone}."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    /// Plugin state: kept per plugin, bounded in size, and an entry whose time to live has
    /// passed reads as nil and goes at the next sweep, while live entries, entries with no
    /// time to live and the server's own key-value state stay.
    #[test]
    fn plugin_state_is_bounded_and_expired_entries_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MailStore> = Arc::new(SledStore::open(&dir.path().join("store"), 16).unwrap());
        let mut host = Arc::into_inner(HostServices::none()).unwrap();
        host.store = Some(store.clone());

        host.kv_set("grey", "live", "1", Some(3600)).unwrap();
        host.kv_set("grey", "forever", "2", None).unwrap();
        host.kv_set("other", "live", "3", Some(3600)).unwrap();
        assert_eq!(host.kv_get("grey", "live").unwrap().as_deref(), Some("1"));
        assert_eq!(
            host.kv_get("other", "live").unwrap().as_deref(),
            Some("3"),
            "plugins apart"
        );
        // Expired ones, as a plugin's set an hour ago with a minute to live would have left them.
        let past = (crate::store::now_secs() - 60).to_be_bytes();
        for key in ["grey\0old1", "grey\0old2"] {
            store.kv_set(key, Some(&[&past[..], b"x"].concat())).unwrap();
        }
        store.kv_set("spam/bayes/learned/ab", Some(b"s")).unwrap();
        assert_eq!(host.kv_get("grey", "old1").unwrap(), None, "expired reads as nil");

        assert_eq!(host.kv_sweep().unwrap(), 2);
        assert_eq!(store.kv_get("grey\0old1").unwrap(), None);
        assert_eq!(host.kv_get("grey", "live").unwrap().as_deref(), Some("1"));
        assert_eq!(host.kv_get("grey", "forever").unwrap().as_deref(), Some("2"));
        assert_eq!(
            store.kv_get("spam/bayes/learned/ab").unwrap().as_deref(),
            Some(&b"s"[..])
        );
        assert_eq!(host.kv_sweep().unwrap(), 0);

        let big = "x".repeat(KV_MAX_VALUE + 1);
        let e = host.kv_set("grey", "big", &big, None).unwrap_err();
        assert!(e.contains("65537 bytes"), "{e}");
        host.kv_set("grey", "big", &big[1..], None).unwrap();
        let e = host.kv_set("grey", &"k".repeat(KV_MAX_KEY + 1), "v", None).unwrap_err();
        assert!(e.contains("key of 1025 bytes"), "{e}");
        for ttl in [0, -5] {
            let e = host.kv_set("grey", "t", "v", Some(ttl)).unwrap_err();
            assert!(e.contains("ttl_secs must be more than 0"), "{e}");
        }
        assert_eq!(host.kv_get("grey", "t").unwrap(), None);
    }

    #[test]
    fn blocklist_names() {
        assert_eq!(
            dnsbl_query("192.0.2.99", "bl.example").unwrap(),
            "99.2.0.192.bl.example."
        );
        assert_eq!(
            dnsbl_query("2001:db8:1:2:3:4:567:89ab", "bl.example.").unwrap(),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.example."
        );
        assert_eq!(
            dnsbl_query("Spam.Example", "dbl.example").unwrap(),
            "spam.example.dbl.example."
        );
        assert!(dnsbl_query("not a domain", "bl.example").is_err());
        assert!(dnsbl_query("192.0.2.1", "localhost").is_err());
        assert!(dnsbl_query("a..b", "bl.example").is_err());
    }
}
