//! SORT and THREAD (RFC 5256) and SORT=DISPLAY (RFC 5957): the keys of a message, the
//! base-subject rules, the comparisons, and the ORDEREDSUBJECT and REFERENCES threading
//! algorithms. Pure functions over [`Keys`]; the session reads the keys from the headers
//! once per message and keeps them while the mailbox is selected.

use std::cmp::Ordering;
use std::collections::HashMap;

/// One sort criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKind {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
    DisplayFrom,
    DisplayTo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    pub kind: SortKind,
    pub reverse: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadAlgorithm {
    OrderedSubject,
    References,
}

/// Sort keys of messages any session has sorted, by (mailbox id, UID): a stored message never
/// changes and a UID is never reused in a mailbox, so a key read once holds for every session
/// of the server and every later SORT or THREAD. Bounded: past [`KeyCache::MAX`] entries it
/// starts over. One per server (in `Shared::state`), like the store whose ids it uses.
#[derive(Default)]
pub struct KeyCache(std::sync::Mutex<std::collections::HashMap<(u64, u32), std::sync::Arc<Keys>>>);

impl KeyCache {
    pub const MAX: usize = 500_000;

    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<(u64, u32), std::sync::Arc<Keys>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached keys of `uids` in `mailbox`, `None` where not cached.
    pub fn get(&self, mailbox: u64, uids: impl Iterator<Item = u32>) -> Vec<Option<std::sync::Arc<Keys>>> {
        let map = self.map();
        uids.map(|u| map.get(&(mailbox, u)).cloned()).collect()
    }

    pub fn insert(&self, mailbox: u64, keys: &[(u32, std::sync::Arc<Keys>)]) {
        let mut map = self.map();
        if map.len() + keys.len() > Self::MAX {
            map.clear();
        }
        for (uid, k) in keys {
            map.insert((mailbox, *uid), k.clone());
        }
    }
}

/// What SORT and THREAD look at in one message. Strings are already case-folded for
/// i;unicode-casemap comparison.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Keys {
    /// INTERNALDATE.
    pub arrival: i64,
    /// The Date header, or INTERNALDATE when it has none that parses (RFC 5256 §2.2).
    pub sent: i64,
    pub size: u64,
    /// The base subject.
    pub subject: String,
    /// The subject is a reply or forward (it had `Re:`, `Fwd:`, ... taken off).
    pub reply: bool,
    /// addr-mailbox of the first address of each field (RFC 5256 §3).
    pub from: String,
    pub to: String,
    pub cc: String,
    /// Display name of the first address, else its address (RFC 5957).
    pub display_from: String,
    pub display_to: String,
    /// Message-ID without angle brackets; empty when none.
    pub message_id: String,
    /// References (or else the first In-Reply-To), oldest first.
    pub references: Vec<String>,
}

/// The i;unicode-casemap collation key (RFC 5051 §2): each character to its (simple)
/// titlecase, then the whole string decomposed (NFKD). Strings compare by these keys' bytes.
pub fn casemap(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    s.chars().map(titlecase).collect::<String>().nfkd().collect()
}

/// The simple titlecase mapping: uppercase, except the digraphs that have a titlecase form
/// of their own, and characters whose uppercase is more than one character (ß), which have
/// no simple mapping and stay.
fn titlecase(c: char) -> char {
    match c {
        '\u{1C4}'..='\u{1C6}' => '\u{1C5}',
        '\u{1C7}'..='\u{1C9}' => '\u{1C8}',
        '\u{1CA}'..='\u{1CC}' => '\u{1CB}',
        '\u{1F1}'..='\u{1F3}' => '\u{1F2}',
        _ => {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        }
    }
}

/// The base subject (RFC 5256 §2.1) of an already decoded subject, case-folded.
pub fn base_subject(subject: &str) -> String {
    base_subject_reply(subject).0
}

