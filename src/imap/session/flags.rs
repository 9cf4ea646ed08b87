//! STORE: flags and keywords, CONDSTORE's UNCHANGEDSINCE.

use super::*;

impl Session {
    pub(super) fn store(
        &mut self,
        set: &SeqSet,
        op: FlagOp,
        silent: bool,
        flags: &[String],
        unchanged_since: Option<u64>,
        uid: bool,
    ) -> Reply {
        if unchanged_since.is_some() {
            self.enable_condstore();
        }
        let (bits, keywords) = parse_flags(flags)?;
        let condstore = self.condstore;
        let rev2 = self.rev2;
        let store = self.shared.store.clone();
        let sel = self.selected();
        if sel.read_only {
            return no("[READ-ONLY] Mailbox is read-only");
        }
        let idx = sel.resolve(set, uid).map_err(Fail::Bad)?;
        let uids: Vec<u32> = idx.iter().map(|&i| sel.msgs[i].uid).collect();
        let r = store.store_flags(sel.mailbox.id, &uids, op, bits, &keywords, unchanged_since)?;
        let mut changed_uids = Vec::new();
        let mut lines = Vec::new();
        if !r.changed.is_empty() {
            sel.generation += 1;
        }
        let mut new_keyword = false;
        for (u, meta) in r.changed {
            new_keyword |= sel.learn_keywords(&meta.keywords);
            if let Some(i) = sel.seq_of_uid(u) {
                sel.msgs[i].meta = meta;
            }
            changed_uids.push(u);
        }
        // A keyword new to the mailbox is announced before a FETCH shows it (RFC 3501 §7.2.6).
        if new_keyword {
            lines.extend(sel.flag_lines());
        }
        for &i in &idx {
            let e = &sel.msgs[i];
            if r.modified.contains(&e.uid) {
                continue;
            }
            let changed = changed_uids.contains(&e.uid);
            if silent && !(condstore && changed) {
                continue;
            }
            let mut items = Vec::new();
            if uid {
                items.push(format!("UID {}", e.uid));
            }
            if !silent {
                items.push(format!(
                    "FLAGS {}",
                    flag_list(&e.meta, !rev2 && sel.recent.contains(&e.uid))
                ));
            }
            if condstore {
                items.push(format!("MODSEQ ({})", e.meta.modseq));
            }
            lines.push(format!("{} FETCH ({})", i + 1, items.join(" ")));
        }
        for l in lines {
            self.untagged(&l);
        }
        if !r.modified.is_empty() {
            let nums: Vec<u32> = if uid {
                r.modified.clone()
            } else {
                let sel = self.selected();
                r.modified
                    .iter()
                    .filter_map(|&u| sel.seq_of_uid(u).map(|i| i as u32 + 1))
                    .collect()
            };
            return Ok(format!(
                "[MODIFIED {}] Conditional STORE failed for some",
                search::compress(&nums)
            ));
        }
        Ok(if uid { "UID STORE completed" } else { "STORE completed" }.into())
    }
}

pub(super) fn keyword_suffix(k: &[String]) -> String {
    k.iter().map(|k| format!(" {k}")).collect()
}

impl Selected {
    /// Adds keywords the mailbox has not shown yet; true when there were any.
    pub(super) fn learn_keywords(&mut self, keywords: &[String]) -> bool {
        let mut new = false;
        for k in keywords {
            if !self.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                self.keywords.push(k.clone());
                new = true;
            }
        }
        new
    }

    /// The untagged `FLAGS` and `PERMANENTFLAGS` for the mailbox's flags and keywords.
    pub(super) fn flag_lines(&self) -> [String; 2] {
        let flags = format!(
            "\\Answered \\Flagged \\Deleted \\Seen \\Draft{}",
            keyword_suffix(&self.keywords)
        );
        let perm = if self.read_only {
            "()".to_string()
        } else {
            format!("({flags} \\*)")
        };
        [
            format!("FLAGS ({flags})"),
            format!("OK [PERMANENTFLAGS {perm}] Flags permitted"),
        ]
    }
}
