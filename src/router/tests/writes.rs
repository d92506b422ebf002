//! INSERT, UPDATE, DELETE, MERGE and locking reads; reads and writes without the key.

use super::support::*;
use crate::router::{Broadcast, KeySource, KeyValue, Keyed, Plan, RouteError, Target};

#[test]
fn inserts_go_to_the_owner_of_each_row() {
    let r = hash();
    let (a, b, c) = (key_on(0), key_on(1), key_on(2));
    assert_eq!(
        simple(
            &r,
            &format!("INSERT INTO users (id, name) VALUES ({b}, 'x')")
        ),
        one(1)
    );
    assert_eq!(
        simple(
            &r,
            &format!("INSERT INTO users (name, id) VALUES ('x', '{b}') RETURNING id")
        ),
        one(1)
    );
    assert_eq!(
        simple(
            &r,
            &format!("INSERT INTO public.users AS u (id) VALUES ({c}) ON CONFLICT (id) DO NOTHING")
        ),
        one(2)
    );
    assert_eq!(
        simple(&r, &format!("INSERT INTO users (id, email) VALUES ({a}, 'e') ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email WHERE users.updated_at < now() RETURNING *")),
        one(0)
    );
    let sql = "INSERT INTO orders (user_id, total) VALUES ($1, $2)";
    assert_eq!(ext(&r, sql, &[t(c), t("9.5")]), one(2));
    assert_eq!(ext(&r, sql, &[P::B8(a), t("9.5")]), one(0));
    assert_eq!(
        ext(
            &r,
            "INSERT INTO orders (user_id) VALUES ($1::bigint)",
            &[t(b)]
        ),
        one(1)
    );
    // Several rows: planned per row, one target for all of them.
    let rows = "INSERT INTO events_x (a) VALUES (1)";
    assert_eq!(
        plan(&r, rows),
        Plan::Home {
            table: "events_x".into()
        }
    );
    let sql = "INSERT INTO order_items (user_id, sku) VALUES ($1, 'a'), ($2, 'b'), ($3, 'c')";
    assert_eq!(
        plan_split(&r, sql, 3),
        Plan::Keyed(Keyed {
            table: "order_items".into(),
            keys: vec![
                KeySource::Param(0),
                KeySource::Param(1),
                KeySource::Param(2)
            ],
            write: true,
            rows: true,
            colocated: true,
            merge: None,
            split: None,
        })
    );
    assert_eq!(ext(&r, sql, &[t(b), t(b), t(b)]), one(1));
    assert_eq!(ext(&r, sql, &[t(a), t(b), t(c)]), all3());
    assert_eq!(
        simple(&r, &format!("INSERT INTO users (id) VALUES ({a}), ({c})")),
        Ok(Target::Shards(vec![0, 2]))
    );
    // The key may be an expression Postgres folds, but shardgate does not evaluate.
    assert_eq!(
        plan_split(
            &r,
            &format!("INSERT INTO users (id) VALUES ({a}), (-{b})"),
            2
        ),
        Plan::Keyed(Keyed {
            table: "users".into(),
            keys: vec![
                KeySource::Value(KeyValue::Int(a)),
                KeySource::Value(KeyValue::Int(-b))
            ],
            write: true,
            rows: true,
            colocated: true,
            merge: None,
            split: None,
        })
    );
}

#[test]
fn inserts_that_do_not_give_the_key_plainly_are_refused() {
    let r = hash();
    for (sql, why) in [
        (
            "INSERT INTO users VALUES (1, 'x')",
            "in an explicit column list: shardgate does not know the table's column order (they are read from the shards when shardgate starts, and were not)",
        ),
        (
            "INSERT INTO users DEFAULT VALUES",
            "in a VALUES list: INSERT … SELECT and DEFAULT VALUES cannot be routed",
        ),
        (
            "INSERT INTO users (name) VALUES ('x')",
            "a value: the column list does not include it",
        ),
        (
            "INSERT INTO users (\"ID\") VALUES (1)",
            "a value: the column list does not include it",
        ),
        (
            "INSERT INTO users (id) SELECT id FROM users WHERE id = 1",
            "in a VALUES list: INSERT … SELECT and DEFAULT VALUES cannot be routed",
        ),
        (
            "INSERT INTO orders (user_id, kind) SELECT * FROM unnest($1::bigint[], $2::text[])",
            "in a VALUES list: INSERT … SELECT and DEFAULT VALUES cannot be routed",
        ),
        (
            "INSERT INTO users (id) VALUES (1), (DEFAULT)",
            "as a literal or a bind parameter in every row",
        ),
        (
            "INSERT INTO users (id) VALUES (1 + 1)",
            "as a literal or a bind parameter in every row",
        ),
        (
            "INSERT INTO users (id) VALUES ((SELECT 1))",
            "as a literal or a bind parameter in every row",
        ),
    ] {
        let err = rejected(&r, sql);
        assert!(
            matches!(err, RouteError::InsertKey { .. }),
            "{sql}: {err:?}"
        );
        let column = if sql.contains("orders") {
            "user_id"
        } else {
            "id"
        };
        let table = if sql.contains("orders") {
            "orders"
        } else {
            "users"
        };
        assert_eq!(err.to_string(), format!("INSERT into sharded table \"{table}\" must give its sharding key \"{column}\" {why}"), "{sql}");
        assert_eq!(err.hint(), format!("List \"{column}\" in the column list and give it as a literal or a bind parameter."));
    }
}

