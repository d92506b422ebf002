//! A slice of a shard map's keys: what a resharding move hands from one shard to another, and
//! what its cutover holds. Hash maps move buckets, range maps a range of keys (which splits the
//! entry it comes from), list maps listed values. Ranges and values compare as the key type does
//! (text in byte order, as the router compares them).

use serde::{Deserialize, Serialize};

use super::serde_yaml_value::Scalar;
use super::shardmap::{typed_key, Key};
use super::{parse_bucket_range, DatabaseConfig, MapEntry, ShardingConfig, ShardingFunction};

/// Keys of one database's map, in the map's own terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Slice {
    /// Hash buckets `first..=last`.
    Buckets { first: u32, last: u32 },
    /// Range keys from `from` (inclusive) to `to` (exclusive); `None` is unbounded.
    Range {
        from: Option<Scalar>,
        to: Option<Scalar>,
    },
    /// Listed values.
    Values(Vec<Scalar>),
}

/// A [`Slice`] with its values typed by the key type.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Typed {
    Buckets(u32, u32),
    Range(Option<Key>, Option<Key>),
    Values(Vec<Key>),
}

impl Slice {
    /// The slice as its map writes it: `0-255`, `[1000, 2000)`, `"eu", "us"`.
    pub fn label(&self) -> String {
        match self {
            Slice::Buckets { first, last } if first == last => first.to_string(),
            Slice::Buckets { first, last } => format!("{first}-{last}"),
            Slice::Range { from, to } => {
                let bound = |b: &Option<Scalar>| b.as_ref().map_or("unbounded".into(), show);
                format!("[{}, {})", bound(from), bound(to))
            }
            Slice::Values(values) => values.iter().map(show).collect::<Vec<_>>().join(", "),
        }
    }

    /// The slice in a sentence: `buckets 0-255`, `keys [1000, 2000)`, `values "eu", "us"`.
    pub fn describe(&self) -> String {
        let what = match self {
            Slice::Buckets { .. } => "buckets",
            Slice::Range { .. } => "keys",
            Slice::Values(_) => "values",
        };
        format!("{what} {}", self.label())
    }

    /// The function whose maps have slices of this kind.
    pub fn function(&self) -> ShardingFunction {
        match self {
            Slice::Buckets { .. } => ShardingFunction::Hash,
            Slice::Range { .. } => ShardingFunction::Range,
            Slice::Values(_) => ShardingFunction::List,
        }
    }

    fn typed(&self, sharding: &ShardingConfig) -> Result<Typed, String> {
        let key = |v: &Scalar| typed_key(v, sharding.key_type);
        let bound = |b: &Option<Scalar>| b.as_ref().map(key).transpose();
        match self {
            Slice::Buckets { first, last } => Ok(Typed::Buckets(*first, *last)),
            Slice::Range { from, to } => Ok(Typed::Range(bound(from)?, bound(to)?)),
            Slice::Values(values) => Ok(Typed::Values(
                values.iter().map(key).collect::<Result<_, _>>()?,
            )),
        }
    }

    /// Checks the slice fits `sharding`: its kind, its values typed, a range not empty, values
    /// not repeated, buckets within the count.
    pub fn check(&self, sharding: &ShardingConfig) -> Result<(), String> {
        if self.function() != sharding.function {
            return Err(wrong_kind(sharding.function));
        }
        match self.typed(sharding)? {
            Typed::Buckets(first, last) => {
                let count = sharding.buckets.unwrap_or(0);
                parse_bucket_range(&format!("{first}-{last}"), count).map(|_| ())
            }
            Typed::Range(Some(f), Some(t)) if f >= t => {
                Err(format!("`from` ({f}) must be less than `to` ({t})"))
            }
            Typed::Range(..) => Ok(()),
            Typed::Values(v) if v.is_empty() => Err("no values: give at least one".into()),
            Typed::Values(mut v) => {
                v.sort();
                match v.windows(2).find(|w| w[0] == w[1]) {
                    Some(w) => Err(format!("{} is given twice", w[0])),
                    None => Ok(()),
                }
            }
        }
    }

    /// Whether the two slices share a key.
    pub fn overlaps(&self, other: &Slice, sharding: &ShardingConfig) -> bool {
        match (self.typed(sharding), other.typed(sharding)) {
            (Ok(Typed::Buckets(a, b)), Ok(Typed::Buckets(c, d))) => a <= d && c <= b,
            (Ok(Typed::Range(a, b)), Ok(Typed::Range(c, d))) => {
                below(a.as_ref(), d.as_ref()) && below(c.as_ref(), b.as_ref())
            }
            (Ok(Typed::Values(a)), Ok(Typed::Values(b))) => a.iter().any(|v| b.contains(v)),
            _ => false,
        }
    }

