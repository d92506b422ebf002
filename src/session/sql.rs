//! A small SQL lexer for what the session itself must know about a statement: whether it changes
//! session state (SET, RESET, DISCARD, DEALLOCATE) or cannot work on a shared backend (LISTEN,
//! PREPARE). It only splits statements and reads leading keywords; routing is the router's job.

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
            if !strip_comments_start(stmt).is_empty() {
                return Some(stmt.trim());
            }
        }
        None
    }
}

/// The index of the top-level `;` that ends the statement starting at `start`, or the end.
fn statement_end(b: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < b.len() {
        i = match b[i] {
            b'\'' => skip_quoted(b, i, b'\'', i > 0 && matches!(b[i - 1], b'E' | b'e')),
            b'"' => skip_quoted(b, i, b'"', false),
            b'-' if b.get(i + 1) == Some(&b'-') => b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p + 1),
            b'/' if b.get(i + 1) == Some(&b'*') => skip_block_comment(b, i),
            b'$' => skip_dollar_quoted(b, i),
            b';' => return i,
            _ => i + 1,
        };
    }
    b.len()
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
        s = s.trim_start();
        if s.starts_with("--") {
            s = s.find('\n').map_or("", |p| &s[p + 1..]);
        } else if s.starts_with("/*") {
            s = &s[skip_block_comment(s.as_bytes(), 0).min(s.len())..];
        } else {
            return s;
        }
    }
}

/// The leading words of a statement, lowercased, up to `n` of them.
fn leading_words(stmt: &str, n: usize) -> Vec<String> {
    strip_comments_start(stmt)
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';' || c == '=')
        .filter(|w| !w.is_empty())
        .take(n)
        .map(|w| w.to_ascii_lowercase())
        .collect()
}

/// What a statement does to session state that must follow the client from backend to backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// `SET [SESSION] name …`: replayed verbatim on the next backend.
    Set {
        name: String,
        sql: String,
    },
    Reset {
        name: String,
    },
    ResetAll,
    /// `DISCARD ALL`: resets settings and drops every prepared statement.
    DiscardAll,
    Deallocate {
        name: Option<String>,
    },
    /// Session state that a pooled backend cannot keep for this client.
    Unpoolable {
        what: &'static str,
    },
    /// Changes settings in a way shardgate cannot follow (`set_config(…, false)`): the backend's
    /// settings become unknown and are reset before another client uses it.
    Untracked,
}

/// Classifies one statement. `None` for statements that leave session state alone (including
/// `SET LOCAL` and `SET TRANSACTION`, which end with the transaction).
pub fn classify(stmt: &str) -> Option<SessionCommand> {
    if let Some(cmd) = classify_calls(stmt) {
        return Some(cmd);
    }
    // Most statements are none of these: decide on the first word without allocating.
    let first = strip_comments_start(stmt)
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    const KEYWORDS: [&str; 8] = [
        "set",
        "reset",
        "discard",
        "deallocate",
        "listen",
        "prepare",
        "declare",
        "create",
    ];
    if !KEYWORDS.iter().any(|k| first.eq_ignore_ascii_case(k)) {
        return None;
    }
    let words = leading_words(stmt, 4);
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    match w(0) {
        "set" => classify_set(stmt, &words),
        "reset" if w(1) == "all" => Some(SessionCommand::ResetAll),
        "reset" if !w(1).is_empty() => Some(SessionCommand::Reset {
            name: setting_name(&words[1..]),
        }),
        "discard" if w(1) == "all" => Some(SessionCommand::DiscardAll),
        "deallocate" => {
            let name = if w(1) == "prepare" { w(2) } else { w(1) };
            let name = (name != "all" && !name.is_empty()).then(|| unquote(name));
            Some(SessionCommand::Deallocate { name })
        }
        "listen" => Some(SessionCommand::Unpoolable { what: "LISTEN" }),
        "prepare" if w(1) != "transaction" => Some(SessionCommand::Unpoolable { what: "PREPARE" }),
        "declare" if words.iter().any(|x| x == "hold") => Some(SessionCommand::Unpoolable {
            what: "DECLARE … WITH HOLD",
        }),
        "create" if is_lasting_temp_table(stmt, &words) => Some(SessionCommand::Unpoolable {
            what: "a temporary table that outlives its transaction",
        }),
        _ => None,
    }
}

/// Function calls that change session state wherever they appear in a statement. Only the
/// identifier right before each `(` is looked at, so a statement without calls costs one scan.
/// A mention inside a string literal is refused too: a clear refusal beats a leak.
fn classify_calls(stmt: &str) -> Option<SessionCommand> {
    let b = stmt.as_bytes();
    let mut found = None;
    for open in b
        .iter()
        .enumerate()
        .filter(|(_, &c)| c == b'(')
        .map(|(i, _)| i)
    {
        let end = b[..open]
            .iter()
            .rposition(|c| !c.is_ascii_whitespace())
            .map_or(0, |p| p + 1);
        let start = b[..end]
            .iter()
            .rposition(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
            .map_or(0, |p| p + 1);
        let name = &b[start..end];
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if [
            "pg_advisory_lock",
            "pg_advisory_lock_shared",
            "pg_try_advisory_lock",
            "pg_try_advisory_lock_shared",
        ]
        .iter()
        .any(|n| is(n))
        {
            return Some(SessionCommand::Unpoolable {
                what: "a session-level advisory lock",
            });
        }
        if is("set_config") {
            found = Some(SessionCommand::Untracked);
        }
    }
    found
}

/// Byte offsets where `needle` (lowercase ASCII) occurs in `hay`, ignoring ASCII case.
fn find_ci<'a>(hay: &'a str, needle: &'a str) -> impl Iterator<Item = usize> + 'a {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    (0..h.len().saturating_sub(n.len() - 1))
        .filter(move |&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// `CREATE [GLOBAL|LOCAL] TEMP[ORARY] TABLE` without `ON COMMIT DROP`.
fn is_lasting_temp_table(stmt: &str, words: &[String]) -> bool {
    let rest = match words.get(1).map(String::as_str) {
        Some("global" | "local") => &words[2..],
        _ => &words[1..],
    };
    matches!(rest.first().map(String::as_str), Some("temp" | "temporary"))
        && find_ci(stmt, "on commit drop").next().is_none()
}

fn classify_set(stmt: &str, words: &[String]) -> Option<SessionCommand> {
    let rest = match words.get(1).map(String::as_str) {
        Some("local" | "transaction" | "constraints") | None => return None,
        Some("session") if words.get(2).map(String::as_str) == Some("characteristics") => {
            return Some(SessionCommand::Set {
                name: "session_characteristics".into(),
                sql: stmt.trim().to_owned(),
            })
        }
        Some("session") => &words[2..],
        Some(_) => &words[1..],
    };
    let name = setting_name(rest);
    (!name.is_empty()).then(|| SessionCommand::Set {
        name,
        sql: stmt.trim().to_owned(),
    })
}

/// Canonical setting name for the SET/RESET spellings that are not `name = value`.
fn setting_name(words: &[String]) -> String {
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    match (w(0), w(1)) {
        ("time", "zone") => "timezone".into(),
        ("names", _) => "client_encoding".into(),
        ("session", "authorization") => "session_authorization".into(),
        ("role", _) => "role".into(),
        (name, _) => unquote(name.split(['=', ' ']).next().unwrap_or("")),
    }
}

fn unquote(s: &str) -> String {
    s.trim_matches('"').to_owned()
}

#[cfg(test)]
mod tests;
