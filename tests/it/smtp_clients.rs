//! Third-party clients: lettre and Python's smtplib.

use crate::common::*;

#[tokio::test]
async fn lettre_plain_delivery_to_two_recipients() {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let s = start_server(|_| {}).await;
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(s.smtp.port())
        .build();
    let email = Message::builder()
        .from("carol@example.org".parse().unwrap())
        .to("alice@localhost".parse().unwrap())
        .cc("bob@localhost".parse().unwrap())
        .subject("lettre")
        .body(String::from("hi both"))
        .unwrap();
    mailer.send(email).await.expect("sent");
    assert_eq!(s.inbox("alice@localhost").len(), 1);
    assert_eq!(s.inbox("bob@localhost").len(), 1);
    assert_eq!(s.store().blob_count().unwrap(), 1);
}

const SMTPLIB: &str = r#"
import smtplib, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
with smtplib.SMTP("127.0.0.1", port, local_hostname="py.test") as s:
    s.ehlo()
    assert s.has_extn("starttls") and s.has_extn("pipelining") and s.has_extn("smtputf8")
    s.starttls(context=ctx)
    s.ehlo()
    msg = "From: py@example.org\r\nSubject: from python\r\n\r\n.dotted\r\nplain\r\n"
    refused = s.sendmail("py@example.org", ["alice@localhost", "ghost@localhost", "bob@localhost"], msg)
    print("refused", sorted(refused.items()))
    try:
        s.sendmail("py@example.org", ["someone@elsewhere.test"], msg)
    except smtplib.SMTPRecipientsRefused as e:
        print("relay", e.recipients["someone@elsewhere.test"][0])
"#;

#[tokio::test]
async fn python_smtplib_with_starttls() {
    let s = start_server(|_| {}).await;
    let (port, cert) = (s.smtp.port().to_string(), s.cert_path());
    let out = tokio::task::spawn_blocking(move || python(SMTPLIB, &[&port, cert.to_str().unwrap()]))
        .await
        .unwrap();
    assert!(
        out.contains(
            "refused [('ghost@localhost', (550, b'5.1.1 <ghost@localhost>: Recipient address rejected: User unknown'))]"
        ),
        "{out}"
    );
    assert!(out.contains("relay 554"), "{out}");
    for who in ["alice@localhost", "bob@localhost"] {
        let inbox = s.inbox(who);
        assert_eq!(inbox.len(), 1, "{who}");
        let raw = String::from_utf8(s.body(&inbox[0])).unwrap();
        assert!(
            raw.contains("Subject: from python\r\n\r\n.dotted\r\nplain\r\n"),
            "{raw}"
        );
        assert!(raw.contains("with ESMTPS"), "{raw}");
    }
}
