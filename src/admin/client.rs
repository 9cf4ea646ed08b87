//! The CLI side: send a command to the running server, or run it on the store directly.

use super::server::Header;
use super::{Request, execute};
use crate::config::Config;
use std::io::ErrorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Runs `req` against the server owning `config`'s data dir, or the store itself.
pub async fn run(config: &Config, req: Request) -> Result<Vec<u8>, String> {
    let path = config.admin_socket_path();
    match UnixStream::connect(&path).await {
        Ok(stream) => via_socket(stream, &req).await,
        // No server (or one killed without cleaning up): open the store ourselves. If a server
        // does hold it, sled's lock makes this fail with a clear message.
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            let store = crate::context::open_store(config).map_err(|e| e.to_string())?;
            execute(&store, config, None, req).await
        }
        Err(e) => Err(format!("admin socket {}: {e}", path.display())),
    }
}

async fn via_socket(mut stream: UnixStream, req: &Request) -> Result<Vec<u8>, String> {
    let io = |e: std::io::Error| format!("admin socket: {e}");
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream.write_all(&line).await.map_err(io)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.map_err(io)?;
    let nl = reply
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("admin socket: truncated reply")?;
    let header: Header = serde_json::from_slice(&reply[..nl]).map_err(|e| format!("admin socket: {e}"))?;
    if !header.ok {
        return Err(header.error.unwrap_or_else(|| "failed".into()));
    }
    let body = reply[nl + 1..].to_vec();
    if body.len() != header.len {
        return Err("admin socket: truncated reply".into());
    }
    Ok(body)
}
