//! Routing inside the session: which shard a statement needs, deferring `BEGIN` until a statement
//! picks the shard, and refusing a second shard in one transaction.
//!
//! Only databases with more than one shard take these paths; a one-shard database is served
//! exactly as the pass-through proxy it was.

use std::sync::Arc;

use crate::net::ClientStream;
use bytes::Bytes;

use super::fanout::{Failure, FanOut, Job};
use super::prepared::Statement;
use super::replies::Pending;
use super::Session;
use crate::metrics::{Decision, Rejection};
use crate::protocol::backend::{self as bmsg, TxStatus};
use crate::protocol::frontend::{Bind, BindParams, Parse, Query};
use crate::protocol::{PgError, SqlState};
use crate::router::{Plan, RouteError, Router, Target};
pub(super) use errors::route_error;
use errors::{aborted_error, end_tag, in_transaction_error, multi_shard_error, raise_sql};

mod errors;

/// A Parse whose reply is owed until a statement picks the shard it is sent to.
pub(super) enum Owed {
    Unnamed(Bytes),
    Named { name: String, stmt: Arc<Statement> },
}

/// What a BEGIN/COMMIT/ROLLBACK answered by shardgate itself does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LocalTx {
    /// Starts the deferred transaction; the text is sent before its first statement.
    Begin(String),
    /// Ends a transaction that never reached a server.
    End(&'static str),
    /// Ends a transaction that spans shards: a two-phase commit, or a rollback on each.
    Finish { commit: bool },
}

impl<S: ClientStream> Session<S> {
    /// The router for the next statement: refreshed between transactions, so a transaction plans
    /// against the snapshot it runs on.
    pub(super) fn router(&mut self) -> Option<Arc<Router>> {
        // Checked between transactions only; the snapshot itself is loaded only when it changed.
        if self.backend.is_none()
            && self.router.as_ref().map(|r| r.version) != Some(self.shared.store.version())
        {
            let snapshot = self.shared.store.load();
            self.router = self
                .shared
                .routers
                .get(&snapshot, &self.info.database, self.worker);
            self.obs.hotspots = self.shared.hotspots.get(&snapshot, &self.info.database);
            if let Some(db) = snapshot.databases.get(&self.info.database) {
                self.obs
                    .refresh(self.shared.store.metrics(), &snapshot, db, self.worker);
            }
        }
        // Cloned only when it routes: the count of an Arc every session shares is a cache line
        // the workers would pass to each other on every statement.
        self.router.as_ref().filter(|r| r.routes()).cloned()
    }

    /// The shard index of the held backend: the transaction's pinned shard.
    pub(super) fn pinned(&self) -> Option<usize> {
        self.backend.as_ref().map(|h| h.index)
    }

    /// Where a planned statement goes, or the error the client gets (and its reason).
    pub(super) fn target(
        &self,
        router: &Router,
        plan: &Plan,
        params: Option<&BindParams>,
    ) -> Result<Routed, (PgError, Rejection)> {
        let refused = |e: RouteError| (route_error(&e), e.rejection());
        if let Some(shard) = self.hinted_shard(router) {
            // `SET shardgate.shard`: like a `/* shardgate: shard=… */` comment on every statement.
            return Ok(Routed::To(Some(shard)));
        }
        match router.resolve(plan, params, self.pinned()) {
            Ok(Target::Any) => Ok(Routed::To(None)),
            Ok(Target::Shard(s)) => Ok(Routed::To(Some(s))),
            Ok(Target::Shards(shards)) => match Job::of(router, plan, params) {
                Ok(Some(job)) => Ok(Routed::Fan(FanOut { shards, job })),
                Ok(None) => Err((
                    multi_shard_error(router, plan, &shards),
                    Rejection::MultiShardUnsupported,
                )),
                Err(e) => Err(refused(e)),
            },
            Err(e) => Err(refused(e)),
        }
    }

    /// Whether the held backend only finishes the client's earlier, ended batches, outside any
    /// transaction shardgate knows of: a statement that needs another shard (or several, or a
    /// BEGIN that picks its shard later) then waits for those batches to end (`Routed::Wait`)
    /// instead of being refused. Whether they leave a transaction open is only known once their
    /// replies are in; if they do, the backend stays held and the statement is refused then.
    pub(super) fn may_wait_for_earlier(&self) -> bool {
        self.backend.is_some()
            && self.mode == crate::config::PoolMode::Transaction
            && !self.pinned
            && !self.skip_until_sync
            && self.deferred_begin.is_none()
            && !self.replies.copy_in
            && self.replies.only_ended_batches()
    }

