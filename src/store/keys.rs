//! The on-disk key layout, in one place.
//!
//! Metadata lives in one sled tree (`mail`); message bodies live in the journal segments
//! (`store.journal/NNNN.wal`, see [`super::journal`]) and sled keeps a pointer to them. Keys
//! start with a one-byte tag; integers are big-endian so range scans come back in numeric
//! order. Change sets are made atomic by the journal, not by sled batches.
//!
//! | tag | key after the tag | value |
//! |---|---|---|
//! | `A` | address (`local@domain`, lower case) | JSON [`super::Account`] |
//! | `D` | domain (lower case) | empty |
//! | `L` | alias source (`local@domain` or `@domain` for a catch-all) | JSON list of targets |
//! | `N` | account `0x00` mailbox name | mailbox id, u64 |
//! | `B` | mailbox id, u64 | JSON [`super::MailboxMeta`] |
//! | `G` | mailbox id u64, uid u64 | [`super::MessageMeta`], binary (see `MessageMeta::encode`) |
//! | `O` | blob id (SHA-256 of the message bytes) | body pointer: segment u64, offset u64, length u64 |
//! | `R` | blob id | reference count, u64 |
//! | `S` | account `0x00` mailbox name | empty (IMAP subscription) |
//! | `Q` | queue id, u64 | JSON [`super::QueuedMessage`] (its body is a blob like a stored message's, counted in `R`) |
//! | `C` | counter name | u64 (`mailbox` = last mailbox id, `queue` = last queue id) |
//! | `V` | `schema` | layout version, u64 |
//! | `V` | `applied` | sequence number of the last change set before the checkpoint position (set at checkpoints) |
//! | `V` | `checkpoint` | journal position (segment u64, offset u64) replay starts from |
//!
//! The value formats change only with a bump of [`SCHEMA_VERSION`].

pub const SCHEMA_VERSION: u64 = 1;

pub const ACCOUNT: u8 = b'A';
pub const DOMAIN: u8 = b'D';
pub const ALIAS: u8 = b'L';
pub const MAILBOX_NAME: u8 = b'N';
pub const MAILBOX: u8 = b'B';
pub const MESSAGE: u8 = b'G';
pub const BLOB: u8 = b'O';
pub const BLOB_REFS: u8 = b'R';
pub const COUNTER: u8 = b'C';
pub const QUEUED: u8 = b'Q';
pub const SUBSCRIPTION: u8 = b'S';
pub const VERSION: u8 = b'V';

pub fn tagged(tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(tag);
    k.extend_from_slice(rest);
    k
}

pub fn queued(id: u64) -> Vec<u8> {
    tagged(QUEUED, &id.to_be_bytes())
}

pub fn account(address: &str) -> Vec<u8> {
    tagged(ACCOUNT, address.as_bytes())
}

pub fn domain(domain: &str) -> Vec<u8> {
    tagged(DOMAIN, domain.as_bytes())
}

pub fn alias(source: &str) -> Vec<u8> {
    tagged(ALIAS, source.as_bytes())
}

/// Prefix of all mailbox names of one account.
pub fn mailbox_names_of(account: &str) -> Vec<u8> {
    let mut k = tagged(MAILBOX_NAME, account.as_bytes());
    k.push(0);
    k
}

pub fn mailbox_name(account: &str, name: &str) -> Vec<u8> {
    let mut k = mailbox_names_of(account);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Prefix of all subscriptions of one account.
pub fn subscriptions_of(account: &str) -> Vec<u8> {
    let mut k = tagged(SUBSCRIPTION, account.as_bytes());
    k.push(0);
    k
}

pub fn subscription(account: &str, name: &str) -> Vec<u8> {
    let mut k = subscriptions_of(account);
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn mailbox(id: u64) -> Vec<u8> {
    tagged(MAILBOX, &id.to_be_bytes())
}

/// Prefix of all messages of one mailbox.
pub fn messages_of(mailbox: u64) -> Vec<u8> {
    tagged(MESSAGE, &mailbox.to_be_bytes())
}

pub fn message(mailbox: u64, uid: u32) -> Vec<u8> {
    let mut k = messages_of(mailbox);
    k.extend_from_slice(&u64::from(uid).to_be_bytes());
    k
}

/// The mailbox a message key belongs to.
pub fn mailbox_of_message_key(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(1..9)?.try_into().ok()?))
}

/// The uid at the end of a message key.
pub fn uid_of_message_key(k: &[u8]) -> Option<u32> {
    let tail: [u8; 8] = k.get(9..17)?.try_into().ok()?;
    u32::try_from(u64::from_be_bytes(tail)).ok()
}

pub fn blob(id: &[u8; 32]) -> Vec<u8> {
    tagged(BLOB, id)
}

pub fn blob_refs(id: &[u8; 32]) -> Vec<u8> {
    tagged(BLOB_REFS, id)
}

pub fn counter(name: &str) -> Vec<u8> {
    tagged(COUNTER, name.as_bytes())
}

pub fn version() -> Vec<u8> {
    tagged(VERSION, b"schema")
}

pub fn u64_value(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_be_bytes).unwrap_or(0)
}
