//! Backfill (DESIGN §3.3): a move's rows copied from the source shard to the target in
//! primary-key order, one batch at a time, each under the per-key advisory locks writers of those
//! keys take too, as upserts, so a batch can be copied again (after a crash before its checkpoint
//! was saved) with the same result.
//!
//! A batch, in one transaction on the source and one on the target:
//! 1. the next `batch` primary keys of the moved keys after the checkpoint, taking
//!    `pg_advisory_xact_lock(table, key)` for each row's sharding key as they are read (one
//!    statement: the locks come in primary-key order, and the copier gives up a batch whose lock
//!    it waits for too long, see [`LOCK_WAIT`]);
//! 2. the row images of that primary-key range, read again under the locks (as JSON: every type
//!    round-trips through its text form);
//! 3. on the target: the range's rows that the source no longer has are deleted, the others are
//!    upserted; the target commits, then the source (releasing the locks).
//!
//! The checkpoint is the last primary key of the batch (each column as text). The copy ends at
//! the last primary key the moved keys had when it started (`end_key`): a row written later
//! was written after the capture trigger was in place (DESIGN §3.2), so the change copier moves
//! it. Without the bound a busy table's copy would chase the rows being inserted behind it.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::images::{copy_rows, stage, syncing, text_settings, write_target, Images};
use crate::backend::control::describe;
use crate::config::serde_yaml_value::Scalar;
use crate::config::{KeyType, Slice};
use crate::router::hash::bucket_range_sql;

/// One table's share of a move.
#[derive(Debug, Clone)]
pub struct TableCopy {
    /// As configured (possibly schema-qualified), used verbatim in SQL.
    pub table: String,
    pub key_column: String,
    pub primary_key: Vec<String>,
    pub key_type: KeyType,
    /// The map's bucket count (hash maps).
    pub buckets: u32,
    /// What moves.
    pub slice: Slice,
}

/// Where a table's copy stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last primary key copied, each column as text; `None` before the first batch.
    pub last_key: Option<Vec<String>>,
    /// The last primary key to copy, fixed when the table's copy starts; `None` copies to the end.
    pub end_key: Option<Vec<String>>,
    pub rows: i64,
    pub done: bool,
}

/// The SQL lock writers and backfill take on one sharding key of a table (a transaction lock:
/// held until that transaction ends).
pub fn key_lock_sql(table: &str, key: &str) -> String {
    key_lock_call("pg_advisory_xact_lock", table, key)
}

/// As [`key_lock_sql`], but without waiting: true if taken.
pub fn try_key_lock_sql(table: &str, key: &str) -> String {
    key_lock_call("pg_try_advisory_xact_lock", table, key)
}

fn key_lock_call(function: &str, table: &str, key: &str) -> String {
    format!(
        "pg_catalog.{function}(pg_catalog.hashtext({}), pg_catalog.hashtext(({key})::text))",
        literal(&format!("shardgate:{table}"))
    )
}

