//! Merging per-shard partial aggregates into the value one server would have computed.
//!
//! Each shard runs the aggregate over its rows; the merge combines the partials as PostgreSQL's
//! own combine functions do (`int8pl`, `numeric_add`, `float8pl`, `*smaller`/`*larger`), so that
//! a parallel plan and a sharded plan agree.

use super::key::malformed;
use super::{compare, oid, type_name, Column, Style, ValueError};
use crate::merge::decimal::{Decimal, Numeric, NumericOverflow};
use crate::merge::float::{float4_text, float8_text, parse_float, parse_float4};

/// Which aggregate's partial results are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Count,
    Sum,
    Min,
    Max,
}

/// Merges one aggregate's per-shard partial results.
#[derive(Debug, Clone)]
pub struct Acc {
    col: Column,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    /// count(…): the running total; count is never NULL.
    Count(i64),
    /// sum(int2/int4) returns int8.
    SumInt8(Option<i64>),
    SumNumeric(Option<Numeric>),
    SumFloat8(Option<f64>),
    SumFloat4(Option<f32>),
    /// min/max: the winning partial's bytes, returned as they came.
    Pick {
        max: bool,
        best: Option<Vec<u8>>,
    },
}

impl Acc {
    /// `col`: the partial results' column (what each shard returned for count(x)/sum(x)/min(x)/max(x)).
    pub fn new(kind: AggKind, col: Column) -> Result<Acc, ValueError> {
        let state = match (kind, col.oid) {
            (AggKind::Count, oid::INT8) => State::Count(0),
            (AggKind::Count, _) => return Err(wrong_partial(col, "count", "bigint")),
            (AggKind::Sum, oid::INT8) => State::SumInt8(None),
            (AggKind::Sum, oid::NUMERIC) => State::SumNumeric(None),
            (AggKind::Sum, oid::FLOAT8) => State::SumFloat8(None),
            (AggKind::Sum, oid::FLOAT4) => State::SumFloat4(None),
            (AggKind::Sum, _) => return Err(unsupported(col, "sum", SUM_HINT)),
            (AggKind::Min | AggKind::Max, t) if super::comparable(t) => State::Pick {
                max: kind == AggKind::Max,
                best: None,
            },
            (AggKind::Min | AggKind::Max, _) => {
                return Err(unsupported(col, "take min/max of", MINMAX_HINT))
            }
        };
        Ok(Acc { col, state })
    }

    /// Adds one shard's partial result (`None` = SQL NULL: a shard with no non-NULL input).
    pub fn add(&mut self, style: &Style, partial: Option<&[u8]>) -> Result<(), ValueError> {
        let Some(raw) = partial else {
            return Ok(());
        };
        let col = self.col;
        match &mut self.state {
            State::Count(total) => *total = add_int8(col, *total, read_int8(col, raw)?, "count")?,
            State::SumInt8(sum) => {
                let v = read_int8(col, raw)?;
                *sum = Some(match *sum {
                    Some(s) => add_int8(col, s, v, "sum")?,
                    None => v,
                });
            }
            State::SumNumeric(sum) => *sum = Some(add_numeric(col, sum.take(), raw)?),
            State::SumFloat8(sum) => {
                let v = read_float(col, style, raw, "sum")?;
                *sum = Some(sum.map_or(Ok(v), |s| float_pl(s, v, "sum"))?);
            }
            State::SumFloat4(sum) => {
                let v = read_float(col, style, raw, "sum")? as f32;
                *sum = Some(sum.map_or(Ok(v), |s| float4_pl(s, v))?);
            }
            State::Pick { max, best } => {
                if replaces(col, style, *max, best.as_deref(), raw)? {
                    *best = Some(raw.to_vec());
                }
            }
        }
        Ok(())
    }

    /// The merged value, encoded in `col`'s format (None = SQL NULL).
    pub fn finish(&self, style: &Style) -> Result<Option<Vec<u8>>, ValueError> {
        let binary = self.col.binary;
        Ok(match &self.state {
            State::Count(total) => Some(encode_int8(*total, binary)),
            State::SumInt8(sum) => sum.map(|s| encode_int8(s, binary)),
            State::SumNumeric(sum) => sum.as_ref().map(|s| encode_numeric(s, binary)),
            State::SumFloat8(sum) => sum.map(|s| encode_float8(s, style, binary)),
            State::SumFloat4(sum) => sum.map(|s| match binary {
                true => s.to_bits().to_be_bytes().to_vec(),
                false => float4_text(s, style.extra_float_digits).into_bytes(),
            }),
            State::Pick { best, .. } => best.clone(),
        })
    }
}

