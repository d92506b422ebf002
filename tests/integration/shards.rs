//! A sharded database behind a real proxy, for any test that needs to check where rows land.
//!
//! One real cluster holds N databases `<prefix>_s0 .. <prefix>_s{N-1}`, each standing for one shard
//! (shard `s{i}` in the config). Clients connect to the proxy's database `<prefix>`. The caller's
//! schema SQL runs on every shard directly, as the test user, before the proxy starts: a quick
//! way to set up, not a necessity — shardgate sends DDL and reference-table writes to every shard
//! itself (see `everywhere.rs`), so a test may as well create tables or write reference rows
//! through [`Shards::connect`]. The hash map splits the buckets evenly and in order: with 16
//! buckets and 2 shards, buckets 0-7 are `s0` and 8-15 are `s1`. Keys are `bigint`.
//!
//! ```ignore
//! let shop = Shards::start(
//!     ShardsOptions::new(3)
//!         .schema("CREATE TABLE users (id bigint PRIMARY KEY, name text);")
//!         .table("users", "id"),
//! )
//! .await;
//! let c = shop.connect().await; // tokio-postgres through the proxy
//! c.execute("INSERT INTO users (id, name) VALUES ($1, 'x')", &[&7i64]).await?;
//! assert_eq!(shop.ids_on(shop.owner(7), "SELECT id FROM users"), vec![7]);
//! ```
//!
//! Everything is dropped with the fixture: the proxy first, then the cluster, then its directory.

use std::fmt::Write as _;

use shardgate::cluster::{Cluster, ClusterOptions, TempDir};
use shardgate::config::Config;
use shardgate::proxy::Proxy;
use shardgate::router::hash::{bucket_of, hash_int};
use shardgate::workers::Workers;
use tokio_postgres::Client;

use crate::harness::{binaries, connect, PASSWORD, USER};

/// What to build; `ShardsOptions::new(n)` and then only what differs from the defaults.
#[derive(Debug, Clone)]
pub struct ShardsOptions {
    /// How many shards (at least 1). Default 2.
    pub shards: usize,
    /// The client-facing database name, and the prefix of the shard databases. Default `app`.
    pub prefix: String,
    /// Virtual buckets of the hash map, at least `shards`. Default 8.
    pub buckets: u32,
    /// SQL run on every shard (and every [`Shards::plain_database`]) as the test user.
    pub schema: String,
    /// Sharded tables and their key columns (`tables:`).
    pub tables: Vec<(String, String)>,
    /// `reference_tables:`.
    pub reference_tables: Vec<String>,
    /// Entries of `routing:` as YAML `key: value` pairs; empty means shardgate's defaults.
    pub routing: Vec<(String, String)>,
    /// The index of `default_shard:`. Default `Some(0)`; `None` omits it, so statements on tables
    /// that are neither sharded nor reference tables are refused.
    pub default_shard: Option<usize>,
    /// Backend connections per shard (`pool.size`). Default 2.
    pub pool_size: u32,
    /// `pool.checkout_timeout_ms`. Default 3000; raise it when clients outnumber backends.
    pub checkout_timeout_ms: u64,
    /// Transactions may span shards: a control database `<prefix>_control`, prepared
    /// transactions enabled on the server, and `cross_shard_writes: allow`. Default off.
    pub two_phase: bool,
    /// `admin.token`; default none (the /v1 admin routes then refuse every request).
    pub admin_token: Option<String>,
    /// How many of the last shards are new: configured, schema in place, owning no bucket (a
    /// resharding target). Default 0.
    pub new_shards: usize,
    /// A streaming replica of the cluster, named as every shard's replica, with health checks
    /// every 100 ms. Default off.
    pub replica: bool,
    /// The `sharding:` section as YAML, in place of the even hash map (a range or list map);
    /// [`Shards::owner`] then cannot say who owns a key. Default none.
    pub sharding: Option<String>,
}

impl Default for ShardsOptions {
    fn default() -> Self {
        ShardsOptions::new(2)
    }
}

impl ShardsOptions {
    pub fn new(shards: usize) -> Self {
        ShardsOptions {
            shards,
            prefix: "app".into(),
            buckets: 8,
            schema: String::new(),
            tables: Vec::new(),
            reference_tables: Vec::new(),
            routing: Vec::new(),
            default_shard: Some(0),
            pool_size: 2,
            checkout_timeout_ms: 3000,
            two_phase: false,
            admin_token: None,
            new_shards: 0,
            replica: false,
            sharding: None,
        }
    }

    /// See [`ShardsOptions::sharding`].
    pub fn sharding(mut self, yaml: &str) -> Self {
        self.sharding = Some(yaml.to_string());
        self
    }

