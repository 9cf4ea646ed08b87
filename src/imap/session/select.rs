//! SELECT/EXAMINE, the snapshot and its updates (`sync`), CLOSE/UNSELECT, EXPUNGE.

use super::*;
use crate::imap::command::STAR;

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

    pub(super) fn select(
        &mut self,
        name: &str,
        read_only: bool,
        condstore: bool,
        qresync: Option<&crate::imap::command::QresyncParams>,
    ) -> Reply {
        if qresync.is_some() && !self.qresync {
            return bad("SELECT with QRESYNC needs ENABLE QRESYNC first");
        }
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
        let upto = mailbox.uidnext.max(msgs.last().map_or(0, |e| e.uid + 1));
        let recent = self.take_recent(mailbox.id, read_only, &msgs, upto);
        let mut sel = Selected {
            seen_modseq: mailbox.highestmodseq,
            pending: false,
            mailbox,
            read_only,
            msgs,
            watch,
            saved: Vec::new(),
            keywords: Vec::new(),
            recent,
            generation: 0,
            contexts: Vec::new(),
        };
        let entries = std::mem::take(&mut sel.msgs);
        for e in &entries {
            sel.learn_keywords(&e.meta.keywords);
        }
        sel.msgs = entries;
        let [flags, permanent] = sel.flag_lines();
        self.untagged(&flags);
        self.untagged(&format!("{} EXISTS", sel.msgs.len()));
        if !self.rev2 {
            self.untagged(&format!("{} RECENT", sel.recent.len()));
            if let Some(i) = sel.msgs.iter().position(|e| !e.meta.flags.contains(Flags::SEEN)) {
                self.untagged(&format!("OK [UNSEEN {}] First unseen", i + 1));
            }
        }
        self.untagged(&permanent);
        let mailbox = &sel.mailbox;
        self.untagged(&format!("OK [UIDVALIDITY {}] UIDs valid", mailbox.uidvalidity));
        self.untagged(&format!("OK [UIDNEXT {}] Predicted next UID", mailbox.uidnext));
        self.untagged(&format!("OK [HIGHESTMODSEQ {}] Highest", mailbox.highestmodseq));
        if self.rev2 {
            let name = mailbox.name.clone();
            self.write_mailbox_name("* LIST () \"/\" ", &name, "");
        }
        // QRESYNC (RFC 7162 §3.2.5): what the client missed since its mod-sequence, when its
        // UIDVALIDITY is still ours.
        if let Some(q) = qresync.filter(|q| q.uidvalidity == sel.mailbox.uidvalidity) {
            if let Some(line) = sel.vanished_earlier(q.known.as_ref()) {
                self.untagged(&line);
            }
            let max = sel.max_uid();
            let known = |u: u32| match &q.known {
                Some(SeqSet::Ranges(r)) => SeqSet::contains(r, u, max),
                _ => true,
            };
            let rev2 = self.rev2;
            let lines: Vec<String> = sel
                .msgs
                .iter()
                .enumerate()
                .filter(|(_, e)| e.meta.modseq > q.modseq && known(e.uid))
                .map(|(i, e)| {
                    format!(
                        "{} FETCH (UID {} FLAGS {} MODSEQ ({}))",
                        i + 1,
                        e.uid,
                        flag_list(&e.meta, !rev2 && sel.recent.contains(&e.uid)),
                        e.meta.modseq
                    )
                })
                .collect();
            for l in lines {
                self.untagged(&l);
            }
        }
        let mode = if read_only { "[READ-ONLY]" } else { "[READ-WRITE]" };
        let verb = if read_only { "EXAMINE" } else { "SELECT" };
        self.selected = Some(sel);
        Ok(format!("{mode} {verb} completed"))
    }

    /// The UIDs of `msgs` (all below `upto`) that are `\Recent` to this session: claimed
    /// when it may change the mailbox, only looked at when read-only (RFC 3501 §2.3.2). None
    /// after `ENABLE IMAP4rev2`, which has no `\Recent`.
    pub(super) fn take_recent(
        &self,
        mailbox: u64,
        read_only: bool,
        msgs: &[Entry],
        upto: u32,
    ) -> std::collections::HashSet<u32> {
        if self.rev2 {
            return Default::default();
        }
        let recent = &self.shared.recent;
        let dates = msgs.iter().map(|e| (e.uid, e.meta.internal_date));
        let from = if read_only {
            recent.peek(mailbox, dates, upto)
        } else {
            recent.claim(mailbox, upto, dates)
        };
        msgs.iter()
            .filter(|e| e.uid >= from && e.uid < upto)
            .map(|e| e.uid)
            .collect()
    }

    /// A command that uses MODSEQ turns CONDSTORE on (RFC 7162 §3.1); the first time, with a
    /// mailbox selected, the client learns its HIGHESTMODSEQ (§3.1.2.1).
    pub(super) fn enable_condstore(&mut self) {
        if self.condstore {
            return;
        }
        self.condstore = true;
        if let Some(m) = self.selected.as_ref().map(|s| s.seen_modseq) {
            self.untagged(&format!("OK [HIGHESTMODSEQ {m}] Highest"));
        }
    }

    /// Whether the message is `\Recent` to this session.
    pub(super) fn is_recent(&self, uid: u32) -> bool {
        !self.rev2 && self.selected.as_ref().is_some_and(|s| s.recent.contains(&uid))
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
        let rev2 = self.rev2;
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
        if !changed.is_empty() || fresh.last().is_some_and(|f| f.uid > sel.max_uid()) {
            sel.generation += 1;
        }
        let mut out = Vec::new();
        let mut new_keyword = false;
        for (_, meta) in &changed {
            new_keyword |= sel.learn_keywords(&meta.keywords);
        }
        for (i, meta) in changed {
            let recent = !rev2 && sel.recent.contains(&sel.msgs[i].uid);
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
                flag_list(&e.meta, recent)
            ));
        }
        out.extend(self.take_out_of_view(&gone));
        let sel = self.selected.as_mut().expect("checked above");
        let last = sel.max_uid();
        let before = sel.msgs.len();
        let arrived: Vec<Entry> = fresh
            .into_iter()
            .filter(|f| f.uid > last)
            .map(|f| Entry {
                uid: f.uid,
                meta: f.meta,
            })
            .collect();
        for e in &arrived {
            new_keyword |= sel.learn_keywords(&e.meta.keywords);
        }
        if new_keyword {
            // Before any FETCH that shows the new keyword (RFC 3501 §7.2.6).
            let lines = sel.flag_lines();
            out.splice(0..0, lines);
        }
        let (mailbox_id, read_only) = (sel.mailbox.id, sel.read_only);
        let upto = current.uidnext.max(arrived.last().map_or(0, |e| e.uid + 1));
        let newly_recent = self.take_recent(mailbox_id, read_only, &arrived, upto);
        let sel = self.selected.as_mut().expect("checked above");
        sel.recent.extend(newly_recent);
        sel.msgs.extend(arrived);
        if sel.msgs.len() != before || !gone.is_empty() {
            out.push(format!("{} EXISTS", sel.msgs.len()));
            if !rev2 {
                out.push(format!("{} RECENT", sel.recent.len()));
            }
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
        for l in self.take_out_of_view(&idx) {
            self.untagged(&l);
        }
    }

    /// Takes messages (snapshot indexes, ascending) out of the view and gives the lines that
    /// say so: live searches' REMOVEFROM first, while the numbers still mean what the client
    /// thinks, then EXPUNGE from the highest number down (no number needs adjusting), or one
    /// VANISHED under QRESYNC.
    fn take_out_of_view(&mut self, idx: &[usize]) -> Vec<String> {
        if idx.is_empty() {
            return Vec::new();
        }
        let sel = self.selected();
        sel.generation += 1;
        let uids: Vec<u32> = idx.iter().map(|&i| sel.msgs[i].uid).collect();
        let mut lines = self.contexts_forget(&uids);
        let qresync = self.qresync;
        let sel = self.selected();
        for &i in idx.iter().rev() {
            let e = sel.msgs.remove(i);
            sel.recent.remove(&e.uid);
            if !qresync {
                lines.push(format!("{} EXPUNGE", i + 1));
            }
        }
        if qresync {
            lines.push(format!("VANISHED {}", search::compress(&uids)));
        }
        lines
    }
}

