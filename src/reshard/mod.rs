//! Online resharding (DESIGN §3, issue 6): jobs that move keys — hash buckets, a range of a range
//! map, values of a list map ([`Slice`]) — from one shard to another while the application keeps
//! reading and writing: pre-flight, dual-write, backfill, verification, cutover, then finish or
//! rollback, each step recorded in the control database and resumable after a crash.

pub mod backfill;
pub mod capture;
pub mod cli;
pub mod cutover;
pub mod driver;
pub mod ending;
pub mod epochs;
pub mod heartbeat;
pub mod images;
pub mod jobs;
pub mod preflight;
pub mod steps;
pub mod sync;
pub mod verify;
pub mod verifying;
pub mod work;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::serde_yaml_value::Scalar;
use crate::config::{
    parse_bucket_range, wrong_kind, Config, ShardingConfig, ShardingFunction, Slice,
};

/// The phases of DESIGN §2.6, as stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Preflight,
    DualWrite,
    Backfill,
    Verify,
    Ready,
    Cutover,
    ReverseDualWrite,
    RollingBack,
    Finishing,
    Finished,
    RolledBack,
    Aborted,
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 13] = [
        Phase::Preflight,
        Phase::DualWrite,
        Phase::Backfill,
        Phase::Verify,
        Phase::Ready,
        Phase::Cutover,
        Phase::ReverseDualWrite,
        Phase::RollingBack,
        Phase::Finishing,
        Phase::Finished,
        Phase::RolledBack,
        Phase::Aborted,
        Phase::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::DualWrite => "dual_write",
            Phase::Backfill => "backfill",
            Phase::Verify => "verify",
            Phase::Ready => "ready",
            Phase::Cutover => "cutover",
            Phase::ReverseDualWrite => "reverse_dual_write",
            Phase::RollingBack => "rolling_back",
            Phase::Finishing => "finishing",
            Phase::Finished => "finished",
            Phase::RolledBack => "rolled_back",
            Phase::Aborted => "aborted",
            Phase::Failed => "failed",
        }
    }

    pub fn parse(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }

    /// A job in this phase is over: nothing more happens to it.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Phase::Finished | Phase::RolledBack | Phase::Aborted | Phase::Failed
        )
    }

    /// Abort undoes nothing on the shards: allowed until the first slice is cut over (after
    /// that the way back is rollback).
    pub fn may_abort(self) -> bool {
        matches!(
            self,
            Phase::Preflight | Phase::DualWrite | Phase::Backfill | Phase::Verify | Phase::Ready
        )
    }
}

/// One move as asked: what moves (one of `buckets`, `range`, `values`, as the map's function
/// wants) and the shard it goes to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// Hash maps: `"512-767"` or `"7"`.
    #[serde(default)]
    pub buckets: Option<String>,
    /// Range maps: keys from `from` (inclusive) to `to` (exclusive); `null` is unbounded.
    #[serde(default)]
    pub range: Option<RangeRequest>,
    /// List maps: values.
    #[serde(default)]
    pub values: Option<Vec<Scalar>>,
    pub to: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeRequest {
    pub from: Option<Scalar>,
    pub to: Option<Scalar>,
}

impl MoveRequest {
    /// The slice asked for, in `sharding`'s terms.
    fn slice(&self, sharding: &ShardingConfig) -> Result<Slice, String> {
        let count = sharding.buckets.unwrap_or(0);
        match (&self.buckets, &self.range, &self.values) {
            (Some(b), None, None) => {
                if sharding.function != ShardingFunction::Hash {
                    return Err(format!("buckets {b}: {}", wrong_kind(sharding.function)));
                }
                let (first, last) =
                    parse_bucket_range(b, count).map_err(|e| format!("buckets {b}: {e}"))?;
                Ok(Slice::Buckets { first, last })
            }
            (None, Some(r), None) => Ok(Slice::Range {
                from: r.from.clone(),
                to: r.to.clone(),
            }),
            (None, None, Some(v)) => Ok(Slice::Values(v.clone())),
            _ => Err(format!(
                "a move to \"{}\" names {}: give exactly one of \"buckets\" (hash maps), \"range\" (range maps) or \"values\" (list maps)",
                self.to,
                if self.buckets.is_none() && self.range.is_none() && self.values.is_none() {
                    "nothing to move"
                } else {
                    "more than one thing to move"
                }
            )),
        }
    }
}

/// One move as accepted: the keys, the shard that owns them now, and the shard they go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub slice: Slice,
    pub from: String,
    pub to: String,
}

impl Move {
    /// `buckets 512-767`, `keys [1000, 2000)`, `values "eu"`.
    pub fn what(&self) -> String {
        self.slice.describe()
    }
}

/// Checks `requests` against `database`'s shard map in `config`: each slice fits the map's
/// function, is owned by one shard today, goes to another configured shard (which may own
/// nothing yet), and no two slices overlap.
pub fn plan_moves(
    config: &Config,
    database: &str,
    requests: &[MoveRequest],
) -> Result<Vec<Move>, String> {
    let db = config
        .databases
        .get(database)
        .ok_or_else(|| format!("no database \"{database}\" in the config"))?;
    let sharding = db
        .sharding
        .as_ref()
        .ok_or_else(|| format!("database \"{database}\" is not sharded (it has one shard)"))?;
    if requests.is_empty() {
        return Err(
            "no moves: give at least one, e.g. {\"buckets\": \"a-b\", \"to\": \"shard\"}".into(),
        );
    }
    let mut moves: Vec<Move> = Vec::new();
    for r in requests {
        let slice = r.slice(sharding)?;
        let what = slice.describe();
        slice.check(sharding).map_err(|e| format!("{what}: {e}"))?;
        if !db.shards.contains_key(&r.to) {
            let known: Vec<&String> = db.shards.keys().collect();
            return Err(format!(
                "{what}: no shard \"{}\" in the config (its shards: {known:?}); add it to the config first",
                r.to
            ));
        }
        let from = slice.owner(db).map_err(|e| format!("{what}: {e}"))?;
        if from == r.to {
            return Err(format!("{what}: already on \"{}\"", r.to));
        }
        if let Some(m) = moves.iter().find(|m| m.slice.overlaps(&slice, sharding)) {
            return Err(format!("{what} overlap {}", m.what()));
        }
        moves.push(Move {
            slice,
            from,
            to: r.to.clone(),
        });
    }
    Ok(moves)
}

/// The pairs (source, target) of `moves`, each once.
pub fn pairs(moves: &[Move]) -> Vec<(String, String)> {
    let set: BTreeMap<(String, String), ()> = moves
        .iter()
        .map(|m| ((m.from.clone(), m.to.clone()), ()))
        .collect();
    set.into_keys().collect()
}

#[cfg(test)]
mod tests;
