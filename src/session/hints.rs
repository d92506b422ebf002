//! shardgate's own session settings (DESIGN §2.4): `SET shardgate.shard = 's1'` sends the
//! session's statements to one shard, `SET shardgate.target_role = 'primary'` keeps its reads off
//! the replicas. They are ordinary session settings otherwise — tracked, committed, reset, and
//! replayed on each backend like any other (Postgres accepts a dotted name as a placeholder, so
//! `SHOW shardgate.shard` answers) — but a value shardgate would not understand is refused when
//! it is set, never ignored later.

use std::collections::BTreeMap;

use crate::net::ClientStream;

use crate::protocol::{PgError, SqlState};
use crate::router::Router;

use super::sql::SessionCommand;
use super::Session;

pub(super) const SHARD: &str = "shardgate.shard";
pub(super) const TARGET_ROLE: &str = "shardgate.target_role";

/// What the session's shardgate settings say, read once per change of its settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Hints {
    /// `shardgate.shard`: every statement to this shard (by name; looked up per router).
    pub shard: Option<String>,
    /// `shardgate.target_role = 'primary'`: no statement goes to a replica.
    pub primary_only: bool,
}

impl Hints {
    /// From the session's effective settings (name → the SQL that applies it).
    pub fn of(settings: &BTreeMap<String, String>) -> Hints {
        let value = |name: &str| settings.get(name).and_then(|sql| value(sql, name));
        Hints {
            shard: value(SHARD).filter(|s| !s.is_empty()),
            primary_only: value(TARGET_ROLE).is_some_and(|r| r.eq_ignore_ascii_case("primary")),
        }
    }
}

impl<S: ClientStream> Session<S> {
    /// The error for a statement that sets one of shardgate's settings to a value it does not
    /// understand (checked before it runs, like Postgres' own settings).
    pub(super) fn hint_refusal(&self, cmds: &[SessionCommand]) -> Option<PgError> {
        let ours = |c: &&SessionCommand| matches!(c, SessionCommand::Set { name, .. } if name.starts_with("shardgate."));
        if !cmds.iter().any(|c| ours(&c)) {
            return None;
        }
        let snapshot = self.shared.store.load();
        let db = snapshot.databases.get(&self.info.database)?;
        let names: Vec<&str> = db.shards.iter().map(|s| &*s.name).collect();
        cmds.iter().filter(ours).find_map(|c| check(c, &names))
    }

    /// The shard `SET shardgate.shard` sends every statement to, under `router`.
    pub(super) fn hinted_shard(&self, router: &Router) -> Option<usize> {
        let name = self.hints.shard.as_deref()?;
        router.shard_index(name)
    }
}

/// The error for setting one of shardgate's settings to something it does not understand, or a
/// `shardgate.` name it does not have; `shards` are the database's shard names.
pub(super) fn check(cmd: &SessionCommand, shards: &[&str]) -> Option<PgError> {
    let SessionCommand::Set { name, sql } = cmd else {
        return None;
    };
    if !name.starts_with("shardgate.") {
        return None;
    }
    let Some(v) = value(sql, name) else {
        return Some(invalid(
            name,
            sql,
            "give one value, e.g. SET shardgate.shard = 's1'",
        ));
    };
    match name.as_str() {
        SHARD if v.is_empty() || shards.contains(&v.as_str()) => None,
        SHARD => Some(invalid(
            name,
            &v,
            &format!("the shards of this database are: {}", shards.join(", ")),
        )),
        TARGET_ROLE if ["primary", "auto"].iter().any(|r| v.eq_ignore_ascii_case(r)) => None,
        TARGET_ROLE => Some(invalid(
            name,
            &v,
            "use 'primary' (every statement to the primary) or 'auto' (safe reads may use replicas)",
        )),
        _ => Some(
            PgError::error(
                SqlState::UndefinedObject,
                format!("unrecognized configuration parameter \"{name}\""),
            )
            .with_hint("shardgate's settings are shardgate.shard and shardgate.target_role."),
        ),
    }
}

fn invalid(name: &str, value: &str, hint: &str) -> PgError {
    PgError::error(
        SqlState::InvalidParameterValue,
        format!("invalid value for parameter \"{name}\": \"{value}\""),
    )
    .with_hint(hint.to_string())
}

