//! Bayes tokens: what the classifier sees of a message.
//!
//! Words of the body text, words and word pairs of the Subject, header-prefixed tokens from
//! the fields that describe the sender and the message (From, Reply-To, Subject,
//! Content-Type, Message-ID, mailer, list headers), the shape of the fields a sending
//! program writes (Date, time zone, Message-ID, To, From: [`shape_tokens`]), URL hosts, and
//! the originating hop (the oldest Received field: the sender's name, its DNS name and its
//! /16 and /24). Body word pairs are not tokens: three quarters of the vocabulary, and
//! without them the model makes fewer false positives at the same recall (docs/spam.md). Headers that only
//! reflect where a message was collected (the later Received hops, Delivered-To,
//! Return-Path, X-Keywords, status and filter headers, ours included) are left out: they
//! would teach the filter the collector, not the mail (see the corpus README's warnings).
//! A mailing list's footer is left out of the body text ([`split_list_footer`]).
//! Header names alone are not tokens: which fields a message has says more about the
//! mailing lists a site reads than about spam (measured: docs/spam.md).
//!
//! Each distinct token counts once per message (presence, not frequency: a word repeated
//! fifty times in one spam should not outweigh fifty messages).

use crate::hooks::contract::Message;
use std::collections::HashSet;

/// Longest word kept; longer runs are split into this size (base64 blobs, hashes).
const MAX_WORD: usize = 24;
/// Body words looked at per message (the start carries the signal; 300 KB spam is not
/// three hundred times more informative).
const MAX_BODY_WORDS: usize = 3000;

/// Headers whose names and values say nothing about the message itself.
const IGNORED_HEADERS: [&str; 16] = [
    "received",
    "delivered-to",
    "return-path",
    "x-keywords",
    "status",
    "x-status",
    "x-uid",
    "x-spam-flag",
    "x-spam-score",
    "x-spam-symbols",
    "x-spam-status",
    "x-spam-level",
    "x-spam-checker-version",
    "x-mailgate-trace",
    "x-loop",
    "envelope-to",
];

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || matches!(c, '$' | '\'' | '-' | '!' | '€' | '£')))
        .map(|w| w.trim_matches(|c| c == '\'' || c == '-'))
        .filter(|w| w.chars().count() >= 2)
        .flat_map(|w| {
            let lower = w.to_lowercase();
            let chars: Vec<char> = lower.chars().collect();
            chars
                .chunks(MAX_WORD)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
        })
}

