//! IMAP over real sockets: Python's imaplib and async-imap as third-party clients, raw
//! transcripts for concurrency, literals, STARTTLS and bad input.

use crate::common::*;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A raw IMAP client that reads whole responses (with literals) up to a tagged line.
struct Raw<S> {
    io: BufReader<S>,
}

async fn raw(addr: std::net::SocketAddr) -> Raw<TcpStream> {
    let s = TcpStream::connect(addr).await.unwrap();
    let mut r = Raw { io: BufReader::new(s) };
    let g = r.line().await;
    assert!(g.starts_with("* OK [CAPABILITY IMAP4rev1"), "{g}");
    r
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), self.io.read_until(b'\n', &mut buf))
            .await
            .expect("line within 20 s")
            .unwrap();
        // A literal: read its bytes and the rest of the line.
        while let Some(n) = literal_len(&buf) {
            let mut lit = vec![0; n];
            self.io.read_exact(&mut lit).await.unwrap();
            buf.extend_from_slice(&lit);
            self.io.read_until(b'\n', &mut buf).await.unwrap();
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    async fn send(&mut self, s: &str) {
        self.io.get_mut().write_all(s.as_bytes()).await.unwrap();
    }

    /// Everything up to and including the tagged reply for `tag`.
    async fn until(&mut self, tag: &str) -> String {
        let mut all = String::new();
        loop {
            let l = self.line().await;
            assert!(!l.is_empty(), "closed while waiting for {tag}; got {all}");
            all.push_str(&l);
            if l.starts_with(&format!("{tag} ")) {
                return all;
            }
        }
    }

    /// Sends `tag cmd` and checks the tagged status (`OK`, `NO`, `BAD`).
    async fn cmd(&mut self, tag: &str, cmd: &str, status: &str) -> String {
        self.send(&format!("{tag} {cmd}\r\n")).await;
        let r = self.until(tag).await;
        let last = r.lines().last().unwrap_or("");
        assert!(
            last.starts_with(&format!("{tag} {status}")),
            "{cmd}: want {status}, got:\n{r}"
        );
        r
    }

    async fn login(&mut self, user: &str) {
        self.cmd("l", &format!("LOGIN {user} {PASSWORD}"), "OK").await;
    }
}

fn literal_len(buf: &[u8]) -> Option<usize> {
    let s = std::str::from_utf8(buf).ok()?;
    let s = s.strip_suffix("\r\n")?;
    let inner = s.strip_suffix('}')?;
    let open = inner.rfind('{')?;
    inner[open + 1..].parse().ok()
}

const MULTIPART: &str = "From: Ann Example <ann@example.org>\r\nTo: alice@localhost\r\nSubject: Report\r\n\
Date: Mon, 05 Feb 2024 10:00:00 +0000\r\nMessage-ID: <r1@example.org>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\nThis is a MIME message.\r\n--outer\r\n\
Content-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n--inner\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nQuarterly numbers attached.\r\n--inner\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n<p>Quarterly numbers attached.</p>\r\n--inner--\r\n\r\n--outer\r\n\
Content-Type: application/pdf; name=\"q1.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"q1.pdf\"\r\n\r\nJVBERi0xLjQK\r\n--outer--\r\n";

const IMAPLIB_FOLDERS: &str = r#"
import imaplib, sys
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
m.login("alice@localhost", "pw")
typ, data = m.list()
print("list0", sorted(d.decode() for d in data))
assert m.create("Projects/2024/Q1")[0] == "OK"
assert m.create("Projects")[0] == "NO"
typ, data = m.list("\"\"", "Projects/*")
print("children", sorted(d.decode() for d in data))
typ, data = m.list("\"\"", "%")
print("top", sorted(d.decode() for d in data))
assert m.rename("Projects", "Archive")[0] == "OK"
typ, data = m.list("\"\"", "*")
print("renamed", sorted(d.decode() for d in data))
print("delete-parent", m.delete("Archive")[0])
assert m.delete("Archive/2024/Q1")[0] == "OK"
assert m.delete("Archive/2024")[0] == "OK"
assert m.delete("Archive")[0] == "OK"
print("delete-inbox", m.delete("INBOX")[0])
assert m.create("Lists")[0] == "OK"
assert m.subscribe("Lists")[0] == "OK"
typ, data = m.lsub("\"\"", "*")
print("lsub", sorted(d.decode() for d in data))
assert m.unsubscribe("Lists")[0] == "OK"
typ, data = m.lsub("\"\"", "L*")
print("lsub2", data)
typ, data = m._simple_command("LIST", "(SPECIAL-USE)", '""', "*")
typ, data = m._untagged_response(typ, data, "LIST")
print("special", sorted(d.decode() for d in data))
typ, data = m.status("INBOX", "(MESSAGES UIDNEXT UNSEEN)")
print("status", data[0].decode())
m.logout()
"#;

