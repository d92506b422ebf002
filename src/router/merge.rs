//! How the results of a read that runs on several shards are merged into the one result a single
//! Postgres would return — or why they cannot be.
//!
//! Each shard runs the client's statement (spliced where it must differ: `avg(x)` becomes
//! `sum(x), count(x)`, `LIMIT l OFFSET o` becomes `LIMIT l+o OFFSET 0`, an ORDER BY column the
//! select list lacks is appended); shardgate then groups, aggregates, sorts and cuts the rows. A
//! shape whose merged answer could differ from one server's (window functions, HAVING over groups
//! that span shards, aggregates inside expressions, subqueries over sharded tables, …) is
//! refused: never answered wrongly.

use sqlparser::ast::{
    Distinct, DuplicateTreatment, Expr, Function, FunctionArguments, GroupByExpr, LimitClause,
    OrderByExpr, OrderByKind, OrderBySort, Query, Select, SelectItem, SetExpr, Spanned, Value,
};
use sqlparser::tokenizer::Location;

use super::catalog::{ident, Catalog};
use super::lex;
use super::plan::RouteError;

mod shape;

use shape::{
    as_function, first_aggregate, function_name, has_window, is_key, local_keys, nested_sharded,
};

/// What shardgate does with the rows of every shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeSpec {
    /// The text each shard runs when it differs from the client's.
    pub shard_sql: Option<String>,
    /// The client's result columns; `None` when the select list has `*` (columns passed through).
    pub outputs: Option<Vec<Output>>,
    /// Columns appended for ORDER BY only, dropped before the client sees the rows.
    pub hidden: usize,
    pub grouping: Grouping,
    pub order: Vec<SortKey>,
    pub limit: Option<Bound>,
    pub offset: Option<Bound>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Passed through (a group key, or a value every shard returns alike).
    Plain,
    Agg(Aggregate),
    /// `avg(x)`, run as `sum(x), count(x)`: takes two shard columns. `name` is the column's name.
    Avg {
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Count,
    Sum,
    Min,
    Max,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grouping {
    /// Rows are concatenated (groups, if any, never span shards: they include the key).
    Rows,
    /// Aggregates without GROUP BY: one row from every shard's one row.
    Aggregate,
    /// GROUP BY these client columns.
    Groups(Vec<usize>),
    /// SELECT DISTINCT.
    Distinct,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub column: SortColumn,
    pub desc: bool,
    pub nulls_first: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortColumn {
    /// A column of the merged rows (client columns, then hidden ones).
    Index(usize),
    /// A column of a `*` select list, found by name in the shards' RowDescription.
    Named(String),
}

/// A LIMIT or OFFSET: a constant, or a bind parameter (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Value(u64),
    Param(usize),
}

const SUPPORTED: [(&str, Aggregate); 4] = [
    ("count", Aggregate::Count),
    ("sum", Aggregate::Sum),
    ("min", Aggregate::Min),
    ("max", Aggregate::Max),
];

/// Postgres' built-in aggregates: inside expressions, or unsupported, they cannot be merged.
pub(super) const AGGREGATES: &[&str] = &[
    "array_agg",
    "avg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "count",
    "every",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "max",
    "min",
    "range_agg",
    "range_intersect_agg",
    "string_agg",
    "sum",
    "xmlagg",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "mode",
    "percentile_cont",
    "percentile_disc",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "any_value",
];

fn refuse(what: impl Into<String>, hint: impl Into<String>) -> RouteError {
    RouteError::Unsupported {
        what: what.into(),
        hint: hint.into(),
    }
}

const ONE_SHARD_HINT: &str =
    "Filter on the sharding key so the query runs on one shard, or prefix it with /* shardgate: shard=NAME */ to read one shard.";

/// The merge of a read over several shards, or why it cannot be merged. `sql` is the statement's
/// text, which the AST's positions index.
pub(super) fn spec(q: &Query, sql: &str, catalog: &Catalog) -> Result<MergeSpec, RouteError> {
    if nested_sharded(q, catalog) {
        return Err(refuse("a subquery or CTE over a sharded table in a query that runs on several shards cannot be merged", ONE_SHARD_HINT));
    }
    let SetExpr::Select(select) = &*q.body else {
        return Err(refuse(
            "UNION/INTERSECT/EXCEPT over sharded tables across shards cannot be merged",
            "Run each part as its own query.",
        ));
    };
    if has_window(q) || !select.named_window.is_empty() {
        return Err(refuse(
            "window functions over rows of several shards cannot be merged",
            ONE_SHARD_HINT,
        ));
    }
    if matches!(select.distinct, Some(Distinct::On(_))) {
        return Err(refuse(
            "SELECT DISTINCT ON across shards cannot be merged",
            ONE_SHARD_HINT,
        ));
    }
    let mut b = Builder::new(sql, select);
    b.items(&local_keys(select, catalog))?;
    b.order(q)?;
    b.bounds(q)?;
    Ok(b.finish())
}

/// One select-list item.
struct Item<'a> {
    expr: &'a Expr,
    alias: Option<String>,
}

