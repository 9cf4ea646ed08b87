//! The byte stream every protocol session reads and writes: buffered, plaintext or TLS, with
//! line and deadline handling ([`conn::Conn`]). Below the protocols, so none of them reaches
//! into another's or into the listeners.

pub mod conn;
