//! SMTP transcripts over real sockets: delivery, routing, pipelining, BDAT, smuggling.

use crate::common::*;

#[tokio::test]
async fn two_local_recipients_share_one_blob() {
    let s = start_server(|_| {}).await;
    let mut c = greeted(s.smtp).await;
    let r = send_mail(
        &mut c,
        "sender@example.org",
        &["alice@localhost", "bob@localhost"],
        &message("two", "hello"),
    )
    .await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    c.cmd("QUIT", "221").await;
    let (a, b) = (s.inbox("alice@localhost"), s.inbox("bob@localhost"));
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(a[0].meta.blob, b[0].meta.blob, "one stored copy");
    assert_eq!(s.store().blob_count().unwrap(), 1);
    let raw = String::from_utf8(s.body(&a[0])).unwrap();
    assert!(
        raw.starts_with("Return-Path: <sender@example.org>\r\nReceived: from client.test ([127.0.0.1])"),
        "{raw}"
    );
    assert!(raw.contains("by mx.test (mailgate) with ESMTP id"), "{raw}");
    assert!(!raw.contains("for <"), "no 'for' clause with two recipients: {raw}");
    assert!(raw.ends_with("\r\n\r\nhello\r\n"), "{raw}");
    assert_eq!(a[0].meta.size as usize, raw.len());
}

