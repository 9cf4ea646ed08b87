//! Starting servers and talking to them.

use mailgate::config::{Config, Listener, Protocol, TlsMode};
use mailgate::server::{Running, start};
use mailgate::store::{MailStore, StoredMessage};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub running: Running,
    pub smtp: SocketAddr,
    pub pop3: SocketAddr,
    pub imap: SocketAddr,
}

/// The password of every account the tests make.
pub const PASSWORD: &str = "pw";

/// argon2 hash of [`PASSWORD`], computed once.
pub fn password_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| mailgate::auth::hash_password(PASSWORD).unwrap())
}

/// A config for tests: one SMTP listener on a free loopback port, data in `dir`.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::defaults();
    c.server.hostname = "mx.test".into();
    c.server.data_dir = dir.to_path_buf();
    c.server.local_domains = vec!["localhost".into(), "example.test".into()];
    c.server.shutdown_grace_secs = 5;
    let listener = |protocol| Listener {
        protocol,
        bind: "127.0.0.1:0".parse().unwrap(),
        tls: TlsMode::Starttls,
        auth: None,
    };
    c.listeners = vec![
        listener(Protocol::Smtp),
        listener(Protocol::Pop3),
        listener(Protocol::Imap),
    ];
    c.auth.failure_delay_ms = 0;
    c.policies.dir = dir.join("policies");
    c
}

/// Starts a server with `alice@localhost` and `bob@localhost`; `tweak` edits the config.
pub async fn start_server(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    start_in(dir, tweak).await
}

/// Like [`start_server`], with files (name, content) in its policies directory.
pub async fn start_with_policies(files: &[(&str, &str)], tweak: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    write_policies(&dir.path().join("policies"), files);
    start_in(dir, tweak).await
}

pub fn write_policies(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

pub async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = test_config(dir.path());
    tweak(&mut config);
    let running = start(config).await.expect("server starts");
    let smtp = running.addr(Protocol::Smtp).unwrap();
    let pop3 = running.addr(Protocol::Pop3).unwrap_or(smtp);
    let imap = running.addr(Protocol::Imap).unwrap_or(smtp);
    let store = &running.shared.store;
    for u in ["alice@localhost", "bob@localhost"] {
        if store.account(u).unwrap().is_none() {
            store.create_account(u, password_hash()).unwrap();
        }
    }
    TestServer {
        dir,
        running,
        smtp,
        pop3,
        imap,
    }
}

impl TestServer {
    pub fn store(&self) -> &Arc<dyn MailStore> {
        &self.running.shared.store
    }

    pub fn inbox(&self, account: &str) -> Vec<StoredMessage> {
        inbox_of(&**self.store(), account)
    }

    pub fn body(&self, m: &StoredMessage) -> Vec<u8> {
        self.store().blob(&m.meta.blob).unwrap().expect("blob present")
    }

    pub fn policies_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    /// Subjects of the messages in `account`'s `folder`.
    pub fn subjects(&self, account: &str, folder: &str) -> Vec<String> {
        let mb = self.store().mailbox(account, folder).unwrap().expect("folder exists");
        self.store()
            .messages(mb.id)
            .unwrap()
            .iter()
            .map(|m| subject_of(&self.body(m)))
            .collect()
    }

    /// The raw messages in `account`'s `folder`, as text.
    pub fn texts(&self, account: &str, folder: &str) -> Vec<String> {
        let mb = self.store().mailbox(account, folder).unwrap().expect("folder exists");
        self.store()
            .messages(mb.id)
            .unwrap()
            .iter()
            .map(|m| String::from_utf8(self.body(m)).unwrap())
            .collect()
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("tls/cert.pem")
    }
}

pub fn inbox_of(store: &dyn MailStore, account: &str) -> Vec<StoredMessage> {
    let mb = store.mailbox(account, "INBOX").unwrap().expect("INBOX exists");
    store.messages(mb.id).unwrap()
}

/// A line-level SMTP client for transcripts, over any stream (plain or TLS).
pub struct Client<S> {
    pub io: BufReader<S>,
}

pub async fn connect(addr: SocketAddr) -> Client<TcpStream> {
    let s = TcpStream::connect(addr).await.unwrap();
    let mut c = Client { io: BufReader::new(s) };
    let greeting = c.reply().await;
    assert!(greeting.starts_with("220 "), "greeting: {greeting}");
    c
}

/// Connected and greeted with EHLO.
pub async fn greeted(addr: SocketAddr) -> Client<TcpStream> {
    let mut c = connect(addr).await;
    c.cmd("EHLO client.test", "250").await;
    c
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Reads one (possibly multi-line) reply; "" when the server closed.
    pub async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(20), self.io.read_line(&mut line))
                .await
                .expect("reply within 20 s")
                .unwrap_or(0);
            if n == 0 {
                return all;
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
    }

    /// Sends one command line and checks the reply starts with `expect`.
    pub async fn cmd(&mut self, line: &str, expect: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        let r = self.reply().await;
        assert!(r.starts_with(expect), "{line:?}: expected {expect:?}, got {r:?}");
        r
    }

    /// Reads one line (POP3 status lines, continuation requests); "" when closed.
    pub async fn line(&mut self) -> String {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(20), self.io.read_line(&mut line))
            .await
            .expect("line within 20 s")
            .unwrap_or(0);
        line
    }

    /// Sends a line and checks the one-line answer starts with `expect`.
    pub async fn pop(&mut self, line: &str, expect: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        let r = self.line().await;
        assert!(r.starts_with(expect), "{line:?}: expected {expect:?}, got {r:?}");
        r
    }

    /// Reads the body of a POP3 multi-line response, up to and without the ".\r\n".
    pub async fn multiline(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let mut line = Vec::new();
            tokio::time::timeout(Duration::from_secs(20), self.io.read_until(b'\n', &mut line))
                .await
                .expect("line within 20 s")
                .unwrap();
            assert!(!line.is_empty(), "connection closed inside a multi-line response");
            if line == b".\r\n" {
                return all;
            }
            all.extend_from_slice(&line);
        }
    }

    /// True when the server has closed the connection.
    pub async fn closed(&mut self) -> bool {
        self.reply().await.is_empty()
    }
}

