//! A small SQL lexer: splits a simple query into statements and reads leading keywords, without
//! parsing. Shared by the router (for statements sqlparser cannot read) and the session.

use std::fmt::Write as _;

/// Splits a simple-query string into statements at top-level semicolons, skipping quoted strings,
/// quoted identifiers, dollar-quoted bodies and comments. Empty statements are skipped. Lazy: the
/// common single statement costs one scan and no allocation.
pub fn statements(sql: &str) -> Statements<'_> {
    Statements { sql, pos: 0 }
}

pub struct Statements<'a> {
    sql: &'a str,
    pos: usize,
}

impl<'a> Iterator for Statements<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let b = self.sql.as_bytes();
        while self.pos <= b.len() {
            let start = self.pos;
            let end = statement_end(b, start);
            self.pos = end + 1;
            let stmt = &self.sql[start..end];
            if b[self.pos.min(b.len())..].iter().all(|&c| is_space(c)) {
                // Only blanks after this `;` (the usual end of a text): no empty statement to
                // look for there.
                self.pos = b.len() + 1;
            }
            if !strip_comments_start(stmt).is_empty() {
                return Some(trim_blanks(stmt));
            }
        }
        None
    }
}

/// The index of the top-level `;` that ends the statement starting at `start`, or the end.
fn statement_end(b: &[u8], start: usize) -> usize {
    let rest = &b[start..];
    // The usual texts decided by one or two vectorised searches: no `;` at all (drivers send
    // one statement, unterminated), or a `;` with nothing before it that could hide one.
    match memchr::memchr3(b';', b'\'', b'"', rest) {
        None => return b.len(),
        Some(p) if rest[p] == b';' => {
            if memchr::memchr3(b'-', b'/', b'$', &rest[..p]).is_none() {
                return start + p;
            }
        }
        Some(p) => {
            if memchr::memchr(b';', &rest[p..]).is_none() {
                return b.len();
            }
        }
    }
    let mut i = start;
    while let Some(p) = next_special(&b[i..]) {
        i += p;
        if b[i] == b';' {
            return i;
        }
        i = skip_non_code(b, i).unwrap_or(i + 1);
    }
    b.len()
}

/// The first byte that may end a statement or start what [`skip_non_code`] skips. Every query's
/// text is split (session commands, INSERTs to list): two vectorised searches pass over ordinary
/// bytes several times faster than a loop looking at each.
fn next_special(b: &[u8]) -> Option<usize> {
    let first = memchr::memchr3(b';', b'\'', b'"', b);
    let before = &b[..first.unwrap_or(b.len())];
    memchr::memchr3(b'-', b'/', b'$', before).or(first)
}

/// Where the quoted string, quoted identifier, comment or dollar-quoted body that starts at `i`
/// ends; `None` when none starts there.
fn skip_non_code(b: &[u8], i: usize) -> Option<usize> {
    match b[i] {
        b'\'' => Some(skip_quoted(
            b,
            i,
            b'\'',
            i > 0 && matches!(b[i - 1], b'E' | b'e'),
        )),
        b'"' => Some(skip_quoted(b, i, b'"', false)),
        b'-' if b.get(i + 1) == Some(&b'-') => Some(
            b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p + 1),
        ),
        b'/' if b.get(i + 1) == Some(&b'*') => Some(skip_block_comment(b, i)),
        // `$` inside an identifier (`a$b$`) is part of it, not a dollar quote.
        b'$' if i > 0 && is_ident_byte(b[i - 1]) => None,
        b'$' => Some(skip_dollar_quoted(b, i)).filter(|&end| end > i + 1),
        _ => None,
    }
}

/// Whitespace as Postgres' lexer knows it.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

/// Letters, digits, `_` and non-ASCII bytes: what unquoted identifiers and keywords are made of
/// (plus `$` after the first character).
fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// The unquoted words (keywords, identifiers, numbers) of a statement with their byte offsets,
/// skipping quoted strings, quoted identifiers, dollar-quoted bodies and comments.
pub(crate) fn bare_words(stmt: &str) -> Vec<(usize, &str)> {
    let b = stmt.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if let Some(end) = skip_non_code(b, i) {
            i = end;
            continue;
        }
        i = match b[i] {
            c if is_ident_byte(c) => {
                let end = b[i..]
                    .iter()
                    .position(|&c| !(is_ident_byte(c) || c == b'$'))
                    .map_or(b.len(), |p| i + p);
                words.push((i, &stmt[i..end]));
                end
            }
            _ => i + 1,
        };
    }
    words
}

