//! The plan for a statement's text: parsed by sqlparser when it can, classified by its leading
//! keywords when it cannot (fail closed: DESIGN §2.4).

use std::sync::Arc;

use sqlparser::ast::{
    CopyLegacyOption, CopyOption, CopySource, CopyTarget, Declare, Query, Statement,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::catalog::{Catalog, TableKind};
use super::lex::{bare_words, leading_words, statements};
use super::plan::{Broadcast, KeySource, Keyed, Plan, RouteError, Scatter};
use super::split::InsertSplit;
use super::{analyze, columns, dml, merge};
use crate::config::RoutingConfig;

pub(super) struct Context<'a> {
    pub catalog: &'a Catalog,
    pub routing: &'a RoutingConfig,
}

/// The plan for a whole simple-query string (or one extended-protocol statement).
pub(super) fn plan_text(sql: &str, cx: &Context) -> Plan {
    let texts: Vec<&str> = statements(sql).collect();
    let mut plans: Vec<Plan> = texts.iter().map(|s| plan_one(s, cx)).collect();
    if let Some(listed) = columns::whole_text(sql, &texts, &plans) {
        return Plan::ListColumns(listed.into());
    }
    match plans.len() {
        0 => Plan::Anywhere,
        1 => plans.pop().expect("one plan"),
        _ => Plan::Multi(plans),
    }
}

fn plan_one(sql: &str, cx: &Context) -> Plan {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(parsed) => match parsed.as_slice() {
            [one] => plan_statement(one, sql, cx),
            _ => unparsed(sql, "it is not one statement", cx),
        },
        Err(e) => {
            match relaxed(sql).and_then(|t| Parser::parse_sql(&PostgreSqlDialect {}, &t).ok()) {
                Some(parsed) if parsed.len() == 1 => plan_statement(&parsed[0], sql, cx),
                _ => by_keywords(sql, &e.to_string(), cx),
            }
        }
    }
}

/// The plan of a parsed statement; `sql` is its text (for statements not routed by their AST).
fn plan_statement(s: &Statement, sql: &str, cx: &Context) -> Plan {
    use Statement as S;
    match s {
        S::Query(q) => with_merge(
            dml::plan(analyze::walk(s, cx.catalog), cx.routing),
            q,
            sql,
            cx,
        ),
        S::Insert(i) => columns::list(i, sql, cx.catalog).unwrap_or_else(|| {
            with_split(dml::plan(analyze::walk(s, cx.catalog), cx.routing), sql)
        }),
        S::Update(_) | S::Delete(_) | S::Merge(_) => {
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
        | S::Close { .. }
        | S::Reset(_)
        | S::LISTEN { .. }
        | S::UNLISTEN { .. }
        | S::NOTIFY { .. } => Plan::Anywhere,
        S::Explain { statement, .. } => explain(plan_statement(statement, sql, cx)),
        S::Declare { stmts } => match stmts.as_slice() {
            [Declare {
                for_query: Some(q), ..
            }] => cursor(dml::plan(
                analyze::walk(&S::Query(q.clone()), cx.catalog),
                cx.routing,
            )),
            _ => unparsed(sql, "shardgate does not route this kind of statement", cx),
        },
        S::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            ..
        } => copy(source, *to, (target, options, legacy_options), cx),
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
        _ => unparsed(sql, "shardgate does not route this kind of statement", cx),
    }
}

/// A read that may run on several shards learns how their rows are merged.
fn with_merge(plan: Plan, q: &Query, sql: &str, cx: &Context) -> Plan {
    let spec = || Some(Arc::new(merge::spec(q, sql, cx.catalog)));
    match plan {
        Plan::Scatter(s) => Plan::Scatter(Scatter { merge: spec(), ..s }),
        Plan::Keyed(k) if !k.write && may_span(&k.keys) => {
            Plan::Keyed(Keyed { merge: spec(), ..k })
        }
        other => other,
    }
}

/// An INSERT of several rows learns how to split them per shard.
fn with_split(plan: Plan, sql: &str) -> Plan {
    match plan {
        Plan::Keyed(k) if k.rows => {
            let split = Some(Arc::new(InsertSplit::new(sql, k.keys.len())));
            Plan::Keyed(Keyed { split, ..k })
        }
        other => other,
    }
}

/// Whether keys may live on several shards.
fn may_span(keys: &[KeySource]) -> bool {
    keys.len() > 1 || keys.iter().any(|s| matches!(s, KeySource::ParamArray(_)))
}

