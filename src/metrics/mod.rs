//! Prometheus metrics, rendered by the admin server's `GET /metrics` (DESIGN §2.6). A leaf:
//! everything records into it, it imports nothing of ours.
//!
//! Each proxy owns its own [`PrometheusRecorder`] rather than installing the `metrics` crate's
//! process-wide recorder: that one is a global, so two proxies in one process (the integration
//! tests start many in one binary) would add into the same counters and no test could assert exact
//! counts; DESIGN §1 forbids process-wide mutable statics anyway. Nothing here uses the `counter!`
//! macros (they go to the global recorder): every series the query path touches is registered
//! once per database, epoch and worker ([`DbMetrics`]) and kept as a handle — an `Arc` to an
//! atomic of that worker's own ([`series`]) — so a query costs a few atomic adds on cache lines no
//! other core writes: no key hashing, registry lookup, allocation or formatting.
//!
//! Labels are bounded: configured database and shard names, and the fixed enums below. Never a
//! key value, SQL text or anything else a client sends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Upper bounds of the duration histograms' buckets, in seconds: 100 µs (a pooled point read on
/// a local network) to 10 s, about three per decade, so p50 and p99 can be read off them.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

mod labels;
mod series;
pub use labels::{
    BackendError, Decision, Kind, Rejection, ShadowVerdict, Spread, PRIMARY, REPLICA,
};
use series::{Family, Tally, Timings};

const QUERY_DURATION: Family = Family::new(
    "shardgate_query_duration_seconds",
    "Time from sending a statement to a shard to its last reply.",
);
const CHECKOUT_WAIT: Family = Family::new(
    "shardgate_pool_checkout_wait_seconds",
    "Time a client waited for a server connection.",
);
const RECEIVED: Family = Family::new(
    "shardgate_client_received_bytes_total",
    "Bytes read from clients after login.",
);
const SENT: Family = Family::new(
    "shardgate_client_sent_bytes_total",
    "Bytes written to clients after login.",
);
const QUERIES: Family = Family::new(
    "shardgate_queries_total",
    "Statements sent to a shard, by statement kind (a multi-shard statement counts once per shard).",
);
const DECISIONS: Family = Family::new(
    "shardgate_routing_decisions_total",
    "Statements routed: to one shard, to several, or rejected.",
);
const REJECTIONS: Family = Family::new(
    "shardgate_routing_rejections_total",
    "Statements rejected by routing, by reason.",
);
const PARSE_FAILURES: Family = Family::new(
    "shardgate_parse_failures_total",
    "Statements the router could not parse.",
);
const SHADOW: Family = Family::new(
    "shardgate_shadow_statements_total",
    "routing.mode: shadow: statements that would have needed several shards or been rejected.",
);
const BACKEND_ERRORS: Family = Family::new(
    "shardgate_backend_errors_total",
    "Backend connections lost, unreachable servers and pool checkout timeouts.",
);

/// One proxy's metrics: its recorder and the handles that are not per database.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    clients: Gauge,
    accepted: Counter,
    reloads_ok: Counter,
    reloads_failed: Counter,
    epoch: Gauge,
    /// The query path's series, outside the recorder ([`series`]).
    counters: series::Registry<Tally>,
    timings: series::Registry<Timings>,
    /// The per-database handles last built for each worker, with the shard names they were built
    /// for; rebuilt when a reload changes the shards (registering an existing series returns the
    /// same cells, so counts carry over).
    databases: Mutex<HashMap<(String, usize), Arc<DbMetrics>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new().build_recorder();
        describe(&recorder);
        let m = |r: &PrometheusRecorder, name: &'static str, labels: &[(&str, &str)]| {
            r.register_counter(&key(name, labels), &META)
        };
        Metrics {
            clients: recorder.register_gauge(&key("shardgate_client_connections", &[]), &META),
            accepted: m(
                &recorder,
                "shardgate_client_connections_accepted_total",
                &[],
            ),
            reloads_ok: m(
                &recorder,
                "shardgate_config_reloads_total",
                &[("result", "ok")],
            ),
            reloads_failed: m(
                &recorder,
                "shardgate_config_reloads_total",
                &[("result", "failed")],
            ),
            epoch: recorder.register_gauge(&key("shardgate_config_epoch", &[]), &META),
            handle: recorder.handle(),
            recorder,
            counters: series::Registry::default(),
            timings: series::Registry::default(),
            databases: Mutex::default(),
        }
    }

    /// A client connection was accepted; it counts as connected until the guard is dropped.
    pub fn client_connected(&self) -> ClientGuard {
        self.accepted.increment(1);
        self.clients.increment(1.0);
        ClientGuard {
            clients: self.clients.clone(),
        }
    }

    pub fn reload(&self, ok: bool) {
        if ok {
            self.reloads_ok.increment(1);
        } else {
            self.reloads_failed.increment(1);
        }
    }

    /// Worker `worker`'s handles of one database with these shards (in the snapshot's order),
    /// each with whether it has replicas (their series exist only then).
    pub fn database(
        &self,
        database: &str,
        shards: &[(Arc<str>, bool)],
        worker: usize,
    ) -> Arc<DbMetrics> {
        let mut by_name = self.databases.lock().unwrap_or_else(|p| p.into_inner());
        let key = (database.to_string(), worker);
        if let Some(db) = by_name.get(&key).filter(|d| d.shard_names == shards) {
            return db.clone();
        }
        let db = Arc::new(DbMetrics::new(self, database, shards, worker));
        by_name.insert(key, db.clone());
        db
    }

    /// A gauge another layer knows at scrape time (shard skew, server health), set before
    /// [`Metrics::render`]. Labels are configured names only.
    pub fn scrape_gauge(&self, name: &'static str, labels: &[(&str, &str)], value: f64) {
        self.recorder
            .register_gauge(&key(name, labels), &META)
            .set(value);
    }

    /// The Prometheus text, with the gauges read at scrape time set first.
    pub fn render(&self, epoch: u64, pools: &[PoolGauges<'_>]) -> String {
        self.epoch.set(epoch as f64);
        for p in pools {
            let labels = [
                ("database", p.database),
                ("shard", p.shard),
                ("role", p.role),
            ];
            let set = |name: &'static str, v: u32| {
                self.recorder
                    .register_gauge(&key(name, &labels), &META)
                    .set(f64::from(v))
            };
            set("shardgate_pool_size", p.size);
            set("shardgate_pool_connections", p.open);
            set("shardgate_pool_in_use", p.in_use);
            set("shardgate_pool_waiting", p.waiting);
        }
        let mut text = self.handle.render();
        self.counters.render(&mut text);
        self.timings.render(&mut text);
        text
    }
}

