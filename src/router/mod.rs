//! Decides which shard(s) a statement goes to. Pure: no I/O.
//!
//! Until the sharding router lands, every database is served by its default shard: the one named
//! by `default_shard`, else the first. Databases with one shard (the pass-through case) need nothing
//! more.

pub mod hash;
pub mod key;

use crate::topology::{Database, Shard};

pub fn default_shard(db: &Database) -> &Shard {
    db.default_shard
        .and_then(|i| db.shards.get(i))
        .unwrap_or(&db.shards[0])
}
