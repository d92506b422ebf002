//! `GET /v1/databases` (servers, roles, health, replica lag, pool use) and
//! `GET /v1/databases/{db}/shard-map`.
//!
//! Both read one snapshot, so what they show belongs to one epoch; health comes from the latest
//! round of background checks, matched to the snapshot's servers by address, user and database.
//! Servers are shown as host:port, user and database: never a password.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::json::{ok, ApiError, Reply};
use crate::config::serde_yaml_value::Scalar;
use crate::config::{DatabaseConfig, MapEntry, ShardingFunction};
use crate::health::{Report, ServerHealth, ServerKey, ServerState, ShardHealth};
use crate::pool::Pool;
use crate::topology::Snapshot;

/// Every database with its shards, their servers, health and pools.
///
/// A server the checks have not reached yet (just started, or just added by a reload) shows
/// `"health": "unknown"`. The last connect error a pool saw is shown when there was one.
pub fn list(snapshot: &Snapshot, report: &Report) -> Reply {
    let mut names: Vec<&String> = snapshot.databases.keys().collect();
    names.sort();
    let databases: Vec<Value> = names
        .into_iter()
        .map(|name| {
            let db = &snapshot.databases[name];
            let shards: Vec<Value> = db
                .shards
                .iter()
                .map(|shard| {
                    let health = report.shard(name, &shard.name);
                    let servers: Vec<Value> = std::iter::once((&shard.primary, "primary"))
                        .chain(shard.replicas.iter().map(|r| (r, "replica")))
                        .map(|(pool, role)| server(pool, role, health))
                        .collect();
                    json!({
                        "name": &*shard.name,
                        "current_primary": current_primary(health),
                        "servers": servers,
                    })
                })
                .collect();
            let default_shard = db.default_shard.map(|i| &*db.shards[i].name);
            json!({
                "name": name,
                "sharded": db.shards.len() > 1,
                "default_shard": default_shard,
                "shards": shards,
            })
        })
        .collect();
    ok(json!({
        "epoch": snapshot.epoch,
        "health_round": report.round,
        "databases": databases,
    }))
}

/// The address of the server that takes writes now, as the checks found it.
fn current_primary(health: Option<&ShardHealth>) -> Value {
    let Some(health) = health else {
        return Value::Null;
    };
    match health.current_primary() {
        Some(i) => {
            let key = &health.servers[i].key;
            json!(format!("{}:{}", key.host, key.port))
        }
        None => Value::Null,
    }
}

fn server(pool: &Pool, role: &str, shard: Option<&ShardHealth>) -> Value {
    let t = pool.target();
    let health = shard.and_then(|s| s.server(&ServerKey::of(t)));
    let usage = pool.usage();
    let last_error = usage
        .last_connect_error
        .map(|(ago, message)| json!({ "seconds_ago": ago.as_secs(), "message": message }));
    json!({
        "role": role,
        "address": format!("{}:{}", t.host, t.port),
        "user": t.user,
        "database": t.database,
        "health": health.map_or("unknown", |h| h.state.name()),
        "observed_role": health.and_then(|h| h.observed_role()).map(|r| r.name()),
        "role_mismatch": health.is_some_and(|h| h.role_mismatch()),
        "lsn": health.and_then(|h| h.lsn()).map(|l| l.to_string()),
        "ban": health.and_then(ban),
        "lag": health.and_then(|h| h.lag).map(|l| json!({ "bytes": l.bytes, "ms": l.ms })),
        "pool": {
            "size": usage.size,
            "open": usage.open,
            "idle": usage.idle,
            "in_use": usage.in_use,
        },
        "last_connect_error": last_error,
    })
}

/// Why and since when a banned server is out of rotation.
fn ban(health: &ServerHealth) -> Option<Value> {
    let ServerState::Banned {
        reason,
        since,
        failures,
    } = &health.state
    else {
        return None;
    };
    let unix_ms = since
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let for_ms = SystemTime::now()
        .duration_since(*since)
        .map_or(0, |d| d.as_millis() as u64);
    Some(json!({
        "reason": &**reason,
        "since_unix_ms": unix_ms,
        "for_ms": for_ms,
        "failures": failures,
    }))
}

/// The shard map of one database as the running snapshot has it, with the epoch.
/// `map_epochs`: per database, the epoch of the map resharding persisted, if one is in force.
pub fn shard_map(
    snapshot: &Snapshot,
    map_epochs: &Value,
    database: &str,
) -> Result<Reply, ApiError> {
    let Some(db) = snapshot.config.databases.get(database) else {
        let known: Vec<&String> = snapshot.config.databases.keys().collect();
        return Err(ApiError::not_found(
            "unknown_database",
            format!("no database \"{database}\" in the config; configured: {known:?}"),
        ));
    };
    let sharding = db.sharding.as_ref();
    let shards: Vec<Value> = db.shards.keys().map(|name| owned_by(db, name)).collect();
    Ok(ok(json!({
        "database": database,
        "epoch": snapshot.epoch,
        "map_epoch": map_epochs.get(database),
        "function": sharding.map(|s| function_name(s.function)),
        "key_type": sharding.map(|s| format!("{:?}", s.key_type).to_lowercase()),
        "buckets": sharding.and_then(|s| s.buckets),
        "shards": shards,
        "default_shard": db.default_shard,
        "tables": db.tables.iter().map(|(t, k)| json!({ "table": t, "key_column": k })).collect::<Vec<_>>(),
        "reference_tables": db.reference_tables,
    })))
}

pub fn function_name(f: ShardingFunction) -> &'static str {
    match f {
        ShardingFunction::Hash => "hash",
        ShardingFunction::Range => "range",
        ShardingFunction::List => "list",
    }
}

/// What one shard owns, in the form of the map's function; an unsharded database's only shard
/// owns everything.
fn owned_by(db: &DatabaseConfig, shard: &str) -> Value {
    let Some(s) = &db.sharding else {
        return json!({ "name": shard, "owns": "all keys (unsharded)" });
    };
    let entries = s.map.iter().filter(|e| e.shard == shard);
    match s.function {
        ShardingFunction::Hash => {
            let mut ranges: Vec<(u32, u32)> = entries
                .filter_map(|e| {
                    let b = e.buckets.as_deref()?;
                    crate::config::parse_bucket_range(b, s.buckets.unwrap_or(1)).ok()
                })
                .collect();
            ranges.sort_unstable();
            let ranges: Vec<String> = ranges
                .into_iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            json!({ "name": shard, "buckets": ranges })
        }
        ShardingFunction::Range => {
            let ranges: Vec<Value> = entries.map(range).collect();
            json!({ "name": shard, "ranges": ranges })
        }
        ShardingFunction::List => {
            let values: Vec<Value> = entries
                .flat_map(|e| e.values.iter().flatten().map(scalar))
                .collect();
            json!({ "name": shard, "values": values })
        }
    }
}

/// `{from, to}`: from inclusive, to exclusive, `null` unbounded (as in the config).
fn range(e: &MapEntry) -> Value {
    json!({ "from": e.from.as_ref().map(scalar), "to": e.to.as_ref().map(scalar) })
}

pub fn scalar(v: &Scalar) -> Value {
    match v {
        Scalar::Int(i) => json!(i),
        Scalar::Text(t) => json!(t),
    }
}
