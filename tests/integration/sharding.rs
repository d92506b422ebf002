//! Routing against real shards: two databases on one real cluster stand for two shards, so every
//! row's placement can be checked by connecting to each shard directly.

use shardgate::cluster::{Cluster, ClusterOptions, TempDir};
use shardgate::config::Config;
use shardgate::proxy::Proxy;
use shardgate::router::hash::{bucket_of, hash_int};
use tokio_postgres::Client;

use crate::harness::{binaries, connect, db_error, PASSWORD, USER};

const BUCKETS: u32 = 8;
const SCHEMA: &str = "CREATE TABLE users (id bigint PRIMARY KEY, name text);\
    CREATE TABLE orders (id bigserial, user_id bigint NOT NULL, amount int);\
    CREATE TABLE countries (code text PRIMARY KEY, name text);";

struct Sharded {
    proxy: Proxy,
    pg: Cluster,
    _dir: TempDir,
}

impl Sharded {
    async fn start() -> Sharded {
        let (dir, pg) = tokio::task::spawn_blocking(|| {
            let bins = binaries();
            let dir = TempDir::new("sg-test").expect("temp dir");
            let options = ClusterOptions {
                name: "shards".into(),
                ..Default::default()
            };
            let pg = Cluster::start(&bins, dir.path(), options).expect("start postgres");
            pg.create_user(USER, PASSWORD).expect("create user");
            for db in ["app_s0", "app_s1"] {
                pg.create_database(db).expect("create database");
                pg.grant_all(db, USER).expect("grant");
                pg.psql(db, &format!("SET ROLE {USER}; {SCHEMA}"))
                    .expect("schema");
            }
            (dir, pg)
        })
        .await
        .expect("cluster setup");
        let url = |db: &str| format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", pg.port());
        let yaml = format!(
            "listen: 127.0.0.1:0\n\
             admin: {{ listen: 127.0.0.1:0 }}\n\
             users:\n  - {{ name: {USER}, password: {PASSWORD} }}\n\
             pool: {{ mode: transaction, size: 2 }}\n\
             databases:\n  app:\n    shards:\n      s0: {{ primary: \"{}\" }}\n      s1: {{ primary: \"{}\" }}\n    \
             sharding: {{ key_type: bigint, function: hash, buckets: {BUCKETS}, map: [{{ buckets: 0-3, shard: s0 }}, {{ buckets: 4-7, shard: s1 }}] }}\n    \
             tables: {{ users: id, orders: user_id }}\n    \
             reference_tables: [countries]\n    \
             default_shard: s0\n",
            url("app_s0"),
            url("app_s1")
        );
        let config = Config::parse_with_env(&yaml, &|_| None).expect("valid config");
        let proxy = Proxy::start(config).await.expect("start proxy");
        Sharded {
            proxy,
            pg,
            _dir: dir,
        }
    }

    async fn connect(&self) -> Client {
        let port = self.proxy.addr().port();
        connect(&format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/app"
        ))
        .await
    }

    /// The ids of `users` on one shard, read directly.
    fn ids_on(&self, shard: usize) -> Vec<i64> {
        let out = self
            .pg
            .psql(&format!("app_s{shard}"), "SELECT id FROM users ORDER BY id")
            .expect("direct query");
        out.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }
}

fn owner(key: i64) -> usize {
    usize::from(bucket_of(hash_int(key), BUCKETS) >= 4)
}

/// Keys 1..=n split by their owning shard.
fn expected(keys: impl Iterator<Item = i64>) -> [Vec<i64>; 2] {
    let mut by_shard = [Vec::new(), Vec::new()];
    for k in keys {
        by_shard[owner(k)].push(k);
    }
    by_shard
}

