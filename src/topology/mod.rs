//! Everything that must agree, in one `ArcSwap<Snapshot>`: the config it came from, the shard maps
//! and the pools, under one epoch.
//!
//! A session loads the snapshot once per transaction and keeps it until the transaction ends, so
//! a transaction never sees two routing epochs and a reload never cuts one off. It loads it
//! through its worker's handle ([`Store::local`]), so the reference count it takes and gives back
//! on every transaction is on a cache line only its own core writes.

pub mod columns;
pub mod flights;
pub mod persisted;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

pub mod ownership;

use crate::backend::Target;
use crate::config::{Config, PoolMode};
use crate::metrics::{self, Metrics, PoolGauges};
use crate::pool::{Pool, PoolSettings};

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("databases.{database}.shards.{shard}: {problem}")]
    BadBackend {
        database: String,
        shard: String,
        problem: String,
    },
    #[error(
        "databases.{database}: pool.mode: session is not supported for a database with several \
         shards yet; use pool.mode: transaction"
    )]
    SessionModeSharded { database: String },
    /// A reload that would give keys that have an owner to another shard (see [`ownership`]).
    #[error(
        "the new config would move keys between shards, which only resharding may do (the \
         running config stays in force):\n  {}\nKeep the existing map entries and add new shards \
         with buckets, ranges or values that no shard owns yet.",
        moves.join("\n  ")
    )]
    MovesKeys { moves: Vec<String> },
}

/// Why a reload from a file was refused: the file, or the snapshot it would build.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("invalid config:\n{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

pub struct Shard {
    pub name: Arc<str>,
    pub primary: Pool,
    pub replicas: Vec<Pool>,
    /// Which of the pools takes writes, per health report ([`crate::health::Monitor::writable`]).
    pub writer: crate::health::WriterMemo,
}

pub struct Database {
    pub name: String,
    pub shards: Vec<Shard>,
    /// Index into `shards` of the config's `default_shard`.
    pub default_shard: Option<usize>,
}

pub struct Snapshot {
    /// The config epoch: one per reload.
    pub epoch: u64,
    /// One per swap: a reload, or columns read from the shards. Routers are built per version.
    pub version: u64,
    /// The sharded tables' columns per database, as last read from the shards (kept over reloads:
    /// the router lists them by name, so an outdated list gives an error, never a misplaced row).
    pub columns: HashMap<String, Arc<columns::Columns>>,
    /// The proxy's workers ([`crate::workers`]): each pool has a slice per worker. Fixed for the
    /// life of the process, so reloads keep it.
    pub workers: u32,
    pub config: Arc<Config>,
    pub pool_mode: PoolMode,
    /// By name, in the config's order. A session looks its database up by position
    /// ([`Snapshot::database`]); by name, foldhash rather than std's SipHash (the keys come from
    /// our own config: no flooding risk).
    pub databases: Databases,
}

/// A snapshot's databases by name, each also at a fixed position.
pub type Databases = indexmap::IndexMap<String, Arc<Database>, foldhash::fast::RandomState>;

/// Where a session found its database in the snapshot of a version: the position to look at
/// first in that version's snapshot. One hint per name: it does not say whose position it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct DatabaseHint(Option<(u64, usize)>);

impl Snapshot {
    /// The database named `name`. Every transaction's checkout asks: `hint` remembers its
    /// position for the next one, which then costs a comparison instead of a hash lookup (a
    /// snapshot never changes, and its version is unique to it in its store).
    pub fn database(&self, name: &str, hint: &mut DatabaseHint) -> Option<&Arc<Database>> {
        if let Some((version, at)) = hint.0 {
            if version == self.version {
                let found = self.databases.get_index(at);
                debug_assert!(
                    found.is_some_and(|(key, _)| key == name),
                    "a hint of another name"
                );
                return found.map(|(_, db)| db);
            }
        }
        let (at, _, db) = self.databases.get_full(name)?;
        hint.0 = Some((self.version, at));
        Some(db)
    }

