//! `mailgate send`, and the binary invoked as `sendmail`: the sendmail command line that
//! cron, web applications and `git send-email` use.
//!
//! `send [-t] [-f SENDER] [-F NAME] [-i | -oi] [-C CONFIG] [RECIPIENT...] < message`
//!
//! The message is read from standard input (without `-i`, a line holding a single `.` ends
//! it), given CRLF line endings and a `From:` when it has none, its `Bcc:` fields removed,
//! and handed to the running server over `submit.sock` ([`crate::admin::submit`]). The
//! server adds `Date:` and `Message-ID:` when missing and routes, filters and queues it as
//! SMTP mail. Exit codes are sendmail's (sysexits.h).

use crate::config::Config;
use std::ffi::CStr;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

pub const EX_USAGE: u8 = 64;
pub const EX_DATAERR: u8 = 65;
pub const EX_NOUSER: u8 = 67;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_IOERR: u8 = 74;
pub const EX_TEMPFAIL: u8 = 75;
pub const EX_CONFIG: u8 = 78;

/// Where `sendmail` looks for its config when neither `-C` nor `MAILGATE_CONFIG` names one.
pub const SYSTEM_CONFIG: &str = "/etc/mailgate/mailgate.toml";

/// The parsed command line.
#[derive(Debug, Default, PartialEq)]
pub struct Options {
    /// `-t`: recipients from To, Cc and Bcc too.
    pub from_headers: bool,
    /// `-f` / `-r`.
    pub sender: Option<String>,
    /// `-F`: the full name for a `From:` we add.
    pub full_name: Option<String>,
    /// `-i` / `-oi`: a lone `.` does not end the message.
    pub ignore_dots: bool,
    /// `-C`: the config file.
    pub config: Option<PathBuf>,
    pub recipients: Vec<String>,
}

/// Parses sendmail's options. Those that only tune classic sendmail's delivery (`-oem`,
/// `-odi`, `-B8BITMIME`, `-v`...) are accepted and ignored, as Postfix's sendmail does;
/// modes we do not have (`-bs`, `-bp`, `-q`...) are usage errors.
pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    // An option's value: the rest of the word (`-fme@x`) or the next word (`-f me@x`).
    fn value<'a>(rest: &'a str, it: &mut std::slice::Iter<'a, String>, opt: &str) -> Result<String, String> {
        if !rest.is_empty() {
            return Ok(rest.to_string());
        }
        it.next().cloned().ok_or_else(|| format!("option -{opt} needs a value"))
    }
    while let Some(arg) = it.next() {
        if arg == "--" {
            o.recipients.extend(it.by_ref().cloned());
            break;
        }
        let Some(opt) = arg.strip_prefix('-').filter(|s| !s.is_empty()) else {
            o.recipients.push(arg.clone());
            continue;
        };
        let (flag, rest) = opt.split_at(opt.chars().next().map_or(0, char::len_utf8));
        match flag {
            "t" if rest.is_empty() => o.from_headers = true,
            "i" if rest.is_empty() => o.ignore_dots = true,
            "f" | "r" => o.sender = Some(value(rest, &mut it, flag)?),
            "F" => o.full_name = Some(value(rest, &mut it, flag)?),
            "C" => o.config = Some(PathBuf::from(value(rest, &mut it, flag)?)),
            "o" => match rest {
                "i" => o.ignore_dots = true,
                "" => return Err("option -o needs a value".into()),
                // -oem, -odi, -oQ..., -oXx: classic sendmail's tuning; nothing to do here.
                _ => {}
            },
            "b" => match rest {
                "m" => {}
                _ => return Err(format!("-b{rest}: only -bm (deliver mail) is supported")),
            },
            // Body type, DSN, return, envelope id, verbose, initial user submission, error mode.
            "B" | "N" | "R" | "V" | "L" => {
                value(rest, &mut it, flag)?;
            }
            "v" | "U" | "m" | "n" | "G" | "x" => {}
            "e" if !rest.is_empty() => {}
            "h" => {
                value(rest, &mut it, flag)?;
            }
            _ => return Err(format!("unsupported option -{opt}")),
        }
    }
    // sendmail takes "a@x, b@x" as two recipients.
    o.recipients = o
        .recipients
        .iter()
        .flat_map(|r| r.split(','))
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect();
    Ok(o)
}