    /// See [`ShardsOptions::replica`].
    pub fn replica(mut self) -> Self {
        self.replica = true;
        self
    }

    /// See [`ShardsOptions::new_shards`].
    pub fn new_shards(mut self, n: usize) -> Self {
        self.new_shards = n;
        self
    }

    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// See [`ShardsOptions::two_phase`].
    pub fn two_phase(mut self) -> Self {
        self.two_phase = true;
        self.routing("cross_shard_writes", "allow")
    }

    pub fn buckets(mut self, buckets: u32) -> Self {
        self.buckets = buckets;
        self
    }

    pub fn schema(mut self, sql: &str) -> Self {
        self.schema = sql.into();
        self
    }

    pub fn table(mut self, table: &str, key_column: &str) -> Self {
        self.tables.push((table.into(), key_column.into()));
        self
    }

    pub fn reference_table(mut self, table: &str) -> Self {
        self.reference_tables.push(table.into());
        self
    }

    /// One `routing:` entry, e.g. `.routing("cross_shard_writes", "reject")`.
    pub fn routing(mut self, key: &str, value: &str) -> Self {
        self.routing.push((key.into(), value.into()));
        self
    }

    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }

    pub fn checkout_timeout_ms(mut self, ms: u64) -> Self {
        self.checkout_timeout_ms = ms;
        self
    }

    /// The shard owning `bucket`: shard i has buckets `i*B/N ..= (i+1)*B/N - 1`, N the shards
    /// that are not new.
    fn bucket_owner(&self, bucket: u32) -> usize {
        // The last range starting at or before the bucket: the same ranges `config_yaml` writes.
        (0..self.owning())
            .rev()
            .find(|&i| self.first_bucket(i) <= u64::from(bucket))
            .expect("shard 0 starts at bucket 0")
    }

    /// The first bucket of shard `i`.
    fn first_bucket(&self, i: usize) -> u64 {
        i as u64 * u64::from(self.buckets) / self.owning() as u64
    }

    /// The shards that own buckets.
    fn owning(&self) -> usize {
        self.shards - self.new_shards
    }
}

pub struct Shards {
    proxy: Proxy,
    // Field order is drop order: the replica stops before its primary.
    replica: Option<Cluster>,
    pg: Cluster,
    opts: ShardsOptions,
    // Declared last: dropped after the cluster that lives in it.
    dir: TempDir,
}

impl Shards {
    /// Starts the cluster, creates and fills the shard databases, then starts the proxy.
    pub async fn start(opts: ShardsOptions) -> Shards {
        assert!(
            opts.shards > opts.new_shards,
            "at least one shard owning buckets"
        );
        assert!(
            opts.buckets as usize >= opts.shards,
            "{} buckets cannot be split over {} shards",
            opts.buckets,
            opts.shards
        );
        let o = opts.clone();
        let (dir, pg, replica) = tokio::task::spawn_blocking(move || start_cluster(&o))
            .await
            .expect("cluster setup");
        let yaml = config_yaml(&opts, pg.port(), replica.as_ref().map(Cluster::port));
        let config = Config::parse_with_env(&yaml, &|_| None)
            .unwrap_or_else(|e| panic!("invalid fixture config: {e}\n{yaml}"));
        // Written out too, so a test can edit it and reload (`POST /v1/config/reload`).
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(&path, &yaml).expect("write the config file");
        let proxy = Proxy::start_from(config, &path, Workers::this_runtime())
            .await
            .expect("start proxy");
        Shards {
            proxy,
            replica,
            pg,
            opts,
            dir,
        }
    }

    /// The config this fixture runs with.
    fn yaml(&self) -> String {
        let replica = self.replica.as_ref().map(Cluster::port);
        config_yaml(&self.opts, self.pg.port(), replica)
    }

    /// The streaming replica ([`ShardsOptions::replica`]).
    pub fn replica_server(&self) -> &Cluster {
        self.replica
            .as_ref()
            .expect("started with ShardsOptions::replica")
    }

    /// A tokio-postgres client through the proxy, as the test user.
    pub async fn connect(&self) -> Client {
        connect(&self.url()).await
    }

