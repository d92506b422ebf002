//! The plan for a statement's text: parsed by sqlparser when it can, classified by its leading
//! keywords when it cannot (fail closed: DESIGN §2.4).

use sqlparser::ast::{CopySource, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::catalog::{Catalog, TableKind};
use super::lex::{leading_words, statements};
use super::plan::{Broadcast, Plan, RouteError, Scatter};
use super::{analyze, dml};
use crate::config::RoutingConfig;

pub(super) struct Context<'a> {
    pub catalog: &'a Catalog,
    pub routing: &'a RoutingConfig,
}

/// The plan for a whole simple-query string (or one extended-protocol statement).
pub(super) fn plan_text(sql: &str, cx: &Context) -> Plan {
    let mut plans: Vec<Plan> = statements(sql).map(|s| plan_one(s, cx)).collect();
    match plans.len() {
        0 => Plan::Anywhere,
        1 => plans.pop().expect("one plan"),
        _ => Plan::Multi(plans),
    }
}

fn plan_one(sql: &str, cx: &Context) -> Plan {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(parsed) => match parsed.as_slice() {
            [one] => plan_statement(one, cx),
            _ => unparsed(sql, "it is not one statement"),
        },
        Err(e) => {
            match relaxed(sql).and_then(|t| Parser::parse_sql(&PostgreSqlDialect {}, &t).ok()) {
                Some(parsed) if parsed.len() == 1 => plan_statement(&parsed[0], cx),
                _ => by_keywords(sql, &e.to_string()),
            }
        }
    }
}

fn plan_statement(s: &Statement, cx: &Context) -> Plan {
    use Statement as S;
    match s {
        S::Query(_) | S::Insert(_) | S::Update(_) | S::Delete(_) | S::Merge(_) => {
            dml::plan(analyze::walk(s, cx.catalog), cx.routing)
        }
        S::StartTransaction { .. } => Plan::Begin,
        S::Commit { .. }
        | S::Rollback {
            savepoint: None, ..
        } => Plan::End,
        S::Rollback { .. }
        | S::Savepoint { .. }
        | S::ReleaseSavepoint { .. }
        | S::Set(_)
        | S::ShowVariable { .. }
        | S::ShowVariables { .. }
        | S::Discard { .. }
        | S::Deallocate { .. }
        | S::Fetch { .. }
        | S::Close { .. } => Plan::Anywhere,
        S::Explain { statement, .. } => explain(plan_statement(statement, cx)),
        S::Copy { source, to, .. } => copy(source, *to, cx),
        S::CreateTable(_)
        | S::AlterTable(_)
        | S::CreateIndex(_)
        | S::AlterIndex { .. }
        | S::Drop { .. }
        | S::Truncate(_)
        | S::CreateView(_)
        | S::AlterView { .. }
        | S::CreateSequence { .. }
        | S::CreateSchema { .. }
        | S::CreateFunction(_)
        | S::DropFunction(_)
        | S::CreateExtension(_)
        | S::DropExtension(_)
        | S::CreateType { .. }
        | S::AlterType(_)
        | S::CreateDomain(_)
        | S::CreateTrigger(_)
        | S::DropTrigger(_)
        | S::Comment { .. }
        | S::Grant(_)
        | S::Revoke(_) => Plan::Broadcast(Broadcast::Ddl),
        other => unparsed(
            &other.to_string(),
            "shardgate does not route this kind of statement",
        ),
    }
}

/// EXPLAIN shows one server's plan: only for statements that run on one shard.
fn explain(inner: Plan) -> Plan {
    match inner {
        Plan::Scatter(_) | Plan::Broadcast(_) => Plan::Reject(RouteError::Unsupported {
            what: "EXPLAIN of a statement that runs on several shards".into(),
            hint: "Add the sharding key to the statement, or prefix it with /* shardgate: shard=NAME */ to explain it on one shard.".into(),
        }),
        // BEGIN and friends cannot be explained: Postgres will say so.
        Plan::Begin | Plan::End => Plan::Anywhere,
        other => other,
    }
}

fn copy(source: &CopySource, to: bool, cx: &Context) -> Plan {
    let table = match source {
        CopySource::Query(q) => {
            let stmt = Statement::Query(q.clone());
            return dml::plan(analyze::walk(&stmt, cx.catalog), cx.routing);
        }
        CopySource::Table { table_name, .. } => table_name,
    };
    match (cx.catalog.kind(table), to) {
        (TableKind::Sharded { table, key }, true) => Plan::Scatter(Scatter {
            table,
            key_column: key,
        }),
        (TableKind::Sharded { table, key }, false) => Plan::Reject(RouteError::Unsupported {
            what: format!("COPY FROM into sharded table \"{table}\" is not supported yet"),
            hint: format!(
                "Use INSERT statements that give \"{key}\", or COPY into each shard directly."
            ),
        }),
        (TableKind::Reference(_), true) => Plan::Reference,
        (TableKind::Reference(_), false) => Plan::Broadcast(Broadcast::ReferenceWrite),
        (TableKind::Other(table), _) => Plan::Home { table },
        (TableKind::System, _) => Plan::Anywhere,
    }
}

fn unparsed(sql: &str, why: &str) -> Plan {
    let what = leading_words(sql, 2).join(" ").to_uppercase();
    Plan::Unparsed {
        what: format!("{what} ({why})"),
    }
}

/// Statements sqlparser rejects but Postgres accepts, classified by their leading keywords.
/// Only what cannot touch a shard's rows is given a place; everything else is `Unparsed`.
fn by_keywords(sql: &str, error: &str) -> Plan {
    let words = leading_words(sql, 2);
    let w = |i: usize| words.get(i).map_or("", String::as_str);
    match (w(0), w(1)) {
        ("begin" | "start", _) => Plan::Begin,
        ("commit" | "rollback", "prepared") => {
            unparsed(sql, "a prepared transaction lives on one shard")
        }
        ("rollback", "to") => Plan::Anywhere,
        ("commit" | "end" | "abort" | "rollback", _) => Plan::End,
        (
            "set" | "show" | "reset" | "discard" | "savepoint" | "release" | "listen" | "unlisten"
            | "notify" | "deallocate",
            _,
        ) => Plan::Anywhere,
        _ => unparsed(sql, &format!("not understood by the SQL parser: {error}")),
    }
}

/// The statement with locking clauses the parser lacks replaced by ones it knows, same length
/// (so source positions stay valid). Only for routing: the original text is what is sent.
fn relaxed(sql: &str) -> Option<String> {
    let upper = sql.to_ascii_uppercase();
    let mut out = sql.to_string();
    let mut changed = false;
    for (from, to) in [
        ("FOR NO KEY UPDATE", "FOR UPDATE       "),
        ("FOR KEY SHARE", "FOR SHARE    "),
    ] {
        for (at, _) in upper.match_indices(from) {
            out.replace_range(at..at + from.len(), to);
            changed = true;
        }
    }
    // A replacement inside a string literal would change a key: only accept the relaxed text
    // when the phrase appears outside quotes.
    (changed && !upper.contains('\'')).then_some(out)
}
