//! SORT (RFC 5256, with ESORT's RETURN from RFC 5267 and SORT=DISPLAY from RFC 5957) and
//! THREAD. The keys of each message are read from its header once and kept for every
//! session, so sorting a big folder again costs a sort, not a parse.

use super::*;
use crate::imap::sort::{self, Keys, SortKey, ThreadAlgorithm};
use std::collections::HashMap;

/// The keys of one stored message.
fn keys_of(raw: &[u8], meta: &MessageMeta) -> Keys {
    let header = &raw[..crate::imap::mime::header_len(raw)];
    let Some(m) = mail_parser::MessageParser::default().parse_headers(header) else {
        return Keys {
            arrival: meta.internal_date,
            sent: meta.internal_date,
            size: meta.size,
            ..Keys::default()
        };
    };
    let first = |a: Option<&mail_parser::Address>| -> (String, String) {
        let Some(addr) = a.and_then(|a| a.first()) else {
            return (String::new(), String::new());
        };
        let spec = addr.address().unwrap_or("").to_string();
        let mailbox = spec.rsplit_once('@').map_or(spec.as_str(), |(l, _)| l).to_string();
        let display = match addr.name() {
            Some(n) if !n.trim().is_empty() => n.trim().to_string(),
            _ => spec.clone(),
        };
        (sort::casemap(&mailbox), sort::casemap(&display))
    };
    let (from, display_from) = first(m.from());
    let (to, display_to) = first(m.to());
    let (cc, _) = first(m.cc());
    let ids = |v: &mail_parser::HeaderValue| -> Vec<String> {
        v.as_text_list()
            .map(|l| l.iter().map(|s| s.trim_matches(['<', '>']).to_string()).collect())
            .unwrap_or_default()
    };
    let mut references = ids(m.references());
    if references.is_empty() {
        references = ids(m.in_reply_to()).into_iter().take(1).collect();
    }
    Keys {
        arrival: meta.internal_date,
        sent: m.date().map_or(meta.internal_date, |d| d.to_timestamp()),
        size: meta.size,
        subject: sort::base_subject(m.subject().unwrap_or("")),
        from,
        to,
        cc,
        display_from,
        display_to,
        message_id: m.message_id().unwrap_or("").to_string(),
        references,
    }
}

/// Sort keys of messages any session has sorted, by (mailbox id, UID): a stored message never
/// changes and a UID is never reused in a mailbox, so a key read once holds for every session
/// and every later SORT or THREAD. Bounded: past [`SHARED_KEYS_MAX`] entries it starts over.
type KeyCache = std::sync::Mutex<HashMap<(u64, u32), Arc<Keys>>>;
static SHARED_KEYS: std::sync::LazyLock<KeyCache> = std::sync::LazyLock::new(Default::default);
const SHARED_KEYS_MAX: usize = 500_000;

impl Session {
    /// The keys of the messages at `idx` (snapshot indexes): from the shared cache, or read
    /// from the stored header.
    fn sort_keys(&mut self, idx: &[usize]) -> Vec<Arc<Keys>> {
        let store = self.shared.store.clone();
        let sel = self.selected();
        let mailbox = sel.mailbox.id;
        let mut out = Vec::with_capacity(idx.len());
        let mut missing = Vec::new();
        {
            let shared = SHARED_KEYS.lock().unwrap_or_else(|p| p.into_inner());
            for (n, &i) in idx.iter().enumerate() {
                let uid = sel.msgs[i].uid;
                match shared.get(&(mailbox, uid)) {
                    Some(k) => out.push(Some(k.clone())),
                    None => {
                        out.push(None);
                        missing.push(n);
                    }
                }
            }
        }
        let mut read = Vec::with_capacity(missing.len());
        for n in missing {
            let e = &sel.msgs[idx[n]];
            let raw = store.blob(&e.meta.blob).ok().flatten().unwrap_or_default();
            let k = Arc::new(keys_of(&raw, &e.meta));
            read.push((e.uid, k.clone()));
            out[n] = Some(k);
        }
        if !read.is_empty() {
            let mut shared = SHARED_KEYS.lock().unwrap_or_else(|p| p.into_inner());
            if shared.len() + read.len() > SHARED_KEYS_MAX {
                shared.clear();
            }
            for (uid, k) in &read {
                shared.insert((mailbox, *uid), k.clone());
            }
        }
        out.into_iter().map(|k| k.unwrap_or_default()).collect()
    }

    pub(super) fn sort(
        &mut self,
        tag: &str,
        ret: Option<&[String]>,
        criteria: &[SortKey],
        key: &SearchKey,
        uid: bool,
    ) -> Reply {
        let idx = self.matching(key);
        let keys = self.sort_keys(&idx);
        let mut items: Vec<(u32, &Keys)> = idx.iter().zip(&keys).map(|(&i, k)| (i as u32 + 1, &**k)).collect();
        sort::sort(&mut items, criteria);
        let sel = self.selected();
        let nums: Vec<u32> = items
            .iter()
            .map(|(seq, _)| if uid { sel.msgs[*seq as usize - 1].uid } else { *seq })
            .collect();
        match ret {
            None => {
                let mut line = String::from("SORT");
                for n in &nums {
                    line.push_str(&format!(" {n}"));
                }
                self.untagged(&line);
            }
            // ESORT (RFC 5267 §3): MIN and MAX are the first and last in sort order, ALL
            // keeps the order (a sequence set, not compressed out of order).
            Some(opts) => {
                let opts: Vec<String> = if opts.is_empty() {
                    vec!["ALL".into()]
                } else {
                    opts.iter().map(|o| o.to_ascii_uppercase()).collect()
                };
                let mut line = format!("ESEARCH (TAG \"{tag}\")");
                if uid {
                    line.push_str(" UID");
                }
                for o in &opts {
                    match o.as_str() {
                        "MIN" if !nums.is_empty() => line.push_str(&format!(" MIN {}", nums[0])),
                        "MAX" if !nums.is_empty() => line.push_str(&format!(" MAX {}", nums[nums.len() - 1])),
                        "COUNT" => line.push_str(&format!(" COUNT {}", nums.len())),
                        "ALL" if !nums.is_empty() => {
                            let all: Vec<String> = nums.iter().map(u32::to_string).collect();
                            line.push_str(&format!(" ALL {}", all.join(",")));
                        }
                        "MIN" | "MAX" | "ALL" => {}
                        other => return bad(format!("unknown RETURN option {other}")),
                    }
                }
                self.untagged(&line);
            }
        }
        Ok(if uid { "UID SORT completed" } else { "SORT completed" }.into())
    }

    pub(super) fn thread(&mut self, algorithm: ThreadAlgorithm, key: &SearchKey, uid: bool) -> Reply {
        let idx = self.matching(key);
        let keys = self.sort_keys(&idx);
        let sel = self.selected();
        let items: Vec<(u32, &Keys)> = idx
            .iter()
            .zip(&keys)
            .map(|(&i, k)| (if uid { sel.msgs[i].uid } else { i as u32 + 1 }, &**k))
            .collect();
        let threads = match algorithm {
            ThreadAlgorithm::OrderedSubject => sort::ordered_subject(&items),
            ThreadAlgorithm::References => sort::references(&items),
        };
        let rendered = sort::render(&threads);
        if rendered.is_empty() {
            self.untagged("THREAD");
        } else {
            self.untagged(&format!("THREAD {rendered}"));
        }
        Ok(if uid {
            "UID THREAD completed"
        } else {
            "THREAD completed"
        }
        .into())
    }
}
