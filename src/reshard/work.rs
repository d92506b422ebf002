//! What a job's driver works with: each move's shards, the tables it copies, the sequences it
//! advances; and the epochs it publishes for every shardgate to take.

use std::time::Duration;

use serde_json::Value;
use tokio_postgres::Client;

use super::backfill::TableCopy;
use super::jobs::State;
use super::Move;
use crate::backend::control::{self, ControlConn};
use crate::config::{Config, ShardingConfig, Slice};
use crate::control::{ControlDb, ControlError};

const TIMEOUT: Duration = Duration::from_secs(5);
pub const APPLICATION_NAME: &str = "shardgate-reshard";

/// One move with everything needed to carry it out.
#[derive(Debug, Clone)]
pub struct MoveWork {
    pub mv: Move,
    pub source_url: String,
    pub target_url: String,
    pub tables: Vec<TableCopy>,
    /// The sequences of its tables' columns (as pre-flight found them on the source).
    pub sequences: Vec<String>,
}

/// A job as its driver sees it.
#[derive(Debug, Clone)]
pub struct Work {
    pub id: i64,
    pub database: String,
    pub moves: Vec<MoveWork>,
    /// Backfill's throttle, if the job was started with one.
    pub rows_per_second: Option<u64>,
    /// `routing.max_replica_lag_ms`: backfill waits while a source's replica is further behind.
    pub max_replica_lag_ms: u64,
}

