//! Statements every shard must run (DDL, writes to reference tables, cross-shard writes when
//! allowed): inside a transaction on each shard, committed only when every shard succeeded, so a
//! failure leaves no shard changed. With `cross_shard_writes: allow` and a control database the
//! commit is a two-phase commit ([`crate::twophase`]), so it is all-or-nothing even when a shard
//! goes away between the COMMITs. Statements Postgres cannot run in a transaction block
//! (`CREATE INDEX CONCURRENTLY`, …) run on each shard as they are, and a failure says exactly
//! which shards applied it.

use crate::net::ClientStream;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::join_all;

use super::exchange::{Reply, ShardConn};
use super::{Failure, Outcome};
use crate::protocol::backend as bmsg;
use crate::protocol::frontend::Query;
use crate::protocol::{PgError, SqlState};
use crate::router::Broadcast;
use crate::session::spanning::two_phase_commit;
use crate::session::Session;

impl<S: ClientStream> Session<S> {
    pub(super) async fn fan_write(
        &mut self,
        conns: &mut [ShardConn],
        kind: Broadcast,
        sql: &str,
        bodies: &[BytesMut],
    ) -> Result<Outcome, Failure> {
        let tx = !outside_transactions(sql);
        let results = self.exchange_each(conns, bodies, tx).await;
        let names: Vec<String> = conns.iter().map(|c| c.name.clone()).collect();
        let failed = results
            .iter()
            .position(|r| r.as_ref().map_or(true, |r| r.error.is_some()));
        if !tx {
            return match failed {
                None => Ok(outcome(kind, results)),
                Some(i) => Err(applied_on(&names, &results, i)),
            };
        }
        if let (None, Some(coordinator)) = (failed, self.two_phase()) {
            // Committed everywhere or nowhere, even if a shard goes away mid-commit.
            two_phase_commit(&coordinator, &mut conns.iter_mut().collect::<Vec<_>>()).await?;
            return Ok(outcome(kind, results));
        }
        let end = if failed.is_none() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        let ends = join_all(
            conns
                .iter_mut()
                .zip(&results)
                .filter(|(_, r)| r.is_ok())
                .map(|(c, _)| {
                    let mut out = BytesMut::new();
                    Query { sql: end }.encode(&mut out);
                    async move { (c.name.clone(), c.exchange(&out, 1, 0, false).await) }
                }),
        )
        .await;
        if let Some(i) = failed {
            let detail = format!(
                "No shard applied the statement: it was rolled back on {}.",
                list(&names)
            );
            return Err(annotate(&names[i], &results[i], &detail));
        }
        let committed: Vec<String> = ends
            .iter()
            .filter(|(_, r)| matches!(r, Ok(r) if r.error.is_none() && r.tags.last().map(String::as_str) == Some("COMMIT")))
            .map(|(n, _)| n.clone())
            .collect();
        if committed.len() < names.len() {
            let missing: Vec<String> = names
                .iter()
                .filter(|n| !committed.contains(n))
                .cloned()
                .collect();
            return Err(Failure::Ours(PgError::error(
                SqlState::TransactionResolutionUnknown,
                format!("the statement committed on shards {} but not on {}", list(&committed), list(&missing)),
            )
            .with_hint("Check those shards and apply the statement there by hand, with a /* shardgate: shard=NAME */ hint.")));
        }
        Ok(outcome(kind, results))
    }

    /// After DDL every shard applied, the sharded tables' columns are read again (in the
    /// background: a table's columns matter only to INSERTs without a column list).
    pub(super) fn after_broadcast(&self, kind: Broadcast, applied: bool) {
        if kind != Broadcast::Ddl || !applied {
            return;
        }
        let store = self.shared.store.clone();
        let database = self.info.database.clone();
        tokio::spawn(async move { store.read_columns(Some(&database)).await });
    }

    /// Sends each shard its body (with its settings query, and BEGIN when `begin`); every
    /// shard's reply, or why it has none.
    pub(super) async fn exchange_each(
        &self,
        conns: &mut [ShardConn],
        bodies: &[BytesMut],
        begin: bool,
    ) -> Vec<Result<Reply, PgError>> {
        self.exchange_probed(conns, bodies, begin, None).await
    }

    /// As `exchange_each`, with `probe` (a query whose first value is wanted) sent first.
    pub(super) async fn exchange_probed(
        &self,
        conns: &mut [ShardConn],
        bodies: &[BytesMut],
        begin: bool,
        probe: Option<&str>,
    ) -> Vec<Result<Reply, PgError>> {
        let wanted = &self.settings.fanout();
        join_all(conns.iter_mut().zip(bodies).map(|(c, body)| {
            let ready_for_body = super::request_readies(body);
            let mut out = BytesMut::new();
            let skip = c.sync_settings(wanted, &mut out);
            if let Some(sql) = probe {
                Query { sql }.encode(&mut out);
            }
            if begin {
                Query { sql: "BEGIN" }.encode(&mut out);
            }
            out.extend_from_slice(body);
            let ready = skip + usize::from(probe.is_some()) + usize::from(begin) + ready_for_body;
            async move { c.exchange(&out, ready, skip, probe.is_some()).await }
        }))
        .await
    }
}

