//! TLS server configuration: the operator's certificate, or a self-signed one made on first
//! start and kept in `data_dir/tls/` so clients can pin it across restarts.

use crate::config::Config;
use anyhow::{Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Paths of the certificate and key in use: the configured ones, or the generated pair.
pub fn cert_paths(config: &Config) -> (PathBuf, PathBuf) {
    match (&config.tls.cert, &config.tls.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let dir = config.server.data_dir.join("tls");
            (dir.join("cert.pem"), dir.join("key.pem"))
        }
    }
}

/// Makes the self-signed pair if no certificate is configured and none was made before.
fn ensure_self_signed(config: &Config, cert: &Path, key: &Path) -> Result<()> {
    if config.tls.cert.is_some() || (cert.exists() && key.exists()) {
        return Ok(());
    }
    let names = vec![config.server.hostname.clone(), "localhost".into(), "127.0.0.1".into()];
    let ck = rcgen::generate_simple_self_signed(names).context("generating a self-signed certificate")?;
    let dir = cert.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_private(key, ck.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, ck.cert.pem()).with_context(|| format!("writing {}", cert.display()))?;
    tracing::info!(cert = %cert.display(), "made a self-signed TLS certificate");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Builds the acceptor used by STARTTLS/STLS and implicit-TLS listeners.
pub fn acceptor(config: &Config) -> Result<TlsAcceptor> {
    let (cert_path, key_path) = cert_paths(config);
    ensure_self_signed(config, &cert_path, &key_path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("tls.cert: reading {}", cert_path.display()))?
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("tls.cert: parsing {}", cert_path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("tls.cert: no certificate in {}", cert_path.display());
    }
    let key =
        PrivateKeyDer::from_pem_file(&key_path).with_context(|| format!("tls.key: reading {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("tls: certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}
