//! The client side of a Postgres login: StartupMessage, then cleartext, MD5 or SCRAM-SHA-256.

use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{BackendError, BackendKeyData, CancelTarget, Connection, ServerSession, Target};

/// One login in progress: the stream, the buffers and the target's name for errors.
struct Login<'a> {
    target: &'a Target,
    name: String,
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
    scram: Option<ScramSha256>,
}

pub(super) async fn connect(target: &Target, shard: Arc<str>) -> Result<Connection, BackendError> {
    let name = target.to_string();
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| BackendError::Connect {
            target: name.clone(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    let addr = stream.peer_addr().map_err(|source| BackendError::Connect {
        target: name.clone(),
        source,
    })?;
    let mut login = Login {
        target,
        name,
        stream,
        buf: BytesMut::with_capacity(8192),
        out: BytesMut::new(),
        scram: None,
    };
    login.send_startup().await?;
    let mut params = Vec::new();
    let mut key = None;
    loop {
        match login.next_message().await? {
            Message::ParameterStatus(p) => {
                let name = p.name().map_err(|e| login.problem(e))?.to_owned();
                let value = p.value().map_err(|e| login.problem(e))?.to_owned();
                params.push((name, value));
            }
            Message::BackendKeyData(k) => {
                key = Some(BackendKeyData {
                    pid: k.process_id(),
                    secret: k.secret_key(),
                });
            }
            Message::ReadyForQuery(_) => break,
            Message::NoticeResponse(_) => {}
            Message::ErrorResponse(e) => return Err(login.rejected(&e)),
            other => login.authenticate(other).await?,
        }
    }
    let key = key.ok_or_else(|| login.problem("the server sent no BackendKeyData"))?;
    Ok(Connection {
        stream: login.stream,
        buf: login.buf,
        server_params: params,
        session: ServerSession::default(),
        cancel: CancelTarget { addr, key },
        target: login.name,
        shard,
        broken: false,
    })
}

impl Login<'_> {
    async fn send_startup(&mut self) -> Result<(), BackendError> {
        let params = [
            ("user", self.target.user.as_str()),
            ("database", self.target.database.as_str()),
            ("application_name", "shardgate"),
        ];
        frontend::startup_message(params.iter().copied(), &mut self.out)
            .map_err(|e| self.problem(e))?;
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), BackendError> {
        let out = self.out.split();
        self.stream
            .write_all(&out)
            .await
            .map_err(|source| BackendError::Io {
                target: self.name.clone(),
                source,
            })
    }

    async fn next_message(&mut self) -> Result<Message, BackendError> {
        loop {
            if let Some(msg) = Message::parse(&mut self.buf).map_err(|e| self.problem(e))? {
                return Ok(msg);
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|source| BackendError::Io {
                    target: self.name.clone(),
                    source,
                })?;
            if n == 0 {
                return Err(self.problem("the server closed the connection during login"));
            }
        }
    }

    async fn authenticate(&mut self, msg: Message) -> Result<(), BackendError> {
        match msg {
            Message::AuthenticationOk => return Ok(()),
            Message::AuthenticationCleartextPassword => {
                let password = self.password()?.to_owned();
                frontend::password_message(password.as_bytes(), &mut self.out)
                    .map_err(|e| self.problem(e))?;
            }
            Message::AuthenticationMd5Password(body) => {
                let hash = md5_hash(
                    self.target.user.as_bytes(),
                    self.password()?.as_bytes(),
                    body.salt(),
                );
                frontend::password_message(hash.as_bytes(), &mut self.out)
                    .map_err(|e| self.problem(e))?;
            }
            Message::AuthenticationSasl(body) => self.scram_start(body.mechanisms())?,
            Message::AuthenticationSaslContinue(body) => {
                let scram = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| problem(&self.name, "SASL continue before start"))?;
                scram
                    .update(body.data())
                    .map_err(|e| problem(&self.name, e))?;
                let msg = scram.message().to_vec();
                frontend::sasl_response(&msg, &mut self.out).map_err(|e| self.problem(e))?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let scram = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| problem(&self.name, "SASL final before start"))?;
                return scram
                    .finish(body.data())
                    .map_err(|e| problem(&self.name, e));
            }
            _ => {
                return Err(
                    self.problem("unexpected message during login (GSSAPI/SSPI are not supported)")
                )
            }
        }
        self.flush().await
    }

    fn scram_start(
        &mut self,
        mut mechanisms: postgres_protocol::message::backend::SaslMechanisms<'_>,
    ) -> Result<(), BackendError> {
        use fallible_iterator::FallibleIterator;
        let mut found = false;
        while let Some(m) = mechanisms.next().map_err(|e| self.problem(e))? {
            found |= m == SCRAM_SHA_256;
        }
        if !found {
            return Err(self.problem(
                "the server offers no SASL mechanism shardgate supports (SCRAM-SHA-256)",
            ));
        }
        let scram = ScramSha256::new(self.password()?.as_bytes(), ChannelBinding::unsupported());
        frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut self.out)
            .map_err(|e| self.problem(e))?;
        self.scram = Some(scram);
        Ok(())
    }

    fn password(&self) -> Result<&str, BackendError> {
        self.target.password.as_deref().ok_or_else(|| {
            self.problem(
                "the server asks for a password and the backend URL has none: add it to the URL",
            )
        })
    }

    fn problem(&self, e: impl std::fmt::Display) -> BackendError {
        problem(&self.name, e)
    }

    fn rejected(&self, e: &ErrorResponseBody) -> BackendError {
        use fallible_iterator::FallibleIterator;
        let (mut code, mut message) = (String::new(), String::new());
        let mut fields = e.fields();
        while let Ok(Some(field)) = fields.next() {
            match field.type_() {
                b'C' => code = String::from_utf8_lossy(field.value_bytes()).into_owned(),
                b'M' => message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
                _ => {}
            }
        }
        BackendError::Rejected {
            target: self.name.clone(),
            code,
            message,
        }
    }
}

fn problem(name: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Login {
        target: name.to_owned(),
        problem: e.to_string(),
    }
}
