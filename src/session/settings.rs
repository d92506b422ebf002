//! The session settings a client has in force, so they can follow it to whichever backend serves it.
//!
//! A setting comes from the startup packet (applied with `set_config`, which parses the value as the
//! startup packet would) or from a committed `SET` (replayed verbatim). `RESET x` falls back to the
//! startup value, as in Postgres, where startup values are the session defaults.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::sql::SessionCommand;

/// Startup parameters that are not settings, or that shardgate must not pass on.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];

#[derive(Debug, Clone, Default)]
pub struct Settings {
    startup: BTreeMap<String, String>,
    set: BTreeMap<String, String>,
    /// `startup` overlaid with `set`: what a backend must have.
    effective: Wanted,
}

/// Settings a backend must have, as setting name → the SQL applying it; and the same in one
/// canonical byte string, so that a backend already in this state is recognised with one
/// comparison (every checkout asks; comparing the maps was 2% of a query's instructions).
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    map: BTreeMap<String, String>,
    canonical: Arc<[u8]>,
}

impl Wanted {
    pub fn new(map: BTreeMap<String, String>) -> Wanted {
        // Length-prefixed names and SQL: two maps are equal exactly when these bytes are.
        let mut canonical = Vec::new();
        for part in map.iter().flat_map(|(k, v)| [k, v]) {
            canonical.extend_from_slice(&(part.len() as u64).to_le_bytes());
            canonical.extend_from_slice(part.as_bytes());
        }
        Wanted {
            map,
            canonical: canonical.into(),
        }
    }

    pub fn map(&self) -> &BTreeMap<String, String> {
        &self.map
    }
}

/// The session settings in force on a server connection. It travels with the connection through
/// the pool ([`crate::backend::ServerSession`]), so the next session knows what to add or undo.
#[derive(Debug, Default)]
pub struct Applied {
    /// Setting name → the SQL that applied it. Empty means the server's defaults.
    map: BTreeMap<String, String>,
    /// A client changed settings in a way shardgate could not follow (`set_config`): the next
    /// session resets everything before applying its own.
    unknown: bool,
    /// The canonical bytes of the [`Wanted`] that `map` was last brought to; dropped by every
    /// other change, so that a stale one never passes for equality.
    canonical: Option<Arc<[u8]>>,
}

impl Applied {
    /// The SQL that brings this server to `wanted`, or `None` when it is there already. The
    /// server counts as brought there from now on; a settings query that fails calls
    /// [`Applied::mark_unknown`].
    pub fn sync(&mut self, wanted: &Wanted) -> Option<String> {
        let same = self
            .canonical
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &wanted.canonical) || **c == *wanted.canonical);
        if same && !self.unknown {
            return None;
        }
        let sql = sync_sql(&self.map, self.unknown, &wanted.map);
        if sql.is_some() {
            self.map = wanted.map.clone();
            self.unknown = false;
        }
        self.canonical = Some(wanted.canonical.clone());
        sql
    }

    /// Settings were changed in a way shardgate could not follow: reset all before next use.
    pub fn mark_unknown(&mut self) {
        self.unknown = true;
        self.canonical = None;
    }

    /// What a committed session command left here. `RESET` brings back the *server's* session
    /// default (shardgate applied the client's startup values with `set_config`), so the next
    /// sync re-applies the client's value.
    pub fn track(&mut self, cmd: &SessionCommand) {
        if apply_command(&mut self.map, cmd) {
            self.canonical = None;
        }
    }
}

impl Settings {
    /// The settings of a startup packet, including those inside its `options` (`-c name=value`).
    /// An `options` switch other than a setting is refused, as shardgate cannot apply it.
    pub fn from_startup(params: &BTreeMap<String, String>) -> Result<Settings, String> {
        let mut startup: BTreeMap<String, String> = params
            .iter()
            .filter(|(k, _)| !NOT_SETTINGS.contains(&k.as_str()))
            .map(|(k, v)| (k.to_ascii_lowercase(), set_config_sql(k, v)))
            .collect();
        if let Some(options) = params.get("options") {
            for (k, v) in parse_options(options)? {
                startup.insert(k.to_ascii_lowercase(), set_config_sql(&k, &v));
            }
        }
        let mut s = Settings {
            startup,
            ..Settings::default()
        };
        s.recompute();
        Ok(s)
    }

