//! A database's shard map at run time: key → shard index.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use super::hash::bucket_of;
use super::key::KeyValue;
use crate::config::serde_yaml_value::Scalar;
use crate::config::{DatabaseConfig, Hold, KeyType, ShardingFunction, Slice};

pub(super) enum ShardMap {
    /// One shard, no sharding section: everything goes to shard 0.
    Single,
    /// `owner[bucket]` is the shard index.
    Hash { owner: Vec<usize> },
    /// `[from, to)` ranges in ascending order; `None` is unbounded.
    Range(Vec<(Option<KeyValue>, Option<KeyValue>, usize)>),
    List {
        owner: HashMap<KeyValue, usize>,
        default: Option<usize>,
    },
}

impl ShardMap {
    /// Builds the map of a validated config; `index` maps a shard name to its index.
    pub fn new(db: &DatabaseConfig, index: impl Fn(&str) -> Option<usize>) -> ShardMap {
        let Some(s) = &db.sharding else {
            return ShardMap::Single;
        };
        let typed = |v: &Scalar| typed(s.key_type, v);
        let shard = |name: &str| index(name).unwrap_or(0);
        match s.function {
            ShardingFunction::Hash => {
                let count = s.buckets.unwrap_or(1) as usize;
                let mut owner = vec![0; count];
                for e in &s.map {
                    let range = e
                        .buckets
                        .as_deref()
                        .and_then(|b| crate::config::parse_bucket_range(b, count as u32).ok());
                    if let Some((a, b)) = range {
                        owner[a as usize..=b as usize].fill(shard(&e.shard));
                    }
                }
                ShardMap::Hash { owner }
            }
            ShardingFunction::Range => ShardMap::Range(
                s.map
                    .iter()
                    .map(|e| {
                        let bound = |b: &Option<Scalar>| b.as_ref().and_then(typed);
                        (bound(&e.from), bound(&e.to), shard(&e.shard))
                    })
                    .collect(),
            ),
            ShardingFunction::List => ShardMap::List {
                owner: s
                    .map
                    .iter()
                    .flat_map(|e| {
                        let i = shard(&e.shard);
                        e.values
                            .iter()
                            .flatten()
                            .filter_map(typed)
                            .map(move |v| (v, i))
                    })
                    .collect(),
                default: db.default_shard.as_deref().and_then(&index),
            },
        }
    }

    /// The shard owning `key`, or `None` when no range or list entry covers it.
    pub fn shard_of(&self, key: &KeyValue) -> Option<usize> {
        match self {
            ShardMap::Single => Some(0),
            ShardMap::Hash { owner } => {
                let bucket = bucket_of(key.hash(), owner.len() as u32);
                owner.get(bucket as usize).copied()
            }
            ShardMap::Range(ranges) => ranges
                .iter()
                .find(|(from, to, _)| in_range(key, from.as_ref(), to.as_ref()))
                .map(|r| r.2),
            ShardMap::List { owner, default } => owner.get(key).copied().or(*default),
        }
    }

    /// The bucket of a key under a hash map.
    pub fn bucket(&self, key: &KeyValue) -> Option<u32> {
        match self {
            ShardMap::Hash { owner } => Some(bucket_of(key.hash(), owner.len() as u32)),
            _ => None,
        }
    }

    /// Shards that own some key: where a read without a key must go.
    pub fn owners(&self, shard_count: usize) -> Vec<usize> {
        let mut all: Vec<usize> = match self {
            ShardMap::Single => vec![0],
            ShardMap::Hash { owner } => owner.clone(),
            ShardMap::Range(ranges) => ranges.iter().map(|r| r.2).collect(),
            ShardMap::List { owner, default } => owner.values().copied().chain(*default).collect(),
        };
        all.sort_unstable();
        all.dedup();
        all.retain(|&i| i < shard_count);
        all
    }
}

/// A map's range bound or list value as a key (`None` if it does not read as one, which a
/// validated config rules out).
fn typed(key_type: KeyType, v: &Scalar) -> Option<KeyValue> {
    KeyValue::from_text(key_type, &v.text()).ok()
}

