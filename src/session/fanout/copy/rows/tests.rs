//! The row splitter and key-field reader against inputs whose PostgreSQL reading is known: every
//! input is also fed in every possible pair of chunks, since a row may be cut anywhere.

use super::super::field::{key_field, FieldError};
use super::*;
use crate::router::{CopyFormat, CsvNull, Dialect};

const CSV: Dialect = Dialect::Csv {
    quote: b'"',
    escape: b'"',
    key_null: CsvNull::Unquoted,
};

/// Rows (as sent, with their line numbers) of `data` fed in one chunk, checked to be the same
/// for every split of `data` into two chunks (and byte by byte).
fn rows(dialect: Dialect, data: &[u8]) -> Result<Vec<(String, u64)>, String> {
    let whole = split(dialect, &[data]);
    for cut in 0..=data.len() {
        let (a, b) = data.split_at(cut);
        assert_eq!(split(dialect, &[a, b]), whole, "cut at {cut} of {data:?}");
    }
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(split(dialect, &bytes), whole, "byte by byte: {data:?}");
    whole
}

fn split(dialect: Dialect, chunks: &[&[u8]]) -> Result<Vec<(String, u64)>, String> {
    let mut s = Splitter::new(dialect);
    let mut out = Vec::new();
    let mut each = |r: Row<'_>| {
        out.push((String::from_utf8_lossy(r.bytes).into_owned(), r.line));
        Ok(())
    };
    let mut run = || -> Result<(), PgError> {
        for c in chunks {
            s.feed(c, &mut each)?;
        }
        s.finish(&mut each)
    };
    match run() {
        Ok(()) => Ok(out),
        Err(e) => Err(format!("{} ({})", e.message, e.context.unwrap_or_default())),
    }
}

fn ok(rows: &[(&str, u64)]) -> Result<Vec<(String, u64)>, String> {
    Ok(rows.iter().map(|(r, l)| (r.to_string(), *l)).collect())
}

#[test]
fn text_rows_end_at_unescaped_newlines() {
    assert_eq!(
        rows(Dialect::Text, b"1\ta\n2\tb\\\nc\n3\t\\\\\n4\tlast"),
        ok(&[
            ("1\ta\n", 1),
            ("2\tb\\\nc\n", 2),
            ("3\t\\\\\n", 3),
            ("4\tlast", 4)
        ])
    );
    assert_eq!(rows(Dialect::Text, b""), ok(&[]));
    assert_eq!(rows(Dialect::Text, b"\n\n"), ok(&[("\n", 1), ("\n", 2)]));
}

#[test]
fn the_end_marker_ends_the_data() {
    assert_eq!(
        rows(Dialect::Text, b"1\ta\n\\.\nignored\n"),
        ok(&[("1\ta\n", 1)])
    );
    assert_eq!(rows(Dialect::Text, b"1\ta\n\\."), ok(&[("1\ta\n", 1)]));
    assert_eq!(rows(CSV, b"1,a\n\\.\nx\n"), ok(&[("1,a\n", 1)]));
    // In CSV `\.` is data unless alone on its line.
    assert_eq!(
        rows(CSV, b"1,\\.\n\"\\.\"\n"),
        ok(&[("1,\\.\n", 1), ("\"\\.\"\n", 2)])
    );
    // In text format `\\.` is a backslash and a dot; `\.` inside a row is refused.
    assert_eq!(rows(Dialect::Text, b"1\t\\\\.\n"), ok(&[("1\t\\\\.\n", 1)]));
    assert_eq!(
        rows(Dialect::Text, b"1\ta\n2\tb\\.\n"),
        Err("end-of-copy marker corrupt (line 2)".into())
    );
}

#[test]
fn csv_newlines_inside_quotes_are_data() {
    assert_eq!(
        rows(CSV, b"1,\"a\nb\"\n2,\"say \"\"hi\"\"\n\"\n3,x\n"),
        // Lines count the newlines inside quotes, as PostgreSQL's CONTEXT does — once the first
        // row has fixed the line ending (before that it counts carriage returns).
        ok(&[
            ("1,\"a\nb\"\n", 1),
            ("2,\"say \"\"hi\"\"\n\"\n", 3),
            ("3,x\n", 4)
        ])
    );
    // A distinct escape character: \" inside quotes does not close them.
    let esc = Dialect::Csv {
        quote: b'"',
        escape: b'\\',
        key_null: CsvNull::Unquoted,
    };
    assert_eq!(
        rows(esc, b"1,\"a\\\"\nb\"\n2,\"c\\\\\"\n"),
        ok(&[("1,\"a\\\"\nb\"\n", 1), ("2,\"c\\\\\"\n", 2)])
    );
}

