//! `COPY <sharded table> (cols) FROM STDIN`, split row by row (issue 3).
//!
//! Every shard that owns keys runs the client's own COPY text inside a transaction. The client
//! gets one CopyInResponse; its CopyData is cut into rows ([`rows`]), each row's key field is read
//! ([`field`]) and hashed by the router, and the row joins its shard's next CopyData message. On
//! CopyDone every shard gets CopyDone, and all commit only if every one succeeded; the client gets
//! one `COPY n` with the total. On CopyFail, a row shardgate cannot place, or any shard's error,
//! every shard rolls back and the client gets one error naming the shard (or the line).
//!
//! Only outside transaction blocks, like every multi-shard statement: a transaction lives on one
//! shard, and rows of a split COPY land on all of them. Memory stays bounded by one batch per shard
//! and the longest row: the data is streamed, never held whole.
//!
//! Commit is "COMMIT everywhere if all succeeded", as in `write.rs`: a two-phase commit
//! ([`crate::twophase`]) with `cross_shard_writes: allow` and a control database, so the rows are
//! on every shard or none even if one goes away mid-commit; else one COMMIT per shard, and a
//! shard lost between them is named in the error.

mod field;
mod rows;
mod shard;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use tokio::io::AsyncReadExt;

use super::exchange::{Reply, ShardConn};
use super::write::{annotate, list};
use super::{Failure, FanOut, Job};
use crate::net::ClientStream;
use crate::protocol::backend::{self as bmsg};
use crate::protocol::frontend as fmsg;
use crate::protocol::{peek_frame, PgError, SqlState};
use crate::router::{CopyIn, CopyKeyError, Router};
use crate::session::spanning::two_phase_commit;
use crate::session::{Session, SessionError};
use crate::twophase::Coordinator;
use field::{key_field, FieldError};
use rows::{Row, Splitter};
use shard::{CopyShard, Phase};

/// A client message during COPY IN.
enum CopyMsg {
    Data(Bytes),
    Done,
    Fail(String),
    /// Sync and Flush: ignored during COPY IN, as by PostgreSQL.
    Ignored,
    Unexpected(u8),
    /// The client closed the connection, or sent Terminate (left for the session to read).
    Gone,
}

/// Why the copy stops short of committing.
enum Abort {
    /// Shardgate's own error (a row it cannot place, the client's CopyFail, a protocol error).
    Ours(PgError),
    /// The shard at this position failed.
    Shard(usize),
}

impl<S: ClientStream> Session<S> {
    /// A simple-query COPY into a sharded table: the whole exchange, then CommandComplete (or the
    /// error) and ReadyForQuery.
    pub(in crate::session) async fn fan_copy_query(
        &mut self,
        sql: &str,
        fan: FanOut,
    ) -> Result<(), SessionError> {
        let result = self.run_copy(sql, &fan).await?;
        let status = self.status;
        self.push_synthetic(|out| {
            match result {
                Ok(tag) => bmsg::command_complete(out, &tag),
                Err(f) => f.encode(out),
            }
            bmsg::ready_for_query(out, status);
        });
        Ok(())
    }

    /// Whether the client's multi-shard portal is a split COPY.
    pub(in crate::session) fn is_copy_portal(&self, portal: &str) -> bool {
        self.fan_portal
            .as_ref()
            .is_some_and(|p| p.name == portal && matches!(p.fan.job, Job::CopyIn(_)))
    }

    /// Execute of a portal bound to a split COPY: CommandComplete, or the error and a skip to
    /// Sync (the Sync the client sent before its data was ignored, as PostgreSQL does).
    pub(in crate::session) async fn fan_copy_execute(&mut self) -> Result<(), SessionError> {
        let Some(portal) = self.fan_portal.take() else {
            return Ok(());
        };
        let sql = portal.request.sql().to_string();
        match self.run_copy(&sql, &portal.fan).await? {
            Ok(tag) => self.push_synthetic(|out| bmsg::command_complete(out, &tag)),
            Err(f) => {
                self.push_synthetic(|out| f.encode(out));
                self.skip_until_sync = true;
            }
        }
        Ok(())
    }

