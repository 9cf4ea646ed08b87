//! Originating domain: SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489) through
//! mail-auth over the same hickory resolver the policies use, computed once per message; the
//! RFC 8601 `Authentication-Results` header that records them; and DNS blocklist query names.
//!
//! The checks run only when a loaded policy asks for them (`auth = true` in its manifest):
//! they cost DNS round trips, and a server without such a policy has no use for them.

use crate::hooks::contract::{AuthResults, Header};
use mail_auth::dmarc::Policy;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator, SpfResult,
};
use std::net::IpAddr;
use std::time::Duration;

/// How long a sender domain whose checks met a DNS failure (a timeout, SERVFAIL) gets
/// `temperror` at once, without asking again: a resolver that drops queries must not make
/// every message from that domain wait out the timeouts (the shared lookup cache remembers
/// failures as long, `hooks::dns_cache::FAILURE_TTL`).
const FAILURE_MEMORY: Duration = Duration::from_secs(30);

/// Domains remembered at most; past it the memory starts over.
const MAX_DOMAINS: usize = 10_000;

/// What is known of a sender domain's DNS.
#[derive(Clone)]
enum DomainState {
    /// Its checks met a DNS failure: `temperror` at once until then.
    Failing(std::time::Instant),
    /// Its checks worked: run them, concurrently, until then.
    Answering(std::time::Instant),
    /// The first check in a while is running; the others wait for how it ends (true:
    /// failed) instead of each waiting out the same timeouts.
    Probing(tokio::sync::watch::Receiver<Option<bool>>),
}

/// The checker: one per server, cheap to share.
pub struct Origin {
    auth: MessageAuthenticator,
    /// Our name, the `authserv-id` of the header (RFC 8601 §2.5).
    hostname: String,
    timeout: Duration,
    /// Per sender domain, whether its DNS answers ([`DomainState`]).
    domains: std::sync::Mutex<std::collections::HashMap<String, DomainState>>,
}

/// The results for one message.
pub struct Checked {
    pub results: AuthResults,
    /// The `Authentication-Results` field that records them (value folded).
    pub header: Header,
}

/// What a connection said about itself.
pub struct Sender<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    /// The envelope sender, "" for bounces.
    pub mail_from: &'a str,
}

impl Origin {
    /// The checker for a server's configuration, when it has DNS.
    pub fn for_config(
        resolver: Option<&std::sync::Arc<hickory_resolver::TokioResolver>>,
        config: &crate::config::Config,
    ) -> Option<std::sync::Arc<Origin>> {
        resolver.map(|r| {
            std::sync::Arc::new(Origin::new(
                r,
                &config.server.hostname,
                Duration::from_millis(config.spam.auth_timeout_ms),
            ))
        })
    }

    pub fn new(resolver: &hickory_resolver::TokioResolver, hostname: &str, timeout: Duration) -> Origin {
        Origin {
            auth: MessageAuthenticator(resolver.clone()),
            hostname: hostname.to_string(),
            timeout,
            domains: Default::default(),
        }
    }

    /// All three `temperror`, with why (RFC 8601 §2.7.1): never a reason to lose a message.
    fn temperror(&self, why: &str) -> Checked {
        let results = AuthResults {
            spf: Some("temperror".into()),
            dkim: Some("temperror".into()),
            dmarc: Some("temperror".into()),
            ..Default::default()
        };
        let header = results_header(format!(
            "{};\r\n\tspf=temperror;\r\n\tdkim=temperror;\r\n\tdmarc=temperror ({why})",
            self.hostname
        ));
        Checked { results, header }
    }