    /// Builds a snapshot from a validated config. Pools whose server and settings are unchanged in
    /// `previous` are reused, so a reload keeps their open connections.
    pub fn build(
        config: Arc<Config>,
        previous: Option<&Snapshot>,
        epoch: u64,
    ) -> Result<Snapshot, TopologyError> {
        let workers = previous.map_or(1, |p| p.workers);
        Snapshot::build_for(config, previous, epoch, workers)
    }

    /// The first snapshot of a proxy that serves clients on `workers` workers.
    pub fn first(config: Arc<Config>, workers: u32) -> Result<Snapshot, TopologyError> {
        Snapshot::build_for(config, None, 1, workers)
    }

    fn build_for(
        config: Arc<Config>,
        previous: Option<&Snapshot>,
        epoch: u64,
        workers: u32,
    ) -> Result<Snapshot, TopologyError> {
        let settings = PoolSettings {
            size: config.pool.size,
            checkout_timeout: Duration::from_millis(config.pool.checkout_timeout_ms),
            connect_timeout: Duration::from_millis(config.pool.connect_timeout_ms),
            workers,
        };
        let mut old_pools: HashMap<(Target, Arc<str>), Pool> = HashMap::new();
        for db in previous.iter().flat_map(|p| p.databases.values()) {
            for shard in &db.shards {
                for pool in std::iter::once(&shard.primary).chain(&shard.replicas) {
                    old_pools.insert((pool.target().clone(), shard.name.clone()), pool.clone());
                }
            }
        }
        let pool_for = |shard: &Arc<str>, target: Target| match old_pools
            .get(&(target.clone(), shard.clone()))
        {
            Some(pool) if pool.settings() == settings => pool.clone(),
            _ => Pool::new(shard, target, settings),
        };
        let mut databases = Databases::default();
        for (db_name, db) in &config.databases {
            if db.shards.len() > 1 && config.pool.mode == PoolMode::Session {
                // A session would need a server connection per shard for its whole life.
                return Err(TopologyError::SessionModeSharded {
                    database: db_name.clone(),
                });
            }
            let mut shards = Vec::new();
            for (shard_name, shard) in &db.shards {
                let bad = |problem: String| TopologyError::BadBackend {
                    database: db_name.clone(),
                    shard: shard_name.clone(),
                    problem,
                };
                let name: Arc<str> = shard_name.as_str().into();
                let primary = pool_for(&name, target_from_url(&shard.primary).map_err(bad)?);
                let mut replicas = Vec::new();
                for url in &shard.replicas {
                    replicas.push(pool_for(&name, target_from_url(url).map_err(bad)?));
                }
                shards.push(Shard {
                    name,
                    primary,
                    replicas,
                    writer: Default::default(),
                });
            }
            let default_shard = db
                .default_shard
                .as_ref()
                .and_then(|d| shards.iter().position(|s| &*s.name == d));
            let database = Database {
                name: db_name.clone(),
                shards,
                default_shard,
            };
            databases.insert(db_name.clone(), Arc::new(database));
        }
        Ok(Snapshot {
            epoch,
            version: previous.map_or(1, |p| p.version + 1),
            columns: previous.map(|p| p.columns.clone()).unwrap_or_default(),
            workers,
            pool_mode: config.pool.mode,
            config,
            databases,
        })
    }
}

/// A validated backend URL as the backend module's connection target.
fn target_from_url(url: &str) -> Result<Target, String> {
    let t = crate::config::parse_backend_url(url)?;
    if t.host.starts_with('/') {
        return Err(
            "unix-socket backends are not supported yet; give a TCP host such as 127.0.0.1".into(),
        );
    }
    Ok(Target {
        host: t.host,
        port: t.port,
        user: t.user,
        password: t.password,
        database: t.database,
    })
}

