//! The job driver: every shardgate with a control database runs one; each unfinished job is
//! driven by exactly one of them at a time — the one holding the job's lease, a session advisory
//! lock on its own control-database connection. A driver that dies (kill -9, lost network)
//! loses its connection and with it the lease; another shardgate, or this one restarted, takes
//! the job over within a second and carries on from what the control database says: the phase,
//! the backfill checkpoints, the marks on the shards. Every step can so be run again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::jobs::{self, State};
use super::work::{connect, Work};
use super::{ending, steps, sync, Phase};
use crate::backend::control::ControlConn;
use crate::control::ControlDb;
use crate::health::Monitor;
use crate::topology::Store;

/// How often unclaimed jobs are looked for.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// What a step asks for next.
pub enum Next {
    /// Another step right away (the phase moved on).
    Now,
    /// Another step after a while (waiting for something, or paused).
    After(Duration),
    /// The job needs nothing more from a driver.
    Done,
}

/// What every driver task shares.
pub struct Driver {
    pub control: Arc<ControlDb>,
    pub control_url: String,
    pub store: Arc<Store>,
    /// The health checks' reports: backfill waits while a source's replica lags.
    pub health: Arc<Monitor>,
    pub stop: CancellationToken,
    driving: Mutex<HashSet<i64>>,
}

impl Driver {
    pub fn new(
        control: Arc<ControlDb>,
        control_url: String,
        store: Arc<Store>,
        health: Arc<Monitor>,
        stop: CancellationToken,
    ) -> Arc<Driver> {
        Arc::new(Driver {
            control,
            control_url,
            store,
            health,
            stop,
            driving: Mutex::new(HashSet::new()),
        })
    }

    /// Looks for jobs to drive until `stop`.
    pub async fn run(self: Arc<Self>) {
        loop {
            match jobs::unsettled(&self.control).await {
                Ok(ids) => {
                    for id in ids {
                        if self.driving.lock().expect("driver set").insert(id) {
                            tokio::spawn(self.clone().drive(id));
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot look for resharding jobs"),
            }
            tokio::select! {
                _ = tokio::time::sleep(LOOK_EVERY) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    async fn drive(self: Arc<Self>, id: i64) {
        if let Some(lease) = self.lease(id).await {
            tracing::info!(job = id, "driving resharding job");
            let stop = self.stop.child_token();
            let copier = tokio::spawn(self.clone().copy_changes(id, stop.clone()));
            self.steps(id).await;
            stop.cancel();
            let _ = copier.await;
            lease.close().await;
        }
        self.driving.lock().expect("driver set").remove(&id);
    }

    /// The job's lease, if no other driver holds it.
    async fn lease(&self, id: i64) -> Option<ControlConn> {
        let conn = connect(&self.control_url).await.ok()?;
        let taken = conn
            .client
            .query_one(
                "SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('shardgate:job'), $1::int)",
                &[&(id as i32)],
            )
            .await
            .ok()?
            .get::<_, bool>(0);
        if taken {
            Some(conn)
        } else {
            conn.close().await;
            None
        }
    }

    async fn steps(&self, id: i64) {
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let next = match jobs::state(&self.control, id).await {
                Ok(state) => self.step(id, &state).await,
                Err(e) => Err(e.to_string()),
            };
            let wait = match next {
                Ok(Next::Now) => continue,
                Ok(Next::After(d)) => d,
                Ok(Next::Done) => return,
                Err(e) => {
                    tracing::warn!(job = id, error = %e, "resharding step failed; retrying");
                    let _ = jobs::set_error(&self.control, id, &e).await;
                    Duration::from_secs(2)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    async fn step(&self, id: i64, state: &State) -> Result<Next, String> {
        let config = self.store.load().config.clone();
        let work = Work::new(id, state, &config)?;
        let db = &*self.control;
        if state.verify_requested
            && matches!(state.phase, Phase::ReverseDualWrite | Phase::Finished)
        {
            return super::verifying::on_request(db, &work, state.phase).await;
        }
        match state.phase {
            Phase::Preflight => steps::start_dual_write(db, &config, &work).await,
            Phase::DualWrite => steps::await_acknowledgements(db, &work).await,
            Phase::Backfill if state.paused => Ok(Next::After(Duration::from_millis(200))),
            Phase::Backfill => steps::backfill(db, &work, &self.health).await,
            Phase::Verify if state.paused => Ok(Next::After(Duration::from_millis(200))),
            Phase::Verify => super::verifying::verify_phase(db, &work).await,
            Phase::Ready | Phase::ReverseDualWrite => Ok(Next::After(Duration::from_millis(200))),
            Phase::Cutover => super::cutover::cut_over(db, &self.store, &work).await,
            Phase::RollingBack => ending::roll_back(db, &self.store, &work).await,
            Phase::Finishing => ending::finish(db, &self.store, &work).await,
            Phase::Aborted if !state.cleaned => {
                ending::clean_up_abort(db, &self.store, &work).await
            }
            Phase::Finished | Phase::RolledBack | Phase::Aborted | Phase::Failed => Ok(Next::Done),
        }
    }

    /// Copies the marked changes of every move, both ways (marks exist only on the side that
    /// is authoritative now), until `stop`.
    async fn copy_changes(self: Arc<Self>, id: i64, stop: CancellationToken) {
        let mut pairs: Vec<Option<(ControlConn, ControlConn)>> = Vec::new();
        while !stop.is_cancelled() {
            let work = match jobs::state(&self.control, id).await {
                Ok(state) => Work::new(id, &state, &self.store.load().config.clone()),
                Err(e) => Err(e.to_string()),
            };
            let copied = match work {
                Ok(work) => copy_round(&work, &mut pairs).await,
                Err(_) => None,
            };
            // Idle: look again soon (the lag a change waits to be copied); failing: slower.
            let pause = match copied {
                Some(0) => 20,
                Some(_) => 0,
                None => 500,
            };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
                _ = stop.cancelled() => {}
            }
        }
    }
}

/// One round of copying over every move's connections (opened when missing, dropped when they
/// fail); how many marks were copied, `None` if a move could not be copied.
async fn copy_round(
    work: &Work,
    pairs: &mut Vec<Option<(ControlConn, ControlConn)>>,
) -> Option<usize> {
    pairs.resize_with(work.moves.len(), || None);
    let mut copied = Some(0);
    for (m, slot) in work.moves.iter().zip(pairs.iter_mut()) {
        if slot.is_none() {
            if let (Ok(s), Ok(t)) = (connect(&m.source_url).await, connect(&m.target_url).await) {
                *slot = Some((s, t));
            }
        }
        let Some((s, t)) = slot.as_mut() else {
            copied = None;
            continue;
        };
        let forward =
            sync::copy_changes(&mut s.client, &mut t.client, work.id, &m.tables, 1000).await;
        let backward =
            sync::copy_changes(&mut t.client, &mut s.client, work.id, &m.tables, 1000).await;
        match (forward, backward) {
            (Ok(f), Ok(b)) => copied = copied.map(|n| n + f.copied + b.copied),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(job = work.id, error = %e, "copying marked changes failed; reconnecting");
                *slot = None;
                copied = None;
            }
        }
    }
    copied
}
