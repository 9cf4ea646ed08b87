//! kill -9 while mail streams in: every message answered 250 is stored exactly once.

use crate::common::*;
use mailgate::store::{Mailboxes, Messages, SledStore};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const CLIENTS: usize = 8;

/// One whole transaction in one write (the server is mid-message most of the time), `lines`
/// lines of body; whether it was answered 250.
pub async fn pipelined(c: &mut Client<tokio::net::TcpStream>, rcpt: &str, subject: &str, lines: usize) -> bool {
    let mut batch = format!("MAIL FROM:<load@example.org>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n");
    batch.push_str(&message(subject, &"payload line\r\n".repeat(lines)));
    batch.push_str(".\r\n");
    c.send(batch.as_bytes()).await;
    let replies = [c.reply().await, c.reply().await, c.reply().await, c.reply().await];
    replies[3].starts_with("250")
}
const KILL_AFTER_ACKS: usize = 120;

/// Streams pipelined transactions (40-line bodies) from `clients` sessions into `addr`, to
/// the recipient `rcpt(client, n)` gives, until the server dies: `kill` runs once
/// `kill_after` have been acknowledged. Gives every acknowledged subject (`{prefix}-{client}-{n}`)
/// with its recipient.
pub async fn stream_until_killed(
    addr: std::net::SocketAddr,
    clients: usize,
    kill_after: usize,
    prefix: &str,
    rcpt: fn(usize, usize) -> &'static str,
    kill: impl FnOnce(),
) -> Vec<(String, &'static str)> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (acked, count, enough, prefix) = (acked.clone(), count.clone(), enough.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut c = greeted(addr).await;
            for n in 0.. {
                let (subject, to) = (format!("{prefix}-{client}-{n}"), rcpt(client, n));
                if !pipelined(&mut c, to, &subject, 40).await {
                    return; // the server died under us
                }
                acked.lock().unwrap().push((subject, to));
                if count.fetch_add(1, Ordering::SeqCst) + 1 == kill_after {
                    enough.notify_one();
                }
            }
        }));
    }
    enough.notified().await;
    kill();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= kill_after);
    acked
}

#[test]
fn kill_9_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_child_config(dir.path());
    let (code, _, err) = cli(&cfg, &["user", "add", "alice@localhost", "--password-stdin"], "pw");
    assert_eq!(code, 0, "{err}");
    let server = ChildServer::start(&cfg);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acked: Vec<String> = rt
        .block_on(stream_until_killed(
            server.smtp,
            CLIENTS,
            KILL_AFTER_ACKS,
            "crash",
            |_, _| "alice@localhost",
            || server.kill9(),
        ))
        .into_iter()
        .map(|(s, _)| s)
        .collect();

    // Restart: the server must come up on the crashed store and keep serving.
    let server = ChildServer::start(&cfg);
    rt.block_on(async {
        let mut c = greeted(server.smtp).await;
        let r = send_mail(
            &mut c,
            "a@example.org",
            &["alice@localhost"],
            &message("after-restart", "x"),
        )
        .await;
        assert!(r.starts_with("250"), "{r}");
    });
    assert!(server.terminate().success());

    let store = SledStore::open(&dir.path().join("data/store"), 16).unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let inbox = inbox_of(&store, "alice@localhost");
    for m in &inbox {
        let raw = store
            .blob(&m.meta.blob)
            .unwrap()
            .expect("every listed message has its body");
        assert_eq!(raw.len() as u64, m.meta.size, "uid {} is whole", m.uid);
        *seen.entry(subject_of(&raw)).or_default() += 1;
    }
    for s in &acked {
        assert_eq!(seen.get(s), Some(&1), "acknowledged {s} stored exactly once");
    }
    assert_eq!(seen.get("after-restart"), Some(&1));
    assert!(seen.values().all(|&n| n == 1), "no duplicates at all");
    let uids: Vec<_> = inbox.iter().map(|m| m.uid).collect();
    assert!(uids.windows(2).all(|w| w[0] < w[1]), "uids strictly grow");
}

