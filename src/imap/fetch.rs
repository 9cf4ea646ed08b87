//! FETCH data items: ENVELOPE, BODY/BODYSTRUCTURE, BODY[section]<partial>, BINARY (RFC 3516).

use super::command::{Section, SectionKind};
use super::mime::{self, Addr, Part};

/// Writes an IMAP string: quoted when it is short printable ASCII, else a literal.
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    let quotable = s.len() < 1024 && s.iter().all(|&b| (0x20..0x7f).contains(&b));
    if quotable {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        write_literal(out, s);
    }
}

pub fn write_literal(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
}

/// A literal for BODY[...] and RFC822 data: a plain literal may not carry NUL (RFC 3501
/// CHAR8), so each NUL becomes 0x80, as Dovecot does; the length does not change. Only
/// BINARY[...] sends NULs, in a literal8 (RFC 3516).
pub fn write_text_literal(out: &mut Vec<u8>, s: &[u8]) {
    if !s.contains(&0) {
        return write_literal(out, s);
    }
    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
    out.extend(s.iter().map(|&b| if b == 0 { 0x80 } else { b }));
}

/// A literal for BINARY[...] data: a literal8 (`~{n}`) when it holds NUL (RFC 3516 §4.2).
pub fn write_binary_literal(out: &mut Vec<u8>, s: &[u8]) {
    if s.contains(&0) {
        out.push(b'~');
    }
    write_literal(out, s);
}

fn nstring(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => write_string(out, s.as_bytes()),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// Writes a mailbox name as an astring (UTF-8 or modified UTF-7 as the session needs).
pub fn write_mailbox(out: &mut Vec<u8>, name: &str, utf8: bool) {
    let encoded = if utf8 {
        name.to_string()
    } else {
        super::mutf7::encode(name)
    };
    let atom = !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b > 0x20 && b < 0x7f && !b"(){%*\"\\]".contains(&b));
    if atom {
        out.extend_from_slice(encoded.as_bytes());
    } else {
        write_string(out, encoded.as_bytes());
    }
}

fn address_list(out: &mut Vec<u8>, value: Option<&str>) {
    let list = value.map(mime::addresses).unwrap_or_default();
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in &list {
        match a {
            Addr::Mailbox {
                name,
                adl,
                mailbox,
                host,
            } => {
                out.push(b'(');
                nstring(out, name.as_deref());
                out.push(b' ');
                nstring(out, adl.as_deref());
                out.push(b' ');
                nstring(out, Some(mailbox));
                out.push(b' ');
                nstring(out, Some(host));
                out.push(b')');
            }
            Addr::GroupStart(g) => {
                out.extend_from_slice(b"(NIL NIL ");
                nstring(out, Some(g));
                out.extend_from_slice(b" NIL)");
            }
            Addr::GroupEnd => out.extend_from_slice(b"(NIL NIL NIL NIL)"),
        }
    }
    out.push(b')');
}

/// ENVELOPE of a message whose header block is `header`.
pub fn envelope(out: &mut Vec<u8>, header: &[u8]) {
    const NAMES: [&str; 10] = [
        "date",
        "subject",
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "in-reply-to",
        "message-id",
    ];
    let f = mime::fields_named(header, &NAMES);
    let get = |n: &str| mime::field(&f, n);
    out.push(b'(');
    nstring(out, get("date"));
    out.push(b' ');
    nstring(out, get("subject"));
    let from = get("from");
    for (name, fallback) in [
        ("from", None),
        ("sender", from),
        ("reply-to", from),
        ("to", None),
        ("cc", None),
        ("bcc", None),
    ] {
        out.push(b' ');
        let v = get(name).filter(|v| !v.trim().is_empty()).or(fallback);
        address_list(out, v);
    }
    out.push(b' ');
    nstring(out, get("in-reply-to"));
    out.push(b' ');
    nstring(out, get("message-id"));
    out.push(b')');
}

fn param_list(out: &mut Vec<u8>, params: &[(String, String)]) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (n, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        write_string(out, n.as_bytes());
        out.push(b' ');
        write_string(out, v.as_bytes());
    }
    out.push(b')');
}

