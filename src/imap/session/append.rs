//! APPEND, and the spam-training seam that APPEND, COPY and MOVE share.

use super::*;

impl Session {
    pub(super) fn learn(&self, blob: crate::store::BlobId, spam: bool) {
        let _ = self.shared.learn.send(LearnEvent {
            account: self.account().to_string(),
            blob,
            spam,
        });
    }

    /// APPEND of one or more messages (MULTIAPPEND, RFC 3502): all of them or none. Every
    /// message is checked before any is stored; should storing fail part-way, the ones
    /// stored are expunged again before anything is flushed.
    pub(super) async fn append(&mut self, name: &str, messages: Vec<AppendMessage>) -> Reply {
        let name = self.mailbox_arg(name)?;
        let Some(mb) = self.shared.store.mailbox(self.account(), &name)? else {
            return no(format!("[TRYCREATE] Mailbox {name} does not exist"));
        };
        let mut prepared = Vec::with_capacity(messages.len());
        for m in &messages {
            if m.message.is_empty() {
                return no("An empty message cannot be appended");
            }
            let (bits, keywords) = parse_flags(&m.flags)?;
            let target = Target {
                mailbox: mb.id,
                flags: bits,
                keywords,
            };
            prepared.push((target, m.date.unwrap_or_else(crate::store::now_secs)));
        }
        let mut uids: Vec<u32> = Vec::with_capacity(messages.len());
        {
            let _turn = self.shared.store.write_turn().await;
            for (m, (target, date)) in messages.iter().zip(prepared) {
                match self.shared.store.deliver_to(&m.message, date, &[target]) {
                    Ok(u) => uids.extend(u.first().copied()),
                    Err(e) => {
                        if !uids.is_empty() {
                            let _ = self.shared.store.expunge(mb.id, &uids);
                        }
                        return Err(e.into());
                    }
                }
            }
        }
        self.shared.store.sync().await?;
        if mb.special_use.as_deref() == Some("\\Junk") {
            for m in &messages {
                self.learn(crate::store::blob_id(&m.message), true);
            }
        }
        Ok(format!(
            "[APPENDUID {} {}] APPEND completed",
            mb.uidvalidity,
            search::compress(&uids)
        ))
    }
}
