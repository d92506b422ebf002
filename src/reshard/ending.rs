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

/// Finish: the targets keep the moved keys; the sources forget them.
pub async fn finish(db: &ControlDb, store: &Store, work: &Work) -> Result<Next, String> {
    let mut deleted = 0;
    for m in &work.moves {
        deleted += let_go(work.id, m, &m.target_url, &m.source_url).await?;
    }
    let text = format!("finished: {deleted} moved rows deleted from the sources");
    end(db, store, work, (Phase::Finishing, Phase::Finished), &text).await
}

/// The side at `owner` keeps the move's keys, the one at `other` lets them go: no new marks
/// on the owner, the ones left there copied before the other's rows are deleted (so no late
/// copy brings a row back), then the other's capture removed. The rows deleted.
async fn let_go(job: i64, m: &MoveWork, owner: &str, other: &str) -> Result<u64, String> {
    remove_capture(owner, m, None).await?;
    let keeper = connect(owner).await?;
    while pending(&keeper.client, job).await? > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run(&keeper.client, &forget_sql(job)).await?;
    keeper.close().await;
    let deleted = delete_moved(other, m).await?;
    remove_capture(other, m, Some(job)).await?;
    Ok(deleted)
}

/// The job's last step: every proxy's map settled, the phase recorded, the shards cleaned.
async fn end(
    db: &ControlDb,
    store: &Store,
    work: &Work,
    (from, to): (Phase, Phase),
    text: &str,
) -> Result<Next, String> {
    settle(db, store, work).await?;
    advance(db, work.id, from, to, text)
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
        if owner_now(&store.load().config, work, &m.mv.slice)? != m.mv.to {
            settle_roles(work, m, Way::Back).await?;
            continue;
        }
        if let Switched::Abandoned(why) = switch(db, store, work, m, Way::Back).await? {
            let text = format!(
                "rollback of {} given up for now: {why}; trying again in 2 s",
                m.mv.what()
            );
            jobs::remark(db, work.id, Phase::RollingBack, &text)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Next::After(Duration::from_secs(2)));
        }
    }
    let mut deleted = 0;
    for m in &work.moves {
        deleted += let_go(work.id, m, &m.source_url, &m.target_url).await?;
    }
    let text = format!("rolled back: the sources own the moved keys again; {deleted} copied rows deleted from the targets");
    end(
        db,
        store,
        work,
        (Phase::RollingBack, Phase::RolledBack),
        &text,
    )
    .await
}

/// After an abort: the capture goes from both sides, and the target's copies with it (hidden
/// from reads until its row security goes). The source's marks are forgotten first: that waits
/// for a copy under way, so none lands after the delete.
pub async fn clean_up_abort(db: &ControlDb, store: &Store, work: &Work) -> Result<Next, String> {
    let mut deleted = 0;
    for m in &work.moves {
        remove_capture(&m.source_url, m, Some(work.id)).await?;
        // Only where dual-write began: before that the target's rows are none of the job's.
        if has_role(&m.target_url, work.id).await? {
            deleted += delete_moved(&m.target_url, m).await?;
        }
        remove_capture(&m.target_url, m, Some(work.id)).await?;
    }
    settle(db, store, work).await?;
    jobs::remark(
        db,
        work.id,
        Phase::Aborted,
        &format!(
            "dual-write removed from the shards; {deleted} copied rows deleted from the targets"
        ),
    )
    .await
    .map_err(|e| e.to_string())?;
    jobs::mark_cleaned(db, work.id)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Next::Done)
}

/// Whether the side at `url` has a role in `job` (dual-write was set up there).
async fn has_role(url: &str, job: i64) -> Result<bool, String> {
    let conn = connect(url).await?;
    let sql = "SELECT to_regclass('shardgate.reshard_roles') IS NOT NULL";
    let exists: bool = conn
        .client
        .query_one(sql, &[])
        .await
        .map_err(|e| describe(&e))?
        .get(0);
    let role = if exists {
        let sql = "SELECT count(*) FROM shardgate.reshard_roles WHERE job_id = $1";
        let row = conn.client.query_one(sql, &[&job]).await;
        row.map_err(|e| describe(&e))?.get::<_, i64>(0) > 0
    } else {
        false
    };
    conn.close().await;
    Ok(role)
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

/// Deletes the moved keys' rows on one side, in batches; how many.
async fn delete_moved(url: &str, m: &MoveWork) -> Result<u64, String> {
    let mut conn = connect(url).await?;
    let mut total = 0;
    // Referencing tables first: a foreign key between them holds at every batch.
    for t in m.tables.iter().rev() {
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