struct Builder<'a> {
    sql: &'a str,
    select: &'a Select,
    items: Vec<Item<'a>>,
    wildcard: bool,
    outputs: Vec<Output>,
    grouping: Grouping,
    order: Vec<SortKey>,
    hidden: Vec<String>,
    limit: Option<Bound>,
    offset: Option<Bound>,
    /// Splices into the shard's text: byte range → replacement.
    edits: Vec<(usize, usize, String)>,
}

impl<'a> Builder<'a> {
    fn new(sql: &'a str, select: &'a Select) -> Builder<'a> {
        let mut wildcard = false;
        let items = select
            .projection
            .iter()
            .filter_map(|item| match item {
                SelectItem::UnnamedExpr(expr) => Some(Item { expr, alias: None }),
                SelectItem::ExprWithAlias { expr, alias } => Some(Item {
                    expr,
                    alias: Some(ident(alias)),
                }),
                _ => {
                    wildcard = true;
                    None
                }
            })
            .collect();
        Builder {
            sql,
            select,
            items,
            wildcard,
            outputs: Vec::new(),
            grouping: Grouping::Rows,
            order: Vec::new(),
            hidden: Vec::new(),
            limit: None,
            offset: None,
            edits: Vec::new(),
        }
    }

    /// Classifies the select list and GROUP BY. `keys`: how the query may name sharding keys.
    fn items(&mut self, keys: &[(Option<String>, String)]) -> Result<(), RouteError> {
        let groups =
            match &self.select.group_by {
                GroupByExpr::Expressions(exprs, mods) if mods.is_empty() => exprs.as_slice(),
                _ => return Err(refuse(
                    "GROUP BY ALL, ROLLUP, CUBE or GROUPING SETS across shards cannot be merged",
                    ONE_SHARD_HINT,
                )),
            };
        // Groups that include a sharding key never span shards: every shard's rows are final.
        if groups.iter().any(|g| is_key(g, keys)) {
            self.outputs = vec![Output::Plain; self.items.len()];
            if self.select.distinct.is_some() {
                self.grouping = Grouping::Distinct;
            }
            return Ok(());
        }
        if self.select.having.is_some() {
            return Err(refuse(
                "HAVING over groups that span shards cannot be evaluated by shardgate",
                "Group by the sharding key, filter the groups in the application, or filter on the sharding key.",
            ));
        }
        for i in 0..self.items.len() {
            let output = self.output(i)?;
            self.outputs.push(output);
        }
        let aggregated = self.outputs.iter().any(|o| *o != Output::Plain);
        if self.wildcard && (aggregated || !groups.is_empty()) {
            return Err(refuse(
                "a select list with * and GROUP BY or aggregates across shards cannot be merged",
                "Name the columns in the select list.",
            ));
        }
        self.grouping = if !groups.is_empty() {
            let mut columns = Vec::new();
            for g in groups {
                columns.push(self.find_output(g).ok_or_else(|| refuse(
                    format!("GROUP BY {g} is not in the select list, so shardgate cannot merge the groups of several shards"),
                    "Add the GROUP BY expressions to the select list.",
                ))?);
            }
            Grouping::Groups(columns)
        } else if aggregated {
            Grouping::Aggregate
        } else if self.select.distinct.is_some() {
            Grouping::Distinct
        } else {
            Grouping::Rows
        };
        Ok(())
    }

    /// What the merge does with select item `i` (groups span shards).
    fn output(&mut self, i: usize) -> Result<Output, RouteError> {
        let expr = self.items[i].expr;
        let Some(f) = as_function(expr) else {
            return match first_aggregate(expr) {
                Some(name) => Err(refuse(
                    format!("the aggregate {name}() inside an expression over several shards cannot be merged"),
                    "Select the aggregate on its own and compute the expression in the application.",
                )),
                None => Ok(Output::Plain),
            };
        };
        let name = function_name(&f.name);
        let distinct = matches!(&f.args, FunctionArguments::List(l) if l.duplicate_treatment == Some(DuplicateTreatment::Distinct));
        if let Some(&(_, agg)) = SUPPORTED.iter().find(|(n, _)| *n == name) {
            if distinct && matches!(agg, Aggregate::Count | Aggregate::Sum) {
                return Err(refuse(
                    format!("{name}(DISTINCT …) across shards cannot be merged"),
                    ONE_SHARD_HINT,
                ));
            }
            return Ok(Output::Agg(agg));
        }
        if name == "avg" && !distinct && f.within_group.is_empty() {
            let column = self.items[i].alias.clone().unwrap_or_else(|| "avg".into());
            self.split_avg(f)?;
            return Ok(Output::Avg { name: column });
        }
        if AGGREGATES.contains(&name.as_str()) {
            return Err(refuse(
                format!("the aggregate {name}() across shards cannot be merged by shardgate"),
                "Use count, sum, min, max or avg, group by the sharding key, or filter on the sharding key.",
            ));
        }
        Ok(Output::Plain)
    }

    /// `avg(x) [FILTER (…)]` → `sum(x) [FILTER (…)], count(x) [FILTER (…)]` in the shard's text.
    fn split_avg(&mut self, f: &Function) -> Result<(), RouteError> {
        let cannot = || {
            refuse(
                "shardgate could not locate this avg() in the statement text",
                ONE_SHARD_HINT,
            )
        };
        let span = f.name.span();
        let start = offset(self.sql, span.start).ok_or_else(cannot)?;
        let name_end = offset(self.sql, span.end).ok_or_else(cannot)?;
        let mut end = lex::group_end(self.sql, name_end).ok_or_else(cannot)?;
        if f.filter.is_some() {
            let filter = lex::after_word(self.sql, end, "filter").ok_or_else(cannot)?;
            end = lex::group_end(self.sql, filter).ok_or_else(cannot)?;
        }
        let rest = &self.sql[name_end..end];
        self.edits
            .push((start, end, format!("sum{rest}, count{rest}")));
        Ok(())
    }

    /// The client column an expression names: an ordinal, an output name, or the same expression.
    fn find_output(&self, e: &Expr) -> Option<usize> {
        if let Expr::Value(v) = e {
            if let Value::Number(n, _) = &v.value {
                let n: usize = n.parse().ok()?;
                return (1..=self.items.len()).contains(&n).then(|| n - 1);
            }
        }
        if let Expr::Identifier(id) = e {
            let name = ident(id);
            if let Some(i) = self
                .items
                .iter()
                .position(|it| it.alias.as_deref() == Some(name.as_str()))
            {
                return Some(i);
            }
        }
        let text = e.to_string();
        self.items.iter().position(|it| it.expr.to_string() == text)
    }

    fn order(&mut self, q: &Query) -> Result<(), RouteError> {
        let Some(order_by) = &q.order_by else {
            return Ok(());
        };
        let OrderByKind::Expressions(exprs) = &order_by.kind else {
            return Err(refuse("ORDER BY ALL across shards", ONE_SHARD_HINT));
        };
        for o in exprs {
            let key = self.sort_key(o)?;
            self.order.push(key);
        }
        Ok(())
    }

    fn sort_key(&mut self, o: &OrderByExpr) -> Result<SortKey, RouteError> {
        let desc = match &o.options.sort {
            Some(OrderBySort::Using(_)) => {
                return Err(refuse("ORDER BY … USING across shards", ONE_SHARD_HINT))
            }
            Some(OrderBySort::Desc) => true,
            _ => false,
        };
        let column = self.sort_column(&o.expr)?;
        Ok(SortKey {
            column,
            desc,
            // Postgres: NULLs sort as larger than any value unless told otherwise.
            nulls_first: o.options.nulls_first.unwrap_or(desc),
        })
    }

    fn sort_column(&mut self, e: &Expr) -> Result<SortColumn, RouteError> {
        if let Some(i) = self.find_output(e) {
            return Ok(SortColumn::Index(i));
        }
        let column_ref = matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
        if self.wildcard && column_ref {
            let last = match e {
                Expr::Identifier(id) => ident(id),
                Expr::CompoundIdentifier(ids) => ids.last().map(ident).unwrap_or_default(),
                _ => unreachable!("a column reference"),
            };
            return Ok(SortColumn::Named(last));
        }
        if column_ref && self.grouping == Grouping::Rows {
            // Sorted on a column the client did not select: fetched as a hidden last column.
            self.hidden.push(e.to_string());
            return Ok(SortColumn::Index(self.items.len() + self.hidden.len() - 1));
        }
        Err(refuse(
            format!("ORDER BY {e} must name a column of the select list for shardgate to merge the shards' rows"),
            "Add the ORDER BY expression to the select list, or order by its position.",
        ))
    }

    /// LIMIT/OFFSET (or FETCH FIRST): applied by shardgate after merging; each shard returns at
    /// most LIMIT + OFFSET rows when that is enough, else all of its rows.
    fn bounds(&mut self, q: &Query) -> Result<(), RouteError> {
        let (limit, offset) = match &q.limit_clause {
            None => (None, None),
            Some(LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            }) if limit_by.is_empty() => (limit.as_ref(), offset.as_ref().map(|o| &o.value)),
            Some(_) => return Err(refuse("this LIMIT form across shards", ONE_SHARD_HINT)),
        };
        let limit = match (&q.fetch, limit) {
            (Some(f), None) if !f.with_ties && !f.percent => f.quantity.as_ref(),
            (Some(_), _) => {
                return Err(refuse(
                    "FETCH … WITH TIES or PERCENT across shards",
                    ONE_SHARD_HINT,
                ))
            }
            (None, l) => l,
        };
        self.limit = limit.map(bound).transpose()?.flatten();
        self.offset = offset.map(bound).transpose()?.flatten();
        if let Some(o) = offset {
            let (start, end) = self.span_of(o)?;
            self.edits.push((start, end, "0".into()));
        }
        let Some(l) = limit else {
            return Ok(());
        };
        let (start, end) = self.span_of(l)?;
        // Aggregates need every row of every shard; concatenated rows need only the first l+o.
        let pushed = match (self.limit, self.offset) {
            _ if matches!(self.grouping, Grouping::Aggregate | Grouping::Groups(_)) => {
                // FETCH FIRST takes no ALL.
                if q.fetch.is_some() {
                    i64::MAX.to_string()
                } else {
                    "ALL".into()
                }
            }
            // Without an OFFSET the client's LIMIT is already what each shard needs.
            (None, _) | (Some(_), None) => return Ok(()),
            (Some(Bound::Value(l)), Some(Bound::Value(o))) => l.saturating_add(o).to_string(),
            (Some(_), Some(_)) => {
                let o = offset.expect("an offset");
                let (os, oe) = self.span_of(o)?;
                format!(
                    "({}::int8 + {}::int8)",
                    &self.sql[start..end],
                    &self.sql[os..oe]
                )
            }
        };
        self.edits.push((start, end, pushed));
        Ok(())
    }

    fn span_of(&self, e: &Expr) -> Result<(usize, usize), RouteError> {
        let span = e.span();
        match (offset(self.sql, span.start), offset(self.sql, span.end)) {
            (Some(s), Some(e)) if s < e => Ok((s, e)),
            _ => Err(refuse(
                "shardgate could not locate the LIMIT/OFFSET in the statement text",
                ONE_SHARD_HINT,
            )),
        }
    }

    fn finish(mut self) -> MergeSpec {
        if !self.hidden.is_empty() {
            if let Some(at) = self.select_list_end() {
                let extra: String = self.hidden.iter().map(|h| format!(", {h}")).collect();
                self.edits.push((at, at, format!("{extra} ")));
            }
        }
        MergeSpec {
            shard_sql: splice(self.sql, self.edits),
            outputs: (!self.wildcard).then_some(self.outputs),
            hidden: self.hidden.len(),
            grouping: self.grouping,
            order: self.order,
            limit: self.limit,
            offset: self.offset,
        }
    }

    /// Where the select list ends: the top-level FROM after SELECT.
    fn select_list_end(&self) -> Option<usize> {
        let start = offset(self.sql, self.select.select_token.0.span.end)?;
        lex::top_level_word(self.sql, start, "from")
    }
}

