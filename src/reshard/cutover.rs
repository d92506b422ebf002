//! Cutover (DESIGN §3.5), one move (a slice of the map: buckets, a range, values) at a time,
//! and the same switch the other way for rollback (§3.6). While the side that owns the slice
//! holds the move's fence exclusively, no transaction can write the slice there (the capture
//! trigger takes the fence in shared mode first). Once every live shardgate holds the slice's
//! new transactions (and has sent the first statement of each transaction it routed before):
//! 1. wait for the transactions under way on this side to end (they may write the slice yet;
//!    not for those already older than [`HOLD`]: long reports must not stall every attempt),
//!    then take the fence, waiting for the slice's writers in flight — both within [`HOLD`]
//!    (past it the attempt is given up and dual-write goes on);
//! 2. copy every marked change still waiting;
//! 3. advance the other side's sequences past this side's values;
//! 4. swap the roles: the other side takes writes and marks them, this one refuses clients;
//! 5. publish the map in which the other side owns the slice, and wait (again at most
//!    [`HOLD`]) until every live shardgate has taken it;
//! 6. release the fence: writers it held continue — a shardgate that has taken the new map sends
//!    new ones to the new owner.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::capture::{fence_key, role_sql, Role};
use super::driver::Next;
use super::jobs::{self, advance};
use super::steps::owner_now;
use super::sync::{copy_changes, pending};
use super::work::{acknowledged, connect, map_with, publish, run, MoveWork, Work};
use super::Phase;
use crate::backend::control::describe;
use crate::control::ControlDb;
use crate::topology::Store;

/// The longest the slice's writers are held, per wait.
pub const HOLD: Duration = Duration::from_secs(2);

/// Which way a switch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Source to target: cutover.
    Forward,
    /// Target back to source: rollback.
    Back,
}

/// What a switch attempt came to.
pub enum Switched {
    /// The other side owns the slice; the hold lasted this long.
    Done(Duration),
    /// Given up (nothing changed); why.
    Abandoned(String),
}

/// Cuts every move over that is not yet.
pub async fn cut_over(db: &ControlDb, store: &Store, work: &Work) -> Result<Next, String> {
    for m in &work.moves {
        if owner_now(&store.load().config, work, &m.mv.slice)? == m.mv.to {
            // Switched before a crash, maybe not to the end: the roles as the map says.
            settle_roles(work, m, Way::Forward).await?;
            continue;
        }
        match switch(db, store, work, m, Way::Forward).await? {
            Switched::Done(held) => {
                let text = format!(
                    "{} cut over to \"{}\" (writers of them held {} ms)",
                    m.mv.what(),
                    m.mv.to,
                    held.as_millis()
                );
                jobs::remark(db, work.id, Phase::Cutover, &text)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Switched::Abandoned(why) => {
                let text = format!(
                    "cutover of {} given up: {why}; dual-write goes on, trying again in 2 s",
                    m.mv.what()
                );
                jobs::remark(db, work.id, Phase::Cutover, &text)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(Next::After(Duration::from_secs(2)));
            }
        }
    }
    let text =
        "every move cut over: the targets own the moved keys; the sources are kept up to date \
                (reverse dual-write) until finish, and rollback is possible until then";
    advance(db, work.id, Phase::Cutover, Phase::ReverseDualWrite, text)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Next::Now)
}

/// Hands move `m`'s slice to the other side.
pub async fn switch(
    db: &ControlDb,
    store: &Store,
    work: &Work,
    m: &MoveWork,
    way: Way,
) -> Result<Switched, String> {
    let (from, from_shard, to, to_shard) = match way {
        Way::Forward => (&m.source_url, &m.mv.from, &m.target_url, &m.mv.to),
        Way::Back => (&m.target_url, &m.mv.to, &m.source_url, &m.mv.from),
    };
    let held = Instant::now();
    let unchanged = map_for(store, work, m, from_shard)?;
    let until = SystemTime::now() + HOLD + AFTER_SWITCH;
    let until_ms = until
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let hold = json!({ "job": work.id, "state": "cutover",
        "hold": { "slice": m.mv.slice, "until_ms": until_ms } });
    let epoch = publish(db, &work.database, &unchanged, &hold)
        .await
        .map_err(|e| e.to_string())?;
    let outcome = if acknowledged(db, &work.database, epoch, HOLD).await {
        fenced(db, store, work, m, (from, to, to_shard), held).await
    } else {
        Ok(Some(
            "not every live shardgate took the hold in time".to_string(),
        ))
    };
    if !matches!(outcome, Ok(None)) {
        // Given up (or failed) before the switch: the slice's transactions go on where they were.
        let state = match way {
            Way::Forward => "dual_write",
            Way::Back => "reverse_dual_write",
        };
        let overlay = json!({ "job": work.id, "state": state });
        publish(db, &work.database, &unchanged, &overlay)
            .await
            .map_err(|e| e.to_string())?;
    }
    outcome.map(|r| match r {
        Some(why) => Switched::Abandoned(why),
        None => Switched::Done(held.elapsed()),
    })
}

