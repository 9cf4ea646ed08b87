//! CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 §4): a SEARCH or SORT with `RETURN (UPDATE)`
//! stays live while its mailbox is selected. Whenever the messages it matches change (flags
//! set by anyone, new mail, expunges) the client gets an untagged
//! `ESEARCH (TAG "t") [UID] REMOVEFROM (...) ADDTO (...)` instead of searching again, until
//! CANCELUPDATE or the mailbox is closed.
//!
//! Positions: an unsorted SEARCH result has none, so its updates carry position 0 and a set
//! (as Dovecot sends them). A SORT result is ordered: each removal names the position the
//! message held and each addition the position it takes, applied in the order sent (removals
//! from the last position back, then additions from the first forward), so a client that
//! applies them one by one ends with the server's order.

use super::*;
use crate::imap::sort::SortKey;

/// Live contexts one session may hold; past this a search still answers but says
/// `NO [NOUPDATE "tag"]` (RFC 5267 §4.3).
pub(super) const MAX_CONTEXTS: usize = 10;

pub(super) struct Context {
    tag: String,
    key: SearchKey,
    /// SORT criteria; `None` for SEARCH.
    sort: Option<Vec<SortKey>>,
    uid: bool,
    /// The result as the client holds it: UIDs, in result order.
    result: Vec<u32>,
    /// The snapshot generation `result` reflects.
    at: u64,
}

impl Session {
    /// Keeps a search's result live (RETURN (UPDATE)); a context with the same tag is replaced.
    pub(super) fn keep_context(
        &mut self,
        tag: &str,
        key: &SearchKey,
        sort: Option<&[SortKey]>,
        uid: bool,
        result: Vec<u32>,
    ) {
        let sel = self.selected();
        sel.contexts.retain(|c| c.tag != tag);
        if sel.contexts.len() >= MAX_CONTEXTS {
            self.untagged(&format!(
                "NO [NOUPDATE \"{tag}\"] At most {MAX_CONTEXTS} searches are kept up to date at once"
            ));
            return;
        }
        let at = sel.generation;
        sel.contexts.push(Context {
            tag: tag.to_string(),
            key: key.clone(),
            sort: sort.map(<[SortKey]>::to_vec),
            uid,
            result,
            at,
        });
    }

    /// CANCELUPDATE: the named contexts end.
    pub(super) fn cancel_update(&mut self, tags: &[String]) -> Reply {
        let sel = self.selected();
        if let Some(t) = tags.iter().find(|t| !sel.contexts.iter().any(|c| &c.tag == *t)) {
            return bad(format!("No search with tag {t} is being updated"));
        }
        sel.contexts.retain(|c| !tags.contains(&c.tag));
        Ok("CANCELUPDATE completed".into())
    }

    /// Messages about to leave the snapshot (expunged): each context that holds any of them
    /// says REMOVEFROM now, while their sequence numbers still mean what the client thinks.
    pub(super) fn contexts_forget(&mut self, uids: &[u32]) -> Vec<String> {
        let Some(sel) = self.selected.as_mut() else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        let mut contexts = std::mem::take(&mut sel.contexts);
        for c in &mut contexts {
            let gone: Vec<u32> = c.result.iter().copied().filter(|u| uids.contains(u)).collect();
            if gone.is_empty() {
                continue;
            }
            let kept: Vec<u32> = c.result.iter().copied().filter(|u| !uids.contains(u)).collect();
            lines.push(update_line(c, sel, &c.result, &kept));
            c.result = kept;
        }
        sel.contexts = contexts;
        lines
    }

    /// Brings every context up to date with the snapshot, telling the client what changed.
    pub(super) fn refresh_contexts(&mut self) {
        let Some(sel) = self.selected.as_mut() else { return };
        let generation = sel.generation;
        if sel.contexts.iter().all(|c| c.at == generation) {
            return;
        }
        let mut contexts = std::mem::take(&mut sel.contexts);
        let mut lines = Vec::new();
        for c in &mut contexts {
            if c.at == generation {
                continue;
            }
            let order = match &c.sort {
                Some(criteria) => self.sorted(criteria, &c.key),
                None => self.matching(&c.key),
            };
            let sel = self.selected();
            let now: Vec<u32> = order.iter().map(|&i| sel.msgs[i].uid).collect();
            if now != c.result {
                lines.push(update_line(c, sel, &c.result, &now));
            }
            c.result = now;
            c.at = generation;
        }
        self.selected().contexts = contexts;
        for l in lines {
            self.untagged(&l);
        }
    }
}

/// The ESEARCH update that takes the client from `old` to `new` (UIDs in result order).
fn update_line(c: &Context, sel: &Selected, old: &[u32], new: &[u32]) -> String {
    let number = |u: u32| -> Option<u32> {
        if c.uid {
            Some(u)
        } else {
            sel.seq_of_uid(u).map(|i| i as u32 + 1)
        }
    };
    let new_set: std::collections::HashSet<u32> = new.iter().copied().collect();
    let old_set: std::collections::HashSet<u32> = old.iter().copied().collect();
    let mut line = format!("ESEARCH (TAG \"{}\")", c.tag);
    if c.uid {
        line.push_str(" UID");
    }
    if c.sort.is_none() {
        let mut removed: Vec<u32> = old
            .iter()
            .filter(|u| !new_set.contains(u))
            .filter_map(|&u| number(u))
            .collect();
        let mut added: Vec<u32> = new
            .iter()
            .filter(|u| !old_set.contains(u))
            .filter_map(|&u| number(u))
            .collect();
        removed.sort_unstable();
        added.sort_unstable();
        if !removed.is_empty() {
            line.push_str(&format!(" REMOVEFROM (0 {})", search::compress(&removed)));
        }
        if !added.is_empty() {
            line.push_str(&format!(" ADDTO (0 {})", search::compress(&added)));
        }
        return line;
    }
    // Removals from the last position back, so each position is still the one the client has.
    for (pos, &u) in old.iter().enumerate().rev() {
        if !new_set.contains(&u)
            && let Some(n) = number(u)
        {
            line.push_str(&format!(" REMOVEFROM ({} {n})", pos + 1));
        }
    }
    // Additions from the first position on: each lands where the final order has it.
    for (pos, &u) in new.iter().enumerate() {
        if !old_set.contains(&u)
            && let Some(n) = number(u)
        {
            line.push_str(&format!(" ADDTO ({} {n})", pos + 1));
        }
    }
    line
}