#[tokio::test]
async fn aliases_and_catch_all() {
    let s = start_server(|_| {}).await;
    let st = s.store();
    st.set_alias("team@localhost", &["alice@localhost".into(), "bob@localhost".into()])
        .unwrap();
    st.set_alias("@example.test", &["bob@localhost".into()]).unwrap();
    let mut c = greeted(s.smtp).await;
    // alice both directly and through the alias: one copy for her.
    let r = send_mail(
        &mut c,
        "x@example.org",
        &["team@localhost", "alice@localhost"],
        &message("alias", "a"),
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    let r = send_mail(
        &mut c,
        "x@example.org",
        &["whoever@example.test"],
        &message("catchall", "b"),
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    let alice: Vec<_> = s
        .inbox("alice@localhost")
        .iter()
        .map(|m| subject_of(&s.body(m)))
        .collect();
    let bob: Vec<_> = s
        .inbox("bob@localhost")
        .iter()
        .map(|m| subject_of(&s.body(m)))
        .collect();
    assert_eq!(alice, vec!["alias"]);
    assert_eq!(bob, vec!["alias", "catchall"]);
    let raw = String::from_utf8(s.body(&s.inbox("bob@localhost")[1])).unwrap();
    assert!(raw.contains("for <whoever@example.test>"), "{raw}");
}

#[tokio::test]
async fn unknown_users_and_relay_attempts_are_refused() {
    let s = start_server(|_| {}).await;
    let mut c = greeted(s.smtp).await;
    // A list's bounce address past RFC 5321's 64-octet local part is taken, as Postfix does.
    let verp = format!("MAIL FROM:<list-return-{}=localhost@lists.example.org>", "7".repeat(60));
    c.cmd(&verp, "250").await;
    c.cmd("RSET", "250").await;
    c.cmd("MAIL FROM:<x@example.org>", "250").await;
    c.cmd("RCPT TO:<nobody@localhost>", "550 5.1.1").await;
    c.cmd("RCPT TO:<victim@elsewhere.test>", "554 5.7.1").await;
    c.cmd("RCPT TO:<victim%elsewhere.test@localhost>", "554 5.7.1").await;
    c.cmd("RCPT TO:<elsewhere.test!victim@localhost>", "554 5.7.1").await;
    c.cmd("RCPT TO:<\"victim@elsewhere.test\"@localhost>", "554 5.7.1")
        .await;
    // A source route names the final recipient after the colon; it is judged by that.
    c.cmd("RCPT TO:<@localhost:victim@elsewhere.test>", "554 5.7.1").await;
    c.cmd("DATA", "554 5.5.1").await;
    c.cmd("RSET", "250").await;
    c.cmd("QUIT", "221").await;
    assert_eq!(s.store().blob_count().unwrap(), 0);
}

#[tokio::test]
async fn postmaster_without_domain_is_routed() {
    let s = start_server(|_| {}).await;
    s.store()
        .set_alias("postmaster@localhost", &["alice@localhost".into()])
        .unwrap();
    let mut c = connect(s.smtp).await;
    c.cmd("HELO client.test", "250 mx.test").await;
    c.cmd("MAIL FROM:<>", "250").await;
    c.cmd("RCPT TO:<Postmaster>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(message("pm", "x").as_bytes()).await;
    c.cmd(".", "250").await;
    let raw = String::from_utf8(s.body(&s.inbox("alice@localhost")[0])).unwrap();
    assert!(raw.starts_with("Return-Path: <>\r\n"), "{raw}");
    assert!(raw.contains(" with SMTP id "), "HELO gives protocol SMTP: {raw}");
}

/// `server.postmaster` takes every local domain's postmaster that has no account or alias
/// of its own (RFC 5321 §4.5.1); other unknown users are still refused.
#[tokio::test]
async fn server_postmaster_takes_every_domains_postmaster() {
    let s = start_server(|c| c.server.postmaster = Some("bob@localhost".into())).await;
    s.store().add_domain("other.test").unwrap();
    let mut c = connect(s.smtp).await;
    c.cmd("EHLO client.test", "250").await;
    c.cmd("MAIL FROM:<>", "250").await;
    c.cmd("RCPT TO:<POSTMASTER@other.test>", "250").await;
    c.cmd("RCPT TO:<Postmaster>", "250").await;
    c.cmd("RCPT TO:<nobody@other.test>", "550 5.1.1").await;
    c.cmd("DATA", "354").await;
    c.send(message("bounce", "x").as_bytes()).await;
    c.cmd(".", "250").await;
    c.cmd("QUIT", "221").await;
    assert_eq!(s.inbox("bob@localhost").len(), 1, "one copy for both postmasters");
}

#[tokio::test]
async fn pipelined_transaction_gets_replies_in_order() {
    let s = start_server(|_| {}).await;
    let mut c = greeted(s.smtp).await;
    let mut batch = String::from(
        "MAIL FROM:<p@example.org>\r\nRCPT TO:<alice@localhost>\r\nRCPT TO:<nobody@localhost>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n",
    );
    c.send(batch.as_bytes()).await;
    for expect in ["250 2.1.0", "250 2.1.5", "550 5.1.1", "250 2.1.5", "354"] {
        let r = c.reply().await;
        assert!(r.starts_with(expect), "expected {expect}, got {r}");
    }
    batch = message("piped", "body");
    batch.push_str(".\r\nMAIL FROM:<p@example.org>\r\nRCPT TO:<bob@localhost>\r\nRSET\r\nQUIT\r\n");
    c.send(batch.as_bytes()).await;
    for expect in ["250 2.0.0", "250 2.1.0", "250 2.1.5", "250 2.0.0", "221"] {
        let r = c.reply().await;
        assert!(r.starts_with(expect), "expected {expect}, got {r}");
    }
    assert_eq!(s.inbox("alice@localhost").len(), 1);
    assert_eq!(s.inbox("bob@localhost").len(), 1);
}

#[tokio::test]
async fn ehlo_advertises_extensions_and_commands_need_order() {
    let s = start_server(|_| {}).await;
    let mut c = connect(s.smtp).await;
    c.cmd("MAIL FROM:<a@example.org>", "503 5.5.1").await;
    let ehlo = c.cmd("EHLO client.test", "250-mx.test").await;
    for ext in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "CHUNKING",
        "STARTTLS",
    ] {
        assert!(
            ehlo.contains(&format!("250-{ext}\r\n")) || ehlo.contains(&format!("250 {ext}\r\n")),
            "{ext} in {ehlo}"
        );
    }
    c.cmd("RCPT TO:<alice@localhost>", "503 5.5.1").await;
    c.cmd("DATA", "503 5.5.1").await;
    c.cmd("MAIL FROM:<a@example.org>", "250").await;
    c.cmd("MAIL FROM:<a@example.org>", "503 5.5.1").await;
    c.cmd("VRFY alice", "252").await;
    c.cmd("NOOP", "250").await;
    c.cmd("HELP", "214").await;
    c.cmd("EXPN team", "502").await;
    c.cmd("FOO bar", "500 5.5.2").await;
    c.cmd("MAIL FROM:<a@example.org> BODY=BINARYMIME", "5").await;
    c.cmd("QUIT", "221").await;
}

#[tokio::test]
async fn bdat_chunks_are_exact() {
    let s = start_server(|_| {}).await;
    let mut c = greeted(s.smtp).await;
    c.cmd("MAIL FROM:<b@example.org>", "250").await;
    c.cmd("RCPT TO:<alice@localhost>", "250").await;
    let part1 = "Subject: bdat\r\n\r\nline one\r\n.dot stays\r\n";
    let part2 = "BDAT 4 inside the data\r\n";
    c.send(format!("BDAT {}\r\n{part1}", part1.len()).as_bytes()).await;
    let r = c.reply().await;
    assert!(r.starts_with("250"), "{r}");
    c.send(format!("BDAT {} LAST\r\n{part2}", part2.len()).as_bytes()).await;
    let r = c.reply().await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    // BDAT without a transaction: the chunk is still consumed, and the session goes on.
    c.send(b"BDAT 6 LAST\r\nRSET\r\n").await;
    let r = c.reply().await;
    assert!(r.starts_with("503"), "{r}");
    c.cmd("NOOP", "250").await;
    let raw = String::from_utf8(s.body(&s.inbox("alice@localhost")[0])).unwrap();
    assert!(raw.ends_with(&format!("{part1}{part2}")), "{raw}");
    // BDAT 0 LAST ends an empty-tail message.
    c.cmd("MAIL FROM:<b@example.org>", "250").await;
    c.cmd("RCPT TO:<alice@localhost>", "250").await;
    c.send(b"BDAT 11\r\nSubject: z\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 11 octets"));
    c.cmd("BDAT 0 LAST", "250 2.0.0").await;
    let inbox = s.inbox("alice@localhost");
    assert_eq!(inbox.len(), 2);
    // BDAT content is stored with canonical CRLF line endings.
    assert!(s.body(&inbox[1]).ends_with(b"Subject: z\r\n"));
}

#[tokio::test]
async fn smtputf8_addresses() {
    let s = start_server(|_| {}).await;
    s.store().create_account("jöran@localhost", "x").unwrap();
    let mut c = greeted(s.smtp).await;
    c.cmd("MAIL FROM:<grüße@example.org>", "553 5.6.7").await;
    c.cmd("MAIL FROM:<grüße@example.org> SMTPUTF8", "250").await;
    c.cmd("RCPT TO:<jöran@localhost>", "250").await;
    c.cmd("DATA", "354").await;
    c.send("Subject: ünïcode\r\n\r\nhej\r\n.\r\n".as_bytes()).await;
    let r = c.reply().await;
    assert!(r.starts_with("250"), "{r}");
    let raw = String::from_utf8(s.body(&s.inbox("jöran@localhost")[0])).unwrap();
    assert!(raw.starts_with("Return-Path: <grüße@example.org>"), "{raw}");
    assert!(raw.contains("with UTF8SMTP id"), "RFC 6531 §3.7.3: {raw}");
}

/// Each vector is a line ending a lenient receiver might take as the end of DATA, followed by
/// a smuggled second transaction. None may end DATA, and nothing may be stored.
#[tokio::test]
async fn smuggling_vectors_neither_end_data_nor_get_stored() {
    let s = start_server(|_| {}).await;
    for vector in ["\n.\r\n", "\r.\r\n", "\n.\n", "\r\n.\r", "\r\n.\n"] {
        let mut c = greeted(s.smtp).await;
        c.cmd("MAIL FROM:<good@example.org>", "250").await;
        c.cmd("RCPT TO:<alice@localhost>", "250").await;
        c.cmd("DATA", "354").await;
        let payload = format!(
            "Subject: outer\r\n\r\nouter body{vector}MAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n"
        );
        c.send(payload.as_bytes()).await;
        let r = c.reply().await;
        assert!(r.starts_with("521 5.5.2"), "vector {vector:?}: {r}");
        assert!(c.closed().await, "vector {vector:?}: connection closed");
        assert!(
            s.inbox("alice@localhost").is_empty(),
            "vector {vector:?}: nothing stored for alice"
        );
        assert!(
            s.inbox("bob@localhost").is_empty(),
            "vector {vector:?}: nothing smuggled to bob"
        );
    }
}

#[tokio::test]
async fn bare_lf_in_body_is_refused() {
    let s = start_server(|_| {}).await;
    let mut c = greeted(s.smtp).await;
    c.cmd("MAIL FROM:<a@example.org>", "250").await;
    c.cmd("RCPT TO:<alice@localhost>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: lf\n\nbody\r\n.\r\n").await;
    let r = c.reply().await;
    assert!(r.starts_with("521 5.5.2"), "{r}");
    assert!(c.closed().await);
    assert!(s.inbox("alice@localhost").is_empty());
}

#[tokio::test]
async fn dot_unstuffing_is_exact() {
    let s = start_server(|_| {}).await;
    let mut c = greeted(s.smtp).await;
    c.cmd("MAIL FROM:<a@example.org>", "250").await;
    c.cmd("RCPT TO:<alice@localhost>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: dots\r\n\r\n..\r\n...three\r\n. space\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250"));
    let raw = s.body(&s.inbox("alice@localhost")[0]);
    assert!(
        raw.ends_with(b"Subject: dots\r\n\r\n.\r\n..three\r\n space\r\n"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}

#[tokio::test]
async fn mail_survives_a_restart() {
    let s = start_server(|_| {}).await;
    let mut c = greeted(s.smtp).await;
    let r = send_mail(&mut c, "a@example.org", &["alice@localhost"], &message("persist", "x")).await;
    assert!(r.starts_with("250"));
    c.cmd("QUIT", "221").await;
    let TestServer { dir, running, .. } = s;
    running.shutdown().await;
    let s = start_in(dir, |_| {}).await;
    let inbox = s.inbox("alice@localhost");
    assert_eq!(inbox.len(), 1);
    assert_eq!(subject_of(&s.body(&inbox[0])), "persist");
    // UIDs continue after the restart.
    let mut c = greeted(s.smtp).await;
    send_mail(&mut c, "a@example.org", &["alice@localhost"], &message("second", "x")).await;
    let uids: Vec<_> = s.inbox("alice@localhost").iter().map(|m| m.uid).collect();
    assert_eq!(uids, vec![1, 2]);
}

#[tokio::test]
async fn forged_spam_and_trace_headers_are_removed() {
    let s = start_server(|_| {}).await;
    let mut c = greeted(s.smtp).await;
    c.cmd("MAIL FROM:<a@example.org>", "250").await;
    c.cmd("RCPT TO:<alice@localhost>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(b"X-Spam-Flag: NO\r\nX-Spam-Score: -100\r\nx-mailgate-trace: forged\r\nSubject: forged\r\n\r\nX-Spam-Flag: NO in the body stays\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250"));
    let raw = String::from_utf8(s.body(&s.inbox("alice@localhost")[0])).unwrap();
    assert!(
        !raw.contains("X-Spam-Score") && !raw.contains("x-mailgate-trace") && !raw.contains("X-Spam-Flag: NO\r\n"),
        "{raw}"
    );
    assert!(
        raw.contains("Subject: forged\r\n\r\nX-Spam-Flag: NO in the body stays\r\n"),
        "{raw}"
    );
}
