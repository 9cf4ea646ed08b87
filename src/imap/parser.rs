//! IMAP command grammar (RFC 3501 §9, RFC 9051 §9, and the extensions we announce), sans-IO.
//!
//! The session hands over one complete command as it came off the wire: the command line with
//! every literal inline (`{n}\r\n` followed by the n bytes, `{n+}` / `{n-}` for LITERAL+/-,
//! `~{n}` for BINARY APPEND). [`parse`] turns it into a [`Command`] or an error text for the
//! tagged BAD. Why our own parser rather than imap-codec: see docs/architecture.md.

use super::command::*;
use crate::store::FlagOp;

/// The command's tag if one can be read (for the BAD reply to a command that fails to parse).
pub fn tag_of(buf: &[u8]) -> Option<String> {
    let end = buf
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .unwrap_or(buf.len());
    let tag = &buf[..end];
    (!tag.is_empty() && tag.iter().all(|&b| is_tag_char(b))).then(|| String::from_utf8_lossy(tag).into_owned())
}

fn is_atom_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

fn is_tag_char(b: u8) -> bool {
    is_atom_char(b) && b != b'+'
}

fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

fn is_list_char(b: u8) -> bool {
    is_astring_char(b) || b == b'%' || b == b'*'
}

pub struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    pub fn new(buf: &'a [u8]) -> Parser<'a> {
        Parser { buf, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// At `{` or `~{`: a literal starts here. A `~` on its own is an atom character
    /// (`SELECT ~foo` names a mailbox).
    fn at_literal(&self) -> bool {
        match self.peek() {
            Some(b'{') => true,
            Some(b'~') => self.buf.get(self.pos + 1) == Some(&b'{'),
            _ => false,
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn expect(&mut self, b: u8) -> Result<()> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at position {}", b as char, self.pos))
        }
    }

    fn sp(&mut self) -> Result<()> {
        self.expect(b' ')
            .map_err(|_| format!("expected a space at position {}", self.pos))
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.pos < self.buf.len() && f(self.buf[self.pos]) {
            self.pos += 1;
        }
        &self.buf[start..self.pos]
    }

    pub fn atom(&mut self) -> Result<String> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            return Err(format!("expected an atom at position {}", self.pos));
        }
        Ok(String::from_utf8_lossy(a).into_owned())
    }

    fn number(&mut self) -> Result<u64> {
        let d = self.take_while(|b| b.is_ascii_digit());
        if d.is_empty() || d.len() > 19 {
            return Err(format!("expected a number at position {}", self.pos));
        }
        std::str::from_utf8(d)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "number out of range".into())
    }

    fn nz_number(&mut self) -> Result<u32> {
        let n = self.number()?;
        u32::try_from(n)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| "expected a non-zero 32-bit number".into())
    }

    /// A literal `{n}`, `{n+}`, `{n-}` (or `~{n}`) followed by CRLF and n bytes.
    fn literal(&mut self) -> Result<&'a [u8]> {
        self.eat(b'~');
        self.expect(b'{')?;
        let n = self.number()? as usize;
        let _ = self.eat(b'+') || self.eat(b'-');
        self.expect(b'}')?;
        self.expect(b'\r')?;
        self.expect(b'\n')?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or("literal is truncated")?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn quoted(&mut self) -> Result<Vec<u8>> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r') | Some(b'\n') => return Err("unterminated quoted string".into()),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.pos += 1;
                        }
                        _ => return Err("bad escape in quoted string".into()),
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    pub fn string_bytes(&mut self) -> Result<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            _ if self.at_literal() => Ok(self.literal()?.to_vec()),
            _ => Err(format!("expected a string at position {}", self.pos)),
        }
    }

    fn utf8(bytes: Vec<u8>) -> Result<String> {
        String::from_utf8(bytes).map_err(|_| "string is not valid UTF-8".to_string())
    }

    pub fn astring(&mut self) -> Result<String> {
        match self.peek() {
            Some(b'"') => Self::utf8(self.string_bytes()?),
            _ if self.at_literal() => Self::utf8(self.string_bytes()?),
            _ => {
                let a = self.take_while(is_astring_char);
                if a.is_empty() {
                    return Err(format!("expected a string at position {}", self.pos));
                }
                Ok(String::from_utf8_lossy(a).into_owned())
            }
        }
    }

    fn list_mailbox(&mut self) -> Result<String> {
        match self.peek() {
            Some(b'"' | b'{') => Self::utf8(self.string_bytes()?),
            _ => {
                let a = self.take_while(is_list_char);
                if a.is_empty() {
                    return Err(format!("expected a mailbox pattern at position {}", self.pos));
                }
                Ok(String::from_utf8_lossy(a).into_owned())
            }
        }
    }

    fn seq_number(&mut self) -> Result<u64> {
        if self.eat(b'*') {
            Ok(STAR)
        } else {
            self.nz_number().map(u64::from)
        }
    }

    pub fn seq_set(&mut self) -> Result<SeqSet> {
        if self.eat(b'$') {
            return Ok(SeqSet::Saved);
        }
        let mut ranges = Vec::new();
        loop {
            let a = self.seq_number()?;
            let b = if self.eat(b':') { self.seq_number()? } else { a };
            ranges.push((a, b));
            if !self.eat(b',') {
                break;
            }
        }
        Ok(SeqSet::Ranges(ranges))
    }

    fn flag(&mut self) -> Result<String> {
        if self.eat(b'\\') {
            if self.eat(b'*') {
                return Ok("\\*".into());
            }
            Ok(format!("\\{}", self.atom()?))
        } else {
            self.atom()
        }
    }

    fn flag_list(&mut self) -> Result<Vec<String>> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        if self.eat(b')') {
            return Ok(out);
        }
        loop {
            out.push(self.flag()?);
            if self.eat(b')') {
                return Ok(out);
            }
            self.sp()?;
        }
    }

    /// `dd-Mon-yyyy` → days since the epoch.
    fn date(&mut self) -> Result<i64> {
        let quoted = self.eat(b'"');
        let text = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'-');
        if quoted {
            self.expect(b'"')?;
        }
        parse_date(std::str::from_utf8(text).unwrap_or("")).ok_or_else(|| "bad date (want dd-Mon-yyyy)".into())
    }

    fn upper_atom(&mut self) -> Result<String> {
        Ok(self.atom()?.to_ascii_uppercase())
    }

    fn end(&self) -> Result<()> {
        match &self.buf[self.pos..] {
            b"" | b"\r\n" | b"\n" => Ok(()),
            _ => Err(format!("unexpected characters at position {}", self.pos)),
        }
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Civil date of days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn month_index(name: &str) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(name))
        .map(|i| i as u32 + 1)
}

pub fn month_name(m: u32) -> &'static str {
    [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m as usize).clamp(1, 12) - 1]
}

fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.split('-');
    let d: u32 = it.next()?.parse().ok()?;
    let m = month_index(it.next()?)?;
    let y: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=31).contains(&d) || !(1..=9999).contains(&y) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// `"dd-Mon-yyyy hh:mm:ss +zzzz"` → seconds since the epoch.