/// How long past [`HOLD`] a hold may last: the wait for every shardgate to take the new map.
const AFTER_SWITCH: Duration = Duration::from_millis(1500);

/// The map with `m`'s slice owned by `owner`.
fn map_for(
    store: &Store,
    work: &Work,
    m: &MoveWork,
    owner: &str,
) -> Result<serde_json::Value, String> {
    let config = store.load().config.clone();
    let sharding = config
        .databases
        .get(&work.database)
        .and_then(|d| d.sharding.as_ref())
        .ok_or("the database is no longer sharded")?;
    map_with(sharding, &m.mv.slice, owner)
}

/// Steps 1–6 once the shardgates hold the slice's new transactions; `Some(why)` if given up
/// before anything changed.
async fn fenced(
    db: &ControlDb,
    store: &Store,
    work: &Work,
    m: &MoveWork,
    (from, to, to_shard): (&str, &str, &str),
    held: Instant,
) -> Result<Option<String>, String> {
    let fence = connect(from).await?;
    match older_transactions(&fence.client, held).await {
        Ok(None) => {}
        other => {
            fence.close().await;
            return other;
        }
    }
    let wait = HOLD.saturating_sub(held.elapsed()).as_millis().max(1);
    let fence_sql = format!(
        "SET lock_timeout = '{wait}ms'; SELECT pg_catalog.pg_advisory_lock({})",
        fence_key(work.id)
    );
    if let Err(e) = fence.client.batch_execute(&fence_sql).await {
        fence.close().await;
        return match e.code() {
            Some(c) if c.code() == "55P03" => Ok(Some(format!(
                "the moved keys' transactions under way still ran after {} ms",
                HOLD.as_millis()
            ))),
            _ => Err(describe(&e)),
        };
    }
    let result = under_fence(db, store, work, m, (&fence.client, to, to_shard), held).await;
    // Closing the connection releases the fence whatever happened.
    fence.close().await;
    result
}