#[tokio::test]
async fn rows_land_on_the_shard_that_owns_their_bucket_and_nowhere_else() {
    let env = Sharded::start().await;
    let c = env.connect().await;
    for k in 1..=20i64 {
        c.batch_execute(&format!(
            "INSERT INTO users (id, name) VALUES ({k}, 'literal {k}')"
        ))
        .await
        .unwrap();
    }
    for k in 21..=40i64 {
        c.execute(
            "INSERT INTO users (id, name) VALUES ($1, $2)",
            &[&k, &format!("param {k}")],
        )
        .await
        .unwrap();
    }
    let want = expected(1..=40);
    assert!(
        !want[0].is_empty() && !want[1].is_empty(),
        "both shards get rows"
    );
    assert_eq!(env.ids_on(0), want[0]);
    assert_eq!(env.ids_on(1), want[1]);
    for k in [1i64, 2, 3, 39, 40] {
        let row = c
            .query_one("SELECT name FROM users WHERE id = $1", &[&k])
            .await
            .unwrap();
        let name: String = row.get(0);
        assert!(name.ends_with(&format!(" {k}")), "{name}");
        let simple = c
            .simple_query(&format!("SELECT name FROM users WHERE id = {k}"))
            .await
            .unwrap();
        let rows = simple
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        assert_eq!(rows, 1, "key {k}");
    }
}

#[tokio::test]
async fn a_transaction_is_pinned_to_the_shard_of_its_first_keyed_statement() {
    let env = Sharded::start().await;
    let c = env.connect().await;
    // Both on s1, not the default shard: a BEGIN sent ahead to the default shard would pin the
    // transaction there and the INSERT would be refused.
    let (b, b2) = keys_on(1);
    // BEGIN by the simple protocol, deferred until the INSERT picks shard s1.
    c.batch_execute("BEGIN").await.unwrap();
    c.execute("INSERT INTO users (id, name) VALUES ($1, 'in tx')", &[&b])
        .await
        .unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(env.ids_on(1), vec![b]);
    // BEGIN by the extended protocol (Parse/Bind/Execute), also deferred.
    c.execute("BEGIN", &[]).await.unwrap();
    c.execute(
        "INSERT INTO users (id, name) VALUES ($1, 'extended')",
        &[&b2],
    )
    .await
    .unwrap();
    c.execute("COMMIT", &[]).await.unwrap();
    let mut both = vec![b, b2];
    both.sort();
    assert_eq!(env.ids_on(1), both);
    assert!(env.ids_on(0).is_empty());
    // Transactions with no statement in them still work.
    c.batch_execute("BEGIN; COMMIT").await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn a_second_shard_in_one_transaction_fails_the_transaction_as_postgres_would() {
    let env = Sharded::start().await;
    let c = env.connect().await;
    let (a, b) = (first_key_on(0), first_key_on(1));
    c.batch_execute("BEGIN").await.unwrap();
    c.execute("INSERT INTO users (id, name) VALUES ($1, 'first')", &[&a])
        .await
        .unwrap();
    let err = c
        .execute("INSERT INTO users (id, name) VALUES ($1, 'second')", &[&b])
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&err),
        (
            "0A000".to_string(),
            "this transaction runs on shard \"s0\", but the statement needs shard \"s1\""
                .to_string()
        )
    );
    // The transaction is aborted, exactly as an error inside it would leave it in Postgres.
    let err = c.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(db_error(&err).0, "25P02");
    c.batch_execute("COMMIT").await.unwrap();
    assert!(
        env.ids_on(0).is_empty() && env.ids_on(1).is_empty(),
        "nothing committed"
    );
    // The connection is usable afterwards.
    c.execute("INSERT INTO users (id, name) VALUES ($1, 'after')", &[&b])
        .await
        .unwrap();
    assert_eq!(env.ids_on(1), vec![b]);
}

