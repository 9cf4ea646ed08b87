//! SELECT/EXAMINE, the snapshot and its updates (`sync`), CLOSE/UNSELECT, EXPUNGE.

use super::*;

impl Session {
    pub(super) fn load_snapshot(&self, mailbox: &MailboxMeta) -> Result<Vec<Entry>, Fail> {
        Ok(self
            .shared
            .store
            .messages(mailbox.id)?
            .into_iter()
            .map(|m| Entry {
                uid: m.uid,
                meta: m.meta,
            })
            .collect())
    }

    pub(super) fn select(&mut self, name: &str, read_only: bool, condstore: bool) -> Reply {
        if self.selected.take().is_some() {
            self.untagged("OK [CLOSED] Previous mailbox closed");
        }
        let name = self.mailbox_arg(name)?;
        let Some(mailbox) = self.shared.store.mailbox(self.account(), &name)? else {
            return no(format!("[NONEXISTENT] Mailbox {name} does not exist"));
        };
        if condstore {
            self.condstore = true;
        }
        let watch = self.shared.store.watch(mailbox.id);
        let msgs = self.load_snapshot(&mailbox)?;
        let mut keywords: Vec<String> = Vec::new();
        for e in &msgs {
            for k in &e.meta.keywords {
                if !keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    keywords.push(k.clone());
                }
            }
        }
        let flags = format!(
            "\\Answered \\Flagged \\Deleted \\Seen \\Draft{}",
            keyword_suffix(&keywords)
        );
        self.untagged(&format!("FLAGS ({flags})"));
        self.untagged(&format!("{} EXISTS", msgs.len()));
        if !self.rev2 {
            self.untagged("0 RECENT");
            if let Some(i) = msgs.iter().position(|e| !e.meta.flags.contains(Flags::SEEN)) {
                self.untagged(&format!("OK [UNSEEN {}] First unseen", i + 1));
            }
        }
        let perm = if read_only {
            "()".to_string()
        } else {
            format!("({flags} \\*)")
        };
        self.untagged(&format!("OK [PERMANENTFLAGS {perm}] Flags permitted"));
        self.untagged(&format!("OK [UIDVALIDITY {}] UIDs valid", mailbox.uidvalidity));
        self.untagged(&format!("OK [UIDNEXT {}] Predicted next UID", mailbox.uidnext));
        self.untagged(&format!("OK [HIGHESTMODSEQ {}] Highest", mailbox.highestmodseq));
        if self.rev2 {
            let name = mailbox.name.clone();
            self.write_mailbox_name("* LIST () \"/\" ", &name, "");
        }
        let mode = if read_only { "[READ-ONLY]" } else { "[READ-WRITE]" };
        let verb = if read_only { "EXAMINE" } else { "SELECT" };
        self.selected = Some(Selected {
            seen_modseq: mailbox.highestmodseq,
            pending: false,
            mailbox,
            read_only,
            msgs,
            watch,
            saved: Vec::new(),
            keywords,
        });
        Ok(format!("{mode} {verb} completed"))
    }

    /// Brings the snapshot up to date and tells the client (EXISTS, EXPUNGE, FETCH FLAGS).
    pub(super) fn sync(&mut self, expunge_ok: bool) {
        let Some(sel) = self.selected.as_mut() else { return };
        // The store signals every change set touching the mailbox: without one (or a report
        // still owed), there is nothing to read. Marked seen before reading, so a change made
        // while we read signals again.
        if !sel.pending && !sel.watch.has_changed().unwrap_or(true) {
            return;
        }
        sel.watch.borrow_and_update();
        let id = sel.mailbox.id;
        let current = match self.shared.store.mailbox_by_id(id) {
            Ok(Some(m)) => m,
            Ok(None) => {
                self.selected = None;
                self.untagged("BYE The selected mailbox was deleted or renamed away");
                self.bye = true;
                return;
            }
            Err(e) => {
                tracing::error!("IMAP sync: {e}");
                return;
            }
        };
        if current.highestmodseq == sel.seen_modseq {
            sel.pending = false;
            return;
        }
        let Ok(fresh) = self.shared.store.messages(id) else {
            return;
        };
        let sel = self.selected.as_mut().expect("checked above");
        // Which of ours are gone, which changed.
        let mut gone = Vec::new();
        let mut changed = Vec::new();
        let mut j = 0;
        for (i, e) in sel.msgs.iter().enumerate() {
            while j < fresh.len() && fresh[j].uid < e.uid {
                j += 1;
            }
            match fresh.get(j) {
                Some(f) if f.uid == e.uid => {
                    if f.meta.modseq != e.meta.modseq {
                        changed.push((i, f.meta.clone()));
                    }
                }
                _ => gone.push(i),
            }
        }
        if !gone.is_empty() && !expunge_ok {
            sel.pending = true; // reported at the next point where EXPUNGE is allowed
            return;
        }
        let mut out = Vec::new();
        for (i, meta) in changed {
            let e = &mut sel.msgs[i];
            e.meta = meta;
            let modseq = if self.condstore {
                format!(" MODSEQ ({})", e.meta.modseq)
            } else {
                String::new()
            };
            out.push(format!(
                "{} FETCH (UID {} FLAGS {}{modseq})",
                i + 1,
                e.uid,
                flag_list(&e.meta)
            ));
        }
        for &i in gone.iter().rev() {
            sel.msgs.remove(i);
            out.push(format!("{} EXPUNGE", i + 1));
        }
        let last = sel.max_uid();
        let before = sel.msgs.len();
        for f in fresh.into_iter().filter(|f| f.uid > last) {
            for k in &f.meta.keywords {
                if !sel.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    sel.keywords.push(k.clone());
                }
            }
            sel.msgs.push(Entry {
                uid: f.uid,
                meta: f.meta,
            });
        }
        if sel.msgs.len() != before || !gone.is_empty() {
            out.push(format!("{} EXISTS", sel.msgs.len()));
        }
        sel.seen_modseq = current.highestmodseq;
        sel.pending = false;
        for line in out {
            self.untagged(&line);
        }
    }

    pub(super) async fn close(&mut self, expunge: bool) -> Reply {
        let Some(sel) = self.selected.take() else {
            return bad("No mailbox selected");
        };
        if expunge && !sel.read_only {
            let uids: Vec<u32> = sel
                .msgs
                .iter()
                .filter(|e| e.meta.flags.contains(Flags::DELETED))
                .map(|e| e.uid)
                .collect();
            if !uids.is_empty() {
                self.shared.store.expunge(sel.mailbox.id, &uids)?;
                self.shared.store.sync().await?;
            }
        }
        Ok(if expunge {
            "CLOSE completed"
        } else {
            "UNSELECT completed"
        }
        .into())
    }

    pub(super) fn selected(&mut self) -> &mut Selected {
        self.selected.as_mut().expect("command requires a selected mailbox")
    }

    pub(super) async fn expunge(&mut self, set: Option<&SeqSet>, uid: bool) -> Reply {
        let sel = self.selected();
        if sel.read_only {
            return no("[READ-ONLY] Mailbox is read-only");
        }
        let within = match set {
            Some(s) => sel.resolve(s, uid).map_err(Fail::Bad)?,
            None => (0..sel.msgs.len()).collect(),
        };
        let uids: Vec<u32> = within
            .into_iter()
            .filter(|&i| sel.msgs[i].meta.flags.contains(Flags::DELETED))
            .map(|i| sel.msgs[i].uid)
            .collect();
        let id = sel.mailbox.id;
        if !uids.is_empty() {
            self.shared.store.expunge(id, &uids)?;
            self.shared.store.sync().await?;
        }
        self.report_removed(&uids);
        Ok("EXPUNGE completed".into())
    }

    /// Removes our own expunged messages from the snapshot and says so (highest first, so
    /// no number needs adjusting).
    pub(super) fn report_removed(&mut self, uids: &[u32]) {
        let sel = self.selected();
        let mut idx: Vec<usize> = uids.iter().filter_map(|&u| sel.seq_of_uid(u)).collect();
        idx.sort_unstable();
        let mut lines = Vec::new();
        for &i in idx.iter().rev() {
            sel.msgs.remove(i);
            lines.push(format!("{} EXPUNGE", i + 1));
        }
        for l in lines {
            self.untagged(&l);
        }
    }
}