/// The message from `input`: up to a lone `.` line unless `ignore_dots`, with CRLF endings.
pub fn read_message(input: &[u8], ignore_dots: bool) -> Vec<u8> {
    let mut end = input.len();
    if !ignore_dots {
        let mut pos = 0;
        while pos < input.len() {
            let next = memchr::memchr(b'\n', &input[pos..]).map_or(input.len(), |i| pos + i + 1);
            let line = &input[pos..next];
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            if line == b"." || line == b".\r" {
                end = pos;
                break;
            }
            pos = next;
        }
    }
    let mut body = crate::mail::wire::crlf(input[..end].to_vec());
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        body.extend_from_slice(b"\r\n");
    }
    body
}

/// The addresses in every `To:`, `Cc:` and `Bcc:` field (groups, display names and folded
/// lines included), in order, each once.
pub fn header_recipients(raw: &[u8]) -> Vec<String> {
    use mail_parser::{Address, HeaderName, HeaderValue};
    let Some(parsed) = mail_parser::MessageParser::default().parse_headers(raw) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    let mut add = |a: Option<&str>| {
        if let Some(a) = a.map(str::trim).filter(|a| !a.is_empty())
            && !out.iter().any(|o| o.eq_ignore_ascii_case(a))
        {
            out.push(a.to_string());
        }
    };
    for h in parsed.headers() {
        if !matches!(h.name, HeaderName::To | HeaderName::Cc | HeaderName::Bcc) {
            continue;
        }
        match &h.value {
            HeaderValue::Address(Address::List(list)) => list.iter().for_each(|a| add(a.address())),
            HeaderValue::Address(Address::Group(groups)) => groups
                .iter()
                .flat_map(|g| g.addresses.iter())
                .for_each(|a| add(a.address())),
            _ => {}
        }
    }
    out
}

/// The invoking Unix user: login name and full name (the GECOS field's first part).
fn unix_user() -> (String, Option<String>) {
    // SAFETY: getpwuid_r writes into our buffers only; the pointers it returns point into
    // `pw`/`buf`, read before they go out of scope.
    unsafe {
        let uid = libc::getuid();
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc != 0 || result.is_null() || pw.pw_name.is_null() {
            return (format!("uid{uid}"), None);
        }
        let name = CStr::from_ptr(pw.pw_name).to_string_lossy().into_owned();
        let gecos = (!pw.pw_gecos.is_null())
            .then(|| CStr::from_ptr(pw.pw_gecos).to_string_lossy().into_owned())
            .and_then(|g| g.split(',').next().map(str::trim).map(str::to_string))
            .filter(|g| !g.is_empty());
        (name, gecos)
    }
}

/// A display name as RFC 5322 wants it: an atom run as it is, anything else quoted.
fn display_name(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c));
    if plain {
        name.to_string()
    } else {
        let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{}\"", escaped.replace(['\r', '\n'], " "))
    }
}

/// The message as it is handed over: `Bcc:` removed, `From:` added when missing.
pub fn prepare(raw: &[u8], sender: &str, full_name: Option<&str>) -> Vec<u8> {
    let mut add = Vec::new();
    if !crate::mail::headers::has_field(raw, "From") {
        let from_addr = if sender.is_empty() { "MAILER-DAEMON" } else { sender };
        add.push(crate::mail::Header {
            name: "From".into(),
            value: match full_name {
                Some(n) if !n.trim().is_empty() => format!("{} <{from_addr}>", display_name(n.trim())),
                _ => from_addr.to_string(),
            },
        });
    }
    // A message with no header section at all gets the blank line that ends one.
    let raw: std::borrow::Cow<[u8]> = if looks_like_headers(raw) {
        raw.into()
    } else {
        [b"\r\n".as_slice(), raw].concat().into()
    };
    crate::mail::edit_headers(&raw, &add, &["Bcc".into()])
}

/// Whether `raw` starts with a header field (else it is all body).
fn looks_like_headers(raw: &[u8]) -> bool {
    let first = raw.split(|&b| b == b'\n').next().unwrap_or_default();
    match first.iter().position(|&b| b == b':') {
        Some(i) => i > 0 && first[..i].iter().all(|&b| b.is_ascii_graphic() && b != b':'),
        None => raw.starts_with(b"\r\n"),
    }
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("sendmail: {msg}");
    ExitCode::from(code)
}

