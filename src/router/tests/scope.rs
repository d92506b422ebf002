//! Name scoping bugs that sent a statement to one shard while its rows live on all of them.

use super::support::*;
use crate::router::{Plan, RouteError};

/// `FROM ONLY users` was read as a table named "only" (aliased users): the default shard.
#[test]
fn only_is_the_table_without_descendants_not_a_table_named_only() {
    let r = hash();
    let k = key_on(2);
    assert!(matches!(
        plan(&r, "SELECT * FROM ONLY users"),
        Plan::Scatter(_)
    ));
    assert_eq!(
        simple(&r, &format!("SELECT * FROM ONLY users WHERE id = {k}")),
        one(2)
    );
    assert_eq!(
        simple(&r, &format!("UPDATE ONLY users SET x = 1 WHERE id = {k}")),
        one(2)
    );
    assert_eq!(
        simple(&r, &format!("DELETE FROM ONLY users WHERE users.id = {k}")),
        one(2)
    );
    assert!(matches!(
        rejected(&r, "UPDATE ONLY users SET x = 1"),
        RouteError::WriteWithoutKey { .. }
    ));
    // A table really named "ONLY" must be quoted.
    assert_eq!(
        plan(&r, "SELECT * FROM \"ONLY\" users"),
        Plan::Home {
            table: "ONLY".into()
        }
    );
}

/// A CTE's name is visible in the main query and in later CTEs, not in its own body: there,
/// `users` is the table.
#[test]
fn a_cte_shadowing_a_sharded_table_does_not_hide_the_table_in_its_own_body() {
    let r = hash();
    let k = key_on(1);
    assert!(matches!(
        plan(
            &r,
            "WITH users AS (SELECT * FROM users) SELECT * FROM users"
        ),
        Plan::Scatter(_)
    ));
    assert_eq!(
        simple(
            &r,
            &format!("WITH users AS (SELECT * FROM users WHERE id = {k}) SELECT * FROM users")
        ),
        one(1)
    );
    assert!(matches!(
        plan(
            &r,
            "WITH a AS (SELECT 1), orders AS (SELECT * FROM orders) SELECT * FROM a, orders"
        ),
        Plan::Scatter(_)
    ));
    // In the main query and later CTEs the name is the CTE's.
    assert_eq!(
        plan(&r, "WITH users AS (SELECT 1 AS id) SELECT * FROM users"),
        Plan::Anywhere
    );
    assert_eq!(
        plan(
            &r,
            "WITH users AS (SELECT 1 AS id), b AS (SELECT * FROM users) SELECT * FROM b"
        ),
        Plan::Anywhere
    );
    assert_eq!(
        plan(&r, "WITH RECURSIVE users(id) AS (SELECT 1 UNION ALL SELECT id + 1 FROM users WHERE id < 3) SELECT * FROM users"),
        Plan::Anywhere
    );
    // RECURSIVE lifts the order: a CTE may name a later one.
    assert_eq!(
        plan(
            &r,
            "WITH RECURSIVE a AS (SELECT * FROM users), users AS (SELECT 1 AS id) SELECT * FROM a"
        ),
        Plan::Anywhere
    );
    assert!(matches!(
        plan(
            &r,
            "WITH a AS (SELECT * FROM users), users AS (SELECT 1 AS id) SELECT * FROM a"
        ),
        Plan::Scatter(_)
    ));
    // In a subquery of the main query too.
    assert_eq!(
        plan(
            &r,
            "WITH users AS (SELECT 1 AS id) SELECT * FROM (SELECT * FROM users) s"
        ),
        Plan::Anywhere
    );
}

/// The target of INSERT, UPDATE, DELETE and MERGE is always a table, never a CTE.
#[test]
fn a_write_target_is_never_a_cte() {
    let r = hash();
    for sql in [
        "WITH users AS (SELECT 1) DELETE FROM users",
        "WITH users AS (SELECT 1) UPDATE users SET name = 'x'",
    ] {
        assert!(
            matches!(rejected(&r, sql), RouteError::WriteWithoutKey { .. }),
            "{sql}"
        );
    }
    let k = key_on(2);
    assert_eq!(
        simple(
            &r,
            &format!("WITH users AS (SELECT 1) INSERT INTO users (id) VALUES ({k})")
        ),
        one(2)
    );
}

