//! The hook contract: what a policy sees ([`Event`]) and what it may answer ([`Verdict`]).
//!
//! Defined once, here. Lua sees these as tables (field names as below); WASM plugins get the
//! same records through `plugins/wit/mailgate.wit` (interface `types`; `wit_convert.rs`, one
//! file shared by the host and the SDK, maps them with literals naming every field).
//! `docs/hooks.md` is the prose version; keep the three in step.

pub use crate::mail::model::{Header, Message};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The four hook points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Receive,
    Route,
    Deliver,
    Fetch,
}

impl Hook {
    pub const ALL: [Hook; 4] = [Hook::Receive, Hook::Route, Hook::Deliver, Hook::Fetch];

    /// The hook's name in the contract (its serde form: `event.hook`).
    pub fn name(self) -> &'static str {
        match self {
            Hook::Receive => "receive",
            Hook::Route => "route",
            Hook::Deliver => "deliver",
            Hook::Fetch => "fetch",
        }
    }

    /// The function a plugin defines for this hook.
    pub fn function(self) -> &'static str {
        match self {
            Hook::Receive => "on_receive",
            Hook::Route => "on_route",
            Hook::Deliver => "on_deliver",
            Hook::Fetch => "on_fetch",
        }
    }
}

/// SMTP stages at which `on_receive` may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
}

impl Stage {
    /// Every stage with its name (as in `stages = { ... }` and the JSON).
    const NAMES: [(Stage, &'static str); 5] = [
        (Stage::Connect, "connect"),
        (Stage::Helo, "helo"),
        (Stage::Mail, "mail"),
        (Stage::Rcpt, "rcpt"),
        (Stage::Data, "data"),
    ];

    pub fn parse(s: &str) -> Option<Stage> {
        Self::NAMES.iter().find(|(_, n)| *n == s).map(|(st, _)| *st)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(st, _)| *st == self).map_or("", |(_, n)| n)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Session {
    pub client_ip: String,
    pub helo: Option<String>,
    pub tls: bool,
    pub auth_user: Option<String>,
    /// The listener's protocol: smtp, submission, pop3, imap; `local` for `mailgate send`.
    pub listener: String,
}

impl Session {
    /// Mail from our own users: logged in with AUTH, or handed over by `mailgate send`.
    pub fn is_submission(&self) -> bool {
        self.auth_user.is_some() || self.listener == "local"
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    /// Empty string for the null sender `<>`.
    pub mail_from: Option<String>,
    pub rcpt_to: Vec<String>,
}

/// Sender-authentication results, computed once per message at the `data` stage when a
/// loaded policy's manifest says `auth = true` (then also at `on_deliver`). Results are the
/// RFC 8601 words: `pass`, `fail`, `softfail` (SPF), `neutral`, `temperror`, `permerror`,
/// `none`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuthResults {
    /// SPF of the envelope sender (of the HELO name for bounces), RFC 7208.
    pub spf: Option<String>,
    /// DKIM, RFC 6376: `pass` if any signature verified, else the first signature's result.
    pub dkim: Option<String>,
    /// DMARC, RFC 7489: `pass` if SPF or DKIM passed aligned with the From domain.
    pub dmarc: Option<String>,
    /// The domain SPF checked.
    #[serde(default)]
    pub spf_domain: Option<String>,
    /// Signing domains (`d=`) of the DKIM signatures that verified.
    #[serde(default)]
    pub dkim_domains: Vec<String>,
    /// The From domain's published DMARC policy: `none`, `quarantine`, `reject`.
    #[serde(default)]
    pub dmarc_policy: Option<String>,
    /// The RFC 5322 From domain DMARC judged.
    #[serde(default)]
    pub from_domain: Option<String>,
}

/// What `mailgate.bayes(message)` (Lua) and `host::bayes()` (WASM) return.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BayesResult {
    /// Probability that the message is spam, 0..1.
    pub probability: f64,
    /// The classifier's score behind it, ln P(spam) / P(ham): the probability is its
    /// logistic and reads 1.0000 from about 10 on, where this keeps telling messages apart
    /// (the shipped model puts most spam above 200).
    #[serde(default)]
    pub log_odds: f64,
    /// The tokens that weighed most, strongest first (positive: spammy).
    pub tokens: Vec<TokenWeight>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TokenWeight {
    pub token: String,
    pub weight: f64,
}

/// One keyword rule that matched (`mailgate.keywords`, `host::keywords`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KeywordHit {
    pub name: String,
    pub score: f64,
    pub group: String,
    pub description: String,
}

/// One letter-combination finding (`mailgate.letters`, `host::letters`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LetterFinding {
    pub name: String,
    /// How many words or runs showed it.
    pub count: usize,
    /// The first one seen.
    pub example: String,
}

/// A named score contribution with its reason.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Symbol {
    pub name: String,
    pub score: f64,
    #[serde(default)]
    pub reason: String,
}