/// Runs the command: `args` without the program name; `config` from `--config` or the
/// environment, overridden by `-C`.
pub fn run(args: &[String], config: Option<PathBuf>) -> ExitCode {
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => return fail(EX_USAGE, &e),
    };
    let path = opts.config.clone().or(config).or_else(|| {
        let system = PathBuf::from(SYSTEM_CONFIG);
        system.exists().then_some(system)
    });
    let config = match Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(EX_CONFIG, &format!("config error: {e}")),
    };
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut input) {
        return fail(EX_IOERR, &format!("reading the message: {e}"));
    }
    let raw = read_message(&input, opts.ignore_dots);
    if raw.len() > config.smtp.max_message_size {
        return fail(
            EX_DATAERR,
            &format!(
                "message too large: {} bytes (smtp.max_message_size is {})",
                raw.len(),
                config.smtp.max_message_size
            ),
        );
    }
    let (user, gecos) = unix_user();
    let sender = opts
        .sender
        .clone()
        .map(|s| s.trim().trim_start_matches('<').trim_end_matches('>').to_string())
        .unwrap_or_else(|| format!("{user}@{}", config.server.hostname));
    let mut recipients = Vec::new();
    if opts.from_headers {
        recipients = header_recipients(&raw);
    }
    for r in &opts.recipients {
        if !recipients.iter().any(|o: &String| o.eq_ignore_ascii_case(r)) {
            recipients.push(r.clone());
        }
    }
    if recipients.is_empty() {
        let why = if opts.from_headers {
            "no recipient addresses found in the message's To, Cc or Bcc"
        } else {
            "no recipients given (name them, or use -t)"
        };
        return fail(EX_USAGE, why);
    }
    let full_name = opts.full_name.as_deref().or(gecos.as_deref());
    let body = prepare(&raw, &sender, full_name);
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(EX_TEMPFAIL, &format!("cannot start runtime: {e}")),
    };
    use crate::admin::submit::Status;
    match rt.block_on(crate::admin::submit::send(&config, &sender, &recipients, &body)) {
        Ok(_) => ExitCode::SUCCESS,
        Err((status, e)) => fail(
            match status {
                Status::NoUser => EX_NOUSER,
                Status::DataErr => EX_DATAERR,
                Status::TempFail => EX_TEMPFAIL,
                Status::Unavailable => EX_UNAVAILABLE,
            },
            &e,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn sendmail_options() {
        let o = parse(&args("-t -i -fme@x.test -F Joe a@x.test,b@x.test c@x.test")).unwrap();
        assert!(o.from_headers && o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("me@x.test"));
        assert_eq!(o.full_name.as_deref(), Some("Joe"));
        assert_eq!(o.recipients, ["a@x.test", "b@x.test", "c@x.test"]);
        // cron's: sendmail -FCronDaemon -i -B8BITMIME -oem root
        let o = parse(&args("-FCronDaemon -i -B8BITMIME -oem root")).unwrap();
        assert_eq!(o.full_name.as_deref(), Some("CronDaemon"));
        assert_eq!(o.recipients, ["root"]);
        let o = parse(&args("-oi -r bounce@x.test -C /etc/m.toml -- -odd@x.test")).unwrap();
        assert!(o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("bounce@x.test"));
        assert_eq!(o.config, Some(PathBuf::from("/etc/m.toml")));
        assert_eq!(o.recipients, ["-odd@x.test"]);
        assert!(parse(&args("-bs")).is_err());
        assert!(parse(&args("-q")).is_err());
        assert!(parse(&args("-f")).is_err());
    }

    #[test]
    fn a_lone_dot_ends_the_message_unless_ignored() {
        let input = b"Subject: s\n\nline\n..two\n.\nafter\n";
        assert_eq!(read_message(input, false), b"Subject: s\r\n\r\nline\r\n..two\r\n");
        assert_eq!(
            read_message(input, true),
            b"Subject: s\r\n\r\nline\r\n..two\r\n.\r\nafter\r\n"
        );
        assert_eq!(read_message(b"no newline", true), b"no newline\r\n");
    }

    #[test]
    fn recipients_from_headers() {
        let raw = b"To: Alice <alice@localhost>, \"Bob, B.\" <bob@localhost>\r\n\
Cc: friends: carol@localhost,\r\n dave@localhost;, alice@localhost\r\n\
Bcc: eve@localhost\r\nBcc: Frank <frank@localhost>\r\nSubject: Cc: not@me\r\n\r\nTo: body@x\r\n";
        assert_eq!(
            header_recipients(raw),
            [
                "alice@localhost",
                "bob@localhost",
                "carol@localhost",
                "dave@localhost",
                "eve@localhost",
                "frank@localhost"
            ]
        );
        let out = String::from_utf8(prepare(raw, "me@x.test", Some("Me, Myself"))).unwrap();
        assert!(!out.contains("Bcc"), "{out}");
        assert!(
            out.starts_with("From: \"Me, Myself\" <me@x.test>\r\nTo: Alice"),
            "{out}"
        );
        let headless = String::from_utf8(prepare(b"just a body\r\n", "me@x.test", None)).unwrap();
        assert_eq!(headless, "From: me@x.test\r\n\r\njust a body\r\n");
    }
}