#[test]
fn changing_the_key_is_refused() {
    let r = hash();
    for sql in [
        "UPDATE users SET id = 5 WHERE id = 4",
        "UPDATE users SET name = 'x', ID = id + 1 WHERE id = 4",
        "UPDATE users u SET (name, id) = ('x', 5) WHERE u.id = 4",
        "UPDATE orders SET user_id = $1 WHERE user_id = $2",
        "INSERT INTO users (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id + 1",
        "INSERT INTO orders (user_id) VALUES (1) ON CONFLICT (id) DO UPDATE SET user_id = 2",
        "WITH x AS (UPDATE users SET id = 2 WHERE id = 1 RETURNING 1) SELECT * FROM x",
    ] {
        let err = rejected(&r, sql);
        assert!(
            matches!(err, RouteError::KeyUpdate { .. }),
            "{sql}: {err:?}"
        );
    }
    let err = rejected(&r, "UPDATE users SET id = 5 WHERE id = 4");
    assert_eq!(
        err.to_string(),
        "cannot change the sharding key \"id\" of table \"users\""
    );
    // Other columns are fine.
    assert_eq!(
        simple(
            &r,
            &format!("UPDATE users SET name = 'id' WHERE id = {}", key_on(1))
        ),
        one(1)
    );
}

#[test]
fn writes_without_the_key_are_refused_unless_cross_shard_writes_are_allowed() {
    let r = hash();
    let allow = hash_with(
        "    default_shard: s0\n",
        "    default_shard: s0\n    routing: { cross_shard_writes: allow }\n",
    );
    for (sql, verb, table) in [
        ("UPDATE users SET name = 'x'", "UPDATE", "users"),
        (
            "UPDATE users SET name = 'x' WHERE name = 'y' OR id = 1",
            "UPDATE",
            "users",
        ),
        ("DELETE FROM orders WHERE total > 5", "DELETE", "orders"),
        (
            "DELETE FROM orders o USING users u WHERE o.user_id = u.id AND u.disabled",
            "DELETE",
            "orders",
        ),
        (
            "UPDATE orders o SET total = 0 FROM users u WHERE u.id = o.user_id AND u.name = 'x'",
            "UPDATE",
            "orders",
        ),
        (
            "WITH gone AS (DELETE FROM users RETURNING id) SELECT count(*) FROM gone",
            "DELETE",
            "users",
        ),
    ] {
        let err = rejected(&r, sql);
        let column = if table == "users" { "id" } else { "user_id" };
        assert_eq!(
            err,
            RouteError::WriteWithoutKey {
                verb,
                table: table.into(),
                column: column.into()
            },
            "{sql}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{verb} on sharded table \"{table}\" must filter on its sharding key \"{column}\""
            )
        );
        assert_eq!(err.hint(), format!("Add \"{column} = …\" to the WHERE clause, or set routing.cross_shard_writes: allow for this database."));
        assert_eq!(
            plan(&allow, sql),
            Plan::Broadcast(Broadcast::CrossShardWrite),
            "{sql}"
        );
        assert_eq!(simple(&allow, sql), all3(), "{sql}");
    }
    // Even when allowed: writes that join tables not on their keys, and INSERTs without a key.
    let sql = "UPDATE users u SET name = 'x' FROM orders o WHERE o.id = u.id";
    assert!(matches!(
        rejected(&allow, sql),
        RouteError::WriteWithoutKey { .. }
    ));
    assert!(matches!(
        rejected(&allow, "INSERT INTO users (name) VALUES ('x')"),
        RouteError::InsertKey { .. }
    ));
    // The target pinned, another table not: refused as not co-located.
    let sql = format!(
        "UPDATE users SET x = 1 WHERE id = {} AND name IN (SELECT name FROM orders)",
        key_on(0)
    );
    assert!(matches!(
        rejected(&allow, &sql),
        RouteError::NotColocated { .. }
    ));
    // Locking reads and SELECT INTO need the key too.
    for sql in [
        "SELECT * FROM users FOR UPDATE",
        "SELECT * FROM orders FOR SHARE SKIP LOCKED",
        "SELECT * INTO TEMP TABLE tmp_users FROM users",
    ] {
        let err = rejected(&allow, sql);
        assert!(
            err.to_string()
                .starts_with("a locking or data-modifying statement on sharded table"),
            "{sql}: {err}"
        );
    }
}