/// A cursor is read row by row from one server: only for queries that run on one shard.
fn cursor(inner: Plan) -> Plan {
    match inner {
        Plan::Scatter(s) => Plan::Reject(RouteError::Unsupported {
            what: format!("a cursor over sharded table \"{}\" without its sharding key \"{}\" would read every shard", s.table, s.key_column),
            hint: format!("Add \"{} = …\" to the cursor's query, or run the query without a cursor.", s.key_column),
        }),
        other => other,
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

/// Where a COPY FROM reads its rows, and how they are spelled.
type CopyFrom<'a> = (&'a CopyTarget, &'a [CopyOption], &'a [CopyLegacyOption]);

fn copy(source: &CopySource, to: bool, from: CopyFrom, cx: &Context) -> Plan {
    let (table, columns) = match source {
        CopySource::Query(q) => {
            let stmt = Statement::Query(q.clone());
            return dml::plan(analyze::walk(&stmt, cx.catalog), cx.routing);
        }
        CopySource::Table {
            table_name,
            columns,
        } => (table_name, columns),
    };
    match (cx.catalog.kind(table), to) {
        (TableKind::Sharded { table, key }, true) => Plan::Scatter(Scatter {
            table,
            key_column: key,
            merge: None,
        }),
        (TableKind::Sharded { table, key }, false) => {
            let (target, options, legacy) = from;
            super::copy::plan(table, key, columns, target, options, legacy)
        }
        (TableKind::Reference(_), true) => Plan::Reference,
        (TableKind::Reference(_), false) => Plan::Broadcast(Broadcast::ReferenceWrite),
        (TableKind::Other(table), _) => Plan::Home { table },
        (TableKind::System, _) => Plan::Anywhere,
    }
}

/// A statement shardgate cannot route by its AST. If its text names a sharded table anywhere
/// (even in a string or a DO body), only the shard a transaction is pinned to may take it: the
/// default shard holds only some of that table's rows.
fn unparsed(sql: &str, why: &str, cx: &Context) -> Plan {
    let words = leading_words(sql, 2);
    let words: Vec<&str> = words
        .iter()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '_'))
        .collect();
    let what = words.join(" ").to_uppercase();
    Plan::Unparsed {
        what: format!("{what} ({why})"),
        sharded: cx.catalog.mentioned(sql),
    }
}

/// Statements sqlparser rejects but Postgres accepts, classified by their leading keywords.
/// Only what cannot touch a shard's rows is given a place; everything else is `Unparsed`.
fn by_keywords(sql: &str, error: &str, cx: &Context) -> Plan {
    let words = leading_words(sql, 2);
    let w = |i: usize| words.get(i).map_or("", String::as_str);
    match (w(0), w(1)) {
        ("begin" | "start", _) => Plan::Begin,
        ("commit" | "rollback", "prepared") => {
            unparsed(sql, "a prepared transaction lives on one shard", cx)
        }
        ("rollback", "to") => Plan::Anywhere,
        ("commit" | "end" | "abort" | "rollback", _) => Plan::End,
        (
            "set" | "show" | "reset" | "discard" | "savepoint" | "release" | "listen" | "unlisten"
            | "notify" | "deallocate",
            _,
        ) => Plan::Anywhere,
        _ => unparsed(
            sql,
            &format!("not understood by the SQL parser: {error}"),
            cx,
        ),
    }
}

/// The statement with locking clauses the parser lacks (`FOR NO KEY UPDATE`, `FOR KEY SHARE`)
/// turned into ones it knows by blanking the words `NO KEY` / `KEY`: same length, so source
/// positions stay valid. Only words outside strings, quoted identifiers and comments count: a key
/// literal is never changed. Only for routing: the original text is what is sent.
fn relaxed(sql: &str) -> Option<String> {
    let words = bare_words(sql);
    let is = |i: usize, w: &str| {
        words
            .get(i)
            .is_some_and(|(_, word)| word.eq_ignore_ascii_case(w))
    };
    let mut blank = Vec::new();
    for i in 0..words.len() {
        if is(i, "for") && is(i + 1, "no") && is(i + 2, "key") && is(i + 3, "update") {
            blank.extend([i + 1, i + 2]);
        } else if is(i, "for") && is(i + 1, "key") && is(i + 2, "share") {
            blank.push(i + 1);
        }
    }
    if blank.is_empty() {
        return None;
    }
    let mut out = sql.to_string();
    for i in blank {
        let (at, word) = words[i];
        out.replace_range(at..at + word.len(), &" ".repeat(word.len()));
    }
    Some(out)
}
