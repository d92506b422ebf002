use bytes::BytesMut;
use proptest::prelude::*;

use super::*;
use crate::protocol::peek_frame;

/// Encodes, re-frames and decodes a message: what comes out must equal what went in, and the
/// frame must be exactly the encoded bytes (no trailing garbage accepted).
fn frame(encode: impl FnOnce(&mut BytesMut)) -> (u8, Vec<u8>) {
    let mut out = BytesMut::new();
    encode(&mut out);
    let h = peek_frame(&out, usize::MAX)
        .unwrap()
        .expect("a whole frame");
    assert_eq!(h.total_len, out.len());
    (h.tag, h.body(&out).to_vec())
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ ]{0,20}"
}

proptest! {
    #[test]
    fn query_round_trips(sql in "[^\0]{0,200}") {
        let q = Query { sql: &sql };
        let (tag, body) = frame(|o| q.encode(o));
        prop_assert_eq!(tag, QUERY);
        prop_assert_eq!(Query::decode(&body).unwrap(), q);
    }

    #[test]
    fn parse_round_trips(n in name(), sql in "[^\0]{0,200}", oids in proptest::collection::vec(any::<u32>(), 0..8)) {
        let mut types = (oids.len() as i16).to_be_bytes().to_vec();
        for o in &oids { types.extend_from_slice(&o.to_be_bytes()); }
        let p = Parse { name: &n, sql: &sql, param_types: &types };
        let (tag, body) = frame(|o| p.encode(o));
        prop_assert_eq!(tag, PARSE);
        prop_assert_eq!(Parse::decode(&body).unwrap(), p);
    }

    #[test]
    fn bind_round_trips(portal in name(), stmt in name(), rest in proptest::collection::vec(any::<u8>(), 0..64)) {
        let b = Bind { portal: &portal, statement: &stmt, rest: &rest };
        let (tag, body) = frame(|o| b.encode(o));
        prop_assert_eq!(tag, BIND);
        prop_assert_eq!(Bind::decode(&body).unwrap(), b);
    }

    #[test]
    fn describe_and_close_round_trip(n in name(), portal in any::<bool>(), close in any::<bool>()) {
        let target = if portal { Target::Portal } else { Target::Statement };
        let t = NamedTarget { target, name: &n };
        let tag = if close { CLOSE } else { DESCRIBE };
        let (got_tag, body) = frame(|o| t.encode(tag, o));
        prop_assert_eq!(got_tag, tag);
        prop_assert_eq!(NamedTarget::decode(tag, &body).unwrap(), t);
    }

    #[test]
    fn execute_round_trips(portal in name(), max_rows in any::<i32>()) {
        let e = Execute { portal: &portal, max_rows };
        let (tag, body) = frame(|o| e.encode(o));
        prop_assert_eq!(tag, EXECUTE);
        prop_assert_eq!(Execute::decode(&body).unwrap(), e);
    }

    #[test]
    fn decoders_never_panic_on_garbage(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Query::decode(&body);
        let _ = Parse::decode(&body);
        let _ = Bind::decode(&body);
        let _ = NamedTarget::decode(DESCRIBE, &body);
        let _ = Execute::decode(&body);
    }
}

#[test]
fn malformed_messages_name_the_bad_field() {
    assert_eq!(
        Parse::decode(b"s1\0select 1\0\x00\x02\0\0\0\x17")
            .unwrap_err()
            .to_string(),
        "malformed message 'P': bad parameter types"
    );
    assert_eq!(
        NamedTarget::decode(CLOSE, b"Xname\0")
            .unwrap_err()
            .to_string(),
        "malformed message 'C': bad target kind (expected 'S' or 'P')"
    );
    assert_eq!(
        Query::decode(b"select 1").unwrap_err().to_string(),
        "malformed message 'Q': bad query string"
    );
}
