//! Transactions on several shards (`routing.cross_shard_writes: allow`, with a `control:`
//! database). The transaction starts pinned to its first shard as usual; a statement that needs
//! another shard parks the held backend (idle in its transaction) and takes that shard's, which
//! begins the same transaction. COMMIT is a two-phase commit over every shard the transaction
//! used ([`crate::twophase`]); ROLLBACK rolls each back.
//!
//! What a transaction on one server would allow but one spread over servers cannot honour is
//! refused rather than half-done: savepoints (each would live on one shard), `COMMIT AND CHAIN`,
//! `PREPARE TRANSACTION`, and a switch while the held backend still owes replies.

use crate::net::ClientStream;
use futures_util::future::join_all;

use super::fanout::{annotate, Failure, Reply, ShardConn};
use super::{Held, Session};
use crate::protocol::backend::TxStatus;
use crate::protocol::{PgError, SqlState};
use crate::router::{Plan, Router};
use crate::twophase::{gid, new_txid, ControlError};

impl<S: ClientStream> Session<S> {
    /// Whether this transaction could take a second shard: an explicit transaction of a database
    /// that allows cross-shard writes, with a coordinator.
    pub(super) fn may_span(&self, router: &Router) -> bool {
        self.tx_begin.is_some()
            && self.shared.coordinator.is_some()
            && router.allows_cross_shard_writes()
    }

    /// The coordinator, when statements on several shards commit with two-phase commit:
    /// `cross_shard_writes: allow` and a control database.
    pub(super) fn two_phase(&self) -> Option<std::sync::Arc<crate::twophase::Coordinator>> {
        let allowed = self.router.as_ref()?.allows_cross_shard_writes();
        self.shared.coordinator.clone().filter(|_| allowed)
    }

    /// Whether the transaction already uses more than one shard.
    pub(super) fn spans(&self) -> bool {
        !self.parked.is_empty()
    }

    /// Whether the held backend owes nothing: the point where it can be parked or finished.
    fn settled(&self) -> bool {
        self.replies.is_empty() && !self.replies.copy_in && !self.skip_until_sync
    }

    /// Why the pinned transaction cannot take shard `want` as well; `None` if it can.
    pub(super) fn second_shard_refusal(&self, router: &Router, want: usize) -> Option<PgError> {
        let refused = self.cross_shard(router, want);
        if !router.allows_cross_shard_writes() {
            return Some(refused);
        }
        let why = if self.shared.coordinator.is_none() {
            "two-phase commit needs a control database (control: in the config)"
        } else if self.tx_begin.is_none() {
            "only an explicit transaction (BEGIN … COMMIT) can span shards, not a batch's implicit one"
        } else if self.status != TxStatus::InTransaction {
            return Some(refused);
        } else if self.tx_savepoint {
            "it has savepoints, and a savepoint lives on one shard"
        } else if !self.settled() {
            "the statements before this one have not finished; wait for their results first"
        } else {
            return None;
        };
        Some(refused.with_detail(format!("The transaction cannot span shards: {why}.")))
    }

    /// Statements a transaction spread over shards cannot run: refused before they reach a shard.
    pub(super) fn spanning_refusal(&self, plan: &Plan, sql: &str) -> Option<PgError> {
        if !self.spans() {
            return None;
        }
        let words = first_words(sql);
        let w = |i: usize| words.get(i).map_or("", String::as_str);
        let what = match (w(0), w(1)) {
            ("savepoint" | "release", _) => "savepoints",
            ("prepare", "transaction") => "PREPARE TRANSACTION",
            ("rollback" | "abort", _) if !matches!(plan, Plan::End) => "ROLLBACK TO SAVEPOINT",
            _ if sql.to_ascii_lowercase().contains("chain") && matches!(plan, Plan::End) => {
                "COMMIT AND CHAIN"
            }
            _ if matches!(plan, Plan::End) => {
                "COMMIT or ROLLBACK before the earlier statements' results have arrived"
            }
            _ if matches!(plan, Plan::Multi(plans) if plans.iter().any(|p| matches!(p, Plan::Begin | Plan::End))) => {
                "a transaction command inside a multi-statement query"
            }
            _ => return None,
        };
        Some(
            PgError::error(
                SqlState::FeatureNotSupported,
                format!("{what} cannot be used in a transaction that spans several shards"),
            )
            .with_hint(
                "Run it in a transaction on one shard, or end this transaction first (ROLLBACK).",
            ),
        )
    }

    /// Notes a SAVEPOINT: from then on the transaction stays on its shard.
    pub(super) fn note_savepoint(&mut self, sql: &str) {
        if self.status == TxStatus::InTransaction
            && self.tx_begin.is_some()
            && first_words(sql).first().is_some_and(|w| w == "savepoint")
        {
            self.tx_savepoint = true;
        }
    }