/// A subquery's conditions pinned the outer query's rows: with the subquery under OR, NOT or in
/// the select list, rows of every shard qualify.
#[test]
fn a_subquery_does_not_pin_the_rows_of_the_query_around_it() {
    let r = hash();
    let k = key_on(2);
    for sql in [
        format!("SELECT * FROM users u WHERE u.flag OR EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.user_id = {k})"),
        format!("SELECT * FROM users u WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.user_id = {k})"),
        format!("SELECT u.*, (SELECT count(*) FROM orders o WHERE o.user_id = u.id AND o.user_id = {k}) FROM users u"),
        format!("SELECT * FROM users u WHERE u.flag OR EXISTS (SELECT 1 FROM countries c WHERE u.id = {k})"),
        format!("SELECT * FROM users u WHERE NOT EXISTS (SELECT 1 WHERE u.id = {k})"),
        format!("SELECT * FROM users u LEFT JOIN LATERAL (SELECT * FROM orders o WHERE o.user_id = u.id AND o.user_id = {k}) x ON true"),
    ] {
        assert_eq!(simple(&r, &sql), all3(), "{sql}");
    }
    // Two outer references compared inside a subquery are not joined: it may not hold.
    let sql =
        "SELECT * FROM users u, orders o WHERE u.flag OR EXISTS (SELECT 1 WHERE u.id = o.user_id)";
    assert!(matches!(rejected(&r, sql), RouteError::NotColocated { .. }));
    // Writes: the outer target stays unpinned.
    let sql = format!("DELETE FROM users u WHERE u.flag OR EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.user_id = {k})");
    assert!(matches!(
        rejected(&r, &sql),
        RouteError::WriteWithoutKey { .. }
    ));
    // The preserved side of an outer join in a subquery is not bounded by a correlation in ON.
    let sql = format!("SELECT * FROM users u WHERE u.id = {k} AND EXISTS (SELECT 1 FROM orders o LEFT JOIN order_items i ON o.user_id = u.id)");
    assert!(matches!(
        rejected(&r, &sql),
        RouteError::NotColocated { .. }
    ));
}

/// System names were checked before the configured ones: a sharded table named `pg_…` was a
/// catalog table, sent anywhere.
#[test]
fn configured_names_win_over_the_pg_prefix() {
    let r = hash_with("tables: { users: id,", "tables: { pg_users: id, users: id,");
    assert!(matches!(
        plan(&r, "SELECT * FROM pg_users"),
        Plan::Scatter(_)
    ));
    assert_eq!(plan(&r, "SELECT * FROM pg_class"), Plan::Anywhere);
    assert_eq!(
        plan(&r, "SELECT * FROM pg_catalog.pg_users"),
        Plan::Anywhere
    );
}

/// `key='it''s'` hinted the key `it''s`.
#[test]
fn hint_values_are_read_as_sql_literals() {
    let text = hash_with("key_type: bigint", "key_type: text");
    let owner_of = |s: &str| match crate::router::hash::bucket_of(
        crate::router::hash::hash_text(s.as_bytes()),
        1024,
    ) {
        0..=340 => 0,
        341..=681 => 1,
        _ => 2,
    };
    let key = (0..)
        .map(|n| format!("o'k{n}"))
        .find(|k| owner_of(k) != owner_of(&k.replace('\'', "''")))
        .unwrap();
    let quoted = key.replace('\'', "''");
    assert_eq!(
        simple(&text, &format!("/* shardgate: key='{quoted}' */ SELECT 1")),
        one(owner_of(&key))
    );
    assert_eq!(
        simple(&text, "/* shardgate: key=plain */ SELECT 1"),
        one(owner_of("plain"))
    );
}

#[test]
fn buckets_are_reported_for_hash_maps() {
    let r = hash();
    let key = crate::router::KeyValue::Int(42);
    let bucket = crate::router::hash::bucket_of(crate::router::hash::hash_int(42), 1024);
    assert_eq!(r.bucket(&key), Some(bucket));
    assert_eq!(r.shard_name(owner(42)), ["s0", "s1", "s2"][owner(42)]);
    assert_eq!(r.shard_name(7), "?");
}

/// `users u(x, id)` renames the first two columns: `u.id` is then the second column, not the
/// key, and the router pinned it as the key.
#[test]
fn an_alias_that_renames_columns_hides_the_key() {
    let r = hash();
    let k = key_on(1);
    for sql in [
        format!("SELECT * FROM users u(x, id) WHERE u.id = {k}"),
        format!("SELECT * FROM users u(x, id) WHERE id = {k}"),
        format!("SELECT * FROM users AS u(id) WHERE u.id = {k}"),
    ] {
        assert_eq!(simple(&r, &sql), all3(), "{sql}");
    }
    let sql = "SELECT * FROM orders o(x, user_id) JOIN order_items i ON i.user_id = o.user_id";
    assert!(matches!(rejected(&r, sql), RouteError::NotColocated { .. }));
    let sql = "SELECT * FROM orders o(x, user_id) JOIN order_items i USING (user_id)";
    assert!(matches!(rejected(&r, sql), RouteError::NotColocated { .. }));
}

/// Unquoted names fold ASCII letters only, as Postgres does in a UTF8 database.
#[test]
fn unquoted_names_fold_ascii_letters_only() {
    let r = hash_with(
        "tables: { users: id,",
        "tables: { \"üsers\": id, users: id,",
    );
    assert!(matches!(plan(&r, "SELECT * FROM üsers"), Plan::Scatter(_)));
    assert!(matches!(plan(&r, "SELECT * FROM ÜSERS"), Plan::Home { .. }));
    assert!(matches!(plan(&r, "SELECT * FROM USERS"), Plan::Scatter(_)));
}
