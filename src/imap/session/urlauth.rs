//! IMAP URLs in commands: the messages they name (for CATENATE and URLFETCH), and URLAUTH
//! (RFC 4467) with URLAUTH=BINARY (RFC 5524): GENURLAUTH signs a URL so that whoever its
//! access identifier allows may fetch it with URLFETCH, RESETKEY voids what was signed.
//!
//! Tokens (mechanism INTERNAL) are HMAC-SHA256 of the URL's rump under a random 256-bit key
//! kept per mailbox in the store (`urlauth/<user>/<mailbox id>`, so every node sharing the
//! store checks the same tokens); RESETKEY drops the key and the next GENURLAUTH makes a new
//! one. A token is checked in constant time.

use super::*;
use crate::imap::command::UrlFetchItem;
use crate::imap::url::{self, Access, MessageUrl};

fn key_name(owner: &str, mailbox: u64) -> String {
    format!("urlauth/{}/{mailbox}", owner.to_ascii_lowercase())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Session {
    /// The mailbox access key of `owner`'s mailbox; made (and stored) when `create`.
    fn urlauth_key(&self, owner: &str, mailbox: u64, create: bool) -> Result<Option<Vec<u8>>, StoreError> {
        let name = key_name(owner, mailbox);
        if let Some(k) = self.shared.store.kv_get(&name)? {
            return Ok(Some(k));
        }
        if !create {
            return Ok(None);
        }
        let mut key = vec![0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| StoreError::Invalid("no random numbers for a URLAUTH key".into()))?;
        self.shared.store.kv_set(&name, Some(&key))?;
        Ok(Some(key))
    }

    /// The message a URL names, as its raw bytes, with the parsed URL. A URL with URLAUTH
    /// must carry a good token and allow this user; one without may only name this user's
    /// own mailboxes.
    pub(super) fn url_message(&self, text: &str) -> Result<(Vec<u8>, MessageUrl), String> {
        let u = url::parse(text)?;
        let owner = match &u.auth {
            None => match &u.user {
                Some(user) if !user.eq_ignore_ascii_case(self.account()) => {
                    return Err("the URL names another user's mailbox".into());
                }
                _ => self.account().to_string(),
            },
            Some(auth) => {
                let Some((mechanism, _)) = &auth.token else {
                    return Err("the URL is not authorised (no :INTERNAL:token)".into());
                };
                if mechanism != "INTERNAL" {
                    return Err(format!("unknown URLAUTH mechanism {mechanism}"));
                }
                if auth.expire.is_some_and(|e| e <= crate::store::now_secs()) {
                    return Err("the URL has expired".into());
                }
                let allowed = match &auth.access {
                    Access::Anonymous | Access::AuthUser => true,
                    Access::User(who) => who.eq_ignore_ascii_case(self.account()),
                    // Only a submission server fetching for BURL (RFC 4468), which this is not.
                    Access::Submit(_) => false,
                };
                if !allowed {
                    return Err("the URL is not for this user".into());
                }
                u.user.clone().unwrap_or_default()
            }
        };
        let name = canonical_inbox(u.mailbox.trim_end_matches(DELIM));
        let store = &self.shared.store;
        let mb = store
            .mailbox(&owner, &name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no mailbox {name}"))?;
        if let Some(auth) = &u.auth {
            let key = self
                .urlauth_key(&owner, mb.id, false)
                .map_err(|e| e.to_string())?
                .ok_or("the URL's key was reset")?;
            let token = auth.token.as_ref().and_then(|(_, t)| unhex(t)).unwrap_or_default();
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
            ring::hmac::verify(&key, auth.rump.as_bytes(), &token).map_err(|_| "the URL's token does not match")?;
        }
        if u.uidvalidity.is_some_and(|v| v != mb.uidvalidity) {
            return Err(format!("UIDVALIDITY of {name} is {}", mb.uidvalidity));
        }
        let m = store
            .message(mb.id, u.uid)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no message with UID {} in {name}", u.uid))?;
        let raw = store
            .blob(&m.meta.blob)
            .map_err(|e| e.to_string())?
            .ok_or("the message's content is missing")?;
        Ok((raw, u))
    }

    /// What a URL names: the message, a section of it, part of that.
    pub(super) fn url_content(&self, text: &str) -> Result<Vec<u8>, String> {
        let (raw, u) = self.url_message(text)?;
        let data = match &u.section {
            None => raw,
            Some(spec) => {
                let section = crate::imap::parser::parse_section(spec)?;
                let root = mime::parse(&raw);
                fetch::section_bytes(&raw, &root, &section)
                    .ok_or_else(|| format!("the message has no section {spec}"))?
            }
        };
        Ok(partial(data, u.partial))
    }

    /// GENURLAUTH: each rump signed with its mailbox's key.
    pub(super) fn gen_url_auth(&mut self, pairs: &[(String, String)]) -> Reply {
        let mut urls = Vec::with_capacity(pairs.len());
        for (rump, mechanism) in pairs {
            if mechanism != "INTERNAL" {
                return no(format!("Unknown URLAUTH mechanism {mechanism} (INTERNAL is offered)"));
            }
            let u = url::parse(rump).map_err(|e| Fail::No(format!("Bad URL {rump}: {e}")))?;
            let Some(auth) = u.auth.as_ref().filter(|a| a.token.is_none()) else {
                return no(format!(
                    "{rump} is not a URLAUTH rump (it needs ;URLAUTH=access and no token)"
                ));
            };
            if !u
                .user
                .as_deref()
                .is_some_and(|user| user.eq_ignore_ascii_case(self.account()))
            {
                return no("A URL can only be authorised by the user it names");
            }
            let name = canonical_inbox(u.mailbox.trim_end_matches(DELIM));
            let Some(mb) = self.shared.store.mailbox(self.account(), &name)? else {
                return no(format!("[NONEXISTENT] Mailbox {name} does not exist"));
            };
            let account = self.account().to_string();
            let key = self.urlauth_key(&account, mb.id, true)?.unwrap_or_default();
            let tag = ring::hmac::sign(
                &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
                auth.rump.as_bytes(),
            );
            urls.push(format!("{}:INTERNAL:{}", auth.rump, hex(tag.as_ref())));
        }
        let mut line = b"* GENURLAUTH".to_vec();
        for u in &urls {
            line.push(b' ');
            fetch::write_string(&mut line, u.as_bytes());
        }
        line.extend_from_slice(b"\r\n");
        self.conn.write(&line);
        Ok("GENURLAUTH completed".into())
    }

    /// RESETKEY: one mailbox's key, or every key of the user.
    pub(super) fn reset_key(&mut self, mailbox: Option<&str>, mechanisms: &[String]) -> Reply {
        if let Some(m) = mechanisms.iter().find(|m| *m != "INTERNAL") {
            return no(format!("Unknown URLAUTH mechanism {m}"));
        }
        let account = self.account().to_string();
        let ids: Vec<u64> = match mailbox {
            Some(name) => {
                let name = self.mailbox_arg(name)?;
                match self.shared.store.mailbox(&account, &name)? {
                    Some(mb) => vec![mb.id],
                    None => return no(format!("[NONEXISTENT] Mailbox {name} does not exist")),
                }
            }
            None => self.shared.store.mailboxes(&account)?.iter().map(|m| m.id).collect(),
        };
        for id in ids {
            self.shared.store.kv_set(&key_name(&account, id), None)?;
        }
        Ok("RESETKEY completed".into())
    }

    /// URLFETCH: each URL's data, or NIL for one that is not good.
    pub(super) fn url_fetch(&mut self, items: &[UrlFetchItem]) -> Reply {
        for item in items {
            let mut line = b"* URLFETCH ".to_vec();
            fetch::write_string(&mut line, item.url.as_bytes());
            line.push(b' ');
            match &item.params {
                None => match self.url_content(&item.url) {
                    Ok(data) => fetch::write_text_literal(&mut line, &data),
                    Err(why) => {
                        tracing::debug!("URLFETCH {}: {why}", item.url);
                        line.extend_from_slice(b"NIL");
                    }
                },
                Some(params) => match self.url_parts(&item.url, params) {
                    Ok(data) => line.extend_from_slice(&data),
                    Err(why) => {
                        tracing::debug!("URLFETCH {}: {why}", item.url);
                        line.extend_from_slice(b"NIL");
                    }
                },
            }
            line.extend_from_slice(b"\r\n");
            self.conn.write(&line);
        }
        Ok("URLFETCH completed".into())
    }

    /// `(BODYPARTSTRUCTURE ...) (BINARY ...) (BODY ...)` for a URL naming a message or a part
    /// by number (RFC 5524 §3).
    fn url_parts(&self, text: &str, params: &crate::imap::command::UrlFetchParams) -> Result<Vec<u8>, String> {
        let (raw, u) = self.url_message(text)?;
        let section = match &u.section {
            Some(spec) => crate::imap::parser::parse_section(spec)?,
            None => crate::imap::command::Section {
                part: Vec::new(),
                kind: SectionKind::Full,
            },
        };
        let root = mime::parse(&raw);
        let part = mime::resolve(&root, &section.part).ok_or("the message has no such part")?;
        let mut out = Vec::new();
        if params.body_part_structure {
            if section.kind != SectionKind::Full {
                return Err("BODYPARTSTRUCTURE needs a part number, not HEADER or TEXT".into());
            }
            out.extend_from_slice(b"(BODYPARTSTRUCTURE ");
            fetch::body_structure(&mut out, &raw, part, true);
            out.push(b')');
        }
        if params.body {
            let data = fetch::section_bytes(&raw, &root, &section).ok_or("the message has no such section")?;
            push_sep(&mut out);
            out.extend_from_slice(b"(BODY ");
            fetch::write_text_literal(&mut out, &partial(data, u.partial));
            out.push(b')');
        }
        if params.binary {
            if section.kind != SectionKind::Full {
                return Err("BINARY needs a part number, not HEADER or TEXT".into());
            }
            push_sep(&mut out);
            out.extend_from_slice(b"(BINARY ");
            match fetch::binary_bytes(&raw, &root, &section.part) {
                Some(Ok(data)) => fetch::write_binary_literal(&mut out, &partial(data, u.partial)),
                // An encoding we cannot undo (RFC 5524 §3: NIL).
                _ => out.extend_from_slice(b"NIL"),
            }
            out.push(b')');
        }
        if out.is_empty() {
            return Err("nothing asked for".into());
        }
        Ok(out)
    }
}

fn push_sep(out: &mut Vec<u8>) {
    if !out.is_empty() {
        out.push(b' ');
    }
}

fn partial(data: Vec<u8>, p: Option<(u32, Option<u32>)>) -> Vec<u8> {
    match p {
        None => data,
        Some((start, len)) => fetch::partial(&data, Some((start, len.unwrap_or(u32::MAX)))).to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(unhex("00ab10"), Some(vec![0, 0xab, 0x10]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
