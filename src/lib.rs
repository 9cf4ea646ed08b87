//! mailgate: a mail server and spam gateway in one binary.
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | [`config`] | TOML configuration, embedded defaults, validation that names the bad key |
//! | [`server`] | listeners, TLS, connection limits, graceful shutdown; [`server::conn`] buffered I/O shared by all protocols |
//! | [`smtp`] | inbound SMTP: sans-IO DATA receiver, session state machine |
//! | [`route`] | where a recipient goes: local accounts, aliases, catch-alls, relay denial |
//! | [`store`] | the [`store::MailStore`] contract and its sled implementation (key layout in [`store::keys`]) |
//! | [`admin`] | admin commands, over the admin socket or directly on the store |
//! | [`address`] | mail address parsing and normalisation |
//!
//! The plan is in `docs/architecture.md`.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod context;
pub mod deliver;
pub mod hooks;
pub mod imap;
pub mod mail;
pub mod net;
pub mod pipeline;
pub mod pop3;
pub mod route;
pub mod server;
pub mod smtp;
pub mod spam;
pub mod store;
