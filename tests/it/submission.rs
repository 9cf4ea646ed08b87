//! Submission (RFC 6409, RFC 8314) with SMTP AUTH (RFC 4954), and `mailgate send`: Python's
//! smtplib and lettre logging in, relaying through the queue by MX from a loopback DNS zone
//! into a loopback SMTP server, brute-force lockout, and the sendmail command line with its
//! exit codes.

use crate::common::*;
use crate::dns::start_dns;
use crate::outbound::mx_to_sink;
use mailgate::config::{Listener, Protocol, TlsMode};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

fn submission(tls: TlsMode) -> Listener {
    Listener {
        protocol: Protocol::Submission,
        bind: "127.0.0.1:0".parse().unwrap(),
        tls,
        auth: None,
    }
}

/// The bound address of the `n`th submission listener.
fn submission_addr(s: &TestServer, n: usize) -> SocketAddr {
    s.running
        .addrs
        .iter()
        .filter(|(p, _)| *p == Protocol::Submission)
        .nth(n)
        .map(|(_, a)| *a)
        .expect("a submission listener")
}

const STARTTLS_LOGIN: &str = r#"
import base64, smtplib, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
with smtplib.SMTP("127.0.0.1", port, local_hostname="laptop") as s:
    s.ehlo()
    print("auth before tls offered:", s.has_extn("auth"))
    plain = base64.b64encode(b"\0alice@localhost\0pw").decode()
    print("auth before tls:", s.docmd("AUTH", "PLAIN " + plain))
    code, text = s.mail("alice@localhost")
    print("mail before auth:", code, text.decode())
    s.rset()
    s.starttls(context=ctx)
    s.ehlo()
    print("auth after tls:", s.esmtp_features.get("auth").strip())
    s.login("alice@localhost", "pw")
    msg = "From: Alice <alice@localhost>\r\nTo: pat@remote.test, bob@localhost\r\nSubject: submitted\r\n\r\nhello\r\n"
    print("refused:", s.sendmail("alice@localhost", ["pat@remote.test", "bob@localhost"], msg))
    try:
        s.sendmail("bob@localhost", ["bob@localhost"], msg)
    except smtplib.SMTPSenderRefused as e:
        print("mismatch:", e.smtp_code, e.smtp_error.decode())
"#;

#[tokio::test]
async fn smtplib_starttls_login_relays_by_mx_and_delivers_locally() {
    let (mut sink, s) = mx_to_sink(&[], |c| {
        c.listeners.push(submission(TlsMode::Starttls));
        // Passwords only over TLS, even from loopback.
        c.auth.plaintext = mailgate::config::Plaintext::Never;
    })
    .await;
    let (port, cert) = (submission_addr(&s, 0).port().to_string(), s.cert_path());
    let out = tokio::task::spawn_blocking(move || python(STARTTLS_LOGIN, &[&port, cert.to_str().unwrap()]))
        .await
        .unwrap();
    assert!(out.contains("auth before tls offered: False"), "{out}");
    assert!(
        out.contains("auth before tls: (538, b'5.7.11 Encryption required"),
        "{out}"
    );
    assert!(
        out.contains("mail before auth: 530 5.7.0 Authentication required"),
        "{out}"
    );
    assert!(out.contains("auth after tls: PLAIN LOGIN"), "{out}");
    assert!(out.contains("refused: {}"), "{out}");
    assert!(
        out.contains("mismatch: 553 5.7.1 <bob@localhost>: Sender address not owned by user alice@localhost"),
        "{out}"
    );
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].rcpts, ["pat@remote.test"]);
    assert_eq!(got[0].from, "alice@localhost");
    let local = String::from_utf8(s.body(&s.inbox("bob@localhost")[0])).unwrap();
    for raw in [&got[0].data, &local] {
        assert!(raw.contains("with ESMTPSA id"), "{raw}");
        assert!(raw.contains("\r\nMessage-ID: <"), "added (RFC 6409 §8.3): {raw}");
        assert!(raw.contains("\r\nDate: "), "added (RFC 6409 §8.2): {raw}");
        assert!(raw.contains("Subject: submitted\r\n\r\nhello\r\n"), "{raw}");
    }
    assert!(!got[0].data.starts_with("Return-Path:"), "{}", got[0].data);
}

