//! The untagged packets a client may send before it is authenticated: SSLRequest, GSSENCRequest,
//! CancelRequest and the StartupMessage. Decoding of the startup message and the cancel request is
//! pgwire's (its standalone `messages` module); this file classifies the packet and bounds its size.

use std::collections::BTreeMap;

use bytes::{Buf, BytesMut};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::Startup;
use pgwire::messages::{DecodeContext, Message, ProtocolVersion};

use super::backend::BackendKeyData;
use super::ProtocolError;

/// Postgres refuses startup packets longer than this (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;

const SSL_REQUEST_CODE: i32 = 80_877_103;
const GSSENC_REQUEST_CODE: i32 = 80_877_104;
const CANCEL_REQUEST_CODE: i32 = 80_877_102;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel(BackendKeyData),
    /// Protocol 3.x; `minor` > 0 is negotiated down to 3.0.
    Startup {
        minor: u16,
        params: BTreeMap<String, String>,
    },
}

/// Decodes one startup-phase packet from the front of `buf`, consuming it.
/// `Ok(None)` until the whole packet has arrived.
pub fn decode(buf: &mut BytesMut) -> Result<Option<StartupPacket>, ProtocolError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if !(8..=MAX_STARTUP_LEN as i32).contains(&len) {
        return Err(ProtocolError::Startup(format!("invalid length {len}")));
    }
    if buf.len() < len as usize {
        return Ok(None);
    }
    let code = i32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let packet = match code {
        SSL_REQUEST_CODE => StartupPacket::SslRequest,
        GSSENC_REQUEST_CODE => StartupPacket::GssEncRequest,
        CANCEL_REQUEST_CODE => return decode_cancel(buf),
        _ => return decode_startup(buf, code),
    };
    buf.advance(len as usize);
    Ok(Some(packet))
}

fn decode_cancel(buf: &mut BytesMut) -> Result<Option<StartupPacket>, ProtocolError> {
    let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let req = CancelRequest::decode(buf, &ctx)
        .map_err(|e| ProtocolError::Startup(format!("invalid cancel request: {e}")))?
        .ok_or_else(|| ProtocolError::Startup("truncated cancel request".into()))?;
    let secret = req
        .secret_key
        .as_i32()
        .ok_or_else(|| ProtocolError::Startup("cancel key longer than 4 bytes".into()))?;
    Ok(Some(StartupPacket::Cancel(BackendKeyData {
        pid: req.pid,
        secret,
    })))
}

fn decode_startup(buf: &mut BytesMut, code: i32) -> Result<Option<StartupPacket>, ProtocolError> {
    let major = (code >> 16) as u16;
    if major != 3 {
        return Err(ProtocolError::Startup(format!(
            "unsupported frontend protocol {}.{}: server supports 3.0 to 3.0",
            major,
            code & 0xffff
        )));
    }
    let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let startup = Startup::decode(buf, &ctx)
        .map_err(|e| ProtocolError::Startup(format!("invalid startup message: {e}")))?
        .ok_or_else(|| ProtocolError::Startup("truncated startup message".into()))?;
    Ok(Some(StartupPacket::Startup {
        minor: startup.protocol_number_minor,
        params: startup.parameters,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn packet(code: i32, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32(8 + body.len() as i32);
        b.put_i32(code);
        b.put_slice(body);
        b
    }

    #[test]
    fn classifies_every_startup_packet() {
        let mut b = packet(SSL_REQUEST_CODE, b"");
        assert_eq!(decode(&mut b).unwrap(), Some(StartupPacket::SslRequest));
        assert!(b.is_empty());
        let mut b = packet(GSSENC_REQUEST_CODE, b"");
        assert_eq!(decode(&mut b).unwrap(), Some(StartupPacket::GssEncRequest));
        let mut b = packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 7, 0, 0, 0, 9]);
        let key = BackendKeyData { pid: 7, secret: 9 };
        assert_eq!(decode(&mut b).unwrap(), Some(StartupPacket::Cancel(key)));
        let mut b = packet(196_608, b"user\0app\0database\0db\0\0");
        let Some(StartupPacket::Startup { minor, params }) = decode(&mut b).unwrap() else {
            panic!("not a startup message")
        };
        assert_eq!(minor, 0);
        assert_eq!(params.get("user").map(String::as_str), Some("app"));
        assert_eq!(params.get("database").map(String::as_str), Some("db"));
        assert!(b.is_empty());
    }

    #[test]
    fn partial_packets_wait_and_bad_ones_are_refused() {
        let full = packet(196_608, b"user\0app\0\0");
        let mut half = BytesMut::from(&full[..full.len() - 3]);
        assert_eq!(decode(&mut half).unwrap(), None);
        let mut huge = BytesMut::from(&[0x00, 0x10, 0x00, 0x00, 0, 3, 0, 0][..]);
        assert_eq!(
            decode(&mut huge).unwrap_err().to_string(),
            "startup packet: invalid length 1048576"
        );
        let mut v2 = packet(0x0002_0000, b"");
        assert_eq!(
            decode(&mut v2).unwrap_err().to_string(),
            "startup packet: unsupported frontend protocol 2.0: server supports 3.0 to 3.0"
        );
    }
}
