//! STARTTLS and implicit TLS with real rustls on both sides, verified against the
//! certificate the server generated on first start.

use crate::common::*;
use mailgate::config::{Protocol, TlsMode};
use std::sync::Arc;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub fn connector(cert_pem: &std::path::Path) -> TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert_pem).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}

async fn upgrade(c: Client<TcpStream>, cert: &std::path::Path) -> Client<TlsStream<TcpStream>> {
    let tcp = c.io.into_inner();
    let tls = connector(cert)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("handshake verifies");
    Client {
        io: BufReader::new(tls),
    }
}

#[tokio::test]
async fn starttls_with_lettre_verifies_the_generated_certificate() {
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let s = start_server(|_| {}).await;
    let pem = std::fs::read(s.cert_path()).unwrap();
    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(&pem).unwrap())
        .build_rustls()
        .unwrap();
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(s.smtp.port())
        .tls(Tls::Required(tls))
        .build();
    let email = Message::builder()
        .from("Carol <carol@example.org>".parse().unwrap())
        .to("Alice <alice@localhost>".parse().unwrap())
        .subject("over tls")
        .body(String::from("secret\r\n.leading dot line\r\n"))
        .unwrap();
    let resp = mailer.send(email).await.expect("lettre sends over STARTTLS");
    assert!(resp.is_positive());
    let raw = String::from_utf8(s.body(&s.inbox("alice@localhost")[0])).unwrap();
    assert!(raw.contains("with ESMTPS id"), "{raw}");
    assert!(raw.contains("(using TLS"), "{raw}");
    assert!(
        raw.contains("\r\n.leading dot line\r\n"),
        "dot-stuffing round-trips: {raw}"
    );
}

#[tokio::test]
async fn plaintext_pipelined_after_starttls_is_discarded() {
    let s = start_server(|_| {}).await;
    let mut c = greeted(s.smtp).await;
    // The injected commands arrive in the same packet as STARTTLS (CVE-2011-0411).
    c.send(b"STARTTLS\r\nEHLO evil.test\r\nMAIL FROM:<evil@example.org>\r\n")
        .await;
    assert!(c.reply().await.starts_with("220 2.0.0"));
    let mut t = upgrade(c, &s.cert_path()).await;
    // Had the injected MAIL been kept, this RCPT would be accepted.
    t.cmd("RCPT TO:<alice@localhost>", "503 5.5.1").await;
    let ehlo = t.cmd("EHLO client.test", "250").await;
    assert!(!ehlo.contains("STARTTLS"), "no STARTTLS offered inside TLS: {ehlo}");
    t.cmd("STARTTLS", "503").await;
    let r = send_mail(&mut t, "a@example.org", &["alice@localhost"], &message("tls", "x")).await;
    assert!(r.starts_with("250"), "{r}");
}

#[tokio::test]
async fn implicit_tls_listener() {
    let s = start_server(|c| c.listeners[0].tls = TlsMode::Implicit).await;
    let addr = s.running.addr(Protocol::Smtp).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector(&s.cert_path())
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let mut c = Client {
        io: BufReader::new(tls),
    };
    assert!(c.reply().await.starts_with("220 mx.test"));
    let ehlo = c.cmd("EHLO client.test", "250").await;
    assert!(!ehlo.contains("STARTTLS"));
    let r = send_mail(&mut c, "a@example.org", &["bob@localhost"], &message("smtps", "x")).await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(s.inbox("bob@localhost").len(), 1);
}

#[tokio::test]
async fn no_starttls_on_a_plain_listener() {
    let s = start_server(|c| c.listeners[0].tls = TlsMode::None).await;
    let mut c = connect(s.smtp).await;
    let ehlo = c.cmd("EHLO client.test", "250").await;
    assert!(!ehlo.contains("STARTTLS"));
    c.cmd("STARTTLS", "454 4.7.0").await;
}

/// Reads until the peer closes; what it sent on the way (a refusal, say).
async fn read_to_close(t: &mut TcpStream, within: std::time::Duration) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 512];
        loop {
            match t.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    got
}

/// A TLS handshake flood: connections that start a handshake and stall hold a slot only
/// until `tls_handshake_timeout_secs`; past `max_connections_per_ip` more are refused at once;
/// a client from elsewhere is served meanwhile, and the flooding address gets its slots back.
#[tokio::test]
async fn stalled_tls_handshakes_are_cut_off_and_starve_no_one() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let s = start_server(|c| {
        for l in &mut c.listeners {
            if l.protocol == Protocol::Imap {
                l.tls = TlsMode::Implicit;
            }
        }
        c.imap.max_connections_per_ip = 4;
        c.server.tls_handshake_timeout_secs = 1;
    })
    .await;
    // Twelve connections that send the start of a ClientHello and nothing more.
    let mut stalled = Vec::new();
    for _ in 0..12 {
        let mut t = TcpStream::connect(s.imap).await.unwrap();
        t.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
        stalled.push(t);
    }
    // Another address is served at once, handshake and all.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let tcp = sock.connect(s.imap).await.unwrap();
    let tls = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        connector(&s.cert_path()).connect("localhost".try_into().unwrap(), tcp),
    )
    .await
    .expect("handshake while the flood lasts")
    .unwrap();
    let mut other = BufReader::new(tls);
    let mut greeting = String::new();
    other.read_line(&mut greeting).await.unwrap();
    assert!(greeting.starts_with("* OK"), "{greeting}");
    // Every stalled connection is closed: eight at once with a refusal, four by the timeout.
    let mut refused = 0;
    for t in &mut stalled {
        let got = read_to_close(t, std::time::Duration::from_secs(10)).await;
        refused += usize::from(got.starts_with(b"* BYE [UNAVAILABLE]"));
    }
    assert_eq!(refused, 8);
    // The slots are free again for the flooding address.
    let tcp = TcpStream::connect(s.imap).await.unwrap();
    let tls = connector(&s.cert_path())
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("a slot is free again");
    let mut again = BufReader::new(tls);
    let mut greeting = String::new();
    again.read_line(&mut greeting).await.unwrap();
    assert!(greeting.starts_with("* OK"), "{greeting}");
}
