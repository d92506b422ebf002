//! Getting a backend for the client's next message: checking one out of the right server's pool
//! when none is held, and bringing it to the client's settings.

use crate::net::ClientStream;

use super::replica::Server;
use super::replies::Pending;
use super::{checkout_error, client, Held, Session};
use crate::pool::{CheckoutError, Pool, PooledConnection};
use crate::protocol::backend::TxStatus;
use crate::protocol::{PgError, SqlState};
use crate::topology::Shard;
use crate::topology::Snapshot;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// Where a statement needs a backend: its shard (`None`: any), and whether it is a read a
/// replica may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub shard: Option<usize>,
    pub read: bool,
}

impl Place {
    pub const ANY: Place = Place {
        shard: None,
        read: false,
    };

    /// A statement for the primary of `shard`.
    pub fn primary(shard: Option<usize>) -> Place {
        Place { shard, read: false }
    }

    /// A read a replica of `shard` may answer.
    pub fn read(shard: Option<usize>) -> Place {
        Place { shard, read: true }
    }
}

impl<S: ClientStream> Session<S> {
    /// Checks out a backend for a new transaction and queues what brings it to this client's
    /// settings. The settings query is pipelined ahead of the client's first message: no extra
    /// round trip.
    pub(super) async fn checkout(&mut self, place: Place) -> Result<(), PgError> {
        let snapshot = self.shared.store.local(self.worker);
        let db = database(&snapshot, &self.info.database, &mut self.db_hint)?;
        let index = crate::router::fallback_shard(db, place.shard);
        let shard = &db.shards[index];
        self.obs
            .refresh(self.shared.store.metrics(), &snapshot, db, self.worker);
        // The primary's checkout awaited here, not inside a function that also tries a replica:
        // a checkout that waits in line is polled again through every level of futures.
        let (server, conn) = match self.replica_to_read(&db.name, shard, place.read) {
            Some(replica) => self.replica_checkout(index, &db.name, shard, replica).await,
            None => (
                Server::Primary,
                self.primary_checkout(index, &db.name, shard).await,
            ),
        };
        let conn = conn.map_err(checkout_error)?;
        self.publish_cancel(Some(conn.cancel_target()));
        // Another client's unnamed statement may be on this backend, never this client's.
        self.unnamed_here = false;
        self.backend = Some(Held {
            conn,
            index,
            server,
            wrote: false,
            _snapshot: snapshot.clone(),
        });
        self.sync_settings();
        Ok(())
    }

