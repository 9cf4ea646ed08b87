//! Every SMTP limit answers with its documented code.

use crate::common::*;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn message_size_limit() {
    let s = start_server(|c| c.smtp.max_message_size = 1000).await;
    let mut c = connect(s.smtp).await;
    let ehlo = c.cmd("EHLO client.test", "250").await;
    assert!(ehlo.contains("SIZE 1000\r\n"), "{ehlo}");
    c.cmd("MAIL FROM:<a@example.org> SIZE=1001", "552 5.3.4").await;
    c.cmd("MAIL FROM:<a@example.org> SIZE=500", "250").await;
    c.cmd("RCPT TO:<alice@localhost>", "250").await;
    c.cmd("DATA", "354").await;
    let big = message("big", &vec!["x".repeat(70); 20].join("\r\n"));
    c.send(big.as_bytes()).await;
    c.cmd(".", "552 5.3.4").await;
    // The session goes on, and a BDAT message over the limit is refused the same way.
    c.cmd("MAIL FROM:<a@example.org>", "250").await;
    c.cmd("RCPT TO:<alice@localhost>", "250").await;
    c.send(format!("BDAT {} LAST\r\n{big}", big.len()).as_bytes()).await;
    assert!(c.reply().await.starts_with("552 5.3.4"));
    c.cmd("NOOP", "250").await;
    assert!(s.inbox("alice@localhost").is_empty());
}

#[tokio::test]
async fn recipient_limit() {
    let s = start_server(|c| c.smtp.max_recipients = 2).await;
    let mut c = greeted(s.smtp).await;
    c.cmd("MAIL FROM:<a@example.org>", "250").await;
    c.cmd("RCPT TO:<alice@localhost>", "250").await;
    c.cmd("RCPT TO:<bob@localhost>", "250").await;
    c.cmd("RCPT TO:<alice+x@localhost>", "452 4.5.3").await;
}

#[tokio::test]
async fn too_many_errors_disconnects() {
    let s = start_server(|c| c.smtp.max_errors = 3).await;
    let mut c = connect(s.smtp).await;
    c.cmd("BOGUS", "500").await;
    c.cmd("BOGUS", "500").await;
    let r = c.cmd("BOGUS", "500").await;
    assert!(r.is_empty() || r.starts_with("500"));
    let r = c.reply().await;
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert!(c.closed().await);
}

#[tokio::test]
async fn overlong_line_is_refused_without_buffering_it() {
    let s = start_server(|c| c.smtp.max_line_length = 512).await;
    let mut c = connect(s.smtp).await;
    c.send(format!("EHLO {}\r\n", "a".repeat(100_000)).as_bytes()).await;
    c.send(b"NOOP\r\n").await;
    let r = c.reply().await;
    assert!(r.starts_with("500 5.5.2 Line too long"), "{r}");
    let r = c.reply().await;
    assert!(r.starts_with("250"), "the NOOP after it is answered: {r}");
}

#[tokio::test]
async fn connections_per_ip_are_capped() {
    let s = start_server(|c| c.smtp.max_connections_per_ip = 2).await;
    let mut a = connect(s.smtp).await;
    let _b = connect(s.smtp).await;
    let mut third = tokio::net::TcpStream::connect(s.smtp).await.unwrap();
    let mut buf = String::new();
    third.read_to_string(&mut buf).await.unwrap();
    assert!(buf.starts_with("421 4.7.0"), "{buf}");
    // The slot is released when a session ends, before its socket closes.
    a.cmd("QUIT", "221").await;
    assert!(a.closed().await);
    let _c = connect(s.smtp).await;
}

#[tokio::test]
async fn idle_client_times_out() {
    let s = start_server(|c| c.smtp.command_timeout_secs = 1).await;
    let mut c = greeted(s.smtp).await;
    let r = c.reply().await; // nothing sent: the server gives up
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(c.closed().await);
}

#[tokio::test]
async fn vanished_client_mid_data_stores_nothing() {
    let s = start_server(|_| {}).await;
    let mut c = greeted(s.smtp).await;
    c.cmd("MAIL FROM:<a@example.org>", "250").await;
    c.cmd("RCPT TO:<alice@localhost>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: half\r\n\r\nhalf a mess").await;
    drop(c);
    // The server must still serve others, and the half message is nowhere.
    let mut c2 = greeted(s.smtp).await;
    let r = send_mail(&mut c2, "a@example.org", &["alice@localhost"], &message("whole", "x")).await;
    assert!(r.starts_with("250"));
    let subjects: Vec<_> = s
        .inbox("alice@localhost")
        .iter()
        .map(|m| subject_of(&s.body(m)))
        .collect();
    assert_eq!(subjects, vec!["whole"]);
}

