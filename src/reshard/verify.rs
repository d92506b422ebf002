//! Verification (DESIGN §3.4): the source and the target compared for a move's keys, table by
//! table, one chunk at a time (its rows are selected by the same expression on both sides) by
//! row count and an order-independent checksum of the row images; the chunks that differ are
//! drilled down (in one more scan per side) to the rows that differ, and those rows' sharding
//! keys are copied again under their key locks and compared again.
//!
//! A chunk is a bucket of the map when it is a hash map; for a range or list map, the moved
//! keys are chunked by their hash into [`CHUNKS`] buckets.
//!
//! Row images are compared as text, so both sides are read with the same output settings (UTC,
//! ISO dates, exact floats, hex bytea): equal data then prints equal.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use futures_util::StreamExt;

use serde::Serialize;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, RowStream};

use super::backfill::{literal, lock_keys, quote_ident, TableCopy};
use super::images::{row_images, syncing, write_target, Images};
use crate::backend::control::describe;
use crate::config::Slice;
use crate::router::hash::bucket_sql;

/// What both sides are read with: the row images' text settings, in UTC.
fn settings() -> String {
    format!(
        "SET TimeZone = 'UTC'; {}",
        super::images::text_settings(false)
    )
}

/// One bucket's figures on one side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Figures {
    pub rows: i64,
    /// Sum of the first 64 bits of each row image's md5, modulo 2^64, as text.
    pub checksum: String,
}

/// A bucket whose figures differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BucketDiff {
    pub bucket: u32,
    pub source: Figures,
    pub target: Figures,
}

/// How many chunks the keys of a range or list move are hashed into.
pub const CHUNKS: u32 = 1024;

/// How rows fall into chunks: the chunk of a row (SQL over the table's columns), which rows are
/// moved (SQL over the columns), and which chunks are (SQL over `b`, the chunk).
struct Chunking {
    chunk: String,
    rows: String,
    chunks: String,
}

fn chunking(t: &TableCopy) -> Chunking {
    let key = quote_ident(&t.key_column);
    match t.slice {
        // The map's buckets: a row's bucket says whether it moves.
        Slice::Buckets { first, last } => Chunking {
            chunk: bucket_sql(&key, t.key_type, t.buckets),
            rows: "true".into(),
            chunks: format!("b <@ int4range({first}, {last}, '[]')"),
        },
        _ => Chunking {
            chunk: bucket_sql(&key, t.key_type, CHUNKS),
            rows: t.within(&key),
            chunks: "true".into(),
        },
    }
}

/// How many chunks a table's comparison covers.
pub fn chunk_count(t: &TableCopy) -> u64 {
    match t.slice {
        Slice::Buckets { first, last } => u64::from(last - first + 1),
        _ => u64::from(CHUNKS),
    }
}

/// Per chunk of the move: rows and checksum.
async fn figures(c: &Client, t: &TableCopy) -> Result<Vec<(u32, Figures)>, String> {
    let Chunking {
        chunk,
        rows,
        chunks,
    } = chunking(t);
    let sql = format!(
        "SELECT b, count(*), (sum(('x' || substr(md5(r::text), 1, 16))::bit(64)::bigint::numeric \
             + 9223372036854775808) % 18446744073709551616)::text \
         FROM (SELECT {chunk} AS b, r FROM {table} r WHERE {rows}) s \
         WHERE {chunks} GROUP BY b ORDER BY b",
        table = t.table,
    );
    c.batch_execute(&settings())
        .await
        .map_err(|e| describe(&e))?;
    let rows = c.query(&sql, &[]).await.map_err(|e| describe(&e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let bucket: i32 = r.get(0);
            let figures = Figures {
                rows: r.get(1),
                checksum: r.get(2),
            };
            (bucket as u32, figures)
        })
        .collect())
}

/// The chunks (buckets) of the move whose rows differ between `source` and `target`.
pub async fn compare(
    source: &Client,
    target: &Client,
    t: &TableCopy,
) -> Result<Vec<BucketDiff>, String> {
    let (s, d) = (figures(source, t).await?, figures(target, t).await?);
    let empty = Figures {
        rows: 0,
        checksum: "0".into(),
    };
    let at = |list: &[(u32, Figures)], b: u32| {
        list.iter()
            .find(|(x, _)| *x == b)
            .map_or(empty.clone(), |(_, f)| f.clone())
    };
    // A chunk with no rows on either side is equal.
    let seen: BTreeSet<u32> = s.iter().chain(&d).map(|(b, _)| *b).collect();
    Ok(seen
        .into_iter()
        .map(|b| BucketDiff {
            bucket: b,
            source: at(&s, b),
            target: at(&d, b),
        })
        .filter(|d| d.source != d.target)
        .collect())
}