/// One pool's state at scrape time.
pub struct PoolGauges<'a> {
    pub database: &'a str,
    pub shard: &'a str,
    pub role: &'static str,
    /// Configured most connections.
    pub size: u32,
    /// Connections open to the server.
    pub open: u32,
    /// Connections checked out by clients.
    pub in_use: u32,
    /// Clients waiting for a connection.
    pub waiting: u32,
}

/// Keeps a client counted as connected.
pub struct ClientGuard {
    clients: Gauge,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.clients.decrement(1.0);
    }
}

/// Which server's series: shard `shard`'s primary, or (`replica`) its replicas. A bare shard
/// index means its primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub shard: usize,
    pub replica: bool,
}

impl From<usize> for At {
    fn from(shard: usize) -> At {
        At {
            shard,
            replica: false,
        }
    }
}

/// The handles of one database, indexed by the snapshot's shard order.
pub struct DbMetrics {
    shard_names: Vec<(Arc<str>, bool)>,
    shards: Vec<ShardMetrics>,
    /// Per shard, its replicas' series (`role="replica"`), if it has replicas.
    replicas: Vec<Option<ShardMetrics>>,
    single_shard: Arc<Tally>,
    multi_shard: Arc<Tally>,
    rejected: Arc<Tally>,
    rejections: [Arc<Tally>; Rejection::ALL.len()],
    parse_failures: Arc<Tally>,
    received: Arc<Tally>,
    sent: Arc<Tally>,
    shadow_multi: [Arc<Tally>; Spread::ALL.len()],
    shadow_rejected: [Arc<Tally>; Rejection::ALL.len()],
}

struct ShardMetrics {
    queries: [Arc<Tally>; Kind::ALL.len()],
    duration: Arc<Timings>,
    checkout_wait: Arc<Timings>,
    errors: [Arc<Tally>; BackendError::ALL.len()],
}

impl DbMetrics {
    fn new(m: &Metrics, db: &str, shard_names: &[(Arc<str>, bool)], worker: usize) -> DbMetrics {
        let counter = |family: Family, labels: &[(&str, &str)]| {
            let mut all = vec![("database", db)];
            all.extend_from_slice(labels);
            m.counters.register(family, &all, worker)
        };
        let decision = |d| counter(DECISIONS, &[("decision", d)]);
        let reason = |x: Rejection| counter(REJECTIONS, &[("reason", x.label())]);
        let shadow = |outcome, why| counter(SHADOW, &[("outcome", outcome), ("reason", why)]);
        let shard = |name: &str, role| ShardMetrics::new(m, [db, name, role], worker);
        DbMetrics {
            shards: shard_names.iter().map(|(s, _)| shard(s, PRIMARY)).collect(),
            replicas: shard_names
                .iter()
                .map(|(s, has)| has.then(|| shard(s, REPLICA)))
                .collect(),
            shard_names: shard_names.to_vec(),
            single_shard: decision("single_shard"),
            multi_shard: decision("multi_shard"),
            rejected: decision("rejected"),
            rejections: Rejection::ALL.map(reason),
            parse_failures: counter(PARSE_FAILURES, &[]),
            received: counter(RECEIVED, &[]),
            sent: counter(SENT, &[]),
            shadow_multi: Spread::ALL.map(|s| shadow("multi_shard", s.label())),
            shadow_rejected: Rejection::ALL.map(|x| shadow("rejected", x.label())),
        }
    }