    /// SPF, DKIM and DMARC for one message. Past the time limit all three are `temperror`,
    /// as when DNS fails (RFC 8601 §2.7.1): never a reason to lose the message. Per sender
    /// domain, the first check in [`FAILURE_MEMORY`] is a probe that concurrent checks of
    /// that domain wait for (within their own deadline); when it met a DNS failure they, and
    /// the domain's checks for [`FAILURE_MEMORY`], get `temperror` at once, so a dropping
    /// resolver costs one wait per domain, not one per message.
    pub async fn check(&self, sender: &Sender<'_>, raw: &[u8]) -> Checked {
        let domain = match sender.mail_from.rsplit_once('@') {
            Some((_, d)) => d,
            None => sender.helo,
        }
        .to_ascii_lowercase();
        // Our own limit, or the message's DNS time if that ends first.
        let own = tokio::time::Instant::now() + self.timeout;
        let deadline = crate::hooks::dns_budget::deadline().map_or(own, |d| d.min(own));
        // Decide: skip (failing), check (answering), wait for a probe, or be the probe.
        let probe = loop {
            let now = std::time::Instant::now();
            let state = self.domains().get(&domain).cloned();
            match state {
                Some(DomainState::Failing(until)) if until > now => {
                    return self.temperror(&format!("DNS failed for {domain} moments ago"));
                }
                Some(DomainState::Answering(until)) if until > now => break None,
                Some(DomainState::Probing(mut rx)) => {
                    // Bounded by this message's own deadline; then check regardless.
                    let ended = tokio::time::timeout_at(deadline, rx.wait_for(|r| r.is_some())).await;
                    if ended.is_err() {
                        break None;
                    }
                    // The probe ended (or vanished): look again.
                    if matches!(self.domains().get(&domain), Some(DomainState::Probing(_))) {
                        self.domains().remove(&domain);
                    }
                }
                _ => {
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    let mut d = self.domains();
                    if d.len() >= MAX_DOMAINS {
                        d.clear();
                    }
                    // Another check may have started probing since the state was read.
                    if matches!(d.get(&domain), Some(DomainState::Probing(_))) {
                        continue;
                    }
                    d.insert(domain.clone(), DomainState::Probing(rx));
                    break Some(tx);
                }
            }
        };
        let (checked, failed) = match tokio::time::timeout_at(deadline, self.check_all(sender, raw)).await {
            Ok(c) => {
                let temp = |r: &Option<String>| r.as_deref() == Some("temperror");
                let failed = temp(&c.results.spf) || temp(&c.results.dkim) || temp(&c.results.dmarc);
                (c, failed)
            }
            Err(_) => (self.temperror("checks timed out"), true),
        };
        let until = std::time::Instant::now() + FAILURE_MEMORY;
        if failed {
            self.domains().insert(domain, DomainState::Failing(until));
        } else if probe.is_some() {
            self.domains().insert(domain, DomainState::Answering(until));
        }
        if let Some(tx) = probe {
            tx.send_replace(Some(failed));
        }
        checked
    }

    fn domains(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, DomainState>> {
        self.domains.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn check_all(&self, s: &Sender<'_>, raw: &[u8]) -> Checked {
        let helo = s.helo.trim_start_matches('[').trim_end_matches(']');
        // SPF and DKIM need nothing of each other: their lookups run at once (DMARC, which
        // needs both, after).
        let message = AuthenticatedMessage::parse(raw);
        // MAIL FROM, or the HELO identity for bounces (RFC 7208 §2.4).
        let spf = self.auth.verify_spf(mail_auth::spf::verify::SpfParameters::verify(
            s.ip,
            helo,
            &self.hostname,
            s.mail_from,
        ));
        let dkim = async {
            match &message {
                Some(m) => self.auth.verify_dkim(m).await,
                None => Vec::new(),
            }
        };
        let (spf, dkim) = tokio::join!(spf, dkim);
        let mut header = AuthenticationResults::new(&self.hostname);
        header = if s.mail_from.is_empty() {
            header.with_spf_ehlo_result(&spf, s.ip, helo)
        } else {
            header.with_spf_mailfrom_result(&spf, s.ip, s.mail_from, helo)
        };
        let mut results = AuthResults {
            spf: Some(spf_word(spf.result()).into()),
            spf_domain: Some(spf.domain().to_string()),
            ..Default::default()
        };
        let Some(message) = message.as_ref() else {
            // No header block worth the name: nothing to verify a signature or From against.
            results.dkim = Some("none".into());
            results.dmarc = Some("none".into());
            return Checked {
                header: results_header(header.to_string()),
                results,
            };
        };
        let from = message.from().to_string();
        header = header.with_dkim_results(&dkim, &from);
        results.dkim_domains = dkim
            .iter()
            .filter(|d| d.result() == &DkimResult::Pass)
            .filter_map(|d| d.signature().map(|s| s.d.to_ascii_lowercase()))
            .collect();
        results.dkim = Some(
            if !results.dkim_domains.is_empty() {
                "pass"
            } else {
                dkim.first().map_or("none", |d| dkim_word(d.result()))
            }
            .into(),
        );
        let mail_from_domain = match s.mail_from.rsplit_once('@') {
            Some((_, d)) => d,
            None => helo,
        };
        let dmarc = self
            .auth
            .verify_dmarc(mail_auth::dmarc::verify::DmarcParameters::new(
                message,
                &dkim,
                mail_from_domain,
                &spf,
            ))
            .await;
        header = header.with_dmarc_result(&dmarc);
        results.dmarc = Some(dmarc_word(&dmarc.result()).into());
        if !dmarc.domain().is_empty() {
            results.from_domain = Some(dmarc.domain().to_ascii_lowercase());
            if results.dmarc.as_deref() != Some("none") {
                results.dmarc_policy = Some(
                    match dmarc.policy() {
                        Policy::Reject => "reject",
                        Policy::Quarantine => "quarantine",
                        Policy::None | Policy::Unspecified => "none",
                    }
                    .into(),
                );
            }
        }
        Checked {
            header: results_header(header.to_string()),
            results,
        }
    }
}

/// An `Authentication-Results` field; `value` is what follows the colon (mail-auth's
/// `Display` of its builder writes exactly that, folded).
fn results_header(value: String) -> Header {
    Header {
        name: "Authentication-Results".into(),
        value,
    }
}

fn spf_word(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_word(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dmarc_word(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}
