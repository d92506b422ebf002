//! Sort keys: each comparable type's text or binary bytes read into a value whose natural order is
//! the type's default btree order in PostgreSQL.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::{oid, type_name, Column, Style, ValueError};
use crate::merge::datetime;
use crate::merge::decimal::Numeric;
use crate::merge::float::{parse_float, parse_float4};

/// How a comparable type is read and ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SortKind {
    /// int2, int4, int8 (signed, of the given byte width in binary).
    Int(usize),
    /// oid: unsigned 32-bit.
    Oid,
    /// float4 / float8 (byte width in binary).
    Float(usize),
    Numeric,
    Bool,
    /// text, varchar, name: bytewise, which is the C collation's order.
    Bytes,
    /// character(n): bytewise after dropping trailing spaces, as `bpcharcmp` does.
    Bpchar,
    /// "char": one byte, compared unsigned.
    Char,
    Bytea,
    Uuid,
    Date,
    Time,
    Timestamp,
    TimestampTz,
}

/// The comparable types, or `None`.
pub(super) fn sort_kind(type_oid: u32) -> Option<SortKind> {
    Some(match type_oid {
        oid::INT2 => SortKind::Int(2),
        oid::INT4 => SortKind::Int(4),
        oid::INT8 => SortKind::Int(8),
        oid::OID => SortKind::Oid,
        oid::FLOAT4 => SortKind::Float(4),
        oid::FLOAT8 => SortKind::Float(8),
        oid::NUMERIC => SortKind::Numeric,
        oid::BOOL => SortKind::Bool,
        oid::TEXT | oid::VARCHAR | oid::NAME => SortKind::Bytes,
        oid::BPCHAR => SortKind::Bpchar,
        oid::CHAR => SortKind::Char,
        oid::BYTEA => SortKind::Bytea,
        oid::UUID => SortKind::Uuid,
        oid::DATE => SortKind::Date,
        oid::TIME => SortKind::Time,
        oid::TIMESTAMP => SortKind::Timestamp,
        oid::TIMESTAMPTZ => SortKind::TimestampTz,
        _ => return None,
    })
}

/// A value reduced to something with PostgreSQL's order.
#[derive(Debug)]
pub(super) enum SortKey<'a> {
    /// Integers, booleans, dates (days), times and timestamps (microseconds), "char".
    Int(i128),
    Float(f64),
    Numeric(Numeric),
    Bytes(Cow<'a, [u8]>),
}

impl SortKey<'_> {
    pub(super) fn read<'a>(
        kind: SortKind,
        col: Column,
        style: &Style,
        raw: &'a [u8],
    ) -> Result<SortKey<'a>, ValueError> {
        let bad = |detail: String| malformed(col, detail);
        if !col.binary && is_datestyle_dependent(kind) && !style.iso_dates {
            return Err(non_iso(col.oid));
        }
        let key = if col.binary {
            read_binary(kind, raw)
        } else {
            read_text(kind, raw)
        };
        key.map_err(bad)
    }

    pub(super) fn cmp(&self, other: &SortKey<'_>) -> Ordering {
        match (self, other) {
            (SortKey::Int(a), SortKey::Int(b)) => a.cmp(b),
            (SortKey::Float(a), SortKey::Float(b)) => float_cmp(*a, *b),
            (SortKey::Numeric(a), SortKey::Numeric(b)) => a.cmp(b),
            (SortKey::Bytes(a), SortKey::Bytes(b)) => a.cmp(b),
            // One column has one kind; keys of two kinds never meet.
            _ => self.rank().cmp(&other.rank()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            SortKey::Int(_) => 0,
            SortKey::Float(_) => 1,
            SortKey::Numeric(_) => 2,
            SortKey::Bytes(_) => 3,
        }
    }
}

/// `float8_cmp_internal`: NaN equals NaN and sorts above everything; -0 equals 0.
fn float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

fn is_datestyle_dependent(kind: SortKind) -> bool {
    // time prints as HH:MM:SS under every DateStyle.
    matches!(
        kind,
        SortKind::Date | SortKind::Timestamp | SortKind::TimestampTz
    )
}

fn non_iso(type_oid: u32) -> ValueError {
    ValueError::Unsupported {
        type_name: type_name(type_oid),
        what: "order".into(),
        hint: "shardgate reads dates and timestamps in text format only in the ISO DateStyle; \
               run SET DateStyle = 'ISO' in the session (or request binary results)"
            .into(),
    }
}

pub(super) fn malformed(col: Column, detail: String) -> ValueError {
    ValueError::Malformed {
        type_name: type_name(col.oid),
        format: if col.binary { "binary" } else { "text" },
        detail,
    }
}

