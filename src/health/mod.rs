//! Background health checks of every server (each shard's primary and replicas): whether it
//! answers, what it is now (`pg_is_in_recovery()`), how far its WAL is, and each replica's lag
//! behind the shard's primary.
//!
//! One task ([`run`]) checks every server once per `health.interval_ms`, over one long-lived
//! control connection per server (its own, never the pool's: a busy pool never bans a server),
//! and publishes a [`Report`] for the round. Readers (the admin API now, the router next, the
//! metrics later) take the latest report with [`Monitor::report`]: one atomic load, no lock.
//!
//! This module observes; it routes nothing. The router will ask [`ShardHealth::current_primary`]
//! where writes go and [`ServerHealth::is_usable_for_reads`] which replicas may take reads.

mod checker;
mod lsn;
mod state;
mod switchover;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

pub use checker::run;
pub use lsn::Lsn;
pub use state::{Kind, Lag, Observation, Role, ServerState};
pub use switchover::{Fence, Overrides};

use crate::backend::Target;
use crate::pool::Pool;
use crate::topology::Shard;

/// A server as the checker knows it: where it is and whom it logs in as, never the password.
/// The same server named by two shards (or two databases) is checked once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
}

impl ServerKey {
    pub fn of(target: &Target) -> ServerKey {
        ServerKey {
            host: target.host.clone(),
            port: target.port,
            user: target.user.clone(),
            database: target.database.clone(),
        }
    }

    /// The server a configured backend URL names; `None` if it does not parse (validated
    /// configs always do).
    pub fn of_url(url: &str) -> Option<ServerKey> {
        let t = crate::config::parse_backend_url(url).ok()?;
        Some(ServerKey {
            host: t.host,
            port: t.port,
            user: t.user,
            database: t.database,
        })
    }

    /// Whether `target` is this server (no allocation: checked per transaction).
    pub fn is(&self, target: &Target) -> bool {
        self.port == target.port
            && self.host == target.host
            && self.user == target.user
            && self.database == target.database
    }
}

/// Which of a shard's pools takes its writes ([`Monitor::writable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Primary,
    Replica(usize),
    /// The configured primary was demoted and no promoted server is known yet.
    Nowhere,
}

impl Writer {
    fn decide(report: &Report, database: &str, shard: &Shard) -> Writer {
        let health = report.shard(database, &shard.name);
        let promoted = health
            .and_then(|h| h.servers.get(h.current_primary()?))
            .filter(|s| !s.key.is(shard.primary.target()));
        let Some(server) = promoted else {
            let demoted = health
                .and_then(|h| h.servers.first())
                .is_some_and(|s| s.demoted && s.key.is(shard.primary.target()));
            return if demoted {
                Writer::Nowhere
            } else {
                Writer::Primary
            };
        };
        match shard
            .replicas
            .iter()
            .position(|p| server.key.is(p.target()))
        {
            Some(i) => Writer::Replica(i),
            None => Writer::Primary,
        }
    }

    fn pool(self, shard: &Shard) -> Option<&Pool> {
        match self {
            Writer::Primary => Some(&shard.primary),
            Writer::Replica(i) => shard.replicas.get(i),
            Writer::Nowhere => None,
        }
    }

    /// Packed with the report generation it was decided on: generation in the high 48 bits;
    /// `None` for a replica index that does not fit the low 16 (then it is not remembered).
    fn pack(self, generation: u64) -> Option<u64> {
        let code = match self {
            Writer::Nowhere => 0,
            Writer::Primary => 1,
            Writer::Replica(i) => u16::try_from(i).ok()?.checked_add(2)?,
        };
        Some((generation << 16) | u64::from(code))
    }

    fn unpack(packed: u64) -> Writer {
        match packed & 0xffff {
            0 => Writer::Nowhere,
            1 => Writer::Primary,
            code => Writer::Replica(code as usize - 2),
        }
    }
}

/// A shard's [`Monitor::writable`] answer, kept for the report it was decided on: every write
/// transaction's checkout asks, and the answer can only change with the next round's report.
/// Shared by the sessions (one atomic, rewritten once per round).
#[derive(Debug, Default)]
pub struct WriterMemo(AtomicU64);

impl fmt::Display for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }
}

/// One server of one shard in one round.
#[derive(Debug, Clone)]
pub struct ServerHealth {
    pub key: ServerKey,
    /// What the config says it is: the shard's `primary`, or one of its `replicas`.
    pub configured: Role,
    pub state: ServerState,
    /// A replica's lag behind the shard's current primary, both read in the same round; `None`
    /// for a primary, or when either position is unknown (no primary up, nothing replayed yet).
    pub lag: Option<Lag>,
    /// An operator promoted another server of the shard: this one never takes writes again.
    pub demoted: bool,
}

impl ServerHealth {
    /// What the server said it is at its last check; `None` unless up.
    pub fn observed_role(&self) -> Option<Role> {
        self.state.observed().map(|o| o.role)
    }

    /// The config calls it a primary and it is in recovery, or a replica and it is not (it was
    /// promoted).
    pub fn role_mismatch(&self) -> bool {
        self.observed_role().is_some_and(|r| r != self.configured)
    }

