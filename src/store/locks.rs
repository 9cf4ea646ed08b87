//! Locks on stored state that outlive one command: the POP3 maildrop lock (RFC 1939 §8).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Accounts with an open POP3 session; a second session gets `-ERR [IN-USE]` (RFC 1939 §8:
/// the maildrop is locked for the session).
pub type Maildrops = Arc<Mutex<HashSet<String>>>;

/// Holds an account's maildrop lock; released on drop, however the session ends.
pub struct MaildropLock {
    set: Maildrops,
    account: String,
}

impl MaildropLock {
    pub fn try_new(set: &Maildrops, account: &str) -> Option<MaildropLock> {
        let mut held = set.lock().unwrap_or_else(|p| p.into_inner());
        if !held.insert(account.to_string()) {
            return None;
        }
        Some(MaildropLock {
            set: set.clone(),
            account: account.to_string(),
        })
    }
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.account);
    }
}
