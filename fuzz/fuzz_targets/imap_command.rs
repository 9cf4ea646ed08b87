//! One complete IMAP command (with its literals), as the session hands it to the parser;
//! once through, the mailbox names it carries go back out through the response writer (as
//! LIST and STATUS answer them) and must read back the same through a client's parser
//! (imap-proto, the one async-imap uses).
#![no_main]
use imap_proto::{MailboxDatum, Response};
use libfuzzer_sys::fuzz_target;
use mailgate::imap::command::Cmd;
use mailgate::imap::{fetch, mutf7};

/// A quoted string as a client reads it: imap-proto leaves the escapes in place.
fn read(line: &[u8], v: &[u8]) -> Vec<u8> {
    let at = (v.as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
    if !(1..=line.len()).contains(&at) || line[at - 1] != b'"' {
        return v.to_vec();
    }
    let (mut out, mut escaped) = (Vec::new(), false);
    for &b in v {
        if b == b'\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(b);
    }
    out
}

/// Writes `name` (as the session holds it, decoded) in a LIST response and reads it back.
fn round_trip(name: &str, utf8: bool) {
    if name.is_empty() || name.eq_ignore_ascii_case("inbox") || name.chars().any(char::is_control) {
        return; // no LIST answers these as they are
    }
    let mut line = b"* LIST () \"/\" ".to_vec();
    fetch::write_mailbox(&mut line, name, utf8);
    line.extend_from_slice(b"\r\n");
    let Ok((rest, Response::MailboxData(MailboxDatum::List(list)))) = Response::parse(&line) else {
        panic!("a client cannot read {:?}", String::from_utf8_lossy(&line));
    };
    assert!(rest.is_empty());
    let wire = String::from_utf8(read(&line, list.name.as_bytes())).expect("UTF-8");
    let back = if utf8 { Some(wire) } else { mutf7::decode(&wire) };
    assert_eq!(back.as_deref(), Some(name), "{:?}", String::from_utf8_lossy(&line));
}

fuzz_target!(|buf: &[u8]| {
    let Ok(c) = mailgate::imap::parser::parse(buf) else { return };
    let names: Vec<&str> = match &c.cmd {
        Cmd::Select { mailbox, .. }
        | Cmd::Create(mailbox)
        | Cmd::Delete(mailbox)
        | Cmd::Subscribe(mailbox)
        | Cmd::Unsubscribe(mailbox)
        | Cmd::Status { mailbox, .. }
        | Cmd::Append { mailbox, .. }
        | Cmd::Copy { mailbox, .. }
        | Cmd::Move { mailbox, .. } => vec![mailbox],
        Cmd::Rename(from, to) => vec![from, to],
        _ => return,
    };
    for n in names {
        // As the session does: modified UTF-7 decoded, or taken as UTF-8 once enabled.
        if let Some(decoded) = mutf7::decode(n) {
            round_trip(&decoded, false);
        }
        round_trip(n, true);
    }
});
