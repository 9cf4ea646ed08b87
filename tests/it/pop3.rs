//! POP3 over real sockets: Python's poplib as a third-party client, raw transcripts for the
//! corners poplib does not reach.

use crate::common::*;
use mailgate::config::Plaintext;
use tokio::net::TcpStream;

async fn pop_connect(addr: std::net::SocketAddr) -> Client<TcpStream> {
    let s = TcpStream::connect(addr).await.unwrap();
    let mut c = Client {
        io: tokio::io::BufReader::new(s),
    };
    let greeting = c.line().await;
    assert!(greeting.starts_with("+OK"), "{greeting}");
    c
}

async fn login(c: &mut Client<TcpStream>, user: &str) {
    c.pop(&format!("USER {user}"), "+OK").await;
    c.pop(&format!("PASS {PASSWORD}"), "+OK").await;
}

/// Delivers messages to alice over SMTP (as the tests of a real maildrop should).
async fn deliver(s: &TestServer, bodies: &[(&str, &str)]) {
    let mut c = greeted(s.smtp).await;
    for (subject, body) in bodies {
        // SMTP transparency (RFC 5321 §4.5.2): the client doubles leading dots.
        let stuffed = message(subject, body).replace("\r\n.", "\r\n..");
        let r = send_mail(&mut c, "sender@example.org", &["alice@localhost"], &stuffed).await;
        assert!(r.starts_with("250"), "{r}");
    }
    c.cmd("QUIT", "221").await;
}

const POPLIB: &str = r#"
import poplib, sys
port = int(sys.argv[1])
p = poplib.POP3("127.0.0.1", port)
caps = p.capa()
assert "UIDL" in caps and "TOP" in caps and "USER" in caps and "STLS" in caps, caps
assert caps["SASL"] == ["PLAIN", "LOGIN"], caps
p.user("alice@localhost"); p.pass_("pw")
count, size = p.stat()
print("stat", count, size)
resp, listing, _ = p.list()
print("list", [l.decode() for l in listing])
resp, uidls, _ = p.uidl()
print("uidl", [l.decode() for l in uidls])
resp, lines, octets = p.retr(2)
sys.stdout.buffer.write(b"retr2:" + b"|".join(lines) + b"\n")
resp, lines, octets = p.top(1, 1)
sys.stdout.buffer.write(b"top1:" + b"|".join(lines) + b"\n")
p.dele(1)
print("quit", p.quit().decode())
"#;

#[tokio::test]
async fn poplib_reads_and_deletes_mail_delivered_by_smtp() {
    let s = start_server(|_| {}).await;
    deliver(
        &s,
        &[
            ("first", "line one\r\nline two"),
            ("dots", ".leading dot\r\n..two dots\r\n."),
        ],
    )
    .await;
    let inbox = s.inbox("alice@localhost");
    let sizes: Vec<u64> = inbox.iter().map(|m| m.meta.size).collect();
    let port = s.pop3.port().to_string();
    let out = tokio::task::spawn_blocking(move || python(POPLIB, &[&port]))
        .await
        .unwrap();
    assert!(out.contains(&format!("stat 2 {}", sizes[0] + sizes[1])), "{out}");
    assert!(
        out.contains(&format!("list ['1 {}', '2 {}']", sizes[0], sizes[1])),
        "{out}"
    );
    let uv = s
        .store()
        .mailbox("alice@localhost", "INBOX")
        .unwrap()
        .unwrap()
        .uidvalidity;
    assert!(
        out.contains(&format!("uidl ['1 {uv:08x}00000001', '2 {uv:08x}00000002']")),
        "{out}"
    );
    // poplib undoes the dot-stuffing: what it sees must be exactly what was stored.
    let stored = String::from_utf8(s.body(&inbox[1])).unwrap();
    let expect = format!("retr2:{}", stored.trim_end_matches("\r\n").replace("\r\n", "|"));
    assert!(out.contains(&expect), "RETR is byte-exact:\n{out}\nexpected {expect}");
    assert!(
        out.contains("top1:") && out.contains("<first@example.org>||line one\n"),
        "{out}"
    );
    assert!(out.contains("quit +OK"), "{out}");
    let left: Vec<_> = s
        .inbox("alice@localhost")
        .iter()
        .map(|m| subject_of(&s.body(m)))
        .collect();
    assert_eq!(left, vec!["dots"], "DELE + QUIT removed message 1 only");
}

#[tokio::test]
async fn list_sizes_are_the_octets_retr_sends() {
    let s = start_server(|_| {}).await;
    deliver(&s, &[("size", ".x\r\n..y\r\nplain")]).await;
    let mut c = pop_connect(s.pop3).await;
    login(&mut c, "alice@localhost").await;
    let list = c.pop("LIST 1", "+OK 1 ").await;
    let size: usize = list.trim().rsplit(' ').next().unwrap().parse().unwrap();
    c.pop("RETR 1", "+OK").await;
    let stuffed = c.multiline().await;
    let unstuffed = String::from_utf8(stuffed).unwrap().replace("\r\n..", "\r\n.");
    assert_eq!(unstuffed.len(), size, "{unstuffed:?}");
    assert!(unstuffed.contains("\r\n.x\r\n..y\r\n"));
}

