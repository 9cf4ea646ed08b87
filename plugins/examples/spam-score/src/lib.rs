//! Example WASM policy: scores a message with the host's spam analyzers (letter
//! combinations, keyword rules, the Bayes model) and DNS blocklists, the way the shipped Lua
//! policies 20-origin, 30-keywords, 40-letters and 50-bayes do.
//!
//! It asks for no message fields (`MESSAGE_FIELDS = &[]`): the analyzers run in the host
//! over the whole message, so the event that crosses into WASM stays small.
//!
//! Manifest (`spam-score.toml` beside the `.wasm`):
//! ```toml
//! [config]
//! keyword_dirs = ["keywords"]           # rule folders, relative to the policies folder
//! dnsbl_ip = ["zen.spamhaus.org"]       # client-IP blocklists (none by default)
//! bayes_spam = 0.9                      # probability at or above: BAYES_SPAM
//! [config.scores]
//! OBFUSCATED_WORD = 2.0                 # letter findings, by name (unlisted: 1.0)
//! BAYES_SPAM = 4.0
//! RBL_IP = 4.0
//! ```
use mailgate_sdk::{Event, Hook, Plugin, Symbol, Verdict, host};

struct SpamScore;

fn score_of(config: &mailgate_sdk::serde_json::Value, name: &str, default: f64) -> f64 {
    config["scores"][name].as_f64().unwrap_or(default)
}

impl Plugin for SpamScore {
    const HOOKS: &'static [Hook] = &[Hook::Receive];
    const MESSAGE_FIELDS: &'static [&'static str] = &[];

    fn on_receive(event: &Event) -> Verdict {
        if event.message.is_none() {
            return Verdict::default();
        }
        let config = host::config();
        let mut symbols = Vec::new();
        let mut add = |name: &str, score: f64, reason: String| {
            if score != 0.0 {
                symbols.push(Symbol {
                    name: name.into(),
                    score,
                    reason,
                });
            }
        };
        for f in host::letters() {
            add(
                &f.name,
                score_of(&config, &f.name, 1.0),
                format!("x{} ({})", f.count, f.example),
            );
        }
        for k in host::keywords() {
            add(&k.name, k.score, k.description);
        }
        if let Some(b) = host::bayes() {
            if b.probability >= config["bayes_spam"].as_f64().unwrap_or(0.9) {
                let top: Vec<&str> = b.tokens.iter().take(3).map(|t| t.token.as_str()).collect();
                add("BAYES_SPAM", score_of(&config, "BAYES_SPAM", 4.0), top.join(" "));
            }
        }
        for zone in config["dnsbl_ip"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|z| z.as_str())
        {
            match host::dnsbl(&event.session.client_ip, zone) {
                Ok(hits) if !hits.is_empty() => add(
                    "RBL_IP",
                    score_of(&config, "RBL_IP", 4.0),
                    format!("{zone} {}", hits[0]),
                ),
                Ok(_) => {}
                Err(e) => host::log("warn", &format!("{zone}: {e}")),
            }
        }
        Verdict {
            symbols,
            ..Verdict::default()
        }
    }
}

mailgate_sdk::export_plugin!(SpamScore);
