//! Errors of the wire format, and the Postgres `ErrorResponse` shardgate sends to clients.

use bytes::BytesMut;

use super::{put_cstr, write_message};

/// A malformed byte stream from a peer. The connection cannot continue after one of these.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("message '{}' of {len} bytes exceeds the limit of {max} bytes", char::from(*tag))]
    TooLarge { tag: u8, len: usize, max: usize },
    #[error("message '{}' has an invalid length {len}", char::from(*tag))]
    BadLength { tag: u8, len: i32 },
    #[error("malformed message '{}': bad {what}", char::from(*tag))]
    Malformed { tag: u8, what: &'static str },
    #[error("unexpected message '{}' {context}", char::from(*tag))]
    Unexpected { tag: u8, context: &'static str },
    #[error("startup packet: {0}")]
    Startup(String),
}

/// SQLSTATE codes shardgate itself raises (DESIGN §2.5). Backend errors pass through untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlState {
    FeatureNotSupported,
    ConnectionFailure,
    ProtocolViolation,
    TooManyConnections,
    InvalidPassword,
    InvalidAuthorizationSpecification,
    InvalidCatalogName,
    AdminShutdown,
    DuplicatePreparedStatement,
    UndefinedPreparedStatement,
    InternalError,
    InvalidParameterValue,
    InFailedSqlTransaction,
    InvalidRowCountInLimit,
    InvalidRowCountInOffset,
    NumericValueOutOfRange,
    DataException,
    TransactionResolutionUnknown,
    ProgramLimitExceeded,
    BadCopyFileFormat,
    InvalidTextRepresentation,
    NotNullViolation,
    QueryCanceled,
    CharacterNotInRepertoire,
    InvalidBinaryRepresentation,
    UndefinedObject,
}

impl SqlState {
    pub fn code(self) -> &'static str {
        match self {
            SqlState::FeatureNotSupported => "0A000",
            SqlState::ConnectionFailure => "08006",
            SqlState::ProtocolViolation => "08P01",
            SqlState::TooManyConnections => "53300",
            SqlState::InvalidPassword => "28P01",
            SqlState::InvalidAuthorizationSpecification => "28000",
            SqlState::InvalidCatalogName => "3D000",
            SqlState::AdminShutdown => "57P01",
            SqlState::DuplicatePreparedStatement => "42P05",
            SqlState::UndefinedPreparedStatement => "26000",
            SqlState::InternalError => "XX000",
            SqlState::InvalidParameterValue => "22023",
            SqlState::InFailedSqlTransaction => "25P02",
            SqlState::InvalidRowCountInLimit => "2201W",
            SqlState::InvalidRowCountInOffset => "2201X",
            SqlState::NumericValueOutOfRange => "22003",
            SqlState::DataException => "22000",
            SqlState::TransactionResolutionUnknown => "08007",
            SqlState::ProgramLimitExceeded => "54000",
            SqlState::BadCopyFileFormat => "22P04",
            SqlState::InvalidTextRepresentation => "22P02",
            SqlState::NotNullViolation => "23502",
            SqlState::QueryCanceled => "57014",
            SqlState::CharacterNotInRepertoire => "22021",
            SqlState::InvalidBinaryRepresentation => "22P03",
            SqlState::UndefinedObject => "42704",
        }
    }
}

/// An error shardgate reports to a client as an `ErrorResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    /// `ERROR` keeps the connection; `FATAL` is followed by closing it.
    pub fatal: bool,
    pub code: SqlState,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// Where the error happened (`CONTEXT:` in psql), e.g. `COPY users, line 3`.
    pub context: Option<String>,
}

impl PgError {
    pub fn error(code: SqlState, message: impl Into<String>) -> Self {
        PgError {
            fatal: false,
            code,
            message: message.into(),
            detail: None,
            hint: None,
            context: None,
        }
    }

    pub fn fatal(code: SqlState, message: impl Into<String>) -> Self {
        PgError {
            fatal: true,
            ..PgError::error(code, message)
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    pub fn encode(&self, out: &mut BytesMut) {
        let severity: &[u8] = if self.fatal { b"FATAL" } else { b"ERROR" };
        write_message(out, b'E', |out| {
            for (field, value) in [
                (b'S', Some(severity)),
                (b'V', Some(severity)),
                (b'C', Some(self.code.code().as_bytes())),
                (b'M', Some(self.message.as_bytes())),
                (b'D', self.detail.as_deref().map(str::as_bytes)),
                (b'H', self.hint.as_deref().map(str::as_bytes)),
                (b'W', self.context.as_deref().map(str::as_bytes)),
            ] {
                if let Some(value) = value {
                    out.extend_from_slice(&[field]);
                    put_cstr(out, value);
                }
            }
            out.extend_from_slice(&[0]);
        });
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend::ErrorFields;

    #[test]
    fn error_response_round_trips_through_the_backend_decoder() {
        let err = PgError::error(SqlState::ConnectionFailure, "shard s0 is unreachable")
            .with_hint("check that the server is running");
        let mut out = BytesMut::new();
        err.encode(&mut out);
        let header = crate::protocol::peek_frame(&out, 1 << 20).unwrap().unwrap();
        let fields = ErrorFields::parse(header.body(&out)).unwrap();
        assert_eq!(fields.severity, "ERROR");
        assert_eq!(fields.code, "08006");
        assert_eq!(fields.message, "shard s0 is unreachable");
        assert_eq!(
            fields.hint.as_deref(),
            Some("check that the server is running")
        );
    }
}
