//! What happens to a message: the one decision path.
//!
//! Every stage of an SMTP transaction runs here: `on_receive` at connect, helo, mail, rcpt
//! and data; the built-in route and `on_route` for each recipient; SPF/DKIM/DMARC when a
//! policy reads them; the score thresholds; the headers we add and remove; `on_deliver` per
//! recipient. The SMTP session calls the stages as the client's commands arrive; `policy
//! test`, `spam classify` and `spam eval` call [`decide`], which runs the same stages in the
//! same order over a whole message. Nothing else decides, so the offline tools cannot
//! disagree with the server.
//!
//! The pipeline decides; it does not store or send. The caller writes the accepted message
//! where [`Delivery`] says (the `deliver` module for local mailboxes).

pub mod report;
pub mod verdict;

pub use report::{Envelope, Report};
pub use verdict::PolicyState;

use crate::config::Config;
use crate::config::outbound::NextHop;
use crate::hooks::contract::{Header, Message, RouteKind, Session};
use crate::hooks::threads::Chains;
use crate::hooks::{Action, Event, Hook, Outcome, PolicySet, Stage, trace_header};
use crate::mail::address::Address;
use crate::route::{Expansion, Route, Router};
use crate::spam::origin::Origin;
use crate::store::Flags;
use std::sync::Arc;

/// Headers only this server writes; copies arriving with a message are removed.
pub const OWN_HEADERS: [&str; 4] = ["X-Spam-Flag", "X-Spam-Score", "X-Spam-Symbols", "X-Mailgate-Trace"];

/// What a decision depends on besides the message and its session.
pub struct Context<'a> {
    pub policies: &'a Arc<PolicySet>,
    pub config: &'a Config,
    /// Where recipients go. `None` (corpus runs): every recipient is a local account of its
    /// own name.
    pub router: Option<&'a Router>,
    /// SPF/DKIM/DMARC, when a policy reads `event.auth`. `None`: not checked.
    pub origin: Option<&'a Origin>,
    /// Where the data-stage chain runs. `None`: here.
    pub chains: Option<&'a Chains>,
    /// The client may relay to any domain (`smtp.relay_networks`).
    pub may_relay: bool,
}

/// Where an accepted recipient goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// These local accounts, and the addresses elsewhere an alias forwards to.
    Local(Expansion),
    /// Out through the queue, to this next hop.
    Remote(NextHop),
}

/// A refusal, as the SMTP reply it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    /// Empty for replies without an enhanced status code.
    pub enhanced: String,
    pub text: String,
    /// The session ends after the reply (a policy said `disconnect`).
    pub close: bool,
}

impl Refusal {
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Refusal {
        Refusal {
            code,
            enhanced: enhanced.into(),
            text: text.into(),
            close: false,
        }
    }

    /// The refusal a policy outcome asks for, if it refuses.
    pub fn of(out: &Outcome) -> Option<Refusal> {
        let close = match out.action {
            Action::Reject | Action::Tempfail => false,
            Action::Disconnect => true,
            _ => return None,
        };
        let (code, enhanced, text) = out.reply();
        Some(Refusal {
            code,
            enhanced,
            text,
            close,
        })
    }

    /// The reply line without CRLF.
    pub fn line(&self) -> String {
        if self.enhanced.is_empty() {
            format!("{} {}", self.code, self.text)
        } else {
            format!("{} {} {}", self.code, self.enhanced, self.text)
        }
    }

    /// `reject`, `tempfail` or `disconnect`, as reports name it.
    pub fn verdict(&self) -> &'static str {
        match (self.close, self.code) {
            (true, _) => "disconnect",
            (false, c) if c < 500 => "tempfail",
            _ => "reject",
        }
    }
}

/// What the policies said so far in one scope: the session (connect, helo) or a
/// transaction (from MAIL on), which starts as a copy of the session's.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub event: Event,
    pub policy: PolicyState,
}

impl Scope {
    /// A transaction's scope: the session's, with a new envelope.
    pub fn transaction(&self, mail_from: &str) -> Scope {
        let mut t = self.clone();
        t.event.envelope.mail_from = Some(mail_from.to_string());
        t.event.envelope.rcpt_to.clear();
        t
    }
}

