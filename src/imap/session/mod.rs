//! One IMAP session: not authenticated → authenticated → selected → logout.
//!
//! The selected mailbox is a snapshot (`msgs`, in sequence-number order). Changes made by
//! other sessions, SMTP delivery or POP3 reach it only through [`Session::sync`], which runs
//! where RFC 9051 §7.5.2 lets a server send EXPUNGE: after any command but FETCH, STORE and
//! SEARCH (their UID forms are fine), and during IDLE. Until then sequence numbers stay put.
//!
//! This file reads commands and dispatches them; the commands live by group:
//! [`login`] (LOGIN, AUTHENTICATE, STARTTLS, ENABLE), [`mailboxes`] (CREATE … STATUS),
//! [`select`] (SELECT/EXAMINE, the snapshot, CLOSE, EXPUNGE), [`idle`], [`append`],
//! [`copy_move`], [`fetching`], [`searching`] and [`flags`] (STORE).

use super::command::{AppendMessage, Cmd, Command, FetchAtt, ListOptions, SearchKey, SectionKind, SeqSet, StatusItem};
use super::fetch::{self, write_mailbox};
use super::mime;
use super::parser;
use super::search;
use crate::auth::{self, Outcome};
use crate::config::TlsMode;
use crate::context::Shared;
use crate::hooks::FetchView;
use crate::net::Flow;
use crate::net::conn::{Conn, Line, ReadError};
use crate::spam::LearnEvent;
use crate::store::{FlagOp, Flags, MailboxMeta, MessageMeta, StoreError, Target};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod append;
mod contexts;
mod copy_move;
mod fetching;
mod flags;
mod idle;
mod login;
mod mailboxes;
mod notify;
mod searching;
mod select;
mod sorting;
mod urlauth;

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
    /// UIDs that are `\Recent` to this session (RFC 3501 §2.3.2).
    recent: std::collections::HashSet<u32>,
    /// Bumped whenever `msgs` changes (flags, arrivals, expunges): live search contexts
    /// compare it with the one they reflect.
    generation: u64,
    /// Searches kept up to date (CONTEXT=SEARCH/SORT, RFC 5267).
    contexts: Vec<contexts::Context>,
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
                        if x != super::command::STAR && x > u64::from(n) {
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

pub struct Session {
    shared: Arc<Shared>,
    conn: Conn,
    peer: SocketAddr,
    tls_mode: TlsMode,
    policies: Arc<crate::hooks::PolicySet>,
    /// Error answers so far (`max_bad_commands` ends the session).
    bad: u32,
    user: Option<String>,
    selected: Option<Selected>,
    /// ENABLE IMAP4rev2: UTF-8 names, no RECENT.
    rev2: bool,
    /// CONDSTORE enabled (RFC 7162 §3.1): MODSEQ in every FETCH with FLAGS.
    condstore: bool,
    /// QRESYNC enabled (RFC 7162 §3.2): VANISHED instead of EXPUNGE.
    qresync: bool,
    /// What NOTIFY (RFC 5465) asked for.
    notify: Option<notify::State>,
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
        StoreError::NoSpace(s) => {
            tracing::error!("IMAP store error: {s}");
            Fail::No("[LIMIT] Insufficient system storage; try again later".into())
        }
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

/// A message's flags as FETCH shows them; `recent` adds `\Recent`.
fn flag_list(meta: &MessageMeta, recent: bool) -> String {
    let mut v: Vec<&str> = meta.flags.names();
    if recent {
        v.push("\\Recent");
    }
    v.extend(meta.keywords.iter().map(String::as_str));
    format!("({})", v.join(" "))
}

/// LIST/LSUB wildcard match (RFC 3501 §6.3.8): `*` matches anything, `%` anything but the
/// hierarchy delimiter. Runs the pattern as a set of positions over the name, one step per
/// character: time bounded by pattern × name length whatever the wildcards (a backtracking
/// match of `*a*a*a…b` is exponential).
fn pattern_matches(pat: &[char], name: &[char]) -> bool {
    // Positions reachable through wildcards that match nothing.
    let close = |at: &mut Vec<bool>| {
        for i in 0..pat.len() {
            if at[i] && matches!(pat[i], '*' | '%') {
                at[i + 1] = true;
            }
        }
    };
    let mut at = vec![false; pat.len() + 1];
    at[0] = true;
    close(&mut at);
    for &c in name {
        let mut next = vec![false; pat.len() + 1];
        for (i, &p) in pat.iter().enumerate().filter(|&(i, _)| at[i]) {
            match p {
                '*' => next[i] = true,
                '%' if c != DELIM => next[i] = true,
                '%' => {}
                p if p == c => next[i + 1] = true,
                _ => {}
            }
        }
        close(&mut next);
        if !next.contains(&true) {
            return false;
        }
        at = next;
    }
    at[pat.len()]
}

/// `INBOX` (any case) at the start of a name means the one INBOX.
fn canonical_inbox(name: &str) -> String {
    // Compared as bytes: the first five may end inside a multi-byte character.
    let inbox = name.len() >= 5 && name.as_bytes()[..5].eq_ignore_ascii_case(b"INBOX");
    if inbox && (name.len() == 5 || name[5..].starts_with(DELIM)) {
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
            bad: 0,
            user: None,
            selected: None,
            rev2: false,
            condstore: false,
            qresync: false,
            notify: None,
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
                "QRESYNC",
                "CHILDREN",
                "LIST-EXTENDED",
                "LIST-STATUS",
                "SPECIAL-USE",
                "ESEARCH",
                "SORT",
                "SORT=DISPLAY",
                "ESORT",
                "CONTEXT=SEARCH",
                "CONTEXT=SORT",
                "THREAD=ORDEREDSUBJECT",
                "THREAD=REFERENCES",
                "SEARCHRES",
                "UNSELECT",
                "BINARY",
                "MULTIAPPEND",
                "CATENATE",
                "URLAUTH",
                "URLAUTH=BINARY",
                "NOTIFY",
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
                // A valid atom all the same (RFC 3501 §5.1.3 names no error): no such mailbox
                // can exist, and none can be made under that name.
                None => return no("[CANNOT] Mailbox name is not valid modified UTF-7"),
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
            // With NOTIFY, changes are told between commands as they happen: wait for input
            // or a change, whichever comes first (consuming no input, so nothing of a
            // command can be lost to a notice).
            if let Some(signal) = self.notify_signal().filter(|_| self.conn.buffered().is_empty()) {
                if self.conn.flush().await.is_err() {
                    break;
                }
                let wait = self.timeout();
                tokio::select! {
                    r = self.conn.wait_input(wait) => match r {
                        Ok(()) => {}
                        Err(ReadError::Timeout) => {
                            self.untagged("BYE Autologout; idle for too long");
                            break;
                        }
                        Err(_) => break,
                    },
                    _ = signal => {
                        self.notify_deliver().await;
                        if self.bye {
                            break;
                        }
                        continue;
                    }
                    _ = shutdown.changed() => {
                        self.untagged("BYE Server shutting down");
                        break;
                    }
                }
            }
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
                    self.bad += u32::from(status == "BAD");
                    self.conn.write(format!("{tag} {status} {e}\r\n").as_bytes());
                    Flow::Continue
                }
            };
            if matches!(flow, Flow::Close) || self.bye {
                break;
            }
            if self.bad >= self.cfg.max_bad_commands {
                self.untagged("BYE Too many invalid IMAP commands");
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
            // Before login only small literals (a password); after it, APPEND's messages.
            let (limit, total) = if self.user.is_none() {
                let l = self.cfg.max_literal_bytes_before_login;
                (l, l + self.cfg.max_line_length)
            } else if append_command(&buf) {
                (
                    self.cfg.max_append_bytes,
                    self.cfg.max_append_bytes + self.cfg.max_line_length,
                )
            } else {
                (
                    self.cfg.max_literal_bytes,
                    self.cfg.max_append_bytes + self.cfg.max_line_length,
                )
            };
            if n > limit || buf.len() + n > total {
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
        let expunge_ok = uid
            || !matches!(
                c.cmd,
                Cmd::Fetch { .. } | Cmd::Store { .. } | Cmd::Search { .. } | Cmd::Sort { .. } | Cmd::Thread { .. }
            );
        // A UID command names messages by UID, which other sessions' changes cannot shift:
        // bring the view up to date first, so its result reflects the mailbox as it is (a UID
        // SEARCH must not list what was expunged meanwhile). Commands by sequence number are
        // run on the client's view as it stands; their updates come after.
        if uid && self.selected.is_some() {
            self.sync(true);
        }
        let list_change = matches!(
            c.cmd,
            Cmd::Create(_) | Cmd::Delete(_) | Cmd::Rename(..) | Cmd::Subscribe(_) | Cmd::Unsubscribe(_)
        );
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
                    qresync,
                },
            ) => self.select(&mailbox, read_only, condstore, qresync.as_ref()),
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
            (true, _, Cmd::Append { mailbox, messages }) => self.append(&mailbox, messages).await,
            (true, _, Cmd::Idle) => return self.idle(&tag).await,
            (true, _, Cmd::GenUrlAuth(pairs)) => self.gen_url_auth(&pairs),
            (true, _, Cmd::ResetKey { mailbox, mechanisms }) => self.reset_key(mailbox.as_deref(), &mechanisms),
            (true, _, Cmd::UrlFetch(items)) => self.url_fetch(&items),
            (true, _, Cmd::Notify(spec)) => self.notify_command(spec),
            (true, false, _) => bad("No mailbox selected"),
            (true, true, Cmd::Check) => Ok("CHECK completed".into()),
            (true, true, Cmd::Close) => self.close(true).await,
            (true, true, Cmd::Unselect) => self.close(false).await,
            (true, true, Cmd::Expunge(set)) => self.expunge(set.as_ref(), uid).await,
            (true, true, Cmd::Search { ret, key }) => self.search(&tag, ret.as_ref(), &key, uid),
            (true, true, Cmd::Sort { ret, criteria, key }) => self.sort(&tag, ret.as_ref(), &criteria, &key, uid),
            (true, true, Cmd::Thread { algorithm, key }) => self.thread(algorithm, &key, uid),
            (true, true, Cmd::CancelUpdate(tags)) => self.cancel_update(&tags),
            (
                true,
                true,
                Cmd::Fetch {
                    set,
                    atts,
                    changed_since,
                    vanished,
                },
            ) => self.fetch(&set, atts, changed_since, vanished, uid).await,
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
            self.refresh_contexts();
        }
        if list_change {
            self.notify_own_list_change();
        }
        match result {
            Ok(text) => self.conn.write(format!("{tag} OK {text}\r\n").as_bytes()),
            Err(Fail::No(t)) => self.conn.write(format!("{tag} NO {t}\r\n").as_bytes()),
            Err(Fail::Bad(t)) => {
                self.bad += 1;
                self.conn.write(format!("{tag} BAD {t}\r\n").as_bytes())
            }
        }
        Flow::Continue
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
}

