//! Routing hints for what a parser cannot see: a leading `/* shardgate: shard=s1 */` or
//! `/* shardgate: key=42 */` comment.

use std::sync::Arc;

use super::key::KeyValue;
use super::plan::{KeySource, Keyed, Plan, RouteError};
use crate::config::KeyType;

/// The plan a leading hint comment imposes, if the statement has one.
pub(super) fn plan(sql: &str, shards: &[Arc<str>], key_type: KeyType) -> Option<Plan> {
    let body = sql.trim_start().strip_prefix("/*")?;
    let body = &body[..body.find("*/")?];
    let directive = body.trim().strip_prefix("shardgate:")?.trim();
    let bad = |what: String| Some(Plan::Reject(RouteError::BadHint(what)));
    let Some((name, value)) = directive.split_once('=') else {
        return bad(format!(
            "expected shard=NAME or key=VALUE, got \"{directive}\""
        ));
    };
    let value = unquote(value.trim());
    let value = value.as_str();
    match name.trim() {
        "shard" => match shards.iter().position(|s| &**s == value) {
            Some(i) => Some(Plan::Shard(i)),
            None => bad(format!(
                "no shard named \"{value}\" (this database has {})",
                shards
                    .iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        },
        "key" => match KeyValue::from_text(key_type, value) {
            Ok(key) => Some(Plan::Keyed(Keyed {
                table: Arc::from("(hint)"),
                keys: vec![KeySource::Value(key)],
                write: true,
                rows: false,
                colocated: true,
                merge: None,
                split: None,
            })),
            Err(e) => bad(format!("key={value}: {e}")),
        },
        other => bad(format!(
            "unknown directive \"{other}\" (use shard= or key=)"
        )),
    }
}

/// `'it''s'` → `it's`, as a SQL string literal; anything else as written.
fn unquote(value: &str) -> String {
    match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(inner) => inner.replace("''", "'"),
        None => value.to_string(),
    }
}
