//! The policies' DNS answers, shared by every policy and every message: what a resolver in a
//! mail server keeps so that a slow or lossy name server cannot stall intake.
//!
//! - Answers are kept for their TTL (hickory's `valid_until`); "no such name" and "no such
//!   record" for the zone's negative TTL (RFC 2308: the SOA in the answer), else
//!   [`NEGATIVE_TTL`].
//! - Timeouts and server failures are kept for [`FAILURE_TTL`]: the next messages do not wait
//!   for the same dead server again.
//! - Concurrent identical lookups are one query: the first caller asks, the rest wait for its
//!   answer.
//! - At most [`MAX_ENTRIES`] names; past it, expired entries go first, then everything.

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an answer without TTL information (a negative one without SOA) is kept.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(300);
/// How long a timeout or SERVFAIL is remembered.
pub const FAILURE_TTL: Duration = Duration::from_secs(30);
/// The longest any answer is kept, whatever its TTL says.
pub const MAX_TTL: Duration = Duration::from_secs(86_400);
/// Names kept at most.
pub const MAX_ENTRIES: usize = 100_000;

/// What a lookup gave, and until when it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub result: Result<Vec<String>, String>,
    pub until: Instant,
}

/// A lookup, running or done. Shared: every caller awaits the same query, and a caller that
/// gives up (a policy out of budget) does not cancel it for the others or the next message.
type Lookup = Shared<BoxFuture<'static, Answer>>;

#[derive(Default)]
pub struct DnsCache {
    entries: Mutex<HashMap<(String, String), Lookup>>,
}

impl DnsCache {
    /// The answer for (`kind`, `name`): from the cache while it holds, else from `lookup`,
    /// which concurrent callers of the same key share.
    pub async fn get<F, Fut>(&self, kind: &str, name: &str, lookup: F) -> Result<Vec<String>, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Answer> + Send + 'static,
    {
        let key = (kind.to_string(), name.trim_end_matches('.').to_ascii_lowercase());
        let running = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            match entries.get(&key).map(|l| (l.peek().cloned(), l)) {
                Some((Some(done), _)) if done.until > now => return done.result,
                Some((None, l)) => l.clone(),
                _ => {
                    if entries.len() >= MAX_ENTRIES {
                        entries.retain(|_, l| l.peek().is_none_or(|a| a.until > now));
                        if entries.len() >= MAX_ENTRIES {
                            entries.clear();
                        }
                    }
                    let l = lookup().boxed().shared();
                    entries.insert(key, l.clone());
                    l
                }
            }
        };
        running.await.result
    }

    /// How many names are kept (for tests and metrics).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The time an answer is kept: `ttl` capped at [`MAX_TTL`].
pub fn until(ttl: Duration) -> Instant {
    Instant::now() + ttl.min(MAX_TTL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn answers_are_kept_joined_and_expire() {
        let cache = DnsCache::default();
        let asked = Arc::new(AtomicUsize::new(0));
        let ask = |ttl: Duration, result: Result<Vec<String>, String>| {
            let asked = asked.clone();
            move || async move {
                asked.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Answer {
                    result,
                    until: until(ttl),
                }
            }
        };
        let ok = Ok(vec!["127.0.0.2".to_string()]);
        // Ten lookups at once of one name: one query.
        let all = futures_util::future::join_all(
            (0..10).map(|_| cache.get("A", "x.example.", ask(Duration::from_secs(60), ok.clone()))),
        )
        .await;
        assert!(all.iter().all(|r| r == &ok));
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        // Kept: case and the trailing dot do not matter.
        assert_eq!(
            cache
                .get("A", "X.Example", ask(Duration::from_secs(60), Ok(vec![])))
                .await,
            ok
        );
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        // A failure is kept too, until it expires.
        let fail = Err("timed out".to_string());
        assert_eq!(
            cache.get("A", "dead.example", ask(Duration::ZERO, fail.clone())).await,
            fail
        );
        assert_eq!(
            cache.get("A", "dead.example", ask(Duration::ZERO, Ok(vec![]))).await,
            Ok(vec![])
        );
        assert_eq!(asked.load(Ordering::SeqCst), 3, "an expired answer is asked again");
        // A caller that gives up does not cancel the query: the next one gets its answer.
        let slow = || async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Answer {
                result: Err("timed out".into()),
                until: until(FAILURE_TTL),
            }
        };
        let gave_up = tokio::time::timeout(Duration::from_millis(1), cache.get("A", "slow.example", slow)).await;
        assert!(gave_up.is_err());
        let never = || async { unreachable!("the first query is still the one") };
        assert_eq!(cache.get("A", "slow.example", never).await, Err("timed out".into()));
    }
}
