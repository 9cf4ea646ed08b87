//! IMAP URLs (RFC 5092) naming one message or part of one, as CATENATE (RFC 4469) and
//! URLAUTH (RFC 4467) take them: `/INBOX;UIDVALIDITY=385759045/;UID=20/;SECTION=1.2/;PARTIAL=0.1024`,
//! relative to the session, or the same path under `imap://user@host`, optionally followed by
//! URLAUTH's `;EXPIRE=<date-time>;URLAUTH=<access>[:<mechanism>:<token>]`. Only what names
//! a message is accepted: no search or mailbox-list URLs.

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
    /// URLAUTH's authorisation, when the URL has one.
    pub auth: Option<UrlAuth>,
}

/// `;EXPIRE=...;URLAUTH=access[:mechanism:token]` (RFC 4467 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlAuth {
    /// The URL as it is signed: everything up to the end of the access identifier.
    pub rump: String,
    /// Seconds since the epoch after which the URL is no longer good.
    pub expire: Option<i64>,
    pub access: Access,
    /// `(mechanism, token)` of an authorised URL; `None` in a rump (GENURLAUTH's input).
    pub token: Option<(String, String)>,
}

/// Who may fetch an authorised URL (RFC 4467 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Anonymous,
    AuthUser,
    User(String),
    Submit(String),
}

/// Parses a URL; the error says what is wrong with it.
pub fn parse(url: &str) -> Result<MessageUrl, String> {
    let (url, auth) = match find_ci(url, ";URLAUTH=") {
        Some(at) => (&url[..at], Some(url_auth(url, at)?)),
        None => (url, None),
    };
    let (url, auth) = match (auth, find_ci(url, ";EXPIRE=")) {
        (Some(mut a), Some(at)) => {
            a.expire = Some(date_time(&url[at + ";EXPIRE=".len()..])?);
            (&url[..at], Some(a))
        }
        (None, Some(_)) => return Err(";EXPIRE= needs ;URLAUTH= after it".into()),
        (a, None) => (url, a),
    };
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
    if auth.is_some() && user.is_none() {
        return Err("a URLAUTH URL names its user (imap://user@host/...)".into());
    }
    Ok(MessageUrl {
        user,
        mailbox,
        uidvalidity,
        uid,
        section,
        partial,
        auth,
    })
}

/// `;URLAUTH=access[:mechanism:token]` starting at `at` of `url`.
fn url_auth(url: &str, at: usize) -> Result<UrlAuth, String> {
    let rest = &url[at + ";URLAUTH=".len()..];
    let (access, token) = match rest.split_once(':') {
        Some((a, t)) => {
            let (mech, token) = t.split_once(':').ok_or("URLAUTH needs :mechanism:token")?;
            if mech.is_empty() || token.len() < 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("URLAUTH token is at least 32 hex digits".into());
            }
            (a, Some((mech.to_ascii_uppercase(), token.to_ascii_lowercase())))
        }
        None => (rest, None),
    };
    let access = if access.eq_ignore_ascii_case("anonymous") {
        Access::Anonymous
    } else if access.eq_ignore_ascii_case("authuser") {
        Access::AuthUser
    } else if let Some(u) = strip_prefix_ci(access, "user+") {
        Access::User(decode(u)?)
    } else if let Some(u) = strip_prefix_ci(access, "submit+") {
        Access::Submit(decode(u)?)
    } else {
        return Err(format!("unknown URLAUTH access {access}"));
    };
    let rump_end = at + ";URLAUTH=".len() + rest.find(':').unwrap_or(rest.len());
    Ok(UrlAuth {
        rump: url[..rump_end].to_string(),
        expire: None,
        access,
        token,
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)` (RFC 3339) as seconds since the epoch.
fn date_time(s: &str) -> Result<i64, String> {
    let bad = || format!("bad EXPIRE date-time {s}");
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let n = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let t = s.get(r).ok_or_else(bad)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    let (y, mo, d, h, mi, se) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    let mut rest = &s[19..];
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        rest = &f[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(bad()),
            };
            let oh: i64 = rest[1..3].parse().map_err(|_| bad())?;
            let om: i64 = rest[4..6].parse().map_err(|_| bad())?;
            sign * (oh * 3600 + om * 60)
        }
        _ => return Err(bad()),
    };
    let days = super::parser::days_from_civil(y, mo as u32, d as u32);
    Ok(days * 86400 + h * 3600 + mi * 60 + se - offset)
}

fn find_ci(s: &str, needle: &str) -> Option<usize> {
    s.to_ascii_uppercase().find(needle)
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
        // URLAUTH: the rump is what gets signed; the token follows it.
        let u = parse("imap://joe@example.com/INBOX/;uid=20/;section=1.2;urlauth=submit+fred").unwrap();
        let a = u.auth.unwrap();
        assert_eq!(
            a.rump,
            "imap://joe@example.com/INBOX/;uid=20/;section=1.2;urlauth=submit+fred"
        );
        assert_eq!(
            (a.access, a.token, u.section.as_deref()),
            (Access::Submit("fred".into()), None, Some("1.2"))
        );
        let tok = "91354a473744909de610943775f92038";
        let u = parse(&format!(
            "imap://joe@example.com/INBOX/;uid=20;expire=2026-12-24T10:00:00Z;urlauth=anonymous:internal:{tok}"
        ))
        .unwrap();
        let a = u.auth.unwrap();
        assert_eq!(
            a.rump,
            "imap://joe@example.com/INBOX/;uid=20;expire=2026-12-24T10:00:00Z;urlauth=anonymous"
        );
        assert_eq!(a.token, Some(("INTERNAL".into(), tok.into())));
        assert_eq!(a.expire, Some(1_798_106_400));
        assert_eq!((u.uid, a.access), (20, Access::Anonymous));
        assert_eq!(
            date_time("2026-12-24T12:00:00.5+02:00"),
            date_time("2026-12-24T10:00:00Z")
        );
        for bad in [
            "/INBOX/;UID=1;URLAUTH=anonymous",
            "imap://a@h/INBOX/;UID=1;URLAUTH=nobody",
            "imap://a@h/INBOX/;UID=1;URLAUTH=anonymous:internal:abc",
            "imap://a@h/INBOX/;UID=1;EXPIRE=2026-12-24T10:00:00Z",
            "imap://a@h/INBOX/;UID=1;EXPIRE=tomorrow;URLAUTH=anonymous",
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