    /// The proxy's URL, for external drivers: `postgres://app:secret@127.0.0.1:PORT/<prefix>`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{}",
            self.port(),
            self.opts.prefix
        )
    }

    /// The running proxy (its admin address, reloads).
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// The admin API's address.
    pub fn admin_addr(&self) -> std::net::SocketAddr {
        self.proxy.admin_addr()
    }

    /// The config file the proxy was started from (its text is [`Self::config_yaml`]).
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join(CONFIG_FILE)
    }

    /// The config text the proxy was started with.
    pub fn config_yaml(&self) -> String {
        self.yaml()
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.proxy.addr().port()
    }

    /// The port of the Postgres server holding the shard databases, for direct connections.
    /// The server's log, whole.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.pg.log_file()).unwrap_or_default()
    }

    pub fn server_port(&self) -> u16 {
        self.pg.port()
    }

    /// The database clients connect to (the prefix).
    pub fn database(&self) -> &str {
        &self.opts.prefix
    }

    /// A directory that lives as long as the fixture, for files a test writes.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Runs SQL on one shard directly, bypassing shardgate, as the superuser; psql's unaligned,
    /// tuples-only output (`a|b` per row, no trailing newline). Panics on an SQL error.
    pub fn direct(&self, shard: usize, sql: &str) -> String {
        let db = shard_db(&self.opts.prefix, shard);
        self.pg
            .psql(&db, sql)
            .unwrap_or_else(|e| panic!("direct SQL on {db} failed: {e}"))
    }

    /// Runs SQL on the control database directly (see [`Self::direct`]).
    pub fn control(&self, sql: &str) -> String {
        let db = control_db(&self.opts.prefix);
        self.pg
            .psql(&db, sql)
            .unwrap_or_else(|e| panic!("direct SQL on {db} failed: {e}"))
    }

    /// A URL of one shard's database as the test user, bypassing shardgate.
    pub fn shard_url(&self, shard: usize) -> String {
        let db = shard_db(&self.opts.prefix, shard);
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}",
            self.pg.port()
        )
    }

    /// The config the proxy runs with.
    pub fn config(&self) -> Config {
        Config::parse_with_env(&self.yaml(), &|_| None).expect("the fixture's config")
    }

    /// Reloads the proxy's config (unchanged) from a file, as SIGHUP would; the new epoch.
    pub fn reload(&self) -> u64 {
        let path = self.dir.path().join("reload.yaml");
        std::fs::write(&path, self.yaml()).expect("write config");
        self.proxy.reload_from(&path).expect("reload")
    }

    /// The integers in the first column of `sql` run directly on one shard, in the order returned.
    pub fn ids_on(&self, shard: usize, sql: &str) -> Vec<i64> {
        self.direct(shard, sql)
            .lines()
            .map(|l| {
                let first = l.split('|').next().unwrap_or("").trim();
                first
                    .parse()
                    .unwrap_or_else(|_| panic!("{sql} on shard {shard}: not an integer: {l:?}"))
            })
            .collect()
    }

    /// The shard (index) that owns an integer key, computed here from the map this fixture wrote.
    pub fn owner(&self, key: i64) -> usize {
        assert!(
            self.opts.sharding.is_none(),
            "Shards::owner knows the fixture's own hash map only"
        );
        self.opts
            .bucket_owner(bucket_of(hash_int(key), self.opts.buckets))
    }

    /// The positive keys owned by `shard`, smallest first.
    pub fn keys_on(&self, shard: usize) -> impl Iterator<Item = i64> + '_ {
        (1..).filter(move |&k| self.owner(k) == shard)
    }

    /// Creates database `<prefix>_<name>` beside the shards with the same schema, and returns its
    /// URL (as the test user): the unsharded twin a workload can be run on directly, to compare
    /// with the proxy or to tell a shardgate bug from a broken client.
    pub fn plain_database(&self, name: &str) -> String {
        let db = format!("{}_{name}", self.opts.prefix);
        create_shard_db(&self.pg, &db, &self.opts.schema);
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}",
            self.pg.port()
        )
    }
}

const CONFIG_FILE: &str = "shardgate.yaml";

fn control_db(prefix: &str) -> String {
    format!("{prefix}_control")
}

fn shard_db(prefix: &str, shard: usize) -> String {
    format!("{prefix}_s{shard}")
}

fn start_cluster(o: &ShardsOptions) -> (TempDir, Cluster, Option<Cluster>) {
    let bins = binaries();
    let dir = TempDir::new("sg-test").expect("temp dir");
    let mut options = ClusterOptions {
        name: "shards".into(),
        ..Default::default()
    };
    if o.two_phase {
        options
            .extra_conf
            .push(("max_prepared_transactions".into(), "50".into()));
    }
    let pg = Cluster::start(&bins, dir.path(), options).expect("start postgres");
    pg.create_user(USER, PASSWORD).expect("create user");
    for i in 0..o.shards {
        create_shard_db(&pg, &shard_db(&o.prefix, i), &o.schema);
    }
    if o.two_phase {
        create_shard_db(&pg, &control_db(&o.prefix), "");
    }
    let replica = o
        .replica
        .then(|| pg.start_replica("replica").expect("start the replica"));
    (dir, pg, replica)
}

