//! Committing an accepted message: the end of a transaction, whoever received it (an SMTP
//! or submission session, or `mailgate send` through the submission socket).
//!
//! [`commit`] runs the pipeline's data stage and `on_deliver`, then writes the queue entry
//! for the remote recipients and the local copies, then one flush: the caller answers 250
//! (or exits 0) only after it returns. Local delivery stores one copy per distinct set of
//! per-account headers (most messages: one copy for all recipients).

use crate::hooks::contract::Session;
use crate::mail::edit_headers;
use crate::pipeline::{Context, Delivery, Refusal, Scope};
use crate::queue::{Dsn, Outgoing, Wake};
use crate::store::{FolderTarget, MailStore, now_secs};
use std::borrow::Cow;
use std::sync::Arc;

static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A new message id for logs and the 250 reply: the time and a counter, in hex.
pub fn new_id() -> String {
    let n = IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:08X}{:06X}", now_secs() as u32, n & 0xFF_FFFF)
}

/// What a transaction carries to its end.
pub struct Envelope<'a> {
    /// Queue id, for logs and the 250 reply.
    pub id: &'a str,
    pub mail_from: &'a str,
    /// Accounts the local recipients resolved to.
    pub accounts: &'a [String],
    /// Remote recipients with their next hops.
    pub remote: &'a [Outgoing],
    pub dsn: Dsn,
    /// Recipients as given, for the log.
    pub rcpts: &'a [String],
    /// The trace fields (`Return-Path:`, `Received:`) to put on top.
    pub trace: &'a str,
    /// Local recipients (as given, with their ORCPT) that asked `NOTIFY=SUCCESS`: the
    /// sender gets a "delivered" notice (RFC 3461 §6.2.1).
    pub notify_delivered: &'a [(String, Option<String>)],
}

/// How a committed message ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Committed {
    /// A policy said `discard`: nothing stored (the client still gets 250).
    Discarded,
    Stored {
        mailboxes: usize,
        queued: bool,
    },
}

/// The end of DATA/BDAT (or of a `send`): the data stage, the thresholds and header edits,
/// `on_deliver` per account, then the trace fields and the edited message into the queue (remote
/// recipients; held when quarantined) and the mailboxes, durably. A refusal comes back as
/// the reply to give; a storage failure as `451 4.3.0`.
pub async fn commit(
    ctx: &Context<'_>,
    store: &Arc<dyn MailStore>,
    wake: &Wake,
    session: &Session,
    scope: &mut Scope,
    envelope: Envelope<'_>,
    body: Vec<u8>,
) -> Result<Committed, Refusal> {
    let id = envelope.id;
    let verdict = |v: &'static str| crate::metrics::inc(&crate::metrics::get().messages, "verdict", v);
    let refused = |r: &Refusal| {
        tracing::info!(id, reply = r.line(), "refused at end of data");
        verdict(if r.code >= 500 { "reject" } else { "tempfail" });
    };
    let accepted = ctx.data(session, scope, body).await.inspect_err(refused)?;
    if accepted.discard {
        tracing::info!(id, from = envelope.mail_from, "discarded by policy");
        verdict("discard");
        return Ok(Committed::Discarded);
    }
    let deliveries = ctx
        .deliveries(session, scope, &accepted, envelope.accounts)
        .await
        .inspect_err(refused)?;
    let storage_failed = |what: &str, e: anyhow::Error| {
        tracing::error!(id, "{what} failed: {e}");
        match e.downcast_ref::<crate::store::StoreError>() {
            // Postfix's answer when its queue file system is full (RFC 3463 X.3.1).
            Some(crate::store::StoreError::NoSpace(_)) => {
                Refusal::new(452, "4.3.1", "Insufficient system storage, try again later")
            }
            _ => Refusal::new(451, "4.3.0", "Temporary storage failure, try again later"),
        }
    };
    let mut raw = Vec::with_capacity(envelope.trace.len() + accepted.raw.len() + 512);
    raw.extend_from_slice(envelope.trace.as_bytes());
    crate::mail::edit_headers_into(&mut raw, &accepted.raw, &accepted.add_headers, &accepted.remove_headers);
    drop(accepted.raw);
    let queued = !envelope.remote.is_empty();
    if queued {
        // Queued without a Return-Path: that field is the final delivery's to add (RFC 5321
        // §4.4). Quarantined mail is held until `queue release`.
        let without_return_path = if raw.starts_with(b"Return-Path:") {
            memchr::memmem::find(&raw, b"\r\n").map_or(&raw[..], |i| &raw[i + 2..])
        } else {
            &raw[..]
        };
        let _turn = store.write_turn().await;
        crate::queue::enqueue(
            &**store,
            without_return_path,
            envelope.mail_from,
            envelope.remote,
            accepted.quarantine,
            envelope.dsn.clone(),
        )
        .map_err(|e| storage_failed("queueing", e.into()))?;
    }
    if !envelope.notify_delivered.is_empty() && !envelope.mail_from.is_empty() && !deliveries.is_empty() {
        success_notice(ctx, store, wake, &envelope, &raw).await;
    }
    // The local copies, then one flush for them, the queue entry and any notice.
    let mailboxes = store_local(store, &raw, &deliveries)
        .await
        .map_err(|e| storage_failed("delivery", e))?;
    if queued {
        wake.wake();
    }
    verdict(accepted.verdict);
    tracing::info!(
        id,
        from = envelope.mail_from,
        rcpts = ?envelope.rcpts,
        mailboxes,
        queued = envelope.remote.len(),
        score = accepted.score,
        quarantine = accepted.quarantine,
        "delivered"
    );
    Ok(Committed::Stored { mailboxes, queued })
}

