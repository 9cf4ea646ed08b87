//! The admin socket: a Unix socket `admin.sock` in `data_dir`, mode 0600.
//!
//! Wire format: the client sends one JSON [`super::Request`] and a newline; the server answers
//! one JSON line, `{"ok":true,"len":N}` followed by N bytes of output, or
//! `{"ok":false,"error":"..."}`, and closes.

use super::{Request, execute};
use crate::config::Config;
use crate::store::MailStore;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    pub ok: bool,
    #[serde(default)]
    pub len: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Binds the admin socket and serves it until shutdown. A socket file left by a killed server
/// is replaced (we hold the store lock, so no other server can be using it).
pub async fn serve(
    config: &Arc<Config>,
    store: Arc<dyn MailStore>,
    live: Option<Arc<crate::context::Shared>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let path = config.admin_socket_path();
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).with_context(|| format!("admin socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let config = config.clone();
    Ok(tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => { tracing::warn!("admin accept: {e}"); continue; }
                },
                _ = shutdown.changed() => break,
            };
            let (store, config, live) = (store.clone(), config.clone(), live.clone());
            tokio::spawn(async move {
                if let Err(e) = handle(stream, &store, &config, live.as_deref()).await {
                    tracing::debug!("admin connection: {e}");
                }
            });
        }
        let _ = std::fs::remove_file(&path);
    }))
}

async fn handle(
    stream: UnixStream,
    store: &Arc<dyn MailStore>,
    config: &Config,
    live: Option<&crate::context::Shared>,
) -> Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    BufReader::new(rd).take(MAX_REQUEST).read_line(&mut line).await?;
    let result = match serde_json::from_str::<Request>(&line) {
        Ok(req) => {
            // The command name only: requests can carry password hashes.
            let cmd = serde_json::to_value(&req)
                .ok()
                .and_then(|v| v["cmd"].as_str().map(str::to_string));
            tracing::info!(cmd = cmd.as_deref().unwrap_or("?"), "admin request");
            execute(store, config, live, req).await
        }
        Err(e) => Err(format!("bad admin request: {e}")),
    };
    let (header, body) = match result {
        Ok(body) => (
            Header {
                ok: true,
                len: body.len(),
                error: None,
            },
            body,
        ),
        Err(e) => (
            Header {
                ok: false,
                len: 0,
                error: Some(e),
            },
            Vec::new(),
        ),
    };
    let mut out = serde_json::to_vec(&header)?;
    out.push(b'\n');
    out.extend_from_slice(&body);
    wr.write_all(&out).await?;
    wr.shutdown().await?;
    Ok(())
}

use tokio::io::AsyncReadExt as _;
