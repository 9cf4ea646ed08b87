//! Prometheus metrics at `/metrics` and JSON logs with a session id on every line.

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The value of the first sample line that starts with `series`.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
}

#[tokio::test]
async fn metrics_count_connections_replies_messages_and_fsyncs() {
    let s = start_with_policies(
        &[("10-tag.lua", "function on_receive(e) return { score = 1 } end")],
        |c| c.metrics.bind = Some("127.0.0.1:0".parse().unwrap()),
    )
    .await;
    let addr = s.running.metrics_addr.expect("metrics listener");
    let before = scrape(addr, "/metrics").await;
    assert!(before.starts_with("HTTP/1.1 200 OK\r\n"), "{before}");
    let mut c = greeted(s.smtp).await;
    let r = send_mail(
        &mut c,
        "carol@example.org",
        &["alice@localhost"],
        "Subject: m\r\n\r\nhi\r\n",
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    c.cmd("RCPT TO:<x@localhost>", "503").await;
    let after = scrape(addr, "/metrics").await;
    for series in [
        "mailgate_connections_total{protocol=\"smtp\"}",
        "mailgate_smtp_replies_total{class=\"2xx\"}",
        "mailgate_smtp_replies_total{class=\"5xx\"}",
        "mailgate_messages_total{verdict=\"deliver\"}",
        "mailgate_journal_fsyncs_total",
        "mailgate_stored_bytes_total",
        "mailgate_hook_seconds_count{policy=\"10-tag.lua\"}",
    ] {
        // Counters are process-wide (other tests run alongside): they only grow.
        let was = before
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(value(&after, series) > was, "{series} grew:\n{after}");
    }
    assert!(value(&after, "mailgate_connections_open{protocol=\"smtp\"}") >= 1.0);
    assert!(scrape(addr, "/other").await.starts_with("HTTP/1.1 404"));
}

#[test]
fn json_logs_carry_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_child_config(dir.path());
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[log]\nformat = \"json\"\n");
    std::fs::write(&cfg, text).unwrap();
    let (code, _, err) = cli(&cfg, &["user", "add", "alice@localhost", "--password-stdin"], "pw\n");
    assert_eq!(code, 0, "{err}");
    let server = ChildServer::start(&cfg);
    let addr = server.smtp;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = greeted(addr).await;
        let r = send_mail(&mut c, "a@example.org", &["alice@localhost"], "Subject: j\r\n\r\nx\r\n").await;
        assert!(r.starts_with("250"), "{r}");
        c.cmd("QUIT", "221").await;
    });
    assert!(server.terminate().success());
    let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty());
    let in_session: Vec<&serde_json::Value> = lines.iter().filter(|v| v["span"]["name"] == "session").collect();
    assert!(
        in_session.iter().any(|v| v["fields"]["message"] == "delivered"),
        "the delivery is logged inside its session: {log}"
    );
    for v in in_session {
        assert!(v["span"]["id"].as_u64().is_some(), "{v}");
        assert_eq!(v["span"]["protocol"], "smtp", "{v}");
    }
}
