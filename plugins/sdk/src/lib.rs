//! Write mailgate policies in Rust.
//!
//! ```ignore
//! use mailgate_sdk::{Event, Plugin, Verdict};
//!
//! struct Stamp;
//!
//! impl Plugin for Stamp {
//!     fn on_receive(event: &Event) -> Verdict {
//!         Verdict::default().header("X-Stamped", "yes")
//!     }
//! }
//!
//! mailgate_sdk::export_plugin!(Stamp);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` and copy the `.wasm` file into
//! the policies directory. The event and verdict types are the host's own (`contract.rs` is
//! compiled into this crate unchanged), so the fields are exactly those in `docs/hooks.md`.

#[path = "../../../src/hooks/contract.rs"]
mod contract;
/// The message model the contract re-exports (the host's `mail::model`, compiled unchanged),
/// at the path the contract names it by.
#[path = "../../../src/mail/model.rs"]
mod model;
mod mail {
    pub(crate) use super::model;
}

pub use contract::*;
/// The JSON crate the SDK speaks (for `host::config()` values).
pub use serde_json;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "policy",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "mailgate_sdk::bindings",
    });
}

/// Host functions (the same as the Lua `mailgate` table).
pub mod host {
    use super::bindings::mailgate::policy::host as h;

    pub fn log(level: &str, message: &str) {
        h::log(level, message)
    }
    pub fn regex_match(pattern: &str, text: &str) -> Result<bool, String> {
        h::regex_match(pattern, text)
    }
    pub fn dns(kind: &str, name: &str) -> Result<Vec<String>, String> {
        h::dns(kind, name)
    }
    pub fn kv_get(key: &str) -> Option<String> {
        h::kv_get(key)
    }
    pub fn kv_set(key: &str, value: &str, ttl_secs: Option<i64>) -> Result<(), String> {
        h::kv_set(key, value, ttl_secs)
    }
    pub fn kv_del(key: &str) -> Result<(), String> {
        h::kv_del(key)
    }
    pub fn now() -> i64 {
        h::now()
    }
    /// The manifest's `[config]` table.
    pub fn config() -> serde_json::Value {
        serde_json::from_str(&h::config()).unwrap_or(serde_json::Value::Null)
    }
    /// DNS blocklist lookup: `target` an IP or a domain, `zone` the list. The A answers
    /// (e.g. `["127.0.0.2"]`), empty when not listed.
    pub fn dnsbl(target: &str, zone: &str) -> Result<Vec<String>, String> {
        h::dnsbl(target, zone)
    }
    /// The Bayes judgement of the event's message; `None` when no model is trained.
    pub fn bayes() -> Option<super::BayesResult> {
        h::bayes().and_then(|j| serde_json::from_str(&j).ok())
    }
    /// Keyword rules (from the manifest's `keyword_dirs`) that match the event's message.
    pub fn keywords() -> Vec<super::KeywordHit> {
        serde_json::from_str(&h::keywords()).unwrap_or_default()
    }
    /// Letter-combination findings in the event's message.
    pub fn letters() -> Vec<super::LetterFinding> {
        serde_json::from_str(&h::letters()).unwrap_or_default()
    }
}

/// A policy. Implement the hooks you need; the others continue.
pub trait Plugin {
    /// Hooks the host should call. The default is all four; narrowing it saves calls.
    const HOOKS: &'static [Hook] = &[Hook::Receive, Hook::Route, Hook::Deliver, Hook::Fetch];
    /// SMTP stages at which `on_receive` runs (default: data only).
    const STAGES: &'static [Stage] = &[Stage::Data];
    /// Fields of `event.message` the plugin reads: any of "subject", "from", "to", "text",
    /// "headers", "links" (`size` and `attachments` always come). The others arrive empty.
    /// The default is all of them; naming fewer saves encoding and decoding the body on
    /// every call.
    const MESSAGE_FIELDS: &'static [&'static str] = &["subject", "from", "to", "text", "headers", "links"];

    fn on_receive(_event: &Event) -> Verdict {
        Verdict::default()
    }
    fn on_route(_event: &Event) -> Verdict {
        Verdict::default()
    }
    fn on_deliver(_event: &Event) -> Verdict {
        Verdict::default()
    }
    fn on_fetch(_event: &Event) -> Verdict {
        Verdict::default()
    }
}

/// Builders for common answers.
impl Verdict {
    pub fn reject(code: u16, enhanced: &str, text: &str) -> Verdict {
        Verdict {
            action: Action::Reject,
            code: Some(code),
            enhanced: Some(enhanced.into()),
            text: Some(text.into()),
            ..Verdict::default()
        }
    }
    pub fn score(score: f64, symbol: &str, reason: &str) -> Verdict {
        Verdict {
            score: Some(score),
            symbol: Some(symbol.into()),
            reason: Some(reason.into()),
            ..Verdict::default()
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Verdict {
        self.add_headers.push(Header {
            name: name.into(),
            value: value.into(),
        });
        self
    }
}

#[doc(hidden)]
pub fn describe<P: Plugin>() -> String {
    serde_json::json!({ "hooks": P::HOOKS, "stages": P::STAGES, "message_fields": P::MESSAGE_FIELDS }).to_string()
}

/// The WIT records under the name `wit_convert.rs` expects.
use bindings::mailgate::policy::types as w;

/// Record → event, verdict → record: the host's own mapping file (it uses the other two
/// directions), so the two ends cannot disagree.
#[path = "../../../src/hooks/wit_convert.rs"]
mod wit;

#[doc(hidden)]
pub fn handle<P: Plugin>(event: w::Event, message: Option<w::Message>) -> Result<Option<w::Verdict>, String> {
    let event = wit::event_from(event, message);
    let verdict = match event.hook {
        Hook::Receive => P::on_receive(&event),
        Hook::Route => P::on_route(&event),
        Hook::Deliver => P::on_deliver(&event),
        Hook::Fetch => P::on_fetch(&event),
    };
    if verdict == Verdict::default() {
        return Ok(None);
    }
    Ok(Some(wit::verdict_to(verdict)))
}

/// Exports a [`Plugin`] implementation as the component's `describe` and `handle`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        struct __MailgateExport;
        impl $crate::bindings::Guest for __MailgateExport {
            fn describe() -> String {
                $crate::describe::<$plugin>()
            }
            fn handle(
                event: $crate::bindings::mailgate::policy::types::Event,
                message: Option<$crate::bindings::mailgate::policy::types::Message>,
            ) -> Result<Option<$crate::bindings::mailgate::policy::types::Verdict>, String> {
                $crate::handle::<$plugin>(event, message)
            }
        }
        $crate::bindings::export!(__MailgateExport);
    };
}