#[tokio::test]
async fn statements_without_the_key_are_refused_with_a_hint() {
    let env = Sharded::start().await;
    let c = env.connect().await;
    let cases = [
        (
            "UPDATE users SET name = 'x'",
            "UPDATE on sharded table \"users\" must filter on its sharding key \"id\"",
        ),
        (
            "DELETE FROM orders WHERE amount > 3",
            "DELETE on sharded table \"orders\" must filter on its sharding key \"user_id\"",
        ),
        (
            "UPDATE users SET id = 7 WHERE id = 1",
            "cannot change the sharding key \"id\" of table \"users\"",
        ),
        (
            "INSERT INTO users VALUES (DEFAULT, 'no column list')",
            "INSERT into sharded table \"users\" must give its sharding key \"id\" as a literal or a bind parameter in every row",
        ),
        (
            "INSERT INTO orders VALUES (1)",
            "INSERT into sharded table \"orders\" must give its sharding key \"user_id\" a value: the rows give only the first 1 of its columns, and \"user_id\" is column 2",
        ),
    ];
    for (sql, message) in cases {
        let err = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(
            db_error(&err),
            ("0A000".to_string(), message.to_string()),
            "{sql}"
        );
        let hint = err.as_db_error().and_then(|e| e.hint()).unwrap_or("");
        assert!(!hint.is_empty(), "{sql}: a hint says how to fix it");
    }
    // A bad key gets the SQLSTATE Postgres gives the same value: here NULL in a row's key column.
    let insert = "INSERT INTO users (id, name) VALUES ($1, 'x')";
    let err = c.execute(insert, &[&None::<i64>]).await.unwrap_err();
    assert_eq!(
        db_error(&err),
        (
            "23502".into(),
            "the sharding key of \"users\" must not be NULL".into()
        )
    );
    // Still usable, and nothing was written.
    assert_eq!(
        crate::harness::one::<i64>(&c, "SELECT count(*) FROM users WHERE id = 1").await,
        0
    );
}

#[tokio::test]
async fn hints_and_keyless_statements_reach_the_right_shard() {
    let env = Sharded::start().await;
    let c = env.connect().await;
    let b = first_key_on(1);
    c.batch_execute(&format!(
        "/* shardgate: shard=s1 */ INSERT INTO users (id, name) VALUES ({b}, 'hinted')"
    ))
    .await
    .unwrap();
    assert_eq!(env.ids_on(1), vec![b]);
    let on_s1: i64 =
        crate::harness::one(&c, "/* shardgate: shard=s1 */ SELECT count(*) FROM users").await;
    assert_eq!(on_s1, 1);
    // No table: the default shard answers.
    let db: String = crate::harness::one(&c, "SELECT current_database()::text").await;
    assert_eq!(db, "app_s0");
    let err = c
        .batch_execute("/* shardgate: shard=s9 */ SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&err),
        (
            "0A000".to_string(),
            "shardgate hint: no shard named \"s9\" (this database has \"s0\", \"s1\")".to_string()
        )
    );
}

/// `SET shardgate.shard` sends every statement of the session to that shard until it is reset;
/// a shard that does not exist is refused when it is set.
#[tokio::test]
async fn the_session_shard_setting_pins_every_statement() {
    let env = Sharded::start().await;
    let c = env.connect().await;
    for k in [first_key_on(0), first_key_on(1)] {
        let sql = format!("INSERT INTO users (id, name) VALUES ({k}, 'u')");
        c.batch_execute(&sql).await.unwrap();
    }
    let all: i64 = crate::harness::one(&c, "SELECT count(*) FROM users").await;
    assert_eq!(all, 2, "both shards, merged");
    c.batch_execute("SET shardgate.shard = 's1'").await.unwrap();
    let db: String = crate::harness::one(&c, "SELECT current_database()::text").await;
    assert_eq!(db, "app_s1");
    let shown: String = crate::harness::one(&c, "SHOW shardgate.shard").await;
    assert_eq!(shown, "s1");
    let err = c
        .batch_execute("SET shardgate.shard = 's9'")
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&err),
        (
            "22023".to_string(),
            "invalid value for parameter \"shardgate.shard\": \"s9\"".to_string()
        )
    );
    // Still s1 (the refused SET changed nothing), also for a keyless read of a sharded table.
    let pinned: i64 = crate::harness::one(&c, "SELECT count(*) FROM users").await;
    assert_eq!(pinned, 1, "s1's row only");
    c.batch_execute("RESET shardgate.shard").await.unwrap();
    let db: String = crate::harness::one(&c, "SELECT current_database()::text").await;
    assert_eq!(db, "app_s0", "the default shard again");
}

/// The two smallest positive keys owned by `shard`.
fn keys_on(shard: usize) -> (i64, i64) {
    let mut keys = (1..).filter(|&k| owner(k) == shard);
    (
        keys.next().expect("a key"),
        keys.next().expect("a second key"),
    )
}

/// The smallest positive key owned by `shard`.
fn first_key_on(shard: usize) -> i64 {
    (1..).find(|&k| owner(k) == shard).expect("some key")
}
