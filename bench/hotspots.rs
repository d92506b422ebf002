//! `cargo bench --bench hotspots`: what `Hotspots::record` costs a query (issue 4's "the cost on
//! the query path must stay small"), alone and with two threads recording into the same
//! database at once, for several sampling rates and key mixes.
//!
//! Keys, buckets and shards are computed before timing: the session has them from routing
//! (the bucket costs one more hash, `Router::bucket`, not measured here).

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use shardgate::config::Config;
use shardgate::hotspots::{Hotspots, Layout, Settings};
use shardgate::router::hash::bucket_of;
use shardgate::router::KeyValue;

const CONFIG: &str = "listen: 127.0.0.1:0\nusers: [{ name: a, password: b }]\ndatabases:\n  app:\n    shards:\n      s0: { primary: \"postgres://u:p@127.0.0.1:1/app\" }\n      s1: { primary: \"postgres://u:p@127.0.0.1:2/app\" }\n    sharding: { key_type: bigint, function: hash, buckets: 1024, map: [{ buckets: 0-511, shard: s0 }, { buckets: 512-1023, shard: s1 }] }\n    tables: { users: id }\n";

type Query = (KeyValue, Option<u32>, usize);

fn hotspots(sample_every: u64) -> Arc<Hotspots> {
    let config = Config::parse_with_env(CONFIG, &|_| None).expect("valid config");
    let db = &config.databases["app"];
    let names: Vec<Arc<str>> = db.shards.keys().map(|s| s.as_str().into()).collect();
    let settings = Settings {
        sample_every,
        ..Settings::default()
    };
    Arc::new(Hotspots::new("app", Layout::new(db, &names), settings))
}

/// 64k queries: uniform over 100k keys, or with one key taking 30%; text keys are 36 bytes.
fn queries(skewed: bool, text: bool) -> Vec<Query> {
    (0..65_536u64)
        .map(|i| {
            let n = if skewed && i % 10 < 3 {
                42
            } else {
                (i * 7_919) % 100_000
            };
            let key = if text {
                KeyValue::Text(format!("customer-{n:027}"))
            } else {
                KeyValue::Int(n as i64)
            };
            let bucket = bucket_of(key.hash(), 1024);
            (key, Some(bucket), usize::from(bucket >= 512))
        })
        .collect()
}

fn run(h: &Hotspots, queries: &[Query], start: usize, iters: u64) {
    for i in 0..iters as usize {
        let (key, bucket, shard) = &queries[(start + i) % queries.len()];
        h.record("users", black_box(key), *bucket, *shard);
    }
}

/// `threads` threads each record `iters` queries at once; the time is the slowest thread's,
/// so it reads as time per record per thread.
fn contended(h: &Arc<Hotspots>, queries: &Arc<Vec<Query>>, threads: usize, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (h, q, barrier) = (h.clone(), queries.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                run(&h, &q, t * 1_000, iters);
                started.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|t| t.join().expect("bench thread"))
        .max()
        .unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("hotspots");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    let cases = [
        ("int uniform", false, false),
        ("int skewed", true, false),
        ("text skewed", true, true),
    ];
    for (mix, skewed, text) in cases {
        let q = Arc::new(queries(skewed, text));
        for every in [1u64, 8, 16, 64] {
            let h = hotspots(every);
            let mut at = 0;
            group.bench_function(format!("record/1 thread/{mix}/1 in {every}"), |b| {
                b.iter_custom(|iters| {
                    let started = Instant::now();
                    run(&h, &q, at, iters);
                    at += iters as usize;
                    started.elapsed()
                })
            });
            let h = hotspots(every);
            group.bench_function(format!("record/2 threads/{mix}/1 in {every}"), |b| {
                b.iter_custom(|iters| contended(&h, &q, 2, iters))
            });
        }
    }
    let h = hotspots(8);
    run(&h, &queries(true, false), 0, 100_000);
    group.bench_function("report/top 10 after 100k", |b| {
        b.iter(|| black_box(h.report(10)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
