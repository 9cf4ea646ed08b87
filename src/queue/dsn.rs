//! Delivery status notifications (RFC 3464): the `multipart/report` a sender gets for
//! recipients that failed, are delayed, or (when asked with `NOTIFY=SUCCESS`) were
//! delivered here or relayed to a server without DSN; from `MAILER-DAEMON`, with the null
//! sender.

use crate::store::now_secs;

/// One recipient to report.
pub struct Report<'a> {
    pub recipient: &'a str,
    pub orcpt: Option<&'a str>,
    /// The reply that decided it (ours or the remote server's).
    pub reply: &'a str,
    /// The host that gave the reply, when one did.
    pub remote_mta: Option<&'a str>,
}

/// What a notice reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Failed for good: a bounce.
    Failed,
    /// Still being retried: a delay warning.
    Delayed,
    /// Handed to a server that does not offer DSN: nobody further will report (RFC 3461
    /// §6.2.1 "relayed").
    Relayed,
    /// Delivered into the recipient's mailbox here.
    Delivered,
}

/// The enhanced status code at the start of a reply text (`550 5.1.1 ...` → `5.1.1`), or
/// the class's generic one.
pub fn status_of(reply: &str) -> String {
    let mut words = reply.split_whitespace();
    let code = words.next().unwrap_or("");
    let class = code.chars().next().filter(|c| matches!(c, '4' | '5')).unwrap_or('5');
    match words.next() {
        // The enhanced code names the status even when the reply's class differs (an
        // expired message fails with a persistent transient 4.4.7, RFC 3463).
        Some(e)
            if (e.starts_with('4') || e.starts_with('5'))
                && e.split('.').count() == 3
                && e.split('.')
                    .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            e.to_string()
        }
        _ => format!("{class}.0.0"),
    }
}

