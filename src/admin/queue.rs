//! `mailgate queue list|show|flush|hold|release|delete`: the outbound queue by hand.

use super::Request;
use crate::store::{MailStore, QueuedMessage, RcptState, now_secs};
use std::fmt::Write as _;

/// Runs a queue command on the store; says whether the queue changed (the runner is woken
/// then).
pub fn run(store: &dyn MailStore, req: Request) -> Result<(Vec<u8>, bool), String> {
    let e = |e: crate::store::StoreError| e.to_string();
    let one = |id: u64| -> Result<QueuedMessage, String> {
        store
            .queued_message(id)
            .map_err(e)?
            .ok_or_else(|| format!("no queued message {id}"))
    };
    let mut out = String::new();
    let changed = match req {
        Request::QueueList { json } => {
            let all = store.queued().map_err(e)?;
            if json {
                let v: Vec<serde_json::Value> = all.iter().map(as_json).collect();
                out = serde_json::to_string(&v).map_err(|e| e.to_string())? + "\n";
            } else {
                for m in &all {
                    describe(&mut out, m);
                }
                if all.is_empty() {
                    out.push_str("queue is empty\n");
                }
            }
            false
        }
        Request::QueueShow { id } => {
            let m = one(id)?;
            describe(&mut out, &m);
            let raw = store.blob(&m.blob).map_err(e)?.unwrap_or_default();
            out.push('\n');
            out.push_str(&String::from_utf8_lossy(&raw));
            false
        }
        Request::QueueFlush { id, domain } => {
            let mut n = 0;
            let ids: Vec<u64> = match id {
                Some(id) => vec![one(id)?.id],
                None => store.queued().map_err(e)?.iter().map(|m| m.id).collect(),
            };
            for qid in ids {
                store
                    .modify_queued(qid, &mut |m| {
                        for r in &mut m.recipients {
                            let in_domain = domain.as_deref().is_none_or(|d| {
                                r.address
                                    .rsplit_once('@')
                                    .is_some_and(|(_, rd)| rd.eq_ignore_ascii_case(d))
                            });
                            if in_domain && matches!(r.state, RcptState::Queued | RcptState::Deferred) {
                                r.next_attempt = now_secs();
                                n += 1;
                            }
                        }
                    })
                    .map_err(e)?;
            }
            // `queue flush --domain D` also lets go what waits for D's ETRN.
            if let Some(d) = domain.as_deref() {
                n += crate::queue::release_etrn(store, &d.to_ascii_lowercase(), false).map_err(e)?;
            }
            writeln!(out, "{n} recipients due now").ok();
            n > 0
        }
        Request::QueueHold { id } | Request::QueueRelease { id } => {
            let hold = matches!(req, Request::QueueHold { .. });
            let mut n = 0;
            let found = store
                .modify_queued(id, &mut |m| {
                    for r in &mut m.recipients {
                        match (hold, r.state) {
                            (true, RcptState::Queued | RcptState::Deferred) => r.state = RcptState::Held,
                            (false, RcptState::Held) => {
                                r.state = RcptState::Queued;
                                r.etrn = false;
                                r.next_attempt = now_secs();
                            }
                            _ => continue,
                        }
                        n += 1;
                    }
                })
                .map_err(e)?;
            if found.is_none() {
                return Err(format!("no queued message {id}"));
            }
            writeln!(out, "{} {n} recipients of {id}", if hold { "held" } else { "released" }).ok();
            n > 0
        }
        Request::QueueDelete { id } => {
            if !store.remove_queued(id).map_err(e)? {
                return Err(format!("no queued message {id}"));
            }
            writeln!(out, "deleted {id}").ok();
            true
        }
        _ => unreachable!("not a queue command"),
    };
    Ok((out.into_bytes(), changed))
}

fn when(t: i64) -> String {
    mail_parser::DateTime::from_timestamp(t).to_rfc3339()
}

fn describe(out: &mut String, m: &QueuedMessage) {
    let sender = if m.sender.is_empty() { "<>" } else { &m.sender };
    writeln!(
        out,
        "{}  {} bytes  arrived {}  from {sender}",
        m.id,
        m.size,
        when(m.arrival)
    )
    .ok();
    for r in &m.recipients {
        let state = serde_json::to_value(r.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        writeln!(
            out,
            "    {}  {state}  attempts {}  next {}  via {}  {}",
            r.address,
            r.attempts,
            when(r.next_attempt),
            r.next_hop,
            r.last_reply
        )
        .ok();
    }
}

fn as_json(m: &QueuedMessage) -> serde_json::Value {
    serde_json::json!({
        "id": m.id,
        "sender": m.sender,
        "size": m.size,
        "arrival": m.arrival,
        "recipients": m.recipients.iter().map(|r| serde_json::json!({
            "address": r.address,
            "state": r.state,
            "attempts": r.attempts,
            "next_attempt": r.next_attempt,
            "last_reply": r.last_reply,
        })).collect::<Vec<_>>(),
    })
}
