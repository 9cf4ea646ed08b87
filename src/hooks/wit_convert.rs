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
        session: w::Session {
            client_ip: e.session.client_ip.clone(),
            helo: e.session.helo.clone(),
            tls: e.session.tls,
            auth_user: e.session.auth_user.clone(),
            listener: e.session.listener.clone(),
        },
        envelope: w::Envelope {
            mail_from: e.envelope.mail_from.clone(),
            rcpt_to: e.envelope.rcpt_to.clone(),
        },
        recipient: e.recipient.clone(),
        default_route: e.default_route.clone(),
        auth: e.auth.clone().map(
            |AuthResults {
                 spf,
                 dkim,
                 dmarc,
                 spf_domain,
                 dkim_domains,
                 dmarc_policy,
                 from_domain,
             }| w::AuthResults {
                spf,
                dkim,
                dmarc,
                spf_domain,
                dkim_domains,
                dmarc_policy,
                from_domain,
            },
        ),
        score: e.score,
        symbols: e.symbols.iter().map(symbol_to).collect(),
        mailbox: e.mailbox.clone(),
        user: e.user.clone(),
    }
}

/// Guest side: the record back into the contract's event, with its message.
pub fn event_from(e: w::Event, message: Option<w::Message>) -> Event {
    let w::Session {
        client_ip,
        helo,
        tls,
        auth_user,
        listener,
    } = e.session;
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
        session: Session {
            client_ip,
            helo,
            tls,
            auth_user,
            listener,
        },
        envelope: Envelope {
            mail_from: e.envelope.mail_from,
            rcpt_to: e.envelope.rcpt_to,
        },
        recipient: e.recipient,
        default_route: e.default_route,
        message: message.map(|m| std::sync::Arc::new(message_from(m))),
        auth: e.auth.map(
            |w::AuthResults {
                 spf,
                 dkim,
                 dmarc,
                 spf_domain,
                 dkim_domains,
                 dmarc_policy,
                 from_domain,
             }| AuthResults {
                spf,
                dkim,
                dmarc,
                spf_domain,
                dkim_domains,
                dmarc_policy,
                from_domain,
            },
        ),
        score: e.score,
        symbols: e.symbols.into_iter().map(symbol_from).collect(),
        mailbox: e.mailbox,
        user: e.user,
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

/// Guest → host: the plugin's verdict as the record.
pub fn verdict_to(v: Verdict) -> w::Verdict {
    let Verdict {
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
    } = v;
    w::Verdict {
        action: match action {
            Action::Continue => w::Action::Continue,
            Action::Accept => w::Action::Accept,
            Action::Reject => w::Action::Reject,
            Action::Tempfail => w::Action::Tempfail,
            Action::Discard => w::Action::Discard,
            Action::Disconnect => w::Action::Disconnect,
            Action::Quarantine => w::Action::Quarantine,
            Action::Hide => w::Action::Hide,
        },
        code,
        enhanced,
        text,
        score,
        symbol,
        reason,
        symbols: symbols.iter().map(symbol_to).collect(),
        folder,
        flags,
        add_headers: add_headers.into_iter().map(header_to).collect(),
        remove_headers,
        route: route.map(|r| match r {
            RouteKind::Local => w::RouteKind::Local,
            RouteKind::Relay => w::RouteKind::Relay,
            RouteKind::Reject => w::RouteKind::Reject,
        }),
        mailbox,
        host,
    }
}

/// Host side: the record back into the contract's verdict.
pub fn verdict_from(v: w::Verdict) -> Verdict {
    let w::Verdict {
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
    } = v;
    Verdict {
        action: match action {
            w::Action::Continue => Action::Continue,
            w::Action::Accept => Action::Accept,
            w::Action::Reject => Action::Reject,
            w::Action::Tempfail => Action::Tempfail,
            w::Action::Discard => Action::Discard,
            w::Action::Disconnect => Action::Disconnect,
            w::Action::Quarantine => Action::Quarantine,
            w::Action::Hide => Action::Hide,
        },
        code,
        enhanced,
        text,
        score,
        symbol,
        reason,
        symbols: symbols.into_iter().map(symbol_from).collect(),
        folder,
        flags,
        add_headers: add_headers.into_iter().map(header_from).collect(),
        remove_headers,
        route: route.map(|r| match r {
            w::RouteKind::Local => RouteKind::Local,
            w::RouteKind::Relay => RouteKind::Relay,
            w::RouteKind::Reject => RouteKind::Reject,
        }),
        mailbox,
        host,
    }
}