    /// The one shard that owns every key of the slice in `db`'s map; an error that says why
    /// there is none (owned by several, or by no shard).
    pub fn owner(&self, db: &DatabaseConfig) -> Result<String, String> {
        let sharding = db.sharding.as_ref().ok_or("the database is not sharded")?;
        let owners = match self.typed(sharding)? {
            Typed::Buckets(first, last) => bucket_owners(sharding, first, last)?,
            Typed::Range(from, to) => range_owners(sharding, from.as_ref(), to.as_ref())?,
            Typed::Values(values) => values
                .iter()
                .map(|v| value_owner(db, sharding, v).map(|o| (v.to_string(), o)))
                .collect::<Result<_, _>>()?,
        };
        let (first_part, first_owner) = owners.first().ok_or("it is empty")?;
        match owners.iter().find(|(_, o)| o != first_owner) {
            Some((part, other)) => Err(format!(
                "owned by \"{first_owner}\" ({first_part}) and \"{other}\" ({part}); move one shard's keys per move"
            )),
            None => Ok(first_owner.clone()),
        }
    }

    /// `sharding`'s map with the slice owned by `owner` (a range entry split around it, values
    /// taken from their entries; neighbours with one owner joined again).
    pub fn map_with(
        &self,
        sharding: &ShardingConfig,
        owner: &str,
    ) -> Result<Vec<MapEntry>, String> {
        match self.typed(sharding)? {
            Typed::Buckets(first, last) => buckets_with(sharding, (first, last), owner),
            Typed::Range(from, to) => Ok(ranges_with(sharding, (from, to), owner)),
            Typed::Values(values) => Ok(values_with(sharding, &values, owner)),
        }
    }
}

/// What a move must name in a map of `function`, said to one that named something else.
pub fn wrong_kind(function: ShardingFunction) -> String {
    match function {
        ShardingFunction::Hash => {
            "the map is a hash map: move buckets ({\"buckets\": \"a-b\", \"to\": …})".into()
        }
        ShardingFunction::Range => "the map is a range map: move a range of keys \
            ({\"range\": {\"from\": a, \"to\": b}, \"to\": …})"
            .into(),
        ShardingFunction::List => {
            "the map is a list map: move values ({\"values\": [a, b], \"to\": …})".into()
        }
    }
}

/// Whether `a` (a lower bound; `None` is −∞) is below `b` (an upper bound; `None` is +∞).
fn below(a: Option<&Key>, b: Option<&Key>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a < b,
        _ => true,
    }
}

fn show(v: &Scalar) -> String {
    match v {
        Scalar::Int(i) => i.to_string(),
        Scalar::Text(t) => format!("{t:?}"),
    }
}

fn scalar(k: Key) -> Scalar {
    match k {
        Key::Int(i) => Scalar::Int(i),
        Key::Text(t) => Scalar::Text(t),
    }
}

/// Every bucket's owner in a validated hash map.
fn all_bucket_owners(sharding: &ShardingConfig) -> Result<Vec<String>, String> {
    let count = sharding.buckets.unwrap_or(0);
    let mut owners = vec![String::new(); count as usize];
    for entry in &sharding.map {
        let (a, b) = parse_bucket_range(entry.buckets.as_deref().unwrap_or_default(), count)?;
        owners[a as usize..=b as usize].fill(entry.shard.clone());
    }
    Ok(owners)
}

fn bucket_owners(
    sharding: &ShardingConfig,
    first: u32,
    last: u32,
) -> Result<Vec<(String, String)>, String> {
    let owners = all_bucket_owners(sharding)?;
    Ok((first..=last)
        .map(|b| (format!("bucket {b}"), owners[b as usize].clone()))
        .collect())
}

fn buckets_with(
    sharding: &ShardingConfig,
    (first, last): (u32, u32),
    owner: &str,
) -> Result<Vec<MapEntry>, String> {
    let mut owners = all_bucket_owners(sharding)?;
    owners[first as usize..=last as usize].fill(owner.to_string());
    let mut entries = Vec::new();
    let mut start = 0usize;
    for b in 1..=owners.len() {
        if b == owners.len() || owners[b] != owners[start] {
            let buckets = if b - 1 == start {
                start.to_string()
            } else {
                format!("{start}-{}", b - 1)
            };
            entries.push(MapEntry::buckets(&owners[start], buckets));
            start = b;
        }
    }
    Ok(entries)
}

/// A range entry typed: `[from, to)` and its shard.
type Piece = (Option<Key>, Option<Key>, String);

fn pieces(sharding: &ShardingConfig) -> Result<Vec<Piece>, String> {
    let key = |b: &Option<Scalar>| b.as_ref().map(|v| typed_key(v, sharding.key_type));
    sharding
        .map
        .iter()
        .map(|e| {
            Ok((
                key(&e.from).transpose()?,
                key(&e.to).transpose()?,
                e.shard.clone(),
            ))
        })
        .collect()
}

