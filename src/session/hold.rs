//! Waiting out a resharding cutover's hold (DESIGN §3.5): a transaction that would start on
//! keys being cut over, or with a statement across the shards of sharded tables, waits before
//! it reaches any shard until every shardgate serves the new map — then it goes to the new
//! owner. Transactions already under way are not held (the cutover waits for them instead),
//! nor are statements on other keys.
//!
//! A transaction's first statement is counted in flight until it is sent
//! ([`crate::topology::flights`]): this shardgate acknowledges a hold only once none routed
//! with an older map is still on its way to the old owner.

use std::sync::Arc;
use std::time::Duration;

use crate::net::ClientStream;
use tokio::time::Instant;

use super::Session;
use crate::protocol::frontend::BindParams;
use crate::router::{Plan, Router};

/// The longest a transaction waits: past the cutover's own bound on a hold, so only a
/// cutover that died mid-way lets it go on (to the old owner, whose fence decides).
const MOST: Duration = Duration::from_millis(4000);
/// How often the map is looked at meanwhile (the store swaps it in when an epoch is taken).
const EVERY: Duration = Duration::from_millis(5);

impl<S> Session<S> {
    /// The statement that started the transaction has been sent: its transaction is under way
    /// on its server, where a cutover waits for it.
    pub(super) fn land(&mut self) {
        if let Some(flight) = self.flight.take() {
            self.shared.store.flights().land(flight);
        }
    }
}

impl<S: ClientStream> Session<S> {
    /// As [`Session::past_hold`], and a statement that starts a transaction is counted in flight
    /// with the router it will be routed with — a newer one if the map changed meanwhile.
    pub(super) async fn cleared(
        &mut self,
        router: &Router,
        plan: &Plan,
        params: Option<&BindParams<'_>>,
    ) -> Option<Arc<Router>> {
        let mut newer = self.past_hold(router, plan, params).await;
        // The latest router is at least as new as the map being acknowledged, so a second try
        // enters; the bound only keeps a broken invariant from spinning a worker thread.
        for _ in 0..3 {
            if self.backend.is_some() || self.flight.is_some() {
                break;
            }
            let version = newer.as_deref().unwrap_or(router).version;
            self.flight = self.shared.store.flights().enter(version, self.worker);
            if self.flight.is_some() {
                break;
            }
            let Some(latest) = self.router() else { break };
            newer = self.past_hold(&latest, plan, params).await.or(Some(latest));
        }
        newer
    }

    /// The router to route `plan` with: `router` itself, or — if the statement would start a
    /// transaction on held buckets — the one in force once the hold is over.
    pub(super) async fn past_hold(
        &mut self,
        router: &Router,
        plan: &Plan,
        params: Option<&BindParams<'_>>,
    ) -> Option<Arc<Router>> {
        if self.backend.is_some() || !router.holding() || !router.holds(plan, params) {
            return None;
        }
        let deadline = Instant::now() + MOST;
        let mut latest = None;
        while Instant::now() < deadline {
            tokio::time::sleep(EVERY).await;
            let Some(r) = self.router() else { break };
            let held = r.holds(plan, params);
            latest = Some(r);
            if !held {
                break;
            }
        }
        latest
    }
}
