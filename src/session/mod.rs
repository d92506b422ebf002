//! One task per client: the transaction-pooling relay.
//!
//! The session reads client frames, keeps what must follow the client from backend to backend
//! (its prepared statements and session settings), checks out a backend when a transaction starts
//! and returns it when the backend reports ReadyForQuery `I` with nothing outstanding — never on
//! Sync or Flush alone. Backend frames are relayed to the client without being re-encoded; the
//! reply queue ([`replies`]) says which of them to swallow and where synthesized replies belong.

mod cancel;
mod checkout;
mod client;
mod fanout;
mod gated;
mod hints;
mod hold;
mod observe;
pub(crate) mod prepared;
mod relay;
mod replica;
mod replies;
mod route;
pub(crate) mod settings;
mod spanning;
pub mod sql;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

pub use cancel::CancelSlot;
use prepared::ClientStatements;
pub use prepared::Registry;
use replies::Replies;
use settings::Settings;
use sql::SessionCommand;

use crate::config::PoolMode;
use crate::net::ClientStream;
use crate::pool::{CheckoutError, PooledConnection};
use crate::protocol::backend::{self as bmsg, ErrorFields, TxStatus};
use crate::protocol::{peek_frame, PgError, ProtocolError, SqlState};
use crate::topology::Store;

/// Largest message a backend may send us: Postgres' own limit.
const MAX_BACKEND_MESSAGE: usize = 1 << 30;

/// Process-wide handles every session needs.
pub struct Shared {
    pub store: Arc<Store>,
    pub routers: crate::router::Routers,
    pub statements: Registry,
    pub shutdown: CancellationToken,
    /// Two-phase commits across shards; `None` without a `control:` database.
    pub coordinator: Option<Arc<crate::twophase::Coordinator>>,
    /// Hot keys, buckets and shard load per database (`GET /v1/hotspots`).
    pub hotspots: Arc<crate::hotspots::Registry>,
    /// The background health checks: which server of each shard is writable now.
    pub health: Arc<crate::health::Monitor>,
}

