//! SEARCH evaluation (RFC 3501 §6.4.4, RFC 9051 §6.4.4, MODSEQ from RFC 7162).
//!
//! Keys on metadata (flags, sizes, dates, sets) never read the message; header, body and
//! sent-date keys parse it once per message, only when the program needs them.

use super::command::{SearchKey, SeqSet};
use crate::store::MessageMeta;

/// One message as the search sees it.
pub struct Candidate<'a> {
    pub seq: u32,
    pub uid: u32,
    pub meta: &'a MessageMeta,
    /// Loads the raw message (once).
    pub raw: &'a mut dyn FnMut() -> Option<std::sync::Arc<Vec<u8>>>,
}

/// Context shared by all candidates: largest seq and uid (for `*`) and the saved result.
pub struct Context<'a> {
    pub max_seq: u32,
    pub max_uid: u32,
    /// The saved result (`$`, RFC 5182), as uids.
    pub saved: &'a [u32],
    pub seq_of_uid: &'a dyn Fn(u32) -> Option<u32>,
    /// Whether a UID is `\Recent` to the searching session.
    pub recent: &'a dyn Fn(u32) -> bool,
}

/// Does the program need the message text (anything beyond metadata)?
pub fn needs_content(k: &SearchKey) -> bool {
    use SearchKey::*;
    match k {
        Header(..) | Body(_) | Text(_) | SentBefore(_) | SentOn(_) | SentSince(_) => true,
        Not(a) => needs_content(a),
        Or(a, b) => needs_content(a) || needs_content(b),
        And(v) => v.iter().any(needs_content),
        _ => false,
    }
}

/// The parsed form of a message that content keys look at.
struct Content {
    /// Header name (lower case) and searchable text (raw value and decoded value).
    headers: Vec<(String, String)>,
    body: String,
    sent_day: Option<i64>,
}

