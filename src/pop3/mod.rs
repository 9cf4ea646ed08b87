//! POP3 (RFC 1939) with CAPA, UIDL, TOP, STLS, SASL PLAIN/LOGIN and response codes.

pub mod command;
mod session;

pub use session::Session;
