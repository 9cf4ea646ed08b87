//! COPY and MOVE (RFC 6851), with their UID forms.

use super::*;

impl Session {
    pub(super) async fn copy(&mut self, set: &SeqSet, name: &str, uid: bool, remove: bool) -> Reply {
        let name = self.mailbox_arg(name)?;
        let account = self.account().to_string();
        let store = self.shared.store.clone();
        let Some(dst) = store.mailbox(&account, &name)? else {
            return no(format!("[TRYCREATE] Mailbox {name} does not exist"));
        };
        let sel = self.selected();
        if remove && sel.read_only {
            return no("[READ-ONLY] Mailbox is read-only");
        }
        let idx = sel.resolve(set, uid).map_err(Fail::Bad)?;
        let uids: Vec<u32> = idx.iter().map(|&i| sel.msgs[i].uid).collect();
        let blobs: Vec<(u32, crate::store::BlobId)> =
            idx.iter().map(|&i| (sel.msgs[i].uid, sel.msgs[i].meta.blob)).collect();
        let src = sel.mailbox.clone();
        if uids.is_empty() {
            return Ok(if remove { "MOVE completed" } else { "COPY completed" }.into());
        }
        let pairs = store.copy_messages(src.id, &uids, dst.id, remove)?;
        store.sync().await?;
        // Training signals: into Junk is spam; out of Junk (not into Trash) is ham.
        let junk = |m: &MailboxMeta| m.special_use.as_deref() == Some("\\Junk");
        let trash = dst.special_use.as_deref() == Some("\\Trash");
        let verdict = if junk(&dst) && !junk(&src) {
            Some(true)
        } else if junk(&src) && !junk(&dst) && !trash {
            Some(false)
        } else {
            None
        };
        if let Some(spam) = verdict {
            for (u, _) in &pairs {
                if let Some((_, b)) = blobs.iter().find(|(x, _)| x == u) {
                    self.learn(*b, spam);
                }
            }
        }
        let from: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let to: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        let code = format!(
            "[COPYUID {} {} {}]",
            dst.uidvalidity,
            search::compress(&from),
            search::compress(&to)
        );
        if remove {
            self.untagged(&format!("OK {code} Moved"));
            self.report_removed(&from);
            return Ok("MOVE completed".into());
        }
        Ok(format!("{code} COPY completed"))
    }
}
