//! SEARCH and its ESEARCH (RFC 4731) forms.

use super::*;
use crate::imap::command::ReturnOpts;

impl Session {
    pub(super) fn search(&mut self, tag: &str, ret: Option<&ReturnOpts>, key: &SearchKey, uid: bool) -> Reply {
        if search_uses_modseq(key) {
            self.enable_condstore();
        }
        let idx = self.matching(key);
        let sel = self.selected.as_ref().expect("selected");
        let hits: Vec<(u32, u64)> = idx
            .iter()
            .map(|&i| {
                let e = &sel.msgs[i];
                (if uid { e.uid } else { i as u32 + 1 }, e.meta.modseq)
            })
            .collect();
        let hit_uids: Vec<u32> = idx.iter().map(|&i| sel.msgs[i].uid).collect();
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
                let mut line = esearch_line(tag, uid, opts, &nums);
                // The highest MODSEQ of the messages returned (RFC 7162 §3.1.5): with only
                // MIN and/or MAX, those messages, not every hit.
                let returned = if opts.all || opts.count || opts.partial.is_some() {
                    modseq
                } else {
                    let ends = [
                        opts.min.then(|| hits.first()).flatten(),
                        opts.max.then(|| hits.last()).flatten(),
                    ];
                    modseq.and(ends.iter().flatten().map(|h| h.1).max())
                };
                if let Some(m) = returned.filter(|_| !nums.is_empty()) {
                    line.push_str(&format!(" MODSEQ {m}"));
                }
                if opts.save {
                    self.selected().saved = hit_uids.clone();
                }
                if opts.answers() {
                    self.untagged(&line);
                }
                if opts.update {
                    self.keep_context(tag, key, None, uid, hit_uids);
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

/// `ESEARCH (TAG "t") [UID]` and the result data `opts` ask for, `nums` in result order
/// (RFC 4731, RFC 5267 §3 and §4.4).
pub(super) fn esearch_line(tag: &str, uid: bool, opts: &ReturnOpts, nums: &[u32]) -> String {
    let mut line = format!("ESEARCH (TAG \"{tag}\")");
    if uid {
        line.push_str(" UID");
    }
    if let (true, Some(n)) = (opts.min, nums.first()) {
        line.push_str(&format!(" MIN {n}"));
    }
    if let (true, Some(n)) = (opts.max, nums.last()) {
        line.push_str(&format!(" MAX {n}"));
    }
    if opts.count {
        line.push_str(&format!(" COUNT {}", nums.len()));
    }
    if opts.all && !nums.is_empty() {
        line.push_str(&format!(" ALL {}", search::compress(nums)));
    }
    if let Some((lo, hi)) = opts.partial {
        let slice = partial_slice(nums, lo, hi);
        // Negative ranges are written last-first, as RFC 9394 has them.
        let range = if lo < 0 {
            format!("{hi}:{lo}")
        } else {
            format!("{lo}:{hi}")
        };
        if slice.is_empty() {
            line.push_str(&format!(" PARTIAL ({range} NIL)"));
        } else {
            line.push_str(&format!(" PARTIAL ({range} {})", search::compress(slice)));
        }
    }
    line
}

/// The results at positions `lo..=hi` (1-based; negative counts from the end).
fn partial_slice(nums: &[u32], lo: i64, hi: i64) -> &[u32] {
    let len = nums.len() as i64;
    let (from, to) = if lo < 0 { (len + lo, len + hi + 1) } else { (lo - 1, hi) };
    let (from, to) = (from.clamp(0, len) as usize, to.clamp(0, len) as usize);
    if from >= to { &[] } else { &nums[from..to] }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_ranges() {
        let nums = [1, 2, 3, 4, 5];
        assert_eq!(partial_slice(&nums, 2, 4), &[2, 3, 4]);
        assert_eq!(partial_slice(&nums, 1, 6), &nums);
        assert_eq!(partial_slice(&nums, 6, 9), &[] as &[u32]);
        assert_eq!(partial_slice(&nums, -2, -1), &[4, 5]);
        assert_eq!(partial_slice(&nums, -9, -4), &[1, 2]);
        let opts = ReturnOpts {
            partial: Some((2, 4)),
            ..ReturnOpts::default()
        };
        assert_eq!(
            esearch_line("t", false, &opts, &[5, 3, 4, 2, 1]),
            "ESEARCH (TAG \"t\") PARTIAL (2:4 3:4,2)"
        );
        assert_eq!(
            esearch_line("t", true, &opts, &[]),
            "ESEARCH (TAG \"t\") UID PARTIAL (2:4 NIL)"
        );
    }
}
