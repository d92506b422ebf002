//! Hot keys and skew (issue 4): a skewed workload through shardgate shows its hot key first in
//! `GET /v1/hotspots` and a skew above the threshold, in the JSON and in `/metrics`; a uniform
//! workload does not.

use serde_json::Value;

use crate::admin_api::{databases_once_checked, get, TOKEN};
use crate::metrics::Scraped;
use crate::shards::{Shards, ShardsOptions};

async fn shop() -> Shards {
    Shards::start(
        ShardsOptions::new(2)
            .buckets(64)
            .schema("CREATE TABLE users (id bigint PRIMARY KEY, name text);")
            .table("users", "id")
            .admin_token(TOKEN),
    )
    .await
}

/// Runs a point read of each key in turn, with a bind parameter (the key in the Bind).
async fn read_each(shop: &Shards, keys: impl Iterator<Item = i64>) {
    let c = shop.connect().await;
    let read = c
        .prepare("SELECT name FROM users WHERE id = $1")
        .await
        .unwrap();
    for k in keys {
        c.query(&read, &[&k]).await.unwrap();
    }
}

async fn report(shop: &Shards) -> Value {
    let answer = get(shop.admin_addr(), "/v1/hotspots").await;
    assert_eq!(answer.status, 200);
    let json = answer.json();
    let dbs = json["databases"].as_array().expect("databases").clone();
    assert_eq!(dbs.len(), 1, "{json}");
    dbs[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_comes_first_and_skews_its_shard() {
    let shop = shop().await;
    let hot = shop.keys_on(0).nth(3).unwrap();
    // 60% of 3000 reads on one key, the rest spread over 1000 keys.
    let keys = (0..3000i64).map(|i| if i % 5 < 3 { hot } else { 1 + i % 1000 });
    read_each(&shop, keys).await;
    let r = report(&shop).await;
    assert_eq!(r["database"], "app");
    assert_eq!(r["queries"], 3000, "{r}");
    let top = &r["top_keys"][0];
    assert_eq!(top["table"], "users", "{r}");
    assert_eq!(top["key"], hot.to_string(), "{r}");
    let (count, error) = (
        top["count"].as_u64().unwrap(),
        top["error"].as_u64().unwrap(),
    );
    assert!(
        count >= 1800 * 7 / 10 && count - error <= 1800 * 13 / 10,
        "{top}"
    );
    let skew = r["skew"].as_f64().unwrap();
    assert!(skew > 1.5, "skew {skew}: {r}");
    let shards: Vec<(String, u64)> = r["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["queries"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(shards.iter().map(|(_, q)| q).sum::<u64>(), 3000);
    assert_eq!(shards[0].0, "s0");
    assert!(shards[0].1 > shards[1].1 * 3, "{shards:?}");
    let scraped = Scraped::at(shop.admin_addr()).await;
    let gauge = scraped.value("shardgate_shard_skew", &[("database", "app")]);
    assert!(gauge > 1.5, "{gauge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uniform_workload_shows_no_hot_key_and_no_skew() {
    let shop = shop().await;
    read_each(&shop, (0..3000i64).map(|i| 1 + i % 1000)).await;
    let r = report(&shop).await;
    assert_eq!(r["queries"], 3000, "{r}");
    let skew = r["skew"].as_f64().unwrap();
    assert!(skew < 1.15, "skew {skew}: {r}");
    let top = &r["top_keys"][0];
    let sure = top["count"].as_u64().unwrap() - top["error"].as_u64().unwrap();
    assert!(
        sure < 300,
        "no key is known to take 10% of the reads: {top}"
    );
    // Server health comes from the background checks: wait for a round.
    databases_once_checked(shop.admin_addr()).await;
    let scraped = Scraped::at(shop.admin_addr()).await;
    assert!(scraped.value("shardgate_shard_skew", &[("database", "app")]) < 1.15);
    assert_eq!(
        scraped.value(
            "shardgate_server_up",
            &[("database", "app"), ("shard", "s0")]
        ),
        1.0
    );
}

/// `metrics: { statements: false, hotspots: false }` (for measuring what they cost): after a
/// reload, statements are neither counted nor tracked, and the proxy serves as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_metrics_and_hotspots_can_be_turned_off() {
    let shop = shop().await;
    let off = shop.config_yaml().replacen(
        "\ndatabases:",
        "\nmetrics: { statements: false, hotspots: false }\ndatabases:",
        1,
    );
    assert_ne!(off, shop.config_yaml(), "the fixture has a databases: line");
    let path = shop.dir().join("off.yaml");
    std::fs::write(&path, off).unwrap();
    shop.proxy().reload_from(&path).expect("reload");
    let queries = |m: &Scraped| m.sum("shardgate_queries_total");
    let before = queries(&Scraped::at(shop.admin_addr()).await);
    read_each(&shop, 1..=100).await;
    let after = Scraped::at(shop.admin_addr()).await;
    assert_eq!(queries(&after), before, "no statement counted");
    let answer = get(shop.admin_addr(), "/v1/hotspots").await;
    assert_eq!(answer.json()["databases"], serde_json::json!([]));
    let config = get(shop.admin_addr(), "/v1/config").await.json();
    assert_eq!(
        config["metrics"],
        serde_json::json!({ "statements": false, "hotspots": false })
    );
}
