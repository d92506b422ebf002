//! What an operator's promotion (`POST /v1/databases/{db}/shards/{shard}/promote`) tells the
//! health checks and the sessions: while it runs, the shard's writes are held back (a *fence*);
//! once the replica is promoted, the checks take it as the shard's primary even though the old
//! one still accepts writes, and never take the old one again (it is *demoted*: writes there
//! would be lost to the new timeline).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{Monitor, ServerKey};

/// A shard, by database and shard name.
type ShardId = (String, String);

/// The operator's word the checks follow, taken by each round.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// Per shard: the server promoted, to be taken as its primary from now on.
    pub promoted: HashMap<ShardId, ServerKey>,
    /// Servers never to be taken as a primary again.
    pub demoted: HashSet<ServerKey>,
}

#[derive(Debug, Default)]
pub(super) struct Switchover {
    fenced: Mutex<HashSet<ShardId>>,
    /// How many shards are fenced: checked per write transaction without taking the lock.
    fences: AtomicUsize,
    overrides: Mutex<Overrides>,
}

/// Holds a shard's writes back until dropped.
pub struct Fence {
    monitor: Arc<Monitor>,
    shard: ShardId,
}

impl Drop for Fence {
    fn drop(&mut self) {
        let s = &self.monitor.switchover;
        let mut fenced = s.fenced.lock().unwrap_or_else(|p| p.into_inner());
        if fenced.remove(&self.shard) {
            s.fences.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Monitor {
    /// Holds back new write transactions on `shard` of `database` until the fence is dropped;
    /// `None` when a promotion of that shard is already running.
    pub fn fence(self: &Arc<Self>, database: &str, shard: &str) -> Option<Fence> {
        let id = (database.to_string(), shard.to_string());
        let s = &self.switchover;
        let mut fenced = s.fenced.lock().unwrap_or_else(|p| p.into_inner());
        if !fenced.insert(id.clone()) {
            return None;
        }
        s.fences.fetch_add(1, Ordering::SeqCst);
        Some(Fence {
            monitor: self.clone(),
            shard: id,
        })
    }

    /// Whether writes to `shard` of `database` are held back now. Asked twice per transaction:
    /// inlined to the one load it is when no promotion is under way.
    #[inline]
    pub fn is_fenced(&self, database: &str, shard: &str) -> bool {
        self.switchover.fences.load(Ordering::SeqCst) != 0 && self.is_fenced_now(database, shard)
    }

    fn is_fenced_now(&self, database: &str, shard: &str) -> bool {
        let s = &self.switchover;
        let fenced = s.fenced.lock().unwrap_or_else(|p| p.into_inner());
        fenced
            .iter()
            .any(|(d, sh)| d.as_str() == database && sh.as_str() == shard)
    }

    /// `new` was promoted to be the primary of `shard` of `database`, and `old` must never
    /// take writes again.
    pub fn promoted(&self, database: &str, shard: &str, new: ServerKey, old: ServerKey) {
        let mut o = self
            .switchover
            .overrides
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        o.promoted
            .insert((database.to_string(), shard.to_string()), new.clone());
        o.demoted.remove(&new);
        o.demoted.insert(old);
    }

    /// The operator's word as it stands, for a round of checks.
    pub(super) fn overrides(&self) -> Overrides {
        self.switchover
            .overrides
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_holds_one_shard_until_dropped_and_cannot_be_taken_twice() {
        let monitor = Arc::new(Monitor::new());
        assert!(!monitor.is_fenced("app", "s0"));
        let fence = monitor.fence("app", "s0").expect("first");
        assert!(
            monitor.fence("app", "s0").is_none(),
            "one promotion at a time"
        );
        assert!(monitor.is_fenced("app", "s0"));
        assert!(!monitor.is_fenced("app", "s1"));
        drop(fence);
        assert!(!monitor.is_fenced("app", "s0"));
        assert!(monitor.fence("app", "s0").is_some());
    }
}
