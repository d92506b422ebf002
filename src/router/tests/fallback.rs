//! Statements without a key to route by: transaction control, settings, catalog queries, DDL,
//! EXPLAIN, COPY, hints, several statements in one query, and what the parser cannot read.

use super::support::*;
use crate::router::{Broadcast, Plan, RouteError, Target};

#[test]
fn transaction_control_and_settings_go_anywhere() {
    let r = hash();
    for (sql, expected) in [
        ("BEGIN", Plan::Begin),
        (
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE",
            Plan::Begin,
        ),
        (
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            Plan::Begin,
        ),
        ("COMMIT", Plan::End),
        ("END", Plan::End),
        ("ROLLBACK", Plan::End),
        ("ABORT", Plan::End),
        ("SAVEPOINT s1", Plan::Anywhere),
        ("RELEASE SAVEPOINT s1", Plan::Anywhere),
        ("ROLLBACK TO SAVEPOINT s1", Plan::Anywhere),
        ("SET statement_timeout = 5000", Plan::Anywhere),
        ("SET LOCAL search_path TO app, public", Plan::Anywhere),
        (
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            Plan::Anywhere,
        ),
        ("SET CONSTRAINTS ALL IMMEDIATE", Plan::Anywhere),
        ("SHOW server_version", Plan::Anywhere),
        ("SHOW ALL", Plan::Anywhere),
        ("RESET ALL", Plan::Anywhere),
        ("RESET statement_timeout", Plan::Anywhere),
        ("DISCARD ALL", Plan::Anywhere),
        ("DEALLOCATE ALL", Plan::Anywhere),
        ("LISTEN orders_changed", Plan::Anywhere),
        ("NOTIFY orders_changed, 'x'", Plan::Anywhere),
        ("UNLISTEN *", Plan::Anywhere),
        ("SELECT 1", Plan::Anywhere),
        ("SELECT now(), version()", Plan::Anywhere),
        ("VALUES (1), (2)", Plan::Anywhere),
        ("", Plan::Anywhere),
        (";", Plan::Anywhere),
    ] {
        assert_eq!(plan(&r, sql), expected, "{sql}");
    }
    assert_eq!(simple(&r, "BEGIN"), Ok(Target::Any));
    assert_eq!(simple(&r, "SET x = 1"), Ok(Target::Any));
}

#[test]
fn catalog_queries_go_anywhere_and_other_tables_to_the_default_shard() {
    let r = hash();
    for sql in [
        "SELECT * FROM pg_catalog.pg_class",
        "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace",
        "SELECT * FROM information_schema.columns WHERE table_name = 'users'",
        "SELECT 'users'::regclass::oid",
    ] {
        assert_eq!(plan(&r, sql), Plan::Anywhere, "{sql}");
    }
    assert_eq!(plan(&r, "SELECT * FROM countries"), Plan::Reference);
    assert_eq!(
        simple(&r, "SELECT * FROM countries c JOIN plans p ON true"),
        Ok(Target::Any)
    );
    assert_eq!(
        plan(&r, "SELECT * FROM smoke"),
        Plan::Home {
            table: "smoke".into()
        }
    );
    assert_eq!(
        simple(&r, "SELECT * FROM smoke JOIN countries ON true"),
        one(0)
    );
    assert_eq!(simple(&r, "INSERT INTO smoke (name) VALUES ('x')"), one(0));
    // Sharded tables with the default shard's own tables: only the default shard has those.
    let err = rejected(
        &r,
        "SELECT * FROM users u JOIN smoke s ON s.id = u.id WHERE u.id = 1",
    );
    assert!(
        err.to_string().contains("together with table \"smoke\""),
        "{err}"
    );
    // Reference tables join anything.
    let k = key_on(1);
    assert_eq!(
        simple(
            &r,
            &format!(
                "SELECT * FROM users u JOIN countries c ON c.id = u.country_id WHERE u.id = {k}"
            )
        ),
        one(1)
    );
    assert!(matches!(
        plan(
            &r,
            "SELECT * FROM users u JOIN countries c ON c.id = u.country_id"
        ),
        Plan::Scatter(_)
    ));

    let homeless = hash_with("    default_shard: s0\n", "");
    let err = simple(&homeless, "SELECT * FROM smoke").unwrap_err();
    assert_eq!(
        err,
        RouteError::NoHome {
            table: "smoke".into()
        }
    );
    assert_eq!(err.to_string(), "table \"smoke\" is neither sharded nor a reference table, and this database has no default_shard");
    assert_eq!(simple(&homeless, "SELECT 1"), Ok(Target::Any));
}