fn parse_date_time(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let (date, rest) = s.split_once(' ')?;
    let days = parse_date(date)?;
    let (time, zone) = rest.split_once(' ')?;
    let t: Vec<i64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if t.len() != 3 || t[0] > 23 || t[1] > 59 || t[2] > 60 {
        return None;
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let z: i64 = zone.get(1..5)?.parse().ok()?;
    let offset = sign * ((z / 100) * 3600 + (z % 100) * 60);
    Some(days * 86400 + t[0] * 3600 + t[1] * 60 + t[2] - offset)
}

fn fetch_macro(name: &str) -> Option<Vec<FetchAtt>> {
    use FetchAtt::*;
    Some(match name {
        "ALL" => vec![Flags, InternalDate, Rfc822Size, Envelope],
        "FAST" => vec![Flags, InternalDate, Rfc822Size],
        "FULL" => vec![Flags, InternalDate, Rfc822Size, Envelope, Body],
        _ => return None,
    })
}

impl Parser<'_> {
    fn section(&mut self) -> Result<Section> {
        self.expect(b'[')?;
        let mut part = Vec::new();
        let mut kind = SectionKind::Full;
        if !self.eat(b']') {
            loop {
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    part.push(self.nz_number()?);
                    if self.eat(b'.') {
                        continue;
                    }
                    break;
                }
                let word = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'.');
                kind = match word.to_ascii_uppercase().as_slice() {
                    b"HEADER" => SectionKind::Header,
                    b"TEXT" => SectionKind::Text,
                    b"MIME" if !part.is_empty() => SectionKind::Mime,
                    b"HEADER.FIELDS" => {
                        self.sp()?;
                        SectionKind::HeaderFields(self.header_list()?)
                    }
                    b"HEADER.FIELDS.NOT" => {
                        self.sp()?;
                        SectionKind::HeaderFieldsNot(self.header_list()?)
                    }
                    _ => return Err("bad section".into()),
                };
                break;
            }
            self.expect(b']')?;
        }
        Ok(Section { part, kind })
    }

    fn header_list(&mut self) -> Result<Vec<String>> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        loop {
            out.push(self.astring()?.to_ascii_lowercase());
            if self.eat(b')') {
                return Ok(out);
            }
            self.sp()?;
        }
    }

    fn partial(&mut self) -> Result<Option<(u32, u32)>> {
        if !self.eat(b'<') {
            return Ok(None);
        }
        let start = u32::try_from(self.number()?).map_err(|_| "partial out of range")?;
        self.expect(b'.')?;
        let len = self.nz_number()?;
        self.expect(b'>')?;
        Ok(Some((start, len)))
    }

    fn fetch_att(&mut self) -> Result<FetchAtt> {
        let word = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
        let word = String::from_utf8_lossy(word).to_ascii_uppercase();
        use FetchAtt::*;
        Ok(match word.as_str() {
            "ENVELOPE" => Envelope,
            "FLAGS" => Flags,
            "INTERNALDATE" => InternalDate,
            "RFC822.SIZE" => Rfc822Size,
            "RFC822" => Rfc822,
            "RFC822.HEADER" => Rfc822Header,
            "RFC822.TEXT" => Rfc822Text,
            "UID" => Uid,
            "BODYSTRUCTURE" => BodyStructure,
            "MODSEQ" => ModSeq,
            "BODY" if self.peek() != Some(b'[') => Body,
            "BODY" | "BODY.PEEK" | "BINARY" | "BINARY.PEEK" => {
                let section = self.section()?;
                let binary = word.starts_with("BINARY");
                if binary && !matches!(section.kind, SectionKind::Full) {
                    return Err("BINARY takes only part numbers".into());
                }
                Section {
                    peek: word.ends_with(".PEEK"),
                    binary,
                    section,
                    partial: self.partial()?,
                }
            }
            "BINARY.SIZE" => {
                let s = self.section()?;
                if !matches!(s.kind, SectionKind::Full) {
                    return Err("BINARY.SIZE takes only part numbers".into());
                }
                BinarySize(s.part)
            }
            "" => return Err(format!("expected a fetch item at position {}", self.pos)),
            other => return Err(format!("unknown fetch item {other}")),
        })
    }

    fn fetch_atts(&mut self) -> Result<Vec<FetchAtt>> {
        if self.eat(b'(') {
            let mut out = Vec::new();
            loop {
                out.push(self.fetch_att()?);
                if self.eat(b')') {
                    return Ok(out);
                }
                self.sp()?;
            }
        }
        let save = self.pos;
        let word = self.take_while(|b| b.is_ascii_alphabetic());
        let at_end = matches!(self.peek(), None | Some(b' ' | b'\r' | b'\n'));
        if let Some(m) = fetch_macro(&String::from_utf8_lossy(word).to_ascii_uppercase()).filter(|_| at_end) {
            return Ok(m);
        }
        self.pos = save;
        Ok(vec![self.fetch_att()?])
    }

    fn search_key(&mut self, depth: usize) -> Result<SearchKey> {
        if depth > 32 {
            return Err("search program nested too deeply".into());
        }
        use SearchKey::*;
        if self.eat(b'(') {
            let mut keys = Vec::new();
            loop {
                keys.push(self.search_key(depth + 1)?);
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
            return Ok(if keys.len() == 1 {
                keys.pop().unwrap_or(All)
            } else {
                And(keys)
            });
        }
        if self
            .peek()
            .is_some_and(|b| b.is_ascii_digit() || b == b'*' || b == b'$')
        {
            return Ok(Seq(self.seq_set()?));
        }
        let word = self.upper_atom()?;
        let flag = |bit: u8, set: bool| Ok(Flag(bit, set));
        use crate::store::Flags as F;
        match word.as_str() {
            "ALL" => Ok(All),
            "ANSWERED" => flag(F::ANSWERED, true),
            "DELETED" => flag(F::DELETED, true),
            "DRAFT" => flag(F::DRAFT, true),
            "FLAGGED" => flag(F::FLAGGED, true),
            "SEEN" => flag(F::SEEN, true),
            "UNANSWERED" => flag(F::ANSWERED, false),
            "UNDELETED" => flag(F::DELETED, false),
            "UNDRAFT" => flag(F::DRAFT, false),
            "UNFLAGGED" => flag(F::FLAGGED, false),
            "UNSEEN" => flag(F::SEEN, false),
            "NEW" => Ok(New),
            "OLD" => Ok(Old),
            "RECENT" => Ok(Recent),
            "KEYWORD" | "UNKEYWORD" => {
                self.sp()?;
                Ok(Keyword(self.atom()?, word == "KEYWORD"))
            }
            "BCC" | "CC" | "FROM" | "SUBJECT" | "TO" => {
                self.sp()?;
                Ok(Header(word.to_ascii_lowercase(), self.astring()?))
            }
            "HEADER" => {
                self.sp()?;
                let name = self.astring()?.to_ascii_lowercase();
                self.sp()?;
                Ok(Header(name, self.astring()?))
            }
            "BODY" => {
                self.sp()?;
                Ok(Body(self.astring()?))
            }
            "TEXT" => {
                self.sp()?;
                Ok(Text(self.astring()?))
            }
            "BEFORE" | "ON" | "SINCE" | "SENTBEFORE" | "SENTON" | "SENTSINCE" => {
                self.sp()?;
                let d = self.date()?;
                Ok(match word.as_str() {
                    "BEFORE" => Before(d),
                    "ON" => On(d),
                    "SINCE" => Since(d),
                    "SENTBEFORE" => SentBefore(d),
                    "SENTON" => SentOn(d),
                    _ => SentSince(d),
                })
            }
            "LARGER" | "SMALLER" => {
                self.sp()?;
                let n = self.number()?;
                Ok(if word == "LARGER" { Larger(n) } else { Smaller(n) })
            }
            "UID" => {
                self.sp()?;
                Ok(Uid(self.seq_set()?))
            }
            "NOT" => {
                self.sp()?;
                Ok(Not(Box::new(self.search_key(depth + 1)?)))
            }
            "OR" => {
                self.sp()?;
                let a = self.search_key(depth + 1)?;
                self.sp()?;
                let b = self.search_key(depth + 1)?;
                Ok(Or(Box::new(a), Box::new(b)))
            }
            "MODSEQ" => {
                self.sp()?;
                // Optional entry name and type (RFC 7162 §3.1.5): accepted and ignored.
                if self.peek() == Some(b'"') {
                    self.quoted()?;
                    self.sp()?;
                    self.atom()?;
                    self.sp()?;
                }
                Ok(ModSeq(self.number()?))
            }
            other => Err(format!("unknown search key {other}")),
        }
    }

    fn status_items(&mut self) -> Result<Vec<StatusItem>> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        loop {
            out.push(match self.upper_atom()?.as_str() {
                "MESSAGES" => StatusItem::Messages,
                "RECENT" => StatusItem::Recent,
                "UIDNEXT" => StatusItem::UidNext,
                "UIDVALIDITY" => StatusItem::UidValidity,
                "UNSEEN" => StatusItem::Unseen,
                "DELETED" => StatusItem::Deleted,
                "SIZE" => StatusItem::Size,
                "HIGHESTMODSEQ" => StatusItem::HighestModSeq,
                other => return Err(format!("unknown status item {other}")),
            });
            if self.eat(b')') {
                return Ok(out);
            }
            self.sp()?;
        }
    }

    fn list(&mut self) -> Result<Cmd> {
        let mut options = ListOptions::default();
        self.sp()?;
        if self.eat(b'(') {
            options.extended = true;
            if !self.eat(b')') {
                loop {
                    match self.upper_atom()?.as_str() {
                        "SUBSCRIBED" => options.subscribed = true,
                        "REMOTE" => options.remote = true,
                        "RECURSIVEMATCH" => options.recursive_match = true,
                        "SPECIAL-USE" => options.special_use_only = true,
                        other => return Err(format!("unknown LIST selection option {other}")),
                    }
                    if self.eat(b')') {
                        break;
                    }
                    self.sp()?;
                }
            }
            if options.recursive_match && !options.subscribed {
                return Err("RECURSIVEMATCH needs another selection option".into());
            }
            self.sp()?;
        }
        let reference = self.astring_or_empty()?;
        self.sp()?;
        let mut patterns = Vec::new();
        if self.eat(b'(') {
            options.extended = true;
            loop {
                patterns.push(self.list_mailbox()?);
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
        } else {
            patterns.push(self.list_mailbox()?);
        }
        if self.eat(b' ') {
            if self.upper_atom()? != "RETURN" {
                return Err("expected RETURN".into());
            }
            options.extended = true;
            self.sp()?;
            self.expect(b'(')?;
            if !self.eat(b')') {
                loop {
                    match self.upper_atom()?.as_str() {
                        "SUBSCRIBED" => options.ret_subscribed = true,
                        "CHILDREN" => options.ret_children = true,
                        "SPECIAL-USE" => options.ret_special_use = true,
                        "STATUS" => {
                            self.sp()?;
                            options.ret_status = Some(self.status_items()?);
                        }
                        other => return Err(format!("unknown LIST return option {other}")),
                    }
                    if self.eat(b')') {
                        break;
                    }
                    self.sp()?;
                }
            }
        }
        Ok(Cmd::List {
            reference,
            patterns,
            options,
        })
    }

    /// An astring that may be `""`.
    fn astring_or_empty(&mut self) -> Result<String> {
        self.astring()
    }

    fn append(&mut self) -> Result<Cmd> {
        self.sp()?;
        let mailbox = self.astring()?;
        let mut messages = Vec::new();
        // MULTIAPPEND (RFC 3502): each message is `[flag-list SP] [date-time SP] literal`.
        while self.eat(b' ') {
            let mut flags = Vec::new();
            if self.peek() == Some(b'(') {
                flags = self.flag_list()?;
                self.sp()?;
            }
            let mut date = None;
            if self.peek() == Some(b'"') {
                let d = self.quoted()?;
                date = Some(
                    parse_date_time(&String::from_utf8_lossy(&d))
                        .ok_or("bad date-time (want \"dd-Mon-yyyy hh:mm:ss +zzzz\")")?,
                );
                self.sp()?;
            }
            let data = if self.at_literal() {
                AppendData::Literal(self.literal()?.to_vec())
            } else if self.upper_atom()? == "CATENATE" {
                self.sp()?;
                AppendData::Catenate(self.catenate_parts()?)
            } else {
                return Err("APPEND needs the message as a literal or CATENATE".into());
            };
            messages.push(super::command::AppendMessage { flags, date, data });
        }
        if messages.is_empty() {
            return Err("APPEND needs a message".into());
        }
        Ok(Cmd::Append { mailbox, messages })
    }

    /// After `NOTIFY SET`: `[STATUS] 1*(SP event-group)` (RFC 5465 §8).
    fn notify_set(&mut self) -> Result<NotifySpec> {
        self.sp()?;
        let mut status = false;
        if self.peek() != Some(b'(') {
            if self.upper_atom()? != "STATUS" {
                return Err("expected STATUS or an event group".into());
            }
            status = true;
            self.sp()?;
        }
        let mut groups = Vec::new();
        loop {
            groups.push(self.notify_group()?);
            if !self.eat(b' ') {
                return Ok(NotifySpec { status, groups });
            }
        }
    }

    fn notify_group(&mut self) -> Result<NotifyGroup> {
        self.expect(b'(')?;
        let filter = match self.upper_atom()?.as_str() {
            "SELECTED" => NotifyFilter::Selected,
            "SELECTED-DELAYED" => NotifyFilter::SelectedDelayed,
            "INBOXES" => NotifyFilter::Inboxes,
            "PERSONAL" => NotifyFilter::Personal,
            "SUBSCRIBED" => NotifyFilter::Subscribed,
            f @ ("SUBTREE" | "MAILBOXES") => {
                self.sp()?;
                let mut names = Vec::new();
                if self.eat(b'(') {
                    loop {
                        names.push(self.astring()?);
                        if self.eat(b')') {
                            break;
                        }
                        self.sp()?;
                    }
                } else {
                    names.push(self.astring()?);
                }
                if f == "SUBTREE" {
                    NotifyFilter::Subtree(names)
                } else {
                    NotifyFilter::Mailboxes(names)
                }
            }
            other => return Err(format!("unknown NOTIFY filter {other}")),
        };
        self.sp()?;
        let mut events = Vec::new();
        if self.eat(b'(') {
            loop {
                let name = self.upper_atom()?;
                events.push(match name.as_str() {
                    "MESSAGENEW" => {
                        let mut atts = Vec::new();
                        if self.peek() == Some(b' ') && self.buf.get(self.pos + 1) == Some(&b'(') {
                            self.sp()?;
                            atts = self.fetch_atts()?;
                        }
                        NotifyEvent::MessageNew(atts)
                    }
                    "MESSAGEEXPUNGE" => NotifyEvent::MessageExpunge,
                    "FLAGCHANGE" => NotifyEvent::FlagChange,
                    "MAILBOXNAME" => NotifyEvent::MailboxName,
                    "SUBSCRIPTIONCHANGE" => NotifyEvent::SubscriptionChange,
                    _ => NotifyEvent::Other(name),
                });
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
        } else if self.upper_atom()? != "NONE" {
            return Err("expected an event list or NONE".into());
        }
        self.expect(b')')?;
        Ok(NotifyGroup { filter, events })
    }

    /// `url` or `(url param...)` of URLFETCH (RFC 5524 §3).
    fn url_fetch_item(&mut self) -> Result<UrlFetchItem> {
        if !self.eat(b'(') {
            return Ok(UrlFetchItem {
                url: self.astring()?,
                params: None,
            });
        }
        let url = self.astring()?;
        let mut params = UrlFetchParams::default();
        while self.eat(b' ') {
            match self.upper_atom()?.as_str() {
                "BODYPARTSTRUCTURE" => params.body_part_structure = true,
                "BINARY" => params.binary = true,
                "BODY" => params.body = true,
                other => return Err(format!("unknown URLFETCH parameter {other}")),
            }
        }
        self.expect(b')')?;
        if params.binary && params.body {
            return Err("URLFETCH takes BINARY or BODY, not both".into());
        }
        Ok(UrlFetchItem {
            url,
            params: Some(params),
        })
    }

    /// `(TEXT literal / URL astring ...)` of CATENATE (RFC 4469 §5).
    fn catenate_parts(&mut self) -> Result<Vec<CatPart>> {
        self.expect(b'(')?;
        let mut parts = Vec::new();
        loop {
            match self.upper_atom()?.as_str() {
                "TEXT" => {
                    self.sp()?;
                    if !self.at_literal() {
                        return Err("CATENATE TEXT needs a literal".into());
                    }
                    parts.push(CatPart::Text(self.literal()?.to_vec()));
                }
                "URL" => {
                    self.sp()?;
                    parts.push(CatPart::Url(self.astring()?));
                }
                other => return Err(format!("unknown CATENATE part {other}")),
            }
            if self.eat(b')') {
                return Ok(parts);
            }
            self.sp()?;
        }
    }

    fn store(&mut self) -> Result<Cmd> {
        self.sp()?;
        let set = self.seq_set()?;
        self.sp()?;
        let mut unchanged_since = None;
        if self.eat(b'(') {
            if self.upper_atom()? != "UNCHANGEDSINCE" {
                return Err("expected UNCHANGEDSINCE".into());
            }
            self.sp()?;
            unchanged_since = Some(self.number()?);
            self.expect(b')')?;
            self.sp()?;
        }
        let item = self.take_while(|b| b.is_ascii_alphabetic() || b == b'+' || b == b'-' || b == b'.');
        let item = String::from_utf8_lossy(item).to_ascii_uppercase();
        let (op, rest) = match item.as_bytes().first() {
            Some(b'+') => (FlagOp::Add, &item[1..]),
            Some(b'-') => (FlagOp::Remove, &item[1..]),
            _ => (FlagOp::Replace, &item[..]),
        };
        let silent = match rest {
            "FLAGS" => false,
            "FLAGS.SILENT" => true,
            _ => return Err("expected FLAGS, +FLAGS or -FLAGS".into()),
        };
        self.sp()?;
        let flags = if self.peek() == Some(b'(') {
            self.flag_list()?
        } else {
            let mut v = vec![self.flag()?];
            while self.eat(b' ') {
                v.push(self.flag()?);
            }
            v
        };
        Ok(Cmd::Store {
            set,
            op,
            silent,
            flags,
            unchanged_since,
        })
    }

    /// An optional `RETURN (options) ` (ESEARCH, RFC 4731; SEARCHRES, RFC 5182; ESORT and
    /// CONTEXT, RFC 5267; negative PARTIAL ranges, RFC 9394).
    fn return_options(&mut self) -> Result<Option<ReturnOpts>> {
        let save = self.pos;
        if self.upper_atom().ok().as_deref() != Some("RETURN") {
            self.pos = save;
            return Ok(None);
        }
        self.sp()?;
        self.expect(b'(')?;
        let mut r = ReturnOpts::default();
        if self.eat(b')') {
            r.all = true;
        } else {
            loop {
                match self.upper_atom()?.as_str() {
                    "MIN" => r.min = true,
                    "MAX" => r.max = true,
                    "ALL" => r.all = true,
                    "COUNT" => r.count = true,
                    "SAVE" => r.save = true,
                    "UPDATE" => r.update = true,
                    // A hint that the client will use the result again: nothing to do.
                    "CONTEXT" => {}
                    "PARTIAL" => {
                        self.sp()?;
                        r.partial = Some(self.partial_range()?);
                    }
                    other => return Err(format!("unknown RETURN option {other}")),
                }
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
        }
        self.sp()?;
        Ok(Some(r))
    }

    /// `n:m` for PARTIAL: both positive or both negative, never 0 or `*`.
    fn partial_range(&mut self) -> Result<(i64, i64)> {
        let a = self.partial_end()?;
        self.expect(b':')?;
        let b = self.partial_end()?;
        if (a < 0) != (b < 0) {
            return Err("PARTIAL range mixes positive and negative positions".into());
        }
        Ok((a.min(b), a.max(b)))
    }

    fn partial_end(&mut self) -> Result<i64> {
        let neg = self.eat(b'-');
        let n = self.number()?;
        if n == 0 || n > u64::from(u32::MAX) {
            return Err("PARTIAL positions are 1 to 4294967295".into());
        }
        Ok(if neg { -(n as i64) } else { n as i64 })
    }

    fn search(&mut self) -> Result<Cmd> {
        self.sp()?;
        let ret = self.return_options()?;
        let save = self.pos;
        if self.upper_atom().ok().as_deref() == Some("CHARSET") {
            self.sp()?;
            self.charset()?;
            self.sp()?;
        } else {
            self.pos = save;
        }
        let key = self.search_program()?;
        Ok(Cmd::Search { ret, key })
    }

    /// A search charset: the two every server must know (RFC 3501 §6.4.4).
    fn charset(&mut self) -> Result<()> {
        let cs = self.astring()?.to_ascii_uppercase();
        if cs != "UTF-8" && cs != "US-ASCII" {
            return Err(format!("[BADCHARSET (UTF-8 US-ASCII)] charset {cs} is not supported"));
        }
        Ok(())
    }

    /// One or more search keys, all of which must match.
    fn search_program(&mut self) -> Result<SearchKey> {
        let mut keys = vec![self.search_key(0)?];
        while self.eat(b' ') {
            keys.push(self.search_key(0)?);
        }
        Ok(if keys.len() == 1 {
            keys.pop().unwrap_or(SearchKey::All)
        } else {
            SearchKey::And(keys)
        })
    }

    /// `SORT [RETURN (...)] (criteria) charset keys` (RFC 5256 §3, RFC 5267 §3).
    fn sort(&mut self) -> Result<Cmd> {
        use super::sort::{SortKey, SortKind};
        self.sp()?;
        let ret = self.return_options()?;
        self.expect(b'(')?;
        let mut criteria = Vec::new();
        let mut reverse = false;
        loop {
            let word = self.upper_atom()?;
            let kind = match word.as_str() {
                "REVERSE" => {
                    if reverse {
                        return Err("REVERSE twice".into());
                    }
                    reverse = true;
                    self.sp()?;
                    continue;
                }
                "ARRIVAL" => SortKind::Arrival,
                "CC" => SortKind::Cc,
                "DATE" => SortKind::Date,
                "FROM" => SortKind::From,
                "SIZE" => SortKind::Size,
                "SUBJECT" => SortKind::Subject,
                "TO" => SortKind::To,
                "DISPLAYFROM" => SortKind::DisplayFrom,
                "DISPLAYTO" => SortKind::DisplayTo,
                other => return Err(format!("unknown sort criterion {other}")),
            };
            criteria.push(SortKey { kind, reverse });
            reverse = false;
            if !self.eat(b' ') {
                break;
            }
        }
        if reverse {
            return Err("REVERSE needs a criterion after it".into());
        }
        self.expect(b')')?;
        self.sp()?;
        self.charset()?;
        self.sp()?;
        // RFC 5267 puts RETURN before the criteria; Dovecot also takes it after the
        // charset, and clients written against Dovecot send it there.
        let ret = match ret {
            Some(r) => Some(r),
            None => self.return_options()?,
        };
        let key = self.search_program()?;
        Ok(Cmd::Sort { ret, criteria, key })
    }

    /// `THREAD algorithm charset keys` (RFC 5256 §3).
    fn thread(&mut self) -> Result<Cmd> {
        use super::sort::ThreadAlgorithm;
        self.sp()?;
        let algorithm = match self.upper_atom()?.as_str() {
            "ORDEREDSUBJECT" => ThreadAlgorithm::OrderedSubject,
            "REFERENCES" => ThreadAlgorithm::References,
            other => return Err(format!("unknown threading algorithm {other}")),
        };
        self.sp()?;
        self.charset()?;
        self.sp()?;
        let key = self.search_program()?;
        Ok(Cmd::Thread { algorithm, key })
    }

    fn fetch(&mut self) -> Result<Cmd> {
        self.sp()?;
        let set = self.seq_set()?;
        self.sp()?;
        let atts = self.fetch_atts()?;
        let mut changed_since = None;
        let mut vanished = false;
        if self.eat(b' ') {
            self.expect(b'(')?;
            loop {
                match self.upper_atom()?.as_str() {
                    "CHANGEDSINCE" => {
                        self.sp()?;
                        changed_since = Some(self.number()?);
                    }
                    "VANISHED" => vanished = true,
                    other => return Err(format!("unknown FETCH modifier {other}")),
                }
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
        }
        if vanished && changed_since.is_none() {
            return Err("VANISHED needs CHANGEDSINCE".into());
        }
        Ok(Cmd::Fetch {
            set,
            atts,
            changed_since,
            vanished,
        })
    }

    fn select(&mut self, read_only: bool) -> Result<Cmd> {
        self.sp()?;
        let mailbox = self.astring()?;
        let mut condstore = false;
        let mut qresync = None;
        if self.eat(b' ') {
            self.expect(b'(')?;
            loop {
                match self.upper_atom()?.as_str() {
                    "CONDSTORE" => condstore = true,
                    "QRESYNC" => {
                        self.sp()?;
                        qresync = Some(self.qresync_params()?);
                    }
                    other => return Err(format!("unknown SELECT parameter {other}")),
                }
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
        }
        Ok(Cmd::Select {
            mailbox,
            read_only,
            condstore,
            qresync,
        })
    }

    /// `(uidvalidity mod-sequence [known-uids [(known-sequence-set known-uid-set)]])`.
    fn qresync_params(&mut self) -> Result<QresyncParams> {
        self.expect(b'(')?;
        let uidvalidity = self.nz_number()?;
        self.sp()?;
        let modseq = self.nz_number64()?;
        let mut known = None;
        if self.eat(b' ') {
            if self.peek() != Some(b'(') {
                known = Some(self.seq_set()?);
                self.eat(b' ');
            }
            // The sequence-match data only saves round trips; it is read and not needed.
            if self.eat(b'(') {
                self.seq_set()?;
                self.sp()?;
                self.seq_set()?;
                self.expect(b')')?;
            }
        }
        self.expect(b')')?;
        Ok(QresyncParams {
            uidvalidity,
            modseq,
            known,
        })
    }

    fn nz_number64(&mut self) -> Result<u64> {
        let n = self.number()?;
        if n == 0 {
            return Err("expected a number above 0".into());
        }
        Ok(n)
    }
}

/// Parses one complete command.
pub fn parse(buf: &[u8]) -> Result<Command> {
    let mut p = Parser::new(buf);
    let tag = p.take_while(is_tag_char);
    if tag.is_empty() {
        return Err("missing tag".into());
    }
    let tag = String::from_utf8_lossy(tag).into_owned();
    p.sp()?;
    let mut name = p.upper_atom()?;
    let mut uid = false;
    if name == "UID" {
        uid = true;
        p.sp()?;
        name = p.upper_atom()?;
        if !matches!(
            name.as_str(),
            "FETCH" | "STORE" | "SEARCH" | "SORT" | "THREAD" | "COPY" | "MOVE" | "EXPUNGE"
        ) {
            return Err(format!("UID {name} is not a command"));
        }
    }
    let one_mailbox = |p: &mut Parser| -> Result<String> {
        p.sp()?;
        p.astring()
    };
    let cmd = match name.as_str() {
        "CAPABILITY" => Cmd::Capability,
        "NOOP" => Cmd::Noop,
        "LOGOUT" => Cmd::Logout,
        "STARTTLS" => Cmd::StartTls,
        "AUTHENTICATE" => {
            p.sp()?;
            let mechanism = p.upper_atom()?;
            let initial = if p.eat(b' ') {
                let v = p.take_while(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
                Some(String::from_utf8_lossy(v).into_owned())
            } else {
                None
            };
            Cmd::Authenticate { mechanism, initial }
        }
        "LOGIN" => {
            p.sp()?;
            let user = p.astring()?;
            p.sp()?;
            let password = p.astring()?;
            Cmd::Login { user, password }
        }
        "ENABLE" => {
            let mut caps = Vec::new();
            while p.eat(b' ') {
                caps.push(p.upper_atom()?);
            }
            if caps.is_empty() {
                return Err("ENABLE needs at least one capability".into());
            }
            Cmd::Enable(caps)
        }
        "ID" => {
            // The client's parameters are accepted and not used.
            p.sp()?;
            if p.eat(b'(') {
                while !p.eat(b')') {
                    if p.at_end() {
                        return Err("unterminated ID list".into());
                    }
                    if p.peek() == Some(b' ') {
                        p.pos += 1;
                        continue;
                    }
                    if p.take_while(|b| b.is_ascii_alphabetic()).eq_ignore_ascii_case(b"NIL") {
                        continue;
                    }
                    p.string_bytes()?;
                }
            } else if p.upper_atom()? != "NIL" {
                return Err("ID takes a list or NIL".into());
            }
            Cmd::Id
        }
        "NAMESPACE" => Cmd::Namespace,
        "SELECT" => p.select(false)?,
        "EXAMINE" => p.select(true)?,
        "CREATE" => Cmd::Create(one_mailbox(&mut p)?),
        "DELETE" => Cmd::Delete(one_mailbox(&mut p)?),
        "RENAME" => {
            let a = one_mailbox(&mut p)?;
            Cmd::Rename(a, one_mailbox(&mut p)?)
        }
        "SUBSCRIBE" => Cmd::Subscribe(one_mailbox(&mut p)?),
        "UNSUBSCRIBE" => Cmd::Unsubscribe(one_mailbox(&mut p)?),
        "LIST" => p.list()?,
        "LSUB" => {
            p.sp()?;
            let reference = p.astring()?;
            p.sp()?;
            Cmd::Lsub {
                reference,
                pattern: p.list_mailbox()?,
            }
        }
        "STATUS" => {
            let mailbox = one_mailbox(&mut p)?;
            p.sp()?;
            Cmd::Status {
                mailbox,
                items: p.status_items()?,
            }
        }
        "APPEND" => p.append()?,
        "IDLE" => Cmd::Idle,
        "CHECK" => Cmd::Check,
        "CLOSE" => Cmd::Close,
        "UNSELECT" => Cmd::Unselect,
        "EXPUNGE" if uid => {
            p.sp()?;
            Cmd::Expunge(Some(p.seq_set()?))
        }
        "EXPUNGE" => Cmd::Expunge(None),
        "SEARCH" => p.search()?,
        "SORT" => p.sort()?,
        "THREAD" => p.thread()?,
        "GENURLAUTH" => {
            let mut pairs = Vec::new();
            while p.eat(b' ') {
                let url = p.astring()?;
                p.sp()?;
                pairs.push((url, p.upper_atom()?));
            }
            if pairs.is_empty() {
                return Err("GENURLAUTH needs a URL and a mechanism".into());
            }
            Cmd::GenUrlAuth(pairs)
        }
        "RESETKEY" => {
            let mut mailbox = None;
            let mut mechanisms = Vec::new();
            if p.eat(b' ') {
                mailbox = Some(p.astring()?);
                while p.eat(b' ') {
                    mechanisms.push(p.upper_atom()?);
                }
            }
            Cmd::ResetKey { mailbox, mechanisms }
        }
        "URLFETCH" => {
            let mut items = Vec::new();
            while p.eat(b' ') {
                items.push(p.url_fetch_item()?);
            }
            if items.is_empty() {
                return Err("URLFETCH needs a URL".into());
            }
            Cmd::UrlFetch(items)
        }
        "NOTIFY" => {
            p.sp()?;
            match p.upper_atom()?.as_str() {
                "NONE" => Cmd::Notify(None),
                "SET" => Cmd::Notify(Some(p.notify_set()?)),
                other => return Err(format!("NOTIFY takes SET or NONE, not {other}")),
            }
        }
        "CANCELUPDATE" => {
            let mut tags = Vec::new();
            while p.eat(b' ') {
                tags.push(p.astring()?);
            }
            if tags.is_empty() {
                return Err("CANCELUPDATE needs a tag".into());
            }
            Cmd::CancelUpdate(tags)
        }
        "FETCH" => p.fetch()?,
        "STORE" => p.store()?,
        "COPY" | "MOVE" => {
            p.sp()?;
            let set = p.seq_set()?;
            let mailbox = one_mailbox(&mut p)?;
            if name == "COPY" {
                Cmd::Copy { set, mailbox }
            } else {
                Cmd::Move { set, mailbox }
            }
        }
        other => return Err(format!("unknown command {other}")),
    };
    p.end()?;
    Ok(Command { tag, uid, cmd })
}

/// A FETCH section spec without its brackets (`1.2.HEADER`, `TEXT`, empty for the whole
/// message), as IMAP URLs carry it (RFC 5092 `;SECTION=`).
pub fn parse_section(spec: &str) -> std::result::Result<Section, String> {
    let wrapped = format!("[{spec}]");
    let mut p = Parser {
        buf: wrapped.as_bytes(),
        pos: 0,
    };
    let s = p.section()?;
    p.end()?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Cmd {
        parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e}")).cmd
    }

    #[test]
    fn commands_and_literals() {
        assert_eq!(
            cmd("a LOGIN {3}\r\nbob \"p\\\"w\""),
            Cmd::Login {
                user: "bob".into(),
                password: "p\"w".into()
            }
        );
        let c = parse(b"t1 UID FETCH 1:*,5 (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From To)]<0.100>)").unwrap();
        assert!(c.uid);
        let Cmd::Fetch { set, atts, .. } = c.cmd else { panic!() };
        assert_eq!(set, SeqSet::Ranges(vec![(1, STAR), (5, 5)]));
        assert_eq!(atts[0], FetchAtt::Flags);
        assert_eq!(
            atts[1],
            FetchAtt::Section {
                peek: true,
                binary: false,
                section: Section {
                    part: vec![1, 2],
                    kind: SectionKind::HeaderFields(vec!["from".into(), "to".into()])
                },
                partial: Some((0, 100))
            }
        );
        assert!(matches!(cmd("a FETCH 1 ALL"), Cmd::Fetch { atts, .. } if atts.len() == 4));
        assert!(
            matches!(cmd("a APPEND INBOX (\\Seen) {5+}\r\nhello"), Cmd::Append { messages, .. } if messages[0].data == AppendData::Literal(b"hello".to_vec()) && messages[0].flags == ["\\Seen"])
        );
        assert!(
            matches!(cmd("a APPEND Junk \"05-Jan-2024 10:00:00 +0100\" {2}\r\nhi"), Cmd::Append { messages, .. } if messages[0].date == Some(1704445200))
        );
        assert!(
            matches!(cmd("a APPEND Sent {2+}\r\nhi (\\Seen) {3+}\r\nbye"), Cmd::Append { messages, .. } if messages.len() == 2 && messages[1].data == AppendData::Literal(b"bye".to_vec()))
        );
        assert!(matches!(
            cmd("a APPEND Drafts CATENATE (URL \"/INBOX/;uid=2/;section=HEADER\" TEXT {4+}\r\nbody) (\\Seen) {2+}\r\nhi"),
            Cmd::Append { messages, .. } if messages.len() == 2
                && messages[0].data == AppendData::Catenate(vec![
                    CatPart::Url("/INBOX/;uid=2/;section=HEADER".into()),
                    CatPart::Text(b"body".to_vec()),
                ])
                && messages[1].flags == ["\\Seen"]
        ));
        assert!(parse(b"a APPEND Drafts CATENATE (TEXT \"x\")").is_err());
        assert!(parse(b"a APPEND Drafts CATENATE ()").is_err());
        assert_eq!(
            cmd("a GENURLAUTH \"imap://a@h/INBOX/;uid=1;urlauth=anonymous\" INTERNAL"),
            Cmd::GenUrlAuth(vec![(
                "imap://a@h/INBOX/;uid=1;urlauth=anonymous".into(),
                "INTERNAL".into()
            )])
        );
        assert_eq!(
            cmd("a RESETKEY"),
            Cmd::ResetKey {
                mailbox: None,
                mechanisms: vec![]
            }
        );
        assert!(
            matches!(cmd("a URLFETCH u1 (u2 BINARY BODYPARTSTRUCTURE)"), Cmd::UrlFetch(items)
            if items.len() == 2 && items[0].params.is_none()
                && items[1].params == Some(UrlFetchParams { body_part_structure: true, binary: true, body: false }))
        );
        assert!(parse(b"a URLFETCH (u BINARY BODY)").is_err());
        assert!(parse(b"a URLFETCH").is_err());
        assert!(matches!(
            cmd("a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541) CONDSTORE)"),
            Cmd::Select { qresync: Some(q), condstore: true, .. }
                if q.uidvalidity == 67890007 && q.modseq == 20050715194045000 && q.known.is_some()
        ));
        assert!(matches!(
            cmd("a EXAMINE INBOX (QRESYNC (1 2 (1:5 1:5)))"),
            Cmd::Select { qresync: Some(q), .. } if q.known.is_none()
        ));
        assert!(matches!(
            cmd("a FETCH 1:* FLAGS (CHANGEDSINCE 5 VANISHED)"),
            Cmd::Fetch {
                vanished: true,
                changed_since: Some(5),
                ..
            }
        ));
        assert!(parse(b"a FETCH 1:* FLAGS (VANISHED)").is_err());
        assert!(parse(b"a SELECT INBOX (QRESYNC (0 1))").is_err());
        assert_eq!(cmd("a NOTIFY NONE"), Cmd::Notify(None));
        let Cmd::Notify(Some(spec)) = cmd(
            "a NOTIFY SET STATUS (selected (MessageNew (UID FLAGS) MessageExpunge)) (subtree (Lists \"Old Stuff\") (MessageNew MessageExpunge FlagChange)) (personal (MailboxName SubscriptionChange AnnotationChange)) (inboxes NONE)",
        ) else {
            panic!()
        };
        assert!(spec.status);
        assert_eq!(spec.groups.len(), 4);
        assert_eq!(
            spec.groups[0].events,
            vec![
                NotifyEvent::MessageNew(vec![FetchAtt::Uid, FetchAtt::Flags]),
                NotifyEvent::MessageExpunge
            ]
        );
        assert_eq!(
            spec.groups[1].filter,
            NotifyFilter::Subtree(vec!["Lists".into(), "Old Stuff".into()])
        );
        assert_eq!(spec.groups[2].events[2], NotifyEvent::Other("ANNOTATIONCHANGE".into()));
        assert!(spec.groups[3].events.is_empty());
        for bad in [
            "NOTIFY",
            "NOTIFY SET",
            "NOTIFY SET (bogus (MessageNew))",
            "NOTIFY SET (selected)",
            "NOTIFY FOO",
        ] {
            assert!(parse(format!("a {bad}").as_bytes()).is_err(), "{bad}");
        }
        assert!(matches!(
            cmd("a STORE 1:3 +FLAGS.SILENT (\\Deleted $Junk)"),
            Cmd::Store { op: FlagOp::Add, silent: true, flags, .. } if flags.len() == 2
        ));
        assert!(matches!(
            cmd("a STORE 1 (UNCHANGEDSINCE 12) FLAGS \\Seen"),
            Cmd::Store {
                unchanged_since: Some(12),
                ..
            }
        ));
        assert!(
            matches!(cmd("a LIST (SUBSCRIBED) \"\" (INBOX \"%\") RETURN (CHILDREN STATUS (MESSAGES))"), Cmd::List { options, patterns, .. } if options.subscribed && options.ret_children && patterns.len() == 2 && options.ret_status.is_some())
        );
        assert!(matches!(cmd("a list \"\" *"), Cmd::List { options, .. } if !options.extended));
    }

    #[test]
    fn search_programs() {
        let Cmd::Search { key, .. } = cmd("a SEARCH CHARSET UTF-8 OR FROM bob (SINCE 1-Feb-2024 LARGER 10) NOT 2:4")
        else {
            panic!()
        };
        let SearchKey::And(keys) = key else { panic!() };
        assert_eq!(keys.len(), 2);
        assert!(matches!(&keys[0], SearchKey::Or(a, _) if **a == SearchKey::Header("from".into(), "bob".into())));
        assert!(
            matches!(cmd("a SEARCH RETURN (SAVE) ALL"), Cmd::Search { ret: Some(r), .. } if r.save && !r.answers())
        );
        assert!(matches!(cmd("a SEARCH RETURN () ALL"), Cmd::Search { ret: Some(r), .. } if r.all));
        assert!(
            matches!(cmd("a SEARCH RETURN (PARTIAL 4:2 UPDATE) ALL"), Cmd::Search { ret: Some(r), .. } if r.partial == Some((2, 4)) && r.update)
        );
        assert!(
            matches!(cmd("a SEARCH RETURN (PARTIAL -1:-10) ALL"), Cmd::Search { ret: Some(r), .. } if r.partial == Some((-10, -1)))
        );
        for bad in [
            "PARTIAL 1",
            "PARTIAL 1:*",
            "PARTIAL *:1",
            "PARTIAL 0:3",
            "PARTIAL -1:2",
            "FOO",
        ] {
            assert!(
                parse(format!("a SEARCH RETURN ({bad}) ALL").as_bytes()).is_err(),
                "{bad}"
            );
        }
        assert!(
            matches!(cmd("a SORT (ARRIVAL) US-ASCII RETURN (PARTIAL 1:1) ALL"), Cmd::Sort { ret: Some(r), .. } if r.partial == Some((1, 1)))
        );
        assert_eq!(
            cmd("a CANCELUPDATE \"t1\" t2"),
            Cmd::CancelUpdate(vec!["t1".into(), "t2".into()])
        );
        assert!(matches!(
            cmd("a SEARCH $"),
            Cmd::Search {
                key: SearchKey::Seq(SeqSet::Saved),
                ..
            }
        ));
        assert!(
            parse(b"a SEARCH CHARSET KOI8-R ALL")
                .unwrap_err()
                .contains("BADCHARSET")
        );
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "a",
            "a FROB",
            "a FETCH",
            "a FETCH 0 FLAGS",
            "a FETCH 1 (FLAGS",
            "a LOGIN \"unterminated",
            "a APPEND INBOX {10}\r\nshort",
            "a UID NOOP",
            "a SELECT INBOX extra",
            "a SEARCH NOT",
            "a STORE 1 FLAGZ x",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?} parsed");
        }
        assert_eq!(tag_of(b"A001 FROB"), Some("A001".into()));
        assert_eq!(tag_of(b"+ x"), None);
    }

    #[test]
    fn dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(parse_date("1-Feb-2024"), Some(days_from_civil(2024, 2, 1)));
        assert_eq!(parse_date("31-Foo-2024"), None);
    }
}

/// parse ∘ write = id for commands as a real client writes them: imap-proto's command
/// builders (quoted strings with their escapes, sequence sets, FETCH items and modifiers)
/// read back by our parser as the values they were built from.
#[cfg(test)]
mod a_client_command_reads_as_built {
    use super::*;
    use imap_proto::builders::command::{Attribute, Command as Built, CommandBuilder};
    use proptest::prelude::*;

    fn parsed(c: Built) -> Command {
        let mut line = b"t1 ".to_vec();
        line.extend_from_slice(&c.args);
        line.extend_from_slice(b"\r\n");
        parse(&line).unwrap_or_else(|e| panic!("{:?}: {e:?}", String::from_utf8_lossy(&line)))
    }

    // Strings: printable ASCII with IMAP's specials, and UTF-8 (IMAP4rev2 quoted strings).

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn selects(name in "[ -~\u{e9}\u{4e2d}]{1,20}", examine in any::<bool>(), condstore in any::<bool>()) {
            let b = if examine { CommandBuilder::examine(&name) } else { CommandBuilder::select(&name) };
            let c: Built = if condstore { b.cond_store().into() } else { b.into() };
            let Cmd::Select { mailbox, read_only, condstore: cs, qresync } = parsed(c).cmd else { panic!("not SELECT") };
            prop_assert_eq!((mailbox, read_only, cs, qresync), (name, examine, condstore, None));
        }

        #[test]
        fn logins(user in "[ -~\u{e9}\u{4e2d}]{1,20}", password in "[ -~\u{e9}\u{4e2d}]{0,20}") {
            let Cmd::Login { user: u, password: p } = parsed(CommandBuilder::login(&user, &password)).cmd else {
                panic!("not LOGIN")
            };
            prop_assert_eq!((u, p), (user, password));
        }

        #[test]
        fn lists(reference in "[ -~\u{e9}\u{4e2d}]{0,10}", pattern in "[ -~\u{e9}\u{4e2d}]{0,10}") {
            let Cmd::List { reference: r, patterns, .. } = parsed(CommandBuilder::list(&reference, &pattern)).cmd else {
                panic!("not LIST")
            };
            prop_assert_eq!((r, patterns), (reference, vec![pattern]));
        }

        #[test]
        fn fetches(
            parts in proptest::collection::vec((1u32..100_000, 0u32..50, 0u8..3), 1..5),
            atts in proptest::sample::subsequence(vec![0usize, 1, 2, 3, 4, 5, 6, 7, 8], 1..=9),
            changed_since in proptest::option::of(1u64..1 << 62),
            uid in any::<bool>(),
        ) {
            let b = if uid { CommandBuilder::uid_fetch() } else { CommandBuilder::fetch() };
            let mut want = Vec::new();
            let (first, rest) = parts.split_first().unwrap();
            let add = |(lo, len, kind): (u32, u32, u8)| -> (u64, u64) {
                let (lo, hi) = (u64::from(lo), u64::from(lo + len));
                match kind {
                    0 => (lo, lo),
                    1 => (lo, hi),
                    _ => (lo, STAR),
                }
            };
            let mut messages = {
                let r = add(*first);
                want.push(r);
                match r {
                    (lo, hi) if hi == STAR => b.range_from(lo as u32..),
                    (lo, hi) if lo == hi => b.num(lo as u32),
                    (lo, hi) => b.range(lo as u32..=hi as u32),
                }
            };
            for p in rest {
                let r = add(*p);
                want.push(r);
                messages = match r {
                    (lo, hi) if hi == STAR => messages.range_from(lo as u32..),
                    (lo, hi) if lo == hi => messages.num(lo as u32),
                    (lo, hi) => messages.range(lo as u32..=hi as u32),
                };
            }
            let att = |i: usize| match i {
                0 => (Attribute::Body, FetchAtt::Body),
                1 => (Attribute::Envelope, FetchAtt::Envelope),
                2 => (Attribute::Flags, FetchAtt::Flags),
                3 => (Attribute::InternalDate, FetchAtt::InternalDate),
                4 => (Attribute::ModSeq, FetchAtt::ModSeq),
                5 => (Attribute::Rfc822, FetchAtt::Rfc822),
                6 => (Attribute::Rfc822Size, FetchAtt::Rfc822Size),
                7 => (Attribute::Rfc822Text, FetchAtt::Rfc822Text),
                _ => (Attribute::Uid, FetchAtt::Uid),
            };
            let (first_att, more) = atts.split_first().unwrap();
            let mut with = messages.attr(att(*first_att).0);
            for &a in more {
                with = with.attr(att(a).0);
            }
            let built: Built = match changed_since {
                Some(m) => with.changed_since(m).into(),
                None => with.into(),
            };
            let c = parsed(built);
            prop_assert_eq!(c.uid, uid);
            let Cmd::Fetch { set, atts: got, changed_since: cs, .. } = c.cmd else { panic!("not FETCH") };
            prop_assert_eq!(set, SeqSet::Ranges(want));
            let expected: Vec<FetchAtt> = atts.iter().map(|&a| att(a).1).collect();
            prop_assert_eq!(got.len(), expected.len(), "{:?} vs {:?}", got, expected);
            for e in &expected {
                prop_assert!(got.contains(e), "{:?} missing from {:?}", e, got);
            }
            prop_assert_eq!(cs, changed_since);
        }
    }
}