/// kill -9 while mail for a relay domain streams in and goes out: after the restart every
/// message answered 250 reaches the next hop (at least once; a duplicate only for one whose
/// delivery was not yet recorded when the server died).
#[test]
fn kill_9_loses_no_queued_message() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut sink = rt.block_on(crate::outbound::sink());
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_child_config(dir.path());
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "\n[[relay]]\ndomain = \"filtered.example\"\nnext_hop = \"[127.0.0.1]:{}\"\n\n[outbound]\nretry_schedule = [\"1s\"]\n",
        sink.addr.port()
    ));
    std::fs::write(&cfg, text).unwrap();
    let server = ChildServer::start(&cfg);
    let acked: Vec<String> = rt
        .block_on(stream_until_killed(
            server.smtp,
            CLIENTS,
            KILL_AFTER_ACKS,
            "out",
            |_, _| "joe@filtered.example",
            || server.kill9(),
        ))
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let server = ChildServer::start(&cfg);
    rt.block_on(sink.until_has(&acked))
        .unwrap_or_else(|missing| panic!("acknowledged but never delivered: {missing:?}"));
    assert!(server.terminate().success());
}

/// A child config with a `protocol` listener (plaintext) ahead of the SMTP one, so its
/// "listening" line comes first ([`ChildServer::others`]), and the account alice@localhost.
fn config_with_alice(dir: &std::path::Path, protocol: &str) -> std::path::PathBuf {
    let cfg = write_child_config(dir);
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "[[listener]]",
        &format!("[[listener]]\nprotocol = \"{protocol}\"\nbind = \"127.0.0.1:0\"\ntls = \"none\"\n\n[[listener]]"),
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let (code, _, err) = cli(&cfg, &["user", "add", "alice@localhost", "--password-stdin"], "pw");
    assert_eq!(code, 0, "{err}");
    cfg
}

/// A minimal IMAP client for the crash loop: a tagged command and its reply lines.
struct Imap {
    io: tokio::io::BufReader<tokio::net::TcpStream>,
    n: usize,
}

impl Imap {
    async fn connect(addr: std::net::SocketAddr) -> Option<Imap> {
        use tokio::io::AsyncBufReadExt;
        let s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut c = Imap {
            io: tokio::io::BufReader::new(s),
            n: 0,
        };
        let mut greeting = String::new();
        c.io.read_line(&mut greeting).await.ok()?;
        Some(c)
    }

    /// Sends `cmd` (a literal, if any, inline with LITERAL+); the tagged reply line, or None
    /// when the server went away first.
    async fn cmd(&mut self, cmd: &[u8]) -> Option<(String, Vec<String>)> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        self.n += 1;
        let tag = format!("t{}", self.n);
        let mut line = format!("{tag} ").into_bytes();
        line.extend_from_slice(cmd);
        line.extend_from_slice(b"\r\n");
        self.io.get_mut().write_all(&line).await.ok()?;
        let mut untagged = Vec::new();
        loop {
            let mut l = String::new();
            if self.io.read_line(&mut l).await.ok()? == 0 {
                return None;
            }
            if l.starts_with(&format!("{tag} ")) {
                return Some((l, untagged));
            }
            untagged.push(l);
        }
    }
}

