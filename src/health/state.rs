//! What one server looks like to the health checker, and how each check changes it. Pure: the
//! checker does the I/O and hands the outcome in, with the time, so every transition is a unit
//! test.

use std::sync::Arc;
use std::time::SystemTime;

use super::lsn::Lsn;

/// What a server is, as configured or as it says of itself (`pg_is_in_recovery()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepts writes: not in recovery.
    Primary,
    /// In recovery: a streaming (or archive) replica, read-only.
    Replica,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// What one successful check read from a server, in one query.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub role: Role,
    /// A primary's `pg_current_wal_lsn()`, a replica's `pg_last_wal_replay_lsn()` (how far it
    /// has applied; `None` before it has replayed anything).
    pub lsn: Option<Lsn>,
    /// A replica's `pg_last_wal_receive_lsn()`: how far it has received (`None` on a primary, or
    /// before streaming started).
    pub receive_lsn: Option<Lsn>,
    /// A replica's time since the commit time of the last transaction it replayed
    /// (`clock_timestamp() - pg_last_xact_replay_timestamp()`, on the replica's clock, so
    /// shardgate's own clock does not enter). `None` on a primary or before any replay.
    pub since_last_replay_ms: Option<u64>,
}

/// A server's health. Lives in the checker between rounds and is published in each report.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerState {
    /// Not checked yet, or failing but not yet `failures_to_ban` times in a row.
    Unknown,
    /// The last check that counted succeeded and saw this.
    Up {
        observed: Observation,
        checked_at: SystemTime,
    },
    /// Out of rotation since `since`, after `failures` failed checks in a row; checked again
    /// every round and back to `Up` on the first check that succeeds.
    Banned {
        reason: Arc<str>,
        since: SystemTime,
        failures: u32,
    },
}

impl ServerState {
    pub fn kind(&self) -> Kind {
        match self {
            ServerState::Unknown => Kind::Unknown,
            ServerState::Up { observed, .. } => Kind::Up(observed.role),
            ServerState::Banned { .. } => Kind::Banned,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ServerState::Unknown => "unknown",
            ServerState::Up { .. } => "up",
            ServerState::Banned { .. } => "banned",
        }
    }

    pub fn observed(&self) -> Option<&Observation> {
        match self {
            ServerState::Up { observed, .. } => Some(observed),
            _ => None,
        }
    }
}

/// The part of a state whose change is worth a log line: not the LSNs or times of every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unknown,
    Up(Role),
    Banned,
}

/// One server's state plus the count of failed checks in a row, which decides when to ban.
#[derive(Debug, Clone)]
pub struct Tracker {
    state: ServerState,
    /// Consecutive failed checks; 0 after any success.
    failures: u32,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            state: ServerState::Unknown,
            failures: 0,
        }
    }
}

impl Tracker {
    pub fn state(&self) -> &ServerState {
        &self.state
    }

    /// Takes one check's outcome. Returns `(before, after)` when the kind of state changed, for
    /// the one log line per change.
    pub fn record(
        &mut self,
        outcome: Result<Observation, String>,
        now: SystemTime,
        failures_to_ban: u32,
    ) -> Option<(Kind, Kind)> {
        let before = self.state.kind();
        match outcome {
            Ok(observed) => {
                self.failures = 0;
                self.state = ServerState::Up {
                    observed,
                    checked_at: now,
                };
            }
            Err(reason) => {
                self.failures = self.failures.saturating_add(1);
                let failures = self.failures;
                match &mut self.state {
                    ServerState::Banned {
                        reason: last,
                        failures: count,
                        ..
                    } => {
                        // Still banned: keep `since`, show the latest reason.
                        *last = reason.into();
                        *count = failures;
                    }
                    // Below the threshold an `Up` server keeps its last observation: one lost
                    // answer does not take it out of rotation.
                    _ if failures < failures_to_ban => {}
                    _ => {
                        self.state = ServerState::Banned {
                            reason: reason.into(),
                            since: now,
                            failures,
                        }
                    }
                }
            }
        }
        let after = self.state.kind();
        (before != after).then_some((before, after))
    }
}

/// How far a replica is behind its primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// The primary's current LSN minus the replica's replay LSN, both from the same round.
    pub bytes: u64,
    /// 0 when `bytes` is 0; otherwise the time since the commit of the last transaction the
    /// replica replayed. Caveat: a primary that writes WAL without committing anything (a
    /// checkpoint on an idle server) makes this the age of the last commit until the replica has
    /// replayed that WAL, normally by the next round.
    pub ms: u64,
}

/// A replica's lag behind `primary_lsn`; `None` when the replica has not replayed anything yet,
/// or is behind and has no replayed transaction whose age would give the time.
pub fn lag(primary_lsn: Lsn, replica: &Observation) -> Option<Lag> {
    let bytes = primary_lsn.bytes_after(replica.lsn?);
    let ms = if bytes == 0 {
        0
    } else {
        replica.since_last_replay_ms?
    };
    Some(Lag { bytes, ms })
}

/// Which server of a shard takes writes now, from what each server said in this round (`None`
/// for a server that is not up). The previous choice stays while it is still a writable primary,
/// so a failed-over shard does not flip back when its old primary comes back writable; otherwise
/// the configured primary (index 0) is preferred, then the first writable replica.
pub fn choose_primary(observed: &[Option<Role>], previous: Option<usize>) -> Option<usize> {
    let writable = |i: usize| observed.get(i) == Some(&Some(Role::Primary));
    if let Some(p) = previous.filter(|&p| writable(p)) {
        return Some(p);
    }
    (0..observed.len()).find(|&i| writable(i))
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
