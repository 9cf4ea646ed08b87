//! MIME structure with exact byte ranges, for FETCH BODY[section], BODYSTRUCTURE and
//! ENVELOPE (RFC 3501 §6.4.5, §7.4.2).
//!
//! IMAP needs the octets of each part exactly as stored (sizes, partial fetches, part
//! numbers), so the walk here keeps ranges into the raw message and decodes nothing.
//! Header values are unfolded but left encoded (RFC 2047 words go to the client as they are,
//! as Dovecot does).
//!
//! Why this walk and not mail-parser (which the policies' view of a message and BINARY's
//! decoding use): mail-parser has no structure-only pass. It decodes every part's body
//! (base64, quoted-printable, charsets into `String`s) to give the structure, which a FETCH of
//! BODYSTRUCTURE or one section of a large message would pay in full; a base64 attached
//! message is decoded and parsed, so its part offsets point into a decoded copy where IMAP
//! needs the raw octets and treats it as one opaque part; and header values come decoded
//! (RFC 2047, RFC 2231), where ENVELOPE and BODYSTRUCTURE must carry them as sent.

use std::ops::Range;

/// How deep multiparts and attached messages are followed; deeper parts are leaves.
const MAX_DEPTH: usize = 24;

#[derive(Debug, Clone)]
pub struct Part {
    /// The header block, including the blank line that ends it.
    pub header: Range<usize>,
    pub body: Range<usize>,
    /// Lower-case type and subtype.
    pub ctype: String,
    pub subtype: String,
    /// Content-Type parameters, names in lower case, values unquoted.
    pub params: Vec<(String, String)>,
    pub children: Vec<Part>,
    /// The message inside a message/rfc822 part (ranges into the same raw message).
    pub message: Option<Box<Part>>,
}

impl Part {
    pub fn is_multipart(&self) -> bool {
        self.ctype == "multipart"
    }

    pub fn is_message(&self) -> bool {
        self.message.is_some()
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// End of the header block (after its blank line) in `raw[range]`, as an absolute offset.
fn header_end(raw: &[u8], range: &Range<usize>) -> usize {
    let s = &raw[range.clone()];
    if s.starts_with(b"\r\n") {
        return range.start + 2;
    }
    if s.starts_with(b"\n") {
        return range.start + 1;
    }
    let mut i = 0;
    while let Some(j) = memchr::memchr(b'\n', &s[i..]) {
        let nl = i + j;
        let next = &s[nl + 1..];
        if next.starts_with(b"\r\n") {
            return range.start + nl + 3;
        }
        if next.starts_with(b"\n") {
            return range.start + nl + 2;
        }
        i = nl + 1;
    }
    range.end
}

/// Length of a message's header block, its blank line included.
pub fn header_len(raw: &[u8]) -> usize {
    header_end(raw, &(0..raw.len()))
}

/// Header fields of a header block: `(name, unfolded raw value)`, in order.
pub fn fields(header: &[u8]) -> Vec<(&str, String)> {
    fields_where(header, |_| true)
}

/// [`fields`], keeping only the fields whose name is one of `names` (ASCII
/// case-insensitive): the others' values are never copied.
pub fn fields_named<'a>(header: &'a [u8], names: &[&str]) -> Vec<(&'a str, String)> {
    fields_where(header, |n| names.iter().any(|w| w.eq_ignore_ascii_case(n)))
}

fn fields_where(header: &[u8], keep: impl Fn(&str) -> bool) -> Vec<(&str, String)> {
    let mut out: Vec<(&str, String)> = Vec::new();
    // Whether the field the current continuation lines belong to was kept.
    let mut kept = false;
    for line in header.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if kept && let Some((_, v)) = out.last_mut() {
                v.push_str(&String::from_utf8_lossy(line));
            }
            continue;
        }
        kept = false;
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(&line[..colon]) else {
            continue;
        };
        let name = name.trim_end();
        if !keep(name) {
            continue;
        }
        kept = true;
        let value = String::from_utf8_lossy(&line[colon + 1..]).trim_start().to_string();
        out.push((name, value));
    }
    for (_, v) in out.iter_mut() {
        let t = v.trim_end().len();
        v.truncate(t);
    }
    out
}

