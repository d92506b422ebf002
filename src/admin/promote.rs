//! `POST /v1/databases/{db}/shards/{shard}/promote` `{replica?, timeout_ms?}`: promotes a
//! replica of the shard to be its primary, losing no acknowledged write (issue 5).
//!
//! 1. New write transactions on the shard are held back (a fence: they wait up to
//!    `pool.checkout_timeout_ms`, then fail with 08006, retryable).
//! 2. Transactions already on the old primary finish (up to the timeout; else nothing changes).
//! 3. If the old primary answers, its WAL insert position is read, and the replica must replay up
//!    to it: everything the old primary acknowledged is then on the replica.
//! 4. `pg_promote()` on the replica; the health checks take it as the primary from now on and
//!    never take the old one again (it still accepts writes: fence or re-attach it yourself).
//! 5. Once the checks report the new primary, writes flow again, to it.
//!
//! A shardgate restarted with the same config would take the configured primary again: name the
//! promoted server as the primary in the config (and reload) before that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::json::{ok, parse, ApiError, Reply};
use super::Admin;
use crate::backend::control::{self, describe, ControlConn};
use crate::health::{Lsn, Monitor, Role, ServerKey};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const APPLICATION_NAME: &str = "shardgate-promote";
const POLL: Duration = Duration::from_millis(20);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteRequest {
    /// `host:port` of the replica, as in the config; may be left out when the shard has one.
    #[serde(default)]
    replica: Option<String>,
    /// How long each wait (transactions to finish, replay to catch up, the checks to see the
    /// new primary) may take.
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// The shard's servers as the config names them.
struct Servers {
    old: (ServerKey, String),
    new: (ServerKey, String),
}

pub async fn promote(admin: &Admin, db: &str, shard: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let req: PromoteRequest = parse(if body.is_empty() { b"{}" } else { body })?;
    let timeout = req
        .timeout_ms
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    let servers = servers(admin, db, shard, req.replica.as_deref())?;
    check_replica(&admin.health, db, shard, &servers.new.0)?;
    let started = Instant::now();
    let fence = admin.health.fence(db, shard).ok_or_else(|| {
        conflict(
            "promotion_running",
            format!("a promotion of {db}/{shard} is already running"),
        )
    })?;
    // Pairs with the sessions' fence after checkout: either they see the fence, or the drain
    // sees their connection.
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    drain(admin, db, shard, timeout).await?;
    let waited_for = catch_up(&servers, timeout).await?;
    run_promote(&servers.new.1, timeout).await?;
    admin
        .health
        .promoted(db, shard, servers.new.0.clone(), servers.old.0.clone());
    wait_for_checks(&admin.health, db, shard, &servers.new.0, timeout).await?;
    drop(fence);
    let address = |k: &ServerKey| format!("{}:{}", k.host, k.port);
    tracing::warn!(database = db, shard, primary = %address(&servers.new.0), old = %address(&servers.old.0), "replica promoted; name it as the shard's primary in the config");
    Ok(ok(json!({
        "database": db,
        "shard": shard,
        "primary": address(&servers.new.0),
        "old_primary": address(&servers.old.0),
        "replayed_up_to": waited_for.map(|l| l.to_string()),
        "took_ms": started.elapsed().as_millis() as u64,
    })))
}

fn conflict(error: &'static str, detail: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, error, detail)
}

/// The shard's current primary (as the checks see it, else the configured one) and the replica.
fn servers(
    admin: &Admin,
    db: &str,
    shard: &str,
    replica: Option<&str>,
) -> Result<Servers, ApiError> {
    let snapshot = admin.store.load();
    let cfg = snapshot
        .config
        .databases
        .get(db)
        .and_then(|d| d.shards.get(shard))
        .ok_or_else(|| {
            ApiError::not_found(
                "unknown_shard",
                format!("no shard \"{shard}\" of database \"{db}\" in the config"),
            )
        })?;
    let all: Vec<(ServerKey, String)> = std::iter::once(&cfg.primary)
        .chain(&cfg.replicas)
        .filter_map(|url| Some((ServerKey::of_url(url)?, url.clone())))
        .collect();
    let report = admin.health.report();
    let current = report
        .shard(db, shard)
        .and_then(|h| h.servers.get(h.current_primary()?))
        .and_then(|s| all.iter().find(|(k, _)| *k == s.key))
        .unwrap_or(&all[0])
        .clone();
    let address = |k: &ServerKey| format!("{}:{}", k.host, k.port);
    let candidates: Vec<&(ServerKey, String)> =
        all.iter().filter(|(k, _)| *k != current.0).collect();
    let new = match replica {
        Some(want) => candidates.iter().find(|(k, _)| address(k) == want),
        None if candidates.len() == 1 => candidates.first(),
        None => {
            let names: Vec<String> = candidates.iter().map(|(k, _)| address(k)).collect();
            return Err(ApiError::bad_request(format!(
                "say which server to promote: {{\"replica\": \"host:port\"}}, one of {names:?}"
            )));
        }
    };
    let new = new.ok_or_else(|| {
        let names: Vec<String> = candidates.iter().map(|(k, _)| address(k)).collect();
        ApiError::not_found(
            "unknown_replica",
            format!("{db}/{shard} has no replica {replica:?}; its replicas: {names:?}"),
        )
    })?;
    Ok(Servers {
        old: current,
        new: (*new).clone(),
    })
}

/// The replica must be up and in recovery at its last check.
fn check_replica(health: &Monitor, db: &str, shard: &str, key: &ServerKey) -> Result<(), ApiError> {
    let report = health.report();
    let role = report
        .shard(db, shard)
        .and_then(|h| h.server(key))
        .and_then(|s| s.observed_role());
    match role {
        Some(Role::Replica) => Ok(()),
        other => Err(conflict(
            "replica_not_ready",
            format!("{}:{} is not an up replica at its last health check (it is {other:?}); nothing was changed", key.host, key.port),
        )),
    }
}

/// Waits until no transaction is on the old primary's pool (new ones are fenced).
async fn drain(admin: &Admin, db: &str, shard: &str, timeout: Duration) -> Result<(), ApiError> {
    let deadline = Instant::now() + timeout;
    loop {
        let snapshot = admin.store.load();
        let busy: u32 = snapshot
            .databases
            .get(db)
            .and_then(|d| d.shards.iter().find(|s| &*s.name == shard))
            .map_or(0, |s| {
                std::iter::once(&s.primary)
                    .chain(&s.replicas)
                    .map(|p| p.gauges().1)
                    .sum()
            });
        if busy == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(conflict(
                "transactions_open",
                format!("{busy} transaction(s) still open on {db}/{shard} after {timeout:?}; nothing was changed"),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The old primary's WAL position, replayed by the replica; `None` when the old primary does
/// not answer (then there is nothing more to wait for).
async fn catch_up(servers: &Servers, timeout: Duration) -> Result<Option<Lsn>, ApiError> {
    let Some(target) = old_position(&servers.old.1, timeout).await else {
        tracing::warn!(
            "promote: the old primary does not answer; promoting without waiting for replay"
        );
        return Ok(None);
    };
    let replica = connect(&servers.new.1, timeout).await?;
    let deadline = Instant::now() + timeout;
    loop {
        let row = replica
            .client
            .query_one("SELECT pg_catalog.pg_last_wal_replay_lsn()::text", &[])
            .await
            .map_err(|e| {
                unavailable(format!(
                    "reading the replica's replay position: {}",
                    describe(&e)
                ))
            })?;
        let replayed = row
            .get::<_, Option<String>>(0)
            .and_then(|t| Lsn::parse(&t).ok());
        if replayed.is_some_and(|r| r >= target) {
            replica.close().await;
            return Ok(Some(target));
        }
        if Instant::now() >= deadline {
            return Err(conflict("replica_behind", format!("the replica replayed only up to {replayed:?} of {target} within {timeout:?}; nothing was promoted (is its replay paused?)")));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn old_position(url: &str, timeout: Duration) -> Option<Lsn> {
    let conn = control::connect(url, timeout, APPLICATION_NAME)
        .await
        .ok()?;
    let sql = "SELECT pg_catalog.pg_current_wal_insert_lsn()::text";
    let text: String = conn.client.query_one(sql, &[]).await.ok()?.get(0);
    conn.close().await;
    Lsn::parse(&text).ok().map(Lsn::as_record_end)
}

async fn run_promote(url: &str, timeout: Duration) -> Result<(), ApiError> {
    let conn = connect(url, timeout).await?;
    let secs = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
    let done: bool = conn
        .client
        .query_one("SELECT pg_catalog.pg_promote(true, $1)", &[&secs])
        .await
        .map_err(|e| {
            unavailable(format!(
                "pg_promote() failed: {} (the shard's user needs GRANT EXECUTE ON FUNCTION \
                 pg_catalog.pg_promote TO it, or superuser)",
                describe(&e)
            ))
        })?
        .get(0);
    conn.close().await;
    if !done {
        return Err(unavailable(format!(
            "pg_promote() did not finish within {secs} s"
        )));
    }
    Ok(())
}

/// Waits for a round of checks that has the promoted server as the shard's primary.
async fn wait_for_checks(
    health: &Arc<Monitor>,
    db: &str,
    shard: &str,
    key: &ServerKey,
    timeout: Duration,
) -> Result<(), ApiError> {
    let deadline = Instant::now() + timeout;
    loop {
        let report = health.report();
        let now = report
            .shard(db, shard)
            .and_then(|h| h.servers.get(h.current_primary()?))
            .map(|s| &s.key);
        if now == Some(key) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(unavailable(format!("the replica was promoted, but the health checks did not see it as the primary within {timeout:?}; writes stay held until they do")));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn connect(url: &str, timeout: Duration) -> Result<ControlConn, ApiError> {
    control::connect(url, timeout, APPLICATION_NAME)
        .await
        .map_err(|e| unavailable(format!("connecting to the replica: {e}")))
}

fn unavailable(detail: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "promote_failed", detail)
}