    pub fn effective(&self) -> &BTreeMap<String, String> {
        self.effective.map()
    }

    /// [`Settings::effective`] with its canonical form, for [`Applied::sync`].
    pub fn wanted(&self) -> &Wanted {
        &self.effective
    }

    /// The settings of a backend serving a statement sent to several shards: the client's, and
    /// `shardgate.fanout` on, which hides a move's copies of rows from it (`reshard::capture`).
    /// A keyed statement's checkout resets it.
    pub fn fanout(&self) -> Wanted {
        let mut wanted = self.effective.map.clone();
        wanted.insert(
            "shardgate.fanout".into(),
            "SET shardgate.fanout = 'on'".into(),
        );
        Wanted::new(wanted)
    }

    /// Applies a command that has committed.
    pub fn apply(&mut self, cmd: &SessionCommand) {
        if apply_command(&mut self.set, cmd) {
            self.recompute();
        }
    }

    fn recompute(&mut self) {
        let mut effective = self.startup.clone();
        effective.extend(self.set.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.effective = Wanted::new(effective);
    }
}

/// Applies a settings command to a map of setting name → SQL; false for other commands.
fn apply_command(map: &mut BTreeMap<String, String>, cmd: &SessionCommand) -> bool {
    match cmd {
        SessionCommand::Set { name, sql } => {
            map.insert(name.clone(), sql.clone());
        }
        SessionCommand::Reset { name } => {
            map.remove(name);
        }
        SessionCommand::ResetAll | SessionCommand::DiscardAll => map.clear(),
        SessionCommand::Deallocate { .. }
        | SessionCommand::Unpoolable { .. }
        | SessionCommand::Untracked => return false,
    }
    true
}

/// The SQL that brings a backend from `current` settings to `wanted`, or `None` if they agree.
/// `unknown` says a client changed the backend's settings in a way shardgate could not follow:
/// then everything is reset first.
fn sync_sql(
    current: &BTreeMap<String, String>,
    unknown: bool,
    wanted: &BTreeMap<String, String>,
) -> Option<String> {
    if !unknown && current == wanted {
        return None;
    }
    let mut sql = String::new();
    if unknown {
        sql.push_str("RESET ALL;");
    } else {
        for name in current.keys().filter(|k| !wanted.contains_key(*k)) {
            sql.push_str(&format!("RESET {};", quote_ident(name)));
        }
    }
    for (name, apply) in wanted {
        if unknown || current.get(name) != Some(apply) {
            sql.push_str(apply);
            sql.push(';');
        }
    }
    Some(sql)
}

/// Parses the startup `options` string as Postgres does for settings: words split on spaces
/// (a backslash escapes the next character), each `-c name=value`, `-cname=value` or `--name=value`.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                words.extend((!word.is_empty()).then(|| std::mem::take(&mut word)))
            }
            c => word.push(c),
        }
    }
    words.extend((!word.is_empty()).then_some(word));
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = match w.as_str() {
            "-c" => it.next().ok_or("\"-c\" needs name=value")?,
            w if w.starts_with("--") => w[2..].to_owned(),
            w if w.starts_with("-c") => w[2..].to_owned(),
            other => {
                return Err(format!(
                    "unsupported startup option \"{other}\": shardgate accepts only -c name=value"
                ))
            }
        };
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("startup option \"{setting}\" is not name=value"))?;
        out.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(out)
}

