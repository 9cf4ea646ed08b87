//! One IMAP session: not authenticated → authenticated → selected → logout.
//!
//! The selected mailbox is a snapshot (`msgs`, in sequence-number order). Changes made by
//! other sessions, SMTP delivery or POP3 reach it only through [`Session::sync`], which runs
//! where RFC 9051 §7.5.2 lets a server send EXPUNGE: after any command but FETCH, STORE and
//! SEARCH (their UID forms are fine), and during IDLE. Until then sequence numbers stay put.

use super::command::{Cmd, Command, FetchAtt, ListOptions, SearchKey, SectionKind, SeqSet, StatusItem};
use super::fetch::{self, write_mailbox};
use super::mime;
use super::parser;
use super::search;
use crate::auth::{self, Outcome};
use crate::config::TlsMode;
use crate::context::Shared;
use crate::hooks::FetchView;
use crate::net::conn::{Conn, Line, ReadError};
use crate::spam::LearnEvent;
use crate::store::{FlagOp, Flags, MailboxMeta, MessageMeta, StoreError, Target};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const DELIM: char = '/';

/// Output buffered during a long FETCH before it is written out.
const FLUSH_AT: usize = 128 * 1024;

struct Entry {
    uid: u32,
    meta: MessageMeta,
}

struct Selected {
    mailbox: MailboxMeta,
    read_only: bool,
    msgs: Vec<Entry>,
    /// Highest MODSEQ this snapshot reflects.
    seen_modseq: u64,
    /// A change was seen but could not be reported yet (EXPUNGE not allowed at that point).
    pending: bool,
    watch: tokio::sync::watch::Receiver<u64>,
    /// SEARCH RETURN (SAVE) result, as uids.
    saved: Vec<u32>,
    keywords: Vec<String>,
}

impl Selected {
    fn seq_of_uid(&self, uid: u32) -> Option<usize> {
        self.msgs.binary_search_by_key(&uid, |e| e.uid).ok()
    }

    fn max_uid(&self) -> u32 {
        self.msgs.last().map(|e| e.uid).unwrap_or(0)
    }

    /// Indices of the messages a set names (sequence numbers or uids).
    fn resolve(&self, set: &SeqSet, uid: bool) -> Result<Vec<usize>, String> {
        let n = self.msgs.len() as u32;
        match set {
            SeqSet::Saved => Ok(self.saved.iter().filter_map(|&u| self.seq_of_uid(u)).collect()),
            SeqSet::Ranges(r) if uid => {
                let max = self.max_uid();
                Ok((0..self.msgs.len())
                    .filter(|&i| SeqSet::contains(r, self.msgs[i].uid, max))
                    .collect())
            }
            SeqSet::Ranges(r) => {
                for &(a, b) in r {
                    for x in [a, b] {
                        if x != super::command::STAR && x > n {
                            return Err(format!("message {x} does not exist (mailbox has {n})"));
                        }
                    }
                    if n == 0 {
                        return Err("the mailbox is empty".into());
                    }
                }
                Ok((1..=n)
                    .filter(|&s| SeqSet::contains(r, s, n))
                    .map(|s| s as usize - 1)
                    .collect())
            }
        }
    }
}

enum Flow {
    Continue,
    Close,
}

pub struct Session {
    shared: Arc<Shared>,
    conn: Conn,
    peer: SocketAddr,
    tls_mode: TlsMode,
    policies: Arc<crate::hooks::PolicySet>,
    user: Option<String>,
    selected: Option<Selected>,
    /// ENABLE IMAP4rev2: UTF-8 names, no RECENT.
    rev2: bool,
    /// CONDSTORE enabled (RFC 7162 §3.1): MODSEQ in every FETCH with FLAGS.
    condstore: bool,
    /// A BYE went out (the selected mailbox was deleted under us): close after this command.
    bye: bool,
    cfg: crate::config::Imap,
}

/// A command's tagged reply.
type Reply = Result<String, Fail>;

enum Fail {
    No(String),
    Bad(String),
}

fn no<T>(s: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::No(s.into()))
}

fn bad<T>(s: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Bad(s.into()))
}

fn store_fail(e: StoreError) -> Fail {
    match e {
        StoreError::NotFound(s) => Fail::No(format!("[NONEXISTENT] {s} not found")),
        StoreError::Exists(s) => Fail::No(format!("[ALREADYEXISTS] {s} already exists")),
        StoreError::Invalid(s) => Fail::No(format!("[CANNOT] {s}")),
        StoreError::Backend(s) => {
            tracing::error!("IMAP store error: {s}");
            Fail::No("[SERVERBUG] Internal error; try again later".into())
        }
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        store_fail(e)
    }
}

/// Splits user flags into system flag bits and keywords; `Err` for flags a client may not set.
fn parse_flags(list: &[String]) -> Result<(Flags, Vec<String>), Fail> {
    let mut bits = 0;
    let mut kw = Vec::new();
    for f in list {
        if let Some(b) = Flags::bit_of(f) {
            bits |= b;
        } else if f.starts_with('\\') {
            if !f.eq_ignore_ascii_case("\\Recent") {
                return bad(format!("{f} is not a flag a client can set"));
            }
        } else {
            kw.push(f.clone());
        }
    }
    Ok((Flags(bits), kw))
}

fn flag_list(meta: &MessageMeta) -> String {
    let mut v: Vec<&str> = meta.flags.names();
    v.extend(meta.keywords.iter().map(String::as_str));
    format!("({})", v.join(" "))
}

/// Does `name` match a LIST pattern (`*` anything, `%` anything but the delimiter)?
fn pattern_matches(pat: &[char], name: &[char]) -> bool {
    match pat.first() {
        None => name.is_empty(),
        Some('*') => (0..=name.len()).any(|i| pattern_matches(&pat[1..], &name[i..])),
        Some('%') => {
            for i in 0..=name.len() {
                if pattern_matches(&pat[1..], &name[i..]) {
                    return true;
                }
                if i < name.len() && name[i] == DELIM {
                    return false;
                }
            }
            false
        }
        Some(&c) => name.first() == Some(&c) && pattern_matches(&pat[1..], &name[1..]),
    }
}

/// `INBOX` (any case) at the start of a name means the one INBOX.
fn canonical_inbox(name: &str) -> String {
    if name.len() >= 5 && name[..5].eq_ignore_ascii_case("INBOX") && (name.len() == 5 || name[5..].starts_with(DELIM)) {
        format!("INBOX{}", &name[5..])
    } else {
        name.to_string()
    }
}

fn list_match(pattern: &str, name: &str) -> bool {
    let pat: Vec<char> = canonical_inbox(pattern).chars().collect();
    let name: Vec<char> = name.chars().collect();
    pattern_matches(&pat, &name)
}

impl Session {
    pub fn new(shared: Arc<Shared>, conn: Conn, peer: SocketAddr, tls_mode: TlsMode) -> Session {
        let policies = shared.engine.current();
        let cfg = shared.config.imap.clone();
        Session {
            shared,
            conn,
            peer,
            tls_mode,
            policies,
            user: None,
            selected: None,
            rev2: false,
            condstore: false,
            bye: false,
            cfg,
        }
    }

    fn untagged(&mut self, text: &str) {
        self.conn.write(b"* ");
        self.conn.write(text.as_bytes());
        self.conn.write(b"\r\n");
    }

    fn starttls_available(&self) -> bool {
        self.shared.tls.is_some() && self.tls_mode == TlsMode::Starttls && !self.conn.is_tls()
    }