/// A plain message with CRLF line endings.
pub fn message(subject: &str, body: &str) -> String {
    format!(
        "From: sender@example.org\r\nTo: alice@localhost\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.org>\r\n\r\n{body}\r\n"
    )
}

/// Value of the Subject header of a stored message.
pub fn subject_of(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// A full transaction on an open session; returns the final reply.
pub async fn send_mail<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Client<S>,
    from: &str,
    to: &[&str],
    data: &str,
) -> String {
    c.cmd(&format!("MAIL FROM:<{from}>"), "250").await;
    for t in to {
        c.cmd(&format!("RCPT TO:<{t}>"), "250").await;
    }
    c.cmd("DATA", "354").await;
    c.send(data.as_bytes()).await;
    c.send(b".\r\n").await;
    c.reply().await
}

/// Path of the built `mailgate` binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mailgate")
}

/// Runs python3 with a script and arguments; returns stdout, panicking with stderr on failure.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `mailgate serve` child process, for tests that need a separate process (CLI, kill -9).
pub struct ChildServer {
    pub proc: std::process::Child,
    pub smtp: SocketAddr,
    /// Listeners printed before the SMTP one (`protocol`, address), in order.
    pub others: Vec<(String, SocketAddr)>,
}

/// Writes a config for `dir` (SMTP on a free port, no TLS) and returns its path.
pub fn write_child_config(dir: &Path) -> PathBuf {
    let path = dir.join("mailgate.toml");
    let text = format!(
        "[server]\nhostname = \"mx.test\"\ndata_dir = \"{}\"\nlocal_domains = [\"localhost\"]\nshutdown_grace_secs = 5\n\n[policies]\ndir = \"{}\"\n\n[[listener]]\nprotocol = \"smtp\"\nbind = \"127.0.0.1:0\"\ntls = \"none\"\n",
        dir.join("data").display(),
        dir.join("policies").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

impl ChildServer {
    /// Starts `mailgate --config CONFIG serve` and waits for its "listening smtp" line.
    /// The child is waited for by `kill9`/`terminate`, which every test calls.
    #[allow(clippy::zombie_processes)]
    pub fn start(config: &Path) -> ChildServer {
        use std::io::BufRead;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.with_extension("log"))
            .unwrap();
        let mut proc = std::process::Command::new(bin())
            .arg("--config")
            .arg(config)
            .arg("serve")
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(proc.stdout.take().unwrap());
        let mut line = String::new();
        let mut others = Vec::new();
        loop {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                let _ = proc.wait();
                let log = std::fs::read_to_string(config.with_extension("log")).unwrap_or_default();
                panic!("server exited before listening:\n{log}");
            }
            if let Some(addr) = line.trim().strip_prefix("listening smtp ") {
                let smtp = addr.parse().unwrap();
                return ChildServer { proc, smtp, others };
            }
            if let Some((proto, addr)) = line.trim().strip_prefix("listening ").and_then(|r| r.split_once(' ')) {
                others.push((proto.to_string(), addr.parse().unwrap()));
            }
        }
    }

    /// The address of the child's `protocol` listener.
    pub fn listener(&self, protocol: &str) -> SocketAddr {
        let found = self.others.iter().find(|(p, _)| p == protocol);
        found.unwrap_or_else(|| panic!("no {protocol} listener")).1
    }

    pub fn kill9(mut self) {
        self.proc.kill().unwrap(); // SIGKILL
        self.proc.wait().unwrap();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.proc.id() as i32, libc::SIGTERM) };
        self.proc.wait().unwrap()
    }
}

/// Runs the CLI with `--config`, feeding `stdin`; returns (exit code, stdout, stderr).
pub fn cli(config: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("--config").arg(config).args(args);
    run_cli(cmd, stdin)
}

/// The binary with `args` and no config (the embedded defaults), run in `cwd`.
pub fn cli_in(cwd: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args).current_dir(cwd);
    run_cli(cmd, stdin)
}

/// Runs `cmd` with `stdin` fed in; its exit code, stdout and stderr.
fn run_cli(mut cmd: std::process::Command, stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut p = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Upgrades a plaintext client to TLS, verifying the server's generated certificate.
pub async fn tls_upgrade(c: Client<TcpStream>, cert: &Path) -> Client<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = c.io.into_inner();
    let tls = crate::smtp_tls::connector(cert)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("handshake verifies");
    Client {
        io: BufReader::new(tls),
    }
}

/// Sends one message from `from` to `to`; returns the reply to the final dot (or the first
/// refusal on the way).
pub async fn transact(s: &TestServer, from: &str, to: &[&str], subject: &str, body: &str) -> String {
    let mut c = greeted(s.smtp).await;
    let r = c.cmd(&format!("MAIL FROM:<{from}>"), "").await;
    if !r.starts_with("250") {
        return r;
    }
    for t in to {
        let r = c.cmd(&format!("RCPT TO:<{t}>"), "").await;
        if !r.starts_with("250") {
            return r;
        }
    }
    c.cmd("DATA", "354").await;
    c.send(message(subject, body).as_bytes()).await;
    c.cmd(".", "").await
}
