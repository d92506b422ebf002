//! The untagged packets a client may send before it is authenticated: SSLRequest, GSSENCRequest,
//! CancelRequest and the StartupMessage. Decoding of the startup message and the cancel request is
//! pgwire's (its standalone `messages` module); this file classifies the packet and bounds its size.

use std::collections::BTreeMap;

use bytes::BytesMut;
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
    // pgwire's decoders do not stop at the packet's length (the StartupMessage reads parameters up
    // to the first empty cstring anywhere in the buffer; a 3.0 cancel key is read as 4 bytes whatever
    // its length): hand them the packet alone and require that they consume all of it.
    let mut packet = buf.split_to(len as usize);
    match code {
        SSL_REQUEST_CODE => Ok(Some(StartupPacket::SslRequest)),
        GSSENC_REQUEST_CODE => Ok(Some(StartupPacket::GssEncRequest)),
        CANCEL_REQUEST_CODE => decode_cancel(&mut packet),
        _ => decode_startup(&mut packet, code),
    }
}

fn decode_cancel(packet: &mut BytesMut) -> Result<Option<StartupPacket>, ProtocolError> {
    let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let req = CancelRequest::decode(packet, &ctx)
        .map_err(|e| ProtocolError::Startup(format!("invalid cancel request: {e}")))?
        .ok_or_else(|| ProtocolError::Startup("truncated cancel request".into()))?;
    let secret = req
        .secret_key
        .as_i32()
        .filter(|_| packet.is_empty())
        .ok_or_else(|| ProtocolError::Startup("cancel key longer than 4 bytes".into()))?;
    Ok(Some(StartupPacket::Cancel(BackendKeyData {
        pid: req.pid,
        secret,
    })))
}

fn decode_startup(
    packet: &mut BytesMut,
    code: i32,
) -> Result<Option<StartupPacket>, ProtocolError> {
    let major = (code >> 16) as u16;
    if major != 3 {
        return Err(ProtocolError::Startup(format!(
            "unsupported frontend protocol {}.{}: server supports 3.0 to 3.0",
            major,
            code & 0xffff
        )));
    }
    let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let startup = Startup::decode(packet, &ctx)
        .map_err(|e| ProtocolError::Startup(format!("invalid startup message: {e}")))?
        .ok_or_else(|| ProtocolError::Startup("truncated startup message".into()))?;
    // As Postgres: the parameter list's terminator is the packet's last byte.
    if !packet.is_empty() {
        return Err(ProtocolError::Startup(
            "invalid startup packet layout: expected terminator as last byte".into(),
        ));
    }
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

    /// Found by `cargo fuzz run startup_auth`: pgwire reads parameters until the first empty cstring
    /// anywhere in the buffer, ignoring the packet's length word. A packet must be decoded from its
    /// own bytes only and consumed exactly.
    #[test]
    fn parameters_are_read_from_the_packet_only() {
        // Fuzzer reproducer: protocol 3.63487, 11 parameter bytes with no NUL at all. Was accepted
        // with no parameters, consuming 8 of the 19 bytes and leaving the rest as the "next packet".
        let mut b =
            BytesMut::from(&b"\x00\x00\x00\x13\x00\x03\xf7\xffO\xffqO\xff\xff\xffqO\xff\xff"[..]);
        assert!(decode(&mut b).is_err());
        // The terminator comes before the end of the packet: the tail would be misframed.
        let mut b = packet(196_608, b"user\0app\0\0junk");
        assert!(decode(&mut b).is_err());
        // No terminator inside the packet: the parameters must not run on into the next bytes.
        let mut b = packet(196_608, b"user\0app");
        b.put_slice(b"\0database\0other\0\0");
        assert!(decode(&mut b).is_err());
        // A well-formed packet followed by more data is consumed exactly.
        let mut b = packet(196_608, b"user\0app\0\0");
        b.put_slice(b"next");
        assert!(matches!(
            decode(&mut b),
            Ok(Some(StartupPacket::Startup { .. }))
        ));
        assert_eq!(&b[..], b"next");
    }

    /// Found by the same fuzz target: with a 3.0 context pgwire reads a cancel key as one i32
    /// whatever the packet's length, so a longer key was accepted by its first 4 bytes and the rest
    /// left in the buffer.
    #[test]
    fn cancel_key_must_fill_the_packet() {
        let mut b = packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 7, 0, 0, 0, 9, 1, 2, 3]);
        assert_eq!(
            decode(&mut b).unwrap_err().to_string(),
            "startup packet: cancel key longer than 4 bytes"
        );
        let mut b = packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 7, 0, 0, 0, 9]);
        b.put_slice(b"next");
        let key = BackendKeyData { pid: 7, secret: 9 };
        assert_eq!(decode(&mut b).unwrap(), Some(StartupPacket::Cancel(key)));
        assert_eq!(&b[..], b"next");
    }

    proptest::proptest! {
        #[test]
        fn startup_messages_round_trip(params in proptest::collection::btree_map("[a-z_]{1,12}", "[^\0]{0,24}", 0..6)) {
            let mut b = BytesMut::new();
            let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            postgres_protocol::message::frontend::startup_message(pairs.into_iter(), &mut b).unwrap();
            let decoded = decode(&mut b).unwrap();
            proptest::prop_assert_eq!(decoded, Some(StartupPacket::Startup { minor: 0, params }));
            proptest::prop_assert!(b.is_empty());
        }

        #[test]
        fn cancel_requests_round_trip(pid in proptest::prelude::any::<i32>(), secret in proptest::prelude::any::<i32>()) {
            let mut b = BytesMut::new();
            postgres_protocol::message::frontend::cancel_request(pid, secret, &mut b);
            proptest::prop_assert_eq!(decode(&mut b).unwrap(), Some(StartupPacket::Cancel(BackendKeyData { pid, secret })));
        }

        #[test]
        fn startup_decoder_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let mut b = BytesMut::from(&bytes[..]);
            let _ = decode(&mut b);
        }
    }
}