/// kill -9 while IMAP clients APPEND and EXPUNGE: after the restart every APPEND answered OK
/// is there exactly once, and nothing whose EXPUNGE was answered OK has come back.
#[test]
fn kill_9_keeps_appends_and_expunges() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_alice(dir.path(), "imap");
    let server = ChildServer::start(&cfg);
    let imap = server.listener("imap");
    let appended = Arc::new(Mutex::new(Vec::<String>::new()));
    let expunged = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for client in 0..4 {
            let (appended, expunged, count, enough) =
                (appended.clone(), expunged.clone(), count.clone(), enough.clone());
            tasks.push(tokio::spawn(async move {
                let Some(mut c) = Imap::connect(imap).await else { return };
                if c.cmd(b"LOGIN alice@localhost pw").await.is_none() {
                    return;
                }
                // Half the clients also remove what they appended.
                let expunging = client % 2 == 0;
                if expunging && c.cmd(b"SELECT INBOX").await.is_none() {
                    return;
                }
                for n in 0.. {
                    let subject = format!("ap-{client}-{n}");
                    let msg = message(&subject, &"payload line\r\n".repeat(40));
                    let mut cmd = format!("APPEND INBOX {{{}+}}\r\n", msg.len()).into_bytes();
                    cmd.extend_from_slice(msg.as_bytes());
                    let Some((reply, _)) = c.cmd(&cmd).await else { return };
                    if !reply.contains(" OK ") {
                        return;
                    }
                    let uid: u32 = reply
                        .split("APPENDUID ")
                        .nth(1)
                        .and_then(|r| r.split([' ', ']']).nth(1))
                        .and_then(|u| u.parse().ok())
                        .expect("APPENDUID");
                    if expunging {
                        let store = format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)");
                        let Some((r, _)) = c.cmd(store.as_bytes()).await else {
                            appended.lock().unwrap().push(subject); // acknowledged, maybe deleted
                            return;
                        };
                        assert!(r.contains(" OK "), "{r}");
                        match c.cmd(format!("UID EXPUNGE {uid}").as_bytes()).await {
                            Some((r, _)) if r.contains(" OK ") => expunged.lock().unwrap().push(subject),
                            _ => return, // unknown whether the expunge landed
                        }
                    } else {
                        appended.lock().unwrap().push(subject);
                    }
                    // Killed once enough is done, expunges included.
                    if count.fetch_add(1, Ordering::SeqCst) + 1 >= 60 && !expunged.lock().unwrap().is_empty() {
                        enough.notify_one();
                    }
                }
            }));
        }
        enough.notified().await;
        server.kill9();
        for t in tasks {
            t.await.unwrap();
        }
    });
    // Restart on the crashed store, then read it once the server has stopped.
    let server = ChildServer::start(&cfg);
    assert!(server.terminate().success());
    let store = SledStore::open(&dir.path().join("data/store"), 16).unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for subject in whole_subjects(&store, "alice@localhost") {
        *seen.entry(subject).or_default() += 1;
    }
    let appended = appended.lock().unwrap().clone();
    let expunged = expunged.lock().unwrap().clone();
    assert!(appended.len() + expunged.len() >= 60);
    assert!(!expunged.is_empty(), "some expunges were acknowledged");
    for s in &expunged {
        assert_eq!(seen.get(s), None, "expunged {s} came back");
    }
    for s in appended
        .iter()
        .filter(|s| !s.starts_with("ap-0-") && !s.starts_with("ap-2-"))
    {
        assert_eq!(seen.get(s), Some(&1), "appended {s} kept exactly once");
    }
    assert!(seen.values().all(|&n| n == 1), "no duplicates");
}

/// The subjects of `account`'s INBOX, in UID order, checking each message is whole (its
/// body there, of its recorded size).
fn whole_subjects(store: &SledStore, account: &str) -> Vec<String> {
    inbox_of(store, account)
        .into_iter()
        .map(|m| {
            let raw = store
                .blob(&m.meta.blob)
                .unwrap()
                .expect("every listed message has its body");
            assert_eq!(raw.len() as u64, m.meta.size, "uid {} is whole", m.uid);
            subject_of(&raw)
        })
        .collect()
}

/// A POP3 command's first reply line, or None when the server went away.
async fn pop_cmd(io: &mut tokio::io::BufReader<tokio::net::TcpStream>, cmd: &str) -> Option<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    io.get_mut().write_all(format!("{cmd}\r\n").as_bytes()).await.ok()?;
    let mut l = String::new();
    (io.read_line(&mut l).await.ok()? > 0).then_some(l)
}