#[tokio::test]
async fn lettre_logs_in_over_implicit_tls() {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let s = start_server(|c| c.listeners.push(submission(TlsMode::Implicit))).await;
    let pem = std::fs::read(s.cert_path()).unwrap();
    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(&pem).unwrap())
        .build_rustls()
        .unwrap();
    let email = Message::builder()
        .from("Alice <alice@localhost>".parse().unwrap())
        .to("Bob <bob@localhost>".parse().unwrap())
        .subject("over 465")
        .body(String::from("hi"))
        .unwrap();
    let port = submission_addr(&s, 0).port();
    let wrong = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::Wrapper(tls.clone()))
        .credentials(Credentials::new("alice@localhost".into(), "nope".into()))
        .build();
    let err = wrong.send(email.clone()).await.expect_err("a wrong password fails");
    assert!(err.to_string().contains("5.7.8"), "{err}");
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::Wrapper(tls))
        .credentials(Credentials::new("alice@localhost".into(), PASSWORD.into()))
        .build();
    mailer.send(email).await.expect("lettre sends after AUTH");
    let raw = String::from_utf8(s.body(&s.inbox("bob@localhost")[0])).unwrap();
    assert!(raw.contains("with ESMTPSA id"), "{raw}");
    assert!(raw.contains("(using TLS"), "{raw}");
}

#[tokio::test]
async fn brute_force_is_locked_out_and_port_25_offers_no_auth() {
    let s = start_server(|c| {
        c.listeners.push(submission(TlsMode::None));
        c.auth.max_failures_per_ip = 3;
    })
    .await;
    let mut mx = greeted(s.smtp).await;
    mx.cmd("AUTH PLAIN AGFsaWNlQGxvY2FsaG9zdABwdw==", "503 5.5.1").await;
    let mut c = greeted(submission_addr(&s, 0)).await;
    for _ in 0..3 {
        c.cmd("AUTH PLAIN AGFsaWNlQGxvY2FsaG9zdAB3cm9uZw==", "535 5.7.8").await;
    }
    // The right password no longer helps from this address.
    c.cmd("AUTH PLAIN AGFsaWNlQGxvY2FsaG9zdABwdw==", "454 4.7.0").await;
    let mut other = greeted(submission_addr(&s, 0)).await;
    other.cmd("AUTH LOGIN YWxpY2VAbG9jYWxob3N0", "334").await;
    other.cmd("cHc=", "454 4.7.0").await;
}

#[tokio::test]
async fn policies_see_the_user_and_the_rate_limit_example_works() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    let lua = std::fs::read_to_string(root.join("60-outbound-ratelimit.lua")).unwrap();
    let toml = std::fs::read_to_string(root.join("60-outbound-ratelimit.toml"))
        .unwrap()
        .replace("per_hour = 100", "per_hour = 2");
    let who = r#"
stages = { "mail" }
function on_receive(e)
  if e.session.auth_user == nil then
    return { action = "reject", code = 550, enhanced = "5.7.1", text = "who are you" }
  end
  return { add_headers = { { name = "X-Submitted-By", value = e.session.auth_user .. " via " .. e.session.listener } } }
end
"#;
    let s = start_with_policies(
        &[
            ("10-who.lua", who),
            ("60-outbound-ratelimit.lua", &lua),
            ("60-outbound-ratelimit.toml", &toml),
        ],
        |c| c.listeners.push(submission(TlsMode::None)),
    )
    .await;
    let mut c = greeted(submission_addr(&s, 0)).await;
    c.cmd("AUTH PLAIN AGFsaWNlQGxvY2FsaG9zdABwdw==", "235 2.7.0").await;
    for n in 0..2 {
        let msg = format!("Subject: n{n}\r\n\r\nhi\r\n");
        let r = send_mail(&mut c, "alice@localhost", &["bob@localhost"], &msg).await;
        assert!(r.starts_with("250"), "{r}");
    }
    c.cmd("MAIL FROM:<alice@localhost>", "450 4.7.1 Sending limit reached")
        .await;
    let texts = s.texts("bob@localhost", "INBOX");
    assert_eq!(texts.len(), 2);
    assert!(
        texts[0].contains("X-Submitted-By: alice@localhost via submission"),
        "{}",
        texts[0]
    );
    let mut anonymous = greeted(s.smtp).await;
    anonymous
        .cmd("MAIL FROM:<x@example.org>", "550 5.7.1 who are you")
        .await;
}

