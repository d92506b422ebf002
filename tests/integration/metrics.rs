//! `GET /metrics`: a known mix of traffic through a two-shard proxy, scraped over HTTP and read
//! with a Prometheus text-format parser; the counts must match the traffic exactly.

use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use tokio_postgres::Client;

use crate::admin::http_get;
use crate::harness::{db_error, eventually_async, Env};
use crate::shards::{Shards, ShardsOptions};
use tokio_postgres::types::Type;

const SCHEMA: &str = "CREATE TABLE users (id bigint PRIMARY KEY, name text);";

async fn start(routing: &[(&str, &str)]) -> Shards {
    let mut opts = ShardsOptions::new(2).schema(SCHEMA).table("users", "id");
    for (k, v) in routing {
        opts = opts.routing(k, v);
    }
    Shards::start(opts).await
}

/// One scrape of `GET /metrics`, parsed.
pub(crate) struct Scraped {
    text: String,
    scrape: Scrape,
}

impl Scraped {
    async fn of(shop: &Shards) -> Scraped {
        Scraped::at(shop.proxy().admin_addr()).await
    }

    pub(crate) async fn at(admin: std::net::SocketAddr) -> Scraped {
        let (status, text) = http_get(admin, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = Scrape::parse(lines).expect("Prometheus text format");
        Scraped { text, scrape }
    }

    /// The value of the one sample of counter or gauge `name` with these labels (others any).
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found = self.values(name, labels);
        match found.as_slice() {
            [v] => *v,
            _ => panic!(
                "expected one sample {name}{labels:?}, found {found:?} in\n{}",
                self.text
            ),
        }
    }

    /// The sum of every sample of counter or gauge `name`; 0 when there is none.
    pub(crate) fn sum(&self, name: &str) -> f64 {
        self.values(name, &[]).iter().sum()
    }

