//! Inbound SMTP (RFC 5321) with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8,
//! CHUNKING and STARTTLS.

pub mod data;
mod session;

pub use session::Session;
