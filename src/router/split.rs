//! An `INSERT … VALUES` whose rows belong to different shards, split into one INSERT per shard:
//! the client's text with only that shard's rows, bind parameters renumbered.

use std::ops::Range;

use super::lex;
use super::plan::RouteError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertSplit {
    /// Everything before the first row (`INSERT INTO t (a, b) VALUES `).
    prefix: Range<usize>,
    /// Each row's `( … )`.
    rows: Vec<Range<usize>>,
    /// Everything after the last row (`ON CONFLICT …`, `RETURNING …`).
    suffix: Range<usize>,
    sql: String,
}

impl InsertSplit {
    /// Finds the rows of `sql`'s VALUES list; `expected` is how many the parser saw.
    pub(super) fn new(sql: &str, expected: usize) -> Result<InsertSplit, RouteError> {
        let cannot = || {
            RouteError::Unsupported {
            what: "shardgate could not find the rows of this INSERT in its text to split them per shard".into(),
            hint: "Insert the rows of each shard in a statement of its own.".into(),
        }
        };
        let values = lex::top_level_word(sql, 0, "values").ok_or_else(cannot)?;
        let mut at = values + "values".len();
        let mut rows = Vec::with_capacity(expected);
        loop {
            let end = lex::group_end(sql, at).ok_or_else(cannot)?;
            let start = sql[..end].len() - sql[at..end].trim_start().len();
            rows.push(start..end);
            match lex::after_word(sql, end, ",") {
                Some(next) => at = next,
                None => break,
            }
        }
        if rows.len() != expected {
            return Err(cannot());
        }
        Ok(InsertSplit {
            prefix: 0..rows[0].start,
            suffix: rows[rows.len() - 1].end..sql.len(),
            rows,
            sql: sql.to_string(),
        })
    }

    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// The INSERT of only `rows` (indexes), and the client's parameters it uses (0-based) in the
    /// order of its own `$1, $2, …`.
    pub fn text_for(&self, rows: &[usize]) -> (String, Vec<usize>) {
        let mut used = Vec::new();
        let mut out = String::with_capacity(self.sql.len());
        let mut parts = vec![self.prefix.clone()];
        parts.extend(rows.iter().map(|&r| self.rows[r].clone()));
        let last = parts.len() - 1;
        for (i, part) in parts.iter().enumerate() {
            renumber(&self.sql[part.clone()], &mut used, &mut out);
            if i > 0 && i < last {
                out.push_str(", ");
            }
        }
        renumber(&self.sql[self.suffix.clone()], &mut used, &mut out);
        (out, used)
    }
}

/// Copies `text` with each `$n` replaced by its number in `used` (added there when new).
fn renumber(text: &str, used: &mut Vec<usize>, out: &mut String) {
    let mut at = 0;
    for (start, end, n) in lex::parameters(text) {
        out.push_str(&text[at..start]);
        let new = match used.iter().position(|&u| u == n) {
            Some(p) => p,
            None => {
                used.push(n);
                used.len() - 1
            }
        };
        out.push('$');
        out.push_str(&(new + 1).to_string());
        at = end;
    }
    out.push_str(&text[at..]);
}