pub(super) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl TableCopy {
    pub(super) fn pk(&self) -> String {
        self.primary_key
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Each primary-key column as text, for `ARRAY[...]`.
    fn pk_text(&self) -> Vec<String> {
        self.primary_key
            .iter()
            .map(|c| format!("{}::text", quote_ident(c)))
            .collect()
    }

    /// Whether the key `column` (SQL) is in the move's slice (NULL, never true, for a NULL
    /// key). Text compares in byte order (`COLLATE "C"`), as the router compares keys with a
    /// range map's bounds.
    pub(super) fn within(&self, column: &str) -> String {
        let literal = |v: &Scalar| key_literal(v, self.key_type);
        let typed = |column: &str| match self.key_type {
            KeyType::Text => format!("({column}) COLLATE \"C\""),
            _ => column.to_string(),
        };
        let sql = match &self.slice {
            Slice::Buckets { first, last } => {
                bucket_range_sql(column, self.key_type, self.buckets, (*first, *last))
            }
            Slice::Range { from, to } => {
                let mut tests = Vec::new();
                if let Some(f) = from {
                    tests.push(format!("{} >= {}", typed(column), literal(f)));
                }
                if let Some(t) = to {
                    tests.push(format!("{} < {}", typed(column), literal(t)));
                }
                if tests.is_empty() {
                    tests.push(format!("{column} IS NOT NULL"));
                }
                tests.join(" AND ")
            }
            Slice::Values(values) => {
                let list: Vec<String> = values.iter().map(literal).collect();
                format!("{column} IN ({})", list.join(", "))
            }
        };
        format!("({sql})")
    }

    /// The moved keys, after the checkpoint (and up to `upto`, when given).
    pub(super) fn range(&self, after: Option<&[String]>, upto: Option<&[String]>) -> String {
        let mut sql = self.within(&quote_ident(&self.key_column));
        let tuple = |values: &[String]| {
            values
                .iter()
                .map(|v| literal(v))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(after) = after {
            sql += &format!(" AND ({}) > ({})", self.pk(), tuple(after));
        }
        if let Some(upto) = upto {
            sql += &format!(" AND ({}) <= ({})", self.pk(), tuple(upto));
        }
        sql
    }
}

/// A range bound or list value as an SQL constant of the key's type.
fn key_literal(v: &Scalar, key_type: KeyType) -> String {
    format!("{}::{}", literal(&v.text()), key_type.sql_name())
}

pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Where a table's copy starts: how many rows the moved keys hold now and the last of their
/// primary keys (the copy's `end_key`; `None` when there are none).
pub async fn start(source: &Client, t: &TableCopy) -> Result<(i64, Checkpoint), String> {
    let last = t
        .primary_key
        .iter()
        .map(|c| format!("{} DESC", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT count(*), (SELECT ARRAY[{pk_text}] AS sg_pk FROM {table} WHERE {range} \
         ORDER BY {last} LIMIT 1) FROM {table} WHERE {range}",
        pk_text = t.pk_text().join(", "),
        table = t.table,
        range = t.range(None, None),
    );
    let row = source
        .query_one(&sql, &[])
        .await
        .map_err(|e| describe(&e))?;
    let end_key: Option<Vec<String>> = row.get(1);
    let at = Checkpoint {
        rows: 0,
        last_key: None,
        done: end_key.is_none(),
        end_key,
    };
    Ok((row.get(0), at))
}

/// Copies the batch after `from`; returns the checkpoint after it (`done` when nothing was left).
pub async fn copy_batch(
    source: &mut Client,
    target: &mut Client,
    t: &TableCopy,
    from: &Checkpoint,
    batch: i64,
) -> Result<Checkpoint, String> {
    let src = source.transaction().await.map_err(|e| describe(&e))?;
    let after = from.last_key.as_deref();
    let pk_text = t.pk_text();
    src.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{LOCK_WAIT}'; {}",
        text_settings(true)
    ))
    .await
    .map_err(|e| describe(&e))?;
    let next = format!(
        // Aliased: ORDER BY would take an output column named like a key column first. The
        // lock, volatile, is evaluated for the rows LIMIT lets through only.
        "SELECT ARRAY[{}] AS sg_pk, {} AS sg_locked FROM {} WHERE {} ORDER BY {} LIMIT {batch}",
        pk_text.join(", "),
        key_lock_sql(&t.table, &quote_ident(&t.key_column)),
        t.table,
        t.range(after, from.end_key.as_deref()),
        t.pk()
    );
    let rows = src.query(&next, &[]).await.map_err(|e| describe(&e))?;
    let Some(last_row) = rows.last() else {
        return Ok(Checkpoint {
            done: true,
            ..from.clone()
        });
    };
    let upto: Vec<String> = last_row.get(0);
    let rows = t.range(after, Some(&upto));
    let (data, copied) = copy_rows(&src, t, &rows).await?;
    let tgt = syncing(target).await?;
    stage(&tgt, t, data).await?;
    write_target(&tgt, t, &rows, &Images::Staged).await?;
    tgt.commit().await.map_err(|e| describe(&e))?;
    src.commit().await.map_err(|e| describe(&e))?;
    Ok(Checkpoint {
        last_key: Some(upto),
        end_key: from.end_key.clone(),
        rows: from.rows + copied,
        done: false,
    })
}

/// Takes the key locks of `keys` of `table` in the source transaction `tx`, sorted. A client
/// transaction takes its keys in any order, so a copier waits for one at most [`LOCK_WAIT`] and
/// then gives up its batch (releasing what it took): a client is never the victim of a deadlock
/// with it.
pub(super) async fn lock_keys(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    mut keys: Vec<String>,
) -> Result<(), String> {
    keys.sort();
    keys.dedup();
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
        .await
        .map_err(|e| describe(&e))?;
    // One statement for the batch (not one per key: a batch has thousands), in array order.
    let sql = format!(
        "SELECT {} FROM unnest($1::text[]) WITH ORDINALITY u(k, n) ORDER BY n",
        key_lock_sql(table, "k")
    );
    tx.query(&sql, &[&keys]).await.map_err(|e| describe(&e))?;
    Ok(())
}

/// How long a copier waits for one key lock before it gives up and retries its batch.
pub const LOCK_WAIT: &str = "100ms";
