//! An INSERT without a column list into a sharded table gives its values by position. The router
//! lists the table's columns (as read from the shards) in the statement's text, and the shards
//! get that text: the value it routes by is then the value stored in the key column by name, even
//! if the table changed since its columns were read — an outdated list makes the shard report an
//! error, it never misplaces a row.

use std::sync::Arc;

use sqlparser::ast::{Insert, SetExpr, Statement, TableObject};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::catalog::{Catalog, TableKind};
use super::lex;
use super::plan::{Plan, RouteError};

/// `Plan::ListColumns` with `sql` (one statement) given its column list, when it is an
/// `INSERT … VALUES` into a sharded table without one whose columns are known, and the rows give
/// the key. `None` when it is not: the statement is planned as written.
pub(super) fn list(i: &Insert, sql: &str, catalog: &Catalog) -> Option<Plan> {
    if !i.columns.is_empty() {
        return None;
    }
    let TableObject::TableName(name) = &i.table else {
        return None;
    };
    let TableKind::Sharded { table, key } = catalog.kind(name) else {
        return None;
    };
    let Some(SetExpr::Values(values)) = i.source.as_deref().map(|q| q.body.as_ref()) else {
        return None;
    };
    let given = values.rows.first()?.content.len();
    let columns = catalog.columns(&table).ok()?;
    if columns.iter().position(|c| **c == *key)? >= given {
        return None;
    }
    let listed = &columns[..given.min(columns.len())];
    let cannot = || {
        RouteError::InsertKey {
        table: table.clone(),
        column: key.clone(),
        why: "in an explicit column list: shardgate could not list the table's columns in this statement's text".into(),
    }
    };
    let Some(text) = with_columns(sql, listed) else {
        return Some(Plan::Reject(cannot()));
    };
    if !lists(&text, listed) {
        return Some(Plan::Reject(cannot()));
    }
    Some(Plan::ListColumns(text.into()))
}

/// `sql` with `(columns)` before its `VALUES` (sqlparser reads no `OVERRIDING` clause, so a
/// statement with one never gets here).
fn with_columns(sql: &str, columns: &[Arc<str>]) -> Option<String> {
    let at = lex::top_level_word(sql, 0, "values")?;
    let quoted: Vec<String> = columns
        .iter()
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect();
    let (before, after) = sql.split_at(at);
    let space = if before.ends_with(char::is_whitespace) {
        ""
    } else {
        " "
    };
    Some(format!("{before}{space}({}) {after}", quoted.join(", ")))
}

/// Whether `text` parses as one INSERT whose column list is exactly `columns`.
fn lists(text: &str, columns: &[Arc<str>]) -> bool {
    let Ok(parsed) = Parser::parse_sql(&PostgreSqlDialect {}, text) else {
        return false;
    };
    let [Statement::Insert(i)] = parsed.as_slice() else {
        return false;
    };
    i.columns.len() == columns.len()
        && i.columns
            .iter()
            .zip(columns)
            .all(|(c, want)| super::analyze::last_name(c) == **want)
}

/// The whole text of a simple query whose statements (slices of `sql`) were planned as `plans`,
/// with each listed statement replaced by its listed text; `None` when none was listed.
pub(super) fn whole_text(sql: &str, statements: &[&str], plans: &[Plan]) -> Option<String> {
    if !plans.iter().any(|p| matches!(p, Plan::ListColumns(_))) {
        return None;
    }
    let mut out = String::with_capacity(sql.len() + 64);
    let mut done = 0;
    for (stmt, plan) in statements.iter().zip(plans) {
        let Plan::ListColumns(listed) = plan else {
            continue;
        };
        let start = stmt.as_ptr() as usize - sql.as_ptr() as usize;
        out.push_str(&sql[done..start]);
        out.push_str(listed);
        done = start + stmt.len();
    }
    out.push_str(&sql[done..]);
    Some(out)
}
