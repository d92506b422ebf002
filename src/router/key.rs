//! Sharding-key values: a literal or bind parameter read the way PostgreSQL 15's input function for
//! the key's type would read it, so that shardgate and the server agree on which value a query
//! names, and therefore on its bucket.
//!
//! Text input follows `int8in`/`int4in` (`pg_strtoint64`/`pg_strtoint32` in numutils.c) and
//! `uuid_in` (`string_to_uuid` in uuid.c); binary input follows `int2recv`/`int4recv`/`int8recv`,
//! `textrecv` and `uuid_recv`. Anything the server would reject is an error here too, with a
//! message for the client that says what was wrong and what is expected.

use std::fmt;

use crate::config::KeyType;

use super::hash;

/// A sharding key's value, typed. Integer keys of every width are `Int`: they hash alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyValue {
    Int(i64),
    Text(String),
    /// The 16 bytes in the order the canonical text spells them (network order).
    Uuid([u8; 16]),
}

/// Why a value cannot be a sharding key. Always the client's fault (a literal or parameter that
/// the server would reject as well); retrying the same value cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("invalid input for {} sharding key: {text:?} (expected a whole number)", phrase(.key_type))]
    NotAWholeNumber { key_type: KeyType, text: String },

    #[error("value {text} is out of range for {} sharding key (expected {})", phrase(.key_type), range(.key_type))]
    OutOfRange { key_type: KeyType, text: String },

    #[error(
        "invalid input for a uuid sharding key: {text:?} (expected 32 hex digits, e.g. \
         a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11, hyphens and surrounding braces optional)"
    )]
    NotAUuid { text: String },

    #[error(
        "a text sharding key cannot contain a NUL byte (PostgreSQL does not accept one in text)"
    )]
    NulInText,

    #[error("a binary text sharding key is not valid UTF-8 (invalid byte sequence at byte {at})")]
    InvalidUtf8 { at: usize },

    #[error("a binary {} sharding key must be {}, got {len} bytes", name(.key_type), binary_sizes(.key_type))]
    BinaryLength { key_type: KeyType, len: usize },
}

impl KeyError {
    /// Which SQLSTATE the client gets: Postgres' own for the same value of the column's type.
    pub fn problem(&self) -> super::plan::KeyProblem {
        use super::plan::KeyProblem;
        match self {
            KeyError::NotAWholeNumber { .. } | KeyError::NotAUuid { .. } => KeyProblem::Syntax,
            KeyError::OutOfRange { .. } => KeyProblem::Range,
            KeyError::NulInText | KeyError::InvalidUtf8 { .. } => KeyProblem::Encoding,
            KeyError::BinaryLength { .. } => KeyProblem::Binary,
        }
    }
}

/// At most this many characters of a rejected value are repeated in an error message: enough to
/// recognise it, without echoing a megabyte parameter back into logs.
const SHOWN_CHARS: usize = 64;

impl KeyValue {
    /// The partition hash PostgreSQL computes for this value (see [`super::hash`]).
    pub fn hash(&self) -> u64 {
        match self {
            KeyValue::Int(v) => hash::hash_int(*v),
            KeyValue::Text(s) => hash::hash_text(s.as_bytes()),
            KeyValue::Uuid(u) => hash::hash_uuid(u),
        }
    }

    /// As Postgres' input function for the key type would read it (int8in/int4in: optional
    /// surrounding whitespace, optional sign, decimal digits, range-checked — integer keys must fit
    /// i32, bigint i64; uuid_in: hex with or without hyphens as uuid_in accepts, optional braces,
    /// any case; text: as is).
    pub fn from_text(key_type: KeyType, s: &str) -> Result<KeyValue, KeyError> {
        match key_type {
            KeyType::Bigint | KeyType::Integer => parse_int(key_type, s).map(KeyValue::Int),
            KeyType::Text => text_key(s),
            KeyType::Uuid => parse_uuid(s.as_bytes())
                .map(KeyValue::Uuid)
                .ok_or_else(|| KeyError::NotAUuid { text: shown(s) }),
        }
    }

    /// A bind parameter in binary format: for integer key types 2, 4 or 8 bytes big-endian (the
    /// client chose int2/int4/int8; all hash alike), for uuid 16 bytes, for text the UTF-8 bytes
    /// (reject invalid UTF-8).
    pub fn from_binary(key_type: KeyType, b: &[u8]) -> Result<KeyValue, KeyError> {
        let wrong_length = || KeyError::BinaryLength {
            key_type,
            len: b.len(),
        };
        match key_type {
            KeyType::Bigint | KeyType::Integer => {
                let v = binary_int(b).ok_or_else(wrong_length)?;
                check_range(key_type, v, || v.to_string()).map(KeyValue::Int)
            }
            KeyType::Uuid => b.try_into().map(KeyValue::Uuid).map_err(|_| wrong_length()),
            KeyType::Text => match std::str::from_utf8(b) {
                Ok(s) => text_key(s),
                Err(e) => Err(KeyError::InvalidUtf8 {
                    at: e.valid_up_to(),
                }),
            },
        }
    }
}

