//! Online resharding end to end (issue 6): a workload writes through shardgate for the whole
//! move — dual-write, backfill, verification, cutover, finish — and afterwards the shards hold
//! exactly what the log of acknowledged commits says, every row on the shard that owns it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shardgate::router::hash::{bucket_of, hash_int};

use crate::admin_api::{get, post, TOKEN};
use crate::shards::{Shards, ShardsOptions};

/// Users and their orders; an order's primary key holds its user, so the shards' own sequences
/// never collide, and its `at` comes from `now()` on the shard that ran the insert. The foreign
/// key holds on the target too: copies go into `users` before `orders`.
const SCHEMA: &str = "CREATE TABLE users (id bigint PRIMARY KEY, name text, \
        n int NOT NULL DEFAULT 0, touched timestamptz NOT NULL DEFAULT now()); \
    CREATE TABLE orders (user_id bigint NOT NULL REFERENCES users, id bigserial, total int NOT NULL, \
        at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (user_id, id));";

const USERS: i64 = 200;

pub(crate) async fn shop() -> (Shards, Log) {
    shop_of(ShardsOptions::new(2)).await
}

/// [`shop`] on shards of `opts`.
pub(crate) async fn shop_of(opts: ShardsOptions) -> (Shards, Log) {
    let shop = Shards::start(
        opts.schema(SCHEMA)
            .table("users", "id")
            .table("orders", "user_id")
            .two_phase()
            .pool_size(8)
            .admin_token(TOKEN),
    )
    .await;
    let c = shop.connect().await;
    let mut log = Log::default();
    for id in 1..=USERS {
        c.execute("INSERT INTO users (id, name) VALUES ($1, 'seed')", &[&id])
            .await
            .unwrap();
        let row = c
            .query_one(
                "INSERT INTO orders (user_id, total) VALUES ($1, 1) RETURNING id",
                &[&id],
            )
            .await
            .unwrap();
        log.orders.insert((id, row.get(0)), 1);
    }
    (shop, log)
}

/// Buckets 0-1 of 8 (two of s0's four) move to s1.
pub(crate) fn moved(key: i64) -> bool {
    bucket_of(hash_int(key), 8) <= 1
}

/// What the clients were told committed.
#[derive(Default)]
pub(crate) struct Log {
    pub increments: BTreeMap<i64, i64>,
    /// (user, order id) → total.
    pub orders: BTreeMap<(i64, i64), i32>,
    pub new_users: BTreeSet<i64>,
    /// The last new user's id handed out (unique over restarted workloads).
    pub last_id: i64,
    pub errors: Vec<String>,
}