    /// Whether the statement must wait for the earlier batches' replies before it is routed: a
    /// BEGIN (the backend may go back to the pool), and the end of a transaction that spans
    /// shards (every part of it must be settled).
    fn must_wait(&self, plan: &Plan) -> bool {
        let waits = match plan {
            Plan::Begin => true,
            Plan::End => self.spans(),
            _ => false,
        };
        waits && self.may_wait_for_earlier()
    }

    /// Whether a multi-shard statement may run now: only outside transactions (a transaction
    /// lives on one shard).
    fn may_fan_out(&self) -> bool {
        self.backend.is_none() && self.status == TxStatus::Idle && self.deferred_begin.is_none()
    }

    /// A BEGIN or COMMIT/ROLLBACK that shardgate answers itself: BEGIN when no backend is held
    /// (the transaction starts on the shard its first statement picks), and the end of a
    /// transaction that never reached a server.
    pub(super) fn local_tx(&self, plan: &Plan, sql: &str) -> Option<LocalTx> {
        if self.spans() {
            // Only at a settled point: else `spanning_refusal` refuses it.
            let ready = self.replies.is_empty() && !self.skip_until_sync;
            let single = matches!(plan, Plan::End) && !sql.to_ascii_lowercase().contains("chain");
            return (ready && single).then(|| LocalTx::Finish {
                commit: end_tag(sql) == "COMMIT",
            });
        }
        if self.backend.is_some() || self.mode != crate::config::PoolMode::Transaction {
            return None;
        }
        let local = self.deferred_begin.is_some() || self.status == TxStatus::Failed;
        match plan {
            Plan::Begin if self.deferred_begin.is_none() && self.status == TxStatus::Idle => {
                Some(LocalTx::Begin(sql.to_string()))
            }
            // A failed local transaction ends in ROLLBACK whatever the client says, as in Postgres.
            Plan::End if self.status == TxStatus::Failed => Some(LocalTx::End("ROLLBACK")),
            Plan::End if local => Some(LocalTx::End(end_tag(sql))),
            _ => None,
        }
    }

    /// Runs a local BEGIN/COMMIT/ROLLBACK: its CommandComplete (or the error the caller reports),
    /// and the new transaction status.
    pub(super) async fn run_local_tx(&mut self, tx: LocalTx) -> Option<Failure> {
        let tag = match tx {
            LocalTx::Begin(sql) => {
                self.deferred_begin = Some(sql.clone());
                self.tx_begin = Some(sql);
                self.status = TxStatus::InTransaction;
                "BEGIN"
            }
            LocalTx::End(tag) => {
                self.deferred_begin = None;
                self.forget_transaction();
                self.status = TxStatus::Idle;
                tag
            }
            LocalTx::Finish { commit } => match self.finish_spanning(commit).await {
                Ok(tag) => tag,
                Err(failure) => return Some(failure),
            },
        };
        self.push_synthetic(|out| bmsg::command_complete(out, tag));
        None
    }

    /// Routes a simple query: answers it locally, refuses it, or says which shard it needs.
    pub(super) async fn route_query(&mut self, sql: &str) -> Routed {
        let Some(router) = self.router() else {
            self.shadow(sql);
            self.note_decision(Decision::SingleShard);
            return Routed::To(None);
        };
        // Literals of the key make every text distinct: its shape is what is cached.
        let (planned, params) = match router.plan_shape(sql) {
            Some((planned, params)) => (planned, Some(params)),
            None => (router.planned(sql), None),
        };
        let plan = planned.plan;
        if let Plan::Multi(plans) = &*plan {
            self.note_multi(plans, sql);
        }
        if self.must_wait(&plan) {
            return Routed::Wait;
        }
        if let Some(tx) = self.local_tx(&plan, sql) {
            let failed = self.run_local_tx(tx).await;
            let status = self.status;
            self.push_synthetic(|out| {
                if let Some(f) = failed {
                    f.encode(out);
                }
                bmsg::ready_for_query(out, status)
            });
            return Routed::Done;
        }
        let read = planned.replica_safe;
        self.decide(
            &router,
            (&plan, read),
            sql,
            params.as_ref(),
            Self::refuse_query,
        )
        .await
    }

