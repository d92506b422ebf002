//! `shardgate demo`: a complete local setup with nothing installed but the PostgreSQL server
//! binaries — two real clusters, a streaming replica, a sample schema and data, and the proxy.
//!
//! The clusters are two shards of one database `app`: `users` and `orders` hash-sharded on the
//! user's id (buckets 0-511 on s0, 512-1023 on s1), `countries` a reference table on both, safe
//! reads on s0 served by its replica. The sample rows are loaded through shardgate itself, so
//! shardgate places them.

use std::path::{Path, PathBuf};

use crate::cluster::{Cluster, ClusterError, ClusterOptions, PgBinaries};
use crate::config::Config;
use crate::proxy::Proxy;
use crate::shutdown::{Signal, Signals};

/// `println!` that ignores a closed stdout (`shardgate demo | head`), which would otherwise panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub const USER: &str = "app";
pub const PASSWORD: &str = "demo";

pub struct DemoOptions {
    pub dir: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    /// Workers serving clients (`--threads`).
    pub threads: usize,
}

/// The servers behind the demo. Dropping it stops and removes them.
pub struct Servers {
    // Field order is drop order: the replica stops before its primary.
    pub s0_replica: Cluster,
    pub s0: Cluster,
    pub s1: Cluster,
}

/// The same on every shard; each shard's order ids come from its own sequence, odd on s0 and
/// even on s1, so they never collide.
const SCHEMA: &str = "
CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users, total numeric(10,2) NOT NULL,
                     created_at timestamptz NOT NULL DEFAULT now());
ALTER SEQUENCE orders_id_seq INCREMENT BY 2 RESTART WITH FIRST_ORDER_ID;
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
INSERT INTO countries VALUES ('FR', 'France'), ('JP', 'Japan'), ('BR', 'Brazil'), ('US', 'United States');
";

/// Sample users (ids 1..=USERS) and orders (ORDERS of them, spread over the users).
const USERS: i64 = 2000;
const ORDERS: i64 = 5000;
/// Rows per INSERT when loading through shardgate (each is split between the shards).
const BATCH: i64 = 500;

/// Starts the clusters and loads the sample data (blocking: runs initdb, pg_ctl, psql).
pub fn start_servers(dir: &Path) -> Result<Servers, ClusterError> {
    let bins = PgBinaries::find()?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| ClusterError::Io {
            what: format!("cannot clear {}", dir.display()),
            source: e,
        })?;
    }
    std::fs::create_dir_all(dir).map_err(|e| ClusterError::Io {
        what: format!("cannot create {}", dir.display()),
        source: e,
    })?;
    let opts = |name: &str| ClusterOptions {
        name: name.into(),
        fast: false,
        ..ClusterOptions::default()
    };
    let s0 = Cluster::start(&bins, dir, opts("pg-s0"))?;
    let s1 = Cluster::start(&bins, dir, opts("pg-s1"))?;
    for (cluster, first_order_id) in [(&s0, 1), (&s1, 2)] {
        cluster.create_user(USER, PASSWORD)?;
        cluster.create_database("app")?;
        cluster.grant_all("app", USER)?;
        // As the app's role, so it owns its tables (a move installs triggers and row security).
        let sql = SCHEMA.replace("FIRST_ORDER_ID", &first_order_id.to_string());
        cluster.psql("app", &format!("SET ROLE {USER};\n{sql}"))?;
        cluster.grant_all("app", USER)?;
    }
    // shardgate's own database (resharding jobs, two-phase commit decisions), on pg-s0.
    s0.create_database("shardgate")?;
    s0.grant_all("shardgate", USER)?;
    let s0_replica = s0.start_replica("pg-s0-replica")?;
    Ok(Servers { s0_replica, s0, s1 })
}

/// The config the demo runs with, in the shape of `config/shardgate.yaml`.
pub fn config_yaml(servers: &Servers, port: u16, admin_port: u16, admin_token: &str) -> String {
    let url = |c: &Cluster| format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/app", c.port());
    format!(
        "# Written by `shardgate demo`.\n\
         listen: 127.0.0.1:{port}\n\
         admin: {{ listen: 127.0.0.1:{admin_port}, token: \"{admin_token}\" }}\n\
         users:\n  - {{ name: {USER}, password: {PASSWORD} }}\n\
         pool: {{ mode: transaction, size: 10 }}\n\
         control: \"postgres://{USER}:{PASSWORD}@127.0.0.1:{control_port}/shardgate\"\n\
         databases:\n\
         \x20 app:\n    shards:\n      s0: {{ primary: \"{}\", replicas: [\"{}\"] }}\n\
         \x20     s1: {{ primary: \"{}\" }}\n\
         \x20   sharding:\n\
         \x20     key_type: bigint\n\
         \x20     function: hash\n\
         \x20     buckets: 1024\n\
         \x20     map: [{{ buckets: 0-511, shard: s0 }}, {{ buckets: 512-1023, shard: s1 }}]\n\
         \x20   tables: {{ users: id, orders: user_id }}\n\
         \x20   reference_tables: [countries]\n\
         \x20   default_shard: s0\n\
         \x20   routing: {{ read_replicas: true, max_replica_lag_ms: 1000, read_your_writes: true }}\n",
        url(&servers.s0),
        url(&servers.s0_replica),
        url(&servers.s1),
        control_port = servers.s0.port(),
    )
}

