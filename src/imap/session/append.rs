//! APPEND, and the spam-training seam that APPEND, COPY and MOVE share.

use super::*;
use crate::imap::command::{AppendData, CatPart};

impl Session {
    pub(super) fn learn(&self, blob: crate::store::BlobId, spam: bool) {
        let _ = self.shared.learn.send(LearnEvent {
            account: self.account().to_string(),
            blob,
            spam,
        });
    }

    /// APPEND of one or more messages (MULTIAPPEND, RFC 3502): all of them or none. Every
    /// message is checked (and CATENATE's parts put together, RFC 4469) before any is stored;
    /// should storing fail part-way, the ones stored are expunged again before anything is
    /// flushed.
    pub(super) async fn append(&mut self, name: &str, messages: Vec<AppendMessage>) -> Reply {
        let name = self.mailbox_arg(name)?;
        let Some(mb) = self.shared.store.mailbox(self.account(), &name)? else {
            return no(format!("[TRYCREATE] Mailbox {name} does not exist"));
        };
        let mut prepared = Vec::with_capacity(messages.len());
        let mut total = 0usize;
        for m in messages {
            let message = match m.data {
                AppendData::Literal(bytes) => bytes,
                AppendData::Catenate(parts) => self.catenate(&parts)?,
            };
            if message.is_empty() {
                return no("An empty message cannot be appended");
            }
            total += message.len();
            if total > self.cfg.max_append_bytes {
                return no(format!(
                    "[TOOBIG] The message is larger than the limit of {} octets",
                    self.cfg.max_append_bytes
                ));
            }
            let (bits, keywords) = parse_flags(&m.flags)?;
            let target = Target {
                mailbox: mb.id,
                flags: bits,
                keywords,
            };
            prepared.push((message, target, m.date.unwrap_or_else(crate::store::now_secs)));
        }
        let mut uids: Vec<u32> = Vec::with_capacity(prepared.len());
        {
            let _turn = self.shared.store.write_turn().await;
            for (message, target, date) in &prepared {
                match self
                    .shared
                    .store
                    .deliver_to(message, *date, std::slice::from_ref(target))
                {
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
            for (message, _, _) in &prepared {
                self.learn(crate::store::blob_id(message), true);
            }
        }
        Ok(format!(
            "[APPENDUID {} {}] APPEND completed",
            mb.uidvalidity,
            search::compress(&uids)
        ))
    }

    /// CATENATE's parts joined: text as given, each URL replaced by what it names in this
    /// user's mailboxes, or `NO [BADURL "url"]`.
    fn catenate(&self, parts: &[CatPart]) -> Result<Vec<u8>, Fail> {
        let mut out = Vec::new();
        for part in parts {
            match part {
                CatPart::Text(t) => out.extend_from_slice(t),
                CatPart::Url(u) => match self.url_content(u) {
                    Ok(bytes) => out.extend_from_slice(&bytes),
                    Err(why) => return no(format!("[BADURL \"{}\"] {why}", u.replace(['"', '\\'], ""))),
                },
            }
            if out.len() > self.cfg.max_append_bytes {
                return no(format!(
                    "[TOOBIG] The message is larger than the limit of {} octets",
                    self.cfg.max_append_bytes
                ));
            }
        }
        Ok(out)
    }
}