#[tokio::test]
async fn shipped_spam_policies_skip_authenticated_mail() {
    // The shipped policies, with loopback clients' HELO judged like anyone's (a test has no
    // other address to connect from).
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    let judged = mailgate::hooks::shipped::FILES
        .iter()
        .find(|(name, _)| *name == "15-helo.toml")
        .unwrap()
        .1
        .replace("skip_loopback = true", "skip_loopback = false");
    assert!(judged.contains("skip_loopback = false"));
    write_policies(&policies, mailgate::hooks::shipped::FILES);
    write_policies(&policies, &[("15-helo.toml", &judged)]);
    // An empty zone: every lookup is answered on loopback.
    let dns = start_dns(&[]).await;
    let s = start_server(|c| {
        c.policies.dir = policies;
        c.dns.servers = vec![dns];
        c.listeners.push(submission(TlsMode::None));
    })
    .await;
    // "laptop" has no dot: HELO_NO_DOT for anyone else.
    let msg = "From: alice@localhost\r\nSubject: lunch\r\n\r\nAt noon?\r\n";
    let mut mx = connect(s.smtp).await;
    mx.cmd("EHLO laptop", "250").await;
    let r = send_mail(&mut mx, "carol@example.org", &["bob@localhost"], msg).await;
    assert!(r.starts_with("250"), "{r}");
    let mut c = connect(submission_addr(&s, 0)).await;
    c.cmd("EHLO laptop", "250").await;
    c.cmd("AUTH PLAIN AGFsaWNlQGxvY2FsaG9zdABwdw==", "235").await;
    let r = send_mail(&mut c, "alice@localhost", &["bob@localhost"], msg).await;
    assert!(r.starts_with("250"), "{r}");
    let texts = s.texts("bob@localhost", "INBOX");
    assert_eq!(texts.len(), 2, "{texts:?}");
    let (outside, ours) = (&texts[0], &texts[1]);
    assert!(
        outside.contains("with ESMTP id") && ours.contains("with ESMTPA id"),
        "{texts:?}"
    );
    assert!(outside.contains("HELO_NO_DOT"), "{outside}");
    assert!(outside.contains("spf="), "{outside}");
    assert!(!ours.contains("HELO_NO_DOT"), "{ours}");
    assert!(!ours.contains("spf="), "no SPF/DKIM/DMARC for our own users: {ours}");
}

/// A client on this host is local software (a content filter handing mail on, a script):
/// its HELO ("localhost", as Python's smtplib sends it here) names this host and is not
/// scored, unless 15-helo.toml says `skip_loopback = false`.
#[tokio::test]
async fn helo_checks_skip_loopback_clients_unless_told_not_to() {
    const HELO_LUA: &str = include_str!("../../policies/15-helo.lua");
    const HELO_TOML: &str = include_str!("../../policies/15-helo.toml");
    let judged = HELO_TOML.replace("skip_loopback = true", "skip_loopback = false");
    assert_ne!(judged, HELO_TOML);
    for (toml, scored) in [(HELO_TOML, false), (judged.as_str(), true)] {
        let s = start_with_policies(&[("15-helo.lua", HELO_LUA), ("15-helo.toml", toml)], |_| {}).await;
        let mut c = connect(s.smtp).await;
        c.cmd("EHLO localhost", "250").await;
        let msg = "From: carol@example.org\r\nSubject: hello\r\n\r\nHi.\r\n";
        let r = send_mail(&mut c, "carol@example.org", &["bob@localhost"], msg).await;
        assert!(r.starts_with("250"), "{r}");
        let texts = s.texts("bob@localhost", "INBOX");
        assert_eq!(texts.len(), 1);
        assert_eq!(
            texts[0].contains("HELO_NO_DOT"),
            scored,
            "skip_loopback {}: {}",
            !scored,
            texts[0]
        );
    }
}