impl fmt::Display for KeyValue {
    /// Integers as digits, text as is, uuids in the canonical lowercase 8-4-4-4-12 form (what
    /// uuid_out prints).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyValue::Int(v) => write!(f, "{v}"),
            KeyValue::Text(s) => f.write_str(s),
            KeyValue::Uuid(u) => {
                for (i, byte) in u.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// Text is taken as is, except a NUL byte: the server refuses it in any text value (its encoding
/// check rejects 0x00), so no row can hold it.
fn text_key(s: &str) -> Result<KeyValue, KeyError> {
    if s.contains('\0') {
        return Err(KeyError::NulInText);
    }
    Ok(KeyValue::Text(s.to_owned()))
}

/// `pg_strtoint64` / `pg_strtoint32` of PostgreSQL 15 (numutils.c): whitespace, an optional sign,
/// at least one decimal digit, whitespace, nothing else. No `0x`, no `_` separators, no exponent
/// (PostgreSQL 16 added the first two; a PostgreSQL 15 server rejects them, so we do too).
///
/// Like C, digits are accumulated as a negative number (so the most negative value fits) and an
/// overflow is reported as soon as it happens, before looking at what follows: `99999999999999999999x`
/// is out of range, not malformed, exactly as the server says.
fn parse_int(key_type: KeyType, s: &str) -> Result<i64, KeyError> {
    let (min, max) = bounds(key_type);
    let malformed = || KeyError::NotAWholeNumber {
        key_type,
        text: shown(s),
    };
    let out_of_range = || KeyError::OutOfRange {
        key_type,
        text: shown(s.trim_matches(|c: char| c.is_ascii() && is_c_space(c as u8))),
    };
    let bytes = s.as_bytes();
    let mut at = bytes.iter().take_while(|&&b| is_c_space(b)).count();
    let negative = bytes.get(at) == Some(&b'-');
    if matches!(bytes.get(at), Some(b'-' | b'+')) {
        at += 1;
    }
    let digits = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 {
        return Err(malformed());
    }
    let mut acc: i64 = 0;
    for &d in &bytes[at..at + digits] {
        acc = acc
            .checked_mul(10)
            .and_then(|v| v.checked_sub(i64::from(d - b'0')))
            .filter(|&v| v >= min)
            .ok_or_else(out_of_range)?;
    }
    if !bytes[at + digits..].iter().all(|&b| is_c_space(b)) {
        return Err(malformed());
    }
    let value = if negative {
        Some(acc)
    } else {
        acc.checked_neg()
    };
    value.filter(|&v| v <= max).ok_or_else(out_of_range)
}

/// C's `isspace` for the bytes the server's `pg_strtoint` skips: space, `\t`, `\n`, `\v`, `\f`,
/// `\r`. (Rust's `is_ascii_whitespace` leaves out `\v`, which PostgreSQL accepts.)
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The inclusive range of values a column of an integer key type can hold.
fn bounds(key_type: KeyType) -> (i64, i64) {
    match key_type {
        KeyType::Integer => (i32::MIN.into(), i32::MAX.into()),
        _ => (i64::MIN, i64::MAX),
    }
}

/// `v` if a column of `key_type` can hold it; `text` spells it for the error.
fn check_range(key_type: KeyType, v: i64, text: impl Fn() -> String) -> Result<i64, KeyError> {
    let (min, max) = bounds(key_type);
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(KeyError::OutOfRange {
            key_type,
            text: text(),
        })
    }
}

/// A binary int2, int4 or int8 parameter (big-endian, two's complement); None for other sizes.
fn binary_int(b: &[u8]) -> Option<i64> {
    match b.len() {
        2 => b.try_into().ok().map(|a| i16::from_be_bytes(a).into()),
        4 => b.try_into().ok().map(|a| i32::from_be_bytes(a).into()),
        8 => b.try_into().ok().map(i64::from_be_bytes),
        _ => None,
    }
}

/// `string_to_uuid` of uuid.c: an optional `{` (which then requires the closing `}`), 16 pairs of
/// hex digits in either case, and at most one `-` after each group of four digits except the last.
/// So `a0ee-bc99-...` and the bare 32 digits are accepted; whitespace, a leading hyphen, doubled
/// hyphens and hyphens inside a group of four are not.
fn parse_uuid(mut src: &[u8]) -> Option<[u8; 16]> {
    let braces = src.first() == Some(&b'{');
    if braces {
        src = &src[1..];
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        let [hi, lo, rest @ ..] = src else {
            return None;
        };
        *byte = hex_digit(*hi)? << 4 | hex_digit(*lo)?;
        src = rest;
        if i % 2 == 1 && i < 15 {
            src = src.strip_prefix(b"-").unwrap_or(src);
        }
    }
    if braces {
        src = src.strip_prefix(b"}")?;
    }
    src.is_empty().then_some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// `s` for an error message, cut to [`SHOWN_CHARS`] characters.
fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => format!("{}...", &s[..end]),
        None => s.to_owned(),
    }
}

/// "a bigint", "an integer", ...: the key type as an error message names it.
fn phrase(key_type: &KeyType) -> String {
    let article = if *key_type == KeyType::Integer {
        "an"
    } else {
        "a"
    };
    format!("{article} {}", name(key_type))
}

fn name(key_type: &KeyType) -> &'static str {
    key_type.sql_name()
}

fn range(key_type: &KeyType) -> String {
    let (min, max) = bounds(*key_type);
    format!("{min} to {max}")
}

/// The sizes a binary parameter of this key type may have.
fn binary_sizes(key_type: &KeyType) -> &'static str {
    match key_type {
        KeyType::Bigint | KeyType::Integer => "2, 4 or 8 bytes (int2, int4 or int8, big-endian)",
        KeyType::Uuid => "16 bytes",
        // Never reported: any length can be text; only its encoding is checked.
        KeyType::Text => "UTF-8 bytes",
    }
}

#[cfg(test)]
mod tests;
