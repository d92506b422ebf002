//! Several sharded references: joins on the key, outer joins, USING, subqueries, set operations.

use super::support::*;
use crate::router::{Plan, RouteError};

#[test]
fn co_located_joins_on_the_key_go_to_one_shard() {
    let r = hash();
    let k = key_on(1);
    for sql in [
        format!("SELECT * FROM orders o JOIN users u ON o.user_id = u.id WHERE u.id = {k}"),
        format!("SELECT * FROM orders o JOIN users u ON u.id = o.user_id WHERE o.user_id = {k}"),
        format!("SELECT * FROM users u, orders o WHERE o.user_id = u.id AND u.id = {k}"),
        format!("SELECT * FROM users u INNER JOIN orders o ON o.user_id = u.id AND u.id = {k}"),
        format!("SELECT * FROM users u JOIN orders o ON o.user_id = u.id JOIN order_items i ON i.user_id = o.user_id WHERE i.user_id = {k}"),
        format!("SELECT * FROM orders JOIN order_items USING (user_id) WHERE orders.user_id = {k}"),
        format!("SELECT * FROM orders o JOIN order_items i USING (user_id) WHERE i.user_id = {k}"),
        format!("SELECT * FROM users u JOIN orders o ON o.user_id = u.id JOIN countries c ON c.id = u.country_id WHERE u.id = {k}"),
    ] {
        assert_eq!(simple(&r, &sql), one(1), "{sql}");
        assert!(matches!(plan(&r, &sql), Plan::Keyed(ref k) if k.colocated), "{sql}");
    }
    // Joined on the key with several keys: the owners of those keys, each answering for its own.
    let (a, b) = (key_on(0), key_on(2));
    assert_eq!(
        simple(
            &r,
            &format!(
                "SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id IN ({a}, {b})"
            )
        ),
        Ok(owners(&[a, b]))
    );
}

#[test]
fn co_located_joins_without_a_key_scatter() {
    let r = hash();
    for sql in [
        "SELECT * FROM users u JOIN orders o ON o.user_id = u.id",
        "SELECT * FROM orders JOIN order_items USING (user_id)",
        "SELECT * FROM users u LEFT JOIN orders o ON o.user_id = u.id",
        "SELECT * FROM orders o RIGHT JOIN users u ON o.user_id = u.id",
        "SELECT * FROM users u WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id)",
        "SELECT u.id, (SELECT count(*) FROM orders o WHERE o.user_id = u.id) FROM users u",
        "SELECT * FROM users u CROSS JOIN LATERAL (SELECT * FROM orders WHERE user_id = u.id LIMIT 3) o",
    ] {
        assert!(matches!(plan(&r, sql), Plan::Scatter(_)), "{sql}: {:?}", plan(&r, sql));
    }
}

#[test]
fn left_joins_take_the_key_from_the_preserved_side() {
    let r = hash();
    let k = key_on(2);
    for sql in [
        format!("SELECT * FROM users u LEFT JOIN orders o ON o.user_id = u.id WHERE u.id = {k}"),
        format!("SELECT * FROM orders o RIGHT JOIN users u ON o.user_id = u.id WHERE u.id = {k}"),
        format!("SELECT * FROM users u LEFT JOIN orders o ON o.user_id = u.id LEFT JOIN order_items i ON i.user_id = o.user_id WHERE u.id = {k}"),
    ] {
        assert_eq!(simple(&r, &sql), one(2), "{sql}");
    }
    // A condition on the preserved side inside ON filters nothing: the key is not pinned.
    let sql =
        format!("SELECT * FROM users u LEFT JOIN orders o ON o.user_id = u.id AND u.id = {k}");
    assert_eq!(simple(&r, &sql), all3());
    // The nullable side's key does not bound the preserved side's rows.
    let sql =
        format!("SELECT * FROM users u LEFT JOIN orders o ON o.user_id = u.id AND o.user_id = {k}");
    assert_eq!(simple(&r, &sql), all3());
    // A FULL join constrains neither side.
    let sql =
        format!("SELECT * FROM users u FULL JOIN orders o ON o.user_id = u.id WHERE u.id = {k}");
    assert!(matches!(
        rejected(&r, &sql),
        RouteError::NotColocated { .. }
    ));
    // Both sides filtered in WHERE: one shard.
    let sql = format!("SELECT * FROM users u FULL JOIN orders o ON o.user_id = u.id WHERE u.id = {k} AND o.user_id = {k}");
    assert_eq!(simple(&r, &sql), one(2));
}