    /// Routes a Bind: answers it locally (a deferred BEGIN or its end), refuses it, or says which
    /// shard it needs. The key is in its parameters.
    pub(super) async fn route_bind(&mut self, b: &Bind<'_>) -> Routed {
        let Some(router) = self.router() else {
            // Only shadow mode looks at the text here: read it only then.
            if self.router.as_ref().is_some_and(|r| r.is_shadow()) {
                if let Some(sql) = self.statement_sql(b.statement) {
                    self.shadow(sql);
                }
            }
            self.note_decision(Decision::SingleShard);
            return Routed::To(None);
        };
        // Held by reference count, not copied: no allocation per Bind.
        let Some(text) = self.statement_text(b.statement) else {
            return Routed::To(None); // unknown statement: the server reports it
        };
        let Some(sql) = text.sql() else {
            return Routed::To(None); // a Parse we could not read: the server reports it
        };
        let planned = router.planned(sql);
        let plan = planned.plan;
        if self.must_wait(&plan) {
            return Routed::Wait;
        }
        let local = self.local_tx(&plan, sql);
        if let Some(tx) = local.filter(|_| self.owed_are_local(&router)) {
            self.answer_owed_locally();
            self.push_synthetic(|out| bmsg::empty(out, bmsg::BIND_COMPLETE));
            self.local_portal = Some((b.portal.to_owned(), tx));
            return Routed::Done;
        }
        // A malformed Bind is routed without its keys; the server reports it.
        let params = BindParams::decode(b.rest).ok();
        let read = planned.replica_safe;
        let refuse = Self::refuse_extended;
        self.decide(&router, (&plan, read), sql, params.as_ref(), refuse)
            .await
    }

    /// The shard a statement needs, or its refusal (reported by `refuse`): a failed local
    /// transaction takes nothing, and a pinned transaction takes a second shard only when it
    /// may span shards ([`super::spanning`]). `read`: a replica may answer the statement.
    async fn decide(
        &mut self,
        router: &Router,
        (plan, read): (&Plan, bool),
        sql: &str,
        params: Option<&BindParams<'_>>,
        refuse: fn(&mut Self, PgError),
    ) -> Routed {
        let newer = self.cleared(router, plan, params).await;
        let router = newer.as_deref().unwrap_or(router);
        // A refusal, with its reason for the metrics (`None`: not a routing decision).
        let target = if self.backend.is_none() && self.status == TxStatus::Failed {
            Err((aborted_error(), None))
        } else if let Some(err) = self.spanning_refusal(plan, sql) {
            Err((err, Some(Rejection::CrossShardTransaction)))
        } else {
            self.target(router, plan, params)
                .map_err(|(err, why)| (err, Some(why)))
        };
        self.note_savepoint(sql);
        if matches!(plan, Plan::Unparsed { .. }) {
            self.obs.db().inspect(|db| db.parse_failure());
        }
        let (routed, decision) = match target {
            Ok(Routed::To(Some(want)))
                if self.pinned().is_some_and(|p| p != want) && self.may_wait_for_earlier() =>
            {
                (Routed::Wait, None)
            }
            Ok(Routed::Fan(_)) if !self.may_fan_out() && self.may_wait_for_earlier() => {
                (Routed::Wait, None)
            }
            Ok(Routed::To(Some(want))) if self.pinned().is_some_and(|p| p != want) => {
                let taken = match self.second_shard_refusal(router, want) {
                    Some(err) => Err(err),
                    None => self.take_second_shard(want).await,
                };
                match taken {
                    Ok(()) => (Routed::To(Some(want)), Some(Decision::SingleShard)),
                    Err(err) => {
                        refuse(self, err);
                        let why = Rejection::CrossShardTransaction;
                        (Routed::Done, Some(Decision::Rejected(why)))
                    }
                }
            }
            Ok(Routed::Fan(fan)) if !self.may_fan_out() => {
                refuse(self, in_transaction_error(router, &fan));
                let why = Rejection::MultiShardInTransaction;
                (Routed::Done, Some(Decision::Rejected(why)))
            }
            Ok(Routed::Fan(fan)) => (Routed::Fan(fan), Some(Decision::MultiShard)),
            Ok(routed) => (routed, Some(Decision::SingleShard)),
            Err((err, why)) => {
                refuse(self, err);
                (Routed::Done, why.map(Decision::Rejected))
            }
        };
        let (routed, decision) = match (routed, decision) {
            (Routed::To(want), Some(Decision::SingleShard)) => self.server_role(want, read, refuse),
            other => other,
        };
        decision.inspect(|&d| self.note_decision(d));
        if matches!(decision, Some(Decision::SingleShard | Decision::MultiShard)) {
            self.note_traffic(router, plan, params, &routed);
        }
        routed
    }

