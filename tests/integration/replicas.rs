//! Reads on replicas (issue 5) against a real primary and streaming replica: which server
//! answered is asked of Postgres itself (`inet_server_port()` in the statement, and the
//! replica's `pg_stat_database` commits), never taken from shardgate.

use std::time::{Duration, Instant};

use shardgate::cluster::StopMode;
use shardgate::health::Role;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::{connect, db_error, PASSWORD, USER};
use crate::health::{up_as, Pair};

/// Reads may use the replica at any lag; read-your-writes off unless a test turns it on.
const ROUTING: &str =
    "{ read_replicas: true, max_replica_lag_ms: 600000, read_your_writes: false }";

async fn pair(routing: &str) -> Pair {
    let pair = Pair::start_with(routing).await;
    pair.until("both servers up, the replica usable", |s| {
        up_as(&s.servers[0], Role::Primary)
            && up_as(&s.servers[1], Role::Replica)
            && s.usable_replicas(u64::MAX).count() == 1
    })
    .await;
    pair.primary
        .psql("app", &format!("CREATE TABLE t (x int); GRANT ALL ON t TO {USER}; CREATE SEQUENCE s; GRANT ALL ON s TO {USER}"))
        .unwrap();
    on_replica_until(
        &pair,
        "SELECT count(*) FROM pg_class WHERE relname = 't'",
        "1",
    )
    .await;
    pair
}

async fn client(pair: &Pair) -> Client {
    connect(&format!(
        "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/app",
        pair.proxy.addr().port()
    ))
    .await
}

