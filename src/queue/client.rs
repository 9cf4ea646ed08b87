//! The outbound SMTP client (RFC 5321 as a client): greeting, EHLO (HELO when refused),
//! STARTTLS when offered, MAIL/RCPT (pipelined when the server offers PIPELINING), DATA with
//! dot-stuffing, RSET between transactions on one connection, QUIT. Timeouts are RFC 5321
//! §4.5.3.2's.

use crate::config::outbound::OutboundTls;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// RFC 5321 §4.5.3.2: initial 220, MAIL, RCPT (5 min); DATA initiation (2 min); a data
/// block (3 min); the reply to the final dot (10 min).
const GREETING: Duration = Duration::from_secs(300);
const COMMAND: Duration = Duration::from_secs(300);
const DATA_INIT: Duration = Duration::from_secs(120);
const DATA_BLOCK: Duration = Duration::from_secs(180);
const DATA_END: Duration = Duration::from_secs(600);
/// Connecting is not in the RFC; Postfix waits 30 s.
pub const CONNECT: Duration = Duration::from_secs(30);
/// Longest reply we read (a line, and lines of one reply).
const MAX_REPLY_LINE: usize = 4096;
const MAX_REPLY_LINES: usize = 100;

/// A server's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text of every line, joined by spaces.
    pub text: String,
}

impl Reply {
    fn local(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            text: text.into(),
        }
    }

    pub fn is_ok(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Why a connection or a transaction stopped before a reply said so: worth another MX host
/// or a later try (RFC 5321 §4.5.4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken(pub String);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the server announced in its EHLO reply.
#[derive(Debug, Default, Clone)]
pub struct Extensions {
    pub pipelining: bool,
    pub size: Option<u64>,
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub starttls: bool,
    pub dsn: bool,
}

/// One connection to a receiving server.
pub struct Connection {
    io: BufReader<Box<dyn Io>>,
    pub ext: Extensions,
    pub tls: bool,
    /// The host name or address we connected to, for replies and logs.
    pub peer: String,
}

/// What happened to each recipient of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered(Reply),
    /// 4xx: try again later.
    Deferred(Reply),
    /// 5xx: failed for good.
    Failed(Reply),
}

/// A message to send on a connection.
pub struct Envelope<'a> {
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub body: &'a [u8],
    /// DSN requests passed on when the server offers DSN (RFC 3461 §4): `RET` and `ENVID`
    /// on MAIL, and per recipient (in `recipients`' order) `NOTIFY` and `ORCPT`.
    pub ret: Option<&'a str>,
    pub env_id: Option<&'a str>,
    pub rcpt_dsn: &'a [(Vec<String>, Option<String>)],
}

/// RFC 3461 §4 xtext: `+HH` for `+`, `=` and anything outside `!`..`~`.
fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// MAIL FROM and one RCPT TO per recipient, with the parameters `ext` lets us send.
fn envelope_commands(env: &Envelope<'_>, ext: &Extensions, needs_utf8: bool) -> Vec<String> {
    let mut mail = format!("MAIL FROM:<{}>", crate::mail::address::smtp_path(env.sender));
    if ext.size.is_some() {
        mail.push_str(&format!(" SIZE={}", env.body.len()));
    }
    if ext.eight_bit && env.body.iter().any(|b| *b >= 0x80) {
        mail.push_str(" BODY=8BITMIME");
    }
    if needs_utf8 {
        mail.push_str(" SMTPUTF8");
    }
    if ext.dsn {
        if let Some(ret) = env.ret {
            mail.push_str(&format!(" RET={ret}"));
        }
        if let Some(id) = env.env_id {
            mail.push_str(&format!(" ENVID={}", xtext(id)));
        }
    }
    let mut commands = vec![mail];
    for (i, r) in env.recipients.iter().enumerate() {
        let mut rcpt = format!("RCPT TO:<{}>", crate::mail::address::smtp_path(r));
        if let Some((notify, orcpt)) = env.rcpt_dsn.get(i).filter(|_| ext.dsn) {
            if !notify.is_empty() {
                rcpt.push_str(&format!(" NOTIFY={}", notify.join(",")));
            }
            if let Some(o) = orcpt {
                rcpt.push_str(&format!(" ORCPT={}", xtext(o)));
            }
        }
        commands.push(rcpt);
    }
    commands
}

