//! The job's steps up to cutover: dual-write on (DESIGN §3.2), every proxy's acknowledgement,
//! backfill (§3.3) and verification (§3.4). Each can be run again after a crash: installing the
//! capture replaces it, backfill goes on from its checkpoint, verification starts a new run.

use std::time::{Duration, Instant};

use serde_json::json;

use super::backfill::{self, copy_batch, Checkpoint, TableCopy};
use super::capture::{install_sql, role_sql, Role, SETUP_SQL};
use super::driver::Next;
use super::jobs::{self, advance};
use super::work::{connect, lagging, map_with, publish, run, run_ddl, MoveWork, Work};
use super::Phase;
use crate::config::{Config, Slice};
use crate::control::ControlDb;
use crate::health::Monitor;

/// Installs the capture on both sides of every move (authoritative source, shadow target) and
/// publishes the dual-write epoch.
pub async fn start_dual_write(
    db: &ControlDb,
    config: &Config,
    work: &Work,
) -> Result<Next, String> {
    for m in &work.moves {
        for (url, role, elsewhere) in [
            (&m.source_url, Role::Authoritative, &m.mv.to),
            (&m.target_url, Role::Shadow, &m.mv.from),
        ] {
            let side = connect(url).await?;
            run(
                &side.client,
                &format!("{SETUP_SQL}; {}", role_sql(work.id, role)),
            )
            .await?;
            for t in &m.tables {
                run_ddl(&side.client, &install_sql(work.id, t, elsewhere)).await?;
            }
            side.close().await;
        }
    }
    let map = current_map(config, work)?;
    let overlay = json!({ "job": work.id, "state": "dual_write" });
    let epoch = publish(db, &work.database, &map, &overlay)
        .await
        .map_err(|e| e.to_string())?;
    let text = format!(
        "dual-write on (epoch {epoch}): every change of the moved keys on the source is marked \
         there in its own transaction and copied to the target"
    );
    advance(db, work.id, Phase::Preflight, Phase::DualWrite, &text)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Next::Now)
}

/// The database's map as served now, in the epochs' form.
pub fn current_map(config: &Config, work: &Work) -> Result<serde_json::Value, String> {
    let sharding = config
        .databases
        .get(&work.database)
        .and_then(|d| d.sharding.as_ref())
        .ok_or("the database is no longer sharded")?;
    let first = &work.moves[0].mv.slice;
    map_with(sharding, first, &owner_now(config, work, first)?)
}

/// The shard that owns `slice` in the map served now.
pub fn owner_now(config: &Config, work: &Work, slice: &Slice) -> Result<String, String> {
    let db = config
        .databases
        .get(&work.database)
        .ok_or("the database is no longer in the config")?;
    slice
        .owner(db)
        .map_err(|e| format!("{}: {e}", slice.describe()))
}

/// Backfill waits until every live shardgate has taken the dual-write epoch.
pub async fn await_acknowledgements(db: &ControlDb, work: &Work) -> Result<Next, String> {
    let client = db.client().await.map_err(|e| e.to_string())?;
    let epoch: i64 = client
        .query_one(
            "SELECT epoch FROM shardgate.epochs WHERE database = $1",
            &[&work.database],
        )
        .await
        .map_err(|e| crate::backend::control::describe(&e))?
        .get(0);
    drop(client);
    let behind = lagging(db, &work.database, epoch)
        .await
        .map_err(|e| e.to_string())?;
    if behind > 0 {
        return Ok(Next::After(Duration::from_millis(100)));
    }
    let text = format!("every live shardgate has taken epoch {epoch}; backfill starts");
    advance(db, work.id, Phase::DualWrite, Phase::Backfill, &text)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Next::Now)
}

/// A table's checkpoint name: the table, with the slice when the job has several moves.
fn checkpoint_name(t: &TableCopy, moves: usize) -> String {
    if moves == 1 {
        t.table.clone()
    } else {
        format!("{} {}", t.table, t.slice.label())
    }
}

/// Backfill from the checkpoints until every table is copied, or the job is paused or moved.
pub async fn backfill(db: &ControlDb, work: &Work, health: &Monitor) -> Result<Next, String> {
    let saved = jobs::checkpoints(db, work.id)
        .await
        .map_err(|e| e.to_string())?;
    let mut rows = 0;
    for m in &work.moves {
        for t in &m.tables {
            let name = checkpoint_name(t, work.moves.len());
            let at = saved
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| c.clone())
                .unwrap_or_default();
            match copy_table((db, health), work, m, t, &name, at).await? {
                Copied::Done(n) => rows += n,
                Copied::Interrupted => return Ok(Next::Now),
            }
        }
    }
    let text = format!("backfill done: {rows} rows copied; verification starts");
    advance(db, work.id, Phase::Backfill, Phase::Verify, &text)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Next::Now)
}

