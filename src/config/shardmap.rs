//! Checks of a database's `sharding:` section: the map must send every key to exactly one shard.

use std::collections::BTreeMap;

use super::serde_yaml_value::Scalar;
use super::tree::{child_path, index_path};
use super::validate::{unknown_shard, Issues};
use super::{DatabaseConfig, KeyType, MapEntry, ShardingConfig, ShardingFunction};

pub(crate) fn check(
    sharding: &ShardingConfig,
    db: &DatabaseConfig,
    path: &str,
    issues: &mut Issues,
) {
    let map_path = child_path(path, "map");
    if sharding.map.is_empty() {
        issues.push(&map_path, "at least one entry is required");
    }
    for (i, entry) in sharding.map.iter().enumerate() {
        let entry_path = index_path(&map_path, i);
        if !db.shards.contains_key(&entry.shard) {
            issues.push(
                &child_path(&entry_path, "shard"),
                unknown_shard(&entry.shard, db),
            );
        }
        fields_for_function(entry, sharding.function, &entry_path, issues);
    }
    match sharding.function {
        ShardingFunction::Hash => hash(sharding, path, issues),
        ShardingFunction::Range => range(sharding, &map_path, issues),
        ShardingFunction::List => list(sharding, &map_path, issues),
    }
}

/// Rejects the keys of another function's entries (`from:` in a hash map, say).
fn fields_for_function(
    entry: &MapEntry,
    function: ShardingFunction,
    path: &str,
    issues: &mut Issues,
) {
    let present = [
        ("buckets", entry.buckets.is_some(), ShardingFunction::Hash),
        ("from", entry.from.is_some(), ShardingFunction::Range),
        ("to", entry.to.is_some(), ShardingFunction::Range),
        ("values", entry.values.is_some(), ShardingFunction::List),
    ];
    let name = function_name(function);
    for (key, is_present, owner) in present {
        if is_present && owner != function {
            issues.push(
                &child_path(path, key),
                format!("not allowed with `function: {name}`"),
            );
        }
    }
    match function {
        ShardingFunction::Hash if entry.buckets.is_none() => {
            issues.push(
                &child_path(path, "buckets"),
                "required with `function: hash` (e.g. \"0-511\")",
            );
        }
        ShardingFunction::List if entry.values.as_ref().is_none_or(Vec::is_empty) => {
            issues.push(
                &child_path(path, "values"),
                "required with `function: list` (at least one value)",
            );
        }
        _ => {}
    }
}

fn function_name(function: ShardingFunction) -> &'static str {
    match function {
        ShardingFunction::Hash => "hash",
        ShardingFunction::Range => "range",
        ShardingFunction::List => "list",
    }
}

fn hash(sharding: &ShardingConfig, path: &str, issues: &mut Issues) {
    let count = match sharding.buckets {
        None => {
            return issues.push(
                &child_path(path, "buckets"),
                "required with `function: hash`",
            )
        }
        Some(0) => return issues.push(&child_path(path, "buckets"), "must be at least 1 (got 0)"),
        Some(n) => n,
    };
    let map_path = child_path(path, "map");
    let mut ranges = Vec::new();
    for (i, entry) in sharding.map.iter().enumerate() {
        let Some(text) = &entry.buckets else { continue };
        let buckets_path = child_path(&index_path(&map_path, i), "buckets");
        match parse_bucket_range(text, count) {
            Ok((start, end)) => ranges.push((start, end, i)),
            Err(problem) => issues.push(&buckets_path, problem),
        }
    }
    coverage(&mut ranges, count, &map_path, issues);
}

/// `"0-511"` (inclusive) or `"7"`, within `0..count`.
pub(crate) fn parse_bucket_range(text: &str, count: u32) -> Result<(u32, u32), String> {
    let bad = || format!("`{text}` is not a bucket range (write \"0-511\" or \"7\")");
    let (start, end) = match text.split_once('-') {
        Some((a, b)) => (
            a.trim().parse::<u32>().map_err(|_| bad())?,
            b.trim().parse::<u32>().map_err(|_| bad())?,
        ),
        None => {
            let n = text.trim().parse::<u32>().map_err(|_| bad())?;
            (n, n)
        }
    };
    if start > end {
        return Err(format!("`{text}`: the first bucket is after the last"));
    }
    if end >= count {
        return Err(format!(
            "`{text}`: bucket {end} is out of range (buckets are 0-{})",
            count - 1
        ));
    }
    Ok((start, end))
}

fn show(start: u32, end: u32) -> String {
    if start == end {
        format!("bucket {start}")
    } else {
        format!("buckets {start}-{end}")
    }
}

