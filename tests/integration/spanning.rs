//! Transactions that span shards (`cross_shard_writes: allow` with a control database): COMMIT is
//! a two-phase commit over every shard the transaction used (and so is a write without the key), ROLLBACK undoes every part, a shard
//! that cannot prepare rolls back all of them, and in-doubt transactions a crash left behind are
//! resolved from the control database's decisions.

use shardgate::twophase::{self, Coordinator, Recovered};

use crate::harness::{connect, db_error};
use crate::shards::{Shards, ShardsOptions};

const SCHEMA: &str = "CREATE TABLE users (id bigint PRIMARY KEY, name text, balance int NOT NULL DEFAULT 0);\
     CREATE TABLE plans (code text PRIMARY KEY);\
     CREATE TABLE orders (user_id bigint NOT NULL, plan text REFERENCES plans DEFERRABLE INITIALLY DEFERRED);";

async fn two_phase() -> Shards {
    Shards::start(
        ShardsOptions::new(2)
            .schema(SCHEMA)
            .table("users", "id")
            .table("orders", "user_id")
            .two_phase(),
    )
    .await
}

/// One key on each shard.
fn keys(shop: &Shards) -> (i64, i64) {
    let a = shop.keys_on(0).next().unwrap();
    let b = shop.keys_on(1).next().unwrap();
    (a, b)
}

/// Inserts a user through shardgate with a simple query, as psql would.
async fn insert_user(c: &tokio_postgres::Client, id: i64, name: &str) {
    c.batch_execute(&format!(
        "INSERT INTO users (id, name) VALUES ({id}, '{name}')"
    ))
    .await
    .unwrap_or_else(|e| panic!("insert user {id}: {e}"));
}

fn names_on(shop: &Shards, shard: usize) -> String {
    shop.direct(
        shard,
        "SELECT string_agg(id || '=' || name, ',' ORDER BY id) FROM users",
    )
}

/// The error of a deferred foreign key that failed when shard s1 prepared.
fn assert_foreign_key_failed_on_s1(err: &tokio_postgres::Error) {
    let (code, message) = db_error(err);
    assert_eq!(code, "23503");
    assert!(
        message.starts_with(
            "shard \"s1\": insert or update on table \"orders\" violates foreign key constraint"
        ),
        "{message}"
    );
}

fn prepared_left(shop: &Shards) -> String {
    shop.direct(0, "SELECT count(*) FROM pg_prepared_xacts")
}

#[tokio::test]
async fn a_transaction_on_two_shards_commits_on_both() {
    let shop = two_phase().await;
    let (a, b) = keys(&shop);
    let c = shop.connect().await;
    // Simple protocol.
    c.batch_execute("BEGIN").await.unwrap();
    insert_user(&c, a, "a").await;
    insert_user(&c, b, "b").await;
    // Back to the first shard: its backend is still in the transaction.
    c.batch_execute(&format!("UPDATE users SET name = 'a2' WHERE id = {a}"))
        .await
        .unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(names_on(&shop, 0), format!("{a}=a2"));
    assert_eq!(names_on(&shop, 1), format!("{b}=b"));
    // Extended protocol with parameters, as drivers send it.
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    let moved = "UPDATE users SET balance = balance + $2 WHERE id = $1";
    assert_eq!(tx.execute(moved, &[&a, &-5i32]).await.unwrap(), 1);
    assert_eq!(tx.execute(moved, &[&b, &5i32]).await.unwrap(), 1);
    let row = tx
        .query_one("SELECT balance FROM users WHERE id = $1", &[&a])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), -5);
    tx.commit().await.unwrap();
    let balances = |s| shop.direct(s, "SELECT string_agg(balance::text, ',') FROM users");
    assert_eq!((balances(0), balances(1)), ("-5".into(), "5".into()));
    // Nothing left behind: no prepared transactions, no decisions.
    assert_eq!(prepared_left(&shop), "0");
    assert_eq!(
        shop.control("SELECT count(*) FROM shardgate.decided_transactions"),
        "0"
    );
}