/// kill -9 while POP3 clients delete: a message whose deletion was answered `+OK` at QUIT
/// never comes back after the restart.
#[test]
fn kill_9_never_brings_back_what_pop3_deleted() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_alice(dir.path(), "pop3");
    let server = ChildServer::start(&cfg);
    let pop3 = server.listener("pop3");
    let smtp = server.smtp;
    let deleted = Arc::new(Mutex::new(Vec::<String>::new()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Mail keeps arriving while the maildrop is emptied.
        let intake = tokio::spawn(async move {
            let mut c = greeted(smtp).await;
            for n in 0.. {
                if !pipelined(&mut c, "alice@localhost", &format!("pop-{n}"), 1).await {
                    return;
                }
            }
        });
        let enough = Arc::new(tokio::sync::Notify::new());
        let deleter = {
            let (deleted, enough) = (deleted.clone(), enough.clone());
            tokio::spawn(async move {
                loop {
                    let Ok(s) = tokio::net::TcpStream::connect(pop3).await else {
                        return;
                    };
                    let mut io = tokio::io::BufReader::new(s);
                    let mut greeting = String::new();
                    if io.read_line(&mut greeting).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let Some(_) = pop_cmd(&mut io, "USER alice@localhost").await else {
                        return;
                    };
                    let Some(r) = pop_cmd(&mut io, "PASS pw").await else {
                        return;
                    };
                    if !r.starts_with("+OK") {
                        continue; // in use by nobody else, but keep trying
                    }
                    // The subject of message 1, then delete it.
                    let Some(r) = pop_cmd(&mut io, "TOP 1 0").await else {
                        return;
                    };
                    if !r.starts_with("+OK") {
                        let _ = pop_cmd(&mut io, "QUIT").await;
                        continue; // empty maildrop for now
                    }
                    let mut head = Vec::new();
                    loop {
                        let mut l = String::new();
                        if io.read_line(&mut l).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if l == ".\r\n" {
                            break;
                        }
                        head.push(l);
                    }
                    let subject = subject_of(head.concat().as_bytes());
                    let Some(r) = pop_cmd(&mut io, "DELE 1").await else {
                        return;
                    };
                    assert!(r.starts_with("+OK"), "{r}");
                    match pop_cmd(&mut io, "QUIT").await {
                        Some(r) if r.starts_with("+OK") => deleted.lock().unwrap().push(subject),
                        _ => return, // unknown whether the deletion landed
                    }
                    if deleted.lock().unwrap().len() == 40 {
                        enough.notify_one();
                    }
                }
            })
        };
        // Killed while deletions (and intake) go on.
        enough.notified().await;
        server.kill9();
        deleter.await.unwrap();
        intake.await.unwrap();
    });
    let deleted = deleted.lock().unwrap().clone();
    assert!(deleted.len() >= 40, "{deleted:?}");
    let server = ChildServer::start(&cfg);
    assert!(server.terminate().success());
    let store = SledStore::open(&dir.path().join("data/store"), 16).unwrap();
    let present: Vec<String> = inbox_of(&store, "alice@localhost")
        .iter()
        .map(|m| subject_of(&store.blob(&m.meta.blob).unwrap().expect("body")))
        .collect();
    for s in &deleted {
        assert!(!present.contains(s), "{s} was deleted at QUIT (+OK) and came back");
    }
}

/// A small tmpfs mounted on a directory for one test (unmounted on drop), or `None` with the
/// reason printed where this process may not mount (not root, or no mount(8)).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a small file system needs root");
            return None;
        }
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("skipped: cannot mount a tmpfs here ({status:?})");
            return None;
        }
        Some(SmallDisk(at.to_path_buf()))
    }

    /// Writes a file until the file system is full; its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&chunk[..512]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The data directory's file system fills up: MAIL FROM with a SIZE that does not fit and a
