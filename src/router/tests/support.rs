//! Routers built from YAML, bind parameters built as a client would send them, and the owner of a
//! key computed independently of the router's own map.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::pool::{Pool, PoolSettings};
use crate::router::hash::{bucket_of, hash_int};
use crate::router::{Params, Plan, RouteError, Router, Target};
use crate::topology::columns::Columns;
use crate::topology::{Database, Shard};

/// Three shards, hash sharding over 1024 buckets (s0 0-340, s1 341-681, s2 682-1023).
pub const HASH: &str = r#"
    shards:
      s0: { primary: "postgres://u:p@127.0.0.1:1/app" }
      s1: { primary: "postgres://u:p@127.0.0.1:2/app" }
      s2: { primary: "postgres://u:p@127.0.0.1:3/app" }
    sharding:
      key_type: bigint
      function: hash
      buckets: 1024
      map:
        - { buckets: 0-340, shard: s0 }
        - { buckets: 341-681, shard: s1 }
        - { buckets: 682-1023, shard: s2 }
    tables: { users: id, orders: user_id, order_items: user_id }
    reference_tables: [countries, plans]
    default_shard: s0
"#;

/// Where keys of [`HASH`] live, from the partition hash alone (not the router's map).
pub fn owner(key: i64) -> usize {
    match bucket_of(hash_int(key), 1024) {
        0..=340 => 0,
        341..=681 => 1,
        _ => 2,
    }
}

/// The smallest non-negative keys that land on s0, s1 and s2 under [`HASH`].
pub fn key_on(shard: usize) -> i64 {
    (0..).find(|&k| owner(k) == shard).expect("some key")
}

/// A key on another shard than `k`.
pub fn key_off(k: i64) -> i64 {
    (0..).find(|&j| owner(j) != owner(k)).expect("some key")
}

/// The HASH database with `extra` lines appended to its YAML (e.g. a `routing:` section), or with
/// `from` replaced by `to` in it.
pub fn hash_with(from: &str, to: &str) -> Router {
    assert!(HASH.contains(from), "{from:?} is not in the HASH config");
    router(&HASH.replacen(from, to, 1))
}

pub fn hash() -> Router {
    router(HASH)
}

/// A router for database `app` configured by `db` (the YAML under `databases.app`, indented four
/// spaces), as the proxy would build it.
pub fn router(db: &str) -> Router {
    router_with_columns(db, None)
}

/// [`router`], knowing the sharded tables' columns as if read from the shards.
pub fn router_with_columns(db: &str, columns: Option<Columns>) -> Router {
    build(db, columns, None)
}

/// [`router`] while a resharding cutover holds `hold`.
pub fn router_holding(db: &str, hold: crate::config::Hold) -> Router {
    build(db, None, Some(hold))
}

fn build(db: &str, columns: Option<Columns>, hold: Option<crate::config::Hold>) -> Router {
    let yaml = format!(
        "listen: 127.0.0.1:0\nusers: [{{ name: a, password: b }}]\ndatabases:\n  app:\n{db}"
    );
    let mut config = Config::parse_with_env(&yaml, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    if let Some(sharding) = config
        .databases
        .get_mut("app")
        .and_then(|d| d.sharding.as_mut())
    {
        sharding.held = hold;
    }
    let db_config = &config.databases["app"];
    // Pools connect lazily, but building one starts bb8's reaper: give it a runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let settings = PoolSettings {
        size: 1,
        checkout_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        workers: 1,
    };
    let shards: Vec<Shard> = db_config
        .shards
        .keys()
        .enumerate()
        .map(|(i, name)| {
            let target = crate::backend::Target {
                host: "127.0.0.1".into(),
                port: 1 + i as u16,
                user: "u".into(),
                password: Some("p".into()),
                database: "app".into(),
            };
            Shard {
                name: Arc::from(name.as_str()),
                primary: Pool::new(name, target, settings),
                replicas: Vec::new(),
                writer: Default::default(),
            }
        })
        .collect();
    let default_shard = db_config
        .default_shard
        .as_ref()
        .and_then(|d| shards.iter().position(|s| &*s.name == d));
    let db = Database {
        name: "app".into(),
        shards,
        default_shard,
    };
    Router::new(db_config, &db, 1, columns.map(Arc::new))
}

/// One bind parameter as a client sends it.
#[derive(Clone, Debug)]
pub enum P {
    /// Text format.
    T(String),
    /// Binary int8.
    B8(i64),
    /// Binary int4.
    B4(i32),
    /// Binary one-dimensional int8[] (`None` elements are NULL).
    BArr(Vec<Option<i64>>),
    Null,
}

pub fn t(s: impl ToString) -> P {
    P::T(s.to_string())
}

