//! One shard's side of a split COPY: `BEGIN` and the client's COPY statement, the rows it owns
//! batched into CopyData messages, then CopyDone (or CopyFail) and COMMIT (or ROLLBACK).
//!
//! The shard's connection is checked out for the COPY alone. Unless the COPY got as far as a
//! COMMIT or ROLLBACK answered by the server, it is marked broken when dropped: a backend left in
//! COPY mode or in an open transaction must never go back to the pool.

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;

use super::super::exchange::{Reply, ShardConn};
use crate::protocol::backend::{self as bmsg, ErrorFields};
use crate::protocol::frontend::{self as fmsg, Query};
use crate::protocol::{peek_frame, PgError, SqlState};
use crate::session::settings::Wanted;

/// Rows for one shard go out in CopyData messages of about this size.
pub(super) const BATCH: usize = 64 * 1024;

/// Largest message a backend may send us: Postgres' own limit.
const MAX_BACKEND_MESSAGE: usize = 1 << 30;

/// Notices kept per shard (a trigger may raise one per row).
const MAX_NOTICES: usize = 100;

/// Where the shard's connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    /// In COPY FROM STDIN, inside our BEGIN.
    Copying,
    /// The COPY is over (its ReadyForQuery came); the transaction is open, or failed.
    InTransaction,
    /// COMMIT or ROLLBACK answered: the backend is idle and may go back to the pool.
    Idle,
    /// The connection broke.
    Lost(PgError),
}

pub(super) struct CopyShard {
    pub conn: ShardConn,
    pub phase: Phase,
    /// What the shard answered to the COPY: its error, its `COPY n`, its notices.
    pub reply: Reply,
    /// The CopyData message being filled: a header to back-patch, then rows.
    batch: BytesMut,
}

impl CopyShard {
    pub fn new(conn: ShardConn) -> CopyShard {
        CopyShard {
            conn,
            phase: Phase::Copying,
            reply: Reply::default(),
            batch: BytesMut::new(),
        }
    }

    /// Sends the client's settings, `BEGIN` and the COPY; returns the shard's CopyInResponse, or
    /// `None` when the COPY did not start (its error is in `reply`).
    pub async fn start(&mut self, sql: &str, wanted: &Wanted) -> Option<Bytes> {
        let mut out = BytesMut::new();
        let skip = self.conn.sync_settings(wanted, &mut out);
        Query { sql: "BEGIN" }.encode(&mut out);
        Query { sql }.encode(&mut out);
        if self.write(&out).await.is_err() {
            return None;
        }
        let mut ready = 0;
        loop {
            let (tag, frame) = self.next_frame().await.ok()?;
            match tag {
                bmsg::COPY_IN_RESPONSE if ready == skip + 1 => return Some(frame),
                bmsg::READY_FOR_QUERY => {
                    ready += 1;
                    if ready == skip + 2 {
                        self.phase = Phase::InTransaction;
                        return None;
                    }
                }
                // Anything but COPY IN (a COPY OUT from a table that is not what the plan
                // says): the stream state is unknown.
                bmsg::COPY_OUT_RESPONSE | bmsg::COPY_BOTH_RESPONSE => {
                    self.lose("the shard did not start COPY FROM STDIN");
                    return None;
                }
                _ => self.collect(tag, frame),
            }
        }
    }

    /// Adds a row (line ending included) to the batch; true when the batch should be sent.
    pub fn push(&mut self, row: &[u8]) -> bool {
        if self.batch.is_empty() {
            self.batch.extend_from_slice(&[fmsg::COPY_DATA, 0, 0, 0, 0]);
        }
        self.batch.extend_from_slice(row);
        self.batch.len() >= BATCH
    }

    pub fn is_full(&self) -> bool {
        self.batch.len() >= BATCH
    }

