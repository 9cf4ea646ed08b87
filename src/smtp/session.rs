//! One inbound SMTP session (RFC 5321), from greeting to QUIT.
//!
//! Commands are parsed by `smtp-proto`; the state (greeted, transaction, TLS) and every reply
//! are ours. Each protocol error maps to one reply in [`Session::parse_error`]. A message is
//! answered 250 only after the store has flushed it (see [`crate::store::MailStore::sync`]).

use super::data::{DataReceiver, Progress};
use crate::auth::Outcome;
use crate::config::{Listener, Protocol, TlsMode};
use crate::context::Shared;
use crate::hooks::contract::Session as SessionInfo;
use crate::hooks::{PolicySet, Stage};
use crate::mail::address::Address;
use crate::net::Flow;
use crate::net::conn::{Conn, Line, ReadError};
use crate::pipeline::{Context, Destination, Refusal, Scope};
use crate::store::now_secs;
use smtp_proto::{
    AUTH_LOGIN, AUTH_PLAIN, Error as ProtoError, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_RET_FULL, MAIL_RET_HDRS,
    MAIL_SMTPUTF8, MailFrom, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS, RcptTo,
    Request,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// An ORCPT as RFC 3461 writes it, with its address type: the codec accepts only `rfc822`
/// and gives the decoded address alone (which may itself hold a `;`).
fn typed_orcpt(orcpt: &Option<String>) -> Option<String> {
    orcpt.as_ref().map(|o| format!("rfc822;{o}"))
}

/// MAIL FROM flags we advertise and therefore accept.
const ACCEPTED_MAIL_FLAGS: u64 = MAIL_BODY_7BIT | MAIL_BODY_8BITMIME | MAIL_SMTPUTF8 | MAIL_RET_FULL | MAIL_RET_HDRS;
/// RCPT flags we advertise (DSN, RFC 3461) and therefore accept.
const ACCEPTED_RCPT_FLAGS: u64 = RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY | RCPT_NOTIFY_NEVER;

struct Transaction {
    mail_from: String,
    smtputf8: bool,
    /// DSN (RFC 3461): `ENVID` and `RET` as given on MAIL.
    env_id: Option<String>,
    ret: Option<String>,
    /// Accounts the accepted recipients resolved to, deduplicated.
    accounts: Vec<String>,
    /// Remote recipients, where they go and their DSN requests, for the queue.
    remote: Vec<crate::queue::Outgoing>,
    /// Local recipients that asked `NOTIFY=SUCCESS`, with their ORCPT.
    notify_delivered: Vec<(String, Option<String>)>,
    /// Recipients accepted (as given), for the Received header and logs.
    rcpts: Vec<String>,
    /// Recipients tried, accepted or not (the limit counts attempts).
    attempted: usize,
    /// BDAT chunks received so far.
    bdat: Option<Vec<u8>>,
    /// What policies see of this transaction (envelope, scores so far) and said of it.
    scope: Scope,
}

pub struct Session {
    shared: Arc<Shared>,
    conn: Conn,
    peer: SocketAddr,
    tls_mode: TlsMode,
    /// A submission listener (RFC 6409): MAIL needs AUTH, and messages get fixed up.
    submission: bool,
    /// This listener offers SMTP AUTH.
    auth_offered: bool,
    /// The account logged in with AUTH.
    auth_user: Option<String>,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    errors: u32,
    /// Commands that made no progress since the last delivered message.
    junk: u32,
    /// The policy set this session started with (a reload does not change it mid-session).
    policies: Arc<PolicySet>,
    /// Scores and verdicts from the connect and helo stages.
    scope: Scope,
    /// The same as it was after the connect stage: every EHLO/HELO (a second one after
    /// STARTTLS, say) starts again from here, so helo scores are never counted twice.
    after_connect: Scope,
}

/// `RCPT TO:<Postmaster>` (no domain), which RFC 5321 §4.1.1.3 requires us to accept; the
/// codec returns it as an empty address.
fn is_bare_postmaster(line: &[u8]) -> bool {
    let l = String::from_utf8_lossy(line).to_ascii_lowercase();
    l.trim_end() == "rcpt to:<postmaster>"
}

impl Session {
    pub fn new(shared: Arc<Shared>, conn: Conn, peer: SocketAddr, listener: &Listener) -> Session {
        let policies = shared.engine.current();
        Session {
            shared,
            conn,
            peer,
            tls_mode: listener.tls,
            submission: listener.protocol == Protocol::Submission,
            auth_offered: listener.offers_auth(),
            auth_user: None,
            helo: None,
            esmtp: false,
            tx: None,
            errors: 0,
            junk: 0,
            policies,
            scope: Scope::default(),
            after_connect: Scope::default(),
        }
    }

    /// The decision pipeline over this session's policy set.
    fn ctx(&self) -> Context<'_> {
        Context {
            policies: &self.policies,
            config: &self.shared.config,
            router: Some(&self.shared.router),
            origin: self.shared.origin.as_deref(),
            chains: Some(&self.shared.chains),
            may_relay: self.auth_user.is_some() || self.shared.config.smtp.may_relay(self.peer.ip()),
        }
    }

    fn session_info(&self) -> SessionInfo {
        SessionInfo {
            client_ip: self.peer.ip().to_string(),
            helo: self.helo.clone(),
            tls: self.conn.is_tls(),
            auth_user: self.auth_user.clone(),
            listener: if self.submission { "submission" } else { "smtp" }.into(),
        }
    }

    /// Answers a refusal: its reply, then the session's end or the error count.
    fn refused(&mut self, r: Refusal) -> Flow {
        if r.close {
            self.conn.write(format!("{}\r\n", r.line()).as_bytes());
            return Flow::Close;
        }
        self.refuse(r.code, &r.enhanced, &r.text)
    }

    fn cfg(&self) -> &crate::config::Smtp {
        &self.shared.config.smtp
    }

    /// Queues a reply; counts it as an error when it is a 4xx/5xx. An empty `enhanced` leaves
    /// the enhanced status code out (greeting-style replies, 354, HELO).
    fn reply(&mut self, code: u16, enhanced: &str, text: &str) {
        let line = if enhanced.is_empty() {
            format!("{code} {text}\r\n")
        } else {
            format!("{code} {enhanced} {text}\r\n")
        };
        self.conn.write(line.as_bytes());
        let class = match code {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        crate::metrics::inc(&crate::metrics::get().smtp_replies, "class", class);
        if code >= 400 {
            self.errors += 1;
        }
    }

    /// A command that makes no progress (NOOP, RSET, VRFY, HELP, HELO/EHLO). Past
    /// `junk_command_limit` of them each counts as an error, so a session looping on them
    /// ends with 421 (Postfix's `smtpd_junk_command_limit`).
    fn junk(&mut self) -> Flow {
        self.junk += 1;
        if self.junk <= self.cfg().junk_command_limit {
            return Flow::Continue;
        }
        self.errors += 1;
        self.after_error()
    }

    /// After an error reply: close when the client has used up its error allowance.
    fn after_error(&mut self) -> Flow {
        if self.errors >= self.cfg().max_errors {
            self.conn.write(b"421 4.7.0 Too many errors, closing connection\r\n");
            return Flow::Close;
        }
        Flow::Continue
    }

    /// Serves the session to its end. `permit` (the connection-limit slot) is released before
    /// the socket closes, so a client that saw the close can connect again at once.
    pub async fn run<P>(mut self, permit: P) {
        let mut scope = Scope::default();
        let info = self.session_info();
        if let Err(r) = self.ctx().receive(Stage::Connect, &info, &mut scope).await {
            // Refused at connect: a 554 greeting (RFC 5321 §3.1) or 421, then close.
            let code = if r.code >= 500 { 554 } else { 421 };
            self.conn
                .write(format!("{code} {} {}\r\n", r.enhanced, r.text).as_bytes());
            drop(permit);
            self.conn.close().await;
            return;
        }
        self.after_connect = scope.clone();
        self.scope = scope;
        let greeting = format!("220 {} {}\r\n", self.shared.config.server.hostname, self.cfg().banner);
        self.conn.write(greeting.as_bytes());

        let mut shutdown = self.shared.shutdown.clone();
        loop {
            let max = self.cfg().max_line_length;
            let timeout = Duration::from_secs(self.cfg().command_timeout_secs);
            let line = tokio::select! {
                r = self.conn.read_line(max, timeout) => r,
                _ = shutdown.changed() => {
                    self.conn.write(b"421 4.3.2 Service shutting down, closing connection\r\n");
                    break;
                }
            };
            let flow = match line {
                Ok(Line::Ok(bytes)) => self.command(&bytes).await,
                Ok(Line::TooLong) => {
                    self.reply(500, "5.5.2", "Line too long");
                    self.after_error()
                }
                Err(ReadError::Timeout) => {
                    self.conn.write(b"421 4.4.2 Timeout exceeded, closing connection\r\n");
                    break;
                }
                Err(ReadError::Closed) => break,
                Err(ReadError::Io(e)) => {
                    tracing::debug!(peer = %self.peer, "read error: {e}");
                    break;
                }
            };
            if flow == Flow::Close {
                break;
            }
        }
        drop(permit);
        self.conn.close().await;
    }

    async fn command(&mut self, line: &[u8]) -> Flow {
        // smtp-proto wants the line ending it found the end of the command by.
        let mut with_end = Vec::with_capacity(line.len() + 2);
        with_end.extend_from_slice(line);
        with_end.extend_from_slice(b"\r\n");
        let mut request = match Request::parse(&mut with_end.iter()) {
            Ok(r) => r.into_owned(),
            Err(e) => return self.parse_error(e),
        };
        if let Request::Rcpt { to } = &mut request
            && to.address.is_empty()
            && is_bare_postmaster(line)
        {
            to.address = "postmaster".into();
        }
        let junk = matches!(
            request,
            Request::Ehlo { .. }
                | Request::Helo { .. }
                | Request::Rset
                | Request::Noop { .. }
                | Request::Vrfy { .. }
                | Request::Help { .. }
        );
        if junk && self.junk() == Flow::Close {
            return Flow::Close;
        }
        match request {
            Request::Ehlo { host } => self.hello(host, true).await,
            Request::Helo { host } => self.hello(host, false).await,
            Request::Mail { from } => self.mail(from).await,
            Request::Rcpt { to } => self.rcpt(to).await,
            Request::Data => self.data().await,
            Request::Bdat { chunk_size, is_last } => self.bdat(chunk_size, is_last).await,
            Request::Rset => {
                self.tx = None;
                self.reply(250, "2.0.0", "Ok");
                Flow::Continue
            }
            Request::Noop { .. } => {
                self.reply(250, "2.0.0", "Ok");
                Flow::Continue
            }
            Request::Quit => {
                self.reply(221, "2.0.0", "Bye");
                Flow::Close
            }
            Request::Vrfy { .. } => {
                // Answering VRFY truthfully lets spammers harvest addresses (RFC 5321 §7.3).
                self.reply(
                    252,
                    "2.5.2",
                    "Cannot VRFY user, but will accept message and attempt delivery",
                );
                Flow::Continue
            }
            Request::Help { .. } => {
                self.reply(
                    214,
                    "2.0.0",
                    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS",
                );
                Flow::Continue
            }
            Request::StartTls => self.starttls().await,
            Request::Lhlo { .. } => self.refuse(500, "5.5.1", "LHLO is for LMTP; this is SMTP"),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response).await,
            Request::Expn { .. } => self.refuse(502, "5.5.1", "EXPN not available"),
            Request::Etrn { name } => self.etrn(&name).await,
            Request::Atrn { .. } | Request::Burl { .. } => self.refuse(502, "5.5.1", "Command not implemented"),
        }
    }

    fn refuse(&mut self, code: u16, enhanced: &str, text: &str) -> Flow {
        self.reply(code, enhanced, text);
        self.after_error()
    }

    /// One reply per protocol error.
    fn parse_error(&mut self, e: ProtoError) -> Flow {
        match e {
            ProtoError::UnknownCommand => self.refuse(500, "5.5.2", "Syntax error, command unrecognized"),
            ProtoError::InvalidSenderAddress => self.refuse(501, "5.1.7", "Bad sender address syntax"),
            ProtoError::InvalidRecipientAddress => self.refuse(501, "5.1.3", "Bad recipient address syntax"),
            ProtoError::SyntaxError { syntax } => self.refuse(501, "5.5.4", &format!("Syntax: {syntax}")),
            ProtoError::InvalidParameter { param } => self.refuse(501, "5.5.4", &format!("Invalid parameter {param}")),
            ProtoError::UnsupportedParameter { param } => {
                let param: String = param.chars().filter(|c| !c.is_control()).take(64).collect();
                self.refuse(555, "5.5.4", &format!("Unsupported parameter {param}"))
            }
            ProtoError::ResponseTooLong | ProtoError::NeedsMoreData { .. } => {
                self.refuse(500, "5.5.2", "Line too long")
            }
            ProtoError::InvalidResponse { .. } => self.refuse(500, "5.5.2", "Syntax error"),
        }
    }

    async fn hello(&mut self, host: String, esmtp: bool) -> Flow {
        let host = host.trim().to_string();
        if host.is_empty() || host.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return self.refuse(501, "5.5.4", "Syntax: EHLO hostname");
        }
        self.tx = None;
        let mut scope = self.after_connect.clone();
        let mut info = self.session_info();
        info.helo = Some(host.clone());
        let decided = self.ctx().receive(Stage::Helo, &info, &mut scope).await;
        self.scope = scope;
        if let Err(r) = decided {
            return self.refused(r);
        }
        self.esmtp = esmtp;
        let name = self.shared.config.server.hostname.clone();
        if !esmtp {
            self.reply(250, "", &name);
        } else {
            let mut lines = vec![format!("{name} Hello {host} [{}]", self.peer.ip())];
            lines.push("PIPELINING".into());
            lines.push(format!("SIZE {}", self.cfg().max_message_size));
            lines.push("8BITMIME".into());
            lines.push("ENHANCEDSTATUSCODES".into());
            lines.push("SMTPUTF8".into());
            lines.push("DSN".into());
            if self.shared.config.relays.iter().any(|r| r.etrn) {
                lines.push("ETRN".into());
            }
            lines.push("CHUNKING".into());
            if self.tls_available() {
                lines.push("STARTTLS".into());
            }
            if self.auth_allowed() {
                lines.push("AUTH PLAIN LOGIN".into());
            }
            lines.push("HELP".into());
            let last = lines.len() - 1;
            for (i, l) in lines.iter().enumerate() {
                let sep = if i == last { ' ' } else { '-' };
                self.conn.write(format!("250{sep}{l}\r\n").as_bytes());
            }
        }
        self.helo = Some(host);
        Flow::Continue
    }

    /// AUTH is offered here and a password may be sent on this connection now
    /// (`[auth] plaintext`).
    fn auth_allowed(&self) -> bool {
        self.auth_offered && self.shared.auth.plaintext_allowed(self.conn.is_tls(), self.peer.ip())
    }

    /// AUTH (RFC 4954) with PLAIN (RFC 4616) or LOGIN, initial response or challenge.
    async fn auth(&mut self, mechanism: u64, initial: String) -> Flow {
        if !self.auth_offered {
            return self.refuse(503, "5.5.1", "AUTH is not offered on this port");
        }
        if self.helo.is_none() || !self.esmtp {
            return self.refuse(503, "5.5.1", "Send EHLO first");
        }
        if self.auth_user.is_some() {
            return self.refuse(503, "5.5.1", "Already authenticated");
        }
        if self.tx.is_some() {
            return self.refuse(503, "5.5.1", "AUTH not allowed in a mail transaction");
        }
        if !self.auth_allowed() {
            return self.refuse(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            );
        }
        // RFC 4954 §4: "=" is an empty initial response; none at all asks for a challenge.
        let initial = match initial.as_str() {
            "" => None,
            "=" => Some(String::new()),
            _ => Some(initial),
        };
        let creds = match mechanism {
            AUTH_PLAIN => {
                let response = match initial {
                    Some(r) => r,
                    None => match self.sasl_response("").await {
                        Ok(r) => r,
                        Err(flow) => return flow,
                    },
                };
                crate::auth::sasl_plain(&response)
            }
            AUTH_LOGIN => {
                let user = match initial {
                    Some(r) => r,
                    None => match self.sasl_response("VXNlcm5hbWU6").await {
                        Ok(r) => r,
                        Err(flow) => return flow,
                    },
                };
                let pass = match self.sasl_response("UGFzc3dvcmQ6").await {
                    Ok(r) => r,
                    Err(flow) => return flow,
                };
                crate::auth::sasl_login(&user, &pass)
            }
            _ => return self.refuse(504, "5.5.4", "Unrecognized authentication type"),
        };
        let Some((user, password)) = creds else {
            return self.refuse(501, "5.5.2", "Invalid SASL response (base64 expected)");
        };
        match self.shared.auth.login(self.peer.ip(), &user, &password).await {
            Outcome::Ok(account) => {
                tracing::info!(peer = %self.peer, user = account, "authenticated");
                self.auth_user = Some(account);
                // The helo stage again, now that policies can see who this is (the shipped
                // ones do not score our own users' EHLO names).
                let mut scope = self.after_connect.clone();
                let decided = self.ctx().receive(Stage::Helo, &self.session_info(), &mut scope).await;
                self.scope = scope;
                if let Err(r) = decided {
                    self.auth_user = None;
                    return self.refused(r);
                }
                self.reply(235, "2.7.0", "Authentication successful");
                Flow::Continue
            }
            Outcome::Failed => self.refuse(535, "5.7.8", "Authentication credentials invalid"),
            Outcome::Throttled => self.refuse(
                454,
                "4.7.0",
                "Temporary authentication failure: too many failures from your address, try later",
            ),
            Outcome::TempFail => self.refuse(454, "4.7.0", "Temporary authentication failure"),
        }
    }

    /// Sends a `334` challenge and reads the client's answer; `*` cancels (501).
    async fn sasl_response(&mut self, challenge: &str) -> Result<String, Flow> {
        self.conn.write(format!("334 {challenge}\r\n").as_bytes());
        let max = self.cfg().max_line_length;
        let timeout = Duration::from_secs(self.cfg().command_timeout_secs);
        match self.conn.read_line(max, timeout).await {
            Ok(Line::Ok(bytes)) => {
                let text = String::from_utf8_lossy(&bytes).trim().to_string();
                if text == "*" {
                    return Err(self.refuse(501, "5.0.0", "Authentication cancelled"));
                }
                Ok(text)
            }
            Ok(Line::TooLong) => Err(self.refuse(500, "5.5.6", "Authentication exchange line is too long")),
            Err(ReadError::Timeout) => {
                self.conn.write(b"421 4.4.2 Timeout exceeded, closing connection\r\n");
                Err(Flow::Close)
            }
            Err(_) => Err(Flow::Close),
        }
    }

    fn tls_available(&self) -> bool {
        self.shared.tls.is_some() && self.tls_mode == TlsMode::Starttls && !self.conn.is_tls()
    }

    /// Whether the store has `min_free_space` free, plus 1.5 × the size the client declared
    /// (Postfix's check at MAIL FROM). A store that cannot say does not stop intake; a write
    /// that fails for space is refused at its end anyway.
    fn room_for(&self, declared: usize) -> bool {
        let Some(free) = self.shared.store.free_space() else {
            return true;
        };
        let needed = self.cfg().min_free_space.saturating_add(declared as u64 / 2 * 3);
        if free < needed {
            tracing::warn!(free, needed, "refusing mail: too little free space for the store");
            return false;
        }
        true
    }

    async fn mail(&mut self, from: MailFrom<String>) -> Flow {
        if self.helo.is_none() {
            return self.refuse(503, "5.5.1", "Send EHLO/HELO first");
        }
        if self.tx.is_some() {
            return self.refuse(503, "5.5.1", "Nested MAIL command");
        }
        if from.flags & !ACCEPTED_MAIL_FLAGS != 0 {
            return self.refuse(555, "5.5.4", "Unsupported MAIL parameter");
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        if !self.esmtp && (from.flags != 0 || from.size != 0) {
            return self.refuse(501, "5.5.4", "MAIL parameters need EHLO");
        }
        if from.size > self.cfg().max_message_size {
            return self.refuse(552, "5.3.4", "Message size exceeds fixed maximum message size");
        }
        if self.submission && self.auth_user.is_none() {
            return self.refuse(530, "5.7.0", "Authentication required");
        }
        if !self.room_for(from.size) {
            return self.refuse(452, "4.3.1", "Insufficient system storage");
        }
        let address = from.address.trim().to_string();
        if !address.is_empty() {
            let Ok(parsed) = Address::parse(&address) else {
                return self.refuse(501, "5.1.7", "Bad sender address syntax");
            };
            if !address.is_ascii() && !smtputf8 {
                return self.refuse(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
            }
            // Postfix's reject_sender_login_mismatch: a user sends only as themselves.
            if let Some(user) = &self.auth_user {
                match self.shared.router.owns(user, &parsed) {
                    Ok(true) => {}
                    Ok(false) => {
                        let shown = address.clone();
                        return self.refuse(
                            553,
                            "5.7.1",
                            &format!("<{shown}>: Sender address not owned by user {user}"),
                        );
                    }
                    Err(e) => {
                        tracing::error!("sender check {address}: {e}");
                        return self.refuse(451, "4.3.0", "Temporary lookup failure");
                    }
                }
            }
        }
        let mut scope = self.scope.transaction(&address);
        if let Err(r) = self.ctx().receive(Stage::Mail, &self.session_info(), &mut scope).await {
            return self.refused(r);
        }
        let ret = match from.flags & (MAIL_RET_FULL | MAIL_RET_HDRS) {
            0 => None,
            MAIL_RET_FULL => Some("FULL".to_string()),
            _ => Some("HDRS".to_string()),
        };
        self.tx = Some(Transaction {
            mail_from: address,
            smtputf8,
            env_id: from.env_id,
            ret,
            accounts: Vec::new(),
            remote: Vec::new(),
            notify_delivered: Vec::new(),
            rcpts: Vec::new(),
            attempted: 0,
            bdat: None,
            scope,
        });
        self.reply(250, "2.1.0", "Ok");
        Flow::Continue
    }

    async fn rcpt(&mut self, to: RcptTo<String>) -> Flow {
        let max_rcpts = self.cfg().max_recipients;
        let Some(tx) = self.tx.as_mut() else {
            return self.refuse(503, "5.5.1", "Need MAIL command first");
        };
        if tx.bdat.is_some() {
            return self.refuse(503, "5.5.1", "RCPT not allowed during BDAT transfer");
        }
        if tx.attempted >= max_rcpts {
            return self.refuse(452, "4.5.3", "Too many recipients");
        }
        tx.attempted += 1;
        if to.flags & !ACCEPTED_RCPT_FLAGS != 0 {
            return self.refuse(555, "5.5.4", "Unsupported RCPT parameter");
        }
        let smtputf8 = tx.smtputf8;
        let notify: Vec<String> = [
            (RCPT_NOTIFY_NEVER, "NEVER"),
            (RCPT_NOTIFY_SUCCESS, "SUCCESS"),
            (RCPT_NOTIFY_FAILURE, "FAILURE"),
            (RCPT_NOTIFY_DELAY, "DELAY"),
        ]
        .iter()
        .filter(|(bit, _)| to.flags & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect();
        let mut given = to.address.trim().to_string();
        if !given.is_ascii() && !smtputf8 {
            return self.refuse(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
        }
        // RFC 5321 §4.1.1.3: "Postmaster" without a domain must be accepted.
        if given.eq_ignore_ascii_case("postmaster") {
            let first = self
                .shared
                .config
                .server
                .local_domains
                .first()
                .cloned()
                .unwrap_or_default();
            given = format!("postmaster@{first}");
        }
        let tx = self.tx.as_mut().expect("checked above");
        let mut scope = std::mem::take(&mut tx.scope);
        let routed = self.ctx().rcpt(&self.session_info(), &mut scope, &given).await;
        let tx = self.tx.as_mut().expect("checked above");
        tx.scope = scope;
        match routed {
            Ok(Destination::Local(found)) => {
                if notify.iter().any(|n| n == "SUCCESS") && !found.accounts.is_empty() {
                    tx.notify_delivered.push((given.clone(), typed_orcpt(&to.orcpt)));
                }
                for a in found.accounts {
                    if !tx.accounts.contains(&a) {
                        tx.accounts.push(a);
                    }
                }
                // An alias's targets elsewhere: forwarded with this message's envelope.
                for (target, hop) in found.forward {
                    if !tx.remote.iter().any(|o| o.address == target) {
                        tx.remote
                            .push(crate::queue::Outgoing::new(&self.shared.config, &target, hop));
                    }
                }
            }
            Ok(Destination::Remote(hop)) => {
                if let Err(r) = self.verify_recipient(&given, &hop).await {
                    return self.refused(r);
                }
                let tx = self.tx.as_mut().expect("checked above");
                tx.remote.push(crate::queue::Outgoing {
                    notify,
                    orcpt: typed_orcpt(&to.orcpt),
                    ..crate::queue::Outgoing::new(&self.shared.config, &given, hop)
                })
            }
            Err(r) => return self.refused(r),
        }
        let tx = self.tx.as_mut().expect("checked above");
        tx.rcpts.push(given);
        self.reply(250, "2.1.5", "Ok");
        Flow::Continue
    }

    /// For a `[[relay]]` domain with `verify_recipients`: refuses a recipient its next hop
    /// would not take (550), or cannot vouch for now (450). Our own users' mail is not probed.
    async fn verify_recipient(&self, address: &str, hop: &crate::config::outbound::NextHop) -> Result<(), Refusal> {
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d).to_ascii_lowercase();
        let verify = self
            .shared
            .config
            .relay_for(&domain)
            .is_some_and(|r| r.verify_recipients);
        if !verify || self.auth_user.is_some() {
            return Ok(());
        }
        match self.shared.verifier.verify(address, hop).await {
            crate::queue::verify::Verdict::Deliverable => Ok(()),
            crate::queue::verify::Verdict::Undeliverable(why) => Err(Refusal::new(
                550,
                "5.1.1",
                format!("<{address}>: Recipient address rejected: undeliverable address: {why}"),
            )),
            crate::queue::verify::Verdict::Unknown(why) => Err(Refusal::new(
                450,
                "4.1.1",
                format!("<{address}>: Recipient address rejected: unverified address: {why}"),
            )),
        }
    }

    /// Checks that a message may be sent now; replies and returns false otherwise.
    fn ready_for_content(&mut self, via_bdat: bool) -> bool {
        let (code, enhanced, text) = match &self.tx {
            None => (503, "5.5.1", "Need MAIL command first"),
            Some(tx) if tx.rcpts.is_empty() => (554, "5.5.1", "No valid recipients"),
            Some(tx) if !via_bdat && tx.bdat.is_some() => (503, "5.5.1", "DATA not allowed after BDAT"),
            Some(_) => return true,
        };
        self.reply(code, enhanced, text);
        false
    }

    async fn data(&mut self) -> Flow {
        if !self.ready_for_content(false) {
            return self.after_error();
        }
        self.reply(354, "", "End data with <CR><LF>.<CR><LF>");
        let limit = self.cfg().max_message_size;
        let timeout = Duration::from_secs(self.cfg().data_timeout_secs);
        let mut receiver = DataReceiver::new(limit);
        let mut bare = false;
        let min_rate = Some(self.cfg().min_data_rate);
        let read = self
            .conn
            .read_with_rate(timeout, min_rate, |buf| match receiver.feed(buf) {
                Progress::NeedMore => (buf.len(), false),
                Progress::Done { consumed } => (consumed, true),
                Progress::BareLineEnding => {
                    bare = true;
                    (buf.len(), true)
                }
            })
            .await;
        match read {
            Ok(()) => {}
            Err(ReadError::Timeout) => {
                self.conn
                    .write(b"421 4.4.2 Timeout exceeded during DATA, closing connection\r\n");
                return Flow::Close;
            }
            Err(_) => return Flow::Close, // vanished mid-message: nothing stored, nothing acknowledged
        }
        if bare {
            // Nothing after a bare line ending can be trusted to be where the client meant it
            // (SMTP smuggling): refuse the message and end the session, as Postfix does.
            tracing::warn!(peer = %self.peer, "bare CR or LF in DATA; message refused");
            self.tx = None;
            self.conn
                .write(b"521 5.5.2 Bare CR or LF received; message refused, closing connection\r\n");
            return Flow::Close;
        }
        if receiver.overflowed() {
            self.tx = None;
            return self.refuse(552, "5.3.4", "Message size exceeds fixed maximum message size");
        }
        let body = receiver.into_body();
        self.deliver(body).await
    }

    async fn bdat(&mut self, size: usize, last: bool) -> Flow {
        let timeout = Duration::from_secs(self.cfg().data_timeout_secs);
        let limit = self.cfg().max_message_size;
        if !self.ready_for_content(true) {
            // The chunk follows the command whatever we answer: read it off the wire.
            return match self.conn.read_exact_capped(size, &mut Vec::new(), 0, timeout).await {
                Ok(_) => self.after_error(),
                Err(_) => Flow::Close,
            };
        }
        let tx = self.tx.as_mut().expect("checked by ready_for_content");
        let buf = tx.bdat.get_or_insert_with(Vec::new);
        let kept = match self.conn.read_exact_capped(size, buf, limit, timeout).await {
            Ok(kept) => kept,
            Err(ReadError::Timeout) => {
                self.conn
                    .write(b"421 4.4.2 Timeout exceeded during BDAT, closing connection\r\n");
                return Flow::Close;
            }
            Err(_) => return Flow::Close,
        };
        if !kept {
            self.tx = None;
            return self.refuse(552, "5.3.4", "Message size exceeds fixed maximum message size");
        }
        if !last {
            self.reply(250, "2.0.0", &format!("{size} octets received"));
            return Flow::Continue;
        }
        let body = self.tx.as_mut().and_then(|t| t.bdat.take()).unwrap_or_default();
        self.deliver(crate::mail::wire::crlf(body)).await
    }

    /// The trace headers of RFC 5321 §4.4, prepended once for all recipients.
    fn trace_headers(&self, tx: &Transaction, id: &str) -> String {
        // RFC 3848 (ESMTPS, ESMTPA, ESMTPSA) and RFC 6531 §3.7.3 (UTF8SMTP...).
        let mut proto = String::from(match (tx.smtputf8, self.esmtp) {
            (true, _) => "UTF8SMTP",
            (false, true) => "ESMTP",
            (false, false) => "SMTP",
        });
        if self.conn.is_tls() {
            proto.push('S');
        }
        if self.auth_user.is_some() {
            proto.push('A');
        }
        let tls = self
            .conn
            .tls_info()
            .map(|t| format!("\r\n\t(using {t})"))
            .unwrap_or_default();
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let for_clause = match tx.rcpts.as_slice() {
            [one] => format!("\r\n\tfor <{one}>"),
            _ => String::new(), // several recipients share one stored copy: name none
        };
        let date = mail_parser::DateTime::from_timestamp(now_secs()).to_rfc822();
        format!(
            "Return-Path: <{}>\r\nReceived: from {helo} ([{}]){tls}\r\n\tby {} (mailgate) with {proto} id {id}{for_clause};\r\n\t{date}\r\n",
            tx.mail_from,
            self.peer.ip(),
            self.shared.config.server.hostname,
        )
    }

    /// End of DATA/BDAT: the pipeline decides and the message is committed
    /// ([`crate::deliver::commit`]); 250 only once it is on disk.
    async fn deliver(&mut self, body: Vec<u8>) -> Flow {
        let Some(mut tx) = self.tx.take() else {
            return self.refuse(503, "5.5.1", "Need MAIL command first");
        };
        let id = crate::deliver::new_id();
        // RFC 6409 §8: a submission server may add what the user agent left out.
        let body = if self.submission || self.auth_user.is_some() {
            let fixes =
                crate::mail::headers::submission_fixes(&body, &self.shared.config.server.hostname, &id, now_secs());
            if fixes.is_empty() {
                body
            } else {
                crate::mail::edit_headers(&body, &fixes, &[])
            }
        } else {
            body
        };
        let trace = self.trace_headers(&tx, &id);
        let info = self.session_info();
        let envelope = crate::deliver::Envelope {
            id: &id,
            mail_from: &tx.mail_from,
            accounts: &tx.accounts,
            remote: &tx.remote,
            dsn: crate::queue::Dsn {
                env_id: tx.env_id.clone(),
                ret: tx.ret.clone(),
            },
            rcpts: &tx.rcpts,
            trace: &trace,
            notify_delivered: &tx.notify_delivered,
        };
        let ctx = self.ctx();
        let committed = crate::deliver::commit(
            &ctx,
            &self.shared.store,
            &self.shared.queue,
            &info,
            &mut tx.scope,
            envelope,
            body,
        )
        .await;
        match committed {
            Ok(_) => {
                self.junk = 0;
                self.reply(250, "2.0.0", &format!("Ok: queued as {id}"));
                Flow::Continue
            }
            Err(r) => self.refused(r),
        }
    }

    /// ETRN (RFC 1985): a relay domain's server asks for the mail held for it.
    async fn etrn(&mut self, name: &str) -> Flow {
        if self.helo.is_none() {
            return self.refuse(503, "5.5.1", "Send EHLO/HELO first");
        }
        if self.tx.is_some() {
            return self.refuse(503, "5.5.1", "ETRN not allowed in a mail transaction");
        }
        if self.junk() == Flow::Close {
            return Flow::Close;
        }
        let name = name.trim();
        let domain = name.trim_start_matches('@').to_ascii_lowercase();
        // Only a domain whose mail we hold for it may ask (RFC 1985 §5: 459).
        let ours = self.shared.config.relay_for(&domain).is_some_and(|r| r.etrn);
        if name.starts_with('#') || !ours {
            let shown: String = name.chars().filter(|c| !c.is_control()).take(255).collect();
            return self.refuse(459, "4.7.1", &format!("<{shown}>: not a domain we hold mail for"));
        }
        match crate::queue::etrn(&*self.shared.store, &self.shared.queue, self.peer.ip(), name) {
            Ok(crate::queue::Etrn::Started(n)) => {
                tracing::info!(domain, messages = n, "ETRN");
                self.reply(250, "2.0.0", &format!("Queuing for node <{domain}> started"));
                Flow::Continue
            }
            Ok(crate::queue::Etrn::Nothing) => {
                self.reply(251, "2.0.0", &format!("No messages waiting for node <{domain}>"));
                Flow::Continue
            }
            Ok(crate::queue::Etrn::TooSoon) => {
                self.refuse(458, "4.7.0", "ETRN too soon for this node, try again later")
            }
            Err(e) => {
                tracing::error!("ETRN {domain}: {e}");
                self.refuse(458, "4.3.0", &format!("Unable to queue messages for node <{domain}>"))
            }
        }
    }

    /// STARTTLS (RFC 3207): reply, drop anything pipelined behind the command, handshake, and
    /// forget everything learnt before (the client must EHLO again).
    async fn starttls(&mut self) -> Flow {
        let Some(acceptor) = self.shared.tls.clone() else {
            return self.refuse(454, "4.7.0", "TLS not available");
        };
        if self.conn.is_tls() {
            return self.refuse(503, "5.5.1", "TLS already active");
        }
        if self.tls_mode != TlsMode::Starttls {
            return self.refuse(454, "4.7.0", "TLS not available on this port");
        }
        if !self.conn.buffered().is_empty() {
            tracing::warn!(peer = %self.peer, "plaintext pipelined after STARTTLS discarded");
        }
        self.reply(220, "2.0.0", "Ready to start TLS");
        if let Err(e) = self.conn.start_tls(&acceptor).await {
            tracing::debug!(peer = %self.peer, "TLS handshake failed: {e}");
            return Flow::Close;
        }
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.auth_user = None;
        Flow::Continue
    }
}
