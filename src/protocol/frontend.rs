//! The client→server messages shardgate must look into. Everything else is forwarded as a raw frame.
//!
//! Each type borrows from the frame it was decoded from (no copies on the hot path) and can encode
//! itself, so the session can rewrite a statement name and splice the rest of the message untouched.

use bytes::{BufMut, BytesMut};

use super::{put_cstr, write_message, ProtocolError, Reader};

pub const QUERY: u8 = b'Q';
pub const PARSE: u8 = b'P';
pub const BIND: u8 = b'B';
pub const DESCRIBE: u8 = b'D';
pub const EXECUTE: u8 = b'E';
pub const CLOSE: u8 = b'C';
pub const SYNC: u8 = b'S';
pub const FLUSH: u8 = b'H';
pub const TERMINATE: u8 = b'X';
pub const COPY_DATA: u8 = b'd';
pub const COPY_DONE: u8 = b'c';
pub const COPY_FAIL: u8 = b'f';
pub const FUNCTION_CALL: u8 = b'F';
/// PasswordMessage, SASLInitialResponse and SASLResponse share this tag.
pub const PASSWORD: u8 = b'p';

/// `Q`: a simple query, possibly several statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query<'a> {
    pub sql: &'a str,
}

impl<'a> Query<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(QUERY, body);
        let sql = r.cstr("query string")?;
        r.finish("query string terminator")?;
        Ok(Query { sql })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        write_message(out, QUERY, |out| put_cstr(out, self.sql.as_bytes()));
    }
}

/// `P`: prepare a statement. `param_types` is kept raw (count + OIDs) because it is only compared
/// and re-sent, never interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    pub name: &'a str,
    pub sql: &'a str,
    pub param_types: &'a [u8],
}

impl<'a> Parse<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(PARSE, body);
        let name = r.cstr("statement name")?;
        let sql = r.cstr("query string")?;
        let count = r.i16("parameter type count")?;
        if count < 0 {
            return Err(ProtocolError::Malformed {
                tag: PARSE,
                what: "parameter type count",
            });
        }
        let oids = r.take(count as usize * 4, "parameter types")?;
        r.finish("end of message")?;
        let param_types = &body[body.len() - oids.len() - 2..];
        Ok(Parse {
            name,
            sql,
            param_types,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        write_message(out, PARSE, |out| {
            put_cstr(out, self.name.as_bytes());
            put_cstr(out, self.sql.as_bytes());
            out.put_slice(self.param_types);
        });
    }
}

/// `B`: bind a portal to a statement. Only the two names are decoded: the formats and values are
/// spliced through unchanged when the statement name is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a str,
    pub statement: &'a str,
    pub rest: &'a [u8],
}

impl<'a> Bind<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(BIND, body);
        let portal = r.cstr("portal name")?;
        let statement = r.cstr("statement name")?;
        Ok(Bind {
            portal,
            statement,
            rest: r.rest(),
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        write_message(out, BIND, |out| {
            put_cstr(out, self.portal.as_bytes());
            put_cstr(out, self.statement.as_bytes());
            out.put_slice(self.rest);
        });
    }
}

/// A Bind's parameter values, decoded only when routing needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindParams<'a> {
    /// One format code for all, one per parameter, or none (all text), as the protocol allows.
    formats: Vec<i16>,
    pub values: Vec<Option<&'a [u8]>>,
}

impl<'a> BindParams<'a> {
    /// Parameters given as text, as if bound that way.
    pub fn text(values: Vec<Option<&'a [u8]>>) -> Self {
        BindParams {
            formats: Vec::new(),
            values,
        }
    }

    /// Decodes the part of a Bind after the statement name.
    pub fn decode(rest: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(BIND, rest);
        let nformats = r.i16("parameter format count")?;
        let formats = (0..nformats.max(0))
            .map(|_| r.i16("parameter format"))
            .collect::<Result<Vec<_>, _>>()?;
        let nvalues = r.i16("parameter count")?;
        let mut values = Vec::with_capacity(nvalues.max(0) as usize);
        for _ in 0..nvalues.max(0) {
            let len = r.i32("parameter length")?;
            values.push(match usize::try_from(len) {
                Ok(n) => Some(r.take(n, "parameter value")?),
                Err(_) => None, // -1: NULL
            });
        }
        Ok(BindParams { formats, values })
    }

    /// Whether parameter `i` is in binary format.
    pub fn is_binary(&self, i: usize) -> bool {
        let code = match self.formats.as_slice() {
            [] => 0,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(0),
        };
        code == 1
    }
}

/// The part of a Bind after the statement name, split into its parameters (kept raw) and its
/// result-column format codes.
pub fn split_bind_results(rest: &[u8]) -> Result<(&[u8], Vec<i16>), ProtocolError> {
    let mut r = Reader::new(BIND, rest);
    let nformats = r.i16("parameter format count")?;
    r.take(2 * nformats.max(0) as usize, "parameter formats")?;
    let nvalues = r.i16("parameter count")?;
    for _ in 0..nvalues.max(0) {
        let len = r.i32("parameter length")?;
        if let Ok(n) = usize::try_from(len) {
            r.take(n, "parameter value")?;
        }
    }
    let params = rest.len() - r.rest_len();
    let nresults = r.i16("result format count")?;
    let results = (0..nresults.max(0))
        .map(|_| r.i16("result format"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((&rest[..params], results))
}

/// Whether a Describe or Close names a prepared statement or a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Statement,
    Portal,
}

impl Target {
    fn decode(tag: u8, byte: u8) -> Result<Self, ProtocolError> {
        match byte {
            b'S' => Ok(Target::Statement),
            b'P' => Ok(Target::Portal),
            _ => Err(ProtocolError::Malformed {
                tag,
                what: "target kind (expected 'S' or 'P')",
            }),
        }
    }

    fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// `D` (Describe) and `C` (Close) have the same shape: a target kind and a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedTarget<'a> {
    pub target: Target,
    pub name: &'a str,
}

impl<'a> NamedTarget<'a> {
    pub fn decode(tag: u8, body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(tag, body);
        let target = Target::decode(tag, r.u8("target kind")?)?;
        let name = r.cstr("name")?;
        r.finish("end of message")?;
        Ok(NamedTarget { target, name })
    }

    pub fn encode(&self, tag: u8, out: &mut BytesMut) {
        write_message(out, tag, |out| {
            out.put_u8(self.target.byte());
            put_cstr(out, self.name.as_bytes());
        });
    }
}

/// `E`: run a portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execute<'a> {
    pub portal: &'a str,
    pub max_rows: i32,
}

impl<'a> Execute<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(EXECUTE, body);
        let portal = r.cstr("portal name")?;
        let max_rows = r.i32("row limit")?;
        r.finish("end of message")?;
        Ok(Execute { portal, max_rows })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        write_message(out, EXECUTE, |out| {
            put_cstr(out, self.portal.as_bytes());
            out.put_i32(self.max_rows);
        });
    }
}

/// A message with no body (Sync, Flush, Terminate, CopyDone).
pub fn encode_empty(tag: u8, out: &mut BytesMut) {
    write_message(out, tag, |_| {});
}

#[cfg(test)]
mod tests;