    fn plaintext_ok(&self) -> bool {
        self.shared.auth.plaintext_allowed(self.conn.is_tls(), self.peer.ip())
    }

    fn capabilities(&self) -> String {
        let mut caps = vec!["IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE"];
        if self.user.is_none() {
            if self.starttls_available() {
                caps.push("STARTTLS");
            }
            if self.plaintext_ok() {
                caps.push("AUTH=PLAIN");
            } else {
                caps.push("LOGINDISABLED");
            }
        } else {
            caps.extend([
                "NAMESPACE",
                "UIDPLUS",
                "MOVE",
                "CONDSTORE",
                "CHILDREN",
                "LIST-EXTENDED",
                "LIST-STATUS",
                "SPECIAL-USE",
                "ESEARCH",
                "SEARCHRES",
                "UNSELECT",
                "BINARY",
                "STATUS=SIZE",
            ]);
        }
        caps.join(" ")
    }

    fn utf8_names(&self) -> bool {
        self.rev2
    }

    /// A mailbox name from the client, in storage form (UTF-8, canonical INBOX).
    fn mailbox_arg(&self, name: &str) -> Result<String, Fail> {
        let name = if self.utf8_names() {
            name.to_string()
        } else {
            match super::mutf7::decode(name) {
                Some(n) => n,
                None => return bad("mailbox name is not valid modified UTF-7"),
            }
        };
        let name = canonical_inbox(name.trim_end_matches(DELIM));
        if name.is_empty() {
            return no("empty mailbox name");
        }
        if name.split(DELIM).any(str::is_empty) || name.chars().any(|c| c.is_control()) {
            return no("[CANNOT] invalid mailbox name");
        }
        Ok(name)
    }

    fn account(&self) -> &str {
        self.user.as_deref().unwrap_or("")
    }

