//! One decision path: the server over SMTP and `mailgate policy test` give the same verdict,
//! the same routes and the same trace for the same message and session.

use crate::common::*;

const POLICIES: &[(&str, &str)] = &[
    (
        "10-keywords.lua",
        "function on_receive(e)\n  if e.stage == 'data' and e.message.subject == 'cheap pills' then\n    return { score = 6, symbol = 'PILLS', reason = 'subject' }\n  end\nend\n",
    ),
    (
        "20-route.lua",
        "function on_route(e)\n  if e.recipient == 'blocked@localhost' then return { route = 'reject', text = 'Blocked by route policy' } end\n  if e.recipient == 'sales@localhost' then return { route = 'local', mailbox = 'bob@localhost' } end\nend\n",
    ),
    (
        "30-deliver.lua",
        "function on_deliver(e)\n  if e.message.subject == 'refuse me' then return { action = 'reject', code = 550, text = 'Not for this mailbox' } end\n  if e.message.subject == 'file me' then return { folder = 'Archive', flags = { '\\\\Flagged' } } end\nend\n",
    ),
];

/// The reply the SMTP client finally gets: the first refusal, or the reply to the dot.
async fn over_smtp(addr: std::net::SocketAddr, from: &str, to: &str, subject: &str) -> String {
    let mut c = greeted(addr).await;
    c.cmd(&format!("MAIL FROM:<{from}>"), "250").await;
    let r = c.cmd(&format!("RCPT TO:<{to}>"), "").await;
    if !r.starts_with("250") {
        return r.trim_end().to_string();
    }
    c.cmd("DATA", "354").await;
    let msg = format!("From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nhello there\r\n.\r\n");
    c.send(msg.as_bytes()).await;
    let r = c.reply().await;
    c.cmd("QUIT", "221").await;
    r.trim_end().to_string()
}

/// `plugin@stage=action` for each entry of an `X-Mailgate-Trace` value.
fn trace_of_header(value: &str) -> (String, Vec<String>) {
    let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
    let (version, rest) = value.split_once("; ").unwrap();
    let entries = rest
        .split("; ")
        .map(|e| e.split(' ').next().unwrap().to_string())
        .collect();
    (version.trim_start_matches("v=").to_string(), entries)
}

/// The same entries from a `policy test --json` report (the hooks before delivery, which
/// is what the stored header records).
fn trace_of_report(v: &serde_json::Value) -> Vec<String> {
    v["trace"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["hook"] != "deliver")
        .map(|t| {
            let stage = t["stage"].as_str().map(|s| format!("@{s}")).unwrap_or_default();
            format!(
                "{}{stage}={}",
                t["plugin"].as_str().unwrap(),
                t["action"].as_str().unwrap()
            )
        })
        .collect()
}

fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .replace("\r\n\t", " ")
        .replace("\r\n ", " ");
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

#[tokio::test]
async fn the_server_and_policy_test_decide_alike() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_child_config(dir.path());
    write_policies(&dir.path().join("policies"), POLICIES);
    let server = ChildServer::start(&cfg);
    for user in ["alice@localhost", "bob@localhost"] {
        let (code, _, err) = cli(&cfg, &["user", "add", user, "--password-stdin"], "pw\n");
        assert_eq!(code, 0, "{err}");
    }
    let eml_dir = dir.path().join("eml");
    std::fs::create_dir_all(&eml_dir).unwrap();
    let from = "sender@example.org";
    // (recipient, subject, the reply that must start it, the account it lands with)
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        ("alice@localhost", "plain ham", "250 2.0.0", Some("alice@localhost")),
        ("alice@localhost", "cheap pills", "250 2.0.0", Some("alice@localhost")),
        ("alice@localhost", "refuse me", "550 5.7.1 Not for this mailbox", None),
        ("alice@localhost", "file me", "250 2.0.0", Some("alice@localhost")),
        ("sales@localhost", "for sales", "250 2.0.0", Some("bob@localhost")),
        ("nobody@localhost", "unknown", "550 5.1.1", None),
        (
            "blocked@localhost",
            "blocked",
            "550 5.1.1 Blocked by route policy",
            None,
        ),
        ("someone@elsewhere.example", "relay", "554 5.7.1", None),
    ];
    for (i, &(to, subject, expect, lands)) in cases.iter().enumerate() {
        let smtp = over_smtp(server.smtp, from, to, subject).await;
        let eml = eml_dir.join(format!("{i}.eml"));
        std::fs::write(
            &eml,
            format!("From: {from}\nTo: {to}\nSubject: {subject}\n\nhello there\n"),
        )
        .unwrap();
        let args = [
            "policy",
            "test",
            eml.to_str().unwrap(),
            "--json",
            "--from",
            from,
            "--to",
            to,
            "--ip",
            "127.0.0.1",
            "--helo",
            "client.test",
        ];
        let (code, out, err) = cli(&cfg, &args, "");
        assert_eq!(code, 0, "{subject}: {err}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        let reply = report["reply"].as_str().unwrap();
        assert!(smtp.starts_with(expect), "{subject}: the server said {smtp:?}");
        assert!(reply.starts_with(expect), "{subject}: policy test said {reply:?}");
        if !smtp.starts_with("250") {
            assert_eq!(smtp, reply, "{subject}: refusals word for word");
            assert!(
                report["deliveries"].as_array().unwrap().is_empty(),
                "{subject}: {report}"
            );
            continue;
        }
        let account = lands.unwrap();
        let deliveries = report["deliveries"].as_array().unwrap();
        assert_eq!(deliveries.len(), 1, "{subject}: {report}");
        assert_eq!(deliveries[0]["recipient"], account, "{subject}");
        let folder = deliveries[0]["folder"].as_str().unwrap();
        // The stored copy: in the folder the report names (Archive does not exist: INBOX).
        let expected_folder = if folder == "Archive" { "INBOX" } else { folder };
        let (code, list, err) = cli(&cfg, &["mailbox", "list", account, expected_folder], "");
        assert_eq!(code, 0, "{err}");
        let uid = list
            .lines()
            .filter(|l| l.contains(subject))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .next()
            .unwrap_or_else(|| panic!("{subject} not in {account} {expected_folder}: {list}"));
        let (_, stored, _) = cli(&cfg, &["mailbox", "show", account, &uid, expected_folder], "");
        let trace = header(&stored, "X-Mailgate-Trace").expect("trace header");
        let (version, entries) = trace_of_header(&trace);
        assert_eq!(version, report["version"].as_str().unwrap(), "{subject}");
        assert_eq!(entries, trace_of_report(&report), "{subject}: trace");
        let flagged = header(&stored, "X-Spam-Flag").is_some();
        let tagged = report["add_headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "X-Spam-Flag");
        assert_eq!(flagged, tagged, "{subject}: X-Spam-Flag");
        assert_eq!(tagged, report["verdict"] == "tag", "{subject}: {}", report["verdict"]);
        if subject == "file me" {
            assert_eq!(folder, "Archive");
            assert_eq!(deliveries[0]["flags"][0], "\\Flagged");
        }
    }
    server.terminate();
}
