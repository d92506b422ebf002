//! INSERT without a column list: routed by the columns read from the shards, which are listed in
//! the text the shards get.

use std::sync::Arc;

use super::support::*;
use crate::router::{Plan, RouteError};
use crate::topology::columns::{Columns, TableColumns};

/// [`HASH`] knowing `users (tenant, id, name)` (the key second) and `orders (user_id, total)`.
fn knowing() -> crate::router::Router {
    let known = |cols: &[&str]| TableColumns::Known(cols.iter().map(|&c| Arc::from(c)).collect());
    let columns: Columns = [
        ("users".to_string(), known(&["tenant", "id", "name"])),
        ("orders".to_string(), known(&["user_id", "total"])),
        (
            "order_items".to_string(),
            TableColumns::Unknown("shard \"s1\" has no table \"order_items\"".into()),
        ),
    ]
    .into_iter()
    .collect();
    router_with_columns(HASH, Some(columns))
}

fn listed(sql: &str) -> String {
    match plan(&knowing(), sql) {
        Plan::ListColumns(text) => text.to_string(),
        other => panic!("{sql}: not listed but {other:?}"),
    }
}

#[test]
fn the_columns_are_listed_in_the_text_the_shards_get() {
    for (sql, want) in [
        (
            "INSERT INTO users VALUES (7, 42, 'x')",
            r#"INSERT INTO users ("tenant", "id", "name") VALUES (7, 42, 'x')"#,
        ),
        // Only as many columns as the rows give, as Postgres fills them.
        (
            "insert into public.users values ($1, $2) returning id",
            r#"insert into public.users ("tenant", "id") values ($1, $2) returning id"#,
        ),
        (
            "INSERT INTO users AS u VALUES (1, 2, 'y') ON CONFLICT (id) DO UPDATE SET name = 'values'",
            r#"INSERT INTO users AS u ("tenant", "id", "name") VALUES (1, 2, 'y') ON CONFLICT (id) DO UPDATE SET name = 'values'"#,
        ),
        (
            "BEGIN; INSERT INTO orders VALUES (5, 1.5); COMMIT",
            r#"BEGIN; INSERT INTO orders ("user_id", "total") VALUES (5, 1.5); COMMIT"#,
        ),
    ] {
        assert_eq!(listed(sql), want, "{sql}");
    }
}

#[test]
fn a_listed_insert_goes_where_its_key_column_value_belongs() {
    let r = knowing();
    for k in [key_on(0), key_on(1), key_on(2)] {
        let sql = format!("INSERT INTO users VALUES (999, {k}, 'x')");
        assert_eq!(simple(&r, &sql), one(owner(k)), "{sql}");
        let ext_sql = "INSERT INTO users VALUES ($1, $2, $3)";
        assert_eq!(
            ext(&r, ext_sql, &[t(999), t(k), t("x")]),
            one(owner(k)),
            "key {k} in the second parameter"
        );
    }
    // Several rows for several shards are split, as with a column list.
    let (a, b) = (key_on(0), key_on(1));
    let sql = format!("INSERT INTO users VALUES (1, {a}, 'a'), (1, {b}, 'b')");
    assert_eq!(simple(&r, &sql), Ok(owners(&[a, b])));
}

#[test]
fn an_insert_that_cannot_be_listed_says_why() {
    let r = knowing();
    for (sql, why) in [
        (
            "INSERT INTO users VALUES (1)",
            "a value: the rows give only the first 1 of its columns, and \"id\" is column 2",
        ),
        (
            "INSERT INTO order_items VALUES (1, 2)",
            "in an explicit column list: shardgate does not know the table's column order (shard \"s1\" has no table \"order_items\")",
        ),
    ] {
        match rejected(&r, sql) {
            RouteError::InsertKey { why: got, .. } => assert_eq!(got, why, "{sql}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
    // Tables that are not sharded, and INSERTs with a column list, are left as written.
    for sql in [
        "INSERT INTO countries VALUES ('fr', 'France')",
        "INSERT INTO users (id, name) VALUES (1, 'x')",
        "INSERT INTO users SELECT * FROM users WHERE id = 1",
    ] {
        assert!(
            !matches!(plan(&r, sql), Plan::ListColumns(_)),
            "{sql} is planned as written"
        );
    }
}