impl Connection {
    /// Connects, reads the greeting, says EHLO (HELO if refused) and upgrades to TLS as
    /// `tls` says. A 5xx greeting or EHLO is a reply (permanent for this host); anything
    /// else that stops it is [`Broken`].
    pub async fn open(
        addr: SocketAddr,
        peer: &str,
        helo: &str,
        tls: OutboundTls,
    ) -> Result<Connection, Result<Reply, Broken>> {
        let tcp = tokio::time::timeout(CONNECT, TcpStream::connect(addr))
            .await
            .map_err(|_| Err(Broken(format!("connect to {addr} timed out"))))?
            .map_err(|e| Err(Broken(format!("connect to {addr}: {e}"))))?;
        let _ = tcp.set_nodelay(true);
        let mut c = Connection {
            io: BufReader::new(Box::new(tcp)),
            ext: Extensions::default(),
            tls: false,
            peer: peer.to_string(),
        };
        let greeting = c.read_reply(GREETING).await.map_err(Err)?;
        if greeting.code != 220 {
            return Err(Ok(greeting));
        }
        c.hello(helo).await?;
        if c.ext.starttls && tls != OutboundTls::None {
            let r = c.command("STARTTLS", COMMAND).await.map_err(Err)?;
            if r.code == 220 {
                c.start_tls().await.map_err(Err)?;
                c.hello(helo).await?;
            } else if tls == OutboundTls::Require {
                return Err(Ok(Reply::local(
                    451,
                    format!("TLS is required and STARTTLS failed: {r}"),
                )));
            }
        } else if tls == OutboundTls::Require {
            return Err(Ok(Reply::local(
                451,
                "TLS is required and the server does not offer STARTTLS",
            )));
        }
        Ok(c)
    }

