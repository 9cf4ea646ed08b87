//! A DNS server on loopback (hickory-server) serving the whole `test.` zone, for tests that
//! resolve names. Nothing ever leaves 127.0.0.1.

use hickory_server::proto::rr::rdata::{A, MX, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Records: (name, type, value). Types: A, MX ("pref host"), TXT.
pub async fn start_dns(records: &[(&str, &str, &str)]) -> SocketAddr {
    let origin = Name::from_str("test.").unwrap();
    let mut zone = InMemoryZoneHandler::<hickory_server::net::runtime::TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let ns = Name::from_str("ns.test.").unwrap();
    let soa = SOA::new(
        ns.clone(),
        Name::from_str("admin.test.").unwrap(),
        1,
        3600,
        600,
        86400,
        60,
    );
    zone.upsert_mut(Record::from_rdata(origin.clone(), 300, RData::SOA(soa)), 1);
    for (name, kind, value) in records {
        let n = Name::from_str(name).unwrap();
        let rdata = match *kind {
            "A" => RData::A(A(value.parse().unwrap())),
            "MX" => {
                let (pref, host) = value.split_once(' ').unwrap();
                RData::MX(MX::new(pref.parse().unwrap(), Name::from_str(host).unwrap()))
            }
            "TXT" => RData::TXT(TXT::new(vec![value.to_string()])),
            other => panic!("record type {other}"),
        };
        zone.upsert_mut(Record::from_rdata(n, 300, rdata), 1);
    }
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
    // UDP and TCP on one port number: the UDP port is free, the same TCP port may not be
    // (another test's connection can hold it), so try again on another.
    let (udp, tcp) = 'bound: {
        for _ in 0..50 {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if let Ok(tcp) = tokio::net::TcpListener::bind(udp.local_addr().unwrap()).await {
                break 'bound (udp, tcp);
            }
        }
        panic!("no port free for both UDP and TCP on 127.0.0.1");
    };
    let addr = udp.local_addr().unwrap();
    let mut server = hickory_server::Server::new(catalog);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 4096);
    // The server runs on its own tasks for the rest of the test process.
    std::mem::forget(server);
    addr
}

/// A name server that never answers, counting the queries it gets.
fn silent_dns() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while sock.recv(&mut buf).is_ok() {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (addr, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_name_server_is_asked_once_then_remembered() {
    use crate::common::*;
    let (dns, queries) = silent_dns();
    let policy = r#"
stages = { "mail" }
function on_receive(e)
  local ok, err = pcall(mailgate.dnsbl, "192.0.2.1", "bl.test")
  if ok then return nil end
  return { score = 0.5, symbol = "DNSBL_TEMPFAIL", reason = tostring(err) }
end
"#;
    // A budget longer than the DNS timeout: the first message waits for the timeout.
    let manifest = "timeout_ms = 2000\n";
    let s = start_with_policies(&[("10-dnsbl.lua", policy), ("10-dnsbl.toml", manifest)], |c| {
        c.dns.servers = vec![dns];
        c.dns.timeout_ms = 300;
    })
    .await;
    let mut asked = Vec::new();
    for n in 0..3 {
        let mut c = greeted(s.smtp).await;
        let r = send_mail(
            &mut c,
            "a@example.org",
            &["alice@localhost"],
            &format!("Subject: {n}\r\n\r\nx\r\n"),
        )
        .await;
        assert!(r.starts_with("250"), "{r}");
        asked.push(queries.load(std::sync::atomic::Ordering::SeqCst));
    }
    let texts = s.texts("alice@localhost", "INBOX");
    assert_eq!(texts.len(), 3);
    assert!(texts.iter().all(|t| t.contains("DNSBL_TEMPFAIL")), "{texts:?}");
    // Three messages, one lookup (its query sent up to four times within the 300 ms): the
    // timeout is remembered (30 s), not waited for again.
    assert!((1..=4).contains(&asked[0]), "{asked:?}");
    assert_eq!(asked[2], asked[0], "{asked:?}");
}

/// A UDP relay in front of `upstream` that loses the first query for each name and passes
/// every later one (and the answers): a network or resolver that drops a query now and then.
fn lossy_dns(upstream: SocketAddr) -> SocketAddr {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let out = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        out.connect(upstream).unwrap();
        out.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut seen = std::collections::HashSet::new();
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            // The question starts after the 12-byte header; its name is what is counted.
            let question = buf.get(12..n).unwrap_or_default().to_ascii_lowercase();
            if seen.insert(question) {
                continue;
            }
            let mut answer = [0u8; 1500];
            if out.send(&buf[..n]).is_ok()
                && let Ok(m) = out.recv(&mut answer)
            {
                let _ = sock.send_to(&answer[..m], from);
            }
        }
    });
    addr
}