/// Polls the replica directly until `sql` returns `want`.
async fn on_replica_until(pair: &Pair, sql: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pair.replica.psql("app", sql).ok().as_deref() != Some(want) {
        assert!(
            Instant::now() < deadline,
            "the replica never got to {sql} = {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Which server of `pair` has `port`: "primary" or "replica".
fn role_of(pair: &Pair, port: u16) -> &'static str {
    if port == pair.primary.port() {
        "primary"
    } else if port == pair.replica.port() {
        "replica"
    } else {
        "neither"
    }
}

/// Which server of `pair` answered `sql`, whose first column is `inet_server_port()`.
async fn who(pair: &Pair, c: &Client, sql: &str) -> &'static str {
    role_of(pair, answered_by(c, sql).await.0)
}

/// The port of the server that answered a simple query whose first column is
/// `inet_server_port()` (and the row's other columns).
async fn answered_by(c: &Client, sql: &str) -> (u16, Vec<String>) {
    let rows = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let row = rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"));
    let port = row.get(0).unwrap().parse().unwrap();
    let rest = (1..row.len())
        .map(|i| row.get(i).unwrap_or("").to_string())
        .collect();
    (port, rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_reads_go_to_the_replica_and_everything_else_to_the_primary() {
    let pair = pair(ROUTING).await;
    let c = client(&pair).await;
    let on = |port: u16| role_of(&pair, port);
    let cases = [
        (
            "INSERT INTO t VALUES (2) RETURNING inet_server_port()",
            "primary",
        ),
        ("SELECT inet_server_port()", "replica"),
        ("SELECT inet_server_port(), count(*) FROM t", "replica"),
        (
            "WITH c AS (SELECT count(*) FROM t) SELECT inet_server_port() FROM c",
            "replica",
        ),
        ("SELECT inet_server_port(), nextval('s')", "primary"),
        ("SELECT inet_server_port() FROM t FOR UPDATE", "primary"),
        (
            "SELECT inet_server_port(), pg_try_advisory_xact_lock(1)",
            "primary",
        ),
        (
            "WITH w AS (INSERT INTO t VALUES (1) RETURNING x) SELECT inet_server_port() FROM w",
            "primary",
        ),
        // sqlparser cannot read it: never a replica.
        (
            "SELECT inet_server_port() FROM ROWS FROM (generate_series(1, 1)) AS g",
            "primary",
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(who(&pair, &c, sql).await, want, "{sql}");
    }
    // Extended protocol: the unnamed statement and a named one, with a parameter.
    let row = c
        .query_one("SELECT inet_server_port(), $1::int", &[&7])
        .await
        .unwrap();
    assert_eq!(on(row.get::<_, i32>(0) as u16), "replica");
    let named = c
        .prepare("SELECT inet_server_port() + $1::int")
        .await
        .unwrap();
    assert_eq!(
        on(c.query_one(&named, &[&0]).await.unwrap().get::<_, i32>(0) as u16),
        "replica"
    );
    // Transactions: read-write ones stay on the primary, READ ONLY ones may take the replica.
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(who(&pair, &c, "SELECT inet_server_port()").await, "primary");
    c.batch_execute("COMMIT").await.unwrap();
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert_eq!(who(&pair, &c, "SELECT inet_server_port()").await, "replica");
    assert_eq!(
        who(&pair, &c, "SELECT inet_server_port(), 2").await,
        "replica"
    );
    let refused = c
        .batch_execute("INSERT INTO t VALUES (3)")
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&refused).0,
        "25006",
        "as Postgres refuses it: {refused}"
    );
    c.batch_execute("ROLLBACK").await.unwrap();
    // The session's override, refused when it is misspelt.
    c.batch_execute("SET shardgate.target_role = 'primary'")
        .await
        .unwrap();
    assert_eq!(who(&pair, &c, "SELECT inet_server_port()").await, "primary");
    let bad = c
        .batch_execute("SET shardgate.target_role = 'replicas'")
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&bad),
        (
            "22023".into(),
            "invalid value for parameter \"shardgate.target_role\": \"replicas\"".into()
        )
    );
    c.batch_execute("SET shardgate.target_role = auto")
        .await
        .unwrap();
    assert_eq!(who(&pair, &c, "SELECT inet_server_port()").await, "replica");
    // The replica's own statistics agree: it committed the reads sent to it.
    let commits = "SELECT xact_commit FROM pg_stat_database WHERE datname = 'app'";
    let before: u64 = pair.replica.psql("app", commits).unwrap().parse().unwrap();
    for _ in 0..20 {
        c.simple_query("SELECT count(*) FROM t").await.unwrap();
    }
    // Statistics are flushed when a backend goes idle, at most once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now: u64 = pair.replica.psql("app", commits).unwrap().parse().unwrap();
        if now >= before + 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica commits {before} → {now}, want +20"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the metrics count them as the replica's.
    let m = crate::metrics::Scraped::at(pair.proxy.admin_addr()).await;
    let selects = |role| {
        m.value(
            "shardgate_queries_total",
            &[("role", role), ("kind", "select")],
        )
    };
    assert!(selects("replica") >= 20.0, "{}", selects("replica"));
    assert!(selects("primary") >= 1.0);
}

