//! The input is a stream of client (frontend) messages, as read from the socket after startup.
//! Every frame `peek_frame` accepts is decoded by tag; every message that decodes must re-encode to
//! exactly the bytes it came from (the session relies on that to splice rewritten messages).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardgate::protocol::frontend::{self, Bind, Execute, NamedTarget, Parse, Query};
use shardgate::protocol::{peek_frame, HEADER_LEN};

/// The cap the session uses for client messages is configurable; 1 MiB is the fuzzing cap.
const MAX_LEN: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    loop {
        let header = match peek_frame(buf, MAX_LEN) {
            Ok(Some(h)) => h,
            // Incomplete frame (wait for more) or a framing error (connection closed): stop.
            Ok(None) | Err(_) => break,
        };
        assert!(header.total_len >= HEADER_LEN && header.total_len <= buf.len());
        assert!(header.total_len - 1 <= MAX_LEN);
        let frame = &buf[..header.total_len];
        let body = header.body(buf);
        let mut out = BytesMut::new();
        let decoded = match header.tag {
            frontend::QUERY => Query::decode(body).map(|m| m.encode(&mut out)).is_ok(),
            frontend::PARSE => Parse::decode(body)
                .map(|m| {
                    // The raw parameter types are the i16 count and that many OIDs, nothing else.
                    let n = i16::from_be_bytes([m.param_types[0], m.param_types[1]]);
                    assert!(n >= 0 && m.param_types.len() == 2 + 4 * n as usize);
                    m.encode(&mut out)
                })
                .is_ok(),
            frontend::BIND => Bind::decode(body).map(|m| m.encode(&mut out)).is_ok(),
            frontend::EXECUTE => Execute::decode(body).map(|m| m.encode(&mut out)).is_ok(),
            tag @ (frontend::DESCRIBE | frontend::CLOSE) => NamedTarget::decode(tag, body)
                .map(|m| m.encode(tag, &mut out))
                .is_ok(),
            tag
            @ (frontend::SYNC | frontend::FLUSH | frontend::TERMINATE | frontend::COPY_DONE)
                if body.is_empty() =>
            {
                frontend::encode_empty(tag, &mut out);
                true
            }
            // Everything else is forwarded as a raw frame.
            _ => false,
        };
        if decoded {
            assert_eq!(
                &out[..],
                frame,
                "re-encoding message {:?} changed its bytes",
                header.tag as char
            );
        }
        buf = &buf[header.total_len..];
    }
});