#[test]
fn reference_tables_are_read_anywhere_and_written_everywhere() {
    let r = hash();
    for sql in [
        "INSERT INTO countries (id, name) VALUES (1, 'x')",
        "UPDATE countries SET name = 'y' WHERE id = 1",
        "DELETE FROM plans",
        "INSERT INTO countries SELECT * FROM plans",
        "MERGE INTO countries c USING plans p ON p.id = c.id WHEN MATCHED THEN DELETE",
        "COPY countries FROM STDIN",
    ] {
        assert_eq!(
            plan(&r, sql),
            Plan::Broadcast(Broadcast::ReferenceWrite),
            "{sql}"
        );
        assert_eq!(simple(&r, sql), all3(), "{sql}");
    }
    let err = rejected(&r, "INSERT INTO countries SELECT id, 'x' FROM users");
    assert!(err
        .to_string()
        .contains("writes a reference table and also uses sharded table"));
    assert!(rejected(&r, "INSERT INTO countries SELECT * FROM smoke")
        .to_string()
        .contains("\"smoke\""));
}

/// A broadcast reached only shards that own keys: a shard holding only the default shard's
/// tables missed DDL and reference-table writes, then served stale reference rows.
#[test]
fn broadcasts_reach_every_shard_even_one_that_owns_no_keys() {
    let r = hash_with(
        "- { buckets: 0-340, shard: s0 }\n        - { buckets: 341-681, shard: s1 }",
        "- { buckets: 0-681, shard: s1 }",
    );
    assert_eq!(simple(&r, "CREATE TABLE t (id int)"), all3());
    assert_eq!(simple(&r, "INSERT INTO countries (id) VALUES (1)"), all3());
    // Scatter reads go only where rows can be.
    assert_eq!(
        simple(&r, "SELECT * FROM users"),
        Ok(Target::Shards(vec![1, 2]))
    );
}

#[test]
fn ddl_goes_to_every_shard() {
    let r = hash();
    for sql in [
        "CREATE TABLE t (id bigint PRIMARY KEY)",
        "CREATE INDEX CONCURRENTLY i ON users (lower(email))",
        "ALTER TABLE users ADD COLUMN age int",
        "DROP TABLE IF EXISTS users, orgs CASCADE",
        "TRUNCATE users",
        "CREATE VIEW v AS SELECT * FROM users",
        "CREATE EXTENSION IF NOT EXISTS pgcrypto",
        "COMMENT ON COLUMN users.email IS 'x'",
        "GRANT SELECT ON users TO app",
        "CREATE SCHEMA s",
        "CREATE TYPE mood AS ENUM ('a')",
    ] {
        assert_eq!(plan(&r, sql), Plan::Broadcast(Broadcast::Ddl), "{sql}");
        assert_eq!(simple(&r, sql), all3(), "{sql}");
    }
    // A migration sent as one query: several DDL statements, all broadcast.
    assert_eq!(
        simple(
            &r,
            "CREATE TABLE a (id int); CREATE INDEX ON a (id); COMMIT"
        ),
        all3()
    );
}

#[test]
fn explain_runs_where_its_statement_would() {
    let r = hash();
    let k = key_on(2);
    assert_eq!(
        simple(&r, &format!("EXPLAIN SELECT * FROM users WHERE id = {k}")),
        one(2)
    );
    assert_eq!(
        simple(
            &r,
            &format!(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) UPDATE users SET x = 1 WHERE id = {k}"
            )
        ),
        one(2)
    );
    assert_eq!(plan(&r, "EXPLAIN SELECT 1"), Plan::Anywhere);
    let err = rejected(&r, "EXPLAIN SELECT * FROM users");
    assert_eq!(
        err.to_string(),
        "EXPLAIN of a statement that runs on several shards"
    );
    assert!(matches!(
        rejected(&r, "EXPLAIN CREATE TABLE t (id int)"),
        RouteError::Unsupported { .. }
    ));
    assert!(matches!(
        rejected(&r, "EXPLAIN ANALYZE DELETE FROM users"),
        RouteError::WriteWithoutKey { .. }
    ));
}