pub fn field<'a>(fields: &'a [(&str, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Removes RFC 5322 comments `( … )` outside quoted strings.
fn strip_comments(s: &str) -> String {
    split_comments(s).0
}

/// `s` without its RFC 5322 comments, and the text of each top-level comment (nested ones
/// kept inside it).
fn split_comments(s: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(s.len());
    let mut comments = Vec::new();
    let mut comment = String::new();
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for c in s.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            } else {
                comment.push(c);
            }
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => {
                if depth > 0 {
                    comment.push(c);
                }
                depth += 1;
            }
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    comments.push(std::mem::take(&mut comment));
                } else {
                    comment.push(c);
                }
            }
            _ if depth == 0 => out.push(c),
            _ => comment.push(c),
        }
    }
    (out, comments)
}

/// Splits `value; a=b; c="d"` into the value and its parameters. A quoted value is kept
/// exactly (spaces, `;`, `=` and parentheses inside the quotes included); whitespace outside
/// quotes around names and values is not part of them.
pub fn parse_params(v: &str) -> (String, Vec<(String, String)>) {
    let v = strip_comments(v);
    // Each part as (character, whether it was inside quotes or escaped).
    let mut parts: Vec<Vec<(char, bool)>> = vec![Vec::new()];
    let (mut quoted, mut escaped) = (false, false);
    for c in v.chars() {
        let cur = parts.last_mut().expect("never empty");
        if escaped {
            cur.push((c, true));
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == ';' && !quoted {
            parts.push(Vec::new());
        } else {
            cur.push((c, quoted));
        }
    }
    fn text(chars: &[(char, bool)]) -> String {
        let bare_space = |&(c, q): &(char, bool)| c.is_whitespace() && !q;
        let start = chars.iter().position(|c| !bare_space(c)).unwrap_or(chars.len());
        let end = chars.iter().rposition(|c| !bare_space(c)).map_or(start, |i| i + 1);
        chars[start..end].iter().map(|(c, _)| c).collect()
    }
    let mut it = parts.into_iter();
    let value = text(&it.next().unwrap_or_default());
    let params = it
        .filter_map(|p| {
            let eq = p.iter().position(|&(c, q)| c == '=' && !q)?;
            let n = text(&p[..eq]).to_ascii_lowercase();
            (!n.is_empty()).then(|| (n, text(&p[eq + 1..])))
        })
        .collect();
    (value, params)
}

/// Parses the structure of a message.
pub fn parse(raw: &[u8]) -> Part {
    parse_part(raw, 0..raw.len(), ("text", "plain"), 0)
}

fn parse_part(raw: &[u8], range: Range<usize>, default: (&str, &str), depth: usize) -> Part {
    let hend = header_end(raw, &range);
    let header = range.start..hend;
    let body = hend..range.end;
    let f = fields(&raw[header.clone()]);
    let (mut ctype, mut subtype, mut params) = (default.0.to_string(), default.1.to_string(), Vec::new());
    if let Some(ct) = field(&f, "content-type") {
        let (v, p) = parse_params(ct);
        if let Some((t, s)) = v.split_once('/') {
            let (t, s) = (t.trim().to_ascii_lowercase(), s.trim().to_ascii_lowercase());
            if !t.is_empty() && !s.is_empty() {
                (ctype, subtype, params) = (t, s, p);
            }
        }
    }
    let mut part = Part {
        header,
        body: body.clone(),
        ctype,
        subtype,
        params,
        children: Vec::new(),
        message: None,
    };
    if depth >= MAX_DEPTH {
        return part;
    }
    if part.ctype == "multipart" {
        let Some(boundary) = part.param("boundary").map(str::to_string) else {
            return part;
        };
        let child_default = if part.subtype == "digest" {
            ("message", "rfc822")
        } else {
            ("text", "plain")
        };
        for r in split_multipart(raw, body, boundary.as_bytes()) {
            part.children.push(parse_part(raw, r, child_default, depth + 1));
        }
    } else if part.ctype == "message" && (part.subtype == "rfc822" || part.subtype == "global") {
        let enc = field(&f, "content-transfer-encoding")
            .unwrap_or("7bit")
            .to_ascii_lowercase();
        // An encoded attached message is opaque to IMAP part numbers.
        if matches!(enc.trim(), "7bit" | "8bit" | "binary") {
            part.message = Some(Box::new(parse_part(raw, body, ("text", "plain"), depth + 1)));
        }
    }
    part
}

/// Ranges of the parts of a multipart body: each starts after a delimiter line and ends
/// before the line break that precedes the next delimiter (RFC 2046 §5.1.1).
fn split_multipart(raw: &[u8], body: Range<usize>, boundary: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = body.start;
    while pos < body.end {
        let line_end = memchr::memchr(b'\n', &raw[pos..body.end])
            .map(|i| pos + i + 1)
            .unwrap_or(body.end);
        let line = &raw[pos..line_end];
        if line.len() >= 2 + boundary.len() && line.starts_with(b"--") && line[2..].starts_with(boundary) {
            let rest = &line[2 + boundary.len()..];
            let closing = rest.starts_with(b"--");
            let tail = if closing { &rest[2..] } else { rest };
            if tail.iter().all(|b| b.is_ascii_whitespace()) {
                if let Some(s) = start {
                    // The CRLF before the delimiter belongs to the delimiter.
                    let mut end = pos;
                    if end > s && raw[end - 1] == b'\n' {
                        end -= 1;
                        if end > s && raw[end - 1] == b'\r' {
                            end -= 1;
                        }
                    }
                    out.push(s..end.max(s));
                }
                if closing {
                    return out;
                }
                start = Some(line_end);
            }
        }
        pos = line_end;
    }
    if let Some(s) = start {
        out.push(s..body.end); // no closing delimiter: the last part runs to the end
    }
    out
}

/// Number of lines in `body` (as IMAP counts them for text parts).
pub fn line_count(body: &[u8]) -> usize {
    let n = memchr::memchr_iter(b'\n', body).count();
    if body.last().is_some_and(|&b| b != b'\n') {
        n + 1
    } else {
        n
    }
}

/// The part a section's part numbers name, starting from the message itself.
pub fn resolve<'a>(root: &'a Part, path: &[u32]) -> Option<&'a Part> {
    let mut cur = root;
    for (i, &n) in path.iter().enumerate() {
        if let Some(m) = cur.message.as_deref().filter(|_| i > 0) {
            cur = m;
        }
        if cur.is_multipart() {
            cur = cur.children.get(n as usize - 1)?;
        } else if n != 1 {
            return None;
        }
    }
    Some(cur)
}

