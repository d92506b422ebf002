//! Row images: the source's rows as they are, read in one transaction and made exactly so on the
//! receiving side in another (deleted there when the source no longer has them, upserted
//! otherwise). The change copier and repair move a few rows at a time as a JSON array
//! (`json_agg`); backfill moves thousands per batch through `COPY` in text form into a staging
//! table, which spares both servers building and parsing the JSON (about half a batch's cost).
//!
//! Either way a value travels as its type's text form, so both sides read and write with the
//! same output settings ([`text_settings`]): equal data prints equal and reads back exactly.

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};

use super::backfill::{quote_ident, TableCopy};
use crate::backend::control::describe;

/// The output settings row images are read and written with, as `SET` statements (`local`: for
/// the transaction only): ISO dates (which every `DateStyle` reads back), exact floats, hex
/// bytea.
pub fn text_settings(local: bool) -> String {
    let set = if local { "SET LOCAL" } else { "SET" };
    [
        "DateStyle = 'ISO, YMD'",
        "IntervalStyle = 'postgres'",
        "extra_float_digits = 3",
        "bytea_output = 'hex'",
    ]
    .map(|setting| format!("{set} {setting}"))
    .join("; ")
}

/// Where the receiving side reads a batch's row images from.
pub(super) enum Images<'a> {
    /// A JSON array of the rows ([`row_images`]).
    Json(&'a str),
    /// The session's staging table of the table, filled by [`stage`].
    Staged,
}

impl Images<'_> {
    /// The rows as a relation, in SQL.
    fn relation(&self, t: &TableCopy) -> String {
        match self {
            Images::Json(_) => {
                format!("json_populate_recordset(NULL::{}, $1::text::json)", t.table)
            }
            Images::Staged => format!("pg_temp.{}", stage_name(t)),
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        match self {
            Images::Json(json) => vec![json as &(dyn ToSql + Sync)],
            Images::Staged => Vec::new(),
        }
    }
}

/// A transaction on the receiving side whose writes the capture there does not record.
pub(super) async fn syncing(target: &mut Client) -> Result<Transaction<'_>, String> {
    let tx = target.transaction().await.map_err(|e| describe(&e))?;
    tx.batch_execute(&format!(
        "SET LOCAL shardgate.syncing = 'on'; {}",
        text_settings(true)
    ))
    .await
    .map_err(|e| describe(&e))?;
    Ok(tx)
}

/// The row images (a JSON array) of the rows of `t` that satisfy `rows` (SQL over its columns).
pub(super) async fn row_images(
    tx: &Transaction<'_>,
    t: &TableCopy,
    rows: &str,
) -> Result<String, String> {
    let sql = format!(
        "SELECT coalesce(json_agg(r), '[]')::text FROM (SELECT * FROM {} WHERE {rows}) r",
        t.table
    );
    let row = tx.query_one(&sql, &[]).await.map_err(|e| describe(&e))?;
    Ok(row.get(0))
}

/// The rows of `t` that satisfy `rows`, in primary-key order, as `COPY … TO STDOUT` sends them
/// (text form, one line per row), and how many there are. Read with [`text_settings`] in force.
pub(super) async fn copy_rows(
    tx: &Transaction<'_>,
    t: &TableCopy,
    rows: &str,
) -> Result<(Bytes, i64), String> {
    let sql = format!(
        "COPY (SELECT * FROM {} WHERE {rows} ORDER BY {}) TO STDOUT",
        t.table,
        t.pk()
    );
    let stream = tx.copy_out(&sql).await.map_err(|e| describe(&e))?;
    futures_util::pin_mut!(stream);
    let mut data = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        data.extend_from_slice(&chunk.map_err(|e| describe(&e))?);
    }
    // A newline inside a value is written as `\n`: a raw one ends a row.
    let count = data.iter().filter(|b| **b == b'\n').count() as i64;
    Ok((data.freeze(), count))
}

/// The staging table's name for `t`: one per table, whatever the length of its name.
fn stage_name(t: &TableCopy) -> String {
    // FNV-1a: a stable name (the table's own may be longer than an identifier can be).
    let hash = t.table.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    quote_ident(&format!("shardgate_stage_{hash:016x}"))
}

/// Puts `data` (from [`copy_rows`] of the same table) into the session's staging table for `t`,
/// created on first use with the table's columns as `LIKE` copies them (no defaults, identity or
/// generation: COPY fills every column as the source had it) and emptied at every commit.
pub(super) async fn stage(tx: &Transaction<'_>, t: &TableCopy, data: Bytes) -> Result<(), String> {
    let name = stage_name(t);
    tx.batch_execute(&format!(
        "SET LOCAL client_min_messages = warning; \
         CREATE TEMP TABLE IF NOT EXISTS {name} (LIKE {}) ON COMMIT DELETE ROWS",
        t.table
    ))
    .await
    .map_err(|e| describe(&e))?;
    let sink = tx
        .copy_in::<_, Bytes>(&format!("COPY pg_temp.{name} FROM STDIN"))
        .await
        .map_err(|e| describe(&e))?;
    futures_util::pin_mut!(sink);
    sink.send(data).await.map_err(|e| describe(&e))?;
    sink.finish().await.map_err(|e| describe(&e))?;
    Ok(())
}