/// One client's loop: increments (autocommit), transactions of an increment and an order,
/// deletes of its own orders, new users (ids from 10,001 on); a third of the traffic on the two
/// `hot` keys (one moving, one not).
async fn client(
    (shop_url, n): (String, i64),
    hot: [i64; 2],
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
) {
    let c = crate::harness::connect(&shop_url).await;
    let mut mine: Vec<(i64, i64)> = Vec::new();
    let mut i: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let user = if i % 3 == 0 {
            hot[(i as usize / 3) % 2]
        } else {
            1 + (i * 37 + n * 11) % USERS
        };
        let result = match i % 5 {
            0 | 1 => c
                .execute(
                    "UPDATE users SET n = n + 1, touched = now() WHERE id = $1",
                    &[&user],
                )
                .await
                .map(|_| {
                    *log.lock().unwrap().increments.entry(user).or_default() += 1;
                }),
            2 => order(&c, user).await.map(|(id, total)| {
                let mut l = log.lock().unwrap();
                *l.increments.entry(user).or_default() += 1;
                l.orders.insert((user, id), total);
                mine.push((user, id));
            }),
            3 if !mine.is_empty() => {
                let (u, id) = mine.remove(0);
                c.execute(
                    "DELETE FROM orders WHERE user_id = $1 AND id = $2",
                    &[&u, &id],
                )
                .await
                .map(|_| {
                    log.lock().unwrap().orders.remove(&(u, id));
                })
            }
            _ => {
                let id = {
                    let mut l = log.lock().unwrap();
                    l.last_id += 1;
                    10_000 + l.last_id
                };
                c.execute("INSERT INTO users (id, name) VALUES ($1, 'new')", &[&id])
                    .await
                    .map(|_| {
                        log.lock().unwrap().new_users.insert(id);
                    })
            }
        };
        if let Err(e) = result {
            log.lock().unwrap().errors.push(describe(&e));
        }
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// A transaction of several statements: an increment and a new order.
async fn order(c: &tokio_postgres::Client, user: i64) -> Result<(i64, i32), tokio_postgres::Error> {
    c.batch_execute("BEGIN").await?;
    let total = (user % 97) as i32;
    let done = async {
        c.execute("UPDATE users SET n = n + 1 WHERE id = $1", &[&user])
            .await?;
        let row = c
            .query_one(
                "INSERT INTO orders (user_id, total) VALUES ($1, $2) RETURNING id",
                &[&user, &total],
            )
            .await?;
        c.batch_execute("COMMIT").await?;
        Ok(row.get::<_, i64>(0))
    }
    .await;
    if done.is_err() {
        let _ = c.batch_execute("ROLLBACK").await;
    }
    done.map(|id| (id, total))
}

/// Workload clients until the returned stop flag is set.
pub(crate) fn workload(shop: &Shards, log: Log, clients: i64) -> Workload {
    workload_on(&[shop.url()], log, clients)
}

/// The shared log, the stop flag and the clients' tasks.
pub(crate) type Workload = (
    Arc<Mutex<Log>>,
    Arc<AtomicBool>,
    Vec<tokio::task::JoinHandle<()>>,
);

/// As [`workload`], the clients spread over several shardgates.
pub(crate) fn workload_on(urls: &[String], log: Log, clients: i64) -> Workload {
    let hot = [
        (1..).find(|k| moved(*k)).unwrap(),
        (1..).find(|k| !moved(*k)).unwrap(),
    ];
    workload_hot(urls, log, clients, hot)
}

/// As [`workload_on`], with the two hot keys given (one moving, one not).
pub(crate) fn workload_hot(urls: &[String], log: Log, clients: i64, hot: [i64; 2]) -> Workload {
    let log = Arc::new(Mutex::new(log));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..clients)
        .map(|n| {
            let url = urls[n as usize % urls.len()].clone();
            tokio::spawn(client((url, n), hot, log.clone(), stop.clone()))
        })
        .collect();
    (log, stop, tasks)
}

