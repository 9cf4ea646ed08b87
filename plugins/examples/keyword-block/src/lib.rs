//! Example WASM policy: rejects messages with blocked words, scores suspicious ones.
//!
//! Manifest (`keyword-block.toml` beside the `.wasm`):
//! ```toml
//! [config]
//! blocked = ["viagra"]          # reject 550 5.7.1
//! suspicious = ["winner"]       # +2.0 each, symbol KW_SUSPICIOUS
//! ```
use mailgate_sdk::{Event, Hook, Plugin, Verdict, host};

struct KeywordBlock;

/// The word lists from the manifest, read once per instance (instances are reused).
struct Words {
    blocked: Vec<String>,
    suspicious: Vec<String>,
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
        Words {
            blocked: list("blocked"),
            suspicious: list("suspicious"),
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
        let text = format!("{} {}", m.subject, m.text).to_lowercase();
        if let Some(w) = words().blocked.iter().find(|w| text.contains(w.as_str())) {
            host::log("info", &format!("blocked word {w}"));
            return Verdict::reject(550, "5.7.1", &format!("Message contains a blocked word ({w})"));
        }
        let hits: Vec<&str> = words()
            .suspicious
            .iter()
            .map(String::as_str)
            .filter(|w| text.contains(w))
            .collect();
        if hits.is_empty() {
            return Verdict::default();
        }
        Verdict::score(2.0 * hits.len() as f64, "KW_SUSPICIOUS", &hits.join(","))
    }
}

mailgate_sdk::export_plugin!(KeywordBlock);
