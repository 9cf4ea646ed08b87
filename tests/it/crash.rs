//! kill -9 while mail streams in: every message answered 250 is stored exactly once.

use crate::common::*;
use mailgate::store::{Messages, SledStore};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const CLIENTS: usize = 8;
const KILL_AFTER_ACKS: usize = 120;

#[test]
fn kill_9_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_child_config(dir.path());
    let (code, _, err) = cli(&cfg, &["user", "add", "alice@localhost", "--password-stdin"], "pw");
    assert_eq!(code, 0, "{err}");
    let server = ChildServer::start(&cfg);
    let addr = server.smtp;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for client in 0..CLIENTS {
            let (acked, count, enough) = (acked.clone(), count.clone(), enough.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = greeted(addr).await;
                for n in 0.. {
                    let subject = format!("crash-{client}-{n}");
                    // Pipeline the whole transaction so the server is mid-message most of the time.
                    let mut batch = "MAIL FROM:<load@example.org>\r\nRCPT TO:<alice@localhost>\r\nDATA\r\n".to_string();
                    batch.push_str(&message(&subject, &"payload line\r\n".repeat(40)));
                    batch.push_str(".\r\n");
                    c.send(batch.as_bytes()).await;
                    let replies = [c.reply().await, c.reply().await, c.reply().await, c.reply().await];
                    if !replies[3].starts_with("250") {
                        return; // the server died under us
                    }
                    acked.lock().unwrap().push(subject);
                    if count.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER_ACKS {
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
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= KILL_AFTER_ACKS);

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
    let addr = server.smtp;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    rt.block_on(async {
        let mut tasks = Vec::new();
        for client in 0..CLIENTS {
            let (acked, count, enough) = (acked.clone(), count.clone(), enough.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = greeted(addr).await;
                for n in 0.. {
                    let subject = format!("out-{client}-{n}");
                    let mut batch =
                        "MAIL FROM:<load@example.org>\r\nRCPT TO:<joe@filtered.example>\r\nDATA\r\n".to_string();
                    batch.push_str(&message(&subject, &"payload line\r\n".repeat(40)));
                    batch.push_str(".\r\n");
                    c.send(batch.as_bytes()).await;
                    let replies = [c.reply().await, c.reply().await, c.reply().await, c.reply().await];
                    if !replies[3].starts_with("250") {
                        return;
                    }
                    acked.lock().unwrap().push(subject);
                    if count.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER_ACKS {
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
    let acked = acked.lock().unwrap().clone();
    let server = ChildServer::start(&cfg);
    rt.block_on(async {
        let subjects = |got: &[crate::outbound::Received]| -> std::collections::HashSet<String> {
            got.iter().map(|r| subject_of(r.data.as_bytes())).collect()
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), async {
            loop {
                let have = subjects(&sink.got.lock().unwrap());
                if acked.iter().all(|s| have.contains(s)) {
                    return;
                }
                let n = sink.got.lock().unwrap().len();
                sink.wait_for(n + 1).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            let have = subjects(&sink.got.lock().unwrap());
            let missing: Vec<_> = acked.iter().filter(|s| !have.contains(*s)).collect();
            panic!("acknowledged but never delivered: {missing:?}");
        });
    });
    assert!(server.terminate().success());
}