    /// The replica of `shard` a read may use now, if any (none for a write).
    fn replica_to_read<'a>(
        &self,
        database: &str,
        shard: &'a Shard,
        read: bool,
    ) -> Option<&'a Pool> {
        let routing = self.router.as_ref().and_then(|r| r.replicas())?;
        if !read || !self.may_read_on_replica() {
            return None;
        }
        self.replica_for(routing, database, shard)
    }

    /// A connection to `replica` of `shard` for a read, falling back to the primary when its
    /// checkout fails.
    async fn replica_checkout(
        &self,
        index: usize,
        database: &str,
        shard: &Shard,
        replica: &Pool,
    ) -> (Server, Result<PooledConnection, CheckoutError>) {
        let at = crate::metrics::At {
            shard: index,
            replica: true,
        };
        let started = Instant::now();
        let result = replica.checkout(self.worker, started).await;
        self.note_checkout(at, started, &result);
        if let Ok(conn) = result {
            return (Server::Replica, Ok(conn));
        }
        (
            Server::Primary,
            self.primary_checkout(index, database, shard).await,
        )
    }

    /// A connection to the writable primary of `shard`. An operator's promotion holds writes
    /// back: a checkout that raced with its start gives the connection back and waits too (the
    /// promotion waits for checked-out connections; the fences make one of the two see the
    /// other).
    pub(super) async fn primary_checkout(
        &self,
        index: usize,
        database: &str,
        shard: &Shard,
    ) -> Result<PooledConnection, CheckoutError> {
        let health = &self.shared.health;
        loop {
            if health.is_fenced(database, &shard.name) {
                self.wait_for_switchover(database, shard).await?;
            }
            let Some(pool) = health.writable(database, shard) else {
                return Err(CheckoutError::Unreachable {
                    shard: shard.name.to_string(),
                    reason: "its configured primary was demoted by a promotion and the health \
                             checks do not see the promoted server yet"
                        .into(),
                });
            };
            let started = Instant::now();
            let result = pool.checkout(self.worker, started).await;
            self.note_checkout(index, started, &result);
            let conn = result?;
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            if !health.is_fenced(database, &shard.name) {
                return Ok(conn);
            }
        }
    }

    /// While an operator's promotion holds the shard's writes back, a new transaction waits
    /// for it up to `pool.checkout_timeout_ms`, then fails with 08006 (retryable). Called once
    /// the shard was seen fenced; the loop looks again, so a fence lifted meanwhile costs no wait.
    async fn wait_for_switchover(
        &self,
        database: &str,
        shard: &Shard,
    ) -> Result<(), CheckoutError> {
        let health = &self.shared.health;
        let timeout = shard.primary.settings().checkout_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        while health.is_fenced(database, &shard.name) {
            if tokio::time::Instant::now() >= deadline {
                return Err(CheckoutError::Unreachable {
                    shard: shard.name.to_string(),
                    reason: format!(
                        "its writes are held while a replica is promoted (waited {timeout:?}); \
                         retry the transaction"
                    ),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Queues the settings query if the held backend's settings differ from the client's.
    pub(super) fn sync_settings(&mut self) {
        let Some(held) = self.backend.as_mut() else {
            return;
        };
        if let Some(sql) = held.conn.session.settings.sync(self.settings.wanted()) {
            crate::protocol::frontend::Query { sql: &sql }.encode(&mut self.bout);
            self.replies.push(Pending::Settings);
            // A simple query drops the backend's unnamed statement.
            self.unnamed_here = false;
        }
    }

    /// Makes sure a backend is held; on failure answers a simple query with the error.
    pub(super) fn ensure_backend_for_query(&mut self) -> impl Future<Output = bool> + '_ {
        // The future itself, not one wrapping it: each level of nesting costs its entry on
        // every poll, and a checkout that waits is polled twice.
        self.ensure_backend_for_query_on(Place::ANY)
    }

    /// Makes sure a backend for `place` is held. A held backend on another shard is the caller's
    /// business (see `route::cross_shard`), as is a held replica (`Session::replica_refusal`).
    pub(super) async fn ensure_backend_for_query_on(&mut self, place: Place) -> bool {
        if self.use_held(true) {
            return true;
        }
        match self.checkout(place).await {
            Ok(()) => {
                self.send_ahead(true);
                true
            }
            Err(err) => {
                self.push_synthetic(|out| client::query_error(out, &err, TxStatus::Idle));
                false
            }
        }
    }

    /// Makes sure a backend is held; on failure reports the error and skips to Sync.
    pub(super) fn ensure_backend_for_extended(&mut self) -> impl Future<Output = bool> + '_ {
        self.ensure_backend_for_extended_on(Place::ANY, false)
    }

    /// `runs`: the message executes something (Bind, Execute), so a deferred BEGIN goes first.
    pub(super) async fn ensure_backend_for_extended_on(
        &mut self,
        place: Place,
        runs: bool,
    ) -> bool {
        if self.use_held(runs) {
            return true;
        }
        match self.checkout(place).await {
            Ok(()) => {
                self.send_ahead(runs);
                true
            }
            Err(err) => {
                self.extended_error(err);
                false
            }
        }
    }

    /// Readies the held backend for the client's next message; false when none is held. Most
    /// messages find their transaction's backend held: this way they build no checkout future
    /// (−180 instructions of an extended-protocol query's 11,700, four messages asking).
    fn use_held(&mut self, runs: bool) -> bool {
        if self.backend.is_none() {
            return false;
        }
        if self.status == TxStatus::Idle && self.replies.is_empty() {
            // A held backend between transactions (session mode): settings may have changed.
            self.sync_settings();
        }
        self.send_ahead(runs);
        true
    }

    /// What must reach the backend before the client's message: a deferred BEGIN (if the
    /// message runs something) and the Parses owed to the client.
    fn send_ahead(&mut self, runs: bool) {
        if runs {
            self.start_deferred();
        }
        self.place_owed();
    }
}

/// The client's database `name` in `snapshot` (`hint`: where it was last time); a reload may
/// have removed it.
pub(super) fn database<'s>(
    snapshot: &'s Snapshot,
    name: &str,
    hint: &mut crate::topology::DatabaseHint,
) -> Result<&'s Arc<crate::topology::Database>, PgError> {
    snapshot.database(name, hint).ok_or_else(|| {
        PgError::error(
            SqlState::InvalidCatalogName,
            format!("database \"{name}\" is no longer configured"),
        )
    })
}