/// Polls the job until it is in `phase` (within `within`); the job.
pub(crate) async fn wait_phase(shop: &Shards, id: i64, phase: &str, within: Duration) -> Value {
    let started = Instant::now();
    loop {
        let job = get(shop.admin_addr(), &format!("/v1/reshard/{id}"))
            .await
            .json();
        if job["phase"] == phase {
            return job;
        }
        assert!(
            started.elapsed() < within,
            "job {id} not in phase {phase} after {within:?}: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn act(shop: &Shards, id: i64, action: &str) {
    let answer = post(shop.admin_addr(), &format!("/v1/reshard/{id}/{action}"), "").await;
    assert_eq!(answer.status, 202, "{action}: {}", answer.json());
}

/// The final state against the log: each user on its owner only, with every acknowledged
/// increment counted once; exactly the acknowledged orders; nothing of the moved buckets left
/// on the source.
pub(crate) fn check(shop: &Shards, log: &Log, cut_over: bool) {
    check_placed(shop, log, cut_over.then_some(1), 2);
}

/// As [`check`] over the first `shards` shards, the moved buckets owned by `moved_to` (`None`:
/// by their configured owner).
fn check_placed(shop: &Shards, log: &Log, moved_to: Option<usize>, shards: usize) {
    let owner = |k: i64| match moved_to {
        Some(to) if moved(k) => to,
        _ => shop.owner(k),
    };
    check_owned(shop, log, &owner, shards);
}

/// As [`check`] over the first `shards` shards, each key owned by `owner(key)`.
pub(crate) fn check_owned(shop: &Shards, log: &Log, owner: &dyn Fn(i64) -> usize, shards: usize) {
    let l = log;
    let first: Vec<&String> = l.errors.iter().take(5).collect();
    assert!(
        l.errors.is_empty(),
        "clients saw {} errors: {first:?}…",
        l.errors.len()
    );
    let users = |s: usize| -> BTreeMap<i64, i64> {
        shop.direct(s, "SELECT id || ' ' || n FROM users ORDER BY id")
            .lines()
            .map(|l| {
                let (a, b) = l.split_once(' ').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect()
    };
    let mut all: BTreeMap<i64, i64> = BTreeMap::new();
    for s in 0..shards {
        for (id, n) in users(s) {
            assert_eq!(owner(id), s, "user {id} on s{s}, which does not own it");
            assert!(all.insert(id, n).is_none(), "user {id} twice");
        }
    }
    let expected_ids: BTreeSet<i64> = (1..=USERS).chain(l.new_users.iter().copied()).collect();
    assert_eq!(
        all.keys().copied().collect::<BTreeSet<_>>(),
        expected_ids,
        "users"
    );
    for (id, n) in &all {
        assert_eq!(
            *n,
            l.increments.get(id).copied().unwrap_or(0),
            "increments of user {id}"
        );
    }
    let orders = |s: usize| -> Vec<(i64, i64, i32)> {
        shop.direct(
            s,
            "SELECT user_id || ' ' || id || ' ' || total FROM orders ORDER BY 1",
        )
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split(' ').collect();
            (
                v[0].parse().unwrap(),
                v[1].parse().unwrap(),
                v[2].parse().unwrap(),
            )
        })
        .collect()
    };
    let mut found: BTreeMap<(i64, i64), i32> = BTreeMap::new();
    for s in 0..shards {
        for (u, id, total) in orders(s) {
            assert_eq!(owner(u), s, "order {u}/{id} on s{s}, which does not own it");
            assert!(
                found.insert((u, id), total).is_none(),
                "order {u}/{id} twice"
            );
        }
    }
    assert_eq!(found, l.orders, "orders");
}

/// Starts the move of buckets 0-1 to s1 and waits until it is ready for cutover.
async fn start_move(shop: &Shards) -> i64 {
    let id = begin_move(shop, 0).await;
    wait_phase(shop, id, "ready", Duration::from_secs(60)).await;
    id
}

/// Starts the move, backfill copying at most `rows_per_second` (0: no limit).
async fn begin_move(shop: &Shards, rows_per_second: u64) -> i64 {
    begin_move_to(shop, "s1", rows_per_second).await
}

async fn begin_move_to(shop: &Shards, to: &str, rows_per_second: u64) -> i64 {
    let body = format!(
        r#"{{"database": "app", "moves": [{{"buckets": "0-1", "to": "{to}"}}], "rows_per_second": {rows_per_second}}}"#
    );
    let started = post(shop.admin_addr(), "/v1/reshard", &body).await;
    assert_eq!(started.status, 202, "{}", started.json());
    started.json()["id"].as_i64().unwrap()
}

/// Stops the workload and waits for its clients.
pub(crate) async fn stop_workload(stop: Arc<AtomicBool>, tasks: Vec<tokio::task::JoinHandle<()>>) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
}

/// Rollback after cutover, under the same workload: the source owns the buckets again with
/// every acknowledged write, and the target keeps nothing of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollback_after_cutover_brings_everything_back() {
    let (shop, seeded) = shop().await;
    let (log, stop, tasks) = workload(&shop, seeded, 6);
    let id = start_move(&shop).await;
    act(&shop, id, "cutover").await;
    wait_phase(&shop, id, "reverse_dual_write", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    act(&shop, id, "rollback").await;
    let job = wait_phase(&shop, id, "rolled_back", Duration::from_secs(30)).await;
    stop_workload(stop, tasks).await;
    let notes: Vec<&str> = job["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["note"].as_str().unwrap())
        .collect();
    assert!(
        notes
            .last()
            .unwrap()
            .starts_with("rolled back: the sources own the moved keys again"),
        "{notes:?}"
    );
    check(&shop, &log.lock().unwrap(), false);
    assert_eq!(
        shop.direct(
            0,
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'shardgate_capture'"
        ),
        "0"
    );
    assert_eq!(
        shop.direct(
            1,
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'shardgate_capture'"
        ),
        "0"
    );
}

/// The whole move under a workload of six clients: nothing lost, nothing doubled, every
/// increment counted once, nothing of the moved buckets left on the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_under_load_loses_nothing_and_doubles_nothing() {
    let (shop, seeded) = shop().await;
    let (log, stop, tasks) = workload(&shop, seeded, 6);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = start_move(&shop).await;
    act(&shop, id, "cutover").await;
    wait_phase(&shop, id, "reverse_dual_write", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    act(&shop, id, "finish").await;
    let job = wait_phase(&shop, id, "finished", Duration::from_secs(30)).await;
    stop_workload(stop, tasks).await;
    eprintln!("{:#}", job["history"]);
    let server_log = shop.server_log();
    let lines: Vec<&str> = server_log.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("deadlock detected") {
            eprintln!("{}", lines[i..(i + 12).min(lines.len())].join("\n"));
        }
    }
    check(&shop, &log.lock().unwrap(), true);
}

/// Two shardgates share the control database, both serving the workload: both hold the slice
/// at cutover and take the new map; the move is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_shardgates_serving_the_workload_move_it_exactly() {
    let (shop, seeded) = shop().await;
    let second = shardgate::proxy::Proxy::start(shop.config())
        .await
        .expect("second shardgate");
    let other = format!(
        "postgres://{}:{}@{}/app",
        crate::harness::USER,
        crate::harness::PASSWORD,
        second.addr()
    );
    let (log, stop, tasks) = workload_on(&[shop.url(), other], seeded, 6);
    let id = start_move(&shop).await;
    let job = get(shop.admin_addr(), &format!("/v1/reshard/{id}"))
        .await
        .json();
    assert_eq!(job["proxies"].as_array().unwrap().len(), 2, "{job}");
    act(&shop, id, "cutover").await;
    wait_phase(&shop, id, "reverse_dual_write", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    act(&shop, id, "finish").await;
    wait_phase(&shop, id, "finished", Duration::from_secs(30)).await;
    stop_workload(stop, tasks).await;
    check(&shop, &log.lock().unwrap(), true);
    second.shutdown().await;
}

/// The target's connections of the move are cut again and again during dual-write and a
/// throttled backfill: every change waits, marked on the source, and is copied once the target
/// answers; the final check finds nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_that_drops_the_copies_loses_nothing() {
    let (shop, seeded) = shop().await;
    let (log, stop, tasks) = workload(&shop, seeded, 6);
    let id = begin_move(&shop, 100).await;
    let killer = {
        let url = shop.shard_url(1);
        tokio::spawn(async move {
            let c = crate::harness::connect(&url).await;
            let mut cuts = 0;
            // For three seconds: the throttled backfill is still copying.
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                let row = c
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE application_name = 'shardgate-reshard' AND datname = current_database()",
                        &[],
                    )
                    .await
                    .unwrap();
                cuts += row.get::<_, i64>(0);
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            cuts
        })
    };
    wait_phase(&shop, id, "ready", Duration::from_secs(60)).await;
    let cuts = killer.await.unwrap();
    assert!(cuts > 0, "no connection of the move was cut");
    // The backfill ends where the moved buckets ended when it started: the users the workload
    // inserts behind it (new, higher ids) are the change copier's, not a tail the throttled
    // copy chases. (New orders of old users fall inside the copied range of `orders`.)
    let job = get(shop.admin_addr(), &format!("/v1/reshard/{id}"))
        .await
        .json();
    let tables = job["progress"]["tables"].as_array().unwrap();
    let users = tables.iter().find(|t| t["table"] == "users").unwrap();
    let (copied, total) = (users["rows_copied"].as_i64(), users["rows_total"].as_i64());
    assert!(total.is_some() && copied <= total, "{job:#}");
    act(&shop, id, "cutover").await;
    wait_phase(&shop, id, "reverse_dual_write", Duration::from_secs(30)).await;
    act(&shop, id, "finish").await;
    wait_phase(&shop, id, "finished", Duration::from_secs(30)).await;
    stop_workload(stop, tasks).await;
    check(&shop, &log.lock().unwrap(), true);
}

