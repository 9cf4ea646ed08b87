//! Mailbox store: accounts, domains, aliases, mailboxes, messages and blobs.
//!
//! [`MailStore`] is the contract; [`SledStore`] implements it on sled (key layout in
//! [`keys`]). Writes are applied atomically at once but are only *durable* after
//! [`MailStore::sync`] returns: callers acknowledge a message (SMTP 250, IMAP APPEND OK, POP3
//! update) only after that. Concurrent callers share one flush (group commit).

pub mod journal;
pub mod keys;
mod message_meta;
mod sled_store;

pub use message_meta::{Flags, MessageMeta};
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
    pub subscribed: bool,
}

/// Where one copy of a delivered message goes, and with which flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub mailbox: MailboxId,
    pub flags: Flags,
    pub keywords: Vec<String>,
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
    Backend(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound(s) => write!(f, "{s} not found"),
            StoreError::Exists(s) => write!(f, "{s} already exists"),
            StoreError::Invalid(s) => f.write_str(s),
            StoreError::Backend(s) => write!(f, "store error: {s}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The storage contract. Methods are synchronous and fast (in-memory tree operations);
/// only [`MailStore::sync`], which waits for the disk, is async.
pub trait MailStore: Send + Sync + 'static {
    // --- directory ---
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

    // --- mailboxes and messages ---
    fn mailbox(&self, account: &str, name: &str) -> Result<Option<MailboxMeta>>;
    fn mailboxes(&self, account: &str) -> Result<Vec<MailboxMeta>>;
    /// Stores `raw` once and adds it to every mailbox in `targets` with its flags, atomically.
    /// Returns the uid given in each mailbox, in order. Not durable until [`MailStore::sync`].
    fn deliver_to(&self, raw: &[u8], internal_date: i64, targets: &[Target]) -> Result<Vec<u32>>;

    /// [`MailStore::deliver_to`] with no flags.
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
    fn add_flags(&self, mailbox: MailboxId, uids: &[u32], flags: Flags) -> Result<Vec<u32>>;

    /// Removes messages by uid (absent uids are ignored) and returns the uids removed.
    /// Bodies no longer referenced anywhere are released. Not durable until `sync`.
    fn expunge(&self, mailbox: MailboxId, uids: &[u32]) -> Result<Vec<u32>>;
    fn messages(&self, mailbox: MailboxId) -> Result<Vec<StoredMessage>>;
    fn message(&self, mailbox: MailboxId, uid: u32) -> Result<Option<StoredMessage>>;
    fn blob(&self, id: &BlobId) -> Result<Option<Vec<u8>>>;
    /// Number of stored blobs (distinct message bodies), for checks and status.
    fn blob_count(&self) -> Result<usize>;

    /// Plugin key-value state (greylisting and the like). Kept in its own tree, outside the
    /// journal: it is made durable by the periodic checkpoint, not before each answer.
    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Sets (`Some`) or removes (`None`) a key.
    fn kv_set(&self, key: &str, value: Option<&[u8]>) -> Result<()>;

    /// One line of counters for logs (writes, flushes).
    fn stats(&self) -> String;

    /// Waits until every write made before the call is on disk. Concurrent callers share one
    /// flush.
    fn sync(&self) -> BoxFuture<'_, Result<()>>;

    /// Makes everything durable in the backing store itself (not only the journal) and
    /// trims the journal; run at shutdown and periodically.
    fn checkpoint(&self) -> BoxFuture<'_, Result<()>>;
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
