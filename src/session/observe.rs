//! What a session records into the proxy's metrics ([`crate::metrics`]): statements per shard and
//! kind, their duration, routing decisions, backend errors, checkout waits and client bytes; and
//! into its database's hot-key counters ([`crate::hotspots`]): each routed statement's shard and key.
//!
//! The query path pays atomic adds on handles resolved once per session and epoch, two clock
//! reads per statement, and a push and pop on a queue whose capacity is reused: no allocation,
//! no lookup by name, no formatting.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::net::ClientStream;

use super::route::{Routed, StatementText};
use super::Session;
use crate::hotspots::Hotspots;
use crate::metrics::{At, BackendError, DbMetrics, Decision, Kind, Metrics};
use crate::pool::{CheckoutError, PooledConnection};
use crate::protocol::frontend::{BindParams, Query};
use crate::router::report::{kind_of, shadow_verdict};
use crate::router::{Plan, Router};
use crate::topology::{Database, Snapshot};

/// The session's handles, and its statements on the held backend not yet answered.
#[derive(Default)]
pub(super) struct Observer {
    /// The epoch whose shard order the handles follow, and the client's database's handles
    /// (`None` while `metrics.statements` is off).
    db: Option<(u64, Option<Arc<DbMetrics>>)>,
    /// Statements sent to the held backend, oldest first.
    inflight: VecDeque<InFlight>,
    /// `log.slow_query_ms` when set, and the names of the database and its shards for the line.
    slow: Option<Slow>,
    /// The client's database's hot-key counters, refreshed with its router.
    pub hotspots: Option<Arc<Hotspots>>,
}

impl Observer {
    /// Follows the snapshot a backend is checked out under, so shard indexes match; the handles
    /// are the cells of the session's worker.
    pub fn refresh(
        &mut self,
        metrics: &Metrics,
        snapshot: &Snapshot,
        db: &Database,
        worker: usize,
    ) {
        if self.db.as_ref().is_some_and(|(e, _)| *e == snapshot.epoch) {
            return;
        }
        let names: Vec<Arc<str>> = db.shards.iter().map(|s| s.name.clone()).collect();
        let handles = snapshot.config.metrics.statements.then(|| {
            let shards: Vec<(Arc<str>, bool)> = db
                .shards
                .iter()
                .map(|s| (s.name.clone(), !s.replicas.is_empty()))
                .collect();
            metrics.database(&db.name, &shards, worker)
        });
        self.db = Some((snapshot.epoch, handles));
        let ms = snapshot.config.log.slow_query_ms;
        self.slow = (ms > 0).then(|| Slow {
            after: Duration::from_millis(ms),
            database: db.name.clone(),
            shards: names,
        });
    }

    pub fn db(&self) -> Option<&DbMetrics> {
        self.db.as_ref().and_then(|(_, db)| db.as_deref())
    }

    /// Statements whose ReadyForQuery has come (`received` of them so far): their durations.
    pub fn answered(&mut self, received: u64) {
        let now = Instant::now();
        while self.inflight.front().is_some_and(|f| f.ready < received) {
            let done = self.inflight.pop_front().expect("checked");
            let took = now.saturating_duration_since(done.sent);
            if let Some(db) = self.db() {
                db.duration(done.at, took);
            }
            if let Some(slow) = self.slow.as_ref().filter(|s| took >= s.after) {
                slow.log(&done, took);
            }
        }
    }
}

/// A statement sent to the held backend: the ReadyForQuery that ends it (see
/// `Replies::readies_asked`), when it was sent, its shard, and — only when slow statements are
/// logged — its text, held by reference count.
struct InFlight {
    ready: u64,
    sent: Instant,
    at: At,
    text: Option<Shown>,
}

/// The client's text of a statement, for the slow-statement log.
pub(super) enum Shown {
    /// A simple Query message.
    Query(Bytes),
    Prepared(StatementText),
}

impl Shown {
    fn sql(&self) -> &str {
        match self {
            Shown::Query(frame) => {
                Query::decode(&frame[crate::protocol::HEADER_LEN..]).map_or("", |q| q.sql)
            }
            Shown::Prepared(text) => text.sql().unwrap_or(""),
        }
    }
}

struct Slow {
    after: Duration,
    database: String,
    shards: Vec<Arc<str>>,
}

impl Slow {
    fn log(&self, done: &InFlight, took: Duration) {
        let sql: String = done
            .text
            .as_ref()
            .map_or("", Shown::sql)
            .chars()
            .take(500)
            .collect();
        let shard = self.shards.get(done.at.shard).map_or("?", |s| s);
        tracing::warn!(target: "shardgate::slow", database = %self.database, %shard, ms = took.as_millis() as u64, %sql, "slow statement");
    }
}

/// Records the duration of a statement run on several shards when it is done.
pub(super) struct FanTiming {
    db: Option<Arc<DbMetrics>>,
    shards: Vec<usize>,
    started: Instant,
}

impl Drop for FanTiming {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        for &s in &self.shards {
            if let Some(db) = &self.db {
                db.duration(s, took);
            }
        }
    }
}

impl<S: ClientStream> Session<S> {
    /// A simple query (Query message `frame`, its first statement of `kind`) is about to go to
    /// the held backend.
    pub(super) fn note_sent(&mut self, kind: Kind, frame: &[u8]) {
        let text = self
            .obs
            .slow
            .as_ref()
            .map(|_| Shown::Query(Bytes::copy_from_slice(frame)));
        self.note_statement(kind, text);
    }