/// A message past the data stage: what to add and remove, and where it goes by default.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The bytes received (as the client sent them).
    pub raw: Vec<u8>,
    /// Parsed, when some policy needed it.
    pub message: Option<Arc<Message>>,
    /// A policy said `discard`: answer 250, store nothing.
    pub discard: bool,
    /// Junk instead of INBOX.
    pub quarantine: bool,
    /// `accept`, `tag`, `quarantine` or `deliver` (see [`Report::verdict`]).
    pub verdict: &'static str,
    /// Added on top of the message, in this order.
    pub add_headers: Vec<Header>,
    /// Removed from it (names, or `Name:prefix`; see [`crate::mail::headers`]).
    pub remove_headers: Vec<String>,
    pub score: f64,
}

/// Where one account's copy goes, after `on_deliver`.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub account: String,
    pub folder: String,
    pub flags: Flags,
    pub keywords: Vec<String>,
    /// What `on_deliver` named, as given (for reports).
    pub flag_names: Vec<String>,
    /// Headers `on_deliver` added for this account alone.
    pub add_headers: Vec<Header>,
    /// `on_deliver` said `discard`: this account gets no copy.
    pub discarded: bool,
}

impl Context<'_> {
    /// Whether `on_receive` runs at `stage` in `scope`.
    pub fn wants(&self, scope: &Scope, stage: Stage) -> bool {
        !scope.policy.accepted && self.policies.wants(Hook::Receive, Some(stage))
    }

    /// `on_receive` at `stage` (connect, helo, mail): its outcome goes into `scope`.
    pub async fn receive(&self, stage: Stage, session: &Session, scope: &mut Scope) -> Result<(), Refusal> {
        if !self.wants(scope, stage) {
            return Ok(());
        }
        let ev = &mut scope.event;
        ev.hook = Hook::Receive;
        ev.stage = Some(stage);
        ev.session = session.clone();
        ev.recipient = None;
        let out = self.policies.run(Hook::Receive, ev).await;
        let refused = Refusal::of(&out);
        scope.policy.absorb(out);
        refused.map_or(Ok(()), Err)
    }

    /// RCPT: the built-in route and `on_route`, then `on_receive` at `rcpt`. Gives where the
    /// recipient goes; it is in the envelope afterwards.
    pub async fn rcpt(&self, session: &Session, scope: &mut Scope, given: &str) -> Result<Destination, Refusal> {
        let destination = match self.route(session, scope, given).await? {
            Route::Local(accounts) => Destination::Local(accounts),
            Route::Remote(hop) => Destination::Remote(hop),
            Route::UnknownUser => {
                return Err(Refusal::new(
                    550,
                    "5.1.1",
                    format!("<{given}>: Recipient address rejected: User unknown"),
                ));
            }
            Route::RelayDenied => {
                return Err(Refusal::new(554, "5.7.1", format!("<{given}>: Relay access denied")));
            }
        };
        if self.wants(scope, Stage::Rcpt) {
            let mut ev = scope.event.clone();
            ev.hook = Hook::Receive;
            ev.stage = Some(Stage::Rcpt);
            ev.session = session.clone();
            ev.recipient = Some(given.to_string());
            let out = self.policies.run(Hook::Receive, &mut ev).await;
            let refused = Refusal::of(&out);
            scope.event.score = ev.score;
            scope.event.symbols = ev.symbols;
            scope.policy.absorb(out);
            if let Some(r) = refused {
                return Err(r);
            }
        }
        scope.event.envelope.rcpt_to.push(given.to_string());
        Ok(destination)
    }

    /// The built-in route, then `on_route` policies, which may override it.
    async fn route(&self, session: &Session, scope: &mut Scope, given: &str) -> Result<Route, Refusal> {
        let lookup_failed = |e: crate::store::StoreError| {
            tracing::error!("routing {given}: {e}");
            Refusal::new(451, "4.3.0", "Temporary lookup failure")
        };
        let routed = |a: &Address| match self.router {
            Some(r) => r.route(a, self.may_relay).map_err(lookup_failed),
            None => Ok(Route::Local(Expansion::accounts(vec![a.to_string()]))),
        };
        let address = Address::parse(given).map_err(|_| Refusal::new(501, "5.1.3", "Bad recipient address syntax"))?;
        let builtin = routed(&address)?;
        if !self.policies.wants(Hook::Route, None) {
            return Ok(builtin);
        }
        let mut ev = scope.event.clone();
        ev.hook = Hook::Route;
        ev.stage = None;
        ev.session = session.clone();
        ev.recipient = Some(given.to_string());
        ev.default_route = Some(
            match builtin {
                Route::Local(_) => "local",
                Route::Remote(_) => "relay",
                Route::UnknownUser => "unknown",
                Route::RelayDenied => "relay-denied",
            }
            .into(),
        );
        let out = self.policies.run(Hook::Route, &mut ev).await;
        scope.policy.trace.extend(out.trace.iter().cloned());
        if let Some(r) = Refusal::of(&out) {
            return Err(r);
        }
        match out.route {
            None => Ok(builtin),
            Some(RouteKind::Local) => {
                let target = out.mailbox.clone().unwrap_or_else(|| given.to_string());
                Ok(match Address::parse(&target) {
                    // A rewrite may only name local accounts: a policy cannot open a relay.
                    Ok(a) => match routed(&a)? {
                        Route::RelayDenied | Route::Remote(_) => Route::UnknownUser,
                        r => r,
                    },
                    Err(_) => Route::UnknownUser,
                })
            }
            Some(RouteKind::Reject) => {
                let default_text = format!("<{given}>: Recipient address rejected");
                let (code, enhanced, text) = out.reply_or(550, "5.1.1", &default_text);
                Err(Refusal::new(code, &enhanced, text))
            }
            // To the host the policy names, else where the built-in route sends it, else MX.
            Some(RouteKind::Relay) => match out.host.as_deref().map(NextHop::parse) {
                Some(Ok(hop)) => Ok(Route::Remote(hop)),
                Some(Err(e)) => {
                    tracing::warn!(recipient = given, "on_route relay host: {e}");
                    Err(Refusal::new(451, "4.3.5", "Policy gave an unusable relay host"))
                }
                None => Ok(match builtin {
                    Route::Remote(hop) => Route::Remote(hop),
                    _ => Route::Remote(NextHop::Mx),
                }),
            },
        }
    }

    /// End of DATA: sender authentication, `on_receive` at `data`, the thresholds and the
    /// header edits. `helo` and the scope's envelope are what SPF is checked against.
    pub async fn data(&self, session: &Session, scope: &mut Scope, raw: Vec<u8>) -> Result<Accepted, Refusal> {
        let mut raw = raw;
        // One DNS deadline for everything this message looks up (`[dns] message_budget_ms`).
        let dns_deadline =
            Some(tokio::time::Instant::now() + std::time::Duration::from_millis(self.config.dns.message_budget_ms));
        let auth_header = crate::hooks::dns_budget::within(dns_deadline, self.authenticate(session, scope, &raw)).await;
        // Parsed already by a caller that needed it too (`decide`'s callers), or not yet.
        let mut message = scope.event.message.take();
        if self.wants(scope, Stage::Data) {
            let ev = &mut scope.event;
            ev.hook = Hook::Receive;
            ev.stage = Some(Stage::Data);
            ev.session = session.clone();
            ev.recipient = None;
            let out = match self.chains {
                Some(chains) => {
                    let (out, back) = chains
                        .parse_and_run(self.policies, Hook::Receive, ev, raw, dns_deadline)
                        .await;
                    raw = back;
                    out
                }
                None => {
                    ev.message = Some(
                        message
                            .take()
                            .unwrap_or_else(|| Arc::new(crate::mail::parse_message(&raw))),
                    );
                    crate::hooks::dns_budget::within(dns_deadline, self.policies.run(Hook::Receive, ev)).await
                }
            };
            message = ev.message.take();
            let refused = Refusal::of(&out);
            scope.policy.absorb(out);
            if let Some(r) = refused {
                return Err(r);
            }
        }
        if message.is_none() && self.policies.wants(Hook::Deliver, None) {
            message = Some(Arc::new(crate::mail::parse_message(&raw)));
        }
        let score = scope.event.score;
        let judged = if scope.policy.accepted {
            verdict::Verdict::Clean
        } else {
            verdict::judge(score, &self.config.spam.thresholds)
        };
        if judged == verdict::Verdict::Reject {
            let reasons = verdict::main_symbols(&scope.event.symbols, 3);
            return Err(Refusal::new(
                550,
                "5.7.1",
                format!("Message rejected as spam (score {score:.1}: {reasons})"),
            ));
        }
        let quarantine = scope.policy.quarantine || judged == verdict::Verdict::Quarantine;
        let mut add = scope.policy.add_headers.clone();
        if let Some(h) = auth_header {
            add.insert(0, h);
        }
        add.extend(verdict::spam_headers(
            score,
            &scope.event.symbols,
            judged != verdict::Verdict::Clean,
        ));
        if self.config.policies.trace_header && !scope.policy.trace.is_empty() {
            add.push(Header {
                name: "X-Mailgate-Trace".into(),
                value: format!("v={}; {}", self.policies.version, trace_header(&scope.policy.trace)),
            });
        }
        // Headers we vouch for are never taken from the sender: a forged "X-Spam-Flag: NO" or
        // trace would mislead users' filters.
        let mut remove = scope.policy.remove_headers.clone();
        remove.extend(OWN_HEADERS.iter().map(|h| h.to_string()));
        // RFC 8601 §5: results claiming to come from us that we did not write.
        remove.push(format!("Authentication-Results:{}", self.config.server.hostname));
        let verdict = match (scope.policy.accepted, scope.policy.discard, judged, quarantine) {
            (true, _, _, _) => "accept",
            (_, true, _, _) => "discard",
            (_, _, _, true) => "quarantine",
            (_, _, verdict::Verdict::Tag, _) => "tag",
            _ => "deliver",
        };
        Ok(Accepted {
            raw,
            message,
            discard: scope.policy.discard,
            quarantine,
            verdict,
            add_headers: add,
            remove_headers: remove,
            score,
        })
    }

    /// SPF, DKIM and DMARC onto the scope's event when a policy reads `event.auth`. Returns
    /// the `Authentication-Results` header to add, if one is configured.
    async fn authenticate(&self, session: &Session, scope: &mut Scope, raw: &[u8]) -> Option<Header> {
        // Our own users' mail (AUTH, or `mailgate send`) is not checked against the world's
        // SPF/DKIM/DMARC records: it leaves from here.
        if scope.policy.accepted || !self.policies.wants_auth() || session.is_submission() {
            return None;
        }
        let origin = self.origin?;
        let ip = session.client_ip.parse().ok()?;
        let mail_from = scope.event.envelope.mail_from.clone().unwrap_or_default();
        let sender = crate::spam::origin::Sender {
            ip,
            helo: session.helo.as_deref().unwrap_or(""),
            mail_from: &mail_from,
        };
        let checked = origin.check(&sender, raw).await;
        scope.event.auth = Some(checked.results);
        self.config.spam.authentication_results.then_some(checked.header)
    }

    /// `on_deliver` for each account: where its copy goes (or that a policy discarded it);
    /// a refusal refuses the whole message. The trace entries go into `scope`.
    pub async fn deliveries(
        &self,
        session: &Session,
        scope: &mut Scope,
        accepted: &Accepted,
        accounts: &[String],
    ) -> Result<Vec<Delivery>, Refusal> {
        let mut out = Vec::with_capacity(accounts.len());
        let default_folder = if accepted.quarantine { "Junk" } else { "INBOX" };
        for account in accounts {
            let mut d = Delivery {
                account: account.clone(),
                folder: default_folder.into(),
                flags: Flags::default(),
                keywords: Vec::new(),
                flag_names: Vec::new(),
                add_headers: Vec::new(),
                discarded: false,
            };
            if self.policies.wants(Hook::Deliver, None) {
                let mut ev = scope.event.clone();
                ev.hook = Hook::Deliver;
                ev.stage = None;
                ev.session = session.clone();
                ev.recipient = Some(account.clone());
                ev.mailbox = Some(d.folder.clone());
                ev.message = accepted.message.clone();
                let o = self.policies.run(Hook::Deliver, &mut ev).await;
                scope.policy.trace.extend(o.trace.iter().cloned());
                if let Some(r) = Refusal::of(&o) {
                    return Err(r);
                }
                d.discarded = o.action == Action::Discard;
                if o.quarantine {
                    d.folder = "Junk".into();
                }
                if let Some(f) = o.folder {
                    d.folder = f;
                }
                (d.flags, d.keywords) = verdict::parse_flags(&o.flags);
                d.flag_names = o.flags;
                d.add_headers = o.add_headers;
            }
            out.push(d);
        }
        Ok(out)
    }
}