/// Read-your-writes: 1,000 rounds of a write then a read of it through shardgate, half with
/// replication running and half with replay paused. Every read sees its write; while the
/// replica has not replayed a write, the read after it goes to the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_never_returns_a_stale_read() {
    let ryw = "{ read_replicas: true, max_replica_lag_ms: 600000, read_your_writes: true }";
    let pair = pair(ryw).await;
    let c = client(&pair).await;
    let insert = c.prepare("INSERT INTO t VALUES ($1)").await.unwrap();
    let mut on_replica = 0;
    for round in 1..=1000i32 {
        if round == 501 {
            pair.replica
                .psql("app", "SELECT pg_wal_replay_pause()")
                .unwrap();
        }
        c.execute(&insert, &[&round]).await.unwrap();
        let sql = format!("SELECT inet_server_port(), count(*) FROM t WHERE x = {round}");
        let (port, rest) = answered_by(&c, &sql).await;
        assert_eq!(
            rest,
            ["1"],
            "round {round}: the read missed its write (port {port})"
        );
        if port == pair.replica.port() {
            on_replica += 1;
            assert!(round <= 500, "round {round}: a paused replica answered");
        }
    }
    // Another session that wrote nothing may read the (stale) replica.
    let other = client(&pair).await;
    let (port, _) = answered_by(&other, "SELECT inet_server_port(), 1").await;
    assert_eq!(port, pair.replica.port());
    pair.replica
        .psql("app", "SELECT pg_wal_replay_resume()")
        .unwrap();
    on_replica_until(&pair, "SELECT count(*) FROM t", "1000").await;
    // Once the checks see the replay, this session's reads return to the replica.
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered_by(&c, "SELECT inet_server_port(), 1").await.0 != pair.replica.port() {
        assert!(
            Instant::now() < deadline,
            "reads never came back to the replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("read-your-writes: {on_replica} of the first 500 reads were answered by the replica");
}

/// A replica over `max_replica_lag_ms` gets no reads until it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_gets_no_reads_until_it_catches_up() {
    let pair =
        pair("{ read_replicas: true, max_replica_lag_ms: 300, read_your_writes: false }").await;
    let c = client(&pair).await;
    let read = "SELECT inet_server_port(), 1";
    assert_eq!(answered_by(&c, read).await.0, pair.replica.port());
    pair.replica
        .psql("app", "SELECT pg_wal_replay_pause()")
        .unwrap();
    pair.primary
        .psql("app", "INSERT INTO t VALUES (1)")
        .unwrap();
    pair.until("the replica over the lag limit", |s| {
        s.usable_replicas(300).count() == 0
    })
    .await;
    for _ in 0..50 {
        assert_eq!(answered_by(&c, read).await.0, pair.primary.port());
    }
    pair.replica
        .psql("app", "SELECT pg_wal_replay_resume()")
        .unwrap();
    pair.until("the replica usable again", |s| {
        s.usable_replicas(300).count() == 1
    })
    .await;
    assert_eq!(answered_by(&c, read).await.0, pair.replica.port());
}

/// A replica that goes down is banned and its reads go to the primary, with no client errors;
/// once it is back, reads return to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fall_back_to_the_primary_while_the_replica_is_down() {
    let mut pair = pair(ROUTING).await;
    let c = client(&pair).await;
    let read = "SELECT inet_server_port(), 1";
    assert_eq!(answered_by(&c, read).await.0, pair.replica.port());
    pair.replica.stop(StopMode::Fast).unwrap();
    // Reads right after the stop, before and after the checks ban it: none fails.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(answered_by(&c, read).await.0, pair.primary.port());
    }
    pair.until("the replica banned", |s| {
        s.usable_replicas(u64::MAX).count() == 0
    })
    .await;
    pair.replica.restart().unwrap();
    pair.until("the replica back", |s| {
        s.usable_replicas(u64::MAX).count() == 1
    })
    .await;
    assert_eq!(answered_by(&c, read).await.0, pair.replica.port());
}

