//! Mailbox store: accounts, domains, aliases, mailboxes, messages and blobs.
//!
//! [`MailStore`] is the contract; [`SledStore`] implements it on sled (key layout in
//! [`keys`]). Writes are applied atomically at once but are only *durable* after
//! [`MailStore::sync`] returns: callers acknowledge a message (SMTP 250, IMAP APPEND OK, POP3
//! update) only after that. Concurrent callers share one flush (group commit).

pub mod journal;
pub mod keys;
pub mod locks;
mod message_meta;
mod pg_store;
mod sled_store;

#[cfg(test)]
mod contract_tests;

pub use message_meta::{Flags, MessageMeta};
pub use pg_store::PgStore;
#[doc(hidden)]
pub use pg_store::harness as test_postgres;
pub use sled_store::SledStore;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// Mailboxes every account gets, with their RFC 6154 special-use attribute.
pub const DEFAULT_MAILBOXES: [(&str, Option<&str>); 5] = [
    ("INBOX", None),
    ("Sent", Some("\\Sent")),
    ("Drafts", Some("\\Drafts")),
    ("Junk", Some("\\Junk")),
    ("Trash", Some("\\Trash")),
];

pub type MailboxId = u64;
pub type BlobId = [u8; 32];
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A writer's turn ([`MailStore::write_turn`]); the next writer's begins when it is dropped.
/// Empty for a store whose writers need no turns (PostgreSQL orders them itself).
pub struct WriteTurn<'a>(#[allow(dead_code)] pub Option<tokio::sync::MutexGuard<'a, ()>>);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Account {
    pub address: String,
    /// PHC string of an argon2id hash.
    pub password_hash: String,
    /// Seconds since the Unix epoch.
    pub created: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailboxMeta {
    pub id: MailboxId,
    pub account: String,
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highestmodseq: u64,
    pub special_use: Option<String>,
}

/// How [`MailStore::store_flags`] changes flags (IMAP STORE `+FLAGS`, `-FLAGS`, `FLAGS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

/// What [`MailStore::store_flags`] did.
#[derive(Debug, Default)]
pub struct FlagResult {
    /// Messages whose flags changed, with their new metadata (new MODSEQ).
    pub changed: Vec<(u32, MessageMeta)>,
    /// Messages left alone because their MODSEQ was above `unchanged_since` (RFC 7162).
    pub modified: Vec<u32>,
}

impl FlagResult {
    /// Applies one STORE to message `uid` (its metadata `m`, in a mailbox whose highest
    /// MODSEQ is `highest`), the same way on every backend: left alone and reported when
    /// modified after `unchanged_since`; otherwise, if its flags or keywords change, it gets
    /// the mailbox's next MODSEQ and is listed as changed. Says whether it changed.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        uid: u32,
        m: &mut MessageMeta,
        highest: &mut u64,
        op: FlagOp,
        flags: Flags,
        keywords: &[String],
        unchanged_since: Option<u64>,
    ) -> bool {
        if unchanged_since.is_some_and(|u| m.modseq > u) {
            self.modified.push(uid);
            return false;
        }
        let (new_flags, new_keywords) = m.after(op, flags, keywords);
        if new_flags == m.flags && new_keywords == m.keywords {
            return false;
        }
        *highest += 1;
        m.flags = new_flags;
        m.keywords = new_keywords;
        m.modseq = *highest;
        self.changed.push((uid, m.clone()));
        true
    }
}

/// Where one copy of a delivered message goes, and with which flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub mailbox: MailboxId,
    pub flags: Flags,
    pub keywords: Vec<String>,
}

/// Where one copy of a delivered message goes by name: the account's folder (its INBOX
/// when the folder does not exist), with which flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderTarget {
    pub account: String,
    pub folder: String,
    pub flags: Flags,
    pub keywords: Vec<String>,
}

/// Where a [`FolderTarget`] was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub mailbox: MailboxId,
    pub uid: u32,
    /// The folder did not exist and the account's INBOX took the message.
    pub inbox_instead: bool,
}

/// Deliveries at least this large are written with the runtime worker handed over
/// ([`blocking`]), so a long write does not hold up the worker's other sessions.
const BLOCKING_DELIVERY_SIZE: usize = 256 * 1024;

/// Runs `f`, which may block for a while, without holding up the other tasks of a
/// multi-threaded runtime's worker (`block_in_place`); inline elsewhere.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// One message as listed: where it is and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub mailbox: MailboxId,
    pub uid: u32,
    pub meta: MessageMeta,
}