/// An address from an address-list header, for ENVELOPE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Mailbox {
        name: Option<String>,
        /// A source route (`@a,@b` of `<@a,@b:user@host>`), obsolete but kept (RFC 3501
        /// §7.4.2 "at-domain-list").
        adl: Option<String>,
        mailbox: String,
        host: String,
    },
    GroupStart(String),
    GroupEnd,
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        let mut out = String::new();
        let mut esc = false;
        for c in s[1..s.len() - 1].chars() {
            if esc {
                out.push(c);
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else {
                out.push(c);
            }
        }
        out
    } else {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

fn split_addr(spec: &str) -> (String, String) {
    let spec = spec.trim();
    match spec.rfind('@') {
        Some(i) => (unquote(&spec[..i]), spec[i + 1..].trim().to_string()),
        None => (unquote(spec), String::new()),
    }
}

/// Splits `s` at `sep` outside quotes, comments and angle brackets.
fn split_top(s: &str, seps: &[char]) -> Vec<(String, Option<char>)> {
    let mut out = Vec::new();
    let (mut cur, mut quoted, mut esc, mut angle) = (String::new(), false, false, false);
    let mut depth = 0usize;
    for c in s.chars() {
        if esc {
            cur.push(c);
            esc = false;
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => {
                esc = true;
                cur.push(c);
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                cur.push(c);
            }
            '(' if !quoted => {
                depth += 1;
                cur.push(c);
            }
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                cur.push(c);
            }
            c if depth > 0 => cur.push(c),
            '<' if !quoted => {
                angle = true;
                cur.push(c);
            }
            '>' if !quoted => {
                angle = false;
                cur.push(c);
            }
            c if !quoted && !angle && seps.contains(&c) => out.push((std::mem::take(&mut cur), Some(c))),
            c => cur.push(c),
        }
    }
    out.push((cur, None));
    out
}

fn mailbox_of(item: &str) -> Option<Addr> {
    let (item, comments) = split_comments(item);
    let item = item.trim();
    if item.is_empty() {
        return None;
    }
    let (name, spec) = match (item.find('<'), item.rfind('>')) {
        (Some(a), Some(b)) if b > a => {
            let name = unquote(&item[..a]);
            (Some(name).filter(|n| !n.is_empty()), &item[a + 1..b])
        }
        // `user@host (Real Name)`: the comment is the only name there is (what Dovecot and
        // most clients show).
        _ => (
            comments
                .iter()
                .rev()
                .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
                .find(|c| !c.is_empty()),
            item,
        ),
    };
    // A source route (`@a,@b:user@host`) goes into the ADL.
    let (adl, spec) = match spec.trim().strip_prefix('@').and_then(|_| spec.split_once(':')) {
        Some((route, rest)) => (Some(route.trim().to_string()).filter(|r| !r.is_empty()), rest),
        None => (None, spec),
    };
    let (mailbox, host) = split_addr(spec);
    Some(Addr::Mailbox {
        name,
        adl,
        mailbox,
        host,
    })
}

