//! Which shard owns which keys, compared between the running config and a reloaded one.
//!
//! A reload must never change the owner of a key that already has one: the rows are on the old
//! owner, and routing them elsewhere would answer reads wrongly and scatter writes. Moving data is
//! what resharding is for. A reload may add capacity that owns nothing yet (a new shard, a range
//! or list value that no shard owned) and may change anything that is not ownership (pool sizes,
//! replicas, tables, routing options). Shards are compared by name: pointing a shard at another
//! server (a failover) is the operator's call, not a move.
//!
//! Pure: works on the two configs only (the router's key types sit above this module).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::config::serde_yaml_value::Scalar;
use crate::config::{Config, DatabaseConfig, KeyType, ShardingConfig, ShardingFunction};

/// Why `new` would move keys that `old` gives a shard, one line per database and move; empty when
/// the reload keeps every owner.
pub fn moves(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (name, before) in &old.databases {
        let Some(after) = new.databases.get(name) else {
            continue; // a database taken out of service moves nothing
        };
        out.extend(
            database_moves(before, after)
                .into_iter()
                .map(|m| format!("databases.{name}: {m}")),
        );
    }
    out
}

fn database_moves(old: &DatabaseConfig, new: &DatabaseConfig) -> Vec<String> {
    let only_shard = |db: &DatabaseConfig| match db.shards.keys().collect::<Vec<_>>().as_slice() {
        [only] => Some(only.to_string()),
        _ => None,
    };
    match (&old.sharding, &new.sharding) {
        // An unsharded database sends everything to its one server, whatever the shard is called.
        (None, None) => Vec::new(),
        (None, Some(s)) => match only_shard(old) {
            Some(owner) => all_owned_by(s, new, &owner),
            None => Vec::new(),
        },
        (Some(s), None) => match only_shard(new) {
            Some(owner) => all_owned_by(s, old, &owner),
            None => Vec::new(),
        },
        (Some(a), Some(b)) => sharded_moves(a, old, b, new),
    }
}

/// When one side is a single unsharded shard: every key of the other side's map must be its.
fn all_owned_by(s: &ShardingConfig, db: &DatabaseConfig, owner: &str) -> Vec<String> {
    let others: Vec<&str> = s
        .map
        .iter()
        .map(|e| e.shard.as_str())
        .chain(match s.function {
            ShardingFunction::List => db.default_shard.as_deref(),
            _ => None,
        })
        .filter(|shard| *shard != owner)
        .collect();
    if others.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "every key is on shard \"{owner}\" when the database has one shard, but the new map gives keys to {}",
        quoted(&others)
    )]
}

fn sharded_moves(
    a: &ShardingConfig,
    old: &DatabaseConfig,
    b: &ShardingConfig,
    new: &DatabaseConfig,
) -> Vec<String> {
    if a.function != b.function || a.key_type != b.key_type {
        return vec![format!(
            "the sharding function or key type changes ({:?} {:?} -> {:?} {:?}), which moves keys between shards",
            a.function, a.key_type, b.function, b.key_type
        )];
    }
    match a.function {
        ShardingFunction::Hash => hash_moves(a, b),
        ShardingFunction::Range => range_moves(a, b),
        ShardingFunction::List => list_moves(a, old, b, new),
    }
}

/// The owner of each bucket, by shard name.
fn bucket_owners(s: &ShardingConfig) -> Vec<Option<&str>> {
    let count = s.buckets.unwrap_or(1);
    let mut owner = vec![None; count as usize];
    for e in &s.map {
        let range = e
            .buckets
            .as_deref()
            .and_then(|b| crate::config::parse_bucket_range(b, count).ok());
        if let Some((first, last)) = range {
            owner[first as usize..=last as usize].fill(Some(e.shard.as_str()));
        }
    }
    owner
}

fn hash_moves(a: &ShardingConfig, b: &ShardingConfig) -> Vec<String> {
    if a.buckets != b.buckets {
        return vec![format!(
            "sharding.buckets changes from {} to {}, which gives most keys another bucket",
            a.buckets.unwrap_or(1),
            b.buckets.unwrap_or(1)
        )];
    }
    let (before, after) = (bucket_owners(a), bucket_owners(b));
    // Runs of consecutive buckets that move between the same two shards, reported as one range.
    let mut out = Vec::new();
    let mut run: Option<(usize, usize, &str, &str)> = None;
    for (i, (x, y)) in before.iter().zip(&after).enumerate() {
        let moved = match (x, y) {
            (Some(x), y) if Some(*x) != *y => Some((*x, y.unwrap_or("no shard"))),
            _ => None,
        };
        run = match (run, moved) {
            (Some((start, _, from, to)), Some((f, t))) if from == f && to == t => {
                Some((start, i, from, to))
            }
            (prev, next) => {
                out.extend(prev.map(describe_bucket_run));
                next.map(|(f, t)| (i, i, f, t))
            }
        };
    }
    out.extend(run.map(describe_bucket_run));
    out
}

