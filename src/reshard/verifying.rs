//! The job's verification runs (DESIGN §3.4): in the verify phase until a run passes, and on
//! the operator's request at any time after — after cutover the new owner is compared with the
//! old (which reverse dual-write keeps up to date), after finish the old owner is checked to
//! hold nothing of the moved keys. Each run's summary is kept with the job and shown by
//! `GET /v1/reshard/{id}`.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::backfill::TableCopy;
use super::cutover::Way;
use super::driver::Next;
use super::jobs::{self, advance};
use super::verify::{chunk_count, compare, differing_keys, repair_all, BucketDiff};
use super::work::{connect, Work};
use super::Phase;
use crate::backend::control::describe;
use crate::control::ControlDb;

/// What a run found.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub run: i32,
    /// What was compared: `source→target`, `target→source`, or `source empty` after finish.
    pub compared: String,
    pub tables: u64,
    /// Chunks compared (summed over tables): the map's buckets for a hash map, the keys' hash
    /// in [`super::verify::CHUNKS`] buckets for a range or list map.
    pub buckets: u64,
    /// Chunks whose count or checksum differed (changes still being copied included).
    pub differing_buckets: u64,
    /// Keys copied again and then found equal under their locks.
    pub repaired_keys: u64,
    /// Keys (or, after finish, rows on the old owner) still different.
    pub remaining: u64,
    /// Up to ten `table:key` of the keys that differed.
    pub samples: Vec<String>,
}

/// The verify phase: a run; ready when it passes, another run a second later when not.
pub async fn verify_phase(db: &ControlDb, work: &Work) -> Result<Next, String> {
    let summary = run(db, work, Way::Forward).await?;
    let text = describe_run(&summary);
    if summary.remaining > 0 {
        let text = format!("{text}; verifying again");
        jobs::remark(db, work.id, Phase::Verify, &text)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Next::After(Duration::from_secs(1)));
    }
    let text = format!("{text}: ready for cutover");
    advance(db, work.id, Phase::Verify, Phase::Ready, &text)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Next::Now)
}

/// A run the operator asked for in `phase` (reverse dual-write or finished).
pub async fn on_request(db: &ControlDb, work: &Work, phase: Phase) -> Result<Next, String> {
    let summary = match phase {
        Phase::Finished => leftovers(db, work).await?,
        _ => run(db, work, Way::Back).await?,
    };
    jobs::remark(db, work.id, phase, &describe_run(&summary))
        .await
        .map_err(|e| e.to_string())?;
    jobs::verified(db, work.id)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Next::Now)
}

fn describe_run(s: &Summary) -> String {
    format!(
        "verification run {} ({}): {} tables, {} buckets, {} differed, {} keys copied again and then equal, {} still differ",
        s.run, s.compared, s.tables, s.buckets, s.differing_buckets, s.repaired_keys, s.remaining
    )
}

/// Compares every table of every move, owner against copy (`way`: which side owns), repairing
/// the copy.
async fn run(db: &ControlDb, work: &Work, way: Way) -> Result<Summary, String> {
    let mut s = Summary {
        run: next_run(db, work.id).await?,
        compared: match way {
            Way::Forward => "source→target",
            Way::Back => "target→source",
        }
        .into(),
        ..Summary::default()
    };
    for m in &work.moves {
        let (owner, copy) = match way {
            Way::Forward => (&m.source_url, &m.target_url),
            Way::Back => (&m.target_url, &m.source_url),
        };
        let mut owner = connect(owner).await?;
        let mut copy = connect(copy).await?;
        for t in &m.tables {
            s.tables += 1;
            s.buckets += chunk_count(t);
            if compare(&owner.client, &copy.client, t).await?.is_empty() {
                continue;
            }
            // A change committed between the two reads is copied within milliseconds: look again.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let diffs = compare(&owner.client, &copy.client, t).await?;
            let buckets: Vec<u32> = diffs.iter().map(|d| d.bucket).collect();
            let keys = differing_keys(&owner.client, &copy.client, t, &buckets).await?;
            let all: Vec<String> = keys.values().flatten().cloned().collect();
            let left = repair_all(&mut owner.client, &mut copy.client, t, &all).await?;
            s.differing_buckets += diffs.len() as u64;
            s.repaired_keys += (all.len() - left.len()) as u64;
            s.remaining += left.len() as u64;
            let room = 10usize.saturating_sub(s.samples.len());
            s.samples
                .extend(all.iter().take(room).map(|k| format!("{}:{k}", t.table)));
            for d in &diffs {
                let keys = keys.get(&d.bucket).map_or(&[][..], Vec::as_slice);
                record_bucket(db, work.id, s.run, t, d, keys).await?;
            }
        }
        owner.close().await;
        copy.close().await;
    }
    record_run(db, work.id, &s).await?;
    Ok(s)
}

