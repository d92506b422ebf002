//! Matching the backend's replies to what was sent, in order.
//!
//! Every message forwarded to a backend pushes what it will be answered with onto a FIFO queue.
//! That is how the session knows which replies belong to messages it injected (swallowed, never
//! shown to the client), where a reply it synthesizes itself belongs in the stream (e.g. a
//! ParseComplete for a statement the backend already has), and when the backend is done (a
//! ReadyForQuery with nothing outstanding) so it can go back to the pool.

use std::collections::VecDeque;

use std::sync::Arc;

use bytes::Bytes;

use super::prepared::Statement;

use crate::protocol::backend as msg;

/// ParseComplete: tag and length, no body.
const PARSE_COMPLETE_MSG: [u8; 5] = [msg::PARSE_COMPLETE, 0, 0, 0, 4];

/// One expected reply (or reply sequence), in the order the backend will send them.
#[derive(Debug)]
pub enum Pending {
    /// A client Parse, answered by ParseComplete. `registered` names the client statement to drop
    /// again if the Parse fails (it is then also not prepared on the backend).
    Parse {
        registered: Option<(String, Arc<Statement>)>,
    },
    /// A Parse shardgate injected to prepare a statement on this backend: its reply is swallowed.
    InjectedParse {
        stmt: Arc<Statement>,
    },
    Bind,
    /// Describe: an optional ParameterDescription, then RowDescription or NoData.
    Describe,
    /// Execute: rows, then CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// Close of a portal or the unnamed statement, answered by CloseComplete.
    Close,
    /// Sync, Query and FunctionCall end with ReadyForQuery.
    Sync,
    Query,
    FunctionCall,
    /// The settings query injected at checkout: everything up to its ReadyForQuery is swallowed.
    Settings,
    /// `pg_current_wal_insert_lsn()` asked after a write transaction (read-your-writes): its
    /// replies are swallowed, the session reads the position from its DataRow; an error (the
    /// client's next transaction had already failed, say) is swallowed too (`Undo`).
    CommitLsn,
    /// A simple query shardgate injected (a deferred BEGIN): its replies are swallowed, but an
    /// error is passed on (the client must learn its transaction did not start as asked).
    Injected,
    /// Where the client ended a COPY (CopyDone/CopyFail); answers nothing.
    CopyEnd,
    /// A reply shardgate makes itself, sent when it reaches the front of the queue.
    Synthetic(Bytes),
    /// A ParseComplete shardgate answers itself for a statement it already knows. If an earlier
    /// error makes it skipped, the client's name is undone, as Postgres never created it.
    LocalParse {
        name: String,
        id: u64,
    },
    /// The client's unnamed Parse: its failure leaves the client with no unnamed statement.
    UnnamedParse,
    /// The client's unnamed statement re-sent to a backend that lacks it: its reply is swallowed.
    InjectedUnnamedParse,
    /// Parse, Bind and Execute of a statement that raises shardgate's error inside the client's
    /// batch: ParseComplete and BindComplete are swallowed, the error goes to the client and, as
    /// any error, skips the batch to its Sync. If the batch failed before, it is skipped with it.
    Raise,
}

impl Pending {
    fn ends_with_ready(&self) -> bool {
        matches!(
            self,
            Pending::Sync
                | Pending::Query
                | Pending::FunctionCall
                | Pending::Settings
                | Pending::CommitLsn
                | Pending::Injected
        )
    }

    fn swallowed(&self) -> bool {
        matches!(
            self,
            Pending::InjectedParse { .. }
                | Pending::InjectedUnnamedParse
                | Pending::Raise
                | Pending::Settings
                | Pending::CommitLsn
                | Pending::Injected
        )
    }
}

/// What the session must do with one backend message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    Swallow,
    /// A ReadyForQuery: forward it (unless it ends an injected query) and take the new status.
    Ready {
        status: msg::TxStatus,
        forward: bool,
    },
    /// The message does not fit what was sent: the backend's state is unknown.
    Desync(&'static str),
}

/// Things the queue reports back so the session can undo registrations of failed messages.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Undo {
    pub client_statements: Vec<(String, u64)>,
    pub server_statements: Vec<u64>,
    /// The injected settings query failed (and was rolled back).
    pub settings_failed: bool,
    /// The read-your-writes position query failed.
    pub commit_lsn_failed: bool,
    /// The client's unnamed statement is gone (its Parse failed or was skipped).
    pub unnamed_lost: bool,
    /// An error came before the client's Sync reached the backend: the backend skips everything
    /// the client sends until that Sync, so the session must too (and keep the backend).
    pub awaiting_sync: bool,
}

