//! Statements that run on several shards, outside transactions: reads whose rows are merged into
//! one result (`crate::merge`), and statements that must run everywhere — DDL, writes to reference
//! tables, cross-shard writes when allowed — inside a transaction on every shard that commits only
//! when every shard succeeded.
//!
//! Each shard gets a backend of its own for the statement, checked out in shard order (so two
//! multi-shard statements never wait for each other's backends in a cycle) and returned when the
//! statement is done.

mod copy;
mod exchange;
mod insert;
mod read;
mod write;

use std::sync::Arc;

use crate::net::ClientStream;
use bytes::{Bytes, BytesMut};

pub(super) use exchange::{Reply, ShardConn};
pub(super) use write::annotate;

use super::Session;
use crate::merge::rows::Row;
use crate::protocol::backend::{self as bmsg, Field};
use crate::protocol::frontend::{self as fmsg, Bind, BindParams, Execute, Parse, Query};
use crate::protocol::{PgError, SqlState};
use crate::router::merge::{MergeSpec, Output};
use crate::router::{Broadcast, CopyIn, InsertSplit, Plan, RouteError, Router};

/// A statement that needs several shards, and what to do with their answers.
#[derive(Debug, Clone)]
pub(super) struct FanOut {
    pub shards: Vec<usize>,
    pub job: Job,
}

#[derive(Debug, Clone)]
pub(super) enum Job {
    /// A read merged as the spec says (always `Ok`: unmergeable reads are refused when routed).
    Read(Arc<Result<MergeSpec, RouteError>>),
    Write(Broadcast),
    /// `COPY <sharded table> (…) FROM STDIN`, split row by row (`copy.rs`).
    CopyIn(Arc<CopyIn>),
    /// A multi-row INSERT split per shard; `rows[i]` is the shard of row `i`.
    Insert {
        split: Arc<Result<InsertSplit, RouteError>>,
        rows: Vec<usize>,
    },
}

impl Job {
    /// What a statement routed to several shards does there, if shardgate can run it.
    pub fn of(
        router: &Router,
        plan: &Plan,
        params: Option<&BindParams>,
    ) -> Result<Option<Job>, RouteError> {
        let read = |merge: &crate::router::Merge| match merge {
            Some(m) if m.is_ok() => Some(Job::Read(m.clone())),
            _ => None,
        };
        Ok(match plan {
            Plan::Scatter(s) => read(&s.merge),
            Plan::Keyed(k) if !k.write => read(&k.merge),
            Plan::Keyed(k) => match &k.split {
                Some(split) if split.is_ok() => Some(Job::Insert {
                    split: split.clone(),
                    rows: router.row_shards(k, params)?,
                }),
                _ => None,
            },
            Plan::Broadcast(b) => Some(Job::Write(*b)),
            Plan::CopyIn(c) => Some(Job::CopyIn(c.clone())),
            _ => None,
        })
    }
}

/// What each shard is sent.
pub(super) enum Request {
    Simple(String),
    /// One extended-protocol statement: its text, raw parameter types, the Bind's raw parameters
    /// and its result-column format codes.
    Extended {
        sql: String,
        param_types: Bytes,
        params: Bytes,
        results: Vec<i16>,
    },
}

impl Request {
    fn sql(&self) -> &str {
        match self {
            Request::Simple(sql) | Request::Extended { sql, .. } => sql,
        }
    }
}

/// A portal bound to a multi-shard statement: run at its first Describe or Execute.
pub(super) struct FanPortal {
    pub name: String,
    pub fan: FanOut,
    pub request: Request,
    pub outcome: Option<Result<Outcome, Failure>>,
    /// Rows already sent by Executes with a row limit.
    pub sent: usize,
}

/// What the client gets for a multi-shard statement.
pub(super) struct Outcome {
    fields: Option<Vec<Field>>,
    rows: Vec<Row>,
    tag: String,
    notices: Vec<Bytes>,
}

