//! Two-phase commit for transactions that wrote on several shards (`cross_shard_writes: allow`).
//!
//! The protocol, with the control database (`control:`) as the coordinator's log:
//! 1. on the control database, `BEGIN` and an advisory lock on the transaction id (held until 4);
//! 2. `PREPARE TRANSACTION 'sg:<txid>:<shard>'` on every shard the transaction touched;
//! 3. if any shard failed to prepare, everything is rolled back;
//! 4. else the decision row is inserted into `shardgate.decided_transactions` and committed: from
//!    here on the transaction is committed, whatever happens to this process;
//! 5. `COMMIT PREPARED` on every shard, then the decision row is deleted.
//!
//! [`recover`] finishes what a crash left behind: a prepared `sg:` transaction is committed if its
//! decision row exists, else rolled back. It takes the same advisory lock first, so it never
//! decides while a live coordinator is between steps 1 and 4 (a dead coordinator's lock goes
//! with its connection).

mod recover;

use std::str::FromStr;

use tokio::sync::OnceCell;

pub use recover::{recover, recover_logged, run_periodically, Recovered};

/// The migrations of the control database, applied in order on the first control connection.
const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_decided_transactions",
    include_str!("../../migrations/0001_decided_transactions.sql"),
)];

/// The prefix of the prepared-transaction names shardgate gives; nothing else is touched.
pub const GID_PREFIX: &str = "sg:";

/// The shards' prepared-transaction name for one transaction and one shard.
pub fn gid(txid: &str, shard: &str) -> String {
    format!("{GID_PREFIX}{txid}:{shard}")
}

/// A fresh transaction id: 128 random bits, so ids never repeat across proxies and restarts.
pub fn new_txid() -> String {
    format!("{:032x}", rand::random::<u128>())
}

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

/// bb8 connections to the control database, through tokio-postgres (never client traffic).
pub struct Control {
    config: tokio_postgres::Config,
}

impl bb8::ManageConnection for Control {
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

/// The coordinator of two-phase commits, over the control database.
pub struct Coordinator {
    pool: bb8::Pool<Control>,
    migrated: OnceCell<()>,
}

impl Coordinator {
    /// Connects lazily: a control database that is down fails the commits that need it, not the
    /// proxy's start.
    pub fn new(url: &str) -> Result<Coordinator, String> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| format!("control: not a valid Postgres URL: {e}"))?;
        config.application_name("shardgate-control");
        config.connect_timeout(std::time::Duration::from_secs(5));
        let pool = bb8::Pool::builder()
            .max_size(8)
            .test_on_check_out(false)
            .connection_timeout(std::time::Duration::from_secs(5))
            .build_unchecked(Control { config });
        Ok(Coordinator {
            pool,
            migrated: OnceCell::new(),
        })
    }

    /// A control connection, with the migrations applied (once per process).
    async fn client(&self) -> Result<bb8::PooledConnection<'static, Control>, ControlError> {
        let client = self
            .pool
            .get_owned()
            .await
            .map_err(|e| ControlError::Unreachable(e.to_string()))?;
        self.migrated
            .get_or_try_init(|| async {
                for (name, sql) in MIGRATIONS {
                    client.batch_execute(sql).await.map_err(|source| {
                        tracing::error!(migration = name, error = %source, "control database migration failed");
                        ControlError::Refused { what: "shardgate's migrations", source }
                    })?;
                }
                Ok::<(), ControlError>(())
            })
            .await?;
        Ok(client)
    }

    /// Step 1: opens the decision for `txid`, holding its lock until it is recorded or dropped.
    pub async fn open(&self, txid: &str) -> Result<Decision, ControlError> {
        let client = self.client().await?;
        let sql = format!("BEGIN; SELECT pg_advisory_xact_lock(hashtextextended('{txid}', 0))");
        client
            .batch_execute(&sql)
            .await
            .map_err(|source| ControlError::Refused {
                what: "the decision's lock",
                source,
            })?;
        Ok(Decision {
            client: Some(client),
            txid: txid.to_string(),
        })
    }

    /// Step 5's clean-up: the decision is not needed once every shard has committed.
    pub async fn forget(&self, txid: &str) {
        let result = match self.client().await {
            Ok(client) => client
                .execute(
                    "DELETE FROM shardgate.decided_transactions WHERE txid = $1",
                    &[&txid],
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = result {
            // Harmless: a stale row only says a finished transaction committed.
            tracing::warn!(txid, %error, "could not delete a commit decision");
        }
    }

    /// Whether `txid` was decided committed, once no coordinator can still be deciding it.
    async fn decided(&self, txid: &str) -> Result<bool, ControlError> {
        let client = self.client().await?;
        let refused = |source| ControlError::Refused {
            what: "the decision lookup",
            source,
        };
        client.batch_execute("BEGIN").await.map_err(refused)?;
        let lock = client
            .execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                &[&txid],
            )
            .await;
        let found = match lock {
            Ok(_) => client
                .query_opt(
                    "SELECT 1 FROM shardgate.decided_transactions WHERE txid = $1",
                    &[&txid],
                )
                .await
                .map(|r| r.is_some()),
            Err(e) => Err(e),
        };
        let end = client.batch_execute("COMMIT").await;
        let found = found.map_err(refused)?;
        end.map_err(refused)?;
        Ok(found)
    }
}

/// An open decision: its control transaction holds the lock on its txid.
pub struct Decision {
    /// Taken when the decision is recorded or abandoned; see `Drop`.
    client: Option<bb8::PooledConnection<'static, Control>>,
    txid: String,
}

impl Decision {
    /// Step 4: records the commit. `Ok` means the transaction is committed.
    pub async fn record(mut self) -> Result<(), ControlError> {
        let client = self.client.take().expect("an open decision");
        let insert = client
            .execute(
                "INSERT INTO shardgate.decided_transactions (txid) VALUES ($1)",
                &[&self.txid],
            )
            .await;
        if let Err(source) = insert {
            rollback(client, &self.txid).await;
            return Err(ControlError::Refused {
                what: "the commit decision",
                source,
            });
        }
        match client.batch_execute("COMMIT").await {
            Ok(()) => Ok(()),
            // An answer from the server means it did not commit; no answer means we cannot know.
            Err(e) if e.code().is_some() => Err(ControlError::Refused {
                what: "the commit decision",
                source: e,
            }),
            Err(e) => Err(ControlError::Unknown(e)),
        }
    }

    /// Step 3: nothing was decided. Rolling back releases the lock.
    pub async fn abandon(mut self) {
        if let Some(client) = self.client.take() {
            rollback(client, &self.txid).await;
        }
    }
}

impl Drop for Decision {
    /// A decision dropped open (its session ended mid-commit) must not go back to the pool
    /// holding its transaction and lock: it is rolled back first.
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let txid = std::mem::take(&mut self.txid);
            tokio::spawn(async move { rollback(client, &txid).await });
        }
    }
}

async fn rollback(client: bb8::PooledConnection<'static, Control>, txid: &str) {
    if let Err(e) = client.batch_execute("ROLLBACK").await {
        tracing::warn!(txid, error = %e, "could not roll back an abandoned commit decision");
    }
}
