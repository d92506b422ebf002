//! A resharding cutover's hold: which statements wait for the new map.

use std::time::{Duration, SystemTime};

use super::support::*;
use crate::config::serde_yaml_value::Scalar;
use crate::config::{Hold, Slice};

const RANGE: &str = r#"
    shards:
      s0: { primary: "postgres://u:p@127.0.0.1:1/app" }
      s1: { primary: "postgres://u:p@127.0.0.1:2/app" }
    sharding:
      key_type: bigint
      function: range
      map:
        - { from: null, to: 1000, shard: s0 }
        - { from: 1000, to: null, shard: s1 }
    tables: { users: id }
    reference_tables: [countries]
    routing: { cross_shard_writes: allow }
    default_shard: s0
"#;

fn holding(until: SystemTime) -> crate::router::Router {
    let slice = Slice::Range {
        from: Some(Scalar::Int(100)),
        to: Some(Scalar::Int(200)),
    };
    router_holding(RANGE, Hold { slice, until })
}

#[test]
fn the_slices_keys_and_statements_without_a_key_wait_and_nothing_else() {
    let r = holding(SystemTime::now() + Duration::from_secs(60));
    assert!(r.holding());
    let held = |sql: &str| r.holds(&plan(&r, sql), None);
    for sql in [
        "SELECT * FROM users WHERE id = 150",
        "UPDATE users SET name = 'x' WHERE id = 199",
        "INSERT INTO users (id) VALUES (100)",
        // Without a key: any row, the slice's among them.
        "SELECT count(*) FROM users",
        "UPDATE users SET name = 'x'",
    ] {
        assert!(held(sql), "{sql}");
    }
    for sql in [
        "SELECT * FROM users WHERE id = 99",
        "SELECT * FROM users WHERE id = 200",
        "DELETE FROM users WHERE id = 5000",
        "SELECT * FROM countries",
        "SELECT 1",
        "BEGIN",
    ] {
        assert!(!held(sql), "{sql}");
    }
}

#[test]
fn a_hold_past_its_bound_holds_nothing() {
    let r = holding(SystemTime::now() - Duration::from_millis(1));
    assert!(!r.holding());
    for sql in [
        "SELECT * FROM users WHERE id = 150",
        "SELECT count(*) FROM users",
    ] {
        assert!(!r.holds(&plan(&r, sql), None), "{sql}");
    }
}
