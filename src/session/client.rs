//! What the session does with each client message: forward it raw, rewrite a statement name,
//! answer it locally, or refuse it.

use crate::net::ClientStream;
use bytes::{Bytes, BytesMut};

use super::checkout::Place;
use super::prepared::{queue_parse, server_statement, Statement, UnnamedParse, SERVER_PREFIX};
use super::replies::Pending;
use super::route::Routed;
use super::sql::{self, SessionCommand};
use super::{Flow, Session, SessionError};
use crate::config::PoolMode;
use crate::metrics::Kind;
use crate::protocol::backend::{self as bmsg, TxStatus};
use crate::protocol::frontend::{self as fmsg, Bind, Execute, NamedTarget, Parse, Query, Target};
use crate::protocol::{PgError, ProtocolError, SqlState};
use crate::router::report::kind_of_word;
use crate::router::Plan;

impl<S: ClientStream> Session<S> {
    /// Handles one complete client message (`frame` includes its header).
    pub(super) async fn on_client_message(
        &mut self,
        tag: u8,
        frame: &[u8],
    ) -> Result<Flow, SessionError> {
        if self.skip_until_sync && tag != fmsg::SYNC {
            return Ok(Flow::Continue);
        }
        if !self.owed.is_empty()
            && !matches!(
                tag,
                fmsg::PARSE | fmsg::BIND | fmsg::DESCRIBE | fmsg::EXECUTE
            )
        {
            // Whatever this message's reply is, the owed ParseCompletes come first.
            if !self.ensure_backend_for_extended().await {
                return Ok(Flow::Continue);
            }
        }
        let listed = self.list_insert_columns(tag, frame)?;
        let frame = listed.as_deref().unwrap_or(frame);
        let body = &frame[crate::protocol::HEADER_LEN..];
        match tag {
            fmsg::QUERY => self.on_query(frame).await?,
            fmsg::PARSE => self.on_parse(frame).await?,
            fmsg::BIND => self.on_bind(frame).await?,
            fmsg::DESCRIBE => {
                self.on_describe(NamedTarget::decode(tag, body)?, frame)
                    .await?
            }
            fmsg::CLOSE => self.on_close(NamedTarget::decode(tag, body)?, frame),
            fmsg::EXECUTE => self.on_execute(Execute::decode(body)?, frame).await?,
            fmsg::SYNC => self.on_sync(frame),
            fmsg::FLUSH => self.forward_if_held(frame),
            fmsg::COPY_DATA => self.forward_if_held(frame),
            fmsg::COPY_DONE | fmsg::COPY_FAIL => self.on_copy_end(frame),
            fmsg::FUNCTION_CALL => self.forward_new(frame, Pending::FunctionCall).await?,
            fmsg::TERMINATE => return Ok(Flow::Close),
            _ => {
                return Err(ProtocolError::Unexpected {
                    tag,
                    context: "from a client after startup",
                }
                .into())
            }
        }
        Ok(Flow::Continue)
    }

    /// A Query or Parse of an INSERT without a column list into a sharded table, rebuilt with its
    /// columns listed (`router::columns`): handled from here on as if the client had sent that.
    /// `None`: the message as it is.
    fn list_insert_columns(
        &mut self,
        tag: u8,
        frame: &[u8],
    ) -> Result<Option<Bytes>, SessionError> {
        if tag != fmsg::QUERY && tag != fmsg::PARSE {
            return Ok(None);
        }
        // First the cheap question (one shard: nothing is routed), then the lexing.
        let Some(router) = self.router() else {
            return Ok(None);
        };
        let body = &frame[crate::protocol::HEADER_LEN..];
        let (sql, parse) = match tag {
            fmsg::QUERY => (Query::decode(body)?.sql, None),
            _ => {
                let p = Parse::decode(body)?;
                (p.sql, Some(p))
            }
        };
        if !crate::router::lex::some_statement_starts_with(sql, "insert") {
            return Ok(None);
        }
        let Plan::ListColumns(listed) = &*router.plan(sql) else {
            return Ok(None);
        };
        let mut out = BytesMut::new();
        match parse {
            None => Query { sql: listed }.encode(&mut out),
            Some(p) => Parse { sql: listed, ..p }.encode(&mut out),
        }
        Ok(Some(out.freeze()))
    }