/// The current snapshot, swapped atomically on reload, and the proxy's metrics (kept here so
/// that whoever can see the topology — sessions, the admin API — can record and render them).
pub struct Store {
    current: ArcSwap<Snapshot>,
    /// `current`'s version, stored right after each swap: sessions ask whether it changed before
    /// every transaction, and an atomic load is a tenth of an `ArcSwap` load.
    version: AtomicU64,
    /// The shard maps resharding persisted, which override the config file's ([`persisted`]).
    persisted: Mutex<persisted::PersistedMaps>,
    /// Held by whoever builds the next snapshot (a std mutex: nothing awaits while holding it):
    /// SIGHUP, the admin API and newly read columns must each build on the latest snapshot, or
    /// one swap would silently undo another and reuse an epoch.
    writer: Mutex<()>,
    metrics: Arc<Metrics>,
    flights: flights::Flights,
    /// Each worker's handle on `current` ([`Store::local`]); emptied by every swap.
    locals: Box<[LocalSlot]>,
}

/// The current snapshot as one worker's sessions take it: an `Arc` of the worker's own around the
/// shared one. Every session counted the shared `Arc` up and down on each transaction, so with
/// several workers its cache line passed between the cores (`src/metrics/series.rs` says what
/// that costs); a worker's own count stays on its core.
pub struct Local(Arc<Snapshot>);

impl std::ops::Deref for Local {
    type Target = Snapshot;
    fn deref(&self) -> &Snapshot {
        &self.0
    }
}

/// One worker's [`Local`] of the current snapshot, once a session asked; on cache lines of its
/// own.
#[derive(Default)]
#[repr(align(128))]
struct LocalSlot(parking_lot::Mutex<Option<Arc<Local>>>);

impl Store {
    pub fn new(snapshot: Snapshot) -> Store {
        let workers = snapshot.workers as usize;
        Store {
            locals: (0..workers).map(|_| LocalSlot::default()).collect(),
            version: AtomicU64::new(snapshot.version),
            current: ArcSwap::from_pointee(snapshot),
            persisted: Mutex::default(),
            writer: Mutex::new(()),
            metrics: Arc::default(),
            flights: flights::Flights::new(workers),
        }
    }

    /// The statements routed but not sent yet, by the map they were routed with.
    pub fn flights(&self) -> &flights::Flights {
        &self.flights
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The Prometheus text of `GET /metrics`, with the pools' and the epoch's gauges as of now.
    pub fn render_metrics(&self) -> String {
        let snapshot = self.load();
        let mut pools = Vec::new();
        for db in snapshot.databases.values() {
            for shard in &db.shards {
                let roles = std::iter::once((metrics::PRIMARY, &shard.primary))
                    .chain(shard.replicas.iter().map(|p| (metrics::REPLICA, p)));
                for (role, pool) in roles {
                    let (open, in_use, waiting) = pool.gauges();
                    pools.push(PoolGauges {
                        database: &db.name,
                        shard: &shard.name,
                        role,
                        size: pool.settings().size,
                        open,
                        in_use,
                        waiting,
                    });
                }
            }
        }
        self.metrics.render(snapshot.epoch, &pools)
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The current snapshot, for a session of worker `worker` ([`Local`]). The mutex is only
    /// ever taken by that worker's thread, and by a swap emptying it.
    pub fn local(&self, worker: usize) -> Arc<Local> {
        let Some(slot) = self.locals.get(worker) else {
            return Arc::new(Local(self.load()));
        };
        let mut local = slot.0.lock();
        match &*local {
            Some(l) if l.version == self.version() => l.clone(),
            _ => {
                // Emptied by a swap that may not have stored the version yet: load anyway. The
                // swap empties the slot after storing the snapshot, so nothing older stays in it.
                let fresh = Arc::new(Local(self.load()));
                *local = Some(fresh.clone());
                fresh
            }
        }
    }

    /// Re-reads a config file and reloads from it: the one code path of SIGHUP and
    /// `POST /v1/config/reload`. On any error the running snapshot stays.
    pub fn reload_file(self: &Arc<Self>, path: &std::path::Path) -> Result<u64, ReloadError> {
        let config = Config::load(path).and_then(|c| c.check_files().map(|()| c));
        if config.is_err() {
            // A config that fails later, in `reload`, is counted there.
            self.metrics.reload(false);
        }
        let epoch = self.reload(config?)?;
        // Shards may have been added, or tables configured: their columns are read anew.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = self.clone();
            runtime.spawn(async move { store.read_columns(None).await });
        }
        Ok(epoch)
    }

    /// The current snapshot's version, without taking a reference to it. Once a reload has
    /// returned (and before anything it persisted is visible), this is its version.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Swaps `next` in. Callers hold `writer`.
    fn swap_in(&self, next: Snapshot) {
        let version = next.version;
        self.current.store(Arc::new(next));
        self.version.store(version, Ordering::SeqCst);
        // Not left to the workers' next transactions: an idle worker would keep the replaced
        // snapshot, and the pools only it has (their server connections), alive.
        for slot in &self.locals {
            *slot.0.lock() = None;
        }
    }

    /// Builds the next snapshot from `config` and swaps it in. Nothing changes if building fails
    /// or if the new config would move keys to another shard.
    pub fn reload(&self, config: Config) -> Result<u64, TopologyError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.load();
        let config = persisted::apply(config, &self.persisted_maps());
        let moves = ownership::moves(&previous.config, &config);
        if !moves.is_empty() {
            self.metrics.reload(false);
            return Err(TopologyError::MovesKeys { moves });
        }
        let built = Snapshot::build(Arc::new(config), Some(&previous), previous.epoch + 1);
        self.metrics.reload(built.is_ok());
        let next = built?;
        let epoch = next.epoch;
        self.swap_in(next);
        Ok(epoch)
    }