/// A multi-shard statement's error: a shard's own ErrorResponse, or ours.
#[derive(Clone)]
pub(super) enum Failure {
    Shard(Bytes),
    Ours(PgError),
}

impl From<PgError> for Failure {
    fn from(e: PgError) -> Self {
        Failure::Ours(e)
    }
}

impl Failure {
    pub(super) fn encode(&self, out: &mut BytesMut) {
        match self {
            Failure::Shard(frame) => out.extend_from_slice(frame),
            Failure::Ours(e) => e.encode(out),
        }
    }
}

impl<S: ClientStream> Session<S> {
    /// Runs a simple query on several shards and answers it.
    pub(super) async fn fan_query(&mut self, sql: &str, fan: FanOut) {
        let request = Request::Simple(sql.to_string());
        let result = self.run_fan(&fan, &request, None).await;
        let status = self.status;
        self.push_synthetic(|out| {
            match result {
                Ok(o) => {
                    o.head(out);
                    o.rows_to(out, 0, o.rows.len());
                    bmsg::command_complete(out, &o.tag);
                }
                Err(f) => f.encode(out),
            }
            bmsg::ready_for_query(out, status);
        });
    }

    /// Binds a portal to a multi-shard statement (the client's owed Parses are answered here).
    pub(super) fn fan_bind(&mut self, b: &Bind, fan: FanOut) {
        let Some((sql, param_types)) = self.statement_parts(b.statement) else {
            return self.extended_error(PgError::error(
                SqlState::UndefinedPreparedStatement,
                format!("prepared statement \"{}\" does not exist", b.statement),
            ));
        };
        let (params, results) = match fmsg::split_bind_results(b.rest) {
            Ok((p, r)) => (Bytes::copy_from_slice(p), r),
            Err(e) => {
                return self
                    .extended_error(PgError::error(SqlState::ProtocolViolation, e.to_string()))
            }
        };
        self.answer_owed_locally();
        self.push_synthetic(|out| bmsg::empty(out, bmsg::BIND_COMPLETE));
        self.fan_portal = Some(FanPortal {
            name: b.portal.to_string(),
            fan,
            request: Request::Extended {
                sql,
                param_types,
                params,
                results,
            },
            outcome: None,
            sent: 0,
        });
    }

    pub(super) fn is_fan_portal(&self, portal: &str) -> bool {
        self.fan_portal.as_ref().is_some_and(|p| p.name == portal)
    }

    /// Describe of a multi-shard portal: runs it, answers its RowDescription (or NoData).
    pub(super) async fn fan_describe(&mut self) {
        if self
            .fan_portal
            .as_ref()
            .is_some_and(|p| matches!(p.fan.job, Job::CopyIn(_)))
        {
            // A COPY returns no rows; it runs at Execute, where it needs the client's data.
            return self.push_synthetic(|out| bmsg::empty(out, bmsg::NO_DATA));
        }
        match self.fan_run().await {
            Ok(o) => {
                let mut out = BytesMut::new();
                match &o.fields {
                    Some(_) => o.head(&mut out),
                    None => bmsg::empty(&mut out, bmsg::NO_DATA),
                }
                self.push_synthetic(|b| b.extend_from_slice(&out));
            }
            Err(f) => self.fan_failed(f),
        }
    }

    /// Execute of a multi-shard portal: its rows (up to the limit) and how it ended.
    pub(super) async fn fan_execute(&mut self, e: Execute<'_>) {
        let outcome = match self.fan_run().await {
            Ok(o) => o,
            Err(f) => return self.fan_failed(f),
        };
        let portal = self.fan_portal.as_mut().expect("a multi-shard portal");
        let total = outcome.rows.len();
        let end = match usize::try_from(e.max_rows) {
            Ok(n) if n > 0 => (portal.sent + n).min(total),
            _ => total,
        };
        let mut out = BytesMut::new();
        if portal.sent == 0 {
            for n in &outcome.notices {
                out.extend_from_slice(n);
            }
        }
        outcome.rows_to(&mut out, portal.sent, end);
        if end < total {
            bmsg::empty(&mut out, bmsg::PORTAL_SUSPENDED);
        } else {
            bmsg::command_complete(&mut out, &outcome.tag);
        }
        portal.sent = end;
        portal.outcome = Some(Ok(outcome));
        self.push_synthetic(|b| b.extend_from_slice(&out));
    }