    /// A single-shard statement on the held backend, or as a read that may take a replica: a
    /// held replica takes only reads (outside the client's explicit read-only transaction).
    fn server_role(
        &mut self,
        want: Option<usize>,
        read: bool,
        refuse: fn(&mut Self, PgError),
    ) -> (Routed, Option<Decision>) {
        match self.replica_refusal(read) {
            Some(_) if self.may_wait_for_earlier() => (Routed::Wait, None),
            Some(err) => {
                refuse(self, err);
                let why = Rejection::WriteAfterReplicaRead;
                (Routed::Done, Some(Decision::Rejected(why)))
            }
            None if read => (Routed::Read(want), Some(Decision::SingleShard)),
            None => (Routed::To(want), Some(Decision::SingleShard)),
        }
    }

    /// Reports `err` for an extended-protocol message and skips to Sync; a held backend's
    /// transaction (explicit, or the implicit one of this batch) fails with it.
    fn refuse_extended(&mut self, err: PgError) {
        // The Parses before the refused Bind were answered by Postgres before it: so here. Their
        // statements go to a backend when next used.
        self.answer_owed_locally();
        if self.backend.is_some() {
            self.raise_in_batch(&err);
            self.skip_until_sync = true;
            return;
        }
        if self.status != TxStatus::Idle {
            self.status = TxStatus::Failed;
        }
        self.extended_error(err);
    }

    /// The text of a client statement, borrowed (no allocation per Bind).
    pub(super) fn statement_sql(&self, name: &str) -> Option<&str> {
        if name.is_empty() {
            return parse_sql(self.unnamed.as_ref()?);
        }
        self.statements.get(name).map(|s| s.sql.as_str())
    }

    /// A client statement's text, held apart from the session so the session can change.
    pub(super) fn statement_text(&self, name: &str) -> Option<StatementText> {
        if name.is_empty() {
            return self.unnamed.clone().map(StatementText::Unnamed);
        }
        self.statements.get(name).cloned().map(StatementText::Named)
    }

    /// Whether every owed Parse is a BEGIN/COMMIT/ROLLBACK, whose ParseComplete is certain.
    fn owed_are_local(&self, router: &Router) -> bool {
        self.owed.iter().all(|o| {
            let sql = match o {
                Owed::Unnamed(frame) => parse_sql(frame).unwrap_or(""),
                Owed::Named { stmt, .. } => &stmt.sql,
            };
            matches!(*router.plan(sql), Plan::Begin | Plan::End)
        })
    }

    /// Answers the owed Parses here; the statements are sent to a backend when next used.
    pub(super) fn answer_owed_locally(&mut self) {
        for owed in std::mem::take(&mut self.owed) {
            match owed {
                Owed::Unnamed(_) => {
                    self.push_synthetic(|out| bmsg::empty(out, bmsg::PARSE_COMPLETE))
                }
                Owed::Named { name, stmt } => {
                    self.replies.push(Pending::LocalParse { name, id: stmt.id });
                    self.drain_synthetic();
                }
            }
        }
    }

    pub(super) fn is_local_portal(&self, portal: &str) -> bool {
        self.local_portal.as_ref().is_some_and(|(p, _)| p == portal)
    }

    /// Answers a simple query with `err`, failing the transaction as Postgres would.
    fn refuse_query(&mut self, err: PgError) {
        if self.backend.is_some() {
            return self.fail_on_backend(&err, Pending::Query);
        }
        if self.status != TxStatus::Idle {
            // A deferred transaction that never reached a server fails here, locally.
            self.status = TxStatus::Failed;
        }
        let status = self.status;
        self.push_synthetic(|out| super::client::query_error(out, &err, status));
    }