/// Whether `new` takes the place of `best` as PostgreSQL's `*smaller`/`*larger(state, new)`
/// decides: most types keep the new value on a tie, `bpchar_smaller`/`bpchar_larger` keep the old
/// one. Ties are visible: `1.0` vs `1.00`, `0` vs `-0`, `'a'` vs `'a '`.
fn replaces(
    col: Column,
    style: &Style,
    max: bool,
    best: Option<&[u8]>,
    new: &[u8],
) -> Result<bool, ValueError> {
    let Some(best) = best else {
        // Validate the first value too, so a malformed partial never slips through alone.
        compare(col, style, new, new)?;
        return Ok(true);
    };
    let order = compare(col, style, best, new)?;
    let keeps_old_on_tie = col.oid == oid::BPCHAR;
    Ok(match (max, order) {
        (_, std::cmp::Ordering::Equal) => !keeps_old_on_tie,
        (false, o) => o == std::cmp::Ordering::Greater,
        (true, o) => o == std::cmp::Ordering::Less,
    })
}

/// Merges avg(x), which is sent to shards as sum(x) and count(x).
#[derive(Debug, Clone)]
pub struct AvgAcc {
    sum: Column,
    count: Column,
    out_binary: bool,
    /// Rows counted so far across shards.
    rows: i64,
    total: AvgTotal,
}

#[derive(Debug, Clone)]
enum AvgTotal {
    /// int8 sums (avg of int2/int4) are added exactly as numerics, as PostgreSQL's int8_avg
    /// converts its int8 sum to numeric before dividing.
    Numeric(Option<Numeric>),
    /// float8_accum's sum starts at 0.0 rather than at the first value, so an average of
    /// negative zeros is 0 where sum(x) is -0.
    Float8(f64),
}

impl AvgAcc {
    pub fn new(sum: Column, count: Column, out_binary: bool) -> Result<AvgAcc, ValueError> {
        if count.oid != oid::INT8 {
            return Err(wrong_partial(count, "count", "bigint"));
        }
        let total = match sum.oid {
            oid::INT8 | oid::NUMERIC => AvgTotal::Numeric(None),
            oid::FLOAT8 => AvgTotal::Float8(0.0),
            oid::FLOAT4 => return Err(unsupported(sum, "average", AVG_FLOAT4_HINT)),
            _ => return Err(unsupported(sum, "average", SUM_HINT)),
        };
        Ok(AvgAcc {
            sum,
            count,
            out_binary,
            rows: 0,
            total,
        })
    }

    /// Adds one shard's sum(x) and count(x).
    pub fn add(
        &mut self,
        style: &Style,
        sum: Option<&[u8]>,
        count: Option<&[u8]>,
    ) -> Result<(), ValueError> {
        let rows = match count {
            Some(raw) => read_int8(self.count, raw)?,
            None => return Err(malformed(self.count, "count(x) was NULL".into())),
        };
        let Some(raw) = sum else {
            if rows != 0 {
                let detail = format!("sum(x) was NULL but count(x) was {rows}");
                return Err(malformed(self.sum, detail));
            }
            return Ok(());
        };
        self.rows = add_int8(self.count, self.rows, rows, "count")?;
        match &mut self.total {
            AvgTotal::Numeric(total) if self.sum.oid == oid::INT8 => {
                let v = Numeric::Finite(Decimal::from(read_int8(self.sum, raw)?));
                let merged = total.as_ref().map_or(Ok(v.clone()), |t| t.add(&v));
                *total = Some(merged.map_err(|_| numeric_overflow("average"))?);
            }
            AvgTotal::Numeric(total) => *total = Some(add_numeric(self.sum, total.take(), raw)?),
            AvgTotal::Float8(total) => {
                let v = read_float(self.sum, style, raw, "average")?;
                *total = float_pl(*total, v, "average")?;
            }
        }
        Ok(())
    }

    /// The type OID avg(x) has in Postgres given the sum's type (numeric 1700 for int8/numeric
    /// sums, float8 701 for float8).
    pub fn result_oid(&self) -> u32 {
        match self.total {
            AvgTotal::Numeric(_) => oid::NUMERIC,
            AvgTotal::Float8(_) => oid::FLOAT8,
        }
    }

    /// The average in the output format; NULL when no shard counted a row.
    pub fn finish(&self, style: &Style) -> Result<Option<Vec<u8>>, ValueError> {
        if self.rows == 0 {
            return Ok(None);
        }
        Ok(match &self.total {
            AvgTotal::Numeric(Some(total)) => {
                let avg = total.div_count(self.rows as u64);
                Some(encode_numeric(&avg, self.out_binary))
            }
            // float8_avg divides by the count it kept as a float8.
            AvgTotal::Float8(total) => Some(encode_float8(
                total / self.rows as f64,
                style,
                self.out_binary,
            )),
            AvgTotal::Numeric(None) => None,
        })
    }
}

const SUM_HINT: &str = "sum and avg are merged for smallint, integer, bigint, numeric, real and \
                        double precision; cast the argument to numeric in the query";
const MINMAX_HINT: &str = "cast the argument to text, numeric or another basic type in the query";
const AVG_FLOAT4_HINT: &str = "PostgreSQL averages real values in double precision, which \
                               per-shard real sums cannot reproduce; write avg(x::float8), which \
                               returns the same value";

