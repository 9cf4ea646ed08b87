//! The originating-domain policy (policies/20-origin.lua) and the lists (05-lists.lua)
//! through real SMTP sessions: SPF, DKIM and DMARC checked by the server against a DNS zone
//! served on loopback, DNS blocklists, header checks, and the score thresholds they reach.
//! Messages and keys are made here.

use crate::common::*;
use base64::Engine as _;
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;

const ORIGIN_LUA: &str = include_str!("../../policies/20-origin.lua");
const ORIGIN_TOML: &str = include_str!("../../policies/20-origin.toml");
const LISTS_LUA: &str = include_str!("../../policies/05-lists.lua");
const LISTS_TOML: &str = include_str!("../../policies/05-lists.toml");

/// An Ed25519 DKIM key: the signer and the TXT record publishing it.
fn dkim_key() -> (Ed25519Key, String) {
    let key = Ed25519Key::from_pkcs8_der(&Ed25519Key::generate_pkcs8().unwrap()).unwrap();
    let record = format!(
        "v=DKIM1; k=ed25519; p={}",
        base64::engine::general_purpose::STANDARD.encode(key.public_key())
    );
    (key, record)
}

fn sign(key: Ed25519Key, domain: &str, message: &str) -> String {
    let sig = DkimSigner::from_key(key)
        .domain(domain)
        .selector("ed")
        .headers(["From", "To", "Subject", "Message-ID"])
        .sign(message.as_bytes())
        .unwrap();
    format!("{}{message}", sig.to_header())
}

fn mail(from: &str, subject: &str, extra: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: alice@localhost\r\nSubject: {subject}\r\nMessage-ID: <{subject}@origin.test>\r\n{extra}\r\n{body}\r\n"
    )
}

/// The zone: good.test passes everything for 127.0.0.1; bad.test and bad2.test publish SPF
/// for another address and DMARC p=reject; bl.test lists 127.0.0.1, dbl.test lists bad.test.
async fn zone(dkim_record: &str) -> std::net::SocketAddr {
    crate::dns::start_dns(&[
        ("good.test.", "TXT", "v=spf1 ip4:127.0.0.1 -all"),
        ("_dmarc.good.test.", "TXT", "v=DMARC1; p=reject"),
        ("ed._domainkey.good.test.", "TXT", dkim_record),
        ("bad.test.", "TXT", "v=spf1 ip4:192.0.2.1 -all"),
        ("_dmarc.bad.test.", "TXT", "v=DMARC1; p=reject"),
        ("bad2.test.", "TXT", "v=spf1 ip4:192.0.2.1 -all"),
        ("_dmarc.bad2.test.", "TXT", "v=DMARC1; p=reject"),
        ("soft.test.", "TXT", "v=spf1 ip4:192.0.2.1 ~all"),
        ("quar.test.", "TXT", "v=spf1 ip4:192.0.2.1 -all"),
        ("_dmarc.quar.test.", "TXT", "v=DMARC1; p=quarantine"),
        ("none.test.", "TXT", "v=spf1 ip4:192.0.2.1 ~all"),
        ("_dmarc.none.test.", "TXT", "v=DMARC1; p=none"),
        ("1.0.0.127.bl.test.", "A", "127.0.0.2"),
        ("bad.test.dbl.test.", "A", "127.0.1.2"),
    ])
    .await
}

/// A server with the shipped 20-origin policy (under `manifest`) resolving through `dns`.
async fn origin_server(
    manifest: &str,
    dns: std::net::SocketAddr,
    tweak: impl FnOnce(&mut mailgate::config::Config),
) -> TestServer {
    start_with_policies(&[("20-origin.lua", ORIGIN_LUA), ("20-origin.toml", manifest)], |c| {
        c.dns.servers = vec![dns];
        tweak(c);
    })
    .await
}