fn describe_bucket_run((first, last, from, to): (usize, usize, &str, &str)) -> String {
    let which = if first == last {
        format!("bucket {first}")
    } else {
        format!("buckets {first}-{last}")
    };
    format!("{which} would move from shard \"{from}\" to \"{to}\"")
}

/// A range bound or list value in the order the router compares keys of `key_type`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Int(i64),
    Text(String),
}

fn key(v: &Scalar, key_type: KeyType) -> Key {
    let text = match v {
        Scalar::Int(i) => return Key::Int(*i),
        Scalar::Text(t) => t,
    };
    match key_type {
        KeyType::Bigint | KeyType::Integer => text
            .trim()
            .parse()
            .map_or_else(|_| Key::Text(text.clone()), Key::Int),
        KeyType::Uuid => Key::Text(text.to_ascii_lowercase().replace('-', "")),
        KeyType::Text => Key::Text(text.clone()),
    }
}

fn show(k: Option<&Key>) -> String {
    match k {
        None => "unbounded".into(),
        Some(Key::Int(i)) => i.to_string(),
        Some(Key::Text(t)) => format!("{t:?}"),
    }
}

type Range<'a> = (Option<Key>, Option<Key>, &'a str);

fn ranges(s: &ShardingConfig) -> Vec<Range<'_>> {
    let bound = |b: &Option<Scalar>| b.as_ref().map(|v| key(v, s.key_type));
    s.map
        .iter()
        .map(|e| (bound(&e.from), bound(&e.to), e.shard.as_str()))
        .collect()
}

/// The shard whose range covers the whole of `[lo, hi)`; the pieces between consecutive bounds
/// of both maps never straddle an entry's bound, so "covers" and "overlaps" agree on them.
fn range_owner<'a>(map: &[Range<'a>], lo: Option<&Key>, hi: Option<&Key>) -> Option<&'a str> {
    let starts_before = |from: &Option<Key>| match (from, lo) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(f), Some(l)) => f <= l,
    };
    let ends_after = |to: &Option<Key>| match (to, hi) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(t), Some(h)) => t.cmp(h) != Ordering::Less,
    };
    map.iter()
        .find(|(f, t, _)| starts_before(f) && ends_after(t))
        .map(|r| r.2)
}

fn range_moves(a: &ShardingConfig, b: &ShardingConfig) -> Vec<String> {
    let (before, after) = (ranges(a), ranges(b));
    let mut bounds: Vec<Key> = before
        .iter()
        .chain(&after)
        .flat_map(|(f, t, _)| [f.clone(), t.clone()])
        .flatten()
        .collect();
    bounds.sort();
    bounds.dedup();
    // The pieces: (-inf, b0), [b0, b1), ..., [bn, +inf).
    let edges: Vec<Option<&Key>> = std::iter::once(None)
        .chain(bounds.iter().map(Some))
        .chain([None])
        .collect();
    let mut out = Vec::new();
    for pair in edges.windows(2) {
        let (lo, hi) = (pair[0], pair[1]);
        let Some(owner) = range_owner(&before, lo, hi) else {
            continue;
        };
        let now = range_owner(&after, lo, hi);
        if now != Some(owner) {
            out.push(format!(
                "keys from {} to {} would move from shard \"{owner}\" to {}",
                show(lo),
                show(hi),
                now.map_or("no shard".into(), |s| format!("\"{s}\""))
            ));
        }
    }
    out
}

fn list_moves(
    a: &ShardingConfig,
    old: &DatabaseConfig,
    b: &ShardingConfig,
    new: &DatabaseConfig,
) -> Vec<String> {
    let values = |s: &ShardingConfig| -> BTreeMap<Key, String> {
        s.map
            .iter()
            .flat_map(|e| {
                e.values
                    .iter()
                    .flatten()
                    .map(|v| (key(v, s.key_type), e.shard.clone()))
            })
            .collect()
    };
    let (before, after) = (values(a), values(b));
    let (old_default, new_default) = (old.default_shard.as_deref(), new.default_shard.as_deref());
    let mut out = Vec::new();
    if let Some(d) = old_default.filter(|d| new_default != Some(*d)) {
        out.push(format!(
            "default_shard changes from \"{d}\" to {}, which moves every unlisted value",
            new_default.map_or("none".into(), |n| format!("\"{n}\""))
        ));
    }
    for k in before.keys().chain(after.keys()) {
        let was = before.get(k).map(String::as_str).or(old_default);
        let is = after.get(k).map(String::as_str).or(new_default);
        if let Some(was) = was.filter(|w| is != Some(*w)) {
            out.push(format!(
                "value {} would move from shard \"{was}\" to {}",
                show(Some(k)),
                is.map_or("no shard".into(), |s| format!("\"{s}\""))
            ));
        }
    }
    out.dedup();
    out
}