/// A lost query is asked again within the lookup's time (`[dns] timeout_ms`): with 2 s per
/// lookup and the SPF/DKIM/DMARC checks given 1.8 s, a resolver that drops each name's
/// first query (the HELO's, the SPF record's, then DMARC's) still gives results, not
/// `temperror`. (On loopback hickory asks again within a few hundred milliseconds even
/// with one try of the whole 2 s, so this guards the recovery, not the quarter-time tries.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_query_is_asked_again_within_the_lookup_time() {
    use crate::common::*;
    let zone = start_dns(&[("good.test.", "TXT", "v=spf1 ip4:127.0.0.1 -all")]).await;
    let dns = lossy_dns(zone);
    let s = start_with_policies(
        &[
            ("20-origin.lua", include_str!("../../policies/20-origin.lua")),
            ("20-origin.toml", include_str!("../../policies/20-origin.toml")),
        ],
        |c| {
            c.dns.servers = vec![dns];
            c.dns.timeout_ms = 2000;
            c.spam.auth_timeout_ms = 1800;
        },
    )
    .await;
    let mut c = greeted(s.smtp).await;
    let msg = "From: a@good.test\r\nSubject: lossy\r\n\r\nHello.\r\n";
    let r = send_mail(&mut c, "a@good.test", &["alice@localhost"], msg).await;
    assert!(r.starts_with("250"), "{r}");
    let texts = s.texts("alice@localhost", "INBOX");
    assert!(texts[0].contains("spf=pass"), "{}", texts[0]);
}

/// One message's DNS time is shared (`[dns] message_budget_ms`): with a name server that
/// drops every query, a policy asking three lists in a row waits for the budget once; the
/// lookups after it fail at once as temporary failures, and are not even sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_spends_its_dns_time_once_across_lookups() {
    use crate::common::*;
    let (dns, queries) = silent_dns();
    let policy = r#"
stages = { "data" }
function on_receive(e)
  local spent = 0
  for _, zone in ipairs({ "one.test", "two.test", "three.test" }) do
    local ok, err = pcall(mailgate.dnsbl, "192.0.2.7", zone)
    if not ok and string.find(tostring(err), "message_budget_ms", 1, true) then
      spent = spent + 1
    end
  end
  return { score = 0.1, symbol = "BUDGET_SPENT_" .. spent }
end
"#;
    // Per lookup 5 s, per plugin call 20 s: only the message's 300 ms can end them early.
    let manifest = "timeout_ms = 20000\n";
    let s = start_with_policies(&[("10-lists.lua", policy), ("10-lists.toml", manifest)], |c| {
        c.dns.servers = vec![dns];
        c.dns.timeout_ms = 5000;
        c.dns.message_budget_ms = 300;
    })
    .await;
    let mut c = greeted(s.smtp).await;
    let r = send_mail(
        &mut c,
        "a@example.org",
        &["alice@localhost"],
        "Subject: lists\r\n\r\nx\r\n",
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    let texts = s.texts("alice@localhost", "INBOX");
    assert!(texts[0].contains("BUDGET_SPENT_3"), "{}", texts[0]);
    // The first lookup went out (and waits on for the cache); the others never did.
    assert_eq!(queries.load(std::sync::atomic::Ordering::SeqCst), 1);
}