    /// Runs the COPY on the fan-out's shards: `COPY n`, or the client's error.
    async fn run_copy(
        &mut self,
        sql: &str,
        fan: &FanOut,
    ) -> Result<Result<String, Failure>, SessionError> {
        let (Job::CopyIn(copy), Some(router)) = (&fan.job, self.router.clone()) else {
            let e = PgError::error(SqlState::InternalError, "not a split COPY");
            return Ok(Err(e.into()));
        };
        let conns = match self.checkout_all(&fan.shards).await {
            Ok(c) => c,
            Err(e) => return Ok(Err(e.into())),
        };
        let mut shards: Vec<CopyShard> = conns.into_iter().map(CopyShard::new).collect();
        let wanted = self.settings.fanout();
        let started = join_all(shards.iter_mut().map(|s| s.start(sql, &wanted))).await;
        let abort = match started.iter().position(Option::is_none) {
            Some(i) => Some(Abort::Shard(i)),
            None => {
                let response = started.into_iter().flatten().next().expect("a shard");
                self.cout.extend_from_slice(&response);
                self.flush_client().await?;
                self.stream_rows(&mut shards, copy, &router, &fan.shards)
                    .await?
            }
        };
        let settled = settle(&mut shards, copy, abort, self.two_phase()).await;
        if settled.is_ok() {
            self.note_unknown_commits(shards.iter().map(|s| s.conn.name.as_str()));
        }
        self.publish_cancel(None);
        // The shards' notices (a trigger's, say) come before the COPY's answer, as from one server.
        let notices: Vec<Bytes> = shards
            .iter_mut()
            .flat_map(|s| std::mem::take(&mut s.reply.notices))
            .collect();
        self.push_synthetic(|out| notices.iter().for_each(|n| out.extend_from_slice(n)));
        Ok(settled)
    }

    /// Reads the client's data to its end, sending each row to its shard. Returns why the copy
    /// must be rolled back, if it must.
    async fn stream_rows(
        &mut self,
        shards: &mut [CopyShard],
        copy: &CopyIn,
        router: &Router,
        indexes: &[usize],
    ) -> Result<Option<Abort>, SessionError> {
        let mut splitter = Splitter::new(copy.format.dialect);
        let mut place = Placer {
            copy,
            router,
            indexes,
            header: copy.format.header,
        };
        let mut abort = None;
        loop {
            let msg = self.next_copy_message().await?;
            let data = match msg {
                CopyMsg::Data(frame) => frame,
                CopyMsg::Ignored => continue,
                CopyMsg::Done => break,
                CopyMsg::Fail(why) => {
                    let msg = format!("COPY from stdin failed: {why}");
                    return Ok(Some(Abort::Ours(PgError::error(
                        SqlState::QueryCanceled,
                        msg,
                    ))));
                }
                CopyMsg::Unexpected(tag) => {
                    let msg = format!("unexpected message type 0x{tag:02X} during COPY from stdin");
                    let e = PgError::error(SqlState::ProtocolViolation, msg);
                    return Ok(Some(Abort::Ours(e)));
                }
                CopyMsg::Gone => {
                    let e = PgError::error(SqlState::ConnectionFailure, "client gone during COPY");
                    return Ok(Some(Abort::Ours(e)));
                }
            };
            if abort.is_some() {
                continue; // read to the end and dropped, as PostgreSQL does after an error
            }
            let payload = &data[crate::protocol::HEADER_LEN..];
            let fed = splitter.feed(payload, &mut |row| place.row(row, shards));
            abort = fed
                .err()
                .map(|e| Abort::Ours(in_copy(e, copy)))
                .or_else(|| shard_error(shards));
            if abort.is_none() {
                flush_full(shards).await;
            }
        }
        if abort.is_none() {
            abort = splitter
                .finish(&mut |row| place.row(row, shards))
                .err()
                .map(|e| Abort::Ours(in_copy(e, copy)));
        }
        Ok(abort)
    }

