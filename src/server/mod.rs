//! The listener and the startup phase: accepting clients, TLS, authentication, CancelRequest, and
//! the drain on shutdown. An authenticated client is handed to a [`crate::session::Session`].

pub mod auth;
pub mod cancel;
mod startup;
pub mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::protocol::{PgError, SqlState};
use crate::session::Shared;
use crate::workers::Workers;
use auth::{AuthError, ScramVerifier};

/// A client that has not finished logging in after this long is disconnected (Postgres'
/// `authentication_timeout` default).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// What the listener and every connection share.
pub struct State {
    pub shared: Arc<Shared>,
    pub tls: Option<TlsAcceptor>,
    pub cancels: Arc<cancel::CancelRegistry>,
    /// One permit per client connection (`pool.max_clients`).
    pub clients: Arc<Semaphore>,
    /// SCRAM verifiers derived from plain-text passwords, so the 4096 PBKDF2 rounds are paid
    /// once per user and password rather than at every login.
    verifiers: Mutex<HashMap<String, (String, ScramVerifier)>>,
}

impl State {
    pub fn new(shared: Arc<Shared>, tls: Option<TlsAcceptor>, max_clients: usize) -> State {
        State {
            shared,
            tls,
            cancels: Arc::default(),
            clients: Arc::new(Semaphore::new(max_clients)),
            verifiers: Mutex::default(),
        }
    }

    fn verifier(&self, user: &str, password: &str) -> Result<ScramVerifier, AuthError> {
        if password.starts_with("SCRAM-SHA-256$") {
            return ScramVerifier::parse(password);
        }
        let mut cache = self.verifiers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((pw, v)) = cache.get(user) {
            if pw == password {
                return Ok(v.clone());
            }
        }
        let salt: [u8; 16] = rand::random();
        let v = ScramVerifier::from_password(password, &salt, 4096);
        cache.insert(user.to_owned(), (password.to_owned(), v.clone()));
        Ok(v)
    }
}

/// Accepts clients until shutdown, dealing them to the workers in turn, then waits for the
/// sessions to finish, up to `drain`.
pub async fn serve(listener: TcpListener, state: Arc<State>, drain: Duration, workers: Workers) {
    let tracker = TaskTracker::new();
    let shutdown = state.shared.shutdown.clone();
    let mut next = 0;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(permit) = state.clients.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "client refused: max_clients reached");
            tracker.spawn(refuse_too_many(tcp));
            continue;
        };
        let state = state.clone();
        let connected = state.shared.store.metrics().client_connected();
        let worker = next;
        next = (next + 1) % workers.len();
        // Registered with the accepting runtime's driver; moved to the worker's below.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot hand the client to a worker");
                continue;
            }
        };
        let tasks = tracker.clone();
        let session = tracker.track_future(async move {
            let admission = Admission {
                _connected: connected,
                _permit: permit,
            };
            let tcp = match tokio::net::TcpStream::from_std(tcp) {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "cannot hand the client to a worker");
                    return;
                }
            };
            let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
            match startup::serve(state, tcp, deadline, worker).await {
                Ok(Some(session)) => session.spawn(&tasks, admission),
                Ok(None) => {}
                Err(e) => tracing::info!(%peer, error = %e, "client connection ended"),
            }
        });
        workers.spawn(worker, session);
    }
    drop(listener);
    tracker.close();
    tracing::info!(
        clients = tracker.len(),
        "shutting down: waiting for open transactions to finish"
    );
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!(
            clients = tracker.len(),
            "drain deadline reached: closing the remaining connections"
        );
    }
}

/// What a client connection holds from its accept to its end: its place under
/// `pool.max_clients`, and its count in the connected-clients gauge.
pub(crate) struct Admission {
    _connected: crate::metrics::ClientGuard,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

async fn refuse_too_many(mut tcp: tokio::net::TcpStream) {
    let mut out = BytesMut::new();
    PgError::fatal(
        SqlState::TooManyConnections,
        "sorry, too many clients already",
    )
    .with_hint("shardgate's pool.max_clients is reached; raise it or close idle clients.")
    .encode(&mut out);
    let _ = tcp.write_all(&out).await;
}
