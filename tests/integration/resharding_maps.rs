//! Resharding range and list maps (issue 6): a range of keys is split out of its map entry and
//! moved, list values (listed ones and ones the default shard owns) are moved, under the same
//! workload and the same exact check as the hash moves of `resharding.rs`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::admin_api::{get, post, TOKEN};
use crate::resharding::{act, check_owned, shop_of, stop_workload, wait_phase, workload_hot, Log};
use crate::shards::{Shards, ShardsOptions};

/// Starts a job of `moves` (the API's form) on database `app`; its id.
async fn start(shop: &Shards, moves: Value) -> i64 {
    let body = json!({ "database": "app", "moves": moves }).to_string();
    let started = post(shop.admin_addr(), "/v1/reshard", &body).await;
    assert_eq!(started.status, 202, "{}", started.json());
    started.json()["id"].as_i64().unwrap()
}

/// The whole move of job `id` up to `end` (`finish` or `rollback`), waiting for each phase.
async fn carry_out(shop: &Shards, id: i64, end: &str) -> Value {
    let ready = wait_phase(shop, id, "ready", Duration::from_secs(60)).await;
    assert_eq!(ready["verification"]["remaining"], 0, "{ready:#}");
    act(shop, id, "cutover").await;
    wait_phase(shop, id, "reverse_dual_write", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    act(shop, id, end).await;
    let last = if end == "finish" {
        "finished"
    } else {
        "rolled_back"
    };
    wait_phase(shop, id, last, Duration::from_secs(30)).await
}

/// The published map's entry of each shard, as `GET /v1/databases/app/shard-map` shows it.
async fn owned(shop: &Shards, what: &str) -> Vec<Value> {
    let map = get(shop.admin_addr(), "/v1/databases/app/shard-map")
        .await
        .json();
    map["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[what].clone())
        .collect()
}

/// A keyed read through shardgate: user `id`'s increments.
async fn increments_read(shop: &Shards, id: i64) -> i64 {
    let c = shop.connect().await;
    let row = c
        .query_one("SELECT n FROM users WHERE id = $1", &[&id])
        .await
        .unwrap();
    i64::from(row.get::<_, i32>(0))
}

/// Keys up to 100 on s0, the rest on s1; s2 is new. The range [150, 10040) — seeded users and
/// the first new ones the workload inserts meanwhile — moves to s2 and its entry is split in
/// three; after finish every row is where the new map says, exactly as the log says.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_range_moves_to_a_new_shard_under_load_splitting_its_entry() {
    let map = "{ key_type: bigint, function: range, map: [\
        { from: null, to: 100, shard: s0 }, { from: 100, to: null, shard: s1 }] }";
    let (shop, seeded) = shop_of(ShardsOptions::new(3).new_shards(1).sharding(map)).await;
    let (log, stop, tasks) = workload_hot(&[shop.url()], seeded, 4, [150, 20]);
    let moves = json!([{ "range": { "from": 150, "to": 10040 }, "to": "s2" }]);
    let id = start(&shop, moves).await;
    let job = carry_out(&shop, id, "finish").await;
    stop_workload(stop, tasks).await;
    let owner = |k: i64| {
        if k < 100 {
            0
        } else if (150..10040).contains(&k) {
            2
        } else {
            1
        }
    };
    let log: Log = std::mem::take(&mut log.lock().unwrap());
    check_owned(&shop, &log, &owner, 3);
    let history = job["history"].to_string();
    assert!(
        history.contains("keys [150, 10040) cut over to"),
        "{history}"
    );
    assert_eq!(
        owned(&shop, "ranges").await,
        [
            json!([{ "from": null, "to": 100 }]),
            json!([{ "from": 100, "to": 150 }, { "from": 10040, "to": null }]),
            json!([{ "from": 150, "to": 10040 }]),
        ]
    );
    assert_eq!(increments_read(&shop, 150).await, log.increments[&150]);
}

/// Values 1-100 listed on s0, 101-200 on s1, the rest on the default shard s0. Values 1-10
/// (listed) and 10001-10010 (the default shard's, written by the workload meanwhile) move to s1;
/// then the move is rolled back: everything is on s0 again, exactly as the log says, and the
/// map gives s0 the values back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_values_move_with_default_shard_values_and_roll_back() {
    let values = |range: std::ops::RangeInclusive<i64>| {
        range.map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
    };
    let map = format!(
        "{{ key_type: bigint, function: list, map: [\
         {{ values: [{}], shard: s0 }}, {{ values: [{}], shard: s1 }}] }}",
        values(1..=100),
        values(101..=200)
    );
    let (shop, seeded) = shop_of(ShardsOptions::new(2).sharding(&map)).await;
    let (log, stop, tasks) = workload_hot(&[shop.url()], seeded, 4, [5, 150]);
    let moving: Vec<i64> = (1..=10).chain(10_001..=10_010).collect();
    let id = start(&shop, json!([{ "values": moving, "to": "s1" }])).await;
    let ready = wait_phase(&shop, id, "ready", Duration::from_secs(60)).await;
    assert_eq!(ready["moves"][0]["from"], "s0", "{ready:#}");
    act(&shop, id, "cutover").await;
    wait_phase(&shop, id, "reverse_dual_write", Duration::from_secs(30)).await;
    let s1 = owned(&shop, "values").await[1].clone();
    assert_eq!(s1.as_array().unwrap().len(), 120, "{s1}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    act(&shop, id, "rollback").await;
    wait_phase(&shop, id, "rolled_back", Duration::from_secs(30)).await;
    stop_workload(stop, tasks).await;
    let owner = |k: i64| usize::from((101..=200).contains(&k));
    let log: Log = std::mem::take(&mut log.lock().unwrap());
    check_owned(&shop, &log, &owner, 2);
    let listed = owned(&shop, "values").await;
    assert_eq!(listed[1], json!((101..=200).collect::<Vec<i64>>()));
    assert_eq!(listed[0].as_array().unwrap().len(), 110, "{listed:?}");
    assert_eq!(increments_read(&shop, 5).await, log.increments[&5]);
}

/// Text keys compare in byte order, as the router compares them: the range ["K", "c") holds
/// the capitals from K and the lower-case a and b, and exactly those rows move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_range_moves_the_keys_in_byte_order() {
    let map = "{ key_type: text, function: range, map: [\
        { from: null, to: \"m\", shard: s0 }, { from: \"m\", to: null, shard: s1 }] }";
    let shop = Shards::start(
        ShardsOptions::new(2)
            .sharding(map)
            .schema("CREATE TABLE accounts (code text PRIMARY KEY, n int NOT NULL);")
            .table("accounts", "code")
            .two_phase()
            .admin_token(TOKEN),
    )
    .await;
    let codes: Vec<String> = ('A'..='Z').chain('a'..='z').map(String::from).collect();
    let c = shop.connect().await;
    for (n, code) in codes.iter().enumerate() {
        c.execute("INSERT INTO accounts VALUES ($1, $2)", &[code, &(n as i32)])
            .await
            .unwrap();
    }
    let moves = json!([{ "range": { "from": "K", "to": "c" }, "to": "s1" }]);
    let id = start(&shop, moves).await;
    // A write of a moving key while dual-written.
    c.execute("UPDATE accounts SET n = n + 100 WHERE code = 'a'", &[])
        .await
        .unwrap();
    wait_phase(&shop, id, "ready", Duration::from_secs(60)).await;
    // A difference planted on the target is found in its chunk and repaired.
    shop.direct(
        1,
        "SET shardgate.syncing = 'on'; UPDATE accounts SET n = -1 WHERE code = 'b'",
    );
    act(&shop, id, "verify").await;
    let job = wait_phase(&shop, id, "ready", Duration::from_secs(30)).await;
    let run = &job["verification"];
    assert_eq!(
        (run["repaired_keys"].as_i64(), run["remaining"].as_i64()),
        (Some(1), Some(0)),
        "{job:#}"
    );
    assert_eq!(run["samples"], json!(["accounts:b"]));
    carry_out(&shop, id, "finish").await;
    let on = |shard: usize| {
        shop.direct(
            shard,
            "SELECT string_agg(code, '' ORDER BY code COLLATE \"C\") FROM accounts",
        )
    };
    assert_eq!(on(0), "ABCDEFGHIJcdefghijkl");
    assert_eq!(on(1), "KLMNOPQRSTUVWXYZabmnopqrstuvwxyz");
    for (n, code) in codes.iter().enumerate() {
        let row = c
            .query_one("SELECT n FROM accounts WHERE code = $1", &[code])
            .await
            .unwrap();
        let want = n as i32 + if code == "a" { 100 } else { 0 };
        assert_eq!(row.get::<_, i32>(0), want, "{code}");
    }
}