#[test]
fn copy_forms() {
    let r = hash();
    let k = key_on(1);
    assert_eq!(simple(&r, "COPY users TO STDOUT"), all3());
    assert_eq!(
        simple(&r, "COPY users (id, name) TO STDOUT WITH (FORMAT csv)"),
        all3()
    );
    assert_eq!(
        simple(
            &r,
            &format!("COPY (SELECT * FROM users WHERE id = {k}) TO STDOUT")
        ),
        one(1)
    );
    assert!(matches!(
        plan(
            &r,
            "COPY (SELECT id FROM users WHERE id > 10) TO STDOUT WITH (FORMAT binary)"
        ),
        Plan::Scatter(_)
    ));
    // COPY FROM STDIN into a sharded table is split row by row (tests/copy.rs).
    assert_eq!(
        simple(
            &r,
            "COPY users (id, name) FROM STDIN WITH (FORMAT csv, HEADER true)"
        ),
        all3()
    );
    assert_eq!(plan(&r, "COPY countries TO STDOUT"), Plan::Reference);
    assert_eq!(
        plan(&r, "COPY smoke FROM STDIN"),
        Plan::Home {
            table: "smoke".into()
        }
    );
    assert_eq!(
        plan(&r, "COPY pg_catalog.pg_class TO STDOUT"),
        Plan::Anywhere
    );
}

#[test]
fn hints_name_the_shard_or_the_key() {
    let r = hash();
    let k = key_on(2);
    assert_eq!(
        plan(&r, "/* shardgate: shard=s1 */ SELECT * FROM users"),
        Plan::Shard(1)
    );
    assert_eq!(
        simple(&r, "/* shardgate: shard=s1 */ SELECT * FROM users"),
        one(1)
    );
    assert_eq!(
        simple(&r, "  /*shardgate:shard='s2'*/ VACUUM (ANALYZE) users"),
        one(2)
    );
    assert_eq!(
        simple(
            &r,
            &format!("/* shardgate: key={k} */ DO $$ BEGIN UPDATE users SET x = 1; END $$")
        ),
        one(2)
    );
    assert_eq!(
        simple(&r, &format!("/* shardgate: key='{k}' */ SELECT 1")),
        one(2)
    );
    // Not a hint: an ordinary comment, or a hint after the statement starts.
    assert_eq!(
        simple(
            &r,
            &format!("/* hello */ SELECT * FROM users WHERE id = {k}")
        ),
        one(2)
    );
    assert_eq!(
        simple(&r, "SELECT /* shardgate: shard=s1 */ * FROM users"),
        all3()
    );
    for (sql, message) in [
        ("/* shardgate: shard=s9 */ SELECT 1", "shardgate hint: no shard named \"s9\" (this database has \"s0\", \"s1\", \"s2\")"),
        ("/* shardgate: key=abc */ SELECT 1", "shardgate hint: key=abc: invalid input for a bigint sharding key: \"abc\" (expected a whole number)"),
        ("/* shardgate: shard */ SELECT 1", "shardgate hint: expected shard=NAME or key=VALUE, got \"shard\""),
        ("/* shardgate: table=users */ SELECT 1", "shardgate hint: unknown directive \"table\" (use shard= or key=)"),
    ] {
        let err = rejected(&r, sql);
        assert!(matches!(err, RouteError::BadHint(_)));
        assert_eq!(err.to_string(), message);
    }
}

#[test]
fn several_statements_in_one_query_must_share_a_shard() {
    let r = hash();
    let (a, b) = (key_on(0), key_on(1));
    let same = (a + 1..).find(|&k| owner(k) == 0).unwrap();
    let sql = format!("BEGIN; UPDATE users SET x = 1 WHERE id = {a}; SELECT * FROM orders WHERE user_id = {same}; COMMIT");
    assert!(matches!(plan(&r, &sql), Plan::Multi(ref p) if p.len() == 4));
    assert_eq!(simple(&r, &sql), one(0));
    assert_eq!(simple(&r, "SELECT 1; SELECT 2"), Ok(Target::Any));
    let err = simple(
        &r,
        &format!("SELECT * FROM users WHERE id = {a}; SELECT * FROM users WHERE id = {b}"),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the statements of this query go to different shards"
    );
    // A scatter and a single-shard statement: different targets.
    assert!(simple(
        &r,
        &format!("SELECT * FROM users; SELECT * FROM users WHERE id = {a}")
    )
    .is_err());
    // A rejected statement rejects the whole query.
    assert!(matches!(
        simple(&r, "SELECT 1; DELETE FROM users"),
        Err(RouteError::WriteWithoutKey { .. })
    ));
    // Statements are split where Postgres splits them.
    assert_eq!(
        simple(&r, &format!("SELECT ';' FROM users WHERE id = {a} -- ;\n")),
        one(0)
    );
    assert_eq!(
        plan(&r, "SELECT $a$;$a$, a$b$c FROM smoke"),
        Plan::Home {
            table: "smoke".into()
        }
    );
}