#[derive(Debug, Default)]
pub struct Replies {
    queue: VecDeque<Pending>,
    /// The backend is in COPY FROM STDIN: it ignores Sync and Flush until CopyDone/CopyFail.
    pub copy_in: bool,
    /// ReadyForQuery for the client asked for, and received, since the session started: a
    /// statement sent when `readies_asked` was `n` is answered once `readies_received > n`
    /// (how the session times statements, `super::observe`).
    readies_asked: u64,
    readies_received: u64,
}

impl Replies {
    pub fn push(&mut self, p: Pending) {
        if p.ends_with_ready() && !p.swallowed() {
            self.readies_asked += 1;
        }
        self.queue.push_back(p);
    }

    pub fn readies_asked(&self) -> u64 {
        self.readies_asked
    }

    pub fn readies_received(&self) -> u64 {
        self.readies_received
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether something is outstanding and all of it belongs to batches the client has ended
    /// (each with a Sync, or a simple query): nothing of its current batch has reached the
    /// backend, so that batch may still start on another one.
    pub fn only_ended_batches(&self) -> bool {
        let last_sent = self.queue.iter().rev().find(|p| {
            !matches!(
                p,
                Pending::Synthetic(_) | Pending::LocalParse { .. } | Pending::CopyEnd
            )
        });
        matches!(
            last_sent,
            Some(Pending::Sync | Pending::Query | Pending::FunctionCall)
        )
    }

    /// How many ReadyForQuery the client is still owed (the injected settings query excluded).
    pub fn owed_ready(&self) -> usize {
        self.queue
            .iter()
            .filter(|p| p.ends_with_ready() && !p.swallowed())
            .count()
    }

    pub fn clear(&mut self) {
        self.queue.clear();
        self.copy_in = false;
        self.readies_received = self.readies_asked; // none of them will come
    }

    /// Whether the next reply answers the read-your-writes position query.
    pub fn awaiting_commit_lsn(&self) -> bool {
        matches!(self.queue.front(), Some(Pending::CommitLsn))
    }

    /// Pops the synthetic replies and copy markers now at the front, returning the bytes to send.
    pub fn drain_front(&mut self, mut emit: impl FnMut(&[u8])) {
        while let Some(front) = self.queue.front() {
            match front {
                Pending::Synthetic(bytes) => emit(bytes),
                Pending::LocalParse { .. } => emit(&PARSE_COMPLETE_MSG),
                Pending::CopyEnd => {}
                _ => return,
            }
            self.queue.pop_front();
        }
    }

    /// Whether a message with `tag` is one [`on_message`](Replies::on_message) would forward
    /// without changing anything: a row, or the description or end of a simple query's result,
    /// answering the client's own statement. Asked first for every message, so the bulk of a
    /// result (and three of a short query's four replies) skips the full decision.
    #[inline]
    pub fn passes_through(&self, tag: u8) -> bool {
        // The tag first: most replies of the extended protocol are none of these, and are
        // decided without touching the queue.
        match tag {
            msg::DATA_ROW => matches!(self.queue.front(), Some(Pending::Query | Pending::Execute)),
            msg::ROW_DESCRIPTION | msg::COMMAND_COMPLETE => {
                matches!(self.queue.front(), Some(Pending::Query))
            }
            _ => false,
        }
    }

    /// Decides what to do with one backend message and advances the queue.
    pub fn on_message(&mut self, tag: u8, body: &[u8], undo: &mut Undo) -> Verdict {
        let in_injected = self.queue.front().is_some_and(Pending::swallowed);
        match tag {
            msg::NOTICE_RESPONSE | msg::PARAMETER_STATUS if in_injected => return Verdict::Swallow,
            msg::NOTICE_RESPONSE | msg::PARAMETER_STATUS | msg::NOTIFICATION_RESPONSE => {
                return Verdict::Forward
            }
            msg::ERROR_RESPONSE => return self.on_error(undo),
            msg::COPY_IN_RESPONSE => self.enter_copy_in(),
            _ => {}
        }
        let Some(front) = self.queue.front() else {
            return Verdict::Desync("a reply arrived with nothing outstanding");
        };
        let done = match (front, tag) {
            (Pending::Parse { registered }, msg::PARSE_COMPLETE) => {
                if let Some((_, stmt)) = registered {
                    stmt.mark_valid();
                }
                true
            }
            (Pending::UnnamedParse | Pending::InjectedUnnamedParse, msg::PARSE_COMPLETE) => true,
            (Pending::InjectedParse { stmt }, msg::PARSE_COMPLETE) => {
                stmt.mark_valid();
                true
            }
            (Pending::Bind, msg::BIND_COMPLETE) => true,
            (Pending::Raise, msg::PARSE_COMPLETE | msg::BIND_COMPLETE) => false,
            (Pending::Close, msg::CLOSE_COMPLETE) => true,
            (Pending::Describe, msg::PARAMETER_DESCRIPTION) => false,
            (Pending::Describe, msg::ROW_DESCRIPTION | msg::NO_DATA) => true,
            (
                Pending::Execute,
                msg::COMMAND_COMPLETE | msg::EMPTY_QUERY_RESPONSE | msg::PORTAL_SUSPENDED,
            ) => true,
            (
                Pending::Execute,
                msg::DATA_ROW
                | msg::COPY_IN_RESPONSE
                | msg::COPY_OUT_RESPONSE
                | msg::COPY_DATA
                | msg::COPY_DONE,
            ) => false,
            (p, msg::READY_FOR_QUERY) if p.ends_with_ready() => {
                let Ok(status) = msg::TxStatus::decode(body) else {
                    return Verdict::Desync("a malformed ReadyForQuery");
                };
                let forward = !p.swallowed();
                self.readies_received += u64::from(forward);
                self.queue.pop_front();
                return Verdict::Ready { status, forward };
            }
            (
                Pending::Query
                | Pending::Settings
                | Pending::CommitLsn
                | Pending::FunctionCall
                | Pending::Injected,
                _,
            ) => false,
            _ => return Verdict::Desync("a reply that does not match the request it answers"),
        };
        let swallow = front.swallowed();
        if done {
            self.queue.pop_front();
        }
        if swallow {
            Verdict::Swallow
        } else {
            Verdict::Forward
        }
    }

    /// After an error the backend skips every extended-protocol message up to the next Sync, so
    /// their replies (and any synthetic ones queued among them) will never come.
    fn on_error(&mut self, undo: &mut Undo) -> Verdict {
        self.copy_in = false;
        match self.queue.front() {
            // A FATAL on an idle connection, or an error inside a simple query (whose own
            // ReadyForQuery still comes): pass it on. An error in the injected settings query is
            // passed on too: the client must learn that its settings could not be restored.
            None => return Verdict::Forward,
            Some(Pending::Settings) => {
                // Postgres rolled the whole settings query back: what this backend has is unknown.
                undo.settings_failed = true;
                return Verdict::Forward;
            }
            Some(Pending::CommitLsn) => {
                undo.commit_lsn_failed = true;
                return Verdict::Swallow;
            }
            Some(p) if p.ends_with_ready() => return Verdict::Forward,
            _ => {}
        }
        while let Some(front) = self.queue.front() {
            match front {
                Pending::Sync
                | Pending::Query
                | Pending::FunctionCall
                | Pending::Settings
                | Pending::CommitLsn
                | Pending::Injected => break,
                // A client Parse with a registration was sent to this backend under the server
                // name (it had not got the statement): refused or skipped, the backend still has
                // not, so the session must forget both the client's name and the server's copy.
                Pending::Parse {
                    registered: Some((name, stmt)),
                } => {
                    undo.client_statements.push((name.clone(), stmt.id));
                    undo.server_statements.push(stmt.id);
                }
                Pending::InjectedParse { stmt } => undo.server_statements.push(stmt.id),
                Pending::LocalParse { name, id } => {
                    undo.client_statements.push((name.clone(), *id))
                }
                Pending::UnnamedParse | Pending::InjectedUnnamedParse => undo.unnamed_lost = true,
                _ => {}
            }
            self.queue.pop_front();
        }
        if self.queue.is_empty() {
            undo.awaiting_sync = true;
        }
        Verdict::Forward
    }

    /// The backend ignores Sync between the COPY's start and the client's CopyDone/CopyFail, so
    /// those Syncs will get no ReadyForQuery: forget them. Later ones are not queued while
    /// `copy_in` is set.
    fn enter_copy_in(&mut self) {
        let end = self
            .queue
            .iter()
            .position(|p| matches!(p, Pending::CopyEnd));
        let mut i = 1;
        while i < end.unwrap_or(self.queue.len()).min(self.queue.len()) {
            if matches!(self.queue[i], Pending::Sync) {
                self.queue.remove(i);
                self.readies_asked -= 1;
            } else {
                i += 1;
            }
        }
        self.copy_in = end.is_none();
    }
}

#[cfg(test)]
mod tests;
