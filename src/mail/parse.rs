//! The message as policies see it, parsed once per transaction.

use super::model::{Header, Message};

/// Longest body text handed to policies; spam text past 1 MiB adds nothing to a verdict.
const MAX_TEXT: usize = 1 << 20;

/// Where the header block's blank line starts (the `\r\n\r\n` after the last field), if
/// there is one.
fn blank_line(raw: &[u8]) -> Option<usize> {
    memchr::memmem::find(raw, b"\r\n\r\n")
}

/// Raw header fields, unfolded, in order; stops at the blank line.
fn raw_headers(raw: &[u8]) -> Vec<Header> {
    let end = blank_line(raw).map(|i| i + 2).unwrap_or(raw.len());
    let text = utf8_lossy(&raw[..end]);
    let mut out: Vec<Header> = Vec::new();
    for line in text.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.value.push(' ');
                last.value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push(Header {
                name: name.trim().to_string(),
                value: value.trim().to_string(),
            });
        }
    }
    out
}

/// `String::from_utf8_lossy`, with the (vectorised) validity check first: std's lossy
/// decoder walks valid text a byte at a time.
fn utf8_lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => s.into(),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// mail-parser set to decode only what [`parse_message`] reads: the MIME headers (needed for
/// the bodies), Subject, From and To. Its default also parses every Received, Date,
/// Message-ID, References and List-* field, which nothing here looks at (our `headers` are
/// the raw fields); every other field is kept raw.
fn parser() -> &'static mail_parser::MessageParser {
    use mail_parser::HeaderName;
    static PARSER: std::sync::OnceLock<mail_parser::MessageParser> = std::sync::OnceLock::new();
    PARSER.get_or_init(|| {
        mail_parser::MessageParser::new()
            .with_mime_headers()
            .header_text(HeaderName::Subject)
            .header_address(HeaderName::From)
            .header_address(HeaderName::To)
    })
}

/// Parses a message once for every policy: decoded subject, From, To, text, headers.
pub fn parse_message(raw: &[u8]) -> Message {
    let mut m = header_fields(raw);
    if let Some(body) = plain_body(raw, &m.headers)
        && let Some(p) = parser().parse_headers(raw)
    {
        addresses(&mut m, &p);
        set_text(&mut m, body.to_string(), Links::default());
    } else {
        parse_body(raw, &mut m);
    }
    m
}

/// A message of the raw header fields and the size, for the parse to fill in.
fn header_fields(raw: &[u8]) -> Message {
    Message {
        headers: raw_headers(raw),
        size: raw.len(),
        ..Message::default()
    }
}

/// The body of a single-part plain-text message whose text is its bytes as they are: no
/// `Content-Type` or `text/plain` (charset none or UTF-8 with a valid UTF-8 body, or ASCII
/// with an ASCII body), no transfer encoding (or 7bit, 8bit, binary), clean CRLF headers.
/// mail-parser gives the same text for such a body ([`parse_body`]; test
/// `plain_bodies_read_as_mail_parser_reads_them`) after a byte-at-a-time lossy UTF-8 pass (a
/// fifth of the parse); most other mail (multipart, HTML, encoded, other charsets) goes to
/// it. `None`: not such a message.
fn plain_body<'a>(raw: &'a [u8], headers: &[Header]) -> Option<&'a str> {
    let end = blank_line(raw)?;
    let block = &raw[..end + 2];
    // Every LF of the header block ends a CRLF (so its first blank line is the one found).
    if memchr::memchr_iter(b'\n', block).count() != memchr::memmem::find_iter(block, b"\r\n").count() {
        return None;
    }
    // The field's value, lowercase, when there is at most one and it has no comment or
    // quoted pair (mail-parser's structured parse is then needed); `Err`: leave it to it.
    let one = |name: &str| -> Result<Option<String>, ()> {
        let mut it = headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
        match (it.next(), it.next()) {
            (None, _) => Ok(None),
            (Some(h), None) if !h.value.contains(['(', '\\']) => Ok(Some(h.value.to_ascii_lowercase())),
            _ => Err(()),
        }
    };
    let charset = match one("Content-Type").ok()? {
        None => None,
        Some(ct) => {
            let mut parts = ct.split(';').map(str::trim);
            if parts.next() != Some("text/plain") {
                return None;
            }
            let mut charset = None;
            for p in parts.filter(|p| !p.is_empty()) {
                let (k, v) = p.split_once('=')?;
                match k.trim() {
                    "charset" => charset = Some(v.trim().trim_matches('"').to_string()),
                    k if k.starts_with("charset") => return None, // RFC 2231 forms
                    _ => {}
                }
            }
            charset
        }
    };
    match one("Content-Transfer-Encoding").ok()?.as_deref() {
        None | Some("7bit" | "8bit" | "binary") => {}
        Some(_) => return None,
    }
    let body = &raw[end + 4..];
    match charset.as_deref() {
        None | Some("utf-8" | "utf8") => std::str::from_utf8(body).ok(),
        Some("us-ascii" | "ascii") if body.is_ascii() => std::str::from_utf8(body).ok(),
        _ => None,
    }
}