#[tokio::test]
async fn imaplib_folder_lifecycle() {
    let s = start_server(|_| {}).await;
    let port = s.imap.port().to_string();
    let out = tokio::task::spawn_blocking(move || python(IMAPLIB_FOLDERS, &[&port]))
        .await
        .unwrap();
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in {out}"))
            .to_string()
    };
    assert!(line("list0").contains(r#"(\\HasNoChildren \\Junk) "/" Junk"#), "{out}");
    assert!(line("list0").contains(r#"(\\HasNoChildren) "/" INBOX"#), "{out}");
    assert!(line("children").contains(r#""/" Projects/2024/Q1"#), "{out}");
    assert!(
        line("children").contains(r#"(\\HasChildren) "/" Projects/2024'"#),
        "{out}"
    );
    assert!(line("top").contains(r#"(\\HasChildren) "/" Projects'"#), "{out}");
    assert!(!line("top").contains("Projects/2024"), "{out}");
    let renamed = line("renamed");
    assert!(
        renamed.contains("Archive/2024/Q1") && !renamed.contains("Projects"),
        "{out}"
    );
    assert_eq!(line("delete-parent"), "delete-parent NO");
    assert_eq!(line("delete-inbox"), "delete-inbox NO");
    assert!(
        line("lsub").contains(r#""/" Lists"#) && line("lsub").contains("INBOX"),
        "{out}"
    );
    assert_eq!(line("lsub2"), "lsub2 [None]");
    let special = line("special");
    for su in ["\\\\Sent", "\\\\Drafts", "\\\\Junk", "\\\\Trash"] {
        assert!(special.contains(su), "{su} in {special}");
    }
    assert!(!special.contains("INBOX"), "{special}");
    assert_eq!(line("status"), "status INBOX (MESSAGES 0 UIDNEXT 1 UNSEEN 0)");
}

const IMAPLIB_MESSAGES: &str = r#"
import imaplib, sys
msg = sys.stdin.buffer.read()
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
m.login("alice@localhost", "pw")
typ, data = m.append("INBOX", r"(\Flagged $Work)", imaplib.Time2Internaldate(1707127200), msg)
print("append", typ, data[0].decode())
m.append("INBOX", None, imaplib.Time2Internaldate(1704182400), b"From: bob@example.org\r\nSubject: tiny\r\nDate: Tue, 2 Jan 2024 08:00:00 +0000\r\n\r\nhi\r\n")
typ, data = m.select("INBOX")
print("select", typ, data[0].decode())
typ, data = m.uid("FETCH", "1", "(BODY.PEEK[])")
sys.stdout.buffer.write(b"exact " + (b"yes" if data[0][1] == msg else b"no") + b"\n")
typ, data = m.fetch("1", "(BODYSTRUCTURE)")
print("bs", data[0].decode())
typ, data = m.fetch("1", "(BODY.PEEK[1.1] BODY.PEEK[2.MIME] BODY.PEEK[]<10.20> BINARY.PEEK[2] RFC822.SIZE)")
parts = [d for d in data if isinstance(d, tuple)]
for head, body in parts:
    sys.stdout.buffer.write(b"part " + head.strip() + b" = " + body.replace(b"\r\n", b"|") + b"\n")
typ, data = m.fetch("1", "(FLAGS ENVELOPE)")
print("env", data[0].decode())
for crit in ["FROM ann", "HEADER Message-ID r1@example", "SINCE 4-Feb-2024", "BEFORE 4-Feb-2024", "LARGER 500", "SMALLER 500",
             "FLAGGED", "KEYWORD $Work", "TEXT quarterly", "BODY hi", "SENTBEFORE 3-Jan-2024", "SUBJECT tiny", "OR FLAGGED SUBJECT tiny", "NOT FLAGGED"]:
    typ, data = m.search(None, crit)
    print("search", crit, "=", data[0].decode())
typ, data = m.fetch("1", "(FLAGS)")
print("unseen", data[0].decode())
typ, data = m.fetch("1", "(BODY[TEXT])")
print("seen", [d.decode() for d in data if isinstance(d, bytes)], [d[0].decode() for d in data if isinstance(d, tuple)])
m.logout()
"#;

fn out_line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{out}"))
}

#[tokio::test]
async fn imaplib_append_fetch_structure_and_search() {
    let s = start_server(|_| {}).await;
    let port = s.imap.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(IMAPLIB_MESSAGES)
            .arg(&port)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(MULTIPART.as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    })
    .await
    .unwrap();
    let inbox = s.store().mailbox("alice@localhost", "INBOX").unwrap().unwrap();
    assert!(
        out_line(&out, "append").starts_with(&format!("append OK [APPENDUID {} 1]", inbox.uidvalidity)),
        "{out}"
    );
    assert!(out_line(&out, "select").starts_with("select OK 2"), "{out}");
    assert_eq!(out_line(&out, "exact"), "exact yes");
    let bs = out_line(&out, "bs");
    assert!(
        bs.contains(
            r#"BODYSTRUCTURE ((("text" "plain" ("charset" "utf-8") NIL NIL "7BIT" 27 1 NIL NIL NIL NIL)("text" "html" ("charset" "utf-8") NIL NIL "7BIT" 34 1 NIL NIL NIL NIL) "alternative" ("boundary" "inner") NIL NIL NIL)("application" "pdf" ("name" "q1.pdf") NIL NIL "BASE64" 12 NIL ("attachment" ("filename" "q1.pdf")) NIL NIL) "mixed" ("boundary" "outer") NIL NIL NIL)"#
        ),
        "{bs}"
    );
    assert!(
        out.contains("part 1 (BODY[1.1] {27} = Quarterly numbers attached."),
        "{out}"
    );
    assert!(
        out.contains("part BODY[2.MIME] {135} = Content-Type: application/pdf; name=\"q1.pdf\"|"),
        "{out}"
    );
    assert!(
        out.contains(&format!("part BODY[]<10> {{20}} = {}", &MULTIPART[10..30])),
        "{out}"
    );
    assert!(out.contains("part BINARY[2] {9} = %PDF-1.4\n"), "{out}");
    let env = out_line(&out, "env");
    assert!(
        env.contains(
            r#"ENVELOPE ("Mon, 05 Feb 2024 10:00:00 +0000" "Report" (("Ann Example" NIL "ann" "example.org"))"#
        ),
        "{env}"
    );
    assert!(env.contains(r#"FLAGS (\Flagged $Work)"#), "{env}");
    for (crit, want) in [
        ("FROM ann", "1"),
        ("HEADER Message-ID r1@example", "1"),
        ("SINCE 4-Feb-2024", "1"),
        ("BEFORE 4-Feb-2024", "2"),
        ("LARGER 500", "1"),
        ("SMALLER 500", "2"),
        ("FLAGGED", "1"),
        ("KEYWORD $Work", "1"),
        ("TEXT quarterly", "1"),
        ("BODY hi", "2"),
        ("SENTBEFORE 3-Jan-2024", "2"),
        ("SUBJECT tiny", "2"),
        ("OR FLAGGED SUBJECT tiny", "1 2"),
        ("NOT FLAGGED", "2"),
    ] {
        assert_eq!(
            out_line(&out, &format!("search {crit} =")),
            format!("search {crit} = {want}")
        );
    }
    assert!(!out_line(&out, "unseen").contains("\\Seen"), "{out}");
    assert!(
        out_line(&out, "seen").contains("\\Seen"),
        "non-PEEK fetch sets \\Seen: {out}"
    );
}

#[tokio::test]
async fn store_flags_modseq_copy_move_and_uid_expunge() {
    let s = start_server(|_| {}).await;
    for i in 1..=3 {
        assert!(
            transact(&s, "x@example.org", &["alice@localhost"], &format!("m{i}"), "body")
                .await
                .starts_with("250")
        );
    }
    let mut c = raw(s.imap).await;
    c.login("alice@localhost").await;
    let r = c.cmd("a", "SELECT INBOX (CONDSTORE)", "OK").await;
    assert!(r.contains("* 3 EXISTS") && r.contains("[HIGHESTMODSEQ "), "{r}");
    let r = c.cmd("b", "FETCH 1:* (UID MODSEQ)", "OK").await;
    let modseq1 = modseq_of(&r, 1);
    let modseq2 = modseq_of(&r, 2);
    let r = c.cmd("c", "STORE 1 +FLAGS (\\Seen custom)", "OK").await;
    // The new keyword is announced first (RFC 3501 §7.2.6); the message is \Recent to us.
    assert!(
        r.contains("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft custom)\r\n* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft custom \\*)]"),
        "{r}"
    );
    assert!(r.contains("* 1 FETCH (FLAGS (\\Seen \\Recent custom) MODSEQ ("), "{r}");
    let r = c.cmd("d", "FETCH 1 (MODSEQ)", "OK").await;
    assert!(!r.contains(&format!("MODSEQ ({modseq1})")), "modseq must grow: {r}");
    // UNCHANGEDSINCE with the stale modseq fails for message 1 only.
    assert!(modseq_of(&r, 1) > modseq2);
    let r = c
        .cmd(
            "e",
            &format!("STORE 1,2 (UNCHANGEDSINCE {modseq2}) +FLAGS.SILENT (\\Flagged)"),
            "OK",
        )
        .await;
    assert!(r.contains("[MODIFIED 1]"), "{r}");
    let r = c.cmd("f", "SEARCH FLAGGED", "OK").await;
    assert!(r.contains("* SEARCH 2\r\n"), "{r}");
    let r = c.cmd("g", "FETCH 1:* (FLAGS) (CHANGEDSINCE 1)", "OK").await;
    assert!(r.contains("* 1 FETCH") && r.contains("* 2 FETCH"), "{r}");
    let r = c.cmd("h", "UID COPY 1:2 Trash", "OK").await;
    let trash = s.store().mailbox("alice@localhost", "Trash").unwrap().unwrap();
    assert!(r.contains(&format!("[COPYUID {} 1:2 1:2]", trash.uidvalidity)), "{r}");
    let r = c.cmd("i", "MOVE 3 Drafts", "OK").await;
    assert!(r.contains("* OK [COPYUID ") && r.contains("* 3 EXPUNGE"), "{r}");
    assert_eq!(s.subjects("alice@localhost", "Drafts"), vec!["m3"]);
    c.cmd("j", "STORE 1:2 +FLAGS.SILENT (\\Deleted)", "OK").await;
    let r = c.cmd("k", "UID EXPUNGE 2", "OK").await;
    assert!(r.contains("* 2 EXPUNGE") && !r.contains("* 1 EXPUNGE"), "{r}");
    assert_eq!(s.subjects("alice@localhost", "INBOX"), vec!["m1"]);
    assert_eq!(s.subjects("alice@localhost", "Trash").len(), 2);
    c.cmd("l", "COPY 1 Nowhere", "NO [TRYCREATE]").await;
    c.cmd("m", "EXAMINE INBOX", "OK [READ-ONLY]").await;
    c.cmd("n", "STORE 1 +FLAGS (\\Seen)", "NO").await;
    c.cmd("o", "LOGOUT", "OK").await;
}

/// The MODSEQ of message `seq` in a FETCH response.
fn modseq_of(r: &str, seq: u32) -> u64 {
    r.lines()
        .find(|l| l.starts_with(&format!("* {seq} FETCH")))
        .and_then(|l| l.split("MODSEQ (").nth(1))
        .and_then(|x| x.split(')').next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no MODSEQ for {seq} in {r}"))
}

#[tokio::test]
async fn concurrent_sessions_see_expunge_only_where_allowed() {
    let s = start_server(|_| {}).await;
    for i in 1..=3 {
        transact(&s, "x@example.org", &["alice@localhost"], &format!("m{i}"), "body").await;
    }
    let mut a = raw(s.imap).await;
    let mut b = raw(s.imap).await;
    a.login("alice@localhost").await;
    b.login("alice@localhost").await;
    // The first session to select gets the new mail as \Recent; the second does not.
    let r = a.cmd("a1", "SELECT INBOX", "OK").await;
    assert!(r.contains("* 3 RECENT"), "{r}");
    let r = b.cmd("b1", "SELECT INBOX", "OK").await;
    assert!(r.contains("* 0 RECENT"), "{r}");
    b.cmd("b2", "STORE 2 +FLAGS.SILENT (\\Deleted)", "OK").await;
    b.cmd("b3", "EXPUNGE", "OK").await;
    // A FETCH by sequence number must not carry the EXPUNGE; message 3 is still number 3.
    let r = a.cmd("a2", "FETCH 3 (UID)", "OK").await;
    assert!(!r.contains("EXPUNGE") && r.contains("* 3 FETCH (UID 3)"), "{r}");
    // The content of the expunged message 2 is gone: the client is told so (RFC 5530), and
    // what is still there comes back.
    let r = a.cmd("a2b", "FETCH 1:3 (BODY.PEEK[])", "NO").await;
    assert!(
        r.contains("NO [EXPUNGEISSUED]") && r.contains("* 1 FETCH") && r.contains("* 3 FETCH"),
        "{r}"
    );
    assert!(!r.contains("* 2 FETCH"), "{r}");
    let r = a.cmd("a3", "NOOP", "OK").await;
    assert!(r.contains("* 2 EXPUNGE"), "{r}");
    let r = a.cmd("a4", "FETCH 2 (UID)", "OK").await;
    assert!(r.contains("* 2 FETCH (UID 3)"), "{r}");
    // Flags from the other session arrive as FETCH; new mail as EXISTS.
    b.cmd("b4", "STORE 1 +FLAGS (\\Answered)", "OK").await;
    transact(&s, "x@example.org", &["alice@localhost"], "m4", "body").await;
    let r = a.cmd("a5", "NOOP", "OK").await;
    assert!(r.contains("* 1 FETCH (UID 1 FLAGS (\\Answered \\Recent))"), "{r}");
    assert!(r.contains("* 3 EXISTS\r\n* 3 RECENT"), "{r}");
    let r = b.cmd("b5", "NOOP", "OK").await;
    assert!(r.contains("* 3 EXISTS\r\n* 0 RECENT"), "a claimed m4 first: {r}");
    // A POP3 deletion shows up as an expunge too.
    let mut p = pop3_client(s.pop3).await;
    p.pop("USER alice@localhost", "+OK").await;
    p.pop(&format!("PASS {PASSWORD}"), "+OK").await;
    p.pop("DELE 1", "+OK").await;
    p.pop("QUIT", "+OK").await;
    let r = a.cmd("a6", "NOOP", "OK").await;
    assert!(r.contains("* 1 EXPUNGE"), "{r}");
}

async fn pop3_client(addr: std::net::SocketAddr) -> Client<TcpStream> {
    let s = TcpStream::connect(addr).await.unwrap();
    let mut c = Client { io: BufReader::new(s) };
    assert!(c.line().await.starts_with("+OK"));
    c
}

#[tokio::test]
async fn idle_is_woken_by_smtp_delivery_async_imap() {
    let s = start_server(|_| {}).await;
    transact(&s, "x@example.org", &["alice@localhost"], "before", "body").await;
    let tcp = TcpStream::connect(s.imap).await.unwrap();
    let mut client = async_imap::Client::new(tcp);
    let greeting = client.read_response().await.unwrap().expect("greeting");
    assert!(
        format!("{:?}", greeting.parsed()).contains("Ok"),
        "{:?}",
        greeting.parsed()
    );
    let mut session = client
        .login("alice@localhost", PASSWORD)
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let mb = session.select("INBOX").await.unwrap();
    assert_eq!(mb.exists, 1);
    let msgs: Vec<_> = session
        .fetch("1", "(UID RFC822.SIZE BODY.PEEK[HEADER])")
        .await
        .unwrap()
        .collect::<Vec<_>>()
        .await;
    let m = msgs[0].as_ref().unwrap();
    assert_eq!(m.uid, Some(1));
    let header = String::from_utf8_lossy(m.header().expect("header fetched"));
    assert!(
        header.contains("Subject: before\r\n") && header.ends_with("\r\n\r\n"),
        "{header}"
    );
    let mut idle = session.idle();
    idle.init().await.unwrap();
    let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(20));
    let smtp = s.smtp;
    let deliver = tokio::spawn(async move {
        let mut c = greeted(smtp).await;
        let r = send_mail(&mut c, "x@example.org", &["alice@localhost"], &message("during", "b")).await;
        assert!(r.starts_with("250"));
    });
    let woke = wait.await.unwrap();
    assert!(
        matches!(&woke, async_imap::extensions::idle::IdleResponse::NewData(d) if format!("{:?}", d.parsed()).contains("Exists(2)")),
        "{woke:?}"
    );
    deliver.await.unwrap();
    let mut session = idle.done().await.unwrap();
    let uids = session.uid_search("SUBJECT during").await.unwrap();
    assert_eq!(uids.into_iter().collect::<Vec<_>>(), vec![2]);
    session.logout().await.unwrap();
}

#[tokio::test]
async fn learn_events_for_junk_moves_copies_and_appends() {
    let s = start_server(|_| {}).await;
    let mut events = s.running.shared.learn.subscribe();
    for i in 1..=3 {
        transact(&s, "x@example.org", &["alice@localhost"], &format!("m{i}"), "body").await;
    }
    let mut c = raw(s.imap).await;
    c.login("alice@localhost").await;
    c.cmd("a", "SELECT INBOX", "OK").await;
    c.cmd("b", "MOVE 1 Junk", "OK").await;
    let e = events.try_recv().unwrap();
    assert!(e.spam && e.account == "alice@localhost");
    c.cmd("c", "COPY 1 Junk", "OK").await; // now m2
    assert!(events.try_recv().unwrap().spam);
    c.cmd("d", "SELECT Junk", "OK").await;
    c.cmd("e", "MOVE 1 Trash", "OK").await; // Junk → Trash: nothing
    assert!(events.try_recv().is_err());
    c.cmd("f", "MOVE 1 INBOX", "OK").await; // out of Junk: ham
    let e = events.try_recv().unwrap();
    assert!(!e.spam);
    let spam = "Subject: spam\r\n\r\nbuy\r\n";
    c.send(&format!("g APPEND Junk {{{}+}}\r\n{spam}\r\n", spam.len()))
        .await;
    let r = c.until("g").await;
    assert!(r.contains("g OK [APPENDUID"), "{r}");
    let e = events.try_recv().unwrap();
    assert!(e.spam);
    assert_eq!(e.blob, mailgate::store::blob_id(spam.as_bytes()));
}

#[tokio::test]
async fn literals_limits_and_bad_input_in_every_state() {
    let s = start_server(|c| c.imap.max_append_bytes = 1000).await;
    let mut c = raw(s.imap).await;
    // Not authenticated.
    c.cmd("a1", "SELECT INBOX", "BAD").await;
    c.cmd("a2", "FROB", "BAD").await;
    c.send("\r\n").await;
    assert!(c.line().await.starts_with("* BAD"));
    c.cmd("a3", "LOGIN alice@localhost wrong", "NO [AUTHENTICATIONFAILED]")
        .await;
    c.cmd("a4", "LOGIN \"unterminated", "BAD").await;
    // A synchronising literal login works; too large a literal is refused before it is sent.
    c.send("a5 LOGIN {15}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    c.send(&format!("alice@localhost {PASSWORD}\r\n")).await;
    assert!(c.until("a5").await.contains("a5 OK"));
    // Authenticated.
    c.cmd("b1", "FETCH 1 FLAGS", "BAD").await;
    c.cmd("b2", "LOGIN a b", "BAD").await;
    c.send("b3 APPEND INBOX {5000}\r\n").await;
    let r = c.line().await;
    assert!(r.starts_with("b3 NO [TOOBIG]"), "{r}");
    c.cmd("b4", "SELECT Nowhere", "NO").await;
    c.cmd("b5", "CREATE \"\"", "NO").await;
    c.cmd("b6", "SELECT INBOX", "OK").await;
    // Selected.
    c.cmd("c1", "FETCH 1 FLAGS", "BAD").await; // empty mailbox
    c.cmd("c2", "FETCH 1:* (NOSUCH)", "BAD").await;
    c.cmd("c3", "STORE 1 +FLAGS (\\Recent2)", "BAD").await;
    c.cmd("c4", "SEARCH CHARSET KOI8-R ALL", "NO [BADCHARSET").await;
    c.cmd("c5", "UID FETCH 1:* FLAGS", "OK").await;
    c.cmd("c6", "SEARCH (OR", "BAD").await;
    c.cmd("c7", "NOOP", "OK").await;
    // A non-synchronising literal that is too large ends the session.
    c.send("c8 APPEND INBOX {5000+}\r\n").await;
    assert!(c.line().await.starts_with("* BYE [TOOBIG]"));
    assert!(c.line().await.is_empty());
    // A line past the limit ends the session too.
    let mut d = raw(s.imap).await;
    d.send(&format!("x {}\r\n", "A".repeat(70_000))).await;
    assert!(d.line().await.starts_with("* BYE"));
}

#[tokio::test]
async fn starttls_discards_injected_plaintext_and_login_needs_tls_off_loopback() {
    let s = start_server(|c| c.auth.plaintext = mailgate::config::Plaintext::Never).await;
    let mut c = raw(s.imap).await;
    let r = c.cmd("a", "CAPABILITY", "OK").await;
    assert!(
        r.contains("STARTTLS") && r.contains("LOGINDISABLED") && !r.contains("AUTH=PLAIN"),
        "{r}"
    );
    c.cmd(
        "b",
        &format!("LOGIN alice@localhost {PASSWORD}"),
        "NO [PRIVACYREQUIRED]",
    )
    .await;
    // The injected command after STARTTLS must not run over TLS.
    c.send("c STARTTLS\r\nd CAPABILITY\r\n").await;
    assert!(c.line().await.starts_with("c OK"));
    let tcp = c.io.into_inner();
    let tls = crate::smtp_tls::connector(&s.cert_path())
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let mut t = Raw {
        io: BufReader::new(tls),
    };
    t.send("e NOOP\r\n").await;
    let r = t.line().await;
    assert!(r.starts_with("e OK"), "injected command answered: {r}");
    let r = t.cmd("f", "CAPABILITY", "OK").await;
    assert!(r.contains("AUTH=PLAIN") && !r.contains("STARTTLS"), "{r}");
    t.send(&format!(
        "g AUTHENTICATE PLAIN {}\r\n",
        sasl("alice@localhost", PASSWORD)
    ))
    .await;
    assert!(t.until("g").await.contains("g OK"));
    t.cmd("h", "LOGOUT", "OK").await;
}

fn sasl(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
}

#[tokio::test]
async fn on_fetch_policies_hide_and_stamp_imap_reads() {
    let p = r#"
function on_fetch(e)
  if e.message.subject == "secret" then return { action = "hide" } end
  return { add_headers = { { name = "X-Fetched-By", value = e.user .. " " .. e.mailbox } } }
end"#;
    let s = start_with_policies(&[("10-fetch.lua", p)], |_| {}).await;
    transact(&s, "a@example.org", &["alice@localhost"], "secret", "x").await;
    transact(&s, "a@example.org", &["alice@localhost"], "open", "x").await;
    let mut c = raw(s.imap).await;
    c.login("alice@localhost").await;
    c.cmd("a", "SELECT INBOX", "OK").await;
    let r = c.cmd("b", "FETCH 1 BODY.PEEK[]", "NO").await;
    assert!(!r.contains("Subject: secret"), "{r}");
    let r = c.cmd("c", "FETCH 2 (RFC822.SIZE BODY.PEEK[])", "OK").await;
    let body = r.split_once("}\r\n").map(|(_, b)| b).unwrap_or("");
    assert!(body.starts_with("X-Fetched-By: alice@localhost INBOX\r\n"), "{r}");
    let size = number_after(&r, "RFC822.SIZE ");
    let literal = number_after(&r, "BODY[] {");
    assert_eq!(size, literal, "RFC822.SIZE is the size of what the client gets");
    // Metadata-only fetches do not run the hook.
    c.cmd("d", "FETCH 1 (FLAGS UID)", "OK").await;
}

/// The number right after `prefix` in `r`.
fn number_after(r: &str, prefix: &str) -> usize {
    let rest = r.split(prefix).nth(1).unwrap_or_else(|| panic!("no {prefix:?} in {r}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

/// A client looping on invalid commands gets `* BYE` after `max_bad_commands` of them
/// (NO answers, which valid commands get, do not count).
#[tokio::test]
async fn a_session_of_invalid_commands_is_closed() {
    let s = start_server(|c| c.imap.max_bad_commands = 3).await;
    let mut r = raw(s.imap).await;
    r.login("alice@localhost").await;
    for i in 0..5 {
        r.cmd(&format!("n{i}"), "SELECT nosuch", "NO").await;
    }
    r.cmd("b1", "FROB", "BAD").await;
    r.cmd("b2", "FETCH 1 FLAGS", "BAD").await; // nothing selected
    r.send("b3 SELECT\r\n").await;
    assert!(r.line().await.starts_with("b3 BAD"));
    assert!(r.line().await.starts_with("* BYE Too many invalid IMAP commands"));
    let mut rest = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r.io, &mut rest)
        .await
        .unwrap();
    assert!(rest.is_empty(), "closed after the BYE");
}

#[tokio::test]
async fn nul_bytes_only_in_binary_literals() {
    let s = start_server(|_| {}).await;
    let mut c = raw(s.imap).await;
    c.login("alice@localhost").await;
    // A binary APPEND (RFC 3516 literal8) of a message with a NUL in its body.
    let msg =
        b"Subject: nul\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\na\0b\r\n";
    let mut cmd = format!("a APPEND INBOX ~{{{}+}}\r\n", msg.len()).into_bytes();
    cmd.extend_from_slice(msg);
    cmd.extend_from_slice(b"\r\n");
    c.io.get_mut().write_all(&cmd).await.unwrap();
    c.until("a").await;
    c.cmd("b", "SELECT INBOX", "OK").await;
    let r = c
        .cmd("c", "FETCH 1 (BODY.PEEK[TEXT] BODY.PEEK[] RFC822.TEXT)", "OK")
        .await;
    assert!(!r.contains('\0'), "no NUL in a plain literal: {r:?}");
    assert!(
        r.contains("BODY[TEXT] {5}\r\na\u{FFFD}b\r\n"),
        "NUL sent as 0x80: {r:?}"
    );
    let r = c.cmd("d", "FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])", "OK").await;
    assert!(r.contains("BINARY[1] ~{5}\r\na\0b\r\n"), "{r:?}");
    assert!(r.contains("BINARY.SIZE[1] 5"), "{r:?}");
}

/// Applies the untagged EXISTS/EXPUNGE of a reply to a client's view of the mailbox size,
/// checking each EXPUNGE names a message the client knows of.
fn apply_updates(count: &mut u32, reply: &str) {
    for l in reply.lines() {
        let mut w = l.split_whitespace();
        if w.next() != Some("*") {
            continue;
        }
        let (Some(n), Some(kind)) = (w.next().and_then(|n| n.parse::<u32>().ok()), w.next()) else {
            continue;
        };
        match kind {
            "EXISTS" => *count = n,
            "EXPUNGE" => {
                assert!(
                    n >= 1 && n <= *count,
                    "EXPUNGE {n} with {count} messages known:\n{reply}"
                );
                *count -= 1;
            }
            "FETCH" => assert!(n >= 1 && n <= *count, "FETCH {n} with {count} messages known:\n{reply}"),
            _ => {}
        }
    }
}

/// Two sessions on one mailbox: one stores flags and expunges while mail arrives, the other
/// fetches and searches. The watcher's view, kept only from EXISTS and EXPUNGE, always
/// matches the mailbox, and no response names a message number it does not know.
#[tokio::test]
async fn a_watching_session_keeps_a_true_view_while_another_expunges() {
    let s = start_server(|_| {}).await;
    for i in 0..12 {
        transact(&s, "x@example.org", &["alice@localhost"], &format!("m{i}"), "body").await;
    }
    let mut a = raw(s.imap).await;
    let mut b = raw(s.imap).await;
    a.login("alice@localhost").await;
    b.login("alice@localhost").await;
    a.cmd("a0", "SELECT INBOX", "OK").await;
    let r = b.cmd("b0", "SELECT INBOX", "OK").await;
    let mut count = 0;
    apply_updates(&mut count, &r);
    assert_eq!(count, 12);
    for round in 0..8 {
        // The changer: flag two, expunge one, and new mail arrives.
        a.cmd(&format!("a{round}s"), "STORE 1:2 +FLAGS (\\Flagged)", "OK").await;
        a.cmd(&format!("a{round}d"), "STORE 1 +FLAGS.SILENT (\\Deleted)", "OK")
            .await;
        a.cmd(&format!("a{round}e"), "EXPUNGE", "OK").await;
        if round % 2 == 0 {
            transact(&s, "x@example.org", &["alice@localhost"], &format!("n{round}"), "body").await;
        }
        // The watcher: by sequence number nothing may be expunged under it...
        let r = b.cmd(&format!("b{round}f"), "FETCH 1:* (FLAGS)", "OK").await;
        assert!(!r.contains("EXPUNGE"), "{r}");
        apply_updates(&mut count, &r);
        let r = b.cmd(&format!("b{round}s"), "SEARCH FLAGGED", "OK").await;
        apply_updates(&mut count, &r);
        // ...and a UID command brings the view up to date, matching the mailbox.
        let r = b.cmd(&format!("b{round}u"), "UID SEARCH ALL", "OK").await;
        apply_updates(&mut count, &r);
        let uids = r
            .lines()
            .find(|l| l.starts_with("* SEARCH"))
            .map_or(0, |l| l.split_whitespace().count() - 2);
        assert_eq!(count as usize, uids, "round {round}: the view drifted:\n{r}");
        let mb = s.store().mailbox("alice@localhost", "INBOX").unwrap().unwrap();
        assert_eq!(s.store().messages(mb.id).unwrap().len(), uids, "round {round}");
    }
}

/// The numbers of a sequence set in its order (`3:4,1` is 3, 4, 1).
fn set_numbers(set: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in set.split(',') {
        match part.split_once(':') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().unwrap(), b.parse().unwrap());
                if a <= b {
                    out.extend(a..=b)
                } else {
                    out.extend((b..=a).rev())
                }
            }
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}

/// Applies the `ESEARCH (TAG "tag") ... REMOVEFROM/ADDTO` updates in `reply` to `result`
/// as RFC 5267 §4.3 has a client do: position 0 is a set change, any other a place in the
/// ordered result (checked: a removal must name the message at that place).
fn apply_context_updates(result: &mut Vec<u32>, tag: &str, reply: &str) {
    let head = format!("* ESEARCH (TAG \"{tag}\") UID");
    for l in reply.lines().filter(|l| l.starts_with(&head)) {
        let mut rest = &l[head.len()..];
        while let Some(open) = rest.find('(') {
            let kind = rest[..open].trim();
            let close = rest[open..].find(')').unwrap() + open;
            let (pos, set) = rest[open + 1..close].split_once(' ').unwrap();
            let pos: usize = pos.parse().unwrap();
            let nums = set_numbers(set);
            match (kind, pos) {
                ("REMOVEFROM", 0) => result.retain(|u| !nums.contains(u)),
                ("ADDTO", 0) => {
                    result.extend(&nums);
                    result.sort_unstable();
                }
                ("REMOVEFROM", p) => {
                    for (k, u) in nums.iter().enumerate() {
                        assert_eq!(result.get(p - 1), Some(u), "REMOVEFROM {p}+{k} in {result:?}: {l}");
                        result.remove(p - 1);
                    }
                }
                ("ADDTO", p) => {
                    for (k, u) in nums.iter().enumerate() {
                        assert!(p - 1 + k <= result.len(), "ADDTO past the end: {l}");
                        result.insert(p - 1 + k, *u);
                    }
                }
                other => panic!("unexpected update {other:?} in {l}"),
            }
            rest = &rest[close + 1..];
        }
    }
}

fn esearch_all(reply: &str, tag: &str) -> Vec<u32> {
    let head = format!("* ESEARCH (TAG \"{tag}\") UID");
    let l = reply
        .lines()
        .find(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("{reply}"));
    match l.split_once(" ALL ") {
        Some((_, set)) => set_numbers(set.trim()),
        None => Vec::new(),
    }
}

/// CONTEXT=SEARCH/SORT across sessions (RFC 5267 §4): one session keeps a live SEARCH and a
/// live SORT while another flags, unflags and expunges and new mail arrives. Applying only
/// the ADDTO/REMOVEFROM updates it was sent, the watcher's results always equal a fresh search.
#[tokio::test]
async fn live_search_contexts_follow_another_sessions_changes() {
    let s = start_server(|_| {}).await;
    let subjects = ["kiwi", "apple", "fig", "banana", "cherry", "date", "elder", "grape"];
    for sub in subjects {
        transact(&s, "x@example.org", &["alice@localhost"], sub, "body").await;
    }
    let mut a = raw(s.imap).await;
    let mut b = raw(s.imap).await;
    a.login("alice@localhost").await;
    b.login("alice@localhost").await;
    a.cmd("a0", "SELECT INBOX", "OK").await;
    b.cmd("b0", "SELECT INBOX", "OK").await;
    let r = b.cmd("s1", "UID SEARCH RETURN (ALL UPDATE) FLAGGED", "OK").await;
    let mut flagged = esearch_all(&r, "s1");
    assert!(flagged.is_empty(), "{r}");
    let r = b
        .cmd("s2", "UID SORT RETURN (ALL UPDATE) (SUBJECT) UTF-8 UNSEEN", "OK")
        .await;
    let mut unseen = esearch_all(&r, "s2");
    assert_eq!(unseen.len(), subjects.len(), "{r}");
    let ops = [
        "STORE 1:3 +FLAGS (\\Flagged)",
        "STORE 2,4 +FLAGS (\\Seen)",
        "STORE 2 -FLAGS (\\Flagged)",
        "STORE 1 +FLAGS.SILENT (\\Deleted)",
        "EXPUNGE",
        "STORE 1:* -FLAGS (\\Seen)",
        "STORE 2:4 +FLAGS (\\Flagged \\Seen)",
        "STORE 3 +FLAGS.SILENT (\\Deleted)",
        "EXPUNGE",
    ];
    for (round, op) in ops.iter().enumerate() {
        a.cmd(&format!("a{round}"), op, "OK").await;
        if round % 3 == 0 {
            transact(
                &s,
                "x@example.org",
                &["alice@localhost"],
                &format!("new{round}"),
                "body",
            )
            .await;
        }
        let r = b.cmd(&format!("n{round}"), "NOOP", "OK").await;
        apply_context_updates(&mut flagged, "s1", &r);
        apply_context_updates(&mut unseen, "s2", &r);
        let fresh = b
            .cmd(&format!("f{round}"), "UID SEARCH RETURN (ALL) FLAGGED", "OK")
            .await;
        assert_eq!(flagged, esearch_all(&fresh, &format!("f{round}")), "after {op}:\n{r}");
        let fresh = b
            .cmd(
                &format!("g{round}"),
                "UID SORT RETURN (ALL) (SUBJECT) UTF-8 UNSEEN",
                "OK",
            )
            .await;
        assert_eq!(unseen, esearch_all(&fresh, &format!("g{round}")), "after {op}:\n{r}");
    }
    // After CANCELUPDATE nothing more comes.
    b.cmd("c", "CANCELUPDATE \"s1\" \"s2\"", "OK").await;
    a.cmd("z", "STORE 1:* +FLAGS (\\Flagged)", "OK").await;
    let r = b.cmd("n", "NOOP", "OK").await;
    assert!(!r.contains("ESEARCH"), "{r}");
}

/// The quoted URLs of `* GENURLAUTH "u1" "u2"`.
fn genurlauth_urls(reply: &str) -> Vec<String> {
    let line = reply
        .lines()
        .find(|l| l.starts_with("* GENURLAUTH "))
        .unwrap_or_else(|| panic!("{reply}"));
    line["* GENURLAUTH ".len()..]
        .split('"')
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// URLAUTH (RFC 4467) and URLAUTH=BINARY (RFC 5524): alice signs URLs to her messages; each
/// is fetched only by whom its access identifier names, only with its token intact, only
/// until it expires or her key is reset; BINARY decodes a base64 part.
#[tokio::test]
async fn urlauth_signs_urls_that_only_their_audience_can_fetch() {
    let s = start_server(|_| {}).await;
    let msg = "From: a@example.org\r\nSubject: signed\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\
Content-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQ=\r\n--b--\r\n";
    let mut a = raw(s.imap).await;
    a.login("alice@localhost").await;
    let r = a.cmd("c0", "CAPABILITY", "OK").await;
    assert!(r.contains(" URLAUTH URLAUTH=BINARY"), "{r}");
    a.send(&format!("a1 APPEND INBOX {{{}+}}\r\n{msg}\r\n", msg.len()))
        .await;
    a.until("a1").await;
    let base = "imap://alice%40localhost@mx.test/INBOX/;uid=1";
    let r = a
        .cmd(
            "g1",
            &format!(
                "GENURLAUTH \"{base};urlauth=user+alice%40localhost\" INTERNAL \"{base}/;section=1;urlauth=authuser\" INTERNAL \
\"{base};expire=2001-01-01T00:00:00Z;urlauth=anonymous\" INTERNAL"
            ),
            "OK",
        )
        .await;
    let urls = genurlauth_urls(&r);
    assert_eq!(urls.len(), 3, "{r}");
    assert!(
        urls[0].starts_with(&format!("{base};urlauth=user+alice%40localhost:INTERNAL:")),
        "{r}"
    );
    let (own, part, expired) = (&urls[0], &urls[1], &urls[2]);
    // Her own URL, whole: the message as stored.
    let r = a.cmd("f1", &format!("URLFETCH \"{own}\""), "OK").await;
    assert!(
        r.contains(&format!("* URLFETCH \"{own}\" {{{}}}\r\n{msg}", msg.len())),
        "{r}"
    );
    // The part, decoded, with its structure; the expired one is NIL.
    let r = a
        .cmd(
            "f2",
            &format!("URLFETCH (\"{part}\" BINARY BODYPARTSTRUCTURE) \"{expired}\""),
            "OK",
        )
        .await;
    assert!(r.contains("(BODYPARTSTRUCTURE (\"text\" \"plain\""), "{r}");
    assert!(r.contains("(BINARY {11}\r\nhello world)"), "{r}");
    assert!(r.contains(&format!("* URLFETCH \"{expired}\" NIL")), "{r}");
    // A token changed in one digit is worth nothing.
    let mut forged = own.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let r = a.cmd("f3", &format!("URLFETCH \"{forged}\""), "OK").await;
    assert!(r.contains(" NIL\r\n"), "{r}");
    // Bob: the authuser URL is his to fetch, alice's own is not.
    let mut b = raw(s.imap).await;
    b.login("bob@localhost").await;
    let r = b.cmd("f4", &format!("URLFETCH \"{part}\" \"{own}\""), "OK").await;
    assert!(r.contains(&format!("* URLFETCH \"{part}\" {{")), "{r}");
    assert!(r.contains(&format!("* URLFETCH \"{own}\" NIL")), "{r}");
    // ...and he may CATENATE it into his own mailbox.
    b.cmd("f5", &format!("APPEND Drafts CATENATE (URL \"{part}\")"), "OK")
        .await;
    // Only the user a URL names may sign it; INTERNAL is the one mechanism; a URL with a
    // token already is no rump.
    b.cmd("g2", &format!("GENURLAUTH \"{base};urlauth=anonymous\" INTERNAL"), "NO")
        .await;
    a.cmd("g3", &format!("GENURLAUTH \"{base};urlauth=anonymous\" FANCY"), "NO")
        .await;
    a.cmd("g4", &format!("GENURLAUTH \"{own}\" INTERNAL"), "NO").await;
    // RESETKEY voids every URL of the mailbox.
    a.cmd("r1", "RESETKEY INBOX", "OK").await;
    let r = a.cmd("f6", &format!("URLFETCH \"{own}\" \"{part}\""), "OK").await;
    assert_eq!(r.matches(" NIL\r\n").count(), 2, "{r}");
    a.cmd("r2", "RESETKEY Nowhere", "NO").await;
    a.cmd("r3", "RESETKEY", "OK").await;
}

fn number_in(reply: &str, prefix: &str) -> u64 {
    let at = reply.find(prefix).unwrap_or_else(|| panic!("no {prefix} in {reply}")) + prefix.len();
    reply[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// QRESYNC (RFC 7162 §3.2): a client that comes back with its UIDVALIDITY and mod-sequence
/// learns what vanished and which flags changed meanwhile without fetching everything; while
/// selected it is told VANISHED instead of EXPUNGE.
#[tokio::test]
async fn qresync_reports_what_vanished_and_changed_while_away() {
    let s = start_server(|_| {}).await;
    for i in 1..=6 {
        transact(&s, "x@example.org", &["alice@localhost"], &format!("m{i}"), "body").await;
    }
    let mut a = raw(s.imap).await;
    a.login("alice@localhost").await;
    a.cmd("q0", "SELECT INBOX (QRESYNC (1 1))", "BAD").await;
    let r = a.cmd("q1", "ENABLE QRESYNC", "OK").await;
    assert!(r.contains("* ENABLED QRESYNC"), "{r}");
    let r = a.cmd("q2", "SELECT INBOX", "OK").await;
    let (uidvalidity, seen) = (number_in(&r, "[UIDVALIDITY "), number_in(&r, "[HIGHESTMODSEQ "));
    a.cmd("q3", "LOGOUT", "OK").await;
    // Meanwhile, elsewhere: 2 flagged, 4 and 5 expunged, a new message.
    let mut b = raw(s.imap).await;
    b.login("alice@localhost").await;
    b.cmd("b1", "SELECT INBOX", "OK").await;
    b.cmd("b2", "STORE 2 +FLAGS.SILENT (\\Flagged)", "OK").await;
    b.cmd("b3", "STORE 4:5 +FLAGS.SILENT (\\Deleted)", "OK").await;
    let r = b.cmd("b4", "EXPUNGE", "OK").await;
    assert!(
        r.contains("* 5 EXPUNGE") && !r.contains("VANISHED"),
        "without QRESYNC, EXPUNGE: {r}"
    );
    transact(&s, "x@example.org", &["alice@localhost"], "m7", "body").await;
    // Back again, knowing UIDs 1 to 6.
    let mut a = raw(s.imap).await;
    a.login("alice@localhost").await;
    a.cmd("q4", "ENABLE QRESYNC", "OK").await;
    let r = a
        .cmd(
            "q5",
            &format!("SELECT INBOX (QRESYNC ({uidvalidity} {seen} 1:6))"),
            "OK",
        )
        .await;
    assert!(r.contains("* VANISHED (EARLIER) 4:5\r\n"), "{r}");
    assert!(r.contains("* 2 FETCH (UID 2 FLAGS (\\Flagged"), "{r}");
    assert!(
        !r.contains("FETCH (UID 1 ") && !r.contains("UID 7"),
        "only known, changed ones: {r}"
    );
    assert!(r.contains("* 5 EXISTS"), "{r}");
    // A stale UIDVALIDITY gets a plain SELECT.
    let r = a.cmd("q6", "EXAMINE INBOX (QRESYNC (1 1))", "OK").await;
    assert!(r.contains("OK [CLOSED]") && !r.contains("VANISHED"), "{r}");
    a.cmd("q7", "SELECT INBOX", "OK").await;
    // Expunged by another session while selected: VANISHED, with the UID.
    b.cmd("b5", "STORE 1 +FLAGS.SILENT (\\Deleted)", "OK").await;
    b.cmd("b6", "EXPUNGE", "OK").await;
    let r = a.cmd("q8", "NOOP", "OK").await;
    assert!(r.contains("* VANISHED 1\r\n") && !r.contains("EXPUNGE"), "{r}");
    // UID FETCH with VANISHED: what is gone of the UIDs asked for, then what changed.
    let r = a
        .cmd(
            "q9",
            &format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {seen} VANISHED)"),
            "OK",
        )
        .await;
    assert!(r.contains("* VANISHED (EARLIER) 1,4:5\r\n"), "{r}");
    assert!(
        r.contains("UID 2 ") && r.contains("UID 7 ") && !r.contains("UID 3 "),
        "{r}"
    );
    a.cmd("qa", "FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)", "BAD").await;
    // Our own EXPUNGE too.
    a.cmd("qb", "UID STORE 3 +FLAGS.SILENT (\\Deleted)", "OK").await;
    let r = a.cmd("qc", "EXPUNGE", "OK").await;
    assert!(r.contains("* VANISHED 3\r\n") && !r.contains(" EXPUNGE\r\n"), "{r}");
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    /// Lines the server sends unasked, up to and including the first that contains `want`.
    async fn until_line(&mut self, want: &str) -> String {
        let mut all = String::new();
        loop {
            let l = self.line().await;
            assert!(!l.is_empty(), "closed while waiting for {want:?}; got {all}");
            all.push_str(&l);
            if l.contains(want) {
                return all;
            }
        }
    }
}

/// NOTIFY's INBOXES is every mailbox mail may be delivered to, and policies deliver into any
/// folder (Junk, at the least), so it is every personal mailbox (RFC 5465 §6.2).
#[tokio::test]
async fn notify_inboxes_covers_the_folders_policies_deliver_to() {
    let s = start_server(|_| {}).await;
    let mut a = raw(s.imap).await;
    a.login("alice@localhost").await;
    let r = a
        .cmd("a1", "NOTIFY SET STATUS (INBOXES (MessageNew MessageExpunge))", "OK")
        .await;
    for name in ["INBOX", "Junk", "Drafts"] {
        assert!(r.contains(&format!("* STATUS {name} (MESSAGES 0 ")), "{name}: {r}");
    }
    let mut b = raw(s.imap).await;
    b.login("alice@localhost").await;
    let msg = "Subject: filed\r\n\r\nx\r\n";
    b.send(&format!("b1 APPEND Junk {{{}+}}\r\n{msg}\r\n", msg.len())).await;
    b.until("b1").await;
    let got = a.until_line("STATUS Junk").await;
    assert!(got.contains("* STATUS Junk (MESSAGES 1 UIDNEXT 2 "), "{got}");
}

/// NOTIFY (RFC 5465): with nothing asked, a session hears of new mail and flag changes in the
/// selected mailbox (with the FETCH items it named), of mail in its other mailboxes as
/// STATUS, and of mailboxes created, renamed, deleted and subscribed elsewhere as LIST.
#[tokio::test]
async fn notify_tells_a_waiting_session_what_others_do() {
    let s = start_server(|_| {}).await;
    let mut a = raw(s.imap).await;
    a.login("alice@localhost").await;
    let r = a.cmd("a0", "CAPABILITY", "OK").await;
    assert!(r.contains(" NOTIFY"), "{r}");
    a.cmd("a1", "SELECT INBOX", "OK").await;
    a.cmd("a2", "NOTIFY SET (SELECTED (MessageNew (FLAGS)))", "BAD").await;
    a.cmd(
        "a3",
        "NOTIFY SET (PERSONAL (MessageNew MessageExpunge AnnotationChange))",
        "NO",
    )
    .await;
    a.cmd("a4", "NOTIFY SET (PERSONAL (MessageNew (UID) MessageExpunge))", "BAD")
        .await;
    let r = a
        .cmd(
            "a5",
            "NOTIFY SET STATUS (SELECTED (MessageNew (UID FLAGS) MessageExpunge FlagChange)) \
(PERSONAL (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange))",
            "OK",
        )
        .await;
    assert!(r.contains("* STATUS Drafts (MESSAGES 0 UIDNEXT 1 UIDVALIDITY "), "{r}");
    assert!(
        !r.contains("STATUS INBOX"),
        "the selected mailbox has its own notices: {r}"
    );
    // New mail in the selected mailbox, told unasked, with the FETCH items asked for.
    transact(&s, "x@example.org", &["alice@localhost"], "pushed", "body").await;
    let got = a.until_line(" FETCH (").await;
    assert!(got.contains("* 1 EXISTS\r\n"), "{got}");
    assert!(got.contains("* 1 FETCH (UID 1 FLAGS ("), "{got}");
    // Another session's doings.
    let mut b = raw(s.imap).await;
    b.login("alice@localhost").await;
    let msg = "Subject: draft\r\n\r\nx\r\n";
    b.send(&format!("b1 APPEND Drafts {{{}+}}\r\n{msg}\r\n", msg.len()))
        .await;
    b.until("b1").await;
    let got = a.until_line("STATUS Drafts").await;
    assert!(
        got.contains("* STATUS Drafts (MESSAGES 1 UIDNEXT 2 UIDVALIDITY "),
        "{got}"
    );
    assert!(
        got.contains(" HIGHESTMODSEQ "),
        "FlagChange asks for HIGHESTMODSEQ: {got}"
    );
    b.cmd("b2", "CREATE Projects", "OK").await;
    let got = a.until_line("Projects").await;
    assert!(got.contains("* LIST () \"/\" Projects\r\n"), "{got}");
    b.cmd("b3", "SUBSCRIBE Projects", "OK").await;
    let got = a.until_line("Projects").await;
    assert!(got.contains("* LIST (\\Subscribed) \"/\" Projects\r\n"), "{got}");
    b.cmd("b4", "RENAME Projects Work", "OK").await;
    let got = a.until_line("OLDNAME").await;
    assert!(
        got.contains("* LIST () \"/\" Work (\"OLDNAME\" (Projects))\r\n"),
        "{got}"
    );
    b.cmd("b5", "DELETE Work", "OK").await;
    let got = a.until_line("NonExistent").await;
    assert!(got.contains("* LIST (\\NonExistent) \"/\" Work\r\n"), "{got}");
    // Flags and expunges in the selected mailbox.
    b.cmd("b6", "SELECT INBOX", "OK").await;
    b.cmd("b7", "STORE 1 +FLAGS.SILENT (\\Flagged)", "OK").await;
    let got = a.until_line("FETCH").await;
    assert!(got.contains("* 1 FETCH (UID 1 FLAGS (\\Flagged"), "{got}");
    b.cmd("b8", "STORE 1 +FLAGS.SILENT (\\Deleted)", "OK").await;
    b.cmd("b9", "EXPUNGE", "OK").await;
    let got = a.until_line("EXPUNGE").await;
    assert!(got.contains("* 1 EXPUNGE\r\n"), "{got}");
    // Its own CREATE is not told back to it; another's after it is.
    a.cmd("a6", "CREATE Own", "OK").await;
    b.cmd("c1", "CREATE Other", "OK").await;
    let got = a.until_line("Other").await;
    assert!(!got.contains("Own"), "{got}");
    // NOTIFY NONE: quiet again until asked.
    a.cmd("a7", "NOTIFY NONE", "OK").await;
    b.send(&format!("c2 APPEND Drafts {{{}+}}\r\n{msg}\r\n", msg.len()))
        .await;
    b.until("c2").await;
    let r = a.cmd("a8", "NOOP", "OK").await;
    assert!(!r.contains("STATUS"), "{r}");
}
