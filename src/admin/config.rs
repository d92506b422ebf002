//! `GET /v1/config` (the running config, secrets redacted) and `POST /v1/config/reload`.
//!
//! The JSON is built field by field from [`crate::config::Config::redacted`] rather than derived: a secret added
//! to the config later is then missing from this view until someone decides how to show it,
//! instead of appearing in it by default.

use std::path::Path;
use std::sync::Arc;

use hyper::StatusCode;
use serde_json::{json, Value};

use super::databases::{function_name, scalar};
use super::json::{ok, ApiError, Reply};
use crate::config::{AuthMethod, Config, CrossShard, DatabaseConfig, PoolMode, RoutingMode};
use crate::topology::{ReloadError, Snapshot, Store, TopologyError};

pub fn show(snapshot: &Snapshot) -> Reply {
    let c = snapshot.config.redacted();
    let users: Vec<Value> = c
        .users
        .iter()
        .map(|u| json!({ "name": u.name, "password": u.password, "auth": auth_name(u.auth) }))
        .collect();
    let databases: serde_json::Map<String, Value> = c
        .databases
        .iter()
        .map(|(name, db)| (name.clone(), database(db)))
        .collect();
    let p = &c.pool;
    ok(json!({
        "epoch": snapshot.epoch,
        "listen": c.listen.to_string(),
        "admin": { "listen": c.admin.listen.to_string(), "token": c.admin.token },
        // Paths only: the key file's contents are never read here.
        "tls": c.tls.as_ref().map(|t| json!({ "cert": t.cert.display().to_string(), "key": t.key.display().to_string() })),
        "users": users,
        "pool": {
            "mode": match p.mode { PoolMode::Transaction => "transaction", PoolMode::Session => "session" },
            "size": p.size,
            "checkout_timeout_ms": p.checkout_timeout_ms,
            "max_clients": p.max_clients,
            "connect_timeout_ms": p.connect_timeout_ms,
            "shutdown_timeout_ms": p.shutdown_timeout_ms,
            "max_message_bytes": p.max_message_bytes,
        },
        "health": {
            "interval_ms": c.health.interval_ms,
            "timeout_ms": c.health.timeout_ms,
            "failures_to_ban": c.health.failures_to_ban,
        },
        "log": { "slow_query_ms": c.log.slow_query_ms },
        "metrics": { "statements": c.metrics.statements, "hotspots": c.metrics.hotspots },
        "control": c.control,
        "databases": databases,
    }))
}

fn auth_name(auth: AuthMethod) -> &'static str {
    match auth {
        AuthMethod::ScramSha256 => "scram-sha-256",
        AuthMethod::Md5 => "md5",
    }
}

fn cross(c: CrossShard) -> &'static str {
    match c {
        CrossShard::Allow => "allow",
        CrossShard::Reject => "reject",
    }
}

/// One database of an already redacted config.
fn database(db: &DatabaseConfig) -> Value {
    let shards: serde_json::Map<String, Value> = db
        .shards
        .iter()
        .map(|(name, s)| {
            let shard = json!({ "primary": s.primary, "replicas": s.replicas });
            (name.clone(), shard)
        })
        .collect();
    let sharding = db.sharding.as_ref().map(|s| {
        let map: Vec<Value> = s
            .map
            .iter()
            .map(|e| {
                let mut entry = serde_json::Map::new();
                entry.insert("shard".into(), json!(e.shard));
                if let Some(b) = &e.buckets {
                    entry.insert("buckets".into(), json!(b));
                }
                if e.from.is_some() || e.to.is_some() {
                    entry.insert("from".into(), e.from.as_ref().map_or(Value::Null, scalar));
                    entry.insert("to".into(), e.to.as_ref().map_or(Value::Null, scalar));
                }
                if let Some(values) = &e.values {
                    entry.insert("values".into(), values.iter().map(scalar).collect());
                }
                Value::Object(entry)
            })
            .collect();
        json!({
            "key_type": format!("{:?}", s.key_type).to_lowercase(),
            "function": function_name(s.function),
            "buckets": s.buckets,
            "map": map,
        })
    });
    let r = &db.routing;
    json!({
        "shards": shards,
        "sharding": sharding,
        "tables": db.tables,
        "reference_tables": db.reference_tables,
        "default_shard": db.default_shard,
        "routing": {
            "mode": match r.mode { RoutingMode::Enforce => "enforce", RoutingMode::Shadow => "shadow" },
            "cross_shard_reads": cross(r.cross_shard_reads),
            "cross_shard_writes": cross(r.cross_shard_writes),
            "read_replicas": r.read_replicas,
            "max_replica_lag_ms": r.max_replica_lag_ms,
            "read_your_writes": r.read_your_writes,
        },
    })
}

/// Re-reads the file the proxy was started with, by the same code path as SIGHUP.
///
/// 200 `{epoch}` when applied. 422 when the file is invalid (with each issue's YAML path), 409
/// when it would move keys between shards; either way the running config stays in force.
/// `listen` and `admin.listen` are bound at start: a new value takes effect on restart only.
pub fn reload(store: &Arc<Store>, path: Option<&Path>) -> Result<Reply, ApiError> {
    let Some(path) = path else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_config_file",
            "this proxy was started from a config in memory, not a file, so there is nothing to re-read; start it with --config FILE to reload through the API",
        ));
    };
    let running = store.load();
    let before = running.epoch;
    match store.reload_file(path) {
        Ok(epoch) => {
            tracing::info!(epoch, "config reloaded through the admin API");
            Ok(ok(json!({ "epoch": epoch, "previous_epoch": before })))
        }
        Err(e) => {
            tracing::error!(error = %e, "config reload through the admin API refused; the previous config stays in force");
            Err(scrub(refusal(e, path, before), &secrets(&running.config)))
        }
    }
}