    /// Sends the batch as one CopyData message, unless the shard's COPY has ended already.
    pub async fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.batch);
        if self.phase == Phase::Copying {
            let len = (batch.len() - 1) as u32;
            batch[1..5].copy_from_slice(&len.to_be_bytes());
            let _ = self.write(&batch).await;
        }
        batch.clear();
        self.batch = batch; // keeps its capacity
    }

    /// Takes in what the shard has sent so far, without waiting: an error it raised mid-COPY
    /// ends its COPY early (and is how the client learns of it before sending everything).
    pub fn poll(&mut self) {
        while self.phase == Phase::Copying {
            match self.conn.conn.read_more().now_or_never() {
                Some(Ok(n)) if n > 0 => {}
                Some(Ok(_)) => return self.lose("the server closed the connection"),
                Some(Err(e)) => return self.lose(&e.to_string()),
                None => break,
            }
        }
        while self.phase == Phase::Copying {
            match peek_frame(&self.conn.conn.buf, MAX_BACKEND_MESSAGE) {
                Ok(Some(h)) => {
                    let frame = self.conn.conn.buf.split_to(h.total_len).freeze();
                    self.on_copy_frame(h.tag, frame);
                }
                Ok(None) => break,
                Err(e) => self.lose(&e.to_string()),
            }
        }
    }

    /// Ends the shard's COPY: CopyDone (after the last batch), or CopyFail with `failure`.
    pub async fn end(&mut self, failure: Option<&str>) {
        if self.phase != Phase::Copying {
            return;
        }
        let mut out = BytesMut::new();
        match failure {
            None => {
                self.flush().await;
                fmsg::encode_empty(fmsg::COPY_DONE, &mut out);
            }
            Some(why) => crate::protocol::write_message(&mut out, fmsg::COPY_FAIL, |o| {
                crate::protocol::put_cstr(o, why.as_bytes())
            }),
        }
        if self.write(&out).await.is_err() {
            return;
        }
        while self.phase == Phase::Copying {
            match self.next_frame().await {
                Ok((tag, frame)) => self.on_copy_frame(tag, frame),
                Err(_) => return,
            }
        }
    }

    /// COMMIT or ROLLBACK; returns whether the shard committed.
    pub async fn finish(&mut self, commit: bool) -> bool {
        if self.phase != Phase::InTransaction {
            return false;
        }
        let mut out = BytesMut::new();
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        Query { sql }.encode(&mut out);
        if self.write(&out).await.is_err() {
            return false;
        }
        let mut committed = commit;
        loop {
            match self.next_frame().await {
                Ok((bmsg::READY_FOR_QUERY, _)) => break,
                Ok((bmsg::ERROR_RESPONSE, _)) => committed = false,
                // A transaction that failed answers COMMIT with ROLLBACK.
                Ok((bmsg::COMMAND_COMPLETE, frame)) => {
                    committed &= bmsg::command_complete_tag(&frame[crate::protocol::HEADER_LEN..])
                        .ok()
                        == Some("COMMIT")
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        self.phase = Phase::Idle;
        committed
    }

    /// The transaction was ended by others (a two-phase commit): the backend is idle, or was
    /// marked broken when it was lost.
    pub fn ended(&mut self) {
        self.phase = Phase::Idle;
    }

    /// The `n` of the shard's `COPY n`.
    pub fn count(&self) -> u64 {
        self.reply
            .tags
            .iter()
            .find_map(|t| t.strip_prefix("COPY ")?.parse().ok())
            .unwrap_or(0)
    }

    /// Whether the shard's COPY failed (its error, or a lost connection).
    pub fn failed(&self) -> bool {
        self.reply.error.is_some() || matches!(self.phase, Phase::Lost(_))
    }

    fn on_copy_frame(&mut self, tag: u8, frame: Bytes) {
        match tag {
            bmsg::READY_FOR_QUERY => self.phase = Phase::InTransaction,
            _ => self.collect(tag, frame),
        }
    }

    fn collect(&mut self, tag: u8, frame: Bytes) {
        let body = &frame[crate::protocol::HEADER_LEN..];
        match tag {
            bmsg::ERROR_RESPONSE if self.reply.error.is_none() => {
                let fields = ErrorFields::parse(body).unwrap_or_default();
                self.reply.error = Some((frame, fields));
            }
            bmsg::COMMAND_COMPLETE => self
                .reply
                .tags
                .push(bmsg::command_complete_tag(body).unwrap_or("").to_string()),
            bmsg::NOTICE_RESPONSE if self.reply.notices.len() < MAX_NOTICES => {
                self.reply.notices.push(frame)
            }
            _ => {}
        }
    }

    async fn write(&mut self, out: &[u8]) -> Result<(), ()> {
        if let Err(e) = self.conn.conn.write_all(out).await {
            self.lose(&e.to_string());
            return Err(());
        }
        Ok(())
    }

    async fn next_frame(&mut self) -> Result<(u8, Bytes), ()> {
        loop {
            match peek_frame(&self.conn.conn.buf, MAX_BACKEND_MESSAGE) {
                Ok(Some(h)) => {
                    return Ok((h.tag, self.conn.conn.buf.split_to(h.total_len).freeze()))
                }
                Ok(None) => {}
                Err(e) => {
                    self.lose(&e.to_string());
                    return Err(());
                }
            }
            match self.conn.conn.read_more().await {
                Ok(n) if n > 0 => {}
                Ok(_) => {
                    self.lose("the server closed the connection");
                    return Err(());
                }
                Err(e) => {
                    self.lose(&e.to_string());
                    return Err(());
                }
            }
        }
    }

    fn lose(&mut self, reason: &str) {
        tracing::warn!(shard = %self.conn.name, backend = self.conn.conn.name(), %reason, "backend connection lost during a split COPY");
        self.phase = Phase::Lost(
            PgError::error(
                SqlState::ConnectionFailure,
                format!(
                    "connection to shard \"{}\" was lost: {reason}",
                    self.conn.name
                ),
            )
            .with_hint("Retry the COPY."),
        );
    }
}

impl Drop for CopyShard {
    fn drop(&mut self) {
        if self.phase != Phase::Idle {
            self.conn.conn.mark_broken();
        }
    }
}
