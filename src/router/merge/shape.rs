//! Questions about a query's shape that decide whether its shards' rows can be merged: its
//! aggregates and window functions, whether it reads sharded tables below its top level, and
//! which groups stay on one shard.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Function, GroupByExpr, ObjectName, Query, Select, SelectItem, SetExpr, TableFactor,
    Visit, Visitor,
};

use super::super::catalog::{ident, Catalog, TableKind};
use super::AGGREGATES;

pub(super) fn as_function(e: &Expr) -> Option<&Function> {
    match e {
        Expr::Function(f) => Some(f),
        Expr::Nested(inner) => as_function(inner),
        _ => None,
    }
}

/// A function's name without a `pg_catalog.` prefix, as Postgres folds it.
pub(super) fn function_name(name: &ObjectName) -> String {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.as_ident().map(ident).unwrap_or_default())
        .collect();
    match parts.as_slice() {
        [schema, f] if schema == "pg_catalog" => f.clone(),
        [f] => f.clone(),
        _ => parts.join("."),
    }
}

/// The first built-in aggregate called in `e` (not in its subqueries, which aggregate their own
/// rows).
pub(super) fn first_aggregate(e: &Expr) -> Option<String> {
    struct Find(Option<String>, usize);
    impl Visitor for Find {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.1 += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.1 -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let (Expr::Function(f), 0) = (e, self.1) {
                let name = function_name(&f.name);
                if AGGREGATES.contains(&name.as_str()) {
                    self.0 = Some(name);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut find = Find(None, 0);
    let _ = e.visit(&mut find);
    find.0
}

pub(super) fn has_window(q: &Query) -> bool {
    struct Find;
    impl Visitor for Find {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            match e {
                Expr::Function(f) if f.over.is_some() => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    q.visit(&mut Find).is_break()
}

/// Whether a derived table or CTE reads a sharded table and combines its rows (aggregates,
/// DISTINCT, LIMIT, …): each shard would combine only its own part. Subqueries in expressions and
/// LATERAL ones are evaluated row by row, and the planner has checked that they are joined on
/// the key of the row they belong to, so they stay on its shard.
pub(super) fn nested_sharded(q: &Query, catalog: &Catalog) -> bool {
    struct Find<'c>(&'c Catalog);
    impl Visitor for Find<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            match t {
                TableFactor::Derived {
                    lateral: false,
                    subquery,
                    ..
                } if reads_sharded(subquery, self.0) && !row_by_row(subquery) => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            let Some(with) = &q.with else {
                return ControlFlow::Continue(());
            };
            let combined = with.cte_tables.iter().any(|c| {
                reads_sharded(&c.query, self.0) && (with.recursive || !row_by_row(&c.query))
            });
            if combined {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    q.visit(&mut Find(catalog)).is_break()
}

fn reads_sharded(q: &Query, catalog: &Catalog) -> bool {
    let mut found = false;
    let _ = sqlparser::ast::visit_relations(q, |name| {
        found = matches!(catalog.kind(name), TableKind::Sharded { .. });
        if found {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found
}

/// A query whose rows are its input rows, filtered and projected one by one.
fn row_by_row(q: &Query) -> bool {
    let SetExpr::Select(s) = &*q.body else {
        return false;
    };
    let grouped = !matches!(&s.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    let aggregated = s.projection.iter().any(|item| match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
            first_aggregate(e).is_some()
        }
        _ => false,
    });
    !grouped
        && !aggregated
        && s.having.is_none()
        && s.distinct.is_none()
        && q.limit_clause.is_none()
        && q.fetch.is_none()
        && !has_window(q)
}

/// The sharding keys of the sharded tables in the FROM list: (the name the query uses for the
/// table, key column). Groups on any of them stay on one shard (sharded tables of one scatter
/// are joined on their keys).
pub(super) fn local_keys(select: &Select, catalog: &Catalog) -> Vec<(Option<String>, String)> {
    let mut keys = Vec::new();
    let mut add = |factor: &TableFactor| {
        if let TableFactor::Table { name, alias, .. } = factor {
            if let TableKind::Sharded { table, key } = catalog.kind(name) {
                if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
                    return; // renamed columns: `key` may be another column
                }
                let visible = alias.as_ref().map_or_else(
                    || table.rsplit('.').next().unwrap_or(&table).to_string(),
                    |a| ident(&a.name),
                );
                keys.push((Some(visible), key.to_string()));
            }
        }
    };
    for t in &select.from {
        add(&t.relation);
        for j in &t.joins {
            add(&j.relation);
        }
    }
    keys
}

/// Whether a GROUP BY expression is a sharding key column.
pub(super) fn is_key(e: &Expr, keys: &[(Option<String>, String)]) -> bool {
    match e {
        Expr::Identifier(id) => keys.iter().any(|(_, k)| *k == ident(id)),
        Expr::CompoundIdentifier(ids) => match ids.as_slice() {
            [table, column] => keys
                .iter()
                .any(|(t, k)| t.as_deref() == Some(ident(table).as_str()) && *k == ident(column)),
            _ => false,
        },
        Expr::Nested(inner) => is_key(inner, keys),
        _ => false,
    }
}