/// The sharding keys (as text) of the rows that differ, or exist on one side only, in
/// `buckets`, by bucket: one scan of the table on each side, whatever the number of buckets,
/// both sorted the same way and merged as they stream in (memory for the differences only).
pub async fn differing_keys(
    source: &Client,
    target: &Client,
    t: &TableCopy,
    buckets: &[u32],
) -> Result<BTreeMap<u32, Vec<String>>, String> {
    // Byte order ("C"), which is also how Rust compares the strings.
    let Chunking { chunk, rows, .. } = chunking(t);
    let sql = format!(
        "SELECT b, k, d FROM (SELECT {chunk} AS b, ({key})::text AS k, md5(r::text) AS d \
         FROM {table} r WHERE {rows}) s WHERE b = ANY($1::int[]) \
         ORDER BY b, k COLLATE \"C\", d COLLATE \"C\"",
        key = quote_ident(&t.key_column),
        table = t.table,
    );
    let buckets: Vec<i32> = buckets.iter().map(|b| *b as i32).collect();
    let (s, d) = (
        digests(source, &sql, &buckets).await?,
        digests(target, &sql, &buckets).await?,
    );
    futures_util::pin_mut!(s, d);
    let mut keys: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    let (mut a, mut b) = (next(&mut s).await?, next(&mut d).await?);
    loop {
        let order = match (&a, &b) {
            (None, None) => break,
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
        };
        if order != Ordering::Greater {
            if order == Ordering::Less {
                let (bucket, key, _) = a.take().expect("a row on the source's side");
                keys.entry(bucket).or_default().insert(key);
            }
            a = next(&mut s).await?;
        }
        if order != Ordering::Less {
            if order == Ordering::Greater {
                let (bucket, key, _) = b.take().expect("a row on the target's side");
                keys.entry(bucket).or_default().insert(key);
            }
            b = next(&mut d).await?;
        }
    }
    Ok(keys
        .into_iter()
        .map(|(bucket, k)| (bucket, k.into_iter().collect()))
        .collect())
}

/// (bucket, sharding key, row digest).
type Digest = (u32, String, String);

/// The rows' [`Digest`]s as the server sends them.
async fn digests(c: &Client, sql: &str, buckets: &[i32]) -> Result<RowStream, String> {
    c.batch_execute(&settings())
        .await
        .map_err(|e| describe(&e))?;
    let params: [&(dyn ToSql + Sync); 1] = [&buckets];
    c.query_raw(sql, params).await.map_err(|e| describe(&e))
}

async fn next(rows: &mut std::pin::Pin<&mut RowStream>) -> Result<Option<Digest>, String> {
    match rows.next().await {
        None => Ok(None),
        Some(Err(e)) => Err(describe(&e)),
        Some(Ok(r)) => Ok(Some((r.get::<_, i32>(0) as u32, r.get(1), r.get(2)))),
    }
}

/// How many keys one repair transaction locks and copies.
const REPAIR_BATCH: usize = 500;

/// [`repair`] of any number of keys, [`REPAIR_BATCH`] at a time; a batch that meets a key lock
/// a client holds longer than a copier waits is split and tried again (a client is never kept
/// waiting on verification): the keys that still differ.
pub async fn repair_all(
    source: &mut Client,
    target: &mut Client,
    t: &TableCopy,
    keys: &[String],
) -> Result<Vec<String>, String> {
    let mut queue: VecDeque<&[String]> = keys.chunks(REPAIR_BATCH).collect();
    let (mut left, mut retries) = (Vec::new(), 0);
    while let Some(batch) = queue.pop_front() {
        match repair(source, target, t, batch).await {
            Ok(still) => left.extend(still),
            Err(e) if e.contains("55P03") && retries < MAX_RETRIES => {
                retries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let (a, b) = batch.split_at(batch.len() / 2);
                for half in [b, a] {
                    if !half.is_empty() {
                        queue.push_front(half);
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(left)
}

/// How often one verification run lets a busy key lock make it try a batch again.
const MAX_RETRIES: u32 = 200;

/// Copies every row of these sharding keys again, under their key locks on the source, and
/// compares them again before the locks go (so a key written meanwhile cannot look different):
/// the keys that still differ (none, unless the target refused the copy).
pub async fn repair(
    source: &mut Client,
    target: &mut Client,
    t: &TableCopy,
    keys: &[String],
) -> Result<Vec<String>, String> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let src = source.transaction().await.map_err(|e| describe(&e))?;
    lock_keys(&src, &t.table, keys.to_vec()).await?;
    let list: Vec<String> = keys.iter().map(|k| literal(k)).collect();
    // Typed like the column, so an index on the sharding key finds them.
    let rows = format!(
        "{} = ANY(ARRAY[{}]::text[]::{}[])",
        quote_ident(&t.key_column),
        list.join(", "),
        t.key_type.sql_name()
    );
    let json = row_images(&src, t, &rows).await?;
    let tgt = syncing(target).await?;
    write_target(&tgt, t, &rows, &Images::Json(&json)).await?;
    let digests = format!(
        "SELECT ({})::text, md5(r::text) FROM {} r WHERE {rows} ORDER BY 1, 2",
        quote_ident(&t.key_column),
        t.table
    );
    let pairs = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, String)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    let s = pairs(src.query(&digests, &[]).await.map_err(|e| describe(&e))?);
    let d = pairs(tgt.query(&digests, &[]).await.map_err(|e| describe(&e))?);
    tgt.commit().await.map_err(|e| describe(&e))?;
    src.commit().await.map_err(|e| describe(&e))?;
    let mut differ: Vec<String> = s
        .iter()
        .filter(|p| d.binary_search(p).is_err())
        .chain(d.iter().filter(|p| s.binary_search(p).is_err()))
        .map(|(k, _)| k.clone())
        .collect();
    differ.sort();
    differ.dedup();
    Ok(differ)
}
