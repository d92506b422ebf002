//! What a database's hotspot counters are laid out by: its shards, its sharded tables and, for a
//! hash map, which shard owns each bucket. Counters survive a reload that leaves this unchanged.

use std::sync::Arc;

use crate::config::{parse_bucket_range, DatabaseConfig, ShardingFunction};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Shard names in the topology's order: `shard` arguments index this.
    pub shards: Vec<Arc<str>>,
    /// The configured sharded tables (the config's order): one key sketch each.
    pub tables: Vec<Arc<str>>,
    /// Hash maps: the owning shard of each bucket (one counter per bucket). Empty for range and
    /// list maps, whose load is counted per shard only.
    pub owner: Vec<usize>,
    /// Shards that own keys: the skew figure compares these. A shard just added that owns
    /// nothing yet is left out, so it does not read as "cold" and inflate the skew.
    pub owns: Vec<bool>,
}

impl Layout {
    /// `shards`: the database's shard names as the topology orders them (`Database::shards`).
    pub fn new(config: &DatabaseConfig, shards: &[Arc<str>]) -> Layout {
        let index = |name: &str| shards.iter().position(|s| &**s == name);
        let mut owns = vec![false; shards.len()];
        let mut owner = Vec::new();
        match &config.sharding {
            None => owns.iter_mut().take(1).for_each(|o| *o = true),
            Some(s) if s.function == ShardingFunction::Hash => {
                let count = s.buckets.unwrap_or(1);
                owner = vec![0; count as usize];
                for e in &s.map {
                    let range = e.buckets.as_deref().map(|b| parse_bucket_range(b, count));
                    if let (Some(Ok((a, b))), Some(i)) = (range, index(&e.shard)) {
                        owner[a as usize..=b as usize].fill(i);
                    }
                }
                owner.iter().for_each(|&i| owns[i] = true);
            }
            Some(s) => {
                let named = s.map.iter().map(|e| e.shard.as_str());
                for i in named
                    .chain(config.default_shard.as_deref())
                    .filter_map(index)
                {
                    owns[i] = true;
                }
            }
        }
        Layout {
            shards: shards.to_vec(),
            tables: config.tables.keys().map(|t| t.as_str().into()).collect(),
            owner,
            owns,
        }
    }

    pub fn table_index(&self, table: &str) -> Option<usize> {
        self.tables.iter().position(|t| &**t == table)
    }
}
