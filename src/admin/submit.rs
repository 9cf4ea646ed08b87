//! The submission socket `submit.sock` in `data_dir`: how `mailgate send` (and the binary
//! installed as `sendmail`) hands a message to the running server, which routes, filters,
//! queues and delivers it as it does SMTP mail.
//!
//! The socket is mode 0666, as Postfix's `postdrop` lets every local user submit: it takes
//! nothing but a message (the admin socket stays 0600), and the sender's Unix user id comes
//! from the kernel (`SO_PEERCRED`) into the `Received:` field, not from the client.
//!
//! Wire format: the client sends one JSON [`Submission`] line, then exactly `len` bytes of
//! message (CRLF line endings); the server answers one JSON [`Reply`] line and closes.

use crate::config::Config;
use crate::context::Shared;
use crate::hooks::Stage;
use crate::hooks::contract::Session;
use crate::mail::address::Address;
use crate::pipeline::{Context, Destination, Refusal, Scope};
use crate::store::now_secs;
use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// Longest JSON line (the envelope: sender and recipients).
const MAX_ENVELOPE: u64 = 1024 * 1024;

/// How long a client may take to send its message.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// A message's envelope, as `mailgate send` gives it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Submission {
    /// The envelope sender; empty for `<>`.
    pub sender: String,
    pub recipients: Vec<String>,
    /// Bytes of message that follow the line.
    pub len: usize,
}

/// Why a submission was not taken: each maps to one sysexits code in `mailgate send`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A recipient does not exist (EX_NOUSER, 67).
    NoUser,
    /// The message or an address is malformed, or a policy refused the content (EX_DATAERR, 65).
    DataErr,
    /// Try again later (EX_TEMPFAIL, 75).
    TempFail,
    /// The server is not running or refused the sender (EX_UNAVAILABLE, 69).
    Unavailable,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub type Outcome = std::result::Result<String, (Status, String)>;

/// Binds `submit.sock` and serves it until shutdown.
pub async fn serve(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) -> Result<tokio::task::JoinHandle<()>> {
    let path = shared.config.submit_socket_path();
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).with_context(|| format!("submission socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    Ok(tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => { tracing::warn!("submit accept: {e}"); continue; }
                },
                _ = shutdown.changed() => break,
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(stream, &shared).await {
                    tracing::debug!("submission socket: {e}");
                }
            });
        }
        let _ = std::fs::remove_file(&path);
    }))
}

async fn handle(stream: UnixStream, shared: &Shared) -> Result<()> {
    let uid = stream.peer_cred().ok().map(|c| c.uid());
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let outcome = match tokio::time::timeout(READ_TIMEOUT, read_submission(&mut rd, &shared.config)).await {
        Ok(Ok((sub, body))) => accept(shared, &sub, body, uid).await,
        Ok(Err(e)) => Err(e),
        Err(_) => Err((Status::TempFail, "timed out reading the message".into())),
    };
    let reply = match outcome {
        Ok(id) => Reply {
            ok: true,
            id: Some(id),
            status: None,
            error: None,
        },
        Err((status, error)) => Reply {
            ok: false,
            id: None,
            status: Some(status),
            error: Some(error),
        },
    };
    let mut out = serde_json::to_vec(&reply)?;
    out.push(b'\n');
    wr.write_all(&out).await?;
    wr.shutdown().await?;
    Ok(())
}

async fn read_submission(
    rd: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    config: &Config,
) -> std::result::Result<(Submission, Vec<u8>), (Status, String)> {
    let io = |e: std::io::Error| (Status::TempFail, format!("reading the message: {e}"));
    let mut line = String::new();
    (&mut *rd).take(MAX_ENVELOPE).read_line(&mut line).await.map_err(io)?;
    let sub: Submission =
        serde_json::from_str(&line).map_err(|e| (Status::DataErr, format!("bad submission envelope: {e}")))?;
    let limit = config.smtp.max_message_size;
    if sub.len > limit {
        return Err((
            Status::DataErr,
            format!(
                "message too large: {} bytes (smtp.max_message_size is {limit})",
                sub.len
            ),
        ));
    }
    let mut body = vec![0u8; sub.len];
    rd.read_exact(&mut body).await.map_err(io)?;
    Ok((sub, body))
}

/// The reply a refusal at RCPT maps to: an unknown user is EX_NOUSER.
fn rcpt_refused(r: Refusal) -> (Status, String) {
    let status = match r.code {
        400..=499 => Status::TempFail,
        _ if r.enhanced.starts_with("5.1.") => Status::NoUser,
        _ => Status::Unavailable,
    };
    (status, r.line())
}

