//! SEARCH and its ESEARCH (RFC 4731) forms.

use super::*;

impl Session {
    pub(super) fn search(&mut self, tag: &str, ret: Option<&[String]>, key: &SearchKey, uid: bool) -> Reply {
        if search_uses_modseq(key) {
            self.enable_condstore();
        }
        let sel = self.selected.as_ref().expect("selected");
        let mut hits: Vec<(u32, u64)> = Vec::new();
        let mut hit_uids = Vec::new();
        for i in self.matching(key) {
            let e = &sel.msgs[i];
            hits.push((if uid { e.uid } else { i as u32 + 1 }, e.meta.modseq));
            hit_uids.push(e.uid);
        }
        let modseq = search_uses_modseq(key).then(|| hits.iter().map(|h| h.1).max().unwrap_or(0));
        let nums: Vec<u32> = hits.iter().map(|h| h.0).collect();
        match ret {
            None => {
                let mut line = String::from("SEARCH");
                for n in &nums {
                    line.push_str(&format!(" {n}"));
                }
                if let Some(m) = modseq.filter(|_| !nums.is_empty()) {
                    line.push_str(&format!(" (MODSEQ {m})"));
                }
                self.untagged(&line);
            }
            Some(opts) => {
                let opts: Vec<&str> = if opts.is_empty() {
                    vec!["ALL"]
                } else {
                    opts.iter().map(String::as_str).collect()
                };
                let mut line = format!("ESEARCH (TAG \"{tag}\")");
                if uid {
                    line.push_str(" UID");
                }
                let mut any = false;
                for o in &opts {
                    match *o {
                        "MIN" if !nums.is_empty() => line.push_str(&format!(" MIN {}", nums[0])),
                        "MAX" if !nums.is_empty() => line.push_str(&format!(" MAX {}", nums[nums.len() - 1])),
                        "COUNT" => line.push_str(&format!(" COUNT {}", nums.len())),
                        "ALL" if !nums.is_empty() => line.push_str(&format!(" ALL {}", search::compress(&nums))),
                        "MIN" | "MAX" | "ALL" | "SAVE" => {}
                        other => return bad(format!("unknown RETURN option {other}")),
                    }
                    any |= *o != "SAVE";
                }
                // The highest MODSEQ of the messages returned (RFC 7162 §3.1.5): with only
                // MIN and/or MAX, those messages, not every hit.
                let returned = if opts.iter().any(|o| matches!(*o, "ALL" | "COUNT")) {
                    modseq
                } else {
                    let ends = [
                        opts.contains(&"MIN").then(|| hits.first()).flatten(),
                        opts.contains(&"MAX").then(|| hits.last()).flatten(),
                    ];
                    modseq.and(ends.iter().flatten().map(|h| h.1).max())
                };
                if let Some(m) = returned.filter(|_| !nums.is_empty()) {
                    line.push_str(&format!(" MODSEQ {m}"));
                }
                if opts.contains(&"SAVE") {
                    self.selected().saved = hit_uids;
                }
                if any {
                    self.untagged(&line);
                }
            }
        }
        Ok(if uid {
            "UID SEARCH completed"
        } else {
            "SEARCH completed"
        }
        .into())
    }
}

impl Session {
    /// The snapshot indexes of the messages `key` matches, in order.
    pub(super) fn matching(&self, key: &SearchKey) -> Vec<usize> {
        let store = self.shared.store.clone();
        let sel = self.selected.as_ref().expect("selected");
        let needs = search::needs_content(key);
        let seq_of_uid = |u: u32| sel.seq_of_uid(u).map(|i| i as u32 + 1);
        let rev2 = self.rev2;
        let recent = |u: u32| !rev2 && sel.recent.contains(&u);
        let ctx = search::Context {
            max_seq: sel.msgs.len() as u32,
            max_uid: sel.max_uid(),
            saved: &sel.saved,
            seq_of_uid: &seq_of_uid,
            recent: &recent,
        };
        let mut out = Vec::new();
        for (i, e) in sel.msgs.iter().enumerate() {
            let mut cache: Option<Arc<Vec<u8>>> = None;
            let mut load = || {
                if cache.is_none() && needs {
                    cache = store.blob(&e.meta.blob).ok().flatten().map(Arc::new);
                }
                cache.clone()
            };
            let mut c = search::Candidate {
                seq: i as u32 + 1,
                uid: e.uid,
                meta: &e.meta,
                raw: &mut load,
            };
            if search::matches(key, &mut c, &ctx) {
                out.push(i);
            }
        }
        out
    }
}

pub(super) fn search_uses_modseq(k: &SearchKey) -> bool {
    match k {
        SearchKey::ModSeq(_) => true,
        SearchKey::Not(a) => search_uses_modseq(a),
        SearchKey::Or(a, b) => search_uses_modseq(a) || search_uses_modseq(b),
        SearchKey::And(v) => v.iter().any(search_uses_modseq),
        _ => false,
    }
}
