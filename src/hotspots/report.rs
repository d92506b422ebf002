//! The body of `GET /v1/hotspots` for one database (DESIGN §2.6), and the skew figure.
//!
//! ```json
//! {
//!   "database": "app",
//!   "window_seconds": 60,
//!   "covered_seconds": 83.4,
//!   "sample_every": 16,
//!   "queries": 120000,
//!   "skew": 1.43,
//!   "shards": [{"name": "s0", "queries": 86000}, {"name": "s1", "queries": 34000}],
//!   "top_keys": [{"table": "users", "key": "42", "count": 36016, "error": 32}],
//!   "top_buckets": [{"bucket": 17, "shard": "s0", "queries": 36100}]
//! }
//! ```
//!
//! - `covered_seconds`: the figures cover the current window and the one before it, so between
//!   one and two `window_seconds` (less after a start or a reload that changed the layout;
//!   more when traffic was sparse and no report came to rotate the windows on time).
//! - `sample_every`: one key in this many goes into the key sketch; `count` and `error` are
//!   scaled back up by it (so they are multiples of it).
//! - `top_keys`: per sharded table, its most frequent keys, then all sorted by `count`. `count` is
//!   an upper bound and `count - error` a lower bound of the key's queries in the sample, scaled
//!   (Space-Saving's guarantee; with sampling the true figure also varies around the sampled one
//!   by about `sqrt(count * sample_every)`). `key` is the key as text, cut to 64 bytes (then
//!   ending in `…`); keys that agree on their first 64 bytes share a counter.
//! - `top_buckets`: hash maps only (empty for range and list maps), busiest first, with the
//!   shard that owns the bucket.
//! - `skew`: see [`skew`].

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HotspotReport {
    pub database: String,
    pub window_seconds: u64,
    pub covered_seconds: f64,
    pub sample_every: u64,
    /// Queries recorded on all shards.
    pub queries: u64,
    pub skew: f64,
    pub shards: Vec<ShardLoad>,
    pub top_keys: Vec<TopKey>,
    pub top_buckets: Vec<TopBucket>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardLoad {
    pub name: String,
    pub queries: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopKey {
    pub table: String,
    pub key: String,
    pub count: u64,
    pub error: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopBucket {
    pub bucket: u32,
    pub shard: String,
    pub queries: u64,
}

/// The busiest shard's load over the mean load of the shards that own keys (`owns`): 1.0 when
/// the load is even, `n` when one of `n` shards takes everything. With no traffic there is
/// nothing uneven: 1.0, so an alert on `skew > threshold` stays quiet.
pub fn skew(loads: &[u64], owns: &[bool]) -> f64 {
    let counted: Vec<u64> = loads
        .iter()
        .zip(owns)
        .filter(|(_, &o)| o)
        .map(|(&l, _)| l)
        .collect();
    let total: u64 = counted.iter().sum();
    let busiest = counted.iter().copied().max().unwrap_or(0);
    if total == 0 {
        return 1.0;
    }
    busiest as f64 * counted.len() as f64 / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_of_even_uneven_and_no_load() {
        assert_eq!(skew(&[100, 100], &[true, true]), 1.0);
        assert_eq!(skew(&[300, 100], &[true, true]), 1.5);
        assert_eq!(skew(&[400, 0], &[true, true]), 2.0);
        assert_eq!(skew(&[0, 0], &[true, true]), 1.0);
        // A shard that owns nothing yet is not compared.
        assert_eq!(skew(&[100, 100, 0], &[true, true, false]), 1.0);
    }
}
