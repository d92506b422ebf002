//! `cargo bench --bench metrics`: what the query path pays per statement for the metrics (issue 4):
//! the statement kind from its first keyword, the shard-and-kind counter, the routing decision,
//! two clock reads and the duration histogram — next to the same counter looked up by name
//! through the `metrics` macros, which is what pre-registered handles avoid.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use shardgate::metrics::{Decision, Kind, Metrics};
use shardgate::router::report::kind_of;

const SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";

fn bench(c: &mut Criterion) {
    let metrics = Metrics::new();
    let shards: Vec<(Arc<str>, bool)> = vec![("s0".into(), false), ("s1".into(), false)];
    let db = metrics.database("app", &shards);
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

criterion_group!(benches, bench);
criterion_main!(benches);
