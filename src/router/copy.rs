//! `COPY <sharded table> (cols) FROM STDIN`: which field of each row holds the sharding key, and
//! how rows and fields are spelled (text or CSV, DELIMITER, NULL, HEADER, QUOTE, ESCAPE), so the
//! session can split the client's data row by row and send each row to its shard.
//!
//! The options are read as PostgreSQL 15 reads them (`ProcessCopyOptions`): later options win
//! over the format's defaults whatever their order. Options the shards would reject anyway are
//! left to them: their error arrives before any data is read.

use std::sync::Arc;

use sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopyTarget, Ident};

use super::catalog::ident;
use super::key::{KeyError, KeyValue};
use super::plan::{Plan, RouteError};
use super::Router;

/// A COPY FROM STDIN into a sharded table, as the session needs it to split the rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyIn {
    pub table: Arc<str>,
    pub key_column: Arc<str>,
    /// The key's position among each row's fields (0-based, from the column list).
    pub key_field: usize,
    pub format: CopyFormat,
}

/// How the rows of a COPY are spelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    pub dialect: Dialect,
    pub delimiter: u8,
    /// The string that stands for NULL (compared with the field before de-escaping).
    pub null: Vec<u8>,
    /// The first line is a header: every shard gets it (each skips one line).
    pub header: bool,
}

/// Text format (backslash escapes) or CSV (quoted fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Text,
    Csv {
        quote: u8,
        escape: u8,
        /// How the key field's NULL string is read (FORCE_NOT_NULL / FORCE_NULL on the key).
        key_null: CsvNull,
    },
}

/// CSV's NULL rules for the key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvNull {
    /// An unquoted NULL string is NULL.
    Unquoted,
    /// FORCE_NOT_NULL: never NULL.
    Never,
    /// FORCE_NULL: the NULL string is NULL quoted or not.
    QuotedToo,
}

/// Why a row's key picks no shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyKeyError {
    /// Not a value of the key type.
    Invalid(KeyError),
    /// A range or list map without an entry for it.
    NoOwner(String),
}

impl Router {
    /// The shard owning a COPY row's key, given as its text (already de-escaped).
    pub fn copy_key_shard(&self, text: &str) -> Result<usize, CopyKeyError> {
        let key =
            KeyValue::from_text(self.catalog.key_type, text).map_err(CopyKeyError::Invalid)?;
        self.map
            .shard_of(&key)
            .ok_or_else(|| CopyKeyError::NoOwner(key.to_string()))
    }
}

/// The plan of `COPY table (columns) FROM target` for a sharded table.
pub(super) fn plan(
    table: Arc<str>,
    key: Arc<str>,
    columns: &[Ident],
    target: &CopyTarget,
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
) -> Plan {
    let refuse = |what: String, hint: &str| {
        Plan::Reject(RouteError::Unsupported {
            what,
            hint: hint.into(),
        })
    };
    if !matches!(target, CopyTarget::Stdin) {
        // Every shard would read the same server file or program: each row on every shard.
        return refuse(
            format!("COPY FROM a file or program into sharded table \"{table}\" is not supported"),
            "Use COPY … FROM STDIN (psql's \\copy): shardgate then sends each row to the shard that owns its key.",
        );
    }
    if columns.is_empty() {
        return refuse(
            format!("COPY into sharded table \"{table}\" must list its columns, so shardgate can find the sharding key \"{key}\" in each row"),
            &format!("Write COPY {table} (col, …) FROM STDIN with the columns in the order of the data, \"{key}\" among them."),
        );
    }
    let Some(key_field) = columns.iter().position(|c| ident(c) == *key) else {
        return refuse(
            format!("COPY into sharded table \"{table}\" must give its sharding key \"{key}\""),
            &format!("Add \"{key}\" to the column list and to every row."),
        );
    };
    match format(options, legacy, &key) {
        Ok(format) => Plan::CopyIn(Arc::new(CopyIn {
            table,
            key_column: key,
            key_field,
            format,
        })),
        Err((what, hint)) => refuse(what, hint),
    }
}

