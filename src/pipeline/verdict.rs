//! How policy outcomes accumulate over a session and turn into one action per message:
//! the score thresholds, the rejection text, the X-Spam-* headers, the flags `on_deliver` names.

use crate::config::Thresholds;
use crate::hooks::contract::{Header, Symbol};
use crate::hooks::{Action, Outcome, TraceEntry};
use crate::store::Flags;

/// What the policies said so far in one scope (the session before MAIL, or a transaction).
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    /// A policy answered `accept`: later checks and the thresholds are skipped.
    pub accepted: bool,
    pub discard: bool,
    pub quarantine: bool,
    pub add_headers: Vec<Header>,
    pub remove_headers: Vec<String>,
    pub trace: Vec<TraceEntry>,
}

impl PolicyState {
    pub fn absorb(&mut self, out: Outcome) {
        self.accepted |= out.action == Action::Accept;
        self.discard |= out.action == Action::Discard;
        self.quarantine |= out.quarantine;
        self.add_headers.extend(out.add_headers);
        self.remove_headers.extend(out.remove_headers);
        self.trace.extend(out.trace);
    }
}

/// What the score thresholds make of a total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    Tag,
    Quarantine,
    Reject,
}

pub fn judge(score: f64, t: &Thresholds) -> Verdict {
    if score >= t.reject {
        Verdict::Reject
    } else if score >= t.quarantine {
        Verdict::Quarantine
    } else if score >= t.tag {
        Verdict::Tag
    } else {
        Verdict::Clean
    }
}

/// The main reasons, highest scores first, for a rejection text.
pub fn main_symbols(symbols: &[Symbol], n: usize) -> String {
    let mut s: Vec<&Symbol> = symbols.iter().filter(|s| s.score > 0.0).collect();
    s.sort_by(|a, b| b.score.total_cmp(&a.score));
    s.iter().take(n).map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// X-Spam-* headers: score and symbols whenever there are symbols, the flag when tagged.
pub fn spam_headers(score: f64, symbols: &[Symbol], flagged: bool) -> Vec<Header> {
    let mut out = Vec::new();
    if flagged {
        out.push(Header {
            name: "X-Spam-Flag".into(),
            value: "YES".into(),
        });
    }
    if !symbols.is_empty() || flagged {
        out.push(Header {
            name: "X-Spam-Score".into(),
            value: format!("{score:.2}"),
        });
        let list: Vec<String> = symbols.iter().map(|s| format!("{}({:.2})", s.name, s.score)).collect();
        out.push(Header {
            name: "X-Spam-Symbols".into(),
            value: list.join(", "),
        });
    }
    out
}

/// Flags named by an `on_deliver` verdict: system flags by name, anything else a keyword.
pub fn parse_flags(names: &[String]) -> (Flags, Vec<String>) {
    let mut flags = Flags::default();
    let mut keywords = Vec::new();
    for n in names {
        match Flags::bit_of(n) {
            Some(bit) => flags.0 |= bit,
            None if !n.is_empty() && n.chars().all(|c| c.is_ascii_graphic() && !"(){%*\"\\]".contains(c)) => {
                if !keywords.contains(n) {
                    keywords.push(n.clone());
                }
            }
            None => tracing::warn!(flag = %n, "on_deliver asked for an invalid flag; ignored"),
        }
    }
    (flags, keywords)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_reasons() {
        let t = Thresholds::default();
        assert_eq!(judge(1.0, &t), Verdict::Clean);
        assert_eq!(judge(5.0, &t), Verdict::Tag);
        assert_eq!(judge(12.0, &t), Verdict::Quarantine);
        assert_eq!(judge(15.0, &t), Verdict::Reject);
        let syms = [
            Symbol {
                name: "A".into(),
                score: 1.0,
                reason: String::new(),
            },
            Symbol {
                name: "B".into(),
                score: 9.0,
                reason: String::new(),
            },
            Symbol {
                name: "C".into(),
                score: -2.0,
                reason: String::new(),
            },
        ];
        assert_eq!(main_symbols(&syms, 2), "B, A");
        let (f, k) = parse_flags(&["\\Seen".into(), "$Label1".into(), "bad flag".into()]);
        assert!(f.contains(Flags::SEEN));
        assert_eq!(k, vec!["$Label1"]);
    }
}
