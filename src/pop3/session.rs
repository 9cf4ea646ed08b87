//! One POP3 session (RFC 1939) with CAPA (RFC 2449), STLS (RFC 2595), SASL PLAIN and LOGIN
//! (RFC 5034) and response codes (RFC 2449, RFC 3206).
//!
//! AUTHORIZATION → TRANSACTION → UPDATE. The maildrop is a snapshot of INBOX taken at login:
//! message numbers never change during the session. DELE only marks; QUIT in TRANSACTION
//! removes the marked messages, waits until that is on disk, and only then answers +OK. A
//! dropped connection, a timeout or a failed update deletes nothing.

use crate::auth::{self, Outcome};
use crate::config::TlsMode;
use crate::context::Shared;
use crate::hooks::FetchView;
use crate::net::Flow;
use crate::net::conn::{Conn, Line, ReadError};
use crate::store::locks::MaildropLock;
use crate::store::{BlobId, MailboxId};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

struct Msg {
    uid: u32,
    blob: BlobId,
    size: u64,
    /// RETR'd in this session: marked \Seen at QUIT (as Dovecot does).
    retrieved: bool,
}

struct Maildrop {
    account: String,
    mailbox: MailboxId,
    uidvalidity: u32,
    msgs: Vec<Msg>,
    deleted: Vec<bool>,
    _lock: MaildropLock,
}

enum State {
    Authorization { user: Option<String> },
    Transaction(Maildrop),
}

pub struct Session {
    shared: Arc<Shared>,
    conn: Conn,
    peer: SocketAddr,
    tls_mode: TlsMode,
    state: State,
    /// The policy set this session started with.
    policies: Arc<crate::hooks::PolicySet>,
    /// Error answers so far (`max_bad_commands` ends the session).
    bad: u32,
}

const PLAINTEXT_REFUSED: &str =
    "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections; use STLS\r\n";

/// Writes `body` as a multi-line response body: CRLF line endings, leading dots doubled,
/// terminated by `.CRLF` (RFC 1939 §3).
fn write_stuffed(out: &mut Vec<u8>, body: &[u8]) {
    out.reserve(body.len() + body.len() / 64 + 5);
    let mut rest = body;
    while !rest.is_empty() {
        // One line per step, copied whole (memchr finds the ends fast).
        if rest[0] == b'.' {
            out.push(b'.');
        }
        match memchr::memchr(b'\n', rest) {
            Some(i) => {
                let line = &rest[..i];
                out.extend_from_slice(line);
                if line.last() != Some(&b'\r') {
                    out.push(b'\r'); // bare LF in storage: send CRLF anyway
                }
                out.push(b'\n');
                rest = &rest[i + 1..];
            }
            None => {
                out.extend_from_slice(rest);
                out.extend_from_slice(b"\r\n");
                rest = &[];
            }
        }
    }
    out.extend_from_slice(b".\r\n");
}