fn domain_of(addr: &str) -> &str {
    addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

/// The registrable-looking tail of a host (`mail.example.co.uk` → `co.uk` is wrong but
/// rare enough; two labels is what Bayes needs).
fn tail2(host: &str) -> &str {
    let mut dots = host.rmatch_indices('.');
    dots.next();
    match dots.next() {
        Some((i, _)) => &host[i + 1..],
        None => host,
    }
}

/// Address inside `Name <addr>` (or the value itself).
fn address_in(value: &str) -> String {
    let v = match (value.rfind('<'), value.rfind('>')) {
        (Some(a), Some(b)) if b > a => &value[a + 1..b],
        _ => value,
    };
    v.trim().trim_matches('"').to_ascii_lowercase()
}

/// Tokens of a `Received` field's `from` clause: the sender's name as it gave it and as
/// DNS knows it (two-label tails), whether it had none, and its address's /16 and /24.
fn origin_tokens(value: &str) -> Vec<String> {
    let lower = value.to_ascii_lowercase();
    let Some(from) = lower.strip_prefix("from ") else {
        return Vec::new();
    };
    let clause = from.split(" by ").next().unwrap_or(from);
    let mut out = Vec::new();
    let helo = clause.split_whitespace().next().unwrap_or("");
    out.push(format!("rh:{}", tail2(helo.trim_matches(['[', ']']))));
    if clause.contains("unknown") {
        out.push("r:unknown".into());
    }
    if let Some((inside, _)) = clause.split_once(')')
        && let Some(paren) = inside.split('(').nth(1)
    {
        let host = paren.split_whitespace().next().unwrap_or("");
        if host.contains('.') && !host.starts_with('[') {
            out.push(format!("rd:{}", tail2(host)));
        }
    }
    if let (Some(a), Some(b)) = (clause.find('['), clause.find(']'))
        && a < b
    {
        let ip = &clause[a + 1..b];
        let octets: Vec<&str> = ip.split('.').collect();
        if octets.len() == 4 && octets.iter().all(|o| o.parse::<u8>().is_ok()) {
            out.push(format!("rip:{}.{}", octets[0], octets[1]));
            out.push(format!("rip:{}.{}.{}", octets[0], octets[1], octets[2]));
        }
    }
    out
}

/// How far from the end of the body text a mailing list's footer may start: the last
/// `FOOTER_LINES` lines and at most `FOOTER_BYTES` (HTML reduced to text is often one long
/// line). 8, 15 and 25 lines and 400–1500 bytes measured within one message of each other
/// over nine splits (docs/spam.md).
const FOOTER_LINES: usize = 15;
const FOOTER_BYTES: usize = 800;

/// Splits the body text (`m.text`) of a message a mailing list delivered into (what the author wrote,
/// the list's footer). The footer is the list's, not the sender's: on a list that carries
/// ham and spam alike, its words and links (the list address, the sponsor's ad) outweighed
/// a short spam's own words (docs/spam.md). Only for a message with list headers (RFC 2369
/// `List-*`, `Mailing-List`, `X-Mailing-List`): the footer starts at the earliest separator
/// (`--` or a run of five or more `-`, `_`, `=`, `*`) or line naming the list, within the
/// window above, whose rest says what a list footer says (a URL or address of the list
/// headers, "mailing list", "listinfo", "unsubscribe").
pub fn split_list_footer(m: &Message) -> (&str, &str) {
    let text = m.text.as_str();
    // What the list headers point at: `<http://host/path>`, `<mailto:addr?...>`, `<id>`.
    let mut marks: Vec<String> = Vec::new();
    let mut listed = false;
    for h in &m.headers {
        let n = h.name.to_ascii_lowercase();
        if !(n.starts_with("list-") || n == "mailing-list" || n == "x-mailing-list") {
            continue;
        }
        listed = true;
        for part in h.value.split('<').skip(1) {
            let inner = part.split('>').next().unwrap_or("").to_ascii_lowercase();
            let inner = inner.trim_start_matches("mailto:");
            let inner = inner.split('?').next().unwrap_or("");
            let inner = inner.trim_start_matches("https://").trim_start_matches("http://");
            if inner.len() >= 6 {
                marks.push(inner.to_string());
            }
        }
    }
    if !listed {
        return (text, "");
    }
    let trimmed = text.trim_end();
    let mut from = trimmed.len().saturating_sub(FOOTER_BYTES);
    while !trimmed.is_char_boundary(from) {
        from += 1;
    }
    let by_lines = trimmed
        .rmatch_indices('\n')
        .nth(FOOTER_LINES - 1)
        .map_or(0, |(i, _)| i + 1);
    let from = from.max(by_lines);
    // ASCII lower-casing keeps byte offsets, so one copy serves every candidate.
    let lower = trimmed[from..].to_ascii_lowercase();
    let names_list = |s: &str| marks.iter().any(|k| s.contains(k.as_str()));
    let says_list = |rest: &str| {
        rest.contains("mailing list") || rest.contains("listinfo") || rest.contains("unsubscribe") || names_list(rest)
    };
    let is_separator = |w: &str| {
        w == "--"
            || (w.len() >= 5
                && w.bytes().all(|b| b == w.as_bytes()[0])
                && matches!(w.as_bytes()[0], b'-' | b'_' | b'=' | b'*'))
    };
    let mut pos = 0;
    for word in lower.split_inclusive(char::is_whitespace) {
        let (start, rest) = (pos, &lower[pos..]);
        pos += word.len();
        let line_start = from + start == 0 || trimmed.as_bytes()[from + start - 1] == b'\n';
        let candidate = is_separator(word.trim_end()) || (line_start && names_list(rest.lines().next().unwrap_or("")));
        if candidate && says_list(rest) {
            return text.split_at(from + start);
        }
    }
    (text, "")
}

/// How the sending program wrote the fields it always writes, apart from what they say: the
/// Date's shape (digits as `9`, letters as `a`: `aaa, 99 aaa 9999 99:99:99 -9999`) and time
/// zone (`-0700`, `GMT`, or `none`; spam of the dev corpus has offsets no zone has, such as
/// `-1900`), whether Message-ID is one `<local@domain>`, and whether To and From carry a
/// display name and angle brackets. Mail programs and bulk mailers each have their habits;
/// over ten cross-validations of the dev corpus these took misses from 26.3 to 24.1 at the
/// same false positives (the Date's shape and zone most; docs/spam.md).
fn shape_tokens(m: &Message) -> Vec<String> {
    let mut out = Vec::new();
    let value = |name: &str| {
        m.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.trim())
    };
    match value("date") {
        None => out.push("dsh:<none>".into()),
        Some(date) => {
            let shape: String = date
                .chars()
                .take(40)
                .map(|c| match c {
                    '0'..='9' => '9',
                    'a'..='z' | 'A'..='Z' => 'a',
                    c => c,
                })
                .collect();
            out.push(format!("dsh:{shape}"));
            // The zone is the last word, before a trailing comment (`-0700 (PDT)`).
            let bare = match (date.ends_with(')'), date.find('(')) {
                (true, Some(i)) => date[..i].trim_end(),
                _ => date,
            };
            let last = bare.rsplit(char::is_whitespace).next().unwrap_or("");
            let b = last.as_bytes();
            let numeric = b.len() == 5 && matches!(b[0], b'+' | b'-') && b[1..].iter().all(u8::is_ascii_digit);
            let named = (3..=4).contains(&b.len()) && b.iter().all(u8::is_ascii_uppercase);
            out.push(format!("tz:{}", if numeric || named { last } else { "none" }));
        }
    }
    out.push(format!(
        "midf:{}",
        match value("message-id") {
            None => "none",
            Some(id) => match id.strip_prefix('<').and_then(|i| i.strip_suffix('>')) {
                Some(inner)
                    if !inner.contains(['<', '>'])
                        && !inner.contains(char::is_whitespace)
                        && inner
                            .split_once('@')
                            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@')) =>
                {
                    "ok"
                }
                _ => "odd",
            },
        }
    ));
    let to = value("to").unwrap_or("");
    out.push(format!(
        "tof:{}",
        if to.is_empty() {
            "none"
        } else if to.to_ascii_lowercase().contains("undisclosed") {
            "undisclosed"
        } else if to.contains('<') {
            "angle"
        } else {
            "bare"
        }
    ));
    let from = value("from").unwrap_or("");
    out.push(format!(
        "fromf:{}",
        match from.find('<') {
            Some(i) if !from[..i].trim().is_empty() => "named",
            Some(_) => "angle",
            None => "bare",
        }
    ));
    out
}

