use super::*;

#[test]
fn splits_at_top_level_semicolons_only() {
    let sql = "SET a = 'x;y'; select \"we;ird\" from t -- c;\n; DO $$BEGIN PERFORM 1; END$$; ;/* a;b */ select E'\\';'";
    assert_eq!(
        statements(sql).collect::<Vec<_>>(),
        vec![
            "SET a = 'x;y'",
            "select \"we;ird\" from t -- c;",
            "DO $$BEGIN PERFORM 1; END$$",
            "/* a;b */ select E'\\';'"
        ]
    );
    assert_eq!(statements(";;  ;").count(), 0);
    assert_eq!(
        statements("select $1; select $tag$;$tag$").collect::<Vec<_>>(),
        vec!["select $1", "select $tag$;$tag$"]
    );
}

#[test]
fn classifies_session_state_changes() {
    let set = |name: &str, sql: &str| {
        Some(SessionCommand::Set {
            name: name.into(),
            sql: sql.into(),
        })
    };
    assert_eq!(
        classify("SET search_path TO a, b"),
        set("search_path", "SET search_path TO a, b")
    );
    assert_eq!(
        classify("set SESSION DateStyle=ISO"),
        set("datestyle", "set SESSION DateStyle=ISO")
    );
    assert_eq!(
        classify("/* hint */ SET TIME ZONE 'UTC'"),
        set("timezone", "/* hint */ SET TIME ZONE 'UTC'")
    );
    assert_eq!(
        classify("SET extra_float_digits = 3"),
        set("extra_float_digits", "SET extra_float_digits = 3")
    );
    assert_eq!(classify("SET LOCAL work_mem = '1MB'"), None);
    assert_eq!(
        classify("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
        None
    );
    assert_eq!(classify("SET CONSTRAINTS ALL IMMEDIATE"), None);
    assert_eq!(classify("RESET ALL"), Some(SessionCommand::ResetAll));
    assert_eq!(
        classify("reset TimeZone"),
        Some(SessionCommand::Reset {
            name: "timezone".into()
        })
    );
    assert_eq!(classify("DISCARD ALL"), Some(SessionCommand::DiscardAll));
    assert_eq!(
        classify("DEALLOCATE PREPARE s1"),
        Some(SessionCommand::Deallocate {
            name: Some("s1".into())
        })
    );
    assert_eq!(
        classify("deallocate all"),
        Some(SessionCommand::Deallocate { name: None })
    );
    assert_eq!(
        classify("LISTEN chan"),
        Some(SessionCommand::Unpoolable { what: "LISTEN" })
    );
    assert_eq!(
        classify("PREPARE q AS SELECT 1"),
        Some(SessionCommand::Unpoolable { what: "PREPARE" })
    );
    assert_eq!(classify("PREPARE TRANSACTION 'x'"), None);
    assert_eq!(classify("select 1"), None);
}

#[test]
fn untrackable_session_state_is_recognised() {
    let unpoolable = |what| Some(SessionCommand::Unpoolable { what });
    assert_eq!(
        classify("SELECT pg_advisory_lock(42)"),
        unpoolable("a session-level advisory lock")
    );
    assert_eq!(
        classify("select PG_TRY_ADVISORY_LOCK_SHARED(1, 2)"),
        unpoolable("a session-level advisory lock")
    );
    assert_eq!(classify("select pg_advisory_xact_lock(42)"), None);
    assert_eq!(classify("select pg_try_advisory_xact_lock(42)"), None);
    assert_eq!(classify("select pg_advisory_unlock(42)"), None);
    assert_eq!(
        classify("SELECT set_config('jit', 'off', false)"),
        Some(SessionCommand::Untracked)
    );
    let temp = unpoolable("a temporary table that outlives its transaction");
    assert_eq!(classify("CREATE TEMP TABLE t (id int)"), temp);
    assert_eq!(classify("create local temporary table t as select 1"), temp);
    assert_eq!(
        classify("CREATE TEMP TABLE t (id int) ON COMMIT DROP"),
        None
    );
    assert_eq!(classify("create table t (id int)"), None);
}

#[test]
fn calls_are_recognised_by_the_name_before_the_parenthesis() {
    assert_eq!(
        classify("select pg_catalog.set_config ('a', 'b', false)"),
        Some(SessionCommand::Untracked)
    );
    assert_eq!(classify("select my_set_config('a')"), None);
    assert_eq!(classify("select 'pg_advisory_lock' as name"), None);
    assert_eq!(
        classify("select f(g(pg_advisory_lock_shared(7)))"),
        Some(SessionCommand::Unpoolable {
            what: "a session-level advisory lock"
        })
    );
}