/// message that does not fit get `452 4.3.1`, APPEND gets `NO [LIMIT]`, nothing partly
/// written shows; once space returns the same server takes mail again without a restart,
/// and after a kill -9 and restart exactly the acknowledged messages are there.
#[test]
fn a_full_disk_refuses_mail_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("data"), "24m") else {
        return;
    };
    let cfg = config_with_alice(dir.path(), "imap");
    // No reserve, so that a message too big for what is left reaches the store's writes.
    let text = std::fs::read_to_string(&cfg).unwrap() + "\n[smtp]\nmin_free_space = 0\n";
    std::fs::write(&cfg, text).unwrap();
    let server = ChildServer::start(&cfg);
    let imap = server.listener("imap");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let send = |subject: &'static str, lines: usize| async move {
            let mut c = greeted(server.smtp).await;
            c.cmd("MAIL FROM:<sender@example.org>", "250").await;
            c.cmd("RCPT TO:<alice@localhost>", "250").await;
            c.cmd("DATA", "354").await;
            c.send(message(subject, &"a body line\r\n".repeat(lines)).as_bytes())
                .await;
            c.send(b".\r\n").await;
            c.reply().await
        };
        let append = |subject: &'static str, size: usize| async move {
            let mut c = Imap::connect(imap).await.unwrap();
            c.cmd(b"LOGIN alice@localhost pw").await.unwrap();
            let msg = message(subject, &"an appended line\r\n".repeat(size / 18));
            let mut cmd = format!("APPEND INBOX {{{}+}}\r\n", msg.len()).into_bytes();
            cmd.extend_from_slice(msg.as_bytes());
            c.cmd(&cmd).await.unwrap().0
        };
        assert!(send("before", 10).await.starts_with("250 "));
        assert!(append("appended-before", 1000).await.contains(" OK "));

        let filler = disk.fill();
        let mut c = greeted(server.smtp).await;
        c.cmd("MAIL FROM:<sender@example.org> SIZE=300000", "452 4.3.1").await;
        c.cmd("QUIT", "221").await;
        let reply = send("while-full", 20_000).await;
        assert!(reply.starts_with("452 4.3.1 "), "{reply}");
        let reply = append("appended-while-full", 300_000).await;
        assert!(reply.contains(" NO [LIMIT]"), "{reply}");
        // The server goes on answering, and what it refused is not there.
        let mut c = Imap::connect(imap).await.unwrap();
        c.cmd(b"LOGIN alice@localhost pw").await.unwrap();
        let (ok, lines) = c.cmd(b"STATUS INBOX (MESSAGES)").await.unwrap();
        assert!(ok.contains(" OK "), "{ok}");
        assert!(lines[0].contains("(MESSAGES 2)"), "{lines:?}");

        std::fs::remove_file(filler).unwrap();
        let reply = send("after", 20_000).await;
        assert!(reply.starts_with("250 "), "the same server takes mail again: {reply}");
        assert!(append("appended-after", 300_000).await.contains(" OK "));
    });
    server.kill9();
    let server = ChildServer::start(&cfg);
    assert!(server.terminate().success());
    let store = SledStore::open(&dir.path().join("data/store"), 16).unwrap();
    let seen = whole_subjects(&store, "alice@localhost");
    assert_eq!(seen, ["before", "appended-before", "after", "appended-after"]);
    drop(store);
    drop(disk);
}

/// The Bayes counts and the learned marks of one store.
fn learned_state(store: &SledStore, blobs: &[mailgate::store::BlobId]) -> ([u64; 2], [u64; 2]) {
    use mailgate::store::KeyValue;
    let raw = store
        .kv_get_large(mailgate::spam::MODEL_KEY)
        .unwrap()
        .expect("the model is there");
    let counts = mailgate::spam::bayes::Counts::decode(&raw).expect("the model is whole");
    let mut marks = [0u64; 2];
    for b in blobs {
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        match store.kv_get(&format!("spam/bayes/learned/{hex}")).unwrap().as_deref() {
            Some(b"s") => marks[mailgate::spam::bayes::SPAM] += 1,
            Some(b"h") => marks[mailgate::spam::bayes::HAM] += 1,
            None => {}
            Some(other) => panic!("mark {other:?}"),
        }
    }
    (counts.docs, marks)
}

