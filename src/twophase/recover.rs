//! Finishing two-phase commits a crash left in doubt: at start, and then periodically.

use std::time::Duration;

use super::{Coordinator, GID_PREFIX};
use crate::backend::control;
use crate::config::Config;

/// What one recovery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub committed: usize,
    pub rolled_back: usize,
    /// Shards that could not be checked (unreachable, or an error), with the reason.
    pub unchecked: Vec<String>,
}

/// Resolves every prepared `sg:` transaction on every shard primary of a sharded database.
pub async fn recover(config: &Config, coordinator: &Coordinator) -> Recovered {
    let mut done = Recovered::default();
    for (database, db) in &config.databases {
        if db.shards.len() < 2 {
            continue;
        }
        for (shard, cfg) in &db.shards {
            if let Err(e) = recover_shard(&cfg.primary, coordinator, &mut done).await {
                let what = format!("database \"{database}\" shard \"{shard}\": {e}");
                tracing::warn!(%database, %shard, error = %e, "could not check for in-doubt two-phase commits");
                done.unchecked.push(what);
            }
        }
    }
    done
}

async fn recover_shard(
    url: &str,
    coordinator: &Coordinator,
    done: &mut Recovered,
) -> Result<(), String> {
    let conn = control::connect(url, Duration::from_secs(5), "shardgate-recovery").await?;
    let result = resolve_all(&conn.client, coordinator, done).await;
    conn.close().await;
    result
}

async fn resolve_all(
    client: &tokio_postgres::Client,
    coordinator: &Coordinator,
    done: &mut Recovered,
) -> Result<(), String> {
    let rows = client
        .query(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND starts_with(gid, $1) ORDER BY prepared",
            &[&GID_PREFIX],
        )
        .await
        .map_err(|e| e.to_string())?;
    for row in rows {
        let gid: String = row.get(0);
        let Some(txid) = txid_of(&gid) else {
            continue;
        };
        let commit = coordinator.decided(txid).await.map_err(|e| e.to_string())?;
        let verb = if commit { "COMMIT" } else { "ROLLBACK" };
        // The name came from our own prefix and hex txid; it is quoted all the same.
        let sql = format!("{verb} PREPARED '{}'", gid.replace('\'', "''"));
        match client.batch_execute(&sql).await {
            Ok(()) => {
                tracing::warn!(%gid, outcome = verb, "resolved an in-doubt two-phase commit");
                if commit {
                    done.committed += 1;
                } else {
                    done.rolled_back += 1;
                }
            }
            // Its coordinator finished it meanwhile.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) => {}
            Err(e) => return Err(format!("{sql}: {e}")),
        }
    }
    Ok(())
}

/// `sg:<txid>:<shard>` → `txid`; `None` for names shardgate did not give.
fn txid_of(gid: &str) -> Option<&str> {
    let rest = gid.strip_prefix(GID_PREFIX)?;
    let (txid, _shard) = rest.split_once(':')?;
    (txid.len() == 32 && txid.bytes().all(|b| b.is_ascii_hexdigit())).then_some(txid)
}

/// One recovery pass, logged when it resolved anything.
pub async fn recover_logged(config: &Config, coordinator: &Coordinator) {
    let done = recover(config, coordinator).await;
    if done.committed + done.rolled_back > 0 {
        tracing::info!(
            committed = done.committed,
            rolled_back = done.rolled_back,
            "in-doubt two-phase commits resolved"
        );
    }
}

/// Runs a recovery pass every `every` (the first after one interval), until `stop`.
pub async fn run_periodically(
    config: impl Fn() -> std::sync::Arc<Config>,
    coordinator: std::sync::Arc<Coordinator>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        recover_logged(&config(), &coordinator).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_shardgate_gave_are_recognised() {
        let txid = "0123456789abcdef0123456789abcdef";
        assert_eq!(txid_of(&super::super::gid(txid, "s1")), Some(txid));
        assert_eq!(txid_of("sg:abc:s1"), None);
        assert_eq!(txid_of("other:0123456789abcdef0123456789abcdef:s1"), None);
        assert_eq!(txid_of("sg:0123456789abcdef0123456789abcdef"), None);
    }
}