/// The token set of a message.
pub fn tokens(m: &Message) -> HashSet<String> {
    let mut t = HashSet::new();
    let mut add = |s: String| {
        t.insert(s);
    };
    // Subject (decoded): words and pairs.
    let subject: Vec<String> = words(&m.subject).collect();
    for w in &subject {
        add(format!("s:{w}"));
    }
    for p in subject.windows(2) {
        add(format!("s:{} {}", p[0], p[1]));
    }
    if m.subject.is_empty() {
        add("s:<none>".into());
    }
    // The originating hop: the oldest Received field, written by the first server that
    // took the message from its sender (the later hops are the receiving site's own).
    if let Some(h) = m.headers.iter().rev().find(|h| h.name.eq_ignore_ascii_case("received")) {
        for t in origin_tokens(&h.value) {
            add(t);
        }
    }
    // Headers.
    for h in &m.headers {
        let name = h.name.to_ascii_lowercase();
        if IGNORED_HEADERS.contains(&name.as_str()) || name.starts_with("x-spam") {
            continue;
        }
        let v = h.value.as_str();
        match name.as_str() {
            "from" | "reply-to" | "sender" => {
                let addr = address_in(v);
                let d = domain_of(&addr).to_string();
                // Prefixes of their own: `s:` is the Subject's and `r…:` the originating
                // hop's (Reply-To once shared `rd:` with the hop's DNS name and Sender
                // shared `s:` with the Subject's words).
                let tag = match name.as_str() {
                    "from" => "f",
                    "reply-to" => "rt",
                    _ => "snd",
                };
                add(format!("{tag}:{addr}"));
                add(format!("{tag}d:{d}"));
                add(format!("{tag}d2:{}", tail2(&d)));
                for w in words(v.split('<').next().unwrap_or("")) {
                    add(format!("{tag}n:{w}"));
                }
            }
            "to" | "cc" => {
                let n = v.matches('@').count();
                add(format!("{name}:count{}", n.min(10)));
            }
            "message-id" => {
                let addr = address_in(v);
                add(format!("mid:{}", tail2(domain_of(&addr))));
                let local = addr.split('@').next().unwrap_or("");
                let shape: String = local
                    .chars()
                    .map(|c| match c {
                        '0'..='9' => '9',
                        'a'..='z' => 'a',
                        'A'..='Z' => 'A',
                        other => other,
                    })
                    .collect::<String>()
                    .chars()
                    .take(12)
                    .collect();
                add(format!("mids:{shape}"));
            }
            "content-type"
            | "content-transfer-encoding"
            | "x-mailer"
            | "user-agent"
            | "mime-version"
            | "precedence"
            | "importance"
            | "x-priority"
            | "x-msmail-priority" => {
                for w in words(v).take(8) {
                    add(format!("{name}:{w}"));
                }
            }
            _ => {}
        }
    }
    for s in shape_tokens(m) {
        add(s);
    }
    // Body text: words and URL hosts.
    let (text, footer) = split_list_footer(m);
    let body: Vec<String> = words(text).take(MAX_BODY_WORDS).collect();
    for w in &body {
        add(w.clone());
    }
    // Links only the footer has are the list's too. (The author's text is lower-cased only
    // when a link is in the footer, and once.)
    let footer = footer.to_ascii_lowercase();
    let mut text_lower: Option<String> = None;
    for host in &m.links {
        if footer.contains(host.as_str())
            && !text_lower
                .get_or_insert_with(|| text.to_ascii_lowercase())
                .contains(host.as_str())
        {
            continue;
        }
        if host.parse::<std::net::Ipv4Addr>().is_ok() {
            // A link to a bare address: which one matters less than that there is one.
            add("u:<ip>".into());
        }
        add(format!("u:{}", tail2(host)));
        add(format!("uh:{host}"));
    }
    let n = body.len();
    add(format!(
        "len:{}",
        match n {
            0 => "0",
            1..=20 => "xs",
            21..=100 => "s",
            101..=400 => "m",
            401..=1500 => "l",
            _ => "xl",
        }
    ));
    add(format!("att:{}", m.attachments.min(3)));
    letter_combinations(&body, &mut t);
    t
}