/// Who the client is, decided during startup.
pub struct ClientInfo {
    pub database: String,
    pub user: String,
    pub params: BTreeMap<String, String>,
    pub cancel: CancelSlot,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client connection: {0}")]
    Client(#[from] std::io::Error),
    #[error("client sent a bad message: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("shard \"{shard}\" sent {why}; closing the client connection")]
    Desync { shard: String, why: &'static str },
    /// Boxed: every handler on the query path returns this error type, and a `PgError` inline
    /// would make each of their results several times larger.
    #[error("cannot start the session: {0}")]
    Startup(Box<PgError>),
}

impl SessionError {
    /// The error to send the client before closing, if it should get one.
    pub fn to_client(&self) -> Option<PgError> {
        match self {
            SessionError::Client(_) => None,
            SessionError::Protocol(e) => {
                Some(PgError::fatal(SqlState::ProtocolViolation, e.to_string()))
            }
            SessionError::Desync { .. } => {
                Some(PgError::fatal(SqlState::InternalError, self.to_string()))
            }
            SessionError::Startup(e) => Some(PgError::clone(e)),
        }
    }
}

pub(crate) enum Flow {
    Continue,
    Close,
}

/// A backend held by this session, with the snapshot its transaction started on.
struct Held {
    conn: PooledConnection,
    /// The shard's index in its database: the transaction's pinned shard.
    index: usize,
    /// Its primary, or a replica taking a read.
    server: replica::Server,
    /// A statement that may write has been sent in the current transaction (read-your-writes
    /// asks for the WAL position when it ends).
    wrote: bool,
    _snapshot: Arc<crate::topology::Local>,
}

impl Held {
    /// The name of the shard its server serves.
    fn shard(&self) -> &Arc<str> {
        self.conn.shard()
    }
}

/// The largest message buffer a session keeps between messages.
const FRAME_KEPT: usize = 64 * 1024;

pub struct Session<S> {
    client: S,
    shared: Arc<Shared>,
    info: ClientInfo,
    /// The worker (runtime) this client is served on: it checks out from that worker's slice
    /// of each pool ([`crate::workers`]).
    worker: usize,
    mode: PoolMode,
    max_message: usize,
    /// Client bytes not yet handled; replies for the client; messages for the backend.
    cbuf: BytesMut,
    cout: BytesMut,
    bout: BytesMut,
    backend: Option<Held>,
    replies: Replies,
    /// The status of the last ReadyForQuery the client got.
    status: TxStatus,
    /// After an error we reported for an extended-protocol message, as Postgres: skip to Sync.
    skip_until_sync: bool,
    /// A backend died while the client owed it no reply: reported on the client's next message.
    lost: Option<PgError>,
    /// Keeps the backend whatever the pool mode (during startup, until its parameters are read).
    pinned: bool,
    /// A FATAL error the backend sent before closing, handled once its messages are relayed.
    backend_fatal: Option<String>,
    statements: ClientStatements,
    settings: Settings,
    /// Session commands seen in the current transaction; applied when it commits.
    pending_cmds: Vec<SessionCommand>,
    /// The current transaction has failed or rolled back: its session commands do not count.
    cycle_failed: bool,
    portal_cmds: HashMap<String, SessionCommand>,
    unnamed_cmd: Option<SessionCommand>,
    /// The kind of `unnamed`, for the metrics of its Binds (re-reading the Parse per Bind was a
    /// twentieth of an extended-protocol query's instructions).
    unnamed_kind: crate::metrics::Kind,
    /// The client's unnamed statement (its Parse frame), which in Postgres lasts across Syncs
    /// until the next unnamed Parse, a simple Query or a Close; `None` when it has none.
    unnamed: Option<bytes::Bytes>,
    /// Whether the held backend's unnamed statement is the client's (`unnamed`, or none).
    unnamed_here: bool,
    /// The last unnamed Parse's analysis, for the next identical one.
    parse_memo: prepared::ParseMemo,
    /// The router of the client's database, refreshed between transactions.
    router: Option<Arc<crate::router::Router>>,
    /// A BEGIN answered by shardgate, to be sent before the transaction's first statement once
    /// that statement has picked the shard.
    deferred_begin: Option<String>,
    /// Parses (sharded databases only) whose replies wait for a statement to pick the shard.
    owed: Vec<route::Owed>,
    /// A portal bound to a BEGIN/COMMIT/ROLLBACK that shardgate answers itself.
    local_portal: Option<(String, route::LocalTx)>,
    /// A portal bound to a statement that runs on several shards (until Sync).
    fan_portal: Option<fanout::FanPortal>,
    /// The other shards' backends of a transaction that spans shards, idle in it ([`spanning`]).
    parked: Vec<Held>,
    /// The BEGIN of the client's explicit transaction: what starts it on another shard.
    tx_begin: Option<String>,
    /// The transaction has set a savepoint, so it stays on its shard.
    tx_savepoint: bool,
    /// What this session records into the metrics, and its statements awaiting replies.
    obs: observe::Observer,
    /// `SET shardgate.shard` and `shardgate.target_role`, as the settings say now.
    hints: hints::Hints,
    /// Where the session's last write transaction on each shard ended (read-your-writes).
    commits: replica::Commits,
    /// The statement starting the transaction, until it is sent ([`hold`]).
    flight: Option<crate::topology::flights::Flight>,
    /// Where the client's database was in the last snapshot a checkout looked it up in.
    db_hint: crate::topology::DatabaseHint,
    /// The client message being handled, copied out of `cbuf` ([`Session::on_client_data`]).
    frame: Vec<u8>,
}

impl<S: ClientStream> Session<S> {
    /// Fails when the startup packet's `options` cannot be honoured.
    pub fn new(
        client: S,
        shared: Arc<Shared>,
        info: ClientInfo,
        leftover: BytesMut,
        worker: usize,
    ) -> Result<Self, (S, PgError)> {
        let snapshot = shared.store.load();
        let settings = match Settings::from_startup(&info.params) {
            Ok(s) => s,
            Err(problem) => {
                return Err((
                    client,
                    PgError::fatal(SqlState::FeatureNotSupported, problem),
                ))
            }
        };
        Ok(Session {
            client,
            mode: snapshot.pool_mode,
            max_message: snapshot.config.pool.max_message_bytes,
            shared,
            info,
            worker,
            cbuf: leftover,
            cout: BytesMut::with_capacity(16 * 1024),
            bout: BytesMut::with_capacity(4 * 1024),
            backend: None,
            replies: Replies::default(),
            status: TxStatus::Idle,
            skip_until_sync: false,
            lost: None,
            backend_fatal: None,
            pinned: false,
            statements: ClientStatements::default(),
            pending_cmds: Vec::new(),
            cycle_failed: false,
            portal_cmds: HashMap::new(),
            unnamed_cmd: None,
            unnamed_kind: crate::metrics::Kind::Other,
            unnamed: None,
            unnamed_here: false,
            parse_memo: prepared::ParseMemo::default(),
            router: None,
            deferred_begin: None,
            owed: Vec::new(),
            local_portal: None,
            fan_portal: None,
            parked: Vec::new(),
            tx_begin: None,
            tx_savepoint: false,
            obs: observe::Observer::default(),
            hints: hints::Hints::of(settings.effective()),
            commits: replica::Commits::default(),
            flight: None,
            db_hint: Default::default(),
            frame: Vec::new(),
            settings,
        })
    }

    /// Applies the client's startup settings on a backend (so a bad value fails the login, as in
    /// Postgres) and returns the ParameterStatus values the client must be told.
    pub async fn startup(&mut self) -> Result<Vec<(String, String)>, SessionError> {
        self.pinned = true;
        let params = self.startup_pinned().await;
        self.pinned = false;
        self.release_if_done();
        params
    }

    async fn startup_pinned(&mut self) -> Result<Vec<(String, String)>, SessionError> {
        if let Err(e) = self.checkout(checkout::Place::ANY).await {
            return Err(SessionError::Startup(Box::new(PgError {
                fatal: true,
                ..e
            })));
        }
        self.flush_backend().await;
        while !self.replies.is_empty() {
            let read = read_backend(&mut self.backend).await;
            match read {
                Ok(n) if n > 0 => self.on_backend_data()?,
                _ => {
                    return Err(SessionError::Startup(Box::new(
                        self.lost_error("the connection closed during startup"),
                    )))
                }
            }
        }
        if !self.cout.is_empty() {
            // The only thing a settings query forwards is its error.
            let header = peek_frame(&self.cout, usize::MAX).ok().flatten();
            let fields = header
                .and_then(|h| ErrorFields::parse(h.body(&self.cout)).ok())
                .unwrap_or_default();
            let msg = format!(
                "invalid startup parameter: {} (SQLSTATE {})",
                fields.message, fields.code
            );
            // Reported once, as the login's FATAL, not also as the relayed ERROR.
            self.cout.clear();
            return Err(SessionError::Startup(Box::new(PgError::fatal(
                SqlState::ProtocolViolation,
                msg,
            ))));
        }
        let conn = &self.backend.as_ref().expect("held during startup").conn;
        Ok(conn.server_params.clone())
    }

    /// Relays until the client leaves or the proxy shuts down.
    pub async fn run(&mut self) -> Result<(), SessionError> {
        // One wait for shutdown for the whole session, on a token of its own: a wait made anew
        // per message registered and unregistered under a lock that every session shares. Gated:
        // polled again only once it fires, not on each pass of the loop.
        let mut shutdown = gated::Gated::new(self.shared.shutdown.child_token().cancelled_owned());
        // Reads that find data never return `Pending` to the runtime ([`crate::net`]): a session
        // that always finds some yields after this many passes, so the others of its worker run.
        const PASSES_BEFORE_YIELD: u32 = 128;
        let mut passes = 0u32;
        loop {
            passes += 1;
            if passes == PASSES_BEFORE_YIELD {
                passes = 0;
                tokio::task::yield_now().await;
            }
            // Between transactions (in either pool mode) the client may be told to go at shutdown.
            let idle = self.backend.is_none()
                || (self.status == TxStatus::Idle
                    && self.replies.is_empty()
                    && !self.replies.copy_in);
            tokio::select! {
                // Fixed order: the backend first, so replies flow before new requests are read.
                biased;
                read = read_backend(&mut self.backend) => {
                    match read {
                        Ok(n) if n > 0 => self.on_backend_data()?,
                        Ok(_) => self.backend_lost("the server closed the connection".into()),
                        Err(e) => self.backend_lost(e.to_string()),
                    }
                    if !self.bout.is_empty() {
                        // What shardgate asks on its own (read-your-writes' WAL position).
                        self.flush_backend().await;
                    }
                    self.flush_client().await?;
                }
                read = read_client(&mut self.client, &mut self.cbuf) => {
                    match read? {
                        0 => return Ok(()),
                        n => self.note_received(n),
                    }
                    if let Flow::Close = self.on_client_data().await? {
                        return Ok(());
                    }
                    self.flush_backend().await;
                    self.flush_client().await?;
                }
                _ = &mut shutdown, if idle => {
                    let err = PgError::fatal(SqlState::AdminShutdown, "shardgate is shutting down");
                    err.encode(&mut self.cout);
                    self.flush_client().await?;
                    return Ok(());
                }
            }
            if self.flight.is_some() && self.bout.is_empty() {
                // Written to its server (or answered here): it is under way there.
                self.land();
            }
        }
    }

    /// Handles every complete message in the read buffer. Each is copied out of it into the
    /// session's `frame` buffer (taken out of `self` while the message is handled), not split off
    /// as a reference-counted `Bytes`: a short message's copy costs less than the reference
    /// count's increment and decrement and the split's bookkeeping (an extended-protocol query
    /// sends five messages). The few handlers that keep a message copy it.
    async fn on_client_data(&mut self) -> Result<Flow, SessionError> {
        let mut frame = std::mem::take(&mut self.frame);
        let flow = loop {
            let h = match peek_frame(&self.cbuf, self.max_message) {
                Ok(Some(h)) => h,
                Ok(None) => break Ok(Flow::Continue),
                Err(e) => break Err(e.into()),
            };
            frame.clear();
            frame.extend_from_slice(&self.cbuf[..h.total_len]);
            bytes::Buf::advance(&mut self.cbuf, h.total_len);
            if let Some(err) = self.lost.take() {
                // The client's transaction died with its backend. Whatever it sends next was
                // meant for that transaction, so it is refused rather than run outside it.
                if h.tag == crate::protocol::frontend::QUERY {
                    self.push_synthetic(|out| client::query_error(out, &err, TxStatus::Idle));
                    continue;
                }
                self.extended_error(err);
            }
            match self.on_client_message(h.tag, &frame).await {
                Ok(Flow::Continue) => {}
                other => break other,
            }
        };
        if frame.capacity() > FRAME_KEPT {
            // A large message (COPY data, a long statement) does not keep its size allocated.
            frame = Vec::new();
        }
        self.frame = frame;
        flow
    }

    /// In transaction mode, gives the backend back once it is idle with nothing outstanding.
    fn release_if_done(&mut self) {
        // While skipping to the client's Sync the backend is skipping too: it is not done.
        // With a deferred BEGIN the client is in a transaction no server has seen yet.
        let idle = self.status == TxStatus::Idle || self.deferred_begin.is_some();
        let done =
            idle && self.replies.is_empty() && !self.replies.copy_in && !self.skip_until_sync;
        if done && self.mode == PoolMode::Transaction && !self.pinned && self.backend.is_some() {
            self.backend = None;
            self.publish_cancel(None);
        }
    }

    /// them all (then, outside a transaction, it goes back to the pool): a pipelined batch that
    /// needs another shard starts only after the batches before it have ended, so replies stay
    /// in the order the client sent the batches.
    pub(super) async fn finish_earlier_batches(&mut self) -> Result<(), SessionError> {
        self.flush_backend().await;
        self.flush_client().await?;
        while self.backend.is_some() && !self.replies.is_empty() {
            match read_backend(&mut self.backend).await {
                Ok(n) if n > 0 => self.on_backend_data()?,
                Ok(_) => self.backend_lost("the server closed the connection".into()),
                Err(e) => self.backend_lost(e.to_string()),
            }
            self.flush_client().await?;
        }
        Ok(())
    }

    /// The backend died or broke. The client gets a 08006 naming the shard, now if it is waiting
    /// for replies, else on its next message; the next transaction gets a fresh backend.
    fn backend_lost(&mut self, reason: String) {
        let err = self.lost_error(&reason);
        if let Some(mut held) = self.backend.take() {
            self.note_lost(held.at());
            held.conn.mark_broken();
            tracing::warn!(shard = %held.shard(), backend = held.conn.name(), %reason, "backend connection lost");
        }
        self.publish_cancel(None);
        // The transaction's parts on other shards die with it.
        self.abandon_parked();
        self.forget_transaction();
        let owed = self.replies.owed_ready();
        let was_idle = self.status == TxStatus::Idle && owed == 0;
        self.replies.clear();
        self.bout.clear();
        self.pending_cmds.clear();
        self.cycle_failed = false;
        self.status = TxStatus::Idle;
        if owed > 0 {
            err.encode(&mut self.cout);
            for _ in 0..owed {
                bmsg::ready_for_query(&mut self.cout, TxStatus::Idle);
            }
        } else if !was_idle {
            self.lost = Some(err);
        }
    }

    fn lost_error(&self, reason: &str) -> PgError {
        let shard = self
            .backend
            .as_ref()
            .map(|h| h.shard().to_string())
            .unwrap_or_default();
        PgError::error(
            SqlState::ConnectionFailure,
            format!("connection to shard \"{shard}\" was lost: {reason}"),
        )
        .with_detail("The current transaction, if any, was rolled back by the server.")
        .with_hint("Retry the transaction; it will run on a fresh server connection.")
    }

    /// Writes queued messages to the backend. A failed write is a lost backend.
    async fn flush_backend(&mut self) {
        if self.bout.is_empty() {
            return;
        }
        let Some(held) = self.backend.as_mut() else {
            self.bout.clear();
            return;
        };
        // Most writes go whole into the socket's buffer at once; only a full one is waited on.
        let result = match crate::net::taken(held.conn.try_send(&self.bout)) {
            Ok(n) if n == self.bout.len() => Ok(()),
            Ok(n) => held.conn.write_all(&self.bout[n..]).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.backend_lost(e.to_string());
        }
        self.bout.clear();
    }

    async fn flush_client(&mut self) -> std::io::Result<()> {
        if !self.cout.is_empty() {
            self.note_sent_bytes(self.cout.len());
            let n = crate::net::taken(self.client.try_send(&self.cout))?;
            if n < self.cout.len() {
                self.client.write_all(&self.cout[n..]).await?;
            }
            self.cout.clear();
        }
        Ok(())
    }

    /// Sends the end of the startup phase (ParameterStatus, BackendKeyData, ReadyForQuery).
    pub async fn greet(&mut self, hello: &[u8]) -> std::io::Result<()> {
        self.client.write_all(hello).await
    }

    /// Writes a final error to the client, best effort.
    pub async fn send_fatal(&mut self, err: &PgError) {
        err.encode(&mut self.cout);
        let _ = self.flush_client().await;
    }
}

impl<S> Drop for Session<S> {
    /// A client that leaves mid-transaction (or mid-query) must not leave an open transaction or a
    /// lock behind: its backend is closed, and Postgres rolls back on the closed socket. In
    /// session mode the backend is closed too, since SQL-level state (temp tables, LISTEN,
    /// advisory locks) cannot be tracked.
    fn drop(&mut self) {
        self.land();
        for held in &mut self.parked {
            held.conn.mark_broken(); // idle in an unfinished transaction
        }
        if let Some(held) = self.backend.as_mut() {
            let clean = self.status == TxStatus::Idle
                && self.replies.is_empty()
                && self.mode == PoolMode::Transaction;
            if !clean {
                held.conn.mark_broken();
            }
        }
    }
}

pub(super) fn checkout_error(e: CheckoutError) -> PgError {
    match &e {
        CheckoutError::Exhausted { .. } => PgError::error(SqlState::TooManyConnections, format!("shardgate: {e}"))
            .with_hint("Raise pool.size or pool.checkout_timeout_ms, or look for long transactions holding server connections."),
        CheckoutError::Connecting { .. } => PgError::error(SqlState::TooManyConnections, format!("shardgate: {e}"))
            .with_hint("The server was slow to accept a new connection: check its load, or raise pool.checkout_timeout_ms."),
        CheckoutError::Unreachable { .. } => PgError::error(SqlState::ConnectionFailure, format!("shardgate: {e}"))
            .with_hint("Check that the shard's server is running and accepts connections from shardgate."),
    }
}

/// The held backend's next bytes; never ready while none is held. A poll function rather than
/// an `async fn` around `read_more`: `run`'s `select!` builds and polls it in every pass.
fn read_backend(
    backend: &mut Option<Held>,
) -> impl std::future::Future<Output = std::io::Result<usize>> + '_ {
    std::future::poll_fn(move |cx| match backend {
        Some(held) => held.conn.poll_read_more(cx),
        None => std::task::Poll::Pending,
    })
}

/// The client's next bytes, as a poll function for `run`'s `select!` (like [`read_backend`]).
fn read_client<'a, S: ClientStream>(
    client: &'a mut S,
    buf: &'a mut BytesMut,
) -> impl std::future::Future<Output = std::io::Result<usize>> + 'a {
    std::future::poll_fn(move |cx| client.poll_recv(cx, buf))
}