/// Only transactions on the moving slice wait at cutover: while a transaction under way on a
/// moving key keeps the cutover waiting, a write of another bucket completes at once, a new
/// transaction on a moving key is held (no error), and once the first commits, the held one
/// goes to the new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_moving_slice_waits_at_cutover() {
    let (shop, _) = shop().await;
    let id = start_move(&shop).await;
    let moving: Vec<i64> = (1..=USERS).filter(|k| moved(*k)).take(2).collect();
    let other = (1..=USERS).find(|k| !moved(*k)).unwrap();
    let under_way = shop.connect().await;
    under_way
        .batch_execute(&format!(
            "BEGIN; UPDATE users SET n = n + 1 WHERE id = {}",
            moving[0]
        ))
        .await
        .unwrap();
    act(&shop, id, "cutover").await;
    let hold = "SELECT coalesce(overlay->'hold'->'slice'->'buckets'->>'first', 'none') FROM shardgate.epochs";
    // Published, and taken by this shardgate (its acknowledgement): before that, a new
    // transaction would still be routed with the map before the hold.
    let taken = "SELECT count(*) FROM shardgate.epochs e JOIN shardgate.proxy_heartbeats h \
                 ON (h.epochs->>e.database)::bigint >= e.epoch WHERE e.overlay ? 'hold'";
    let started = Instant::now();
    while shop.control(taken) == "0" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no hold published and taken"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let c = shop.connect().await;
    c.execute("UPDATE users SET n = n + 1 WHERE id = $1", &[&other])
        .await
        .unwrap();
    assert_eq!(
        shop.control(hold),
        "0",
        "another bucket's write went through during the hold"
    );
    let held = {
        let c = shop.connect().await;
        let key = moving[1];
        tokio::spawn(async move {
            c.execute("UPDATE users SET n = n + 1 WHERE id = $1", &[&key])
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !held.is_finished(),
        "a new transaction on the moving slice is held"
    );
    under_way.batch_execute("COMMIT").await.unwrap();
    assert_eq!(held.await.unwrap().unwrap(), 1);
    wait_phase(&shop, id, "reverse_dual_write", Duration::from_secs(10)).await;
    let n = |shard: usize, key: i64| {
        shop.direct(shard, &format!("SELECT n FROM users WHERE id = {key}"))
    };
    assert_eq!(
        (n(1, moving[0]), n(1, moving[1])),
        ("1".into(), "1".into()),
        "both on the new owner"
    );
}

/// A transaction that began before the cutover with a read of a moving key, and writes that key
/// while the slice is held: the cutover waits for it to end, so it commits on the old owner and
/// its change moves (rather than the old owner, already the shadow, refusing the write).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_begun_before_the_hold_writes_and_commits() {
    let (shop, _) = shop().await;
    let id = start_move(&shop).await;
    let key = (1..=USERS).find(|k| moved(*k)).unwrap();
    let c = shop.connect().await;
    c.batch_execute("BEGIN").await.unwrap();
    let row = c
        .query_one("SELECT n FROM users WHERE id = $1", &[&key])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 0);
    act(&shop, id, "cutover").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let job = get(shop.admin_addr(), &format!("/v1/reshard/{id}"))
        .await
        .json();
    assert_eq!(job["phase"], "cutover", "the cutover waits: {job:#}");
    c.execute("UPDATE users SET n = n + 1 WHERE id = $1", &[&key])
        .await
        .unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    wait_phase(&shop, id, "reverse_dual_write", Duration::from_secs(10)).await;
    let on = |shard: usize| shop.direct(shard, &format!("SELECT n FROM users WHERE id = {key}"));
    assert_eq!(
        (on(0), on(1)),
        ("1".into(), "1".into()),
        "on the new owner, and its shadow"
    );
}