    /// Before a statement runs on the held backend: the deferred BEGIN, so the transaction starts
    /// on the shard this statement picked. (Describing a statement does not start it.)
    pub(super) fn start_deferred(&mut self) {
        if let Some(begin) = self.deferred_begin.take() {
            Query { sql: &begin }.encode(&mut self.bout);
            self.replies.push(Pending::Injected);
            // A simple query drops the backend's unnamed statement.
            self.unnamed_here = false;
        }
    }

    /// Sends the owed Parses to the held backend; their replies go to the client.
    pub(super) fn place_owed(&mut self) {
        // Asked before each message that runs on a backend; almost always nothing is owed.
        if self.owed.is_empty() {
            return;
        }
        for owed in std::mem::take(&mut self.owed) {
            match owed {
                Owed::Unnamed(frame) => {
                    self.bout.extend_from_slice(&frame);
                    self.replies.push(Pending::UnnamedParse);
                    self.unnamed_here = true;
                }
                Owed::Named { name, stmt } => {
                    let id = stmt.id;
                    let registered = (name.clone(), stmt.clone());
                    let pending = || Pending::Parse {
                        registered: Some(registered),
                    };
                    if !self.prepare_on_backend(&stmt, pending) {
                        self.replies.push(Pending::LocalParse { name, id });
                        self.drain_synthetic();
                    }
                }
            }
        }
    }

    /// The error for a statement that needs `wanted` while the transaction runs on the held
    /// backend's shard. It is reported through `fail_on_backend`, so the server's transaction
    /// (or the batch's implicit one) fails too and the client cannot commit the rest by mistake.
    pub(super) fn cross_shard(&self, router: &Router, wanted: usize) -> PgError {
        let pinned = self
            .pinned()
            .map_or("?", |i| router.shard_name(i))
            .to_string();
        PgError::error(
            SqlState::FeatureNotSupported,
            format!(
                "this transaction runs on shard \"{pinned}\", but the statement needs shard \"{}\"",
                router.shard_name(wanted)
            ),
        )
        .with_hint("A transaction can use one shard: start it with a statement on the right key, or split it into one transaction per shard.")
    }

    /// Fails the held backend's batch (and transaction) with `err`, as extended-protocol messages
    /// of the batch: if an earlier message of it failed, the backend skips them with the rest, as
    /// Postgres would skip the refused statement (a simple query would be skipped too, and its
    /// reply then waited for forever).
    fn raise_in_batch(&mut self, err: &PgError) {
        let sql = raise_sql(err);
        Parse {
            name: "",
            sql: &sql,
            param_types: &[0, 0],
        }
        .encode(&mut self.bout);
        Bind {
            portal: "",
            statement: "",
            rest: &[0, 0, 0, 0, 0, 0],
        }
        .encode(&mut self.bout);
        crate::protocol::frontend::Execute {
            portal: "",
            max_rows: 0,
        }
        .encode(&mut self.bout);
        self.replies.push(Pending::Raise);
        // The backend's unnamed statement is now this one, not the client's.
        self.unnamed_here = false;
    }

    /// Fails the held backend's transaction with `err`: the client sees `err` where its
    /// statement's reply would be, and the transaction is aborted as in Postgres.
    pub(super) fn fail_on_backend(&mut self, err: &PgError, pending: Pending) {
        Query {
            sql: &raise_sql(err),
        }
        .encode(&mut self.bout);
        self.replies.push(pending);
        self.unnamed_here = false;
    }
}

/// A client statement: a named one, or the unnamed one's Parse frame.
pub(super) enum StatementText {
    Named(Arc<Statement>),
    Unnamed(Bytes),
}

impl StatementText {
    pub(super) fn sql(&self) -> Option<&str> {
        match self {
            StatementText::Named(s) => Some(&s.sql),
            StatementText::Unnamed(frame) => parse_sql(frame),
        }
    }
}

/// The SQL of a client's Parse frame.
fn parse_sql(frame: &Bytes) -> Option<&str> {
    Parse::decode(&frame[crate::protocol::HEADER_LEN..])
        .ok()
        .map(|p| p.sql)
}

pub(super) enum Routed {
    /// Answered or refused already.
    Done,
    /// Needs a backend on this shard (`None`: any).
    To(Option<usize>),
    /// A read a replica may answer, on this shard (`None`: any).
    Read(Option<usize>),
    /// Runs on several shards, outside any transaction.
    Fan(FanOut),
    /// Needs another shard than the backend held for the client's earlier batches: route it
    /// again once those have ended (`Session::finish_earlier_batches`).
    Wait,
}
