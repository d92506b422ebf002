//! The sharding key's field of one COPY row, read as PostgreSQL 15 reads fields
//! (`CopyReadAttributesText` / `CopyReadAttributesCSV`): only that field is decoded, the others
//! are skipped over.

use std::borrow::Cow;

use crate::router::{CopyFormat, CsvNull, Dialect};

/// Why a row has no key field to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldError {
    /// Fewer fields than the key's position.
    Missing,
    /// CSV: a quote opened and never closed.
    Unterminated,
}

/// The key field of `body` (a row without its line ending): `None` when it is NULL.
pub fn key_field<'a>(
    body: &'a [u8],
    format: &CopyFormat,
    index: usize,
) -> Result<Option<Cow<'a, [u8]>>, FieldError> {
    match format.dialect {
        Dialect::Text => text_field(body, format, index),
        Dialect::Csv {
            quote,
            escape,
            key_null,
        } => csv_field(body, format, (quote, escape, key_null), index),
    }
}

fn text_field<'a>(
    body: &'a [u8],
    format: &CopyFormat,
    index: usize,
) -> Result<Option<Cow<'a, [u8]>>, FieldError> {
    let mut field = 0;
    let mut start = 0;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\\' => i += 1, // the next byte is data, even a delimiter
            c if c == format.delimiter => {
                if field == index {
                    break;
                }
                field += 1;
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if field != index {
        return Err(FieldError::Missing);
    }
    let raw = &body[start..i.min(body.len())];
    // The NULL string is compared before de-escaping.
    if raw == format.null.as_slice() {
        return Ok(None);
    }
    Ok(Some(unescape(raw)))
}

/// Text-format backslash escapes: `\b \f \n \r \t \v`, octal `\ooo`, hex `\xhh`, and any other
/// byte standing for itself.
fn unescape(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = raw.get(i) else { break };
        i += 1;
        let byte = match e {
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                (v & 0o377) as u8
            }
            b'x' => match raw.get(i).and_then(|&h| hex(h)) {
                Some(mut v) => {
                    i += 1;
                    if let Some(low) = raw.get(i).and_then(|&h| hex(h)) {
                        v = v * 16 + low;
                        i += 1;
                    }
                    v
                }
                None => b'x',
            },
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 11,
            other => other,
        };
        out.push(byte);
    }
    Cow::Owned(out)
}

fn hex(h: u8) -> Option<u8> {
    char::from(h).to_digit(16).map(|d| d as u8)
}

fn csv_field<'a>(
    body: &'a [u8],
    format: &CopyFormat,
    (quote, escape, key_null): (u8, u8, CsvNull),
    index: usize,
) -> Result<Option<Cow<'a, [u8]>>, FieldError> {
    let mut at = 0;
    for field in 0.. {
        let wanted = field == index;
        let start = at;
        let mut value = Vec::new();
        let mut quoted = false;
        let mut delimited = false;
        while at < body.len() {
            let c = body[at];
            at += 1;
            if c == format.delimiter {
                delimited = true;
                break;
            }
            if c != quote {
                if wanted {
                    value.push(c);
                }
                continue;
            }
            quoted = true;
            at = quoted_part(body, at, quote, escape, wanted.then_some(&mut value))?;
        }
        if wanted {
            let raw = &body[start..at - usize::from(delimited)];
            let null = match key_null {
                CsvNull::Never => false,
                CsvNull::Unquoted => !quoted && raw == format.null.as_slice(),
                CsvNull::QuotedToo => {
                    (!quoted && raw == format.null.as_slice()) || value == format.null
                }
            };
            return Ok((!null).then_some(if quoted {
                Cow::Owned(value)
            } else {
                Cow::Borrowed(raw)
            }));
        }
        if !delimited {
            break;
        }
    }
    Err(FieldError::Missing)
}

/// Reads a quoted part starting after its opening quote; returns where it ends (after the
/// closing quote), pushing its bytes to `value` when given.
fn quoted_part(
    body: &[u8],
    mut at: usize,
    quote: u8,
    escape: u8,
    mut value: Option<&mut Vec<u8>>,
) -> Result<usize, FieldError> {
    loop {
        let Some(&c) = body.get(at) else {
            return Err(FieldError::Unterminated);
        };
        at += 1;
        let mut byte = c;
        if c == escape {
            if let Some(&next) = body.get(at).filter(|&&n| n == escape || n == quote) {
                byte = next;
                at += 1;
                if let Some(v) = value.as_deref_mut() {
                    v.push(byte);
                }
                continue;
            }
        }
        if byte == quote {
            return Ok(at);
        }
        if let Some(v) = value.as_deref_mut() {
            v.push(byte);
        }
    }
}
