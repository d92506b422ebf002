//! The startup phase of one client connection: SSL/GSS negotiation, the StartupMessage,
//! authentication, and the hand-off to a session.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgwire::messages::startup::PasswordMessageFamily;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::auth::{self, AuthError, ScramServer, ScramVerifier};
use super::State;
use crate::config::{AuthMethod, Config};
use crate::protocol::backend::{self as bmsg, Auth, ParameterStatus, TxStatus};
use crate::protocol::startup::{self, StartupPacket};
use crate::protocol::{peek_frame, write_message, PgError, ProtocolError, SqlState};
use crate::session::{CancelSlot, ClientInfo, Session};

/// Largest message a client may send before it is authenticated.
const MAX_AUTH_MESSAGE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("{0}")]
    Refused(PgError),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("the client did not finish logging in within the startup timeout")]
    Timeout,
}

impl StartupError {
    fn to_client(&self) -> Option<PgError> {
        match self {
            StartupError::Io(_) | StartupError::Tls(_) | StartupError::Timeout => None,
            StartupError::Protocol(e) => {
                Some(PgError::fatal(SqlState::ProtocolViolation, e.to_string()))
            }
            StartupError::Refused(e) => Some(e.clone()),
        }
    }
}

/// A client's session, logged in and greeted, ready to run.
// Not boxed: it is moved once, into the future that runs it, which holds the session anyway.
#[allow(clippy::large_enum_variant)]
pub enum Started {
    Plain(Running<TcpStream>),
    Tls(Running<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Started {
    /// Runs the session, until the client leaves, as a task of its own on the current worker
    /// (tracked by `tasks` for the drain), holding `admission` to its end. Its own task rather
    /// than the rest of the startup's: a running session is woken up three times per query, and
    /// each wake-up would pass through the startup's task and its levels first (about 140
    /// instructions per query).
    pub fn spawn(self, tasks: &TaskTracker, admission: super::Admission) {
        match self {
            Started::Plain(running) => tasks.spawn(running.admitted(admission).run()),
            Started::Tls(running) => tasks.spawn(running.admitted(admission).run()),
        };
    }
}

/// A session past its startup, with what its end is logged with and its cancel key's
/// registration. Fields drop in order: the key stops working before the session goes, and the
/// connection's admission is given back last.
pub struct Running<S> {
    _registration: super::cancel::Registration,
    session: Session<S>,
    user: String,
    database: String,
    _admission: Option<super::Admission>,
}

impl<S: crate::net::ClientStream> Running<S> {
    fn admitted(self, admission: super::Admission) -> Self {
        Running {
            _admission: Some(admission),
            ..self
        }
    }

    async fn run(mut self) {
        let (user, database) = (&self.user, &self.database);
        if let Err(e) = self.session.run().await {
            if let Some(err) = e.to_client() {
                self.session.send_fatal(&err).await;
            }
            tracing::warn!(%user, %database, error = %e, "client connection closed on error");
        } else {
            tracing::info!(%user, %database, "client disconnected");
        }
    }
}

/// The startup of one client connection, up to a session ready to run (`None`: the connection
/// only asked to cancel a query, or the session could not start and the client was told why).
/// Everything here must be done by `deadline`; the session itself has no limit. The caller runs
/// the session: as the task's own future rather than nested in this one, so that every wake-up
/// of a running session does not pass through the startup's layers (bench/README.md, tenth
/// session).
pub async fn serve(
    state: Arc<State>,
    mut tcp: TcpStream,
    deadline: Instant,
    worker: usize,
) -> Result<Option<Started>, StartupError> {
    let _ = tcp.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(1024);
    let mut packet = match before(deadline, read_packet(&mut tcp, &mut buf)).await {
        Ok(p) => p,
        Err(e) => return refuse(&mut tcp, e).await,
    };
    loop {
        match packet {
            StartupPacket::SslRequest if state.tls.is_some() => {
                if !buf.is_empty() {
                    // Bytes sent before the TLS handshake must not be read as if they were protected.
                    return Err(ProtocolError::Startup(
                        "data received before the TLS handshake".into(),
                    )
                    .into());
                }
                tcp.write_all(b"S").await?;
                let acceptor = state.tls.clone().expect("checked above");
                let mut tls = before(deadline, async {
                    acceptor.accept(tcp).await.map_err(StartupError::Tls)
                })
                .await?;
                let packet = match before(deadline, read_packet(&mut tls, &mut buf)).await {
                    Ok(p) => p,
                    Err(e) => return refuse(&mut tls, e).await,
                };
                let running = serve_client(state, tls, packet, buf, deadline, worker).await?;
                return Ok(running.map(Started::Tls));
            }
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                tcp.write_all(b"N").await?;
                packet = match before(deadline, read_packet(&mut tcp, &mut buf)).await {
                    Ok(p) => p,
                    Err(e) => return refuse(&mut tcp, e).await,
                };
            }
            _ => {
                let running = serve_client(state, tcp, packet, buf, deadline, worker).await?;
                return Ok(running.map(Started::Plain));
            }
        }
    }
}

async fn before<T>(
    deadline: Instant,
    step: impl std::future::Future<Output = Result<T, StartupError>>,
) -> Result<T, StartupError> {
    tokio::time::timeout_at(deadline, step)
        .await
        .unwrap_or(Err(StartupError::Timeout))
}

async fn read_packet<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
) -> Result<StartupPacket, StartupError> {
    loop {
        if let Some(p) = startup::decode(buf)? {
            return Ok(p);
        }
        if s.read_buf(buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
}

async fn serve_client<S>(
    state: Arc<State>,
    mut s: S,
    packet: StartupPacket,
    mut buf: BytesMut,
    deadline: Instant,
    worker: usize,
) -> Result<Option<Running<S>>, StartupError>
where
    S: crate::net::ClientStream,
{
    let (minor, params) = match packet {
        StartupPacket::Cancel(key) => {
            state.cancels.cancel(key).await;
            return Ok(None);
        }
        StartupPacket::Startup { minor, params } => (minor, params),
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
            return Err(ProtocolError::Startup("encryption was requested twice".into()).into());
        }
    };
    match before(deadline, login(&state, &mut s, &mut buf, minor, &params)).await {
        Ok(info) => start_session(state, s, info, buf, worker).await,
        Err(e) => refuse(&mut s, e).await,
    }
}

/// Tells the client why it is refused (when it can be told), then ends the connection.
async fn refuse<S: AsyncWrite + Unpin, T>(s: &mut S, e: StartupError) -> Result<T, StartupError> {
    if let Some(err) = e.to_client() {
        let mut out = BytesMut::new();
        err.encode(&mut out);
        let _ = s.write_all(&out).await;
    }
    Err(e)
}

/// Checks who the client is and where it wants to go. On success AuthenticationOk has been sent.
async fn login<S>(
    state: &State,
    s: &mut S,
    buf: &mut BytesMut,
    minor: u16,
    params: &BTreeMap<String, String>,
) -> Result<ClientInfo, StartupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    negotiate_version(s, minor, params).await?;
    let user = params
        .get("user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            StartupError::Refused(PgError::fatal(
                SqlState::InvalidAuthorizationSpecification,
                "no PostgreSQL user name specified in startup packet",
            ))
        })?;
    let database = params
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(user)
        .clone();
    let snapshot = state.shared.store.load();
    authenticate(state, &snapshot.config, s, buf, user).await?;
    if !snapshot.databases.contains_key(&database) {
        let err = PgError::fatal(
            SqlState::InvalidCatalogName,
            format!("database \"{database}\" does not exist"),
        )
        .with_hint(format!(
            "shardgate serves: {}",
            snapshot
                .config
                .databases
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return Err(StartupError::Refused(err));
    }
    let mut out = BytesMut::new();
    Auth::Ok.encode(&mut out);
    s.write_all(&out).await?;
    Ok(ClientInfo {
        database,
        user: user.clone(),
        params: params.clone(),
        cancel: CancelSlot::default(),
    })
}

/// Protocol 3.x with x > 0, or `_pq_` options: answer as Postgres does, offering 3.0.
async fn negotiate_version<S: AsyncWrite + Unpin>(
    s: &mut S,
    minor: u16,
    params: &BTreeMap<String, String>,
) -> Result<(), StartupError> {
    let unknown: Vec<&String> = params.keys().filter(|k| k.starts_with("_pq_.")).collect();
    if minor == 0 && unknown.is_empty() {
        return Ok(());
    }
    let mut out = BytesMut::new();
    write_message(&mut out, bmsg::NEGOTIATE_PROTOCOL_VERSION, |out| {
        out.put_i32(3 << 16);
        out.put_i32(unknown.len() as i32);
        for k in &unknown {
            crate::protocol::put_cstr(out, k.as_bytes());
        }
    });
    s.write_all(&out).await?;
    Ok(())
}

async fn authenticate<S>(
    state: &State,
    config: &Config,
    s: &mut S,
    buf: &mut BytesMut,
    user: &str,
) -> Result<(), StartupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let configured = config.user(user);
    let failed = || {
        StartupError::Refused(PgError::fatal(
            SqlState::InvalidPassword,
            format!("password authentication failed for user \"{user}\""),
        ))
    };
    if configured.is_some_and(|u| u.auth == AuthMethod::Md5) {
        let u = configured.expect("checked above");
        let salt: [u8; 4] = rand::random();
        send_auth(s, Auth::Md5 { salt }).await?;
        let msg = read_password_message(s, buf).await?;
        let response = msg.into_password().map_err(|e| bad_auth(e.to_string()))?;
        return if auth::md5_check(user, &u.password, salt, &response.password) {
            Ok(())
        } else {
            Err(failed())
        };
    }
    // Unknown users go through the same exchange with a verifier nobody knows, so a client cannot
    // tell a wrong user name from a wrong password.
    let verifier = match configured {
        Some(u) => state
            .verifier(&u.name, &u.password)
            .map_err(|e| bad_auth(e.to_string()))?,
        None => unknown_user_verifier(user),
    };
    let mut scram = ScramServer::new(verifier, auth::random_nonce(&mut rand::rng()));
    send_auth(
        s,
        Auth::Sasl {
            mechanisms: &[auth::SCRAM_SHA_256],
        },
    )
    .await?;
    let first = read_password_message(s, buf)
        .await?
        .into_sasl_initial_response()
        .map_err(|e| bad_auth(e.to_string()))?;
    let data = first.data.as_deref().unwrap_or_default();
    let server_first = scram
        .client_first(&first.auth_method, data)
        .map_err(|e| auth_error(e, &failed))?;
    send_auth(
        s,
        Auth::SaslContinue {
            data: &server_first,
        },
    )
    .await?;
    let resp = read_password_message(s, buf)
        .await?
        .into_sasl_response()
        .map_err(|e| bad_auth(e.to_string()))?;
    let server_final = scram
        .client_final(&resp.data)
        .map_err(|e| auth_error(e, &failed))?;
    send_auth(
        s,
        Auth::SaslFinal {
            data: &server_final,
        },
    )
    .await
}