#[tokio::test]
async fn a_write_without_the_key_commits_on_every_shard_in_two_phases() {
    let shop = two_phase().await;
    let (a, b) = keys(&shop);
    let c = shop.connect().await;
    let rows = format!("INSERT INTO users (id, name) VALUES ({a}, 'a'), ({b}, 'b')");
    assert_eq!(c.execute(rows.as_str(), &[]).await.unwrap(), 2);
    assert_eq!(
        c.execute("UPDATE users SET balance = 7", &[])
            .await
            .unwrap(),
        2
    );
    for s in 0..2 {
        assert_eq!(
            shop.direct(s, "SELECT string_agg(balance::text, ',') FROM users"),
            "7"
        );
    }
    assert_eq!(prepared_left(&shop), "0");
    assert_eq!(
        shop.control("SELECT count(*) FROM shardgate.decided_transactions"),
        "0"
    );
}

#[tokio::test]
async fn a_rollback_undoes_every_shard_and_a_dropped_client_leaves_nothing() {
    let shop = two_phase().await;
    let (a, b) = keys(&shop);
    let c = shop.connect().await;
    c.batch_execute(&format!(
        "BEGIN; INSERT INTO users (id, name) VALUES ({a}, 'a')"
    ))
    .await
    .unwrap();
    insert_user(&c, b, "b").await;
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        (names_on(&shop, 0), names_on(&shop, 1)),
        (String::new(), String::new())
    );
    assert_eq!(
        c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
    // A client that goes away mid-transaction: each shard rolls its part back, no lock stays.
    c.batch_execute("BEGIN").await.unwrap();
    insert_user(&c, a, "x").await;
    insert_user(&c, b, "y").await;
    drop(c);
    let c = shop.connect().await;
    for key in [a, b] {
        let n = c
            .execute("INSERT INTO users (id, name) VALUES ($1, 'z')", &[&key])
            .await
            .unwrap();
        assert_eq!(n, 1, "key {key} is free again");
    }
}

#[tokio::test]
async fn a_copy_split_over_shards_commits_in_two_phases() {
    let shop = two_phase().await;
    let (a, b) = keys(&shop);
    let c = shop.connect().await;
    shop.direct(0, "INSERT INTO plans VALUES ('basic')");
    shop.direct(1, "INSERT INTO plans VALUES ('basic')");
    let sql = "COPY orders (user_id, plan) FROM STDIN";
    // The deferred foreign key fails only when shard s1 prepares: s0 must not keep its row.
    let bad = format!("{a}\tbasic\n{b}\tmissing\n").into_bytes();
    let err = crate::copy::copy_in(&c, sql, vec![bad]).await.unwrap_err();
    assert_foreign_key_failed_on_s1(&err);
    assert_eq!(shop.direct(0, "SELECT count(*) FROM orders"), "0");
    assert_eq!(shop.direct(1, "SELECT count(*) FROM orders"), "0");
    assert_eq!(prepared_left(&shop), "0");
    let good = format!("{a}\tbasic\n{b}\tbasic\n").into_bytes();
    assert_eq!(crate::copy::copy_in(&c, sql, vec![good]).await.unwrap(), 2);
    assert_eq!(shop.direct(0, "SELECT user_id FROM orders"), a.to_string());
    assert_eq!(shop.direct(1, "SELECT user_id FROM orders"), b.to_string());
    assert_eq!(
        shop.control("SELECT count(*) FROM shardgate.decided_transactions"),
        "0",
        "forgotten once committed everywhere"
    );
}

