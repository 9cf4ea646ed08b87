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

    pub(super) async fn append(&mut self, name: &str, flags: &[String], date: Option<i64>, message: Vec<u8>) -> Reply {
        let name = self.mailbox_arg(name)?;
        let Some(mb) = self.shared.store.mailbox(self.account(), &name)? else {
            return no(format!("[TRYCREATE] Mailbox {name} does not exist"));
        };
        if message.is_empty() {
            return no("An empty message cannot be appended");
        }
        let (bits, keywords) = parse_flags(flags)?;
        let target = Target {
            mailbox: mb.id,
            flags: bits,
            keywords,
        };
        let date = date.unwrap_or_else(crate::store::now_secs);
        let uids = {
            let _turn = self.shared.store.write_turn().await;
            self.shared.store.deliver_to(&message, date, &[target])?
        };
        self.shared.store.sync().await?;
        if mb.special_use.as_deref() == Some("\\Junk") {
            self.learn(crate::store::blob_id(&message), true);
        }
        let uid = uids.first().copied().unwrap_or(0);
        Ok(format!("[APPENDUID {} {uid}] APPEND completed", mb.uidvalidity))
    }
}