/// The part of a Bind message after the statement name: per-parameter format codes, values.
pub fn bind_bytes(params: &[P]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend((params.len() as i16).to_be_bytes());
    for p in params {
        let binary = matches!(p, P::B8(_) | P::B4(_) | P::BArr(_));
        out.extend((binary as i16).to_be_bytes());
    }
    out.extend((params.len() as i16).to_be_bytes());
    for p in params {
        let value: Option<Vec<u8>> = match p {
            P::T(s) => Some(s.as_bytes().to_vec()),
            P::B8(v) => Some(v.to_be_bytes().to_vec()),
            P::B4(v) => Some(v.to_be_bytes().to_vec()),
            P::BArr(items) => Some(int8_array(items)),
            P::Null => None,
        };
        match value {
            Some(v) => {
                out.extend((v.len() as i32).to_be_bytes());
                out.extend(v);
            }
            None => out.extend((-1i32).to_be_bytes()),
        }
    }
    out
}

/// `int8[]` in binary format: ndim, has-null flag, element oid, (length, lower bound), elements.
fn int8_array(items: &[Option<i64>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(1i32.to_be_bytes());
    out.extend((items.iter().any(Option::is_none) as i32).to_be_bytes());
    out.extend(20i32.to_be_bytes());
    out.extend((items.len() as i32).to_be_bytes());
    out.extend(1i32.to_be_bytes());
    for item in items {
        match item {
            Some(v) => {
                out.extend(8i32.to_be_bytes());
                out.extend(v.to_be_bytes());
            }
            None => out.extend((-1i32).to_be_bytes()),
        }
    }
    out
}

/// Plans `sql` and resolves it with `params` (a simple query when `None`), outside a transaction.
pub fn route(r: &Router, sql: &str, params: Option<&[P]>) -> Result<Target, RouteError> {
    let plan = r.plan(sql);
    match params {
        None => r.resolve(&plan, None, None),
        Some(ps) => {
            let bytes = bind_bytes(ps);
            let decoded = Params::decode(&bytes).expect("valid bind");
            r.resolve(&plan, Some(&decoded), None)
        }
    }
}

/// A simple query's target.
pub fn simple(r: &Router, sql: &str) -> Result<Target, RouteError> {
    route(r, sql, None)
}

/// An extended-protocol statement's target.
pub fn ext(r: &Router, sql: &str, params: &[P]) -> Result<Target, RouteError> {
    route(r, sql, Some(params))
}

pub fn plan(r: &Router, sql: &str) -> Plan {
    (*r.plan(sql)).clone()
}

/// The plan of a multi-row INSERT, after checking it can be split into `rows` rows; the split
/// itself is left out so the rest of the plan can be compared with `assert_eq!`.
pub fn plan_split(r: &Router, sql: &str, rows: usize) -> Plan {
    let mut plan = plan(r, sql);
    if let Plan::Keyed(keyed) = &mut plan {
        match keyed.split.take().as_deref() {
            Some(Ok(split)) => assert_eq!(split.rows(), rows, "rows of {sql}"),
            other => panic!("{sql}: expected a split into {rows} rows, got {other:?}"),
        }
    }
    plan
}

/// The single shard a statement must go to.
pub fn one(shard: usize) -> Result<Target, RouteError> {
    Ok(Target::Shard(shard))
}

pub fn all3() -> Result<Target, RouteError> {
    Ok(Target::Shards(vec![0, 1, 2]))
}

/// The sorted, distinct owners of `keys` as one target.
pub fn owners(keys: &[i64]) -> Target {
    let mut s: Vec<usize> = keys.iter().map(|&k| owner(k)).collect();
    s.sort_unstable();
    s.dedup();
    match s.as_slice() {
        [one] => Target::Shard(*one),
        _ => Target::Shards(s),
    }
}

/// Asserts the plan is a rejection and returns its error.
#[track_caller]
pub fn rejected(r: &Router, sql: &str) -> RouteError {
    match plan(r, sql) {
        Plan::Reject(e) => e,
        other => panic!("expected a rejection for {sql:?}, got {other:?}"),
    }
}

/// A short name for a plan's kind (for asserts over many statements, and the corpus summary).
pub fn kind(p: &Plan) -> &'static str {
    match p {
        Plan::Anywhere => "Anywhere",
        Plan::Begin => "Begin",
        Plan::End => "End",
        Plan::Home { .. } => "Home",
        Plan::Reference => "Reference",
        Plan::Keyed(_) => "Keyed",
        Plan::Scatter(_) => "Scatter",
        Plan::CopyIn(_) => "CopyIn",
        Plan::Broadcast(_) => "Broadcast",
        Plan::Shard(_) => "Shard",
        Plan::Unparsed { .. } => "Unparsed",
        Plan::Multi(_) => "Multi",
        Plan::ListColumns(_) => "ListColumns",
        Plan::Reject(_) => "Reject",
    }
}