/// Every bucket in `0..count` must be in exactly one range: reports each gap and each overlap.
fn coverage(ranges: &mut [(u32, u32, usize)], count: u32, map_path: &str, issues: &mut Issues) {
    ranges.sort();
    // `next` is the first bucket not covered by the ranges seen so far; `owner` the entry that
    // reaches furthest, which is the one a later range overlaps.
    let mut next: u64 = 0;
    let mut owner: Option<(u32, usize)> = None;
    for &(start, end, i) in ranges.iter() {
        if u64::from(start) > next {
            let gap = show(next as u32, start - 1);
            issues.push(map_path, format!("{gap} are not assigned to any shard"));
        }
        if let Some((owner_end, owner_index)) = owner.filter(|_| u64::from(start) < next) {
            let overlap = show(start, end.min(owner_end));
            let path = child_path(&index_path(map_path, i), "buckets");
            issues.push(
                &path,
                format!("{overlap} are also assigned by map[{owner_index}]"),
            );
        }
        if u64::from(end) + 1 > next {
            next = u64::from(end) + 1;
            owner = Some((end, i));
        }
    }
    if next < u64::from(count) && !ranges.is_empty() {
        let gap = show(next as u32, count - 1);
        issues.push(map_path, format!("{gap} are not assigned to any shard"));
    }
}

/// A range bound or list value, typed by the key type; compares as the key type does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    Int(i64),
    Text(String),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// Types a YAML scalar as a key of `key_type`.
pub(crate) fn typed_key(value: &Scalar, key_type: KeyType) -> Result<Key, String> {
    match (key_type, value) {
        (KeyType::Bigint, Scalar::Int(i)) => Ok(Key::Int(*i)),
        (KeyType::Integer, Scalar::Int(i)) if i32::try_from(*i).is_ok() => Ok(Key::Int(*i)),
        (KeyType::Integer, Scalar::Int(i)) => Err(format!("{i} does not fit in an integer key")),
        (KeyType::Bigint | KeyType::Integer, Scalar::Text(t)) => {
            Err(format!("expected a number for an integer key, got {t:?}"))
        }
        (KeyType::Text, Scalar::Text(t)) => Ok(Key::Text(t.clone())),
        (KeyType::Uuid, Scalar::Text(t)) if is_uuid(t) => Ok(Key::Text(t.to_ascii_lowercase())),
        (KeyType::Uuid, Scalar::Text(t)) => Err(format!("{t:?} is not a UUID")),
        (KeyType::Text | KeyType::Uuid, Scalar::Int(i)) => Err(format!(
            "expected a string for a text or uuid key, got the number {i} (quote it)"
        )),
    }
}

fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    lengths == [8, 4, 4, 4, 12]
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Ranges `[from, to)` must be typed, non-empty, in ascending order and non-overlapping; only the
/// first may start at `null` (unbounded) and only the last may end at `null`.
fn range(sharding: &ShardingConfig, map_path: &str, issues: &mut Issues) {
    let mut previous: Option<(usize, Option<Key>)> = None;
    for (i, entry) in sharding.map.iter().enumerate() {
        let entry_path = index_path(map_path, i);
        let mut bound = |name: &str, value: &Option<Scalar>| match value {
            None => Ok(None),
            Some(v) => typed_key(v, sharding.key_type)
                .map(Some)
                .map_err(|problem| issues.push(&child_path(&entry_path, name), problem)),
        };
        let (Ok(from), Ok(to)) = (bound("from", &entry.from), bound("to", &entry.to)) else {
            previous = None;
            continue;
        };
        if let (Some(f), Some(t)) = (&from, &to) {
            if f >= t {
                issues.push(
                    &entry_path,
                    format!("`from` ({f}) must be less than `to` ({t})"),
                );
            }
        }
        if let Some((j, prev_to)) = &previous {
            let problem = match (prev_to, &from) {
                (None, _) => Some(format!("map[{j}] has no upper bound (`to: null`), so no range may follow it")),
                (Some(_), None) => Some("only the first range may have no lower bound (`from: null`)".to_string()),
                (Some(p), Some(f)) if f < p => {
                    Some(format!("`from` ({f}) is below the end of map[{j}] ({p}): ranges must be in ascending order and not overlap"))
                }
                _ => None,
            };
            if let Some(problem) = problem {
                issues.push(&entry_path, problem);
            }
        }
        previous = Some((i, to));
    }
}

/// List values must be typed and appear in one entry only.
fn list(sharding: &ShardingConfig, map_path: &str, issues: &mut Issues) {
    let mut owners: BTreeMap<Key, usize> = BTreeMap::new();
    for (i, entry) in sharding.map.iter().enumerate() {
        let values_path = child_path(&index_path(map_path, i), "values");
        for (k, value) in entry.values.iter().flatten().enumerate() {
            let path = index_path(&values_path, k);
            match typed_key(value, sharding.key_type) {
                Err(problem) => issues.push(&path, problem),
                Ok(key) => match owners.get(&key) {
                    Some(&j) if j == i => issues.push(&path, format!("{key} is listed twice")),
                    Some(&j) => issues.push(&path, format!("{key} is already listed in map[{j}]")),
                    None => {
                        owners.insert(key, i);
                    }
                },
            }
        }
    }
}