    /// A multi-statement query that begins a transaction (`BEGIN; INSERT …`) makes it spannable
    /// as a lone BEGIN would; a SAVEPOINT in it keeps it on its shard.
    pub(super) fn note_multi(&mut self, plans: &[Plan], sql: &str) {
        for (plan, stmt) in plans.iter().zip(super::sql::statements(sql)) {
            match plan {
                Plan::Begin if self.status == TxStatus::Idle => {
                    self.tx_begin = Some(stmt.to_string());
                    self.tx_savepoint = false;
                }
                _ if first_words(stmt).first().is_some_and(|w| w == "savepoint") => {
                    self.tx_savepoint = true;
                }
                _ => {}
            }
        }
    }

    /// Parks the held backend and makes shard `want`'s the held one: the one already in this
    /// transaction, or a fresh one that begins it (its BEGIN goes before the statement).
    pub(super) async fn take_second_shard(&mut self, want: usize) -> Result<(), PgError> {
        let current = self
            .backend
            .take()
            .expect("a transaction pinned to a shard");
        self.parked.push(current);
        // The client's unnamed statement is put on whichever backend runs it next.
        self.unnamed_here = false;
        if let Some(i) = self.parked.iter().position(|h| h.index == want) {
            let held = self.parked.swap_remove(i);
            self.publish_cancel(Some(held.conn.cancel_target()));
            self.backend = Some(held);
            return Ok(());
        }
        match self
            .checkout(super::checkout::Place::primary(Some(want)))
            .await
        {
            Ok(()) => {
                self.deferred_begin = self.tx_begin.clone();
                Ok(())
            }
            Err(e) => {
                let back = self.parked.pop().expect("parked just now");
                self.publish_cancel(Some(back.conn.cancel_target()));
                self.backend = Some(back);
                Err(e)
            }
        }
    }

    /// Ends a transaction that spans shards: a two-phase commit, or a rollback everywhere (also
    /// for a COMMIT of a failed transaction, as in Postgres). The tag on success.
    pub(super) async fn finish_spanning(&mut self, commit: bool) -> Result<&'static str, Failure> {
        let commit = commit && self.status == TxStatus::InTransaction && !self.cycle_failed;
        let mut held: Vec<ShardConn> = self
            .parked
            .drain(..)
            .chain(self.backend.take())
            .map(shard_conn)
            .collect();
        let mut conns: Vec<&mut ShardConn> = held.iter_mut().collect();
        self.publish_cancel(None);
        let commands = std::mem::take(&mut self.pending_cmds);
        self.end_spanning();
        if !commit {
            run_on_all(&mut conns, |_| "ROLLBACK".to_string()).await;
            return Ok("ROLLBACK");
        }
        let coordinator = self
            .shared
            .coordinator
            .clone()
            .expect("checked at the switch");
        two_phase_commit(&coordinator, &mut conns).await?;
        self.note_unknown_commits(held.iter().map(|c| c.name.as_str()));
        // Committed: the transaction's session commands (SET …) take effect for the client. The
        // backends' own settings are re-checked at their next use, since each ran only some.
        for cmd in commands {
            self.settings.apply(&cmd);
        }
        self.hints = super::hints::Hints::of(self.settings.effective());
        Ok("COMMIT")
    }

    /// The session is between transactions again, whatever the outcome.
    fn end_spanning(&mut self) {
        self.cycle_failed = false;
        self.status = TxStatus::Idle;
        self.deferred_begin = None;
        self.forget_transaction();
    }

    /// Forgets what made the transaction spannable.
    pub(super) fn forget_transaction(&mut self) {
        self.tx_begin = None;
        self.tx_savepoint = false;
    }

    /// The backends of a transaction that cannot finish (its session ends or a backend died):
    /// closed, so each server rolls its part back.
    pub(super) fn abandon_parked(&mut self) {
        for mut held in self.parked.drain(..) {
            held.conn.mark_broken();
        }
    }
}

fn shard_conn(held: Held) -> ShardConn {
    let name = held.shard().to_string();
    let mut conn = held.conn;
    conn.session.settings.mark_unknown();
    ShardConn { name, conn }
}

/// Runs one statement on every connection at once; the replies in the same order.
async fn run_on_all(
    conns: &mut [&mut ShardConn],
    sql: impl Fn(&ShardConn) -> String,
) -> Vec<Result<Reply, PgError>> {
    let out: Vec<bytes::BytesMut> = conns
        .iter()
        .map(|c| {
            let mut out = bytes::BytesMut::new();
            crate::protocol::frontend::Query { sql: &sql(c) }.encode(&mut out);
            out
        })
        .collect();
    join_all(
        conns
            .iter_mut()
            .zip(&out)
            .map(|(c, out)| c.exchange(out, 1, 0, false)),
    )
    .await
}

/// Whether a reply is a clean `tag`. A PREPARE TRANSACTION of a failed transaction answers
/// `ROLLBACK` without an error.
fn answered(result: &Result<Reply, PgError>, tag: &str) -> bool {
    matches!(result, Ok(r) if r.error.is_none() && r.tags.last().is_some_and(|t| t == tag))
}