/// The value in `SET name = value` / `SET name TO value`, or in the `set_config(name, value,
/// false)` a startup parameter is applied with; unquoted.
fn value(sql: &str, name: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    let rest = if let Some(args) = lower.find("set_config(") {
        // `set_config('name', 'value', false)`: the second argument.
        let args = &sql[args + "set_config(".len()..];
        let (_, after_name) = split_literal(args.trim_start())?;
        let after_comma = after_name.trim_start().strip_prefix(',')?;
        return split_literal(after_comma.trim_start()).map(|(v, _)| v);
    } else {
        let at = lower.find(name)? + name.len();
        &sql[at..]
    };
    let rest = rest.trim_start();
    let rest = match rest.strip_prefix('=') {
        Some(r) => r,
        None if rest.len() > 2 && rest[..2].eq_ignore_ascii_case("to") => &rest[2..],
        None => return None,
    };
    let rest = rest.trim().trim_end_matches(';').trim_end();
    match split_literal(rest) {
        Some((v, tail)) if tail.trim().is_empty() => Some(v),
        Some(_) => None,
        None if !rest.is_empty() && !rest.contains([' ', ',', '\'']) => {
            Some(rest.trim_matches('"').to_string())
        }
        None => None,
    }
}

/// A leading single-quoted literal: its value and the text after it.
fn split_literal(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('\'')?;
    let mut out = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\'' {
            out.push(c);
        } else if chars.peek().is_some_and(|(_, n)| *n == '\'') {
            out.push('\'');
            chars.next();
        } else {
            return Some((out, &body[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, sql: &str) -> SessionCommand {
        SessionCommand::Set {
            name: name.into(),
            sql: sql.into(),
        }
    }

    #[test]
    fn values_are_read_from_every_spelling() {
        let cases = [
            ("SET shardgate.shard = 's1'", Some("s1")),
            ("set SESSION shardgate.shard to s2;", Some("s2")),
            ("SET shardgate.shard TO 'it''s'", Some("it's")),
            ("SET shardgate.shard = \"s1\"", Some("s1")),
            ("SET shardgate.shard = ''", Some("")),
            ("SET shardgate.shard = 's1', 's2'", None),
            ("SET shardgate.shard", None),
            (
                "SELECT pg_catalog.set_config('shardgate.shard', 's3', false)",
                Some("s3"),
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(value(sql, SHARD).as_deref(), want, "{sql}");
        }
    }

    #[test]
    fn hints_follow_the_effective_settings() {
        let mut settings = BTreeMap::new();
        assert_eq!(Hints::of(&settings), Hints::default());
        settings.insert(
            TARGET_ROLE.into(),
            "SET shardgate.target_role = 'PRIMARY'".into(),
        );
        settings.insert(SHARD.into(), "SET shardgate.shard = s1".into());
        let hints = Hints::of(&settings);
        assert!(hints.primary_only);
        assert_eq!(hints.shard.as_deref(), Some("s1"));
        settings.insert(
            TARGET_ROLE.into(),
            "SET shardgate.target_role = auto".into(),
        );
        assert!(!Hints::of(&settings).primary_only);
    }

    #[test]
    fn bad_values_and_unknown_names_are_refused_when_set() {
        let shards = ["s0", "s1"];
        let ok = [
            set(SHARD, "SET shardgate.shard = 's1'"),
            set(SHARD, "SET shardgate.shard = ''"),
            set(TARGET_ROLE, "SET shardgate.target_role = 'primary'"),
            set(TARGET_ROLE, "SET shardgate.target_role TO auto"),
            set("search_path", "SET search_path = x"),
        ];
        for cmd in ok {
            assert_eq!(check(&cmd, &shards), None, "{cmd:?}");
        }
        let err = check(&set(SHARD, "SET shardgate.shard = 's9'"), &shards).unwrap();
        assert_eq!(err.code, SqlState::InvalidParameterValue);
        assert_eq!(
            err.message,
            "invalid value for parameter \"shardgate.shard\": \"s9\""
        );
        assert_eq!(
            err.hint.as_deref(),
            Some("the shards of this database are: s0, s1")
        );
        let err = check(
            &set(TARGET_ROLE, "SET shardgate.target_role = 'replica'"),
            &shards,
        );
        assert_eq!(err.unwrap().code, SqlState::InvalidParameterValue);
        let err = check(
            &set("shardgate.shards", "SET shardgate.shards = 's1'"),
            &shards,
        );
        let err = err.unwrap();
        assert_eq!(err.code, SqlState::UndefinedObject);
        assert_eq!(
            err.message,
            "unrecognized configuration parameter \"shardgate.shards\""
        );
    }
}
