//! Config loading and validation: the exact text an operator reads.

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
    for file in ["shardgate.yaml", "single.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("example file");
        if let Err(e) = Config::parse_with_env(&text, &env) {
            panic!("{file}:\n{e}");
        }
    }
}
