//! The rows of several shards merged as the router's [`MergeSpec`] says: grouped and aggregated,
//! de-duplicated, sorted, cut to LIMIT/OFFSET, hidden sort columns dropped.

use std::cell::RefCell;
use std::cmp::Ordering;

use bytes::Bytes;

use super::value::{self, Acc, AggKind, AvgAcc, Column, Style, ValueError};
use crate::protocol::backend::{decode_data_row, Field};
use crate::protocol::ProtocolError;
use crate::router::merge::{Aggregate, Grouping, MergeSpec, Output, SortColumn, SortKey};

/// One row: its values (`None`: NULL), sharing the bytes of the frames they came in.
pub type Row = Vec<Option<Bytes>>;

/// What one shard returned: its columns and the bodies of its DataRow messages.
pub struct ShardRows {
    pub fields: Vec<Field>,
    pub rows: Vec<Bytes>,
}

/// The one result the client gets.
#[derive(Debug)]
pub struct Merged {
    pub fields: Vec<Field>,
    pub rows: Vec<Row>,
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{0}")]
    Value(#[from] ValueError),
    #[error("a shard sent a bad row: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("the shards returned different columns for one query ({0})")]
    Columns(String),
    #[error("ORDER BY {0}: {1}")]
    Sort(String, &'static str),
    #[error("column \"{0}\" is text, and the shards' collation ({1}) orders text in ways shardgate does not reproduce")]
    Collation(String, String),
}

/// LIMIT and OFFSET with their parameters filled in (`None`: no limit).
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub limit: Option<u64>,
    pub offset: u64,
}

/// `collation`: the shards' database collation; text is compared only under C/POSIX, whose
/// order is the bytes' order.
pub fn merge(
    spec: &MergeSpec,
    style: &Style,
    window: Window,
    collation: &str,
    shards: Vec<ShardRows>,
) -> Result<Merged, MergeError> {
    let fields = same_columns(&shards)?;
    check_collation(spec, &fields, collation)?;
    let mut rows = Vec::new();
    for shard in shards {
        for body in shard.rows {
            let values = decode_data_row(&body)?;
            rows.push(
                values
                    .into_iter()
                    .map(|v| v.map(|v| body.slice_ref(v)))
                    .collect::<Row>(),
            );
        }
    }
    let (fields, mut rows) = group(spec, style, fields, rows)?;
    sort(&spec.order, style, &fields, &mut rows)?;
    let start = usize::try_from(window.offset)
        .unwrap_or(usize::MAX)
        .min(rows.len());
    rows.drain(..start);
    if let Some(limit) = window.limit {
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    let mut fields = fields;
    let keep = fields.len().saturating_sub(spec.hidden);
    fields.truncate(keep);
    for row in &mut rows {
        row.truncate(keep);
    }
    Ok(Merged { fields, rows })
}

/// Collations whose text order is byte order.
fn bytewise(collation: &str) -> bool {
    matches!(
        collation,
        "C" | "POSIX" | "C.UTF-8" | "C.utf8" | "ucs_basic"
    )
}

/// Refuses to compare text columns unless the collation orders them bytewise.
fn check_collation(spec: &MergeSpec, fields: &[Field], collation: &str) -> Result<(), MergeError> {
    if bytewise(collation) {
        return Ok(());
    }
    let mut compared: Vec<usize> = Vec::new();
    for k in &spec.order {
        match &k.column {
            SortColumn::Index(i) => compared.push(*i),
            SortColumn::Named(n) => compared.extend(fields.iter().position(|f| f.name == *n)),
        }
    }
    let outputs = spec.outputs.as_deref().unwrap_or_default();
    let starts = shard_columns(outputs);
    match &spec.grouping {
        Grouping::Distinct => compared.extend(0..fields.len()),
        Grouping::Groups(keys) => compared.extend(keys.iter().map(|&k| starts[k])),
        Grouping::Rows | Grouping::Aggregate => {}
    }
    if spec.grouping != Grouping::Rows {
        for (o, &at) in outputs.iter().zip(&starts) {
            if matches!(o, Output::Agg(Aggregate::Min | Aggregate::Max)) {
                compared.push(at);
            }
        }
    }
    // text, varchar, bpchar and citext-like domains over them.
    let text = |f: &Field| matches!(f.type_oid, 25 | 1042 | 1043);
    match compared
        .into_iter()
        .filter_map(|i| fields.get(i))
        .find(|f| text(f))
    {
        Some(f) => Err(MergeError::Collation(f.name.clone(), collation.to_string())),
        None => Ok(()),
    }
}

fn same_columns(shards: &[ShardRows]) -> Result<Vec<Field>, MergeError> {
    let first = shards.first().map(|s| s.fields.clone()).unwrap_or_default();
    let types = |f: &[Field]| f.iter().map(|f| (f.type_oid, f.format)).collect::<Vec<_>>();
    for s in shards {
        if types(&s.fields) != types(&first) {
            let names: Vec<&str> = s.fields.iter().map(|f| f.name.as_str()).collect();
            return Err(MergeError::Columns(names.join(", ")));
        }
    }
    Ok(first)
}

fn column(f: &Field) -> Column {
    Column {
        oid: f.type_oid,
        binary: f.format == 1,
    }
}

/// Groups and aggregates as the spec says; returns the client's columns and rows.
fn group(
    spec: &MergeSpec,
    style: &Style,
    fields: Vec<Field>,
    rows: Vec<Row>,
) -> Result<(Vec<Field>, Vec<Row>), MergeError> {
    match &spec.grouping {
        Grouping::Rows => Ok((fields, rows)),
        Grouping::Distinct => {
            let all: Vec<usize> = (0..fields.len()).collect();
            let groups = runs(style, &fields, &all, rows)?;
            Ok((
                fields,
                groups.into_iter().map(|mut g| g.swap_remove(0)).collect(),
            ))
        }
        Grouping::Aggregate => {
            let outputs = spec.outputs.as_deref().unwrap_or_default();
            let out = folded_fields(outputs, &fields)?;
            let row = fold(outputs, style, &fields, &rows)?;
            Ok((out, vec![row]))
        }
        Grouping::Groups(keys) => {
            let outputs = spec.outputs.as_deref().unwrap_or_default();
            let starts = shard_columns(outputs);
            let keys: Vec<usize> = keys.iter().map(|&k| starts[k]).collect();
            let out = folded_fields(outputs, &fields)?;
            let mut merged = Vec::new();
            for g in runs(style, &fields, &keys, rows)? {
                merged.push(fold(outputs, style, &fields, &g)?);
            }
            Ok((out, merged))
        }
    }
}

/// The first shard column of each output (`avg` takes two).
fn shard_columns(outputs: &[Output]) -> Vec<usize> {
    let mut at = 0;
    outputs
        .iter()
        .map(|o| {
            let start = at;
            at += if matches!(o, Output::Avg { .. }) {
                2
            } else {
                1
            };
            start
        })
        .collect()
}

/// Rows split into runs of equal `keys` (rows sorted on them first).
fn runs(
    style: &Style,
    fields: &[Field],
    keys: &[usize],
    mut rows: Vec<Row>,
) -> Result<Vec<Vec<Row>>, MergeError> {
    let order: Vec<(usize, bool, bool)> = keys.iter().map(|&k| (k, false, false)).collect();
    let cmp = Comparator::new(style, fields, &order);
    rows.sort_by(|a, b| cmp.compare(a, b));
    cmp.result()?;
    let mut out: Vec<Vec<Row>> = Vec::new();
    for row in rows {
        match out.last_mut() {
            Some(run) if cmp.compare(&run[0], &row) == Ordering::Equal => run.push(row),
            _ => out.push(vec![row]),
        }
    }
    cmp.result()?;
    Ok(out)
}

fn kind(a: Aggregate) -> AggKind {
    match a {
        Aggregate::Count => AggKind::Count,
        Aggregate::Sum => AggKind::Sum,
        Aggregate::Min => AggKind::Min,
        Aggregate::Max => AggKind::Max,
    }
}

/// One row from the rows of one group.
fn fold(
    outputs: &[Output],
    style: &Style,
    fields: &[Field],
    rows: &[Row],
) -> Result<Row, MergeError> {
    let mut out = Vec::with_capacity(outputs.len());
    let mut col = 0;
    for o in outputs {
        match o {
            Output::Plain => out.push(rows.first().and_then(|r| r[col].clone())),
            Output::Agg(a) => {
                let mut acc = Acc::new(kind(*a), column(&fields[col]))?;
                for r in rows {
                    acc.add(style, r[col].as_deref())?;
                }
                out.push(acc.finish(style)?.map(Bytes::from));
            }
            Output::Avg { .. } => {
                let mut acc = avg(fields, col)?;
                for r in rows {
                    acc.add(style, r[col].as_deref(), r[col + 1].as_deref())?;
                }
                out.push(acc.finish(style)?.map(Bytes::from));
                col += 1;
            }
        }
        col += 1;
    }
    Ok(out)
}

fn avg(fields: &[Field], col: usize) -> Result<AvgAcc, MergeError> {
    let (sum, count) = (&fields[col], fields.get(col + 1).unwrap_or(&fields[col]));
    Ok(AvgAcc::new(column(sum), column(count), sum.format == 1)?)
}

/// The client's columns of aggregated rows: each avg's sum and count become one column.
fn folded_fields(outputs: &[Output], fields: &[Field]) -> Result<Vec<Field>, MergeError> {
    let starts = shard_columns(outputs);
    if starts.last().is_some_and(|&s| s >= fields.len()) {
        return Err(MergeError::Columns(format!("{} columns", fields.len())));
    }
    let mut out = Vec::with_capacity(outputs.len());
    for (o, &col) in outputs.iter().zip(&starts) {
        out.push(match o {
            Output::Avg { name } => {
                let oid = avg(fields, col)?.result_oid();
                Field {
                    name: name.clone(),
                    table: 0,
                    column: 0,
                    type_oid: oid,
                    type_len: if oid == 701 { 8 } else { -1 },
                    type_mod: -1,
                    format: fields[col].format,
                }
            }
            _ => fields[col].clone(),
        });
    }
    Ok(out)
}

fn sort(
    keys: &[SortKey],
    style: &Style,
    fields: &[Field],
    rows: &mut [Row],
) -> Result<(), MergeError> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut order = Vec::with_capacity(keys.len());
    for k in keys {
        let index = match &k.column {
            SortColumn::Index(i) if *i < fields.len() => *i,
            SortColumn::Index(i) => {
                return Err(MergeError::Sort((i + 1).to_string(), "no such column"))
            }
            SortColumn::Named(name) => named(fields, name)?,
        };
        order.push((index, k.desc, k.nulls_first));
    }
    let cmp = Comparator::new(style, fields, &order);
    rows.sort_by(|a, b| cmp.compare(a, b));
    cmp.result()
}

fn named(fields: &[Field], name: &str) -> Result<usize, MergeError> {
    let mut found = fields.iter().enumerate().filter(|(_, f)| f.name == name);
    match (found.next(), found.next()) {
        (Some((i, _)), None) => Ok(i),
        (None, _) => Err(MergeError::Sort(
            name.into(),
            "not a column of the result; add it to the select list",
        )),
        (Some(_), Some(_)) => Err(MergeError::Sort(
            name.into(),
            "names several columns of the result; name the columns in the select list",
        )),
    }
}

/// Compares rows on (column, descending, NULLs first) keys; the first error is kept, since
/// `sort_by` cannot fail.
struct Comparator<'a> {
    style: &'a Style,
    keys: Vec<(usize, bool, bool, Column)>,
    error: RefCell<Option<ValueError>>,
}

impl<'a> Comparator<'a> {
    fn new(style: &'a Style, fields: &[Field], keys: &[(usize, bool, bool)]) -> Comparator<'a> {
        Comparator {
            style,
            keys: keys
                .iter()
                .map(|&(i, desc, nulls_first)| (i, desc, nulls_first, column(&fields[i])))
                .collect(),
            error: RefCell::new(None),
        }
    }

    fn compare(&self, a: &Row, b: &Row) -> Ordering {
        for &(i, desc, nulls_first, col) in &self.keys {
            let o = match (&a[i], &b[i]) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) if nulls_first => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) if nulls_first => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) => {
                    let o = value::compare(col, self.style, x, y).unwrap_or_else(|e| {
                        self.error.borrow_mut().get_or_insert(e);
                        Ordering::Equal
                    });
                    if desc {
                        o.reverse()
                    } else {
                        o
                    }
                }
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }

    fn result(&self) -> Result<(), MergeError> {
        match self.error.borrow_mut().take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
