//! Listeners, connection limits, graceful shutdown.
//!
//! [`start`] opens the store, binds every listener (port 0 is fine: the bound addresses come
//! back in [`Running::addrs`]), serves the admin socket, and returns at once. Shutdown stops
//! accepting, tells idle sessions to close (421), waits up to `shutdown_grace_secs` for the
//! rest, flushes the store and ends.

pub mod limits;
mod metrics_http;
pub mod tls;

use crate::config::{Config, Protocol, TlsMode};
use crate::context::Shared;
use crate::net::conn::Conn;
use crate::route::Router;
use crate::store::MailStore;
use anyhow::{Context, Result};
use limits::ConnLimits;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// A running server.
pub struct Running {
    /// Bound address of each listener, in config order.
    pub addrs: Vec<(Protocol, SocketAddr)>,
    /// Where `/metrics` is served, when `[metrics] bind` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn addr(&self, protocol: Protocol) -> Option<SocketAddr> {
        self.addrs.iter().find(|(p, _)| *p == protocol).map(|(_, a)| *a)
    }

    /// Stops accepting, lets sessions finish (bounded by the grace period), flushes the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        let _ = self.done.await;
    }

    /// Waits until the server has stopped (after a send on [`Running::shutdown_handle`]).
    pub async fn wait(self) {
        let _ = self.done.await;
    }

    /// A handle that can trigger shutdown from elsewhere (signal handlers).
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown_tx.clone()
    }
}

/// Opens the store and starts every listener and the admin socket.
pub async fn start(config: Config) -> Result<Running> {
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.server.data_dir)
        .with_context(|| format!("server.data_dir: creating {}", config.server.data_dir.display()))?;
    let store: Arc<dyn MailStore> = crate::context::open_store(&config)?;
    let tls = if config.listeners.iter().any(|l| l.tls != TlsMode::None) {
        Some(tls::acceptor(&config)?)
    } else {
        None
    };
    let resolver = match crate::hooks::host::resolver(&config.dns) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!("{e}; policies get no DNS");
            None
        }
    };
    let spam = Arc::new(crate::spam::Spam::load(&*store));
    let origin = crate::spam::origin::Origin::for_config(resolver.as_ref(), &config);
    let host = Arc::new(crate::hooks::host::HostServices {
        store: Some(store.clone()),
        resolver: resolver.clone(),
        dns_timeout: Duration::from_millis(config.dns.timeout_ms),
        analyzers: spam.clone(),
        dns_cache: Default::default(),
    });
    let engine = Arc::new(
        crate::hooks::Engine::new(&config.policies.dir, host, config.policies.lua_states)
            .map_err(|e| anyhow::anyhow!("policies: {e}"))?,
    );
    let router = Router::new(store.clone(), &config);
    router.warn_of_missing_postmasters();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let chains = crate::hooks::threads::Chains::start(config.policies.threads)?;
    let shared = Arc::new(Shared {
        config: config.clone(),
        store: store.clone(),
        router,
        tls,
        auth: crate::auth::Authenticator::new(store.clone(), config.auth.clone()),
        engine: engine.clone(),
        spam,
        queue: Default::default(),
        verifier: crate::queue::verify::Verifier::new(config.clone(), resolver.clone()),
        origin,
        state: Default::default(),
        recent: crate::store::locks::RecentClaims::new(crate::store::now_secs()),
        learn: crate::spam::learn_sink(),
        shutdown: shutdown_rx.clone(),
        chains,
    });

    // Every session holds a clone of `alive`; when all are dropped, `drained` ends.
    let (alive, mut drained) = mpsc::channel::<()>(1);
    let smtp_limits = ConnLimits::new(config.smtp.max_connections, config.smtp.max_connections_per_ip);
    let pop3_limits = ConnLimits::new(config.pop3.max_connections, config.pop3.max_connections_per_ip);
    let imap_limits = ConnLimits::new(config.imap.max_connections, config.imap.max_connections_per_ip);
    let mut addrs = Vec::new();
    let mut accept_tasks = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let limits = match l.protocol {
            // Submission shares SMTP's limits: one pool of SMTP sessions.
            Protocol::Smtp | Protocol::Submission => smtp_limits.clone(),
            Protocol::Pop3 => pop3_limits.clone(),
            Protocol::Imap => imap_limits.clone(),
        };
        let listener = TcpListener::bind(l.bind)
            .await
            .with_context(|| format!("listener[{i}].bind: cannot bind {}", l.bind))?;
        let local = listener.local_addr()?;
        tracing::info!("listening {} {local} (tls {:?})", l.protocol, l.tls);
        addrs.push((l.protocol, local));
        accept_tasks.push(tokio::spawn(accept_loop(
            listener,
            l.clone(),
            shared.clone(),
            limits,
            alive.clone(),
        )));
    }
    let debounce = Duration::from_millis(config.policies.reload_debounce_ms);
    if let Err(e) = engine.watch(debounce, shutdown_rx.clone()) {
        tracing::warn!(
            "cannot watch {}: {e}; reload with SIGHUP or `mailgate policy reload`",
            config.policies.dir.display()
        );
    }
    let learner = tokio::spawn(crate::spam::learner(
        shared.spam.clone(),
        store.clone(),
        config.clone(),
        shared.learn.subscribe(),
        shutdown_rx.clone(),
    ));
    let sweeper = tokio::spawn(kv_sweeper(engine.host().clone(), shutdown_rx.clone()));
    let runner = crate::queue::Runner::new(
        store.clone(),
        config.clone(),
        shared.router.clone(),
        resolver,
        shared.queue.clone(),
    );
    let outbound = tokio::spawn(runner.run(shutdown_rx.clone()));
    let admin = crate::admin::server::serve(&config, store.clone(), Some(shared.clone()), shutdown_rx.clone()).await?;
    let submit = crate::admin::submit::serve(shared.clone(), shutdown_rx.clone()).await?;
    let (metrics_addr, metrics_task) = match config.metrics.bind {
        Some(bind) => {
            let listener = TcpListener::bind(bind)
                .await
                .with_context(|| format!("metrics.bind: cannot bind {bind}"))?;
            let local = listener.local_addr()?;
            tracing::info!("metrics on http://{local}/metrics");
            (Some(local), Some(tokio::spawn(metrics_http::serve(listener))))
        }
        None => (None, None),
    };
    drop(alive);

    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let mut wait_rx = shutdown_rx;
    let done = tokio::spawn(async move {
        while !*wait_rx.borrow() {
            if wait_rx.changed().await.is_err() {
                break;
            }
        }
        tracing::info!("shutting down: no new connections; waiting up to {grace:?} for sessions");
        for t in &accept_tasks {
            t.abort();
        }
        if tokio::time::timeout(grace, drained.recv()).await.is_err() {
            tracing::warn!("sessions still running after the grace period; closing them");
        }
        admin.abort();
        submit.abort();
        if let Some(t) = &metrics_task {
            t.abort();
        }
        sweeper.abort();
        // Deliveries in flight end with the runner; what they did not record is sent again.
        outbound.abort();
        let _ = learner.await;
        if let Err(e) = store.checkpoint().await {
            tracing::error!("final checkpoint failed: {e}");
        }
        tracing::info!("stopped; store: {}", store.stats());
    });
    Ok(Running {
        addrs,
        metrics_addr,
        shared,
        shutdown_tx,
        done,
    })
}