    /// The values of the samples of counter or gauge `name` with these labels (others any).
    fn values(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .filter_map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    /// The cumulative buckets of histogram `name` with these labels, as (upper bound, count).
    fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric.starts_with(name))
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .find_map(|s| match &s.value {
                Value::Histogram(h) => Some(h.iter().map(|b| (b.less_than, b.count)).collect()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no histogram {name}{labels:?} in\n{}", self.text))
    }
}

async fn insert(c: &Client, id: i64) {
    c.execute("INSERT INTO users (id, name) VALUES ($1, 'n')", &[&id])
        .await
        .expect("insert");
}

async fn select(c: &Client, id: i64) {
    c.query("SELECT name FROM users WHERE id = $1", &[&id])
        .await
        .expect("select");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_the_traffic_per_shard_kind_and_reason() {
    let shop = start(&[]).await;
    let (on0, on1): (Vec<i64>, Vec<i64>) = (
        shop.keys_on(0).take(3).collect(),
        shop.keys_on(1).take(3).collect(),
    );
    let a = shop.connect().await;
    let b = shop.connect().await;
    // 3 inserts per shard; 4 keyed selects on s0 and 5 on s1 (extended protocol).
    for &k in on0.iter().chain(&on1) {
        insert(&a, k).await;
    }
    for i in 0..4 {
        select(&b, on0[i % 3]).await;
    }
    for i in 0..5 {
        select(&a, on1[i % 3]).await;
    }
    // One simple-protocol keyed select on s0, one read on every shard.
    b.simple_query(&format!("SELECT name FROM users WHERE id = {}", on0[0]))
        .await
        .unwrap();
    let n: i64 = a
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 6);
    // Three refusals: two writes without the key, one change of the key.
    for _ in 0..2 {
        a.execute("UPDATE users SET name = 'x'", &[])
            .await
            .unwrap_err();
    }
    let moved = format!("UPDATE users SET id = 5 WHERE id = {}", on0[0]);
    b.execute(moved.as_str(), &[]).await.unwrap_err();

    let m = Scraped::of(&shop).await;
    let app = ("database", "app");
    let q = |shard, kind| {
        m.value(
            "shardgate_queries_total",
            &[app, ("shard", shard), ("role", "primary"), ("kind", kind)],
        )
    };
    assert_eq!((q("s0", "insert"), q("s1", "insert")), (3.0, 3.0));
    // Keyed selects, plus the simple one on s0, plus the read on every shard once per shard.
    assert_eq!((q("s0", "select"), q("s1", "select")), (6.0, 6.0));
    assert_eq!(
        (q("s0", "update"), q("s1", "update")),
        (0.0, 0.0),
        "refused statements never reach a shard"
    );
    let decision = |d| m.value("shardgate_routing_decisions_total", &[app, ("decision", d)]);
    assert_eq!(decision("single_shard"), 16.0);
    assert_eq!(decision("multi_shard"), 1.0);
    assert_eq!(decision("rejected"), 3.0);
    let rejected = |r| m.value("shardgate_routing_rejections_total", &[app, ("reason", r)]);
    assert_eq!(rejected("write_without_key"), 2.0);
    assert_eq!(rejected("key_update"), 1.0);
    assert_eq!(rejected("read_without_key"), 0.0);
    assert_eq!(m.value("shardgate_parse_failures_total", &[app]), 0.0);
    for shard in ["s0", "s1"] {
        let at = [app, ("shard", shard), ("role", "primary")];
        let buckets = m.buckets("shardgate_query_duration_seconds", &at);
        assert_eq!(buckets.len(), 17, "16 bounds and +Inf: {buckets:?}");
        assert_eq!(buckets.first().map(|b| b.0), Some(0.0001));
        let total = buckets.last().expect("+Inf").1;
        assert!(buckets.last().unwrap().0.is_infinite());
        assert_eq!(total, 9.0, "one duration per statement on {shard}");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "cumulative: {buckets:?}"
        );
        let waits = m.buckets("shardgate_pool_checkout_wait_seconds", &at);
        assert!(
            waits.last().unwrap().1 > 0.0,
            "checkouts on {shard} were timed"
        );
        assert_eq!(m.value("shardgate_pool_size", &at), 2.0);
        assert_eq!(m.value("shardgate_pool_in_use", &at), 0.0);
        assert_eq!(m.value("shardgate_pool_waiting", &at), 0.0);
        assert!(m.value("shardgate_pool_connections", &at) >= 1.0);
        let lost = [app, ("shard", shard), ("error", "connection_lost")];
        assert_eq!(m.value("shardgate_backend_errors_total", &lost), 0.0);
    }
    assert!(m.value("shardgate_client_received_bytes_total", &[app]) > 0.0);
    assert!(m.value("shardgate_client_sent_bytes_total", &[app]) > 0.0);
    assert_eq!(m.value("shardgate_client_connections", &[]), 2.0);
    assert_eq!(
        m.value("shardgate_client_connections_accepted_total", &[]),
        2.0
    );

    // The gauge goes back to zero once the clients have gone.
    drop((a, b));
    eventually_async(
        "the client gauge to reach 0",
        Duration::from_secs(10),
        || async {
            Scraped::of(&shop)
                .await
                .value("shardgate_client_connections", &[])
                == 0.0
        },
    )
    .await;
}

/// The primary's `shardgate_queries_total` of kind `kind` for shard `s0` of `app`.
fn s0_queries(m: &Scraped, kind: &str) -> f64 {
    let at = [("database", "app"), ("shard", "s0"), ("role", "primary")];
    m.value(
        "shardgate_queries_total",
        &[at[0], at[1], at[2], ("kind", kind)],
    )
}

/// Unnamed statements (Parse, Bind and Execute per query, as `query_typed` sends them) count by
/// their own kind: where the Parse waits for its Bind to pick the shard (two shards), and where
/// it goes to the only server at once (one shard).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statements_are_counted_by_kind() {
    let shop = start(&[]).await;
    let c = shop.connect().await;
    let k: i64 = shop.keys_on(0).next().expect("a key on s0");
    let insert = "INSERT INTO users (id, name) VALUES ($1, 'n')";
    c.query_typed(insert, &[(&k, Type::INT8)]).await.unwrap();
    for _ in 0..3 {
        let select = "SELECT name FROM users WHERE id = $1";
        c.query_typed(select, &[(&k, Type::INT8)]).await.unwrap();
    }
    let m = Scraped::of(&shop).await;
    assert_eq!(
        (s0_queries(&m, "insert"), s0_queries(&m, "select")),
        (1.0, 3.0)
    );