fn skip_quoted(b: &[u8], open: usize, quote: u8, backslash_escapes: bool) -> usize {
    let mut i = open + 1;
    while i < b.len() {
        if backslash_escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

fn skip_block_comment(b: &[u8], open: usize) -> usize {
    let (mut depth, mut i) = (0usize, open);
    while i + 1 < b.len() {
        if b[i] == b'/' && b[i + 1] == b'*' {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// `$tag$ … $tag$`; a `$` that does not open a valid tag (e.g. `$1`) is an ordinary character.
fn skip_dollar_quoted(b: &[u8], open: usize) -> usize {
    let tag_end = match b[open + 1..]
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
    {
        Some(p) if b[open + 1 + p] == b'$' => open + 1 + p,
        _ => return open + 1,
    };
    if tag_end > open + 1 && b[open + 1].is_ascii_digit() {
        return open + 1;
    }
    let tag = &b[open..=tag_end];
    let body = tag_end + 1;
    match b[body..].windows(tag.len()).position(|w| w == tag) {
        Some(p) => body + p + tag.len(),
        None => b.len(),
    }
}

/// Drops leading whitespace and comments (`/* shardgate: … */` hints included).
pub fn strip_comments_start(mut s: &str) -> &str {
    loop {
        s = &s[s.bytes().position(|c| !is_space(c)).unwrap_or(s.len())..];
        if s.starts_with("--") {
            s = s.find('\n').map_or("", |p| &s[p + 1..]);
        } else if s.starts_with("/*") {
            s = &s[skip_block_comment(s.as_bytes(), 0).min(s.len())..];
        } else {
            return s;
        }
    }
}

/// The first word of a statement after blanks and comments: its leading ASCII letters (empty
/// when it starts with anything else). What statement classification and kinds look at.
pub fn first_word(stmt: &str) -> &str {
    let s = strip_comments_start(stmt);
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(s.len());
    &s[..end]
}

/// `s` without blanks at either end: Postgres' blanks, ASCII only (its lexer reads other bytes
/// as parts of identifiers), which also spares `str::trim`'s decoding of characters.
fn trim_blanks(s: &str) -> &str {
    let b = s.as_bytes();
    let start = b.iter().position(|&c| !is_space(c)).unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| !is_space(c))
        .map_or(start, |p| p + 1);
    &s[start..end]
}

/// Whether some statement of `sql` starts with keyword `word` (lowercase). Cheap when `sql` is
/// one statement: no split unless it holds a `;`.
pub fn some_statement_starts_with(sql: &str, word: &str) -> bool {
    let starts = |stmt: &str| {
        let s = strip_comments_start(stmt).as_bytes();
        s.len() >= word.len()
            && s[..word.len()].eq_ignore_ascii_case(word.as_bytes())
            && !s.get(word.len()).is_some_and(|&c| is_ident_byte(c))
    };
    if sql.contains(';') {
        statements(sql).any(starts)
    } else {
        starts(sql)
    }
}

/// A word of up to 15 bytes as one number: its bytes with ASCII letters folded to lower case,
/// and its length in the top byte (0 for a longer word, which no keyword is). Every statement's
/// first word is compared with keywords: this way each comparison is one of two numbers, and
/// the folding is one `or`. Only letters fold to letters, so a word and a keyword have the same
/// key exactly when they are the same word in any case.
pub const fn word_key(word: &[u8]) -> u128 {
    const FOLD: u128 = u128::from_le_bytes([0x20; 16]) >> 8;
    if word.len() > 15 {
        return 0;
    }
    let mut bytes = [0u8; 16];
    let mut i = 0;
    while i < word.len() {
        bytes[i] = word[i];
        i += 1;
    }
    bytes[15] = word.len() as u8;
    u128::from_le_bytes(bytes) | FOLD
}

/// The leading words of a statement, lowercased, up to `n` of them.
pub(crate) fn leading_words(stmt: &str, n: usize) -> Vec<String> {
    strip_comments_start(stmt)
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';' || c == '=')
        .filter(|w| !w.is_empty())
        .take(n)
        .map(|w| w.to_ascii_lowercase())
        .collect()
}

/// Skips whitespace and comments from `i`.
fn skip_blank(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
        } else if b[i] == b'-' || b[i] == b'/' {
            match skip_non_code(b, i) {
                Some(end) => i = end,
                None => return i,
            }
        } else {
            return i;
        }
    }
    i
}

/// The end (just past the `)`) of the parenthesised group that follows `i` after blanks.
pub(crate) fn group_end(sql: &str, i: usize) -> Option<usize> {
    let b = sql.as_bytes();
    let mut i = skip_blank(b, i);
    if b.get(i) != Some(&b'(') {
        return None;
    }
    let mut depth = 0usize;
    while i < b.len() {
        if let Some(end) = skip_non_code(b, i) {
            i = end;
            continue;
        }
        match b[i] {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Just past `word` (any case) when it is the next thing after `i`, blanks skipped.
pub(crate) fn after_word(sql: &str, i: usize, word: &str) -> Option<usize> {
    let i = skip_blank(sql.as_bytes(), i);
    let end = i + word.len();
    let found = sql.get(i..end)?.eq_ignore_ascii_case(word);
    let whole = !sql.as_bytes().get(end).copied().is_some_and(is_ident_byte);
    (found && whole).then_some(end)
}

/// The offset of the first `word` (any case) at parenthesis depth 0 from `start`, outside strings
/// and comments.
pub(crate) fn top_level_word(sql: &str, start: usize, word: &str) -> Option<usize> {
    let b = sql.as_bytes();
    let (mut i, mut depth) = (start, 0usize);
    while i < b.len() {
        if let Some(end) = skip_non_code(b, i) {
            i = end;
            continue;
        }
        match b[i] {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            c if is_ident_byte(c) => {
                let end = b[i..]
                    .iter()
                    .position(|&c| !(is_ident_byte(c) || c == b'$'))
                    .map_or(b.len(), |p| i + p);
                if depth == 0 && sql[i..end].eq_ignore_ascii_case(word) {
                    return Some(i);
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The bind parameters (`$1`, …) of a text outside strings and comments: byte range and 0-based
/// index.
pub(crate) fn parameters(sql: &str) -> Vec<(usize, usize, usize)> {
    let b = sql.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if let Some(end) = skip_non_code(b, i) {
            i = end;
            continue;
        }
        if b[i] == b'$' && !(i > 0 && is_ident_byte(b[i - 1])) {
            let end = b[i + 1..]
                .iter()
                .position(|c| !c.is_ascii_digit())
                .map_or(b.len(), |p| i + 1 + p);
            if let Some(n) = sql[i + 1..end].parse::<usize>().ok().filter(|&n| n >= 1) {
                found.push((i, end, n - 1));
            }
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    found
}

/// A statement's shape: its unsigned integer literals replaced by `$1`, `$2`, … in order, with
/// the byte range of each literal in `sql`. `None` when it has none, or has a `$` already
/// (bind parameters or dollar quotes: the numbering would clash). Literals in strings, quoted
/// identifiers and comments (hints!) are left alone, and so are parts of other numbers
/// (`1.5`, `1e3`) and of identifiers (`t1`).
pub(crate) fn integer_literals(sql: &str) -> Option<(String, Vec<std::ops::Range<usize>>)> {
    if sql.contains('$') {
        return None;
    }
    let b = sql.as_bytes();
    let mut literals = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if let Some(end) = skip_non_code(b, i) {
            i = end;
            continue;
        }
        if !is_ident_byte(b[i]) {
            i += 1;
            continue;
        }
        let end = b[i..]
            .iter()
            .position(|&c| !(is_ident_byte(c) || c == b'$'))
            .map_or(b.len(), |p| i + p);
        let digits = b[i..end].iter().all(u8::is_ascii_digit);
        let in_number = (i > 0 && b[i - 1] == b'.') || b.get(end) == Some(&b'.');
        if digits && !in_number {
            literals.push(i..end);
        }
        i = end;
    }
    if literals.is_empty() || literals.len() > usize::from(u16::MAX) {
        return None;
    }
    let mut shape = String::with_capacity(sql.len() + 2 * literals.len());
    let mut at = 0;
    for (n, r) in literals.iter().enumerate() {
        shape.push_str(&sql[at..r.start]);
        let _ = write!(shape, "${}", n + 1);
        at = r.end;
    }
    shape.push_str(&sql[at..]);
    Some((shape, literals))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_word_has_a_keywords_key_exactly_when_it_is_that_keyword_in_any_case() {
        assert_eq!(word_key(b"SeLeCt"), word_key(b"select"));
        assert_eq!(word_key(b"DEALLOCATE"), word_key(b"deallocate"));
        // Keywords are letters: a byte has a letter's key only if it is that letter.
        for letter in b'a'..=b'z' {
            for byte in 0..=u8::MAX {
                let same = byte.to_ascii_lowercase() == letter;
                assert_eq!(word_key(&[byte]) == word_key(&[letter]), same, "{byte:#x}");
            }
        }
        assert_ne!(
            word_key(b"set\0"),
            word_key(b"set"),
            "padding is not a byte of the word"
        );
        assert_ne!(word_key(b"selects"), word_key(b"select"));
        assert_eq!(word_key(b"abcdefghijklmnop"), 0, "too long for any keyword");
    }

    /// `statement_end` as it was before the fast path: one byte at a time.
    fn statement_end_bytewise(b: &[u8], start: usize) -> usize {
        let mut i = start;
        while i < b.len() {
            if b[i] == b';' {
                return i;
            }
            i = skip_non_code(b, i).unwrap_or(i + 1);
        }
        b.len()
    }

    /// `statements` as it was before its shortcuts: every statement the byte-wise scan ends,
    /// the empty ones dropped.
    fn statements_bytewise(sql: &str) -> Vec<&str> {
        let b = sql.as_bytes();
        let (mut out, mut pos) = (Vec::new(), 0);
        while pos <= b.len() {
            let end = statement_end_bytewise(b, pos);
            let stmt = &sql[pos..end];
            pos = end + 1;
            if !strip_comments_start(stmt).is_empty() {
                out.push(stmt.trim());
            }
        }
        out
    }

    #[test]
    fn the_first_word_comes_after_blanks_and_comments_and_only_ascii_blanks_are_blanks() {
        assert_eq!(first_word(" /* a */ -- b\n\tSELECT 1"), "SELECT");
        assert_eq!(first_word("with x as (select 1) table x"), "with");
        assert_eq!(first_word("(select 1)"), "");
        // Postgres' lexer reads a no-break space as part of an identifier, not as a blank.
        assert_eq!(first_word("\u{a0}select 1"), "");
        assert_eq!(
            statements("\x0c select 1 \x0b;\u{a0}").collect::<Vec<_>>(),
            ["select 1", "\u{a0}"]
        );
    }

    #[test]
    fn blanks_after_the_last_semicolon_end_the_text() {
        assert_eq!(statements("SELECT 1;").collect::<Vec<_>>(), ["SELECT 1"]);
        assert_eq!(
            statements("SELECT 1; \n\t").collect::<Vec<_>>(),
            ["SELECT 1"]
        );
        assert_eq!(
            statements("SELECT 1; -- done").collect::<Vec<_>>(),
            ["SELECT 1"]
        );
        assert_eq!(
            statements("SET a = 1; SELECT 2").collect::<Vec<_>>(),
            ["SET a = 1", "SELECT 2"]
        );
        assert_eq!(statements(" ; ;").count(), 0);
    }

    proptest! {
        #[test]
        fn statements_split_as_the_bytewise_scan(sql in "[a-zE \t;'\"$/*\\-\n\\\\]{0,40}") {
            prop_assert_eq!(statements(&sql).collect::<Vec<_>>(), statements_bytewise(&sql));
        }

        #[test]
        fn the_fast_path_splits_as_the_bytewise_scan(
            sql in "[a-zE ;'\"$/*\\-\n\\\\]{0,40}",
            start in 0usize..40,
        ) {
            let b = sql.as_bytes();
            let start = start.min(b.len());
            prop_assert_eq!(statement_end(b, start), statement_end_bytewise(b, start));
        }
    }
}