    /// Serves the session. `permit` (the connection slot) is released before the socket closes.
    pub async fn run<P>(mut self, permit: P) {
        let greeting = format!("OK [CAPABILITY {}] mailgate IMAP ready", self.capabilities());
        self.untagged(&greeting);
        let mut shutdown = self.shared.shutdown.clone();
        loop {
            let input = tokio::select! {
                r = self.read_command() => r,
                _ = shutdown.changed() => {
                    self.untagged("BYE Server shutting down");
                    break;
                }
            };
            let buf = match input {
                Ok(Some(buf)) => buf,
                Ok(None) => continue,
                Err(ReadError::Timeout) => {
                    self.untagged("BYE Autologout; idle for too long");
                    break;
                }
                Err(_) => break,
            };
            let flow = match parser::parse(&buf) {
                Ok(cmd) => self.command(cmd).await,
                Err(e) => {
                    let tag = parser::tag_of(&buf).unwrap_or_else(|| "*".into());
                    // An unsupported charset is a NO with a response code (RFC 3501 §6.4.4).
                    let status = if e.starts_with("[BADCHARSET") { "NO" } else { "BAD" };
                    self.conn.write(format!("{tag} {status} {e}\r\n").as_bytes());
                    Flow::Continue
                }
            };
            if matches!(flow, Flow::Close) || self.bye {
                break;
            }
        }
        drop(permit);
        self.conn.close().await;
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.idle_timeout_secs)
    }

    /// Reads one command with its literals. `Ok(None)`: refused and answered already.
    async fn read_command(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        let mut buf = Vec::new();
        loop {
            let line = match self.conn.read_line(self.cfg.max_line_length, self.timeout()).await? {
                Line::Ok(l) => l,
                Line::TooLong => {
                    // The rest could be literal data we must not read as commands.
                    self.untagged("BYE Command line too long");
                    return Err(ReadError::Closed);
                }
            };
            buf.extend_from_slice(&line);
            let Some((n, sync)) = literal_suffix(&line) else {
                return Ok(Some(buf));
            };
            let is_append = append_command(&buf);
            let limit = if is_append {
                self.cfg.max_append_bytes
            } else {
                self.cfg.max_literal_bytes
            };
            if n > limit || buf.len() + n > self.cfg.max_append_bytes + self.cfg.max_line_length {
                let tag = parser::tag_of(&buf).unwrap_or_else(|| "*".into());
                if sync {
                    self.conn.write(
                        format!("{tag} NO [TOOBIG] Literal of {n} octets is larger than the limit of {limit}\r\n")
                            .as_bytes(),
                    );
                    return Ok(None);
                }
                // A non-synchronising literal is on its way: there is no telling where the
                // command ends without reading it, so the session ends.
                self.untagged(&format!(
                    "BYE [TOOBIG] Literal of {n} octets is larger than the limit of {limit}"
                ));
                return Err(ReadError::Closed);
            }
            buf.extend_from_slice(b"\r\n");
            if sync {
                self.conn.write(b"+ Ready for literal data\r\n");
            }
            // Send the continuation first: the ACK mode must be set after our last write.
            self.conn.flush().await?;
            self.conn.quickack();
            self.conn
                .read_exact_capped(n, &mut buf, usize::MAX, self.timeout())
                .await?;
        }
    }

    async fn command(&mut self, c: Command) -> Flow {
        let tag = c.tag.clone();
        let uid = c.uid;
        // EXPUNGE may not be sent during FETCH, STORE or SEARCH by sequence number.
        let expunge_ok = uid || !matches!(c.cmd, Cmd::Fetch { .. } | Cmd::Store { .. } | Cmd::Search { .. });
        let result = match (self.user.is_some(), self.selected.is_some(), c.cmd) {
            (_, _, Cmd::Capability) => {
                let caps = self.capabilities();
                self.untagged(&format!("CAPABILITY {caps}"));
                Ok("CAPABILITY completed".into())
            }
            (_, _, Cmd::Noop) => Ok("NOOP completed".into()),
            (_, _, Cmd::Logout) => {
                self.untagged("BYE Logging out");
                self.conn.write(format!("{tag} OK LOGOUT completed\r\n").as_bytes());
                return Flow::Close;
            }
            (_, _, Cmd::Id) => {
                self.untagged("ID (\"name\" \"mailgate\" \"version\" \"0.1\")");
                Ok("ID completed".into())
            }
            (false, _, Cmd::StartTls) => return self.starttls(&tag).await,
            (false, _, Cmd::Login { user, password }) => self.login(&user, &password).await,
            (false, _, Cmd::Authenticate { mechanism, initial }) => self.authenticate(&mechanism, initial).await,
            (true, _, Cmd::StartTls | Cmd::Login { .. } | Cmd::Authenticate { .. }) => bad("Already authenticated"),
            (false, _, _) => bad("Log in first (LOGIN or AUTHENTICATE)"),
            (true, _, Cmd::Enable(caps)) => Ok(self.enable(&caps)),
            (true, _, Cmd::Namespace) => {
                self.untagged("NAMESPACE ((\"\" \"/\")) NIL NIL");
                Ok("NAMESPACE completed".into())
            }
            (
                true,
                _,
                Cmd::Select {
                    mailbox,
                    read_only,
                    condstore,
                },
            ) => self.select(&mailbox, read_only, condstore),
            (true, _, Cmd::Create(m)) => self.create(&m),
            (true, _, Cmd::Delete(m)) => self.delete(&m),
            (true, _, Cmd::Rename(a, b)) => self.rename(&a, &b),
            (true, _, Cmd::Subscribe(m)) => self.subscribe(&m, true),
            (true, _, Cmd::Unsubscribe(m)) => self.subscribe(&m, false),
            (
                true,
                _,
                Cmd::List {
                    reference,
                    patterns,
                    options,
                },
            ) => self.list(&reference, &patterns, &options),
            (true, _, Cmd::Lsub { reference, pattern }) => self.lsub(&reference, &pattern),
            (true, _, Cmd::Status { mailbox, items }) => self.status(&mailbox, &items),
            (
                true,
                _,
                Cmd::Append {
                    mailbox,
                    flags,
                    date,
                    message,
                },
            ) => self.append(&mailbox, &flags, date, message).await,
            (true, _, Cmd::Idle) => return self.idle(&tag).await,
            (true, false, _) => bad("No mailbox selected"),
            (true, true, Cmd::Check) => Ok("CHECK completed".into()),
            (true, true, Cmd::Close) => self.close(true).await,
            (true, true, Cmd::Unselect) => self.close(false).await,
            (true, true, Cmd::Expunge(set)) => self.expunge(set.as_ref(), uid).await,
            (true, true, Cmd::Search { ret, key }) => self.search(&tag, ret.as_deref(), &key, uid),
            (
                true,
                true,
                Cmd::Fetch {
                    set,
                    atts,
                    changed_since,
                },
            ) => self.fetch(&set, atts, changed_since, uid).await,
            (
                true,
                true,
                Cmd::Store {
                    set,
                    op,
                    silent,
                    flags,
                    unchanged_since,
                },
            ) => self.store(&set, op, silent, &flags, unchanged_since, uid),
            (true, true, Cmd::Copy { set, mailbox }) => self.copy(&set, &mailbox, uid, false).await,
            (true, true, Cmd::Move { set, mailbox }) => self.copy(&set, &mailbox, uid, true).await,
        };
        if self.selected.is_some() {
            self.sync(expunge_ok);
        }
        match result {
            Ok(text) => self.conn.write(format!("{tag} OK {text}\r\n").as_bytes()),
            Err(Fail::No(t)) => self.conn.write(format!("{tag} NO {t}\r\n").as_bytes()),
            Err(Fail::Bad(t)) => self.conn.write(format!("{tag} BAD {t}\r\n").as_bytes()),
        }
        Flow::Continue
    }

    async fn starttls(&mut self, tag: &str) -> Flow {
        let Some(acceptor) = self.shared.tls.clone().filter(|_| self.starttls_available()) else {
            self.conn
                .write(format!("{tag} BAD STARTTLS is not available here\r\n").as_bytes());
            return Flow::Continue;
        };
        self.conn
            .write(format!("{tag} OK Begin TLS negotiation now\r\n").as_bytes());
        if let Err(e) = self.conn.start_tls(&acceptor).await {
            tracing::debug!(peer = %self.peer, "IMAP TLS handshake failed: {e}");
            return Flow::Close;
        }
        Flow::Continue
    }

    async fn login(&mut self, user: &str, password: &str) -> Reply {
        if !self.plaintext_ok() {
            return no("[PRIVACYREQUIRED] Plaintext login is disallowed on an unencrypted connection; use STARTTLS");
        }
        self.finish_login(user, password).await
    }

    async fn finish_login(&mut self, user: &str, password: &str) -> Reply {
        match self.shared.auth.login(self.peer.ip(), user, password).await {
            Outcome::Ok(account) => {
                tracing::info!(peer = %self.peer, account, "IMAP login");
                self.user = Some(account);
                Ok(format!("[CAPABILITY {}] Logged in", self.capabilities()))
            }
            Outcome::Failed => no("[AUTHENTICATIONFAILED] Authentication failed"),
            Outcome::Throttled => no("[UNAVAILABLE] Too many failed logins from your address; try later"),
            Outcome::TempFail => no("[UNAVAILABLE] Temporary failure; try again later"),
        }
    }

    async fn authenticate(&mut self, mechanism: &str, initial: Option<String>) -> Reply {
        if mechanism != "PLAIN" {
            return no("[CANNOT] Unsupported mechanism; use PLAIN");
        }
        if !self.plaintext_ok() {
            return no("[PRIVACYREQUIRED] Plaintext authentication is disallowed without TLS; use STARTTLS");
        }
        let response = match initial {
            Some(i) if i == "=" => String::new(),
            Some(i) => i,
            None => {
                self.conn.write(b"+ \r\n");
                match self.conn.read_line(self.cfg.max_line_length, self.timeout()).await {
                    Ok(Line::Ok(l)) if l == b"*" => return bad("Authentication cancelled"),
                    Ok(Line::Ok(l)) => String::from_utf8_lossy(&l).into_owned(),
                    _ => return bad("Authentication failed"),
                }
            }
        };
        let Some((user, pass)) = auth::sasl_plain(&response) else {
            return bad("Invalid SASL PLAIN response");
        };
        self.finish_login(&user, &pass).await
    }

    fn enable(&mut self, caps: &[String]) -> String {
        let mut enabled = Vec::new();
        for c in caps {
            match c.as_str() {
                "CONDSTORE" => {
                    self.condstore = true;
                    enabled.push("CONDSTORE");
                }
                "IMAP4REV2" => {
                    self.rev2 = true;
                    enabled.push("IMAP4rev2");
                }
                _ => {}
            }
        }
        self.untagged(format!("ENABLED {}", enabled.join(" ")).trim_end());
        "ENABLE completed".into()
    }

    fn write_mailbox_name(&mut self, prefix: &str, name: &str, suffix: &str) {
        let utf8 = self.utf8_names();
        self.conn.write_with(|out| {
            out.extend_from_slice(prefix.as_bytes());
            write_mailbox(out, name, utf8);
            out.extend_from_slice(suffix.as_bytes());
            out.extend_from_slice(b"\r\n");
        });
    }

    fn load_snapshot(&self, mailbox: &MailboxMeta) -> Result<Vec<Entry>, Fail> {
        Ok(self
            .shared
            .store
            .messages(mailbox.id)?
            .into_iter()
            .map(|m| Entry {
                uid: m.uid,
                meta: m.meta,
            })
            .collect())
    }

    fn select(&mut self, name: &str, read_only: bool, condstore: bool) -> Reply {
        if self.selected.take().is_some() {
            self.untagged("OK [CLOSED] Previous mailbox closed");
        }
        let name = self.mailbox_arg(name)?;
        let Some(mailbox) = self.shared.store.mailbox(self.account(), &name)? else {
            return no(format!("[NONEXISTENT] Mailbox {name} does not exist"));
        };
        if condstore {
            self.condstore = true;
        }
        let watch = self.shared.store.watch(mailbox.id);
        let msgs = self.load_snapshot(&mailbox)?;
        let mut keywords: Vec<String> = Vec::new();
        for e in &msgs {
            for k in &e.meta.keywords {
                if !keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    keywords.push(k.clone());
                }
            }
        }
        let flags = format!(
            "\\Answered \\Flagged \\Deleted \\Seen \\Draft{}",
            keyword_suffix(&keywords)
        );
        self.untagged(&format!("FLAGS ({flags})"));
        self.untagged(&format!("{} EXISTS", msgs.len()));
        if !self.rev2 {
            self.untagged("0 RECENT");
            if let Some(i) = msgs.iter().position(|e| !e.meta.flags.contains(Flags::SEEN)) {
                self.untagged(&format!("OK [UNSEEN {}] First unseen", i + 1));
            }
        }
        let perm = if read_only {
            "()".to_string()
        } else {
            format!("({flags} \\*)")
        };
        self.untagged(&format!("OK [PERMANENTFLAGS {perm}] Flags permitted"));
        self.untagged(&format!("OK [UIDVALIDITY {}] UIDs valid", mailbox.uidvalidity));
        self.untagged(&format!("OK [UIDNEXT {}] Predicted next UID", mailbox.uidnext));
        self.untagged(&format!("OK [HIGHESTMODSEQ {}] Highest", mailbox.highestmodseq));
        if self.rev2 {
            let name = mailbox.name.clone();
            self.write_mailbox_name("* LIST () \"/\" ", &name, "");
        }
        let mode = if read_only { "[READ-ONLY]" } else { "[READ-WRITE]" };
        let verb = if read_only { "EXAMINE" } else { "SELECT" };
        self.selected = Some(Selected {
            seen_modseq: mailbox.highestmodseq,
            pending: false,
            mailbox,
            read_only,
            msgs,
            watch,
            saved: Vec::new(),
            keywords,
        });
        Ok(format!("{mode} {verb} completed"))
    }

    /// Brings the snapshot up to date and tells the client (EXISTS, EXPUNGE, FETCH FLAGS).
    fn sync(&mut self, expunge_ok: bool) {
        let Some(sel) = self.selected.as_mut() else { return };
        // The store signals every change set touching the mailbox: without one (or a report
        // still owed), there is nothing to read. Marked seen before reading, so a change made
        // while we read signals again.
        if !sel.pending && !sel.watch.has_changed().unwrap_or(true) {
            return;
        }
        sel.watch.borrow_and_update();
        let id = sel.mailbox.id;
        let current = match self.shared.store.mailbox_by_id(id) {
            Ok(Some(m)) => m,
            Ok(None) => {
                self.selected = None;
                self.untagged("BYE The selected mailbox was deleted or renamed away");
                self.bye = true;
                return;
            }
            Err(e) => {
                tracing::error!("IMAP sync: {e}");
                return;
            }
        };
        if current.highestmodseq == sel.seen_modseq {
            sel.pending = false;
            return;
        }
        let Ok(fresh) = self.shared.store.messages(id) else {
            return;
        };
        let sel = self.selected.as_mut().expect("checked above");
        // Which of ours are gone, which changed.
        let mut gone = Vec::new();
        let mut changed = Vec::new();
        let mut j = 0;
        for (i, e) in sel.msgs.iter().enumerate() {
            while j < fresh.len() && fresh[j].uid < e.uid {
                j += 1;
            }
            match fresh.get(j) {
                Some(f) if f.uid == e.uid => {
                    if f.meta.modseq != e.meta.modseq {
                        changed.push((i, f.meta.clone()));
                    }
                }
                _ => gone.push(i),
            }
        }
        if !gone.is_empty() && !expunge_ok {
            sel.pending = true; // reported at the next point where EXPUNGE is allowed
            return;
        }
        let mut out = Vec::new();
        for (i, meta) in changed {
            let e = &mut sel.msgs[i];
            e.meta = meta;
            let modseq = if self.condstore {
                format!(" MODSEQ ({})", e.meta.modseq)
            } else {
                String::new()
            };
            out.push(format!(
                "{} FETCH (UID {} FLAGS {}{modseq})",
                i + 1,
                e.uid,
                flag_list(&e.meta)
            ));
        }
        for &i in gone.iter().rev() {
            sel.msgs.remove(i);
            out.push(format!("{} EXPUNGE", i + 1));
        }
        let last = sel.max_uid();
        let before = sel.msgs.len();
        for f in fresh.into_iter().filter(|f| f.uid > last) {
            for k in &f.meta.keywords {
                if !sel.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    sel.keywords.push(k.clone());
                }
            }
            sel.msgs.push(Entry {
                uid: f.uid,
                meta: f.meta,
            });
        }
        if sel.msgs.len() != before || !gone.is_empty() {
            out.push(format!("{} EXISTS", sel.msgs.len()));
        }
        sel.seen_modseq = current.highestmodseq;
        sel.pending = false;
        for line in out {
            self.untagged(&line);
        }
    }

    fn create(&mut self, name: &str) -> Reply {
        let name = self.mailbox_arg(name)?;
        if name == "INBOX" {
            return no("[ALREADYEXISTS] INBOX always exists");
        }
        let store = &self.shared.store;
        let account = self.account().to_string();
        if store.mailbox(&account, &name)?.is_some() {
            return no(format!("[ALREADYEXISTS] Mailbox {name} already exists"));
        }
        // Superiors are created too (RFC 3501 §6.3.3).
        let parts: Vec<&str> = name.split(DELIM).collect();
        for i in 1..parts.len() {
            let parent = parts[..i].join("/");
            if parent != "INBOX" && store.mailbox(&account, &parent)?.is_none() {
                store.create_mailbox(&account, &parent, None)?;
            }
        }
        store.create_mailbox(&account, &name, None)?;
        Ok("CREATE completed".into())
    }

    fn delete(&mut self, name: &str) -> Reply {
        let name = self.mailbox_arg(name)?;
        if name == "INBOX" {
            return no("[CANNOT] INBOX cannot be deleted");
        }
        let store = self.shared.store.clone();
        let account = self.account().to_string();
        let Some(mb) = store.mailbox(&account, &name)? else {
            return no(format!("[NONEXISTENT] Mailbox {name} does not exist"));
        };
        let prefix = format!("{name}/");
        if store.mailboxes(&account)?.iter().any(|m| m.name.starts_with(&prefix)) {
            // Dovecot and Cyrus refuse too: deleting would leave a \Noselect husk.
            return no("[INUSE] Mailbox has children; delete them first");
        }
        if mb.special_use.is_some() {
            tracing::info!(account, name, "deleting a special-use mailbox");
        }
        if self.selected.as_ref().is_some_and(|s| s.mailbox.id == mb.id) {
            self.selected = None;
            self.untagged("OK [CLOSED] Mailbox deleted");
        }
        store.delete_mailbox(&account, &name)?;
        Ok("DELETE completed".into())
    }

    fn rename(&mut self, from: &str, to: &str) -> Reply {
        let from = self.mailbox_arg(from)?;
        let to = self.mailbox_arg(to)?;
        if to == "INBOX" {
            return no("[ALREADYEXISTS] INBOX exists");
        }
        if to.starts_with(&format!("{from}/")) {
            return no("[CANNOT] Cannot rename a mailbox into itself");
        }
        let store = self.shared.store.clone();
        let account = self.account().to_string();
        let parts: Vec<&str> = to.split(DELIM).collect();
        store.rename_mailbox(&account, &from, &to, DELIM)?;
        for i in 1..parts.len() {
            let parent = parts[..i].join("/");
            if parent != "INBOX" && store.mailbox(&account, &parent)?.is_none() {
                store.create_mailbox(&account, &parent, None)?;
            }
        }
        Ok("RENAME completed".into())
    }

    fn subscribe(&mut self, name: &str, on: bool) -> Reply {
        let name = self.mailbox_arg(name)?;
        if on && self.shared.store.mailbox(self.account(), &name)?.is_none() {
            return no(format!("[NONEXISTENT] Mailbox {name} does not exist"));
        }
        self.shared.store.set_subscribed(self.account(), &name, on)?;
        Ok(if on {
            "SUBSCRIBE completed"
        } else {
            "UNSUBSCRIBE completed"
        }
        .into())
    }

    fn full_pattern(&self, reference: &str, pattern: &str) -> Result<String, Fail> {
        let decode = |s: &str| -> Result<String, Fail> {
            if self.utf8_names() {
                Ok(s.to_string())
            } else {
                super::mutf7::decode(s).ok_or_else(|| Fail::Bad("pattern is not valid modified UTF-7".into()))
            }
        };
        let (r, p) = (decode(reference)?, decode(pattern)?);
        Ok(if p.starts_with(DELIM) || r.is_empty() {
            p
        } else if r.ends_with(DELIM) {
            format!("{r}{p}")
        } else {
            format!("{r}{DELIM}{p}")
        })
    }

    fn list(&mut self, reference: &str, patterns: &[String], o: &ListOptions) -> Reply {
        if patterns.len() == 1 && patterns[0].is_empty() && !o.extended {
            self.untagged("LIST (\\Noselect) \"/\" \"\"");
            return Ok("LIST completed".into());
        }
        let store = self.shared.store.clone();
        let account = self.account().to_string();
        let boxes = store.mailboxes(&account)?;
        let subs = store.subscriptions(&account)?;
        let full: Vec<String> = patterns
            .iter()
            .map(|p| self.full_pattern(reference, p))
            .collect::<Result<_, _>>()?;
        let matches = |name: &str| full.iter().any(|p| list_match(p, name));
        // Every name that exists, plus parents implied by a child (`a` for `a/b`).
        let mut names: Vec<String> = boxes.iter().map(|b| b.name.clone()).collect();
        if o.subscribed {
            names.extend(subs.iter().cloned());
        }
        for b in &boxes {
            let parts: Vec<&str> = b.name.split(DELIM).collect();
            for i in 1..parts.len() {
                names.push(parts[..i].join("/"));
            }
        }
        names.sort();
        names.dedup();
        for name in names {
            if !matches(&name) {
                continue;
            }
            let mb = boxes.iter().find(|b| b.name == name);
            let subscribed = subs.contains(&name);
            if o.subscribed && !subscribed {
                continue;
            }
            let prefix = format!("{name}/");
            let has_children = boxes.iter().any(|b| b.name.starts_with(&prefix));
            if mb.is_none() && !o.subscribed {
                // A parent that does not exist: shown only if its children are not.
                let child_listed = boxes.iter().any(|b| b.name.starts_with(&prefix) && matches(&b.name));
                if child_listed {
                    continue;
                }
            }
            if o.special_use_only && mb.and_then(|m| m.special_use.as_ref()).is_none() {
                continue;
            }
            let mut attrs: Vec<&str> = Vec::new();
            match mb {
                None if o.extended => attrs.push("\\NonExistent"),
                None => attrs.push("\\Noselect"),
                Some(_) => {}
            }
            attrs.push(if has_children {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            });
            if subscribed && (o.subscribed || o.ret_subscribed) {
                attrs.push("\\Subscribed");
            }
            if let Some(su) = mb.and_then(|m| m.special_use.as_deref()) {
                attrs.push(su);
            }
            let head = format!("* LIST ({}) \"/\" ", attrs.join(" "));
            self.write_mailbox_name(&head, &name, "");
            if let (Some(items), Some(mb)) = (&o.ret_status, mb) {
                let line = self.status_line(mb, items)?;
                self.write_mailbox_name("* STATUS ", &name, &format!(" ({line})"));
            }
        }
        Ok("LIST completed".into())
    }

    fn lsub(&mut self, reference: &str, pattern: &str) -> Reply {
        let pattern = self.full_pattern(reference, pattern)?;
        let store = self.shared.store.clone();
        let account = self.account().to_string();
        for name in store.subscriptions(&account)? {
            if list_match(&pattern, &name) {
                let noselect = if store.mailbox(&account, &name)?.is_none() {
                    "\\Noselect"
                } else {
                    ""
                };
                self.write_mailbox_name(&format!("* LSUB ({noselect}) \"/\" "), &name, "");
            }
        }
        Ok("LSUB completed".into())
    }

    fn status_line(&self, mb: &MailboxMeta, items: &[StatusItem]) -> Result<String, Fail> {
        let msgs = self.shared.store.messages(mb.id)?;
        let mut parts = Vec::new();
        for it in items {
            parts.push(match it {
                StatusItem::Messages => format!("MESSAGES {}", msgs.len()),
                StatusItem::Recent => "RECENT 0".into(),
                StatusItem::UidNext => format!("UIDNEXT {}", mb.uidnext),
                StatusItem::UidValidity => format!("UIDVALIDITY {}", mb.uidvalidity),
                StatusItem::Unseen => format!(
                    "UNSEEN {}",
                    msgs.iter().filter(|m| !m.meta.flags.contains(Flags::SEEN)).count()
                ),
                StatusItem::Deleted => format!(
                    "DELETED {}",
                    msgs.iter().filter(|m| m.meta.flags.contains(Flags::DELETED)).count()
                ),
                StatusItem::Size => format!("SIZE {}", msgs.iter().map(|m| m.meta.size).sum::<u64>()),
                StatusItem::HighestModSeq => format!("HIGHESTMODSEQ {}", mb.highestmodseq),
            });
        }
        Ok(parts.join(" "))
    }

    fn status(&mut self, name: &str, items: &[StatusItem]) -> Reply {
        let name = self.mailbox_arg(name)?;
        let Some(mb) = self.shared.store.mailbox(self.account(), &name)? else {
            return no(format!("[NONEXISTENT] Mailbox {name} does not exist"));
        };
        let line = self.status_line(&mb, items)?;
        self.write_mailbox_name("* STATUS ", &name, &format!(" ({line})"));
        Ok("STATUS completed".into())
    }

    fn learn(&self, blob: crate::store::BlobId, spam: bool) {
        let _ = self.shared.learn.send(LearnEvent {
            account: self.account().to_string(),
            blob,
            spam,
        });
    }

    async fn append(&mut self, name: &str, flags: &[String], date: Option<i64>, message: Vec<u8>) -> Reply {
        let name = self.mailbox_arg(name)?;
        let Some(mb) = self.shared.store.mailbox(self.account(), &name)? else {
            return no(format!("[TRYCREATE] Mailbox {name} does not exist"));
        };
        if message.is_empty() {
            return no("An empty message cannot be appended");
        }
        let (bits, keywords) = parse_flags(flags)?;
        let target = Target {
            mailbox: mb.id,
            flags: bits,
            keywords,
        };
        let date = date.unwrap_or_else(crate::store::now_secs);
        let uids = {
            let _turn = self.shared.store.write_turn().await;
            self.shared.store.deliver_to(&message, date, &[target])?
        };
        self.shared.store.sync().await?;
        if mb.special_use.as_deref() == Some("\\Junk") {
            self.learn(crate::store::blob_id(&message), true);
        }
        let uid = uids.first().copied().unwrap_or(0);
        Ok(format!("[APPENDUID {} {uid}] APPEND completed", mb.uidvalidity))
    }

    async fn idle(&mut self, tag: &str) -> Flow {
        self.conn.write(b"+ idling\r\n");
        let mut shutdown = self.shared.shutdown.clone();
        let deadline = tokio::time::Instant::now() + self.timeout();
        loop {
            self.sync(true);
            if self.conn.flush().await.is_err() {
                return Flow::Close;
            }
            let mut watch = self.selected.as_ref().map(|s| s.watch.clone());
            let changed = async {
                match watch.as_mut() {
                    Some(w) => {
                        let _ = w.changed().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                line = self.conn.read_line(self.cfg.max_line_length, deadline.saturating_duration_since(tokio::time::Instant::now())) => {
                    match line {
                        Ok(Line::Ok(l)) if l.eq_ignore_ascii_case(b"DONE") => {
                            self.sync(true);
                            self.conn.write(format!("{tag} OK IDLE terminated\r\n").as_bytes());
                            return Flow::Continue;
                        }
                        Ok(_) => {
                            self.conn.write(format!("{tag} BAD Expected DONE\r\n").as_bytes());
                            return Flow::Continue;
                        }
                        Err(ReadError::Timeout) => {
                            self.untagged("BYE Autologout; idle for too long");
                            return Flow::Close;
                        }
                        Err(_) => return Flow::Close,
                    }
                }
                _ = changed => {}
                _ = shutdown.changed() => {
                    self.untagged("BYE Server shutting down");
                    return Flow::Close;
                }
            }
        }
    }

    async fn close(&mut self, expunge: bool) -> Reply {
        let Some(sel) = self.selected.take() else {
            return bad("No mailbox selected");
        };
        if expunge && !sel.read_only {
            let uids: Vec<u32> = sel
                .msgs
                .iter()
                .filter(|e| e.meta.flags.contains(Flags::DELETED))
                .map(|e| e.uid)
                .collect();
            if !uids.is_empty() {
                self.shared.store.expunge(sel.mailbox.id, &uids)?;
                self.shared.store.sync().await?;
            }
        }
        Ok(if expunge {
            "CLOSE completed"
        } else {
            "UNSELECT completed"
        }
        .into())
    }

    fn selected(&mut self) -> &mut Selected {
        self.selected.as_mut().expect("command requires a selected mailbox")
    }

    async fn expunge(&mut self, set: Option<&SeqSet>, uid: bool) -> Reply {
        let sel = self.selected();
        if sel.read_only {
            return no("[READ-ONLY] Mailbox is read-only");
        }
        let within = match set {
            Some(s) => sel.resolve(s, uid).map_err(Fail::Bad)?,
            None => (0..sel.msgs.len()).collect(),
        };
        let uids: Vec<u32> = within
            .into_iter()
            .filter(|&i| sel.msgs[i].meta.flags.contains(Flags::DELETED))
            .map(|i| sel.msgs[i].uid)
            .collect();
        let id = sel.mailbox.id;
        if !uids.is_empty() {
            self.shared.store.expunge(id, &uids)?;
            self.shared.store.sync().await?;
        }
        self.report_removed(&uids);
        Ok("EXPUNGE completed".into())
    }

    /// Removes our own expunged messages from the snapshot and says so (highest first, so
    /// no number needs adjusting).
    fn report_removed(&mut self, uids: &[u32]) {
        let sel = self.selected();
        let mut idx: Vec<usize> = uids.iter().filter_map(|&u| sel.seq_of_uid(u)).collect();
        idx.sort_unstable();
        let mut lines = Vec::new();
        for &i in idx.iter().rev() {
            sel.msgs.remove(i);
            lines.push(format!("{} EXPUNGE", i + 1));
        }
        for l in lines {
            self.untagged(&l);
        }
    }

    fn blob(&self, meta: &MessageMeta) -> Option<Arc<Vec<u8>>> {
        match self.shared.store.blob(&meta.blob) {
            Ok(Some(b)) => Some(Arc::new(b)),
            Ok(None) => None,
            Err(e) => {
                tracing::error!("IMAP: reading a message: {e}");
                None
            }
        }
    }

    fn search(&mut self, tag: &str, ret: Option<&[String]>, key: &SearchKey, uid: bool) -> Reply {
        if search_uses_modseq(key) {
            self.condstore = true;
        }
        let store = self.shared.store.clone();
        let sel = self.selected.as_ref().expect("selected");
        let needs = search::needs_content(key);
        let seq_of_uid = |u: u32| sel.seq_of_uid(u).map(|i| i as u32 + 1);
        let ctx = search::Context {
            max_seq: sel.msgs.len() as u32,
            max_uid: sel.max_uid(),
            saved: &sel.saved,
            seq_of_uid: &seq_of_uid,
        };
        let mut hits: Vec<(u32, u64)> = Vec::new();
        let mut hit_uids = Vec::new();
        for (i, e) in sel.msgs.iter().enumerate() {
            let mut cache: Option<Arc<Vec<u8>>> = None;
            let mut load = || {
                if cache.is_none() && needs {
                    cache = store.blob(&e.meta.blob).ok().flatten().map(Arc::new);
                }
                cache.clone()
            };
            let mut c = search::Candidate {
                seq: i as u32 + 1,
                uid: e.uid,
                meta: &e.meta,
                raw: &mut load,
            };
            if search::matches(key, &mut c, &ctx) {
                hits.push((if uid { e.uid } else { i as u32 + 1 }, e.meta.modseq));
                hit_uids.push(e.uid);
            }
        }
        let modseq = search_uses_modseq(key).then(|| hits.iter().map(|h| h.1).max().unwrap_or(0));
        let nums: Vec<u32> = hits.iter().map(|h| h.0).collect();
        match ret {
            None => {
                let mut line = String::from("SEARCH");
                for n in &nums {
                    line.push_str(&format!(" {n}"));
                }
                if let Some(m) = modseq.filter(|_| !nums.is_empty()) {
                    line.push_str(&format!(" (MODSEQ {m})"));
                }
                self.untagged(&line);
            }
            Some(opts) => {
                let opts: Vec<&str> = if opts.is_empty() {
                    vec!["ALL"]
                } else {
                    opts.iter().map(String::as_str).collect()
                };
                let mut line = format!("ESEARCH (TAG \"{tag}\")");
                if uid {
                    line.push_str(" UID");
                }
                let mut any = false;
                for o in &opts {
                    match *o {
                        "MIN" if !nums.is_empty() => line.push_str(&format!(" MIN {}", nums[0])),
                        "MAX" if !nums.is_empty() => line.push_str(&format!(" MAX {}", nums[nums.len() - 1])),
                        "COUNT" => line.push_str(&format!(" COUNT {}", nums.len())),
                        "ALL" if !nums.is_empty() => line.push_str(&format!(" ALL {}", search::compress(&nums))),
                        "MIN" | "MAX" | "ALL" | "SAVE" => {}
                        other => return bad(format!("unknown RETURN option {other}")),
                    }
                    any |= *o != "SAVE";
                }
                if let Some(m) = modseq.filter(|_| !nums.is_empty()) {
                    line.push_str(&format!(" MODSEQ {m}"));
                }
                if opts.contains(&"SAVE") {
                    self.selected().saved = hit_uids;
                }
                if any {
                    self.untagged(&line);
                }
            }
        }
        Ok(if uid {
            "UID SEARCH completed"
        } else {
            "SEARCH completed"
        }
        .into())
    }

    /// The message as this client may see it (on-fetch policies may hide or edit it).
    async fn visible_body(&self, mailbox: &str, raw: Arc<Vec<u8>>) -> Result<Arc<Vec<u8>>, Fail> {
        let session = crate::hooks::contract::Session {
            client_ip: self.peer.ip().to_string(),
            helo: None,
            tls: self.conn.is_tls(),
            auth_user: self.user.clone(),
            listener: "imap".into(),
        };
        match crate::hooks::on_fetch(&self.policies, session, self.account(), mailbox, &raw).await {
            FetchView::Unchanged => Ok(raw),
            FetchView::Edited(b) => Ok(Arc::new(b)),
            FetchView::Hidden => no("[UNAVAILABLE] Message withheld by policy"),
            FetchView::Later => no("[UNAVAILABLE] Message unavailable now; try later"),
        }
    }

    async fn fetch(&mut self, set: &SeqSet, mut atts: Vec<FetchAtt>, changed_since: Option<u64>, uid: bool) -> Reply {
        if changed_since.is_some() || atts.contains(&FetchAtt::ModSeq) {
            self.condstore = true;
        }
        if uid && !atts.contains(&FetchAtt::Uid) {
            atts.insert(0, FetchAtt::Uid);
        }
        if changed_since.is_some() && !atts.contains(&FetchAtt::ModSeq) {
            atts.push(FetchAtt::ModSeq);
        }
        let sel = self.selected();
        let mut idx = sel.resolve(set, uid).map_err(Fail::Bad)?;
        if let Some(cs) = changed_since {
            idx.retain(|&i| sel.msgs[i].meta.modseq > cs);
        }
        let read_only = sel.read_only;
        let mailbox_id = sel.mailbox.id;
        let mailbox_name = sel.mailbox.name.clone();
        // Reading a body without PEEK sets \Seen (RFC 3501 §6.4.5); done first so the FLAGS
        // in the response are the new ones.
        let sets_seen = atts.iter().any(|a| {
            matches!(
                a,
                FetchAtt::Rfc822 | FetchAtt::Rfc822Text | FetchAtt::Section { peek: false, .. }
            )
        });
        if sets_seen && !read_only {
            let unseen: Vec<u32> = idx
                .iter()
                .filter(|&&i| !sel.msgs[i].meta.flags.contains(Flags::SEEN))
                .map(|&i| sel.msgs[i].uid)
                .collect();
            if !unseen.is_empty() {
                let r =
                    self.shared
                        .store
                        .store_flags(mailbox_id, &unseen, FlagOp::Add, Flags(Flags::SEEN), &[], None)?;
                let sel = self.selected();
                for (u, meta) in r.changed {
                    if let Some(i) = sel.seq_of_uid(u) {
                        sel.msgs[i].meta = meta;
                    }
                }
                if !atts.contains(&FetchAtt::Flags) {
                    atts.push(FetchAtt::Flags);
                }
            }
        }
        let needs_body = atts.iter().any(|a| {
            !matches!(
                a,
                FetchAtt::Flags | FetchAtt::InternalDate | FetchAtt::Rfc822Size | FetchAtt::Uid | FetchAtt::ModSeq
            )
        });
        let content = atts.iter().any(|a| {
            matches!(
                a,
                FetchAtt::Rfc822 | FetchAtt::Rfc822Text | FetchAtt::Section { .. } | FetchAtt::BinarySize(_)
            )
        });
        let mut failed = false;
        for i in idx {
            let (uid_i, meta) = {
                let e = &self.selected().msgs[i];
                (e.uid, e.meta.clone())
            };
            let raw = if needs_body {
                match self.blob(&meta) {
                    Some(r) => Some(r),
                    None => {
                        failed = true; // expunged meanwhile (RFC 2180 §4.1.2)
                        continue;
                    }
                }
            } else {
                None
            };
            let raw = match raw {
                Some(r) if content => match self.visible_body(&mailbox_name, r).await {
                    Ok(r) => Some(r),
                    Err(_) => {
                        failed = true;
                        continue;
                    }
                },
                r => r,
            };
            let condstore = self.condstore;
            let mut err = None;
            self.conn.write_with(|out| {
                let before = out.len();
                if let Err(e) = write_fetch(
                    out,
                    i + 1,
                    uid_i,
                    &meta,
                    raw.as_deref().map(|v| &v[..]),
                    &atts,
                    condstore,
                ) {
                    out.truncate(before); // no half-written response
                    err = Some(e);
                }
            });
            if let Some(e) = err {
                return no(e);
            }
            // Let the client read while we work: a 2000-message FETCH is many megabytes.
            if self.conn.pending_output() > FLUSH_AT && self.conn.flush().await.is_err() {
                return no("connection lost");
            }
        }
        if failed {
            return no("Some messages could not be fetched (expunged or withheld)");
        }
        Ok(if uid { "UID FETCH completed" } else { "FETCH completed" }.into())
    }

    fn store(
        &mut self,
        set: &SeqSet,
        op: FlagOp,
        silent: bool,
        flags: &[String],
        unchanged_since: Option<u64>,
        uid: bool,
    ) -> Reply {
        if unchanged_since.is_some() {
            self.condstore = true;
        }
        let (bits, keywords) = parse_flags(flags)?;
        let condstore = self.condstore;
        let store = self.shared.store.clone();
        let sel = self.selected();
        if sel.read_only {
            return no("[READ-ONLY] Mailbox is read-only");
        }
        let idx = sel.resolve(set, uid).map_err(Fail::Bad)?;
        let uids: Vec<u32> = idx.iter().map(|&i| sel.msgs[i].uid).collect();
        let r = store.store_flags(sel.mailbox.id, &uids, op, bits, &keywords, unchanged_since)?;
        let mut changed_uids = Vec::new();
        for (u, meta) in r.changed {
            for k in &meta.keywords {
                if !sel.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    sel.keywords.push(k.clone());
                }
            }
            if let Some(i) = sel.seq_of_uid(u) {
                sel.msgs[i].meta = meta;
            }
            changed_uids.push(u);
        }
        let mut lines = Vec::new();
        for &i in &idx {
            let e = &sel.msgs[i];
            if r.modified.contains(&e.uid) {
                continue;
            }
            let changed = changed_uids.contains(&e.uid);
            if silent && !(condstore && changed) {
                continue;
            }
            let mut items = Vec::new();
            if uid {
                items.push(format!("UID {}", e.uid));
            }
            if !silent {
                items.push(format!("FLAGS {}", flag_list(&e.meta)));
            }
            if condstore {
                items.push(format!("MODSEQ ({})", e.meta.modseq));
            }
            lines.push(format!("{} FETCH ({})", i + 1, items.join(" ")));
        }
        for l in lines {
            self.untagged(&l);
        }
        if !r.modified.is_empty() {
            let nums: Vec<u32> = if uid {
                r.modified.clone()
            } else {
                let sel = self.selected();
                r.modified
                    .iter()
                    .filter_map(|&u| sel.seq_of_uid(u).map(|i| i as u32 + 1))
                    .collect()
            };
            return Ok(format!(
                "[MODIFIED {}] Conditional STORE failed for some",
                search::compress(&nums)
            ));
        }
        Ok(if uid { "UID STORE completed" } else { "STORE completed" }.into())
    }

    async fn copy(&mut self, set: &SeqSet, name: &str, uid: bool, remove: bool) -> Reply {
        let name = self.mailbox_arg(name)?;
        let account = self.account().to_string();
        let store = self.shared.store.clone();
        let Some(dst) = store.mailbox(&account, &name)? else {
            return no(format!("[TRYCREATE] Mailbox {name} does not exist"));
        };
        let sel = self.selected();
        if remove && sel.read_only {
            return no("[READ-ONLY] Mailbox is read-only");
        }
        let idx = sel.resolve(set, uid).map_err(Fail::Bad)?;
        let uids: Vec<u32> = idx.iter().map(|&i| sel.msgs[i].uid).collect();
        let blobs: Vec<(u32, crate::store::BlobId)> =
            idx.iter().map(|&i| (sel.msgs[i].uid, sel.msgs[i].meta.blob)).collect();
        let src = sel.mailbox.clone();
        if uids.is_empty() {
            return Ok(if remove { "MOVE completed" } else { "COPY completed" }.into());
        }
        let pairs = store.copy_messages(src.id, &uids, dst.id, remove)?;
        store.sync().await?;
        // Training signals: into Junk is spam; out of Junk (not into Trash) is ham.
        let junk = |m: &MailboxMeta| m.special_use.as_deref() == Some("\\Junk");
        let trash = dst.special_use.as_deref() == Some("\\Trash");
        let verdict = if junk(&dst) && !junk(&src) {
            Some(true)
        } else if junk(&src) && !junk(&dst) && !trash {
            Some(false)
        } else {
            None
        };
        if let Some(spam) = verdict {
            for (u, _) in &pairs {
                if let Some((_, b)) = blobs.iter().find(|(x, _)| x == u) {
                    self.learn(*b, spam);
                }
            }
        }
        let from: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let to: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        let code = format!(
            "[COPYUID {} {} {}]",
            dst.uidvalidity,
            search::compress(&from),
            search::compress(&to)
        );
        if remove {
            self.untagged(&format!("OK {code} Moved"));
            self.report_removed(&from);
            return Ok("MOVE completed".into());
        }
        Ok(format!("{code} COPY completed"))
    }
}