/// A transaction already older than the hold's bound when the cutover begins (a long report,
/// say) is not waited for: the cutover goes through while it is still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_transaction_on_the_source_does_not_stall_the_cutover() {
    let (shop, _) = shop().await;
    let id = start_move(&shop).await;
    let key = (1..=USERS).find(|k| moved(*k)).unwrap();
    let report = shop.connect().await;
    report.batch_execute("BEGIN").await.unwrap();
    report
        .query_one("SELECT n FROM users WHERE id = $1", &[&key])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    act(&shop, id, "cutover").await;
    wait_phase(&shop, id, "reverse_dual_write", Duration::from_secs(10)).await;
    report.batch_execute("COMMIT").await.unwrap();
}

/// Verification finds a difference planted straight on the target, repairs it and says so
/// (with the key as a sample); after finish a run finds nothing of the moved buckets left on
/// the source. Progress shows each table's rows against its total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_finds_and_repairs_a_planted_difference() {
    let (shop, _) = shop().await;
    let id = start_move(&shop).await;
    let job = get(shop.admin_addr(), &format!("/v1/reshard/{id}"))
        .await
        .json();
    for t in job["progress"]["tables"].as_array().unwrap() {
        assert_eq!(t["rows_copied"], t["rows_total"], "{job:#}");
        assert_eq!(t["eta_seconds"], 0.0, "{job:#}");
    }
    let key = (1..=USERS).find(|k| moved(*k)).unwrap();
    shop.direct(
        1,
        &format!(
            "SET shardgate.syncing = 'on'; UPDATE users SET name = 'planted' WHERE id = {key}"
        ),
    );
    act(&shop, id, "verify").await;
    let job = wait_phase(&shop, id, "ready", Duration::from_secs(30)).await;
    let run = &job["verification"];
    assert_eq!(run["compared"], "source→target", "{job:#}");
    assert_eq!(
        (run["repaired_keys"].as_i64(), run["remaining"].as_i64()),
        (Some(1), Some(0)),
        "{job:#}"
    );
    assert_eq!(run["samples"], serde_json::json!([format!("users:{key}")]));
    let name = format!("SELECT name FROM users WHERE id = {key}");
    assert_eq!(shop.direct(1, &name), "seed", "repaired from the source");
    act(&shop, id, "cutover").await;
    wait_phase(&shop, id, "reverse_dual_write", Duration::from_secs(30)).await;
    act(&shop, id, "finish").await;
    wait_phase(&shop, id, "finished", Duration::from_secs(30)).await;
    act(&shop, id, "verify").await;
    let started = Instant::now();
    loop {
        let job = get(shop.admin_addr(), &format!("/v1/reshard/{id}"))
            .await
            .json();
        let run = &job["verification"];
        if run["compared"] == "source empty" {
            assert_eq!(
                (run["tables"].as_i64(), run["remaining"].as_i64()),
                (Some(2), Some(0)),
                "{job:#}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no run after finish: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A move to a shard that is new in the config (its schema in place, owning no bucket), under
/// the workload: the moved users and their orders end on it with every acknowledged write,
/// nothing of them stays on the old owner, and the published map and routed queries say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_to_a_new_shard_puts_the_buckets_there() {
    let (shop, seeded) = shop_of(ShardsOptions::new(3).new_shards(1)).await;
    assert_eq!(shop.direct(2, "SELECT count(*) FROM users"), "0");
    let (log, stop, tasks) = workload(&shop, seeded, 4);
    let id = begin_move_to(&shop, "s2", 0).await;
    wait_phase(&shop, id, "ready", Duration::from_secs(60)).await;
    act(&shop, id, "cutover").await;
    wait_phase(&shop, id, "reverse_dual_write", Duration::from_secs(30)).await;
    act(&shop, id, "finish").await;
    wait_phase(&shop, id, "finished", Duration::from_secs(30)).await;
    stop_workload(stop, tasks).await;
    let (increments, key) = {
        let log = log.lock().unwrap();
        check_placed(&shop, &log, Some(2), 3);
        let key = (1..).find(|k| moved(*k)).unwrap();
        (log.increments[&key], key)
    };
    let map = get(shop.admin_addr(), "/v1/databases/app/shard-map")
        .await
        .json();
    let owned = |name: &str| {
        let shards = map["shards"].as_array().unwrap();
        let shard = shards.iter().find(|s| s["name"] == name).unwrap();
        shard["buckets"].clone()
    };
    assert_eq!(
        (owned("s0"), owned("s2")),
        (serde_json::json!(["2-3"]), serde_json::json!(["0-1"])),
        "{map:#}"
    );
    // The hot moving key, read through shardgate: from the new shard, every increment there.
    let c = shop.connect().await;
    let row = c
        .query_one("SELECT n FROM users WHERE id = $1", &[&key])
        .await
        .unwrap();
    assert_eq!(i64::from(row.get::<_, i32>(0)), increments);
}

/// Backfill backs off while a replica of the source is further behind than
/// `routing.max_replica_lag_ms`: with the replica's replay paused it copies nothing and says
/// why in the job's history; once replay resumes it goes on to ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_waits_for_a_lagging_replica_of_the_source() {
    let opts = ShardsOptions::new(2)
        .replica()
        .routing("max_replica_lag_ms", "300");
    let (shop, _) = shop_of(opts).await;
    let replica = shop.replica_server();
    // Caught up first: a replica that has replayed no commit yet has no measurable lag (and a
    // replica just started may still be replaying the seed rows).
    let written = shop.direct(0, "SELECT pg_current_wal_lsn()");
    let caught_up = format!(
        "SELECT pg_last_wal_replay_lsn() >= '{written}' AND pg_last_xact_replay_timestamp() IS NOT NULL"
    );
    let started = Instant::now();
    while replica.psql("postgres", &caught_up).unwrap() != "t" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the replica did not replay up to {written} in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replica
        .psql("postgres", "SELECT pg_wal_replay_pause()")
        .unwrap();
    // Commits on the primary the paused replica does not replay: its lag grows.
    shop.direct(0, "UPDATE users SET name = 'behind' WHERE id = 1");
    let id = begin_move(&shop, 0).await;
    let job = wait_history(&shop, id, "backfill waits: replica").await;
    assert_eq!(job["phase"], "backfill", "{job:#}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let job = get(shop.admin_addr(), &format!("/v1/reshard/{id}"))
        .await
        .json();
    let copied: i64 = job["progress"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["rows_copied"].as_i64().unwrap())
        .sum();
    assert_eq!(
        (job["phase"].clone(), copied),
        (json!("backfill"), 0),
        "{job:#}"
    );
    replica
        .psql("postgres", "SELECT pg_wal_replay_resume()")
        .unwrap();
    let job = wait_phase(&shop, id, "ready", Duration::from_secs(60)).await;
    let notes: Vec<&str> = job["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["note"].as_str())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("the replicas of \"s0\" caught up")),
        "{notes:#?}"
    );
}

