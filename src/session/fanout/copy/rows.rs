//! The client's COPY data cut into rows exactly where PostgreSQL 15 cuts it (`CopyReadLineText`
//! in copyfromparse.c), so each row can go to its own shard and every shard still reads whole
//! rows. Pure: bytes in, rows out, no I/O.
//!
//! - Text: a row ends at a newline or carriage return not preceded by a backslash (the byte after
//!   a backslash is always data); `\.` alone on a line ends the data.
//! - CSV: newlines inside quotes are data; `\.` alone on a line ends the data.
//! - The first row fixes the line ending (`\n`, `\r` or `\r\n`); a row that ends otherwise is an
//!   error, as in PostgreSQL — otherwise a shard whose first row came later could read it
//!   differently from the one server the client thinks it talks to.
//!
//! A row may be split across CopyData messages: the unfinished part is carried over, and only
//! that part is copied; whole rows are handed out as slices of the message.

use crate::protocol::{PgError, SqlState};
use crate::router::Dialect;

/// A row longer than this is refused (PostgreSQL's own limit on a field is 1 GB).
const MAX_ROW: usize = 1 << 30;

/// One row of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row<'a> {
    /// The row as sent, line ending included: forwarded to the shard untouched.
    pub bytes: &'a [u8],
    /// The line ending's length (0 for a last row without one).
    pub eol: usize,
    /// PostgreSQL's line number of the row (CSV counts newlines inside quotes too).
    pub line: u64,
}

impl<'a> Row<'a> {
    /// The row without its line ending.
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[..self.bytes.len() - self.eol]
    }
}

/// The line ending the first row chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eol {
    Unknown,
    Nl,
    Cr,
    CrNl,
}

/// Where the scan is inside the current row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    Plain,
    /// Text: the byte after a backslash, data whatever it is.
    Escaped,
    /// CSV: inside quotes; `escaped` when the last byte was the (distinct) escape character.
    Quoted {
        escaped: bool,
    },
    /// An unquoted carriage return ended the row; a newline right after it belongs to it.
    Cr,
}

/// Whether rows are still coming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Rows,
    /// `\.` was seen: PostgreSQL ignores everything after it.
    Ended,
}

/// Cuts a COPY stream into rows, across as many chunks as it comes in.
pub struct Splitter {
    dialect: Dialect,
    eol: Eol,
    scan: Scan,
    stream: Stream,
    /// Text: the current row has a `\.` (only allowed alone on its line).
    marker: bool,
    /// The current row's bytes from earlier chunks.
    carry: Vec<u8>,
    /// Lines completed so far.
    line: u64,
}

impl Splitter {
    pub fn new(dialect: Dialect) -> Splitter {
        Splitter {
            dialect,
            eol: Eol::Unknown,
            scan: Scan::Plain,
            stream: Stream::Rows,
            marker: false,
            carry: Vec::new(),
            line: 0,
        }
    }