    /// The series of a server of a shard: its primary, or its replicas.
    fn at(&self, at: impl Into<At>) -> Option<&ShardMetrics> {
        let at = at.into();
        match at.replica {
            false => self.shards.get(at.shard),
            true => self.replicas.get(at.shard)?.as_ref(),
        }
    }

    /// A statement sent to shard `shard` (its index in the snapshot).
    pub fn query(&self, at: impl Into<At>, kind: Kind) {
        if let Some(s) = self.at(at) {
            s.queries[kind as usize].add(1);
        }
    }

    /// How long a statement on `shard` took, from being sent to its last reply.
    pub fn duration(&self, at: impl Into<At>, took: Duration) {
        if let Some(s) = self.at(at) {
            s.duration.record(took);
        }
    }

    pub fn checkout_wait(&self, at: impl Into<At>, took: Duration) {
        if let Some(s) = self.at(at) {
            s.checkout_wait.record(took);
        }
    }

    pub fn backend_error(&self, at: impl Into<At>, error: BackendError) {
        if let Some(s) = self.at(at) {
            s.errors[error as usize].add(1);
        }
    }

    pub fn decision(&self, decision: Decision) {
        match decision {
            Decision::SingleShard => self.single_shard.add(1),
            Decision::MultiShard => self.multi_shard.add(1),
            Decision::Rejected(why) => {
                self.rejected.add(1);
                self.rejections[why as usize].add(1);
            }
        }
    }

    pub fn parse_failure(&self) {
        self.parse_failures.add(1);
    }

    pub fn shadow(&self, verdict: ShadowVerdict) {
        match verdict {
            ShadowVerdict::MultiShard(s) => self.shadow_multi[s as usize].add(1),
            ShadowVerdict::Rejected(x) => self.shadow_rejected[x as usize].add(1),
        }
    }

    /// Bytes read from the client.
    pub fn received(&self, n: usize) {
        self.received.add(n as u64);
    }

    /// Bytes written to the client.
    pub fn sent(&self, n: usize) {
        self.sent.add(n as u64);
    }
}

impl ShardMetrics {
    /// The series of `[database, shard, role]`.
    fn new(m: &Metrics, [db, shard, role]: [&str; 3], worker: usize) -> ShardMetrics {
        let at = [("database", db), ("shard", shard), ("role", role)];
        let counter = |family, extra: (&str, &str)| {
            let mut labels = at.to_vec();
            labels.push(extra);
            m.counters.register(family, &labels, worker)
        };
        ShardMetrics {
            queries: Kind::ALL.map(|k| counter(QUERIES, ("kind", k.label()))),
            duration: m.timings.register(QUERY_DURATION, &at, worker),
            checkout_wait: m.timings.register(CHECKOUT_WAIT, &at, worker),
            errors: BackendError::ALL.map(|e| counter(BACKEND_ERRORS, ("error", e.label()))),
        }
    }
}

static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

fn key(name: &'static str, labels: &[(&str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(k.to_string(), v.to_string()))
        .collect();
    Key::from_parts(name, labels)
}

/// HELP lines.
fn describe(r: &PrometheusRecorder) {
    let counters = [
        (
            "shardgate_client_connections_accepted_total",
            "Client connections accepted.",
        ),
        (
            "shardgate_config_reloads_total",
            "Config reloads, by result.",
        ),
    ];
    for (name, help) in counters {
        r.describe_counter(name.into(), None, help.into());
    }
    let gauges = [
        (
            "shardgate_config_epoch",
            "Epoch of the topology snapshot in force.",
        ),
        (
            "shardgate_client_connections",
            "Client connections open now.",
        ),
        (
            "shardgate_pool_size",
            "Configured most server connections of a pool.",
        ),
        (
            "shardgate_pool_connections",
            "Server connections open in a pool.",
        ),
        (
            "shardgate_pool_in_use",
            "Server connections of a pool checked out by clients.",
        ),
        (
            "shardgate_pool_waiting",
            "Clients waiting for a server connection of a pool.",
        ),
        (
            "shardgate_shard_skew",
            "The busiest shard's queries over the mean of the shards that own keys, over the last one to two minutes (1 is even).",
        ),
        (
            "shardgate_server_up",
            "1 when the server's last health check succeeded, 0 when it is banned or not checked yet.",
        ),
        (
            "shardgate_replica_lag_bytes",
            "WAL the replica has yet to replay, behind its shard's primary.",
        ),
        (
            "shardgate_replica_lag_seconds",
            "Age of the last transaction the replica replayed, while it is behind (0 when caught up).",
        ),
    ];
    for (name, help) in gauges {
        r.describe_gauge(name.into(), None, help.into());
    }
}

#[cfg(test)]
mod tests;
