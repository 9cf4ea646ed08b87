//! What [`super::decide`] found, for `mailgate policy test` (text or `--json`), `spam
//! classify` and `spam eval`.

use crate::hooks::TraceEntry;
use crate::hooks::contract::{Header, Message, Symbol};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What the SMTP client says: the session [`super::decide`] runs the message through.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub client_ip: String,
    pub helo: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
}

/// Where one account's copy went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivered {
    /// The account (a recipient after aliases).
    pub recipient: String,
    /// Folder, or "discarded".
    pub folder: String,
    pub flags: Vec<String>,
}

impl From<&super::Delivery> for Delivered {
    fn from(d: &super::Delivery) -> Delivered {
        Delivered {
            recipient: d.account.clone(),
            folder: if d.discarded {
                "discarded".into()
            } else {
                d.folder.clone()
            },
            flags: d.flag_names.clone(),
        }
    }
}

/// A recipient refused at RCPT while others were accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusedRecipient {
    pub recipient: String,
    pub reply: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub version: String,
    /// accept | tag | quarantine | deliver | discard | reject | tempfail | disconnect
    pub verdict: String,
    /// The SMTP reply the client would get (to RCPT when every recipient was refused, else
    /// to the end of DATA).
    pub reply: String,
    pub score: f64,
    pub symbols: Vec<Symbol>,
    pub add_headers: Vec<Header>,
    pub deliveries: Vec<Delivered>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_recipients: Vec<RefusedRecipient>,
    pub trace: Vec<TraceEntry>,
    /// The message as parsed for the policies (when one needed it).
    #[serde(skip)]
    pub message: Option<Arc<Message>>,
}

impl Report {
    pub(super) fn new(version: &str) -> Report {
        Report {
            version: version.into(),
            verdict: String::new(),
            reply: String::new(),
            score: 0.0,
            symbols: Vec::new(),
            add_headers: Vec::new(),
            deliveries: Vec::new(),
            refused_recipients: Vec::new(),
            trace: Vec::new(),
            message: None,
        }
    }

    pub(super) fn finish(mut self, scope: &super::Scope, verdict: &str, reply: &str) -> Report {
        self.verdict = verdict.into();
        self.reply = reply.into();
        self.score = scope.event.score;
        self.symbols = scope.event.symbols.clone();
        self.trace = scope.policy.trace.clone();
        self
    }

    pub(super) fn refused(self, scope: &super::Scope, r: super::Refusal) -> Report {
        self.finish(scope, r.verdict(), &r.line())
    }

    /// The report as text for people.
    pub fn render(&self) -> String {
        let mut out = format!("policies  version {}\n", self.version);
        out.push_str(&format!(
            "{:<10} {:<24} {:<10} {:>7}  {:<28} {:>8}\n",
            "stage", "plugin", "action", "score", "symbols", "time"
        ));
        for t in &self.trace {
            let stage = match t.stage {
                Some(s) => s.name(),
                None => t.hook.name(),
            };
            out.push_str(&format!(
                "{:<10} {:<24} {:<10} {:>+7.2}  {:<28} {:>6.2}ms{}\n",
                stage,
                t.plugin,
                t.action.name(),
                t.score,
                t.symbols.join(","),
                t.micros as f64 / 1000.0,
                t.error.as_ref().map(|e| format!("  ERROR {e}")).unwrap_or_default()
            ));
        }
        out.push_str(&format!("score     {:.2}\n", self.score));
        for s in &self.symbols {
            out.push_str(&format!("symbol    {:<24} {:>+7.2}  {}\n", s.name, s.score, s.reason));
        }
        for h in &self.add_headers {
            out.push_str(&format!("header    {}: {}\n", h.name, h.value));
        }
        for r in &self.refused_recipients {
            out.push_str(&format!("refused   {} {}\n", r.recipient, r.reply));
        }
        for d in &self.deliveries {
            out.push_str(&format!(
                "deliver   {} -> {} {}\n",
                d.recipient,
                d.folder,
                d.flags.join(" ")
            ));
        }
        out.push_str(&format!("verdict   {}\nreply     {}\n", self.verdict, self.reply));
        out
    }
}
