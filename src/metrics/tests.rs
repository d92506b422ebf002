//! The recorder on its own: separate proxies, buckets, handles across reloads.

use super::*;

#[test]
fn two_recorders_count_apart() {
    let (a, b) = (Metrics::new(), Metrics::new());
    let shards = [("s0".into(), false), ("s1".into(), false)];
    a.database("app", &shards, 0).query(1, Kind::Insert);
    a.database("app", &shards, 0).query(1, Kind::Insert);
    b.database("app", &shards, 0).query(1, Kind::Insert);
    let line =
        "shardgate_queries_total{database=\"app\",shard=\"s1\",role=\"primary\",kind=\"insert\"}";
    assert!(a.render(1, &[]).contains(&format!("{line} 2")));
    assert!(b.render(1, &[]).contains(&format!("{line} 1")));
}

#[test]
fn durations_are_a_histogram_with_the_configured_buckets() {
    let m = Metrics::new();
    let db = m.database("app", &[("s0".into(), false)], 0);
    db.duration(0, Duration::from_micros(300));
    db.duration(0, Duration::from_millis(30));
    let text = m.render(1, &[]);
    assert!(
        text.contains("# TYPE shardgate_query_duration_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("shardgate_query_duration_seconds_bucket{database=\"app\",shard=\"s0\",role=\"primary\",le=\"0.0005\"} 1"), "{text}");
    assert!(text.contains("shardgate_query_duration_seconds_count{database=\"app\",shard=\"s0\",role=\"primary\"} 2"), "{text}");
}

#[test]
fn a_reload_that_keeps_the_shards_keeps_the_handles_and_counts_carry_over() {
    let m = Metrics::new();
    let one = [("s0".into(), false)];
    let two = [("s0".into(), false), ("s1".into(), false)];
    let first = m.database("app", &one, 0);
    assert!(Arc::ptr_eq(&first, &m.database("app", &one, 0)));
    first.query(0, Kind::Select);
    m.database("app", &two, 0).query(0, Kind::Select);
    m.database("app", &two, 0).query(5, Kind::Select); // out of range: ignored
    assert!(m
        .render(2, &[])
        .contains("shard=\"s0\",role=\"primary\",kind=\"select\"} 2"));
}

#[test]
fn the_client_gauge_goes_back_down() {
    let m = Metrics::new();
    let g = m.client_connected();
    assert!(m
        .render(1, &[])
        .contains("shardgate_client_connections 1\n"));
    drop(g);
    let text = m.render(1, &[]);
    assert!(text.contains("shardgate_client_connections 0\n"), "{text}");
    assert!(
        text.contains("shardgate_client_connections_accepted_total 1\n"),
        "{text}"
    );
}

#[test]
fn replica_series_exist_for_shards_with_replicas_only() {
    let m = Metrics::new();
    let db = m.database("app", &[("s0".into(), true), ("s1".into(), false)], 0);
    let replica = |shard| At {
        shard,
        replica: true,
    };
    db.query(replica(0), Kind::Select);
    db.query(replica(1), Kind::Select); // no replicas: ignored
    db.query(0, Kind::Select);
    let text = m.render(1, &[]);
    let line = |shard, role| {
        format!("shardgate_queries_total{{database=\"app\",shard=\"{shard}\",role=\"{role}\",kind=\"select\"}}")
    };
    assert!(
        text.contains(&format!("{} 1", line("s0", "replica"))),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} 1", line("s0", "primary"))),
        "{text}"
    );
    assert!(!text.contains(&line("s1", "replica")), "{text}");
}

#[test]
fn a_histogram_series_is_cumulative_with_inclusive_bounds_a_sum_and_a_count() {
    let m = Metrics::new();
    let db = m.database("app", &[("s0".into(), false)], 0);
    db.checkout_wait(0, Duration::from_micros(100)); // on the first bound: in it
    db.checkout_wait(0, Duration::from_nanos(100_001));
    db.checkout_wait(0, Duration::from_secs(11)); // above every bound
    let text = m.render(1, &[]);
    let labels = "database=\"app\",shard=\"s0\",role=\"primary\"";
    let name = "shardgate_pool_checkout_wait_seconds";
    let mut want = format!(
        "# HELP {name} Time a client waited for a server connection.\n# TYPE {name} histogram\n"
    );
    let counts = [1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2];
    for (bound, n) in DURATION_BUCKETS.iter().zip(counts) {
        want += &format!("{name}_bucket{{{labels},le=\"{bound}\"}} {n}\n");
    }
    want += &format!("{name}_bucket{{{labels},le=\"+Inf\"}} 3\n");
    want += &format!("{name}_sum{{{labels}}} 11.000200001\n");
    want += &format!("{name}_count{{{labels}}} 3\n");
    assert!(text.contains(&want), "{text}");
    // The whole exposition parses, with both histogram families in it.
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition");
    let families: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    assert!(families.contains(name), "{families:?}");
    assert!(
        families.contains("shardgate_query_duration_seconds"),
        "{families:?}"
    );
}

#[test]
fn histogram_counts_carry_over_a_rebuild_of_the_handles() {
    let m = Metrics::new();
    m.database("app", &[("s0".into(), false)], 0)
        .duration(0, Duration::from_millis(1));
    m.database("app", &[("s0".into(), false), ("s1".into(), false)], 0)
        .duration(0, Duration::from_millis(1));
    let text = m.render(2, &[]);
    assert!(text.contains("shardgate_query_duration_seconds_count{database=\"app\",shard=\"s0\",role=\"primary\"} 2"), "{text}");
}

#[test]
fn each_worker_adds_into_cells_of_its_own_and_the_scrape_sums_them() {
    let m = Metrics::new();
    let shards = [("s0".into(), false)];
    let (w0, w1) = (m.database("app", &shards, 0), m.database("app", &shards, 1));
    assert!(!Arc::ptr_eq(&w0, &w1));
    // Not one atomic shared by both workers: that is what the cells are for.
    let cell = |db: &DbMetrics| Arc::as_ptr(&db.shards[0].queries[Kind::Select as usize]);
    assert_ne!(cell(&w0), cell(&w1));
    w0.query(0, Kind::Select);
    w1.query(0, Kind::Select);
    w1.query(0, Kind::Select);
    w0.received(5);
    w1.received(7);
    w0.duration(0, Duration::from_micros(300));
    w1.duration(0, Duration::from_millis(30));
    let text = m.render(1, &[]);
    let at = "database=\"app\",shard=\"s0\",role=\"primary\"";
    for line in [
        format!("shardgate_queries_total{{{at},kind=\"select\"}} 3\n"),
        "shardgate_client_received_bytes_total{database=\"app\"} 12\n".to_string(),
        format!("shardgate_query_duration_seconds_bucket{{{at},le=\"0.0005\"}} 1\n"),
        format!("shardgate_query_duration_seconds_count{{{at}}} 2\n"),
        format!("shardgate_query_duration_seconds_sum{{{at}}} 0.0303\n"),
    ] {
        assert!(text.contains(&line), "{line} not in {text}");
    }
    // One HELP and TYPE per family, whatever the number of workers.
    assert_eq!(
        text.matches("# TYPE shardgate_queries_total counter\n")
            .count(),
        1
    );
}
