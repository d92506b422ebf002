//! `cargo bench --bench route`: criterion micro-benchmarks of parse+route (issue 3): a point
//! SELECT, a 1-row INSERT and a 100-row INSERT, uncached (sqlparser runs) and cached (a hash
//! lookup), plus resolving a cached plan against a Bind's parameters, and a point SELECT whose
//! key is a literal (a new text each time, routed by its cached shape).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};

use shardgate::config::Config;
use shardgate::protocol::frontend::BindParams;
use shardgate::router::{Router, Routers};
use shardgate::topology::Snapshot;

const CONFIG: &str = "listen: 127.0.0.1:0\nusers: [{ name: a, password: b }]\ndatabases:\n  app:\n    shards:\n      s0: { primary: \"postgres://u:p@127.0.0.1:1/app\" }\n      s1: { primary: \"postgres://u:p@127.0.0.1:2/app\" }\n    sharding: { key_type: bigint, function: hash, buckets: 1024, map: [{ buckets: 0-511, shard: s0 }, { buckets: 512-1023, shard: s1 }] }\n    tables: { pgbench_accounts: aid, users: id }\n";

fn router() -> Arc<Router> {
    let config = Config::parse_with_env(CONFIG, &|_| None).expect("valid config");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = runtime.enter(); // pools are created (lazily, no connection) inside a runtime
    let snapshot = Snapshot::build(Arc::new(config), None, 1).expect("snapshot");
    Routers::default().get(&snapshot, "app", 0).expect("router")
}

fn insert_rows(n: usize) -> String {
    let rows: Vec<String> = (0..n).map(|i| format!("({i}, 'user {i}')")).collect();
    format!("INSERT INTO users (id, name) VALUES {}", rows.join(", "))
}

/// A Bind's parameter block with one text value.
fn params_block(value: &[u8]) -> Vec<u8> {
    let mut rest = Vec::new();
    rest.extend_from_slice(&0i16.to_be_bytes());
    rest.extend_from_slice(&1i16.to_be_bytes());
    rest.extend_from_slice(&(value.len() as i32).to_be_bytes());
    rest.extend_from_slice(value);
    rest.extend_from_slice(&0i16.to_be_bytes());
    rest
}

fn bench(c: &mut Criterion) {
    let router = router();
    let point = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    let cases = [
        ("point select", point.to_string()),
        ("insert 1 row", insert_rows(1)),
        ("insert 100 rows", insert_rows(100)),
    ];
    for (name, sql) in &cases {
        let mut n = 0u64;
        c.bench_function(&format!("route/uncached/{name}"), |b| {
            b.iter(|| {
                // A fresh text each time defeats the cache: a trailing comment is ignored by the parser.
                n += 1;
                let text = format!("{sql} -- {n}");
                black_box(router.plan(&text))
            })
        });
        router.plan(sql);
        c.bench_function(&format!("route/cached/{name}"), |b| {
            b.iter(|| black_box(router.plan(black_box(sql))))
        });
    }
    let rest = params_block(b"123456");
    c.bench_function("route/cached point select + resolve Bind", |b| {
        b.iter(|| {
            let plan = router.plan(black_box(point));
            let params = BindParams::decode(black_box(&rest)).expect("params");
            black_box(router.resolve(&plan, Some(&params), None))
        })
    });
    // A simple query with its key as a literal: every text differs, its shape is cached.
    let mut key = 0u64;
    c.bench_function("route/literal point select by shape + resolve", |b| {
        b.iter(|| {
            key += 1;
            let text = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {key}");
            let (planned, params) = router.plan_shape(&text).expect("one shard");
            black_box(router.resolve(&planned.plan, Some(&params), None))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
