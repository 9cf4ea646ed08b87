//! IMAP4rev1 (RFC 3501) and IMAP4rev2 (RFC 9051) server.
//!
//! - [`command`]: commands as data; [`parser`]: their grammar, sans-IO, over a complete
//!   command with its literals.
//! - [`session`]: states, the selected-mailbox snapshot (sequence numbers), untagged updates
//!   at the points the RFCs allow, IDLE.
//! - [`mime`] and [`fetch`]: message structure with exact byte ranges, FETCH items.
//! - [`search`]: SEARCH keys; [`sort`]: SORT and THREAD (RFC 5256).
//! - [`mutf7`]: modified UTF-7 names for rev1 clients.
//!
//! Moving mail into or out of Junk emits a [`crate::spam::LearnEvent`] on the
//! [`crate::spam::LearnSink`] (the spam filter's training seam).

pub mod command;
pub mod fetch;
pub mod mime;
pub mod mutf7;
pub mod parser;
pub mod search;
pub mod session;
pub mod sort;
pub mod url;

pub use session::Session;
