//! Each shardgate with a control database says it is alive every few seconds, with the
//! shard-map epoch of each database it has taken (`shardgate.proxy_heartbeats`). A resharding
//! phase that needs every proxy to follow a new epoch (backfill after dual-write starts) waits
//! for the live ones' acknowledgements; `GET /v1/reshard/{id}` lists them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::control::{ControlDb, ControlError};
use crate::topology::flights::Drain;
use crate::topology::Store;

/// How often a proxy says it is alive.
pub const EVERY: Duration = Duration::from_secs(2);
/// A proxy not heard from for this long is taken for gone.
pub const LIVE_WITHIN: Duration = Duration::from_secs(10);

/// One proxy as the control database last heard from it.
#[derive(Debug, Clone, Serialize)]
pub struct Heartbeat {
    pub proxy_id: String,
    pub seen_ms_ago: i64,
    /// Per database, the epoch it has taken.
    pub epochs: serde_json::Value,
}

/// A name for this process: its listen address and a random part (several may share a host).
pub fn proxy_id(listen: std::net::SocketAddr) -> String {
    format!("{listen}/{:08x}", rand::random::<u32>())
}

/// Beats until `stop`; a control database that is down is logged once per outage.
///
/// An epoch is acknowledged once taken and once every transaction's first statement routed with
/// an older map has been sent ([`crate::topology::flights`]); meanwhile the beats carry the
/// epochs acknowledged before.
pub async fn run(db: Arc<ControlDb>, store: Arc<Store>, id: String, stop: CancellationToken) {
    let started = SystemTime::now();
    let mut failing = false;
    let mut acked = serde_json::Value::Null;
    let mut draining: Option<(Drain, serde_json::Value)> = None;
    loop {
        if let Some((drain, epochs)) = draining.take() {
            if store.flights().drained(drain) {
                acked = epochs;
            } else {
                draining = Some((drain, epochs));
            }
        }
        let taken = store.persisted_epochs();
        if draining.is_none() && taken != acked {
            // Swapped in before it was read: the flip waits for the maps before it.
            let drain = store.flights().flip(store.version());
            draining = Some((drain, taken));
            continue;
        }
        match beat(&db, &id, started, acked.clone()).await {
            Ok(()) if failing => {
                tracing::info!("heartbeats reach the control database again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cannot write this proxy's heartbeat to the control database");
                failing = true;
            }
            Err(_) => {}
        }
        // Beat at once when an epoch can be acknowledged: a cutover waits for it.
        let next = tokio::time::Instant::now() + EVERY;
        let news = |draining: &Option<(Drain, serde_json::Value)>| match draining {
            Some((drain, _)) => store.flights().drained(*drain),
            None => store.persisted_epochs() != acked,
        };
        while tokio::time::Instant::now() < next && !news(&draining) {
            tokio::select! {
                _ = tokio::time::sleep(NOTICE) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// How soon a newly taken epoch is acknowledged.
const NOTICE: Duration = Duration::from_millis(2);

async fn beat(
    db: &ControlDb,
    id: &str,
    started: SystemTime,
    epochs: serde_json::Value,
) -> Result<(), ControlError> {
    let client = db.client().await?;
    client
        .execute(
            "INSERT INTO shardgate.proxy_heartbeats (proxy_id, started_at, seen_at, epochs) \
             VALUES ($1, $2, now(), $3) \
             ON CONFLICT (proxy_id) DO UPDATE SET seen_at = now(), epochs = EXCLUDED.epochs",
            &[&id, &started, &epochs],
        )
        .await
        .map_err(|source| ControlError::Refused {
            what: "the heartbeat",
            source,
        })?;
    Ok(())
}

/// The proxies heard from within [`LIVE_WITHIN`], oldest first.
pub async fn live(db: &ControlDb) -> Result<Vec<Heartbeat>, ControlError> {
    let client = db.client().await?;
    let within = LIVE_WITHIN.as_secs_f64();
    let rows = client
        .query(
            "SELECT proxy_id, (extract(epoch FROM now() - seen_at) * 1000)::bigint, epochs \
             FROM shardgate.proxy_heartbeats \
             WHERE seen_at > now() - make_interval(secs => $1) ORDER BY started_at",
            &[&within],
        )
        .await
        .map_err(|source| ControlError::Refused {
            what: "the heartbeats",
            source,
        })?;
    Ok(rows
        .iter()
        .map(|r| Heartbeat {
            proxy_id: r.get(0),
            seen_ms_ago: r.get(1),
            epochs: r.get(2),
        })
        .collect())
}
