//! shardgate: a PostgreSQL sharding proxy.
//!
//! The modules follow the data path of DESIGN.md §1, from the socket inward:
//!
//! - [`server`]: the listener, TLS, the startup handshake (SSLRequest, StartupMessage, SCRAM/MD5) and
//!   CancelRequest. Hands an authenticated client to a session.
//! - [`session`]: one task per client. Reads client frames, keeps the transaction state, the client's
//!   prepared statements and session parameters, checks out a backend per transaction and relays the
//!   backend's frames back without re-encoding them.
//! - [`router`]: decides which shard(s) a statement goes to. Pure: no I/O.
//! - [`topology`]: the one `ArcSwap<Snapshot>` that holds everything that must agree (shard maps, pools,
//!   epoch). A transaction loads it once.
//! - [`pool`]: bb8 pools of backend connections, one per server.
//! - [`backend`]: one raw framed connection to a Postgres server, with its login.
//! - [`protocol`]: wire-format types and framing. No I/O, no routing, no config.
//! - [`merge`]: combining the results of a read sent to every shard. [`merge::value`] is its pure
//!   value layer: PostgreSQL's ordering and aggregate merging over raw column bytes.
//!
//! - [`health`]: background checks of every server over its own control connection: up or
//!   banned (and why), the role each server reports (so a failover is followed), and replica lag
//!   in bytes and time. It observes only; the router and the admin API read its reports.
//!
//! - [`twophase`]: two-phase commit of transactions that wrote on several shards, and recovery of
//!   the ones a crash left in doubt (the control database is the coordinator's log).
//!
//! Side systems: [`admin`] (the HTTP API), [`metrics`] (Prometheus counters every layer records
//! into; a leaf), [`hotspots`] (hot keys, buckets and shard skew for `GET /v1/hotspots`; fed by
//! the session, bounded memory), [`config`] (the YAML file), [`proxy`] (wires config, topology and listener together;
//! reload), [`shutdown`] (process signals), [`cluster`] (real Postgres servers for `demo` and the
//! tests), [`demo`] (`shardgate demo`).
//!
//! [`net`] reads and writes the relay's sockets (both sides) with as little as possible around the
//! system calls.
//!
//! Dependencies point one way: protocol, net ← backend ← pool ← topology ← router ← session ← server.

pub mod admin;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod control;
pub mod demo;
pub mod health;
pub mod hotspots;
pub mod merge;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod protocol;
pub mod proxy;
pub mod reshard;
pub mod router;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod topology;
pub mod twophase;
pub mod workers;
