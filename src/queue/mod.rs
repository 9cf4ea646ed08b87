//! Outbound delivery: the durable queue's scheduler, as Postfix's queue manager and
//! `smtp(8)` client do it.
//!
//! Messages for remote recipients are stored in the queue ([`crate::store::Queue`]) in the
//! same change set as their acceptance, so `250` means durable for every recipient. The
//! [`Runner`] wakes when mail is queued and when the next retry is due; it groups the due
//! recipients by destination (next hop and, for MX, domain), opens one connection per
//! destination (bounded in total and per destination), sends each message once with all of
//! its recipients for that destination (RSET between messages), and records each
//! recipient's outcome: delivered, deferred (4xx, no connection, timeouts: retried on
//! `outbound.retry_schedule` until `max_lifetime`) or failed (5xx, null MX, no such domain,
//! a mail loop, expiry), which bounces to the sender (RFC 3464) unless the sender is `<>`.
//!
//! A recipient is marked delivered only after the remote `250`, and that mark is made
//! durable after it: a crash between the two sends it again (at least once, as Postfix).

pub mod client;
pub mod dsn;
pub mod mx;
pub mod verify;

use crate::config::Config;
use crate::config::outbound::NextHop;
use crate::mail::address::Address;
use crate::route::{Route, Router};
use crate::store::{MailStore, QueuedMessage, QueuedRecipient, RcptState, now_secs};
use client::{Connection, Envelope, Outcome};
use hickory_resolver::TokioResolver;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, watch};

/// More `Received:` fields than this and the message is looping (RFC 5321 §6.3).
pub const MAX_HOPS: usize = 50;

/// Wakes the runner (something was queued or released), and tells whoever watches that
/// delivery results were recorded.
pub struct Wake {
    notify: Notify,
    recorded: watch::Sender<u64>,
    /// Last ETRN per (client address, domain), for the rate limit.
    etrn: std::sync::Mutex<HashMap<(std::net::IpAddr, String), std::time::Instant>>,
}

impl Default for Wake {
    fn default() -> Wake {
        Wake {
            notify: Notify::new(),
            recorded: watch::channel(0).0,
            etrn: Default::default(),
        }
    }
}

/// One ETRN per client and domain within this time.
pub const ETRN_INTERVAL: Duration = Duration::from_secs(10);

/// What ETRN (RFC 1985) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Etrn {
    /// Held mail released: `250`.
    Started(usize),
    /// Nothing held: `251`.
    Nothing,
    /// Asked again too soon: `458`.
    TooSoon,
}

/// Releases mail held for ETRN to `domain` (`@domain`: its subdomains too) and wakes the
/// runner. The caller has checked the domain may ask.
pub fn etrn(store: &dyn MailStore, wake: &Wake, client: std::net::IpAddr, name: &str) -> crate::store::Result<Etrn> {
    let (domain, subdomains) = match name.strip_prefix('@') {
        Some(d) => (d.to_ascii_lowercase(), true),
        None => (name.to_ascii_lowercase(), false),
    };
    {
        let mut last = wake.etrn.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        last.retain(|_, t| now.duration_since(*t) < ETRN_INTERVAL);
        if last.insert((client, name.to_ascii_lowercase()), now).is_some() {
            return Ok(Etrn::TooSoon);
        }
    }
    let released = release_etrn(store, &domain, subdomains)?;
    if released == 0 {
        return Ok(Etrn::Nothing);
    }
    wake.wake();
    Ok(Etrn::Started(released))
}

/// Makes ETRN-held recipients in `domain` (and its subdomains, when asked) due now.
pub fn release_etrn(store: &dyn MailStore, domain: &str, subdomains: bool) -> crate::store::Result<usize> {
    let mut n = 0;
    for id in store.queued()?.iter().map(|m| m.id) {
        store.modify_queued(id, &mut |m| {
            for r in m.recipients.iter_mut().filter(|r| r.etrn && r.state == RcptState::Held) {
                let d = r.address.rsplit_once('@').map_or("", |(_, d)| d).to_ascii_lowercase();
                if d == domain || (subdomains && d.ends_with(&format!(".{domain}"))) {
                    r.state = RcptState::Queued;
                    r.etrn = false;
                    r.next_attempt = now_secs();
                    r.last_reply.clear();
                    n += 1;
                }
            }
        })?;
    }
    Ok(n)
}

