//! Example WASM policy: rejects messages with blocked words, scores suspicious ones.
//!
//! Manifest (`keyword-block.toml` beside the `.wasm`):
//! ```toml
//! [config]
//! blocked = ["viagra"]          # reject 550 5.7.1
//! suspicious = ["winner"]       # +2.0 each, symbol KW_SUSPICIOUS
//! ```
//! Words match anywhere in the subject or the decoded text, ignoring case.
use aho_corasick::{AhoCorasick, AhoCorasickBuilder};
use mailgate_sdk::{Event, Hook, Plugin, Verdict, host};
use std::borrow::Cow;

struct KeywordBlock;

/// One word list, compiled once per instance (instances are reused).
struct List {
    words: Vec<String>,
    /// All the words at once; ASCII letters match either case.
    matcher: AhoCorasick,
}

impl List {
    fn new(words: Vec<String>) -> List {
        let matcher = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .build(&words)
            .expect("literal words always compile");
        List { words, matcher }
    }

    /// The words found in any of `texts`, each once, in list order.
    fn found<'a>(&'a self, texts: &[&str]) -> Vec<&'a str> {
        let mut seen = vec![false; self.words.len()];
        for t in texts {
            for m in self.matcher.find_overlapping_iter(*t) {
                seen[m.pattern().as_usize()] = true;
            }
        }
        self.words
            .iter()
            .zip(seen)
            .filter(|(_, s)| *s)
            .map(|(w, _)| w.as_str())
            .collect()
    }
}

struct Words {
    blocked: List,
    suspicious: List,
    /// Some word has non-ASCII letters: then the text is lower-cased (Unicode) first, since
    /// the matcher folds only ASCII.
    unicode: bool,
}

fn words() -> &'static Words {
    static WORDS: std::sync::OnceLock<Words> = std::sync::OnceLock::new();
    WORDS.get_or_init(|| {
        let config = host::config();
        let list = |key: &str| -> Vec<String> {
            config[key]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).map(str::to_lowercase).collect())
                .unwrap_or_default()
        };
        let (blocked, suspicious) = (list("blocked"), list("suspicious"));
        let unicode = blocked.iter().chain(&suspicious).any(|w| !w.is_ascii());
        Words {
            blocked: List::new(blocked),
            suspicious: List::new(suspicious),
            unicode,
        }
    })
}

impl Plugin for KeywordBlock {
    const HOOKS: &'static [Hook] = &[Hook::Receive];
    const MESSAGE_FIELDS: &'static [&'static str] = &["subject", "text"];

    fn on_receive(event: &Event) -> Verdict {
        let Some(m) = &event.message else {
            return Verdict::default();
        };
        let w = words();
        let (subject, text): (Cow<str>, Cow<str>) = if w.unicode {
            (m.subject.to_lowercase().into(), m.text.to_lowercase().into())
        } else {
            (m.subject.as_str().into(), m.text.as_str().into())
        };
        let texts = [subject.as_ref(), text.as_ref()];
        if let Some(b) = w.blocked.found(&texts).first() {
            host::log("info", &format!("blocked word {b}"));
            return Verdict::reject(550, "5.7.1", &format!("Message contains a blocked word ({b})"));
        }
        let hits = w.suspicious.found(&texts);
        if hits.is_empty() {
            return Verdict::default();
        }
        Verdict::score(2.0 * hits.len() as f64, "KW_SUSPICIOUS", &hits.join(","))
    }
}

mailgate_sdk::export_plugin!(KeywordBlock);
