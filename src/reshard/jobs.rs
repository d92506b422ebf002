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
) -> Result<i64, JobError> {
    let client = db.client().await?;
    let moves = serde_json::to_value(moves).expect("moves serialize");
    let preflight = serde_json::to_value(report).expect("report serializes");
    let inserted = client
        .query_one(
            "INSERT INTO shardgate.reshard_jobs (database, moves, phase, preflight) \
             VALUES ($1, $2, $3, $4) RETURNING id",
            &[&database, &moves, &Phase::Preflight.name(), &preflight],
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
    let text = "pre-flight passed; job recorded. Dual-write, backfill, verification and cutover \
                are not in this version yet: the job waits here until they are (abort it meanwhile)";
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

/// Aborts a job that has not cut anything over: nothing on the shards is undone (the target's
/// copies of moved rows, if any, are left for the operator to drop).
pub async fn abort(db: &ControlDb, id: i64) -> Result<(), JobError> {
    let mut client = db.client().await?;
    let tx = client
        .transaction()
        .await
        .map_err(refused("the abort's transaction"))?;
    let row = tx
        .query_opt(
            "SELECT phase FROM shardgate.reshard_jobs WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .map_err(refused("the job lookup"))?
        .ok_or(JobError::NotFound(id))?;
    let phase: String = row.get(0);
    if !Phase::parse(&phase).is_some_and(Phase::may_abort) {
        return Err(JobError::Conflict {
            id,
            phase,
            why: "abort is possible until the first slice is cut over; after that, roll back",
        });
    }
    tx.execute(
        "UPDATE shardgate.reshard_jobs SET phase = $2, paused = false, updated_at = now() \
         WHERE id = $1",
        &[&id, &Phase::Aborted.name()],
    )
    .await
    .map_err(refused("the abort"))?;
    note(&tx, id, Phase::Aborted, "aborted by the operator").await?;
    tx.commit().await.map_err(refused("the abort"))?;
    Ok(())
}

/// The refusal of an action this version cannot run yet in the job's phase.
pub async fn refuse_action(db: &ControlDb, id: i64, action: &str) -> JobError {
    let phase = match get(db, id).await {
        Ok(job) => job.phase.to_string(),
        Err(e) => return e,
    };
    let why = match action {
        "cutover" => "cutover needs verification to have passed (phase ready)",
        "rollback" => "rollback needs a cut-over slice (phase cutover or reverse_dual_write)",
        "finish" => "finish needs every slice cut over (phase reverse_dual_write)",
        "pause" | "resume" => {
            "only dual-write, backfill and verification can be paused and resumed"
        }
        _ => "unknown action",
    };
    JobError::Conflict { id, phase, why }
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
            "INSERT INTO shardgate.reshard_checkpoints (job_id, table_name, last_key, rows_copied, done) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (job_id, table_name) DO UPDATE SET last_key = EXCLUDED.last_key, \
             rows_copied = EXCLUDED.rows_copied, done = EXCLUDED.done, updated_at = now()",
            &[&id, &table, &at.last_key, &at.rows, &at.done],
        )
        .await
        .map_err(refused("the checkpoint"))?;
    Ok(())
}

/// Every table's checkpoint of job `id`, by table name (a table not started has none).
pub async fn checkpoints(
    db: &ControlDb,
    id: i64,
) -> Result<Vec<(String, Checkpoint)>, ControlError> {
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT table_name, last_key, rows_copied, done FROM shardgate.reshard_checkpoints \
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
                rows: r.get(2),
                done: r.get(3),
            };
            (r.get(0), at)
        })
        .collect())
}