/// `POST /v1/databases/app/shards/s0/promote` with synchronous replication and writers running
/// throughout: every write acknowledged before the promotion is on the promoted server, writes
/// succeed there again right after, and none reaches the old primary once it is demoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_promote_loses_no_acknowledged_write() {
    let pair = pair(ROUTING).await;
    let grant = format!("GRANT EXECUTE ON FUNCTION pg_catalog.pg_promote TO {USER}");
    pair.primary.psql("app", &grant).unwrap();
    pair.primary
        .psql("app", "ALTER SYSTEM SET synchronous_standby_names = '*'")
        .unwrap();
    pair.primary.psql("app", "SELECT pg_reload_conf()").unwrap();
    let sync = "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'";
    let deadline = Instant::now() + Duration::from_secs(20);
    while pair.primary.psql("app", sync).unwrap() != "1" {
        assert!(
            Instant::now() < deadline,
            "the replica never became synchronous"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!(
        "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/app",
        pair.proxy.addr().port()
    );
    // Two writers, each acknowledging its own ids; failures during the switch are retried.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2i32)
        .map(|w| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let c = connect(&url).await;
                let (mut acked, mut failed, mut id) = (Vec::new(), 0u32, w * 1_000_000);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    id += 1;
                    match c.execute("INSERT INTO t VALUES ($1)", &[&id]).await {
                        Ok(_) => acked.push(id),
                        Err(e) => {
                            assert_eq!(db_error(&e).0, "08006", "a clean, retryable error: {e}");
                            failed += 1;
                        }
                    }
                }
                (acked, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let answer = crate::admin_api::post(
        pair.proxy.admin_addr(),
        "/v1/databases/app/shards/s0/promote",
        "{\"timeout_ms\": 10000}",
    )
    .await;
    let took = started.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.json());
    let json = answer.json();
    assert_eq!(
        json["primary"],
        format!("127.0.0.1:{}", pair.replica.port())
    );
    assert_eq!(
        json["old_primary"],
        format!("127.0.0.1:{}", pair.primary.port())
    );
    // Writes after the promotion land on the promoted server, and go on.
    let after = connect(&url).await;
    let (port,): (i32,) = {
        let row = after
            .query_one(
                "INSERT INTO t VALUES (-1) RETURNING inet_server_port()",
                &[],
            )
            .await
            .unwrap();
        (row.get(0),)
    };
    assert_eq!(port as u16, pair.replica.port());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut failed = 0;
    for w in writers {
        let (a, f) = w.await.unwrap();
        acked.extend(a);
        failed += f;
    }
    let on_new: std::collections::HashSet<i32> = pair
        .replica
        .psql("app", "SELECT x FROM t")
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let missing: Vec<&i32> = acked.iter().filter(|id| !on_new.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but missing after the promotion: {missing:?}"
    );
    assert!(
        acked.len() > 100,
        "the writers made progress: {}",
        acked.len()
    );
    let on_old: u64 = pair
        .primary
        .psql("app", "SELECT count(*) FROM t")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        on_old < on_new.len() as u64,
        "the old primary took no write after the promotion ({on_old} rows, {} on the new)",
        on_new.len()
    );
    eprintln!(
        "promote took {took:?}; {} writes acknowledged, {failed} refused with 08006 during the switch",
        acked.len()
    );
}

/// A client that stays idle across a reload does not keep the replaced topology alive: once the
/// client that used a removed replica moves on, shardgate's connections to the replica close,
/// though another client connected before the reload has not run anything since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_keeps_no_connection_to_a_removed_replica_open() {
    let pair = pair(ROUTING).await;
    let idle = client(&pair).await;
    let read = "SELECT inet_server_port()";
    assert_eq!(answered_by(&idle, read).await.0, pair.replica.port());
    let c = client(&pair).await;
    assert_eq!(answered_by(&c, read).await.0, pair.replica.port());
    pair.reload(false);
    assert_eq!(answered_by(&c, read).await.0, pair.primary.port());
    let ours = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{USER}' AND pid <> pg_backend_pid()"
    );
    on_replica_until(&pair, &ours, "0").await;
    assert_eq!(answered_by(&idle, read).await.0, pair.primary.port());
}

/// A reload that removes a replica drains it, never cuts it: a transaction open on it finishes
/// there, later reads go to the primary, and shardgate's connections to it close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_replica_is_drained_not_cut() {
    let pair = pair(ROUTING).await;
    let c = client(&pair).await;
    let replica = pair.replica.port();
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert_eq!(
        answered_by(&c, "SELECT inet_server_port()").await.0,
        replica
    );
    pair.reload(false);
    assert_eq!(
        answered_by(&c, "SELECT inet_server_port(), 2").await.0,
        replica,
        "the open transaction goes on where it started"
    );
    c.batch_execute("COMMIT").await.unwrap();
    let read = "SELECT inet_server_port()";
    assert_eq!(answered_by(&c, read).await.0, pair.primary.port());
    let ours = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{USER}' AND pid <> pg_backend_pid()"
    );
    on_replica_until(&pair, &ours, "0").await;
}
