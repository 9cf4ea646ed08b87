//! IMAP4rev1 (RFC 3501) and IMAP4rev2 (RFC 9051) server.
//!
//! - [`parser`]: the command grammar, sans-IO, over a complete command with its literals.
//! - [`session`]: states, the selected-mailbox snapshot (sequence numbers), untagged updates
//!   at the points the RFCs allow, IDLE.
//! - [`mime`] and [`fetch`]: message structure with exact byte ranges, FETCH items.
//! - [`search`]: SEARCH keys.
//! - [`mutf7`]: modified UTF-7 names for rev1 clients.
//!
//! Moving mail into or out of Junk emits a [`LearnEvent`] on [`LearnSink`] (the spam
//! filter's training seam).

pub mod fetch;
pub mod mime;
pub mod mutf7;
pub mod parser;
pub mod search;
pub mod session;

pub use session::Session;

use crate::store::BlobId;

/// A user's judgement of a message, from where they moved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnEvent {
    pub account: String,
    pub blob: BlobId,
    /// `true`: into Junk (spam); `false`: out of Junk into a folder other than Trash (ham).
    pub spam: bool,
}

/// Where learn events go; receivers subscribe (events are dropped when no one listens).
pub type LearnSink = tokio::sync::broadcast::Sender<LearnEvent>;

pub fn learn_sink() -> LearnSink {
    tokio::sync::broadcast::channel(1024).0
}