/// Whether `key` is in `[from, to)` (`None`: unbounded).
fn in_range(key: &KeyValue, from: Option<&KeyValue>, to: Option<&KeyValue>) -> bool {
    from.is_none_or(|f| key >= f) && to.is_none_or(|t| key < t)
}

/// The keys a resharding cutover holds, typed like the keys statements give.
pub(super) struct Held {
    keys: HeldKeys,
    until: SystemTime,
}

enum HeldKeys {
    Buckets(u32, u32),
    Range(Option<KeyValue>, Option<KeyValue>),
    Values(HashSet<KeyValue>),
}

impl Held {
    pub fn new(hold: &Hold, key_type: KeyType) -> Held {
        let bound = |b: &Option<Scalar>| b.as_ref().and_then(|v| typed(key_type, v));
        let keys = match &hold.slice {
            Slice::Buckets { first, last } => HeldKeys::Buckets(*first, *last),
            Slice::Range { from, to } => HeldKeys::Range(bound(from), bound(to)),
            Slice::Values(values) => {
                HeldKeys::Values(values.iter().filter_map(|v| typed(key_type, v)).collect())
            }
        };
        Held {
            keys,
            until: hold.until,
        }
    }

    /// Whether the hold is still in force.
    pub fn in_force(&self) -> bool {
        SystemTime::now() < self.until
    }

    /// Whether `key` (under `map`) is held now.
    pub fn holds(&self, map: &ShardMap, key: &KeyValue) -> bool {
        let within = match &self.keys {
            HeldKeys::Buckets(first, last) => map
                .bucket(key)
                .is_some_and(|b| (*first..=*last).contains(&b)),
            HeldKeys::Range(from, to) => in_range(key, from.as_ref(), to.as_ref()),
            HeldKeys::Values(values) => values.contains(key),
        };
        within && self.in_force()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn held(slice: Slice, key_type: KeyType, for_ms: i64) -> Held {
        let now = SystemTime::now();
        let until = if for_ms >= 0 {
            now + Duration::from_millis(for_ms as u64)
        } else {
            now - Duration::from_millis(for_ms.unsigned_abs())
        };
        Held::new(&Hold { slice, until }, key_type)
    }

    #[test]
    fn a_hold_covers_its_range_its_values_or_its_buckets_until_it_ends() {
        let map = ShardMap::Hash { owner: vec![0; 8] };
        let int = |i: i64| KeyValue::Int(i);
        let text = |t: &str| KeyValue::Text(t.into());
        let range = Slice::Range {
            from: Some(Scalar::Int(150)),
            to: Some(Scalar::Int(200)),
        };
        let h = held(range, KeyType::Bigint, 60_000);
        let holds: Vec<bool> = [149, 150, 199, 200].map(|k| h.holds(&map, &int(k))).into();
        assert_eq!(holds, [false, true, true, false]);
        let open = Slice::Range {
            from: Some(Scalar::Text("K".into())),
            to: None,
        };
        let h = held(open, KeyType::Text, 60_000);
        // In byte order "Z" (0x5a) and "a" (0x61) are both above "K" (0x4b).
        let holds: Vec<bool> = ["J", "K", "Z", "a"].map(|k| h.holds(&map, &text(k))).into();
        assert_eq!(holds, [false, true, true, true]);
        let values = Slice::Values(vec![Scalar::Int(3), Scalar::Int(7)]);
        let h = held(values.clone(), KeyType::Bigint, 60_000);
        assert!(h.holds(&map, &int(7)) && !h.holds(&map, &int(4)));
        let over = held(values, KeyType::Bigint, -1);
        assert!(!over.holds(&map, &int(7)) && !over.in_force());
        let all = held(
            Slice::Buckets { first: 0, last: 7 },
            KeyType::Bigint,
            60_000,
        );
        assert!(all.holds(&map, &int(12345)));
        let none = Slice::Buckets { first: 9, last: 9 };
        assert!(!held(none, KeyType::Bigint, 60_000).holds(&map, &int(12345)));
    }
}
