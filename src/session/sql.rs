//! What the session itself must know about a statement: whether it changes session state (SET,
//! RESET, DISCARD, DEALLOCATE) or cannot work on a shared backend (LISTEN, PREPARE). It reads
//! leading keywords only; routing is the router's job.

use crate::metrics::Kind;
pub use crate::router::lex::{first_word, statements, strip_comments_start};
use crate::router::lex::{leading_words, word_key};
use crate::router::report::kind_of_word;

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
    classify_from(stmt, first_word(stmt))
}

/// The session command and the metrics' kind of a Parse's statement (a Parse holds one:
/// Postgres refuses more). One look at its first word serves both.
pub fn recognize(sql: &str) -> (Option<SessionCommand>, Kind) {
    match statements(sql).next() {
        Some(stmt) => {
            let first = first_word(stmt);
            (classify_from(stmt, first), kind_of_word(first))
        }
        None => (None, Kind::Other),
    }
}

/// [`classify`] a statement whose [`first_word`] is `first`.
pub fn classify_from(stmt: &str, first: &str) -> Option<SessionCommand> {
    if let Some(cmd) = classify_calls(stmt) {
        return Some(cmd);
    }
    // Most statements are none of these: decide on the first word without allocating.
    const KEYWORDS: [u128; 8] = [
        word_key(b"set"),
        word_key(b"reset"),
        word_key(b"discard"),
        word_key(b"deallocate"),
        word_key(b"listen"),
        word_key(b"prepare"),
        word_key(b"declare"),
        word_key(b"create"),
    ];
    if !KEYWORDS.contains(&word_key(first.as_bytes())) {
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
    for open in memchr::memchr_iter(b'(', b) {
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