    fn fan_failed(&mut self, f: Failure) {
        let mut out = BytesMut::new();
        f.encode(&mut out);
        self.push_synthetic(|b| b.extend_from_slice(&out));
        self.skip_until_sync = true;
        self.fan_portal = None;
    }

    /// The portal's outcome, running it first if this is its first Describe/Execute.
    async fn fan_run(&mut self) -> Result<Outcome, Failure> {
        let mut portal = self.fan_portal.take().expect("a multi-shard portal");
        let outcome = match portal.outcome.take() {
            Some(done) => done,
            None => {
                let params = match &portal.request {
                    Request::Extended { params, .. } => Some(params.clone()),
                    Request::Simple(_) => None,
                };
                let decoded = params.as_deref().and_then(|p| BindParams::decode(p).ok());
                self.run_fan(&portal.fan, &portal.request, decoded.as_ref())
                    .await
            }
        };
        let shared = match &outcome {
            Ok(o) => Ok(o.clone_shallow()),
            Err(f) => Err(f.clone()),
        };
        portal.outcome = Some(outcome);
        self.fan_portal = Some(portal);
        shared
    }

    /// The text and raw parameter types of a client statement.
    fn statement_parts(&self, name: &str) -> Option<(String, Bytes)> {
        if name.is_empty() {
            let frame = self.unnamed.as_ref()?;
            let p = Parse::decode(&frame[crate::protocol::HEADER_LEN..]).ok()?;
            return Some((p.sql.to_string(), Bytes::copy_from_slice(p.param_types)));
        }
        let stmt = self.statements.get(name)?;
        Some((stmt.sql.clone(), Bytes::copy_from_slice(&stmt.param_types)))
    }

    async fn run_fan(
        &mut self,
        fan: &FanOut,
        request: &Request,
        params: Option<&BindParams<'_>>,
    ) -> Result<Outcome, Failure> {
        let _timing = self.note_fan(&fan.shards, request.sql());
        let mut conns = self.checkout_all(&fan.shards).await?;
        let result = match &fan.job {
            Job::Read(merge) => match &**merge {
                Ok(spec) => self.fan_read(&mut conns, spec, request, params).await,
                Err(e) => Err(super::route::route_error(e).into()),
            },
            Job::Write(kind) => {
                let mut body = BytesMut::new();
                encode_request(request, None, None, &mut body);
                let bodies = vec![body; conns.len()];
                let done = self.fan_write(&mut conns, *kind, request.sql(), &bodies);
                let done = done.await;
                self.after_broadcast(*kind, done.is_ok());
                if done.is_ok() {
                    self.note_unknown_commits(conns.iter().map(|c| c.name.as_str()));
                }
                done
            }
            Job::Insert { split, rows } => match &**split {
                Ok(split) => {
                    let bodies = insert::bodies(split, rows, &fan.shards, request);
                    let kind = Broadcast::CrossShardWrite;
                    let done = self
                        .fan_write(&mut conns, kind, request.sql(), &bodies)
                        .await;
                    if done.is_ok() {
                        self.note_unknown_commits(conns.iter().map(|c| c.name.as_str()));
                    }
                    done
                }
                Err(e) => Err(super::route::route_error(e).into()),
            },
            // Run by `fan_copy_query` / `fan_copy_execute`, which talk with the client.
            Job::CopyIn(_) => {
                Err(PgError::error(SqlState::InternalError, "COPY run as a statement").into())
            }
        };
        self.publish_cancel(None);
        drop(conns);
        result
    }

