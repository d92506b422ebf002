//! Resharding jobs in the control database: created after pre-flight passes, moved from phase to
//! phase with a line of history each time, and read back whole for `GET /v1/reshard/{id}`. Every
//! shardgate sharing the control database sees the same jobs.

use serde::Serialize;
use serde_json::Value;

use super::backfill::Checkpoint;
use super::preflight::Report;
use super::{Move, Phase};
use crate::control::{ControlDb, ControlError};

/// A job as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: i64,
    pub database: String,
    pub phase: &'static str,
    pub paused: bool,
    pub moves: Value,
    pub preflight: Value,
    pub error: Option<String>,
    pub history: Vec<HistoryLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryLine {
    pub at: String,
    pub phase: String,
    pub note: String,
}

/// Why a job could not be created or changed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("database \"{0}\" already has a resharding job in progress (job {1}); finish, roll back or abort it first")]
    Busy(String, i64),
    #[error("no resharding job {0}")]
    NotFound(i64),
    #[error("job {id} is in phase {phase}: {why}")]
    Conflict {
        id: i64,
        phase: String,
        why: &'static str,
    },
}

fn refused(what: &'static str) -> impl Fn(tokio_postgres::Error) -> ControlError {
    move |source| ControlError::Refused { what, source }
}

/// Records a new job in phase `preflight`, with what pre-flight found.
pub async fn create(
    db: &ControlDb,
    database: &str,
    moves: &[Move],
    report: &Report,
    options: Value,
) -> Result<i64, JobError> {
    let client = db.client().await?;
    let moves = serde_json::to_value(moves).expect("moves serialize");
    let preflight = serde_json::to_value(report).expect("report serializes");
    let inserted = client
        .query_one(
            "INSERT INTO shardgate.reshard_jobs (database, moves, phase, preflight, options) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[
                &database,
                &moves,
                &Phase::Preflight.name(),
                &preflight,
                &options,
            ],
        )
        .await;
    let id: i64 = match inserted {
        Ok(row) => row.get(0),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            let active = client
                .query_one(
                    "SELECT id FROM shardgate.reshard_jobs WHERE database = $1 \
                     AND phase NOT IN ('finished', 'rolled_back', 'aborted', 'failed')",
                    &[&database],
                )
                .await
                .map_err(refused("the active job lookup"))?;
            return Err(JobError::Busy(database.to_string(), active.get(0)));
        }
        Err(e) => return Err(refused("the new job")(e).into()),
    };
    let text =
        "pre-flight passed; job recorded: dual-write starts when a shardgate's driver takes it";
    note(&*client, id, Phase::Preflight, text).await?;
    Ok(id)
}

async fn note(
    client: &impl tokio_postgres::GenericClient,
    id: i64,
    phase: Phase,
    text: &str,
) -> Result<(), ControlError> {
    client
        .execute(
            "INSERT INTO shardgate.reshard_history (job_id, phase, note) VALUES ($1, $2, $3)",
            &[&id, &phase.name(), &text],
        )
        .await
        .map_err(refused("the job's history"))?;
    Ok(())
}

/// The job and its history.
pub async fn get(db: &ControlDb, id: i64) -> Result<Job, JobError> {
    let client = db.client().await?;
    let row = client
        .query_opt(
            "SELECT database, phase, paused, moves, coalesce(preflight, 'null'), error \
             FROM shardgate.reshard_jobs WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(refused("the job lookup"))?
        .ok_or(JobError::NotFound(id))?;
    let phase: String = row.get(1);
    let history = client
        .query(
            "SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), phase, note \
             FROM shardgate.reshard_history WHERE job_id = $1 ORDER BY at",
            &[&id],
        )
        .await
        .map_err(refused("the job's history"))?
        .iter()
        .map(|r| HistoryLine {
            at: r.get(0),
            phase: r.get(1),
            note: r.get(2),
        })
        .collect();
    Ok(Job {
        id,
        database: row.get(0),
        phase: Phase::parse(&phase).map_or("unknown", Phase::name),
        paused: row.get(2),
        moves: row.get(3),
        preflight: row.get(4),
        error: row.get(5),
        history,
    })
}

/// An operator's action on a job: the phase it needs and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Cutover,
    Rollback,
    Abort,
    Finish,
    Verify,
}

