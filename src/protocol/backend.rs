//! The server→client messages shardgate looks into or synthesizes. Everything else is relayed raw.

use bytes::{BufMut, BytesMut};

use super::{put_cstr, write_message, ProtocolError, Reader};

pub const AUTHENTICATION: u8 = b'R';
pub const BACKEND_KEY_DATA: u8 = b'K';
pub const PARAMETER_STATUS: u8 = b'S';
pub const READY_FOR_QUERY: u8 = b'Z';
pub const ERROR_RESPONSE: u8 = b'E';
pub const NOTICE_RESPONSE: u8 = b'N';
pub const NOTIFICATION_RESPONSE: u8 = b'A';
pub const COMMAND_COMPLETE: u8 = b'C';
pub const DATA_ROW: u8 = b'D';
pub const ROW_DESCRIPTION: u8 = b'T';
pub const NO_DATA: u8 = b'n';
pub const PARAMETER_DESCRIPTION: u8 = b't';
pub const PARSE_COMPLETE: u8 = b'1';
pub const BIND_COMPLETE: u8 = b'2';
pub const CLOSE_COMPLETE: u8 = b'3';
pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
pub const PORTAL_SUSPENDED: u8 = b's';
pub const COPY_IN_RESPONSE: u8 = b'G';
pub const COPY_OUT_RESPONSE: u8 = b'H';
pub const COPY_BOTH_RESPONSE: u8 = b'W';
pub const COPY_DATA: u8 = b'd';
pub const COPY_DONE: u8 = b'c';
pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';

/// The transaction status a ReadyForQuery reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    pub fn decode(body: &[u8]) -> Result<TxStatus, ProtocolError> {
        match body {
            b"I" => Ok(TxStatus::Idle),
            b"T" => Ok(TxStatus::InTransaction),
            b"E" => Ok(TxStatus::Failed),
            _ => Err(ProtocolError::Malformed {
                tag: READY_FOR_QUERY,
                what: "transaction status",
            }),
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

pub fn ready_for_query(out: &mut BytesMut, status: TxStatus) {
    write_message(out, READY_FOR_QUERY, |out| out.put_u8(status.byte()));
}

/// `S`: a server parameter and its current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterStatus<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

impl<'a> ParameterStatus<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(PARAMETER_STATUS, body);
        let name = r.cstr("parameter name")?;
        let value = r.cstr("parameter value")?;
        r.finish("end of message")?;
        Ok(ParameterStatus { name, value })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        write_message(out, PARAMETER_STATUS, |out| {
            put_cstr(out, self.name.as_bytes());
            put_cstr(out, self.value.as_bytes());
        });
    }
}

/// `K`: the key a client quotes in a CancelRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendKeyData {
    pub pid: i32,
    pub secret: i32,
}

impl BackendKeyData {
    pub fn decode(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(BACKEND_KEY_DATA, body);
        let pid = r.i32("process id")?;
        let secret = r.i32("secret key")?;
        r.finish("end of message (only protocol 3.0 keys are supported)")?;
        Ok(BackendKeyData { pid, secret })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        write_message(out, BACKEND_KEY_DATA, |out| {
            out.put_i32(self.pid);
            out.put_i32(self.secret);
        });
    }
}

/// `C`: the command tag, e.g. `COMMIT`, `SET`, `INSERT 0 1`.
pub fn command_complete_tag(body: &[u8]) -> Result<&str, ProtocolError> {
    let mut r = Reader::new(COMMAND_COMPLETE, body);
    r.cstr("command tag")
}

pub fn command_complete(out: &mut BytesMut, tag: &str) {
    write_message(out, COMMAND_COMPLETE, |out| put_cstr(out, tag.as_bytes()));
}

/// A message with no body: ParseComplete, BindComplete, CloseComplete, NoData, EmptyQueryResponse.
pub fn empty(out: &mut BytesMut, tag: u8) {
    write_message(out, tag, |_| {});
}

