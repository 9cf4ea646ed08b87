//! SORT (RFC 5256, with ESORT's RETURN from RFC 5267 and SORT=DISPLAY from RFC 5957) and
//! THREAD. The keys of each message are read from its header once and kept for every
//! session, so sorting a big folder again costs a sort, not a parse.

use super::*;
use crate::imap::command::ReturnOpts;
use crate::imap::sort::{self, Keys, SortKey, ThreadAlgorithm};

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
    let (subject, reply) = sort::base_subject_reply(m.subject().unwrap_or(""));
    let mut references = ids(m.references());
    if references.is_empty() {
        references = ids(m.in_reply_to()).into_iter().take(1).collect();
    }
    Keys {
        arrival: meta.internal_date,
        sent: m.date().map_or(meta.internal_date, |d| d.to_timestamp()),
        size: meta.size,
        subject,
        reply,
        from,
        to,
        cc,
        display_from,
        display_to,
        message_id: m.message_id().unwrap_or("").to_string(),
        references,
    }
}

impl Session {
    /// The keys of the messages at `idx` (snapshot indexes): from the shared cache, or read
    /// from the stored header.
    fn sort_keys(&mut self, idx: &[usize]) -> Vec<Arc<Keys>> {
        let store = self.shared.store.clone();
        let cache = self.shared.state.get::<sort::KeyCache>();
        let sel = self.selected();
        let mailbox = sel.mailbox.id;
        let mut out = cache.get(mailbox, idx.iter().map(|&i| sel.msgs[i].uid));
        let mut read = Vec::new();
        for (n, slot) in out.iter_mut().enumerate() {
            if slot.is_none() {
                let e = &sel.msgs[idx[n]];
                let raw = store.blob(&e.meta.blob).ok().flatten().unwrap_or_default();
                let k = Arc::new(keys_of(&raw, &e.meta));
                read.push((e.uid, k.clone()));
                *slot = Some(k);
            }
        }
        if !read.is_empty() {
            cache.insert(mailbox, &read);
        }
        out.into_iter().map(|k| k.unwrap_or_default()).collect()
    }

    /// The snapshot indexes of the messages `key` matches, in the order of `criteria`.
    pub(super) fn sorted(&mut self, criteria: &[SortKey], key: &SearchKey) -> Vec<usize> {
        let idx = self.matching(key);
        let keys = self.sort_keys(&idx);
        let mut items: Vec<(u32, &Keys)> = idx.iter().zip(&keys).map(|(&i, k)| (i as u32, &**k)).collect();
        sort::sort(&mut items, criteria);
        items.into_iter().map(|(i, _)| i as usize).collect()
    }

    pub(super) fn sort(
        &mut self,
        tag: &str,
        ret: Option<&ReturnOpts>,
        criteria: &[SortKey],
        key: &SearchKey,
        uid: bool,
    ) -> Reply {
        let order = self.sorted(criteria, key);
        let sel = self.selected();
        let nums: Vec<u32> = order
            .iter()
            .map(|&i| if uid { sel.msgs[i].uid } else { i as u32 + 1 })
            .collect();
        let uids: Vec<u32> = order.iter().map(|&i| sel.msgs[i].uid).collect();
        match ret {
            None => {
                let mut line = String::from("SORT");
                for n in &nums {
                    line.push_str(&format!(" {n}"));
                }
                self.untagged(&line);
            }
            // ESORT (RFC 5267 §3): MIN and MAX are the first and last in sort order; ALL and
            // PARTIAL keep the order (runs of consecutive numbers shortened to n:m).
            Some(opts) => {
                if opts.save {
                    self.selected().saved = uids.clone();
                }
                if opts.answers() {
                    let line = super::searching::esearch_line(tag, uid, opts, &nums);
                    self.untagged(&line);
                }
                if opts.update {
                    self.keep_context(tag, key, Some(criteria), uid, uids);
                }
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