/// `FOR NO KEY UPDATE` / `FOR KEY SHARE` (which the parser lacks) were relaxed only in
/// statements without a single quote, and by a plain text search that also rewrote string
/// literals: `… WHERE status = 'x' FOR NO KEY UPDATE` went to the default shard.
#[test]
fn locking_clauses_the_parser_lacks_are_read_as_their_stronger_twins() {
    let r = hash();
    let k = key_on(2);
    for sql in [
        format!("SELECT * FROM users WHERE id = {k} FOR NO KEY UPDATE"),
        format!("SELECT * FROM users WHERE id = {k} AND status = 'x' FOR NO KEY UPDATE"),
        format!("SELECT * FROM users WHERE id = {k} for  no\n key   update NOWAIT"),
        format!("SELECT * FROM users WHERE id = {k} FOR KEY SHARE SKIP LOCKED"),
        format!("SELECT * FROM orders o JOIN users u ON u.id = o.user_id WHERE u.id = {k} FOR NO KEY UPDATE OF u"),
    ] {
        assert_eq!(simple(&r, &sql), one(2), "{sql}");
        assert!(matches!(plan(&r, &sql), Plan::Keyed(ref k) if k.write), "{sql}");
    }
    // A locking read without the key is refused like FOR UPDATE.
    assert!(matches!(
        rejected(&r, "SELECT * FROM users FOR NO KEY UPDATE"),
        RouteError::Unsupported { .. }
    ));
    // The words inside a literal are data: a text key spelled like the clause keeps its value.
    let text = hash_with("key_type: bigint", "key_type: text");
    let owner_of = |s: &str| match crate::router::hash::bucket_of(
        crate::router::hash::hash_text(s.as_bytes()),
        1024,
    ) {
        0..=340 => 0,
        341..=681 => 1,
        _ => 2,
    };
    // A key whose rewritten spellings (old or new) live on another shard.
    let key = (0..)
        .map(|n| format!("{n} FOR NO KEY UPDATE"))
        .find(|k| {
            owner_of(k) != owner_of(&k.replace("FOR NO KEY UPDATE", "FOR UPDATE       "))
                && owner_of(k) != owner_of(&k.replace("NO KEY", "      "))
        })
        .unwrap();
    let key = key.as_str();
    for sql in [
        format!("SELECT * FROM users WHERE id = $${key}$$ FOR NO KEY UPDATE"),
        format!("SELECT * FROM users WHERE id = '{key}' FOR KEY SHARE"),
        format!("SELECT * FROM users WHERE id = E'{key}' FOR NO KEY UPDATE"),
    ] {
        assert_eq!(simple(&text, &sql), one(owner_of(key)), "{sql}");
    }
}

/// What the parser cannot read went to the default shard even when it names a sharded table,
/// whose rows are on every shard (`TABLE users`, `DO $$ … UPDATE users … $$`).
#[test]
fn unreadable_statements_naming_sharded_tables_need_a_pinned_shard() {
    let r = hash();
    for sql in [
        "TABLE users",
        "SELECT * FROM users*",
        "SELECT * FROM ONLY public.users",
        "DO $$ BEGIN UPDATE users SET x = 1; END $$",
        "DO $$BEGIN DELETE FROM users$$",
        "VACUUM (ANALYZE, VERBOSE) users",
        "VACUUM users",
        "ANALYZE orders",
        "LOCK TABLE users IN ACCESS EXCLUSIVE MODE NOWAIT",
        "PREPARE s1 (int) AS SELECT * FROM users WHERE id = $1",
        "CALL refresh('order_items')",
        "REFRESH MATERIALIZED VIEW CONCURRENTLY users",
    ] {
        let p = plan(&r, sql);
        assert!(
            matches!(
                p,
                Plan::Unparsed {
                    sharded: Some(_),
                    ..
                }
            ),
            "{sql}: {p:?}"
        );
        let err = simple(&r, sql).unwrap_err();
        assert!(
            matches!(err, RouteError::UnparsedSharded { .. }),
            "{sql}: {err:?}"
        );
        assert_eq!(r.resolve(&p, None, Some(2)), one(2), "{sql}: pinned");
    }
    let err = simple(&r, "TABLE users").unwrap_err();
    assert!(err.to_string().starts_with("the statement cannot be parsed by shardgate's router (TABLE USERS (not understood by the SQL parser"), "{err}");
    assert!(err.to_string().ends_with("and names sharded table \"users\", whose rows are on every shard; outside a transaction pinned to one shard there is nowhere to send it"), "{err}");
    assert!(err
        .hint()
        .starts_with("Start the statement with /* shardgate: shard=NAME */"));
}

