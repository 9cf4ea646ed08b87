//! Mail addresses as the store and router see them.
//!
//! Addresses are compared case-insensitively: the domain always (RFC 5321 §2.4), the local part
//! too, as every mainstream server does for its own users. SMTPUTF8 local parts are kept in
//! UTF-8 and lower-cased with Unicode rules.

use std::fmt;

/// A syntactically checked `local@domain`, normalised to lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub local: String,
    pub domain: String,
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressError {
    Empty,
    NoDomain,
    BadDomain,
    BadLocalPart,
    TooLong,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressError::Empty => "empty address",
            AddressError::NoDomain => "address has no domain",
            AddressError::BadDomain => "invalid domain",
            AddressError::BadLocalPart => "invalid local part",
            AddressError::TooLong => "address too long",
        })
    }
}

impl std::error::Error for AddressError {}

impl Address {
    /// Parses `local@domain` (no angle brackets).
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        // RFC 5321 §4.5.3.1.3: a path is at most 256 octets.
        if s.len() > 254 {
            return Err(AddressError::TooLong);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(AddressError::NoDomain)?;
        // No limit of its own on the local part: RFC 5321 §4.5.3.1 names 64 octets as what
        // every server must take, and asks for no limit where possible; mailing lists'
        // bounce addresses (VERP, SRS) pass it often, and Postfix and Exim take them. The
        // whole path's limit above still holds.
        if local.is_empty() || local.chars().any(|c| c.is_control() || c == ' ') {
            return Err(AddressError::BadLocalPart);
        }
        let domain = domain.to_lowercase();
        if !is_valid_domain(&domain) {
            return Err(AddressError::BadDomain);
        }
        Ok(Address {
            local: local.to_lowercase(),
            domain,
        })
    }

    /// True when the local part carries routing syntax that other MTAs act on: `%` hacks,
    /// `!` bang paths, or a quoted `@`. We never honour these, so such a recipient in a local
    /// domain is a relay attempt, not a user.
    pub fn has_routing_syntax(&self) -> bool {
        self.local.contains(['%', '!', '@', '"'])
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// A DNS-style domain (or a UTF-8 one for SMTPUTF8): dot-separated labels of letters, digits
/// and hyphens, no empty label, at most 253 octets.
pub fn is_valid_domain(d: &str) -> bool {
    if d.is_empty() || d.len() > 253 {
        return false;
    }
    d.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    })
}

/// An address as an SMTP path writes it (RFC 5321 §4.1.2): the local part as it is when it
/// is a dot-string, else quoted. Addresses reach the queue decoded (`"a b"@x` arrives as
/// `a b@x`), so this is where the quotes come back.
pub fn smtp_path(address: &str) -> std::borrow::Cow<'_, str> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return address.into();
    };
    let atext = |c: char| c.is_ascii_alphanumeric() || !c.is_ascii() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    if !local.is_empty() && local.split('.').all(|atom| !atom.is_empty() && atom.chars().all(atext)) {
        return address.into();
    }
    let mut quoted = String::with_capacity(address.len() + 4);
    quoted.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push_str("\"@");
    quoted.push_str(domain);
    quoted.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let a = Address::parse("Alice@LocalHost").unwrap();
        assert_eq!(a.to_string(), "alice@localhost");
        assert_eq!(Address::parse("no-domain"), Err(AddressError::NoDomain));
        assert_eq!(Address::parse("a@bad..domain"), Err(AddressError::BadDomain));
        assert_eq!(Address::parse("@x.test"), Err(AddressError::BadLocalPart));
        assert!(Address::parse("ünïcode@bücher.test").is_ok());
        // A list's VERP bounce address, longer than 64 octets before the @.
        let verp = "focus-virus-return-1680-legit-lists-subscriber=mail1.example.test@lists.example.org";
        assert_eq!(Address::parse(verp).unwrap().local.len(), 65);
        let long = format!("{}@lists.example.org", "v".repeat(120));
        assert_eq!(Address::parse(&long).unwrap().local.len(), 120);
        let too_long = format!("{}@lists.example.org", "v".repeat(240));
        assert_eq!(Address::parse(&too_long), Err(AddressError::TooLong));
    }

    #[test]
    fn routing_syntax_is_detected() {
        assert!(Address::parse("bob%evil.test@localhost").unwrap().has_routing_syntax());
        assert!(Address::parse("evil.test!bob@localhost").unwrap().has_routing_syntax());
        assert!(
            Address::parse("\"bob@evil.test\"@localhost")
                .unwrap()
                .has_routing_syntax()
        );
        assert!(!Address::parse("bob.smith+tag@localhost").unwrap().has_routing_syntax());
    }
}