/// Adds the character trigrams of each body word, its edges marked (`^cheap$` → `c:^ch`,
/// `c:che`, …, `c:ap$`): a model of their own (see `bayes`). Each distinct word once (a
/// body repeats most of its words), and a trigram already there is not allocated again.
fn letter_combinations(body: &[String], t: &mut HashSet<String>) {
    let (mut gram, mut chars, mut done) = (String::new(), Vec::new(), HashSet::new());
    for w in body {
        if !done.insert(w.as_str()) {
            continue;
        }
        chars.clear();
        chars.push('^');
        chars.extend(w.chars());
        chars.push('$');
        for g in chars.windows(NGRAM) {
            gram.clear();
            gram.push_str(NGRAM_PREFIX);
            gram.extend(g);
            if !t.contains(gram.as_str()) {
                t.insert(gram.clone());
            }
        }
    }
}

/// A word of the body text (the other tokens carry a `prefix:`), which the classifier weighs
/// by the body's length.
pub fn is_body_word(token: &str) -> bool {
    !token.contains(':')
}

/// Characters in a letter-combination token.
const NGRAM: usize = 3;

const NGRAM_PREFIX: &str = "c:";

/// A letter combination (a character trigram of a body word).
pub fn is_ngram(token: &str) -> bool {
    token.starts_with(NGRAM_PREFIX)
}

/// The bit that sets letter combinations' features apart from the others' (they form a
/// model of their own).
pub const NGRAM_BIT: u64 = 1 << 63;