#[test]
fn line_endings_follow_the_first_row() {
    assert_eq!(
        rows(Dialect::Text, b"1\r\n2\r\n3"),
        ok(&[("1\r\n", 1), ("2\r\n", 2), ("3", 3)])
    );
    assert_eq!(
        rows(Dialect::Text, b"1\r2\r"),
        ok(&[("1\r", 1), ("2\r", 2)])
    );
    assert_eq!(
        rows(Dialect::Text, b"1\r\n2\n"),
        Err("literal newline found in data (line 2)".into())
    );
    assert_eq!(
        rows(Dialect::Text, b"1\n2\r\n"),
        Err("literal carriage return found in data (line 2)".into())
    );
    assert_eq!(
        rows(CSV, b"1,a\n2,b\rc\n"),
        Err("unquoted carriage return found in data (line 2)".into())
    );
    assert_eq!(
        rows(CSV, b"1,\"a\r\nb\"\r\n"),
        ok(&[("1,\"a\r\nb\"\r\n", 2)])
    );
}

fn text(delimiter: u8, null: &str) -> CopyFormat {
    CopyFormat {
        dialect: Dialect::Text,
        delimiter,
        null: null.as_bytes().to_vec(),
        header: false,
    }
}

fn csv(delimiter: u8, null: &str, escape: u8, key_null: CsvNull) -> CopyFormat {
    CopyFormat {
        dialect: Dialect::Csv {
            quote: b'"',
            escape,
            key_null,
        },
        delimiter,
        null: null.as_bytes().to_vec(),
        header: false,
    }
}

fn key(body: &str, format: &CopyFormat, index: usize) -> Result<Option<String>, FieldError> {
    key_field(body.as_bytes(), format, index)
        .map(|k| k.map(|k| String::from_utf8_lossy(&k).into_owned()))
}

#[test]
fn text_key_fields_are_de_escaped_after_the_null_check() {
    let f = text(b'\t', "\\N");
    assert_eq!(key("7\tname", &f, 0), Ok(Some("7".into())));
    assert_eq!(key("x\t42", &f, 1), Ok(Some("42".into())));
    assert_eq!(key("x\t\\N", &f, 1), Ok(None));
    // An escaped delimiter is data; escapes are decoded.
    assert_eq!(key("a\\\tb\t9", &f, 1), Ok(Some("9".into())));
    assert_eq!(
        key("a\\tb\\n\\\\\\x41\\101\\q", &f, 0),
        Ok(Some("a\tb\n\\AAq".into()))
    );
    assert_eq!(key("\\\\N", &f, 0), Ok(Some("\\N".into())));
    assert_eq!(key("x", &f, 1), Err(FieldError::Missing));
    assert_eq!(key("", &f, 0), Ok(Some("".into())));
    let pipes = text(b'|', "");
    assert_eq!(key("a|5|c", &pipes, 1), Ok(Some("5".into())));
    assert_eq!(key("a||c", &pipes, 1), Ok(None));
}

#[test]
fn csv_key_fields_follow_quotes_and_null_rules() {
    let f = csv(b',', "", b'"', CsvNull::Unquoted);
    assert_eq!(key("\"a,b\",12", &f, 1), Ok(Some("12".into())));
    assert_eq!(key("\"1\"\"2\",x", &f, 0), Ok(Some("1\"2".into())));
    assert_eq!(key("x,", &f, 1), Ok(None));
    assert_eq!(
        key("x,\"\"", &f, 1),
        Ok(Some("".into())),
        "quoted empty is not NULL"
    );
    assert_eq!(key("\"a\nb\",3", &f, 1), Ok(Some("3".into())));
    assert_eq!(key("x", &f, 1), Err(FieldError::Missing));
    assert_eq!(key("\"open,1", &f, 1), Err(FieldError::Unterminated));
    let esc = csv(b';', "NULL", b'\\', CsvNull::Unquoted);
    assert_eq!(key("\"a\\\";b\";5", &esc, 1), Ok(Some("5".into())));
    assert_eq!(key("\"a\\\\\";NULL", &esc, 0), Ok(Some("a\\".into())));
    assert_eq!(key("x;NULL", &esc, 1), Ok(None));
    assert_eq!(key("x;\"NULL\"", &esc, 1), Ok(Some("NULL".into())));
    let force_null = csv(b';', "NULL", b'"', CsvNull::QuotedToo);
    assert_eq!(key("x;\"NULL\"", &force_null, 1), Ok(None));
    let force_not_null = csv(b',', "", b'"', CsvNull::Never);
    assert_eq!(key("x,", &force_not_null, 1), Ok(Some("".into())));
}