/// After finish: the old owners hold no row of the moved keys.
async fn leftovers(db: &ControlDb, work: &Work) -> Result<Summary, String> {
    let mut s = Summary {
        run: next_run(db, work.id).await?,
        compared: "source empty".into(),
        ..Summary::default()
    };
    for m in &work.moves {
        let source = connect(&m.source_url).await?;
        for t in &m.tables {
            s.tables += 1;
            s.buckets += chunk_count(t);
            let sql = format!(
                "SELECT count(*) FROM {} WHERE {}",
                t.table,
                t.range(None, None)
            );
            let n: i64 = source
                .client
                .query_one(&sql, &[])
                .await
                .map_err(|e| describe(&e))?
                .get(0);
            s.remaining += n as u64;
        }
        source.close().await;
    }
    record_run(db, work.id, &s).await?;
    Ok(s)
}

async fn next_run(db: &ControlDb, id: i64) -> Result<i32, String> {
    let client = db.client().await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT coalesce(max(run), 0) + 1 FROM shardgate.reshard_verification_runs WHERE job_id = $1",
            &[&id],
        )
        .await
        .map_err(|e| describe(&e))?;
    Ok(row.get(0))
}

async fn record_run(db: &ControlDb, id: i64, s: &Summary) -> Result<(), String> {
    let client = db.client().await.map_err(|e| e.to_string())?;
    client
        .execute(
            "INSERT INTO shardgate.reshard_verification_runs (job_id, run, summary) VALUES ($1, $2, $3) \
             ON CONFLICT (job_id, run) DO UPDATE SET summary = EXCLUDED.summary",
            &[&id, &s.run, &json!(s)],
        )
        .await
        .map_err(|e| describe(&e))?;
    Ok(())
}

/// A bucket that differed, with the keys copied again.
async fn record_bucket(
    db: &ControlDb,
    id: i64,
    run_no: i32,
    t: &TableCopy,
    d: &BucketDiff,
    keys: &[String],
) -> Result<(), String> {
    let client = db.client().await.map_err(|e| e.to_string())?;
    client
        .execute(
            "INSERT INTO shardgate.reshard_verification (job_id, run, table_name, chunk, \
             source_rows, target_rows, source_checksum, target_checksum, repaired_keys) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            &[
                &id,
                &run_no,
                &t.table,
                &(d.bucket as i32),
                &d.source.rows,
                &d.target.rows,
                &d.source.checksum,
                &d.target.checksum,
                &keys,
            ],
        )
        .await
        .map_err(|e| describe(&e))?;
    Ok(())
}

/// The last run's summary of job `id`, if any.
pub async fn last_run(db: &ControlDb, id: i64) -> Result<serde_json::Value, String> {
    let client = db.client().await.map_err(|e| e.to_string())?;
    let row = client
        .query_opt(
            "SELECT summary FROM shardgate.reshard_verification_runs WHERE job_id = $1 ORDER BY run DESC LIMIT 1",
            &[&id],
        )
        .await
        .map_err(|e| describe(&e))?;
    Ok(row.map_or(serde_json::Value::Null, |r| r.get(0)))
}
