//! The message model: a received message as policies and analyzers see it, parsed once
//! (`super::parse_message`). Plain data with serde, nothing else: the WASM guest SDK compiles
//! this file too (through the hook contract, which re-exports it).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// The message, parsed once per transaction and shared by every policy. A WASM plugin may
/// ask for only some fields (`MESSAGE_FIELDS` in the SDK); the others arrive empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Message {
    /// Decoded Subject.
    pub subject: String,
    /// Address in From.
    pub from: String,
    pub to: Vec<String>,
    /// Decoded body text (text parts, HTML reduced to text), then the Subject and text of
    /// attached messages (`message/rfc822`, one level: a bounce shows what it returns).
    pub text: String,
    /// Every header in order, raw value (unfolded).
    pub headers: Vec<Header>,
    pub size: usize,
    pub attachments: usize,
    /// Host names the message links to (HTML `href`/`src`, `http(s)://` and `www.` in the
    /// text), lowercase, distinct, in order of appearance, at most 64.
    #[serde(default)]
    pub links: Vec<String>,
}
