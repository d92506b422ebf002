//! Differential test of multi-shard reads: the same data in 3 shards behind shardgate and in one
//! plain database; every query must return exactly the same rows (in the same order when it has an
//! ORDER BY; as a multiset otherwise) through shardgate as directly — in the simple protocol (text
//! values) and the extended protocol with bind parameters (binary values, compared byte for byte).

use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::{connect, db_error};
use crate::shards::{Shards, ShardsOptions};

const SCHEMA: &str = "CREATE TABLE users (id bigint PRIMARY KEY, name text, plan text, score int, balance numeric(12,2), created date);\
    CREATE TABLE orders (id bigint, user_id bigint NOT NULL, total numeric(10,2), status text, qty int, PRIMARY KEY (user_id, id));\
    CREATE TABLE plans (code text PRIMARY KEY, price numeric);\
    INSERT INTO plans VALUES ('free', 0), ('pro', 9.5), ('team', 29);";

const USERS: i64 = 120;

/// Raw column bytes of any type, so binary values can be compared exactly.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Three shards (users and orders by user id, plans on every shard) and a plain twin database.
async fn shop() -> Shards {
    Shards::start(
        ShardsOptions::new(3)
            .buckets(12)
            .schema(SCHEMA)
            .table("users", "id")
            .table("orders", "user_id")
            .reference_table("plans"),
    )
    .await
}

/// The same rows loaded through shardgate and into the plain twin: (plain, proxy) clients.
async fn loaded(shop: &Shards) -> (Client, Client) {
    let plain = connect(&shop.plain_database("plain")).await;
    let proxy = shop.connect().await;
    load(&proxy).await;
    load(&plain).await;
    (plain, proxy)
}

async fn load(c: &Client) {
    let plans = ["free", "pro", "team"];
    let statuses = ["new", "paid", "shipped", "void"];
    for id in 1..=USERS {
        let score = (id % 7 != 0).then_some(((id * 37) % 101) as i32);
        let created = (id % 11 != 0).then(|| format!("2024-{:02}-{:02}", 1 + id % 12, 1 + id % 28));
        c.execute(
            "INSERT INTO users (id, name, plan, score, balance, created) VALUES ($1, $2, $3, $4, ($5::text)::numeric, $6::text::date)",
            &[&id, &format!("user {:03}", (id * 13) % 97), &plans[(id % 3) as usize], &score, &format!("{}.{:02}", id * 17 % 1000, id % 100), &created],
        )
        .await
        .unwrap();
        for n in 0..(id % 4) {
            c.execute(
                "INSERT INTO orders (id, user_id, total, status, qty) VALUES ($1, $2, ($3::text)::numeric, $4, $5)",
                &[&(id * 10 + n), &id, &format!("{}.{:02}", (id * 7 + n * 3) % 300, (id + n) % 100), &statuses[((id + n) % 4) as usize], &(((id + n) % 5) as i32)],
            )
            .await
            .unwrap();
        }
    }
}

/// A query's rows as text through the simple protocol (`None`: NULL).
async fn simple(c: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    let mut rows = Vec::new();
    for m in c.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(r) = m {
            rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
        }
    }
    Ok(rows)
}

async fn extended(
    c: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Vec<Option<Raw>>>, tokio_postgres::Error> {
    let rows = c.query(sql, params).await?;
    Ok(rows
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get::<_, Option<Raw>>(i)).collect())
        .collect())
}

/// A failure's SQLSTATE and message, for assertion messages.
fn why(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(
        || e.to_string(),
        |d| format!("{}: {}", d.code().code(), d.message()),
    )
}

fn ordered(sql: &str) -> bool {
    sql.to_ascii_uppercase().contains("ORDER BY")
}

fn same<T: Ord + std::fmt::Debug + Clone>(sql: &str, mut got: Vec<T>, mut want: Vec<T>) {
    if !ordered(sql) {
        got.sort();
        want.sort();
    }
    assert_eq!(got, want, "{sql}");
}

const QUERIES: &[&str] = &[
    "SELECT count(*) FROM users",
    "SELECT count(*), count(score), sum(score), min(score), max(score), avg(score) FROM users",
    "SELECT sum(balance), avg(balance), min(name), max(created), min(created) FROM users",
    "SELECT plan, count(*), sum(score), avg(balance) FROM users GROUP BY plan ORDER BY plan",
    "SELECT status, count(*), avg(total), sum(qty), avg(qty) FROM orders GROUP BY status ORDER BY 2 DESC, 1",
    "SELECT DISTINCT plan FROM users ORDER BY plan DESC",
    "SELECT DISTINCT status, qty FROM orders",
    "SELECT id, name FROM users ORDER BY score DESC NULLS LAST, id LIMIT 7 OFFSET 5",
    "SELECT id, score FROM users ORDER BY score NULLS FIRST, id DESC LIMIT 12",
    "SELECT name FROM users ORDER BY id DESC LIMIT 3",
    "SELECT * FROM users ORDER BY id LIMIT 10 OFFSET 100",
    "SELECT id, name FROM users WHERE id IN (1, 2, 3, 5, 8, 13, 21, 34) ORDER BY id",
    "SELECT u.id, count(o.id) AS n FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.id ORDER BY n DESC, u.id LIMIT 20",
    "SELECT user_id, sum(total) FROM orders GROUP BY user_id HAVING sum(total) > 300 ORDER BY 2 DESC, 1 LIMIT 5",
    "SELECT count(*) FROM orders WHERE status = 'paid'",
    "SELECT name, created FROM users WHERE score > 50",
    "SELECT count(*), sum(score), avg(score), min(name) FROM users WHERE name LIKE 'nobody%'",
    "SELECT plan, count(*) FROM users WHERE false GROUP BY plan",
    "SELECT u.plan, p.price, count(*) FROM users u JOIN plans p ON p.code = u.plan GROUP BY u.plan, p.price ORDER BY 1",
    "SELECT created, count(*) FROM users GROUP BY created ORDER BY created DESC NULLS LAST LIMIT 5",
    "SELECT o.status, max(o.total) FROM orders o JOIN users u ON u.id = o.user_id WHERE u.plan = 'pro' GROUP BY o.status ORDER BY o.status",
    "SELECT id FROM users WHERE plan IN (SELECT code FROM plans WHERE price > 1) ORDER BY balance DESC, id LIMIT 4",
    "SELECT balance FROM users ORDER BY balance LIMIT 3 OFFSET 2",
];