    async fn on_query(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        let q = Query::decode(&frame[crate::protocol::HEADER_LEN..])?;
        // Any simple query drops the client's unnamed statement, in Postgres even when it fails.
        self.unnamed = None;
        self.unnamed_here = false;
        let mut statements = 0;
        let mut cmds: Vec<SessionCommand> = Vec::new(); // allocates only if a command is found
        let mut kind = Kind::Other; // the first statement's, for the metrics
        for stmt in sql::statements(q.sql) {
            let first = sql::first_word(stmt);
            if statements == 0 {
                kind = kind_of_word(first);
            }
            statements += 1;
            cmds.extend(sql::classify_from(stmt, first));
        }
        if let Some(err) = self.unpoolable(&cmds) {
            self.push_synthetic(|out| query_error(out, &err, TxStatus::Idle));
            return Ok(());
        }
        if let Some(err) = self.hint_refusal(&cmds) {
            let status = self.status;
            self.push_synthetic(|out| query_error(out, &err, status));
            return Ok(());
        }
        if let [SessionCommand::Deallocate { name }] = cmds.as_slice() {
            if statements == 1 && self.deallocate_locally(name.as_deref()) {
                let tag = if name.is_some() {
                    "DEALLOCATE"
                } else {
                    "DEALLOCATE ALL"
                };
                let status = self.status;
                self.push_synthetic(|out| {
                    bmsg::command_complete(out, tag);
                    bmsg::ready_for_query(out, status);
                });
                return Ok(());
            }
        }
        let want = loop {
            match self.route_query(q.sql).await {
                Routed::Done => return Ok(()),
                Routed::To(want) => break Place::primary(want),
                Routed::Read(want) => break Place::read(want),
                Routed::Fan(fan) if matches!(fan.job, super::fanout::Job::CopyIn(_)) => {
                    return self.fan_copy_query(q.sql, fan).await;
                }
                Routed::Fan(fan) => {
                    self.fan_query(q.sql, fan).await;
                    return Ok(());
                }
                Routed::Wait => self.finish_earlier_batches().await?,
            }
        };
        if !self.ensure_backend_for_query_on(want).await {
            return Ok(());
        }
        self.note_may_write(want);
        if !cmds.is_empty() {
            // Most queries have none: no emptied iterator to drop.
            self.pending_cmds.extend(cmds);
        }
        self.unnamed_here = true; // this backend drops its unnamed statement too
        self.note_sent(kind, frame);
        self.forward(frame, Pending::Query);
        Ok(())
    }

    /// In transaction mode, the error for a statement whose session state could not follow the
    /// client to its next server connection.
    fn unpoolable(&self, cmds: &[SessionCommand]) -> Option<PgError> {
        if self.mode == PoolMode::Session {
            return None;
        }
        let what = cmds.iter().find_map(|c| match c {
            SessionCommand::Unpoolable { what } => Some(*what),
            _ => None,
        })?;
        Some(
            PgError::error(SqlState::FeatureNotSupported, format!("{what} is not supported in transaction pooling mode"))
                .with_detail("The next transaction of this session may run on another server connection, which would not have this state.")
                .with_hint("Use your driver's protocol-level prepared statements, or set pool.mode: session for this workload."),
        )
    }

    /// `DEALLOCATE` of statements shardgate renamed is answered here: the server never saw the
    /// client's names. Returns false when the name is not ours (e.g. a SQL-level PREPARE in
    /// session mode), so Postgres answers it.
    fn deallocate_locally(&mut self, name: Option<&str>) -> bool {
        match name {
            None => {
                self.statements.clear();
                true
            }
            Some(name) => self.statements.remove(name),
        }
    }

    async fn on_parse(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        let unnamed = match self.parse_memo.recall(frame) {
            Some(unnamed) => unnamed,
            None => {
                let p = Parse::decode(&frame[crate::protocol::HEADER_LEN..])?;
                let (command, kind) = sql::recognize(p.sql);
                if !p.name.is_empty() {
                    return self.on_named_parse(p, command).await;
                }
                let unnamed = UnnamedParse { command, kind };
                self.parse_memo.keep(frame, &unnamed);
                unnamed
            }
        };
        self.on_unnamed_parse(unnamed, frame).await
    }