/// A database the test user owns the contents of, with `schema` applied as that user.
fn create_shard_db(pg: &Cluster, db: &str, schema: &str) {
    pg.create_database(db).expect("create database");
    pg.grant_all(db, USER).expect("grant");
    // As the test user, so it owns the tables as it would after running its own migrations.
    pg.psql(db, &format!("SET ROLE {USER};\n{schema}"))
        .unwrap_or_else(|e| panic!("schema on {db}: {e}"));
}

fn config_yaml(o: &ShardsOptions, pg_port: u16, replica_port: Option<u16>) -> String {
    let token = o
        .admin_token
        .as_ref()
        .map(|t| format!(", token: \"{t}\""))
        .unwrap_or_default();
    let mut y = format!(
        "listen: 127.0.0.1:0\n\
         admin: {{ listen: 127.0.0.1:0{token} }}\n\
         users:\n  - {{ name: {USER}, password: {PASSWORD} }}\n\
         pool: {{ mode: transaction, size: {}, checkout_timeout_ms: {} }}\n",
        o.pool_size, o.checkout_timeout_ms
    );
    if replica_port.is_some() {
        y += "health: { interval_ms: 100, timeout_ms: 1000, failures_to_ban: 2 }\n";
    }
    if o.two_phase {
        let db = control_db(&o.prefix);
        let _ = writeln!(
            y,
            "control: \"postgres://{USER}:{PASSWORD}@127.0.0.1:{pg_port}/{db}\""
        );
    }
    let _ = write!(y, "databases:\n  {}:\n    shards:\n", o.prefix);
    let mut map = Vec::new();
    for i in 0..o.shards {
        let db = shard_db(&o.prefix, i);
        let url = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{pg_port}/{db}");
        let replicas = replica_port
            .map(|port| {
                let url = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{db}");
                format!(", replicas: [\"{url}\"]")
            })
            .unwrap_or_default();
        let _ = writeln!(y, "      s{i}: {{ primary: \"{url}\"{replicas} }}");
        if i >= o.owning() {
            continue;
        }
        let last = o.first_bucket(i + 1) - 1;
        map.push(format!(
            "{{ buckets: {}-{last}, shard: s{i} }}",
            o.first_bucket(i)
        ));
    }
    match &o.sharding {
        Some(sharding) => {
            let _ = writeln!(y, "    sharding: {sharding}");
        }
        None => {
            let _ = writeln!(
                y,
                "    sharding: {{ key_type: bigint, function: hash, buckets: {}, map: [{}] }}",
                o.buckets,
                map.join(", ")
            );
        }
    }
    let tables: Vec<String> = o.tables.iter().map(|(t, k)| format!("{t}: {k}")).collect();
    let _ = writeln!(y, "    tables: {{ {} }}", tables.join(", "));
    let _ = writeln!(
        y,
        "    reference_tables: [{}]",
        o.reference_tables.join(", ")
    );
    if let Some(i) = o.default_shard {
        let _ = writeln!(y, "    default_shard: s{i}");
    }
    let routing: Vec<String> = o.routing.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = writeln!(y, "    routing: {{ {} }}", routing.join(", "));
    y
}

#[test]
fn buckets_split_evenly_and_in_order() {
    let o = ShardsOptions::new(3).buckets(16);
    let owners: Vec<usize> = (0..16).map(|b| o.bucket_owner(b)).collect();
    // 16/3: s0 gets 0-4, s1 5-9, s2 10-15, exactly the ranges config_yaml writes.
    assert_eq!(owners, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
    let yaml = config_yaml(&o, 5432, None);
    assert!(
        yaml.contains("map: [{ buckets: 0-4, shard: s0 }, { buckets: 5-9, shard: s1 }, { buckets: 10-15, shard: s2 }]"),
        "{yaml}"
    );
    let two = ShardsOptions::new(2);
    let owners: Vec<usize> = (0..8).map(|b| two.bucket_owner(b)).collect();
    assert_eq!(owners, [0, 0, 0, 0, 1, 1, 1, 1]);
    // A new shard is configured and owns nothing.
    let new = ShardsOptions::new(3).new_shards(1);
    let owners: Vec<usize> = (0..8).map(|b| new.bucket_owner(b)).collect();
    assert_eq!(owners, [0, 0, 0, 0, 1, 1, 1, 1]);
    let yaml = config_yaml(&new, 5432, None);
    assert!(yaml.contains("      s2: { primary:"), "{yaml}");
    assert!(
        yaml.contains("map: [{ buckets: 0-3, shard: s0 }, { buckets: 4-7, shard: s1 }]"),
        "{yaml}"
    );
}
