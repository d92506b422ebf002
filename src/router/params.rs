//! Sharding keys from bind parameters, in text or binary format, including arrays for `= ANY($n)`.

use super::key::KeyValue;
use super::plan::{KeyProblem, KeySource, RouteError};
use crate::config::KeyType;
pub use crate::protocol::frontend::BindParams as Params;

/// The keys a source denotes; `None` entries are NULLs. Without parameters (a simple query, where
/// `$n` is an error Postgres will report) a parameter denotes no key.
pub(super) fn keys(
    source: &KeySource,
    params: Option<&Params>,
    key_type: KeyType,
) -> Result<Vec<Option<KeyValue>>, RouteError> {
    // `None` without a Bind; else the value (`None` for NULL) and whether it is binary.
    type Param<'a> = Option<(Option<&'a [u8]>, bool)>;
    let param = |i: usize| -> Result<Param<'_>, RouteError> {
        let Some(p) = params else { return Ok(None) };
        match p.values.get(i) {
            Some(v) => Ok(Some((*v, p.is_binary(i)))),
            None => Err(RouteError::BadKey(
                KeyProblem::Protocol,
                format!(
                    "the statement uses parameter ${} but the Bind has {}",
                    i + 1,
                    p.values.len()
                ),
            )),
        }
    };
    match source {
        KeySource::Value(v) => Ok(vec![Some(v.clone())]),
        KeySource::Null => Ok(vec![None]),
        KeySource::Param(i) => match param(*i)? {
            None => Ok(Vec::new()),
            Some((None, _)) => Ok(vec![None]),
            Some((Some(bytes), binary)) => Ok(vec![Some(scalar(bytes, binary, key_type, *i)?)]),
        },
        KeySource::ParamArray(i) => match param(*i)? {
            None | Some((None, _)) => Ok(Vec::new()),
            Some((Some(bytes), true)) => binary_array(bytes, key_type, *i),
            Some((Some(bytes), false)) => text_array(bytes, key_type, *i),
        },
    }
}

fn scalar(bytes: &[u8], binary: bool, key_type: KeyType, i: usize) -> Result<KeyValue, RouteError> {
    if binary {
        return KeyValue::from_binary(key_type, bytes).map_err(|e| bad(e, i));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| {
        let message = format!("parameter ${} is not valid UTF-8", i + 1);
        RouteError::BadKey(KeyProblem::Encoding, message)
    })?;
    KeyValue::from_text(key_type, text).map_err(|e| bad(e, i))
}

fn bad(e: super::key::KeyError, i: usize) -> RouteError {
    RouteError::BadKey(e.problem(), format!("parameter ${}: {e}", i + 1))
}

/// A one-dimensional array in text format: `{1,2,NULL}` or `{"a","b\"c"}`.
pub(super) fn text_array(
    bytes: &[u8],
    key_type: KeyType,
    i: usize,
) -> Result<Vec<Option<KeyValue>>, RouteError> {
    let not_array = || {
        RouteError::BadKey(
            KeyProblem::Syntax,
            format!("parameter ${} is not a one-dimensional array", i + 1),
        )
    };
    let text = std::str::from_utf8(bytes).map_err(|_| not_array())?.trim();
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(not_array)?;
    if inner.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (item, quoted) in split_elements(inner).ok_or_else(not_array)? {
        if !quoted && item.eq_ignore_ascii_case("null") {
            out.push(None);
        } else {
            out.push(Some(
                KeyValue::from_text(key_type, &item).map_err(|e| bad(e, i))?,
            ));
        }
    }
    Ok(out)
}

/// Splits array elements at top-level commas, unquoting `"…"` elements.
fn split_elements(inner: &str) -> Option<Vec<(String, bool)>> {
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut item = String::new();
        let mut escaped = false;
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => item.push(chars.next()?),
                    '"' => break,
                    c => item.push(c),
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
        } else {
            // Unquoted: a backslash escapes the next character (`{a\,b}` is one element,
            // "a,b"); unescaped whitespace around the element is dropped.
            let mut kept = 0;
            while let Some(&c) = chars.peek() {
                match c {
                    ',' => break,
                    '"' | '{' | '}' => return None,
                    '\\' => {
                        chars.next();
                        item.push(chars.next()?);
                        kept = item.len();
                        escaped = true;
                    }
                    c => {
                        item.push(c);
                        chars.next();
                        if !c.is_whitespace() {
                            kept = item.len();
                        }
                    }
                }
            }
            item.truncate(kept);
        }
        out.push((item, quoted || escaped));
        match chars.next() {
            None => return Some(out),
            Some(',') => continue,
            Some(_) => return None,
        }
    }
}

/// A one-dimensional array in binary format: ndim, flags, element type, (length, lower bound),
/// then each element as length + bytes.
fn binary_array(
    b: &[u8],
    key_type: KeyType,
    i: usize,
) -> Result<Vec<Option<KeyValue>>, RouteError> {
    let bad_array = || {
        RouteError::BadKey(
            KeyProblem::Binary,
            format!("parameter ${} is not a valid binary array", i + 1),
        )
    };
    let int = |at: usize| -> Result<i32, RouteError> {
        b.get(at..at + 4)
            .map(|s| i32::from_be_bytes(s.try_into().expect("4 bytes")))
            .ok_or_else(bad_array)
    };
    match int(0)? {
        0 => return Ok(Vec::new()),
        1 => {}
        _ => return Err(bad_array()),
    }
    let count = usize::try_from(int(12)?).map_err(|_| bad_array())?;
    let mut at = 20;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = int(at)?;
        at += 4;
        match usize::try_from(len) {
            Err(_) => out.push(None),
            Ok(n) => {
                let bytes = b.get(at..at + n).ok_or_else(bad_array)?;
                at += n;
                out.push(Some(
                    KeyValue::from_binary(key_type, bytes).map_err(|e| bad(e, i))?,
                ));
            }
        }
    }
    Ok(out)
}