impl Action {
    pub fn parse(name: &str) -> Option<Action> {
        Some(match name {
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "cutover" => Action::Cutover,
            "rollback" => Action::Rollback,
            "abort" => Action::Abort,
            "finish" => Action::Finish,
            "verify" => Action::Verify,
            _ => return None,
        })
    }

    /// The phases it is allowed in, and why not elsewhere.
    fn needs(self) -> (&'static [Phase], &'static str) {
        const RUNNING: &[Phase] = &[Phase::DualWrite, Phase::Backfill, Phase::Verify];
        match self {
            Action::Pause | Action::Resume => (
                RUNNING,
                "only dual-write, backfill and verification can be paused and resumed",
            ),
            Action::Cutover => (
                &[Phase::Ready],
                "cutover needs verification to have passed (phase ready)",
            ),
            Action::Rollback => (
                &[Phase::Cutover, Phase::ReverseDualWrite],
                "rollback needs a cut-over move (phase cutover or reverse_dual_write); before that, abort",
            ),
            Action::Abort => (
                &[Phase::Preflight, Phase::DualWrite, Phase::Backfill, Phase::Verify, Phase::Ready],
                "abort is possible until the first slice is cut over; after that, roll back",
            ),
            Action::Finish => (
                &[Phase::ReverseDualWrite],
                "finish needs every slice cut over (phase reverse_dual_write)",
            ),
            Action::Verify => (
                &[Phase::Ready, Phase::ReverseDualWrite, Phase::Finished],
                "verification runs on its own until the job is ready; ask for another run in phase ready, reverse_dual_write or finished",
            ),
        }
    }

    /// The phase it leads to (`None`: the phase stays, the paused flag changes).
    fn leads_to(self) -> Option<Phase> {
        match self {
            Action::Pause | Action::Resume => None,
            Action::Cutover => Some(Phase::Cutover),
            Action::Rollback => Some(Phase::RollingBack),
            Action::Abort => Some(Phase::Aborted),
            Action::Finish => Some(Phase::Finishing),
            // In ready, a new run of the verify phase; later, a run beside the phase.
            Action::Verify => None,
        }
    }
}