fn disposition(out: &mut Vec<u8>, f: &[(&str, String)]) {
    match mime::field(f, "content-disposition") {
        Some(d) => {
            let (v, p) = mime::parse_params(d);
            out.push(b'(');
            write_string(out, v.to_ascii_lowercase().as_bytes());
            out.push(b' ');
            param_list(out, &p);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
}

fn language_location(out: &mut Vec<u8>, f: &[(&str, String)]) {
    out.push(b' ');
    match mime::field(f, "content-language") {
        Some(l) => {
            let langs: Vec<&str> = l.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            if langs.len() == 1 {
                write_string(out, langs[0].as_bytes());
            } else {
                out.push(b'(');
                for (i, l) in langs.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    write_string(out, l.as_bytes());
                }
                out.push(b')');
            }
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    nstring(out, mime::field(f, "content-location"));
}

/// BODYSTRUCTURE (`extended`) or BODY of a part.
pub fn body_structure(out: &mut Vec<u8>, raw: &[u8], part: &Part, extended: bool) {
    let f = mime::fields(&raw[part.header.clone()]);
    out.push(b'(');
    if part.is_multipart() && !part.children.is_empty() {
        for c in &part.children {
            body_structure(out, raw, c, extended);
        }
        out.push(b' ');
        write_string(out, part.subtype.as_bytes());
        if extended {
            out.push(b' ');
            param_list(out, &part.params);
            out.push(b' ');
            disposition(out, &f);
            language_location(out, &f);
        }
        out.push(b')');
        return;
    }
    // A multipart without parts is described as a leaf (the best a client can use).
    write_string(out, part.ctype.as_bytes());
    out.push(b' ');
    write_string(out, part.subtype.as_bytes());
    out.push(b' ');
    let mut params = part.params.clone();
    if part.ctype == "text" && !params.iter().any(|(n, _)| n == "charset") {
        params.push(("charset".into(), "us-ascii".into()));
    }
    param_list(out, &params);
    out.push(b' ');
    nstring(out, mime::field(&f, "content-id"));
    out.push(b' ');
    nstring(out, mime::field(&f, "content-description"));
    out.push(b' ');
    let enc = mime::field(&f, "content-transfer-encoding")
        .map(|e| e.trim().to_ascii_uppercase())
        .unwrap_or_else(|| "7BIT".into());
    write_string(out, enc.as_bytes());
    let body = &raw[part.body.clone()];
    out.extend_from_slice(format!(" {}", body.len()).as_bytes());
    if let Some(m) = &part.message {
        out.push(b' ');
        envelope(out, &raw[m.header.clone()]);
        out.push(b' ');
        body_structure(out, raw, m, extended);
        out.extend_from_slice(format!(" {}", mime::line_count(body)).as_bytes());
    } else if part.ctype == "text" {
        out.extend_from_slice(format!(" {}", mime::line_count(body)).as_bytes());
    }
    if extended {
        out.push(b' ');
        nstring(out, mime::field(&f, "content-md5"));
        out.push(b' ');
        disposition(out, &f);
        language_location(out, &f);
    }
    out.push(b')');
}

/// Header lines of `header` whose names are (or, with `not`, are not) in `names`, then the
/// blank line.
fn header_subset(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if line[0] != b' ' && line[0] != b'\t' {
            let name = line.split(|&b| b == b':').next().unwrap_or(b"");
            let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
            keep = names.contains(&name) != not;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// What a section names, or `None` if the message has no such part (RFC 3501: empty string).
pub fn section_bytes(raw: &[u8], root: &Part, s: &Section) -> Option<Vec<u8>> {
    let part = mime::resolve(root, &s.part)?;
    // HEADER, HEADER.FIELDS and TEXT of a part number mean the attached message's.
    let msg = if s.part.is_empty() {
        Some(part)
    } else {
        part.message.as_deref()
    };
    Some(match &s.kind {
        SectionKind::Full if s.part.is_empty() => raw.to_vec(),
        SectionKind::Full => raw[part.body.clone()].to_vec(),
        SectionKind::Mime => raw[part.header.clone()].to_vec(),
        SectionKind::Header => raw[msg?.header.clone()].to_vec(),
        SectionKind::Text => raw[msg?.body.clone()].to_vec(),
        SectionKind::HeaderFields(n) => header_subset(&raw[msg?.header.clone()], n, false),
        SectionKind::HeaderFieldsNot(n) => header_subset(&raw[msg?.header.clone()], n, true),
    })
}

/// The decoded content of a part (BINARY[part]); `Err` when its encoding is unknown.
pub fn binary_bytes(raw: &[u8], root: &Part, part: &[u32]) -> Option<Result<Vec<u8>, ()>> {
    let p = mime::resolve(root, part)?;
    if part.is_empty() {
        return Some(Ok(raw.to_vec()));
    }
    let f = mime::fields(&raw[p.header.clone()]);
    let body = &raw[p.body.clone()];
    let enc = mime::field(&f, "content-transfer-encoding")
        .map(|e| e.trim().to_ascii_lowercase())
        .unwrap_or_default();
    Some(match enc.as_str() {
        "" | "7bit" | "8bit" | "binary" => Ok(body.to_vec()),
        // mail-parser's decoders: base64 skipping line breaks and spaces; quoted-printable
        // with RFC 2045 §6.7's rules (trailing whitespace on a line dropped, `=` followed by
        // whitespace a soft line break).
        "base64" => mail_parser::decoders::base64::base64_decode(body).ok_or(()),
        "quoted-printable" => {
            Ok(mail_parser::decoders::quoted_printable::quoted_printable_decode(body)
                .unwrap_or_else(|| lenient_qp(body)))
        }
        _ => Err(()),
    })
}

/// Quoted-printable that mail-parser refuses as malformed (`=` before non-hex, say): what
/// it lacks is a lenient mode, and a client asking for BINARY still wants the bytes. Each
/// `=XX` is decoded, a soft break dropped, anything else kept as it is.
fn lenient_qp(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == b'=' {
            if body[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if body[i + 1..].starts_with(b"\n") {
                i += 2;
                continue;
            }
            if let (Some(h), Some(l)) = (
                body.get(i + 1).copied().and_then(hex),
                body.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// Applies `<start.len>` to section data.
pub fn partial(data: &[u8], p: Option<(u32, u32)>) -> &[u8] {
    match p {
        None => data,
        Some((start, len)) => {
            let s = (start as usize).min(data.len());
            let e = s.saturating_add(len as usize).min(data.len());
            &data[s..e]
        }
    }
}

/// The section name as echoed in the response (`BODY[1.HEADER.FIELDS (FROM)]<0>`).
pub fn section_name(binary: bool, s: &Section, partial: Option<(u32, u32)>) -> String {
    let mut name = String::from(if binary { "BINARY[" } else { "BODY[" });
    let nums: Vec<String> = s.part.iter().map(|n| n.to_string()).collect();
    name.push_str(&nums.join("."));
    let kind = match &s.kind {
        SectionKind::Full => String::new(),
        SectionKind::Header => "HEADER".into(),
        SectionKind::Text => "TEXT".into(),
        SectionKind::Mime => "MIME".into(),
        SectionKind::HeaderFields(n) => format!("HEADER.FIELDS ({})", n.join(" ").to_ascii_uppercase()),
        SectionKind::HeaderFieldsNot(n) => format!("HEADER.FIELDS.NOT ({})", n.join(" ").to_ascii_uppercase()),
    };
    if !nums.is_empty() && !kind.is_empty() {
        name.push('.');
    }
    name.push_str(&kind);
    name.push(']');
    if let Some((start, _)) = partial {
        name.push_str(&format!("<{start}>"));
    }
    name
}

/// INTERNALDATE as `"dd-Mon-yyyy hh:mm:ss +0000"`.
pub fn internal_date(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, m, d) = super::parser::civil_from_days(days);
    format!(
        "\"{d:02}-{}-{y:04} {:02}:{:02}:{:02} +0000\"",
        super::parser::month_name(m),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_and_structure() {
        let raw = b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: Hi \"there\"\r\nFrom: Ann <ann@x.org>\r\n\
To: bob@y.org\r\nMessage-ID: <1@x>\r\n\r\nhello\r\n";
        let mut out = Vec::new();
        envelope(&mut out, &raw[..raw.len() - 7]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "(\"Mon, 1 Jan 2024 00:00:00 +0000\" \"Hi \\\"there\\\"\" ((\"Ann\" NIL \"ann\" \"x.org\")) \
((\"Ann\" NIL \"ann\" \"x.org\")) ((\"Ann\" NIL \"ann\" \"x.org\")) ((NIL NIL \"bob\" \"y.org\")) NIL NIL NIL \"<1@x>\")"
        );
        let root = mime::parse(raw);
        let mut out = Vec::new();
        body_structure(&mut out, raw, &root, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 7 1)"
        );
        assert_eq!(internal_date(0), "\"01-Jan-1970 00:00:00 +0000\"");
    }

    #[test]
    fn sections() {
        let raw = b"A: 1\r\nB: 2\r\n c\r\n\r\nbody";
        let root = mime::parse(raw);
        let s = |kind| Section { part: vec![], kind };
        assert_eq!(
            section_bytes(raw, &root, &s(SectionKind::HeaderFields(vec!["b".into()]))).unwrap(),
            b"B: 2\r\n c\r\n\r\n"
        );
        assert_eq!(section_bytes(raw, &root, &s(SectionKind::Text)).unwrap(), b"body");
        assert_eq!(partial(b"abcdef", Some((2, 3))), b"cde");
        assert_eq!(partial(b"abc", Some((5, 3))), b"");
        assert_eq!(lenient_qp(b"a=3Db=\r\nc=ZZ"), b"a=bc=ZZ");
        let name = section_name(
            false,
            &Section {
                part: vec![1, 2],
                kind: SectionKind::Mime,
            },
            Some((0, 9)),
        );
        assert_eq!(name, "BODY[1.2.MIME]<0>");
    }

    #[test]
    fn binary_decodes_as_rfc_2045_says() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nline one  \r\nsoft= \r\nbreak=3D\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\naGVs\r\nbG8=\r\n--b--\r\n";
        let root = mime::parse(raw);
        // Trailing whitespace goes; `=` then whitespace is a soft line break (RFC 2045 §6.7).
        assert_eq!(
            binary_bytes(raw, &root, &[1]).unwrap().unwrap(),
            b"line one\r\nsoftbreak="
        );
        assert_eq!(binary_bytes(raw, &root, &[2]).unwrap().unwrap(), b"hello");
    }

    /// parse ∘ write = id for the response data clients read most: what we write, a client's
    /// parser (imap-proto, the one async-imap uses) reads back as the values we meant.
    mod a_client_reads_what_we_write {
        use super::super::*;
        use imap_proto::{AttributeValue, BodyStructure, MailboxDatum, Response};
        use proptest::prelude::*;

        fn parsed(line: &[u8]) -> Response<'_> {
            let text = String::from_utf8_lossy(line);
            let (rest, r) = Response::parse(line).unwrap_or_else(|e| panic!("unparsable {text:?}: {e:?}"));
            assert!(rest.is_empty(), "{text:?} has {} bytes left over", rest.len());
            r
        }

        fn fetched(item: &str, data: &[u8]) -> Vec<u8> {
            let mut line = format!("* 1 FETCH ({item} ").into_bytes();
            line.extend_from_slice(data);
            line.extend_from_slice(b")\r\n");
            line
        }

        /// Header text: IMAP's specials, quotes, backslashes, tabs, 8-bit UTF-8.
        fn text() -> impl Strategy<Value = String> {
            "[ -~\t\u{e9}\u{4e2d}\u{1F600}]{0,30}"
        }

        /// One address as a header writes it: with or without a quoted display name.
        fn address() -> impl Strategy<Value = String> {
            (
                proptest::option::of("[ -~]{0,12}"),
                "[a-zA-Z0-9._+-]{1,10}",
                "[a-z0-9-]{1,8}\\.[a-z]{2,4}",
            )
                .prop_map(|(name, local, domain)| match name {
                    Some(n) => format!(
                        "\"{}\" <{local}@{domain}>",
                        n.replace('\\', "\\\\").replace('"', "\\\"")
                    ),
                    None => format!("{local}@{domain}"),
                })
        }

        /// A string as a client reads it. imap-proto hands out a quoted string as it was on
        /// the wire, escapes in place (it avoids a copy), for the client to unescape; a
        /// literal comes as it is. Which one it was shows in `line`, where the value points.
        fn read(line: &[u8], v: &[u8]) -> Vec<u8> {
            let at = (v.as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
            if !(1..=line.len()).contains(&at) || line[at - 1] != b'"' {
                return v.to_vec();
            }
            let mut out = Vec::with_capacity(v.len());
            let mut escaped = false;
            for &b in v {
                if b == b'\\' && !escaped {
                    escaped = true;
                    continue;
                }
                escaped = false;
                out.push(b);
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn envelopes(
                subject in text(),
                date in text(),
                message_id in text(),
                from in proptest::collection::vec(address(), 1..4),
                to in proptest::collection::vec(address(), 0..4),
            ) {
                let mut header = format!("Subject: {subject}\r\nDate: {date}\r\nMessage-ID: {message_id}\r\nFrom: {}\r\n", from.join(", "));
                if !to.is_empty() {
                    header += &format!("To: {}\r\n", to.join(", "));
                }
                header += "\r\n";
                let mut out = Vec::new();
                envelope(&mut out, header.as_bytes());
                let line = fetched("ENVELOPE", &out);
                let Response::Fetch(1, attrs) = parsed(&line) else { panic!("not a FETCH") };
                let [AttributeValue::Envelope(env)] = &attrs[..] else { panic!("{attrs:?}") };
                let f = mime::fields(header.as_bytes());
                let field = |n: &str| mime::field(&f, n).map(|v| v.as_bytes().to_vec());
                let bytes = |v: &Option<std::borrow::Cow<'_, [u8]>>| v.as_ref().map(|c| read(&line, c));
                prop_assert_eq!(bytes(&env.subject), field("subject"));
                prop_assert_eq!(bytes(&env.date), field("date"));
                prop_assert_eq!(bytes(&env.message_id), field("message-id"));
                for (parsed, name) in [(&env.from, "from"), (&env.to, "to")] {
                    let ours = mime::field(&f, name).map(mime::addresses).unwrap_or_default();
                    let theirs = parsed.as_deref().unwrap_or_default();
                    prop_assert_eq!(theirs.len(), ours.len(), "{} list", name);
                    for (t, o) in theirs.iter().zip(&ours) {
                        let Addr::Mailbox { name, adl, mailbox, host } = o else { continue };
                        let b = |s: &Option<String>| s.as_ref().map(|s| s.as_bytes().to_vec());
                        prop_assert_eq!(bytes(&t.name), b(name));
                        prop_assert_eq!(bytes(&t.adl), b(adl));
                        prop_assert_eq!(bytes(&t.mailbox), Some(mailbox.as_bytes().to_vec()));
                        prop_assert_eq!(bytes(&t.host), Some(host.as_bytes().to_vec()));
                    }
                }
            }

            #[test]
            fn mailbox_names(name in "[^\u{0}-\u{1f}\u{7f}]{1,20}", utf8 in any::<bool>()) {
                prop_assume!(!name.eq_ignore_ascii_case("inbox"));
                let mut line = b"* LIST () \"/\" ".to_vec();
                write_mailbox(&mut line, &name, utf8);
                line.extend_from_slice(b"\r\n");
                let Response::MailboxData(MailboxDatum::List(list)) = parsed(&line) else { panic!("not a LIST") };
                let wire = String::from_utf8(read(&line, list.name.as_bytes())).unwrap();
                let name_read = if utf8 { Some(wire) } else { super::super::super::mutf7::decode(&wire) };
                prop_assert_eq!(name_read, Some(name));
            }

            #[test]
            fn body_structures(tree in node(), extended in any::<bool>()) {
                let mut raw = b"From: a@example.org\r\nSubject: structure\r\nMIME-Version: 1.0\r\n".to_vec();
                render(&tree, &mut raw, &mut 0);
                let root = mime::parse(&raw);
                let mut out = Vec::new();
                body_structure(&mut out, &raw, &root, extended);
                // imap-proto reads the structure only after the name BODYSTRUCTURE; BODY's
                // form is the same without the optional extension data.
                let line = fetched("BODYSTRUCTURE", &out);
                let Response::Fetch(1, attrs) = parsed(&line) else { panic!("not a FETCH") };
                let [AttributeValue::BodyStructure(bs)] = &attrs[..] else { panic!("{attrs:?}") };
                same_shape(&tree, bs, &line, &root)?;
            }
        }

        /// A MIME tree to write out as a message.
        #[derive(Debug, Clone)]
        enum Node {
            Leaf {
                ty: &'static str,
                subtype: String,
                encoding: &'static str,
                name: String,
                lines: usize,
            },
            Multi {
                subtype: String,
                children: Vec<Node>,
            },
            Message(Box<Node>),
        }

        fn node() -> impl Strategy<Value = Node> {
            let leaf = (
                prop_oneof![Just("text"), Just("application"), Just("image"), Just("audio")],
                "[a-z][a-z0-9.+-]{0,8}",
                prop_oneof![Just("7bit"), Just("8bit"), Just("base64"), Just("quoted-printable")],
                // Not empty: imap-proto cannot read an empty parameter value (`"name" ""`),
                // which RFC 3501 allows and we write.
                "[ -~]{1,16}",
                0usize..4,
            )
                .prop_map(|(ty, subtype, encoding, name, lines)| Node::Leaf {
                    ty,
                    subtype,
                    encoding,
                    name,
                    lines,
                });
            leaf.prop_recursive(4, 24, 4, |inner| {
                prop_oneof![
                    ("[a-z]{1,8}", proptest::collection::vec(inner.clone(), 1..4))
                        .prop_map(|(subtype, children)| Node::Multi { subtype, children }),
                    inner.prop_map(|n| Node::Message(Box::new(n))),
                ]
            })
        }

        /// Writes `node`'s header fields (after whatever header lines came before), the blank
        /// line and its body.
        fn render(node: &Node, out: &mut Vec<u8>, boundaries: &mut usize) {
            match node {
                Node::Leaf {
                    ty,
                    subtype,
                    encoding,
                    name,
                    lines,
                } => {
                    let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
                    out.extend_from_slice(format!("Content-Type: {ty}/{subtype}; name=\"{quoted}\"\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n").as_bytes());
                    for i in 0..*lines {
                        out.extend_from_slice(format!("body line {i}\r\n").as_bytes());
                    }
                }
                Node::Multi { subtype, children } => {
                    *boundaries += 1;
                    let b = format!("=_b{boundaries}");
                    out.extend_from_slice(
                        format!("Content-Type: multipart/{subtype}; boundary=\"{b}\"\r\n\r\npreamble\r\n").as_bytes(),
                    );
                    for c in children {
                        out.extend_from_slice(format!("--{b}\r\n").as_bytes());
                        render(c, out, boundaries);
                    }
                    out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
                }
                Node::Message(inner) => {
                    out.extend_from_slice(
                        b"Content-Type: message/rfc822\r\n\r\nFrom: b@example.org\r\nSubject: inner\r\n",
                    );
                    render(inner, out, boundaries);
                }
            }
        }

        /// The structure the client read has the tree's types, parts, names and sizes.
        fn same_shape(node: &Node, bs: &BodyStructure<'_>, line: &[u8], part: &Part) -> Result<(), TestCaseError> {
            match (node, bs) {
                (Node::Multi { subtype, children }, BodyStructure::Multipart { common, bodies, .. }) => {
                    prop_assert!(common.ty.subtype.eq_ignore_ascii_case(subtype));
                    prop_assert_eq!(bodies.len(), children.len());
                    for ((n, b), p) in children.iter().zip(bodies).zip(&part.children) {
                        same_shape(n, b, line, p)?;
                    }
                }
                (
                    Node::Message(inner),
                    BodyStructure::Message {
                        common, other, body, ..
                    },
                ) => {
                    prop_assert!(common.ty.ty.eq_ignore_ascii_case("message"));
                    prop_assert_eq!(other.octets as usize, part.body.len());
                    same_shape(inner, body, line, part.message.as_deref().expect("attached message"))?;
                }
                (
                    Node::Leaf { ty, subtype, name, .. },
                    BodyStructure::Basic { common, other, .. } | BodyStructure::Text { common, other, .. },
                ) => {
                    prop_assert!(common.ty.ty.eq_ignore_ascii_case(ty));
                    prop_assert!(common.ty.subtype.eq_ignore_ascii_case(subtype));
                    let named = common
                        .ty
                        .params
                        .iter()
                        .flatten()
                        .find(|(k, _)| k.eq_ignore_ascii_case("name"));
                    let value = named.map(|(_, v)| String::from_utf8(read(line, v.as_bytes())).unwrap());
                    prop_assert_eq!(value.as_deref(), part.param("name"));
                    prop_assert_eq!(part.param("name"), Some(name.as_str()));
                    prop_assert_eq!(other.octets as usize, part.body.len());
                }
                (n, b) => prop_assert!(false, "{n:?} read as {b:?}"),
            }
            Ok(())
        }
    }
}