    /// Refuses a statement whose session command cannot be honoured here; true if it did.
    fn refuse_parse(&mut self, command: &Option<SessionCommand>) -> bool {
        let cmds = command.as_slice();
        match self.unpoolable(cmds).or_else(|| self.hint_refusal(cmds)) {
            Some(err) => {
                self.extended_error(err);
                true
            }
            None => false,
        }
    }

    /// With no backend, or one that only finishes earlier batches, or in a transaction that may
    /// span shards, a Parse's reply waits until a Bind picks the shard it is sent to.
    fn defer_parse(&mut self) -> bool {
        let spanning = self.backend.is_some() && self.router().is_some_and(|r| self.may_span(&r));
        let open = self.backend.is_none() || self.may_wait_for_earlier() || spanning;
        open && self.router().is_some()
    }

    async fn on_unnamed_parse(
        &mut self,
        UnnamedParse { command, kind }: UnnamedParse,
        frame: &[u8],
    ) -> Result<(), SessionError> {
        if self.refuse_parse(&command) {
            return Ok(());
        }
        let defer = self.defer_parse();
        self.unnamed_cmd = command;
        if defer {
            // The shard is picked by the Bind (its parameters carry the key).
            let kept = self.keep_unnamed(frame).clone();
            self.unnamed_kind = kind;
            self.unnamed_here = false;
            self.owed.push(super::route::Owed::Unnamed(kept));
            return Ok(());
        }
        if !self.ensure_backend_for_extended().await {
            return Ok(());
        }
        self.keep_unnamed(frame);
        self.unnamed_kind = kind;
        self.unnamed_here = true;
        self.forward(frame, Pending::UnnamedParse);
        Ok(())
    }

    /// Makes the unnamed Parse `frame` the client's unnamed statement, and returns it. The one
    /// kept already when it is the same: drivers that send the same Parse before each execution
    /// then cost no copy.
    fn keep_unnamed(&mut self, frame: &[u8]) -> &Bytes {
        if self.unnamed.as_deref() != Some(frame) {
            self.unnamed = Some(Bytes::copy_from_slice(frame));
        }
        self.unnamed.as_ref().expect("kept above")
    }

    async fn on_named_parse(
        &mut self,
        p: Parse<'_>,
        command: Option<SessionCommand>,
    ) -> Result<(), SessionError> {
        if self.refuse_parse(&command) {
            return Ok(());
        }
        let defer = self.defer_parse();
        if self.statements.get(p.name).is_some() || p.name.starts_with(SERVER_PREFIX) {
            let err = PgError::error(
                SqlState::DuplicatePreparedStatement,
                format!("prepared statement \"{}\" already exists", p.name),
            );
            self.extended_error(err);
            return Ok(());
        }
        let search_path = self
            .settings
            .effective()
            .get("search_path")
            .map_or("", String::as_str);
        let stmt = self
            .shared
            .statements
            .intern(p.sql, p.param_types, search_path);
        if defer && (!stmt.is_valid() || !self.owed.is_empty()) {
            self.statements.insert(p.name, stmt.clone());
            self.owed.push(super::route::Owed::Named {
                name: p.name.to_owned(),
                stmt,
            });
            return Ok(());
        }
        if (self.backend.is_none() || defer) && stmt.is_valid() {
            // Postgres accepted this exact statement before: no backend needed until it is used.
            self.statements.insert(p.name, stmt);
            self.push_synthetic(|out| bmsg::empty(out, bmsg::PARSE_COMPLETE));
            return Ok(());
        }
        if !self.ensure_backend_for_extended().await {
            return Ok(());
        }
        self.statements.insert(p.name, stmt.clone());
        let pending = || Pending::Parse {
            registered: Some((p.name.to_owned(), stmt.clone())),
        };
        if !self.prepare_on_backend(&stmt, pending) {
            self.replies.push(Pending::LocalParse {
                name: p.name.to_owned(),
                id: stmt.id,
            });
            self.drain_synthetic();
        }
        Ok(())
    }