    let env = Env::start().await;
    let c = env.connect().await;
    c.simple_query("CREATE TABLE t (id int)").await.unwrap();
    for i in 0..2i32 {
        let insert = "INSERT INTO t VALUES ($1)";
        c.query_typed(insert, &[(&i, Type::INT4)]).await.unwrap();
    }
    let rows = c
        .query_typed("SELECT id FROM t WHERE id = $1", &[(&1i32, Type::INT4)])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let m = Scraped::at(env.proxy.admin_addr()).await;
    let kinds = ["ddl", "insert", "select", "update"].map(|k| s0_queries(&m, k));
    assert_eq!(kinds, [1.0, 2.0, 1.0, 0.0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_and_the_epoch_are_counted() {
    let shop = start(&[]).await;
    let path = shop.dir().join("shardgate.yaml");
    std::fs::write(&path, shop.config_yaml()).unwrap();
    assert_eq!(shop.proxy().reload_from(&path).unwrap(), 2);
    std::fs::write(&path, "listen: [not a config").unwrap();
    shop.proxy().reload_from(&path).unwrap_err();
    let m = Scraped::of(&shop).await;
    assert_eq!(
        m.value("shardgate_config_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        m.value("shardgate_config_reloads_total", &[("result", "failed")]),
        1.0
    );
    assert_eq!(m.value("shardgate_config_epoch", &[]), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_label_carries_sql_text_or_key_values() {
    let shop = start(&[]).await;
    let c = shop.connect().await;
    // Large enough that its digits cannot turn up by chance in a sample's value.
    let key = (987_654_321..).find(|&k| shop.owner(k) == 1).unwrap();
    c.execute(
        "INSERT INTO users (id, name) VALUES ($1, 'marker-in-a-literal')",
        &[&key],
    )
    .await
    .unwrap();
    c.simple_query(&format!("SELECT 'marker' FROM users WHERE id = {key}"))
        .await
        .unwrap();
    c.simple_query("SELECT * FROM users WHERE name = 'marker'")
        .await
        .unwrap();
    // Refused for a bad hint (naming a shard that does not exist), for the missing key, and
    // a statement the router cannot parse that names the sharded table.
    let refused = [
        "/* shardgate: shard=marker_shard */ SELECT 1",
        "DELETE FROM users WHERE name = 'marker'",
        "SELECT marker FROM users WHERE id = ANY(((( OPERATOR(pg_catalog.+) marker",
    ];
    for sql in refused {
        c.simple_query(sql).await.unwrap_err();
    }
    let m = Scraped::of(&shop).await;
    assert!(
        m.value(
            "shardgate_routing_rejections_total",
            &[("reason", "bad_hint")]
        ) >= 1.0
    );
    let allowed_keys = [
        "database", "shard", "role", "kind", "decision", "reason", "outcome", "error", "result",
    ];
    let mut checked = 0;
    // A server is named by its configured address, the shard server's here.
    let server = format!("127.0.0.1:{}", shop.server_port());
    for s in &m.scrape.samples {
        for (k, v) in s.labels.iter() {
            if k == "server" {
                assert_eq!(v, &server, "on {}", s.metric);
                continue;
            }
            assert!(
                allowed_keys.contains(&k.as_str()),
                "unexpected label {k}={v} on {}",
                s.metric
            );
            let plain = v
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            assert!(
                plain,
                "label {k}={v:?} on {} is not a bounded name",
                s.metric
            );
            assert!(
                !v.contains("marker") && !v.contains(&key.to_string()),
                "{k}={v} on {}",
                s.metric
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "labels were checked: {checked}");
    for word in ["marker", "SELECT", "DELETE", &key.to_string()] {
        assert!(
            !m.text.contains(word),
            "{word} appears in the metrics:\n{}",
            m.text
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_counts_what_would_have_needed_several_shards_by_reason() {
    let shop = start(&[("mode", "shadow")]).await;
    let c = shop.connect().await;
    // Each statement runs on the default shard; the same text twice is counted twice.
    for _ in 0..2 {
        c.simple_query("SELECT * FROM users WHERE name = 'x'")
            .await
            .unwrap();
    }
    c.simple_query("UPDATE users SET name = 'y'").await.unwrap();
    c.simple_query("SELECT * FROM users WHERE id = 3")
        .await
        .unwrap();
    let m = Scraped::of(&shop).await;
    let shadow = |outcome, reason| {
        let labels = [
            ("database", "app"),
            ("outcome", outcome),
            ("reason", reason),
        ];
        m.value("shardgate_shadow_statements_total", &labels)
    };
    assert_eq!(shadow("multi_shard", "scatter"), 2.0);
    assert_eq!(shadow("rejected", "write_without_key"), 1.0);
    assert_eq!(shadow("multi_shard", "ddl"), 0.0);
    let q = |kind| {
        let labels = [("database", "app"), ("shard", "s0"), ("kind", kind)];
        m.value("shardgate_queries_total", &labels)
    };
    assert_eq!(
        (q("select"), q("update")),
        (3.0, 1.0),
        "all of it ran on the default shard"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_and_unreachable_backends_are_counted() {
    let mut env = Env::start().await;
    let c = env.connect().await;
    c.batch_execute("BEGIN").await.unwrap();
    let pid: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    tokio::task::block_in_place(|| env.direct(&format!("SELECT pg_terminate_backend({pid})")));
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(db_error(&e).0, "08006", "{e}");
    tokio::task::block_in_place(|| env.pg.stop(shardgate::cluster::StopMode::Fast).unwrap());
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(db_error(&e).0, "08006", "{e}");
    let m = Scraped::at(env.proxy.admin_addr()).await;
    let errors = |error| {
        let labels = [("database", "app"), ("shard", "s0"), ("error", error)];
        m.value("shardgate_backend_errors_total", &labels)
    };
    assert_eq!(errors("connection_lost"), 1.0);
    assert_eq!(errors("unreachable"), 1.0);
    assert_eq!(errors("pool_timeout"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_statements_each_get_one_duration() {
    let env = Env::start().await;
    let c = env.connect().await;
    // tokio-postgres pipelines concurrent queries on one connection.
    let queries = (0..10).map(|i| {
        let c = &c;
        async move { c.query("SELECT $1::int", &[&i]).await.unwrap() }
    });
    futures_util::future::join_all(queries).await;
    // One simple query of two statements is one message to the shard.
    c.simple_query("SELECT 1; SELECT 2").await.unwrap();
    let m = Scraped::at(env.proxy.admin_addr()).await;
    let at = [("database", "app"), ("shard", "s0"), ("role", "primary")];
    let kind = [at[0], at[1], ("kind", "select")];
    assert_eq!(m.value("shardgate_queries_total", &kind), 11.0);
    let buckets = m.buckets("shardgate_query_duration_seconds", &at);
    assert_eq!(buckets.last().unwrap().1, 11.0, "{buckets:?}");
}