/// kill -9 while users move mail in and out of Junk and the server learns from it: after the
/// restart the model loads, and it has counted exactly the messages it marked as learned
/// (each once, in its last direction): a judgement is wholly learned or not at all. The
/// judgements still queued at the kill (not yet learned) are the only ones missing.
#[test]
fn kill_9_while_learning_from_junk_moves_keeps_the_model_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_alice(dir.path(), "imap");
    crate::spam::write_corpus(&dir.path().join("corpus"), 30);
    let (spam, ham) = (dir.path().join("corpus/spam"), dir.path().join("corpus/ham"));
    let args = [
        "spam",
        "train",
        "--spam",
        spam.to_str().unwrap(),
        "--ham",
        ham.to_str().unwrap(),
    ];
    let (code, out, err) = cli(&cfg, &args, "");
    assert_eq!(code, 0, "{out}{err}");
    let store_path = dir.path().join("data/store");
    let trained = learned_state(&SledStore::open(&store_path, 16).unwrap(), &[]).0;

    let server = ChildServer::start(&cfg);
    let imap = server.listener("imap");
    let log = cfg.with_extension("log");
    const CLIENTS: usize = 3;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = greeted(server.smtp).await;
        for i in 0..CLIENTS * 4 {
            let m = if i % 2 == 0 {
                crate::spam::spam_msg(200 + i)
            } else {
                crate::spam::ham_msg(200 + i)
            };
            let m = m.replace("Subject: ", &format!("Subject: c{}- ", i % CLIENTS));
            assert!(
                send_mail(&mut c, "x@example.org", &["alice@localhost"], &m)
                    .await
                    .starts_with("250")
            );
        }
        let moves = Arc::new(tokio::sync::watch::Sender::new(0usize));
        let mut tasks = Vec::new();
        for k in 0..CLIENTS {
            let moves = moves.clone();
            tasks.push(tokio::spawn(async move {
                let Some(mut c) = Imap::connect(imap).await else { return };
                if c.cmd(b"LOGIN alice@localhost pw").await.is_none() {
                    return;
                }
                // This client's messages go to Junk and back, one at a time.
                for round in 0.. {
                    let (from, to) = if round % 2 == 0 {
                        ("INBOX", "Junk")
                    } else {
                        ("Junk", "INBOX")
                    };
                    let Some((ok, _)) = c.cmd(format!("SELECT {from}").as_bytes()).await else {
                        return;
                    };
                    assert!(ok.contains(" OK "), "{ok}");
                    let Some((_, found)) = c.cmd(format!("UID SEARCH SUBJECT \"c{k}-\"").as_bytes()).await else {
                        return;
                    };
                    let uids: Vec<&str> = found
                        .iter()
                        .filter(|l| l.starts_with("* SEARCH"))
                        .flat_map(|l| l.split_whitespace().skip(2))
                        .collect();
                    for uid in uids {
                        let Some((r, _)) = c.cmd(format!("UID MOVE {uid} {to}").as_bytes()).await else {
                            return;
                        };
                        assert!(r.contains(" OK "), "{r}");
                        moves.send_modify(|n| *n += 1);
                    }
                }
            }));
        }
        // Killed once the learner has learned something and moves go on after it. (The
        // child's log is the only sign of learning; it is looked at every 50 ms.)
        let mut waited = 0;
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("learned from a Junk move")
        {
            assert!(waited < 400, "nothing learned in 20 s");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            waited += 1;
        }
        let seen = *moves.borrow();
        moves.subscribe().wait_for(|n| *n >= seen + 30).await.unwrap();
        server.kill9();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let server = ChildServer::start(&cfg);
    assert!(server.terminate().success());
    let store = SledStore::open(&store_path, 16).unwrap();
    let mut blobs = Vec::new();
    for folder in ["INBOX", "Junk"] {
        let id = store.mailbox("alice@localhost", folder).unwrap().expect("mailbox").id;
        blobs.extend(store.messages(id).unwrap().into_iter().map(|m| m.meta.blob));
    }
    assert_eq!(blobs.len(), CLIENTS * 4, "every message is in INBOX or Junk, once");
    let (docs, marks) = learned_state(&store, &blobs);
    assert!(
        marks.iter().sum::<u64>() > 0,
        "some judgements were learned before the kill"
    );
    assert_eq!(
        [docs[0] - trained[0], docs[1] - trained[1]],
        marks,
        "counted exactly what is marked learned"
    );
}