fn read_binary(kind: SortKind, raw: &[u8]) -> Result<SortKey<'_>, String> {
    Ok(match kind {
        SortKind::Int(width) => SortKey::Int(signed(raw, width)?),
        SortKind::Oid => SortKey::Int(unsigned(raw, 4)? as i128),
        SortKind::Char => SortKey::Int(unsigned(raw, 1)? as i128),
        SortKind::Bool => match raw {
            [0] | [1] => SortKey::Int(raw[0].into()),
            _ => return Err(format!("{raw:?} is not a boolean")),
        },
        SortKind::Float(4) => SortKey::Float(f32::from_bits(unsigned(raw, 4)? as u32).into()),
        SortKind::Float(_) => SortKey::Float(f64::from_bits(unsigned(raw, 8)? as u64)),
        SortKind::Numeric => SortKey::Numeric(Numeric::parse_binary(raw)?),
        SortKind::Bytes | SortKind::Bytea => SortKey::Bytes(Cow::Borrowed(raw)),
        SortKind::Bpchar => SortKey::Bytes(Cow::Borrowed(trim_spaces(raw))),
        SortKind::Uuid => {
            unsigned(raw, 16)?;
            SortKey::Bytes(Cow::Borrowed(raw))
        }
        SortKind::Date => SortKey::Int(signed(raw, 4)?),
        SortKind::Time | SortKind::Timestamp | SortKind::TimestampTz => {
            SortKey::Int(signed(raw, 8)?)
        }
    })
}

/// A big-endian unsigned integer of exactly `width` bytes (at most 16).
fn unsigned(raw: &[u8], width: usize) -> Result<u128, String> {
    if raw.len() != width {
        return Err(format!("{} bytes where {width} were expected", raw.len()));
    }
    Ok(raw.iter().fold(0u128, |acc, &b| acc << 8 | u128::from(b)))
}

/// A big-endian two's-complement integer of exactly `width` bytes (at most 8).
fn signed(raw: &[u8], width: usize) -> Result<i128, String> {
    let v = unsigned(raw, width)? as u64;
    let unused = 64 - 8 * width as u32;
    // Shift the sign bit to the top and back to sign-extend.
    Ok(i128::from(((v << unused) as i64) >> unused))
}

fn read_text(kind: SortKind, raw: &[u8]) -> Result<SortKey<'_>, String> {
    let text = || std::str::from_utf8(raw).map_err(|_| "not UTF-8".to_string());
    let shown = || format!("{:?}", String::from_utf8_lossy(raw));
    Ok(match kind {
        SortKind::Int(_) | SortKind::Oid => {
            SortKey::Int(text()?.parse::<i64>().map_err(|_| shown())?.into())
        }
        SortKind::Float(4) => SortKey::Float(parse_float4(raw).ok_or_else(shown)?.into()),
        SortKind::Float(_) => SortKey::Float(parse_float(raw).ok_or_else(shown)?),
        SortKind::Numeric => SortKey::Numeric(Numeric::parse_text(raw)?),
        SortKind::Bool => match raw {
            b"f" => SortKey::Int(0),
            b"t" => SortKey::Int(1),
            _ => return Err(shown()),
        },
        SortKind::Bytes => SortKey::Bytes(Cow::Borrowed(raw)),
        SortKind::Bpchar => SortKey::Bytes(Cow::Borrowed(trim_spaces(raw))),
        SortKind::Char => SortKey::Int(char_text(raw).ok_or_else(shown)?.into()),
        SortKind::Bytea => SortKey::Bytes(Cow::Owned(bytea_text(raw).ok_or_else(shown)?)),
        SortKind::Uuid => SortKey::Bytes(Cow::Owned(uuid_text(raw).ok_or_else(shown)?.to_vec())),
        SortKind::Date => SortKey::Int(datetime::date_days(raw)?.into()),
        SortKind::Time => SortKey::Int(datetime::time_micros(raw)?),
        SortKind::Timestamp => SortKey::Int(datetime::timestamp_micros(raw, false)?),
        SortKind::TimestampTz => SortKey::Int(datetime::timestamp_micros(raw, true)?),
    })
}

fn trim_spaces(raw: &[u8]) -> &[u8] {
    let len = raw.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1);
    &raw[..len]
}

/// `charout`: the byte itself, nothing for `\0`, and `\ooo` for bytes with the high bit set.
fn char_text(raw: &[u8]) -> Option<u8> {
    match raw {
        [] => Some(0),
        [c] => Some(*c),
        [b'\\', o @ ..] if o.len() == 3 => octal(o),
        _ => None,
    }
}

fn octal(digits: &[u8]) -> Option<u8> {
    digits.iter().try_fold(0u8, |acc, &d| match d {
        b'0'..=b'7' => acc.checked_mul(8).map(|v| v + (d - b'0')),
        _ => None,
    })
}

/// `byteaout` in either `bytea_output` setting: `\x` hex, or escape (octal `\ooo`, `\\`, and
/// printable bytes as themselves).
fn bytea_text(raw: &[u8]) -> Option<Vec<u8>> {
    if let Some(hex) = raw.strip_prefix(b"\\x") {
        if hex.len() % 2 != 0 {
            return None;
        }
        return hex
            .chunks(2)
            .map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?))
            .collect();
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&c, tail)) = rest.split_first() {
        if c != b'\\' {
            out.push(c);
            rest = tail;
        } else if let Some(tail) = tail.strip_prefix(b"\\") {
            out.push(b'\\');
            rest = tail;
        } else {
            out.push(octal(tail.get(..3)?)?);
            rest = &tail[3..];
        }
    }
    Some(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `uuid_out`'s canonical `8-4-4-4-12` hex form.
fn uuid_text(raw: &[u8]) -> Option<[u8; 16]> {
    if raw.len() != 36 || [8, 13, 18, 23].iter().any(|&i| raw[i] != b'-') {
        return None;
    }
    let hex: Vec<u8> = raw.iter().copied().filter(|&c| c != b'-').collect();
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        *byte = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(out)
}