/// The authentication requests shardgate sends to its clients.
pub enum Auth<'a> {
    Ok,
    Md5 { salt: [u8; 4] },
    Sasl { mechanisms: &'a [&'a str] },
    SaslContinue { data: &'a [u8] },
    SaslFinal { data: &'a [u8] },
}

impl Auth<'_> {
    pub fn encode(&self, out: &mut BytesMut) {
        write_message(out, AUTHENTICATION, |out| match self {
            Auth::Ok => out.put_i32(0),
            Auth::Md5 { salt } => {
                out.put_i32(5);
                out.put_slice(salt);
            }
            Auth::Sasl { mechanisms } => {
                out.put_i32(10);
                for m in *mechanisms {
                    put_cstr(out, m.as_bytes());
                }
                out.put_u8(0);
            }
            Auth::SaslContinue { data } => {
                out.put_i32(11);
                out.put_slice(data);
            }
            Auth::SaslFinal { data } => {
                out.put_i32(12);
                out.put_slice(data);
            }
        });
    }
}

/// The fields of an ErrorResponse or NoticeResponse that shardgate logs or rewrites.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ErrorFields {
    /// FATAL and PANIC end the server connection.
    pub fn is_fatal(&self) -> bool {
        matches!(self.severity.as_str(), "FATAL" | "PANIC")
    }

    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(ERROR_RESPONSE, body);
        let mut fields = ErrorFields::default();
        loop {
            let kind = r.u8("field type")?;
            if kind == 0 {
                break;
            }
            let value = String::from_utf8_lossy(r.cbytes("field value")?).into_owned();
            match kind {
                // 'V' (never localized, Postgres 9.6+) wins over 'S' when both are present.
                b'S' if fields.severity.is_empty() => fields.severity = value,
                b'V' => fields.severity = value,
                b'C' => fields.code = value,
                b'M' => fields.message = value,
                b'D' => fields.detail = Some(value),
                b'H' => fields.hint = Some(value),
                _ => {}
            }
        }
        Ok(fields)
    }
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub table: u32,
    pub column: i16,
    pub type_oid: u32,
    pub type_len: i16,
    pub type_mod: i32,
    pub format: i16,
}

/// `T`: the columns of the rows that follow (decoded only to merge the rows of several shards).
pub fn decode_row_description(body: &[u8]) -> Result<Vec<Field>, ProtocolError> {
    let mut r = Reader::new(ROW_DESCRIPTION, body);
    let n = r.i16("field count")?;
    (0..n.max(0))
        .map(|_| {
            Ok(Field {
                name: r.cstr("field name")?.to_string(),
                table: r.i32("table oid")? as u32,
                column: r.i16("column number")?,
                type_oid: r.i32("type oid")? as u32,
                type_len: r.i16("type length")?,
                type_mod: r.i32("type modifier")?,
                format: r.i16("format code")?,
            })
        })
        .collect()
}

pub fn row_description(out: &mut BytesMut, fields: &[Field]) {
    write_message(out, ROW_DESCRIPTION, |out| {
        out.put_i16(fields.len() as i16);
        for f in fields {
            put_cstr(out, f.name.as_bytes());
            out.put_u32(f.table);
            out.put_i16(f.column);
            out.put_u32(f.type_oid);
            out.put_i16(f.type_len);
            out.put_i32(f.type_mod);
            out.put_i16(f.format);
        }
    });
}

/// `D`: one row's values (`None`: NULL), borrowed from the frame's body.
pub fn decode_data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, ProtocolError> {
    let mut r = Reader::new(DATA_ROW, body);
    let n = r.i16("column count")?;
    (0..n.max(0))
        .map(|_| {
            let len = r.i32("value length")?;
            match usize::try_from(len) {
                Ok(len) => r.take(len, "column value").map(Some),
                Err(_) => Ok(None),
            }
        })
        .collect()
}

