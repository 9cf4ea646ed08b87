//! Example WASM policy: stamps every message with a header at the data stage.
use mailgate_sdk::{Event, Hook, Plugin, Verdict};

struct HeaderStamp;

impl Plugin for HeaderStamp {
    const HOOKS: &'static [Hook] = &[Hook::Receive];
    const MESSAGE_FIELDS: &'static [&'static str] = &["subject"];

    fn on_receive(event: &Event) -> Verdict {
        let subject_len = event.message.as_ref().map(|m| m.subject.chars().count()).unwrap_or(0);
        Verdict::default()
            .header("X-Stamped-By", "header-stamp (wasm)")
            .header("X-Subject-Length", &subject_len.to_string())
    }
}

mailgate_sdk::export_plugin!(HeaderStamp);
