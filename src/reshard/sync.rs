//! The copy of captured changes (DESIGN §3.2): the rows [`super::capture`] marked in
//! `shardgate.reshard_changes` on the authoritative side are read again there — their current
//! row images, under their key locks — and written to the other side, then unmarked, in one
//! pair of transactions. A row deleted since is deleted on the other side.
//!
//! Each batch reads the *current* rows, not the images at the time of each change, and holds the
//! keys' locks from that read until the other side has committed: a later change of the same key
//! waits for the lock, so the last copy of a key always carries its last committed state. Marks
//! are claimed with `FOR UPDATE SKIP LOCKED`, so several copiers never take the same ones; a key
//! a client holds now is skipped and its marks stay for the next batch. A crash between the two
//! commits leaves the marks, and copying them again gives the same result.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Client;

use super::backfill::{literal, try_key_lock_sql, TableCopy};
use super::images::{delete_missing, row_images, syncing, upsert, Images};
use crate::backend::control::describe;

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Marks copied and removed.
    pub copied: usize,
    /// Marks left for later: their key was locked by a writer.
    pub deferred: usize,
}

struct Mark {
    id: i64,
    key: String,
    pk: String,
}

/// Copies up to `limit` marked changes of `job` from `from` to `to`.
pub async fn copy_changes(
    from: &mut Client,
    to: &mut Client,
    job: i64,
    tables: &[TableCopy],
    limit: i64,
) -> Result<Batch, String> {
    let src = from.transaction().await.map_err(|e| describe(&e))?;
    let rows = src
        .query(
            "SELECT id, table_name, sharding_key, pk::text FROM shardgate.reshard_changes \
             WHERE job_id = $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&job, &limit],
        )
        .await
        .map_err(|e| describe(&e))?;
    let mut marks: BTreeMap<String, Vec<Mark>> = BTreeMap::new();
    for r in &rows {
        let mark = Mark {
            id: r.get(0),
            key: r.get(2),
            pk: r.get(3),
        };
        marks.entry(r.get(1)).or_default().push(mark);
    }
    if let Some(name) = marks
        .keys()
        .find(|n| !tables.iter().any(|t| &&t.table == n))
    {
        return Err(format!(
            "a change of table {name}, which the move does not have"
        ));
    }
    let mut batch = Batch::default();
    let mut done: Vec<i64> = Vec::new();
    let mut copies = Vec::new();
    // In the move's table order: a table another one references comes first.
    for t in tables {
        let Some(marks) = marks.get(&t.table) else {
            continue;
        };
        let busy = try_lock(&src, &t.table, marks).await?;
        let (ready, waiting): (Vec<&Mark>, Vec<&Mark>) =
            marks.iter().partition(|m| !busy.contains(&m.key));
        batch.deferred += waiting.len();
        if ready.is_empty() {
            continue;
        }
        let pks: BTreeSet<&str> = ready.iter().map(|m| m.pk.as_str()).collect();
        let list = format!("[{}]", pks.into_iter().collect::<Vec<_>>().join(","));
        let rows = format!(
            "({pk}) IN (SELECT {pk} FROM pg_catalog.json_populate_recordset(NULL::{table}, {list}))",
            pk = t.pk(),
            table = t.table,
            list = literal(&list),
        );
        copies.push((t, rows.clone(), row_images(&src, t, &rows).await?));
        done.extend(ready.iter().map(|m| m.id));
        batch.copied += ready.len();
    }
    // Foreign keys between the tables hold on the target at every statement: old rows come out
    // of referencing tables first, new rows go into referenced ones first (and, per table, the
    // deletes before the upserts, as for one table alone).
    let tgt = syncing(to).await?;
    for (t, rows, json) in copies.iter().rev() {
        delete_missing(&tgt, t, rows, &Images::Json(json)).await?;
    }
    for (t, _, json) in &copies {
        upsert(&tgt, t, &Images::Json(json)).await?;
    }
    tgt.commit().await.map_err(|e| describe(&e))?;
    src.execute(
        "DELETE FROM shardgate.reshard_changes WHERE id = ANY($1)",
        &[&done],
    )
    .await
    .map_err(|e| describe(&e))?;
    src.commit().await.map_err(|e| describe(&e))?;
    Ok(batch)
}

/// Takes the key locks of `marks` that are free now; the keys held by someone else.
async fn try_lock(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    marks: &[Mark],
) -> Result<BTreeSet<String>, String> {
    let keys: BTreeSet<&str> = marks.iter().map(|m| m.key.as_str()).collect();
    let keys: Vec<&str> = keys.into_iter().collect();
    let sql = format!(
        "SELECT k FROM unnest($1::text[]) WITH ORDINALITY u(k, n) WHERE NOT {} ORDER BY n",
        try_key_lock_sql(table, "k")
    );
    let rows = tx.query(&sql, &[&keys]).await.map_err(|e| describe(&e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// How many changes of `job` are marked and not copied yet.
pub async fn pending(from: &Client, job: i64) -> Result<i64, String> {
    let row = from
        .query_one(
            "SELECT count(*) FROM shardgate.reshard_changes WHERE job_id = $1",
            &[&job],
        )
        .await
        .map_err(|e| describe(&e))?;
    Ok(row.get(0))
}
