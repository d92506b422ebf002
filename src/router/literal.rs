//! Sharding-key values written in SQL: literals, bind parameters, and casts that keep the value.

use sqlparser::ast::{ArrayElemTypeDef, DataType, Expr, UnaryOperator, Value};

use super::key::KeyValue;
use super::params::text_array;
use super::plan::KeySource;
use crate::config::KeyType;

/// The key an expression denotes, when it denotes exactly one without evaluating anything.
/// A literal that is not a valid key gives `None` (unpinned), never a guess.
pub(super) fn key_source(e: &Expr, key_type: KeyType) -> Option<KeySource> {
    match e {
        Expr::Nested(inner) => key_source(inner, key_type),
        Expr::Cast {
            expr, data_type, ..
        } if cast_keeps_value(data_type, key_type) => key_source(expr, key_type),
        Expr::Value(v) => value_key(&v.value, key_type),
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            // `-9223372036854775808` is one literal (its digits alone are out of range).
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => parse(&format!("-{n}"), key_type),
                _ => None,
            },
            // `-5::bigint` is `-(5::bigint)`: `::` binds tighter than the minus.
            inner => match key_source(inner, key_type)? {
                KeySource::Value(KeyValue::Int(v)) => {
                    Some(KeySource::Value(KeyValue::Int(v.checked_neg()?)))
                }
                _ => None,
            },
        },
        _ => None,
    }
}

/// The keys of `= ANY(…)`: an array parameter, an array literal or an `ARRAY[…]` of keys, cast
/// (if at all) to an array of the key's own type family.
pub(super) fn any_keys(e: &Expr, key_type: KeyType) -> Option<Vec<KeySource>> {
    match e {
        Expr::Nested(inner) => any_keys(inner, key_type),
        // `$1::varchar(3)[]` cuts each element short: not the keys the client sent.
        Expr::Cast {
            expr, data_type, ..
        } => match data_type {
            DataType::Array(
                ArrayElemTypeDef::SquareBracket(elem, _)
                | ArrayElemTypeDef::AngleBracket(elem)
                | ArrayElemTypeDef::Parenthesis(elem)
                | ArrayElemTypeDef::Qualified(elem, _),
            ) if cast_keeps_value(elem, key_type) => any_keys(expr, key_type),
            _ => None,
        },
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => Some(vec![KeySource::ParamArray(param_index(p)?)]),
            // `'{1,2,3}'`: read as Postgres reads an array literal.
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(
                text_array(s.as_bytes(), key_type, 0)
                    .ok()?
                    .into_iter()
                    .map(|k| k.map_or(KeySource::Null, KeySource::Value))
                    .collect(),
            ),
            _ => None,
        },
        Expr::Array(a) => a.elem.iter().map(|e| key_source(e, key_type)).collect(),
        _ => None,
    }
}

fn value_key(v: &Value, key_type: KeyType) -> Option<KeySource> {
    match v {
        Value::Placeholder(p) => Some(KeySource::Param(param_index(p)?)),
        Value::Null => Some(KeySource::Null),
        // `text_key = 42` is an error in Postgres; no route is better than a guess.
        Value::Number(n, _) if key_type != KeyType::Text && key_type != KeyType::Uuid => {
            parse(n, key_type)
        }
        Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => parse(s, key_type),
        Value::DollarQuotedString(d) => parse(&d.value, key_type),
        _ => None,
    }
}

fn parse(text: &str, key_type: KeyType) -> Option<KeySource> {
    KeyValue::from_text(key_type, text)
        .ok()
        .map(KeySource::Value)
}

/// `$3` → 2.
pub(super) fn param_index(p: &str) -> Option<usize> {
    let n: usize = p.strip_prefix('$')?.parse().ok()?;
    n.checked_sub(1)
}

/// Casts that cannot change which key a value denotes: to a type of the key's own family.
/// (`'00042'::bigint::text` is not `'00042'`, so a text key accepts only text casts.)
fn cast_keeps_value(to: &DataType, key_type: KeyType) -> bool {
    match key_type {
        KeyType::Bigint | KeyType::Integer => matches!(
            to,
            DataType::BigInt(_)
                | DataType::Int8(_)
                | DataType::Int(_)
                | DataType::Int4(_)
                | DataType::Integer(_)
                | DataType::SmallInt(_)
                | DataType::Int2(_)
        ),
        KeyType::Text => match to {
            DataType::Text | DataType::Varchar(None) => true,
            DataType::Custom(name, args) => {
                args.is_empty() && name.to_string().eq_ignore_ascii_case("text")
            }
            _ => false,
        },
        KeyType::Uuid => matches!(to, DataType::Uuid),
    }
}