/// The header block (through the blank line) and the first `lines` body lines.
fn top(raw: &[u8], lines: usize) -> &[u8] {
    let body_start = memchr::memmem::find(raw, b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(raw.len());
    let mut end = body_start;
    for _ in 0..lines {
        match memchr::memchr(b'\n', &raw[end..]) {
            Some(i) => end += i + 1,
            None => {
                end = raw.len();
                break;
            }
        }
    }
    &raw[..end]
}

impl Session {
    pub fn new(shared: Arc<Shared>, conn: Conn, peer: SocketAddr, tls_mode: TlsMode) -> Session {
        let policies = shared.engine.current();
        Session {
            policies,
            bad: 0,
            shared,
            conn,
            peer,
            tls_mode,
            state: State::Authorization { user: None },
        }
    }

    /// `+OK`, then the text after a space when there is one (RFC 2449: `status [SP text]`).
    fn ok(&mut self, text: &str) {
        let line = if text.is_empty() {
            "+OK\r\n".to_string()
        } else {
            format!("+OK {text}\r\n")
        };
        self.conn.write(line.as_bytes());
    }

    fn err(&mut self, text: &str) {
        self.bad += 1;
        self.conn.write(format!("-ERR {text}\r\n").as_bytes());
    }

    /// Serves the session. `permit` (the connection slot) is released before the socket closes.
    pub async fn run<P>(mut self, permit: P) {
        self.ok("mailgate POP3 server ready");
        let mut shutdown = self.shared.shutdown.clone();
        let cfg = self.shared.config.pop3.clone();
        loop {
            let line = tokio::select! {
                r = self.conn.read_line(cfg.max_line_length, Duration::from_secs(cfg.idle_timeout_secs)) => r,
                _ = shutdown.changed() => {
                    self.err("[SYS/TEMP] Server shutting down; nothing was deleted");
                    break;
                }
            };
            let flow = match line {
                Ok(Line::Ok(bytes)) => self.command(&String::from_utf8_lossy(&bytes)).await,
                Ok(Line::TooLong) => {
                    self.err("Line too long");
                    Flow::Continue
                }
                Err(ReadError::Timeout) => {
                    self.err("Autologout; idle for too long (nothing was deleted)");
                    break;
                }
                Err(_) => break, // vanished: no UPDATE state, nothing deleted
            };
            if flow == Flow::Close {
                break;
            }
            if self.bad >= cfg.max_bad_commands {
                // Nothing is deleted: the session never reaches the UPDATE state.
                self.conn.write(b"-ERR Too many bad commands, closing connection\r\n");
                break;
            }
        }
        drop(permit);
        // The maildrop lock goes before the connection does: a client that sees the close
        // (or the QUIT reply, flushed by it) and logs in again at once, here or on another
        // node, must find the maildrop free.
        self.state = State::Authorization { user: None };
        self.conn.close().await;
    }

    async fn command(&mut self, line: &str) -> Flow {
        use super::command::Command as C;
        let cmd = match super::command::parse(line) {
            Ok(c) => c,
            Err(why) => {
                self.err(&why);
                return Flow::Continue;
            }
        };
        let authorization = matches!(self.state, State::Authorization { .. });
        match cmd {
            C::Capa => self.capa(),
            C::Quit => return self.quit().await,
            C::User(name) if authorization => self.user(&name),
            C::Pass(password) if authorization => self.pass(&password).await,
            C::Auth { mechanism, initial } if authorization => self.auth(mechanism, initial).await,
            C::Stls if authorization => return self.stls().await,
            C::Apop if authorization => {
                self.err("APOP is not supported (passwords are stored hashed); use USER/PASS or AUTH over TLS")
            }
            C::User(_) | C::Pass(_) | C::Auth { .. } | C::Stls | C::Apop => self.err("Already logged in"),
            C::Unknown(_) => self.err("Unknown command"),
            _ if authorization => self.err("Not logged in yet"),
            C::Stat => self.stat(),
            C::List(n) => self.list(n),
            C::Uidl(n) => self.uidl(n),
            C::Retr(n) => self.retr(n).await,
            C::Top(n, lines) => self.top(n, lines).await,
            C::Dele(n) => self.dele(n),
            C::Noop => self.ok(""),
            C::Rset => self.rset(),
        }
        Flow::Continue
    }

    fn capa(&mut self) {
        let mut caps = vec!["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"];
        if matches!(self.state, State::Authorization { .. }) {
            caps.extend(["USER", "SASL PLAIN LOGIN"]);
            if self.stls_available() {
                caps.push("STLS");
            }
        }
        caps.push("IMPLEMENTATION mailgate");
        let mut out = String::from("+OK Capability list follows\r\n");
        for c in caps {
            out.push_str(c);
            out.push_str("\r\n");
        }
        out.push_str(".\r\n");
        self.conn.write(out.as_bytes());
    }

    fn stls_available(&self) -> bool {
        self.shared.tls.is_some() && self.tls_mode == TlsMode::Starttls && !self.conn.is_tls()
    }

    fn plaintext_ok(&self) -> bool {
        self.shared.auth.plaintext_allowed(self.conn.is_tls(), self.peer.ip())
    }

    fn user(&mut self, name: &str) {
        if !self.plaintext_ok() {
            self.conn.write(PLAINTEXT_REFUSED.as_bytes());
            return;
        }
        self.state = State::Authorization {
            user: Some(name.to_string()),
        };
        self.ok("Send PASS");
    }

    async fn pass(&mut self, args: &str) {
        if !self.plaintext_ok() {
            self.conn.write(PLAINTEXT_REFUSED.as_bytes());
            return;
        }
        let State::Authorization { user: Some(user) } = &self.state else {
            return self.err("Send USER first");
        };
        let user = user.clone();
        self.state = State::Authorization { user: None };
        self.login(&user, args).await;
    }

    /// AUTH (RFC 5034): PLAIN or LOGIN, with an optional initial response.
    async fn auth(&mut self, mechanism: Option<String>, initial: Option<String>) {
        let Some(mech) = mechanism else {
            self.conn.write(b"+OK Mechanisms follow\r\nPLAIN\r\nLOGIN\r\n.\r\n");
            return;
        };
        if !matches!(mech.as_str(), "PLAIN" | "LOGIN") {
            return self.err("Unsupported authentication mechanism");
        }
        if !self.plaintext_ok() {
            self.conn.write(PLAINTEXT_REFUSED.as_bytes());
            return;
        }
        let creds = if mech == "PLAIN" {
            let Some(resp) = self.sasl_response(initial, "").await else {
                return;
            };
            match auth::sasl_plain(&resp) {
                Some(c) => c,
                None => return self.err("[AUTH] Invalid SASL PLAIN response"),
            }
        } else {
            let Some(user) = self.sasl_response(initial, "VXNlcm5hbWU6").await else {
                return;
            };
            let Some(pass) = self.sasl_response(None, "UGFzc3dvcmQ6").await else {
                return;
            };
            match auth::sasl_login(&user, &pass) {
                Some(c) => c,
                None => return self.err("[AUTH] Invalid SASL LOGIN response"),
            }
        };
        self.login(&creds.0, &creds.1).await;
    }

    /// The client's next SASL response: the initial one if given (`=` is empty), else read
    /// after a `+ challenge`. `None` (after replying) on cancel or a dropped line.
    async fn sasl_response(&mut self, initial: Option<String>, challenge: &str) -> Option<String> {
        if let Some(i) = initial {
            return Some(if i == "=" { String::new() } else { i });
        }
        self.conn.write(format!("+ {challenge}\r\n").as_bytes());
        let cfg = &self.shared.config.pop3;
        let line = self
            .conn
            .read_line(cfg.max_line_length, Duration::from_secs(cfg.idle_timeout_secs))
            .await;
        match line {
            Ok(Line::Ok(b)) if b == b"*" => {
                self.err("Authentication cancelled");
                None
            }
            Ok(Line::Ok(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
            _ => {
                self.err("[AUTH] Authentication failed");
                None
            }
        }
    }

    async fn login(&mut self, user: &str, password: &str) {
        let account = match self.shared.auth.login(self.peer.ip(), user, password).await {
            Outcome::Ok(a) => a,
            Outcome::Failed => return self.err("[AUTH] Authentication failed"),
            Outcome::Throttled => return self.err("[SYS/TEMP] Too many failed logins from your address; try later"),
            Outcome::TempFail => return self.err("[SYS/TEMP] Temporary failure, try again later"),
        };
        let lock = match self.shared.store.lock_maildrop(&account) {
            Ok(Some(lock)) => lock,
            Ok(None) => return self.err("[IN-USE] Mailbox is locked by another POP3 session"),
            Err(e) => {
                tracing::error!(account, "taking the maildrop lock: {e}");
                return self.err("[SYS/TEMP] Cannot open the mailbox; try later");
            }
        };
        match self.load_maildrop(&account, lock) {
            Ok(drop) => {
                let n = drop.msgs.len();
                self.state = State::Transaction(drop);
                tracing::info!(peer = %self.peer, account, "POP3 login");
                self.ok(&format!("Logged in, {n} messages"));
            }
            Err(e) => {
                tracing::error!(account, "loading maildrop: {e}");
                self.err("[SYS/TEMP] Cannot open the mailbox; try later");
            }
        }
    }

    fn load_maildrop(&self, account: &str, lock: MaildropLock) -> crate::store::Result<Maildrop> {
        let store = &self.shared.store;
        let inbox = store
            .mailbox(account, "INBOX")?
            .ok_or_else(|| crate::store::StoreError::NotFound("INBOX".into()))?;
        let msgs: Vec<Msg> = store
            .messages(inbox.id)?
            .into_iter()
            .map(|m| Msg {
                uid: m.uid,
                blob: m.meta.blob,
                size: m.meta.size,
                retrieved: false,
            })
            .collect();
        Ok(Maildrop {
            account: account.to_string(),
            mailbox: inbox.id,
            uidvalidity: inbox.uidvalidity,
            deleted: vec![false; msgs.len()],
            msgs,
            _lock: lock,
        })
    }

    fn maildrop(&mut self) -> &mut Maildrop {
        match &mut self.state {
            State::Transaction(d) => d,
            State::Authorization { .. } => unreachable!("only called in TRANSACTION"),
        }
    }

    /// Resolves a message number to an index, or replies with the error.
    fn msg_index(&mut self, n: usize) -> Option<usize> {
        let d = self.maildrop();
        let result = match n {
            n if n >= 1 && n <= d.msgs.len() && d.deleted[n - 1] => Err(format!("Message {n} already deleted")),
            n if n >= 1 && n <= d.msgs.len() => Ok(n - 1),
            n => Err(format!("No such message {n}")),
        };
        match result {
            Ok(i) => Some(i),
            Err(e) => {
                self.err(&e);
                None
            }
        }
    }

    fn stat(&mut self) {
        let d = self.maildrop();
        let live = d.msgs.iter().zip(&d.deleted).filter(|(_, del)| !**del);
        let (n, size) = live.fold((0, 0u64), |(n, s), (m, _)| (n + 1, s + m.size));
        self.ok(&format!("{n} {size}"));
    }

    /// LIST and UIDL share their shape: one message, or all undeleted ones.
    fn listing(&mut self, one: Option<usize>, item: impl Fn(&Maildrop, usize) -> String) {
        if let Some(n) = one {
            if let Some(i) = self.msg_index(n) {
                let text = format!("{} {}", i + 1, item(self.maildrop(), i));
                self.ok(&text);
            }
            return;
        }
        let d = self.maildrop();
        let mut out = String::from("+OK\r\n");
        for i in (0..d.msgs.len()).filter(|&i| !d.deleted[i]) {
            out.push_str(&format!("{} {}\r\n", i + 1, item(d, i)));
        }
        out.push_str(".\r\n");
        self.conn.write(out.as_bytes());
    }

    fn list(&mut self, one: Option<usize>) {
        self.listing(one, |d, i| d.msgs[i].size.to_string());
    }

    fn uidl(&mut self, one: Option<usize>) {
        // Unique and stable across sessions and restarts: UIDVALIDITY and UID (RFC 1939 §7).
        self.listing(one, |d, i| format!("{:08x}{:08x}", d.uidvalidity, d.msgs[i].uid));
    }

    /// The message as the client may see it: `on_fetch` policies can hide it or add headers.
    async fn body(&mut self, i: usize) -> Option<Vec<u8>> {
        let raw = self.stored_body(i)?;
        let account = self.maildrop().account.clone();
        let session = crate::hooks::contract::Session {
            client_ip: self.peer.ip().to_string(),
            helo: None,
            tls: self.conn.is_tls(),
            auth_user: Some(account.clone()),
            listener: "pop3".into(),
        };
        match crate::hooks::on_fetch(&self.policies, session, &account, "INBOX", &raw).await {
            FetchView::Unchanged => Some(raw),
            FetchView::Edited(b) => Some(b),
            FetchView::Hidden => {
                self.err("Message unavailable (withheld by policy)");
                None
            }
            FetchView::Later => {
                self.err("[SYS/TEMP] Message unavailable now; try later");
                None
            }
        }
    }

    fn stored_body(&mut self, i: usize) -> Option<Vec<u8>> {
        let blob = self.maildrop().msgs[i].blob;
        match self.shared.store.blob(&blob) {
            Ok(Some(b)) => Some(b),
            Ok(None) => {
                self.err("[SYS/TEMP] Message vanished from the store");
                None
            }
            Err(e) => {
                tracing::error!("reading message: {e}");
                self.err("[SYS/TEMP] Cannot read the message; try later");
                None
            }
        }
    }

    async fn retr(&mut self, n: usize) {
        let Some(i) = self.msg_index(n) else { return };
        let Some(raw) = self.body(i).await else { return };
        self.maildrop().msgs[i].retrieved = true;
        let status = format!("+OK {} octets\r\n", raw.len());
        self.conn.write_with(|out| {
            out.extend_from_slice(status.as_bytes());
            write_stuffed(out, &raw);
        });
    }

    async fn top(&mut self, n: usize, lines: usize) {
        let Some(i) = self.msg_index(n) else { return };
        let Some(raw) = self.body(i).await else { return };
        self.conn.write_with(|out| {
            out.extend_from_slice(b"+OK\r\n");
            write_stuffed(out, top(&raw, lines));
        });
    }

    fn dele(&mut self, n: usize) {
        let Some(i) = self.msg_index(n) else { return };
        self.maildrop().deleted[i] = true;
        self.ok(&format!("Message {} deleted", i + 1));
    }

    fn rset(&mut self) {
        let d = self.maildrop();
        d.deleted.iter_mut().for_each(|x| *x = false);
        let n = d.msgs.len();
        self.ok(&format!("{n} messages"));
    }

    /// QUIT: in TRANSACTION this is the UPDATE state.
    async fn quit(&mut self) -> Flow {
        let (mailbox, uids, seen) = match &self.state {
            State::Transaction(d) => {
                let pick = |want_deleted: bool| -> Vec<u32> {
                    let all = d.msgs.iter().zip(&d.deleted);
                    let marked = all.filter(|(m, del)| **del == want_deleted && (want_deleted || m.retrieved));
                    marked.map(|(m, _)| m.uid).collect()
                };
                (d.mailbox, pick(true), pick(false))
            }
            State::Authorization { .. } => (0, Vec::new(), Vec::new()),
        };
        if uids.is_empty() && seen.is_empty() {
            self.ok("Bye");
            return Flow::Close;
        }
        let store = self.shared.store.clone();
        let result = store
            .add_flags(mailbox, &seen, crate::store::Flags(crate::store::Flags::SEEN))
            .and_then(|_| store.expunge(mailbox, &uids));
        let result = match result {
            Ok(removed) => store.sync().await.map(|_| removed.len()),
            Err(e) => Err(e),
        };
        match result {
            Ok(n) => self.ok(&format!("Bye, {n} messages deleted")),
            Err(e) => {
                tracing::error!("POP3 update failed: {e}");
                self.err("[SYS/TEMP] Could not delete the messages; they are kept");
            }
        }
        Flow::Close
    }

    async fn stls(&mut self) -> Flow {
        let Some(acceptor) = self.shared.tls.clone() else {
            self.err("TLS not available");
            return Flow::Continue;
        };
        if !self.stls_available() {
            self.err("TLS already active or not offered on this port");
            return Flow::Continue;
        }
        self.ok("Begin TLS negotiation");
        if let Err(e) = self.conn.start_tls(&acceptor).await {
            tracing::debug!(peer = %self.peer, "TLS handshake failed: {e}");
            return Flow::Close;
        }
        self.state = State::Authorization { user: None };
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffing_and_line_endings() {
        let mut out = Vec::new();
        write_stuffed(&mut out, b".a\r\nb\n..c");
        assert_eq!(out, b"..a\r\nb\r\n...c\r\n.\r\n");
    }

    #[test]
    fn top_lines() {
        let raw = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n";
        assert_eq!(top(raw, 0), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(top(raw, 2), b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n");
        assert_eq!(top(raw, 9), &raw[..]);
    }
}