/// FNV-1a, 64 bit: a stable hash (the model on disk must mean the same after a rebuild).
pub fn hash(token: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in token.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The feature of a token: its hash, folded into `features` buckets when that is not 0,
/// with `NGRAM_BIT` set for a letter combination and clear for any other token.
pub fn feature(token: &str, features: u64) -> u64 {
    let f = match features {
        0 => hash(token),
        n => hash(token) % n,
    } & !NGRAM_BIT;
    if is_ngram(token) { f | NGRAM_BIT } else { f }
}

/// Sorted, distinct features.
pub fn distinct(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v.dedup();
    v
}

/// A message's features for a model of `features` buckets (0: unfolded), sorted and distinct.
pub fn features(m: &Message, features: u64) -> Vec<u64> {
    distinct(tokens(m).iter().map(|t| feature(t, features)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::contract::Header;

    #[test]
    fn tokens_of_a_message() {
        let m = Message {
            subject: "Cheap Meds now".into(),
            from: "x@pharma.example".into(),
            headers: vec![
                Header {
                    name: "From".into(),
                    value: "Best Deals <x@mail.pharma.example>".into(),
                },
                Header {
                    name: "Received".into(),
                    value: "from collector.example by mx.collector.example".into(),
                },
                Header {
                    name: "Received".into(),
                    value: "from mail.relay.example (relay.example [203.0.113.5]) by collector.example".into(),
                },
                Header {
                    name: "X-Keywords".into(),
                    value: "".into(),
                },
                Header {
                    name: "Reply-To".into(),
                    value: "<deals@reply.example>".into(),
                },
                Header {
                    name: "Sender".into(),
                    value: "Bulk <bulk@sender.example>".into(),
                },
            ],
            text: "Visit http://shop.pharma.example/buy now!!! BUY".into(),
            links: vec!["shop.pharma.example".into(), "203.0.113.9".into()],
            ..Message::default()
        };
        let t = tokens(&m);
        for want in [
            "s:cheap",
            "s:cheap meds",
            "f:x@mail.pharma.example",
            "fd2:pharma.example",
            "fn:best",
            "uh:shop.pharma.example",
            "u:<ip>",
            "visit",
            "buy",
            "rh:relay.example",
            "rd:relay.example",
            "rip:203.0",
            "rip:203.0.113",
            "c:^vi",
            "c:isi",
            "c:it$",
            "rt:deals@reply.example",
            "rtd:reply.example",
            "snd:bulk@sender.example",
            "sndd:sender.example",
            "sndn:bulk",
        ] {
            assert!(t.contains(want), "{want} missing from {t:?}");
        }
        // Reply-To and Sender keep out of the hop's and the Subject's prefixes.
        for gone in ["rd:reply.example", "r:deals@reply.example", "s:bulk@sender.example"] {
            assert!(!t.contains(gone), "{gone} in {t:?}");
        }
        assert!(!t.contains("c:^v") && !t.contains("c:visi"), "trigrams only");
        // Body word pairs are not tokens; the Subject's are.
        assert!(!t.contains("buy now") && !t.contains("visit http"), "{t:?}");
        assert!(t.contains("dsh:<none>") && t.contains("fromf:named"), "{t:?}");
        assert!(
            !t.iter().any(|x| x.contains("collector") || x.contains("x-keywords")),
            "{t:?}"
        );
        assert_eq!(hash("a"), 0xaf63dc4c8601ec8c);
        assert!(
            is_body_word("visit") && is_body_word("buy now") && !is_body_word("s:cheap") && !is_body_word("u:<ip>")
        );
        assert!(is_ngram("c:^vi") && !is_ngram("cc:count1") && !is_body_word("c:^vi"));
        // Folded features stay within the buckets; letter combinations carry their bit.
        let f = features(&m, 1024);
        assert!(f.windows(2).all(|w| w[0] < w[1]) && f.iter().all(|&i| i & !NGRAM_BIT < 1024));
        assert_eq!(feature("c:^vi", 1024) & NGRAM_BIT, NGRAM_BIT);
        assert_eq!(feature("visit", 0) & NGRAM_BIT, 0);
    }

    #[test]
    fn shapes_of_the_fields_a_mailer_writes() {
        let with = |headers: &[(&str, &str)]| {
            let m = Message {
                headers: headers
                    .iter()
                    .map(|(n, v)| Header {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                ..Message::default()
            };
            shape_tokens(&m)
        };
        assert_eq!(
            with(&[
                ("Date", " Tue, 12 Nov 2002 18:07:11 -0500"),
                ("Message-ID", "<2392857.1@designer.example>"),
                ("To", "\"Jo\" <jo@example.org>"),
                ("From", "News <news@example.com>"),
            ]),
            [
                "dsh:aaa, 99 aaa 9999 99:99:99 -9999",
                "tz:-0500",
                "midf:ok",
                "tof:angle",
                "fromf:named"
            ]
        );
        // A trailing comment is not the zone; a named zone is one; an offset of no zone's
        // shape, or none at all, is `none`.
        assert_eq!(with(&[("Date", "Mon, 2 Sep 2002 13:04:31 -0700 (PDT)")])[1], "tz:-0700");
        assert_eq!(with(&[("Date", "Mon, 2 Sep 2002 13:04:31 GMT")])[1], "tz:GMT");
        assert_eq!(with(&[("Date", "Mon, 16 Sep 2002 03:27:38 (GMT)")])[1], "tz:none");
        assert_eq!(with(&[("Date", "2 Sep 2002 13:04:31")])[1], "tz:none");
        // Missing fields, and Message-IDs that are not one `<local@domain>`.
        assert_eq!(
            with(&[("From", "bob@example.org")]),
            ["dsh:<none>", "midf:none", "tof:none", "fromf:bare"]
        );
        for odd in [
            "<",
            "<>",
            "<a@b@c>",
            "<@b>",
            "<a@>",
            "a@b",
            "<a b@c>",
            "<a@b> <c@d>",
            "<é@",
        ] {
            assert_eq!(with(&[("Message-ID", odd)])[1], "midf:odd", "{odd}");
        }
        assert_eq!(
            with(&[("To", "undisclosed-recipients:;"), ("From", "<x@y>")])[2..],
            ["tof:undisclosed", "fromf:angle"]
        );
        // A long Date keeps the shape of its first 40 characters.
        let long = format!("Tue, 12 Nov 2002 18:07:11 -0500 {}", "x".repeat(100));
        assert_eq!(with(&[("Date", &long)])[0].chars().count(), "dsh:".len() + 40);
    }

    #[test]
    fn a_mailing_list_footer_is_the_lists_not_the_senders() {
        let header = |name: &str, value: &str| Header {
            name: name.into(),
            value: value.into(),
        };
        let listed = |text: &str| Message {
            headers: vec![
                header("List-Id", "Tools talk <tools.lists.example>"),
                header(
                    "List-Unsubscribe",
                    "<https://lists.example/listinfo/tools>, <mailto:tools-request@lists.example?subject=unsubscribe>",
                ),
            ],
            text: text.into(),
            links: vec!["offer.example".into(), "sponsor.example".into(), "lists.example".into()],
            ..Message::default()
        };
        // A mailman footer with a sponsor block above it: both go, from the first separator.
        let body = "Cheap offer at http://offer.example now\n\n-------------------------\nThis list is sponsored by http://sponsor.example\n_______________________\ntools mailing list\nhttps://lists.example/listinfo/tools\n";
        let m = listed(body);
        let (text, footer) = split_list_footer(&m);
        assert_eq!(text, "Cheap offer at http://offer.example now\n\n");
        assert!(
            footer.starts_with("-----") && footer.contains("listinfo/tools"),
            "{footer:?}"
        );
        let t = tokens(&m);
        for kept in ["cheap", "offer", "uh:offer.example", "len:xs"] {
            assert!(t.contains(kept), "{kept} missing from {t:?}");
        }
        for gone in ["sponsored", "mailing list", "uh:sponsor.example", "uh:lists.example"] {
            assert!(!t.contains(gone), "{gone} still in {t:?}");
        }
        // HTML reduced to text: one line, the separator inside it.
        let m = listed("Win a green card today ____________ tools mailing list tools@lists.example");
        assert_eq!(split_list_footer(&m).0, "Win a green card today ");
        // A bare line naming the list (no separator) is a footer too.
        let m = listed("Buy now\nhttps://lists.example/listinfo/tools\n");
        assert_eq!(split_list_footer(&m).0, "Buy now\n");
        // A separator whose rest says nothing of a list is the author's own.
        let m = listed("Part one\n-----\nPart two, signed Bob\n");
        assert_eq!(split_list_footer(&m), (m.text.as_str(), ""));
        // Without list headers nothing is a list footer, whatever the text says.
        let m = Message {
            text: body.into(),
            ..Message::default()
        };
        assert_eq!(split_list_footer(&m), (body, ""));
        assert!(tokens(&m).contains("sponsored"));
        // Far from the end (more than FOOTER_LINES lines before it) a separator is content.
        let long = format!(
            "Intro\n-----\nsee the mailing list\n{}end\n",
            "line\n".repeat(FOOTER_LINES + 1)
        );
        let m = listed(&long);
        assert_eq!(split_list_footer(&m).1, "");
    }
}