    /// The client's named (or unnamed) statement is about to be bound on the held backend.
    pub(super) fn note_bound(&mut self, statement: &str) {
        let kind = match (statement, &self.unnamed) {
            ("", Some(_)) => self.unnamed_kind,
            ("", None) => Kind::Other,
            (name, _) => self.statements.get(name).map_or(Kind::Other, |s| s.kind),
        };
        let text = match self.obs.slow {
            Some(_) => self.statement_text(statement).map(Shown::Prepared),
            None => None,
        };
        self.note_statement(kind, text);
    }

    /// Counts a statement on the held backend's shard and starts its clock. It ends at the next
    /// ReadyForQuery the client is sent (its Query's, or its batch's Sync's).
    fn note_statement(&mut self, kind: Kind, text: Option<Shown>) {
        let Some(at) = self.held_at() else { return };
        match self.obs.db() {
            Some(db) => db.query(at, kind),
            // Nothing to time: only the slow-statement log would want the statement's clock.
            None if self.obs.slow.is_none() => return,
            None => {}
        }
        self.obs.inflight.push_back(InFlight {
            ready: self.replies.readies_asked(),
            sent: Instant::now(),
            at,
            text,
        });
    }

    /// A statement runs on `shards` at once (outside the held backend); counted per shard.
    pub(super) fn note_fan(&self, shards: &[usize], sql: &str) -> FanTiming {
        let db = self.obs.db.as_ref().and_then(|(_, db)| db.clone());
        if let Some(db) = &db {
            let kind = kind_of(sql);
            for &s in shards {
                db.query(s, kind);
            }
        }
        FanTiming {
            db,
            shards: shards.to_vec(),
            started: Instant::now(),
        }
    }

    /// Shadow mode (`routing.mode: shadow`): everything goes to the default shard, and each
    /// distinct statement that would have needed several shards or been refused is logged once.
    pub(super) fn shadow(&self, sql: &str) {
        let Some(router) = self.router.as_ref().filter(|r| r.is_shadow()) else {
            return;
        };
        // Counted per statement; logged once per distinct text (`shadow_report`).
        let plan = router.plan(sql);
        if let Some(db) = self.obs.db() {
            shadow_verdict(&plan).inspect(|&v| db.shadow(v));
            if matches!(*plan, crate::router::Plan::Unparsed { .. }) {
                db.parse_failure();
            }
        }
        if let Some(decision) = router.shadow_report(sql) {
            let shown: String = sql.chars().take(500).collect();
            tracing::info!(target: "shardgate::shadow", database = %self.info.database, decision = decision.kind(), %decision, sql = %shown, "shadow routing");
        }
    }

    /// A statement routed: one query on its shard (with its first key), or on each shard of a
    /// fan-out, for `GET /v1/hotspots`. Refused statements are not traffic.
    pub(super) fn note_traffic(
        &self,
        router: &Router,
        plan: &Plan,
        params: Option<&BindParams<'_>>,
        routed: &Routed,
    ) {
        let Some(h) = &self.obs.hotspots else {
            return;
        };
        match (routed, plan) {
            (Routed::To(Some(shard)) | Routed::Read(Some(shard)), Plan::Keyed(k)) => {
                match router.first_key(k, params) {
                    Some(key) => h.record(&k.table, &key, router.bucket(&key), *shard),
                    None => h.record_shard(*shard),
                }
            }
            (Routed::To(Some(shard)) | Routed::Read(Some(shard)), _) => h.record_shard(*shard),
            (Routed::Fan(fan), _) => fan.shards.iter().for_each(|&s| h.record_shard(s)),
            _ => {}
        }
    }

    pub(super) fn note_decision(&self, decision: Decision) {
        if let Some(db) = self.obs.db() {
            db.decision(decision);
        }
    }

    /// The backend's replies so far have been handled: time the statements they ended.
    pub(super) fn note_answered(&mut self) {
        if !self.obs.inflight.is_empty() {
            self.obs.answered(self.replies.readies_received());
        }
    }

    /// The held backend broke: its statements will get no reply.
    pub(super) fn note_lost(&mut self, at: At) {
        self.obs.inflight.clear();
        if let Some(db) = self.obs.db() {
            db.backend_error(at, BackendError::ConnectionLost);
        }
    }

    /// Records a checkout from a pool of `at` that started at `started`: its wait, or its
    /// failure. The callers await the pool themselves: a checkout that waits in line is polled
    /// again through every level of futures, so a timing level around it would cost each time.
    pub(super) fn note_checkout(
        &self,
        at: impl Into<At>,
        started: Instant,
        result: &Result<PooledConnection, CheckoutError>,
    ) {
        let Some(db) = self.obs.db() else { return };
        let at = at.into();
        match result {
            Ok(_) => db.checkout_wait(at, started.elapsed()),
            Err(CheckoutError::Exhausted { .. } | CheckoutError::Connecting { .. }) => {
                db.backend_error(at, BackendError::PoolTimeout)
            }
            Err(CheckoutError::Unreachable { .. }) => {
                db.backend_error(at, BackendError::Unreachable)
            }
        }
    }

    pub(super) fn note_received(&self, n: usize) {
        if let Some(db) = self.obs.db() {
            db.received(n);
        }
    }

    pub(super) fn note_sent_bytes(&self, n: usize) {
        if let Some(db) = self.obs.db() {
            db.sent(n);
        }
    }
}