    async fn on_bind(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        let b = Bind::decode(&frame[crate::protocol::HEADER_LEN..])?;
        let want = loop {
            match self.route_bind(&b).await {
                Routed::Done => return Ok(()),
                Routed::To(want) => break Place::primary(want),
                Routed::Read(want) => break Place::read(want),
                Routed::Fan(fan) => {
                    self.fan_bind(&b, fan);
                    return Ok(());
                }
                Routed::Wait => self.finish_earlier_batches().await?,
            }
        };
        if !self.ensure_backend_for_extended_on(want, true).await {
            return Ok(());
        }
        self.note_may_write(want);
        if b.statement.is_empty() && !self.ensure_unnamed() {
            return Ok(());
        }
        let command = if b.statement.is_empty() {
            self.unnamed_cmd.clone()
        } else {
            self.statements
                .get(b.statement)
                .and_then(|s| s.command.clone())
        };
        match command {
            Some(cmd) => {
                self.portal_cmds.insert(b.portal.to_owned(), cmd);
            }
            // Rebinding a portal replaces what it ran before.
            None if !self.portal_cmds.is_empty() => {
                self.portal_cmds.remove(b.portal);
            }
            None => {}
        }
        let parts = (&mut self.bout, &mut self.replies);
        match server_statement(&self.statements, &mut self.backend, parts, b.statement)? {
            Some(stmt) => Bind {
                statement: &stmt.server_name,
                ..b
            }
            .encode(&mut self.bout),
            // Unnamed, or unknown to us: the server answers (an unknown name gets Postgres' own
            // "does not exist" error, and the transaction fails exactly as it would there).
            None => self.bout.extend_from_slice(frame),
        }
        self.note_bound(b.statement);
        self.replies.push(Pending::Bind);
        Ok(())
    }

    async fn on_describe(&mut self, d: NamedTarget<'_>, frame: &[u8]) -> Result<(), SessionError> {
        if d.target == Target::Portal && self.is_local_portal(d.name) {
            self.push_synthetic(|out| bmsg::empty(out, bmsg::NO_DATA));
            return Ok(());
        }
        if d.target == Target::Portal && self.is_fan_portal(d.name) {
            self.fan_describe().await;
            return Ok(());
        }
        if !self.ensure_backend_for_extended().await {
            return Ok(());
        }
        if d.target == Target::Statement && d.name.is_empty() && !self.ensure_unnamed() {
            return Ok(());
        }
        let rewritten = match d.target {
            Target::Statement => {
                let parts = (&mut self.bout, &mut self.replies);
                server_statement(&self.statements, &mut self.backend, parts, d.name)?
            }
            Target::Portal => None,
        };
        match rewritten {
            Some(stmt) => NamedTarget {
                name: &stmt.server_name,
                ..d
            }
            .encode(fmsg::DESCRIBE, &mut self.bout),
            None => self.bout.extend_from_slice(frame),
        }
        self.replies.push(Pending::Describe);
        Ok(())
    }

    /// Queues a Parse of `stmt` under its server name, answered as `pending`, unless the held
    /// backend has it already. Returns whether it queued one.
    pub(super) fn prepare_on_backend(
        &mut self,
        stmt: &Statement,
        pending: impl FnOnce() -> Pending,
    ) -> bool {
        let conn = &mut self.backend.as_mut().expect("a backend is held").conn;
        queue_parse(conn, (&mut self.bout, &mut self.replies), stmt, pending)
    }

    fn on_close(&mut self, c: NamedTarget<'_>, frame: &[u8]) {
        // A named statement stays prepared on the servers (other clients share it); only the
        // client's name goes away. Closing something that does not exist is not an error.
        if c.target == Target::Statement && !c.name.is_empty() {
            self.statements.remove(c.name);
            return self.push_synthetic(|out| bmsg::empty(out, bmsg::CLOSE_COMPLETE));
        }
        if c.target == Target::Portal && self.is_fan_portal(c.name) {
            self.fan_portal = None;
            return self.push_synthetic(|out| bmsg::empty(out, bmsg::CLOSE_COMPLETE));
        }
        let unnamed_statement = c.target == Target::Statement;
        if unnamed_statement {
            self.unnamed = None;
        }
        if self.backend.is_some() {
            if unnamed_statement {
                self.unnamed_here = true; // the backend closes its own too
            }
            self.forward(frame, Pending::Close);
        } else {
            self.push_synthetic(|out| bmsg::empty(out, bmsg::CLOSE_COMPLETE));
        }
    }