    async fn hello(&mut self, helo: &str) -> Result<(), Result<Reply, Broken>> {
        let (r, lines) = self
            .command_lines(&format!("EHLO {helo}"), COMMAND)
            .await
            .map_err(Err)?;
        self.ext = Extensions::default();
        if r.code == 250 {
            for l in lines.iter().skip(1) {
                let mut words = l.split_whitespace();
                let kw = words.next().unwrap_or("").to_ascii_uppercase();
                match kw.as_str() {
                    "PIPELINING" => self.ext.pipelining = true,
                    "SIZE" => self.ext.size = words.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0),
                    "8BITMIME" => self.ext.eight_bit = true,
                    "SMTPUTF8" => self.ext.smtputf8 = true,
                    "STARTTLS" => self.ext.starttls = true,
                    "DSN" => self.ext.dsn = true,
                    _ => {}
                }
            }
            return Ok(());
        }
        let r = self.command(&format!("HELO {helo}"), COMMAND).await.map_err(Err)?;
        if r.code == 250 { Ok(()) } else { Err(Ok(r)) }
    }

    async fn start_tls(&mut self) -> Result<(), Broken> {
        let config = client_config()?;
        let name = rustls_pki_types::ServerName::try_from(self.peer.clone())
            .unwrap_or_else(|_| rustls_pki_types::ServerName::try_from("localhost").expect("a valid name"));
        let stream = std::mem::replace(&mut self.io, BufReader::new(Box::new(tokio::io::duplex(1).0)));
        // Whatever the server sent after its 220 was sent in clear: it is dropped.
        let plain = stream.into_inner();
        let tls = tokio::time::timeout(
            crate::net::conn::TLS_HANDSHAKE_TIMEOUT,
            tokio_rustls::TlsConnector::from(config).connect(name, plain),
        )
        .await
        .map_err(|_| Broken("TLS handshake timed out".into()))?
        .map_err(|e| Broken(format!("TLS handshake: {e}")))?;
        self.io = BufReader::new(Box::new(tls));
        self.tls = true;
        Ok(())
    }

    /// One transaction: MAIL, every RCPT, DATA for the accepted ones. Gives each
    /// recipient's outcome (in order), or [`Broken`] when the connection failed part-way
    /// (no recipient of it counts as delivered then).
    pub async fn send(&mut self, env: &Envelope<'_>) -> Result<Vec<Outcome>, Broken> {
        let needs_utf8 = !env.sender.is_ascii() || env.recipients.iter().any(|r| !r.is_ascii());
        if needs_utf8 && !self.ext.smtputf8 {
            let r = Reply::local(
                553,
                "5.6.7 The message needs SMTPUTF8, which the receiving server does not offer",
            );
            return Ok(env.recipients.iter().map(|_| Outcome::Failed(r.clone())).collect());
        }
        if let Some(max) = self.ext.size.filter(|max| env.body.len() as u64 > *max) {
            let r = Reply::local(
                552,
                format!("5.3.4 Message size exceeds the receiving server's limit of {max}"),
            );
            return Ok(env.recipients.iter().map(|_| Outcome::Failed(r.clone())).collect());
        }
        let commands = envelope_commands(env, &self.ext, needs_utf8);
        // With PIPELINING, MAIL and every RCPT go in one write (RFC 2920); DATA waits.
        let replies = if self.ext.pipelining {
            let mut batch = String::new();
            for c in &commands {
                batch.push_str(c);
                batch.push_str("\r\n");
            }
            self.write(batch.as_bytes()).await?;
            let mut replies = Vec::with_capacity(commands.len());
            for _ in &commands {
                replies.push(self.read_reply(COMMAND).await?);
            }
            replies
        } else {
            let mut replies = Vec::with_capacity(commands.len());
            for (i, c) in commands.iter().enumerate() {
                let r = self.command(c, COMMAND).await?;
                let stop = i == 0 && !r.is_ok();
                replies.push(r);
                if stop {
                    break;
                }
            }
            replies
        };
        let mail_reply = replies[0].clone();
        if !mail_reply.is_ok() {
            self.rset().await?;
            return Ok(env.recipients.iter().map(|_| refused(&mail_reply)).collect());
        }
        let rcpt: Vec<&Reply> = replies[1..].iter().collect();
        if !rcpt.iter().any(|r| r.is_ok()) {
            self.rset().await?;
            return Ok(rcpt.into_iter().map(refused).collect());
        }
        let data = self.command("DATA", DATA_INIT).await?;
        if data.code != 354 {
            let out = rcpt
                .iter()
                .map(|r| if r.is_ok() { refused(&data) } else { refused(r) })
                .collect();
            self.rset().await?;
            return Ok(out);
        }
        let mut stuffed = dot_stuff(env.body);
        stuffed.extend_from_slice(b".\r\n");
        tokio::time::timeout(DATA_BLOCK, self.io.get_mut().write_all(&stuffed))
            .await
            .map_err(|_| Broken("timed out sending the message".into()))?
            .map_err(|e| Broken(format!("sending the message: {e}")))?;
        let end = self.read_reply(DATA_END).await?;
        Ok(rcpt
            .iter()
            .map(|r| match (r.is_ok(), end.is_ok()) {
                (true, true) => Outcome::Delivered(end.clone()),
                (true, false) => refused(&end),
                (false, _) => refused(r),
            })
            .collect())
    }

    /// Asks whether `address` would be accepted, without sending anything: `MAIL FROM:<>`,
    /// `RCPT TO`, `RSET` (Postfix's address verification probe). Gives the RCPT reply (or
    /// MAIL's, when MAIL was refused).
    pub async fn probe(&mut self, address: &str) -> Result<Reply, Broken> {
        let mail = self.command("MAIL FROM:<>", COMMAND).await?;
        if !mail.is_ok() {
            self.rset().await?;
            return Ok(mail);
        }
        let rcpt = self.command(&format!("RCPT TO:<{address}>"), COMMAND).await?;
        self.rset().await?;
        Ok(rcpt)
    }

    pub async fn rset(&mut self) -> Result<(), Broken> {
        self.command("RSET", COMMAND).await.map(|_| ())
    }

    /// QUIT, best effort (the messages are already accounted for).
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.command("QUIT", COMMAND)).await;
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        tokio::time::timeout(COMMAND, self.io.get_mut().write_all(bytes))
            .await
            .map_err(|_| Broken("timed out writing".into()))?
            .map_err(|e| Broken(format!("writing: {e}")))
    }

    async fn command(&mut self, line: &str, wait: Duration) -> Result<Reply, Broken> {
        Ok(self.command_lines(line, wait).await?.0)
    }

    async fn command_lines(&mut self, line: &str, wait: Duration) -> Result<(Reply, Vec<String>), Broken> {
        self.write(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply_lines(wait).await
    }

    async fn read_reply(&mut self, wait: Duration) -> Result<Reply, Broken> {
        Ok(self.read_reply_lines(wait).await?.0)
    }

    /// One reply (its lines up to the one with a space after the code), within `wait`.
    async fn read_reply_lines(&mut self, wait: Duration) -> Result<(Reply, Vec<String>), Broken> {
        let read = async {
            let mut lines = Vec::new();
            loop {
                let mut buf = Vec::new();
                let n = tokio::io::AsyncReadExt::take(&mut self.io, MAX_REPLY_LINE as u64)
                    .read_until(b'\n', &mut buf)
                    .await
                    .map_err(|e| Broken(format!("reading a reply: {e}")))?;
                if n == 0 {
                    return Err(Broken("the server closed the connection".into()));
                }
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
                let code = line
                    .get(..3)
                    .and_then(|c| c.parse::<u16>().ok())
                    .filter(|c| (200..600).contains(c));
                let Some(code) = code else {
                    return Err(Broken(format!("not an SMTP reply: {line:?}")));
                };
                let more = line.as_bytes().get(3) == Some(&b'-');
                lines.push(line.get(4..).unwrap_or("").to_string());
                if !more {
                    let text = lines.join(" ");
                    return Ok((Reply { code, text }, lines));
                }
                if lines.len() > MAX_REPLY_LINES {
                    return Err(Broken("a reply of too many lines".into()));
                }
            }
        };
        tokio::time::timeout(wait, read)
            .await
            .map_err(|_| Broken("timed out waiting for a reply".into()))?
    }
}