    /// Hands `each` every row completed by `chunk`; keeps the unfinished rest. Stops at the first
    /// error, from the data or from `each`.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        each: &mut impl FnMut(Row<'_>) -> Result<(), PgError>,
    ) -> Result<(), PgError> {
        let mut start = 0;
        let mut i = 0;
        while i < chunk.len() && self.stream == Stream::Rows {
            let c = chunk[i];
            // Where the row ends (exclusive) and its line ending's length, if it ends here.
            let end = match self.scan {
                Scan::Cr if c == b'\n' => {
                    self.line_ending(Eol::CrNl)?;
                    Some((i + 1, 2))
                }
                Scan::Cr => {
                    self.line_ending(Eol::Cr)?;
                    Some((i, 1)) // this byte starts the next row
                }
                _ => {
                    let ends = self.step(c)?;
                    i += 1;
                    ends.then_some((i, 1))
                }
            };
            if let Some((end, eol)) = end {
                self.scan = Scan::Plain;
                self.emit(&chunk[start..end], eol, each)?;
                start = end;
                i = end;
            }
        }
        if self.stream == Stream::Rows {
            if self.carry.len() + (chunk.len() - start) > MAX_ROW {
                return Err(PgError::error(
                    SqlState::ProgramLimitExceeded,
                    format!("COPY row at line {} is longer than 1 GiB", self.line + 1),
                ));
            }
            self.carry.extend_from_slice(&chunk[start..]);
        }
        Ok(())
    }

    /// The end of the data (CopyDone): a last row without a line ending is still a row.
    pub fn finish(
        &mut self,
        each: &mut impl FnMut(Row<'_>) -> Result<(), PgError>,
    ) -> Result<(), PgError> {
        if self.stream == Stream::Ended {
            return Ok(());
        }
        if self.scan == Scan::Cr {
            self.line_ending(Eol::Cr)?;
            self.scan = Scan::Plain;
            return self.emit(&[], 1, each);
        }
        if !self.carry.is_empty() {
            return self.emit(&[], 0, each);
        }
        Ok(())
    }

    /// Advances the scan over one byte that is not the end of a CR line ending; true when it is
    /// a newline that ends the row.
    fn step(&mut self, c: u8) -> Result<bool, PgError> {
        let mut ends = false;
        self.scan = match (self.scan, self.dialect) {
            (Scan::Escaped, _) => {
                self.marker |= c == b'.';
                Scan::Plain
            }
            (Scan::Quoted { escaped }, Dialect::Csv { quote, escape, .. }) => {
                if c == escape && escape != quote {
                    Scan::Quoted { escaped: !escaped }
                } else if c == quote && !escaped {
                    Scan::Plain
                } else {
                    let embedded = if self.eol == Eol::Nl { b'\n' } else { b'\r' };
                    self.line += u64::from(c == embedded);
                    Scan::Quoted { escaped: false }
                }
            }
            (_, Dialect::Csv { quote, .. }) if c == quote => Scan::Quoted { escaped: false },
            (_, Dialect::Text) if c == b'\\' => Scan::Escaped,
            (_, _) if c == b'\n' => {
                self.line_ending(Eol::Nl)?;
                ends = true;
                Scan::Plain
            }
            (_, _) if c == b'\r' => match self.eol {
                Eol::Nl => return Err(self.stray(b'\r')),
                // The CR ends the row; whether a newline follows is seen with the next byte.
                _ => Scan::Cr,
            },
            (scan, _) => scan,
        };
        Ok(ends)
    }

    /// A row ended with `found`; the first row's ending is the one every row must use.
    fn line_ending(&mut self, found: Eol) -> Result<(), PgError> {
        match (self.eol, found) {
            (Eol::Unknown, _) => self.eol = found,
            (a, b) if a == b => {}
            (Eol::CrNl, Eol::Cr) | (Eol::Nl, Eol::Cr | Eol::CrNl) => return Err(self.stray(b'\r')),
            _ => return Err(self.stray(b'\n')),
        }
        Ok(())
    }

    /// A carriage return or newline that is not the data's line ending.
    fn stray(&self, c: u8) -> PgError {
        let csv = matches!(self.dialect, Dialect::Csv { .. });
        let (message, hint) = match (c, csv) {
            (b'\r', false) => (
                "literal carriage return found in data",
                "Use \"\\r\" to represent carriage return.",
            ),
            (b'\r', true) => (
                "unquoted carriage return found in data",
                "Use quoted CSV field to represent carriage return.",
            ),
            (_, false) => (
                "literal newline found in data",
                "Use \"\\n\" to represent newline.",
            ),
            (_, true) => (
                "unquoted newline found in data",
                "Use quoted CSV field to represent newline.",
            ),
        };
        PgError::error(SqlState::BadCopyFileFormat, message)
            .with_hint(hint)
            .with_context(format!("line {}", self.line + 1))
    }

    /// Completes the current row with `tail` (the rest of it in this chunk) and hands it out,
    /// unless it is the end marker.
    fn emit(
        &mut self,
        tail: &[u8],
        eol: usize,
        each: &mut impl FnMut(Row<'_>) -> Result<(), PgError>,
    ) -> Result<(), PgError> {
        self.line += 1;
        let marker = std::mem::take(&mut self.marker);
        let mut carry = std::mem::take(&mut self.carry);
        let bytes: &[u8] = if carry.is_empty() {
            tail
        } else {
            carry.extend_from_slice(tail);
            &carry
        };
        let row = Row {
            bytes,
            eol,
            line: self.line,
        };
        let result = if row.body() == b"\\." {
            self.stream = Stream::Ended;
            Ok(())
        } else if marker {
            Err(
                PgError::error(SqlState::BadCopyFileFormat, "end-of-copy marker corrupt")
                    .with_hint(
                        "shardgate accepts the end-of-copy marker \\. only alone on its line.",
                    )
                    .with_context(format!("line {}", self.line)),
            )
        } else {
            each(row)
        };
        carry.clear();
        self.carry = carry; // keeps its capacity for the next long row
        result
    }
}

#[cfg(test)]
mod tests;
