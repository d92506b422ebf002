//! The YAML config file of DESIGN §2.2: types, loading, `${VAR}` expansion and validation.
//!
//! Everything a running proxy needs to know about users, pools and shards comes from here, already
//! validated: a `Config` that exists is a config the proxy can serve.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod de;
mod env;
mod shardmap;
mod slice;
mod summary;
mod target;
mod tree;
mod validate;

#[cfg(test)]
mod tests;

pub use env::Env;
pub(crate) use shardmap::parse_bucket_range;
pub use slice::{wrong_kind, Slice};
pub use target::{parse_backend_url, redact_url, BackendTarget};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub pool: PoolConfig,
    #[serde(default)]
    pub control: Option<String>,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    pub databases: BTreeMap<String, DatabaseConfig>,
}

/// `log:`: what shardgate logs beyond connections and errors (level and format are flags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Statements that take at least this long (sent to a shard → its last reply) are logged
    /// with their shard and text; 0, the default, logs none (as Postgres'
    /// `log_min_duration_statement` is off by default).
    #[serde(default)]
    pub slow_query_ms: u64,
}

/// `metrics:`: what the query path records. Both are on by default and cheap (see
/// `bench/README.md`); turning them off exists to measure that cost, and for a proxy whose
/// operators scrape nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Per-statement series: queries by shard and kind, latency histograms, routing decisions,
    /// parse failures, checkout waits, backend errors, bytes. Off: `GET /metrics` keeps the
    /// connection, pool, health and reload series only.
    #[serde(default = "yes")]
    pub statements: bool,
    /// Hot keys, buckets and shard load (`GET /v1/hotspots`, `shardgate_shard_skew`).
    #[serde(default = "yes")]
    pub hotspots: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            statements: true,
            hotspots: true,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            token: None,
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    "127.0.0.1:6480".parse().expect("literal address")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum AuthMethod {
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plain text, or a `SCRAM-SHA-256$…` verifier as stored in `pg_authid` (scram-sha-256 only).
    pub password: String,
    #[serde(default)]
    pub auth: AuthMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    #[default]
    Transaction,
    Session,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    #[serde(default)]
    pub mode: PoolMode,
    #[serde(default = "default_pool_size")]
    pub size: u32,
    #[serde(default = "default_checkout_timeout_ms")]
    pub checkout_timeout_ms: u64,
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long SIGTERM waits for open transactions before closing them.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// Largest message a client may send, in bytes (Postgres' own cap is 1 GiB).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            mode: PoolMode::default(),
            size: default_pool_size(),
            checkout_timeout_ms: default_checkout_timeout_ms(),
            max_clients: default_max_clients(),
            connect_timeout_ms: default_connect_timeout_ms(),
            shutdown_timeout_ms: default_shutdown_timeout_ms(),
            max_message_bytes: default_max_message_bytes(),
        }
    }
}

fn default_pool_size() -> u32 {
    20
}
fn default_checkout_timeout_ms() -> u64 {
    3000
}
fn default_max_clients() -> usize {
    10_000
}
fn default_connect_timeout_ms() -> u64 {
    5000
}
fn default_shutdown_timeout_ms() -> u64 {
    30_000
}
fn default_max_message_bytes() -> usize {
    64 * 1024 * 1024
}

/// `health:`: how every server (primaries and replicas) is checked in the background.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Time between two rounds of checks.
    #[serde(default = "default_health_interval_ms")]
    pub interval_ms: u64,
    /// How long one check (connecting, when needed, and the query) may take before it fails.
    #[serde(default = "default_health_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive failed checks before a server is banned. Two by default, so one lost packet
    /// or one slow answer does not move every read to the primary.
    #[serde(default = "default_failures_to_ban")]
    pub failures_to_ban: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_ms: default_health_interval_ms(),
            timeout_ms: default_health_timeout_ms(),
            failures_to_ban: default_failures_to_ban(),
        }
    }
}

