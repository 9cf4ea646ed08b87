//! Local delivery: an accepted message into the mailboxes the pipeline chose, durably.
//!
//! One stored copy per distinct set of per-account headers (most messages: one copy for all
//! recipients), then one flush; the caller answers 250 only after [`store_local`] returns.

use crate::mail::edit_headers;
use crate::pipeline::Delivery;
use crate::store::{MailStore, Target, now_secs};
use std::borrow::Cow;
use std::sync::Arc;

/// Messages above this size are stored from a blocking thread (hashing and copying a large
/// body would otherwise stall other sessions on the same worker).
const BLOCKING_DELIVERY_SIZE: usize = 256 * 1024;

/// Writes `raw` (headers already edited for everyone) into each delivery's folder — INBOX
/// when the folder does not exist, nothing when the account has gone since RCPT — and
/// waits until it is on disk. Returns how many mailboxes got it.
pub async fn store_local(store: &Arc<dyn MailStore>, raw: &[u8], deliveries: &[Delivery]) -> anyhow::Result<usize> {
    let mut groups: Vec<(&[crate::mail::Header], Vec<Target>)> = Vec::new();
    for d in deliveries.iter().filter(|d| !d.discarded) {
        let mailbox = match store.mailbox(&d.account, &d.folder)? {
            Some(m) => m,
            None => {
                tracing::warn!(
                    account = d.account,
                    folder = d.folder,
                    "no such folder; delivering to INBOX"
                );
                match store.mailbox(&d.account, "INBOX")? {
                    Some(m) => m,
                    None => {
                        tracing::warn!(account = d.account, "account vanished since RCPT; skipped");
                        continue;
                    }
                }
            }
        };
        let target = Target {
            mailbox: mailbox.id,
            flags: d.flags,
            keywords: d.keywords.clone(),
        };
        match groups.iter_mut().find(|(h, _)| *h == d.add_headers.as_slice()) {
            Some((_, targets)) => targets.push(target),
            None => groups.push((&d.add_headers, vec![target])),
        }
    }
    let mut delivered = 0;
    let now = now_secs();
    for (extra, targets) in groups {
        // No added headers (the common case): deliver the received bytes without a copy.
        let copy: Cow<[u8]> = if extra.is_empty() {
            Cow::Borrowed(raw)
        } else {
            Cow::Owned(edit_headers(raw, extra, &[]))
        };
        let _turn = store.write_turn().await;
        if copy.len() >= BLOCKING_DELIVERY_SIZE {
            let (s, t, copy) = (store.clone(), targets.clone(), copy.into_owned());
            tokio::task::spawn_blocking(move || s.deliver_to(&copy, now, &t)).await??;
        } else {
            store.deliver_to(&copy, now, &targets)?;
        }
        delivered += targets.len();
    }
    store.sync().await?;
    Ok(delivered)
}
