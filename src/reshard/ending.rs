//! How a job ends on the shards: finish (DESIGN §3.6: reverse dual-write stops, the moved rows
//! leave the source in throttled batches), rollback (the switch back, then the target's copies
//! go), and the cleanup after an abort. Each step can run again after a crash.

use std::time::Duration;

use serde_json::Value;

use super::backfill::TableCopy;
use super::capture::{forget_sql, remove_sql};
use super::cutover::{settle_roles, switch, Switched, Way};
use super::driver::Next;
use super::jobs::{self, advance};
use super::steps::{current_map, owner_now};
use super::sync::pending;
use super::work::{connect, publish, run, run_ddl, MoveWork, Work};
use super::Phase;
use crate::backend::control::describe;
use crate::control::ControlDb;
use crate::topology::Store;

/// Rows deleted per batch, and the pause between batches (the throttle).
const DELETE_BATCH: i64 = 2000;
const DELETE_PAUSE: Duration = Duration::from_millis(10);

/// Finish: the targets keep the buckets; the sources forget them.
pub async fn finish(db: &ControlDb, store: &Store, work: &Work) -> Result<Next, String> {
    let mut deleted = 0;
    for m in &work.moves {
        // No new marks on the target; the ones left are copied before the source's rows go, so
        // no late copy brings a row back.
        remove_capture(&m.target_url, m, None).await?;
        let target = connect(&m.target_url).await?;
        while pending(&target.client, work.id).await? > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        run(&target.client, &forget_sql(work.id)).await?;
        target.close().await;
        deleted += delete_moved(&m.source_url, m).await?;
        remove_capture(&m.source_url, m, Some(work.id)).await?;
    }
    settle(db, store, work).await?;
    let text = format!("finished: {deleted} moved rows deleted from the sources");
    advance(db, work.id, Phase::Finishing, Phase::Finished, &text)
        .await
        .map_err(|e| e.to_string())?;
    jobs::mark_cleaned(db, work.id)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Next::Done)
}

/// Rollback: every cut-over move switched back, then the targets' copies deleted.
pub async fn roll_back(db: &ControlDb, store: &Store, work: &Work) -> Result<Next, String> {
    for m in &work.moves {
        if owner_now(&store.load().config, work, m.mv.first)? != m.mv.to {
            settle_roles(work, m, Way::Back).await?;
            continue;
        }
        if let Switched::Abandoned(why) = switch(db, store, work, m, Way::Back).await? {
            let text = format!(
                "rollback of buckets {} given up for now: {why}; trying again in 2 s",
                m.mv.buckets
            );
            jobs::remark(db, work.id, Phase::RollingBack, &text)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Next::After(Duration::from_secs(2)));
        }
    }
    let mut deleted = 0;
    for m in &work.moves {
        remove_capture(&m.source_url, m, None).await?;
        let source = connect(&m.source_url).await?;
        while pending(&source.client, work.id).await? > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        run(&source.client, &forget_sql(work.id)).await?;
        source.close().await;
        deleted += delete_moved(&m.target_url, m).await?;
        remove_capture(&m.target_url, m, Some(work.id)).await?;
    }
    settle(db, store, work).await?;
    let text = format!("rolled back: the sources own the buckets again; {deleted} copied rows deleted from the targets");
    advance(db, work.id, Phase::RollingBack, Phase::RolledBack, &text)
        .await
        .map_err(|e| e.to_string())?;
    jobs::mark_cleaned(db, work.id)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Next::Done)
}

/// After an abort: the capture goes from both sides (the target's copies stay: a new job's
/// backfill makes them exact again; drop them by hand otherwise).
pub async fn clean_up_abort(db: &ControlDb, store: &Store, work: &Work) -> Result<Next, String> {
    for m in &work.moves {
        remove_capture(&m.source_url, m, Some(work.id)).await?;
        remove_capture(&m.target_url, m, Some(work.id)).await?;
    }
    settle(db, store, work).await?;
    jobs::remark(
        db,
        work.id,
        Phase::Aborted,
        "dual-write removed from the shards",
    )
    .await
    .map_err(|e| e.to_string())?;
    jobs::mark_cleaned(db, work.id)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Next::Done)
}

/// Drops the triggers of `m`'s tables on one side, and the job's marks there when `forget`.
async fn remove_capture(url: &str, m: &MoveWork, forget: Option<i64>) -> Result<(), String> {
    let conn = connect(url).await?;
    for t in &m.tables {
        run_ddl(&conn.client, &remove_sql(&t.table)).await?;
    }
    if let Some(job) = forget {
        // The marks table may not exist (dual-write never started there).
        let sql = format!(
            "DO $sg$ BEGIN IF to_regclass('shardgate.reshard_changes') IS NOT NULL THEN EXECUTE {}; END IF; END $sg$",
            super::backfill::literal(&forget_sql(job))
        );
        run(&conn.client, &sql).await?;
    }
    conn.close().await;
    Ok(())
}

/// Publishes the map as it stands, without the job's overlay.
async fn settle(db: &ControlDb, store: &Store, work: &Work) -> Result<(), String> {
    let map = current_map(&store.load().config, work)?;
    publish(db, &work.database, &map, &Value::Null)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Deletes the moved buckets' rows on one side, in batches; how many.
async fn delete_moved(url: &str, m: &MoveWork) -> Result<u64, String> {
    let mut conn = connect(url).await?;
    let mut total = 0;
    for t in &m.tables {
        loop {
            let n = delete_batch(&mut conn.client, t).await?;
            total += n;
            if n == 0 {
                break;
            }
            tokio::time::sleep(DELETE_PAUSE).await;
        }
    }
    conn.close().await;
    Ok(total)
}

async fn delete_batch(c: &mut tokio_postgres::Client, t: &TableCopy) -> Result<u64, String> {
    let sql = format!(
        "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {range} LIMIT {DELETE_BATCH}))",
        table = t.table,
        range = t.range(None, None),
    );
    let tx = c.transaction().await.map_err(|e| describe(&e))?;
    // Not captured: these rows are not the clients' changes.
    tx.batch_execute("SET LOCAL shardgate.syncing = 'on'")
        .await
        .map_err(|e| describe(&e))?;
    let n = tx.execute(&sql, &[]).await.map_err(|e| describe(&e))?;
    tx.commit().await.map_err(|e| describe(&e))?;
    Ok(n)
}