/// What the client gets when every shard applied the statement: for schema and reference
/// tables, one shard's answer (all are alike); for a cross-shard write, every shard's rows and
/// the sum of their counts.
fn outcome(kind: Broadcast, results: Vec<Result<Reply, PgError>>) -> Outcome {
    let mut replies = results.into_iter().flatten();
    let mut first = replies.next().unwrap_or_default();
    let mut tag = first.tags.pop().unwrap_or_default();
    if kind == Broadcast::CrossShardWrite {
        let mut count = count_of(&tag);
        for r in replies {
            count += r.tags.last().map_or(0, |t| count_of(t));
            first.rows.extend(r.rows);
        }
        tag = with_count(&tag, count);
    }
    Outcome {
        fields: first.fields,
        rows: first
            .rows
            .into_iter()
            .map(|body| {
                bmsg::decode_data_row(&body)
                    .map(|v| {
                        v.into_iter()
                            .map(|v| v.map(|v| body.slice_ref(v)))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect(),
        tag,
        notices: first.notices,
    }
}

fn count_of(tag: &str) -> u64 {
    tag.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn with_count(tag: &str, count: u64) -> String {
    match tag.rsplit_once(' ') {
        Some((verb, _)) => format!("{verb} {count}"),
        None => tag.to_string(),
    }
}

pub(super) fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The failure of a statement run outside transactions: which shards applied it.
fn applied_on(names: &[String], results: &[Result<Reply, PgError>], failed: usize) -> Failure {
    let applied: Vec<String> = names
        .iter()
        .zip(results)
        .filter(|(_, r)| matches!(r, Ok(r) if r.error.is_none()))
        .map(|(n, _)| n.clone())
        .collect();
    let detail = if applied.is_empty() {
        "No shard applied the statement.".to_string()
    } else {
        format!(
            "The statement cannot run in a transaction, so it was not rolled back: it was applied on {} only.",
            list(&applied)
        )
    };
    annotate(&names[failed], &results[failed], &detail)
}

/// A shard's error, its message prefixed with the shard's name and `detail` added.
pub(in crate::session) fn annotate(
    shard: &str,
    result: &Result<Reply, PgError>,
    detail: &str,
) -> Failure {
    let (frame, fields) = match result {
        Ok(Reply {
            error: Some((frame, fields)),
            ..
        }) => (frame, fields),
        Ok(_) => {
            return Failure::Ours(
                PgError::error(SqlState::InternalError, format!("shard \"{shard}\" failed"))
                    .with_detail(detail),
            )
        }
        Err(e) => return Failure::Ours(e.clone().with_detail(detail)),
    };
    let mut body = BytesMut::new();
    let mut r = &frame[crate::protocol::HEADER_LEN..];
    while let Some((&kind, rest)) = r.split_first() {
        if kind == 0 {
            break;
        }
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let value = &rest[..end];
        r = rest.get(end + 1..).unwrap_or_default();
        match kind {
            b'M' => put_field(
                &mut body,
                b'M',
                format!("shard \"{shard}\": {}", fields.message).as_bytes(),
            ),
            b'D' => {}
            _ => put_field(&mut body, kind, value),
        }
    }
    let original = fields
        .detail
        .as_deref()
        .map(|d| format!("{d}\n"))
        .unwrap_or_default();
    put_field(&mut body, b'D', format!("{original}{detail}").as_bytes());
    body.put_u8(0);
    let mut out = BytesMut::new();
    crate::protocol::write_message(&mut out, bmsg::ERROR_RESPONSE, |o| {
        o.extend_from_slice(&body)
    });
    Failure::Shard(Bytes::from(out))
}

fn put_field(out: &mut BytesMut, kind: u8, value: &[u8]) {
    out.put_u8(kind);
    out.put_slice(value);
    out.put_u8(0);
}

/// Statements Postgres refuses inside a transaction block.
fn outside_transactions(sql: &str) -> bool {
    let words: Vec<String> = crate::router::lex::bare_words(sql)
        .into_iter()
        .take(6)
        .map(|(_, w)| w.to_ascii_lowercase())
        .collect();
    let w = |i: usize| words.get(i).map_or("", String::as_str);
    words.iter().any(|w| w == "concurrently")
        || matches!(
            (w(0), w(1)),
            ("create" | "drop", "database" | "tablespace") | ("alter", "system")
        )
}