impl Work {
    pub fn new(id: i64, state: &State, config: &Config) -> Result<Work, String> {
        let db = config
            .databases
            .get(&state.database)
            .ok_or_else(|| format!("database \"{}\" is no longer in the config", state.database))?;
        let sharding = db
            .sharding
            .as_ref()
            .ok_or_else(|| format!("database \"{}\" is no longer sharded", state.database))?;
        let url = |shard: &str| {
            db.shards
                .get(shard)
                .map(|s| s.primary.clone())
                .ok_or_else(|| format!("shard \"{shard}\" is no longer in the config; put it back"))
        };
        let reported = state.preflight["tables"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut moves = Vec::new();
        for mv in &state.moves {
            let mut tables = Vec::new();
            let mut references = Vec::new();
            let mut sequences = Vec::new();
            for (table, key_column) in &db.tables {
                let found = reported
                    .iter()
                    .find(|t| t["table"] == table.as_str() && t["shard"] == mv.from.as_str())
                    .ok_or_else(|| {
                        format!(
                            "pre-flight did not see table \"{table}\" on \"{}\"",
                            mv.from
                        )
                    })?;
                let texts = |v: &Value| -> Vec<String> {
                    v.as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                };
                tables.push(TableCopy {
                    table: table.clone(),
                    key_column: key_column.clone(),
                    primary_key: texts(&found["primary_key"]),
                    key_type: sharding.key_type,
                    buckets: sharding.buckets.unwrap_or(0),
                    slice: mv.slice.clone(),
                });
                let named = found["sequences"].as_array().into_iter().flatten();
                sequences.extend(named.filter_map(|s| s[0].as_str().map(str::to_string)));
                references.push(texts(&found["references"]));
            }
            let tables = referenced_first(tables, &references);
            moves.push(MoveWork {
                mv: mv.clone(),
                source_url: url(&mv.from)?,
                target_url: url(&mv.to)?,
                tables,
                sequences,
            });
        }
        Ok(Work {
            id,
            database: state.database.clone(),
            moves,
            rows_per_second: state.options["rows_per_second"].as_u64().filter(|n| *n > 0),
            max_replica_lag_ms: db.routing.max_replica_lag_ms,
        })
    }
}

/// `tables` ordered so that a table comes after the tables its foreign keys reference
/// (`references[i]` are `tables[i]`'s), otherwise in their order; a cycle keeps its order.
fn referenced_first(tables: Vec<TableCopy>, references: &[Vec<String>]) -> Vec<TableCopy> {
    let mut left: Vec<usize> = (0..tables.len()).collect();
    let mut order: Vec<usize> = Vec::new();
    while !left.is_empty() {
        let placed = |i: &usize| order.contains(i);
        let ready = left.iter().position(|&i| {
            references[i].iter().all(|r| {
                let other = tables.iter().position(|t| &t.table == r);
                other.is_none_or(|o| o == i || placed(&o))
            })
        });
        // A cycle: the first one left goes next.
        order.push(left.remove(ready.unwrap_or(0)));
    }
    let mut slots: Vec<Option<TableCopy>> = tables.into_iter().map(Some).collect();
    order.iter().filter_map(|&i| slots[i].take()).collect()
}

/// shardgate's own connection to a shard, for the job.
pub async fn connect(url: &str) -> Result<ControlConn, String> {
    control::connect(url, TIMEOUT, APPLICATION_NAME).await
}

/// The database's map with `slice` owned by `owner`, as the epochs store it.
pub fn map_with(sharding: &ShardingConfig, slice: &Slice, owner: &str) -> Result<Value, String> {
    let entries = slice.map_with(sharding, owner)?;
    serde_json::to_value(entries).map_err(|e| format!("the new map does not serialize: {e}"))
}

/// Publishes `map` and `overlay` for `database` as a new epoch; the epoch.
pub async fn publish(
    db: &ControlDb,
    database: &str,
    map: &Value,
    overlay: &Value,
) -> Result<i64, ControlError> {
    let client = db.client().await?;
    let row = client
        .query_one(
            "INSERT INTO shardgate.epochs (database, epoch, map, overlay) VALUES ($1, 1, $2, $3) \
             ON CONFLICT (database) DO UPDATE SET epoch = epochs.epoch + 1, map = EXCLUDED.map, \
             overlay = EXCLUDED.overlay, updated_at = now() RETURNING epoch",
            &[&database, map, overlay],
        )
        .await
        .map_err(|source| ControlError::Refused {
            what: "the new epoch",
            source,
        })?;
    Ok(row.get(0))
}

/// How many live shardgates have not taken `epoch` of `database` yet.
pub async fn lagging(db: &ControlDb, database: &str, epoch: i64) -> Result<usize, ControlError> {
    let live = super::heartbeat::live(db).await?;
    Ok(live
        .iter()
        .filter(|h| h.epochs[database].as_i64().unwrap_or(0) < epoch)
        .count())
}

/// Waits until every live shardgate has taken `epoch`, for at most `bound`; whether they did.
pub async fn acknowledged(db: &ControlDb, database: &str, epoch: i64, bound: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if matches!(lagging(db, database, epoch).await, Ok(0)) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs DDL that locks a table (a trigger created or dropped) without holding the table's
/// writers for long: it waits for a table lock at most [`DDL_WAIT`] (writers queue behind it
/// meanwhile), then gives up and tries again; one table per transaction, so it never holds one
/// table's lock while waiting for another's (clients take them in any order).
pub async fn run_ddl(c: &Client, sql: &str) -> Result<(), String> {
    let sql = format!("SET lock_timeout = '{}ms'; {sql}", DDL_WAIT.as_millis());
    for _ in 0..50 {
        match c.batch_execute(&sql).await {
            Err(e) if e.code().is_some_and(|c| c.code() == "55P03") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => {
                let _ = c.batch_execute("RESET lock_timeout").await;
                return other.map_err(|e| control::describe(&e));
            }
        }
    }
    Err("the table stayed locked by its writers: could not change its trigger".into())
}

/// How long a trigger's DDL waits for its table's lock per attempt.
const DDL_WAIT: Duration = Duration::from_millis(200);

/// Runs `sql` and maps the error to its description.
pub async fn run(c: &Client, sql: &str) -> Result<(), String> {
    c.batch_execute(sql)
        .await
        .map_err(|e| control::describe(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> TableCopy {
        TableCopy {
            table: name.into(),
            key_column: "id".into(),
            primary_key: vec!["id".into()],
            key_type: crate::config::KeyType::Bigint,
            buckets: 8,
            slice: Slice::Buckets { first: 0, last: 1 },
        }
    }

    fn order(names: &[&str], references: &[&[&str]]) -> Vec<String> {
        let tables = names.iter().map(|n| table(n)).collect();
        let refs: Vec<Vec<String>> = references
            .iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect();
        referenced_first(tables, &refs)
            .into_iter()
            .map(|t| t.table)
            .collect()
    }

    #[test]
    fn referenced_tables_come_first_and_the_rest_keep_their_order() {
        // orders → users, items → orders; payments references a table outside the move.
        assert_eq!(
            order(
                &["items", "orders", "payments", "users"],
                &[&["orders"], &["users"], &["accounts"], &[]]
            ),
            ["payments", "users", "orders", "items"]
        );
        // A table referencing itself is ready; a cycle comes after, in its order.
        assert_eq!(
            order(&["a", "b", "c"], &[&["b"], &["a"], &["c"]]),
            ["c", "a", "b"]
        );
    }
}
