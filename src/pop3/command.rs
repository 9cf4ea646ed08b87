//! POP3 commands as data (RFC 1939 §3: a keyword, case-insensitive, and arguments separated
//! by single spaces; RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH). The session checks the
//! state and the message numbers against its maildrop; this checks the syntax. A pure
//! function of the line, so it can be fuzzed on its own.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capa,
    Quit,
    /// The name, trimmed.
    User(String),
    /// Everything after `PASS `, as sent: a password may hold spaces (RFC 1939 §7).
    Pass(String),
    /// `AUTH` alone lists the mechanisms.
    Auth {
        mechanism: Option<String>,
        initial: Option<String>,
    },
    Stls,
    Apop,
    Stat,
    /// One message, or all.
    List(Option<usize>),
    Uidl(Option<usize>),
    Retr(usize),
    Top(usize, usize),
    Dele(usize),
    Noop,
    Rset,
    Unknown(String),
}

/// Parses one command line (without its CRLF). `Err` is the reason for a syntax error.
pub fn parse(line: &str) -> Result<Command, String> {
    let (verb, args) = match line.split_once(' ') {
        Some((v, a)) => (v.to_ascii_uppercase(), a),
        None => (line.to_ascii_uppercase(), ""),
    };
    let number = |s: &str| -> Result<usize, String> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err("Syntax: a message number is needed".into());
        }
        s.parse().map_err(|_| format!("No such message {s}"))
    };
    let optional = |s: &str| -> Result<Option<usize>, String> {
        if s.trim().is_empty() {
            Ok(None)
        } else {
            number(s).map(Some)
        }
    };
    Ok(match verb.as_str() {
        "CAPA" => Command::Capa,
        "QUIT" => Command::Quit,
        "USER" => {
            let name = args.trim();
            if name.is_empty() {
                return Err("Syntax: USER name".into());
            }
            Command::User(name.to_string())
        }
        "PASS" => Command::Pass(args.to_string()),
        "AUTH" => {
            let mut parts = args.split_whitespace();
            Command::Auth {
                mechanism: parts.next().map(str::to_ascii_uppercase),
                initial: parts.next().map(str::to_string),
            }
        }
        "STLS" => Command::Stls,
        "APOP" => Command::Apop,
        "STAT" => Command::Stat,
        "LIST" => Command::List(optional(args)?),
        "UIDL" => Command::Uidl(optional(args)?),
        "RETR" => Command::Retr(number(args)?),
        "DELE" => Command::Dele(number(args)?),
        "TOP" => {
            let mut it = args.split_whitespace();
            let (Some(n), Some(lines), None) = (it.next(), it.next(), it.next()) else {
                return Err("Syntax: TOP msg lines".into());
            };
            let lines = lines
                .parse::<usize>()
                .map_err(|_| "Syntax: TOP msg lines (lines must be a number)".to_string())?;
            Command::Top(number(n)?, lines)
        }
        "NOOP" => Command::Noop,
        "RSET" => Command::Rset,
        _ => Command::Unknown(verb),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse("retr 3"), Ok(Command::Retr(3)));
        assert_eq!(parse("LIST"), Ok(Command::List(None)));
        assert_eq!(parse("uidl 12"), Ok(Command::Uidl(Some(12))));
        assert_eq!(parse("TOP 2 0"), Ok(Command::Top(2, 0)));
        assert_eq!(parse("PASS pass word "), Ok(Command::Pass("pass word ".into())));
        assert_eq!(parse("USER  bob "), Ok(Command::User("bob".into())));
        assert_eq!(
            parse("AUTH plain AGJvYgBwdw=="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: Some("AGJvYgBwdw==".into())
            })
        );
        assert_eq!(parse("XYZZY 1"), Ok(Command::Unknown("XYZZY".into())));
        for bad in [
            "RETR",
            "RETR x",
            "RETR -1",
            "DELE 1x",
            "TOP 1",
            "TOP 1 x",
            "TOP 1 2 3",
            "LIST a",
            "USER ",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        // Past usize: no such message, not a panic.
        assert!(parse("RETR 99999999999999999999999").is_err());
    }
}