fn unknown_user_verifier(user: &str) -> ScramVerifier {
    use sha2::Digest;
    let salt =
        sha2::Sha256::digest(format!("shardgate-unknown-user:{user}").as_bytes())[..16].to_vec();
    ScramVerifier {
        iterations: 4096,
        salt,
        stored_key: rand::random(),
        server_key: rand::random(),
    }
}

fn auth_error(e: AuthError, failed: &dyn Fn() -> StartupError) -> StartupError {
    if e.is_wrong_password() {
        failed()
    } else {
        bad_auth(e.to_string())
    }
}

fn bad_auth(problem: String) -> StartupError {
    StartupError::Refused(PgError::fatal(
        SqlState::ProtocolViolation,
        format!("authentication failed: {problem}"),
    ))
}

async fn send_auth<S: AsyncWrite + Unpin>(s: &mut S, auth: Auth<'_>) -> Result<(), StartupError> {
    let mut out = BytesMut::new();
    auth.encode(&mut out);
    s.write_all(&out).await?;
    Ok(())
}

async fn read_password_message<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
) -> Result<PasswordMessageFamily, StartupError> {
    loop {
        if let Some(h) = peek_frame(buf, MAX_AUTH_MESSAGE)? {
            if h.tag != crate::protocol::frontend::PASSWORD {
                return Err(ProtocolError::Unexpected {
                    tag: h.tag,
                    context: "while a password response was expected",
                }
                .into());
            }
            let frame = buf.split_to(h.total_len);
            return Ok(PasswordMessageFamily::Raw(BytesMut::from(
                &frame[crate::protocol::HEADER_LEN..],
            )));
        }
        if s.read_buf(buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
}

/// Starts the client's session: its startup settings applied on a backend, its cancel key
/// registered, and the client greeted.
async fn start_session<S>(
    state: Arc<State>,
    s: S,
    info: ClientInfo,
    leftover: BytesMut,
    worker: usize,
) -> Result<Option<Running<S>>, StartupError>
where
    S: crate::net::ClientStream,
{
    let (database, user) = (info.database.clone(), info.user.clone());
    let slot = info.cancel.clone();
    let mut session = match Session::new(s, state.shared.clone(), info, leftover, worker) {
        Ok(session) => session,
        Err((mut s, err)) => {
            let mut out = BytesMut::new();
            err.encode(&mut out);
            let _ = s.write_all(&out).await;
            return Err(StartupError::Refused(err));
        }
    };
    let params = match session.startup().await {
        Ok(p) => p,
        Err(e) => {
            if let Some(err) = e.to_client() {
                session.send_fatal(&err).await;
            }
            tracing::info!(%user, %database, error = %e, "client refused at startup");
            return Ok(None);
        }
    };
    let (key, registration) = state.cancels.register(slot);
    let mut hello = BytesMut::new();
    for (name, value) in &params {
        ParameterStatus { name, value }.encode(&mut hello);
    }
    key.encode(&mut hello);
    bmsg::ready_for_query(&mut hello, TxStatus::Idle);
    session.greet(&hello).await?;
    tracing::info!(%user, %database, "client connected");
    Ok(Some(Running {
        _registration: registration,
        session,
        user,
        database,
        _admission: None,
    }))
}