#[tokio::test]
async fn rset_and_dropped_connections_delete_nothing() {
    let s = start_server(|_| {}).await;
    deliver(&s, &[("a", "x"), ("b", "y")]).await;
    let mut c = pop_connect(s.pop3).await;
    login(&mut c, "alice@localhost").await;
    c.pop("DELE 1", "+OK").await;
    c.pop("DELE 1", "-ERR").await; // already deleted
    c.pop("RETR 1", "-ERR").await;
    c.pop("STAT", "+OK 1 ").await;
    c.pop("RSET", "+OK").await;
    c.pop("STAT", "+OK 2 ").await;
    c.pop("QUIT", "+OK").await;
    assert_eq!(s.inbox("alice@localhost").len(), 2);
    // DELE, then the client vanishes: no UPDATE state, nothing deleted.
    let mut c = pop_connect(s.pop3).await;
    login(&mut c, "alice@localhost").await;
    c.pop("DELE 1", "+OK").await;
    c.pop("DELE 2", "+OK").await;
    drop(c);
    // The lock is released when the session ends; a new login proves both.
    let mut c = loop {
        let mut c = pop_connect(s.pop3).await;
        c.pop("USER alice@localhost", "+OK").await;
        let r = c.pop(&format!("PASS {PASSWORD}"), "").await;
        if r.starts_with("+OK") {
            break c;
        }
        assert!(r.contains("[IN-USE]"), "{r}");
        tokio::task::yield_now().await;
    };
    c.pop("STAT", "+OK 2 ").await;
    assert_eq!(s.inbox("alice@localhost").len(), 2);
}

#[tokio::test]
async fn a_second_session_gets_in_use() {
    let s = start_server(|_| {}).await;
    let mut a = pop_connect(s.pop3).await;
    login(&mut a, "alice@localhost").await;
    let mut b = pop_connect(s.pop3).await;
    b.pop("USER alice@localhost", "+OK").await;
    b.pop(&format!("PASS {PASSWORD}"), "-ERR [IN-USE]").await;
    // Another account is not affected.
    login(&mut b, "bob@localhost").await;
    a.pop("QUIT", "+OK").await;
}

#[tokio::test]
async fn mail_arriving_during_a_session_shows_at_the_next() {
    let s = start_server(|_| {}).await;
    deliver(&s, &[("one", "x")]).await;
    let mut c = pop_connect(s.pop3).await;
    login(&mut c, "alice@localhost").await;
    deliver(&s, &[("two", "y")]).await;
    c.pop("STAT", "+OK 1 ").await;
    c.pop("QUIT", "+OK").await;
    let mut c = pop_connect(s.pop3).await;
    login(&mut c, "alice@localhost").await;
    c.pop("STAT", "+OK 2 ").await;
}

#[tokio::test]
async fn uidl_is_stable_across_restarts() {
    let s = start_server(|_| {}).await;
    deliver(&s, &[("a", "x"), ("b", "y")]).await;
    let uidl = |addr| async move {
        let mut c = pop_connect(addr).await;
        login(&mut c, "alice@localhost").await;
        c.pop("UIDL", "+OK").await;
        let list = c.multiline().await;
        c.pop("QUIT", "+OK").await;
        String::from_utf8(list).unwrap()
    };
    let before = uidl(s.pop3).await;
    let TestServer { dir, running, .. } = s;
    running.shutdown().await;
    let s = start_in(dir, |_| {}).await;
    assert_eq!(uidl(s.pop3).await, before);
    assert_eq!(before.lines().count(), 2);
}

#[tokio::test]
async fn sasl_plain_and_login() {
    let s = start_server(|_| {}).await;
    let b64 = |b: &[u8]| mailgate::auth::b64_encode(b);
    // PLAIN with an initial response.
    let mut c = pop_connect(s.pop3).await;
    let ir = b64(format!("\0alice@localhost\0{PASSWORD}").as_bytes());
    c.pop(&format!("AUTH PLAIN {ir}"), "+OK").await;
    c.pop("QUIT", "+OK").await;
    // PLAIN after a continuation; a wrong password gets [AUTH].
    let mut c = pop_connect(s.pop3).await;
    c.pop("AUTH PLAIN", "+ ").await;
    c.pop(&b64(b"\0alice@localhost\0wrong"), "-ERR [AUTH]").await;
    c.pop("AUTH PLAIN", "+ ").await;
    c.pop("*", "-ERR").await; // cancelled
    // LOGIN.
    c.pop("AUTH LOGIN", "+ VXNlcm5hbWU6").await;
    c.pop(&b64(b"bob@localhost"), "+ UGFzc3dvcmQ6").await;
    c.pop(&b64(PASSWORD.as_bytes()), "+OK").await;
    c.pop("STAT", "+OK 0 0").await;
    // Mechanism list, unknown mechanism.
    let mut c = pop_connect(s.pop3).await;
    c.pop("AUTH", "+OK").await;
    assert_eq!(c.multiline().await, b"PLAIN\r\nLOGIN\r\n");
    c.pop("AUTH CRAM-MD5", "-ERR").await;
    c.pop("APOP alice@localhost 0123456789abcdef0123456789abcdef", "-ERR")
        .await;
}