async fn send(s: &TestServer, from: &str, data: &str) -> String {
    let mut c = greeted(s.smtp).await;
    let r = c.cmd(&format!("MAIL FROM:<{from}>"), "").await;
    if !r.starts_with("250") {
        return r;
    }
    c.cmd("RCPT TO:<alice@localhost>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(data.as_bytes()).await;
    c.cmd(".", "").await
}

/// The value of the first `name` field of a stored message, unfolded.
fn field(raw: &str, name: &str) -> String {
    let head = &raw[..raw.find("\r\n\r\n").unwrap_or(raw.len())];
    let mut out = None::<String>;
    for line in head.split("\r\n") {
        match &mut out {
            Some(v) if line.starts_with([' ', '\t']) => v.push_str(line),
            Some(_) => break,
            None => {
                if let Some((n, v)) = line.split_once(':')
                    && n.eq_ignore_ascii_case(name)
                {
                    out = Some(v.trim().to_string());
                }
            }
        }
    }
    out.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_dkim_dmarc_pass_and_fail_through_smtp() {
    let (key, record) = dkim_key();
    let dns = zone(&record).await;
    let s = origin_server(ORIGIN_TOML, dns, |_| {}).await;

    // Signed by good.test, sent from an address its SPF allows: everything passes. A
    // newsletter: List-Unsubscribe, signed by its From domain.
    let signed = sign(
        key,
        "good.test",
        &mail(
            "Alice <alice@good.test>",
            "signed",
            "List-Unsubscribe: <mailto:leave@good.test>\r\n",
            "Hello from good.",
        ),
    );
    assert!(send(&s, "alice@good.test", &signed).await.starts_with("250"));
    // The same signature over a changed body: DKIM no longer verifies; SPF still aligns.
    let tampered = signed.replace("Hello from good.", "Hello from someone else.");
    assert!(send(&s, "alice@good.test", &tampered).await.starts_with("250"));
    // bad.test's SPF names another address and its DMARC says reject; the sender also
    // forges results in our name, which must not survive.
    let forged = mail(
        "CEO <ceo@bad.test>",
        "forged",
        "Authentication-Results: mx.test; spf=pass smtp.mailfrom=bad.test; dmarc=pass\r\n",
        "Wire the money.",
    );
    assert!(send(&s, "mallory@bad.test", &forged).await.starts_with("250"));
    // Envelope from good.test (SPF passes) but From another domain, replies to free mail.
    let lure = mail(
        "Bank <support@bank.test>",
        "lure",
        "Reply-To: claims.desk@gmail.com\r\n",
        "Confirm your account.",
    );
    assert!(send(&s, "news@good.test", &lure).await.starts_with("250"));

    // SPF softfail; DMARC failures under p=quarantine and p=none.
    for (from, subject) in [
        ("a@soft.test", "soft"),
        ("a@quar.test", "quar"),
        ("a@none.test", "none"),
    ] {
        let m = mail(from, subject, "", "Hello.");
        assert!(send(&s, from, &m).await.starts_with("250"));
    }

    let inbox = s.texts("alice@localhost", "INBOX");
    assert_eq!(inbox.len(), 7);
    let ar = |i: usize| field(&inbox[i], "Authentication-Results");
    let symbols = |i: usize| field(&inbox[i], "X-Spam-Symbols");

    assert!(ar(0).starts_with("mx.test;"), "{}", ar(0));
    for word in ["spf=pass", "dkim=pass", "header.d=good.test", "dmarc=pass"] {
        assert!(ar(0).contains(word), "{word} in {}", ar(0));
    }
    for sym in [
        "SPF_PASS(-0.50)",
        "DKIM_VALID(-0.50)",
        "DMARC_PASS(-1.00)",
        "SIGNED_LIST_MAIL(-2.00)",
    ] {
        assert!(symbols(0).contains(sym), "{sym} in {}", symbols(0));
    }
    assert!(!inbox[0].contains("X-Spam-Flag"));

    assert!(!ar(1).contains("dkim=pass"), "{}", ar(1));
    assert!(ar(1).contains("spf=pass") && ar(1).contains("dmarc=pass"), "{}", ar(1));
    assert!(symbols(1).contains("DKIM_INVALID"), "{}", symbols(1));
    // The same List-Unsubscribe without a valid signature says nothing.
    assert!(inbox[1].contains("List-Unsubscribe:"));
    assert!(!symbols(1).contains("SIGNED_LIST_MAIL"), "{}", symbols(1));

    assert_eq!(inbox[2].matches("Authentication-Results:").count(), 1, "{}", inbox[2]);
    for word in ["spf=fail", "dmarc=fail", "policy.dmarc=reject"] {
        assert!(ar(2).contains(word), "{word} in {}", ar(2));
    }
    for sym in ["SPF_FAIL(3.00)", "DMARC_REJECT(5.00)"] {
        assert!(symbols(2).contains(sym), "{sym} in {}", symbols(2));
    }
    // 8 points: over the tag threshold (5), under Junk (10).
    assert_eq!(field(&inbox[2], "X-Spam-Flag"), "YES");
    assert_eq!(field(&inbox[2], "X-Spam-Score"), "8.00");

    for sym in ["FROM_ENVELOPE_MISMATCH", "REPLYTO_FREEMAIL", "SPF_PASS"] {
        assert!(symbols(3).contains(sym), "{sym} in {}", symbols(3));
    }
    assert!(ar(3).contains("dmarc=none"), "{}", ar(3));

    assert!(ar(4).contains("spf=softfail"), "{}", ar(4));
    assert_eq!(symbols(4), "SPF_SOFTFAIL(1.00)");
    assert!(ar(5).contains("policy.dmarc=quarantine"), "{}", ar(5));
    assert_eq!(symbols(5), "SPF_FAIL(3.00), DMARC_QUARANTINE(3.50)");
    assert!(
        ar(6).contains("dmarc=fail") && ar(6).contains("policy.dmarc=none"),
        "{}",
        ar(6)
    );
    assert_eq!(symbols(6), "SPF_SOFTFAIL(1.00), DMARC_FAIL(1.00)");
}

/// Blocklists add to the authentication failures until each threshold is reached: Junk at
/// 10, refusal at 15 (with the main reasons), and a clean message stays in the INBOX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocklists_and_thresholds_through_smtp() {
    let (key, record) = dkim_key();
    let dns = zone(&record).await;
    let toml = ORIGIN_TOML
        .replace("dnsbl_ip = []", "dnsbl_ip = [\"bl.test\"]")
        .replace("dnsbl_domain = []", "dnsbl_domain = [\"dbl.test\"]");
    assert_ne!(toml, ORIGIN_TOML);
    let s = origin_server(&toml, dns, |_| {}).await;

    // good.test, signed: -2 for authentication, +4 for the listed client IP.
    let signed = sign(
        key,
        "good.test",
        &mail("alice@good.test", "clean", "", "Minutes attached."),
    );
    assert!(send(&s, "alice@good.test", &signed).await.starts_with("250"));
    // bad2.test: SPF fail 3 + DMARC reject 5 + listed IP 4 = 12: Junk.
    let junk = mail("billing@bad2.test", "junk", "", "Invoice overdue.");
    assert!(send(&s, "billing@bad2.test", &junk).await.starts_with("250"));
    // bad.test is also on the domain list: 15, refused at DATA.
    let refused = mail("billing@bad.test", "refused", "", "Invoice overdue.");
    let r = send(&s, "billing@bad.test", &refused).await;
    assert!(r.starts_with("550 5.7.1 Message rejected as spam (score 15.0"), "{r}");
    assert!(r.contains("DMARC_REJECT") && r.contains("RBL_IP"), "{r}");

    let inbox = s.texts("alice@localhost", "INBOX");
    assert_eq!(inbox.len(), 1);
    assert!(field(&inbox[0], "X-Spam-Symbols").contains("RBL_IP(4.00)"));
    assert!(!inbox[0].contains("X-Spam-Flag"));
    assert_eq!(s.subjects("alice@localhost", "Junk"), vec!["junk"]);
    let junk = &s.texts("alice@localhost", "Junk")[0];
    assert_eq!(field(junk, "X-Spam-Score"), "12.00");
    assert!(field(junk, "X-Spam-Symbols").contains("RBL_IP"), "{junk}");
    assert!(!field(junk, "X-Spam-Symbols").contains("RBL_DOMAIN"), "{junk}");
}

#[tokio::test]
async fn allow_and_deny_lists() {
    let toml = LISTS_TOML
        .replace("deny_domains = []", "deny_domains = [\"denied.test\"]")
        .replace("deny_senders = []", "deny_senders = [\"pest@example.org\"]")
        .replace("domains = []          #", "domains = [\"friend.test\"] #");
    assert_ne!(toml, LISTS_TOML);
    let always = "function on_receive(e) return { score = 20, symbol = \"ALWAYS\" } end";
    let s = start_with_policies(
        &[
            ("05-lists.lua", LISTS_LUA),
            ("05-lists.toml", &toml),
            ("50-always.lua", always),
        ],
        |_| {},
    )
    .await;
    let plain = mail("x@example.org", "hi", "", "text");
    for from in ["someone@mail.denied.test", "PEST@example.org", "a@denied.test"] {
        let r = send(&s, from, &plain).await;
        assert!(r.starts_with("550 5.7.1 Sender denied by local policy"), "{from}: {r}");
    }
    // Not denied: the score of 20 refuses it; allowed (a subdomain too): accepted untouched.
    assert!(
        send(&s, "x@notdenied.test", &plain)
            .await
            .starts_with("550 5.7.1 Message rejected as spam")
    );
    assert!(send(&s, "boss@mx.friend.test", &plain).await.starts_with("250"));
    let inbox = s.texts("alice@localhost", "INBOX");
    assert_eq!(inbox.len(), 1);
    assert!(!inbox[0].contains("X-Spam-Flag"));
}

/// A DNS server that never answers: the checks give up at `[spam] auth_timeout_ms` and the
/// message is delivered with `temperror` results, not held or lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_dns_gives_temperror_within_the_time_limit() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap(); // bound, never read
    let s = origin_server(ORIGIN_TOML, silent.local_addr().unwrap(), |c| {
        c.spam.auth_timeout_ms = 300
    })
    .await;
    let started = std::time::Instant::now();
    let r = send(&s, "a@good.test", &mail("a@good.test", "slow", "", "Hello.")).await;
    assert!(r.starts_with("250"), "{r}");
    let inbox = s.texts("alice@localhost", "INBOX");
    let ar = field(&inbox[0], "Authentication-Results");
    assert!(ar.contains("spf=temperror") && ar.contains("dmarc=temperror"), "{ar}");
    // The limit, not the resolver's own 2 s per lookup, bounds the wait.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}

/// A resolver that drops every query: the first message from a domain waits for the lookups
/// to time out and gets `temperror`; the next ones from that domain get `temperror` at once
/// (the failure is remembered), while another domain is still asked. Nothing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropping_resolver_costs_each_domain_one_wait() {
    // A name server that never answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let s = origin_server(ORIGIN_TOML, silent.local_addr().unwrap(), |c| {
        c.dns.timeout_ms = 300;
        c.spam.auth_timeout_ms = 3000;
    })
    .await;
    for (from, subject) in [
        ("a@slow.test", "first"),
        ("b@slow.test", "second"),
        ("c@other.test", "third"),
    ] {
        let r = send(&s, from, &mail(from, subject, "", "Hello.")).await;
        assert!(r.starts_with("250"), "{r}");
    }
    let inbox = s.texts("alice@localhost", "INBOX");
    assert_eq!(inbox.len(), 3);
    let ar: Vec<String> = inbox.iter().map(|m| field(m, "Authentication-Results")).collect();
    for a in &ar {
        assert!(a.contains("spf=temperror"), "{a}");
    }
    assert!(!ar[0].contains("moments ago"), "the first one asked: {}", ar[0]);
    assert!(ar[1].contains("DNS failed for slow.test moments ago"), "{}", ar[1]);
    assert!(!ar[2].contains("moments ago"), "another domain is asked: {}", ar[2]);
    drop(silent);
}
