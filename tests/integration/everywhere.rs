//! Statements every shard runs: DDL and writes to reference tables reach all shards, in one
//! transaction per shard that commits only when every shard succeeded; a failure names the shard
//! and says that no shard applied the statement.

use crate::harness::db_error;
use crate::shards::{Shards, ShardsOptions};

async fn three_shards() -> Shards {
    Shards::start(
        ShardsOptions::new(3)
            .buckets(12)
            .schema("CREATE TABLE users (id bigint PRIMARY KEY, name text); CREATE TABLE plans (code text PRIMARY KEY, price int);")
            .table("users", "id")
            .table("events", "user_id")
            .reference_table("plans"),
    )
    .await
}

fn tables_on(shop: &Shards, shard: usize) -> String {
    shop.direct(shard, "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'")
}

#[tokio::test]
async fn ddl_and_reference_writes_reach_every_shard() {
    let shop = three_shards().await;
    let c = shop.connect().await;
    c.batch_execute(
        "CREATE TABLE events (user_id bigint, at timestamptz DEFAULT now(), what text)",
    )
    .await
    .unwrap();
    c.execute("CREATE INDEX events_user ON events (user_id)", &[])
        .await
        .unwrap();
    for s in 0..3 {
        assert_eq!(tables_on(&shop, s), "events,plans,users", "shard {s}");
        assert_eq!(
            shop.direct(
                s,
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'events_user'"
            ),
            "1"
        );
    }
    // A reference-table write: every shard gets the row; the client sees one shard's answer.
    let n = c
        .execute("INSERT INTO plans VALUES ($1, $2)", &[&"pro", &10i32])
        .await
        .unwrap();
    assert_eq!(n, 1);
    let rows = c
        .simple_query("UPDATE plans SET price = price + 1 RETURNING price")
        .await
        .unwrap();
    let tag = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    });
    assert_eq!(tag, Some(1));
    for s in 0..3 {
        assert_eq!(
            shop.direct(s, "SELECT code || '=' || price FROM plans"),
            "pro=11",
            "shard {s}"
        );
    }
    // Reads of the reference table go to one shard and see the row.
    let price: i32 = c
        .query_one("SELECT price FROM plans WHERE code = 'pro'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(price, 11);
    // Statements Postgres refuses in a transaction block run on each shard as they are.
    c.batch_execute("CREATE INDEX CONCURRENTLY events_at ON events (at)")
        .await
        .unwrap();
    for s in 0..3 {
        assert_eq!(
            shop.direct(
                s,
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'events_at'"
            ),
            "1"
        );
    }
}

#[tokio::test]
async fn a_statement_that_fails_on_one_shard_is_applied_on_none() {
    let shop = three_shards().await;
    let c = shop.connect().await;
    // Only shard s1 has the table already: creating it fails there, and must not stay anywhere.
    shop.direct(1, "CREATE TABLE events (user_id bigint)");
    let err = c
        .batch_execute("CREATE TABLE events (user_id bigint, what text)")
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "42P07");
    assert_eq!(
        db.message(),
        "shard \"s1\": relation \"events\" already exists"
    );
    assert_eq!(
        db.detail(),
        Some("No shard applied the statement: it was rolled back on \"s0\", \"s1\", \"s2\".")
    );
    assert_eq!(tables_on(&shop, 0), "plans,users");
    assert_eq!(tables_on(&shop, 2), "plans,users");
    // A reference write that violates a constraint on one shard changes no shard.
    shop.direct(2, "INSERT INTO plans VALUES ('team', 1)");
    let err = c
        .execute("INSERT INTO plans VALUES ('team', 2)", &[])
        .await
        .unwrap_err();
    assert_eq!(db_error(&err).0, "23505");
    for s in [0, 1] {
        assert_eq!(
            shop.direct(s, "SELECT count(*) FROM plans"),
            "0",
            "shard {s}"
        );
    }
    // The connection is fine afterwards, and DDL inside a transaction block is refused clearly.
    c.batch_execute("BEGIN").await.unwrap();
    let err = c.batch_execute("DROP TABLE plans").await.unwrap_err();
    assert_eq!(db_error(&err).0, "0A000");
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(tables_on(&shop, 0), "plans,users");
}

