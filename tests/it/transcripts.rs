//! Protocol sessions driven from transcript files, without sockets: each file in
//! `tests/transcripts/{smtp,submission,pop3,imap}/` runs against a fresh server's session over an
//! in-memory pipe (`net::conn::Conn::over`).
//!
//! Format, one line each: `C: text` is sent (with CRLF); `S: pattern` must be the next line
//! the server sends, where `*` matches any run of characters; `S: <closed>` says the server
//! has closed the connection; `B: bytes` sends bytes as written, with `\r` and `\n` for CR
//! and LF and no line ending added; `D: account subject` delivers a small message with that
//! subject into the account's INBOX before going on (what the session then finds);
//! `#` lines and blank lines are comments. TLS, timeouts and real clients stay with the
//! socket tests.

use crate::common::*;
use mailgate::config::{Listener, Protocol, TlsMode};
use mailgate::net::conn::Conn;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// `*` matches any run of characters (none included); everything else literally.
fn matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || line.len() < first.len() + last.len() || !line.ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

async fn run_transcript(protocol: &str, path: &Path) {
    let server = start_server(|_| {}).await;
    let shared = server.running.shared.clone();
    let (client, far) = tokio::io::duplex(256 * 1024);
    let peer = "127.0.0.1:40000".parse().unwrap();
    let conn = Conn::over(far);
    let session = match protocol {
        "smtp" | "submission" => {
            let listener = Listener {
                protocol: if protocol == "smtp" {
                    Protocol::Smtp
                } else {
                    Protocol::Submission
                },
                bind: peer,
                tls: TlsMode::None,
                auth: None,
            };
            tokio::spawn(mailgate::smtp::Session::new(shared, conn, peer, &listener).run(()))
        }
        "pop3" => tokio::spawn(mailgate::pop3::Session::new(shared, conn, peer, TlsMode::None).run(())),
        _ => tokio::spawn(mailgate::imap::Session::new(shared, conn, peer, TlsMode::None).run(())),
    };
    let (rd, mut wr) = tokio::io::split(client);
    let mut rd = BufReader::new(rd);
    let text = std::fs::read_to_string(path).unwrap();
    let mut seen = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("{}:{}", path.display(), n + 1);
        if let Some(c) = line.strip_prefix("C: ") {
            seen.push(format!("C: {c}"));
            if let Err(e) = wr.write_all(format!("{c}\r\n").as_bytes()).await {
                panic!("{at}: sending failed ({e}); so far:\n{}", seen.join("\n"));
            }
        } else if let Some(b) = line.strip_prefix("B: ") {
            seen.push(format!("B: {b}"));
            let bytes = b.replace("\\r", "\r").replace("\\n", "\n");
            if let Err(e) = wr.write_all(bytes.as_bytes()).await {
                panic!("{at}: sending failed ({e}); so far:\n{}", seen.join("\n"));
            }
        } else if let Some(d) = line.strip_prefix("D: ") {
            let (account, subject) = d.split_once(' ').unwrap_or((d, ""));
            let store = server.store();
            let inbox = store.mailbox(account, "INBOX").unwrap().expect("the account exists").id;
            let raw = format!("From: sender@example.org\r\nSubject: {subject}\r\n\r\nHello.\r\n.dot line\r\n");
            store.deliver(raw.as_bytes(), 1_700_000_000, &[inbox]).unwrap();
            store.sync().await.unwrap();
        } else if let Some(pattern) = line.strip_prefix("S: ") {
            let mut got = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), rd.read_line(&mut got))
                .await
                .unwrap_or_else(|_| panic!("{at}: no reply within 10 s; so far:\n{}", seen.join("\n")))
                .unwrap_or(0);
            let got = if n == 0 {
                "<closed>".to_string()
            } else {
                assert!(got.ends_with("\r\n"), "{at}: line not ended by CRLF: {got:?}");
                got.trim_end_matches("\r\n").to_string()
            };
            seen.push(format!("S: {got}"));
            assert!(
                matches(pattern, &got),
                "{at}: expected {pattern:?}, got {got:?}; so far:\n{}",
                seen.join("\n")
            );
        } else {
            assert!(
                line.is_empty() || line.starts_with('#'),
                "{at}: not a transcript line: {line:?}"
            );
        }
    }
    drop(wr);
    drop(rd);
    tokio::time::timeout(Duration::from_secs(10), session)
        .await
        .expect("the session ends when the client goes")
        .expect("the session does not panic");
    server.running.shutdown().await;
}

#[test]
fn wildcards() {
    assert!(matches("250 2.0.0 Ok: queued as *", "250 2.0.0 Ok: queued as 1A2B"));
    assert!(matches("* OK [UIDVALIDITY *] *", "* OK [UIDVALIDITY 17] UIDs valid"));
    assert!(matches("a*", "a"));
    assert!(!matches("a*b", "ab-c"));
    assert!(!matches("250 Ok", "250 Ok "));
}

#[tokio::test]
async fn every_transcript() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut ran = 0;
    for protocol in ["smtp", "submission", "pop3", "imap"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(protocol))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        for f in files {
            run_transcript(protocol, &f).await;
            ran += 1;
        }
    }
    assert!(ran >= 3, "transcripts found: {ran}");
}
