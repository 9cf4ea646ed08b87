//! State about stored mail that outlives one command but not the process: the POP3
//! maildrop lock (RFC 1939 §8) and which messages are still `\Recent` to IMAP (RFC 3501).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Accounts with an open POP3 session on this node; a second session gets `-ERR [IN-USE]`
/// (RFC 1939 §8: the maildrop is locked for the session).
pub type Maildrops = Arc<Mutex<HashSet<String>>>;

/// Holds an account's maildrop lock ([`crate::store::MailStore::lock_maildrop`]); released
/// on drop, however the session ends. What it holds depends on the store: this node's
/// [`LocalMaildrop`], and for a shared store the lock other nodes see as well.
pub struct MaildropLock(#[allow(dead_code)] Box<dyn Send + Sync>);

impl MaildropLock {
    pub fn new(guard: impl Send + Sync + 'static) -> MaildropLock {
        MaildropLock(Box::new(guard))
    }
}

/// The notice id for changes to `account`'s list of mailboxes (created, deleted, renamed,
/// subscribed or not): watched like a mailbox ([`crate::store::Mailboxes::watch`]). Mailbox
/// ids never reach 2^63, so these never meet one; two accounts sharing one only wake each
/// other's watchers needlessly.
pub fn mailbox_list_notice(account: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    account.to_ascii_lowercase().hash(&mut h);
    (1 << 63) | (h.finish() >> 1)
}

/// Change notices per mailbox, kept only for mailboxes someone watches
/// ([`crate::store::Mailboxes::watch`]); every backend's.
#[derive(Default)]
pub struct Watchers {
    map: Mutex<HashMap<u64, tokio::sync::watch::Sender<u64>>>,
    /// Notices sent (the value receivers see change).
    sent: std::sync::atomic::AtomicU64,
}

impl Watchers {
    /// A receiver that changes after every notice for `mailbox`.
    pub fn watch(&self, mailbox: u64) -> tokio::sync::watch::Receiver<u64> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, tx| tx.receiver_count() > 0);
        map.entry(mailbox)
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .subscribe()
    }

    /// Tells the watchers of these mailboxes that they changed.
    pub fn notify(&self, ids: impl IntoIterator<Item = u64>) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return;
        }
        for id in ids {
            if let Some(tx) = map.get(&id) {
                tx.send_replace(self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
            }
        }
    }

    /// Tells every watcher (after notices may have been lost).
    pub fn notify_all(&self) {
        let ids: Vec<u64> = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        self.notify(ids);
    }
}

/// A named lock held across every node sharing the store
/// ([`crate::store::MailStore::exclusive`]); released on drop.
pub struct Exclusive(#[allow(dead_code)] Box<dyn Send + Sync>);

impl Exclusive {
    pub fn new(guard: impl Send + Sync + 'static) -> Exclusive {
        Exclusive(Box::new(guard))
    }
}

/// Named locks within one process: the names held, and a condition to wait on.
#[derive(Default)]
pub struct LocalNames {
    held: Mutex<HashSet<String>>,
    freed: std::sync::Condvar,
}

impl LocalNames {
    /// Blocks until `name` is free, then holds it until the guard drops.
    pub fn lock(self: &Arc<Self>, name: &str) -> LocalName {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        while held.contains(name) {
            held = self.freed.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        held.insert(name.to_string());
        LocalName {
            names: self.clone(),
            name: name.to_string(),
        }
    }
}

pub struct LocalName {
    names: Arc<LocalNames>,
    name: String,
}

impl Drop for LocalName {
    fn drop(&mut self) {
        self.names
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
        self.names.freed.notify_all();
    }
}

/// This node's hold on an account's maildrop.
pub struct LocalMaildrop {
    set: Maildrops,
    account: String,
}

impl LocalMaildrop {
    pub fn try_new(set: &Maildrops, account: &str) -> Option<LocalMaildrop> {
        let mut held = set.lock().unwrap_or_else(|p| p.into_inner());
        if !held.insert(account.to_string()) {
            return None;
        }
        Some(LocalMaildrop {
            set: set.clone(),
            account: account.to_string(),
        })
    }
}

impl Drop for LocalMaildrop {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.account);
    }
}

/// Which messages are still `\Recent` (RFC 3501 §2.3.2): per mailbox, the lowest UID no
/// session has claimed yet. The first session that selects the mailbox read-write (or has
/// new mail reported while it is selected) claims everything below the mailbox's next UID;
/// EXAMINE and STATUS only look. In memory: after a restart, messages that arrived since the
/// start (by internal date) are recent again.
pub struct RecentClaims {
    started: i64,
    first_unclaimed: Mutex<HashMap<u64, u32>>,
}

impl RecentClaims {
    pub fn new(started: i64) -> RecentClaims {
        RecentClaims {
            started,
            first_unclaimed: Mutex::default(),
        }
    }

    /// Where a mailbox seen for the first time starts: its lowest UID among `messages`
    /// (UID, internal date) that arrived since the process started, else `next_uid`.
    fn first_new(&self, messages: impl IntoIterator<Item = (u32, i64)>, next_uid: u32) -> u32 {
        messages
            .into_iter()
            .filter(|&(_, date)| date >= self.started)
            .map(|(uid, _)| uid)
            .min()
            .unwrap_or(next_uid)
    }

    /// The lowest UID of `mailbox` nobody has claimed. `messages` (UID, internal date) and
    /// `next_uid` are read only the first time the mailbox is seen.
    pub fn peek(&self, mailbox: u64, messages: impl IntoIterator<Item = (u32, i64)>, next_uid: u32) -> u32 {
        let mut m = self.first_unclaimed.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(mailbox).or_insert_with(|| self.first_new(messages, next_uid))
    }

    /// Claims every UID below `upto` for the caller: its recent messages are those from the
    /// returned UID up to `upto`; nobody else gets them.
    pub fn claim(&self, mailbox: u64, upto: u32, messages: impl IntoIterator<Item = (u32, i64)>) -> u32 {
        let mut m = self.first_unclaimed.lock().unwrap_or_else(|p| p.into_inner());
        let first = m.entry(mailbox).or_insert_with(|| self.first_new(messages, upto));
        let from = *first;
        *first = (*first).max(upto);
        from
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_session_claims_recent_messages() {
        let r = RecentClaims::new(100);
        // First look: messages from UID 5 arrived since the start.
        assert_eq!(r.peek(1, [(4, 99), (5, 100), (6, 150)], 7), 5);
        assert_eq!(r.claim(1, 9, []), 5, "the first claimer gets 5..9");
        assert_eq!(r.claim(1, 9, []), 9, "the second gets none");
        assert_eq!(r.claim(1, 12, []), 9, "new mail: 9..12");
        assert_eq!(r.peek(1, [], 0), 12);
        assert_eq!(r.claim(1, 3, []), 12, "never goes back");
        assert_eq!(r.peek(2, [(1, 50)], 2), 2, "mailboxes apart; nothing new: the next UID");
    }
}
