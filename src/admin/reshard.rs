//! `POST /v1/reshard`, `GET /v1/reshard/{id}` and `POST /v1/reshard/{id}/{action}` (DESIGN §2.6):
//! resharding jobs, over the control database ([`crate::reshard`]).

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::json::{parse, reply, ApiError, Reply};
use super::Admin;
use crate::control::ControlDb;
use crate::reshard::jobs::{self, JobError};
use crate::reshard::{plan_moves, preflight, MoveRequest};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    database: String,
    moves: Vec<MoveRequest>,
    /// Backfill's throttle; none: as fast as the source allows, backing off when it slows.
    #[serde(default)]
    rows_per_second: Option<u64>,
}

/// The actions of `POST /v1/reshard/{id}/{action}`.
pub const ACTIONS: [&str; 7] = [
    "pause", "resume", "cutover", "rollback", "abort", "finish", "verify",
];

fn control(admin: &Admin) -> Result<&ControlDb, ApiError> {
    admin.control.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_control_database",
            "resharding keeps its jobs in shardgate's control database: set `control:` in the \
             config (a Postgres URL) and restart",
        )
    })
}

/// Checks the moves, runs pre-flight and records the job: `202 {id, phase}`, or `409` with what
/// pre-flight found missing.
pub async fn start(admin: &Admin, body: &[u8]) -> Result<Reply, ApiError> {
    let req: StartRequest = parse(body)?;
    let db = control(admin)?;
    let config = admin.store.load().config.clone();
    let moves = plan_moves(&config, &req.database, &req.moves).map_err(ApiError::bad_request)?;
    let report = preflight::preflight(&config, &req.database, &moves).await;
    if !report.passed() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "preflight_failed",
            format!(
                "pre-flight found {} problem(s); nothing was started",
                report.problems.len()
            ),
        )
        .with_extra("problems", json!(report.problems)));
    }
    let id = jobs::create(
        db,
        &req.database,
        &moves,
        &report,
        json!({ "rows_per_second": req.rows_per_second }),
    )
    .await
    .map_err(job_error)?;
    tracing::info!(job = id, database = %req.database, "resharding job recorded");
    Ok(reply(
        StatusCode::ACCEPTED,
        json!({ "id": id, "phase": "preflight" }),
    ))
}

/// `{id, phase, moves, progress, verification, history}` and what pre-flight found.
pub async fn show(admin: &Admin, id: &str) -> Result<Reply, ApiError> {
    let db = control(admin)?;
    let job = jobs::get(db, job_id(id)?).await.map_err(job_error)?;
    let proxies = crate::reshard::heartbeat::live(db)
        .await
        .map_err(|e| job_error(e.into()))?;
    let tables = jobs::progress(db, job.id)
        .await
        .map_err(|e| job_error(e.into()))?;
    let verification = crate::reshard::verifying::last_run(db, job.id)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "control_unavailable", e))?;
    Ok(reply(
        StatusCode::OK,
        json!({
            "id": job.id,
            "database": job.database,
            "phase": job.phase,
            "paused": job.paused,
            "moves": job.moves,
            "progress": { "tables": tables },
            "verification": verification,
            "preflight": job.preflight,
            "error": job.error,
            "history": job.history,
            "proxies": proxies,
        }),
    ))
}

pub async fn act(admin: &Admin, id: &str, action: &str) -> Result<Reply, ApiError> {
    let db = control(admin)?;
    let id = job_id(id)?;
    let action = jobs::Action::parse(action).ok_or_else(|| {
        ApiError::bad_request(format!("unknown action {action:?}: one of {ACTIONS:?}"))
    })?;
    jobs::act(db, id, action).await.map_err(job_error)?;
    let job = jobs::get(db, id).await.map_err(job_error)?;
    Ok(reply(
        StatusCode::ACCEPTED,
        json!({ "id": id, "phase": job.phase }),
    ))
}

fn job_id(text: &str) -> Result<i64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::not_found("unknown_job", format!("no resharding job {text:?}")))
}

fn job_error(e: JobError) -> ApiError {
    let status = match &e {
        JobError::Control(_) => StatusCode::SERVICE_UNAVAILABLE,
        JobError::Busy(..) | JobError::Conflict { .. } => StatusCode::CONFLICT,
        JobError::NotFound(_) => StatusCode::NOT_FOUND,
    };
    let code = match &e {
        JobError::Control(_) => "control_database",
        JobError::Busy(..) => "job_in_progress",
        JobError::Conflict { .. } => "wrong_phase",
        JobError::NotFound(_) => "unknown_job",
    };
    ApiError::new(status, code, e.to_string())
}
