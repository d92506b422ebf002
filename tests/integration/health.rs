//! Background health checks against a real primary and a real streaming replica: roles, lag
//! while replay is paused, a ban while the replica is down and recovery after, and the shard's
//! writable primary following a promotion. Asserted through `GET /v1/databases` and the
//! proxy's own report, polled against deadlines.

use std::time::{Duration, Instant};

use serde_json::Value;
use shardgate::cluster::{Cluster, ClusterOptions, StopMode, TempDir};
use shardgate::config::Config;
use shardgate::health::{Lag, Role, ServerHealth, ServerState, ShardHealth};
use shardgate::proxy::Proxy;

use crate::admin_api::{get, TOKEN};
use crate::harness::{binaries, connect, db_error, PASSWORD, USER};

/// A proxy in front of one shard: a primary and its streaming replica, checked every 100 ms.
pub(crate) struct Pair {
    pub proxy: Proxy,
    // Field order is drop order: the replica stops before its primary, both before the dir.
    pub replica: Cluster,
    pub primary: Cluster,
    _dir: TempDir,
    /// The database's `routing:` line (YAML flow map), or empty.
    routing: String,
}

impl Pair {
    async fn start() -> Pair {
        Pair::start_with("").await
    }

    /// With `routing` as the database's `routing:` (a YAML flow map; empty for none).
    pub async fn start_with(routing: &str) -> Pair {
        let (dir, primary, replica) = tokio::task::spawn_blocking(|| {
            let bins = binaries();
            let dir = TempDir::new("sg-health").expect("temp dir");
            let opts = ClusterOptions {
                name: "primary".into(),
                ..Default::default()
            };
            let primary = Cluster::start(&bins, dir.path(), opts).expect("start primary");
            primary.create_user(USER, PASSWORD).expect("create user");
            primary.create_database("app").expect("create database");
            primary.grant_all("app", USER).expect("grant");
            let replica = primary.start_replica("replica").expect("start replica");
            (dir, primary, replica)
        })
        .await
        .expect("cluster setup");
        let text = yaml(&primary, Some(&replica), routing);
        let config = Config::parse_with_env(&text, &|_| None).expect("valid test config");
        let proxy = Proxy::start(config).await.expect("start proxy");
        Pair {
            proxy,
            replica,
            primary,
            _dir: dir,
            routing: routing.to_string(),
        }
    }

    /// Reloads from a file that names the replica or not.
    pub fn reload(&self, with_replica: bool) {
        let path = self._dir.path().join("shardgate.yaml");
        let replica = with_replica.then_some(&self.replica);
        let text = yaml(&self.primary, replica, &self.routing);
        std::fs::write(&path, text).expect("write config");
        self.proxy.reload_from(&path).expect("reload");
    }

    /// The health checker's connections open on `server`, as `pg_stat_activity` lists them:
    /// (count, smallest backend pid).
    fn checker_connections(server: &Cluster) -> (u32, Option<i32>) {
        let sql = "SELECT count(*), min(pid) FROM pg_stat_activity \
                   WHERE application_name = 'shardgate-health'";
        let out = server.psql("app", sql).expect("pg_stat_activity");
        let (count, pid) = out.split_once('|').expect("two columns");
        (count.parse().unwrap(), pid.parse().ok())
    }

    /// The shard as the latest round of checks saw it.
    /// `None` before the first round has finished.
    fn shard(&self) -> Option<ShardHealth> {
        let report = self.proxy.health().report();
        report.shard("app", "s0").cloned()
    }

