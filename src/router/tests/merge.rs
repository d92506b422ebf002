//! How multi-shard reads are merged: the text each shard runs and what shardgate does with the
//! rows, and the shapes refused because their merge could differ from one server's answer.

use super::support::{hash, plan};
use crate::router::merge::{Aggregate, Bound, Grouping, MergeSpec, Output, SortColumn, SortKey};
use crate::router::{Plan, RouteError};

fn spec(sql: &str) -> Result<MergeSpec, RouteError> {
    match plan(&hash(), sql) {
        Plan::Scatter(s) => (*s.merge.expect("a merge")).clone(),
        Plan::Keyed(k) => (*k.merge.expect("a merge")).clone(),
        other => panic!("{sql}: {other:?}"),
    }
}

fn ok(sql: &str) -> MergeSpec {
    spec(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn refused(sql: &str) -> String {
    match spec(sql) {
        Err(e) => e.to_string(),
        Ok(s) => panic!("{sql}: merged as {s:?}"),
    }
}

fn key(column: usize, desc: bool, nulls_first: bool) -> SortKey {
    SortKey {
        column: SortColumn::Index(column),
        desc,
        nulls_first,
    }
}

#[test]
fn plain_rows_are_concatenated_and_sorted_by_the_select_list() {
    let s = ok("SELECT id, name FROM users ORDER BY name DESC, 1 NULLS FIRST");
    assert_eq!(s.shard_sql, None);
    assert_eq!(s.outputs, Some(vec![Output::Plain, Output::Plain]));
    assert_eq!(s.grouping, Grouping::Rows);
    assert_eq!(s.order, vec![key(1, true, true), key(0, false, true)]);
    let s = ok("SELECT id AS n FROM users u ORDER BY n, u.id");
    // `u.id` is not spelled as in the select list: fetched as a hidden column (still right).
    assert_eq!(s.order, vec![key(0, false, false), key(1, false, false)]);
    assert_eq!(s.hidden, 1);
}

#[test]
fn limit_and_offset_are_pushed_down_as_their_sum() {
    let s = ok("SELECT id FROM users ORDER BY id LIMIT 10 OFFSET 20");
    assert_eq!(
        s.shard_sql.as_deref(),
        Some("SELECT id FROM users ORDER BY id LIMIT 30 OFFSET 0")
    );
    assert_eq!(
        (s.limit, s.offset),
        (Some(Bound::Value(10)), Some(Bound::Value(20)))
    );
    let s = ok("SELECT id FROM users ORDER BY id LIMIT $1 OFFSET $2");
    assert_eq!(
        s.shard_sql.as_deref(),
        Some("SELECT id FROM users ORDER BY id LIMIT ($1::int8 + $2::int8) OFFSET 0")
    );
    assert_eq!(
        (s.limit, s.offset),
        (Some(Bound::Param(0)), Some(Bound::Param(1)))
    );
    let s = ok("SELECT id FROM users LIMIT 5");
    assert_eq!((s.shard_sql, s.limit), (None, Some(Bound::Value(5))));
    let s = ok("SELECT id FROM users ORDER BY id OFFSET 3 ROWS FETCH FIRST 2 ROWS ONLY");
    assert_eq!(
        s.shard_sql.as_deref(),
        Some("SELECT id FROM users ORDER BY id OFFSET 0 ROWS FETCH FIRST 5 ROWS ONLY")
    );
}

#[test]
fn aggregates_merge_and_avg_runs_as_sum_and_count() {
    let s =
        ok("SELECT count(*), sum(total), min(total), MAX(total), avg(total) AS mean FROM orders");
    assert_eq!(
        s.shard_sql.as_deref(),
        Some("SELECT count(*), sum(total), min(total), MAX(total), sum(total), count(total) AS mean FROM orders")
    );
    assert_eq!(
        s.outputs,
        Some(vec![
            Output::Agg(Aggregate::Count),
            Output::Agg(Aggregate::Sum),
            Output::Agg(Aggregate::Min),
            Output::Agg(Aggregate::Max),
            Output::Avg {
                name: "mean".into()
            },
        ])
    );
    assert_eq!(s.grouping, Grouping::Aggregate);
    let s = ok("SELECT avg(total) FILTER (WHERE total > 0) FROM orders LIMIT 1");
    assert_eq!(
        s.shard_sql.as_deref(),
        Some("SELECT sum(total) FILTER (WHERE total > 0), count(total) FILTER (WHERE total > 0) FROM orders LIMIT ALL")
    );
}

#[test]
fn groups_spanning_shards_merge_on_the_select_list() {
    let s =
        ok("SELECT status, count(*) FROM orders GROUP BY status ORDER BY 2 DESC LIMIT 3 OFFSET 1");
    assert_eq!(s.grouping, Grouping::Groups(vec![0]));
    assert_eq!(
        s.shard_sql.as_deref(),
        Some("SELECT status, count(*) FROM orders GROUP BY status ORDER BY 2 DESC LIMIT ALL OFFSET 0")
    );
    assert_eq!(s.order, vec![key(1, true, true)]);
    assert!(refused("SELECT count(*) FROM orders GROUP BY status")
        .contains("GROUP BY status is not in the select list"));
    assert!(
        refused("SELECT status, count(*) FROM orders GROUP BY status HAVING count(*) > 1")
            .contains("HAVING")
    );
}

#[test]
fn groups_on_the_sharding_key_stay_on_one_shard() {
    let s = ok("SELECT user_id, string_agg(sku, ',') FROM order_items GROUP BY user_id HAVING count(*) > 1 ORDER BY 1 LIMIT 2 OFFSET 1");
    assert_eq!(s.grouping, Grouping::Rows);
    assert_eq!(s.outputs, Some(vec![Output::Plain, Output::Plain]));
    assert!(s
        .shard_sql
        .as_deref()
        .unwrap()
        .ends_with("LIMIT 3 OFFSET 0"));
    let s = ok("SELECT count(*) FROM orders o GROUP BY o.user_id");
    assert_eq!(s.grouping, Grouping::Rows);
}

#[test]
fn order_by_a_column_not_selected_is_fetched_hidden() {
    let s =
        ok("SELECT name FROM users u /* from */ WHERE name <> 'FROM' ORDER BY u.id DESC LIMIT 2");
    assert_eq!(s.hidden, 1);
    assert_eq!(s.order, vec![key(1, true, true)]);
    assert_eq!(
        s.shard_sql.as_deref(),
        Some("SELECT name , u.id FROM users u /* from */ WHERE name <> 'FROM' ORDER BY u.id DESC LIMIT 2")
    );
    let s = ok("SELECT * FROM users ORDER BY name");
    assert_eq!(s.outputs, None);
    assert_eq!(s.order[0].column, SortColumn::Named("name".into()));
}

#[test]
fn distinct_is_merged() {
    let s = ok("SELECT DISTINCT name FROM users ORDER BY name LIMIT 4");
    assert_eq!(s.grouping, Grouping::Distinct);
    assert_eq!(s.limit, Some(Bound::Value(4)));
}

#[test]
fn reads_of_keys_on_several_shards_merge_too() {
    let s = ok("SELECT count(*) FROM users WHERE id IN (1, 2, 3)");
    assert_eq!(s.grouping, Grouping::Aggregate);
    let s = ok("SELECT id FROM users WHERE id = ANY($1) ORDER BY id");
    assert_eq!(s.order, vec![key(0, false, false)]);
}

#[test]
fn shapes_whose_merge_could_differ_are_refused() {
    for (sql, why) in [
        (
            "SELECT id, row_number() OVER () FROM users",
            "window functions",
        ),
        ("SELECT count(DISTINCT name) FROM users", "count(DISTINCT"),
        ("SELECT sum(total) * 2 FROM orders", "inside an expression"),
        ("SELECT string_agg(name, ',') FROM users", "string_agg()"),
        ("SELECT DISTINCT ON (name) name FROM users", "DISTINCT ON"),
        ("SELECT id FROM users UNION SELECT 1", "UNION"),
        (
            "SELECT count(*) FROM (SELECT DISTINCT name FROM users) s",
            "subquery or CTE",
        ),
        (
            "WITH x AS (SELECT DISTINCT name FROM users) SELECT count(*) FROM x",
            "subquery or CTE",
        ),
        (
            "SELECT s.n FROM (SELECT count(*) AS n FROM users) s",
            "subquery or CTE",
        ),
        (
            "SELECT name FROM users ORDER BY lower(name)",
            "ORDER BY lower(name)",
        ),
        ("SELECT * FROM users LIMIT 2 + 2", "constant or a parameter"),
        ("SELECT *, count(*) FROM users", "with *"),
        (
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders",
            "percentile_cont",
        ),
    ] {
        let err = refused(sql);
        assert!(err.contains(why), "{sql}: {err}");
    }
    // Subqueries over reference tables are the same on every shard; row-by-row subqueries over
    // sharded tables joined on the key stay on their row's shard.
    ok("SELECT id FROM users WHERE plan IN (SELECT code FROM plans)");
    ok("WITH x AS (SELECT * FROM users WHERE name <> '') SELECT count(*) FROM x");
    ok("SELECT u.id FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id)");
    ok("SELECT u.id, t.n FROM users u, LATERAL (SELECT count(*) AS n FROM orders o WHERE o.user_id = u.id) t");
}

#[test]
fn a_multi_row_insert_splits_into_one_insert_per_shard_with_parameters_renumbered() {
    let sql = "INSERT INTO users (id, name) VALUES ($1, $2), ($3, 'it''s (3)'),\n ($5, $4) ON CONFLICT (id) DO UPDATE SET name = $6 RETURNING id";
    let Plan::Keyed(k) = plan(&hash(), sql) else {
        panic!("keyed")
    };
    let split = (*k.split.expect("a split")).clone().expect("splittable");
    assert_eq!(split.rows(), 3);
    let (text, used) = split.text_for(&[1, 2]);
    assert_eq!(
        text,
        "INSERT INTO users (id, name) VALUES ($1, 'it''s (3)'), ($2, $3) ON CONFLICT (id) DO UPDATE SET name = $4 RETURNING id"
    );
    assert_eq!(used, vec![2, 4, 3, 5]);
    let (text, used) = split.text_for(&[0]);
    assert_eq!(
        text,
        "INSERT INTO users (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = $3 RETURNING id"
    );
    assert_eq!(used, vec![0, 1, 5]);
}
