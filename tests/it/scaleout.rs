//! Two mailgate nodes on one PostgreSQL database (`store.backend = "postgres"`): what one
//! node takes in, the other serves; IDLE on one is woken by delivery on the other; the POP3
//! maildrop lock holds across them; concurrent APPENDs on both get strictly increasing UIDs;
//! both drain one outbound queue without delivering any recipient twice. The database is a
//! real PostgreSQL the tests start (skipped, with the reason printed, without its binaries).

use crate::common::*;
use crate::crash::stream_until_killed;
use crate::outbound::{relay_to, sink};
use futures_util::StreamExt;
use mailgate::config::StoreBackend;
use std::time::Duration;
use tokio::net::TcpStream;

/// Two nodes on one new database; `tweak` edits both configs.
async fn two_nodes(tweak: impl Fn(&mut mailgate::config::Config)) -> Option<(TestServer, TestServer)> {
    let url = mailgate::store::test_postgres::database()?;
    let node = |c: &mut mailgate::config::Config| {
        c.store.backend = StoreBackend::Postgres;
        c.store.postgres.url = Some(url.clone());
        c.store.postgres.pool_size = 8;
        tweak(c);
    };
    let a = start_server(&node).await;
    let b = start_server(&node).await;
    Some((a, b))
}

async fn imap_login(addr: std::net::SocketAddr) -> async_imap::Session<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut client = async_imap::Client::new(tcp);
    client.read_response().await.unwrap().expect("greeting");
    client
        .login("alice@localhost", PASSWORD)
        .await
        .map_err(|(e, _)| e)
        .unwrap()
}