/// Removes expired plugin key-value entries at start and every
/// [`crate::hooks::host::KV_SWEEP_EVERY`] (an hour), off the runtime's threads.
async fn kv_sweeper(host: Arc<crate::hooks::host::HostServices>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(crate::hooks::host::KV_SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let h = host.clone();
        match tokio::task::spawn_blocking(move || h.kv_sweep()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!("removed {n} expired plugin key-value entries"),
            Ok(Err(e)) => tracing::warn!("plugin key-value sweep: {e}"),
            Err(e) => tracing::warn!("plugin key-value sweep: {e}"),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: crate::config::Listener,
    shared: Arc<Shared>,
    limits: ConnLimits,
    alive: mpsc::Sender<()>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => {
                backoff = Duration::from_millis(5);
                x
            }
            Err(e) => {
                // EMFILE and friends: wait and retry rather than spin or die.
                tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let shared = shared.clone();
        let alive = alive.clone();
        let permit = limits.try_acquire(peer.ip());
        let (protocol, tls_mode, config) = (config.protocol, config.tls, config.clone());
        let name: &'static str = match protocol {
            Protocol::Smtp => "smtp",
            Protocol::Submission => "submission",
            Protocol::Pop3 => "pop3",
            Protocol::Imap => "imap",
        };
        let id = SESSION_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Every log line of the session carries its id, protocol and peer.
        let span = tracing::info_span!("session", id, protocol = name, %peer);
        let session = async move {
            let _open = crate::metrics::OpenConnection::new(name);
            let _alive = alive;
            let mut conn = Conn::plain(tcp);
            conn.set_write_timeout(Duration::from_secs(shared.config.server.write_timeout_secs));
            conn.set_handshake_timeout(Duration::from_secs(shared.config.server.tls_handshake_timeout_secs));
            let Ok(permit) = permit else {
                conn.write(match protocol {
                    Protocol::Pop3 => b"-ERR [SYS/TEMP] Too many connections, try again later\r\n",
                    Protocol::Imap => b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
                    _ => b"421 4.7.0 Too many connections, try again later\r\n",
                });
                conn.close().await;
                return;
            };
            if tls_mode == TlsMode::Implicit {
                let Some(acceptor) = shared.tls.clone() else { return };
                if let Err(e) = conn.start_tls(&acceptor).await {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
            }
            match protocol {
                Protocol::Pop3 => {
                    crate::pop3::Session::new(shared, conn, peer, tls_mode)
                        .run(permit)
                        .await
                }
                Protocol::Imap => {
                    crate::imap::Session::new(shared, conn, peer, tls_mode)
                        .run(permit)
                        .await
                }
                Protocol::Smtp | Protocol::Submission => {
                    crate::smtp::Session::new(shared, conn, peer, &config).run(permit).await
                }
            }
        };
        tokio::spawn(tracing::Instrument::instrument(session, span));
    }
}

/// Numbers the sessions, for logs.
static SESSION_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