/// Waits until a note of the job's history starts with `start`.
async fn wait_history(shop: &Shards, id: i64, start: &str) -> Value {
    let started = Instant::now();
    loop {
        let job = get(shop.admin_addr(), &format!("/v1/reshard/{id}"))
            .await
            .json();
        let history = job["history"].as_array().unwrap();
        if history
            .iter()
            .any(|h| h["note"].as_str().is_some_and(|n| n.starts_with(start)))
        {
            return job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no note \"{start}…\" in 30 s: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Statements that go to every shard (no sharding key) see each row once during a move: the
/// target's copies of the moved buckets are not the target's rows until cutover, nor the
/// source's after it. A write to every shard touches each row once (and meets no refusal on the
/// shadow side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_across_shards_see_each_row_once_during_a_move() {
    let (shop, _) = shop().await;
    let c = shop.connect().await;
    let once = |when: &'static str| {
        let c = &c;
        async move {
            let row = c.query_one("SELECT count(*) FROM users", &[]).await;
            assert_eq!(row.unwrap().get::<_, i64>(0), USERS, "read {when}");
            let sql = "UPDATE users SET touched = now() WHERE id > 0";
            let touched = c.execute(sql, &[]).await.unwrap();
            assert_eq!(touched as i64, USERS, "write {when}");
        }
    };
    once("before the move").await;
    let id = start_move(&shop).await;
    once("in phase ready").await;
    act(&shop, id, "cutover").await;
    wait_phase(&shop, id, "reverse_dual_write", Duration::from_secs(30)).await;
    once("after cutover").await;
    act(&shop, id, "finish").await;
    wait_phase(&shop, id, "finished", Duration::from_secs(30)).await;
    once("after finish").await;
}

/// Through a cutover and a rollback, statements across shards — reads and writes, run back to
/// back by two clients the whole time — never see a moved row on both sides, nor on neither:
/// they wait out the hold instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statements_across_shards_are_exact_through_cutover_and_rollback() {
    let (shop, _) = shop().await;
    let id = start_move(&shop).await;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = |sql: &'static str| {
        let (url, stop) = (shop.url(), stop.clone());
        tokio::spawn(async move {
            let c = crate::harness::connect(&url).await;
            let mut wrong = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let rows = if sql.starts_with("SELECT") {
                    c.query_one(sql, &[]).await.map(|r| r.get::<_, i64>(0))
                } else {
                    c.execute(sql, &[]).await.map(|n| n as i64)
                };
                match rows {
                    Ok(rows) if rows == USERS => {}
                    other => wrong.push(format!("{other:?}")),
                }
                n += 1;
            }
            (n, wrong)
        })
    };
    let reads = seen("SELECT count(*) FROM users");
    let writes = seen("UPDATE users SET touched = now() WHERE id > 0");
    tokio::time::sleep(Duration::from_millis(200)).await;
    act(&shop, id, "cutover").await;
    wait_phase(&shop, id, "reverse_dual_write", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    act(&shop, id, "rollback").await;
    wait_phase(&shop, id, "rolled_back", Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    for (what, task) in [("reads", reads), ("writes", writes)] {
        let (n, wrong) = task.await.unwrap();
        assert!(n > 20, "only {n} {what}");
        assert_eq!(
            wrong,
            Vec::<String>::new(),
            "{what} of {n} that saw another count"
        );
    }
}

/// An abort in phase ready deletes the target's copies and lifts row security: the target holds
/// nothing of the moved buckets, reads across shards see each row once, and nothing of the job
/// is left on either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_deletes_the_copies() {
    let (shop, _) = shop().await;
    let id = start_move(&shop).await;
    let moved_on_target = format!(
        "SELECT count(*) FROM users WHERE {}",
        shardgate::router::hash::bucket_sql("id", shardgate::config::KeyType::Bigint, 8) + " <= 1"
    );
    assert_ne!(shop.direct(1, &moved_on_target), "0", "copied");
    act(&shop, id, "abort").await;
    let job = wait_history(&shop, id, "dual-write removed from the shards").await;
    assert_eq!(job["phase"], "aborted");
    assert_eq!(shop.direct(1, &moved_on_target), "0", "{job:#}");
    let c = shop.connect().await;
    let row = c
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), USERS);
    for shard in [0, 1] {
        assert_eq!(
            shop.direct(
                shard,
                "SELECT count(*) FROM pg_policy WHERE polname LIKE 'shardgate%'"
            ),
            "0"
        );
        assert_eq!(
            shop.direct(
                shard,
                "SELECT count(*) FROM pg_class WHERE relname IN ('users', 'orders') AND relrowsecurity"
            ),
            "0"
        );
    }
}