/// One message through every stage, as an SMTP client sending `env` would take it through
/// the server: the offline tools' decision, identical to the server's by construction.
/// `parsed` is `raw` parsed, when the caller has it already (it is not parsed again).
pub async fn decide(ctx: &Context<'_>, env: &Envelope, raw: Vec<u8>, parsed: Option<Arc<Message>>) -> Report {
    let mut report = Report::new(&ctx.policies.version);
    let mut session = Session {
        client_ip: env.client_ip.clone(),
        helo: None,
        tls: false,
        auth_user: None,
        listener: "smtp".into(),
    };
    let mut scope = Scope::default();
    if let Err(r) = ctx.receive(Stage::Connect, &session, &mut scope).await {
        return report.refused(&scope, r);
    }
    session.helo = Some(env.helo.clone());
    if let Err(r) = ctx.receive(Stage::Helo, &session, &mut scope).await {
        return report.refused(&scope, r);
    }
    let mut tx = scope.transaction(&env.mail_from);
    if let Err(r) = ctx.receive(Stage::Mail, &session, &mut tx).await {
        return report.refused(&tx, r);
    }
    let mut accounts: Vec<String> = Vec::new();
    let mut remote: Vec<(String, NextHop)> = Vec::new();
    let mut last_refusal = None;
    for rcpt in &env.rcpt_to {
        match ctx.rcpt(&session, &mut tx, rcpt).await {
            Ok(Destination::Local(found)) => {
                for a in found.accounts {
                    if !accounts.contains(&a) {
                        accounts.push(a);
                    }
                }
                remote.extend(found.forward);
            }
            Ok(Destination::Remote(hop)) => remote.push((rcpt.clone(), hop)),
            Err(r) => {
                report.refused_recipients.push(report::RefusedRecipient {
                    recipient: rcpt.clone(),
                    reply: r.line(),
                });
                let close = r.close;
                last_refusal = Some(r);
                if close {
                    break;
                }
            }
        }
    }
    if let Some(r) = last_refusal.filter(|r| r.close || tx.event.envelope.rcpt_to.is_empty()) {
        return report.refused(&tx, r);
    }
    tx.event.message = parsed;
    let accepted = match ctx.data(&session, &mut tx, raw).await {
        Ok(a) => a,
        Err(r) => return report.refused(&tx, r),
    };
    report.message = accepted.message.clone();
    if accepted.discard {
        report.add_headers = accepted.add_headers.clone();
        return report.finish(&tx, "discard", "250 2.0.0 Ok (discarded)");
    }
    match ctx.deliveries(&session, &mut tx, &accepted, &accounts).await {
        Ok(ds) => {
            report.deliveries = ds.iter().map(report::Delivered::from).collect();
            let held = accepted.quarantine;
            report
                .deliveries
                .extend(remote.iter().map(|(r, hop)| report::Delivered {
                    recipient: r.clone(),
                    folder: format!("{} {hop}", if held { "held for" } else { "relay to" }),
                    flags: Vec::new(),
                }));
            report.add_headers = accepted.add_headers;
            report.finish(&tx, accepted.verdict, "250 2.0.0 Ok")
        }
        Err(r) => report.refused(&tx, r),
    }
}
