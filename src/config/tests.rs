//! Config loading and validation: the exact text an operator reads.

use std::collections::BTreeMap;

use super::*;

/// An environment holding only `vars`: tests never touch the process environment.
fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse_with_env(text, &env_of(&[("PW", "secret")]))
}

/// The full error text of a config that must fail.
fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("config unexpectedly valid:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const TWO_SHARDS: &str = "\
listen: 127.0.0.1:6432
users:
  - { name: app, password: pw }
databases:
  app:
    shards:
      s0: { primary: \"postgres://app:pw@10.0.0.1:5432/app\" }
      s1: { primary: \"postgres://app:pw@10.0.0.3:5432/app\" }
    sharding:
      key_type: bigint
      function: hash
      buckets: 1024
      map:
        - { buckets: 0-511, shard: s0 }
        - { buckets: 512-1023, shard: s1 }
    tables: { users: id }
";

/// `TWO_SHARDS` with one line replaced.
fn with(line: &str, replacement: &str) -> String {
    assert!(TWO_SHARDS.contains(line), "no line {line:?}");
    TWO_SHARDS.replacen(line, replacement, 1)
}

#[test]
fn two_shard_config_is_valid() {
    let config = parse(TWO_SHARDS).expect("valid");
    let target = config.databases["app"].shards["s0"].primary_target();
    assert_eq!(target.host, "10.0.0.1");
    assert_eq!(target.port, 5432);
    assert_eq!(target.user, "app");
    assert_eq!(target.password.as_deref(), Some("pw"));
    assert_eq!(target.database, "app");
    assert_eq!(target.url_redacted, "postgres://app:***@10.0.0.1:5432/app");
}

#[test]
fn unknown_key_names_its_path() {
    let text = with("      s1: {", "      s1: { primry: x, ");
    assert_eq!(error(&text), "databases.app.shards.s1.primry: unknown key `primry` (expected one of: primary, replicas) (line 8, column 13)");
}

#[test]
fn duplicate_key_names_its_path() {
    let text = with(
        "    tables: { users: id }\n",
        "    tables: { users: id }\n    tables: { orders: id }\n",
    );
    assert_eq!(
        error(&text),
        "databases.app.tables: duplicate key (first defined at line 16) (line 17, column 5)"
    );
}

#[test]
fn missing_env_var_names_path_and_variable() {
    let text = with("password: pw", "password: \"${APP_PASSWORD}\"");
    assert_eq!(
        error(&text),
        "users[0].password: environment variable `APP_PASSWORD` is not set (line 3, column 28)"
    );
}

#[test]
fn special_character_password_arrives_verbatim() {
    // Block style: in a flow mapping `{ }` an unquoted `${X}` would end at the `}`; quote it there.
    let text = with(
        "  - { name: app, password: pw }",
        "  - name: app\n    password: ${APP_PASSWORD}",
    );
    let env = env_of(&[("APP_PASSWORD", "p@ss: wo#rd\"' - [x] {y} &z *w !t %u `v`")]);
    let config = Config::parse_with_env(&text, &env).expect("valid");
    assert_eq!(
        config.users[0].password,
        "p@ss: wo#rd\"' - [x] {y} &z *w !t %u `v`"
    );
}

#[test]
fn bad_url_is_reported() {
    let text = with(
        "postgres://app:pw@10.0.0.3:5432/app",
        "postgres://app:pw@10.0.0.3:5432",
    );
    assert_eq!(error(&text), "databases.app.shards.s1.primary: the URL names no database (postgres://USER:PASSWORD@HOST:PORT/DATABASE) (line 8, column 22)");
}

#[test]
fn bucket_gap_and_overlap_are_reported_precisely() {
    let text = with(
        "        - { buckets: 512-1023, shard: s1 }",
        "        - { buckets: 500-999, shard: s1 }",
    );
    assert_eq!(error(&text), "databases.app.sharding.map[1].buckets: buckets 500-511 are also assigned by map[0] (line 15, column 22)\n\
         databases.app.sharding.map: buckets 1000-1023 are not assigned to any shard (line 14, column 9)");
}

#[test]
fn unknown_shard_in_map() {
    let text = with("512-1023, shard: s1", "512-1023, shard: s9");
    assert_eq!(error(&text), "databases.app.sharding.map[1].shard: no shard named `s9` (shards: s0, s1) (line 15, column 39)");
}

#[test]
fn wrong_scalar_type() {
    let text = with("      buckets: 1024", "      buckets: lots");
    assert_eq!(error(&text), "databases.app.sharding.buckets: invalid type: string \"lots\", expected u32 (line 12, column 16)");
}

#[test]
fn example_files_validate() {
    let env = env_of(&[
        ("SHARDGATE_ADMIN_TOKEN", "t0ken"),
        ("APP_PASSWORD", "app-secret"),
        ("CONTROL_PASSWORD", "control-secret"),
        ("SHARD_PASSWORD", "shard-secret"),
    ]);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for file in ["shardgate.yaml", "single.yaml", "demo-compose.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("example file");
        if let Err(e) = Config::parse_with_env(&text, &env) {
            panic!("{file}:\n{e}");
        }
    }
}

#[test]
fn serde_saphyr_itself_rejects_duplicate_keys() {
    // We parse with `DuplicateKeyPolicy::PassThrough` to report duplicates with their path; this pins
    // the library default we would otherwise rely on.
    let result = serde_saphyr::from_str::<BTreeMap<String, u32>>("a: 1\na: 2\n");
    let message = result.expect_err("duplicate").without_snippet().to_string();
    assert!(message.contains("duplicate mapping key: a"), "{message}");
}

#[test]
fn all_semantic_problems_are_reported_at_once() {
    let text = "\
listen: 127.0.0.1:6432
users:
  - { name: app, password: pw }
  - { name: app, password: '' }
  - { name: old, password: 'SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2Vy', auth: md5 }
pool: { size: 0 }
databases:
  app:
    shards:
      S0: { primary: \"mysql://app:pw@h/app\" }
      s1: { primary: \"postgres://app:pw@h/app\", replicas: [\"postgres://h/app\"] }
    reference_tables: [users]
    tables: { users: id }
    default_shard: s9
";
    let expected = "\
users[1].name: duplicate user `app` (also users[0]) (line 4, column 13)
users[1].password: must not be empty (line 4, column 28)
users[2].password: a SCRAM-SHA-256 verifier cannot be used with `auth: md5`; give the plain password or use `auth: scram-sha-256` (line 5, column 28)
pool.size: must be at least 1 (got 0) (line 6, column 15)
databases.app.shards.S0: shard name `S0` must be lowercase letters, digits and `_` (line 10, column 11)
databases.app.shards.S0.primary: must be a postgres:// or postgresql:// URL (line 10, column 22)
databases.app.shards.s1.replicas[0]: the URL names no user (postgres://USER:PASSWORD@HOST:PORT/DATABASE) (line 11, column 60)
databases.app.sharding: required when a database has more than one shard (line 9, column 5)
databases.app.reference_tables[0]: `users` is also a sharded table (in `tables`); it must be one or the other (line 12, column 24)
databases.app.default_shard: no shard named `s9` (shards: S0, s1) (line 14, column 20)";
    assert_eq!(error(text), expected);
}

#[test]
fn missing_required_key_names_it() {
    let text = TWO_SHARDS.replacen("listen: 127.0.0.1:6432\n", "", 1);
    assert_eq!(
        error(&text),
        "listen: required key is missing (line 1, column 1)"
    );
}

#[test]
fn yaml_syntax_error_has_location() {
    assert_eq!(
        error("listen: [1, 2\n"),
        "(document): invalid YAML: unclosed bracket '[' (line 1, column 9)"
    );
}

#[test]
fn single_shard_needs_no_sharding() {
    let text = "\
listen: 127.0.0.1:6432
users: [{ name: app, password: pw }]
databases:
  app:
    shards:
      main: { primary: \"postgresql://app@%2Fvar%2Frun%2Fpostgresql/app\" }
";
    let config = parse(text).expect("valid");
    let target = config.databases["app"].shards["main"].primary_target();
    assert_eq!(target.host, "/var/run/postgresql");
    assert_eq!(target.password, None);
}

#[test]
fn range_map_must_be_ordered_and_typed() {
    let text = with("      function: hash\n      buckets: 1024\n      map:\n        - { buckets: 0-511, shard: s0 }\n        - { buckets: 512-1023, shard: s1 }\n",
        "      function: range\n      map:\n        - { from: null, to: 100, shard: s0 }\n        - { from: 50, to: 200, shard: s1 }\n        - { from: x, to: null, shard: s1 }\n        - { from: 300, to: 400, shard: s0 }\n");
    assert_eq!(error(&text), "databases.app.sharding.map[1]: `from` (50) is below the end of map[0] (100): ranges must be in ascending order and not overlap (line 14, column 11)\n\
         databases.app.sharding.map[2].from: expected a number for an integer key, got \"x\" (line 15, column 19)");
}

#[test]
fn list_values_are_unique_and_typed() {
    let text = with("      key_type: bigint\n      function: hash\n      buckets: 1024\n      map:\n        - { buckets: 0-511, shard: s0 }\n        - { buckets: 512-1023, shard: s1 }\n",
        "      key_type: text\n      function: list\n      map:\n        - { values: [de, fr], shard: s0 }\n        - { values: [fr, 7], shard: s1, buckets: 1 }\n");
    assert_eq!(error(&text), "databases.app.sharding.map[1].buckets: not allowed with `function: list` (line 14, column 50)\n\
         databases.app.sharding.map[1].values[0]: \"fr\" is already listed in map[0] (line 14, column 22)\n\
         databases.app.sharding.map[1].values[1]: expected a string for a text or uuid key, got the number 7 (quote it) (line 14, column 26)");
}

#[test]
fn dollar_escape_numbers_from_env_and_numeric_looking_strings() {
    let text = with(
        "  - { name: app, password: pw }",
        "  - { name: app, password: 0123 }",
    )
    .replacen(
        "listen: 127.0.0.1:6432\n",
        "listen: ${LISTEN}\npool: { size: \"${SIZE}\" }\nadmin: { token: \"a$${B}$c\" }\n",
        1,
    );
    let env = env_of(&[("LISTEN", "0.0.0.0:7000"), ("SIZE", "7")]);
    let config = Config::parse_with_env(&text, &env).expect("valid");
    assert_eq!(config.listen.to_string(), "0.0.0.0:7000");
    assert_eq!(config.pool.size, 7);
    assert_eq!(config.admin.token.as_deref(), Some("a${B}$c"));
    assert_eq!(config.users[0].password, "0123");
}

#[test]
fn summary_and_redacted_hold_no_secrets() {
    let env = env_of(&[
        ("SHARDGATE_ADMIN_TOKEN", "t0ken-xyz"),
        ("APP_PASSWORD", "app-secret"),
        ("CONTROL_PASSWORD", "control-secret"),
        ("SHARD_PASSWORD", "shard-secret"),
    ]);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/shardgate.yaml");
    let text = std::fs::read_to_string(path).expect("example file");
    let config = Config::parse_with_env(&text, &env).expect("valid");
    let summary = config.summary();
    let redacted = format!("{:?}", config.redacted());
    for secret in ["t0ken-xyz", "app-secret", "control-secret", "shard-secret"] {
        assert!(!summary.contains(secret), "{secret} in summary:\n{summary}");
        assert!(!redacted.contains(secret), "{secret} in redacted config");
    }
    assert_eq!(summary, "\
listen: 127.0.0.1:6432
admin: 127.0.0.1:6480 (token set)
tls: on (cert certs/server.crt, key certs/server.key)
users: app (scram-sha-256)
pool: mode transaction, size 20, checkout timeout 3000 ms, max clients 10000, connect timeout 5000 ms
health: checks every 1000 ms, timeout 1000 ms, banned after 2 failed checks
control: postgres://shardgate:***@127.0.0.1:5432/shardgate

database app:
  shards:
    s0: postgres://app:***@10.0.0.1:5432/app (1 replica)
      replica: postgres://app:***@10.0.0.2:5432/app
    s1: postgres://app:***@10.0.0.3:5432/app (0 replicas)
  sharding: hash of bigint key, 1024 buckets
    buckets 0-511 -> s0
    buckets 512-1023 -> s1
  sharded tables: order_items(user_id), orders(user_id), users(id)
  reference tables: countries, plans
  default shard: s0
  routing: cross-shard reads allow, cross-shard writes reject, read replicas on, max replica lag 1000 ms, read your writes on
");
}

#[test]
fn check_files_names_missing_tls_files() {
    let text =
        format!("{TWO_SHARDS}tls: {{ cert: /nonexistent/c.crt, key: /nonexistent/k.key }}\n");
    let config = parse(&text).expect("files are not checked by parse");
    assert_eq!(
        config.check_files().expect_err("missing").to_string(),
        "tls.cert: cannot read `/nonexistent/c.crt`: No such file or directory (os error 2)\n\
         tls.key: cannot read `/nonexistent/k.key`: No such file or directory (os error 2)"
    );
}

#[test]
fn url_redaction() {
    assert_eq!(
        target::redact_url("postgres://u:p@ss@h:1/db?sslmode=require&password=x"),
        "postgres://u:***@h:1/db?sslmode=require&password=***"
    );
    assert_eq!(target::redact_url("postgres://u@h/db"), "postgres://u@h/db");
}

#[test]
fn unquoted_variable_in_flow_mapping_gets_a_hint() {
    let text = with(
        "  - { name: app, password: pw }",
        "  - { name: app, password: ${PW} }",
    );
    assert_eq!(
        error(&text),
        "(document): invalid YAML: while parsing a flow mapping, did not find expected ',' or '}' \
         (inside `{ }` or `[ ]`, quote values that use a variable: \"${VAR}\") (line 3, column 29)"
    );
}

#[test]
fn health_has_defaults_and_checks_its_values() {
    let config = parse(TWO_SHARDS).expect("valid");
    assert_eq!(config.health, HealthConfig::default());
    assert_eq!(
        (
            config.health.interval_ms,
            config.health.timeout_ms,
            config.health.failures_to_ban
        ),
        (1000, 1000, 2)
    );
    let custom = with("databases:\n", "health: { interval_ms: 200 }\ndatabases:\n");
    let config = parse(&custom).expect("valid");
    assert_eq!(config.health.interval_ms, 200);
    assert_eq!(
        config.health.failures_to_ban, 2,
        "unset keys keep their default"
    );
    let zero = with(
        "databases:\n",
        "health: { interval_ms: 0, failures_to_ban: 0 }\ndatabases:\n",
    );
    assert_eq!(
        error(&zero),
        "health.interval_ms: must be at least 1 (got 0) (line 4, column 24)\n\
         health.failures_to_ban: must be at least 1 (got 0) (line 4, column 44)"
    );
    let typo = with("databases:\n", "health: { interval: 200 }\ndatabases:\n");
    assert_eq!(
        error(&typo),
        "health.interval: unknown key `interval` (expected one of: interval_ms, timeout_ms, \
         failures_to_ban) (line 4, column 11)"
    );
}

#[test]
fn slow_query_logging_is_off_by_default_and_its_section_is_strict() {
    assert_eq!(parse(TWO_SHARDS).expect("valid").log.slow_query_ms, 0);
    let on = with("databases:\n", "log: { slow_query_ms: 250 }\ndatabases:\n");
    assert_eq!(parse(&on).expect("valid").log.slow_query_ms, 250);
    let typo = with("databases:\n", "log: { slow_ms: 250 }\ndatabases:\n");
    assert_eq!(
        error(&typo),
        "log.slow_ms: unknown key `slow_ms` (expected one of: slow_query_ms) (line 4, column 8)"
    );
}

#[test]
fn statement_metrics_and_hotspots_are_on_by_default_and_their_section_is_strict() {
    let on = crate::config::MetricsConfig {
        statements: true,
        hotspots: true,
    };
    assert_eq!(parse(TWO_SHARDS).expect("valid").metrics, on);
    let off = with("databases:\n", "metrics: { hotspots: false }\ndatabases:\n");
    let hotspots_off = crate::config::MetricsConfig {
        hotspots: false,
        ..on
    };
    assert_eq!(parse(&off).expect("valid").metrics, hotspots_off);
    let typo = with(
        "databases:\n",
        "metrics: { statement: false }\ndatabases:\n",
    );
    assert_eq!(
        error(&typo),
        "metrics.statement: unknown key `statement` (expected one of: statements, hotspots) \
         (line 4, column 12)"
    );
}
