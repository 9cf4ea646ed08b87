//! The outbound queue: one JSON record per message, its body a counted blob.

use super::*;

impl Queue for SledStore {
    fn enqueue(&self, raw: &[u8], mut entry: QueuedMessage) -> Result<u64> {
        let blob = blob_id(raw);
        let _w = self.lock();
        let mut batch = WriteSet::default();
        entry.id = self.reserve_ids(&mut batch, "queue", 1)?;
        entry.blob = blob;
        entry.size = raw.len() as u64;
        if !self.tree.contains_key(keys::blob(&blob))? {
            batch.body(&blob, raw);
        }
        self.adjust_refs(&mut batch, &[(blob, 1)])?;
        batch.insert(keys::queued(entry.id), json(&entry));
        self.apply(batch)?;
        Ok(entry.id)
    }

    fn queued(&self) -> Result<Vec<QueuedMessage>> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix([keys::QUEUED]) {
            let (_, v) = kv?;
            out.push(from_json("queue", &v)?);
        }
        Ok(out)
    }

    fn queued_message(&self, id: u64) -> Result<Option<QueuedMessage>> {
        self.tree
            .get(keys::queued(id))?
            .map(|v| from_json("queue", &v))
            .transpose()
    }

    fn modify_queued(&self, id: u64, f: &mut dyn FnMut(&mut QueuedMessage)) -> Result<Option<QueuedMessage>> {
        let _w = self.lock();
        let Some(v) = self.tree.get(keys::queued(id))? else {
            return Ok(None);
        };
        let mut entry: QueuedMessage = from_json("queue", &v)?;
        f(&mut entry);
        let mut batch = WriteSet::default();
        if entry.recipients.iter().any(|r| r.state.pending()) {
            batch.insert(keys::queued(id), json(&entry));
            self.apply(batch)?;
        } else {
            batch.remove(keys::queued(id));
            let gone = self.adjust_refs(&mut batch, &[(entry.blob, -1)])?;
            self.apply_with(batch, gone)?;
        }
        Ok(Some(entry))
    }

    fn remove_queued(&self, id: u64) -> Result<bool> {
        let _w = self.lock();
        let Some(v) = self.tree.get(keys::queued(id))? else {
            return Ok(false);
        };
        let entry: QueuedMessage = from_json("queue", &v)?;
        let mut batch = WriteSet::default();
        batch.remove(keys::queued(id));
        let gone = self.adjust_refs(&mut batch, &[(entry.blob, -1)])?;
        self.apply_with(batch, gone)?;
        Ok(true)
    }
}