/// Parses an address-list header value (with groups).
pub fn addresses(value: &str) -> Vec<Addr> {
    let mut out = Vec::new();
    let mut in_group = false;
    for (chunk, sep) in split_top(value, &[',', ':', ';']) {
        match sep {
            Some(':') if !in_group => {
                out.push(Addr::GroupStart(unquote(&strip_comments(&chunk))));
                in_group = true;
            }
            Some(';') if in_group => {
                out.extend(mailbox_of(&chunk));
                out.push(Addr::GroupEnd);
                in_group = false;
            }
            _ => out.extend(mailbox_of(&chunk)),
        }
    }
    if in_group {
        out.push(Addr::GroupEnd);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: a@b\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n\
preamble\r\n--XX\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n--YY\r\n\
Content-Type: text/plain\r\n\r\nplain\r\n--YY\r\nContent-Type: text/html\r\n\r\n<b>html</b>\r\n--YY--\r\n\
\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--XX--\r\nepilogue\r\n";

    #[test]
    fn structure_and_ranges() {
        let root = parse(MSG);
        assert!(root.is_multipart());
        assert_eq!(root.children.len(), 2);
        let alt = &root.children[0];
        assert_eq!(alt.subtype, "alternative");
        assert_eq!(&MSG[alt.children[0].body.clone()], b"plain");
        assert_eq!(&MSG[alt.children[1].body.clone()], b"<b>html</b>");
        let p = resolve(&root, &[1, 2]).unwrap();
        assert_eq!(p.subtype, "html");
        let m = resolve(&root, &[2]).unwrap();
        assert!(m.is_message());
        let inner = m.message.as_ref().unwrap();
        assert_eq!(&MSG[inner.header.clone()], b"Subject: inner\r\n\r\n");
        assert_eq!(&MSG[resolve(&root, &[2, 1]).unwrap().body.clone()], b"inner body");
        assert!(resolve(&root, &[3]).is_none());
        let single = parse(b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(resolve(&single, &[1]).unwrap().body, 14..20);
        assert!(resolve(&single, &[2]).is_none());
        assert_eq!(line_count(b"a\r\nb"), 2);
    }

    #[test]
    fn headers_and_addresses() {
        let f = fields(b"Subject: a\r\n b\r\nTo: \"Doe, J\" <j@x.org>, k@y (K), g: m@z, n@z;\r\n\r\n");
        assert_eq!(field(&f, "subject"), Some("a b"));
        let a = addresses(field(&f, "to").unwrap());
        assert_eq!(
            a[0],
            Addr::Mailbox {
                name: Some("Doe, J".into()),
                adl: None,
                mailbox: "j".into(),
                host: "x.org".into()
            }
        );
        // `addr (comment)`: the comment names the mailbox.
        assert_eq!(
            a[1],
            Addr::Mailbox {
                name: Some("K".into()),
                adl: None,
                mailbox: "k".into(),
                host: "y".into()
            }
        );
        assert_eq!(a[2], Addr::GroupStart("g".into()));
        assert_eq!(a.len(), 6);
        assert_eq!(a[5], Addr::GroupEnd);
        let a = addresses("user@domain (Real, Name (nested)), <@route1,@route2:u@h>, \"Q\" <q@h> (not a name)");
        let mb = |name: Option<&str>, adl: Option<&str>, m: &str, h: &str| Addr::Mailbox {
            name: name.map(Into::into),
            adl: adl.map(Into::into),
            mailbox: m.into(),
            host: h.into(),
        };
        assert_eq!(
            a,
            vec![
                mb(Some("Real, Name (nested)"), None, "user", "domain"),
                mb(None, Some("@route1,@route2"), "u", "h"),
                mb(Some("Q"), None, "q", "h"),
            ]
        );
        let (v, p) = parse_params("text/plain; charset=\"utf-8\" (c); format=flowed");
        assert_eq!(v, "text/plain");
        assert_eq!(
            p,
            vec![("charset".into(), "utf-8".into()), ("format".into(), "flowed".into())]
        );
    }

    #[test]
    fn named_fields_skip_others_and_their_continuations() {
        let h = b"Received: from a\r\n\tby b\r\nSubject: one\r\n two\r\nX-Other: x\r\n y\r\nFROM: a@b\r\n\r\n";
        let f = fields_named(h, &["subject", "from"]);
        assert_eq!(f, vec![("Subject", "one two".to_string()), ("FROM", "a@b".to_string())]);
        assert_eq!(fields(h).len(), 4);
    }
}