/// The base subject, and whether getting it took away a reply or forward mark (`Re:`,
/// `Fwd:`, a `(fwd)` trailer, a `[fwd: ...]` wrapper): what THREAD REFERENCES step 5 calls a
/// reply (RFC 5256 §2.1 and §4).
pub fn base_subject_reply(subject: &str) -> (String, bool) {
    let mut reply = false;
    // (1) Whitespace runs become one space.
    let mut s: String = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    loop {
        // (2) Trailing "(fwd)" and whitespace, repeatedly.
        loop {
            let t = s.trim_end();
            let lower = t.to_ascii_lowercase();
            if lower.ends_with("(fwd)") {
                s = t[..t.len() - 5].to_string();
                reply = true;
            } else {
                s = t.to_string();
                break;
            }
        }
        // (3)-(5) Leading "re:", "fw:", "fwd:" (with optional [blob]s) and [blob]s.
        loop {
            let before = s.clone();
            let stripped = strip_leader(&s);
            reply |= stripped != s;
            s = stripped;
            if let Some(rest) = strip_blob(&s)
                && !rest.trim().is_empty()
            {
                s = rest.trim_start().to_string();
            }
            if s == before {
                break;
            }
        }
        // (6) "[fwd: ... ]" wrapper.
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("[fwd:") && s.ends_with(']') {
            s = s[5..s.len() - 1].trim().to_string();
            reply = true;
            continue;
        }
        break;
    }
    (casemap(&s), reply)
}

/// `[blob]` at the start: the rest after it.
fn strip_blob(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('[')?;
    let end = rest.find(']')?;
    if rest[..end].contains('[') {
        return None;
    }
    Some(&rest[end + 1..])
}

/// One leading `subj-refwd`: ("re" / "fw" / "fwd") *WSP [blob] ":" with blobs before it.
fn strip_leader(s: &str) -> String {
    let mut t = s.trim_start();
    // Blobs before the leader.
    let mut blobs_skipped = t;
    while let Some(rest) = strip_blob(blobs_skipped) {
        blobs_skipped = rest.trim_start();
    }
    let lower = blobs_skipped.to_ascii_lowercase();
    let word = ["fwd", "fw", "re"].into_iter().find(|w| lower.starts_with(w));
    if let Some(w) = word {
        let mut rest = blobs_skipped[w.len()..].trim_start();
        if let Some(after) = strip_blob(rest) {
            rest = after.trim_start();
        }
        if let Some(after) = rest.strip_prefix(':') {
            t = after.trim_start();
            return t.to_string();
        }
    }
    t.to_string()
}

fn compare(a: &Keys, b: &Keys, kind: SortKind) -> Ordering {
    match kind {
        SortKind::Arrival => a.arrival.cmp(&b.arrival),
        SortKind::Date => a.sent.cmp(&b.sent),
        SortKind::Size => a.size.cmp(&b.size),
        SortKind::Subject => a.subject.cmp(&b.subject),
        SortKind::From => a.from.cmp(&b.from),
        SortKind::To => a.to.cmp(&b.to),
        SortKind::Cc => a.cc.cmp(&b.cc),
        SortKind::DisplayFrom => a.display_from.cmp(&b.display_from),
        SortKind::DisplayTo => a.display_to.cmp(&b.display_to),
    }
}