/// Loads the sample users and orders through the proxy at `url`, in multi-row INSERTs that
/// shardgate splits between the shards.
async fn load_sample(url: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    for first in (1..=USERS).step_by(BATCH as usize) {
        let rows: Vec<String> = (first..first + BATCH)
            .map(|i| format!("({i}, 'user {i}', 'user{i}@example.com')"))
            .collect();
        let sql = format!(
            "INSERT INTO users (id, name, email) VALUES {}",
            rows.join(", ")
        );
        client.batch_execute(&sql).await?;
    }
    for first in (0..ORDERS).step_by(BATCH as usize) {
        let rows: Vec<String> = (first..first + BATCH)
            .map(|i| format!("({}, {}.99)", 1 + i % USERS, i % 500))
            .collect();
        let sql = format!(
            "INSERT INTO orders (user_id, total) VALUES {}",
            rows.join(", ")
        );
        client.batch_execute(&sql).await?;
    }
    drop(client);
    let _ = connection.await;
    Ok(())
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    say!("Starting PostgreSQL clusters in {} …", opts.dir.display());
    let dir = opts.dir.clone();
    let servers = tokio::task::spawn_blocking(move || start_servers(&dir)).await??;
    let config_path = opts.dir.join("shardgate.yaml");
    // A fresh token per run: the admin API refuses every /v1 request without one.
    let admin_token: String = {
        use rand::Rng;
        let bytes: [u8; 16] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    std::fs::write(
        &config_path,
        config_yaml(&servers, opts.port, opts.admin_port, &admin_token),
    )?;
    let workers = crate::workers::Workers::start(opts.threads)?;
    let proxy = Proxy::start_from(Config::load(&config_path)?, &config_path, workers).await?;
    let addr = proxy.addr();
    say!("Loading {USERS} users and {ORDERS} orders through shardgate …");
    load_sample(&format!("postgres://{USER}:{PASSWORD}@{addr}/app")).await?;
    say!();
    say!("shardgate is running. Connect with:");
    say!("  psql \"postgres://{USER}:{PASSWORD}@{addr}/app\"");
    say!();
    say!("  and try:  SELECT * FROM users WHERE id = 42;          -- one shard (its replica, for s0)");
    say!("            SELECT count(*), sum(total) FROM orders;    -- both shards, merged");
    say!("            /* shardgate: shard=s1 */ SELECT count(*) FROM users;");
    say!(
        "  resharding: shardgate reshard --admin http://{} --token {admin_token} start --database app --move 0-255:s1",
        proxy.admin_addr()
    );
    say!();
    say!(
        "  pg-s0:          127.0.0.1:{} (primary of shard s0)",
        servers.s0.port()
    );
    say!(
        "  pg-s0-replica:  127.0.0.1:{} (streaming replica)",
        servers.s0_replica.port()
    );
    say!(
        "  pg-s1:          127.0.0.1:{} (primary of shard s1)",
        servers.s1.port()
    );
    say!(
        "  admin API:      http://{}  (token {admin_token})",
        proxy.admin_addr()
    );
    say!(
        "                  curl -H 'Authorization: Bearer {admin_token}' http://{}/v1/databases",
        proxy.admin_addr()
    );
    say!(
        "  config:         {}  (edit it and send SIGHUP to reload)",
        config_path.display()
    );
    say!();
    say!("Press Ctrl-C to stop everything.");
    let mut signals = Signals::install()?;
    loop {
        match signals.next().await {
            Signal::Stop => break,
            Signal::Reload => match proxy.reload_from(&config_path) {
                Ok(epoch) => say!("config reloaded (epoch {epoch})"),
                Err(e) => say!("config reload refused, the old config stays: {e}"),
            },
        }
    }
    say!("Stopping …");
    proxy.shutdown().await;
    tokio::task::spawn_blocking(move || drop(servers)).await?;
    Ok(())
}
