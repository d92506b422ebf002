//! Black-box tests: real PostgreSQL servers, the real proxy, real clients.

mod harness;
mod protocol;