#[tokio::test]
async fn bad_commands_in_each_state() {
    let s = start_server(|_| {}).await;
    let mut c = pop_connect(s.pop3).await;
    // AUTHORIZATION
    c.pop("STAT", "-ERR").await;
    c.pop("RETR 1", "-ERR").await;
    c.pop("PASS x", "-ERR").await; // no USER yet
    c.pop("FOO", "-ERR").await;
    c.pop("", "-ERR").await;
    c.pop(&"X".repeat(10_000), "-ERR").await; // too long: refused, session goes on
    c.pop("USER nobody@localhost", "+OK").await;
    c.pop("PASS wrong", "-ERR [AUTH]").await;
    login(&mut c, "alice@localhost").await;
    // TRANSACTION
    c.pop("USER alice@localhost", "-ERR").await;
    c.pop("STLS", "-ERR").await;
    c.pop("RETR", "-ERR").await;
    c.pop("RETR x", "-ERR").await;
    c.pop("RETR 0", "-ERR").await;
    c.pop("RETR 99", "-ERR").await;
    c.pop("TOP 1", "-ERR").await;
    c.pop("TOP 1 x", "-ERR").await;
    c.pop("LIST 5", "-ERR").await;
    c.pop("NOOP", "+OK").await;
    c.pop("QUIT", "+OK").await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn plaintext_login_refused_when_not_allowed() {
    let s = start_server(|c| c.auth.plaintext = Plaintext::Never).await;
    let mut c = pop_connect(s.pop3).await;
    c.pop("USER alice@localhost", "-ERR [AUTH] Plaintext").await;
    c.pop("AUTH PLAIN AGFsaWNlQGxvY2FsaG9zdABwdw==", "-ERR [AUTH] Plaintext")
        .await;
    // After STLS the same login works.
    c.pop("STLS", "+OK").await;
    let tls = tls_upgrade(c, &s.cert_path()).await;
    let mut t = tls;
    t.pop("USER alice@localhost", "+OK").await;
    t.pop(&format!("PASS {PASSWORD}"), "+OK").await;
}

#[tokio::test]
async fn failed_logins_are_delayed_and_counted_per_ip() {
    let s = start_server(|c| {
        c.auth.failure_delay_ms = 200;
        c.auth.max_failures_per_ip = 3;
    })
    .await;
    let mut c = pop_connect(s.pop3).await;
    let t = std::time::Instant::now();
    c.pop("USER alice@localhost", "+OK").await;
    c.pop("PASS wrong", "-ERR [AUTH]").await;
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(200),
        "failure answered after the delay"
    );
    for _ in 0..2 {
        c.pop("USER alice@localhost", "+OK").await;
        c.pop("PASS wrong", "-ERR [AUTH]").await;
    }
    // Budget used up: even the right password is refused for now.
    c.pop("USER alice@localhost", "+OK").await;
    c.pop(&format!("PASS {PASSWORD}"), "-ERR [SYS/TEMP]").await;
}

const POPLIB_STLS: &str = r#"
import poplib, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
p = poplib.POP3("127.0.0.1", port)
p.stls(context=ssl.create_default_context(cafile=cafile))
assert "STLS" not in p.capa()
p.user("alice@localhost"); p.pass_("pw")
print("stat", p.stat())
p.quit()
"#;

#[tokio::test]
async fn poplib_stls() {
    let s = start_server(|_| {}).await;
    let (port, cert) = (s.pop3.port().to_string(), s.cert_path());
    let out = tokio::task::spawn_blocking(move || python(POPLIB_STLS, &[&port, cert.to_str().unwrap()]))
        .await
        .unwrap();
    assert!(out.contains("stat (0, 0)"), "{out}");
}

#[tokio::test]
async fn plaintext_pipelined_after_stls_is_discarded() {
    let s = start_server(|_| {}).await;
    let mut c = pop_connect(s.pop3).await;
    c.send(format!("STLS\r\nUSER alice@localhost\r\nPASS {PASSWORD}\r\n").as_bytes())
        .await;
    assert!(c.line().await.starts_with("+OK"));
    let mut t = tls_upgrade(c, &s.cert_path()).await;
    // Had the injected login been kept, STAT would succeed.
    t.pop("STAT", "-ERR").await;
    t.pop("PASS x", "-ERR").await; // and USER was forgotten too
}

