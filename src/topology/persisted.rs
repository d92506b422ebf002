//! Shard maps persisted by resharding (`shardgate.epochs` in the control database): when a
//! cutover moves buckets, the new map is stored there with a higher epoch, and every shardgate
//! sharing that control database takes it — at start, before serving, and while running. It
//! takes precedence over the config file's map, so a restart comes back with it and a reload
//! cannot undo it.

use std::collections::BTreeMap;

use crate::config::{Config, Hold, MapEntry};

/// One database's persisted map and its epoch.
#[derive(Debug, Clone)]
pub struct PersistedMap {
    pub epoch: i64,
    pub map: Vec<MapEntry>,
    /// The keys a cutover holds in this epoch.
    pub hold: Option<Hold>,
}

/// Per database.
pub type PersistedMaps = BTreeMap<String, PersistedMap>;

/// `config` with the persisted maps in place of its own (for databases it has and shards).
/// Logs when the file's map differs: the operator should copy the persisted one into the file.
pub fn apply(mut config: Config, maps: &PersistedMaps) -> Config {
    for (name, persisted) in maps {
        let Some(sharding) = config
            .databases
            .get_mut(name)
            .and_then(|d| d.sharding.as_mut())
        else {
            continue;
        };
        let differs = format!("{:?}", sharding.map) != format!("{:?}", persisted.map);
        if differs {
            tracing::info!(database = %name, epoch = persisted.epoch, "the shard map resharding persisted replaces the config file's; copy it into the file");
        }
        sharding.map = persisted.map.clone();
        sharding.held = persisted.hold.clone();
    }
    config
}

/// The epochs, for heartbeats.
pub fn epochs(maps: &PersistedMaps) -> serde_json::Value {
    maps.iter()
        .map(|(db, m)| (db.clone(), serde_json::Value::from(m.epoch)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}
