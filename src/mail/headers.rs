//! Header edits on the wire form: fields added on top, fields removed by name (with their
//! continuation lines), values made safe so a policy can never end a field early.

use super::model::Header;

/// Adds headers on top and removes every field named in `remove` (case-insensitive, with its
/// continuation lines). An entry `Name:prefix` removes only the fields of that name whose
/// value starts with `prefix` then `;` or a space (our own `Authentication-Results`, say).
pub fn edit_headers(raw: &[u8], add: &[Header], remove: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 256);
    edit_headers_into(&mut out, raw, add, remove);
    out
}

/// A header value as written: CR and LF only in folds (CRLF then a space or tab), anything
/// else becomes a space, so a value can never end the field early.
fn safe_value(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.char_indices() {
        let fold = match c {
            '\r' => b.get(i + 1) == Some(&b'\n') && matches!(b.get(i + 2), Some(b' ' | b'\t')),
            '\n' => i > 0 && b[i - 1] == b'\r' && matches!(b.get(i + 1), Some(b' ' | b'\t')),
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push(if fold { c } else { ' ' });
    }
    out
}

/// One entry of a remove list: a field name, and the value prefix it is limited to.
fn removal(entry: &str) -> (&str, Option<&str>) {
    match entry.split_once(':') {
        None => (entry, None),
        Some((name, prefix)) => (name, Some(prefix)),
    }
}

fn removes(&(field, prefix): &(&str, Option<&str>), name: &str, line: &[u8]) -> bool {
    if !field.eq_ignore_ascii_case(name) {
        return false;
    }
    let Some(prefix) = prefix else { return true };
    let value = line.splitn(2, |b| *b == b':').nth(1).unwrap_or(&[]);
    let value = String::from_utf8_lossy(value);
    let value = value.trim_start();
    value.len() > prefix.len()
        && value.is_char_boundary(prefix.len())
        && value[..prefix.len()].eq_ignore_ascii_case(prefix)
        && matches!(value.as_bytes()[prefix.len()], b';' | b' ' | b'\t' | b'\r')
}

/// [`edit_headers`], appending to `out` (saves a copy of the body on the delivery path).
pub fn edit_headers_into(out: &mut Vec<u8>, raw: &[u8], add: &[Header], remove: &[String]) {
    for h in add {
        let name = h.name.replace(['\r', '\n', ':'], " ");
        out.extend_from_slice(format!("{}: {}\r\n", name, safe_value(&h.value)).as_bytes());
    }
    if remove.is_empty() {
        out.extend_from_slice(raw);
        return;
    }
    let rules: Vec<(&str, Option<&str>)> = remove.iter().map(|r| removal(r)).collect();
    let end = memchr::memmem::find(raw, b"\r\n\r\n")
        .map(|i| i + 2)
        .unwrap_or(raw.len());
    let mut dropping = false;
    let mut pos = 0;
    while pos < end {
        let line_end = memchr::memchr(b'\n', &raw[pos..end])
            .map(|i| pos + i + 1)
            .unwrap_or(end);
        let line = &raw[pos..line_end];
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            let name = line.split(|b| *b == b':').next().unwrap_or(&[]);
            let name = String::from_utf8_lossy(name);
            dropping = rules.iter().any(|r| removes(r, name.trim(), line));
        }
        if !dropping {
            out.extend_from_slice(line);
        }
        pos = line_end;
    }
    out.extend_from_slice(&raw[end..]);
}

/// The header section of `raw`: up to and including the CRLF that ends its last field.
fn header_section(raw: &[u8]) -> &[u8] {
    if raw.starts_with(b"\r\n") {
        return &[];
    }
    memchr::memmem::find(raw, b"\r\n\r\n").map_or(raw, |i| &raw[..i + 2])
}

/// Whether the header section has a field called `name` (case-insensitive).
pub fn has_field(raw: &[u8], name: &str) -> bool {
    header_section(raw)
        .split(|&b| b == b'\n')
        .filter(|line| !line.first().is_some_and(|b| *b == b' ' || *b == b'\t'))
        .filter_map(|line| line.iter().position(|&b| b == b':').map(|i| &line[..i]))
        .any(|n| n.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
}

/// What a submission server adds to a message that lacks it (RFC 6409 §8.2, §8.3): `Date`
/// (now) and `Message-ID` (`<unique.time@hostname>`). Empty when both are there.
pub fn submission_fixes(raw: &[u8], hostname: &str, unique: &str, now: i64) -> Vec<Header> {
    let mut add = Vec::new();
    if !has_field(raw, "Date") {
        add.push(Header {
            name: "Date".into(),
            value: mail_parser::DateTime::from_timestamp(now).to_rfc822(),
        });
    }
    if !has_field(raw, "Message-ID") {
        add.push(Header {
            name: "Message-ID".into(),
            value: format!("<{unique}.{now}@{hostname}>"),
        });
    }
    add
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_edits() {
        let raw = b"A: 1\r\nX-Bad: x\r\n y\r\nB: 2\r\n\r\nX-Bad: body stays\r\n";
        let add = [Header {
            name: "X-New".into(),
            value: "v".into(),
        }];
        let out = edit_headers(raw, &add, &["x-bad".into()]);
        assert_eq!(out, b"X-New: v\r\nA: 1\r\nB: 2\r\n\r\nX-Bad: body stays\r\n");
    }

    #[test]
    fn header_edits_keep_folds_and_match_prefixes() {
        let raw = b"Authentication-Results: mx.test; spf=pass\r\nAuthentication-Results: other.example;\r\n\tdkim=pass\r\nAuthentication-Results: mx.testing; none\r\nSubject: s\r\n\r\nbody";
        let add = [Header {
            name: "Authentication-Results".into(),
            value: "mx.test;\r\n\tspf=fail\r\nX-Injected: yes\nz".into(),
        }];
        let out = edit_headers(raw, &add, &["authentication-results:mx.test".into()]);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("Authentication-Results: mx.test;\r\n\tspf=fail  X-Injected: yes z\r\n"),
            "{out}"
        );
        assert!(!out.contains("spf=pass"), "{out}");
        assert!(out.contains("other.example;\r\n\tdkim=pass"), "{out}");
        assert!(out.contains("mx.testing; none"), "{out}");
    }

    #[test]
    fn fields_are_found_in_the_header_section_only() {
        let raw = b"Subject: s\r\nX-Long: a\r\n Date: folded\r\nmessage-id : <x@y>\r\n\r\nDate: in the body\r\n";
        assert!(has_field(raw, "Message-ID"));
        assert!(has_field(raw, "subject"));
        assert!(!has_field(raw, "Date"), "a continuation line and the body do not count");
        let fixes = submission_fixes(raw, "mx.test", "ABC", 1_700_000_000);
        assert_eq!(fixes.len(), 1);
        assert_eq!(fixes[0].name, "Date");
        assert!(fixes[0].value.contains("2023"), "{}", fixes[0].value);
        let bare = submission_fixes(b"\r\nbody only", "mx.test", "ABC", 1);
        assert_eq!(bare[1].value, "<ABC.1@mx.test>");
    }
}
