//! Black-box tests: real PostgreSQL servers, the real proxy, real clients.

mod admin;
mod admin_api;
mod clients;
mod columns;
mod copy;
mod differential;
mod drivers;
mod everywhere;
mod faults;
mod harness;
mod hash;
mod health;
mod hotspots;
mod metrics;
mod pipelined;
mod programs;
mod protocol;
mod reload;
mod replicas;
mod reshard;
mod resharding;
mod sharded_app;
mod sharding;
mod shards;
mod spanning;
mod wire;
