//! Per-message metadata and its compact binary form (hot path: one per delivery and per FETCH).

use super::{BlobId, FlagOp};

/// IMAP system flags as bits; keywords are kept as strings beside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u8);

impl Flags {
    pub const SEEN: u8 = 1;
    pub const ANSWERED: u8 = 2;
    pub const FLAGGED: u8 = 4;
    pub const DELETED: u8 = 8;
    pub const DRAFT: u8 = 16;

    const NAMES: [(u8, &'static str); 5] = [
        (Self::SEEN, "\\Seen"),
        (Self::ANSWERED, "\\Answered"),
        (Self::FLAGGED, "\\Flagged"),
        (Self::DELETED, "\\Deleted"),
        (Self::DRAFT, "\\Draft"),
    ];

    pub fn contains(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// IMAP names of the set flags, e.g. `["\\Seen"]`.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(b, _)| self.contains(*b))
            .map(|(_, n)| *n)
            .collect()
    }

    /// Bit of a system flag name (case-insensitive), if it is one.
    pub fn bit_of(name: &str) -> Option<u8> {
        Self::NAMES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(b, _)| *b)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    pub blob: BlobId,
    pub size: u64,
    /// Seconds since the Unix epoch (IMAP INTERNALDATE).
    pub internal_date: i64,
    pub modseq: u64,
    pub flags: Flags,
    pub keywords: Vec<String>,
}

const FIXED: usize = 32 + 8 + 8 + 8 + 1;

impl MessageMeta {
    /// New flags and keywords of a message after a STORE operation (keywords compared
    /// case-insensitively, kept in first-seen spelling).
    pub fn after(&self, op: FlagOp, flags: Flags, keywords: &[String]) -> (Flags, Vec<String>) {
        let m = self;
        let has = |list: &[String], k: &str| list.iter().any(|x| x.eq_ignore_ascii_case(k));
        match op {
            FlagOp::Add => {
                let mut kw = m.keywords.clone();
                for k in keywords {
                    if !has(&kw, k) {
                        kw.push(k.clone());
                    }
                }
                (Flags(m.flags.0 | flags.0), kw)
            }
            FlagOp::Remove => {
                let kw = m.keywords.iter().filter(|k| !has(keywords, k)).cloned().collect();
                (Flags(m.flags.0 & !flags.0), kw)
            }
            FlagOp::Replace => {
                let mut kw: Vec<String> = Vec::new();
                for k in keywords {
                    if !has(&kw, k) {
                        kw.push(k.clone());
                    }
                }
                (flags, kw)
            }
        }
    }

    /// `blob(32) size(8) date(8) modseq(8) flags(1) keywords(space-separated UTF-8)`.
    pub fn encode(&self) -> Vec<u8> {
        let kw = self.keywords.join(" ");
        let mut v = Vec::with_capacity(FIXED + kw.len());
        v.extend_from_slice(&self.blob);
        v.extend_from_slice(&self.size.to_be_bytes());
        v.extend_from_slice(&self.internal_date.to_be_bytes());
        v.extend_from_slice(&self.modseq.to_be_bytes());
        v.push(self.flags.0);
        v.extend_from_slice(kw.as_bytes());
        v
    }

    pub fn decode(v: &[u8]) -> Option<MessageMeta> {
        if v.len() < FIXED {
            return None;
        }
        let u = |r: std::ops::Range<usize>| -> [u8; 8] { v[r].try_into().unwrap_or_default() };
        let kw = std::str::from_utf8(&v[FIXED..]).ok()?;
        Some(MessageMeta {
            blob: v[..32].try_into().ok()?,
            size: u64::from_be_bytes(u(32..40)),
            internal_date: i64::from_be_bytes(u(40..48)),
            modseq: u64::from_be_bytes(u(48..56)),
            flags: Flags(v[56]),
            keywords: kw.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = MessageMeta {
            blob: [7; 32],
            size: 5000,
            internal_date: -5,
            modseq: 99,
            flags: Flags(Flags::SEEN | Flags::DRAFT),
            keywords: vec!["$Junk".into(), "work".into()],
        };
        assert_eq!(MessageMeta::decode(&m.encode()), Some(m));
        assert_eq!(MessageMeta::decode(&[1, 2, 3]), None);
        assert_eq!(Flags(Flags::SEEN | Flags::DRAFT).names(), vec!["\\Seen", "\\Draft"]);
        assert_eq!(Flags::bit_of("\\flagged"), Some(Flags::FLAGGED));
    }
}
