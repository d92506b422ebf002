//! `kill -9` of the shardgate driving a move, during backfill, verification and cutover: the
//! restarted process takes the job again from what the control database and the shards say —
//! the phase, the checkpoints, the marks — and the move ends exactly as without the crashes.
//!
//! The shardgate here is the real binary, with a control database of its own (the fixture's
//! in-process proxy, which has another, never sees the job). The workload pauses around each
//! kill, so every write it logs has a known outcome.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::admin_api::{get, post};
use crate::resharding::{check_owned, moved, shop_of, workload_hot, Log, Workload};
use crate::shards::{Shards, ShardsOptions};

struct Running {
    child: Child,
    port: u16,
    admin: SocketAddr,
}

impl Running {
    async fn start(config: &Path, port: u16, admin_port: u16) -> Running {
        let child = Command::new(env!("CARGO_BIN_EXE_shardgate"))
            .args(["--config", config.to_str().unwrap(), "--log-level", "warn"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start shardgate");
        let running = Running {
            child,
            port,
            admin: format!("127.0.0.1:{admin_port}").parse().unwrap(),
        };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "shardgate did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        running
    }

    fn url(&self) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/app",
            crate::harness::USER,
            crate::harness::PASSWORD,
            self.port
        )
    }

    /// SIGKILL, as `kill -9`.
    fn kill(self) {
        drop(self);
    }

    async fn job(&self, id: i64) -> serde_json::Value {
        get(self.admin, &format!("/v1/reshard/{id}")).await.json()
    }

    /// Polls until `done` says yes about the job (every 10 ms, at most `within`).
    async fn until(&self, id: i64, within: Duration, done: impl Fn(&serde_json::Value) -> bool) {
        let started = Instant::now();
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return;
            }
            assert!(started.elapsed() < within, "job never got there: {job:#}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Running {
    /// Also when the test fails: a shardgate left running would serve the next test's cluster
    /// if it got the same port.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The workload's clients stopped and joined; its log.
async fn pause((log, stop, tasks): Workload) -> Log {
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(log).ok().unwrap().into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_driver_resumes_the_move_and_ends_it_exactly() {
    let hot = [
        (1..).find(|k| moved(*k)).unwrap(),
        (1..).find(|k| !moved(*k)).unwrap(),
    ];
    let moves = json!([{ "buckets": "0-1", "to": "s1" }]);
    let owner_after = |shop: &Shards, k: i64| if moved(k) { 1 } else { shop.owner(k) };
    killed_driver(ShardsOptions::new(2), moves, hot, &owner_after).await;
}

/// The same crashes in a move of a range map's keys: it ends as exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_driver_resumes_a_range_move_and_ends_it_exactly() {
    let map = "{ key_type: bigint, function: range, map: [\
        { from: null, to: 100, shard: s0 }, { from: 100, to: null, shard: s1 }] }";
    let moves = json!([{ "range": { "from": 20, "to": 60 }, "to": "s1" }]);
    let owner_after = |_: &Shards, k: i64| usize::from(!(60..100).contains(&k) && k >= 20);
    killed_driver(
        ShardsOptions::new(2).sharding(map),
        moves,
        [30, 150],
        &owner_after,
    )
    .await;
}

/// Starts a move of `moves` on a shop of `opts` under a workload with the `hot` keys, kills its
/// driving shardgate during backfill, verification and cutover, and checks every key ends on
/// `owner_after(shop, key)` with exactly the logged writes.
async fn killed_driver(
    opts: ShardsOptions,
    moves: Value,
    hot: [i64; 2],
    owner_after: &dyn Fn(&Shards, i64) -> usize,
) {
    let (shop, seeded) = shop_of(opts).await;
    let control = shop.plain_database("crash_control");
    let (port, admin_port) = (free_port(), free_port());
    let yaml: String = shop
        .config_yaml()
        .lines()
        .map(|l| {
            if l.starts_with("control:") {
                format!("control: \"{control}\"")
            } else {
                l.replace(
                    "listen: 127.0.0.1:0,",
                    &format!("listen: 127.0.0.1:{admin_port},"),
                )
                .replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"))
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = shop.dir().join("crash.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut proxy = Running::start(&config, port, admin_port).await;

    // Killed during backfill (throttled, so it takes seconds), once a checkpoint is saved.
    let load = workload_hot(&[proxy.url()], seeded, 4, hot);
    let body = json!({ "database": "app", "moves": moves, "rows_per_second": 60 }).to_string();
    let started = post(proxy.admin, "/v1/reshard", &body).await;
    assert_eq!(started.status, 202, "{}", started.json());
    let id = started.json()["id"].as_i64().unwrap();
    let copied = |job: &serde_json::Value| {
        job["progress"]["tables"].as_array().map_or(0, |t| {
            t.iter()
                .map(|t| t["rows_copied"].as_i64().unwrap_or(0))
                .sum()
        })
    };
    proxy
        .until(id, Duration::from_secs(60), |j| copied(j) > 0)
        .await;
    let log = pause(load).await;
    let before = copied(&proxy.job(id).await);
    proxy.kill();
    proxy = Running::start(&config, port, admin_port).await;
    let job = proxy.job(id).await;
    assert_eq!(job["phase"], "backfill", "{job:#}");
    assert!(copied(&job) >= before, "the checkpoints survive: {job:#}");

    // Killed during verification (if it is caught there: it is quick).
    let load = workload_hot(&[proxy.url()], log, 4, hot);
    proxy
        .until(id, Duration::from_secs(60), |j| {
            j["phase"] == "verify" || j["phase"] == "ready"
        })
        .await;
    let log = pause(load).await;
    proxy.kill();
    proxy = Running::start(&config, port, admin_port).await;

    // Killed just after the cutover is asked for.
    let load = workload_hot(&[proxy.url()], log, 4, hot);
    proxy
        .until(id, Duration::from_secs(60), |j| j["phase"] == "ready")
        .await;
    let log = pause(load).await;
    let answer = post(proxy.admin, &format!("/v1/reshard/{id}/cutover"), "").await;
    assert_eq!(answer.status, 202);
    tokio::time::sleep(Duration::from_millis(250)).await;
    proxy.kill();
    proxy = Running::start(&config, port, admin_port).await;
    let load = workload_hot(&[proxy.url()], log, 4, hot);
    proxy
        .until(id, Duration::from_secs(60), |j| {
            j["phase"] == "reverse_dual_write"
        })
        .await;
    let answer = post(proxy.admin, &format!("/v1/reshard/{id}/finish"), "").await;
    assert_eq!(answer.status, 202);
    proxy
        .until(id, Duration::from_secs(60), |j| j["phase"] == "finished")
        .await;
    let log = pause(load).await;
    let job = proxy.job(id).await;
    let phases: Vec<&str> = job["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases.iter().filter(|p| **p == "backfill").count(),
        1,
        "backfill resumed, not started again: {phases:?}"
    );
    proxy.kill();
    check_owned(&shop, &log, &|k| owner_after(&shop, k), 2);
}
