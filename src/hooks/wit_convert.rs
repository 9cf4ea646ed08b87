//! The contract's types ([`contract.rs`](super::contract)) and the WIT records of
//! `plugins/wit/mailgate.wit` (interface `types`), both ways. Compiled into the host
//! (`hooks::wasm`, with wasmtime's generated types as `super::w`) and, like `contract.rs`,
//! into the guest SDK (wit-bindgen's types as `super::w`): both generators give the records
//! the same Rust names and fields, so the mapping is written once. Every struct literal and
//! pattern names all fields, so a field added to one side and not the other fails to compile.
//! Each side uses two of the four directions.
#![allow(dead_code)]

use super::contract::{
    Action, AuthResults, Envelope, Event, Header, Hook, Message, RouteKind, Session, Stage, Symbol, Verdict,
};
use super::w;

/// A record whose fields are the same on both sides, moved across: the pattern names every
/// field (so one added to the source fails to compile) and so does the literal.
macro_rules! same_fields {
    ($v:expr, $from:path => $to:path { $($f:ident),* $(,)? }) => {{
        let $from { $($f),* } = $v;
        $to { $($f),* }
    }};
}

macro_rules! session_between {
    ($v:expr, $from:path => $to:path) => {
        same_fields!($v, $from => $to { client_ip, helo, tls, auth_user, listener })
    };
}

macro_rules! envelope_between {
    ($v:expr, $from:path => $to:path) => {
        same_fields!($v, $from => $to { mail_from, rcpt_to })
    };
}

macro_rules! auth_between {
    ($v:expr, $from:path => $to:path) => {
        same_fields!($v, $from => $to {
            spf, dkim, dmarc, spf_domain, dkim_domains, dmarc_policy, from_domain
        })
    };
}

fn symbol_to(s: &Symbol) -> w::Symbol {
    w::Symbol {
        name: s.name.clone(),
        score: s.score,
        reason: s.reason.clone(),
    }
}

fn symbol_from(s: w::Symbol) -> Symbol {
    Symbol {
        name: s.name,
        score: s.score,
        reason: s.reason,
    }
}

fn header_to(h: Header) -> w::Header {
    w::Header {
        name: h.name,
        value: h.value,
    }
}

fn header_from(h: w::Header) -> Header {
    Header {
        name: h.name,
        value: h.value,
    }
}

/// Host → guest: the event without its message (which crosses beside it).
pub fn event_to(e: &Event) -> w::Event {
    w::Event {
        hook: match e.hook {
            Hook::Receive => w::Hook::Receive,
            Hook::Route => w::Hook::Route,
            Hook::Deliver => w::Hook::Deliver,
            Hook::Fetch => w::Hook::Fetch,
        },
        stage: e.stage.map(|s| match s {
            Stage::Connect => w::Stage::Connect,
            Stage::Helo => w::Stage::Helo,
            Stage::Mail => w::Stage::Mail,
            Stage::Rcpt => w::Stage::Rcpt,
            Stage::Data => w::Stage::Data,
        }),
        session: session_between!(e.session.clone(), Session => w::Session),
        envelope: envelope_between!(e.envelope.clone(), Envelope => w::Envelope),
        recipient: e.recipient.clone(),
        default_route: e.default_route.clone(),
        auth: e.auth.clone().map(|a| auth_between!(a, AuthResults => w::AuthResults)),
        score: e.score,
        symbols: e.symbols.iter().map(symbol_to).collect(),
        mailbox: e.mailbox.clone(),
        user: e.user.clone(),
    }
}

/// Guest side: the record back into the contract's event, with its message.
pub fn event_from(e: w::Event, message: Option<w::Message>) -> Event {
    Event {
        hook: match e.hook {
            w::Hook::Receive => Hook::Receive,
            w::Hook::Route => Hook::Route,
            w::Hook::Deliver => Hook::Deliver,
            w::Hook::Fetch => Hook::Fetch,
        },
        stage: e.stage.map(|s| match s {
            w::Stage::Connect => Stage::Connect,
            w::Stage::Helo => Stage::Helo,
            w::Stage::Mail => Stage::Mail,
            w::Stage::Rcpt => Stage::Rcpt,
            w::Stage::Data => Stage::Data,
        }),
        session: session_between!(e.session, w::Session => Session),
        envelope: envelope_between!(e.envelope, w::Envelope => Envelope),
        recipient: e.recipient,
        default_route: e.default_route,
        message: message.map(|m| std::sync::Arc::new(message_from(m))),
        auth: e.auth.map(|a| auth_between!(a, w::AuthResults => AuthResults)),
        score: e.score,
        symbols: e.symbols.into_iter().map(symbol_from).collect(),
        mailbox: e.mailbox,
        user: e.user,
    }
}

