//! The errors routing gives the client: in PostgreSQL's terms, each with what to do about it.

use super::super::fanout::{FanOut, Job};
use crate::protocol::{PgError, SqlState};
use crate::router::{KeyProblem, Plan, RouteError, Router};

/// A multi-shard statement inside a transaction, which runs on one shard.
pub(super) fn in_transaction_error(router: &Router, fan: &FanOut) -> PgError {
    if let Job::CopyIn(c) = &fan.job {
        return PgError::error(
            SqlState::FeatureNotSupported,
            format!("COPY into sharded table \"{}\" sends its rows to several shards, so it runs only outside transaction blocks (and outside an extended-protocol batch already running on one shard)", c.table),
        )
        .with_hint("Run the COPY on its own, outside BEGIN … COMMIT: shardgate commits it on every shard or on none.");
    }
    let names: Vec<String> = fan
        .shards
        .iter()
        .map(|&s| format!("\"{}\"", router.shard_name(s)))
        .collect();
    PgError::error(
        SqlState::FeatureNotSupported,
        format!("the statement needs shards {}, and statements on several shards run only outside transaction blocks (and outside an extended-protocol batch already running on one shard)", names.join(", ")),
    )
    .with_hint("Run it outside BEGIN … COMMIT, or filter on the sharding key so it needs one shard.")
}

pub(super) fn aborted_error() -> PgError {
    PgError::error(
        SqlState::InFailedSqlTransaction,
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

/// A DO block that raises `err` as the backend's own error.
pub(super) fn raise_sql(err: &PgError) -> String {
    // Dollar signs are dropped so no text can end the quoting early.
    let clean = |s: &str| s.replace('$', "");
    format!(
        "DO $sg$BEGIN RAISE EXCEPTION USING ERRCODE = '{}', MESSAGE = $m${}$m$, DETAIL = $d${}$d$, HINT = $h${}$h$; END$sg$",
        err.code.code(),
        clean(&err.message),
        clean(err.detail.as_deref().unwrap_or("")),
        clean(err.hint.as_deref().unwrap_or("")),
    )
}

pub(super) fn end_tag(sql: &str) -> &'static str {
    let word = crate::router::lex::strip_comments_start(sql)
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    match word.as_str() {
        "rollback" | "abort" => "ROLLBACK",
        _ => "COMMIT",
    }
}

pub(in crate::session) fn route_error(e: &RouteError) -> PgError {
    let code = match e {
        RouteError::BadKey(problem, _) => match problem {
            KeyProblem::Syntax => SqlState::InvalidTextRepresentation,
            KeyProblem::Range => SqlState::NumericValueOutOfRange,
            KeyProblem::Encoding => SqlState::CharacterNotInRepertoire,
            KeyProblem::Binary => SqlState::InvalidBinaryRepresentation,
            KeyProblem::Null => SqlState::NotNullViolation,
            KeyProblem::Protocol => SqlState::ProtocolViolation,
            KeyProblem::Unowned => SqlState::InvalidParameterValue,
        },
        _ => SqlState::FeatureNotSupported,
    };
    PgError::error(code, e.to_string()).with_hint(e.hint())
}

/// Statements that need several shards, until multi-shard execution exists: refused.
pub(super) fn multi_shard_error(router: &Router, plan: &Plan, shards: &[usize]) -> PgError {
    let names: Vec<String> = shards
        .iter()
        .map(|&s| format!("\"{}\"", router.shard_name(s)))
        .collect();
    let what = match plan {
        Plan::Scatter(s) => format!(
            "the query on sharded table \"{}\" does not filter on its sharding key \"{}\", so it needs every shard",
            s.table, s.key_column
        ),
        Plan::Broadcast(_) => "the statement must run on every shard".to_string(),
        Plan::Keyed(k) => format!(
            "the keys of this statement on \"{}\" live on shards {}",
            k.table,
            names.join(", ")
        ),
        _ => format!("the statement needs shards {}", names.join(", ")),
    };
    PgError::error(
        SqlState::FeatureNotSupported,
        format!("{what}; statements spanning several shards are not supported by this version of shardgate"),
    )
    .with_hint("Filter on the sharding key so the statement needs one shard, or prefix it with /* shardgate: shard=NAME */.")
}