/// Subject, From and To from mail-parser's reading of the header.
fn addresses(m: &mut Message, p: &mail_parser::Message<'_>) {
    m.subject = p.subject().unwrap_or("").to_string();
    m.from = p
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or("")
        .to_string();
    m.to = p
        .to()
        .map(|a| a.iter().filter_map(|x| x.address()).map(str::to_string).collect())
        .unwrap_or_default();
}

/// The body text (cut at [`MAX_TEXT`]) and the links: those found so far and the text's own.
fn set_text(m: &mut Message, mut text: String, mut links: Links) {
    if text.len() > MAX_TEXT {
        let mut cut = MAX_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    links.in_text(&text);
    m.text = text;
    m.links = links.0;
}

/// The whole message through mail-parser: addresses, text, links, attachments.
fn parse_body(raw: &[u8], m: &mut Message) {
    let Some(p) = parser().parse(raw) else { return };
    addresses(m, &p);
    // Text parts, or HTML parts reduced to text when a part has no text form; then attached
    // messages, one level down.
    let mut text = String::new();
    append_text(&mut text, &p);
    let mut links = Links::default();
    for part in &p.parts {
        match &part.body {
            mail_parser::PartType::Html(html) => links.in_html(html),
            mail_parser::PartType::Message(inner) if text.len() < MAX_TEXT => {
                text.push('\n');
                text.push_str(inner.subject().unwrap_or(""));
                append_text(&mut text, inner);
                for inner_part in &inner.parts {
                    if let mail_parser::PartType::Html(html) = &inner_part.body {
                        links.in_html(html);
                    }
                }
            }
            _ => {}
        }
    }
    set_text(m, text, links);
    m.attachments = p.attachment_count();
}

fn append_text(text: &mut String, p: &mail_parser::Message<'_>) {
    for i in 0.. {
        let Some(t) = p.body_text(i) else { break };
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&t);
        if text.len() > MAX_TEXT {
            break;
        }
    }
}

/// Most link hosts kept per message.
const MAX_LINKS: usize = 64;

/// Link hosts, distinct, in order.
#[derive(Default)]
struct Links(Vec<String>);