    async fn on_execute(&mut self, e: Execute<'_>, frame: &[u8]) -> Result<(), SessionError> {
        if self.is_local_portal(e.portal) {
            if let Some((_, tx)) = self.local_portal.take() {
                if let Some(failure) = self.run_local_tx(tx).await {
                    self.push_synthetic(|out| failure.encode(out));
                    self.skip_until_sync = true;
                }
            }
            return Ok(());
        }
        if self.is_copy_portal(e.portal) {
            return self.fan_copy_execute().await;
        }
        if self.is_fan_portal(e.portal) {
            self.fan_execute(e).await;
            return Ok(());
        }
        if let Some(cmd) = self.portal_cmds.get(e.portal) {
            self.pending_cmds.push(cmd.clone());
        }
        self.forward_new(frame, Pending::Execute).await
    }

    fn on_sync(&mut self, frame: &[u8]) {
        self.skip_until_sync = false;
        self.local_portal = None;
        self.fan_portal = None;
        if self.backend.is_none() {
            let status = self.status;
            return self.push_synthetic(|out| bmsg::ready_for_query(out, status));
        }
        if self.replies.copy_in {
            // The backend ignores Sync during COPY FROM STDIN; it will not answer this one.
            return self.bout.extend_from_slice(frame);
        }
        self.forward(frame, Pending::Sync);
    }

    fn on_copy_end(&mut self, frame: &[u8]) {
        if self.backend.is_some() {
            self.replies.copy_in = false;
            self.forward(frame, Pending::CopyEnd);
        }
    }

    fn forward_if_held(&mut self, frame: &[u8]) {
        if self.backend.is_some() {
            self.bout.extend_from_slice(frame);
        }
    }

    /// Forwards a message that may start a transaction: checks out a backend first.
    async fn forward_new(&mut self, frame: &[u8], pending: Pending) -> Result<(), SessionError> {
        let ok = match pending {
            Pending::FunctionCall => self.ensure_backend_for_query().await,
            _ => self.ensure_backend_for_extended_on(Place::ANY, true).await,
        };
        if ok {
            if matches!(pending, Pending::FunctionCall) {
                self.note_may_write(Place::ANY);
            }
            self.forward(frame, pending);
        }
        Ok(())
    }

    pub(super) fn forward(&mut self, frame: &[u8], pending: Pending) {
        self.bout.extend_from_slice(frame);
        self.replies.push(pending);
    }

    /// An error for an extended-protocol message: reported in order, then everything up to Sync
    /// is skipped, as Postgres does.
    pub(super) fn extended_error(&mut self, err: PgError) {
        self.push_synthetic(|out| err.encode(out));
        self.skip_until_sync = true;
    }

    /// Queues a reply of our own behind whatever the backend still owes the client.
    pub(super) fn push_synthetic(&mut self, build: impl FnOnce(&mut BytesMut)) {
        let mut out = BytesMut::new();
        build(&mut out);
        self.replies.push(Pending::Synthetic(out.freeze()));
        self.drain_synthetic();
    }

    /// Sends the replies of our own now at the front of the queue.
    pub(super) fn drain_synthetic(&mut self) {
        let cout = &mut self.cout;
        self.replies.drain_front(|b| cout.extend_from_slice(b));
    }

    /// Before the unnamed statement is used: puts the client's own on the held backend (its reply
    /// swallowed), or — if the client has none — answers as Postgres would, so a backend's leftover
    /// unnamed statement from another client can never run. Returns false if it reported an error.
    fn ensure_unnamed(&mut self) -> bool {
        if self.unnamed_here {
            return true;
        }
        let Some(parse) = self.unnamed.clone() else {
            self.extended_error(PgError::error(
                SqlState::UndefinedPreparedStatement,
                "unnamed prepared statement does not exist",
            ));
            return false;
        };
        self.bout.extend_from_slice(&parse);
        self.replies.push(Pending::InjectedUnnamedParse);
        self.unnamed_here = true;
        true
    }
}

/// A simple-query error: ErrorResponse then ReadyForQuery.
pub(super) fn query_error(out: &mut BytesMut, err: &PgError, status: TxStatus) {
    err.encode(out);
    bmsg::ready_for_query(out, status);
}