/// Steps 1–5 of [`crate::twophase`] over the transaction's backends.
pub(super) async fn two_phase_commit(
    coordinator: &crate::twophase::Coordinator,
    conns: &mut [&mut ShardConn],
) -> Result<(), Failure> {
    let txid = new_txid();
    let decision = match coordinator.open(&txid).await {
        Ok(d) => d,
        Err(e) => {
            run_on_all(conns, |_| "ROLLBACK".to_string()).await;
            return Err(control_failure(
                &e,
                "The transaction was rolled back on every shard.",
            ));
        }
    };
    let prepared = run_on_all(conns, |c| {
        format!("PREPARE TRANSACTION '{}'", gid(&txid, &c.name))
    })
    .await;
    if let Some(failed) = prepared
        .iter()
        .position(|r| !answered(r, "PREPARE TRANSACTION"))
    {
        let undo: Vec<bool> = prepared
            .iter()
            .map(|r| answered(r, "PREPARE TRANSACTION"))
            .collect();
        rollback_prepared(conns, &txid, &undo).await;
        decision.abandon().await;
        let detail = "No shard committed: the transaction was rolled back on every shard.";
        let failure = annotate(&conns[failed].name, &prepared[failed], detail);
        return Err(with_prepare_hint(
            failure,
            &conns[failed].name,
            &prepared[failed],
        ));
    }
    if let Err(e) = decision.record().await {
        let every = vec![true; conns.len()];
        return Err(match e {
            ControlError::Unknown(_) => in_doubt(&e),
            _ => {
                rollback_prepared(conns, &txid, &every).await;
                control_failure(
                    &e,
                    "No shard committed: the transaction was rolled back on every shard.",
                )
            }
        });
    }
    // Committed. A shard that cannot be told now is finished by the recovery pass.
    let done = run_on_all(conns, |c| {
        format!("COMMIT PREPARED '{}'", gid(&txid, &c.name))
    })
    .await;
    let unfinished: Vec<&str> = conns
        .iter()
        .zip(&done)
        .filter(|(_, r)| !answered(r, "COMMIT PREPARED"))
        .map(|(c, _)| c.name.as_str())
        .collect();
    if unfinished.is_empty() {
        coordinator.forget(&txid).await;
    } else {
        tracing::warn!(%txid, shards = ?unfinished, "committed, but COMMIT PREPARED failed on some shards; the recovery pass will finish them");
    }
    Ok(())
}

/// Rolls back the shards that prepared; the others rolled back when their PREPARE failed.
async fn rollback_prepared(conns: &mut [&mut ShardConn], txid: &str, prepared: &[bool]) {
    for (c, _) in conns.iter_mut().zip(prepared).filter(|(_, p)| **p) {
        let mut out = bytes::BytesMut::new();
        let sql = format!("ROLLBACK PREPARED '{}'", gid(txid, &c.name));
        crate::protocol::frontend::Query { sql: &sql }.encode(&mut out);
        if let Err(e) = c.exchange(&out, 1, 0, false).await {
            tracing::warn!(shard = %c.name, error = %e, "ROLLBACK PREPARED failed; the recovery pass will roll it back");
        }
    }
}

fn control_failure(e: &ControlError, detail: &str) -> Failure {
    Failure::Ours(
        PgError::error(SqlState::ConnectionFailure, format!("cannot commit a transaction that spans shards: {e}"))
            .with_detail(detail)
            .with_hint("Check that shardgate's control database (control: in the config) is up, then retry the transaction."),
    )
}

fn in_doubt(e: &ControlError) -> Failure {
    Failure::Ours(
        PgError::error(SqlState::TransactionResolutionUnknown, format!("the outcome of this transaction is not known yet: {e}"))
            .with_detail("Every shard prepared it; whether it commits depends on the decision the control database may have recorded. shardgate finishes it, one way or the other, within a minute of the control database answering again.")
            .with_hint("Check later whether the transaction's changes are there before retrying it."),
    )
}

/// A PREPARE refused because the shard does not allow prepared transactions says how to fix it.
fn with_prepare_hint(failure: Failure, shard: &str, result: &Result<Reply, PgError>) -> Failure {
    let disabled = matches!(result, Ok(Reply { error: Some((_, f)), .. }) if f.code == "55000");
    match failure {
        Failure::Shard(_) if disabled => Failure::Ours(
            PgError::error(SqlState::FeatureNotSupported, format!("shard \"{shard}\" does not allow prepared transactions, which a transaction that spans shards needs"))
                .with_detail("No shard committed: the transaction was rolled back on every shard.")
                .with_hint("Set max_prepared_transactions (e.g. to max_connections) on every shard and restart them."),
        ),
        other => other,
    }
}

fn first_words(sql: &str) -> Vec<String> {
    crate::router::lex::strip_comments_start(sql)
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .take(2)
        .map(str::to_ascii_lowercase)
        .collect()
}