#[derive(Debug)]
pub enum StoreError {
    NotFound(String),
    Exists(String),
    Invalid(String),
    /// The storage cannot take writes now: the disk or a quota is full, or the file system is
    /// read-only. Nothing was written; the same change may succeed once space returns
    /// (SMTP answers `452 4.3.1`, IMAP `NO [LIMIT]`).
    NoSpace(String),
    Backend(String),
}

impl StoreError {
    /// A store's I/O error, with the out-of-space kinds told apart from other failures.
    pub fn io(what: &str, e: &std::io::Error) -> StoreError {
        use std::io::ErrorKind::*;
        match e.kind() {
            StorageFull | QuotaExceeded | ReadOnlyFilesystem | FileTooLarge => {
                StoreError::NoSpace(format!("{what}: {e}"))
            }
            _ => StoreError::Backend(format!("{what}: {e}")),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound(s) => write!(f, "{s} not found"),
            StoreError::Exists(s) => write!(f, "{s} already exists"),
            StoreError::Invalid(s) => f.write_str(s),
            StoreError::NoSpace(s) => write!(f, "storage full or read-only: {s}"),
            StoreError::Backend(s) => write!(f, "store error: {s}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(e) => StoreError::io("sled", &e),
            e => StoreError::Backend(e.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Accounts, local domains and aliases.
pub trait Directory {
    fn create_account(&self, address: &str, password_hash: &str) -> Result<()>;
    fn delete_account(&self, address: &str) -> Result<()>;
    fn set_password(&self, address: &str, password_hash: &str) -> Result<()>;
    fn account(&self, address: &str) -> Result<Option<Account>>;
    fn accounts(&self) -> Result<Vec<Account>>;

    fn add_domain(&self, domain: &str) -> Result<()>;
    fn delete_domain(&self, domain: &str) -> Result<()>;
    fn domains(&self) -> Result<Vec<String>>;
    fn has_domain(&self, domain: &str) -> Result<bool>;

    /// Sets (replaces) the targets of an alias; `source` may be `@domain` (catch-all).
    fn set_alias(&self, source: &str, targets: &[String]) -> Result<()>;
    fn delete_alias(&self, source: &str) -> Result<()>;
    fn alias(&self, source: &str) -> Result<Option<Vec<String>>>;
    fn aliases(&self) -> Result<Vec<(String, Vec<String>)>>;
}

/// Mailboxes: names, ids, UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ, subscriptions, change notices.
pub trait Mailboxes {
    fn mailbox(&self, account: &str, name: &str) -> Result<Option<MailboxMeta>>;

    fn mailboxes(&self, account: &str) -> Result<Vec<MailboxMeta>>;

    fn mailbox_by_id(&self, id: MailboxId) -> Result<Option<MailboxMeta>>;

    /// Creates a mailbox (name as given; `INBOX` is reserved). Fails if it exists.
    fn create_mailbox(&self, account: &str, name: &str, special_use: Option<&str>) -> Result<MailboxMeta>;

    /// Deletes a mailbox and its messages (not its children: callers check hierarchy rules).
    fn delete_mailbox(&self, account: &str, name: &str) -> Result<()>;

    /// Renames a mailbox and every mailbox under it (`name/…`). Renaming INBOX moves its
    /// messages into a new mailbox and leaves INBOX empty (RFC 3501 §6.3.5).
    fn rename_mailbox(&self, account: &str, from: &str, to: &str, delimiter: char) -> Result<()>;

    /// Subscribed names; independent of whether the mailboxes exist (RFC 3501 §6.3.6).
    fn subscriptions(&self, account: &str) -> Result<Vec<String>>;

    fn set_subscribed(&self, account: &str, name: &str, subscribed: bool) -> Result<()>;

    /// A receiver that changes after every change set touching `mailbox` (new mail, flags,
    /// expunges), for IMAP IDLE and session updates.
    fn watch(&self, mailbox: MailboxId) -> tokio::sync::watch::Receiver<u64>;
}

/// Messages in mailboxes: delivery, flags, copy and move, expunge, bodies.
pub trait Messages {
    /// Stores `raw` once and adds it to every mailbox in `targets` with its flags, atomically.
    /// Returns the uid given in each mailbox, in order. Not durable until [`MailStore::sync`].
    fn deliver_to(&self, raw: &[u8], internal_date: i64, targets: &[Target]) -> Result<Vec<u32>>;

    /// [`Messages::deliver_to`] with no flags.
    fn deliver(&self, raw: &[u8], internal_date: i64, targets: &[MailboxId]) -> Result<Vec<u32>> {
        let t: Vec<Target> = targets
            .iter()
            .map(|&mailbox| Target {
                mailbox,
                ..Target::default()
            })
            .collect();
        self.deliver_to(raw, internal_date, &t)
    }

    /// Sets `flags` on messages by uid (absent uids are ignored); each changed message gets a
    /// new MODSEQ. Returns the uids changed.
    fn add_flags(&self, mailbox: MailboxId, uids: &[u32], flags: Flags) -> Result<Vec<u32>> {
        let r = self.store_flags(mailbox, uids, FlagOp::Add, flags, &[], None)?;
        Ok(r.changed.into_iter().map(|(uid, _)| uid).collect())
    }

    /// Changes flags and keywords of messages by uid (absent uids are ignored). Each message
    /// whose flags change gets a new MODSEQ; with `unchanged_since`, messages whose MODSEQ is
    /// above it are left alone and reported in [`FlagResult::modified`].
    fn store_flags(
        &self,
        mailbox: MailboxId,
        uids: &[u32],
        op: FlagOp,
        flags: Flags,
        keywords: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<FlagResult>;

    /// Copies messages (by uid, ascending; absent uids are skipped) into `to`, keeping flags
    /// and internal dates; with `remove`, removes them from `from` in the same change set
    /// (IMAP MOVE). Returns `(source uid, new uid)` pairs. Not durable until `sync`.
    fn copy_messages(&self, from: MailboxId, uids: &[u32], to: MailboxId, remove: bool) -> Result<Vec<(u32, u32)>>;

    /// Removes messages by uid (absent uids are ignored) and returns the uids removed.
    /// Bodies no longer referenced anywhere are released. Not durable until `sync`.
    fn expunge(&self, mailbox: MailboxId, uids: &[u32]) -> Result<Vec<u32>>;

    fn messages(&self, mailbox: MailboxId) -> Result<Vec<StoredMessage>>;

    fn message(&self, mailbox: MailboxId, uid: u32) -> Result<Option<StoredMessage>>;

    fn blob(&self, id: &BlobId) -> Result<Option<Vec<u8>>>;

    /// [`Messages::blob`] of several bodies, in order: one round trip for a store across
    /// the network (a FETCH of many messages reads ahead with it).
    fn blobs(&self, ids: &[BlobId]) -> Result<Vec<Option<Vec<u8>>>> {
        ids.iter().map(|id| self.blob(id)).collect()
    }

    /// Number of stored blobs (distinct message bodies), for checks and status.
    fn blob_count(&self) -> Result<usize>;
}

/// Where one recipient of a queued message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptState {
    /// Waiting for its first attempt.
    Queued,
    /// Tried, failed temporarily; tried again at `next_attempt`.
    Deferred,
    /// Accepted by the next hop.
    Delivered,
    /// Failed for good (and bounced, unless the sender is `<>`).
    Failed,
    /// Kept back (quarantine, ETRN, `queue hold`) until released.
    Held,
}

impl RcptState {
    /// Still to be delivered (now or later).
    pub fn pending(self) -> bool {
        matches!(self, RcptState::Queued | RcptState::Deferred | RcptState::Held)
    }
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedRecipient {
    pub address: String,
    /// Where it goes: `mx` or `[host]:port` (`config::outbound::NextHop`).
    pub next_hop: String,
    pub state: RcptState,
    pub attempts: u32,
    /// Unix seconds.
    pub next_attempt: i64,
    /// The last reply from the other side, or why there was none.
    pub last_reply: String,
    /// DSN (RFC 3461): `NOTIFY` as given (`NEVER`, or a list of `SUCCESS`, `FAILURE`,
    /// `DELAY`); empty: the default (failures).
    #[serde(default)]
    pub notify: Vec<String>,
    /// DSN `ORCPT`, as given.
    #[serde(default)]
    pub orcpt: Option<String>,
    /// Held for its domain's server to ask (ETRN, RFC 1985), not for a quarantine.
    #[serde(default)]
    pub etrn: bool,
}

/// A message waiting to go out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// Given by [`Queue::enqueue`].
    pub id: u64,
    /// Envelope sender; empty for `<>` (a bounce: never bounced itself).
    pub sender: String,
    /// Given by [`Queue::enqueue`]: the body's blob.
    pub blob: BlobId,
    pub size: u64,
    /// Unix seconds.
    pub arrival: i64,
    pub recipients: Vec<QueuedRecipient>,
    /// A delay warning went to the sender.
    #[serde(default)]
    pub warned: bool,
    /// DSN `ENVID` and `RET=HDRS|FULL`, as given.
    #[serde(default)]
    pub env_id: Option<String>,
    #[serde(default)]
    pub ret: Option<String>,
}

/// The outbound queue: messages with per-recipient state. Bodies are blobs shared with the
/// mailboxes (a message for local and remote recipients is stored once).
pub trait Queue {
    /// Stores `raw` and `entry` (its `id` and `blob` are set here) in one change set; returns
    /// the id. Not durable until [`MailStore::sync`].
    fn enqueue(&self, raw: &[u8], entry: QueuedMessage) -> Result<u64>;
    /// Every queued message, oldest first.
    fn queued(&self) -> Result<Vec<QueuedMessage>>;
    fn queued_message(&self, id: u64) -> Result<Option<QueuedMessage>>;
    /// Changes an entry in place, atomically with respect to every other change of it (the
    /// runner recording results while `queue hold` or ETRN change the same message): `f`
    /// runs on the stored entry under the store's writer lock and must not call the store.
    /// An entry left with no recipient pending is removed and its body released. Gives the
    /// entry as written, or `None` when there is no such entry. Not durable until
    /// [`MailStore::sync`].
    fn modify_queued(&self, id: u64, f: &mut dyn FnMut(&mut QueuedMessage)) -> Result<Option<QueuedMessage>>;
    /// Removes a message from the queue whatever its state (`queue delete`).
    fn remove_queued(&self, id: u64) -> Result<bool>;
    /// Claims queued messages (as a scan read them) for one delivery attempt by `holder`
    /// until `until` (Unix seconds): gives those granted — no other holder has an unexpired
    /// lease on them — as they stand now, which may be newer than the scan (another node may
    /// have delivered part of one meanwhile). Nodes sharing a store lease before delivering,
    /// so no two deliver one message at once, and a lease whose holder died runs out and is
    /// taken over. One node alone is granted everything, as scanned.
    fn lease_queued(&self, entries: Vec<QueuedMessage>, holder: &str, until: i64) -> Result<Vec<QueuedMessage>> {
        let _ = (holder, until);
        Ok(entries)
    }
    /// Gives up `holder`'s leases on these messages (the attempt is recorded).
    fn release_queued(&self, ids: &[u64], holder: &str) -> Result<()> {
        let _ = (ids, holder);
        Ok(())
    }
}

/// Key-value state: plugins' (greylisting and the like) and the Bayes model's.
pub trait KeyValue {
    /// Plugin key-value state (greylisting and the like). Kept in its own tree, outside the
    /// journal: it is made durable by the periodic checkpoint, not before each answer.
    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Sets (`Some`) or removes (`None`) a key.
    fn kv_set(&self, key: &str, value: Option<&[u8]>) -> Result<()>;
    /// Walks every `kv_set` entry and removes those `keep` refuses (expired plugin state);
    /// returns how many went. An entry rewritten while the walk ran stays.
    fn kv_retain(&self, keep: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<usize>;
    /// A value of any size (the Bayes model's counts: megabytes), kept as small chunks
    /// written together atomically. A large value stored whole by `kv_set` reads back too.
    fn kv_get_large(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Sets (`Some`) or removes (`None`) a value `kv_get_large` reads.
    fn kv_set_large(&self, key: &str, value: Option<&[u8]>) -> Result<()> {
        self.kv_set_large_with(key, value, &[])
    }
    /// [`kv_set_large`](Self::kv_set_large) and a `kv_set` of each of `small`, as one atomic
    /// change: after a crash either all of them are there or none (the Bayes counts and the
    /// marks of the messages they learned, which must never disagree).
    fn kv_set_large_with(&self, key: &str, value: Option<&[u8]>, small: &[(String, Option<Vec<u8>>)]) -> Result<()>;
}

/// The storage contract, by what it keeps ([`Directory`], [`Mailboxes`], [`Messages`],
/// [`KeyValue`], [`Queue`]) and how it is made durable. Methods are synchronous and fast
/// (in-memory tree operations, or one round trip to a database); async are only
/// [`MailStore::sync`], which waits for the disk, and the intake's
/// [`MailStore::deliver_to_folders`].
pub trait MailStore: Directory + Mailboxes + Messages + KeyValue + Queue + Send + Sync + 'static {
    /// One line of counters for logs (writes, flushes).
    fn stats(&self) -> String;

    /// Waits, without blocking the thread, for the caller's turn to write. The store
    /// serialises its writes behind a thread mutex (tens of µs per change set); an async
    /// caller that met it held would park its whole runtime worker in the kernel, and the
    /// worker's other tasks with it. Async writers take the turn and hold it across their
    /// write calls (docs/performance.md).
    fn write_turn(&self) -> BoxFuture<'_, WriteTurn<'_>>;

    /// Waits until every write made before the call is on disk. Concurrent callers share one
    /// flush.
    fn sync(&self) -> BoxFuture<'_, Result<()>>;

    /// Delivers `raw` into each target's folder — its account's INBOX when the folder does
    /// not exist, nowhere when the account has no INBOX (it has gone) — atomically, as
    /// [`Messages::deliver_to`] does; gives where each target went (`None`: nowhere). Not
    /// durable until [`MailStore::sync`]. Async, unlike the other changes, because it is
    /// the intake's hot path: a store across the network does it without holding the
    /// caller's thread and joins concurrent deliveries into one transaction. Callers do not
    /// take [`MailStore::write_turn`]; this does, where the store needs it.
    fn deliver_to_folders<'a>(
        &'a self,
        raw: &'a [u8],
        internal_date: i64,
        targets: &'a [FolderTarget],
    ) -> BoxFuture<'a, Result<Vec<Option<Placed>>>> {
        Box::pin(async move {
            let mut resolved = Vec::with_capacity(targets.len());
            for t in targets {
                resolved.push(match self.mailbox(&t.account, &t.folder)? {
                    Some(m) => Some((m.id, false)),
                    None => self.mailbox(&t.account, "INBOX")?.map(|m| (m.id, true)),
                });
            }
            let to: Vec<Target> = targets
                .iter()
                .zip(&resolved)
                .filter_map(|(t, r)| {
                    r.map(|(mailbox, _)| Target {
                        mailbox,
                        flags: t.flags,
                        keywords: t.keywords.clone(),
                    })
                })
                .collect();
            if to.is_empty() {
                return Ok(vec![None; targets.len()]);
            }
            let _turn = self.write_turn().await;
            let uids = if raw.len() >= BLOCKING_DELIVERY_SIZE {
                blocking(|| self.deliver_to(raw, internal_date, &to))?
            } else {
                self.deliver_to(raw, internal_date, &to)?
            };
            let mut uids = uids.into_iter();
            Ok(resolved
                .into_iter()
                .map(|r| {
                    let (mailbox, inbox_instead) = r?;
                    Some(Placed {
                        mailbox,
                        uid: uids.next()?,
                        inbox_instead,
                    })
                })
                .collect())
        })
    }

    /// Makes everything durable in the backing store itself (not only the journal) and
    /// trims the journal; run at shutdown and periodically.
    fn checkpoint(&self) -> BoxFuture<'_, Result<()>>;

    /// Bytes free for new mail where this store keeps its files, when it keeps them on a
    /// local file system (the embedded store); `None` for a store elsewhere (a database
    /// server watches its own disk) or when it cannot be asked.
    fn free_space(&self) -> Option<u64> {
        None
    }

    /// Takes the POP3 maildrop lock of `account` (RFC 1939 §8) for as long as the guard
    /// lives, against every session on every node sharing the store; `None` while another
    /// session holds it.
    fn lock_maildrop(&self, account: &str) -> Result<Option<locks::MaildropLock>>;

    /// Waits for, then holds, the lock called `name` against every caller on every node
    /// sharing the store until the guard drops: for read-modify-writes of one shared value
    /// (the Bayes counts users' judgements update). Hold it briefly; it blocks the thread.
    fn exclusive(&self, name: &str) -> Result<locks::Exclusive>;
}

/// The id of a message body: the SHA-256 of its bytes.
pub fn blob_id(raw: &[u8]) -> BlobId {
    use sha2::Digest;
    sha2::Sha256::digest(raw).into()
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Bytes free for unprivileged writers on the file system holding `dir` (`statvfs`), or `None`
/// when it cannot be asked.
pub fn free_space_at(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is a buffer of the right type, which
    // statvfs fills completely when it returns 0.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}