impl Selected {
    /// `VANISHED (EARLIER) uids`: the UIDs in `set` (all when `None`; `*` is the highest
    /// UID given out) below UIDNEXT that this mailbox does not hold. No expunge history is
    /// kept, so this is every such UID, whenever it went: RFC 7162 §3.2.5.2 and §3.2.6 let a
    /// server report UIDs the client may not know of, and clients drop those.
    pub(super) fn vanished_earlier(&self, set: Option<&SeqSet>) -> Option<String> {
        let top = u64::from(self.mailbox.uidnext.max(self.max_uid() + 1) - 1);
        if top == 0 {
            return None;
        }
        let mut ranges: Vec<(u64, u64)> = match set {
            None => vec![(1, top)],
            Some(SeqSet::Ranges(r)) => r
                .iter()
                .map(|&(a, b)| {
                    let a = if a == STAR { top } else { a };
                    let b = if b == STAR { top } else { b };
                    (a.min(b), a.max(b).min(top))
                })
                .filter(|(a, b)| a <= b)
                .collect(),
            Some(SeqSet::Saved) => return None,
        };
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        let mut out: Vec<String> = Vec::new();
        for (a, b) in merged {
            // Walk the held UIDs inside [a, b]; the gaps between them vanished.
            let start = self.msgs.partition_point(|e| u64::from(e.uid) < a);
            let mut next = a;
            for e in self.msgs[start..].iter().take_while(|e| u64::from(e.uid) <= b) {
                let u = u64::from(e.uid);
                if u > next {
                    out.push(range_text(next, u - 1));
                }
                next = u + 1;
            }
            if next <= b {
                out.push(range_text(next, b));
            }
        }
        (!out.is_empty()).then(|| format!("VANISHED (EARLIER) {}", out.join(",")))
    }
}

fn range_text(a: u64, b: u64) -> String {
    if a == b { a.to_string() } else { format!("{a}:{b}") }
}
