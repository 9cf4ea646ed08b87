//! Messages: delivery, flags, copy and move, expunge, bodies.

use super::*;

impl Messages for SledStore {
    fn deliver_to(&self, raw: &[u8], internal_date: i64, targets: &[Target]) -> Result<Vec<u32>> {
        let id = blob_id(raw);
        let _w = self.lock();
        let mut batch = WriteSet::default();
        let mut uids = Vec::with_capacity(targets.len());
        let mut metas: Vec<MailboxMeta> = Vec::new();
        for t in targets {
            let mb = t.mailbox;
            // The same mailbox twice in one delivery gets two uids, from one updated record.
            let pos = match metas.iter().position(|m| m.id == mb) {
                Some(p) => p,
                None => {
                    metas.push(self.existing_mailbox(mb)?);
                    metas.len() - 1
                }
            };
            let m = &mut metas[pos];
            let uid = m.uidnext;
            m.uidnext = m
                .uidnext
                .checked_add(1)
                .ok_or_else(|| StoreError::Invalid("uid space exhausted".into()))?;
            m.highestmodseq += 1;
            let meta = MessageMeta {
                blob: id,
                size: raw.len() as u64,
                internal_date,
                modseq: m.highestmodseq,
                flags: t.flags,
                keywords: t.keywords.clone(),
            };
            batch.insert(keys::message(mb, uid), meta.encode());
            uids.push(uid);
        }
        for m in &metas {
            batch.insert(keys::mailbox(m.id), json(m));
        }
        if !self.tree.contains_key(keys::blob(&id))? {
            batch.body(&id, raw);
        }
        self.adjust_refs(&mut batch, &[(id, targets.len() as i64)])?;
        self.apply(batch)?;
        self.notify(metas.iter().map(|m| m.id));
        Ok(uids)
    }

    fn store_flags(
        &self,
        mailbox: MailboxId,
        uids: &[u32],
        op: FlagOp,
        flags: Flags,
        keywords: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<FlagResult> {
        let _w = self.lock();
        let mut meta = self.existing_mailbox(mailbox)?;
        let mut batch = WriteSet::default();
        let mut result = FlagResult::default();
        for &uid in uids {
            let k = keys::message(mailbox, uid);
            let Some(mut m) = self.tree.get(&k)?.and_then(|v| MessageMeta::decode(&v)) else {
                continue;
            };
            if result.apply(
                uid,
                &mut m,
                &mut meta.highestmodseq,
                op,
                flags,
                keywords,
                unchanged_since,
            ) {
                batch.insert(k, m.encode());
            }
        }
        if !result.changed.is_empty() {
            batch.insert(keys::mailbox(mailbox), json(&meta));
            self.apply(batch)?;
            self.notify([mailbox]);
        }
        Ok(result)
    }

    fn copy_messages(&self, from: MailboxId, uids: &[u32], to: MailboxId, remove: bool) -> Result<Vec<(u32, u32)>> {
        let _w = self.lock();
        let mut src = self.existing_mailbox(from)?;
        let mut dst = self.existing_mailbox(to)?;
        let mut batch = WriteSet::default();
        let mut pairs = Vec::new();
        let mut refs = Vec::new();
        let mut sorted = uids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        for uid in sorted {
            let k = keys::message(from, uid);
            let Some(mut m) = self.tree.get(&k)?.and_then(|v| MessageMeta::decode(&v)) else {
                continue;
            };
            let new_uid = dst.uidnext;
            dst.uidnext = dst
                .uidnext
                .checked_add(1)
                .ok_or_else(|| StoreError::Invalid("uid space exhausted".into()))?;
            dst.highestmodseq += 1;
            m.modseq = dst.highestmodseq;
            batch.insert(keys::message(to, new_uid), m.encode());
            if remove {
                batch.remove(k);
            } else {
                refs.push((m.blob, 1));
            }
            pairs.push((uid, new_uid));
        }
        if pairs.is_empty() {
            return Ok(pairs);
        }
        if remove {
            src.highestmodseq += 1;
            batch.insert(keys::mailbox(from), json(&src));
        }
        batch.insert(keys::mailbox(to), json(&dst));
        self.adjust_refs(&mut batch, &refs)?;
        self.apply(batch)?;
        self.notify([from, to]);
        Ok(pairs)
    }

    fn expunge(&self, mailbox: MailboxId, uids: &[u32]) -> Result<Vec<u32>> {
        let _w = self.lock();
        let mut meta = self.existing_mailbox(mailbox)?;
        let mut batch = WriteSet::default();
        let mut removed = Vec::new();
        let mut unref = Vec::new();
        for &uid in uids {
            let k = keys::message(mailbox, uid);
            if let Some(m) = self.tree.get(&k)?.and_then(|v| MessageMeta::decode(&v)) {
                batch.remove(k);
                unref.push((m.blob, -1));
                removed.push(uid);
            }
        }
        if removed.is_empty() {
            return Ok(removed);
        }
        meta.highestmodseq += 1;
        batch.insert(keys::mailbox(mailbox), json(&meta));
        let gone = self.adjust_refs(&mut batch, &unref)?;
        self.apply_with(batch, gone)?;
        self.notify([mailbox]);
        Ok(removed)
    }

    fn messages(&self, mailbox: MailboxId) -> Result<Vec<StoredMessage>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(keys::messages_of(mailbox)) {
            let (k, v) = item?;
            let (Some(uid), Some(meta)) = (keys::uid_of_message_key(&k), MessageMeta::decode(&v)) else {
                return Err(StoreError::Backend("corrupt message record".into()));
            };
            out.push(StoredMessage { mailbox, uid, meta });
        }
        Ok(out)
    }

    fn message(&self, mailbox: MailboxId, uid: u32) -> Result<Option<StoredMessage>> {
        Ok(self
            .tree
            .get(keys::message(mailbox, uid))?
            .and_then(|v| MessageMeta::decode(&v))
            .map(|meta| StoredMessage { mailbox, uid, meta }))
    }

    fn blob(&self, id: &BlobId) -> Result<Option<Vec<u8>>> {
        let ptr_of =
            || -> Result<Option<BodyPtr>> { Ok(self.tree.get(keys::blob(id))?.and_then(|v| BodyPtr::decode(&v))) };
        let Some(ptr) = ptr_of()? else { return Ok(None) };
        match self.journal.read(&ptr) {
            // Its segment deleted between the lookup and the read: the body was removed, or
            // moved by a compaction, meanwhile. Look again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match ptr_of()? {
                Some(moved) if moved != ptr => self.journal.read(&moved).map(Some).map_err(Inner::io),
                Some(_) => Err(Inner::io(e)),
                None => Ok(None),
            },
            r => r.map(Some).map_err(Inner::io),
        }
    }

    fn blob_count(&self) -> Result<usize> {
        Ok(self.tree.scan_prefix([keys::BLOB]).count())
    }
}