#[test]
fn joins_not_on_the_key_are_refused() {
    let r = hash();
    for sql in [
        "SELECT * FROM users u JOIN orders o ON o.id = u.id",
        "SELECT * FROM users u JOIN orders o ON o.user_id = u.other_id",
        "SELECT * FROM users u, orders o",
        "SELECT * FROM users u JOIN orders o USING (id)",
        "SELECT * FROM users a JOIN users b ON a.id <> b.id",
        "SELECT * FROM users u JOIN orders o ON o.user_id = u.id OR o.user_id = 1",
    ] {
        let err = rejected(&r, sql);
        assert!(
            matches!(err, RouteError::NotColocated { .. }),
            "{sql}: {err:?}"
        );
        assert_eq!(
            err.to_string().split(" without").next(),
            Some(&*format!(
                "the statement touches sharded tables \"{}\" and \"{}\"",
                match &err {
                    RouteError::NotColocated { a, .. } => a.to_string(),
                    _ => unreachable!(),
                },
                match &err {
                    RouteError::NotColocated { b, .. } => b.to_string(),
                    _ => unreachable!(),
                },
            ))
        );
        assert_eq!(crate::router::RouteError::hint(&err), "Join sharded tables on their sharding keys (e.g. ON o.user_id = u.id), or filter each on the same key.");
    }
    // Not joined, but each pinned: fine when the keys share a shard, an error otherwise.
    let (a, a2) = (
        key_on(1),
        (key_on(1) + 1..).find(|&k| owner(k) == 1).unwrap(),
    );
    let b = key_on(2);
    assert_eq!(
        simple(
            &r,
            &format!("SELECT * FROM users u, orders o WHERE u.id = {a} AND o.user_id = {a2}")
        ),
        one(1)
    );
    let err = simple(
        &r,
        &format!("SELECT * FROM users u, orders o WHERE u.id = {a} AND o.user_id = {b}"),
    )
    .unwrap_err();
    assert!(matches!(err, RouteError::Unsupported { .. }), "{err:?}");
    assert!(
        err.to_string().contains("live on different shards"),
        "{err}"
    );
}

#[test]
fn subqueries_pinned_to_the_same_key_are_routed() {
    let r = hash();
    let k = key_on(0);
    for sql in [
        format!("SELECT * FROM users u WHERE u.id = {k} AND EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id)"),
        format!("SELECT * FROM users u WHERE u.id = {k} AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id)"),
        format!("SELECT u.id, (SELECT count(*) FROM orders o WHERE o.user_id = u.id) FROM users u WHERE u.id = {k}"),
        format!("SELECT * FROM users WHERE id = {k} AND name IN (SELECT name FROM orders WHERE user_id = {k})"),
        format!("SELECT * FROM (SELECT * FROM users WHERE id = {k}) sub"),
        format!("WITH mine AS (SELECT * FROM orders WHERE user_id = {k}) SELECT * FROM mine"),
        format!("WITH mine AS (SELECT * FROM orders WHERE user_id = {k}) SELECT * FROM users u JOIN mine ON true WHERE u.id = {k}"),
        format!("SELECT * FROM users u CROSS JOIN LATERAL (SELECT * FROM orders o WHERE o.user_id = u.id) x WHERE u.id = {k}"),
        format!("SELECT id FROM users WHERE id = {k} UNION ALL SELECT user_id FROM orders WHERE user_id = {k}"),
        format!("SELECT * FROM users WHERE id = {k} AND id = (SELECT {k})"),
    ] {
        assert_eq!(simple(&r, &sql), one(0), "{sql}");
    }
}

#[test]
fn unpinned_subqueries_on_sharded_tables_are_refused_or_scattered() {
    let r = hash();
    let k = key_on(0);
    // The subquery reads every shard's orders, the outer query one shard's users.
    for sql in [
        format!("SELECT * FROM users WHERE id = {k} AND name IN (SELECT name FROM orders)"),
        format!("SELECT (SELECT count(*) FROM orders) FROM users WHERE id = {k}"),
        format!("SELECT * FROM users WHERE id IN (SELECT user_id FROM orders WHERE user_id = {k})"),
        format!("SELECT * FROM users u JOIN (SELECT * FROM orders WHERE user_id = {k}) o ON o.user_id = u.id"),
        format!("SELECT id FROM users WHERE id = {k} UNION SELECT id FROM users"),
        format!("WITH all_orders AS (SELECT * FROM orders) SELECT * FROM users u, all_orders WHERE u.id = {k}"),
    ] {
        assert!(matches!(rejected(&r, &sql), RouteError::NotColocated { .. }), "{sql}");
    }
    // One table's rows in a subquery, none outside: scatter.
    assert!(matches!(
        plan(&r, "SELECT * FROM (SELECT * FROM users) s WHERE s.id = 5"),
        Plan::Scatter(_)
    ));
    assert!(matches!(
        plan(&r, "SELECT count(*) FROM (SELECT DISTINCT id FROM users) s"),
        Plan::Scatter(_)
    ));
}

#[test]
fn set_operations_with_keys_on_one_shard_or_not() {
    let r = hash();
    let (a, b) = (key_on(1), key_off(key_on(1)));
    let same = (a + 1..).find(|&k| owner(k) == owner(a)).unwrap();
    assert_eq!(
        simple(
            &r,
            &format!(
                "SELECT id FROM users WHERE id = {a} UNION SELECT id FROM users WHERE id = {same}"
            )
        ),
        one(1)
    );
    let err = simple(
        &r,
        &format!("SELECT id FROM users WHERE id = {a} UNION SELECT id FROM users WHERE id = {b}"),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("live on different shards"),
        "{err}"
    );
}