impl Wake {
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Changes after each batch of delivery results is durable in the queue.
    pub fn recorded(&self) -> watch::Receiver<u64> {
        self.recorded.subscribe()
    }
}

/// A remote recipient to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub address: String,
    pub hop: NextHop,
    /// DSN `NOTIFY` (RFC 3461): `NEVER`, or some of `SUCCESS`, `FAILURE`, `DELAY`; empty:
    /// the default (failures).
    pub notify: Vec<String>,
    /// DSN `ORCPT`, decoded.
    pub orcpt: Option<String>,
    /// Held until its domain's server says ETRN (a `[[relay]]` with `etrn = true`).
    pub etrn: bool,
}

impl Outgoing {
    /// `address` to `hop`, with default DSN requests; held for ETRN when its domain is a
    /// `[[relay]]` with `etrn = true`.
    pub fn new(config: &crate::config::Config, address: &str, hop: NextHop) -> Outgoing {
        let etrn = address
            .rsplit_once('@')
            .and_then(|(_, d)| config.relay_for(&d.to_ascii_lowercase()))
            .is_some_and(|r| r.etrn);
        Outgoing {
            address: address.to_string(),
            hop,
            notify: Vec::new(),
            orcpt: None,
            etrn,
        }
    }
}

/// The message's DSN requests (RFC 3461) from MAIL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dsn {
    pub env_id: Option<String>,
    /// `FULL` or `HDRS`.
    pub ret: Option<String>,
}

/// Queues `raw` from `sender` for `recipients`, held when `held` (a quarantine). Not
/// durable until the store's `sync`.
pub fn enqueue(
    store: &dyn MailStore,
    raw: &[u8],
    sender: &str,
    recipients: &[Outgoing],
    held: bool,
    dsn: Dsn,
) -> crate::store::Result<u64> {
    let now = now_secs();
    let entry = QueuedMessage {
        id: 0,
        sender: sender.to_string(),
        blob: [0; 32],
        size: 0,
        arrival: now,
        recipients: recipients
            .iter()
            .map(|r| QueuedRecipient {
                address: r.address.clone(),
                next_hop: r.hop.to_string(),
                state: if held || r.etrn {
                    RcptState::Held
                } else {
                    RcptState::Queued
                },
                attempts: 0,
                next_attempt: now,
                last_reply: if r.etrn && !held {
                    "waiting for ETRN".into()
                } else {
                    String::new()
                },
                notify: r.notify.clone(),
                orcpt: r.orcpt.clone(),
                etrn: r.etrn && !held,
            })
            .collect(),
        warned: false,
        env_id: dsn.env_id,
        ret: dsn.ret,
    };
    store.enqueue(raw, entry)
}

/// Where one group of recipients goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Destination {
    hop: NextHop,
    /// The recipients' domain for MX; empty for a fixed next hop.
    domain: String,
}

/// One recipient's result.
struct Done {
    id: u64,
    address: String,
    outcome: Outcome,
    /// The host whose reply it is.
    mta: Option<String>,
    /// Delivered to a server without DSN, for a recipient that asked `NOTIFY=SUCCESS`: we
    /// send the "relayed" notice (RFC 3461 §4.2, §6.2.1) since nobody further will.
    relayed_notice: bool,
}

/// The same outcome for each of a message's recipients.
fn each(id: u64, rcpts: Vec<String>, outcome: &Outcome, mta: Option<&str>) -> impl Iterator<Item = Done> {
    rcpts.into_iter().map(move |address| Done {
        id,
        address,
        outcome: outcome.clone(),
        mta: mta.map(str::to_string),
        relayed_notice: false,
    })
}

/// The scheduler.
pub struct Runner {
    store: Arc<dyn MailStore>,
    config: Arc<Config>,
    router: Router,
    resolver: Option<Arc<TokioResolver>>,
    wake: Arc<Wake>,
    total: Arc<Semaphore>,
    /// Results are written one at a time (each rewrites its queue entry).
    write: tokio::sync::Mutex<()>,
    /// This runner's name in queue leases ([`crate::store::Queue::lease_queued`]): unique
    /// per process, so a restarted node does not mistake its dead predecessor's leases for
    /// its own.
    holder: String,
}

