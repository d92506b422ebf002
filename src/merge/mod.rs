//! Merging the results of several shards into the one result a single Postgres would give.

pub mod rows;
pub mod value;
