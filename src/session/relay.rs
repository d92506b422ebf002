//! The backend→client direction: relaying the backend's replies, swallowing what answers
//! injected messages, and ending transactions (their session commands take effect on commit).

use crate::net::ClientStream;
use bytes::Buf;

use super::replies::{Undo, Verdict};
use super::sql::SessionCommand;
use super::{Held, Session, SessionError, MAX_BACKEND_MESSAGE};
use crate::protocol::backend::{self as bmsg, ErrorFields, ParameterStatus, TxStatus};
use crate::protocol::peek_frame;

impl<S: ClientStream> Session<S> {
    /// Handles every complete backend message in the read buffer.
    pub(super) fn on_backend_data(&mut self) -> Result<(), SessionError> {
        // Taken out of `self` while its buffer is read, so the handlers may borrow `self`.
        let Some(mut held) = self.backend.take() else {
            return Ok(());
        };
        let mut buf = std::mem::take(&mut held.conn.buf);
        let result = self.relay_backend_messages(&mut held, &buf);
        match result {
            Ok(consumed) => buf.advance(consumed),
            Err(_) => held.conn.mark_broken(),
        }
        held.conn.buf = buf;
        self.backend = Some(held);
        match result {
            Ok(_) => {
                self.note_answered();
                if let Some(fatal) = self.backend_fatal.take() {
                    self.backend_lost(fatal);
                } else {
                    self.release_if_done();
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Relays the complete messages at the front of `buf`; returns how many bytes it consumed.
    fn relay_backend_messages(
        &mut self,
        held: &mut Held,
        buf: &[u8],
    ) -> Result<usize, SessionError> {
        let mut undo = Undo::default();
        let mut consumed = 0;
        // Read-your-writes: the WAL position asked after a write, and whether a transaction
        // ended (so one may be asked now).
        let mut commit_lsn = None;
        let mut ended = false;
        // Frames relayed as they are, copied to the client in one piece per run.
        let mut run = Run::default();
        while let Some(h) = peek_frame(&buf[consumed..], MAX_BACKEND_MESSAGE)
            .map_err(|_| desync(held, "a message with a bad length"))?
        {
            let at = consumed;
            let frame = &buf[at..at + h.total_len];
            let body = h.body(frame);
            consumed += h.total_len;
            match h.tag {
                bmsg::PARAMETER_STATUS => note_parameter(&mut held.conn.server_params, body),
                bmsg::DATA_ROW if self.replies.awaiting_commit_lsn() => {
                    commit_lsn = Some(super::replica::lsn_of_data_row(body));
                }
                bmsg::COMMAND_COMPLETE if body.starts_with(b"ROLLBACK") => self.cycle_failed = true,
                bmsg::ERROR_RESPONSE => {
                    let fields = ErrorFields::parse(body).unwrap_or_default();
                    if fields.is_fatal() {
                        // Not relayed: the client's connection survives its backend.
                        self.backend_fatal =
                            Some(format!("{} (SQLSTATE {})", fields.message, fields.code));
                        break;
                    }
                    self.cycle_failed = true;
                }
                _ => {}
            }
            if self.replies.passes_through(h.tag) {
                run.add(at, consumed, buf, &mut self.cout);
                continue;
            }
            let verdict = self.replies.on_message(h.tag, body, &mut undo);
            let relayed = match verdict {
                Verdict::Forward => true,
                Verdict::Ready { forward: true, .. } => self.deferred_begin.is_none(),
                _ => false,
            };
            if relayed {
                run.add(at, consumed, buf, &mut self.cout);
            }
            match verdict {
                Verdict::Forward | Verdict::Swallow | Verdict::Ready { forward: false, .. } => {}
                Verdict::Ready { forward: true, .. } if self.deferred_begin.is_some() => {
                    // The backend only described or parsed: the client's transaction, which no
                    // server has seen yet, goes on.
                    run.flush(buf, &mut self.cout);
                    bmsg::ready_for_query(&mut self.cout, self.status);
                }
                Verdict::Ready {
                    status,
                    forward: true,
                } => {
                    self.status = status;
                    if status == TxStatus::Idle {
                        self.transaction_ended(&mut held.conn);
                        ended = true;
                    }
                }
                Verdict::Desync(why) => {
                    run.flush(buf, &mut self.cout);
                    return Err(desync(held, why));
                }
            }
            let cout = &mut self.cout;
            self.replies.drain_front(|b| {
                run.flush(buf, cout);
                cout.extend_from_slice(b)
            });
        }
        run.flush(buf, &mut self.cout);
        for (name, id) in undo.client_statements {
            self.statements.remove_if(&name, id);
        }
        for id in undo.server_statements {
            held.conn.session.prepared.remove(&id);
        }
        if undo.settings_failed {
            // Reset everything before this backend's next use, whoever it serves.
            held.conn.session.settings.mark_unknown();
        }
        if undo.commit_lsn_failed {
            commit_lsn = Some(None);
        }
        if let Some(lsn) = commit_lsn {
            self.note_commit_lsn(held.shard(), lsn);
        }
        if ended {
            self.after_write_commit(held);
        }
        if undo.unnamed_lost {
            // Postgres dropped the old unnamed statement before the failed Parse: none is left,
            // on the backend as for the client.
            self.unnamed = None;
        }
        if undo.awaiting_sync {
            // Postgres ignores the client's messages up to its Sync: so do we, or their replies
            // would be expected and the Sync's ReadyForQuery would look like a desync.
            self.skip_until_sync = true;
        }
        Ok(consumed)
    }

    /// A transaction (explicit or implicit) is over: its session commands take effect if it
    /// committed.
    fn transaction_ended(&mut self, conn: &mut crate::backend::Connection) {
        // Committed or not: a `set_config` may have run outside the failed part.
        if self.pending_cmds.contains(&SessionCommand::Untracked) {
            conn.session.settings.mark_unknown();
        }
        if !self.cycle_failed && !self.pending_cmds.is_empty() {
            for cmd in self.pending_cmds.drain(..) {
                self.settings.apply(&cmd);
                track_server_state(&mut conn.session, &cmd);
                match &cmd {
                    SessionCommand::DiscardAll | SessionCommand::Deallocate { name: None } => {
                        self.statements.clear()
                    }
                    SessionCommand::Deallocate { name: Some(name) } => {
                        self.statements.remove(name);
                    }
                    _ => {}
                }
            }
            self.hints = super::hints::Hints::of(self.settings.effective());
        }
        self.pending_cmds.clear();
        self.cycle_failed = false;
        self.forget_transaction();
    }
}

/// A run of consecutive frames of the read buffer relayed unchanged: one copy into the
/// client's buffer for the run instead of one per frame (a query's reply is three to six frames).
#[derive(Default)]
struct Run {
    start: usize,
    end: usize,
}

impl Run {
    /// Adds the frame at `start..end`, which follows the run unless something was swallowed
    /// or written between them (then the run so far is copied first).
    fn add(&mut self, start: usize, end: usize, buf: &[u8], cout: &mut bytes::BytesMut) {
        if self.end != start {
            self.flush(buf, cout);
            self.start = start;
        }
        self.end = end;
    }

    /// Copies the run so far, before anything else goes to the client.
    fn flush(&mut self, buf: &[u8], cout: &mut bytes::BytesMut) {
        if self.start < self.end {
            cout.extend_from_slice(&buf[self.start..self.end]);
        }
        self.start = self.end;
    }
}

fn desync(held: &Held, why: &'static str) -> SessionError {
    SessionError::Desync {
        shard: held.shard().to_string(),
        why,
    }
}

/// What a committed session command left on the server connection.
fn track_server_state(server: &mut crate::backend::ServerSession, cmd: &SessionCommand) {
    server.settings.track(cmd);
    if *cmd == SessionCommand::DiscardAll {
        server.prepared.clear();
    }
}

fn note_parameter(params: &mut Vec<(String, String)>, body: &[u8]) {
    if let Ok(p) = ParameterStatus::decode(body) {
        match params.iter_mut().find(|(k, _)| k == p.name) {
            Some(entry) => entry.1 = p.value.to_owned(),
            None => params.push((p.name.to_owned(), p.value.to_owned())),
        }
    }
}