fn bound(e: &Expr) -> Result<Option<Bound>, RouteError> {
    let bad = || {
        refuse(
            format!("LIMIT/OFFSET {e} across shards must be a constant or a parameter"),
            "Use a number or a bind parameter.",
        )
    };
    let Expr::Value(v) = e else {
        return Err(bad());
    };
    match &v.value {
        Value::Number(n, _) => n.parse().map(|n| Some(Bound::Value(n))).map_err(|_| bad()),
        Value::Placeholder(p) => p
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n >= 1)
            .map(|n| Some(Bound::Param(n - 1)))
            .ok_or_else(bad),
        Value::Null => Ok(None),
        _ => Err(bad()),
    }
}

fn splice(sql: &str, mut edits: Vec<(usize, usize, String)>) -> Option<String> {
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(sql.len() + 32);
    let mut at = 0;
    for (start, end, text) in edits {
        out.push_str(&sql[at..start]);
        out.push_str(&text);
        at = end;
    }
    out.push_str(&sql[at..]);
    Some(out)
}

/// The byte offset of a parser location (1-based line and character column).
fn offset(sql: &str, loc: Location) -> Option<usize> {
    if loc.line == 0 {
        return None;
    }
    let mut line_start = 0;
    for _ in 1..loc.line {
        line_start += sql[line_start..].find('\n')? + 1;
    }
    let line = &sql[line_start..];
    let column = usize::try_from(loc.column).ok()?.checked_sub(1)?;
    match line.char_indices().nth(column) {
        Some((i, _)) => Some(line_start + i),
        None if line.chars().count() == column => Some(line_start + line.len()),
        None => None,
    }
}