fn quoted(names: &[&str]) -> String {
    let mut names: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    names.sort();
    names.dedup();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(db: &str) -> Config {
        let yaml = format!(
            "listen: 127.0.0.1:0\nusers: [{{ name: a, password: b }}]\ndatabases:\n  app:\n{db}"
        );
        Config::parse_with_env(&yaml, &|_| None).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    const SHARDS: &str = "    shards:\n      s0: { primary: \"postgres://u@h/a\" }\n      s1: { primary: \"postgres://u@h/b\" }\n      s2: { primary: \"postgres://u@h/c\" }\n    tables: { t: k }\n";

    fn hash(map: &str) -> Config {
        config(&format!("{SHARDS}    sharding: {{ key_type: bigint, function: hash, buckets: 8, map: [{map}] }}\n"))
    }

    fn range(map: &str) -> Config {
        config(&format!(
            "{SHARDS}    sharding: {{ key_type: bigint, function: range, map: [{map}] }}\n"
        ))
    }

    fn list(map: &str, default: &str) -> Config {
        config(&format!(
            "{SHARDS}    sharding: {{ key_type: text, function: list, map: [{map}] }}\n    default_shard: {default}\n"
        ))
    }

    #[test]
    fn hash_buckets_that_change_owner_are_named_as_ranges() {
        let old = hash("{ buckets: 0-3, shard: s0 }, { buckets: 4-7, shard: s1 }");
        assert!(moves(&old, &old).is_empty());
        let new = hash("{ buckets: 0-1, shard: s0 }, { buckets: 2-3, shard: s2 }, { buckets: 4-6, shard: s1 }, { buckets: 7, shard: s0 }");
        assert_eq!(
            moves(&old, &new),
            [
                "databases.app: buckets 2-3 would move from shard \"s0\" to \"s2\"",
                "databases.app: bucket 7 would move from shard \"s1\" to \"s0\"",
            ]
        );
        let more = hash("{ buckets: 0-3, shard: s0 }, { buckets: 4-7, shard: s1 }").databases
            ["app"]
            .clone();
        let mut resized = old.clone();
        let mut db = more;
        db.sharding.as_mut().unwrap().buckets = Some(16);
        db.sharding.as_mut().unwrap().map[1].buckets = Some("4-15".into());
        resized.databases.insert("app".into(), db);
        assert_eq!(
            moves(&old, &resized),
            ["databases.app: sharding.buckets changes from 8 to 16, which gives most keys another bucket"]
        );
    }

    #[test]
    fn ranges_may_gain_owners_for_unowned_keys_only() {
        let old = range("{ from: 0, to: 100, shard: s0 }, { from: 100, to: 200, shard: s1 }");
        // New capacity for keys nobody owned, and a split that keeps the owners: allowed.
        let grown = range("{ from: 0, to: 50, shard: s0 }, { from: 50, to: 100, shard: s0 }, { from: 100, to: 200, shard: s1 }, { from: 200, to: null, shard: s2 }");
        assert_eq!(moves(&old, &grown), Vec::<String>::new());
        let moved = range("{ from: 0, to: 150, shard: s0 }, { from: 150, to: 200, shard: s1 }");
        assert_eq!(
            moves(&old, &moved),
            ["databases.app: keys from 100 to 150 would move from shard \"s1\" to \"s0\""]
        );
        let dropped = range("{ from: 0, to: 100, shard: s0 }");
        assert_eq!(
            moves(&old, &dropped),
            ["databases.app: keys from 100 to 200 would move from shard \"s1\" to no shard"]
        );
    }

    #[test]
    fn list_values_and_the_default_shard_keep_their_owners() {
        let old = list("{ values: [a, b], shard: s1 }", "s0");
        assert!(moves(
            &old,
            &list(
                "{ values: [a, b], shard: s1 }, { values: [z], shard: s0 }",
                "s0"
            )
        )
        .is_empty());
        assert_eq!(
            moves(
                &old,
                &list(
                    "{ values: [a], shard: s1 }, { values: [b, c], shard: s2 }",
                    "s0"
                )
            ),
            [
                "databases.app: value \"b\" would move from shard \"s1\" to \"s2\"",
                "databases.app: value \"c\" would move from shard \"s0\" to \"s2\"",
            ]
        );
        assert_eq!(
            moves(&old, &list("{ values: [a, b], shard: s1 }", "s2")),
            ["databases.app: default_shard changes from \"s0\" to \"s2\", which moves every unlisted value"]
        );
    }

    #[test]
    fn an_unsharded_database_may_become_sharded_only_if_its_shard_keeps_every_key() {
        let one = config("    shards:\n      s0: { primary: \"postgres://u@h/a\" }\n");
        let all_s0 = hash("{ buckets: 0-7, shard: s0 }");
        assert!(moves(&one, &all_s0).is_empty());
        assert_eq!(
            moves(&one, &hash("{ buckets: 0-3, shard: s0 }, { buckets: 4-7, shard: s1 }")),
            ["databases.app: every key is on shard \"s0\" when the database has one shard, but the new map gives keys to \"s1\""]
        );
    }
}
