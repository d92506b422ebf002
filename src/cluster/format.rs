//! Text we generate for Postgres: postgresql.conf settings, SQL quoting, URL encoding. Pure.

use std::fmt::Write as _;
use std::path::Path;

use super::ClusterOptions;

/// Our postgresql.conf settings (the file `shardgate.conf` in PGDATA) for one start.
pub(super) fn settings(port: u16, socket_dir: &Path, opts: &ClusterOptions) -> String {
    let mut conf = String::from("# Written by shardgate's cluster module on every start.\n");
    let mut set = |k: &str, v: &str| {
        let _ = writeln!(conf, "{k} = {}", conf_value(v));
    };
    set("listen_addresses", "127.0.0.1");
    set("port", &port.to_string());
    set("unix_socket_directories", &socket_dir.to_string_lossy());
    // Every cluster can be a primary for start_replica.
    set("wal_level", "replica");
    set("max_wal_senders", "10");
    set("hot_standby", "on");
    set("max_connections", &opts.max_connections.to_string());
    if opts.fast {
        for key in ["fsync", "synchronous_commit", "full_page_writes"] {
            set(key, "off");
        }
    }
    // Last, so that they override ours.
    for (k, v) in &opts.extra_conf {
        set(k, v);
    }
    conf
}

/// A postgresql.conf value: plain words and numbers as is, anything else single-quoted.
fn conf_value(v: &str) -> String {
    // The config lexer takes unquoted identifiers, numbers and numbers with units (64MB);
    // anything else, such as an address with several dots, must be quoted.
    let word = !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let plain = word || v.parse::<f64>().is_ok_and(f64::is_finite);
    let quoted = v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'');
    if plain || quoted {
        v.to_string()
    } else {
        quote_literal(v)
    }
}

/// `name` as a SQL identifier: always quoted, so any role or database name works.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as a SQL string literal (standard_conforming_strings is on by default).
pub(super) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for URL user info and paths.
pub(super) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_values_are_quoted_when_needed() {
        assert_eq!(conf_value("on"), "on");
        assert_eq!(conf_value("64MB"), "64MB");
        assert_eq!(conf_value("127.0.0.1"), "'127.0.0.1'");
        assert_eq!(conf_value("0.5"), "0.5");
        assert_eq!(conf_value("/tmp/x y"), "'/tmp/x y'");
        assert_eq!(conf_value("'all'"), "'all'");
        assert_eq!(conf_value("it's"), "'it''s'");
        assert_eq!(conf_value(""), "''");
    }

    #[test]
    fn settings_put_extra_conf_last() {
        let opts = ClusterOptions {
            fast: false,
            extra_conf: vec![("log_statement".into(), "all".into())],
            ..ClusterOptions::default()
        };
        let text = settings(5433, Path::new("/tmp/s"), &opts);
        assert!(text.contains("\nport = 5433\n"), "{text}");
        assert!(
            text.contains("\nlisten_addresses = '127.0.0.1'\n"),
            "{text}"
        );
        assert!(
            text.contains("\nunix_socket_directories = '/tmp/s'\n"),
            "{text}"
        );
        assert!(!text.contains("fsync"), "{text}");
        assert!(text.ends_with("log_statement = all\n"), "{text}");
    }

    #[test]
    fn sql_and_urls_are_escaped() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(percent_encode("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
        assert_eq!(percent_encode("plain-_.~9"), "plain-_.~9");
    }
}