/// The entries `[from, to)` overlaps, each with its owner; an error when part of it is in no
/// entry (no shard owns those keys: there is nothing to move and nowhere it came from).
fn range_owners(
    sharding: &ShardingConfig,
    from: Option<&Key>,
    to: Option<&Key>,
) -> Result<Vec<(String, String)>, String> {
    let mut overlapping: Vec<Piece> = pieces(sharding)?
        .into_iter()
        .filter(|(f, t, _)| below(f.as_ref(), to) && below(from, t.as_ref()))
        .collect();
    overlapping.sort_by(|a, b| lower_cmp(&a.0, &b.0));
    // Covered without a gap: the first starts at or before `from`, each next one where the one
    // before ends, the last ends at or after `to`.
    let mut reach: Option<Option<&Key>> = None;
    for (f, t, _) in &overlapping {
        let starts_in_time = match reach {
            None => lower_cmp(f, &from.cloned()) != std::cmp::Ordering::Greater,
            Some(end) => f.as_ref() == end,
        };
        if !starts_in_time {
            break;
        }
        reach = Some(t.as_ref());
    }
    let covered = match reach {
        Some(None) => true,
        Some(Some(end)) => to.is_some_and(|to| to <= end),
        None => false,
    };
    if !covered {
        return Err("part of it is in no range of the map: no shard owns those keys".into());
    }
    Ok(overlapping
        .into_iter()
        .map(|(f, t, s)| {
            let label = Slice::Range {
                from: f.map(scalar),
                to: t.map(scalar),
            };
            (label.label(), s)
        })
        .collect())
}

/// Orders lower bounds (`None` is −∞).
fn lower_cmp(a: &Option<Key>, b: &Option<Key>) -> std::cmp::Ordering {
    match (a, b) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(a), Some(b)) => a.cmp(b),
    }
}

fn ranges_with(
    sharding: &ShardingConfig,
    (from, to): (Option<Key>, Option<Key>),
    owner: &str,
) -> Vec<MapEntry> {
    // The map has been validated, so its bounds are typed.
    let mut out: Vec<Piece> = Vec::new();
    for (f, t, shard) in pieces(sharding).unwrap_or_default() {
        // What is left of [f, t) outside [from, to): below `from`, and from `to` on.
        if below(f.as_ref(), from.as_ref()) && from.is_some() {
            let end = match (&t, &from) {
                (Some(t), Some(fr)) if t < fr => Some(t.clone()),
                _ => from.clone(),
            };
            out.push((f.clone(), end, shard.clone()));
        }
        if below(to.as_ref(), t.as_ref()) && to.is_some() {
            let start = match (&f, &to) {
                (Some(f), Some(to)) if f > to => Some(f.clone()),
                _ => to.clone(),
            };
            out.push((start, t, shard));
        }
    }
    out.push((from, to, owner.to_string()));
    out.sort_by(|a, b| lower_cmp(&a.0, &b.0));
    let mut joined: Vec<Piece> = Vec::new();
    for piece in out {
        match joined.last_mut() {
            Some(last) if last.2 == piece.2 && last.1.is_some() && last.1 == piece.0 => {
                last.1 = piece.1;
            }
            _ => joined.push(piece),
        }
    }
    joined
        .into_iter()
        .map(|(f, t, shard)| MapEntry::range(&shard, f.map(scalar), t.map(scalar)))
        .collect()
}

/// The shard a value is listed on, or the default shard.
fn value_owner(db: &DatabaseConfig, sharding: &ShardingConfig, v: &Key) -> Result<String, String> {
    let listed = sharding.map.iter().find(|e| {
        e.values
            .iter()
            .flatten()
            .any(|x| typed_key(x, sharding.key_type).as_ref() == Ok(v))
    });
    match (listed, &db.default_shard) {
        (Some(e), _) => Ok(e.shard.clone()),
        (None, Some(default)) => Ok(default.clone()),
        (None, None) => Err(format!(
            "value {v} is in no list and the database has no default_shard: no shard owns it"
        )),
    }
}

fn values_with(sharding: &ShardingConfig, values: &[Key], owner: &str) -> Vec<MapEntry> {
    let moved = |x: &Scalar| typed_key(x, sharding.key_type).is_ok_and(|k| values.contains(&k));
    let mut entries: Vec<MapEntry> = sharding
        .map
        .iter()
        .map(|e| {
            let kept = e.values.iter().flatten().filter(|x| !moved(x)).cloned();
            MapEntry::values(&e.shard, kept.collect())
        })
        .filter(|e| e.values.as_ref().is_some_and(|v| !v.is_empty()))
        .collect();
    let added = values.iter().cloned().map(scalar);
    match entries.iter_mut().find(|e| e.shard == owner) {
        Some(e) => e.values.get_or_insert_with(Vec::new).extend(added),
        None => entries.push(MapEntry::values(owner, added.collect())),
    }
    entries
}

#[cfg(test)]
mod tests;
