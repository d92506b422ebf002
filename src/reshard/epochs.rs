//! Following the shard maps resharding persists in the control database (`shardgate.epochs`):
//! read once before the proxy serves, then every [`EVERY`], and taken by the topology store
//! ([`crate::topology::persisted`]) whenever an epoch is new. Every shardgate sharing the
//! control database so serves the same map within a tenth of a second of a cutover.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Hold, Slice};
use crate::control::{ControlDb, ControlError};
use crate::topology::persisted::{PersistedMap, PersistedMaps};
use crate::topology::Store;

/// How often the epochs are read: a cutover holds the moved keys' writers until every live
/// shardgate has taken the new map, so this bounds that hold (with the heartbeat that follows).
pub const EVERY: Duration = Duration::from_millis(100);

/// The persisted maps, per database.
pub async fn read(db: &ControlDb) -> Result<PersistedMaps, ControlError> {
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT database, epoch, map::text, overlay FROM shardgate.epochs",
            &[],
        )
        .await
        .map_err(|source| ControlError::Refused {
            what: "the shard-map epochs",
            source,
        })?;
    let mut maps = PersistedMaps::new();
    for row in rows {
        let (database, epoch, text): (String, i64, String) = (row.get(0), row.get(1), row.get(2));
        match serde_json::from_str(&text) {
            Ok(map) => {
                let hold = hold(
                    &row.get::<_, Option<serde_json::Value>>(3)
                        .unwrap_or_default(),
                );
                maps.insert(database, PersistedMap { epoch, map, hold });
            }
            Err(e) => {
                tracing::error!(%database, epoch, error = %e, "a persisted shard map is not a map; it is ignored");
            }
        }
    }
    Ok(maps)
}

/// The hold an overlay names: `{"hold": {"slice": {"buckets": {"first": 0, "last": 1}},
/// "until_ms": …}}` (Unix ms).
pub fn hold(overlay: &serde_json::Value) -> Option<Hold> {
    let h = &overlay["hold"];
    let bucket = |k: &str| h[k].as_u64().and_then(|b| u32::try_from(b).ok());
    let slice = match serde_json::from_value(h["slice"].clone()) {
        Ok(slice) => slice,
        // As a shardgate before range and list moves wrote it (one may drive a cutover while
        // this one is being rolled out).
        Err(_) => Slice::Buckets {
            first: bucket("first")?,
            last: bucket("last")?,
        },
    };
    Some(Hold {
        slice,
        until: std::time::UNIX_EPOCH + Duration::from_millis(h["until_ms"].as_u64()?),
    })
}

/// Before serving: as [`take`], but an unreadable control database is an error worth a loud
/// line — until it answers, routing follows the config file's map, which a past cutover may have
/// made stale.
pub async fn take_at_start(db: &ControlDb, store: &Store) {
    match read(db).await {
        Ok(maps) => adopt(store, maps),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the shard maps resharding persisted: routing follows the config file's map until the control database answers (copy any cutover's map into the file to be safe)")
        }
    }
}

/// Reads the maps and hands them to `store`.
pub async fn take(db: &ControlDb, store: &Store) {
    match read(db).await {
        Ok(maps) => adopt(store, maps),
        Err(e) => tracing::debug!(error = %e, "cannot read the shard-map epochs"),
    }
}

/// Hands the maps to `store`; logs what changed or why they were refused.
fn adopt(store: &Store, maps: PersistedMaps) {
    match store.adopt_maps(maps) {
        Ok(true) => {
            let epochs = store.persisted_epochs();
            tracing::warn!(%epochs, "shard maps from the control database taken (a resharding cutover)");
        }
        Ok(false) => {}
        Err(why) => {
            tracing::error!(%why, "a shard map in the control database does not fit the config; the current map stays")
        }
    }
}

/// Follows the epochs until `stop`.
pub async fn follow(db: Arc<ControlDb>, store: Arc<Store>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.cancelled() => return,
        }
        take(&db, &store).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_is_read_in_both_forms_and_nothing_else() {
        let new = serde_json::json!({ "hold": { "slice": { "range": { "from": 5, "to": null } },
            "until_ms": 1000 } });
        let old = serde_json::json!({ "hold": { "first": 0, "last": 3, "until_ms": 1000 } });
        let range = Slice::Range {
            from: Some(crate::config::serde_yaml_value::Scalar::Int(5)),
            to: None,
        };
        assert_eq!(hold(&new).map(|h| h.slice), Some(range));
        assert_eq!(
            hold(&old).map(|h| h.slice),
            Some(Slice::Buckets { first: 0, last: 3 })
        );
        assert_eq!(hold(&serde_json::json!({ "state": "dual_write" })), None);
    }
}