#[test]
fn writes_with_the_key_in_joins_subqueries_and_ctes() {
    let r = hash();
    let k = key_on(2);
    for sql in [
        format!("UPDATE orders o SET total = 0 FROM users u WHERE u.id = o.user_id AND u.id = {k}"),
        format!("DELETE FROM orders o USING users u WHERE o.user_id = u.id AND u.id = {k} RETURNING o.id"),
        format!("DELETE FROM orders WHERE user_id = {k} AND id IN (SELECT order_id FROM order_items i WHERE i.user_id = orders.user_id)"),
        format!("UPDATE users SET n = (SELECT count(*) FROM orders o WHERE o.user_id = users.id) WHERE id = {k}"),
        format!("WITH moved AS (DELETE FROM orders WHERE user_id = {k} RETURNING *) INSERT INTO order_items (user_id, sku) VALUES ({k}, 'x')"),
        format!("WITH u AS (UPDATE users SET seen = now() WHERE id = {k} RETURNING id) SELECT * FROM orders WHERE user_id = {k}"),
        format!("SELECT * FROM users WHERE id = {k} FOR UPDATE"),
        format!("SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = {k} FOR UPDATE OF u SKIP LOCKED"),
        format!("SELECT * INTO TEMP t FROM users WHERE id = {k}"),
    ] {
        assert_eq!(simple(&r, &sql), one(2), "{sql}");
        assert!(matches!(plan(&r, &sql), Plan::Keyed(ref k) if k.write), "{sql}");
    }
    // A data-modifying CTE with a key, a main query without: refused.
    let sql = format!("WITH u AS (UPDATE users SET seen = now() WHERE id = {k} RETURNING id) SELECT * FROM orders");
    assert_eq!(
        rejected(&r, &sql),
        RouteError::NotColocated {
            a: "users".into(),
            b: "orders".into()
        }
    );
    // UPDATE … FROM tables of the default shard.
    assert_eq!(
        plan(
            &r,
            "UPDATE accounts a SET balance = 1 FROM transfers t WHERE t.account_id = a.id"
        ),
        Plan::Home {
            table: "accounts".into()
        }
    );
}

#[test]
fn merge_into_a_sharded_table_is_refused() {
    let r = hash();
    let err = rejected(
        &r,
        "MERGE INTO users u USING (VALUES (1)) v(id) ON v.id = u.id WHEN MATCHED THEN DELETE",
    );
    assert_eq!(
        err.to_string(),
        "MERGE into sharded table \"users\" is not supported"
    );
    let err = rejected(
        &r,
        "MERGE INTO smoke s USING users u ON u.id = s.id WHEN MATCHED THEN DELETE",
    );
    assert!(
        err.to_string().contains("together with table \"smoke\""),
        "{err}"
    );
    assert_eq!(
        plan(&r, "MERGE INTO smoke s USING (SELECT 1 AS id) v ON v.id = s.id WHEN NOT MATCHED THEN INSERT (id) VALUES (v.id)"),
        Plan::Home { table: "smoke".into() }
    );
}

#[test]
fn reads_without_the_key_scatter_unless_cross_shard_reads_are_rejected() {
    let r = hash();
    let strict = hash_with(
        "    default_shard: s0\n",
        "    default_shard: s0\n    routing: { cross_shard_reads: reject }\n",
    );
    for (sql, table, column) in [
        ("SELECT * FROM users", "users", "id"),
        (
            "SELECT count(*) FROM orders WHERE total > 5",
            "orders",
            "user_id",
        ),
        (
            "SELECT * FROM users ORDER BY id LIMIT $1 OFFSET $2",
            "users",
            "id",
        ),
        ("SELECT * FROM users TABLESAMPLE SYSTEM (10)", "users", "id"),
        ("SELECT ARRAY(SELECT id FROM users)", "users", "id"),
        (
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders",
            "orders",
            "user_id",
        ),
    ] {
        let Plan::Scatter(s) = &plan(&r, sql) else {
            panic!("{sql}: not a scatter");
        };
        assert_eq!((&*s.table, &*s.key_column), (table, column), "{sql}");
        // Mergeable shapes go to every shard; the others are refused (see tests/merge.rs).
        if s.merge.as_deref().is_some_and(|m| m.is_ok()) {
            assert_eq!(simple(&r, sql), all3(), "{sql}");
        } else {
            assert!(simple(&r, sql).is_err(), "{sql}");
        }
        let err = rejected(&strict, sql);
        assert_eq!(
            err,
            RouteError::ReadWithoutKey {
                table: table.into(),
                column: column.into()
            }
        );
        assert_eq!(err.to_string(), format!("cross-shard reads are disabled for this database (routing.cross_shard_reads: reject); the query on \"{table}\" does not filter on its sharding key \"{column}\""));
    }
    assert_eq!(
        simple(
            &strict,
            &format!("SELECT * FROM users WHERE id = {}", key_on(1))
        ),
        one(1)
    );
}
