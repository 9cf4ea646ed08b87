//! Where a recipient goes: the built-in route policy.
//!
//! Order of lookups for `local@domain` in a local domain, as Postfix's virtual maps do:
//! an exact alias, then an account, then the address without its `+detail`, then the
//! catch-all alias `@domain`. Alias targets are expanded again (at most [`MAX_ALIAS_DEPTH`]
//! levels, loops cut); targets outside our domains are forwarded through the queue. A domain
//! in `[[relay]]` goes to its next hop (edge gateway); any other domain is a relay attempt,
//! refused unless the client may relay (`relay_networks`, AUTH), which sends it by MX.

use crate::config::outbound::{NextHop, Relay};
use crate::mail::address::Address;
use crate::store::{MailStore, Result};
use std::sync::Arc;

/// How deep alias chains may go; deeper is almost certainly a loop.
pub const MAX_ALIAS_DEPTH: usize = 8;

/// What a local address expands to: accounts, and addresses elsewhere that an alias
/// forwards to (through the outbound queue).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// Accounts to deliver into, deduplicated.
    pub accounts: Vec<String>,
    /// Alias targets outside our domains, with where they go, deduplicated.
    pub forward: Vec<(String, NextHop)>,
}

impl Expansion {
    /// Only accounts.
    pub fn accounts(accounts: Vec<String>) -> Expansion {
        Expansion {
            accounts,
            forward: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.forward.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A local address: its accounts, and its forwards (never both empty).
    Local(Expansion),
    /// Not ours: to the next hop (a relay domain's, or MX for a client that may relay).
    Remote(NextHop),
    /// A local domain, but nobody by that name (550 5.1.1).
    UnknownUser,
    /// Not ours to deliver (554 5.7.1).
    RelayDenied,
}

#[derive(Clone)]
pub struct Router {
    store: Arc<dyn MailStore>,
    config_domains: Arc<Vec<String>>,
    delimiter: Option<char>,
    relays: Arc<Vec<Relay>>,
    /// `server.postmaster`: where `postmaster@` a local domain goes when nothing else takes it.
    postmaster: Option<String>,
}

impl Router {
    pub fn new(store: Arc<dyn MailStore>, config: &crate::config::Config) -> Router {
        Router {
            store,
            config_domains: Arc::new(config.server.local_domains.clone()),
            delimiter: config.server.recipient_delimiter.chars().next(),
            relays: Arc::new(config.relays.clone()),
            postmaster: config.server.postmaster.clone(),
        }
    }

    pub fn is_local_domain(&self, domain: &str) -> Result<bool> {
        Ok(self.config_domains.iter().any(|d| d == domain) || self.store.has_domain(domain)?)
    }

    /// Decides the route of one recipient; `may_relay`: the client may send anywhere.
    pub fn route(&self, rcpt: &Address, may_relay: bool) -> Result<Route> {
        if rcpt.has_routing_syntax() {
            return Ok(Route::RelayDenied);
        }
        if !self.is_local_domain(&rcpt.domain)? {
            return Ok(match self.relays.iter().find(|r| r.domain == rcpt.domain) {
                Some(r) => Route::Remote(r.next_hop.clone()),
                None if may_relay => Route::Remote(NextHop::Mx),
                None => Route::RelayDenied,
            });
        }
        let mut found = Expansion::default();
        self.expand(rcpt, 0, true, &mut found)?;
        // RFC 5321 §4.5.1: every domain takes mail for its postmaster; without an account or
        // alias of that name (or a catch-all), it goes to `server.postmaster`.
        if found.is_empty()
            && rcpt.local.eq_ignore_ascii_case("postmaster")
            && let Some(p) = &self.postmaster
        {
            self.expand_targets("server.postmaster", std::slice::from_ref(p), 0, true, &mut found)?;
        }
        Ok(if found.is_empty() {
            Route::UnknownUser
        } else {
            Route::Local(found)
        })
    }

    /// Warns of each local domain whose `postmaster@` nothing would take (no account, alias,
    /// catch-all or `server.postmaster`), which RFC 5321 §4.5.1 requires.
    pub fn warn_of_missing_postmasters(&self) {
        let mut domains: Vec<String> = self.config_domains.to_vec();
        domains.extend(self.store.domains().unwrap_or_default());
        domains.sort();
        domains.dedup();
        for d in domains {
            let Ok(address) = Address::parse(&format!("postmaster@{d}")) else {
                continue;
            };
            if matches!(self.route(&address, false), Ok(Route::UnknownUser)) {
                tracing::warn!(
                    "{address} has no account or alias and server.postmaster is not set: mail for it is refused (RFC 5321 §4.5.1 asks every domain to take it)"
                );
            }
        }
    }

    /// Whether `account` may send as `sender` (submission's sender check, Postfix's
    /// `reject_sender_login_mismatch`): the account itself, a sub-address of it, or an alias
    /// that expands to it. A catch-all does not make every address of a domain its target's.
    pub fn owns(&self, account: &str, sender: &Address) -> Result<bool> {
        if sender.to_string() == account {
            return Ok(true);
        }
        if sender.has_routing_syntax() || !self.is_local_domain(&sender.domain)? {
            return Ok(false);
        }
        let mut found = Expansion::default();
        self.expand(sender, 0, false, &mut found)?;
        Ok(found.accounts.iter().any(|a| a == account))
    }

    fn expand(&self, addr: &Address, depth: usize, catch_all: bool, out: &mut Expansion) -> Result<()> {
        if depth > MAX_ALIAS_DEPTH {
            tracing::warn!(%addr, "alias chain deeper than {MAX_ALIAS_DEPTH}; cut");
            return Ok(());
        }
        let full = addr.to_string();
        let base = self.delimiter.and_then(|d| {
            let (base, _detail) = addr.local.split_once(d)?;
            Some(format!("{base}@{}", addr.domain))
        });
        let candidates = std::iter::once(full.clone()).chain(base);
        for candidate in candidates {
            if let Some(targets) = self.store.alias(&candidate)? {
                return self.expand_targets(&candidate, &targets, depth, catch_all, out);
            }
            if self.store.account(&candidate)?.is_some() {
                if !out.accounts.contains(&candidate) {
                    out.accounts.push(candidate);
                }
                return Ok(());
            }
        }
        if !catch_all {
            return Ok(());
        }
        let source = format!("@{}", addr.domain);
        if let Some(targets) = self.store.alias(&source)? {
            return self.expand_targets(&source, &targets, depth, catch_all, out);
        }
        Ok(())
    }

    fn expand_targets(
        &self,
        source: &str,
        targets: &[String],
        depth: usize,
        catch_all: bool,
        out: &mut Expansion,
    ) -> Result<()> {
        for t in targets {
            match Address::parse(t) {
                Ok(a) if self.is_local_domain(&a.domain)? => {
                    // A target that is itself the catch-all's source would loop; accounts
                    // are found by the exact lookup first, so plain recursion is safe.
                    self.expand(&a, depth + 1, catch_all, out)?;
                }
                // Forwarded through the queue: to the domain's next hop when we relay for it,
                // else by MX (an alias is the operator's, so no relay permission is needed).
                Ok(a) if a.has_routing_syntax() => {
                    tracing::warn!(alias = source, target = %a, "alias target with routing syntax skipped")
                }
                Ok(a) => {
                    let hop = self
                        .relays
                        .iter()
                        .find(|r| r.domain == a.domain)
                        .map_or(NextHop::Mx, |r| r.next_hop.clone());
                    let target = a.to_string();
                    if !out.forward.iter().any(|(t, _)| *t == target) {
                        out.forward.push((target, hop));
                    }
                }
                Err(e) => tracing::warn!(alias = source, target = t, "bad alias target: {e}"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn router() -> (tempfile::TempDir, Arc<dyn MailStore>, Router) {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn MailStore> = Arc::new(SledStore::open(&dir.path().join("s"), 16).unwrap());
        let mut config = crate::config::Config::default();
        config.server.local_domains = vec!["localhost".into()];
        config.relays = vec![Relay {
            domain: "filtered.example".into(),
            next_hop: NextHop::parse("[192.0.2.9]:2525").unwrap(),
            etrn: false,
            verify_recipients: false,
        }];
        let r = Router::new(s.clone(), &config);
        (dir, s, r)
    }

    fn a(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    /// RFC 5321 §4.5.1: `postmaster@` every local domain is taken, by `server.postmaster`
    /// when nothing else of that name exists; an account or alias of its own comes first.
    #[test]
    fn postmaster_of_every_local_domain_is_taken() {
        let (_d, s, plain) = router();
        s.create_account("admin@localhost", "h").unwrap();
        s.add_domain("other.test").unwrap();
        let with = |postmaster: &str| {
            let mut config = crate::config::Config::default();
            config.server.local_domains = vec!["localhost".into()];
            config.server.postmaster = Some(postmaster.into());
            Router::new(s.clone(), &config)
        };
        let r = with("admin@localhost");
        assert_eq!(
            plain.route(&a("postmaster@other.test"), false).unwrap(),
            Route::UnknownUser
        );
        for rcpt in ["postmaster@localhost", "PostMaster@other.test"] {
            assert_eq!(
                r.route(&a(rcpt), false).unwrap(),
                Route::Local(Expansion::accounts(vec!["admin@localhost".into()])),
                "{rcpt}"
            );
        }
        assert_eq!(r.route(&a("nobody@localhost"), false).unwrap(), Route::UnknownUser);
        // Somewhere else: forwarded.
        let Route::Local(e) = with("ops@elsewhere.example")
            .route(&a("postmaster@localhost"), false)
            .unwrap()
        else {
            panic!("not local");
        };
        assert_eq!(e.forward, [("ops@elsewhere.example".to_string(), NextHop::Mx)]);
        // A domain's own postmaster account wins.
        s.create_account("postmaster@other.test", "h").unwrap();
        assert_eq!(
            r.route(&a("postmaster@other.test"), false).unwrap(),
            Route::Local(Expansion::accounts(vec!["postmaster@other.test".into()]))
        );
    }

    #[test]
    fn routes() {
        let (_d, s, r) = router();
        s.create_account("alice@localhost", "h").unwrap();
        s.create_account("bob@localhost", "h").unwrap();
        s.set_alias(
            "team@localhost",
            &[
                "alice@localhost".into(),
                "bob@localhost".into(),
                "alice@localhost".into(),
            ],
        )
        .unwrap();
        s.set_alias("loop1@localhost", &["loop2@localhost".into()]).unwrap();
        s.set_alias("loop2@localhost", &["loop1@localhost".into()]).unwrap();
        assert_eq!(
            r.route(&a("Alice@LOCALHOST"), false).unwrap(),
            Route::Local(Expansion::accounts(vec!["alice@localhost".into()]))
        );
        assert_eq!(
            r.route(&a("alice+news@localhost"), false).unwrap(),
            Route::Local(Expansion::accounts(vec!["alice@localhost".into()]))
        );
        assert_eq!(
            r.route(&a("team@localhost"), false).unwrap(),
            Route::Local(Expansion::accounts(vec![
                "alice@localhost".into(),
                "bob@localhost".into()
            ]))
        );
        assert_eq!(r.route(&a("nobody@localhost"), false).unwrap(), Route::UnknownUser);
        assert_eq!(r.route(&a("loop1@localhost"), false).unwrap(), Route::UnknownUser);
        assert_eq!(r.route(&a("alice@elsewhere.test"), false).unwrap(), Route::RelayDenied);
        assert_eq!(
            r.route(&a("alice%elsewhere.test@localhost"), false).unwrap(),
            Route::RelayDenied
        );
        s.set_alias("@localhost", &["bob@localhost".into()]).unwrap();
        assert_eq!(
            r.route(&a("anything@localhost"), false).unwrap(),
            Route::Local(Expansion::accounts(vec!["bob@localhost".into()]))
        );
        // Targets elsewhere are forwarded: by MX, or to a relay domain's next hop.
        s.set_alias(
            "fwd@localhost",
            &[
                "bob@localhost".into(),
                "pat@elsewhere.test".into(),
                "joe@filtered.example".into(),
            ],
        )
        .unwrap();
        let hop = NextHop::parse("[192.0.2.9]:2525").unwrap();
        assert_eq!(
            r.route(&a("fwd@localhost"), false).unwrap(),
            Route::Local(Expansion {
                accounts: vec!["bob@localhost".into()],
                forward: vec![
                    ("pat@elsewhere.test".into(), NextHop::Mx),
                    ("joe@filtered.example".into(), hop)
                ],
            })
        );
        // A forward does not make the alias's sender "owned" by anyone outside.
        assert!(!r.owns("bob@localhost", &a("pat@elsewhere.test")).unwrap());
        assert!(r.owns("bob@localhost", &a("fwd@localhost")).unwrap());
        assert!(
            !r.owns("alice@localhost", &a("anything@localhost")).unwrap(),
            "not by catch-all"
        );
        s.add_domain("example.test").unwrap();
        assert_eq!(r.route(&a("x@example.test"), false).unwrap(), Route::UnknownUser);
        // A relay domain goes to its next hop from anyone; other domains only for clients
        // that may relay, and routing syntax never.
        let hop = NextHop::parse("[192.0.2.9]:2525").unwrap();
        assert_eq!(r.route(&a("x@filtered.example"), false).unwrap(), Route::Remote(hop));
        assert_eq!(
            r.route(&a("x@elsewhere.test"), true).unwrap(),
            Route::Remote(NextHop::Mx)
        );
        assert_eq!(r.route(&a("x%y@filtered.example"), true).unwrap(), Route::RelayDenied);
    }
}