/// Routes, filters and commits one local submission. Every recipient must be accepted,
/// or nothing is sent (the caller fixes the address and runs again).
pub async fn accept(shared: &Shared, sub: &Submission, body: Vec<u8>, uid: Option<u32>) -> Outcome {
    let config = &shared.config;
    if !sub.sender.is_empty() {
        Address::parse(&sub.sender).map_err(|e| (Status::DataErr, format!("bad sender <{}>: {e}", sub.sender)))?;
    }
    if sub.recipients.is_empty() {
        return Err((Status::DataErr, "no recipients".into()));
    }
    let policies = shared.engine.current();
    let ctx = Context {
        policies: &policies,
        config,
        router: Some(&shared.router),
        origin: shared.origin.as_deref(),
        chains: Some(&shared.chains),
        // Local programs may send anywhere, as Postfix's pickup does.
        may_relay: true,
    };
    let info = Session {
        client_ip: "127.0.0.1".into(),
        helo: None,
        tls: false,
        auth_user: None,
        listener: "local".into(),
    };
    let mut scope = Scope::default().transaction(&sub.sender);
    ctx.receive(Stage::Mail, &info, &mut scope).await.map_err(|r| {
        let status = if r.code < 500 {
            Status::TempFail
        } else {
            Status::Unavailable
        };
        (status, r.line())
    })?;
    let (mut accounts, mut remote, mut rcpts) = (Vec::new(), Vec::new(), Vec::<String>::new());
    for given in &sub.recipients {
        let address = Address::parse(given)
            .map_err(|e| (Status::DataErr, format!("bad recipient <{given}>: {e}")))?
            .to_string();
        if rcpts.contains(&address) {
            continue;
        }
        match ctx.rcpt(&info, &mut scope, &address).await.map_err(rcpt_refused)? {
            Destination::Local(found) => {
                for a in found.accounts {
                    if !accounts.contains(&a) {
                        accounts.push(a);
                    }
                }
                for (target, hop) in found.forward {
                    if !remote.iter().any(|o: &crate::queue::Outgoing| o.address == target) {
                        remote.push(crate::queue::Outgoing::new(config, &target, hop));
                    }
                }
            }
            Destination::Remote(hop) => remote.push(crate::queue::Outgoing::new(config, &address, hop)),
        }
        rcpts.push(address);
    }
    let id = crate::deliver::new_id();
    let now = now_secs();
    let fixes = crate::mail::headers::submission_fixes(&body, &config.server.hostname, &id, now);
    let body = if fixes.is_empty() {
        body
    } else {
        crate::mail::edit_headers(&body, &fixes, &[])
    };
    let user = uid.map_or_else(|| "unknown".into(), |u| u.to_string());
    let date = mail_parser::DateTime::from_timestamp(now).to_rfc822();
    let trace = format!(
        "Return-Path: <{}>\r\nReceived: by {} (mailgate, from userid {user})\r\n\tid {id}; {date}\r\n",
        sub.sender, config.server.hostname
    );
    let envelope = crate::deliver::Envelope {
        id: &id,
        mail_from: &sub.sender,
        accounts: &accounts,
        remote: &remote,
        dsn: Default::default(),
        rcpts: &rcpts,
        trace: &trace,
        notify_delivered: &[],
    };
    let committed = crate::deliver::commit(&ctx, &shared.store, &shared.queue, &info, &mut scope, envelope, body).await;
    match committed {
        Ok(_) => Ok(id),
        Err(r) if r.code < 500 => Err((Status::TempFail, r.line())),
        Err(r) => Err((Status::DataErr, r.line())),
    }
}

/// The client side: hands `body` to the server owning `config`'s data dir.
pub async fn send(config: &Config, sender: &str, recipients: &[String], body: &[u8]) -> Outcome {
    let path = config.submit_socket_path();
    let mut stream = UnixStream::connect(&path).await.map_err(|e| {
        (
            Status::Unavailable,
            format!("mailgate is not running ({}: {e})", path.display()),
        )
    })?;
    let sub = Submission {
        sender: sender.to_string(),
        recipients: recipients.to_vec(),
        len: body.len(),
    };
    let io = |e: std::io::Error| (Status::TempFail, format!("submission socket: {e}"));
    let mut line = serde_json::to_vec(&sub).map_err(|e| (Status::DataErr, e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).await.map_err(io)?;
    stream.write_all(body).await.map_err(io)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.map_err(io)?;
    let reply: Reply =
        serde_json::from_slice(&reply).map_err(|e| (Status::TempFail, format!("submission socket: bad reply: {e}")))?;
    match reply {
        Reply {
            ok: true, id: Some(id), ..
        } => Ok(id),
        r => Err((
            r.status.unwrap_or(Status::TempFail),
            r.error.unwrap_or_else(|| "refused".into()),
        )),
    }
}