    async fn next_copy_message(&mut self) -> Result<CopyMsg, SessionError> {
        loop {
            if let Some(h) = peek_frame(&self.cbuf, self.max_message)? {
                if h.tag == fmsg::TERMINATE {
                    return Ok(CopyMsg::Gone);
                }
                let frame = self.cbuf.split_to(h.total_len).freeze();
                return Ok(match h.tag {
                    fmsg::COPY_DATA => CopyMsg::Data(frame),
                    fmsg::COPY_DONE => CopyMsg::Done,
                    fmsg::COPY_FAIL => {
                        let body = &frame[crate::protocol::HEADER_LEN..];
                        let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                        CopyMsg::Fail(String::from_utf8_lossy(&body[..end]).into_owned())
                    }
                    fmsg::SYNC | fmsg::FLUSH => CopyMsg::Ignored,
                    tag => CopyMsg::Unexpected(tag),
                });
            }
            if self.client.read_buf(&mut self.cbuf).await? == 0 {
                return Ok(CopyMsg::Gone);
            }
        }
    }
}

/// The splitter's `line N` context as PostgreSQL spells it: `COPY users, line N`.
fn in_copy(mut e: PgError, copy: &CopyIn) -> PgError {
    if let Some(line) = e.context.as_deref().filter(|c| c.starts_with("line ")) {
        e.context = Some(format!("COPY {}, {line}", copy.table));
    }
    e
}

/// Checks shards for an error they raised mid-COPY: the first one stops the copy.
fn shard_error(shards: &mut [CopyShard]) -> Option<Abort> {
    for s in shards.iter_mut() {
        s.poll();
    }
    shards.iter().position(CopyShard::failed).map(Abort::Shard)
}

/// Sends the batches that are full.
async fn flush_full(shards: &mut [CopyShard]) {
    for s in shards.iter_mut() {
        if s.is_full() {
            s.flush().await;
        }
    }
}

/// Where each row goes.
struct Placer<'a> {
    copy: &'a CopyIn,
    router: &'a Router,
    /// The database's shard index of each position in `shards`.
    indexes: &'a [usize],
    /// The first row is a header still to be sent (to every shard: each skips one line).
    header: bool,
}

impl Placer<'_> {
    fn row(&mut self, row: Row<'_>, shards: &mut [CopyShard]) -> Result<(), PgError> {
        if std::mem::take(&mut self.header) {
            for s in shards.iter_mut() {
                s.push(row.bytes);
            }
            return Ok(());
        }
        let shard = self.shard_of(&row)?;
        let at = self
            .indexes
            .iter()
            .position(|&i| i == shard)
            .ok_or_else(|| {
                PgError::error(
                    SqlState::InternalError,
                    "a COPY row's shard is not taking part",
                )
            })?;
        shards[at].push(row.bytes);
        Ok(())
    }

    /// The shard of a row, or the error PostgreSQL operators expect, with the line it is on.
    fn shard_of(&self, row: &Row<'_>) -> Result<usize, PgError> {
        let c = self.copy;
        let line = format!("COPY {}, line {}", c.table, row.line);
        let field = key_field(row.body(), &c.format, c.key_field).map_err(|e| {
            let msg = match e {
                FieldError::Missing => format!("missing data for column \"{}\"", c.key_column),
                FieldError::Unterminated => "unterminated CSV quoted field".to_string(),
            };
            PgError::error(SqlState::BadCopyFileFormat, msg).with_context(line.clone())
        })?;
        let Some(field) = field else {
            return Err(PgError::error(
                SqlState::NotNullViolation,
                format!("null value in column \"{}\" of relation \"{}\" violates not-null constraint", c.key_column, c.table),
            )
            .with_detail("Every row of a sharded table needs its sharding key: shardgate places the row by it.")
            .with_hint("Give the key in every row, or load rows without a key into a table that is not sharded.")
            .with_context(line));
        };
        let text = match field {
            Cow::Borrowed(b) => std::str::from_utf8(b).map(Cow::Borrowed),
            Cow::Owned(b) => String::from_utf8(b)
                .map(Cow::Owned)
                .map_err(|e| e.utf8_error()),
        }
        .map_err(|_| {
            PgError::error(
                SqlState::InvalidTextRepresentation,
                format!("the sharding key \"{}\" is not valid UTF-8", c.key_column),
            )
            .with_context(line.clone())
        })?;
        self.router.copy_key_shard(&text).map_err(|e| {
            let (code, msg) = match e {
                CopyKeyError::Invalid(k @ crate::router::key::KeyError::OutOfRange { .. }) => {
                    (SqlState::NumericValueOutOfRange, k.to_string())
                }
                CopyKeyError::Invalid(k) => (SqlState::InvalidTextRepresentation, k.to_string()),
                CopyKeyError::NoOwner(key) => (
                    SqlState::InvalidParameterValue,
                    format!("no shard owns key {key} of \"{}\"", c.table),
                ),
            };
            let shown: String = text.chars().take(64).collect();
            PgError::error(code, msg)
                .with_detail("No rows were copied.")
                .with_context(format!("{line}, column {}: \"{shown}\"", c.key_column))
        })
    }
}