/// Is this (partial) command an APPEND (whose literal is a message)?
fn append_command(buf: &[u8]) -> bool {
    let mut words = buf.split(|&b| b == b' ');
    words.next();
    words.next().is_some_and(|w| w.eq_ignore_ascii_case(b"APPEND"))
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
        assert!(list_match("a*b%", "axb/yb"));
        assert!(!list_match("a*b%", "axb/y"));
        assert!(list_match("%/%", "a/b") && !list_match("%/%", "a/b/c"));
        assert!(list_match("*/c", "a/b/c") && list_match("", "") && !list_match("", "a"));
        // Linear time: ten and twelve `*a` against a 40-letter name, which backtracking
        // took 18 s and over a minute for.
        let name = "a".repeat(40);
        for n in [10, 12, 40] {
            assert!(!list_match(&format!("{}b", "*a".repeat(n)), &name));
            assert!(list_match(&format!("{}*", "*a".repeat(n.min(40))), &name));
        }
        // Names are handled by characters: no byte index may split one.
        for name in ["abcd&AOk-", "abcdé", "inboé", "INBOé/x", "é", "INBOX/é"] {
            assert_eq!(canonical_inbox(name), name);
        }
        assert_eq!(canonical_inbox("inbox/é"), "INBOX/é");
        assert_eq!(literal_suffix(b"a APPEND x {12}"), Some((12, true)));
        assert_eq!(literal_suffix(b"a LOGIN {3+}"), Some((3, false)));
        assert_eq!(literal_suffix(b"a LOGIN {x}"), None);
        assert!(append_command(b"a1 append INBOX {3}"));
    }
}
