//! One raw, framed TCP connection to a Postgres server, and its login.
//!
//! After login the connection is a byte pipe: the session writes client frames into it and reads
//! server frames out of [`Connection::buf`] without re-encoding them. Only the login is decoded here
//! (with postgres-protocol's zero-copy backend messages and its SCRAM/MD5 client).

pub mod control;
mod login;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use crate::protocol::backend::BackendKeyData;

/// Where a backend lives and whom to log in as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
}

impl std::fmt::Display for Target {
    /// Never shows the password: this is what logs and error messages print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error("timed out after {after:?} connecting to {target}")]
    ConnectTimeout { target: String, after: Duration },
    #[error("{target} rejected the login: {message} (SQLSTATE {code})")]
    Rejected {
        target: String,
        code: String,
        message: String,
    },
    #[error("cannot log in to {target}: {problem}")]
    Login { target: String, problem: String },
    #[error("connection to {target} lost: {source}")]
    Io {
        target: String,
        source: std::io::Error,
    },
}

/// What a CancelRequest needs to reach the server process running a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelTarget {
    pub addr: SocketAddr,
    pub key: BackendKeyData,
}

impl CancelTarget {
    /// Sends a CancelRequest on a new connection, as Postgres requires. Best effort by design:
    /// Postgres itself never says whether a cancel did anything.
    pub async fn send(self) -> std::io::Result<()> {
        let mut stream = TcpStream::connect(self.addr).await?;
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(
            self.key.pid,
            self.key.secret,
            &mut buf,
        );
        stream.write_all(&buf).await?;
        // Postgres closes the connection when it has read the request; wait for that so the cancel
        // has been delivered before we report it sent.
        let _ = stream.read(&mut [0u8; 1]).await;
        Ok(())
    }
}

/// Session state that shardgate has left on a server connection. It travels with the connection
/// through the pool, so the next session that gets it knows what to add or undo.
#[derive(Debug, Default)]
pub struct ServerSession {
    /// Ids of the statements prepared here under shardgate's server-side names
    /// ([`crate::session::prepared`]); looked up on every Bind.
    pub prepared: HashSet<u64, crate::session::prepared::IdHasher>,
    /// The session settings in force here.
    pub settings: crate::session::settings::Applied,
}

pub struct Connection {
    stream: TcpStream,
    /// Bytes read from the server and not yet consumed by the session.
    pub buf: BytesMut,
    /// The server's reported parameters, kept current from every ParameterStatus relayed.
    pub server_params: Vec<(String, String)>,
    pub session: ServerSession,
    cancel: CancelTarget,
    target: String,
    /// The shard this server connection serves (a pool's connections all serve one).
    shard: Arc<str>,
    /// Set when the connection's protocol state is unknown (I/O error, client gone mid-query):
    /// the pool then drops it instead of handing it out again.
    broken: bool,
}

impl Connection {
    /// Connects and logs in, to serve shard `shard`; returns once the server has sent
    /// ReadyForQuery.
    pub async fn connect(
        target: &Target,
        shard: Arc<str>,
        timeout: Duration,
    ) -> Result<Connection, BackendError> {
        let name = target.to_string();
        match tokio::time::timeout(timeout, login::connect(target, shard)).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::ConnectTimeout {
                target: name,
                after: timeout,
            }),
        }
    }

    /// Reads more bytes from the server into `buf`. `Ok(0)` means the server closed the connection.
    pub async fn read_more(&mut self) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read_more(cx)).await
    }

    /// [`Connection::read_more`] as a poll: the session's loop polls it in every pass, and a
    /// future nested in a future costs its entry each time.
    pub fn poll_read_more(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<usize>> {
        crate::net::poll_recv(&self.stream, cx, &mut self.buf)
    }

    /// Writes what the socket takes now, without waiting (`WouldBlock`: nothing).
    pub fn try_send(&mut self, data: &[u8]) -> std::io::Result<usize> {
        crate::net::try_send(&self.stream, data)
    }

    /// tokio's own future, not one wrapping it (a level less to enter on every poll).
    pub fn write_all<'a>(
        &'a mut self,
        data: &'a [u8],
    ) -> impl std::future::Future<Output = std::io::Result<()>> + 'a {
        self.stream.write_all(data)
    }

    pub fn cancel_target(&self) -> CancelTarget {
        self.cancel
    }

    pub fn name(&self) -> &str {
        &self.target
    }

    /// The shard it serves. Asked of the connection rather than cloned per transaction: the
    /// name's reference count is shared by every session of every worker.
    pub fn shard(&self) -> &Arc<str> {
        &self.shard
    }

    /// Whether an idle connection has already been closed by the server (EOF, or an unsolicited
    /// FATAL such as an administrator's shutdown, waiting unread). Non-blocking: nothing has been
    /// sent on an idle connection, so a stale one can be replaced without risk.
    pub fn is_stale(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut probe = [0u8; 1];
        !matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    pub fn mark_broken(&mut self) {
        self.broken = true;
    }
}
