//! A running proxy: config → topology snapshot → listener. `main`, `demo` and the tests all start
//! shardgate through here, so they run the same code.

use crate::control::ControlDb;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::health::Monitor;
use crate::server::{self, tls::TlsError, State};
use crate::session::{Registry, Shared};
use crate::topology::{ReloadError, Snapshot, Store, TopologyError};
use crate::twophase::Coordinator;
use crate::workers::Workers;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid config:\n{0}")]
    Config(#[from] ConfigError),
    #[error("invalid config: {0}")]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("invalid config: {0}")]
    Control(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Proxy {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    store: Arc<Store>,
    health: Arc<Monitor>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Binds the listener and starts serving. `config.listen` may use port 0. With no file to
    /// re-read, `POST /v1/config/reload` answers that it cannot reload (see [`Proxy::start_from`]).
    /// Clients are served on the calling runtime.
    pub async fn start(config: Config) -> Result<Proxy, ProxyError> {
        Proxy::start_on(config, Workers::this_runtime()).await
    }

    /// [`Proxy::start`] with clients served on `workers`.
    pub async fn start_on(config: Config, workers: Workers) -> Result<Proxy, ProxyError> {
        Proxy::start_inner(config, None, workers).await
    }

    /// [`Proxy::start`] with the config read from `path`, which `POST /v1/config/reload` re-reads,
    /// and clients served on `workers`.
    pub async fn start_from(
        config: Config,
        path: &Path,
        workers: Workers,
    ) -> Result<Proxy, ProxyError> {
        Proxy::start_inner(config, Some(path.to_path_buf()), workers).await
    }

    async fn start_inner(
        config: Config,
        path: Option<std::path::PathBuf>,
        workers: Workers,
    ) -> Result<Proxy, ProxyError> {
        config.check_files()?;
        let tls = config.tls.as_ref().map(server::tls::acceptor).transpose()?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ProxyError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ProxyError::Listen {
            addr: config.listen,
            source,
        })?;
        let admin_listener = TcpListener::bind(config.admin.listen)
            .await
            .map_err(|source| ProxyError::Listen {
                addr: config.admin.listen,
                source,
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| ProxyError::Listen {
                addr: config.admin.listen,
                source,
            })?;
        let max_clients = config.pool.max_clients;
        let drain = Duration::from_millis(config.pool.shutdown_timeout_ms);
        let threads = workers.len();
        let store = Arc::new(Store::new(Snapshot::first(
            Arc::new(config),
            u32::try_from(threads).unwrap_or(u32::MAX),
        )?));
        // Before serving, so INSERTs without a column list are routed from the first one.
        store.read_columns(None).await;
        let shutdown = CancellationToken::new();
        let control = store.load().config.control.as_deref().map(ControlDb::new);
        let control = control
            .transpose()
            .map_err(ProxyError::Control)?
            .map(Arc::new);
        let coordinator = start_coordinator(&store, control.clone(), &shutdown).await?;
        let health = Arc::new(Monitor::new());
        if let Some(db) = &control {
            // Before serving: a map a cutover persisted is where the data is now.
            crate::reshard::epochs::take_at_start(db, &store).await;
            let follow =
                crate::reshard::epochs::follow(db.clone(), store.clone(), shutdown.clone());
            tokio::spawn(follow);
            let id = crate::reshard::heartbeat::proxy_id(addr);
            let beat =
                crate::reshard::heartbeat::run(db.clone(), store.clone(), id, shutdown.clone());
            tokio::spawn(beat);
            let url = store.load().config.control.clone().unwrap_or_default();
            let driver = crate::reshard::driver::Driver::new(
                db.clone(),
                url,
                store.clone(),
                health.clone(),
                shutdown.clone(),
            );
            tokio::spawn(driver.run());
        }
        tokio::spawn(crate::health::run(
            store.clone(),
            health.clone(),
            shutdown.clone(),
        ));
        let hotspots = Arc::new(crate::hotspots::Registry::default());
        let shared = Arc::new(Shared {
            routers: Default::default(),
            store: store.clone(),
            statements: Registry::default(),
            shutdown: shutdown.clone(),
            coordinator,
            hotspots: hotspots.clone(),
            health: health.clone(),
        });
        let state = Arc::new(State::new(shared, tls, max_clients));
        let admin =
            crate::admin::Admin::new(store.clone(), health.clone(), hotspots, control, path);
        tokio::spawn(crate::admin::serve(
            admin_listener,
            Arc::new(admin),
            shutdown.clone(),
        ));
        let task = tokio::spawn(server::serve(listener, state, drain, workers));
        // The thread count (`--threads`) in the first line an operator reads.
        tracing::info!(%addr, %admin_addr, threads, "shardgate is listening");
        Ok(Proxy {
            addr,
            admin_addr,
            store,
            health,
            shutdown,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The background health checks' latest report: servers up or banned, their roles, replica
    /// lag, each shard's writable primary.
    pub fn health(&self) -> &Arc<Monitor> {
        &self.health
    }

    /// Re-reads the config file and swaps in the new snapshot; on any error the old one stays.
    pub fn reload_from(&self, path: &Path) -> Result<u64, ProxyError> {
        self.store.reload_file(path).map_err(|e| match e {
            ReloadError::Config(e) => ProxyError::Config(e),
            ReloadError::Topology(e) => ProxyError::Topology(e),
        })
    }

    /// Stops accepting, lets open transactions finish (up to `pool.shutdown_timeout_ms`), returns.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// How often in-doubt two-phase commits are looked for, after the pass at start.
const RECOVERY_EVERY: Duration = Duration::from_secs(60);

/// The two-phase-commit coordinator over `control:`, with its recovery task; `None` without one.
/// The control URL is read at start only: a reload does not change it.
async fn start_coordinator(
    store: &Arc<Store>,
    control: Option<Arc<ControlDb>>,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<Coordinator>>, ProxyError> {
    let config = store.load().config.clone();
    let Some(control) = control else {
        return Ok(None);
    };
    let coordinator = Arc::new(Coordinator::new(control));
    // Before serving: an in-doubt transaction holds its rows' locks until it is resolved.
    crate::twophase::recover_logged(&config, &coordinator).await;
    let store = store.clone();
    tokio::spawn(crate::twophase::run_periodically(
        move || store.load().config.clone(),
        coordinator.clone(),
        RECOVERY_EVERY,
        shutdown.clone(),
    ));
    Ok(Some(coordinator))
}
