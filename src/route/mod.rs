//! Where a recipient goes: the built-in route policy.
//!
//! Order of lookups for `local@domain` in a local domain, as Postfix's virtual maps do:
//! an exact alias, then an account, then the address without its `+detail`, then the
//! catch-all alias `@domain`. Alias targets are expanded again (at most [`MAX_ALIAS_DEPTH`]
//! levels, loops cut). Anything outside our domains is a relay attempt: refused unless the
//! session may relay (a later outbound issue adds authenticated relay).

use crate::mail::address::Address;
use crate::store::{MailStore, Result};
use std::sync::Arc;

/// How deep alias chains may go; deeper is almost certainly a loop.
pub const MAX_ALIAS_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Deliver into these accounts' INBOXes (deduplicated, non-empty).
    Local(Vec<String>),
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
}

impl Router {
    pub fn new(store: Arc<dyn MailStore>, config_domains: Vec<String>, delimiter: &str) -> Router {
        Router {
            store,
            config_domains: Arc::new(config_domains),
            delimiter: delimiter.chars().next(),
        }
    }

    pub fn is_local_domain(&self, domain: &str) -> Result<bool> {
        Ok(self.config_domains.iter().any(|d| d == domain) || self.store.has_domain(domain)?)
    }

    /// Decides the route of one recipient.
    pub fn route(&self, rcpt: &Address) -> Result<Route> {
        if !self.is_local_domain(&rcpt.domain)? || rcpt.has_routing_syntax() {
            return Ok(Route::RelayDenied);
        }
        let mut found = Vec::new();
        self.expand(rcpt, 0, &mut found)?;
        Ok(if found.is_empty() {
            Route::UnknownUser
        } else {
            Route::Local(found)
        })
    }

    fn expand(&self, addr: &Address, depth: usize, out: &mut Vec<String>) -> Result<()> {
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
                return self.expand_targets(&candidate, &targets, depth, out);
            }
            if self.store.account(&candidate)?.is_some() {
                if !out.contains(&candidate) {
                    out.push(candidate);
                }
                return Ok(());
            }
        }
        let catch_all = format!("@{}", addr.domain);
        if let Some(targets) = self.store.alias(&catch_all)? {
            return self.expand_targets(&catch_all, &targets, depth, out);
        }
        Ok(())
    }

    fn expand_targets(&self, source: &str, targets: &[String], depth: usize, out: &mut Vec<String>) -> Result<()> {
        for t in targets {
            match Address::parse(t) {
                Ok(a) if self.is_local_domain(&a.domain)? => {
                    // A target that is itself the catch-all's source would loop; accounts
                    // are found by the exact lookup first, so plain recursion is safe.
                    self.expand(&a, depth + 1, out)?;
                }
                Ok(a) => {
                    tracing::warn!(alias = source, target = %a, "alias target outside local domains skipped (no relay yet)")
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
        let r = Router::new(s.clone(), vec!["localhost".into()], "+");
        (dir, s, r)
    }

    fn a(s: &str) -> Address {
        Address::parse(s).unwrap()
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
            r.route(&a("Alice@LOCALHOST")).unwrap(),
            Route::Local(vec!["alice@localhost".into()])
        );
        assert_eq!(
            r.route(&a("alice+news@localhost")).unwrap(),
            Route::Local(vec!["alice@localhost".into()])
        );
        assert_eq!(
            r.route(&a("team@localhost")).unwrap(),
            Route::Local(vec!["alice@localhost".into(), "bob@localhost".into()])
        );
        assert_eq!(r.route(&a("nobody@localhost")).unwrap(), Route::UnknownUser);
        assert_eq!(r.route(&a("loop1@localhost")).unwrap(), Route::UnknownUser);
        assert_eq!(r.route(&a("alice@elsewhere.test")).unwrap(), Route::RelayDenied);
        assert_eq!(
            r.route(&a("alice%elsewhere.test@localhost")).unwrap(),
            Route::RelayDenied
        );
        s.set_alias("@localhost", &["bob@localhost".into()]).unwrap();
        assert_eq!(
            r.route(&a("anything@localhost")).unwrap(),
            Route::Local(vec!["bob@localhost".into()])
        );
        s.add_domain("example.test").unwrap();
        assert_eq!(r.route(&a("x@example.test")).unwrap(), Route::UnknownUser);
    }
}