/// The "delivered" notice for local recipients that asked for one, to the sender. A notice
/// that cannot be made is logged, never a reason to refuse the message.
async fn success_notice(
    ctx: &Context<'_>,
    store: &Arc<dyn MailStore>,
    wake: &Wake,
    envelope: &Envelope<'_>,
    raw: &[u8],
) {
    let Some(router) = ctx.router else { return };
    let reply = "250 2.0.0 delivered to mailbox";
    let reports: Vec<crate::queue::dsn::Report<'_>> = envelope
        .notify_delivered
        .iter()
        .map(|(rcpt, orcpt)| crate::queue::dsn::Report {
            recipient: rcpt,
            orcpt: orcpt.as_deref(),
            reply,
            remote_mta: None,
        })
        .collect();
    let of = crate::queue::NoticeOf {
        sender: envelope.mail_from,
        arrival: now_secs(),
        env_id: envelope.dsn.env_id.as_deref(),
        full: false,
    };
    let _turn = store.write_turn().await;
    let sent = crate::queue::notify_sender(
        &**store,
        ctx.config,
        router,
        wake,
        crate::queue::dsn::Action::Delivered,
        &of,
        raw,
        &reports,
    );
    if let Err(e) = sent {
        tracing::error!(id = envelope.id, "success notice to {}: {e}", envelope.mail_from);
    }
}

/// Writes `raw` (headers already edited for everyone) into each delivery's folder — INBOX
/// when the folder does not exist, nothing when the account has gone since RCPT — and
/// waits until it is on disk. Returns how many mailboxes got it.
pub async fn store_local(store: &Arc<dyn MailStore>, raw: &[u8], deliveries: &[Delivery]) -> anyhow::Result<usize> {
    let mut groups: Vec<(&[crate::mail::Header], Vec<FolderTarget>)> = Vec::new();
    for d in deliveries.iter().filter(|d| !d.discarded) {
        let target = FolderTarget {
            account: d.account.clone(),
            folder: d.folder.clone(),
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
        // One body per group, however many mailboxes share it.
        crate::metrics::get().stored_bytes.inc_by(copy.len() as u64);
        let placed = store.deliver_to_folders(&copy, now, &targets).await?;
        for (t, p) in targets.iter().zip(&placed) {
            match p {
                None => tracing::warn!(account = t.account, "account vanished since RCPT; skipped"),
                Some(p) if p.inbox_instead => {
                    tracing::warn!(
                        account = t.account,
                        folder = t.folder,
                        "no such folder; delivered to INBOX"
                    )
                }
                Some(_) => {}
            }
        }
        delivered += placed.iter().flatten().count();
    }
    store.sync().await?;
    Ok(delivered)
}