/// A notice about `failed` recipients of `original` (sent by `sender`, arrived at
/// `arrival`): a bounce, or a delay warning. `full`: return the whole message
/// (`RET=FULL`, bounces only), else its header.
#[allow(clippy::too_many_arguments)]
pub fn notice(
    action: Action,
    hostname: &str,
    sender: &str,
    original: &[u8],
    failed: &[Report<'_>],
    arrival: i64,
    env_id: Option<&str>,
    full: bool,
) -> Vec<u8> {
    let success = matches!(action, Action::Relayed | Action::Delivered);
    let date = |t: i64| mail_parser::DateTime::from_timestamp(t).to_rfc822();
    let boundary = format!(
        "{:016x}/{hostname}",
        now_secs() as u64 ^ original.len() as u64 ^ 0x9e37_79b9
    );
    let mut m = String::new();
    m.push_str(&format!("From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"));
    m.push_str(&format!("To: <{sender}>\r\n"));
    m.push_str(match action {
        Action::Delayed => "Subject: Delayed Mail (still being retried)\r\n",
        Action::Failed => "Subject: Undelivered Mail Returned to Sender\r\n",
        Action::Relayed | Action::Delivered => "Subject: Successful Mail Delivery Report\r\n",
    });
    m.push_str(&format!("Date: {}\r\n", date(now_secs())));
    m.push_str(&format!(
        "Message-ID: <{}.{}@{hostname}>\r\n",
        now_secs(),
        boundary.len() ^ failed.len()
    ));
    m.push_str("Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ));
    m.push_str(&format!("This is the mail system at host {hostname}.\r\n\r\n"));
    m.push_str(match action {
        Action::Delayed => "Your message could not be delivered yet to one or more recipients. It is still being\r\nretried; you need not send it again. Its header is attached below.\r\n\r\n",
        Action::Failed => "I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients. It's attached below.\r\n\r\n",
        Action::Delivered => "Your message was delivered to the mailbox of the recipients listed below, as you\r\nasked (NOTIFY=SUCCESS). Its header is attached below.\r\n\r\n",
        Action::Relayed => "Your message was passed on to the recipients' mail system as listed below. That\r\nsystem does not send delivery notifications, so you will hear no more of it\r\nunless it fails there. Its header is attached below.\r\n\r\n",
    });
    for f in failed {
        m.push_str(&format!("<{}>: {}\r\n", f.recipient, one_line(f.reply)));
    }
    m.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    m.push_str(&format!("Reporting-MTA: dns; {hostname}\r\n"));
    if let Some(id) = env_id {
        m.push_str(&format!("Original-Envelope-Id: {}\r\n", one_line(id)));
    }
    m.push_str(&format!("Arrival-Date: {}\r\n", date(arrival)));
    for f in failed {
        m.push_str(&format!("\r\nFinal-Recipient: rfc822; {}\r\n", f.recipient));
        if let Some(o) = f.orcpt {
            m.push_str(&format!("Original-Recipient: {}\r\n", one_line(o)));
        }
        m.push_str(match action {
            Action::Delayed => "Action: delayed\r\n",
            Action::Failed => "Action: failed\r\n",
            Action::Relayed => "Action: relayed\r\n",
            Action::Delivered => "Action: delivered\r\n",
        });
        let status = if success {
            "2.0.0".to_string()
        } else {
            status_of(f.reply)
        };
        m.push_str(&format!("Status: {status}\r\n"));
        if let Some(mta) = f.remote_mta {
            m.push_str(&format!("Remote-MTA: dns; {mta}\r\n"));
            m.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", one_line(f.reply)));
        } else {
            m.push_str(&format!("Diagnostic-Code: x-mailgate; {}\r\n", one_line(f.reply)));
        }
        m.push_str(&format!("Last-Attempt-Date: {}\r\n", date(now_secs())));
    }
    let header_end = memchr::memmem::find(original, b"\r\n\r\n").map_or(original.len(), |i| i + 4);
    let (kind, part) = if full && action == Action::Failed {
        ("message/rfc822", original)
    } else {
        ("text/rfc822-headers", &original[..header_end])
    };
    m.push_str(&format!("\r\n--{boundary}\r\nContent-Type: {kind}\r\n\r\n"));
    let mut out = m.into_bytes();
    out.extend_from_slice(part);
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// A value on one line (a reply may have come in several).
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounce_names_each_recipient_with_its_status_and_the_reply() {
        assert_eq!(status_of("550 5.1.1 <x@y>: user unknown"), "5.1.1");
        assert_eq!(status_of("452 4.2.2 mailbox full"), "4.2.2");
        assert_eq!(status_of("550 no such user"), "5.0.0");
        assert_eq!(status_of("554 4.4.7 expired"), "4.4.7");
        assert_eq!(status_of("554 2.1.1 not a failure"), "5.0.0");
        let original = b"From: a@example.org\r\nSubject: hi\r\n\r\nsecret body\r\n";
        let failed = [Report {
            recipient: "x@remote.example",
            orcpt: Some("rfc822;X@remote.example"),
            reply: "550 5.1.1 <x@remote.example>: User unknown",
            remote_mta: Some("mx.remote.example"),
        }];
        let b = notice(
            Action::Failed,
            "mx.test",
            "a@example.org",
            original,
            &failed,
            0,
            Some("env-1"),
            false,
        );
        let text = String::from_utf8(b.clone()).unwrap();
        assert!(text.contains("From: Mail Delivery System <MAILER-DAEMON@mx.test>\r\n"));
        assert!(text.contains("report-type=delivery-status"));
        for line in [
            "Reporting-MTA: dns; mx.test",
            "Original-Envelope-Id: env-1",
            "Final-Recipient: rfc822; x@remote.example",
            "Original-Recipient: rfc822;X@remote.example",
            "Action: failed",
            "Status: 5.1.1",
            "Remote-MTA: dns; mx.remote.example",
            "Diagnostic-Code: smtp; 550 5.1.1 <x@remote.example>: User unknown",
            "Content-Type: text/rfc822-headers",
            "Subject: hi",
        ] {
            assert!(text.contains(&format!("{line}\r\n")), "{line} in\n{text}");
        }
        assert!(!text.contains("secret body"), "RET=HDRS returns the header only");
        let parsed = mail_parser::MessageParser::default().parse(&b).unwrap();
        assert_eq!(parsed.parts.len(), 4, "report, text, status, headers");
        let full = notice(
            Action::Failed,
            "mx.test",
            "a@example.org",
            original,
            &failed,
            0,
            None,
            true,
        );
        let full = String::from_utf8(full).unwrap();
        assert!(full.contains("Content-Type: message/rfc822\r\n") && full.contains("secret body"));
        let warn = notice(
            Action::Delayed,
            "mx.test",
            "a@example.org",
            original,
            &failed,
            0,
            None,
            true,
        );
        let warn = String::from_utf8(warn).unwrap();
        assert!(
            warn.contains("Subject: Delayed Mail (still being retried)\r\n"),
            "{warn}"
        );
        assert!(
            warn.contains("Action: delayed\r\n") && !warn.contains("secret body"),
            "{warn}"
        );
    }
}
