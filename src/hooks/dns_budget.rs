//! One message's DNS time (`[dns] message_budget_ms`), shared by everything that looks
//! something up for it: the SPF/DKIM/DMARC checks and every policy's `dns`/`dnsbl`. The
//! pipeline sets the deadline around the data stage ([`within`]); a lookup past it fails at
//! once as a temporary error (RFC 8601 `temperror`) and the message goes on, so a name server
//! that drops queries costs a message at most its budget, however many policies ask.
//!
//! A task-local value: it follows the data-stage chain wherever it is polled, on the I/O
//! worker or on a chain thread (which sets it again), and into a WASM plugin's host calls,
//! which capture it when the call starts.

use std::future::Future;
use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `f` with `deadline` as the message's DNS deadline (none: no shared limit).
pub async fn within<F: Future>(deadline: Option<Instant>, f: F) -> F::Output {
    match deadline {
        Some(d) => DEADLINE.scope(d, f).await,
        None => f.await,
    }
}

/// The running message's DNS deadline, if one was set.
pub fn deadline() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// The text of a lookup refused or cut short by the message's budget.
pub fn spent(what: &str) -> String {
    format!("{what}: temporary failure, this message's DNS time ([dns] message_budget_ms) is spent")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_deadline_is_seen_inside_and_nowhere_else() {
        assert_eq!(deadline(), None);
        let d = Instant::now() + Duration::from_secs(5);
        let seen = within(Some(d), async { deadline() }).await;
        assert_eq!(seen, Some(d));
        // A task spawned from inside does not inherit it (chain threads set it themselves).
        let spawned = within(Some(d), async { tokio::spawn(async { deadline() }).await.unwrap() }).await;
        assert_eq!(spawned, None);
        assert_eq!(within(None, async { deadline() }).await, None);
    }
}