/// Host side: the message as a record with only the fields `keep` names ("subject",
/// "from", "to", "text", "headers", "links"; the others empty); `size` and `attachments`
/// always come.
pub fn message_to(m: &Message, keep: impl Fn(&str) -> bool) -> w::Message {
    let text = |name: &str, v: &String| if keep(name) { v.clone() } else { String::new() };
    let list = |name: &str, v: &Vec<String>| if keep(name) { v.clone() } else { Vec::new() };
    w::Message {
        subject: text("subject", &m.subject),
        from: text("from", &m.from),
        to: list("to", &m.to),
        text: text("text", &m.text),
        headers: if keep("headers") {
            m.headers.iter().cloned().map(header_to).collect()
        } else {
            Vec::new()
        },
        links: list("links", &m.links),
        size: m.size as u64,
        attachments: m.attachments as u64,
    }
}

/// Guest side: the message record as the contract's message.
pub fn message_from(m: w::Message) -> Message {
    Message {
        subject: m.subject,
        from: m.from,
        to: m.to,
        text: m.text,
        headers: m.headers.into_iter().map(header_from).collect(),
        links: m.links,
        size: m.size as usize,
        attachments: m.attachments as usize,
    }
}

/// A verdict from one side's type to the other's: one list of its fields for both
/// directions (a pattern naming all of them on the way in, a literal on the way out).
macro_rules! verdict_between {
    ($v:expr, $from:path => $to:path, $action:expr, $symbol:expr, $header:expr, $route:expr) => {{
        let $from {
            action,
            code,
            enhanced,
            text,
            score,
            symbol,
            reason,
            symbols,
            folder,
            flags,
            add_headers,
            remove_headers,
            route,
            mailbox,
            host,
        } = $v;
        $to {
            action: $action(action),
            code,
            enhanced,
            text,
            score,
            symbol,
            reason,
            symbols: symbols.into_iter().map($symbol).collect(),
            folder,
            flags,
            add_headers: add_headers.into_iter().map($header).collect(),
            remove_headers,
            route: route.map($route),
            mailbox,
            host,
        }
    }};
}

fn action_to(a: Action) -> w::Action {
    match a {
        Action::Continue => w::Action::Continue,
        Action::Accept => w::Action::Accept,
        Action::Reject => w::Action::Reject,
        Action::Tempfail => w::Action::Tempfail,
        Action::Discard => w::Action::Discard,
        Action::Disconnect => w::Action::Disconnect,
        Action::Quarantine => w::Action::Quarantine,
        Action::Hide => w::Action::Hide,
    }
}

fn action_from(a: w::Action) -> Action {
    match a {
        w::Action::Continue => Action::Continue,
        w::Action::Accept => Action::Accept,
        w::Action::Reject => Action::Reject,
        w::Action::Tempfail => Action::Tempfail,
        w::Action::Discard => Action::Discard,
        w::Action::Disconnect => Action::Disconnect,
        w::Action::Quarantine => Action::Quarantine,
        w::Action::Hide => Action::Hide,
    }
}

fn route_to(r: RouteKind) -> w::RouteKind {
    match r {
        RouteKind::Local => w::RouteKind::Local,
        RouteKind::Relay => w::RouteKind::Relay,
        RouteKind::Reject => w::RouteKind::Reject,
    }
}

fn route_from(r: w::RouteKind) -> RouteKind {
    match r {
        w::RouteKind::Local => RouteKind::Local,
        w::RouteKind::Relay => RouteKind::Relay,
        w::RouteKind::Reject => RouteKind::Reject,
    }
}

/// Guest → host: the plugin's verdict as the record.
pub fn verdict_to(v: Verdict) -> w::Verdict {
    verdict_between!(v, Verdict => w::Verdict, action_to, |s: Symbol| symbol_to(&s), header_to, route_to)
}

/// Host side: the record back into the contract's verdict.
pub fn verdict_from(v: w::Verdict) -> Verdict {
    verdict_between!(v, w::Verdict => Verdict, action_from, symbol_from, header_from, route_from)
}