/// Ends the COPY on every shard: CopyDone and COMMIT (two-phase with `two_phase`) when nothing
/// went wrong, else CopyFail and ROLLBACK. The client's answer: `COPY n`, or one error.
async fn settle(
    shards: &mut [CopyShard],
    copy: &CopyIn,
    mut abort: Option<Abort>,
    two_phase: Option<Arc<Coordinator>>,
) -> Result<String, Failure> {
    if abort.is_none() {
        join_all(shards.iter_mut().map(|s| s.end(None))).await;
        abort = shards.iter().position(CopyShard::failed).map(Abort::Shard);
    }
    let why = "shardgate rolls the COPY back on every shard";
    join_all(shards.iter_mut().map(|s| s.end(Some(why)))).await;
    if let (None, Some(coordinator)) = (&abort, two_phase) {
        let total: u64 = shards.iter().map(CopyShard::count).sum();
        let mut conns: Vec<&mut ShardConn> = shards.iter_mut().map(|s| &mut s.conn).collect();
        let committed = two_phase_commit(&coordinator, &mut conns).await;
        // Prepared (then committed or rolled back), rolled back, or lost and marked broken.
        shards.iter_mut().for_each(CopyShard::ended);
        return committed.map(|()| format!("COPY {total}"));
    }
    let commit = abort.is_none();
    let committed = join_all(shards.iter_mut().map(|s| s.finish(commit))).await;
    let names: Vec<String> = shards.iter().map(|s| s.conn.name.clone()).collect();
    match abort {
        None if committed.iter().all(|&c| c) => {
            let total: u64 = shards.iter().map(CopyShard::count).sum();
            Ok(format!("COPY {total}"))
        }
        None => {
            let done: Vec<String> = names
                .iter()
                .zip(&committed)
                .filter(|(_, &c)| c)
                .map(|(n, _)| n.clone())
                .collect();
            let missing: Vec<String> = names
                .iter()
                .zip(&committed)
                .filter(|(_, &c)| !c)
                .map(|(n, _)| n.clone())
                .collect();
            Err(Failure::Ours(
                PgError::error(
                    SqlState::TransactionResolutionUnknown,
                    format!(
                        "the COPY into \"{}\" committed on shards {} but not on {}",
                        copy.table,
                        list(&done),
                        list(&missing)
                    ),
                )
                .with_hint(
                    "Check those shards: the rows of the shards that did not commit are missing.",
                ),
            ))
        }
        Some(Abort::Ours(e)) => {
            let detail = format!(
                "No shard applied the COPY: it was rolled back on {}.",
                list(&names)
            );
            let detail = match &e.detail {
                Some(d) => format!("{d} {detail}"),
                None => detail,
            };
            Err(Failure::Ours(e.with_detail(detail)))
        }
        Some(Abort::Shard(i)) => Err(shard_failure(&shards[i], &names)),
    }
}

/// A shard's error for the client: named after the shard, with what happened everywhere else.
fn shard_failure(shard: &CopyShard, names: &[String]) -> Failure {
    let detail = format!(
        "No shard applied the COPY: it was rolled back on {}. A line number from the shard counts only the rows sent to it.",
        list(names)
    );
    let result = match &shard.phase {
        Phase::Lost(e) => Err(e.clone()),
        _ => Ok(Reply {
            error: shard.reply.error.clone(),
            ..Reply::default()
        }),
    };
    annotate(&shard.conn.name, &result, &detail)
}