/// The running config's secrets: a refused file most likely holds the same ones (the same
/// `${VAR}`s), and a type error quotes the value it could not read (`invalid type: string
/// "…"`), so a secret put under the wrong key would otherwise be echoed back.
fn secrets(c: &Config) -> Vec<String> {
    let urls = c
        .databases
        .values()
        .flat_map(|db| db.shards.values())
        .flat_map(|s| std::iter::once(&s.primary).chain(&s.replicas))
        .chain(&c.control);
    let url_passwords = urls.filter_map(|u| crate::config::parse_backend_url(u).ok()?.password);
    let mut all: Vec<String> = c
        .users
        .iter()
        .map(|u| u.password.clone())
        .chain(c.admin.token.clone())
        .chain(url_passwords)
        .filter(|s| !s.is_empty())
        .collect();
    // Longest first, so a secret that contains another is replaced whole.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    all.dedup();
    all
}

fn scrub(mut e: ApiError, secrets: &[String]) -> ApiError {
    fn text(s: &mut String, secrets: &[String]) {
        for secret in secrets {
            if s.contains(secret.as_str()) {
                *s = s.replace(secret.as_str(), "***");
            }
        }
    }
    fn value(v: &mut Value, secrets: &[String]) {
        match v {
            Value::String(s) => text(s, secrets),
            Value::Array(items) => items.iter_mut().for_each(|i| value(i, secrets)),
            Value::Object(map) => map.values_mut().for_each(|i| value(i, secrets)),
            _ => {}
        }
    }
    text(&mut e.detail, secrets);
    if let Some(extra) = &mut e.extra {
        extra.values_mut().for_each(|v| value(v, secrets));
    }
    e
}

fn refusal(e: ReloadError, path: &Path, epoch: u64) -> ApiError {
    let kept = format!("; epoch {epoch} stays in force");
    match e {
        ReloadError::Config(e) => {
            let issues: Vec<Value> = e
                .issues
                .iter()
                .map(|i| json!({ "path": i.path, "problem": i.problem, "line": i.line, "column": i.column }))
                .collect();
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_config",
                format!("{} is invalid: {}{kept}", path.display(), e.issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")),
            )
            .with_extra("issues", issues.into())
        }
        ReloadError::Topology(TopologyError::MovesKeys { moves }) => ApiError::new(
            StatusCode::CONFLICT,
            "moves_keys",
            format!(
                "{} would move keys between shards, which only resharding may do: {}. Keep the existing map entries and give new shards only buckets, ranges or values no shard owns yet{kept}",
                path.display(),
                moves.join("; ")
            ),
        )
        .with_extra("moves", moves.into()),
        ReloadError::Topology(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            format!("{} cannot be served: {e}{kept}", path.display()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn the_config_view_shows_no_secret() {
        let yaml = "listen: 127.0.0.1:0\nadmin: { token: tok-SECRET-1 }\ntls: { cert: c.pem, key: k.pem }\n\
                    users: [{ name: app, password: pw-SECRET-2 }]\ncontrol: \"postgres://sg:pw-SECRET-3@h/c\"\n\
                    databases:\n  app:\n    shards:\n      s0: { primary: \"postgres://u:pw-SECRET-4@h/a?password=pw-SECRET-5\", replicas: [\"postgres://u:pw-SECRET-6@r/a\"] }\n";
        let config = Config::parse_with_env(yaml, &|_| None).unwrap();
        let snapshot = Snapshot::build(std::sync::Arc::new(config), None, 3).unwrap();
        let body = show(&snapshot)
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("SECRET"), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["epoch"], 3);
        assert_eq!(v["admin"]["token"], "***");
        assert_eq!(
            v["users"][0],
            json!({ "name": "app", "password": "***", "auth": "scram-sha-256" })
        );
        assert_eq!(v["tls"], json!({ "cert": "c.pem", "key": "k.pem" }));
        assert_eq!(
            v["databases"]["app"]["shards"]["s0"]["primary"],
            "postgres://u:***@h/a?password=***"
        );
    }

    #[test]
    fn a_refused_reload_does_not_echo_the_running_configs_secrets() {
        let running = "listen: 127.0.0.1:0\nadmin: { token: tok-SECRET-1 }\nusers: [{ name: app, password: pw-SECRET-2 }]\n\
                       databases:\n  app:\n    shards:\n      s0: { primary: \"postgres://u:pw-SECRET-4@h/a\" }\n";
        let running = Config::parse_with_env(running, &|_| None).unwrap();
        // The password put where a number belongs: the parser quotes it.
        let broken = "listen: 127.0.0.1:0\npool: { size: pw-SECRET-2 }\nusers: [{ name: app, password: x }]\n\
                      databases:\n  app:\n    shards:\n      s0: { primary: \"postgres://u@h/a\" }\n";
        let e = Config::parse_with_env(broken, &|_| None).unwrap_err();
        assert!(e.to_string().contains("pw-SECRET-2"), "the premise: {e}");
        let refused = scrub(
            refusal(ReloadError::Config(e), Path::new("f.yaml"), 1),
            &secrets(&running),
        );
        assert!(!refused.detail.contains("SECRET"), "{}", refused.detail);
        assert!(
            refused.detail.contains("invalid type: string \"***\""),
            "{}",
            refused.detail
        );
        let issues = serde_json::to_string(&refused.extra).unwrap();
        assert!(!issues.contains("SECRET"), "{issues}");
    }
}
