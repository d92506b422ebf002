//! shardgate's own database (`control:` in the config): the commit decisions of two-phase
//! commits ([`crate::twophase`]) and, for online resharding, jobs, checkpoints, epochs and proxy
//! heartbeats (DESIGN §3). Reached through tokio-postgres over a small bb8 pool, never for client
//! traffic.
//!
//! The tables come from the versioned SQL files in `migrations/`, applied on the first control
//! connection of each process: in one transaction, under an advisory lock (so proxies starting
//! together apply each file once), each version not yet recorded in `shardgate.migrations`.

use std::str::FromStr;
use std::time::Duration;

use tokio::sync::OnceCell;

/// The migrations, in order: version, name, SQL. A version is never edited once released: a
/// change is a new file.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_decided_transactions",
        include_str!("../../migrations/0001_decided_transactions.sql"),
    ),
    (
        2,
        "0002_resharding",
        include_str!("../../migrations/0002_resharding.sql"),
    ),
    (
        3,
        "0003_reshard_driving",
        include_str!("../../migrations/0003_reshard_driving.sql"),
    ),
    (
        4,
        "0004_backfill_bound",
        include_str!("../../migrations/0004_backfill_bound.sql"),
    ),
];

/// Taken while migrating: one proxy at a time (any 64-bit constant shardgate alone uses).
const MIGRATION_LOCK: i64 = 0x5368_6172_6467_6174; // "Shardgat"

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the control database is unreachable: {0}")]
    Unreachable(String),
    #[error("the control database refused {what}: {source}")]
    Refused {
        what: &'static str,
        source: tokio_postgres::Error,
    },
    /// The decision's COMMIT was sent and no answer came: it may or may not be recorded.
    #[error("the control database did not confirm the commit decision: {0}")]
    Unknown(tokio_postgres::Error),
}

/// bb8 connections to the control database.
pub struct Manager {
    config: tokio_postgres::Config,
}

impl bb8::ManageConnection for Manager {
    type Connection = tokio_postgres::Client;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "control database connection ended");
            }
        });
        Ok(client)
    }

    async fn is_valid(&self, _conn: &mut Self::Connection) -> Result<(), Self::Error> {
        Ok(()) // test_on_check_out is off: a broken connection shows up as an error and is dropped
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.is_closed()
    }
}

pub type Client = bb8::PooledConnection<'static, Manager>;

/// The control database of one proxy.
pub struct ControlDb {
    pool: bb8::Pool<Manager>,
    migrated: OnceCell<()>,
}

impl ControlDb {
    /// Connects lazily: a control database that is down fails what needs it, not the start.
    pub fn new(url: &str) -> Result<ControlDb, String> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| format!("control: not a valid Postgres URL: {e}"))?;
        config.application_name("shardgate-control");
        config.connect_timeout(Duration::from_secs(5));
        let pool = bb8::Pool::builder()
            .max_size(8)
            .test_on_check_out(false)
            .connection_timeout(Duration::from_secs(5))
            .build_unchecked(Manager { config });
        Ok(ControlDb {
            pool,
            migrated: OnceCell::new(),
        })
    }

    /// A control connection, with the migrations applied (once per process).
    pub async fn client(&self) -> Result<Client, ControlError> {
        let client = self
            .pool
            .get_owned()
            .await
            .map_err(|e| ControlError::Unreachable(e.to_string()))?;
        self.migrated.get_or_try_init(|| migrate(&client)).await?;
        Ok(client)
    }
}

/// Applies the migrations not yet recorded, in one transaction under the migration lock.
async fn migrate(client: &tokio_postgres::Client) -> Result<(), ControlError> {
    let refused = |source| {
        tracing::error!(error = %source, "control database migration failed");
        ControlError::Refused {
            what: "shardgate's migrations",
            source,
        }
    };
    client
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK}); \
             CREATE SCHEMA IF NOT EXISTS shardgate; \
             CREATE TABLE IF NOT EXISTS shardgate.migrations ( \
                 version int PRIMARY KEY, name text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now())"
        ))
        .await
        .map_err(refused)?;
    let result = apply_missing(client).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = client.batch_execute(end).await;
    result.map_err(refused)?;
    ended.map_err(refused)
}

async fn apply_missing(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    let rows = client
        .query("SELECT version FROM shardgate.migrations", &[])
        .await?;
    let applied: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        client.batch_execute(sql).await?;
        client
            .execute(
                "INSERT INTO shardgate.migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await?;
        tracing::info!(migration = name, "control database migrated");
    }
    Ok(())
}