fn default_health_interval_ms() -> u64 {
    1000
}
fn default_health_timeout_ms() -> u64 {
    1000
}
fn default_failures_to_ban() -> u32 {
    2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub shards: BTreeMap<String, ShardConfig>,
    #[serde(default)]
    pub sharding: Option<ShardingConfig>,
    #[serde(default)]
    pub tables: BTreeMap<String, String>,
    #[serde(default)]
    pub reference_tables: Vec<String>,
    #[serde(default)]
    pub default_shard: Option<String>,
    #[serde(default)]
    pub routing: RoutingConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    pub primary: String,
    #[serde(default)]
    pub replicas: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Bigint,
    Integer,
    Text,
    Uuid,
}

impl KeyType {
    /// The PostgreSQL type of a key of this type.
    pub fn sql_name(self) -> &'static str {
        match self {
            KeyType::Bigint => "bigint",
            KeyType::Integer => "integer",
            KeyType::Text => "text",
            KeyType::Uuid => "uuid",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardingFunction {
    Hash,
    Range,
    List,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardingConfig {
    pub key_type: KeyType,
    pub function: ShardingFunction,
    #[serde(default)]
    pub buckets: Option<u32>,
    pub map: Vec<MapEntry>,
    /// Buckets a resharding cutover holds: new transactions touching them wait (never from the
    /// file; from the control database's epochs, [`crate::topology::persisted`]).
    #[serde(skip)]
    pub held: Option<Hold>,
}

/// Keys held until `until` at the latest (a driver that died mid-cutover cannot hold them
/// longer); the router decides which keys are in the slice ([`crate::router::Router::holds`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub slice: Slice,
    pub until: std::time::SystemTime,
}

/// One line of a shard map; which fields are allowed depends on the sharding function.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MapEntry {
    pub shard: String,
    /// hash: `"0-511"` (inclusive) or a single bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<String>,
    /// range: inclusive lower bound, `null` (or absent) = unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<serde_yaml_value::Scalar>,
    /// range: exclusive upper bound, `null` (or absent) = unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<serde_yaml_value::Scalar>,
    /// list: the values this shard owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<serde_yaml_value::Scalar>>,
}

impl MapEntry {
    fn empty(shard: &str) -> MapEntry {
        MapEntry {
            shard: shard.to_string(),
            buckets: None,
            from: None,
            to: None,
            values: None,
        }
    }

    pub fn buckets(shard: &str, buckets: String) -> MapEntry {
        MapEntry {
            buckets: Some(buckets),
            ..MapEntry::empty(shard)
        }
    }

    pub fn range(
        shard: &str,
        from: Option<serde_yaml_value::Scalar>,
        to: Option<serde_yaml_value::Scalar>,
    ) -> MapEntry {
        MapEntry {
            from,
            to,
            ..MapEntry::empty(shard)
        }
    }

    pub fn values(shard: &str, values: Vec<serde_yaml_value::Scalar>) -> MapEntry {
        MapEntry {
            values: Some(values),
            ..MapEntry::empty(shard)
        }
    }
}

/// Range bounds and list values are numbers or strings depending on `key_type`.
pub mod serde_yaml_value {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(untagged)]
    pub enum Scalar {
        Int(i64),
        Text(String),
    }

