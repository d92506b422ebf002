//! Getting a backend for the client's next message: checking one out of the right server's pool
//! when none is held, and bringing it to the client's settings.

use tokio::io::{AsyncRead, AsyncWrite};

use super::replies::Pending;
use super::{checkout_error, client, settings, Held, Session};
use crate::protocol::backend::TxStatus;
use crate::protocol::{PgError, SqlState};
use crate::topology::Snapshot;
use std::sync::Arc;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Checks out a backend for a new transaction and queues what brings it to this client's
    /// settings. The settings query is pipelined ahead of the client's first message: no extra
    /// round trip.
    pub(super) async fn checkout(&mut self, want: Option<usize>) -> Result<(), PgError> {
        let snapshot = self.shared.store.load();
        let db = self.database(&snapshot)?;
        let index = crate::router::fallback_shard(&db, want);
        let shard = &db.shards[index];
        self.obs
            .refresh(self.shared.store.metrics(), &snapshot, &db);
        let pool = crate::health::writable(&self.shared.health.report(), &db.name, shard);
        let conn = self.timed_checkout(index, pool).await;
        let conn = conn.map_err(checkout_error)?;
        self.publish_cancel(Some(conn.cancel_target()));
        // Another client's unnamed statement may be on this backend, never this client's.
        self.unnamed_here = false;
        self.backend = Some(Held {
            conn,
            shard: shard.name.clone(),
            index,
            _snapshot: snapshot.clone(),
        });
        self.sync_settings();
        Ok(())
    }

    /// The client's database in `snapshot`; a reload may have removed it.
    pub(super) fn database(
        &self,
        snapshot: &Snapshot,
    ) -> Result<Arc<crate::topology::Database>, PgError> {
        snapshot
            .databases
            .get(&self.info.database)
            .cloned()
            .ok_or_else(|| {
                PgError::error(
                    SqlState::InvalidCatalogName,
                    format!(
                        "database \"{}\" is no longer configured",
                        self.info.database
                    ),
                )
            })
    }

    /// Queues the settings query if the held backend's settings differ from the client's.
    pub(super) fn sync_settings(&mut self) {
        let Some(held) = self.backend.as_mut() else {
            return;
        };
        let server = &mut held.conn.session;
        if let Some(sql) = settings::sync_sql(
            &server.settings,
            server.settings_unknown,
            self.settings.effective(),
        ) {
            crate::protocol::frontend::Query { sql: &sql }.encode(&mut self.bout);
            server.settings = self.settings.effective().clone();
            server.settings_unknown = false;
            self.replies.push(Pending::Settings);
            // A simple query drops the backend's unnamed statement.
            self.unnamed_here = false;
        }
    }

    /// Makes sure a backend is held; on failure answers a simple query with the error.
    pub(super) async fn ensure_backend_for_query(&mut self) -> bool {
        self.ensure_backend_for_query_on(None).await
    }

    pub(super) async fn ensure_backend_for_query_on(&mut self, want: Option<usize>) -> bool {
        match self.ensure_backend_on(want, true).await {
            Ok(()) => true,
            Err(err) => {
                self.push_synthetic(|out| client::query_error(out, &err, TxStatus::Idle));
                false
            }
        }
    }

    /// Makes sure a backend is held; on failure reports the error and skips to Sync.
    pub(super) async fn ensure_backend_for_extended(&mut self) -> bool {
        self.ensure_backend_for_extended_on(None, false).await
    }

    /// `runs`: the message executes something (Bind, Execute), so a deferred BEGIN goes first.
    pub(super) async fn ensure_backend_for_extended_on(
        &mut self,
        want: Option<usize>,
        runs: bool,
    ) -> bool {
        match self.ensure_backend_on(want, runs).await {
            Ok(()) => true,
            Err(err) => {
                self.extended_error(err);
                false
            }
        }
    }

    /// Makes sure a backend on shard `want` (any, if `None`) is held. A held backend on another
    /// shard is the caller's business (see `route::cross_shard`).
    async fn ensure_backend_on(&mut self, want: Option<usize>, runs: bool) -> Result<(), PgError> {
        let result = self.held_backend_on(want).await;
        if result.is_ok() {
            if runs {
                self.start_deferred();
            }
            self.place_owed();
        }
        result
    }

    async fn held_backend_on(&mut self, want: Option<usize>) -> Result<(), PgError> {
        if self.backend.is_none() {
            return self.checkout(want).await;
        }
        if self.status == TxStatus::Idle && self.replies.is_empty() {
            // A held backend between transactions (session mode): settings may have changed.
            self.sync_settings();
        }
        Ok(())
    }
}
