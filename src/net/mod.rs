//! The byte stream every protocol session reads and writes: buffered, plaintext or TLS, with
//! line and deadline handling ([`conn::Conn`]). Below the protocols, so none of them reaches
//! into another's or into the listeners.

pub mod conn;

/// What a session does after a command: read the next one, or end (after its goodbye).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close,
}
