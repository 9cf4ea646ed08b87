//! The leaf of the crate: what a mail message and a mail address are, and the operations on
//! their wire form that every other layer shares. Imports nothing of ours.
//!
//! | file | what |
//! |---|---|
//! | [`address`] | `local@domain` parsing and normalisation |
//! | [`model`] | the parsed message ([`Message`], [`Header`]) policies and analyzers read |
//! | [`parse`] | raw bytes → [`Message`], once per transaction (mail-parser) |
//! | [`headers`] | adding and removing header fields on the wire form |
//! | [`wire`] | line endings (CRLF) |

pub mod address;
pub mod headers;
pub mod model;
pub mod parse;
pub mod wire;

pub use address::Address;
pub use headers::{edit_headers, edit_headers_into};
pub use model::{Header, Message};
pub use parse::parse_message;