    /// Polls the report until `ok` holds for the shard; fails with the last report if it never does.
    pub async fn until(&self, what: &str, ok: impl Fn(&ShardHealth) -> bool) -> ShardHealth {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let shard = self.shard();
            if let Some(shard) = shard.as_ref().filter(|s| ok(s)) {
                return shard.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {shard:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// s0's servers in `GET /v1/databases`: [primary, replica].
    async fn admin_servers(&self) -> Vec<Value> {
        let dbs = get(self.proxy.admin_addr(), "/v1/databases").await.json();
        dbs["databases"][0]["shards"][0]["servers"]
            .as_array()
            .expect("servers")
            .clone()
    }
}

/// The proxy's config for `primary` and, when given, `replica` as s0's servers.
fn yaml(primary: &Cluster, replica: Option<&Cluster>, routing: &str) -> String {
    let url = |c: &Cluster| format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/app", c.port());
    let replicas = replica
        .map(|r| format!("\"{}\"", url(r)))
        .unwrap_or_default();
    format!(
        "listen: 127.0.0.1:0\n\
         admin: {{ listen: 127.0.0.1:0, token: {TOKEN} }}\n\
         users: [{{ name: {USER}, password: {PASSWORD} }}]\n\
         health: {{ interval_ms: 100, timeout_ms: 1000, failures_to_ban: 2 }}\n\
         databases:\n  app:\n    shards:\n      s0: {{ primary: \"{}\", replicas: [{replicas}] }}\n{}",
        url(primary),
        if routing.is_empty() {
            String::new()
        } else {
            format!("    routing: {routing}\n")
        }
    )
}

pub(crate) fn up_as(server: &ServerHealth, role: Role) -> bool {
    server.observed_role() == Some(role)
}

fn lag(shard: &ShardHealth) -> Option<Lag> {
    shard.servers[1].lag
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_lag_ban_and_recovery_of_a_replica() {
    let mut pair = Pair::start().await;
    let shard = pair
        .until("both servers up in their roles", |s| {
            up_as(&s.servers[0], Role::Primary) && up_as(&s.servers[1], Role::Replica)
        })
        .await;
    assert_eq!(shard.current_primary(), Some(0));
    assert!(!shard.servers[0].role_mismatch() && !shard.servers[1].role_mismatch());
    let servers = pair.admin_servers().await;
    assert_eq!(
        (&servers[0]["health"], &servers[0]["observed_role"]),
        (&Value::from("up"), &Value::from("primary"))
    );
    assert_eq!(
        (&servers[1]["health"], &servers[1]["observed_role"]),
        (&Value::from("up"), &Value::from("replica"))
    );

    // The replica has replayed a transaction (so it has a replay time), then stops replaying.
    pair.primary.psql("app", "CREATE TABLE t (x int)").unwrap();
    let replayed = "SELECT pg_last_xact_replay_timestamp() IS NOT NULL";
    let deadline = Instant::now() + Duration::from_secs(20);
    while pair.replica.psql("app", replayed).unwrap() != "t" {
        assert!(
            Instant::now() < deadline,
            "the replica never replayed the CREATE TABLE"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pair.replica
        .psql("app", "SELECT pg_wal_replay_pause()")
        .unwrap();
    pair.primary
        .psql("app", "INSERT INTO t SELECT generate_series(1, 10000)")
        .unwrap();
    let behind = pair
        .until("lag in bytes and time", |s| {
            lag(s).is_some_and(|l| l.bytes > 0 && l.ms > 0)
        })
        .await;
    let first = lag(&behind).unwrap();
    assert!(behind.servers[1].is_usable_for_reads(u64::MAX));
    assert!(!behind.servers[1].is_usable_for_reads(0), "{first:?}");
    assert_eq!(behind.usable_replicas(0).count(), 0);
    pair.until("the time behind to grow while replay is paused", |s| {
        lag(s).is_some_and(|l| l.ms > first.ms && l.bytes >= first.bytes)
    })
    .await;
    let servers = pair.admin_servers().await;
    assert!(
        servers[1]["lag"]["bytes"].as_u64().unwrap() > 0,
        "{servers:#?}"
    );
    assert!(
        servers[1]["lag"]["ms"].as_u64().unwrap() > 0,
        "{servers:#?}"
    );
    assert_eq!(servers[0]["lag"], Value::Null, "a primary has no lag");

    pair.replica
        .psql("app", "SELECT pg_wal_replay_resume()")
        .unwrap();
    let caught_up = pair
        .until("lag back to 0 after resume", |s| {
            lag(s) == Some(Lag { bytes: 0, ms: 0 })
        })
        .await;
    assert_eq!(caught_up.usable_replicas(0).collect::<Vec<_>>(), vec![1]);

    // Down: banned, with the reason, while the primary stays up.
    pair.replica.stop(StopMode::Immediate).unwrap();
    let down = pair
        .until("the stopped replica banned", |s| {
            matches!(s.servers[1].state, ServerState::Banned { .. })
        })
        .await;
    let ServerState::Banned {
        reason, failures, ..
    } = &down.servers[1].state
    else {
        unreachable!()
    };
    assert!(
        *failures >= 2,
        "banned after failures_to_ban failures: {failures}"
    );
    assert!(
        reason.contains("error connecting to server") || reason.contains("no answer within"),
        "the reason says what failed: {reason}"
    );
    assert!(up_as(&down.servers[0], Role::Primary));
    assert_eq!(down.usable_replicas(u64::MAX).count(), 0);
    let servers = pair.admin_servers().await;
    assert_eq!(servers[1]["health"], "banned", "{servers:#?}");
    assert!(servers[1]["ban"]["reason"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    assert!(servers[1]["ban"]["failures"].as_u64().unwrap() >= 2);
    assert_eq!(servers[1]["lag"], Value::Null);

    // Back: up again as a replica on the first check that succeeds.
    pair.replica.restart().unwrap();
    pair.until("the replica up again", |s| {
        up_as(&s.servers[1], Role::Replica)
    })
    .await;
    assert_eq!(pair.admin_servers().await[1]["health"], "up");
    pair.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writable_primary_follows_a_promotion() {
    let mut pair = Pair::start().await;
    pair.until("both servers up in their roles", |s| {
        up_as(&s.servers[0], Role::Primary) && up_as(&s.servers[1], Role::Replica)
    })
    .await;
    let url = format!(
        "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/app",
        pair.proxy.addr().port()
    );
    let write = |n: i32| {
        let url = url.clone();
        async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            c.execute("INSERT INTO t VALUES ($1)", &[&n]).await
        }
    };
    connect(&url)
        .await
        .batch_execute("CREATE TABLE t (n int)")
        .await
        .unwrap();
    write(1).await.unwrap();
    // Acknowledged on the primary; replayed on the replica before it is stopped hard.
    let replayed = || pair.replica.psql("app", "SELECT count(*) FROM t").ok() == Some("1".into());
    eventually(replayed, "the replica to replay the first write").await;
    pair.primary.stop(StopMode::Immediate).unwrap();
    let headless = pair
        .until("no writable primary while the old one is down", |s| {
            matches!(s.servers[0].state, ServerState::Banned { .. })
        })
        .await;
    assert_eq!(
        headless.current_primary(),
        None,
        "a replica in recovery is never the primary"
    );
    assert!(up_as(&headless.servers[1], Role::Replica));
    assert_eq!(lag(&headless), None, "no primary, no measurable lag");
    let started = Instant::now();
    let refused = write(2).await.expect_err("no writable server");
    assert_eq!(db_error(&refused).0, "08006", "{refused}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a clean error, not a hang"
    );

    pair.replica.promote().unwrap();
    let promoted = pair
        .until("the promoted replica as the shard's primary", |s| {
            s.current_primary() == Some(1)
        })
        .await;
    assert!(
        promoted.servers[1].role_mismatch(),
        "configured a replica, now a primary"
    );
    let dbs = get(pair.proxy.admin_addr(), "/v1/databases").await.json();
    let shard = &dbs["databases"][0]["shards"][0];
    assert_eq!(
        shard["current_primary"],
        format!("127.0.0.1:{}", pair.replica.port()),
        "{shard:#}"
    );
    assert_eq!(shard["servers"][1]["observed_role"], "primary");
    assert_eq!(shard["servers"][1]["role_mismatch"], true);
    // Writes through shardgate follow, without a restart; nothing acknowledged was lost.
    write(3).await.unwrap();
    let rows = pair
        .replica
        .psql("app", "SELECT string_agg(n::text, ',' ORDER BY n) FROM t");
    assert_eq!(rows.unwrap(), "1,3");
    pair.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_per_server_following_reloads_closed_at_shutdown() {
    let pair = Pair::start().await;
    let both = |s: &ShardHealth| {
        s.servers.len() == 2
            && up_as(&s.servers[0], Role::Primary)
            && up_as(&s.servers[1], Role::Replica)
    };
    pair.until("both servers up", both).await;
    let first = Pair::checker_connections(&pair.primary);
    assert_eq!(first.0, 1, "one control connection per server");
    // Several rounds later: still that one connection, no login per check.
    let start = pair.proxy.health().report().round;
    let deadline = Instant::now() + Duration::from_secs(20);
    while pair.proxy.health().report().round < start + 5 {
        assert!(Instant::now() < deadline, "the checks stopped running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(Pair::checker_connections(&pair.primary), first);
    assert_eq!(Pair::checker_connections(&pair.replica).0, 1);

    // A reload that drops the replica drops its connection; one that adds it back checks it.
    pair.reload(false);
    pair.until("the replica gone from the report", |s| s.servers.len() == 1)
        .await;
    eventually(
        || Pair::checker_connections(&pair.replica).0 == 0,
        "replica connection closed",
    )
    .await;
    assert_eq!(
        Pair::checker_connections(&pair.primary),
        first,
        "kept over the reload"
    );
    pair.reload(true);
    pair.until("the replica back and up", both).await;

    let (primary, replica) = (&pair.primary, &pair.replica);
    pair.proxy.shutdown().await;
    eventually(
        || Pair::checker_connections(primary).0 + Pair::checker_connections(replica).0 == 0,
        "every control connection closed at shutdown",
    )
    .await;
}

/// Polls a blocking check until it holds, for up to 20 s.
async fn eventually(ok: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