/// Orders `items` (sequence number, keys) by `criteria`; ties go by sequence number
/// (RFC 5256 §3: "the order in which messages are listed is the order of the sequence
/// numbers").
pub fn sort(items: &mut [(u32, &Keys)], criteria: &[SortKey]) {
    items.sort_by(|(sa, a), (sb, b)| {
        for c in criteria {
            let o = compare(a, b, c.kind);
            let o = if c.reverse { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        sa.cmp(sb)
    });
}

/// A thread: a message (or a dummy, `None`, standing for a missing parent) and its replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    pub msg: Option<u32>,
    pub children: Vec<Thread>,
}

/// Writes threads in the `THREAD` response's syntax (RFC 5256 §4: a node with one child
/// continues on the same list; with several, each child is a nested list).
pub fn render(threads: &[Thread]) -> String {
    let mut out = String::new();
    for t in threads {
        out.push('(');
        render_members(t, &mut out, true);
        out.push(')');
    }
    out
}

fn render_members(t: &Thread, out: &mut String, first: bool) {
    let mut node = t;
    let mut first = first;
    loop {
        if let Some(n) = node.msg {
            if !first {
                out.push(' ');
            }
            out.push_str(&n.to_string());
            first = false;
        }
        match node.children.len() {
            0 => return,
            1 if node.msg.is_some() => node = &node.children[0],
            _ => {
                if !first {
                    out.push(' ');
                }
                for c in &node.children {
                    out.push('(');
                    render_members(c, out, true);
                    out.push(')');
                }
                return;
            }
        }
    }
}

/// THREAD=ORDEREDSUBJECT (RFC 5256 §4): messages grouped by base subject, each group sorted
/// by sent date; the first is the parent of the rest; groups ordered by their first date.
pub fn ordered_subject(items: &[(u32, &Keys)]) -> Vec<Thread> {
    let mut sorted: Vec<(u32, &Keys)> = items.to_vec();
    sort(
        &mut sorted,
        &[
            SortKey {
                kind: SortKind::Subject,
                reverse: false,
            },
            SortKey {
                kind: SortKind::Date,
                reverse: false,
            },
        ],
    );
    let mut groups: Vec<(i64, u32, Thread)> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let subject = &sorted[i].1.subject;
        let mut j = i + 1;
        while j < sorted.len() && &sorted[j].1.subject == subject {
            j += 1;
        }
        let (first, keys) = sorted[i];
        let children = sorted[i + 1..j]
            .iter()
            .map(|(n, _)| Thread {
                msg: Some(*n),
                children: Vec::new(),
            })
            .collect();
        groups.push((
            keys.sent,
            first,
            Thread {
                msg: Some(first),
                children,
            },
        ));
        i = j;
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    groups.into_iter().map(|g| g.2).collect()
}

/// THREAD=REFERENCES (RFC 5256 §4, after Jamie Zawinski's algorithm).
pub fn references(items: &[(u32, &Keys)]) -> Vec<Thread> {
    // Containers: a message or a placeholder for a message-id seen only in References.
    struct Container {
        msg: Option<u32>,
        parent: Option<usize>,
        children: Vec<usize>,
    }
    let mut containers: Vec<Container> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let keys_of: HashMap<u32, &Keys> = items.iter().map(|(n, k)| (*n, *k)).collect();
    let new_container = |containers: &mut Vec<Container>, msg| {
        containers.push(Container {
            msg,
            parent: None,
            children: Vec::new(),
        });
        containers.len() - 1
    };
    // Is `anc` `node` or above it?
    fn is_ancestor(containers: &[Container], anc: usize, mut node: usize) -> bool {
        loop {
            if node == anc {
                return true;
            }
            match containers[node].parent {
                Some(p) => node = p,
                None => return false,
            }
        }
    }
    fn link(containers: &mut [Container], parent: usize, child: usize) {
        if let Some(old) = containers[child].parent {
            containers[old].children.retain(|&c| c != child);
        }
        containers[child].parent = Some(parent);
        containers[parent].children.push(child);
    }
    let mut order: Vec<(u32, &Keys)> = items.to_vec();
    order.sort_by_key(|(n, _)| *n);
    for (n, k) in &order {
        // (A) The message's container: a placeholder waiting for it, else new (a duplicate
        // or missing Message-ID gets a container of its own).
        let me = match by_id.get(&k.message_id) {
            Some(&c) if !k.message_id.is_empty() && containers[c].msg.is_none() => {
                containers[c].msg = Some(*n);
                c
            }
            _ => {
                let c = new_container(&mut containers, Some(*n));
                if !k.message_id.is_empty() {
                    by_id.entry(k.message_id.clone()).or_insert(c);
                }
                c
            }
        };
        // (B) Chain the references, each the parent of the next, unless that makes a loop
        // or changes a link already made.
        let mut prev: Option<usize> = None;
        for r in &k.references {
            let c = match by_id.get(r) {
                Some(&c) => c,
                None => {
                    let c = new_container(&mut containers, None);
                    by_id.insert(r.clone(), c);
                    c
                }
            };
            if let Some(p) = prev
                && containers[c].parent.is_none()
                && !is_ancestor(&containers, c, p)
            {
                link(&mut containers, p, c);
            }
            prev = Some(c);
        }
        // (C) The last reference is the message's parent (replacing any earlier guess).
        match prev {
            Some(p) if p != me && !is_ancestor(&containers, me, p) => link(&mut containers, p, me),
            _ => {
                if let Some(old) = containers[me].parent.take() {
                    containers[old].children.retain(|&c| c != me);
                }
            }
        }
    }
    // (2) The root set.
    let roots: Vec<usize> = (0..containers.len())
        .filter(|&c| containers[c].parent.is_none())
        .collect();
    // (3)-(4) Build trees, pruning placeholders: an empty one goes; one with children gives
    // them to its parent, except at the root, where only a single child is promoted.
    fn build(containers: &[Container], c: usize, at_root: bool) -> Vec<Thread> {
        let mut kids: Vec<Thread> = containers[c]
            .children
            .iter()
            .flat_map(|&k| build(containers, k, false))
            .collect();
        match containers[c].msg {
            Some(m) => vec![Thread {
                msg: Some(m),
                children: kids,
            }],
            None if kids.is_empty() => Vec::new(),
            None if !at_root || kids.len() == 1 => std::mem::take(&mut kids),
            None => vec![Thread {
                msg: None,
                children: kids,
            }],
        }
    }
    let mut threads: Vec<Thread> = roots.iter().flat_map(|&r| build(&containers, r, true)).collect();
    // Sent date of a thread: its message's, or a placeholder's first child's (after sorting).
    let date = |t: &Thread| -> (i64, u32) {
        let n = t.msg.or_else(|| t.children.first().and_then(|c| c.msg)).unwrap_or(0);
        (keys_of.get(&n).map_or(0, |k| k.sent), n)
    };
    fn sort_children(t: &mut Thread, date: &dyn Fn(&Thread) -> (i64, u32)) {
        for c in &mut t.children {
            sort_children(c, date);
        }
        t.children.sort_by_key(|c| date(c));
    }
    for t in &mut threads {
        sort_children(t, &date);
    }
    // (5) Threads whose roots share a base subject are merged (RFC 5256 step 5).
    let subject_of = |t: &Thread| -> String {
        let n = t.msg.or_else(|| t.children.first().and_then(|c| c.msg));
        n.and_then(|n| keys_of.get(&n))
            .map_or(String::new(), |k| k.subject.clone())
    };
    let is_reply = |t: &Thread| -> bool { t.msg.and_then(|n| keys_of.get(&n)).is_some_and(|k| k.reply) };
    // (4) The roots by sent date (a placeholder by its first child's), before they gather.
    threads.sort_by_key(|t| date(t));
    // (5B) Per base subject, the root the others gather under: a placeholder before a
    // message, a message that is not a reply before one that is.
    let subjects: Vec<String> = threads.iter().map(&subject_of).collect();
    let mut table: HashMap<&str, usize> = HashMap::new();
    for (i, t) in threads.iter().enumerate() {
        if subjects[i].is_empty() {
            continue;
        }
        match table.get(subjects[i].as_str()).copied() {
            None => {
                table.insert(&subjects[i], i);
            }
            Some(j) => {
                let cur = &threads[j];
                let better = (cur.msg.is_some() && t.msg.is_none())
                    || (cur.msg.is_some() && t.msg.is_some() && is_reply(cur) && !is_reply(t));
                if better {
                    table.insert(&subjects[i], i);
                }
            }
        }
    }
    // (5C) Every other root with that subject joins it.
    let mut slots: Vec<Option<Thread>> = threads.into_iter().map(Some).collect();
    for i in 0..slots.len() {
        let Some(&j) = table.get(subjects[i].as_str()) else {
            continue;
        };
        if i == j {
            continue;
        }
        let Some(t) = slots[i].take() else { continue };
        let Some(target) = slots[j].take() else { continue };
        let joined = match (target.msg.is_none(), t.msg.is_none()) {
            // Both placeholders: one holds the other's children.
            (true, true) => {
                let mut o = target;
                o.children.extend(t.children);
                o
            }
            // A placeholder takes the message as one more child.
            (true, false) => {
                let mut o = target;
                o.children.push(t);
                o
            }
            (false, true) => {
                let mut n = t;
                n.children.push(target);
                n
            }
            // A reply goes under the message it replies to (by subject).
            (false, false) if is_reply(&t) && !is_reply(&target) => {
                let mut o = target;
                o.children.push(t);
                o
            }
            // Otherwise both go under a new placeholder, as siblings.
            (false, false) => Thread {
                msg: None,
                children: vec![target, t],
            },
        };
        slots[j] = Some(joined);
    }
    let mut merged: Vec<Thread> = slots.into_iter().flatten().collect();
    for t in &mut merged {
        sort_children(t, &date);
    }
    // (6) Roots by sent date.
    merged.sort_by_key(|t| date(t));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects() {
        for (raw, base) in [
            ("Re: hello", "HELLO"),
            ("RE:  Re: [list] Fwd: hello (fwd)", "HELLO"),
            ("[fwd: Re: hello]", "HELLO"),
            ("Fw[2]: Hello  World", "HELLO WORLD"),
            ("[PATCH] fix", "FIX"),
            ("[only a blob]", "[ONLY A BLOB]"),
            ("Re: ", ""),
        ] {
            assert_eq!(base_subject(raw), base, "{raw}");
        }
    }

    /// i;unicode-casemap (RFC 5051): titlecase then NFKD, so case and composition do not
    /// matter, and `_` sorts after letters as in Dovecot (uppercase keys), not before.
    #[test]
    fn unicode_casemap() {
        assert_eq!(casemap("Grüße"), casemap("GRU\u{308}ßE"));
        assert_eq!(casemap("ǆemal"), casemap("Ǆemal"));
        assert_eq!(
            casemap("ﬁ"),
            "fi",
            "a compatibility ligature decomposes (after titlecasing)"
        );
        assert_ne!(casemap("ß"), casemap("ss"), "no full case folding in RFC 5051");
        assert!(casemap("ab") < casemap("a_b"));
    }

    fn k(sent: i64, subject: &str, id: &str, refs: &[&str]) -> Keys {
        let (subject, reply) = base_subject_reply(subject);
        Keys {
            sent,
            subject,
            reply,
            message_id: id.into(),
            references: refs.iter().map(|s| s.to_string()).collect(),
            ..Keys::default()
        }
    }

    #[test]
    fn sorting_with_ties_by_sequence() {
        let a = Keys {
            size: 10,
            from: "b".into(),
            ..Keys::default()
        };
        let b = Keys {
            size: 5,
            from: "a".into(),
            ..Keys::default()
        };
        let c = Keys {
            size: 10,
            from: "a".into(),
            ..Keys::default()
        };
        let mut items = vec![(1, &a), (2, &b), (3, &c)];
        let size = SortKey {
            kind: SortKind::Size,
            reverse: false,
        };
        sort(&mut items, &[size]);
        assert_eq!(items.iter().map(|i| i.0).collect::<Vec<_>>(), [2, 1, 3]);
        let rev_size = SortKey { reverse: true, ..size };
        let from = SortKey {
            kind: SortKind::From,
            reverse: false,
        };
        sort(&mut items, &[rev_size, from]);
        assert_eq!(items.iter().map(|i| i.0).collect::<Vec<_>>(), [3, 1, 2]);
    }

    #[test]
    fn threads_by_subject_and_by_references() {
        let m1 = k(100, "Hello", "1@x", &[]);
        let m2 = k(300, "Re: Hello", "2@x", &["1@x"]);
        let m3 = k(200, "Other", "3@x", &[]);
        let m4 = k(400, "Re: Hello", "4@x", &["1@x", "2@x"]);
        let m5 = k(500, "Re: Hello", "5@x", &["1@x"]);
        let items = [(1, &m1), (2, &m2), (3, &m3), (4, &m4), (5, &m5)];
        assert_eq!(render(&ordered_subject(&items)), "(1 (2)(4)(5))(3)");
        assert_eq!(render(&references(&items)), "(1 (2 4)(5))(3)");
        // A missing parent: the replies share a placeholder, shown as a nested list.
        let r1 = k(100, "Re: lost", "r1@x", &["gone@x"]);
        let r2 = k(200, "Re: lost", "r2@x", &["gone@x"]);
        let items = [(1, &r1), (2, &r2)];
        assert_eq!(render(&references(&items)), "((1)(2))");
        // A loop in References does not hang or lose a message.
        let a = k(100, "a", "a@x", &["b@x"]);
        let b = k(200, "b", "b@x", &["a@x"]);
        let items = [(1, &a), (2, &b)];
        let out = render(&references(&items));
        assert!(out.contains('1') && out.contains('2'), "{out}");
    }

    /// RFC 5256 REFERENCES steps 4 and 5: roots gather by subject in sent-date order, under
    /// the first non-reply; replies ("Fwd:" counts, References or not) become its children,
    /// another non-reply makes a placeholder of siblings. Dovecot threads the same way.
    #[test]
    fn subject_gathering_goes_by_date_and_reply_marks() {
        let m1 = k(1, "x", "1@x", &[]);
        let m2 = k(9, "Fwd: x", "2@x", &[]);
        let m3 = k(10, "[list] x", "3@x", &[]);
        let m4 = k(5, "Fwd: x", "4@x", &[]);
        let items = [(1, &m1), (2, &m2), (3, &m3), (4, &m4)];
        assert_eq!(render(&references(&items)), "((1 (4)(2))(3))");
        assert_eq!(base_subject_reply("[list] x"), ("X".into(), false));
        assert_eq!(base_subject_reply("x (fwd)"), ("X".into(), true));
        assert_eq!(base_subject_reply("[fwd: x]"), ("X".into(), true));
    }
}
