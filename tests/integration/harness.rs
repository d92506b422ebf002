//! Real Postgres behind a real proxy, per test. No mocks: every test starts its own cluster (about
//! a second) and an in-process shardgate on a free port, and tears both down when dropped.

use std::time::Duration;

use shardgate::cluster::{Cluster, ClusterOptions, PgBinaries, TempDir};
use shardgate::config::Config;
use shardgate::proxy::Proxy;
use shardgate::workers::Workers;
use tokio_postgres::{Client, NoTls};

pub const USER: &str = "app";
pub const PASSWORD: &str = "secret";

pub struct Options {
    pub pool_size: u32,
    pub mode: &'static str,
    pub checkout_timeout_ms: u64,
    pub max_clients: usize,
    /// Extra YAML lines appended to the top level (e.g. a `tls:` section).
    pub extra: String,
    /// Extra entries for `users:`.
    pub extra_users: String,
    /// Workers serving clients (`--threads`): the test's runtime, and more on threads of their
    /// own. Clients are dealt to them in turn, in the order they connect.
    pub workers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pool_size: 2,
            mode: "transaction",
            checkout_timeout_ms: 3000,
            max_clients: 100,
            extra: String::new(),
            extra_users: String::new(),
            workers: 1,
        }
    }
}

pub struct Env {
    pub proxy: Proxy,
    pub pg: Cluster,
    pub bins: PgBinaries,
    pub config_yaml: String,
    // Declared last: dropped after the cluster that lives in it.
    pub dir: TempDir,
}

/// Finds the server binaries or fails the test with the install instructions.
pub fn binaries() -> PgBinaries {
    PgBinaries::find()
        .unwrap_or_else(|e| panic!("PostgreSQL server binaries are required for the tests: {e}"))
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Env {
        let (dir, pg, bins) = tokio::task::spawn_blocking(|| {
            let bins = binaries();
            let dir = TempDir::new("sg-test").expect("temp dir");
            let pg = Cluster::start(
                &bins,
                dir.path(),
                ClusterOptions {
                    name: "s0".into(),
                    ..Default::default()
                },
            )
            .expect("start postgres");
            pg.create_user(USER, PASSWORD).expect("create user");
            pg.create_database("app").expect("create database");
            pg.grant_all("app", USER).expect("grant");
            (dir, pg, bins)
        })
        .await
        .expect("cluster setup");
        let config_yaml = config_yaml(&pg, &opts);
        let config = Config::parse_with_env(&config_yaml, &|_| None).expect("valid test config");
        let workers = Workers::start(opts.workers).expect("start the workers");
        let proxy = Proxy::start_on(config, workers).await.expect("start proxy");
        Env {
            proxy,
            pg,
            bins,
            config_yaml,
            dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.proxy.addr().port()
    }

    pub fn url(&self) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/app", self.port())
    }

    pub async fn connect(&self) -> Client {
        connect(&self.url()).await
    }

    /// pgbench through shardgate against database `app`, with `args`.
    pub fn pgbench(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.bins.tool("pgbench"));
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port().to_string(),
            "-U",
            USER,
        ])
        .args(args)
        .arg("app")
        .env("PGPASSWORD", PASSWORD)
        .env("PGSSLMODE", "disable");
        cmd
    }

    /// Runs SQL directly on the server as the superuser (bypassing shardgate).
    pub fn direct(&self, sql: &str) -> String {
        self.pg
            .psql("app", sql)
            .unwrap_or_else(|e| panic!("direct SQL failed: {e}"))
    }
}

/// Runs a program to its end; fails the test with its output if it fails.
pub fn run(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn config_yaml(pg: &Cluster, o: &Options) -> String {
    format!(
        "listen: 127.0.0.1:0\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         users:\n  - {{ name: {USER}, password: {PASSWORD} }}\n{}\
         pool: {{ mode: {}, size: {}, checkout_timeout_ms: {}, max_clients: {}, shutdown_timeout_ms: 5000 }}\n\
         databases:\n  app:\n    shards:\n      s0: {{ primary: \"postgres://{USER}:{PASSWORD}@127.0.0.1:{}/app\" }}\n{}",
        o.extra_users, o.mode, o.pool_size, o.checkout_timeout_ms, o.max_clients, pg.port(), o.extra
    )
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Runs a query that returns one row and gives its first column.
pub async fn one<T>(c: &Client, sql: &str) -> T
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// The SQLSTATE and message of a failed statement.
pub fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a server error, got: {e}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

/// Polls `f` until it returns true or the time is up.
pub async fn eventually_async<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> F,
) {
    let start = std::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
