//! mailgate: a mail server and spam gateway in one binary.
//!
//! # Layout
//!
//! Lowest layer first; each module imports only modules above it in this list
//! (`docs/architecture.md`, "Layers"; `tests/it/layers.rs` checks it).
//!
//! | module | job |
//! |---|---|
//! | [`mail`] | the leaf: addresses, the message model, parsing, header edits, line endings |
//! | [`metrics`] | a leaf too: the Prometheus counters every layer records into |
//! | [`net`] | [`net::conn::Conn`], the buffered plaintext/TLS stream every protocol reads and writes |
//! | [`store`] | the [`store::MailStore`] contract and its sled implementation (key layout in [`store::keys`]) |
//! | [`config`] | TOML configuration, embedded defaults, validation that names the bad key |
//! | [`auth`] | password checks: argon2, failure delays, per-IP budgets |
//! | [`hooks`] | the policy contract and engine: Lua, WASM, host services |
//! | [`spam`] | analyzers registered into the hooks, SPF/DKIM/DMARC, training, learning |
//! | [`route`] | where a recipient goes: local accounts, aliases, catch-alls, relay denial |
//! | [`pipeline`] | what happens to a message: the one decision path for the server and the tools |
//! | [`queue`] | outbound delivery: the queue's scheduler, the SMTP client, MX, bounces |
//! | [`deliver`] | the end of every transaction: queue entry and local copies, durably |
//! | [`context`] | what every protocol session shares |
//! | [`smtp`], [`pop3`], [`imap`] | the protocols, side by side |
//! | [`admin`] | admin commands, over the admin socket or directly on the store |
//! | [`server`] | listeners, TLS, connection limits, graceful shutdown |
//! | [`cli`] | the `mailgate` command |
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
pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod pop3;
pub mod queue;
pub mod route;
pub mod server;
pub mod smtp;
pub mod spam;
pub mod store;