fn keyword_suffix(k: &[String]) -> String {
    k.iter().map(|k| format!(" {k}")).collect()
}

fn search_uses_modseq(k: &SearchKey) -> bool {
    match k {
        SearchKey::ModSeq(_) => true,
        SearchKey::Not(a) => search_uses_modseq(a),
        SearchKey::Or(a, b) => search_uses_modseq(a) || search_uses_modseq(b),
        SearchKey::And(v) => v.iter().any(search_uses_modseq),
        _ => false,
    }
}

/// A literal announcement at the end of a line: `{n}` (synchronising), `{n+}`, `{n-}`.
fn literal_suffix(line: &[u8]) -> Option<(usize, bool)> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let mut digits = &inner[open + 1..];
    let mut sync = true;
    if let Some(d) = digits.strip_suffix(b"+").or_else(|| digits.strip_suffix(b"-")) {
        digits = d;
        sync = false;
    }
    if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((std::str::from_utf8(digits).ok()?.parse().ok()?, sync))
}

/// Is this (partial) command an APPEND (whose literal is a message)?
fn append_command(buf: &[u8]) -> bool {
    let mut words = buf.split(|&b| b == b' ');
    words.next();
    words.next().is_some_and(|w| w.eq_ignore_ascii_case(b"APPEND"))
}