impl Runner {
    pub fn new(
        store: Arc<dyn MailStore>,
        config: Arc<Config>,
        router: Router,
        resolver: Option<Arc<TokioResolver>>,
        wake: Arc<Wake>,
    ) -> Arc<Runner> {
        let total = Arc::new(Semaphore::new(config.outbound.max_connections));
        let hostname = config.server.hostname.clone();
        Arc::new(Runner {
            store,
            config,
            router,
            resolver,
            wake,
            total,
            write: tokio::sync::Mutex::new(()),
            holder: format!(
                "{}:{}:{}",
                hostname,
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ),
        })
    }

    /// Runs until `shutdown`: a pass over what is due, then sleep until the next retry or a
    /// wake-up.
    pub async fn run(self: Arc<Runner>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let next = match self.pass().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!("queue: {e}");
                    Some(now_secs() + 5)
                }
            };
            // Look again at least this often: with a store several nodes share, another
            // node may queue a message and die before delivering it (one node alone is
            // woken whenever it queues something).
            let idle = self
                .config
                .outbound
                .lease
                .0
                .clamp(Duration::from_secs(1), Duration::from_secs(60));
            let wait = next
                .map_or(
                    idle,
                    |t| Duration::from_secs(t.saturating_sub(now_secs()).max(0) as u64),
                )
                .min(idle);
            tokio::select! {
                _ = self.wake.notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// Delivers everything due now; gives when the next retry is due.
    async fn pass(self: &Arc<Runner>) -> crate::store::Result<Option<i64>> {
        let now = now_secs();
        // The earliest retry of what is not due now; what this pass defers comes on top.
        let mut next: Option<i64> = None;
        let mut by_state: HashMap<&'static str, i64> = ["queued", "deferred", "held"].map(|s| (s, 0)).into();
        let is_due =
            |r: &QueuedRecipient| matches!(r.state, RcptState::Queued | RcptState::Deferred) && r.next_attempt <= now;
        let mut candidates = Vec::new();
        for entry in self.store.queued()? {
            for r in &entry.recipients {
                let state = match r.state {
                    RcptState::Queued => "queued",
                    RcptState::Deferred => "deferred",
                    RcptState::Held => "held",
                    RcptState::Delivered | RcptState::Failed => continue,
                };
                *by_state.entry(state).or_default() += 1;
                if r.state != RcptState::Held && r.next_attempt > now {
                    next = Some(next.map_or(r.next_attempt, |n| n.min(r.next_attempt)));
                }
            }
            if entry.recipients.iter().any(is_due) {
                candidates.push(entry);
            }
        }
        for (state, n) in by_state {
            crate::metrics::get()
                .queue_recipients
                .get_or_create(&crate::metrics::label("state", state))
                .set(n);
        }
        // Only what no other node is delivering, as it stands now (one node alone is
        // granted everything, as scanned).
        let asked = candidates.len();
        let leased = if candidates.is_empty() {
            Vec::new()
        } else {
            let until = now + self.config.outbound.lease.0.as_secs() as i64;
            self.store.lease_queued(candidates, &self.holder, until)?
        };
        if leased.len() < asked {
            // Another node's lease runs out by then at the latest.
            let retry = now + self.config.outbound.lease.0.as_secs() as i64;
            next = Some(next.map_or(retry, |n| n.min(retry)));
        }
        let mut due: HashMap<Destination, Vec<(u64, Vec<String>)>> = HashMap::new();
        for entry in &leased {
            for r in entry.recipients.iter().filter(|r| is_due(r)) {
                let hop = NextHop::parse(&r.next_hop).unwrap_or(NextHop::Mx);
                let domain = match hop {
                    NextHop::Mx => r.address.rsplit_once('@').map_or("", |(_, d)| d).to_ascii_lowercase(),
                    NextHop::Host { .. } => String::new(),
                };
                let list = due.entry(Destination { hop, domain }).or_default();
                match list.iter_mut().find(|(id, _)| *id == entry.id) {
                    Some((_, rcpts)) => rcpts.push(r.address.clone()),
                    None => list.push((entry.id, vec![r.address.clone()])),
                }
            }
        }
        let leased: Vec<u64> = leased.iter().map(|e| e.id).collect();
        let per_destination = self.config.outbound.max_connections_per_destination;
        let mut tasks = tokio::task::JoinSet::new();
        for (dest, messages) in due {
            // Up to `per_destination` connections share the destination's messages.
            let lanes = per_destination.min(messages.len()).max(1);
            let mut split: Vec<Vec<(u64, Vec<String>)>> = vec![Vec::new(); lanes];
            for (i, m) in messages.into_iter().enumerate() {
                split[i % lanes].push(m);
            }
            for part in split {
                let (runner, dest) = (self.clone(), dest.clone());
                tasks.spawn(async move {
                    let Ok(_slot) = runner.total.clone().acquire_owned().await else {
                        return None;
                    };
                    let results = runner.deliver(&dest, part).await;
                    let retry = match runner.record(results).await {
                        Ok(retry) => retry,
                        Err(e) => {
                            tracing::error!("queue: recording results: {e}");
                            Some(now_secs() + 5)
                        }
                    };
                    runner.wake.recorded.send_modify(|n| *n += 1);
                    retry
                });
            }
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok(Some(t)) = done {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        if !leased.is_empty()
            && let Err(e) = self.store.release_queued(&leased, &self.holder)
        {
            tracing::warn!("queue: releasing leases: {e}");
        }
        Ok(next)
    }

    /// Sends `messages` (queue id, recipients) to `dest` over one connection at a time.
    async fn deliver(&self, dest: &Destination, messages: Vec<(u64, Vec<String>)>) -> Vec<Done> {
        let all = |outcome: Outcome, mta: Option<String>| -> Vec<Done> {
            messages
                .iter()
                .flat_map(|(id, rcpts)| each(*id, rcpts.clone(), &outcome, mta.as_deref()))
                .collect()
        };
        let reply = |code, text: &str| client::Reply {
            code,
            text: text.to_string(),
        };
        let hosts = match mx::hosts(
            self.resolver.as_deref(),
            &dest.hop,
            &dest.domain,
            self.config.outbound.port,
        )
        .await
        {
            mx::Hosts::Try(h) => h,
            mx::Hosts::NullMx => {
                let r = reply(
                    556,
                    "5.1.10 Recipient address rejected: the domain accepts no mail (null MX)",
                );
                return all(Outcome::Failed(r), None);
            }
            mx::Hosts::NoDomain => {
                let r = reply(
                    550,
                    &format!("5.1.2 Recipient address rejected: domain {} not found", dest.domain),
                );
                return all(Outcome::Failed(r), None);
            }
            mx::Hosts::Later(e) => return all(Outcome::Deferred(reply(451, &format!("4.4.3 {e}"))), None),
        };
        let mut done = Vec::new();
        let mut pending: std::collections::VecDeque<(u64, Vec<String>)> = messages.into_iter().collect();
        let mut last_error = String::from("no host could be reached");
        let helo = self.config.helo_name().to_string();
        'hosts: for host in &hosts {
            for addr in &host.addrs {
                if pending.is_empty() {
                    break 'hosts;
                }
                let mut conn = match Connection::open(*addr, &host.name, &helo, self.config.outbound.tls).await {
                    Ok(c) => c,
                    Err(Ok(r)) => {
                        last_error = format!("{} said: {r}", host.name);
                        continue;
                    }
                    Err(Err(b)) => {
                        last_error = format!("{} ({addr}): {}", host.name, b.0);
                        continue;
                    }
                };
                let mut first = true;
                while let Some((id, rcpts)) = pending.pop_front() {
                    let (entry, body) = match self.entry_and_body(id) {
                        Ok(Some(eb)) => eb,
                        Ok(None) => continue, // deleted from the queue meanwhile
                        Err(e) => {
                            tracing::error!(id, "queue: reading the message: {e}");
                            let r = reply(451, "4.3.0 Local error reading the queued message");
                            done.extend(each(id, rcpts, &Outcome::Deferred(r), None));
                            continue;
                        }
                    };
                    let outcomes: Vec<Outcome> = if hops(&body) > MAX_HOPS {
                        let r = reply(554, "5.4.6 Too many hops: the message is looping (RFC 5321 §6.3)");
                        rcpts.iter().map(|_| Outcome::Failed(r.clone())).collect()
                    } else {
                        let rcpt_dsn: Vec<(Vec<String>, Option<String>)> = rcpts
                            .iter()
                            .map(|a| {
                                let r = entry.recipients.iter().find(|r| &r.address == a);
                                r.map_or((Vec::new(), None), |r| (r.notify.clone(), r.orcpt.clone()))
                            })
                            .collect();
                        if !first && conn.rset().await.is_err() {
                            pending.push_front((id, rcpts));
                            continue 'hosts;
                        }
                        first = false;
                        let env = Envelope {
                            sender: &entry.sender,
                            recipients: &rcpts,
                            body: &body,
                            ret: entry.ret.as_deref(),
                            env_id: entry.env_id.as_deref(),
                            rcpt_dsn: &rcpt_dsn,
                        };
                        match conn.send(&env).await {
                            Ok(o) => o,
                            Err(b) => {
                                // The connection broke mid-transaction: nothing of it counts;
                                // this message and the rest try the next address.
                                last_error = format!("{}: {}", host.name, b.0);
                                pending.push_front((id, rcpts));
                                continue 'hosts;
                            }
                        }
                    };
                    for (address, outcome) in rcpts.into_iter().zip(outcomes) {
                        tracing::debug!(id, to = address, relay = host.name, ?outcome, "delivery attempt");
                        let wants_success = entry
                            .recipients
                            .iter()
                            .any(|r| r.address == address && r.notify.iter().any(|n| n == "SUCCESS"));
                        done.push(Done {
                            id,
                            address,
                            relayed_notice: wants_success && !conn.ext.dsn && matches!(outcome, Outcome::Delivered(_)),
                            outcome,
                            mta: Some(host.name.clone()),
                        });
                    }
                }
                conn.quit().await;
            }
        }
        if !pending.is_empty() {
            let r = Outcome::Deferred(reply(451, &format!("4.4.1 {last_error}")));
            for (id, rcpts) in pending {
                done.extend(each(id, rcpts, &r, None));
            }
        }
        done
    }

    /// A queued message's entry and body, read once per attempt.
    fn entry_and_body(&self, id: u64) -> crate::store::Result<Option<(QueuedMessage, Vec<u8>)>> {
        let Some(m) = self.store.queued_message(id)? else {
            return Ok(None);
        };
        Ok(self.store.blob(&m.blob)?.map(|b| (m, b)))
    }

    /// Writes the outcomes into the queue, bounces what failed, and makes it durable. Gives
    /// the earliest retry of what it deferred.
    async fn record(&self, results: Vec<Done>) -> crate::store::Result<Option<i64>> {
        let mut next: Option<i64> = None;
        let _w = self.write.lock().await;
        let mut by_id: HashMap<u64, Vec<Done>> = HashMap::new();
        for d in results {
            by_id.entry(d.id).or_default().push(d);
        }
        let now = now_secs();
        let lifetime = self.config.outbound.max_lifetime.0.as_secs() as i64;
        let retry_after = |attempts| self.config.outbound.retry_after(attempts).as_secs() as i64;
        let warn_after = self.config.outbound.delay_warning.0.as_secs() as i64;
        for (id, results) in by_id {
            // A notice quotes the message, whose body may go with the entry: read it first
            // when this batch can fail a recipient or warn of a delay.
            let may_notify = results
                .iter()
                .any(|d| d.relayed_notice || !matches!(d.outcome, Outcome::Delivered(_)));
            let original = match may_notify {
                true => self.entry_and_body(id)?.map(|(_, b)| b).unwrap_or_default(),
                false => Vec::new(),
            };
            let mut failed: Vec<(String, Option<String>, String, Option<String>)> = Vec::new();
            let mut relayed = Vec::new();
            let mut late = Vec::new();
            let mut results = Some(results);
            let entry = self.store.modify_queued(id, &mut |entry| {
                for d in results.take().unwrap_or_default() {
                    // A recipient held (`queue hold`) while its attempt ran keeps the attempt's
                    // final outcome: a hold cannot unsend it, and releasing it must not send it
                    // twice. A temporary failure leaves it held.
                    let Some(r) = entry.recipients.iter_mut().find(|r| {
                        r.address == d.address
                            && matches!(r.state, RcptState::Queued | RcptState::Deferred | RcptState::Held)
                    }) else {
                        continue;
                    };
                    r.attempts += 1;
                    let result = match d.outcome {
                        Outcome::Delivered(_) => "delivered",
                        Outcome::Deferred(_) => "deferred",
                        Outcome::Failed(_) => "failed",
                    };
                    crate::metrics::inc(&crate::metrics::get().delivery_attempts, "result", result);
                    if r.state == RcptState::Held
                        && let Outcome::Deferred(reply) = &d.outcome
                    {
                        r.last_reply = reply.to_string();
                        continue;
                    }
                    match d.outcome {
                        Outcome::Delivered(reply) => {
                            r.state = RcptState::Delivered;
                            r.last_reply = reply.to_string();
                            if d.relayed_notice {
                                relayed.push((r.address.clone(), r.orcpt.clone(), r.last_reply.clone(), d.mta));
                            }
                        }
                        Outcome::Failed(reply) => {
                            r.state = RcptState::Failed;
                            r.last_reply = reply.to_string();
                            if wants_failure_notice(r) {
                                failed.push((r.address.clone(), r.orcpt.clone(), r.last_reply.clone(), d.mta));
                            }
                        }
                        Outcome::Deferred(reply) => {
                            r.last_reply = reply.to_string();
                            if now - entry.arrival >= lifetime {
                                r.state = RcptState::Failed;
                                let text = format!("4.4.7 Delivery time expired; last: {}", r.last_reply);
                                if wants_failure_notice(r) {
                                    failed.push((r.address.clone(), r.orcpt.clone(), format!("554 {text}"), d.mta));
                                }
                            } else {
                                r.state = RcptState::Deferred;
                                r.next_attempt = now + retry_after(r.attempts);
                                next = Some(next.map_or(r.next_attempt, |n| n.min(r.next_attempt)));
                            }
                        }
                    }
                }
                // One delay warning per message, for recipients still waiting past
                // `delay_warning` that did not decline it (NOTIFY without DELAY).
                if warn_after > 0 && !entry.warned && !entry.sender.is_empty() && now - entry.arrival >= warn_after {
                    late = entry
                        .recipients
                        .iter()
                        .filter(|r| r.state == RcptState::Deferred)
                        .filter(|r| r.notify.is_empty() || r.notify.iter().any(|n| n == "DELAY"))
                        .map(|r| (r.address.clone(), r.orcpt.clone(), r.last_reply.clone(), None))
                        .collect();
                    entry.warned = !late.is_empty();
                }
            })?;
            let Some(entry) = entry else { continue };
            // Never a bounce of a bounce (null sender).
            if !failed.is_empty()
                && !entry.sender.is_empty()
                && let Err(e) = self.notify_sender(dsn::Action::Failed, &entry, &original, &failed)
            {
                tracing::error!(id, "queue: bounce to {}: {e}", entry.sender);
            }
            if !late.is_empty()
                && let Err(e) = self.notify_sender(dsn::Action::Delayed, &entry, &original, &late)
            {
                tracing::error!(id, "queue: delay warning to {}: {e}", entry.sender);
            }
            if !relayed.is_empty()
                && !entry.sender.is_empty()
                && let Err(e) = self.notify_sender(dsn::Action::Relayed, &entry, &original, &relayed)
            {
                tracing::error!(id, "queue: success notice to {}: {e}", entry.sender);
            }
        }
        self.store.sync().await?;
        Ok(next)
    }

    /// A DSN for `failed` (address, ORCPT, reply, remote MTA) to the entry's sender.
    fn notify_sender(
        &self,
        action: dsn::Action,
        entry: &QueuedMessage,
        original: &[u8],
        failed: &[(String, Option<String>, String, Option<String>)],
    ) -> anyhow::Result<()> {
        let reports: Vec<dsn::Report<'_>> = failed
            .iter()
            .map(|(a, o, r, m)| dsn::Report {
                recipient: a,
                orcpt: o.as_deref(),
                reply: r,
                remote_mta: m.as_deref(),
            })
            .collect();
        let of = NoticeOf {
            sender: &entry.sender,
            arrival: entry.arrival,
            env_id: entry.env_id.as_deref(),
            full: entry.ret.as_deref().is_some_and(|r| r.eq_ignore_ascii_case("FULL")),
        };
        notify_sender(
            &*self.store,
            &self.config,
            &self.router,
            &self.wake,
            action,
            &of,
            original,
            &reports,
        )
    }
}

/// The message a notice is about.
pub struct NoticeOf<'a> {
    pub sender: &'a str,
    pub arrival: i64,
    pub env_id: Option<&'a str>,
    /// `RET=FULL`: a bounce returns the whole message.
    pub full: bool,
}