/// Makes the receiving side's rows that satisfy `rows` (SQL over the table's columns) exactly
/// `images` (the source's row images of the same rows).
pub(super) async fn write_target(
    tx: &Transaction<'_>,
    t: &TableCopy,
    rows: &str,
    images: &Images<'_>,
) -> Result<(), String> {
    delete_missing(tx, t, rows, images).await?;
    upsert(tx, t, images).await
}

/// Deletes the rows that satisfy `rows` and are not among `images`.
pub(super) async fn delete_missing(
    tx: &Transaction<'_>,
    t: &TableCopy,
    rows: &str,
    images: &Images<'_>,
) -> Result<(), String> {
    let delete = format!(
        "DELETE FROM {table} WHERE {rows} AND ({pk}) NOT IN (SELECT {pk} FROM {images})",
        table = t.table,
        pk = t.pk(),
        images = images.relation(t),
    );
    tx.execute(&delete, &images.params())
        .await
        .map_err(|e| describe(&e))?;
    Ok(())
}

/// Inserts or updates `images`; refuses (changing nothing) to replace a row of a key that is
/// not moving.
pub(super) async fn upsert(
    tx: &Transaction<'_>,
    t: &TableCopy,
    images: &Images<'_>,
) -> Result<(), String> {
    let sql = upsert_sql(t, &columns(tx, t).await?, images);
    let row = tx
        .query_opt(&sql, &images.params())
        .await
        .map_err(|e| describe(&e))?;
    if let Some(pk) = row.and_then(|r| r.get::<_, Option<String>>(0)) {
        return Err(format!(
            "table {}: the receiving shard already has a row with primary key {pk} whose \
             sharding key is not moving; copying would replace it. Primary keys must be unique \
             across shards (a sequence of its own on each shard hands out the same ids): make \
             them so, or include the sharding key in the primary key, then resume the job",
            t.table
        ));
    }
    Ok(())
}

/// The columns an insert names (not generated ones), quoted, each with whether it is
/// `GENERATED ALWAYS AS IDENTITY`: inserted with OVERRIDING SYSTEM VALUE, but an UPDATE may not
/// set it — nor need to: a row's copy got it when inserted.
async fn columns(tx: &Transaction<'_>, t: &TableCopy) -> Result<Vec<(String, bool)>, String> {
    let rows = tx
        .query(
            "SELECT attname::text, attidentity = 'a' FROM pg_catalog.pg_attribute \
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped \
             AND attgenerated = '' ORDER BY attnum",
            &[&t.table],
        )
        .await
        .map_err(|e| describe(&e))?;
    Ok(rows
        .iter()
        .map(|r| (quote_ident(r.get::<_, &str>(0)), r.get(1)))
        .collect())
}

/// The upsert of `images` into `t`; its one row, if any, names the first image it left alone.
fn upsert_sql(t: &TableCopy, columns: &[(String, bool)], images: &Images<'_>) -> String {
    let list = columns
        .iter()
        .map(|(c, _)| c.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let updates: Vec<String> = columns
        .iter()
        .filter(|(_, always)| !always)
        .map(|(c, _)| format!("{c} = EXCLUDED.{c}"))
        .collect();
    let (table, pk, images) = (&t.table, t.pk(), images.relation(t));
    if updates.is_empty() {
        // Only ALWAYS identity columns: a row there is the row.
        return format!(
            "INSERT INTO {table} ({list}) OVERRIDING SYSTEM VALUE SELECT {list} FROM {images} \
             ON CONFLICT ({pk}) DO NOTHING"
        );
    }
    // A row already there with the same primary key is replaced only if it is one of the moving
    // keys too (an earlier copy). One of another key means primary keys are not unique across
    // shards: replacing it would lose that row.
    let moving = t.within(&format!("sg_t.{}", quote_ident(&t.key_column)));
    format!(
        "WITH images AS MATERIALIZED (SELECT * FROM {images}), \
              up AS (INSERT INTO {table} AS sg_t ({list}) OVERRIDING SYSTEM VALUE \
                     SELECT {list} FROM images ON CONFLICT ({pk}) \
                     DO UPDATE SET {updates} WHERE {moving} RETURNING {pk}) \
         SELECT (SELECT ROW({pk})::text FROM images WHERE ({pk}) NOT IN (SELECT {pk} FROM up) \
                 LIMIT 1)",
        updates = updates.join(", "),
    )
}