enum Copied {
    Done(i64),
    /// Paused, aborted, or another phase: the driver looks again.
    Interrupted,
}

/// How long backfill waits before it looks at a lagging replica again.
const LAG_PAUSE: Duration = Duration::from_millis(200);

/// The replica of `shard` furthest behind its primary, as `(host:port, ms)`, when it is further
/// than `routing.max_replica_lag_ms`: backfill backs off rather than add to its lag (DESIGN
/// §3.3). A replica whose lag is unknown (its primary down, nothing replayed yet) does not count.
fn replica_behind(health: &Monitor, work: &Work, shard: &str) -> Option<(String, u64)> {
    let report = health.report();
    let shard = report.shard(&work.database, shard)?;
    let (server, ms) = shard
        .servers
        .iter()
        .filter_map(|s| Some((s, s.lag?.ms)))
        .max_by_key(|(_, ms)| *ms)?;
    (ms > work.max_replica_lag_ms).then(|| (format!("{}:{}", server.key.host, server.key.port), ms))
}

/// Batch sizes backfill moves between: it halves after a slow batch (the source is busy) and
/// grows after a quick one.
const BATCH: (i64, i64, i64) = (100, 1000, 5000);
const SLOW: Duration = Duration::from_millis(500);

async fn copy_table(
    (db, health): (&ControlDb, &Monitor),
    work: &Work,
    m: &MoveWork,
    t: &TableCopy,
    name: &str,
    mut at: Checkpoint,
) -> Result<Copied, String> {
    let (min, mut batch, max) = BATCH;
    let mut source = connect(&m.source_url).await?;
    let mut target = connect(&m.target_url).await?;
    if at.last_key.is_none() && at.end_key.is_none() {
        // Bounded now, after the capture trigger is in place: later rows are the copier's.
        let (total, started) = backfill::start(&source.client, t).await?;
        at = started;
        jobs::save_total(db, work.id, name, total, &at.end_key)
            .await
            .map_err(|e| e.to_string())?;
        if at.done {
            jobs::save_checkpoint(db, work.id, name, &at)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let mut waiting = false;
    while !at.done {
        let state = jobs::state(db, work.id).await.map_err(|e| e.to_string())?;
        if state.phase != Phase::Backfill || state.paused {
            return Ok(Copied::Interrupted);
        }
        let behind = replica_behind(health, work, &m.mv.from);
        if behind.is_some() != waiting {
            waiting = behind.is_some();
            let text = match &behind {
                Some((server, ms)) => format!(
                    "backfill waits: replica {server} of \"{}\" is {ms} ms behind (routing.max_replica_lag_ms: {})",
                    m.mv.from, work.max_replica_lag_ms
                ),
                None => format!("the replicas of \"{}\" caught up; backfill goes on", m.mv.from),
            };
            jobs::remark(db, work.id, Phase::Backfill, &text)
                .await
                .map_err(|e| e.to_string())?;
        }
        if waiting {
            tokio::time::sleep(LAG_PAUSE).await;
            continue;
        }
        let started = Instant::now();
        let before = at.rows;
        match copy_batch(&mut source.client, &mut target.client, t, &at, batch).await {
            Ok(next) => at = next,
            // A key lock a writer held for longer than a copier waits: the batch again.
            Err(e) if e.contains("55P03") => {
                batch = (batch / 2).max(min);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(e) => return Err(format!("backfill of table {}: {e}", t.table)),
        }
        jobs::save_checkpoint(db, work.id, name, &at)
            .await
            .map_err(|e| e.to_string())?;
        let took = started.elapsed();
        batch = if took > SLOW {
            (batch / 2).max(min)
        } else {
            (batch * 2).min(max)
        };
        if let Some(rps) = work.rows_per_second {
            let due = Duration::from_secs_f64((at.rows - before) as f64 / rps as f64);
            tokio::time::sleep(due.saturating_sub(took)).await;
        }
    }
    source.close().await;
    target.close().await;
    Ok(Copied::Done(at.rows))
}