impl Links {
    fn push(&mut self, url_rest: &str) {
        if self.0.len() >= MAX_LINKS {
            return;
        }
        // After the scheme: userinfo@host:port/path -> host.
        let authority = url_rest
            .split(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | '>' | '<' | ')' | ']') || c.is_whitespace())
            .next()
            .unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        let host = host.split(':').next().unwrap_or("");
        let host = host.trim_matches('.').to_ascii_lowercase();
        if host.contains('.')
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && !self.0.contains(&host)
        {
            self.0.push(host);
        }
    }

    /// `http://`, `https://` and bare `www.` links in text.
    fn in_text(&mut self, text: &str) {
        let lower = text.to_ascii_lowercase();
        for marker in ["http://", "https://", "www."] {
            // An ASCII marker only matches at a char boundary, so `lower[start..]` is sound.
            for i in memchr::memmem::find_iter(lower.as_bytes(), marker.as_bytes()) {
                let start = if marker == "www." { i } else { i + marker.len() };
                self.push(&lower[start..]);
            }
        }
    }

    /// `href` and `src` attribute values of an HTML part that are absolute URLs.
    fn in_html(&mut self, html: &str) {
        let lower = html.to_ascii_lowercase();
        for attr in ["href", "src"] {
            let mut from = 0;
            while let Some(i) = memchr::memmem::find(&lower.as_bytes()[from..], attr.as_bytes()) {
                let at = from + i + attr.len();
                from = at;
                let rest = lower[at..].trim_start();
                let Some(rest) = rest.strip_prefix('=') else { continue };
                let value = rest.trim_start().trim_start_matches(['"', '\'']).trim_start();
                let url = value
                    .strip_prefix("http://")
                    .or_else(|| value.strip_prefix("https://"))
                    .or_else(|| value.strip_prefix("//"));
                if let Some(u) = url {
                    self.push(u);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mail-parser's reading of the whole message, which `parse_message` skips for plain
    /// bodies.
    fn by_mail_parser(raw: &[u8]) -> Message {
        let mut m = header_fields(raw);
        parse_body(raw, &mut m);
        m
    }

    /// The plain-text path reads exactly what mail-parser reads: for messages made to sit on
    /// either side of each of its conditions, and for every message of the dev corpus (when
    /// ../shared/corpus exists) that it takes.
    #[test]
    fn plain_bodies_read_as_mail_parser_reads_them() {
        let head = "From: \"Ann Example\" <ann@example.org>\r\nTo: b@example.test, C <c@example.test>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and\r\n a fold\r\n";
        let body = "Hello,\r\n\r\nsee http://example.com/x and www.example.net.\r\n-- \r\nAnn\r\n\r\n";
        let cases: Vec<(Vec<u8>, bool)> = vec![
            (format!("{head}\r\n{body}").into(), true),
            (format!("{head}Content-Type: text/plain; charset=\"utf-8\"; format=flowed\r\n\r\nGrüße {body}").into(), true),
            (format!("{head}Content-Type: TEXT/PLAIN; CHARSET=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nÀ {body}").into(), true),
            (format!("{head}Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n{body}").into(), true),
            (format!("{head}Content-Type: text/plain; charset=us-ascii\r\n\r\né {body}").into(), false),
            (format!("{head}Content-Type: text/plain; charset=iso-8859-1\r\n\r\n{body}").into(), false),
            (format!("{head}Content-Type: text/plain; charset*=utf-8''x\r\n\r\n{body}").into(), false),
            (format!("{head}Content-Type: text/html\r\n\r\n<p>{body}</p>").into(), false),
            (format!("{head}Content-Type: text/plain (comment)\r\n\r\n{body}").into(), false),
            (format!("{head}Content-Type: text/plain\r\nContent-Type: text/html\r\n\r\n{body}").into(), false),
            (format!("{head}Content-Transfer-Encoding: quoted-printable\r\n\r\nA=3DB {body}").into(), false),
            (format!("{head}Content-Transfer-Encoding: base64\r\n\r\nSGVsbG8=\r\n").into(), false),
            (format!("{head}X-Bare: lf\n\r\n{body}").into(), false),
            (format!("{head}\r\n").into(), true),
            (format!("{head}\r\n\r\n\r\nlate start\r\n").into(), true),
            ([format!("{head}\r\n").as_bytes(), b"bad \xff utf-8\r\n"].concat(), false),
            (format!("{head}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n{body}--b--\r\n").into(), false),
            (head.as_bytes().to_vec(), false),
        ];
        for (i, (raw, fast)) in cases.iter().enumerate() {
            assert_eq!(plain_body(raw, &raw_headers(raw)).is_some(), *fast, "case {i}");
            assert_eq!(parse_message(raw), by_mail_parser(raw), "case {i}");
        }
        let plain = parse_message(&cases[0].0);
        assert_eq!(plain.subject, "Grüße and a fold");
        assert_eq!(plain.to, ["b@example.test", "c@example.test"]);
        assert_eq!(plain.links, ["example.com", "www.example.net"]);

        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev");
        if !corpus.is_dir() {
            eprintln!("skipped the corpus half: {} is not there", corpus.display());
            return;
        }
        let (mut seen, mut fast) = (0, 0);
        for dir in ["ham", "spam"] {
            for entry in std::fs::read_dir(corpus.join(dir)).unwrap() {
                let raw = super::super::wire::from_file(&std::fs::read(entry.unwrap().path()).unwrap());
                seen += 1;
                if plain_body(&raw, &raw_headers(&raw)).is_some() {
                    fast += 1;
                    assert_eq!(parse_message(&raw), by_mail_parser(&raw), "{dir} message {seen}");
                }
            }
        }
        assert!(fast > seen / 10, "the plain path took {fast} of {seen}");
        eprintln!("plain path: {fast} of {seen} corpus messages, each read as mail-parser reads it");
    }

    #[test]
    fn parses_once_for_policies() {
        let raw = b"From: \"A\" <a@example.org>\r\nTo: b@example.test\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nX-Long: one\r\n two\r\n\r\nHello body\r\n";
        let m = parse_message(raw);
        assert_eq!(m.subject, "caf\u{e9}");
        assert_eq!(m.from, "a@example.org");
        assert_eq!(m.to, vec!["b@example.test"]);
        assert!(m.text.contains("Hello body"));
        assert_eq!(
            m.headers[3],
            Header {
                name: "X-Long".into(),
                value: "one two".into()
            }
        );
    }

    #[test]
    fn links_from_html_and_text_and_attached_messages() {
        let raw = concat!(
            "From: a@example.org\r\nSubject: bounce\r\nMIME-Version: 1.0\r\n",
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n",
            "--b\r\nContent-Type: text/html\r\n\r\n",
            "<p>Hi <a HREF = \"https://User@Shop.Example:8080/x?y\">deal</a> <img src='//cdn.example/p.gif'>",
            " <a href=\"mailto:x@example.org\">m</a> <a href=\"/relative\">r</a></p>\r\n",
            "--b\r\nContent-Type: message/rfc822\r\n\r\n",
            "From: spammer@pills.example\r\nSubject: cheap meds\r\n\r\nBuy at www.pills.example today\r\n",
            "--b--\r\n"
        );
        let m = parse_message(raw.as_bytes());
        assert_eq!(m.links, vec!["shop.example", "cdn.example", "www.pills.example"]);
        assert!(m.text.contains("Hi deal") || m.text.contains("deal"), "{}", m.text);
        assert!(m.text.contains("cheap meds") && m.text.contains("Buy at"), "{}", m.text);
    }
}