#[tokio::test]
async fn a_shard_that_cannot_prepare_rolls_back_every_shard() {
    let shop = two_phase().await;
    let (a, b) = keys(&shop);
    let c = shop.connect().await;
    c.batch_execute("BEGIN").await.unwrap();
    insert_user(&c, a, "a").await;
    // The deferred foreign key fails only when shard s1 prepares.
    c.batch_execute(&format!(
        "INSERT INTO orders (user_id, plan) VALUES ({b}, 'missing')"
    ))
    .await
    .unwrap();
    let err = c.batch_execute("COMMIT").await.unwrap_err();
    assert_foreign_key_failed_on_s1(&err);
    let detail = err.as_db_error().unwrap().detail().unwrap_or_default();
    assert!(
        detail.ends_with("No shard committed: the transaction was rolled back on every shard."),
        "{detail}"
    );
    assert_eq!(names_on(&shop, 0), "");
    assert_eq!(shop.direct(1, "SELECT count(*) FROM orders"), "0");
    assert_eq!(prepared_left(&shop), "0");
    // The transaction is over, as after a failed COMMIT in Postgres.
    assert_eq!(
        c.query_one("SELECT 2", &[]).await.unwrap().get::<_, i32>(0),
        2
    );
}

#[tokio::test]
async fn what_cannot_span_shards_is_refused() {
    let shop = two_phase().await;
    let (a, b) = keys(&shop);
    let c = shop.connect().await;
    // A savepoint lives on one shard: the transaction stays there.
    c.batch_execute(&format!(
        "BEGIN; INSERT INTO users (id, name) VALUES ({a}, 'a'); SAVEPOINT s"
    ))
    .await
    .unwrap();
    let err = c
        .batch_execute(&format!("INSERT INTO users (id, name) VALUES ({b}, 'b')"))
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&err),
        (
            "0A000".into(),
            "this transaction runs on shard \"s0\", but the statement needs shard \"s1\"".into()
        )
    );
    let detail = err.as_db_error().unwrap().detail().unwrap_or_default();
    assert_eq!(detail, "The transaction cannot span shards: it has savepoints, and a savepoint lives on one shard.");
    c.batch_execute("ROLLBACK").await.unwrap();
    // Once it spans shards, savepoints are refused.
    c.batch_execute("BEGIN").await.unwrap();
    insert_user(&c, a, "a").await;
    insert_user(&c, b, "b").await;
    let err = c.batch_execute("SAVEPOINT s").await.unwrap_err();
    assert_eq!(
        db_error(&err),
        (
            "0A000".into(),
            "savepoints cannot be used in a transaction that spans several shards".into()
        )
    );
    // The refusal failed the transaction; COMMIT rolls it back, as Postgres does.
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        (names_on(&shop, 0), names_on(&shop, 1)),
        (String::new(), String::new())
    );
}

#[tokio::test]
async fn in_doubt_transactions_are_committed_or_rolled_back_by_the_decision() {
    let shop = two_phase().await;
    let (a, b) = keys(&shop);
    let decided = twophase::new_txid();
    let undecided = twophase::new_txid();
    // What a proxy that crashed between PREPARE and COMMIT PREPARED leaves: prepared
    // transactions on the shards, and a decision for one of them only.
    let control = shardgate::control::ControlDb::new(&shop.config().control.unwrap()).unwrap();
    let coordinator = Coordinator::new(std::sync::Arc::new(control));
    coordinator
        .open(&decided)
        .await
        .unwrap()
        .record()
        .await
        .unwrap();
    for (shard, key, txid) in [
        (0, a, &decided),
        (1, b, &decided),
        (0, a + 1000, &undecided),
    ] {
        let direct = connect(&shop.shard_url(shard)).await;
        let gid = twophase::gid(txid, &format!("s{shard}"));
        direct
            .batch_execute(&format!(
                "BEGIN; INSERT INTO users (id, name) VALUES ({key}, 'p'); PREPARE TRANSACTION '{gid}'"
            ))
            .await
            .unwrap();
    }
    assert_eq!(prepared_left(&shop), "3");
    let done = twophase::recover(&shop.config(), &coordinator).await;
    assert_eq!(
        done,
        Recovered {
            committed: 2,
            rolled_back: 1,
            unchecked: vec![]
        }
    );
    assert_eq!(prepared_left(&shop), "0");
    assert_eq!(names_on(&shop, 0), format!("{a}=p"));
    assert_eq!(names_on(&shop, 1), format!("{b}=p"));
}