#[tokio::test]
async fn multi_shard_reads_answer_exactly_what_one_server_does() {
    let shop = shop().await;
    let (plain, proxy) = loaded(&shop).await;
    for s in 0..3 {
        let n: i64 = shop
            .direct(s, "SELECT count(*) FROM users")
            .trim()
            .parse()
            .unwrap();
        assert!(
            n > 10,
            "shard {s} holds {n} users: the data must span every shard"
        );
    }
    for sql in QUERIES.iter() {
        let want = simple(&plain, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} directly: {e}"));
        let got = simple(&proxy, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} through shardgate: {}", why(&e)));
        same(sql, got, want);
        let want = extended(&plain, sql, &[]).await.unwrap();
        let got = extended(&proxy, sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql} (extended) through shardgate: {}", why(&e)));
        same(sql, got, want);
    }
}

#[tokio::test]
async fn multi_shard_reads_take_bind_parameters() {
    let shop = shop().await;
    let (plain, proxy) = loaded(&shop).await;
    let ids: Vec<i64> = vec![3, 4, 17, 40, 77, 99, 118];
    let cases: Vec<(&str, Vec<&(dyn ToSql + Sync)>)> = vec![
        ("SELECT id, name FROM users WHERE score > $1 ORDER BY id LIMIT $2 OFFSET $3", vec![&20i32, &5i64, &3i64]),
        ("SELECT max(total), min(total), count(*) FROM orders WHERE user_id = ANY($1)", vec![&ids]),
        ("SELECT user_id, sum(qty) FROM orders WHERE user_id = ANY($1) GROUP BY user_id ORDER BY 1", vec![&ids]),
        ("SELECT plan, avg(score) FROM users WHERE balance > $1::int4 GROUP BY plan ORDER BY plan", vec![&100i32]),
    ];
    for (sql, params) in cases.iter() {
        let want = extended(&plain, sql, params).await.unwrap();
        let got = extended(&proxy, sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql} through shardgate: {}", why(&e)));
        same(sql, got, want);
        // Prepared once, run with other values: the plan is kept, the parameters change.
        let stmt = proxy.prepare(sql).await.unwrap();
        let again = proxy.query(&stmt, params).await.unwrap();
        assert_eq!(again.len(), want_len(&plain, sql, params).await, "{sql}");
    }
    // LIMIT/OFFSET bounds checked as Postgres does.
    let err = proxy
        .query(
            "SELECT id FROM users ORDER BY id LIMIT $1 OFFSET $2",
            &[&5i64, &-1i64],
        )
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&err),
        ("2201X".into(), "OFFSET must not be negative".into())
    );
}

async fn want_len(c: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> usize {
    c.query(sql, params).await.unwrap().len()
}

#[tokio::test]
async fn reads_that_cannot_be_merged_are_refused_with_the_reason() {
    let shop = shop().await;
    let c = shop.connect().await;
    for (sql, message) in [
        (
            "SELECT id, rank() OVER (ORDER BY score) FROM users",
            "window functions over rows of several shards cannot be merged",
        ),
        (
            "SELECT count(DISTINCT plan) FROM users",
            "count(DISTINCT …) across shards cannot be merged",
        ),
        (
            "SELECT plan, count(*) FROM users GROUP BY plan HAVING count(*) > 1",
            "HAVING over groups that span shards cannot be evaluated by shardgate",
        ),
        (
            "SELECT sum(score) + 1 FROM users",
            "the aggregate sum() inside an expression over several shards cannot be merged",
        ),
    ] {
        let err = c.simple_query(sql).await.unwrap_err();
        let db = err.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "0A000", "{sql}");
        assert_eq!(db.message(), message, "{sql}");
        assert!(db.hint().is_some(), "{sql}");
    }
    // Inside a transaction a multi-shard read is refused, and the transaction fails as in Postgres.
    c.batch_execute("BEGIN").await.unwrap();
    let err = c
        .simple_query("SELECT count(*) FROM users")
        .await
        .unwrap_err();
    assert_eq!(db_error(&err).0, "0A000");
    assert!(
        db_error(&err)
            .1
            .contains("run only outside transaction blocks"),
        "{}",
        db_error(&err).1
    );
    let err = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(db_error(&err).0, "25P02");
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        simple(&c, "SELECT count(*) FROM users").await.unwrap(),
        vec![vec![Some("0".to_string())]]
    );
}
