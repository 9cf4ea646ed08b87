//! IMAP URLs (RFC 5092) naming one message or part of one, as CATENATE (RFC 4469) takes
//! them: `/INBOX;UIDVALIDITY=385759045/;UID=20/;SECTION=1.2/;PARTIAL=0.1024`, relative to the
//! session, or the same path under `imap://user@host`. Only what names a message is accepted:
//! no search URLs, no URLAUTH parts.

/// A parsed message URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageUrl {
    /// The user the URL names (`imap://user@host/...`), percent-decoded.
    pub user: Option<String>,
    /// The mailbox name, percent-decoded (UTF-8, RFC 5092 §3.3).
    pub mailbox: String,
    pub uidvalidity: Option<u32>,
    pub uid: u32,
    /// A FETCH section spec (`1.2.MIME`, `HEADER`); `None` for the whole message.
    pub section: Option<String>,
    /// `;PARTIAL=start[.length]`.
    pub partial: Option<(u32, Option<u32>)>,
}

/// Parses a URL; the error says what is wrong with it.
pub fn parse(url: &str) -> Result<MessageUrl, String> {
    let (user, path) = match strip_prefix_ci(url, "imap://") {
        Some(rest) => {
            let slash = rest.find('/').ok_or("an IMAP URL needs a path")?;
            let authority = &rest[..slash];
            let user = match authority.rsplit_once('@') {
                // `user;AUTH=mech@host`: the user is what comes before `;`.
                Some((userinfo, _host)) => {
                    let name = userinfo.split(';').next().unwrap_or("");
                    Some(decode(name)?)
                }
                None => None,
            };
            (user, &rest[slash..])
        }
        None => (None, url),
    };
    let path = path
        .strip_prefix('/')
        .ok_or("a message URL is an absolute path (/mailbox/;UID=n)")?;
    let mut pieces = path.split("/;");
    let mailbox_part = pieces.next().unwrap_or("");
    let (mailbox, uidvalidity) = match mailbox_part.split_once(';') {
        Some((m, param)) => {
            let v =
                strip_prefix_ci(param, "UIDVALIDITY=").ok_or_else(|| format!("unknown mailbox parameter {param}"))?;
            (m, Some(number(v)?))
        }
        None => (mailbox_part, None),
    };
    let mailbox = decode(mailbox.trim_end_matches('/'))?;
    if mailbox.is_empty() {
        return Err("the URL names no mailbox".into());
    }
    let mut uid = None;
    let mut section = None;
    let mut partial = None;
    for piece in pieces {
        if let Some(v) = strip_prefix_ci(piece, "UID=") {
            if uid.is_some() || section.is_some() || partial.is_some() {
                return Err("UID comes once, before SECTION and PARTIAL".into());
            }
            uid = Some(number(v)?);
        } else if let Some(v) = strip_prefix_ci(piece, "SECTION=") {
            if uid.is_none() || section.is_some() || partial.is_some() {
                return Err("SECTION comes after UID, once".into());
            }
            section = Some(decode(v)?);
        } else if let Some(v) = strip_prefix_ci(piece, "PARTIAL=") {
            if uid.is_none() || partial.is_some() {
                return Err("PARTIAL comes after UID, once".into());
            }
            let (start, len) = match v.split_once('.') {
                Some((s, l)) => (number(s)?, Some(number(l)?)),
                None => (number(v)?, None),
            };
            partial = Some((start, len));
        } else {
            return Err(format!("unsupported URL part ;{piece}"));
        }
    }
    let uid = uid.ok_or("the URL names no message (;UID=n)")?;
    if uid == 0 {
        return Err("UID 0 names no message".into());
    }
    Ok(MessageUrl {
        user,
        mailbox,
        uidvalidity,
        uid,
        section,
        partial,
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

fn number(s: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a number"));
    }
    s.parse().map_err(|_| format!("{s} is too large"))
}

/// Percent-decoding into UTF-8.
fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape %{hex}"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URL is not UTF-8 after %-decoding".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_urls() {
        let u = parse("/INBOX;UIDVALIDITY=385759045/;UID=20/;SECTION=1.2/;PARTIAL=0.1024").unwrap();
        assert_eq!(u.mailbox, "INBOX");
        assert_eq!(u.uidvalidity, Some(385759045));
        assert_eq!(u.uid, 20);
        assert_eq!(u.section.as_deref(), Some("1.2"));
        assert_eq!(u.partial, Some((0, Some(1024))));
        let u = parse("/Lists%2FRust%20news/;uid=7/;section=HEADER.FIELDS%20(FROM)").unwrap();
        assert_eq!(u.mailbox, "Lists/Rust news");
        assert_eq!(u.section.as_deref(), Some("HEADER.FIELDS (FROM)"));
        let u = parse("/Drafts/;uid=3/;partial=100000.1").unwrap();
        assert_eq!((u.section, u.partial), (None, Some((100000, Some(1)))));
        let u = parse("imap://bob;AUTH=*@mail.example.org/INBOX/;UID=1").unwrap();
        assert_eq!(
            (u.user.as_deref(), u.mailbox.as_str(), u.uid),
            (Some("bob"), "INBOX", 1)
        );
        let u = parse("imap://alice%40example.org@host:143/Sent/;UID=9").unwrap();
        assert_eq!(u.user.as_deref(), Some("alice@example.org"));
        for bad in [
            "INBOX/;UID=1",
            "/INBOX",
            "/INBOX/;UID=0",
            "/INBOX/;UID=x",
            "/INBOX;FOO=1/;UID=1",
            "/INBOX/;SECTION=1/;UID=1",
            "/INBOX/;UID=1/;URLAUTH=anonymous",
            "/INBOX?SUBJECT%20x",
            "/%ZZ/;UID=1",
            "//;UID=1",
            "imap://host",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
