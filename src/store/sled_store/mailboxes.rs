//! Mailboxes, subscriptions and change notices.

use super::*;
use crate::store::locks::mailbox_list_notice;

impl Mailboxes for SledStore {
    fn mailbox(&self, account: &str, name: &str) -> Result<Option<MailboxMeta>> {
        let name = if name.eq_ignore_ascii_case("INBOX") {
            "INBOX"
        } else {
            name
        };
        match self.get(&keys::mailbox_name(account, name))? {
            Some(id) => self.mailbox_meta(u64_value(&id)),
            None => Ok(None),
        }
    }

    fn mailboxes(&self, account: &str) -> Result<Vec<MailboxMeta>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(keys::mailbox_names_of(account)) {
            let (_, id) = item?;
            if let Some(m) = self.mailbox_meta(u64_value(&id))? {
                out.push(m);
            }
        }
        Ok(out)
    }

    fn mailbox_by_id(&self, id: MailboxId) -> Result<Option<MailboxMeta>> {
        self.mailbox_meta(id)
    }

    fn create_mailbox(&self, account: &str, name: &str, special_use: Option<&str>) -> Result<MailboxMeta> {
        if name.is_empty() || name.eq_ignore_ascii_case("INBOX") {
            return Err(StoreError::Invalid(format!("cannot create {name:?}")));
        }
        let _w = self.lock();
        if !self.tree.contains_key(keys::account(account))? {
            return Err(StoreError::NotFound(format!("account {account}")));
        }
        if self.tree.contains_key(keys::mailbox_name(account, name))? {
            return Err(StoreError::Exists(format!("mailbox {name}")));
        }
        let mut batch = WriteSet::default();
        let id = self.reserve_ids(&mut batch, "mailbox", 1)?;
        let meta = Inner::new_mailbox(&mut batch, id, account, name, special_use);
        self.apply(batch)?;
        self.notify([mailbox_list_notice(account)]);
        Ok(meta)
    }

    fn delete_mailbox(&self, account: &str, name: &str) -> Result<()> {
        if name.eq_ignore_ascii_case("INBOX") {
            return Err(StoreError::Invalid("INBOX cannot be deleted".into()));
        }
        let _w = self.lock();
        let meta = self
            .mailbox(account, name)?
            .ok_or_else(|| StoreError::NotFound(format!("mailbox {name}")))?;
        let mut batch = WriteSet::default();
        let mut unref = Vec::new();
        self.remove_mailbox(&mut batch, &meta, &mut unref)?;
        let changes: Vec<_> = unref.into_iter().map(|b| (b, -1)).collect();
        let gone = self.adjust_refs(&mut batch, &changes)?;
        self.apply_with(batch, gone)?;
        self.notify([meta.id, mailbox_list_notice(account)]);
        Ok(())
    }

    fn rename_mailbox(&self, account: &str, from: &str, to: &str, delimiter: char) -> Result<()> {
        if to.is_empty() || to.eq_ignore_ascii_case("INBOX") {
            return Err(StoreError::Invalid(format!("cannot rename to {to:?}")));
        }
        let _w = self.lock();
        let source = self
            .mailbox(account, from)?
            .ok_or_else(|| StoreError::NotFound(format!("mailbox {from}")))?;
        if self.tree.contains_key(keys::mailbox_name(account, to))? {
            return Err(StoreError::Exists(format!("mailbox {to}")));
        }
        let mut batch = WriteSet::default();
        if source.name == "INBOX" {
            // INBOX stays (empty); its messages move to a new mailbox with the new name.
            let id = self.reserve_ids(&mut batch, "mailbox", 1)?;
            let mut target = Inner::new_mailbox(&mut batch, id, account, to, None);
            let mut inbox = source.clone();
            for item in self.tree.scan_prefix(keys::messages_of(source.id)) {
                let (k, v) = item?;
                let Some(mut m) = MessageMeta::decode(&v) else { continue };
                target.highestmodseq += 1;
                m.modseq = target.highestmodseq;
                batch.insert(keys::message(id, target.uidnext), m.encode());
                target.uidnext += 1;
                batch.remove(k);
            }
            inbox.highestmodseq += 1;
            batch.insert(keys::mailbox(id), json(&target));
            batch.insert(keys::mailbox(inbox.id), json(&inbox));
            self.apply(batch)?;
            self.notify([source.id, mailbox_list_notice(account)]);
            return Ok(());
        }
        let prefix = format!("{}{delimiter}", source.name);
        let mut moved = vec![source.clone()];
        for mb in self.mailboxes(account)? {
            if mb.name.starts_with(&prefix) {
                moved.push(mb);
            }
        }
        for mut mb in moved {
            let new_name = format!("{to}{}", &mb.name[source.name.len()..]);
            if mb.id != source.id && self.tree.contains_key(keys::mailbox_name(account, &new_name))? {
                return Err(StoreError::Exists(format!("mailbox {new_name}")));
            }
            batch.remove(keys::mailbox_name(account, &mb.name));
            batch.insert(keys::mailbox_name(account, &new_name), mb.id.to_be_bytes());
            mb.name = new_name;
            batch.insert(keys::mailbox(mb.id), json(&mb));
        }
        self.apply(batch)?;
        self.notify([mailbox_list_notice(account)]);
        Ok(())
    }

    fn subscriptions(&self, account: &str) -> Result<Vec<String>> {
        let prefix = keys::subscriptions_of(account);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (k, _) = item?;
            out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(out)
    }

    fn set_subscribed(&self, account: &str, name: &str, subscribed: bool) -> Result<()> {
        let name = if name.eq_ignore_ascii_case("INBOX") {
            "INBOX"
        } else {
            name
        };
        let _w = self.lock();
        let mut batch = WriteSet::default();
        if subscribed {
            batch.insert(keys::subscription(account, name), []);
        } else {
            batch.remove(keys::subscription(account, name));
        }
        self.apply(batch)?;
        self.notify([mailbox_list_notice(account)]);
        Ok(())
    }

    fn watch(&self, mailbox: MailboxId) -> tokio::sync::watch::Receiver<u64> {
        self.watchers.watch(mailbox)
    }
}