type Refusal = (String, &'static str);

/// The format the options describe.
fn format(
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
    key: &str,
) -> Result<CopyFormat, Refusal> {
    let mut o = Options::default();
    for opt in options {
        o.modern(opt, key)?;
    }
    for opt in legacy {
        o.legacy(opt, key)?;
    }
    o.build()
}

/// The options as given; the format's defaults fill in the rest.
#[derive(Default)]
struct Options {
    csv: bool,
    delimiter: Option<u8>,
    null: Option<String>,
    header: bool,
    quote: Option<u8>,
    escape: Option<u8>,
    key_null: Option<CsvNull>,
}

const BINARY_HINT: &str = "Use FORMAT text or csv: shardgate reads each row's sharding key to choose its shard, and does not read the binary format.";

impl Options {
    fn modern(&mut self, opt: &CopyOption, key: &str) -> Result<(), Refusal> {
        match opt {
            CopyOption::Format(f) => match ident(f).as_str() {
                "text" => self.csv = false,
                "csv" => self.csv = true,
                "binary" => return Err(binary()),
                // The shards name the problem.
                _ => {}
            },
            CopyOption::Delimiter(c) => self.delimiter = Some(one_byte(*c, "delimiter")?),
            CopyOption::Null(s) => self.null = Some(s.clone()),
            CopyOption::Header(h) => self.header = *h,
            CopyOption::Quote(c) => self.quote = Some(one_byte(*c, "quote")?),
            CopyOption::Escape(c) => self.escape = Some(one_byte(*c, "escape")?),
            CopyOption::ForceNotNull(cols) if names(cols, key) => {
                self.key_null = Some(CsvNull::Never)
            }
            CopyOption::ForceNull(cols) if names(cols, key) => {
                self.key_null = Some(CsvNull::QuotedToo)
            }
            CopyOption::Encoding(e) if !is_utf8(e) => return Err(encoding()),
            _ => {}
        }
        Ok(())
    }

    fn legacy(&mut self, opt: &CopyLegacyOption, key: &str) -> Result<(), Refusal> {
        match opt {
            CopyLegacyOption::Binary => return Err(binary()),
            CopyLegacyOption::Delimiter(c) => self.delimiter = Some(one_byte(*c, "delimiter")?),
            CopyLegacyOption::Null(s) => self.null = Some(s.clone()),
            CopyLegacyOption::Header => self.header = true,
            CopyLegacyOption::Csv(csv) => {
                self.csv = true;
                for o in csv {
                    match o {
                        CopyLegacyCsvOption::Header => self.header = true,
                        CopyLegacyCsvOption::Quote(c) => self.quote = Some(one_byte(*c, "quote")?),
                        CopyLegacyCsvOption::Escape(c) => {
                            self.escape = Some(one_byte(*c, "escape")?)
                        }
                        CopyLegacyCsvOption::ForceNotNull(cols) if names(cols, key) => {
                            self.key_null = Some(CsvNull::Never)
                        }
                        _ => {}
                    }
                }
            }
            other => {
                return Err((
                    format!("COPY option {other} is not understood by shardgate"),
                    "Use PostgreSQL's COPY options: FORMAT, DELIMITER, NULL, HEADER, QUOTE, ESCAPE, FORCE_NOT_NULL, FORCE_NULL.",
                ))
            }
        }
        Ok(())
    }

    fn build(self) -> Result<CopyFormat, Refusal> {
        let dialect = if self.csv {
            let quote = self.quote.unwrap_or(b'"');
            Dialect::Csv {
                quote,
                escape: self.escape.unwrap_or(quote),
                key_null: self.key_null.unwrap_or(CsvNull::Unquoted),
            }
        } else {
            Dialect::Text
        };
        let (delimiter, null) = match dialect {
            Dialect::Text => (b'\t', "\\N"),
            Dialect::Csv { .. } => (b',', ""),
        };
        Ok(CopyFormat {
            dialect,
            delimiter: self.delimiter.unwrap_or(delimiter),
            null: self.null.unwrap_or_else(|| null.into()).into_bytes(),
            header: self.header,
        })
    }
}

fn binary() -> Refusal {
    (
        "COPY FROM STDIN in binary format into a sharded table is not supported".into(),
        BINARY_HINT,
    )
}

fn encoding() -> Refusal {
    (
        "COPY FROM STDIN into a sharded table with an ENCODING other than UTF8 is not supported"
            .into(),
        "Send the data in UTF8 (drop the ENCODING option).",
    )
}

fn is_utf8(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "utf8" | "utf-8" | "unicode"
    )
}

/// A delimiter, quote or escape character: one byte, as PostgreSQL requires.
fn one_byte(c: char, what: &str) -> Result<u8, Refusal> {
    u8::try_from(c).ok().filter(u8::is_ascii).ok_or_else(|| {
        (
            format!("COPY {what} must be a single one-byte character"),
            "Use an ASCII character.",
        )
    })
}

fn names(cols: &[Ident], key: &str) -> bool {
    cols.iter().any(|c| ident(c) == key)
}