/// A POP3 session after the greeting.
async fn pop3(addr: std::net::SocketAddr) -> Client<TcpStream> {
    let s = TcpStream::connect(addr).await.unwrap();
    let mut c = Client {
        io: tokio::io::BufReader::new(s),
    };
    assert!(c.line().await.starts_with("+OK"));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_taken_in_by_one_node_is_served_by_the_other() {
    let Some((a, b)) = two_nodes(|_| {}).await else { return };

    // IDLE on B, woken by an SMTP delivery through A.
    let mut session = imap_login(b.imap).await;
    assert_eq!(session.select("INBOX").await.unwrap().exists, 0);
    let mut idle = session.idle();
    idle.init().await.unwrap();
    let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(20));
    let r = transact(&a, "x@example.org", &["alice@localhost"], "through A", "hello").await;
    assert!(r.starts_with("250"), "{r}");
    let woke = wait.await.unwrap();
    assert!(
        matches!(&woke, async_imap::extensions::idle::IdleResponse::NewData(d) if format!("{:?}", d.parsed()).contains("Exists(1)")),
        "{woke:?}"
    );
    let mut session = idle.done().await.unwrap();
    let fetched: Vec<_> = session
        .fetch("1", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await
        .unwrap()
        .collect::<Vec<_>>()
        .await;
    let m = fetched[0].as_ref().unwrap();
    assert_eq!(m.uid, Some(1));
    assert!(String::from_utf8_lossy(m.header().unwrap()).contains("Subject: through A"));

    // Flags set on B are seen on A.
    session
        .store("1", "+FLAGS (\\Flagged)")
        .await
        .unwrap()
        .collect::<Vec<_>>()
        .await;
    let on_a = a.inbox("alice@localhost");
    assert!(on_a[0].meta.flags.contains(mailgate::store::Flags::FLAGGED));
    session.logout().await.unwrap();

    // POP3 on B reads it; A refuses a second POP3 session for the maildrop meanwhile.
    let mut p = pop3(b.pop3).await;
    p.pop("USER alice@localhost", "+OK").await;
    p.pop(&format!("PASS {PASSWORD}"), "+OK").await;
    let mut other = pop3(a.pop3).await;
    other.pop("USER alice@localhost", "+OK").await;
    let refused = other.pop(&format!("PASS {PASSWORD}"), "-ERR").await;
    assert!(refused.contains("[IN-USE]"), "{refused}");
    let stat = p.pop("STAT", "+OK").await;
    assert!(stat.starts_with("+OK 1 "), "{stat}");
    p.pop("RETR 1", "+OK").await;
    let body = String::from_utf8(p.multiline().await).unwrap();
    assert!(body.contains("Subject: through A"), "{body}");
    p.pop("QUIT", "+OK").await;
    assert!(p.closed().await);
    // Released with the session: A may have it now.
    let mut again = pop3(a.pop3).await;
    again.pop("USER alice@localhost", "+OK").await;
    again.pop(&format!("PASS {PASSWORD}"), "+OK").await;
    again.pop("QUIT", "+OK").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_on_both_nodes_get_strictly_increasing_uids() {
    let Some((a, b)) = two_nodes(|_| {}).await else { return };
    let per_node = 15;
    let mut tasks = Vec::new();
    for (node, addr) in [("a", a.imap), ("b", b.imap), ("a", a.imap), ("b", b.imap)] {
        tasks.push(tokio::spawn(async move {
            let mut s = imap_login(addr).await;
            for i in 0..per_node {
                let msg = format!("Subject: {node} {i}\r\n\r\nappended on {node}\r\n");
                s.append("INBOX", None, None, msg.as_bytes()).await.unwrap();
            }
            s.logout().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let on_a = a.inbox("alice@localhost");
    let uids: Vec<u32> = on_a.iter().map(|m| m.uid).collect();
    assert_eq!(
        uids,
        (1..=4 * per_node).collect::<Vec<u32>>(),
        "none lost, none repeated"
    );
    let on_b: Vec<u32> = b.inbox("alice@localhost").iter().map(|m| m.uid).collect();
    assert_eq!(on_b, uids);
    // And as a client sees it.
    let mut s = imap_login(b.imap).await;
    assert_eq!(s.select("INBOX").await.unwrap().exists, 4 * per_node);
    let found = s.uid_search("ALL").await.unwrap();
    assert_eq!(found.len(), (4 * per_node) as usize);
    s.logout().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_drain_one_queue_and_deliver_each_recipient_once() {
    let mut sink = sink().await;
    let relay = relay_to("filtered.example", &format!("[127.0.0.1]:{}", sink.addr.port()));
    let Some((a, b)) = two_nodes(|c| c.relays = vec![relay.clone()]).await else {
        return;
    };
    // Messages through both nodes, each for two recipients; both runners see all of them.
    let n = 12;
    for i in 0..n {
        let node = if i % 2 == 0 { &a } else { &b };
        let r = transact(
            node,
            "x@example.org",
            &["one@filtered.example", "two@filtered.example"],
            &format!("m{i}"),
            "body",
        )
        .await;
        assert!(r.starts_with("250"), "{r}");
        // Either node's runner may pick any message up: wake both.
        a.running.shared.queue.wake();
        b.running.shared.queue.wake();
    }
    let got = sink.wait_for(n).await;
    // Wait until the queue is empty (every recipient recorded), then compare.
    let (mut on_a, mut on_b) = (a.running.shared.queue.recorded(), b.running.shared.queue.recorded());
    tokio::time::timeout(Duration::from_secs(30), async {
        while !a.store().queued().unwrap().is_empty() {
            tokio::select! {
                _ = on_a.changed() => {}
                _ = on_b.changed() => {}
            }
        }
    })
    .await
    .expect("the queue drains");
    let got_now = sink.got.lock().unwrap().clone();
    assert!(got_now.len() >= got.len());
    let mut seen: Vec<(String, String)> = got_now
        .iter()
        .flat_map(|r| {
            let subject = subject_of(r.data.as_bytes());
            r.rcpts.iter().map(move |rc| (subject.clone(), rc.clone()))
        })
        .collect();
    seen.sort();
    let twice: Vec<&(String, String)> = seen.windows(2).filter(|w| w[0] == w[1]).map(|w| &w[0]).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    seen.dedup();
    assert_eq!(seen.len(), 2 * n, "every recipient once");
}

/// Node A (a separate process) is killed with kill -9 while mail for local users and for
/// a relay domain streams into it and goes out of it; node B, on the same database, has
/// every message A answered 250 for: the local ones in the INBOX exactly once, the relayed
/// ones delivered (B takes over A's queue once A's leases run out).
#[test]
fn node_killed_mid_intake_and_mid_delivery_loses_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(url) = mailgate::store::test_postgres::database() else {
        return;
    };
    let mut sink = rt.block_on(sink());
    let hop = format!("[127.0.0.1]:{}", sink.addr.port());
    let relay = relay_to("filtered.example", &hop);
    let b = rt.block_on(start_server(|c| {
        c.store.backend = StoreBackend::Postgres;
        c.store.postgres.url = Some(url.clone());
        c.relays = vec![relay];
        c.outbound.lease = mailgate::config::outbound::Span(Duration::from_secs(2));
        c.outbound.retry_schedule = vec![mailgate::config::outbound::Span(Duration::from_secs(1))];
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_child_config(dir.path());
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "\n[store]\nbackend = \"postgres\"\n\n[store.postgres]\nurl = \"{url}\"\npool_size = 8\n\n\
         [[relay]]\ndomain = \"filtered.example\"\nnext_hop = \"{hop}\"\n\n\
         [outbound]\nretry_schedule = [\"1s\"]\nlease = \"2s\"\n"
    ));
    std::fs::write(&cfg, text).unwrap();
    let a = ChildServer::start(&cfg);
    let acked: Vec<(String, bool)> = rt
        .block_on(stream_until_killed(
            a.smtp,
            6,
            80,
            "n",
            |client, n| {
                if (client + n) % 2 == 0 {
                    "joe@filtered.example"
                } else {
                    "alice@localhost"
                }
            },
            || a.kill9(),
        ))
        .into_iter()
        .map(|(s, to)| (s, to.ends_with("filtered.example")))
        .collect();

    let inbox = b.inbox("alice@localhost");
    let mut local: std::collections::HashMap<String, usize> = Default::default();
    for m in &inbox {
        let raw = b.body(m);
        assert_eq!(raw.len() as u64, m.meta.size);
        *local.entry(subject_of(&raw)).or_default() += 1;
    }
    for (s, _) in acked.iter().filter(|(_, relayed)| !relayed) {
        assert_eq!(local.get(s), Some(&1), "{s}: acknowledged by A, stored once");
    }
    // B delivers what A had queued and not delivered, once A's leases run out.
    let relayed: Vec<String> = acked.iter().filter(|(_, r)| *r).map(|(s, _)| s.clone()).collect();
    rt.block_on(sink.until_has(&relayed))
        .unwrap_or_else(|missing| panic!("acknowledged by A but never delivered: {missing:?}"));
    drop(b);
}
