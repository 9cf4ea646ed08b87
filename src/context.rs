//! What every protocol session shares: configuration, store, router, authenticator, the
//! policy engine and the rest of the server's live state. Built once by the listeners (`server`);
//! the protocols take it, so none of them needs the listeners.

use crate::config::Config;
use crate::route::Router;
use crate::store::MailStore;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// What every session shares.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<dyn MailStore>,
    pub router: Router,
    pub tls: Option<TlsAcceptor>,
    pub auth: crate::auth::Authenticator,
    pub engine: Arc<crate::hooks::Engine>,
    /// The spam filter's live state (the Bayes model the analyzers use).
    pub spam: Arc<crate::spam::Spam>,
    /// Wakes the outbound queue's runner.
    pub queue: Arc<crate::queue::Wake>,
    /// Asks relay domains' next hops about recipients (`verify_recipients`).
    pub verifier: crate::queue::verify::Verifier,
    /// SPF/DKIM/DMARC checks (when there is DNS).
    pub origin: Option<Arc<crate::spam::origin::Origin>>,
    /// What a protocol keeps for the whole server (IMAP's SORT/THREAD keys), by type.
    pub state: ServerState,
    /// Which messages are still `\Recent` to IMAP sessions.
    pub recent: crate::store::locks::RecentClaims,
    /// Junk/not-Junk judgements from IMAP moves, for the spam filter's training.
    pub learn: crate::spam::LearnSink,
    /// Becomes `true` when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Where data-stage chains run (`[policies] threads`).
    pub chains: crate::hooks::threads::Chains,
}

/// State a protocol keeps for the whole server, one value per type, made on first use: a
/// layer above this one hangs its own state here without this layer knowing its types.
#[derive(Default)]
pub struct ServerState(
    std::sync::Mutex<std::collections::HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>>,
);

impl ServerState {
    /// The server's `T`.
    pub fn get<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(std::any::TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()));
        entry.clone().downcast::<T>().unwrap_or_else(|_| Arc::new(T::default()))
    }
}

/// Opens the store `config` names: sled in `server.data_dir`, or the PostgreSQL database of
/// `[store.postgres]` (its schema brought up to date).
pub fn open_store(config: &Config) -> Result<Arc<dyn MailStore>, crate::store::StoreError> {
    use crate::config::StoreBackend;
    Ok(match config.store.backend {
        StoreBackend::Sled => Arc::new(crate::store::SledStore::open(
            &config.store_path(),
            config.store.cache_mb,
        )?),
        StoreBackend::Postgres => {
            let url = config.store.postgres.url.as_deref().ok_or_else(|| {
                crate::store::StoreError::Invalid("store.backend = \"postgres\" needs store.postgres.url".into())
            })?;
            Arc::new(crate::store::PgStore::open(
                url,
                config.store.postgres.pool_size,
                config.store.postgres.delivery_writers,
            )?)
        }
    })
}
