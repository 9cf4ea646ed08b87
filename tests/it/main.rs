//! Integration tests: real servers on 127.0.0.1 port 0, real clients (raw sockets, lettre,
//! Python's smtplib), real TLS and real fsync. One test binary keeps link time down.

mod cli;
mod common;
mod crash;
mod dns;
mod hooks;
mod imap;
mod layers;
mod observability;
mod origin;
mod outbound;
mod pipeline;
mod pop3;
mod scaleout;
mod smtp;
mod smtp_clients;
mod smtp_limits;
mod smtp_tls;
mod spam;
mod submission;
mod transcripts;
mod wasm;
