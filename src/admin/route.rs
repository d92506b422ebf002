//! `POST /v1/route`: `{database, sql, params?}` → the routing decision `shardgate route` prints,
//! with the shards named, under the running snapshot. Nothing is sent to any server.

use serde::Deserialize;
use serde_json::{json, Value};

use super::json::{ok, parse, ApiError, Reply};
use super::Admin;
use crate::router::report::{decide_with, Decision};
use crate::router::{KeySource, Params, Plan, Router, Target};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteRequest {
    database: String,
    sql: String,
    /// Bind parameters `$1, $2, …`, as they would arrive in text format: strings and numbers
    /// (sent as their text), `null` for NULL. Omitted: the statement is routed as a simple
    /// query, and a key given as `$n` is reported as chosen by that parameter.
    #[serde(default)]
    params: Option<Vec<Value>>,
}

pub fn decide(admin: &Admin, body: &[u8]) -> Result<Reply, ApiError> {
    let req: RouteRequest = parse(body)?;
    let snapshot = admin.store.load();
    // The admin API keeps routers of its own, one set: as a single worker's.
    let router = admin
        .routers
        .get(&snapshot, &req.database, 0)
        .ok_or_else(|| {
            let known: Vec<&String> = snapshot.config.databases.keys().collect();
            ApiError::not_found(
                "unknown_database",
                format!(
                    "no database \"{}\" in the config; configured: {known:?}",
                    req.database
                ),
            )
        })?;
    let texts = req.params.as_deref().map(param_texts).transpose()?;
    let params = texts
        .as_ref()
        .map(|t| Params::text(t.iter().map(|v| v.as_deref().map(str::as_bytes)).collect()));
    let decision = decide_with(&router, &req.sql, params.as_ref());
    let mut body = json!({
        "database": req.database,
        "epoch": snapshot.epoch,
        "decision": decision.kind(),
        "detail": decision.to_string(),
        "shards": shards(&router, &req.sql, params.as_ref()),
    });
    if let Decision::Rejected(_) = decision {
        // Every routing refusal reaches the client as SQLSTATE 0A000 (DESIGN §2.5).
        body["sqlstate"] = json!("0A000");
    }
    Ok(ok(body))
}

/// Each parameter as the text a client would bind.
fn param_texts(params: &[Value]) -> Result<Vec<Option<String>>, ApiError> {
    params
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            Value::Number(n) => Ok(Some(n.to_string())),
            Value::Bool(b) => Ok(Some(b.to_string())),
            _ => Err(ApiError::bad_request(format!(
                "params[{i}] (${}) must be a string, a number, a boolean or null",
                i + 1
            ))),
        })
        .collect()
}

/// The shards the statement goes to, by name; `null` when no particular shard is known yet
/// (any shard, a key still in an unbound parameter, or a refusal).
fn shards(router: &Router, sql: &str, params: Option<&Params>) -> Value {
    let plan = router.plan(sql);
    let names = |ids: &[usize]| -> Value {
        ids.iter()
            .map(|&i| router.shard_name(i))
            .collect::<Vec<_>>()
            .into()
    };
    let from_param = |s: &KeySource| matches!(s, KeySource::Param(_) | KeySource::ParamArray(_));
    let unbound =
        params.is_none() && matches!(&*plan, Plan::Keyed(k) if k.keys.iter().any(from_param));
    if unbound {
        return Value::Null;
    }
    match router.resolve(&plan, params, None) {
        Ok(Target::Shard(i)) => names(&[i]),
        Ok(Target::Shards(ids)) => names(&ids),
        Ok(Target::Any) | Err(_) => Value::Null,
    }
}