/// Runs an operator's action: the job's driver (in whichever shardgate holds it) carries it out.
pub async fn act(db: &ControlDb, id: i64, action: Action) -> Result<(), JobError> {
    let mut client = db.client().await?;
    let tx = client
        .transaction()
        .await
        .map_err(refused("the action's transaction"))?;
    let row = tx
        .query_opt(
            "SELECT phase FROM shardgate.reshard_jobs WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .map_err(refused("the job lookup"))?
        .ok_or(JobError::NotFound(id))?;
    let phase: String = row.get(0);
    let (allowed, why) = action.needs();
    let Some(current) = Phase::parse(&phase).filter(|p| allowed.contains(p)) else {
        return Err(JobError::Conflict { id, phase, why });
    };
    if action == Action::Verify && current != Phase::Ready {
        tx.execute(
            "UPDATE shardgate.reshard_jobs SET verify_requested = true WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(refused("the action"))?;
        note(&tx, id, current, "verification asked by the operator").await?;
        tx.commit().await.map_err(refused("the action"))?;
        return Ok(());
    }
    let (to, paused) = match action {
        Action::Verify => (Phase::Verify, false),
        Action::Pause => (current, true),
        Action::Resume | Action::Cutover | Action::Rollback | Action::Abort | Action::Finish => {
            (action.leads_to().unwrap_or(current), false)
        }
    };
    tx.execute(
        "UPDATE shardgate.reshard_jobs SET phase = $2, paused = $3, updated_at = now() \
         WHERE id = $1",
        &[&id, &to.name(), &paused],
    )
    .await
    .map_err(refused("the action"))?;
    note(
        &tx,
        id,
        to,
        &format!("{action:?} asked by the operator").to_lowercase(),
    )
    .await?;
    tx.commit().await.map_err(refused("the action"))?;
    Ok(())
}

/// Moves a job from phase `from` to `to` with a line of history, if it is still in `from` (an
/// operator's action may have moved it meanwhile); whether it moved.
pub async fn advance(
    db: &ControlDb,
    id: i64,
    from: Phase,
    to: Phase,
    text: &str,
) -> Result<bool, ControlError> {
    let mut client = db.client().await?;
    let tx = client
        .transaction()
        .await
        .map_err(refused("the phase change"))?;
    let moved = tx
        .execute(
            "UPDATE shardgate.reshard_jobs SET phase = $3, error = NULL, updated_at = now() \
             WHERE id = $1 AND phase = $2",
            &[&id, &from.name(), &to.name()],
        )
        .await
        .map_err(refused("the phase change"))?
        == 1;
    if moved {
        note(&tx, id, to, text).await?;
    }
    tx.commit().await.map_err(refused("the phase change"))?;
    Ok(moved)
}

/// A line of history in the job's current phase (progress worth keeping, a retried attempt).
pub async fn remark(db: &ControlDb, id: i64, phase: Phase, text: &str) -> Result<(), ControlError> {
    note(&*db.client().await?, id, phase, text).await
}

/// Shows what stopped the driver last (cleared by the next phase change).
pub async fn set_error(db: &ControlDb, id: i64, error: &str) -> Result<(), ControlError> {
    let client = db.client().await?;
    client
        .execute(
            "UPDATE shardgate.reshard_jobs SET error = $2, updated_at = now() WHERE id = $1",
            &[&id, &error],
        )
        .await
        .map_err(refused("the job's error"))?;
    Ok(())
}

/// What the driver reads at each step.
#[derive(Debug, Clone)]
pub struct State {
    pub phase: Phase,
    pub paused: bool,
    pub cleaned: bool,
    /// The operator asked for a verification run beside the phase.
    pub verify_requested: bool,
    pub database: String,
    pub moves: Vec<Move>,
    pub preflight: Value,
    pub options: Value,
}

pub async fn state(db: &ControlDb, id: i64) -> Result<State, JobError> {
    let client = db.client().await?;
    let row = client
        .query_opt(
            "SELECT phase, paused, cleaned, database, moves, coalesce(preflight, 'null'), options, \
             verify_requested FROM shardgate.reshard_jobs WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(refused("the job lookup"))?
        .ok_or(JobError::NotFound(id))?;
    let phase: String = row.get(0);
    let moves: Value = row.get(4);
    Ok(State {
        phase: Phase::parse(&phase).unwrap_or(Phase::Failed),
        paused: row.get(1),
        cleaned: row.get(2),
        database: row.get(3),
        moves: serde_json::from_value(moves).unwrap_or_default(),
        preflight: row.get(5),
        options: row.get(6),
        verify_requested: row.get(7),
    })
}

/// The jobs a driver has work on: not over, or over with the shards not cleaned yet.
pub async fn unsettled(db: &ControlDb) -> Result<Vec<i64>, ControlError> {
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT id FROM shardgate.reshard_jobs \
             WHERE phase NOT IN ('finished', 'rolled_back', 'aborted', 'failed') OR NOT cleaned \
             OR verify_requested \
             ORDER BY id",
            &[],
        )
        .await
        .map_err(refused("the jobs in progress"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The verification run the operator asked for is done.
pub async fn verified(db: &ControlDb, id: i64) -> Result<(), ControlError> {
    let client = db.client().await?;
    client
        .execute(
            "UPDATE shardgate.reshard_jobs SET verify_requested = false WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(refused("the verification request"))?;
    Ok(())
}

/// The shards hold nothing of the job any more.
pub async fn mark_cleaned(db: &ControlDb, id: i64) -> Result<(), ControlError> {
    let client = db.client().await?;
    client
        .execute(
            "UPDATE shardgate.reshard_jobs SET cleaned = true WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(refused("the job's cleanup"))?;
    Ok(())
}

/// Saves where a table's backfill stands (after each batch: a crash re-copies at most one).
pub async fn save_checkpoint(
    db: &ControlDb,
    id: i64,
    table: &str,
    at: &Checkpoint,
) -> Result<(), ControlError> {
    let client = db.client().await?;
    client
        .execute(
            "INSERT INTO shardgate.reshard_checkpoints \
             (job_id, table_name, last_key, end_key, rows_copied, done) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (job_id, table_name) DO UPDATE SET last_key = EXCLUDED.last_key, \
             end_key = EXCLUDED.end_key, rows_copied = EXCLUDED.rows_copied, \
             done = EXCLUDED.done, updated_at = now()",
            &[&id, &table, &at.last_key, &at.end_key, &at.rows, &at.done],
        )
        .await
        .map_err(refused("the checkpoint"))?;
    Ok(())
}

/// Notes how many rows a table's copy has to go through and the last primary key it copies
/// (when it starts).
pub async fn save_total(
    db: &ControlDb,
    id: i64,
    table: &str,
    total: i64,
    end_key: &Option<Vec<String>>,
) -> Result<(), ControlError> {
    let client = db.client().await?;
    client
        .execute(
            "INSERT INTO shardgate.reshard_checkpoints (job_id, table_name, rows_total, end_key) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job_id, table_name) DO UPDATE SET rows_total = EXCLUDED.rows_total, \
             end_key = EXCLUDED.end_key",
            &[&id, &table, &total, end_key],
        )
        .await
        .map_err(refused("the table's row count"))?;
    Ok(())
}

/// Backfill's progress per table, as `GET /v1/reshard/{id}` shows it: rows copied of about
/// how many, rows/s since the table's copy started, and the seconds left at that rate.
pub async fn progress(db: &ControlDb, id: i64) -> Result<Vec<Value>, ControlError> {
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT table_name, rows_copied, done, rows_total, \
                    extract(epoch FROM updated_at - started_at)::float8 \
             FROM shardgate.reshard_checkpoints WHERE job_id = $1 ORDER BY table_name",
            &[&id],
        )
        .await
        .map_err(refused("the checkpoints"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let (copied, done, total, secs): (i64, bool, Option<i64>, f64) =
                (r.get(1), r.get(2), r.get(3), r.get(4));
            let rate = if secs > 0.0 {
                copied as f64 / secs
            } else {
                0.0
            };
            let eta = match total {
                Some(_) if done => Some(0.0),
                Some(t) if rate > 0.0 => Some((t - copied).max(0) as f64 / rate),
                _ => None,
            };
            serde_json::json!({
                "table": r.get::<_, String>(0),
                "rows_copied": copied,
                "rows_total": total,
                "done": done,
                "rows_per_second": rate.round(),
                "eta_seconds": eta.map(f64::ceil),
            })
        })
        .collect())
}

/// Every table's checkpoint of job `id`, by table name (a table not started has none).
pub async fn checkpoints(
    db: &ControlDb,
    id: i64,
) -> Result<Vec<(String, Checkpoint)>, ControlError> {
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT table_name, last_key, rows_copied, done, end_key \
             FROM shardgate.reshard_checkpoints \
             WHERE job_id = $1 ORDER BY table_name",
            &[&id],
        )
        .await
        .map_err(refused("the checkpoints"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let at = Checkpoint {
                last_key: r.get(1),
                end_key: r.get(4),
                rows: r.get(2),
                done: r.get(3),
            };
            (r.get(0), at)
        })
        .collect())
}
