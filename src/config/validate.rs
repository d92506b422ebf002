//! The rules a typed config must follow beyond its types. Each check pushes every problem it finds,
//! so an operator sees them all at once.

use std::collections::{BTreeMap, BTreeSet};

use super::target::parse_backend_url;
use super::tree::{child_path, index_path};
use super::{
    shardmap, AuthMethod, Config, ConfigIssue, DatabaseConfig, HealthConfig, PoolConfig, UserConfig,
};

/// Problems found, in the order of the file.
pub(crate) struct Issues(pub Vec<ConfigIssue>);

impl Issues {
    pub fn push(&mut self, path: &str, problem: impl Into<String>) {
        self.0.push(ConfigIssue::new(path, problem));
    }
}

pub(crate) fn validate(config: &Config) -> Vec<ConfigIssue> {
    let mut issues = Issues(Vec::new());
    if config.admin.token.as_deref() == Some("") {
        issues.push(
            "admin.token",
            "must not be empty (omit the key to run without a token)",
        );
    }
    users(&config.users, &mut issues);
    pool(&config.pool, &mut issues);
    health(&config.health, &mut issues);
    if let Some(url) = &config.control {
        if let Err(problem) = parse_backend_url(url) {
            issues.push("control", problem);
        }
    }
    if config.databases.is_empty() {
        issues.push("databases", "at least one database is required");
    }
    for (name, db) in &config.databases {
        let path = child_path("databases", name);
        if name.is_empty() {
            issues.push(&path, "a database name must not be empty");
        }
        database(db, &path, &mut issues);
    }
    issues.0
}

/// The start of a SCRAM verifier as stored in `pg_authid.rolpassword`.
const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

fn users(users: &[UserConfig], issues: &mut Issues) {
    if users.is_empty() {
        issues.push("users", "at least one user is required");
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, user) in users.iter().enumerate() {
        let path = index_path("users", i);
        if user.name.is_empty() {
            issues.push(&child_path(&path, "name"), "must not be empty");
        } else if let Some(first) = seen.insert(&user.name, i) {
            seen.insert(&user.name, first);
            let problem = format!("duplicate user `{}` (also users[{first}])", user.name);
            issues.push(&child_path(&path, "name"), problem);
        }
        if user.password.is_empty() {
            issues.push(&child_path(&path, "password"), "must not be empty");
        } else if user.auth == AuthMethod::Md5 && user.password.starts_with(SCRAM_PREFIX) {
            let problem = "a SCRAM-SHA-256 verifier cannot be used with `auth: md5`; \
                           give the plain password or use `auth: scram-sha-256`";
            issues.push(&child_path(&path, "password"), problem);
        }
    }
}

fn pool(pool: &PoolConfig, issues: &mut Issues) {
    let at_least_one = [
        ("pool.size", u64::from(pool.size)),
        ("pool.checkout_timeout_ms", pool.checkout_timeout_ms),
        ("pool.max_clients", pool.max_clients as u64),
        ("pool.connect_timeout_ms", pool.connect_timeout_ms),
        ("pool.max_message_bytes", pool.max_message_bytes as u64),
    ];
    for (path, value) in at_least_one {
        if value < 1 {
            issues.push(path, format!("must be at least 1 (got {value})"));
        }
    }
}

fn health(health: &HealthConfig, issues: &mut Issues) {
    let at_least_one = [
        ("health.interval_ms", health.interval_ms),
        ("health.timeout_ms", health.timeout_ms),
        ("health.failures_to_ban", u64::from(health.failures_to_ban)),
    ];
    for (path, value) in at_least_one {
        if value < 1 {
            issues.push(path, format!("must be at least 1 (got {value})"));
        }
    }
}

/// Shard names become part of metric labels, log lines and SQL comments: keep them plain.
fn valid_shard_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn database(db: &DatabaseConfig, path: &str, issues: &mut Issues) {
    let shards_path = child_path(path, "shards");
    if db.shards.is_empty() {
        issues.push(&shards_path, "at least one shard is required");
    }
    for (name, shard) in &db.shards {
        let shard_path = child_path(&shards_path, name);
        if !valid_shard_name(name) {
            let problem = format!("shard name `{name}` must be lowercase letters, digits and `_`");
            issues.push(&shard_path, problem);
        }
        if let Err(problem) = parse_backend_url(&shard.primary) {
            issues.push(&child_path(&shard_path, "primary"), problem);
        }
        for (i, replica) in shard.replicas.iter().enumerate() {
            if let Err(problem) = parse_backend_url(replica) {
                issues.push(
                    &index_path(&child_path(&shard_path, "replicas"), i),
                    problem,
                );
            }
        }
    }
    if db.shards.len() > 1 {
        let why = "required when a database has more than one shard";
        if db.sharding.is_none() {
            issues.push(&child_path(path, "sharding"), why);
        }
        if db.tables.is_empty() {
            issues.push(
                &child_path(path, "tables"),
                format!("{why} (sharded table → key column)"),
            );
        }
    }
    if let Some(sharding) = &db.sharding {
        shardmap::check(sharding, db, &child_path(path, "sharding"), issues);
    }
    tables(db, path, issues);
    if let Some(shard) = &db.default_shard {
        if !db.shards.contains_key(shard) {
            issues.push(&child_path(path, "default_shard"), unknown_shard(shard, db));
        }
    }
}

fn tables(db: &DatabaseConfig, path: &str, issues: &mut Issues) {
    let tables_path = child_path(path, "tables");
    for (table, key) in &db.tables {
        if table.is_empty() {
            issues.push(&tables_path, "a table name must not be empty");
        } else if key.is_empty() {
            issues.push(
                &child_path(&tables_path, table),
                "the key column must not be empty",
            );
        }
    }
    let refs_path = child_path(path, "reference_tables");
    let mut seen = BTreeSet::new();
    for (i, table) in db.reference_tables.iter().enumerate() {
        let table_path = index_path(&refs_path, i);
        if table.is_empty() {
            issues.push(&table_path, "a table name must not be empty");
        } else if db.tables.contains_key(table) {
            let problem = format!(
                "`{table}` is also a sharded table (in `tables`); it must be one or the other"
            );
            issues.push(&table_path, problem);
        } else if !seen.insert(table.as_str()) {
            issues.push(&table_path, format!("`{table}` is listed twice"));
        }
    }
}

/// "no shard named `s9` (shards: s0, s1)".
pub(crate) fn unknown_shard(name: &str, db: &DatabaseConfig) -> String {
    let known: Vec<&str> = db.shards.keys().map(String::as_str).collect();
    format!("no shard named `{name}` (shards: {})", known.join(", "))
}