#[tokio::test]
async fn a_multi_row_insert_is_split_per_shard() {
    let shop = three_shards().await;
    let c = shop.connect().await;
    let keys: Vec<i64> = (0..3).map(|s| shop.keys_on(s).next().unwrap()).collect();
    // Simple protocol, literal rows on three shards, RETURNING from all of them as one result.
    let sql = format!(
        "INSERT INTO users (id, name) VALUES ({}, 'a'), ({}, 'b'), ({}, 'c') RETURNING id",
        keys[0], keys[1], keys[2]
    );
    let msgs = c.simple_query(&sql).await.unwrap();
    let mut returned: Vec<i64> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v.parse().unwrap()),
            _ => None,
        })
        .collect();
    returned.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(returned, want);
    assert!(msgs
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::CommandComplete(3))));
    // Extended protocol with parameters (renumbered per shard), and an upsert.
    let more: Vec<i64> = (0..3).map(|s| shop.keys_on(s).nth(1).unwrap()).collect();
    let n = c
        .execute(
            "INSERT INTO users (id, name) VALUES ($1, $4), ($2, $4), ($3, $4), ($5, 'again') ON CONFLICT (id) DO UPDATE SET name = excluded.name",
            &[&more[0], &more[1], &more[2], &"p", &keys[1]],
        )
        .await
        .unwrap();
    assert_eq!(n, 4);
    for s in 0..3 {
        let ids = shop.ids_on(s, "SELECT id FROM users ORDER BY id");
        let mut want = vec![keys[s], more[s]];
        want.sort();
        assert_eq!(ids, want, "shard {s}");
    }
    assert_eq!(
        shop.direct(
            shop.owner(keys[1]),
            &format!("SELECT name FROM users WHERE id = {}", keys[1])
        ),
        "again"
    );
    // A row that fails on one shard leaves every shard unchanged.
    let fresh: Vec<i64> = (0..3).map(|s| shop.keys_on(s).nth(2).unwrap()).collect();
    let err = c
        .execute(
            "INSERT INTO users (id, name) VALUES ($1, 'x'), ($2, 'x'), ($3, 'x')",
            &[&fresh[0], &fresh[1], &keys[2]],
        )
        .await
        .unwrap_err();
    assert_eq!(db_error(&err).0, "23505");
    let total: i64 = (0..3)
        .map(|s| shop.ids_on(s, "SELECT count(*) FROM users")[0])
        .sum();
    assert_eq!(total, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_every_shard_of_a_multi_shard_statement() {
    let shop = three_shards().await;
    let c = shop.connect().await;
    for s in 0..3 {
        let id = shop.keys_on(s).next().unwrap();
        c.batch_execute(&format!("INSERT INTO users (id, name) VALUES ({id}, 'x')"))
            .await
            .unwrap();
    }
    let token = c.cancel_token();
    let started = std::time::Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    // Without the key: every shard sleeps 30 s for its row.
    let sql = "SELECT id FROM users WHERE pg_sleep(30) IS NULL";
    let e = c.simple_query(sql).await.unwrap_err();
    canceller.await.unwrap();
    let (code, message) = db_error(&e);
    assert_eq!(code, "57014", "{message}");
    assert!(
        message.ends_with("canceling statement due to user request"),
        "{message}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // No shard is still sleeping: every backend took the cancel.
    for s in 0..3 {
        assert_eq!(
            shop.direct(
                s,
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND state = 'active' AND pid <> pg_backend_pid()"
            ),
            "0",
            "shard {s}"
        );
    }
}