#[tokio::test]
async fn shutdown_tells_idle_sessions() {
    let s = start_server(|_| {}).await;
    let mut c = greeted(s.smtp).await;
    let TestServer { running, dir: _dir, .. } = s;
    let stop = tokio::spawn(running.shutdown());
    let r = c.reply().await;
    assert!(r.starts_with("421 4.3.2"), "{r}");
    stop.await.unwrap();
}

/// A thousand NOOPs (or RSETs, VRFYs, HELPs, EHLOs): past `junk_command_limit` each counts as
/// an error and the session ends with 421; a delivered message starts the count again.
#[tokio::test]
async fn commands_that_make_no_progress_are_limited() {
    let s = start_server(|c| {
        c.smtp.junk_command_limit = 5;
        c.smtp.max_errors = 3;
    })
    .await;
    let mut c = greeted(s.smtp).await; // the EHLO is junk command 1
    for _ in 0..4 {
        c.cmd("NOOP", "250").await;
    }
    // The count starts again with a delivered message.
    let r = send_mail(&mut c, "a@example.org", &["alice@localhost"], &message("one", "x")).await;
    assert!(r.starts_with("250"), "{r}");
    for cmd in ["RSET", "NOOP", "VRFY alice", "HELP", "NOOP"] {
        let r = c.cmd(cmd, "").await;
        assert!(r.starts_with("25") || r.starts_with("214"), "{cmd}: {r}");
    }
    // Past the limit: answered, and counted as errors; the third error closes.
    c.cmd("NOOP", "250").await;
    c.cmd("NOOP", "250").await;
    c.send(b"NOOP\r\n").await;
    assert!(c.reply().await.starts_with("421 4.7.0"));
    assert!(c.closed().await);
    // A pipelined flood is cut the same way, without reading it all.
    let mut c = greeted(s.smtp).await;
    c.send("NOOP\r\n".repeat(1000).as_bytes()).await;
    let mut replies = Vec::new();
    loop {
        let r = c.reply().await;
        if r.is_empty() {
            break;
        }
        replies.push(r);
    }
    assert_eq!(
        replies.len(),
        7,
        "4 within the limit, 2 counted errors, then 421: {replies:?}"
    );
    assert!(replies.last().unwrap().starts_with("421 4.7.0"));
}

/// Slowloris: a client that sends a command a byte a second keeps every read within the
/// timeout, but not the line: SMTP and POP3 cut it off once the line's time (2 s here) runs
/// out, long before it would finish, with their goodbye. (IMAP reads lines the same way;
/// its shortest allowed timeout is a minute, so `net::conn`'s unit test covers it.)
#[tokio::test]
async fn slowloris_is_cut_off() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let s = start_server(|c| {
        c.smtp.command_timeout_secs = 2;
        c.pop3.idle_timeout_secs = 2;
    })
    .await;
    let line = b"NOOP NOOP NOOP NOOP NOOP\r\n";
    for (addr, greeting, goodbye) in [(s.smtp, "220 ", "421 4.4.2"), (s.pop3, "+OK", "-ERR")] {
        let (rd, mut wr) = tokio::net::TcpStream::connect(addr).await.unwrap().into_split();
        let mut rd = BufReader::new(rd);
        let mut first = String::new();
        rd.read_line(&mut first).await.unwrap();
        assert!(first.starts_with(greeting), "{first}");
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        let trickle = tokio::spawn(async move {
            for b in line {
                if wr.write_all(&[*b]).await.is_err() {
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                // The pace is the attack: one byte a second.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        let mut reply = String::new();
        rd.read_line(&mut reply).await.unwrap();
        assert!(reply.starts_with(goodbye), "{reply}");
        assert!(
            sent.load(Ordering::SeqCst) < line.len(),
            "cut off before the line was done"
        );
        let mut rest = String::new();
        assert_eq!(rd.read_line(&mut rest).await.unwrap(), 0, "and closed: {rest}");
        trickle.abort();
    }
}
