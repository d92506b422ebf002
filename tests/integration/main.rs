//! Black-box tests: real PostgreSQL servers, the real proxy, real clients.

mod admin;
mod clients;
mod drivers;
mod faults;
mod harness;
mod hash;
mod protocol;
mod sharding;
mod wire;