fn set_config_sql(name: &str, value: &str) -> String {
    format!(
        "SELECT pg_catalog.set_config({}, {}, false)",
        quote_literal(name),
        quote_literal(value)
    )
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn startup_values_are_applied_with_set_config_and_quoted() {
        let s = Settings::from_startup(&startup(&[
            ("user", "app"),
            ("application_name", "o'brien"),
            ("DateStyle", "ISO, MDY"),
        ]))
        .unwrap();
        let sql = sync_sql(&BTreeMap::new(), false, s.effective()).unwrap();
        assert_eq!(
            sql,
            "SELECT pg_catalog.set_config('application_name', 'o''brien', false);\
             SELECT pg_catalog.set_config('DateStyle', 'ISO, MDY', false);"
        );
    }

    #[test]
    fn set_overrides_startup_and_reset_falls_back_to_it() {
        let mut s = Settings::from_startup(&startup(&[("TimeZone", "UTC")])).unwrap();
        let set = SessionCommand::Set {
            name: "timezone".into(),
            sql: "SET TIME ZONE 'Asia/Tokyo'".into(),
        };
        s.apply(&set);
        assert_eq!(s.effective()["timezone"], "SET TIME ZONE 'Asia/Tokyo'");
        s.apply(&SessionCommand::Reset {
            name: "timezone".into(),
        });
        assert_eq!(
            s.effective()["timezone"],
            "SELECT pg_catalog.set_config('TimeZone', 'UTC', false)"
        );
    }

    #[test]
    fn options_carry_settings_and_refuse_other_switches() {
        let s = Settings::from_startup(&startup(&[(
            "options",
            "-c search_path=a,b --statement-timeout=5s -cwork_mem=4MB",
        )]))
        .unwrap();
        assert_eq!(
            s.effective()["search_path"],
            "SELECT pg_catalog.set_config('search_path', 'a,b', false)"
        );
        assert_eq!(
            s.effective()["statement_timeout"],
            "SELECT pg_catalog.set_config('statement_timeout', '5s', false)"
        );
        assert_eq!(
            s.effective()["work_mem"],
            "SELECT pg_catalog.set_config('work_mem', '4MB', false)"
        );
        let s =
            Settings::from_startup(&startup(&[("options", r"-c application_name=a\ b")])).unwrap();
        assert_eq!(
            s.effective()["application_name"],
            "SELECT pg_catalog.set_config('application_name', 'a b', false)"
        );
        assert_eq!(
            Settings::from_startup(&startup(&[("options", "-B 100")])).unwrap_err(),
            "unsupported startup option \"-B\": shardgate accepts only -c name=value"
        );
    }

    #[test]
    fn sync_resets_what_the_previous_client_left_and_skips_what_matches() {
        let mut current = BTreeMap::new();
        current.insert("work_mem".to_string(), "SET work_mem = '64MB'".to_string());
        current.insert("search_path".to_string(), "SET search_path = a".to_string());
        let mut wanted = BTreeMap::new();
        wanted.insert("search_path".to_string(), "SET search_path = a".to_string());
        assert_eq!(
            sync_sql(&current, false, &wanted).unwrap(),
            "RESET \"work_mem\";"
        );
        assert_eq!(
            sync_sql(&wanted, true, &wanted).unwrap(),
            "RESET ALL;SET search_path = a;"
        );
        assert_eq!(sync_sql(&wanted, false, &wanted), None);
    }

    #[test]
    fn a_server_brought_to_some_settings_is_compared_again_after_any_other_change() {
        let one = |k: &str, v: &str| Wanted::new(startup(&[(k, v)]));
        let a = one("search_path", "SET search_path = a");
        let mut server = Applied::default();
        assert_eq!(server.sync(&a).as_deref(), Some("SET search_path = a;"));
        assert_eq!(server.sync(&a), None);
        // Another client with equal settings (another allocation): nothing to do either.
        assert_eq!(
            server.sync(&one("search_path", "SET search_path = a")),
            None
        );
        // The client SETs something more and commits: the server has it, `a` does not.
        server.track(&SessionCommand::Set {
            name: "work_mem".into(),
            sql: "SET work_mem = '1MB'".into(),
        });
        assert_eq!(server.sync(&a).as_deref(), Some("RESET \"work_mem\";"));
        assert_eq!(server.sync(&a), None);
        server.mark_unknown();
        assert_eq!(
            server.sync(&a).as_deref(),
            Some("RESET ALL;SET search_path = a;")
        );
        // Maps that would read alike if their entries were only concatenated stay apart.
        let split = Wanted::new(startup(&[("a", "x;"), ("b", "y")]));
        let joined = Wanted::new(startup(&[("a", "x;y")]));
        assert_ne!(split.canonical, joined.canonical);
    }
}