/// Sends a DSN about `reports` to the sender of `of`: into the sender's mailbox when local
/// (not durable until the store's `sync`), else queued with the null sender.
#[allow(clippy::too_many_arguments)]
pub fn notify_sender(
    store: &dyn MailStore,
    config: &Config,
    router: &Router,
    wake: &Wake,
    action: dsn::Action,
    of: &NoticeOf<'_>,
    original: &[u8],
    reports: &[dsn::Report<'_>],
) -> anyhow::Result<()> {
    let host = &config.server.hostname;
    let msg = dsn::notice(
        action, host, of.sender, original, reports, of.arrival, of.env_id, of.full,
    );
    let to = Address::parse(of.sender)?;
    match router.route(&to, true)? {
        Route::Local(found) => {
            // A notice for an alias that forwards goes where the alias forwards to.
            if !found.forward.is_empty() {
                let to: Vec<Outgoing> = found
                    .forward
                    .into_iter()
                    .map(|(address, hop)| Outgoing::new(config, &address, hop))
                    .collect();
                enqueue(store, &msg, "", &to, false, Dsn::default())?;
                wake.wake();
            }
            let targets: Vec<crate::store::Target> = found
                .accounts
                .iter()
                .filter_map(|a| store.mailbox(a, "INBOX").ok().flatten())
                .map(|m| crate::store::Target {
                    mailbox: m.id,
                    ..Default::default()
                })
                .collect();
            // Final delivery: the Return-Path is ours to add, and a notice's is null.
            let mut local = b"Return-Path: <>\r\n".to_vec();
            local.extend_from_slice(&msg);
            store.deliver_to(&local, now_secs(), &targets)?;
        }
        Route::Remote(hop) => {
            let to = Outgoing::new(config, of.sender, hop);
            enqueue(store, &msg, "", &[to], false, Dsn::default())?;
            wake.wake();
        }
        Route::UnknownUser | Route::RelayDenied => {
            tracing::warn!(sender = of.sender, "notice has nowhere to go; dropped");
        }
    }
    Ok(())
}

/// Whether the sender asked to hear of this recipient's failure (RFC 3461 §4.1: the
/// default is yes; `NOTIFY=NEVER`, or a list without `FAILURE`, is no).
fn wants_failure_notice(r: &QueuedRecipient) -> bool {
    r.notify.is_empty() || r.notify.iter().any(|n| n == "FAILURE")
}

/// `Received:` fields in a message's header.
pub fn hops(raw: &[u8]) -> usize {
    let end = memchr::memmem::find(raw, b"\r\n\r\n").map_or(raw.len(), |i| i + 2);
    raw[..end]
        .split(|b| *b == b'\n')
        .filter(|l| l.len() >= 9 && l[..9].eq_ignore_ascii_case(b"received:"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_count_received_fields() {
        let raw =
            b"Received: from a\r\n\tby b\r\nRECEIVED: from c\r\nSubject: Received: no\r\n\r\nReceived: in the body\r\n";
        assert_eq!(hops(raw), 2);
        let many = "Received: x\r\n".repeat(MAX_HOPS + 1) + "\r\nbody";
        assert!(hops(many.as_bytes()) > MAX_HOPS);
        assert_eq!(hops(b"no header end"), 0);
    }
}
