//! Reads on replicas (DESIGN §2.4, issue 5), and read-your-writes.
//!
//! A statement the router calls replica-safe ([`crate::router::reads`]) goes to a replica of its
//! shard when the database has `read_replicas: true`, the session has not asked for the primary
//! (`SET shardgate.target_role = 'primary'`), and it starts a transaction of its own: outside an
//! explicit transaction, or as the first statement of `BEGIN READ ONLY`. The replica is the
//! usable one (up, in recovery, within `max_replica_lag_ms`) with the fewest transactions on it
//! or waiting for it; with none usable, or when checking one out fails, the primary answers.
//!
//! Read-your-writes: when a transaction that wrote ends on a primary, shardgate asks that server
//! for its WAL insert position (`pg_current_wal_insert_lsn()`, at or past the commit record) on
//! the same connection, pipelined right behind the client's own messages: the client's reply is
//! not delayed, the backend is held one round trip longer. Until the answer is in, the session
//! is still on that primary; after it, its reads of that shard go only to replicas whose replay
//! position (from the last health check) has reached it. A position shardgate could not read
//! counts as "not yet anywhere": reads stay on the primary until the next write tells a new one.

use std::sync::Arc;

use crate::net::ClientStream;

use super::checkout::Place;
use super::replies::Pending;
use super::{Held, Session};
use crate::config::{PoolMode, RoutingConfig};
use crate::health::Lsn;
use crate::metrics::At;
use crate::pool::Pool;
use crate::protocol::backend::TxStatus;
use crate::protocol::frontend::Query;
use crate::protocol::{PgError, SqlState};
use crate::router::lex::bare_words;
use crate::topology::Shard;

/// What shardgate asks a primary after a write transaction ends on it.
const COMMIT_LSN_SQL: &str = "SELECT pg_catalog.pg_current_wal_insert_lsn()";

/// Which server of its shard a held backend is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Server {
    Primary,
    Replica,
}

/// Per shard (by name), the WAL position the session's last write transaction there ended at.
#[derive(Debug, Default)]
pub(super) struct Commits(Vec<(Arc<str>, Lsn)>);

impl Commits {
    fn get(&self, shard: &str) -> Option<Lsn> {
        self.0.iter().find(|(s, _)| &**s == shard).map(|(_, l)| *l)
    }

    fn record(&mut self, shard: &Arc<str>, lsn: Lsn) {
        match self.0.iter_mut().find(|(s, _)| s == shard) {
            Some(entry) => entry.1 = lsn,
            None => self.0.push((shard.clone(), lsn)),
        }
    }
}

impl Held {
    /// Which server's metrics its statements count in.
    pub(super) fn at(&self) -> At {
        At {
            shard: self.index,
            replica: self.server == Server::Replica,
        }
    }
}

impl<S: ClientStream> Session<S> {
    /// The held backend's server, for the metrics.
    pub(super) fn held_at(&self) -> Option<At> {
        self.backend.as_ref().map(Held::at)
    }

    /// Whether a replica may take the transaction a replica-safe statement would start now.
    pub(super) fn may_read_on_replica(&self) -> bool {
        if self.hints.primary_only || self.mode == PoolMode::Session || self.backend.is_some() {
            return false;
        }
        match &self.deferred_begin {
            None => self.status == TxStatus::Idle,
            Some(begin) => is_read_only_begin(begin),
        }
    }