    /// Up, in recovery, and at most `max_lag_ms` behind its primary. A replica whose lag cannot
    /// be measured (its primary is down) is not usable: staleness that cannot be bounded is
    /// refused, the router falls back to the primary.
    pub fn is_usable_for_reads(&self, max_lag_ms: u64) -> bool {
        self.observed_role() == Some(Role::Replica) && self.lag.is_some_and(|l| l.ms <= max_lag_ms)
    }

    /// How far a replica has applied WAL (a primary: how far it has written), at the last check.
    pub fn lsn(&self) -> Option<Lsn> {
        self.state.observed().and_then(|o| o.lsn)
    }
}

/// One shard in one round: its servers in config order (index 0 is the configured primary,
/// index `1 + i` is `replicas[i]`) and which of them takes writes now.
#[derive(Debug, Clone)]
pub struct ShardHealth {
    pub servers: Vec<ServerHealth>,
    primary: Option<usize>,
}

impl ShardHealth {
    /// The index in `servers` of the writable primary now: the configured one until a failover,
    /// then the promoted replica. `None` when no server is up and out of recovery: writes must
    /// fail cleanly then, never go to a server in recovery.
    pub fn current_primary(&self) -> Option<usize> {
        self.primary
    }

    /// The index of `key` in `servers`. Match servers by key, not by position, when comparing
    /// with a snapshot: the report may be a round behind a reload.
    pub fn position(&self, key: &ServerKey) -> Option<usize> {
        self.servers.iter().position(|s| &s.key == key)
    }

    pub fn server(&self, key: &ServerKey) -> Option<&ServerHealth> {
        self.position(key).map(|i| &self.servers[i])
    }

    /// The indexes of the servers that may take reads at `max_lag_ms`, primary excluded.
    pub fn usable_replicas(&self, max_lag_ms: u64) -> impl Iterator<Item = usize> + '_ {
        (0..self.servers.len()).filter(move |&i| self.servers[i].is_usable_for_reads(max_lag_ms))
    }
}

/// Everything one round of checks found. Published whole, so a reader never mixes two rounds.
#[derive(Debug, Default)]
pub struct Report {
    /// 0 before the first round has finished; then one per round.
    pub round: u64,
    /// Per database, per shard name. Ordered maps: every write transaction's checkout looks a
    /// shard up here, and a few string comparisons beat hashing the names twice.
    databases: BTreeMap<String, BTreeMap<String, ShardHealth>>,
}

impl Report {
    pub fn shard(&self, database: &str, shard: &str) -> Option<&ShardHealth> {
        self.databases.get(database)?.get(shard)
    }

    /// Every server as `(database, shard, server)`: the hook for health and lag metrics.
    pub fn servers(&self) -> impl Iterator<Item = (&str, &str, &ServerHealth)> {
        self.databases.iter().flat_map(|(db, shards)| {
            shards.iter().flat_map(move |(shard, health)| {
                health
                    .servers
                    .iter()
                    .map(move |s| (db.as_str(), shard.as_str(), s))
            })
        })
    }
}

/// The latest report, shared by the checker (the one writer) and every reader.
pub struct Monitor {
    report: ArcSwap<Report>,
    /// Counts the reports published, from 1: bumped after each swap, so a reader that sees a
    /// generation finds at least that report ([`WriterMemo`]).
    generation: AtomicU64,
    /// An operator's promotion in progress or done ([`switchover`]).
    switchover: switchover::Switchover,
}

impl Default for Monitor {
    fn default() -> Monitor {
        Monitor {
            report: ArcSwap::default(),
            // Never 0: an empty memo (0) must not pass for a decision on the first report.
            generation: AtomicU64::new(1),
            switchover: switchover::Switchover::default(),
        }
    }
}

impl Monitor {
    pub fn new() -> Monitor {
        Monitor::default()
    }

    /// The pool writes to `shard` of `database` go to: the server the checks last found
    /// writable, so a promotion done elsewhere (`pg_ctl promote`, Patroni) is followed without a
    /// restart; the configured primary while the checks know no other (not checked yet, or no
    /// server writable — writes then fail cleanly on it, never reach a server in recovery).
    /// `None` when the configured primary was demoted by an operator's promotion and the checks
    /// know no other yet: it may still accept writes, which the promoted server would never see.
    ///
    /// Decided on the latest report and remembered in the shard until the next one.
    pub fn writable<'a>(&self, database: &str, shard: &'a Shard) -> Option<&'a Pool> {
        let generation = self.generation.load(Ordering::Acquire);
        let memo = shard.writer.0.load(Ordering::Relaxed);
        if memo >> 16 == generation {
            return Writer::unpack(memo).pool(shard);
        }
        let writer = Writer::decide(&self.report.load(), database, shard);
        if let Some(packed) = writer.pack(generation) {
            shard.writer.0.store(packed, Ordering::Relaxed);
        }
        writer.pool(shard)
    }

    /// The latest round's report; an empty one (round 0) before the first round ends.
    pub fn report(&self) -> Arc<Report> {
        self.report.load_full()
    }

    fn publish(&self, report: Report) {
        self.report.store(Arc::new(report));
        self.generation.fetch_add(1, Ordering::Release);
    }
}
