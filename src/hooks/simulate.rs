//! `mailgate policy test`: one message through the whole chain, offline, with the trace.
//!
//! The same steps as an SMTP transaction (connect, helo, mail, on_route and rcpt for each
//! recipient, data, thresholds, on_deliver per recipient), without a network or a server.

use super::contract::{Event, Header, Session, Symbol};
use super::{Action, Hook, PolicySet, Stage, TraceEntry};
use crate::config::Thresholds;
use crate::smtp::policy::{self, PolicyState};
use serde::Serialize;

/// What to pretend the SMTP client said.
pub struct Envelope {
    pub client_ip: String,
    pub helo: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Delivery {
    pub recipient: String,
    /// Folder, or "discarded".
    pub folder: String,
    pub flags: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub version: String,
    /// accept | tag | quarantine | reject | tempfail | discard | disconnect | deliver
    pub verdict: String,
    /// The SMTP reply the client would get.
    pub reply: String,
    pub score: f64,
    pub symbols: Vec<Symbol>,
    pub add_headers: Vec<Header>,
    pub deliveries: Vec<Delivery>,
    pub trace: Vec<TraceEntry>,
}

fn refusal(out: &super::Outcome) -> Option<(String, String)> {
    let verdict = match out.action {
        Action::Reject => "reject",
        Action::Tempfail => "tempfail",
        Action::Disconnect => "disconnect",
        _ => return None,
    };
    let (code, enh, text) = out.reply();
    Some((verdict.into(), format!("{code} {enh} {text}")))
}

/// `message` is `raw` parsed ([`parse_message`]; the caller may need it too). `origin`:
/// check SPF/DKIM/DMARC (against live DNS) when a policy asks for `event.auth`; `None`
/// leaves it unset (corpus runs: the messages were received elsewhere).
pub async fn run(
    set: &PolicySet,
    thresholds: &Thresholds,
    env: &Envelope,
    raw: &[u8],
    message: std::sync::Arc<super::contract::Message>,
    origin: Option<&crate::spam::origin::Origin>,
) -> Report {
    let mut ev = Event::new(
        Hook::Receive,
        Session {
            client_ip: env.client_ip.clone(),
            helo: Some(env.helo.clone()),
            tls: false,
            auth_user: None,
            listener: "smtp".into(),
        },
    );
    let mut state = PolicyState::default();
    let mut report = Report {
        version: set.version.clone(),
        verdict: String::new(),
        reply: String::new(),
        score: 0.0,
        symbols: Vec::new(),
        add_headers: Vec::new(),
        deliveries: Vec::new(),
        trace: Vec::new(),
    };
    let finish = |mut report: Report, ev: &Event, state: PolicyState, verdict: &str, reply: String| {
        report.verdict = verdict.into();
        report.reply = reply;
        report.score = ev.score;
        report.symbols = ev.symbols.clone();
        report.trace = state.trace;
        report
    };
    let mut auth_header = None;
    for stage in [Stage::Connect, Stage::Helo, Stage::Mail, Stage::Rcpt, Stage::Data] {
        if stage == Stage::Mail {
            ev.envelope.mail_from = Some(env.mail_from.clone());
        }
        let recipients: Vec<Option<String>> = if stage == Stage::Rcpt {
            env.rcpt_to.iter().cloned().map(Some).collect()
        } else {
            vec![None]
        };
        for rcpt in recipients {
            if let Some(r) = &rcpt {
                ev.hook = Hook::Route;
                ev.stage = None;
                ev.recipient = Some(r.clone());
                let out = set.run(Hook::Route, &mut ev).await;
                let refused = refusal(&out);
                state.trace.extend(out.trace);
                if let Some((v, reply)) = refused {
                    return finish(report, &ev, state, &v, reply);
                }
                ev.envelope.rcpt_to.push(r.clone());
            }
            if state.accepted {
                continue;
            }
            ev.hook = Hook::Receive;
            ev.stage = Some(stage);
            ev.recipient = rcpt;
            ev.message = (stage == Stage::Data).then(|| message.clone());
            if let (Stage::Data, Some(o), true, Ok(ip)) = (
                stage,
                origin,
                set.wants_auth(),
                env.client_ip.parse::<std::net::IpAddr>(),
            ) {
                let sender = crate::spam::origin::Sender {
                    ip,
                    helo: &env.helo,
                    mail_from: &env.mail_from,
                };
                let checked = o.check(&sender, raw).await;
                ev.auth = Some(checked.results);
                auth_header = Some(checked.header);
            }
            let out = set.run(Hook::Receive, &mut ev).await;
            if let Some((v, reply)) = refusal(&out) {
                state.absorb(out);
                return finish(report, &ev, state, &v, reply);
            }
            state.absorb(out);
        }
    }
    let judged = if state.accepted {
        policy::Verdict::Clean
    } else {
        policy::judge(ev.score, thresholds)
    };
    if judged == policy::Verdict::Reject {
        let reply = format!(
            "550 5.7.1 Message rejected as spam (score {:.1}: {})",
            ev.score,
            policy::main_symbols(&ev.symbols, 3)
        );
        return finish(report, &ev, state, "reject", reply);
    }
    if state.discard {
        return finish(report, &ev, state, "discard", "250 2.0.0 Ok (discarded)".into());
    }
    let quarantine = state.quarantine || judged == policy::Verdict::Quarantine;
    let mut add = state.add_headers.clone();
    if let Some(h) = auth_header {
        add.insert(0, h);
    }
    add.extend(policy::spam_headers(
        ev.score,
        &ev.symbols,
        judged != policy::Verdict::Clean,
    ));
    for rcpt in &env.rcpt_to {
        let mut d = ev.clone();
        d.hook = Hook::Deliver;
        d.stage = None;
        d.recipient = Some(rcpt.clone());
        d.mailbox = Some(if quarantine { "Junk" } else { "INBOX" }.into());
        d.message = Some(message.clone());
        let out = set.run(Hook::Deliver, &mut d).await;
        let folder = if out.action == Action::Discard {
            "discarded".to_string()
        } else if let Some(f) = &out.folder {
            f.clone()
        } else if out.quarantine {
            "Junk".into()
        } else {
            d.mailbox.clone().unwrap_or_default()
        };
        report.deliveries.push(Delivery {
            recipient: rcpt.clone(),
            folder,
            flags: out.flags.clone(),
        });
        state.trace.extend(out.trace);
    }
    report.add_headers = add;
    let verdict = match (state.accepted, judged, quarantine) {
        (true, _, _) => "accept",
        (_, _, true) => "quarantine",
        (_, policy::Verdict::Tag, _) => "tag",
        _ => "deliver",
    };
    finish(report, &ev, state, verdict, "250 2.0.0 Ok".into())
}

/// The report as text for people.
pub fn render(r: &Report) -> String {
    let mut out = format!("policies  version {}\n", r.version);
    out.push_str(&format!(
        "{:<10} {:<24} {:<10} {:>7}  {:<28} {:>8}\n",
        "stage", "plugin", "action", "score", "symbols", "time"
    ));
    for t in &r.trace {
        let stage = match t.stage {
            Some(s) => format!("{s:?}").to_lowercase(),
            None => format!("{:?}", t.hook).to_lowercase(),
        };
        let action = serde_json::to_string(&t.action).unwrap_or_default();
        out.push_str(&format!(
            "{:<10} {:<24} {:<10} {:>+7.2}  {:<28} {:>6.2}ms{}\n",
            stage,
            t.plugin,
            action.trim_matches('"'),
            t.score,
            t.symbols.join(","),
            t.micros as f64 / 1000.0,
            t.error.as_ref().map(|e| format!("  ERROR {e}")).unwrap_or_default()
        ));
    }
    out.push_str(&format!("score     {:.2}\n", r.score));
    for s in &r.symbols {
        out.push_str(&format!("symbol    {:<24} {:>+7.2}  {}\n", s.name, s.score, s.reason));
    }
    for h in &r.add_headers {
        out.push_str(&format!("header    {}: {}\n", h.name, h.value));
    }
    for d in &r.deliveries {
        out.push_str(&format!(
            "deliver   {} -> {} {}\n",
            d.recipient,
            d.folder,
            d.flags.join(" ")
        ));
    }
    out.push_str(&format!("verdict   {}\nreply     {}\n", r.verdict, r.reply));
    out
}
