//! Typed values for merging multi-shard results: ordering (`compare`) and aggregate merging
//! ([`Acc`], [`AvgAcc`]) over the raw column bytes shards send in DataRow messages.
//!
//! Pure: no I/O. The contract is byte equality with one PostgreSQL 15 server: whatever the merge
//! produces must be exactly what a single server holding all rows would have sent, in the same
//! format (text or binary) the client asked for. Where that cannot be guaranteed the functions
//! return [`ValueError::Unsupported`] with a hint, never an approximation.

use std::cmp::Ordering;

mod agg;
mod key;

pub use agg::{Acc, AggKind, AvgAcc};

/// A result column as RowDescription describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub oid: u32,
    pub binary: bool,
}

/// Session settings that change how values are printed/parsed in text format.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// The session's `extra_float_digits` (-15..=3).
    pub extra_float_digits: i32,
    /// Whether the session's `DateStyle` is ISO, the only one whose text we read.
    pub iso_dates: bool,
}

impl Default for Style {
    /// PostgreSQL's defaults: `extra_float_digits = 1`, `DateStyle = 'ISO, MDY'`.
    fn default() -> Style {
        Style {
            extra_float_digits: 1,
            iso_dates: true,
        }
    }
}

/// Why a value could not be compared or merged. The messages are written for the application
/// developer who sent the query: what went wrong and what to change.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ValueError {
    /// The merge cannot do this exactly for this type or setting; the query or session must change.
    #[error("shardgate cannot {what} {type_name} values from several shards; {hint}")]
    Unsupported {
        type_name: String,
        what: String,
        hint: String,
    },
    /// A shard sent bytes that are not a value of the column's type as PostgreSQL prints it.
    #[error(
        "a shard returned a {type_name} value in {format} format that shardgate cannot read \
         ({detail}); check that the column has the same type on every shard"
    )]
    Malformed {
        type_name: String,
        format: &'static str,
        detail: String,
    },
    /// The merged result does not fit its type, where PostgreSQL would also raise an error.
    #[error("{message} (merging {what} across shards); {hint}")]
    Overflow {
        /// PostgreSQL's own wording, e.g. "bigint out of range".
        message: &'static str,
        what: String,
        hint: &'static str,
    },
}

/// Type OIDs from `pg_type.dat`.
pub(crate) mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
}

/// The name PostgreSQL's `format_type` gives a type, for messages.
pub(crate) fn type_name(type_oid: u32) -> String {
    let known = match type_oid {
        oid::BOOL => "boolean",
        oid::BYTEA => "bytea",
        oid::CHAR => "\"char\"",
        oid::NAME => "name",
        oid::INT8 => "bigint",
        oid::INT2 => "smallint",
        oid::INT4 => "integer",
        oid::TEXT => "text",
        oid::OID => "oid",
        oid::FLOAT4 => "real",
        oid::FLOAT8 => "double precision",
        oid::BPCHAR => "character",
        oid::VARCHAR => "character varying",
        oid::DATE => "date",
        oid::TIME => "time without time zone",
        oid::TIMESTAMP => "timestamp without time zone",
        oid::TIMESTAMPTZ => "timestamp with time zone",
        oid::NUMERIC => "numeric",
        oid::UUID => "uuid",
        114 => "json",
        142 => "xml",
        790 => "money",
        1186 => "interval",
        1266 => "time with time zone",
        3802 => "jsonb",
        _ => return format!("type with OID {type_oid}"),
    };
    known.to_string()
}

/// Whether values of this type can be ordered/compared by the merge (used to refuse early).
pub fn comparable(type_oid: u32) -> bool {
    key::sort_kind(type_oid).is_some()
}

/// Compares two non-NULL values of one column exactly as PostgreSQL orders them (default btree
/// opclass, C collation for text types). NULL ordering is the caller's business.
pub fn compare(col: Column, style: &Style, a: &[u8], b: &[u8]) -> Result<Ordering, ValueError> {
    let kind = key::sort_kind(col.oid).ok_or_else(|| unsupported_order(col.oid))?;
    let a = key::SortKey::read(kind, col, style, a)?;
    let b = key::SortKey::read(kind, col, style, b)?;
    Ok(a.cmp(&b))
}

fn unsupported_order(type_oid: u32) -> ValueError {
    ValueError::Unsupported {
        type_name: type_name(type_oid),
        what: "order or compare".into(),
        hint: "cast the column to text, numeric or another basic type in the query, or add the \
               sharding key to the WHERE clause so the query runs on one shard"
            .into(),
    }
}

#[cfg(test)]
mod tests;