/// Waits (within [`HOLD`] of `held`) until the transactions under way on this side when every
/// shardgate had taken the hold have ended; `Some(why)` if some still run. Those may have begun
/// on the slice's keys with a read, or on other keys, and write the slice later: after the
/// switch this side would refuse that write. Every later transaction on the slice waits for the
/// new map, on the shardgates (this one's own connections are not waited for). Transactions
/// older than [`HOLD`] are not waited for: a long report would otherwise make every attempt
/// give up while it runs; one that writes a moved key after the switch gets 40001.
async fn older_transactions(
    c: &tokio_postgres::Client,
    held: Instant,
) -> Result<Option<String>, String> {
    let sql = format!(
        "SELECT pid::text || ' (' || coalesce(nullif(application_name, ''), usename::text, '?') \
           || ', ' || state || ' for ' || (extract(epoch FROM now() - xact_start) * 1000)::bigint \
           || ' ms)' \
         FROM pg_catalog.pg_stat_activity \
         WHERE datname = pg_catalog.current_database() AND backend_type = 'client backend' \
           AND pid <> pg_catalog.pg_backend_pid() AND application_name <> {ours} \
           AND xact_start < $1::text::timestamptz \
           AND xact_start > $1::text::timestamptz - make_interval(secs => {oldest}) \
         ORDER BY xact_start LIMIT 5",
        ours = super::backfill::literal(super::work::APPLICATION_NAME),
        oldest = HOLD.as_secs_f64(),
    );
    let since: String = c
        .query_one("SELECT pg_catalog.clock_timestamp()::text", &[])
        .await
        .map_err(|e| describe(&e))?
        .get(0);
    loop {
        let running: Vec<String> = c
            .query(&sql, &[&since])
            .await
            .map_err(|e| describe(&e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if running.is_empty() {
            return Ok(None);
        }
        if held.elapsed() > HOLD {
            return Ok(Some(format!(
                "transactions begun before the hold still ran after {} ms: {}",
                HOLD.as_millis(),
                running.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Steps 2–5 of the switch; `Some(why)` if it was given up before anything changed.
async fn under_fence(
    db: &ControlDb,
    store: &Store,
    work: &Work,
    m: &MoveWork,
    (fence, to_url, to_shard): (&tokio_postgres::Client, &str, &str),
    held: Instant,
) -> Result<Option<String>, String> {
    let mut source = connect(&fence_url(m, to_url)).await?;
    let mut target = connect(to_url).await?;
    // Marks claimed by the background copier count until it commits: wait for none at all.
    while pending(&source.client, work.id).await? > 0 {
        if held.elapsed() > HOLD {
            return Ok(Some("marked changes were still being copied".into()));
        }
        copy_changes(
            &mut source.client,
            &mut target.client,
            work.id,
            &m.tables,
            10_000,
        )
        .await?;
    }
    for seq in &m.sequences {
        advance_sequence(&source.client, &target.client, seq).await?;
    }
    // The new owner takes writes before any shardgate sends it one, and the old one becomes
    // the shadow right after, both while every shardgate holds the slice's statements and those
    // without a key (which read the roles to hide the copies): none runs between the two. The
    // old owner's writers wait on the fence until the map is out, then meet the refusal. A
    // crash in between leaves the move switched or not, and the next attempt finishes it.
    run(&target.client, &role_sql(work.id, Role::Authoritative)).await?;
    run(fence, &role_sql(work.id, Role::Shadow)).await?;
    let map = map_for(store, work, m, to_shard)?;
    let overlay = json!({ "job": work.id, "state": "reverse_dual_write" });
    let epoch = publish(db, &work.database, &map, &overlay)
        .await
        .map_err(|e| e.to_string())?;
    if !acknowledged(db, &work.database, epoch, AFTER_SWITCH).await {
        tracing::warn!(job = work.id, epoch, "not every live shardgate took the new map in time; its writes of the moved keys to the old owner are refused (40001) until it does");
    }
    source.close().await;
    target.close().await;
    Ok(None)
}

/// Sets both sides' roles for a move the map already shows switched `way`.
pub async fn settle_roles(work: &Work, m: &MoveWork, way: Way) -> Result<(), String> {
    let (owner, shadow) = match way {
        Way::Forward => (&m.target_url, &m.source_url),
        Way::Back => (&m.source_url, &m.target_url),
    };
    for (url, role) in [(owner, Role::Authoritative), (shadow, Role::Shadow)] {
        let side = connect(url).await?;
        run(&side.client, &role_sql(work.id, role)).await?;
        side.close().await;
    }
    Ok(())
}

/// The side the fence is on: the one that is not `to`.
fn fence_url(m: &MoveWork, to: &str) -> String {
    if to == m.target_url {
        m.source_url.clone()
    } else {
        m.target_url.clone()
    }
}

/// Makes `seq` on `to` hand out only values past the ones `from` handed out, in its own
/// stride: a sequence that counts by 2 from 2 (odd ids on one shard, even on the other) goes on
/// with even ids. A descending sequence is left alone.
pub async fn advance_sequence(
    from: &tokio_postgres::Client,
    to: &tokio_postgres::Client,
    seq: &str,
) -> Result<(), String> {
    let last: Option<i64> = from
        .query_one(
            "SELECT pg_catalog.pg_sequence_last_value($1::text::regclass)",
            &[&seq],
        )
        .await
        .map_err(|e| describe(&e))?
        .get(0);
    let Some(last) = last else { return Ok(()) };
    // `at`: the value `to` handed out last (or the one before its first); the new one is the
    // first of its stride with a next value past `last`.
    to.execute(
        "SELECT pg_catalog.setval($1::text::regclass, \
                at + ceil(($2 - at - inc + 1)::numeric / inc)::bigint * inc) \
         FROM (SELECT s.increment_by AS inc, coalesce( \
                 pg_catalog.pg_sequence_last_value($1::text::regclass), \
                 s.start_value - s.increment_by) AS at \
               FROM pg_catalog.pg_sequences s \
               WHERE format('%I.%I', s.schemaname, s.sequencename)::regclass \
                   = $1::text::regclass) q \
         WHERE inc > 0 AND at + inc <= $2",
        &[&seq, &last],
    )
    .await
    .map_err(|e| describe(&e))?;
    Ok(())
}