    fn persisted_maps(&self) -> persisted::PersistedMaps {
        self.persisted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The epochs of the persisted maps in force, per database.
    pub fn persisted_epochs(&self) -> serde_json::Value {
        persisted::epochs(&self.persisted.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Takes the shard maps resharding persisted: swaps in a snapshot with them when any epoch
    /// is new. `Ok(false)`: nothing new. A map that does not fit the config (a shard it does not
    /// have, buckets not covered) is refused with the reasons, and nothing changes.
    pub fn adopt_maps(&self, maps: persisted::PersistedMaps) -> Result<bool, String> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let epochs = |m: &persisted::PersistedMaps| persisted::epochs(m);
        if epochs(&maps) == epochs(&self.persisted_maps()) {
            return Ok(false);
        }
        let previous = self.load();
        let config = persisted::apply((*previous.config).clone(), &maps);
        let issues = config.validate();
        if !issues.is_empty() {
            let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
            return Err(text.join("; "));
        }
        let next = Snapshot::build(Arc::new(config), Some(&previous), previous.epoch + 1)
            .map_err(|e| e.to_string())?;
        self.swap_in(next);
        *self.persisted.lock().unwrap_or_else(|p| p.into_inner()) = maps;
        Ok(true)
    }

    /// Swaps in a snapshot that differs only in `database`'s columns.
    pub fn learn_columns(&self, database: &str, found: columns::Columns) {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.load();
        let mut columns = previous.columns.clone();
        columns.insert(database.to_string(), Arc::new(found));
        self.swap_in(Snapshot {
            epoch: previous.epoch,
            version: previous.version + 1,
            columns,
            workers: previous.workers,
            config: previous.config.clone(),
            pool_mode: previous.pool_mode,
            databases: previous.databases.clone(),
        });
    }

    /// Reads the columns of the sharded tables of `database` (every database when `None`) from
    /// their shards and swaps them in. Logs what could not be read.
    pub async fn read_columns(&self, database: Option<&str>) {
        let snapshot = self.load();
        let timeout = Duration::from_millis(snapshot.config.pool.connect_timeout_ms);
        for (name, db) in &snapshot.config.databases {
            if db.tables.is_empty() || database.is_some_and(|d| d != name) {
                continue;
            }
            let found = columns::read(db, timeout).await;
            for (table, cols) in &found {
                if let columns::TableColumns::Unknown(why) = cols {
                    tracing::warn!(database = %name, %table, %why, "column order unknown: INSERTs without a column list into this table are refused");
                }
            }
            self.learn_columns(name, found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(shards: &str) -> Arc<Config> {
        let yaml = format!(
            "listen: 127.0.0.1:0\nusers: [{{ name: a, password: b }}]\ndatabases:\n  app:\n    shards:\n{shards}"
        );
        Arc::new(Config::parse_with_env(&yaml, &|_| None).expect("valid config"))
    }

    #[tokio::test]
    async fn a_reload_keeps_the_pools_of_unchanged_servers() {
        let one = "      s0: { primary: \"postgres://u:p@127.0.0.1:1/app\" }\n";
        let store = Store::new(Snapshot::build(config(one), None, 1).unwrap());
        let before = store.load();
        let epoch = store.reload((*config(one)).clone()).unwrap();
        let after = store.load();
        assert_eq!(epoch, 2);
        let (a, b) = (
            &before.databases["app"].shards[0].primary,
            &after.databases["app"].shards[0].primary,
        );
        assert!(
            a.same_pool(b),
            "an unchanged server keeps its pool (and its open connections)"
        );
    }

    fn databases(names: &[&str]) -> Config {
        let mut yaml =
            "listen: 127.0.0.1:0\nusers: [{ name: a, password: b }]\ndatabases:\n".to_string();
        for name in names {
            yaml += &format!(
                "  {name}:\n    shards:\n      s0: {{ primary: \"postgres://u:p@127.0.0.1:1/{name}\" }}\n"
            );
        }
        Config::parse_with_env(&yaml, &|_| None).expect("valid config")
    }

    #[tokio::test]
    async fn a_database_found_by_its_hint_is_the_one_named_after_a_reload_moves_it() {
        let store =
            Store::new(Snapshot::build(Arc::new(databases(&["a", "b", "c"])), None, 1).unwrap());
        let mut hint = DatabaseHint::default();
        let before = store.load();
        assert_eq!(before.database("c", &mut hint).unwrap().name, "c");
        assert_eq!(
            before.database("c", &mut hint).unwrap().name,
            "c",
            "found again by its hint"
        );
        store.reload(databases(&["c", "b"])).unwrap();
        let after = store.load();
        assert_eq!(after.database("c", &mut hint).unwrap().name, "c", "moved");
        assert_eq!(after.database("c", &mut hint).unwrap().name, "c");
        store.reload(databases(&["b"])).unwrap();
        assert!(store.load().database("c", &mut hint).is_none(), "removed");
        assert_eq!(
            before.database("c", &mut hint).unwrap().name,
            "c",
            "an older snapshot, still held by a transaction"
        );
    }

    #[tokio::test]
    async fn a_workers_handle_is_its_own_and_a_swap_lets_the_replaced_snapshot_go() {
        let one = "      s0: { primary: \"postgres://u:p@127.0.0.1:1/app\" }\n";
        let store = Store::new(Snapshot::first(config(one), 2).unwrap());
        let (w0, w1) = (store.local(0), store.local(1));
        assert!(
            Arc::ptr_eq(&w0, &store.local(0)),
            "one handle per worker and version"
        );
        assert!(
            !Arc::ptr_eq(&w0, &w1),
            "each worker counts on a handle of its own"
        );
        assert!(Arc::ptr_eq(&w0.0, &w1.0), "around the one snapshot");
        let replaced = Arc::downgrade(&w0.0);
        drop((w0, w1));
        store.reload((*config(one)).clone()).unwrap();
        // No worker asked since: the swap itself let go of their handles.
        assert!(
            replaced.upgrade().is_none(),
            "the replaced snapshot is gone"
        );
        assert_eq!(store.local(1).version, store.version());
        assert_eq!(
            store.local(7).version,
            store.version(),
            "a worker beyond the count"
        );
    }
}
