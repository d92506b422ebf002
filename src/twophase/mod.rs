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

use std::sync::Arc;

pub use recover::{recover, recover_logged, run_periodically, Recovered};

pub use crate::control::ControlError;
use crate::control::{Client, ControlDb};

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

/// The coordinator of two-phase commits, over the control database.
pub struct Coordinator {
    db: Arc<ControlDb>,
}

impl Coordinator {
    pub fn new(db: Arc<ControlDb>) -> Coordinator {
        Coordinator { db }
    }

    async fn client(&self) -> Result<Client, ControlError> {
        self.db.client().await
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
    client: Option<Client>,
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

async fn rollback(client: Client, txid: &str) {
    if let Err(e) = client.batch_execute("ROLLBACK").await {
        tracing::warn!(txid, error = %e, "could not roll back an abandoned commit decision");
    }
}