fn load_content(raw: &[u8]) -> Content {
    let parsed = mail_parser::MessageParser::default().parse(raw);
    let mut headers = Vec::new();
    let mut body = String::new();
    let mut sent_day = None;
    let header_end = super::mime::header_len(raw);
    for (name, value) in super::mime::fields(&raw[..header_end]) {
        headers.push((name.to_ascii_lowercase(), value));
    }
    if let Some(p) = parsed {
        for h in p.headers() {
            let decoded = match h.value() {
                mail_parser::HeaderValue::Text(t) => t.to_string(),
                mail_parser::HeaderValue::TextList(l) => l.join(" "),
                mail_parser::HeaderValue::Address(a) => a
                    .iter()
                    .map(|x| format!("{} {}", x.name().unwrap_or(""), x.address().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => continue,
            };
            headers.push((h.name().to_ascii_lowercase(), decoded));
        }
        for i in 0.. {
            let Some(t) = p.body_text(i) else { break };
            body.push_str(&t);
            body.push('\n');
        }
        sent_day = p
            .date()
            .map(|d| super::parser::days_from_civil(d.year as i64, d.month as u32, d.day as u32));
    }
    Content {
        headers,
        body: body.to_lowercase(),
        sent_day,
    }
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    needle.is_empty() || hay.to_lowercase().contains(&needle.to_lowercase())
}

fn in_set(set: &SeqSet, n: u32, max: u32, ctx: &Context, uid_set: bool) -> bool {
    match set {
        SeqSet::Ranges(r) => SeqSet::contains(r, n, max),
        SeqSet::Saved if uid_set => ctx.saved.contains(&n),
        SeqSet::Saved => ctx.saved.iter().any(|&u| (ctx.seq_of_uid)(u) == Some(n)),
    }
}

/// Evaluates the program for one message.
pub fn matches(key: &SearchKey, c: &mut Candidate, ctx: &Context) -> bool {
    let mut content: Option<Content> = None;
    eval(key, c, ctx, &mut content)
}

fn eval(key: &SearchKey, c: &mut Candidate, ctx: &Context, content: &mut Option<Content>) -> bool {
    use SearchKey::*;
    let day = c.meta.internal_date.div_euclid(86400);
    let mut with_content = |f: &dyn Fn(&Content) -> bool| -> bool {
        if content.is_none() {
            let raw = (c.raw)().unwrap_or_default();
            *content = Some(load_content(&raw));
        }
        content.as_ref().is_some_and(f)
    };
    match key {
        All => true,
        Seq(s) => in_set(s, c.seq, ctx.max_seq, ctx, false),
        Uid(s) => in_set(s, c.uid, ctx.max_uid, ctx, true),
        Flag(bit, set) => c.meta.flags.contains(*bit) == *set,
        Keyword(k, set) => c.meta.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) == *set,
        Recent => (ctx.recent)(c.uid),
        // RFC 3501 §6.4.4: NEW is RECENT UNSEEN, OLD is NOT RECENT.
        New => (ctx.recent)(c.uid) && !c.meta.flags.contains(crate::store::Flags::SEEN),
        Old => !(ctx.recent)(c.uid),
        Larger(n) => c.meta.size > *n,
        Smaller(n) => c.meta.size < *n,
        Before(d) => day < *d,
        On(d) => day == *d,
        Since(d) => day >= *d,
        ModSeq(m) => c.meta.modseq >= *m,
        Header(name, needle) => with_content(&|ct| ct.headers.iter().any(|(n, v)| n == name && contains_ci(v, needle))),
        Body(needle) => with_content(&|ct| ct.body.contains(&needle.to_lowercase())),
        Text(needle) => with_content(&|ct| {
            ct.body.contains(&needle.to_lowercase()) || ct.headers.iter().any(|(_, v)| contains_ci(v, needle))
        }),
        SentBefore(d) => with_content(&|ct| ct.sent_day.is_some_and(|s| s < *d)),
        SentOn(d) => with_content(&|ct| ct.sent_day == Some(*d)),
        SentSince(d) => with_content(&|ct| ct.sent_day.is_some_and(|s| s >= *d)),
        Not(a) => !eval(a, c, ctx, content),
        Or(a, b) => eval(a, c, ctx, content) || eval(b, c, ctx, content),
        And(v) => v.iter().all(|k| eval(k, c, ctx, content)),
    }
}

/// `1:3,5,7:9` for a sorted list (ESEARCH ALL and COPYUID).
pub fn compress(nums: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < nums.len() {
        let start = nums[i];
        let mut end = start;
        while i + 1 < nums.len() && nums[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::command::Cmd;
    use crate::imap::parser::parse;
    use crate::store::Flags;

    fn program(s: &str) -> SearchKey {
        match parse(format!("a SEARCH {s}").as_bytes()).unwrap().cmd {
            Cmd::Search { key, .. } => key,
            _ => unreachable!(),
        }
    }

    #[test]
    fn keys_on_metadata_and_content() {
        let meta = MessageMeta {
            blob: [0; 32],
            size: 500,
            internal_date: 1_706_745_600, // 1-Feb-2024
            modseq: 7,
            flags: Flags(Flags::SEEN),
            keywords: vec!["Work".into()],
        };
        let raw = std::sync::Arc::new(
            b"From: Ann <ann@x.org>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nDate: Wed, 31 Jan 2024 23:00:00 -0500\r\n\r\nThe Body text\r\n"
                .to_vec(),
        );
        let saved = [];
        let seq_of_uid = |_u: u32| None;
        let recent = |u: u32| u == 7;
        let ctx = Context {
            max_seq: 3,
            max_uid: 10,
            saved: &saved,
            seq_of_uid: &seq_of_uid,
            recent: &recent,
        };
        let check = |s: &str| {
            let mut loads = 0;
            let mut load = || {
                loads += 1;
                Some(raw.clone())
            };
            let mut c = Candidate {
                seq: 2,
                uid: 9,
                meta: &meta,
                raw: &mut load,
            };
            let r = matches(&program(s), &mut c, &ctx);
            assert!(loads <= 1);
            r
        };
        for yes in [
            "ALL",
            "SEEN",
            "UNFLAGGED",
            "KEYWORD work",
            "LARGER 499",
            "SMALLER 501",
            "ON 1-Feb-2024",
            "SINCE 1-Feb-2024",
            "BEFORE 2-Feb-2024",
            "FROM ann",
            "SUBJECT \"grüße\"",
            "HEADER Subject Gr=C3",
            "BODY \"body TEXT\"",
            "TEXT x.org",
            "SENTON 31-Jan-2024",
            "2",
            "2:*",
            "UID 9",
            "UID 9:*",
            "OR DELETED SEEN",
            "NOT DELETED",
            "MODSEQ 7",
            "(SEEN LARGER 10)",
            "OLD",
        ] {
            assert!(check(yes), "{yes} should match");
        }
        for no in [
            "UNSEEN",
            "DELETED",
            "BODY absent",
            "FROM bob",
            "1",
            "UID 1:8",
            "UID *",
            "SENTSINCE 1-Feb-2024",
            "MODSEQ 8",
            "NEW",
            "RECENT",
        ] {
            assert!(!check(no), "{no} should not match");
        }
        assert_eq!(compress(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
    }
}