fn refused(r: &Reply) -> Outcome {
    if r.is_permanent() {
        Outcome::Failed(r.clone())
    } else {
        Outcome::Deferred(r.clone())
    }
}

/// The message as DATA sends it (RFC 5321 §4.5.2): a dot at the start of a line doubled,
/// line endings CRLF, ending with CRLF (the terminating `.` line follows).
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let body = crate::mail::wire::crlf(body.to_vec());
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 3);
    let mut line_start = true;
    for &b in &body {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    // The end marker needs the last line ended; an empty message has no line to end (found
    // by the smtp_data fuzz target: an empty body gained a blank line on the way out).
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The TLS client configuration of every outbound connection, built once.
fn client_config() -> Result<Arc<rustls::ClientConfig>, Broken> {
    static CONFIG: std::sync::LazyLock<Result<Arc<rustls::ClientConfig>, String>> = std::sync::LazyLock::new(|| {
        let provider = rustls::crypto::ring::default_provider();
        let verifier = AnyCertificate(provider.signature_verification_algorithms);
        rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .map(|b| {
                Arc::new(
                    b.dangerous()
                        .with_custom_certificate_verifier(Arc::new(verifier))
                        .with_no_client_auth(),
                )
            })
            .map_err(|e| e.to_string())
    });
    CONFIG.clone().map_err(Broken)
}

/// Opportunistic TLS (Postfix's `may`, and `encrypt` without verification): encryption
/// against passive listeners, no certificate check (most MX certificates would fail one);
/// the handshake is still checked against the certificate's key.
#[derive(Debug)]
struct AnyCertificate(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// parse ∘ write = id for the envelope commands we send: the SMTP parser our own
        /// server uses (smtp-proto, Stalwart's) reads back the addresses and every DSN and
        /// size parameter we meant.
        #[test]
        fn envelope_commands_read_back_as_written(
            sender in proptest::option::of(address()),
            rcpts in proptest::collection::vec(
                (address(), proptest::option::of(notify()), proptest::option::of(ascii_address())), 1..4),
            ret in proptest::option::of(proptest::prop_oneof!["FULL", "HDRS"]),
            // RFC 3461 §4.4: printable US-ASCII (xtext carries bytes; a parser may read
            // each `+HH` as one character, as smtp-proto does).
            env_id in proptest::option::of("[ -~]{1,30}"),
            eight_bit_body in proptest::prelude::any::<bool>(),
            ext in (proptest::prelude::any::<bool>(), proptest::prelude::any::<bool>(), proptest::prelude::any::<bool>()),
        ) {
            use proptest::prop_assert_eq;
            // Addresses as the queue holds them: as our server's parser stored them.
            let stored = |raw: &str| {
                let line = format!("RCPT TO:<{raw}>\r\n");
                match smtp_proto::Request::parse(&mut line.as_bytes().iter()) {
                    Ok(smtp_proto::Request::Rcpt { to }) => Some(to.address.into_owned()),
                    _ => None,
                }
            };
            let sender = sender.as_deref().map_or(Some(String::new()), stored);
            let recipients: Option<Vec<String>> = rcpts.iter().map(|r| stored(&r.0)).collect();
            let (Some(sender), Some(recipients)) = (sender, recipients) else {
                return Ok(()); // not an address our server would have taken
            };
            let rcpt_dsn: Vec<(Vec<String>, Option<String>)> = rcpts
                .iter()
                .map(|(_, n, o)| (n.clone().unwrap_or_default(), o.as_ref().map(|o| format!("rfc822;{o}"))))
                .collect();
            let body: &[u8] = if eight_bit_body { "caf\u{e9}\r\n".as_bytes() } else { b"cafe\r\n" };
            let env = Envelope {
                sender: &sender,
                recipients: &recipients,
                body,
                ret: ret.as_deref(),
                env_id: env_id.as_deref(),
                rcpt_dsn: &rcpt_dsn,
            };
            let (size, dsn, eight_bit) = ext;
            let ext = Extensions { size: size.then_some(1 << 20), dsn, eight_bit, smtputf8: true, ..Default::default() };
            let needs_utf8 = !sender.is_ascii() || recipients.iter().any(|r| !r.is_ascii());
            let commands = envelope_commands(&env, &ext, needs_utf8);
            prop_assert_eq!(commands.len(), 1 + recipients.len());
            let parse = |c: &str| {
                let line = format!("{c}\r\n");
                smtp_proto::Request::parse(&mut line.as_bytes().iter()).map(|r| r.into_owned())
            };
            let Ok(smtp_proto::Request::Mail { from }) = parse(&commands[0]) else {
                panic!("{:?} does not parse", commands[0]);
            };
            prop_assert_eq!(&from.address, &sender);
            prop_assert_eq!(from.size, if size { body.len() } else { 0 });
            prop_assert_eq!(from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0, eight_bit && eight_bit_body);
            prop_assert_eq!(from.flags & smtp_proto::MAIL_SMTPUTF8 != 0, needs_utf8);
            let ret_flag = match from.flags & (smtp_proto::MAIL_RET_FULL | smtp_proto::MAIL_RET_HDRS) {
                smtp_proto::MAIL_RET_FULL => Some("FULL"),
                smtp_proto::MAIL_RET_HDRS => Some("HDRS"),
                _ => None,
            };
            prop_assert_eq!(ret_flag, ret.as_deref().filter(|_| dsn));
            prop_assert_eq!(from.env_id.as_deref(), env_id.as_deref().filter(|_| dsn));
            for ((c, address), (_, notify, orcpt)) in commands[1..].iter().zip(&recipients).zip(&rcpts) {
                let Ok(smtp_proto::Request::Rcpt { to }) = parse(c) else { panic!("{c:?} does not parse") };
                prop_assert_eq!(&to.address, address);
                let flags = [
                    ("SUCCESS", smtp_proto::RCPT_NOTIFY_SUCCESS),
                    ("FAILURE", smtp_proto::RCPT_NOTIFY_FAILURE),
                    ("DELAY", smtp_proto::RCPT_NOTIFY_DELAY),
                    ("NEVER", smtp_proto::RCPT_NOTIFY_NEVER),
                ];
                let read: Vec<&str> = flags.iter().filter(|(_, f)| to.flags & f != 0).map(|(n, _)| *n).collect();
                let mut sent: Vec<&str> = notify.iter().flatten().map(String::as_str).filter(|_| dsn).collect();
                sent.sort_by_key(|n| flags.iter().position(|(f, _)| f == n));
                prop_assert_eq!(read, sent);
                prop_assert_eq!(to.orcpt.as_ref(), orcpt.as_ref().filter(|_| dsn));
            }
        }
    }

    /// Addresses as they reach the queue: dot-atoms with the characters RFC 5321 allows,
    /// quoted local parts with spaces and specials, UTF-8 (RFC 6531).
    fn address() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::strategy::Strategy;
        let local = proptest::prop_oneof![
            "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\\.[a-zA-Z0-9+_-]{1,6}){0,2}",
            "\"([a-zA-Z0-9 ;,@()<>.]|\\\\\"|\\\\\\\\){1,12}\"",
            "[a-z\u{e9}\u{fc}\u{4e2d}]{1,8}",
        ];
        let domain = proptest::prop_oneof![
            "[a-z0-9]{1,10}(\\.[a-z0-9-]{1,8}){0,2}\\.[a-z]{2,6}",
            "[a-z\u{e9}]{1,8}\\.example"
        ];
        (local, domain).prop_map(|(l, d)| format!("{l}@{d}"))
    }

    /// An ORCPT address of type `rfc822` (an SMTPUTF8 one would be `utf-8`, RFC 6533).
    fn ascii_address() -> impl proptest::strategy::Strategy<Value = String> {
        "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~.-]{1,12}@[a-z0-9.-]{1,12}"
    }

    /// A NOTIFY list as the session keeps it: NEVER alone, or some of the other three.
    fn notify() -> impl proptest::strategy::Strategy<Value = Vec<String>> {
        use proptest::strategy::Strategy;
        proptest::prop_oneof![
            proptest::strategy::Just(vec!["NEVER".to_string()]),
            proptest::sample::subsequence(vec!["SUCCESS", "FAILURE", "DELAY"], 1..=3)
                .prop_map(|v| v.into_iter().map(String::from).collect()),
        ]
    }

    #[test]
    fn dot_stuffing_and_line_endings() {
        assert_eq!(dot_stuff(b".a\r\nb\r\n..c\nd"), b"..a\r\nb\r\n...c\r\nd\r\n");
        assert_eq!(dot_stuff(b"x\r\n.\r\n"), b"x\r\n..\r\n");
        // An empty message is just the end marker (the DATA line ended the previous line).
        assert_eq!(dot_stuff(b""), b"");
        assert_eq!(xtext("rfc822;a+b=c d@x"), "rfc822;a+2Bb+3Dc+20d@x");
    }
}
