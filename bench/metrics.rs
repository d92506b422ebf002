//! `cargo bench --bench metrics`: what the query path pays per statement for the metrics (issue 4):
//! the statement kind from its first keyword, the shard-and-kind counter, the routing decision,
//! two clock reads and the duration histogram — next to the same counter looked up by name
//! through the `metrics` macros, which is what pre-registered handles avoid. And on two workers at
//! once: each with cells of its own, against both adding into one set of cells, which is what the
//! exporter's counters did (their cache lines passed between the cores on every add).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use shardgate::metrics::{DbMetrics, Decision, Kind, Metrics};
use shardgate::router::report::kind_of;

const SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";

fn bench(c: &mut Criterion) {
    let metrics = Metrics::new();
    let shards: Vec<(Arc<str>, bool)> = vec![("s0".into(), false), ("s1".into(), false)];
    let db = metrics.database("app", &shards, 0);
    c.bench_function("metrics/kind_of", |b| b.iter(|| kind_of(black_box(SQL))));
    c.bench_function("metrics/query counter (handle)", |b| {
        b.iter(|| db.query(black_box(1), Kind::Select))
    });
    c.bench_function("metrics/duration histogram (handle)", |b| {
        b.iter(|| db.duration(black_box(1), Duration::from_micros(250)))
    });
    c.bench_function("metrics/per statement (all of it)", |b| {
        b.iter(|| {
            db.decision(Decision::SingleShard);
            db.query(black_box(1), kind_of(black_box(SQL)));
            let sent = Instant::now();
            db.duration(1, sent.elapsed());
        })
    });
    two_workers(c, &metrics, &shards);
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    c.bench_function("metrics/query counter (macro, key lookup)", |b| {
        metrics::with_local_recorder(&recorder, || {
            b.iter(|| {
                metrics::counter!("shardgate_queries_total", "database" => "app", "shard" => "s1", "role" => "primary", "kind" => "select")
                    .increment(1)
            })
        })
    });
}

/// What a pgbench `-S` query records (bytes in and out, its statement, its duration, the wait for
/// its transaction's connection), between stretches of other work as on the query path, on two
/// threads at once. The time is per query of one thread, filler included: compare the lines.
fn two_workers(c: &mut Criterion, metrics: &Metrics, shards: &[(Arc<str>, bool)]) {
    let own = [
        metrics.database("app", shards, 0),
        metrics.database("app", shards, 1),
    ];
    let one = [own[0].clone(), own[0].clone()];
    let mut group = c.benchmark_group("metrics/a query on each of 2 workers");
    group.bench_function("filler only", |b| {
        b.iter_custom(|n| on_two_threads(n, None))
    });
    group.bench_function("one set of cells", |b| {
        b.iter_custom(|n| on_two_threads(n, Some(&one)))
    });
    group.bench_function("cells per worker", |b| {
        b.iter_custom(|n| on_two_threads(n, Some(&own)))
    });
    group.finish();
}

fn on_two_threads(queries: u64, dbs: Option<&[Arc<DbMetrics>; 2]>) -> Duration {
    let took: Vec<Duration> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..2)
            .map(|w| {
                let db = dbs.map(|d| d[w].clone());
                s.spawn(move || {
                    let started = Instant::now();
                    for _ in 0..queries {
                        if let Some(db) = &db {
                            record_query(db);
                        }
                        filler();
                    }
                    started.elapsed()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("no panic"))
            .collect()
    });
    took.into_iter().max().expect("two threads")
}

fn record_query(db: &DbMetrics) {
    db.received(black_box(31));
    let sent = Instant::now();
    db.checkout_wait(0, Duration::from_micros(black_box(3)));
    db.query(0, Kind::Select);
    db.duration(0, sent.elapsed());
    db.sent(black_box(60));
}

/// About a microsecond of work that touches no shared memory.
fn filler() {
    let mut x = 1u64;
    for _ in 0..300 {
        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