#[test]
fn other_unreadable_statements_go_to_the_pinned_or_default_shard() {
    let r = hash();
    for sql in [
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'mood') THEN CREATE TYPE mood AS ENUM ('a'); END IF; END $$",
        "REFRESH MATERIALIZED VIEW CONCURRENTLY mv_stats",
        "PREPARE TRANSACTION 'tx-1'",
        "COMMIT PREPARED 'tx-1'",
        "ALTER SEQUENCE users_id_seq RESTART WITH 1000",
        "EXECUTE s1(5)",
        "CALL do_thing($1, $2)",
        "CHECKPOINT",
        "VACUUM",
    ] {
        let p = plan(&r, sql);
        assert!(matches!(p, Plan::Unparsed { sharded: None, .. }), "{sql}: {p:?}");
        assert_eq!(simple(&r, sql), one(0), "{sql}");
        assert_eq!(r.resolve(&p, None, Some(1)), one(1), "{sql}");
    }
    let homeless = hash_with("    default_shard: s0\n", "");
    let err = simple(&homeless, "CHECKPOINT").unwrap_err();
    assert!(matches!(err, RouteError::Unparsed { .. }));
    assert!(err
        .to_string()
        .ends_with("and there is no pinned or default shard to send it to"));
}

#[test]
fn cursors_are_routed_by_their_query() {
    let r = hash();
    let k = key_on(1);
    assert_eq!(
        simple(
            &r,
            &format!("DECLARE c CURSOR FOR SELECT * FROM users WHERE id = {k}")
        ),
        one(1)
    );
    assert_eq!(
        simple(
            &r,
            "DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT * FROM smoke"
        ),
        one(0)
    );
    let err = rejected(
        &r,
        "DECLARE c1 NO SCROLL CURSOR WITH HOLD FOR SELECT * FROM users",
    );
    assert_eq!(err.to_string(), "a cursor over sharded table \"users\" without its sharding key \"id\" would read every shard");
    assert_eq!(plan(&r, "FETCH FORWARD 100 FROM c1"), Plan::Anywhere);
    assert_eq!(plan(&r, "CLOSE ALL"), Plan::Anywhere);
}

#[test]
fn shadow_mode_routes_nothing_and_reports_each_statement_that_would_need_more_once() {
    let r = super::support::router(
        r#"
    shards:
      main: { primary: "postgres://u:p@127.0.0.1:1/app" }
    sharding: { key_type: bigint, function: hash, buckets: 8, map: [{ buckets: 0-7, shard: main }] }
    tables: { users: id }
    routing: { mode: shadow }
"#,
    );
    assert!(r.is_shadow() && !r.is_sharded());
    let scatter = r
        .shadow_report("SELECT * FROM users WHERE name = 'x'")
        .expect("reported");
    assert_eq!(scatter.to_string(), "multi-shard: reads sharded table \"users\" without its sharding key \"id\", so it would run on every shard");
    assert_eq!(
        r.shadow_report("SELECT * FROM users WHERE name = 'x'"),
        None,
        "once per statement"
    );
    assert_eq!(
        r.shadow_report("SELECT * FROM users WHERE id = 7"),
        None,
        "one shard"
    );
    let refused = r
        .shadow_report("UPDATE users SET name = 'x'")
        .expect("reported");
    assert_eq!(refused.kind(), "rejected");
    assert_eq!(
        r.resolve(&r.plan("UPDATE users SET name = 'x'"), None, None),
        Ok(Target::Any)
    );
}

#[tokio::test] // the snapshot's pools start bb8's reaper
async fn each_worker_has_its_own_router_and_a_shadow_statement_is_reported_once_across_them() {
    let yaml = r#"
listen: 127.0.0.1:0
users: [{ name: a, password: b }]
databases:
  app:
    shards:
      main: { primary: "postgres://u:p@127.0.0.1:1/app" }
    sharding: { key_type: bigint, function: hash, buckets: 8, map: [{ buckets: 0-7, shard: main }] }
    tables: { users: id }
    routing: { mode: shadow }
"#;
    let config = crate::config::Config::parse_with_env(yaml, &|_| None).expect("valid config");
    let snapshot = crate::topology::Snapshot::first(std::sync::Arc::new(config), 2).unwrap();
    let routers = crate::router::Routers::default();
    let get = |worker| routers.get(&snapshot, "app", worker).expect("configured");
    let (w0, w1) = (get(0), get(1));
    assert!(
        std::sync::Arc::ptr_eq(&w0, &get(0)),
        "one per worker and version"
    );
    assert!(!std::sync::Arc::ptr_eq(&w0, &w1), "a worker's own");
    let sql = "SELECT * FROM users WHERE name = 'x'";
    assert!(w1.shadow_report(sql).is_some());
    assert_eq!(
        w0.shadow_report(sql),
        None,
        "reported once, not once per worker"
    );
}
