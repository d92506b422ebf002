//! Online resharding (DESIGN §3, issue 6): jobs that move buckets from one shard to another while
//! the application keeps reading and writing.
//!
//! What exists so far: the control database's tables (`migrations/0002_resharding.sql`), moves
//! checked against the shard map ([`plan_moves`]), pre-flight (§3.1, [`preflight`]), and jobs
//! recorded with their history ([`jobs`]) and shown by `GET /v1/reshard/{id}`. Dual-write,
//! backfill, verification and cutover come next: a job stops after pre-flight until they do.

pub mod backfill;
pub mod capture;
pub mod cli;
pub mod cutover;
pub mod driver;
pub mod ending;
pub mod epochs;
pub mod heartbeat;
pub mod jobs;
pub mod preflight;
pub mod steps;
pub mod sync;
pub mod verify;
pub mod verifying;
pub mod work;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{parse_bucket_range, Config, ShardingFunction};

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

/// One move as asked: buckets (`"512-767"` or `"7"`) to a shard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    pub buckets: String,
    pub to: String,
}

/// One move as accepted: the buckets, the shard that owns them now, and the shard they go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub buckets: String,
    pub first: u32,
    pub last: u32,
    pub from: String,
    pub to: String,
}

/// Checks `requests` against `database`'s shard map in `config`: each range lies within the
/// buckets, is owned by one shard today, goes to another configured shard (which may own nothing
/// yet), and no two ranges overlap.
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
    if sharding.function != ShardingFunction::Hash {
        return Err(format!(
            "database \"{database}\" uses a {:?} map: only hash maps can be resharded in this version",
            sharding.function
        ));
    }
    if requests.is_empty() {
        return Err("no moves: give at least one {\"buckets\": \"a-b\", \"to\": \"shard\"}".into());
    }
    let count = sharding.buckets.unwrap_or(0);
    let owners = bucket_owners(sharding, count)?;
    let mut moves: Vec<Move> = Vec::new();
    for r in requests {
        let (first, last) = parse_bucket_range(&r.buckets, count)?;
        if !db.shards.contains_key(&r.to) {
            let known: Vec<&String> = db.shards.keys().collect();
            return Err(format!(
                "buckets {}: no shard \"{}\" in the config (its shards: {known:?}); add it to the config first",
                r.buckets, r.to
            ));
        }
        let from = &owners[first as usize];
        if let Some(b) = (first..=last).find(|&b| &owners[b as usize] != from) {
            return Err(format!(
                "buckets {}: owned by \"{from}\" and \"{}\" (from bucket {b}); move one shard's buckets per range",
                r.buckets, owners[b as usize]
            ));
        }
        if from == &r.to {
            return Err(format!("buckets {}: already on \"{}\"", r.buckets, r.to));
        }
        if let Some(m) = moves.iter().find(|m| first <= m.last && m.first <= last) {
            return Err(format!("buckets {} overlap {}", r.buckets, m.buckets));
        }
        moves.push(Move {
            buckets: r.buckets.trim().to_string(),
            first,
            last,
            from: from.clone(),
            to: r.to.clone(),
        });
    }
    Ok(moves)
}

/// The owner of every bucket under a validated hash map.
fn bucket_owners(
    sharding: &crate::config::ShardingConfig,
    count: u32,
) -> Result<Vec<String>, String> {
    let mut owners = vec![String::new(); count as usize];
    for entry in &sharding.map {
        let text = entry.buckets.as_deref().unwrap_or_default();
        let (a, b) = parse_bucket_range(text, count)?;
        for owner in &mut owners[a as usize..=b as usize] {
            owner.clone_from(&entry.shard);
        }
    }
    Ok(owners)
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