fn unsupported(col: Column, what: &str, hint: &str) -> ValueError {
    ValueError::Unsupported {
        type_name: type_name(col.oid),
        what: what.into(),
        hint: hint.into(),
    }
}

/// The executor passed a partial column of the wrong type: a shardgate bug, described as such.
fn wrong_partial(col: Column, agg: &str, expected: &str) -> ValueError {
    ValueError::Unsupported {
        type_name: type_name(col.oid),
        what: format!("merge {agg} partials of type"),
        hint: format!(
            "{agg} partials must be {expected}; this is a shardgate bug, please report it"
        ),
    }
}

fn numeric_overflow(what: &str) -> ValueError {
    ValueError::Overflow {
        message: "value overflows numeric format",
        what: what.into(),
        hint: "the merged value has more than 131072 digits before the decimal point",
    }
}

fn read_int8(col: Column, raw: &[u8]) -> Result<i64, ValueError> {
    let parsed = match col.binary {
        true => <[u8; 8]>::try_from(raw).ok().map(i64::from_be_bytes),
        false => std::str::from_utf8(raw).ok().and_then(|s| s.parse().ok()),
    };
    parsed.ok_or_else(|| {
        malformed(
            col,
            format!("{:?} is not a bigint", String::from_utf8_lossy(raw)),
        )
    })
}

/// `int8pl`, the combine function of count and of sum(int2/int4).
fn add_int8(col: Column, a: i64, b: i64, what: &str) -> Result<i64, ValueError> {
    a.checked_add(b).ok_or_else(|| ValueError::Overflow {
        message: "bigint out of range",
        what: format!("{what} ({} partials)", type_name(col.oid)),
        hint: "cast the argument to numeric in the query, e.g. sum(x::numeric)",
    })
}

fn add_numeric(col: Column, total: Option<Numeric>, raw: &[u8]) -> Result<Numeric, ValueError> {
    let v = match col.binary {
        true => Numeric::parse_binary(raw),
        false => Numeric::parse_text(raw),
    }
    .map_err(|detail| malformed(col, detail))?;
    match total {
        None => Ok(v),
        Some(t) => t.add(&v).map_err(|NumericOverflow| numeric_overflow("sum")),
    }
}

/// A float partial. Text is exact only when printed with round-trip digits: with
/// `extra_float_digits <= 0` each partial was rounded, and their sum would differ from the server's.
fn read_float(col: Column, style: &Style, raw: &[u8], what: &str) -> Result<f64, ValueError> {
    if col.binary {
        return match raw.len() {
            4 => Ok(f32::from_be_bytes(raw.try_into().expect("4 bytes")).into()),
            8 => Ok(f64::from_be_bytes(raw.try_into().expect("8 bytes"))),
            n => Err(malformed(col, format!("{n} bytes is not a float"))),
        };
    }
    if style.extra_float_digits <= 0 {
        let hint = format!(
            "with extra_float_digits = {} each shard rounds its partial result; \
             SET extra_float_digits = 1 (the default) or request binary results",
            style.extra_float_digits
        );
        return Err(unsupported(col, what, &hint));
    }
    let parsed = match col.oid {
        // A float4 partial is read in single precision: reading it as a double and narrowing
        // could round twice.
        oid::FLOAT4 => parse_float4(raw).map(f64::from),
        _ => parse_float(raw),
    };
    parsed.ok_or_else(|| {
        malformed(
            col,
            format!("{:?} is not a float", String::from_utf8_lossy(raw)),
        )
    })
}

/// `float8_pl`: infinity from finite inputs is an error, not a result.
fn float_pl(a: f64, b: f64, what: &str) -> Result<f64, ValueError> {
    let r = a + b;
    if r.is_infinite() && a.is_finite() && b.is_finite() {
        return Err(float_overflow(what));
    }
    Ok(r)
}

/// `float4_pl`, in single precision as PostgreSQL does it.
fn float4_pl(a: f32, b: f32) -> Result<f32, ValueError> {
    let r = a + b;
    if r.is_infinite() && a.is_finite() && b.is_finite() {
        return Err(float_overflow("sum"));
    }
    Ok(r)
}

fn float_overflow(what: &str) -> ValueError {
    ValueError::Overflow {
        message: "value out of range: overflow",
        what: what.into(),
        hint: "cast the argument to numeric in the query",
    }
}

fn encode_int8(v: i64, binary: bool) -> Vec<u8> {
    match binary {
        true => v.to_be_bytes().to_vec(),
        false => v.to_string().into_bytes(),
    }
}

fn encode_numeric(v: &Numeric, binary: bool) -> Vec<u8> {
    match binary {
        true => v.to_binary(),
        false => v.to_text().into_bytes(),
    }
}

fn encode_float8(v: f64, style: &Style, binary: bool) -> Vec<u8> {
    match binary {
        true => v.to_bits().to_be_bytes().to_vec(),
        false => float8_text(v, style.extra_float_digits).into_bytes(),
    }
}