    /// The replica of `shard` to read from now, if one is usable (see the module doc).
    pub(super) fn replica_for<'a>(
        &self,
        routing: &RoutingConfig,
        database: &str,
        shard: &'a Shard,
    ) -> Option<&'a Pool> {
        let report = self.shared.health.report();
        let health = report.shard(database, &shard.name)?;
        let since = routing
            .read_your_writes
            .then(|| self.commits.get(&shard.name))
            .flatten();
        let usable = |pool: &&Pool| {
            health
                .servers
                .iter()
                .find(|s| s.key.is(pool.target()))
                .is_some_and(|s| {
                    s.is_usable_for_reads(routing.max_replica_lag_ms)
                        && since.is_none_or(|commit| s.lsn().is_some_and(|at| at >= commit))
                })
        };
        shard
            .replicas
            .iter()
            .filter(usable)
            .min_by_key(|p| p.outstanding())
    }

    /// A statement for `place` is about to run on the held backend: unless it is a known read,
    /// it may write (read-your-writes then asks where the transaction's WAL ends).
    pub(super) fn note_may_write(&mut self, place: Place) {
        if let Some(held) = self.backend.as_mut().filter(|_| !place.read) {
            held.wrote = true;
        }
    }

    /// A held replica takes the next statement only if it is a read too, or if the client's
    /// explicit (read-only) transaction is on it. Otherwise the statement waits for the earlier
    /// batches to end, or — in the same batch as the reads — is refused.
    pub(super) fn replica_refusal(&self, replica_safe: bool) -> Option<PgError> {
        let held = self.backend.as_ref()?;
        let in_explicit = self.status != TxStatus::Idle || self.deferred_begin.is_some();
        if held.server != Server::Replica || replica_safe || in_explicit {
            return None;
        }
        let message = format!(
            "this statement needs the primary, but the reads before it in the same batch went to \
             a replica of shard \"{}\"",
            held.shard()
        );
        Some(
            PgError::error(SqlState::FeatureNotSupported, message).with_hint(
                "End the batch with Sync before the write, or SET shardgate.target_role = \
                 'primary' for this session.",
            ),
        )
    }

    /// A transaction that wrote has ended on the held primary: ask it where its WAL is now
    /// (read-your-writes), pipelined behind the client's messages.
    pub(super) fn after_write_commit(&mut self, held: &mut Held) {
        if !std::mem::take(&mut held.wrote) || held.server != Server::Primary {
            return;
        }
        let wanted = self
            .router
            .as_ref()
            .and_then(|r| r.replicas())
            .is_some_and(|r| r.read_your_writes);
        if wanted && self.mode == PoolMode::Transaction {
            Query {
                sql: COMMIT_LSN_SQL,
            }
            .encode(&mut self.bout);
            self.replies.push(Pending::CommitLsn);
        }
    }

    /// A statement or transaction committed on several shards at once (not on the held
    /// backend): where their WAL ends is not asked, so those shards' reads go to their primaries
    /// until the session's next write there tells a position.
    pub(super) fn note_unknown_commits<'a>(&mut self, shards: impl Iterator<Item = &'a str>) {
        let wanted = self.router.as_ref().and_then(|r| r.replicas());
        if wanted.is_some_and(|r| r.read_your_writes) {
            for shard in shards {
                self.commits.record(&Arc::from(shard), Lsn(u64::MAX));
            }
        }
    }

    /// The answer to [`COMMIT_LSN_SQL`] (`None`: it failed) from shard `shard`'s primary.
    pub(super) fn note_commit_lsn(&mut self, shard: &Arc<str>, lsn: Option<Lsn>) {
        let lsn = lsn.map_or(Lsn(u64::MAX), Lsn::as_record_end);
        self.commits.record(shard, lsn);
    }
}

/// Whether a BEGIN / START TRANSACTION asks for a read-only transaction.
fn is_read_only_begin(sql: &str) -> bool {
    let words: Vec<String> = bare_words(sql)
        .into_iter()
        .map(|(_, w)| w.to_ascii_lowercase())
        .collect();
    let has = |second: &str| words.windows(2).any(|w| w[0] == "read" && w[1] == second);
    has("only") && !has("write")
}

/// The LSN in a DataRow of one text column (`pg_current_wal_insert_lsn()`).
pub(super) fn lsn_of_data_row(body: &[u8]) -> Option<Lsn> {
    let columns = body.get(..2)?;
    if columns != [0, 1] {
        return None;
    }
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    let text = body.get(6..6 + usize::try_from(len).ok()?)?;
    Lsn::parse(std::str::from_utf8(text).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_begins_are_recognised() {
        for sql in [
            "BEGIN READ ONLY",
            "begin transaction isolation level repeatable read, read only",
            "START TRANSACTION READ ONLY, DEFERRABLE",
        ] {
            assert!(is_read_only_begin(sql), "{sql}");
        }
        for sql in [
            "BEGIN",
            "BEGIN READ WRITE",
            "BEGIN /* read only */",
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        ] {
            assert!(!is_read_only_begin(sql), "{sql}");
        }
    }

    #[test]
    fn the_lsn_is_read_from_its_data_row() {
        let text = b"0/3000148";
        let mut row = vec![0, 1];
        row.extend_from_slice(&(text.len() as i32).to_be_bytes());
        row.extend_from_slice(text);
        assert_eq!(lsn_of_data_row(&row), Some(Lsn(0x3000148)));
        assert_eq!(lsn_of_data_row(&[0, 1, 255, 255, 255, 255]), None);
        assert_eq!(lsn_of_data_row(&[0, 2]), None);
    }
}