/// What every hook sees. Fields that do not apply to a hook are absent (nil in Lua).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub hook: Hook,
    /// For `on_receive`: the SMTP stage.
    pub stage: Option<Stage>,
    pub session: Session,
    pub envelope: Envelope,
    /// `on_route`, `on_deliver`: the recipient; `on_receive` at `rcpt`: the one being added.
    pub recipient: Option<String>,
    /// `on_route`: what the built-in routing decided: `local`, `unknown`, `relay-denied`.
    pub default_route: Option<String>,
    /// At `data`, `on_deliver`, `on_fetch`. Parsed once and shared (not copied) by every
    /// policy of every hook; absent from the JSON when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Arc<Message>>,
    pub auth: Option<AuthResults>,
    /// Score so far (earlier policies in the chain, earlier stages).
    pub score: f64,
    pub symbols: Vec<Symbol>,
    /// `on_deliver`: the folder chosen so far; `on_fetch`: the folder read from.
    pub mailbox: Option<String>,
    /// `on_fetch`: the account reading.
    pub user: Option<String>,
}

impl Default for Event {
    fn default() -> Event {
        Event::new(Hook::Receive, Session::default())
    }
}

impl Event {
    pub fn new(hook: Hook, session: Session) -> Event {
        Event {
            hook,
            stage: None,
            session,
            envelope: Envelope::default(),
            recipient: None,
            default_route: None,
            message: None,
            auth: None,
            score: 0.0,
            symbols: Vec::new(),
            mailbox: None,
            user: None,
        }
    }
}

/// Actions a policy can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Go on with the next policy (the default).
    #[default]
    Continue,
    /// Accept now: later policies and the score thresholds are skipped.
    Accept,
    /// Permanent refusal (5xx).
    Reject,
    /// Temporary refusal (4xx).
    Tempfail,
    /// Accept and drop silently.
    Discard,
    /// Close the connection (after a 421).
    Disconnect,
    /// Deliver into the Junk folder.
    Quarantine,
    /// `on_fetch`: do not show this message.
    Hide,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::Continue,
        Action::Accept,
        Action::Reject,
        Action::Tempfail,
        Action::Discard,
        Action::Disconnect,
        Action::Quarantine,
        Action::Hide,
    ];

    /// The name policies use (`action = "reject"`).
    pub fn name(self) -> &'static str {
        match self {
            Action::Continue => "continue",
            Action::Accept => "accept",
            Action::Reject => "reject",
            Action::Tempfail => "tempfail",
            Action::Discard => "discard",
            Action::Disconnect => "disconnect",
            Action::Quarantine => "quarantine",
            Action::Hide => "hide",
        }
    }

    pub fn is_continue(&self) -> bool {
        *self == Action::Continue
    }

    /// Ends the chain.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Action::Accept | Action::Reject | Action::Tempfail | Action::Discard | Action::Disconnect | Action::Hide
        )
    }
}

/// `on_route` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    /// Deliver into the local account `mailbox` (or the recipient itself).
    Local,
    /// Send on to `host` (needs the outbound queue; refused with 451 until then).
    Relay,
    /// Refuse this recipient (`code`/`enhanced`/`text`, default 550 5.1.1).
    Reject,
}

/// What a policy answers. Every field is optional; an empty verdict (Lua `nil`) continues.
/// Its serde form (`policy test --json`, the Lua table rules in `hooks/lua/verdict.rs`)
/// leaves out empty fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    #[serde(default, skip_serializing_if = "Action::is_continue")]
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enhanced: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Score to add, with the symbol and reason it is reported under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Several scored symbols at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symbols: Vec<Symbol>,
    /// `on_deliver`: folder to deliver into.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// `on_deliver`: IMAP flags to set (`\\Seen`, `\\Flagged`, keywords).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// Headers to add (on top) to the message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_headers: Vec<Header>,
    /// Header names to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_headers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteKind>,
    /// `on_route` local: the account to deliver to instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    /// `on_route` relay: next hop `host[:port]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// The organisational part of a host name, by rule of thumb and without DNS: the last two
/// labels, or three under a country code whose second level is a short generic one
/// (`shop.example.co.uk` → `example.co.uk`, `mail.shop.example` → `shop.example`), lower
/// case, without a trailing dot; an IP address or a single label is itself. Policies compare
/// senders' and links' domains with it (Lua `mailgate.org_domain`; in a WASM guest the SDK
/// compiles this very function); it is not the public suffix
/// list, so `a.github.io` and `b.github.io` are one organisation to it.
pub fn org_domain(name: &str) -> String {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok() {
        return name;
    }
    let mut labels: Vec<&str> = name.rsplit('.').take(3).collect();
    if !matches!(labels.as_slice(), [tld, sld, _] if tld.len() == 2 && sld.len() <= 3) {
        labels.truncate(2);
    }
    labels.reverse();
    labels.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organisational_domains() {
        for (name, org) in [
            ("mail.shop.example", "shop.example"),
            ("Shop.Example.", "shop.example"),
            ("shop.example.co.uk", "example.co.uk"),
            ("www.example.com.au", "example.com.au"),
            ("news.bbc.co.uk", "bbc.co.uk"),
            ("example.de", "example.de"),
            ("www.heise.de", "heise.de"),
            ("localhost", "localhost"),
            ("192.0.2.7", "192.0.2.7"),
            ("[2001:db8::1]", "[2001:db8::1]"),
            ("", ""),
        ] {
            assert_eq!(org_domain(name), org, "{name}");
        }
    }
}