    /// One backend per shard, in shard order.
    async fn checkout_all(&self, shards: &[usize]) -> Result<Vec<ShardConn>, PgError> {
        let snapshot = self.shared.store.local(self.worker);
        // A copy of the hint: the hint is the transaction checkout's, which has `&mut self`.
        let db = super::checkout::database(&snapshot, &self.info.database, &mut { self.db_hint })?;
        let mut conns = Vec::with_capacity(shards.len());
        for &i in shards {
            let shard = &db.shards[i];
            let conn = self
                .primary_checkout(i, &db.name, shard)
                .await
                .map_err(super::checkout_error)?;
            conns.push(ShardConn {
                name: shard.name.to_string(),
                conn,
            });
        }
        // A cancel reaches every shard; whoever checked out clears this when done.
        self.publish_cancels(conns.iter().map(|c| c.conn.cancel_target()));
        Ok(conns)
    }
}

impl Outcome {
    /// Shares the rows' bytes: a portal's outcome is kept for its later Executes.
    fn clone_shallow(&self) -> Outcome {
        Outcome {
            fields: self.fields.clone(),
            rows: self.rows.clone(),
            tag: self.tag.clone(),
            notices: self.notices.clone(),
        }
    }

    /// RowDescription, if the statement returns rows.
    fn head(&self, out: &mut BytesMut) {
        if let Some(fields) = &self.fields {
            bmsg::row_description(out, fields);
        }
    }

    fn rows_to(&self, out: &mut BytesMut, from: usize, to: usize) {
        for row in &self.rows[from..to] {
            bmsg::data_row(out, row.iter().map(|v| v.as_deref()));
        }
    }
}

/// How many ReadyForQuery messages a request's messages end with.
fn request_readies(body: &[u8]) -> usize {
    let mut n = 0;
    let mut at = 0;
    while let Ok(Some(h)) = crate::protocol::peek_frame(&body[at..], usize::MAX) {
        if matches!(h.tag, fmsg::QUERY | fmsg::SYNC) {
            n += 1;
        }
        at += h.total_len;
    }
    n
}

/// The messages of one statement for a shard: `sql` replaces the client's text when the merge
/// rewrote it. Result formats follow the shard's columns (an avg is two, hidden columns are text).
fn encode_request(
    request: &Request,
    sql: Option<&str>,
    spec: Option<&MergeSpec>,
    out: &mut BytesMut,
) {
    match request {
        Request::Simple(text) => Query {
            sql: sql.unwrap_or(text),
        }
        .encode(out),
        Request::Extended {
            sql: text,
            param_types,
            params,
            results,
        } => {
            Parse {
                name: "",
                sql: sql.unwrap_or(text),
                param_types,
            }
            .encode(out);
            let mut rest = BytesMut::from(&params[..]);
            let formats = shard_formats(results, spec);
            rest.extend_from_slice(&(formats.len() as i16).to_be_bytes());
            for f in formats {
                rest.extend_from_slice(&f.to_be_bytes());
            }
            Bind {
                portal: "",
                statement: "",
                rest: &rest,
            }
            .encode(out);
            fmsg::NamedTarget {
                target: fmsg::Target::Portal,
                name: "",
            }
            .encode(fmsg::DESCRIBE, out);
            Execute {
                portal: "",
                max_rows: 0,
            }
            .encode(out);
            fmsg::encode_empty(fmsg::SYNC, out);
        }
    }
}

/// The client's per-column result formats, stretched over the shard's columns.
fn shard_formats(results: &[i16], spec: Option<&MergeSpec>) -> Vec<i16> {
    let Some(spec) = spec.filter(|_| results.len() > 1) else {
        return results.to_vec();
    };
    let mut out = Vec::with_capacity(results.len() + spec.hidden + 1);
    match &spec.outputs {
        Some(outputs) => {
            for (o, &f) in outputs.iter().zip(results) {
                out.push(f);
                if matches!(o, Output::Avg { .. }) {
                    out.push(f);
                }
            }
        }
        None => out.extend_from_slice(results),
    }
    out.extend(std::iter::repeat_n(0, spec.hidden));
    out
}