    impl Scalar {
        /// The value as the key type's input function reads it.
        pub fn text(&self) -> String {
            match self {
                Scalar::Int(i) => i.to_string(),
                Scalar::Text(t) => t.clone(),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrossShard {
    #[default]
    Allow,
    Reject,
}

/// `routing.mode`: route statements (`enforce`), or send everything to the default shard and
/// only record what routing would have done (`shadow`), to find the queries that lack the key
/// before sharding anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    #[default]
    Enforce,
    Shadow,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    #[serde(default)]
    pub mode: RoutingMode,
    #[serde(default = "allow")]
    pub cross_shard_reads: CrossShard,
    #[serde(default = "reject")]
    pub cross_shard_writes: CrossShard,
    #[serde(default)]
    pub read_replicas: bool,
    #[serde(default = "default_max_replica_lag_ms")]
    pub max_replica_lag_ms: u64,
    #[serde(default)]
    pub read_your_writes: bool,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            mode: RoutingMode::Enforce,
            cross_shard_reads: CrossShard::Allow,
            cross_shard_writes: CrossShard::Reject,
            read_replicas: false,
            max_replica_lag_ms: default_max_replica_lag_ms(),
            read_your_writes: false,
        }
    }
}

fn allow() -> CrossShard {
    CrossShard::Allow
}
fn reject() -> CrossShard {
    CrossShard::Reject
}
fn default_max_replica_lag_ms() -> u64 {
    1000
}

/// One thing wrong with a config: where (YAML path, and line/column when known) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// e.g. `databases.app.shards.s0.primary` or `users[0].password`; `(document)` for the whole file.
    pub path: String,
    pub problem: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
}

impl ConfigIssue {
    pub fn new(path: &str, problem: impl Into<String>) -> Self {
        let path = if path.is_empty() { "(document)" } else { path };
        ConfigIssue {
            path: path.to_string(),
            problem: problem.into(),
            line: None,
            column: None,
        }
    }

    pub fn at(mut self, line: u64, column: u64) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

/// Everything wrong with a config, one issue per line. A fault in the operator's file: fixing the
/// file is the only remedy, retrying does not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub issues: Vec<ConfigIssue>,
}

impl ConfigError {
    fn one(issue: ConfigIssue) -> Self {
        ConfigError {
            issues: vec![issue],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads, expands (from the process environment) and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let problem = format!("cannot read the config file: {e}");
            ConfigError::one(ConfigIssue::new(&path.display().to_string(), problem))
        })?;
        Config::parse(&text)
    }

    /// Parses and validates config text (no file I/O), taking `${VAR}`s from the process environment.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates config text, taking `${VAR}`s from `env`.
    ///
    /// Order: YAML syntax (stops here on error), then duplicate keys and `${VAR}`s (all reported),
    /// then types and unknown keys (first error only: serde stops there), then every semantic rule
    /// (all reported).
    pub fn parse_with_env(text: &str, env: Env<'_>) -> Result<Config, ConfigError> {
        let mut root = tree::parse_tree(text).map_err(ConfigError::one)?;
        let mut issues = Vec::new();
        tree::find_duplicate_keys(&root, "", &mut issues);
        env::expand_tree(&mut root, "", env, &mut issues);
        if !issues.is_empty() {
            return Err(ConfigError { issues });
        }
        let node = de::NodeDe {
            node: &root,
            path: String::new(),
        };
        let config = Config::deserialize(node).map_err(|e| ConfigError::one(e.into_issue()))?;
        let mut issues = validate::validate(&config);
        if issues.is_empty() {
            return Ok(config);
        }
        for issue in &mut issues {
            if let Some(node) = tree::locate(&root, &issue.path) {
                issue.line = Some(node.line);
                issue.column = Some(node.column);
            }
        }
        Err(ConfigError { issues })
    }

    /// The validation [`Config::parse`] runs, for a config changed after parsing (a shard map
    /// persisted by resharding): every issue, without line numbers.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        validate::validate(self)
    }

    /// Checks that the files the config names exist and can be read (the TLS certificate and key).
    /// Not part of [`Config::parse`], so a config can be checked on a machine without the files;
    /// `check-config` and startup call it. Relative paths are taken from the working directory.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let Some(tls) = &self.tls else { return Ok(()) };
        let issues: Vec<ConfigIssue> = [("tls.cert", &tls.cert), ("tls.key", &tls.key)]
            .into_iter()
            .filter_map(|(path, file)| match std::fs::File::open(file) {
                Ok(_) => None,
                Err(e) => Some(ConfigIssue::new(
                    path,
                    format!("cannot read `{}`: {e}", file.display()),
                )),
            })
            .collect();
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { issues })
        }
    }

    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }
}