/// One `* n FETCH (...)` response.
fn write_fetch(
    out: &mut Vec<u8>,
    seq: usize,
    uid: u32,
    meta: &MessageMeta,
    raw: Option<&[u8]>,
    atts: &[FetchAtt],
    condstore: bool,
) -> Result<(), String> {
    out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
    // The MIME structure is parsed only for items that need it (not for BODY[] or ENVELOPE).
    let has_raw = raw.is_some();
    let raw = raw.unwrap_or(b"");
    let parsed = std::cell::OnceCell::new();
    let root = || -> Result<&mime::Part, String> {
        if !has_raw {
            return Err("no message".into());
        }
        Ok(parsed.get_or_init(|| mime::parse(raw)))
    };
    let header = || raw[..mime::header_len(raw)].as_ref();
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b' ');
        }
        first = false;
    };
    let mut modseq_written = false;
    for a in atts {
        sep(out);
        match a {
            FetchAtt::Uid => out.extend_from_slice(format!("UID {uid}").as_bytes()),
            FetchAtt::Flags => out.extend_from_slice(format!("FLAGS {}", flag_list(meta)).as_bytes()),
            FetchAtt::InternalDate => {
                out.extend_from_slice(format!("INTERNALDATE {}", fetch::internal_date(meta.internal_date)).as_bytes())
            }
            // The size of what this client is shown (on-fetch policies may add headers).
            FetchAtt::Rfc822Size => {
                let size = if raw.is_empty() { meta.size } else { raw.len() as u64 };
                out.extend_from_slice(format!("RFC822.SIZE {size}").as_bytes())
            }
            FetchAtt::ModSeq => {
                modseq_written = true;
                out.extend_from_slice(format!("MODSEQ ({})", meta.modseq).as_bytes())
            }
            FetchAtt::Envelope => {
                out.extend_from_slice(b"ENVELOPE ");
                fetch::envelope(out, header());
            }
            FetchAtt::Body | FetchAtt::BodyStructure => {
                let ext = *a == FetchAtt::BodyStructure;
                out.extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                fetch::body_structure(out, raw, root()?, ext);
            }
            FetchAtt::Rfc822 => {
                out.extend_from_slice(b"RFC822 ");
                fetch::write_literal(out, raw);
            }
            FetchAtt::Rfc822Header => {
                out.extend_from_slice(b"RFC822.HEADER ");
                fetch::write_literal(out, header());
            }
            FetchAtt::Rfc822Text => {
                out.extend_from_slice(b"RFC822.TEXT ");
                fetch::write_literal(out, &raw[header().len()..]);
            }
            FetchAtt::Section {
                binary,
                section,
                partial,
                ..
            } => {
                out.extend_from_slice(fetch::section_name(*binary, section, *partial).as_bytes());
                out.push(b' ');
                if section.part.is_empty() && section.kind == SectionKind::Full {
                    // The whole message: straight from the stored bytes, no copy.
                    fetch::write_literal(out, fetch::partial(raw, *partial));
                    continue;
                }
                let root = root()?;
                let data = if *binary {
                    match fetch::binary_bytes(raw, root, &section.part) {
                        Some(Ok(d)) => Some(d),
                        Some(Err(())) => return Err("[UNKNOWN-CTE] Cannot decode this part".into()),
                        None => None,
                    }
                } else {
                    fetch::section_bytes(raw, root, section)
                };
                match data {
                    Some(d) => {
                        let d = fetch::partial(&d, *partial);
                        if *binary && d.contains(&0) {
                            out.push(b'~');
                        }
                        fetch::write_literal(out, d);
                    }
                    None => out.extend_from_slice(b"\"\""),
                }
            }
            FetchAtt::BinarySize(part) => {
                let n = match fetch::binary_bytes(raw, root()?, part) {
                    Some(Ok(d)) => d.len(),
                    Some(Err(())) => return Err("[UNKNOWN-CTE] Cannot decode this part".into()),
                    None => 0,
                };
                let nums: Vec<String> = part.iter().map(|n| n.to_string()).collect();
                out.extend_from_slice(format!("BINARY.SIZE[{}] {n}", nums.join(".")).as_bytes());
            }
        }
    }
    if condstore && !modseq_written && atts.contains(&FetchAtt::Flags) {
        sep(out);
        out.extend_from_slice(format!("MODSEQ ({})", meta.modseq).as_bytes());
    }
    out.extend_from_slice(b")\r\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_patterns() {
        assert!(list_match("*", "a/b"));
        assert!(list_match("%", "a"));
        assert!(!list_match("%", "a/b"));
        assert!(list_match("a/%", "a/b"));
        assert!(list_match("inbox", "INBOX"));
        assert!(list_match("Inbox/%", "INBOX/x"));
        assert!(!list_match("b*", "a"));
        assert_eq!(literal_suffix(b"a APPEND x {12}"), Some((12, true)));
        assert_eq!(literal_suffix(b"a LOGIN {3+}"), Some((3, false)));
        assert_eq!(literal_suffix(b"a LOGIN {x}"), None);
        assert!(append_command(b"a1 append INBOX {3}"));
    }
}
