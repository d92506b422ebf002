//! Merging the results of several shards into the one result a single Postgres would give:
//! [`rows`] groups, aggregates, sorts and cuts them; [`value`] compares and aggregates values.

pub mod rows;
pub mod value;

mod datetime;
mod decimal;
mod float;