pub fn data_row<'v>(out: &mut BytesMut, values: impl ExactSizeIterator<Item = Option<&'v [u8]>>) {
    write_message(out, DATA_ROW, |out| {
        out.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    out.put_i32(v.len() as i32);
                    out.put_slice(v);
                }
                None => out.put_i32(-1),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::peek_frame;

    fn body_of(out: &BytesMut) -> &[u8] {
        let h = peek_frame(out, usize::MAX).unwrap().unwrap();
        assert_eq!(h.total_len, out.len());
        h.body(out)
    }

    #[test]
    fn parameter_status_round_trips() {
        let p = ParameterStatus {
            name: "TimeZone",
            value: "Europe/Paris",
        };
        let mut out = BytesMut::new();
        p.encode(&mut out);
        assert_eq!(ParameterStatus::decode(body_of(&out)).unwrap(), p);
    }

    #[test]
    fn backend_key_data_round_trips() {
        let k = BackendKeyData {
            pid: 4242,
            secret: -7,
        };
        let mut out = BytesMut::new();
        k.encode(&mut out);
        assert_eq!(BackendKeyData::decode(body_of(&out)).unwrap(), k);
    }

    #[test]
    fn ready_for_query_round_trips() {
        for s in [TxStatus::Idle, TxStatus::InTransaction, TxStatus::Failed] {
            let mut out = BytesMut::new();
            ready_for_query(&mut out, s);
            assert_eq!(TxStatus::decode(body_of(&out)).unwrap(), s);
        }
        assert!(TxStatus::decode(b"X").is_err());
    }

    #[test]
    fn command_complete_round_trips() {
        let mut out = BytesMut::new();
        command_complete(&mut out, "DEALLOCATE ALL");
        assert_eq!(
            command_complete_tag(body_of(&out)).unwrap(),
            "DEALLOCATE ALL"
        );
    }

    fn cstr() -> impl proptest::strategy::Strategy<Value = String> {
        "[^\0]{0,40}"
    }

    proptest::proptest! {
        #[test]
        fn every_decoded_server_message_round_trips(
            name in cstr(), value in cstr(), pid in proptest::prelude::any::<i32>(),
            secret in proptest::prelude::any::<i32>(), tag in cstr(),
            message in cstr(), hint in proptest::option::of(cstr()),
        ) {
            let mut out = BytesMut::new();
            ParameterStatus { name: &name, value: &value }.encode(&mut out);
            proptest::prop_assert_eq!(ParameterStatus::decode(body_of(&out)).unwrap(), ParameterStatus { name: &name, value: &value });
            let mut out = BytesMut::new();
            BackendKeyData { pid, secret }.encode(&mut out);
            proptest::prop_assert_eq!(BackendKeyData::decode(body_of(&out)).unwrap(), BackendKeyData { pid, secret });
            let mut out = BytesMut::new();
            command_complete(&mut out, &tag);
            proptest::prop_assert_eq!(command_complete_tag(body_of(&out)).unwrap(), tag.as_str());
            let mut out = BytesMut::new();
            let code = crate::protocol::SqlState::ConnectionFailure;
            let mut err = crate::protocol::PgError::error(code, message.clone());
            err.hint = hint.clone();
            err.encode(&mut out);
            let fields = ErrorFields::parse(body_of(&out)).unwrap();
            proptest::prop_assert_eq!((fields.code.as_str(), fields.message, fields.hint), (code.code(), message, hint));
        }

        #[test]
        fn server_decoders_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = ParameterStatus::decode(&body);
            let _ = BackendKeyData::decode(&body);
            let _ = command_complete_tag(&body);
            let _ = ErrorFields::parse(&body);
            let _ = TxStatus::decode(&body);
        }
    }

    #[test]
    fn sasl_request_lists_mechanisms() {
        let mut out = BytesMut::new();
        Auth::Sasl {
            mechanisms: &["SCRAM-SHA-256"],
        }
        .encode(&mut out);
        assert_eq!(&out[..], b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0");
    }
}