#[tokio::test]
async fn pop3s_implicit_tls() {
    let s = start_server(|c| c.listeners[1].tls = mailgate::config::TlsMode::Implicit).await;
    let tcp = TcpStream::connect(s.pop3).await.unwrap();
    let tls = crate::smtp_tls::connector(&s.cert_path())
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let mut c = Client {
        io: tokio::io::BufReader::new(tls),
    };
    assert!(c.line().await.starts_with("+OK"));
    c.pop("CAPA", "+OK").await;
    let caps = String::from_utf8(c.multiline().await).unwrap();
    assert!(!caps.contains("STLS"), "{caps}");
    c.pop("USER alice@localhost", "+OK").await;
    c.pop(&format!("PASS {PASSWORD}"), "+OK").await;
}

#[tokio::test]
async fn retrieved_messages_are_marked_seen_at_quit() {
    let s = start_server(|_| {}).await;
    deliver(&s, &[("a", "x"), ("b", "y"), ("c", "z")]).await;
    let mut c = pop_connect(s.pop3).await;
    login(&mut c, "alice@localhost").await;
    c.pop("RETR 1", "+OK").await;
    c.multiline().await;
    c.pop("TOP 2 0", "+OK").await; // TOP is not a read
    c.multiline().await;
    c.pop("RETR 3", "+OK").await;
    c.multiline().await;
    c.pop("DELE 3", "+OK").await;
    let before: Vec<bool> = s
        .inbox("alice@localhost")
        .iter()
        .map(|m| m.meta.flags.contains(mailgate::store::Flags::SEEN))
        .collect();
    assert_eq!(before, vec![false, false, false], "nothing changes before QUIT");
    c.pop("QUIT", "+OK").await;
    let after: Vec<(u32, bool)> = s
        .inbox("alice@localhost")
        .iter()
        .map(|m| (m.uid, m.meta.flags.contains(mailgate::store::Flags::SEEN)))
        .collect();
    assert_eq!(after, vec![(1, true), (2, false)]);
}

/// A client that asks for a large message and stops reading: the server's write makes no
/// progress, the write deadline ends the session, and the maildrop lock goes with it.
#[tokio::test]
async fn a_client_that_stops_reading_loses_its_session_and_lock() {
    let s = start_server(|c| c.server.write_timeout_secs = 1).await;
    // 20 MB: more than loopback's socket buffers can hold between us.
    let line = "x".repeat(998);
    let body: String = std::iter::repeat_n(format!("{line}\r\n"), 20_000).collect();
    let raw = format!("Subject: big\r\n\r\n{body}");
    let inbox = s.store().mailbox("alice@localhost", "INBOX").unwrap().unwrap().id;
    s.store().deliver(raw.as_bytes(), 0, &[inbox]).unwrap();
    s.store().sync().await.unwrap();

    let mut stuck = pop_connect(s.pop3).await;
    login(&mut stuck, "alice@localhost").await;
    stuck.send(b"RETR 1\r\n").await;
    // Nothing to await on our side: the server gives up after its deadline (1 s) without
    // a byte read here. Before the deadline a second session is refused.
    let mut other = pop_connect(s.pop3).await;
    other.pop("USER alice@localhost", "+OK").await;
    other.pop(&format!("PASS {PASSWORD}"), "-ERR [IN-USE]").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let mut again = pop_connect(s.pop3).await;
    login(&mut again, "alice@localhost").await;
    again.pop("STAT", "+OK 1 ").await;
    // The stuck client finds its connection ended before the message did.
    let mut rest = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut stuck.io, &mut rest).await;
    assert!(
        rest.len() < raw.len(),
        "the session ended mid-message ({} bytes came)",
        rest.len()
    );
}

/// A client looping on errors is closed after `max_bad_commands`, and nothing is deleted.
#[tokio::test]
async fn a_session_of_errors_is_closed() {
    let s = start_server(|c| c.pop3.max_bad_commands = 3).await;
    deliver(&s, &[("keep", "body")]).await;
    let mut c = pop_connect(s.pop3).await;
    login(&mut c, "alice@localhost").await;
    c.pop("DELE 1", "+OK").await;
    c.pop("FROB", "-ERR").await;
    c.pop("RETR 9", "-ERR").await;
    c.pop("LIST x", "-ERR").await;
    assert!(c.line().await.starts_with("-ERR Too many bad commands"));
    assert!(c.line().await.is_empty(), "closed");
    assert_eq!(s.inbox("alice@localhost").len(), 1, "no UPDATE state: nothing deleted");
}
