//! One inbound SMTP session (RFC 5321), from greeting to QUIT.
//!
//! Commands are parsed by `smtp-proto`; the state (greeted, transaction, TLS) and every reply
//! are ours. Each protocol error maps to one reply in [`Session::parse_error`]. A message is
//! answered 250 only after the store has flushed it (see [`crate::store::MailStore::sync`]).

use super::data::{DataReceiver, Progress};
use crate::config::TlsMode;
use crate::context::Shared;
use crate::hooks::contract::Session as SessionInfo;
use crate::hooks::{PolicySet, Stage};
use crate::mail::address::Address;
use crate::mail::edit_headers_into;
use crate::net::Flow;
use crate::net::conn::{Conn, Line, ReadError};
use crate::pipeline::{Context, Destination, Refusal, Scope};
use crate::store::now_secs;
use smtp_proto::{
    Error as ProtoError, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8, MailFrom,
    RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS, RcptTo, Request,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

static QUEUE_IDS: AtomicU64 = AtomicU64::new(0);

fn queue_id() -> String {
    let n = QUEUE_IDS.fetch_add(1, Ordering::Relaxed);
    format!("{:08X}{:06X}", now_secs() as u32, n & 0xFF_FFFF)
}

impl Session {
    pub fn new(shared: Arc<Shared>, conn: Conn, peer: SocketAddr, tls_mode: TlsMode) -> Session {
        let policies = shared.engine.current();
        Session {
            shared,
            conn,
            peer,
            tls_mode,
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
            may_relay: self.shared.config.smtp.may_relay(self.peer.ip()),
        }
    }

    fn session_info(&self) -> SessionInfo {
        SessionInfo {
            client_ip: self.peer.ip().to_string(),
            helo: self.helo.clone(),
            tls: self.conn.is_tls(),
            auth_user: None,
            listener: "smtp".into(),
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
            Request::Auth { .. } => self.refuse(503, "5.5.1", "AUTH is not offered on this port"),
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

    fn tls_available(&self) -> bool {
        self.shared.tls.is_some() && self.tls_mode == TlsMode::Starttls && !self.conn.is_tls()
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
        let address = from.address.trim().to_string();
        if !address.is_empty() {
            if Address::parse(&address).is_err() {
                return self.refuse(501, "5.1.7", "Bad sender address syntax");
            }
            if !address.is_ascii() && !smtputf8 {
                return self.refuse(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
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
            Ok(Destination::Local(accounts)) => {
                for a in accounts {
                    if !tx.accounts.contains(&a) {
                        tx.accounts.push(a);
                    }
                }
            }
            Ok(Destination::Remote(hop)) => tx.remote.push(crate::queue::Outgoing {
                etrn: given
                    .rsplit_once('@')
                    .and_then(|(_, d)| self.shared.config.relay_for(&d.to_ascii_lowercase()))
                    .is_some_and(|r| r.etrn),
                address: given.clone(),
                hop,
                notify,
                // The codec gives the address without its type; RFC 3461 ORCPT has one.
                orcpt: to
                    .orcpt
                    .map(|o| if o.contains(';') { o } else { format!("rfc822;{o}") }),
            }),
            Err(r) => return self.refused(r),
        }
        tx.rcpts.push(given);
        self.reply(250, "2.1.5", "Ok");
        Flow::Continue
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
        let read = self
            .conn
            .read_with(timeout, |buf| match receiver.feed(buf) {
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
        let mut proto = String::new();
        if tx.smtputf8 {
            proto.push_str("UTF8");
        }
        proto.push_str(if self.esmtp { "ESMTP" } else { "SMTP" });
        if self.conn.is_tls() {
            proto.push('S');
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

    /// End of DATA/BDAT: the pipeline decides (data stage, thresholds, header edits,
    /// `on_deliver` per recipient), then the store; 250 only once it is on disk.
    async fn deliver(&mut self, body: Vec<u8>) -> Flow {
        let Some(mut tx) = self.tx.take() else {
            return self.refuse(503, "5.5.1", "Need MAIL command first");
        };
        let id = queue_id();
        let info = self.session_info();
        let ctx = self.ctx();
        let decided = match ctx.data(&info, &mut tx.scope, body).await {
            Ok(accepted) if accepted.discard => Ok((accepted, Vec::new())),
            Ok(accepted) => match ctx.deliveries(&info, &mut tx.scope, &accepted, &tx.accounts).await {
                Ok(ds) => Ok((accepted, ds)),
                Err(r) => Err(r),
            },
            Err(r) => Err(r),
        };
        let (accepted, deliveries) = match decided {
            Ok(d) => d,
            Err(r) => {
                tracing::info!(id, reply = r.line(), "refused at end of data");
                return self.refused(r);
            }
        };
        let score = accepted.score;
        if accepted.discard {
            tracing::info!(id, from = %tx.mail_from, "discarded by policy");
            self.reply(250, "2.0.0", &format!("Ok: queued as {id}"));
            return Flow::Continue;
        }
        let mut raw = self.trace_headers(&tx, &id).into_bytes();
        raw.reserve(accepted.raw.len() + 512);
        edit_headers_into(&mut raw, &accepted.raw, &accepted.add_headers, &accepted.remove_headers);
        drop(accepted.raw);
        if !tx.remote.is_empty() {
            // Queued without our Return-Path: that field is the final delivery's to add
            // (RFC 5321 §4.4). Quarantined mail is held until `queue release`.
            let queued = memchr::memmem::find(&raw, b"\r\n").map_or(&raw[..], |i| &raw[i + 2..]);
            let store = &self.shared.store;
            let enqueued = {
                let _turn = store.write_turn().await;
                let dsn = crate::queue::Dsn {
                    env_id: tx.env_id.clone(),
                    ret: tx.ret.clone(),
                };
                crate::queue::enqueue(&**store, queued, &tx.mail_from, &tx.remote, accepted.quarantine, dsn)
            };
            if let Err(e) = enqueued {
                tracing::error!(id, "queueing failed: {e}");
                return self.refuse(451, "4.3.0", "Temporary storage failure, try again later");
            }
        }
        // The local copies, then one flush for them and the queue entry.
        match crate::deliver::store_local(&self.shared.store, &raw, &deliveries).await {
            Ok(n) => {
                if !tx.remote.is_empty() {
                    self.shared.queue.wake();
                }
                tracing::info!(id, from = %tx.mail_from, rcpts = ?tx.rcpts, mailboxes = n, score, quarantine = accepted.quarantine, "delivered");
                self.junk = 0;
                self.reply(250, "2.0.0", &format!("Ok: queued as {id}"));
                Flow::Continue
            }
            Err(e) => {
                tracing::error!(id, "delivery failed: {e}");
                self.refuse(451, "4.3.0", "Temporary storage failure, try again later")
            }
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
        Flow::Continue
    }
}