/// A config file for the `send` child: the test server's data dir and host name.
fn send_config(dir: &Path, data: &Path) -> PathBuf {
    let path = dir.join("send.toml");
    let text = format!(
        "[server]\nhostname = \"mx.test\"\ndata_dir = \"{}\"\nlocal_domains = [\"localhost\", \"example.test\"]\n",
        data.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `program` (the binary under another name, or `mailgate send`) with stdin.
fn run_send(program: &Path, config: &Path, args: &[&str], stdin: &str) -> (i32, String) {
    use std::io::Write;
    let mut cmd = std::process::Command::new(program);
    if program.file_name().is_some_and(|n| n == "sendmail") {
        cmd.env("MAILGATE_CONFIG", config);
    } else {
        cmd.arg("--config").arg(config).arg("send");
    }
    let mut p = cmd
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_t_delivers_to_to_cc_and_bcc_without_bcc() {
    let s = start_server(|_| {}).await;
    s.store().create_account("carol@localhost", password_hash()).unwrap();
    let cfg = send_config(s.dir.path(), s.dir.path());
    let bin = PathBuf::from(bin());
    let msg = "To: Alice <alice@localhost>\nCc: friends: Bob <bob@localhost>;\nBcc: carol@localhost\nSubject: by send -t\n\nhello\n.\nnot part of it\n";
    let (code, err) = tokio::task::spawn_blocking({
        let (bin, cfg) = (bin.clone(), cfg.clone());
        move || run_send(&bin, &cfg, &["-t", "-F", "Cron Daemon"], msg)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    for who in ["alice@localhost", "bob@localhost", "carol@localhost"] {
        let texts = s.texts(who, "INBOX");
        assert_eq!(texts.len(), 1, "{who}");
        let t = &texts[0];
        assert!(!t.to_ascii_lowercase().contains("bcc"), "{who}: {t}");
        assert!(t.contains("From: Cron Daemon <"), "{t}");
        assert!(t.contains("@mx.test>\r\n"), "the sender defaults to user@hostname: {t}");
        assert!(t.contains("(mailgate, from userid "), "{t}");
        assert!(t.contains("\r\nMessage-ID: <") && t.contains("\r\nDate: "), "{t}");
        assert!(t.ends_with("\r\n\r\nhello\r\n"), "a lone dot ends the message: {t}");
    }
    // Installed as `sendmail`: -oi keeps the lone dot; an explicit sender.
    let link = s.dir.path().join("sendmail");
    std::os::unix::fs::symlink(&bin, &link).unwrap();
    let (code, err) = tokio::task::spawn_blocking({
        let (link, cfg) = (link.clone(), cfg.clone());
        move || {
            run_send(
                &link,
                &cfg,
                &["-oi", "-f", "alice@localhost", "bob@localhost"],
                "Subject: dots\n\nbefore\n.\nafter\n",
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let t = s.texts("bob@localhost", "INBOX").pop().unwrap();
    assert!(t.starts_with("Return-Path: <alice@localhost>"), "{t}");
    assert!(t.ends_with("before\r\n.\r\nafter\r\n"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_exit_codes() {
    let s = start_server(|_| {}).await;
    let cfg = send_config(s.dir.path(), s.dir.path());
    let idle = tempfile::tempdir().unwrap();
    let no_server = send_config(idle.path(), idle.path());
    let bin = PathBuf::from(bin());
    let cases: Vec<(PathBuf, Vec<&str>, &str, i32, &str)> = vec![
        (
            cfg.clone(),
            vec!["ghost@localhost"],
            "Subject: x\n\nx\n",
            67,
            "User unknown",
        ),
        (
            cfg.clone(),
            vec!["-f", "not an address", "bob@localhost"],
            "Subject: x\n\nx\n",
            65,
            "bad sender",
        ),
        (cfg.clone(), vec!["-t"], "Subject: nobody\n\nx\n", 64, "no recipient"),
        (cfg.clone(), vec!["-bs"], "", 64, "-bs"),
        (no_server, vec!["bob@localhost"], "Subject: x\n\nx\n", 69, "not running"),
    ];
    for (config, args, stdin, want, text) in cases {
        let (code, err) = tokio::task::spawn_blocking({
            let (bin, args) = (bin.clone(), args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
            move || {
                run_send(
                    &bin,
                    &config,
                    &args.iter().map(String::as_str).collect::<Vec<_>>(),
                    stdin,
                )
            }
        })
        .await
        .unwrap();
        assert_eq!(code, want, "{args:?}: {err}");
        assert!(err.contains(text), "{args:?}: {err}");
    }
    assert!(s.inbox("bob@localhost").is_empty(), "nothing was sent");
}
