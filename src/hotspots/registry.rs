//! The hotspot counters of every database, found by name like the routers
//! ([`crate::router::Routers`]), and kept over reloads that leave their layout alone.
//!
//! A reload builds new routers, but the same shards, tables and bucket owners mean the same
//! counters: keeping them keeps "hot now" meaningful across a reload (e.g. a pool size change).
//! A reload that changes the layout (a shard added, a table added, buckets moved by a reshard's
//! cutover) starts that database's counters afresh: old figures would be attributed to shards
//! that no longer own those keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{HotspotReport, Hotspots, Layout, Settings};
use crate::topology::Snapshot;

/// Hotspots by database name, each with the [`Snapshot::version`] it was last checked against.
#[derive(Default)]
pub struct Registry {
    settings: Settings,
    by_db: Mutex<HashMap<String, (u64, Arc<Hotspots>)>>,
}

impl Registry {
    pub fn new(settings: Settings) -> Registry {
        Registry {
            settings,
            by_db: Mutex::default(),
        }
    }

    /// The counters of `database` under `snapshot` (a new snapshot keeps them if the layout is
    /// the same); `None` if the database is not configured or `metrics.hotspots` is off. A hash
    /// lookup unless the snapshot changed: call it where the session refreshes its router.
    pub fn get(&self, snapshot: &Snapshot, database: &str) -> Option<Arc<Hotspots>> {
        if !snapshot.config.metrics.hotspots {
            return None;
        }
        let mut by_db = self.by_db.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((version, h)) = by_db.get(database) {
            if *version == snapshot.version {
                return Some(h.clone());
            }
        }
        let config = snapshot.config.databases.get(database)?;
        let db = snapshot.databases.get(database)?;
        let names: Vec<Arc<str>> = db.shards.iter().map(|s| s.name.clone()).collect();
        let layout = Layout::new(config, &names);
        let hotspots = match by_db.get(database) {
            Some((_, h)) if *h.layout() == layout => h.clone(),
            _ => Arc::new(Hotspots::new(database, layout, self.settings)),
        };
        by_db.insert(database.to_string(), (snapshot.version, hotspots.clone()));
        Some(hotspots)
    }

    /// Reports of every database of `snapshot`, by name; databases no longer configured are
    /// forgotten.
    pub fn reports(&self, snapshot: &Snapshot, top: usize) -> Vec<HotspotReport> {
        {
            let mut by_db = self.by_db.lock().unwrap_or_else(|p| p.into_inner());
            by_db.retain(|name, _| snapshot.databases.contains_key(name));
        }
        let mut names: Vec<&String> = snapshot.databases.keys().collect();
        names.sort();
        names
            .into_iter()
            .filter_map(|db| self.get(snapshot, db))
            .map(|h| h.report(top))
            .collect()
    }
}
