//! One statement's round trip with one shard of a multi-shard statement: a backend checked out
//! for it alone, the client's settings applied, its replies collected whole.

use bytes::{Bytes, BytesMut};

use crate::pool::PooledConnection;
use crate::protocol::backend::{self as bmsg, decode_row_description, ErrorFields, Field};
use crate::protocol::frontend::Query;
use crate::protocol::{peek_frame, PgError, SqlState};
use crate::session::settings::Wanted;

/// Largest message a backend may send us: Postgres' own limit.
const MAX_BACKEND_MESSAGE: usize = 1 << 30;

/// Rows of one shard buffered for one multi-shard statement, at most: merging needs them all in
/// memory, and one careless query must not take the proxy down.
const MAX_BUFFERED_ROWS_BYTES: usize = 256 << 20;

/// A backend of one shard, held for one multi-shard statement.
pub(in crate::session) struct ShardConn {
    pub name: String,
    pub conn: PooledConnection,
}

/// What a shard answered to the messages of one exchange.
#[derive(Default)]
pub(in crate::session) struct Reply {
    pub fields: Option<Vec<Field>>,
    pub rows: Vec<Bytes>,
    pub tags: Vec<String>,
    pub notices: Vec<Bytes>,
    /// The first ErrorResponse, raw and decoded.
    pub error: Option<(Bytes, ErrorFields)>,
    /// The first value the probe query returned (see [`ShardConn::exchange`]).
    pub probe: Option<String>,
}

impl ShardConn {
    /// Queues the settings query that brings this backend to the client's settings; returns
    /// how many ReadyForQuery it adds.
    pub fn sync_settings(&mut self, wanted: &Wanted, out: &mut BytesMut) -> usize {
        let Some(sql) = self.conn.session.settings.sync(wanted) else {
            return 0;
        };
        Query { sql: &sql }.encode(out);
        1
    }

    /// Sends `out` and reads replies until `ready` ReadyForQuery messages have come. The replies
    /// of the first `skip` of them (the settings query) are dropped unless they are errors; with
    /// `probe`, the next query's first value is kept apart (a `SHOW` sent ahead of the statement).
    pub async fn exchange(
        &mut self,
        out: &[u8],
        ready: usize,
        skip: usize,
        probe: bool,
    ) -> Result<Reply, PgError> {
        if let Err(e) = self.conn.write_all(out).await {
            return Err(self.lost(&e.to_string()));
        }
        let mut reply = Reply::default();
        let mut seen = 0;
        let mut buffered = 0usize;
        while seen < ready {
            let Some(h) = peek_frame(&self.conn.buf, MAX_BACKEND_MESSAGE)
                .map_err(|e| self.lost(&e.to_string()))?
            else {
                match self.conn.read_more().await {
                    Ok(n) if n > 0 => continue,
                    Ok(_) => return Err(self.lost("the server closed the connection")),
                    Err(e) => return Err(self.lost(&e.to_string())),
                }
            };
            let frame = self.conn.buf.split_to(h.total_len).freeze();
            let body = frame.slice(crate::protocol::HEADER_LEN..);
            let skipping = seen < skip;
            let probing = probe && seen == skip;
            if probing && !matches!(h.tag, bmsg::READY_FOR_QUERY | bmsg::ERROR_RESPONSE) {
                if h.tag == bmsg::DATA_ROW && reply.probe.is_none() {
                    reply.probe = first_value(&body);
                }
                continue;
            }
            match h.tag {
                bmsg::READY_FOR_QUERY => seen += 1,
                bmsg::ERROR_RESPONSE if reply.error.is_none() => {
                    let fields = ErrorFields::parse(&body).unwrap_or_default();
                    reply.error = Some((frame, fields));
                }
                _ if skipping => {}
                bmsg::ROW_DESCRIPTION => {
                    reply.fields =
                        Some(decode_row_description(&body).map_err(|e| self.lost(&e.to_string()))?)
                }
                bmsg::DATA_ROW => {
                    buffered += body.len();
                    if buffered > MAX_BUFFERED_ROWS_BYTES {
                        self.conn.mark_broken();
                        return Err(PgError::error(
                            SqlState::ProgramLimitExceeded,
                            format!("shard \"{}\" returned more than {} MiB of rows for a statement that runs on several shards; shardgate buffers them to merge", self.name, MAX_BUFFERED_ROWS_BYTES >> 20),
                        )
                        .with_hint("Add a LIMIT, filter on the sharding key, or read each shard with a /* shardgate: shard=NAME */ hint."));
                    }
                    reply.rows.push(body)
                }
                bmsg::COMMAND_COMPLETE => reply
                    .tags
                    .push(bmsg::command_complete_tag(&body).unwrap_or("").to_string()),
                bmsg::NOTICE_RESPONSE => reply.notices.push(frame),
                bmsg::COPY_IN_RESPONSE | bmsg::COPY_OUT_RESPONSE | bmsg::COPY_BOTH_RESPONSE => {
                    self.conn.mark_broken();
                    return Err(PgError::error(
                        SqlState::FeatureNotSupported,
                        "COPY in a statement that runs on several shards is not supported",
                    )
                    .with_hint("COPY each shard's rows with a /* shardgate: shard=NAME */ hint."));
                }
                _ => {} // ParseComplete, BindComplete, NoData, ParameterStatus, …
            }
        }
        Ok(reply)
    }

    fn lost(&mut self, reason: &str) -> PgError {
        self.conn.mark_broken();
        tracing::warn!(shard = %self.name, backend = self.conn.name(), %reason, "backend connection lost during a multi-shard statement");
        PgError::error(
            SqlState::ConnectionFailure,
            format!("connection to shard \"{}\" was lost: {reason}", self.name),
        )
        .with_hint("Retry the statement.")
    }
}

fn first_value(body: &[u8]) -> Option<String> {
    let values = bmsg::decode_data_row(body).ok()?;
    let first = values.first().copied().flatten()?;
    Some(String::from_utf8_lossy(first).into_owned())
}
