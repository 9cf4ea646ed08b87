//! Line endings of the wire form (RFC 5322 §2.1: CRLF only).

/// Every bare LF made CRLF; a message that has none comes back as it is (no copy).
/// BDAT content and `.eml` files from disk go through this; DATA never does (a bare line
/// ending there ends the session: SMTP smuggling, see `smtp::data`).
pub fn crlf(body: Vec<u8>) -> Vec<u8> {
    let bare = body
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || body[i - 1] != b'\r'));
    if !bare {
        return body;
    }
    let mut out = Vec::with_capacity(body.len() + body.len() / 32);
    for (i, &b) in body.iter().enumerate() {
        if b == b'\n' && (i == 0 || body[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// A `.eml` file or a single-message mbox in wire form: a leading mbox `From ` line dropped,
/// line endings made CRLF.
pub fn from_file(bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes;
    if b.starts_with(b"From ") {
        b = memchr::memchr(b'\n', b).map(|i| &b[i + 1..]).unwrap_or(&[]);
    }
    crlf(b.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_bare_line_feeds_become_wire_form() {
        assert_eq!(
            from_file(b"From a@b Mon\nSubject: x\n\nbody\n"),
            b"Subject: x\r\n\r\nbody\r\n"
        );
        assert_eq!(from_file(b"A: 1\r\n\r\nb\r\n"), b"A: 1\r\n\r\nb\r\n");
        assert_eq!(crlf(b"\na\r\nb\n".to_vec()), b"\r\na\r\nb\r\n");
    }
}
