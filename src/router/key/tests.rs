//! Key parsing: what a PostgreSQL 15 server accepts, we accept as the same value; what it rejects,
//! we reject with a message a user can act on. The accept/reject lists were checked against
//! PostgreSQL 15.18 with `SELECT '<input>'::int8` (`::int4`, `::uuid`).

use proptest::prelude::*;

use super::*;

use KeyType::{Bigint, Integer, Text, Uuid};

const A0: [u8; 16] = [
    0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11,
];

fn int(key_type: KeyType, s: &str) -> i64 {
    match KeyValue::from_text(key_type, s) {
        Ok(KeyValue::Int(v)) => v,
        other => panic!("{s:?} as {key_type:?}: {other:?}"),
    }
}

fn text_error(key_type: KeyType, s: &str) -> String {
    match KeyValue::from_text(key_type, s) {
        Ok(v) => panic!("{s:?} unexpectedly accepted as {key_type:?}: {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn binary_error(key_type: KeyType, b: &[u8]) -> String {
    match KeyValue::from_binary(key_type, b) {
        Ok(v) => panic!("{b:?} unexpectedly accepted as {key_type:?}: {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn integers_as_int8in_reads_them() {
    let cases: &[(&str, i64)] = &[
        ("42", 42),
        (" 42 ", 42),
        ("\x0b42\x0b", 42), // vertical tab: C isspace, not Rust's is_ascii_whitespace
        ("\x0c42\r\n\t", 42),
        ("+0", 0),
        ("-0", 0),
        ("00042", 42),
        ("-17", -17),
        ("00000000000000000000000000001", 1), // leading zeros never overflow
        ("9223372036854775807", i64::MAX),
        ("-9223372036854775808", i64::MIN),
    ];
    for &(s, v) in cases {
        assert_eq!(int(Bigint, s), v, "{s:?}");
    }
    assert_eq!(int(Integer, "2147483647"), i64::from(i32::MAX));
    assert_eq!(int(Integer, " -2147483648"), i64::from(i32::MIN));
}

#[test]
fn malformed_integers_are_rejected() {
    // Each one is "invalid input syntax for type bigint" on PostgreSQL 15 (16 accepts 0x10, 1_000).
    let bad = [
        "", " ", "-", "+", "1e3", "0x10", "1_000", "- 1", "+-1", "4 2", "42\u{a0}", "12a", "٣",
        "1.0", "42\0",
    ];
    for s in bad {
        assert_eq!(
            text_error(Bigint, s),
            format!("invalid input for a bigint sharding key: {s:?} (expected a whole number)")
        );
    }
    assert_eq!(
        text_error(Integer, "12a"),
        "invalid input for an integer sharding key: \"12a\" (expected a whole number)"
    );
}

#[test]
fn out_of_range_integers_are_rejected() {
    assert_eq!(
        text_error(Integer, "3000000000"),
        "value 3000000000 is out of range for an integer sharding key \
         (expected -2147483648 to 2147483647)"
    );
    for s in ["2147483648", " -2147483649 "] {
        assert!(text_error(Integer, s).starts_with(&format!("value {} is out", s.trim())));
    }
    for s in ["9223372036854775808", "-9223372036854775809"] {
        assert_eq!(
            text_error(Bigint, s),
            format!(
                "value {s} is out of range for a bigint sharding key \
                 (expected -9223372036854775808 to 9223372036854775807)"
            )
        );
    }
    // The server reports an overflow before it looks at what follows the digits...
    assert!(text_error(Bigint, "99999999999999999999x")
        .starts_with("value 99999999999999999999x is out of range"));
    assert!(text_error(Integer, "3000000000x").contains("out of range"));
    // ...but a value that fits and is followed by garbage is malformed.
    assert!(text_error(Bigint, "9223372036854775807 x").starts_with("invalid input"));
}

#[test]
fn uuids_in_every_form_uuid_in_accepts() {
    let forms = [
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "{A0eeBC99-9c0b-4EF8-bb6d-6BB9bd380a11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
    ];
    for s in forms {
        assert_eq!(KeyValue::from_text(Uuid, s), Ok(KeyValue::Uuid(A0)), "{s}");
    }
}

#[test]
fn malformed_uuids_are_rejected() {
    let bad = [
        "",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "{{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}}",
        " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 ",
        "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
        "a0e-ebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
        "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1é",
    ];
    for s in bad {
        assert_eq!(
            text_error(Uuid, s),
            format!(
                "invalid input for a uuid sharding key: {s:?} (expected 32 hex digits, e.g. \
                 a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11, hyphens and surrounding braces optional)"
            )
        );
    }
}

#[test]
fn text_is_taken_as_is() {
    for s in ["", " padded ", "42", "日本語", "ключ-42", "🦀"] {
        assert_eq!(
            KeyValue::from_text(Text, s),
            Ok(KeyValue::Text(s.to_owned()))
        );
        assert_eq!(
            KeyValue::from_binary(Text, s.as_bytes()),
            Ok(KeyValue::Text(s.to_owned()))
        );
    }
    let nul =
        "a text sharding key cannot contain a NUL byte (PostgreSQL does not accept one in text)";
    assert_eq!(text_error(Text, "a\0b"), nul);
    assert_eq!(binary_error(Text, b"a\0b"), nul);
}

#[test]
fn binary_text_must_be_utf8() {
    assert_eq!(
        binary_error(Text, b"ab\xffcd"),
        "a binary text sharding key is not valid UTF-8 (invalid byte sequence at byte 2)"
    );
    assert!(KeyValue::from_binary(Text, b"\xc3").is_err()); // a truncated two-byte sequence
}

#[test]
fn binary_integers_of_every_width() {
    let cases: &[(&[u8], i64)] = &[
        (&[0xff, 0xff], -1),
        (&[0x7f, 0xff], 32767),
        (&[0x00, 0x00, 0x00, 0x2a], 42),
        (&[0x80, 0x00, 0x00, 0x00], i32::MIN.into()),
        (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe], -2),
        (&[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], i64::MAX),
    ];
    for &(b, v) in cases {
        assert_eq!(
            KeyValue::from_binary(Bigint, b),
            Ok(KeyValue::Int(v)),
            "{b:?}"
        );
    }
    let int8_of_int4 = 42i64.to_be_bytes();
    assert_eq!(
        KeyValue::from_binary(Integer, &int8_of_int4),
        Ok(KeyValue::Int(42))
    );
}

#[test]
fn binary_values_of_the_wrong_size_or_range_are_rejected() {
    assert_eq!(
        binary_error(Bigint, &[0, 0, 1]),
        "a binary bigint sharding key must be 2, 4 or 8 bytes (int2, int4 or int8, big-endian), got 3 bytes"
    );
    assert_eq!(
        binary_error(Integer, &[]),
        "a binary integer sharding key must be 2, 4 or 8 bytes (int2, int4 or int8, big-endian), got 0 bytes"
    );
    assert_eq!(
        binary_error(Integer, &3_000_000_000i64.to_be_bytes()),
        "value 3000000000 is out of range for an integer sharding key (expected -2147483648 to 2147483647)"
    );
    assert_eq!(
        binary_error(Uuid, &A0[..15]),
        "a binary uuid sharding key must be 16 bytes, got 15 bytes"
    );
    assert_eq!(KeyValue::from_binary(Uuid, &A0), Ok(KeyValue::Uuid(A0)));
}

#[test]
fn long_rejected_values_are_cut_short_in_messages() {
    let long = "x".repeat(1000);
    let message = text_error(Bigint, &long);
    assert!(
        message.contains(&format!("\"{}...\"", "x".repeat(64))),
        "{message}"
    );
    assert!(message.len() < 200);
    let multibyte = "é".repeat(100);
    assert!(text_error(Uuid, &multibyte).contains(&format!("{}...", "é".repeat(64))));
}

#[test]
fn display_is_what_postgres_prints() {
    assert_eq!(KeyValue::Int(-42).to_string(), "-42");
    assert_eq!(KeyValue::Text("日本語 x".into()).to_string(), "日本語 x");
    assert_eq!(
        KeyValue::Uuid(A0).to_string(),
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    );
    let upper = KeyValue::from_text(Uuid, "{A0EEBC999C0B4EF8BB6D6BB9BD380A11}").unwrap();
    assert_eq!(upper.to_string(), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(
        KeyValue::Uuid([0; 16]).to_string(),
        "00000000-0000-0000-0000-000000000000"
    );
}

/// The key's hash is the partition hash of its type (values from the server, see hash/tests.rs).
#[test]
fn hash_dispatches_on_the_type() {
    assert_eq!(
        KeyValue::Int(42).hash(),
        0x663218bcfb84b17f_u64.wrapping_add(0x49a0f4dd15e5a8e3)
    );
    assert_eq!(KeyValue::Int(42).hash(), hash::hash_int(42));
    assert_eq!(
        KeyValue::Text("日本語".into()).hash(),
        hash::hash_text("日本語".as_bytes())
    );
    assert_eq!(KeyValue::Uuid(A0).hash(), hash::hash_uuid(&A0));
    // The same value spelled differently is the same key.
    let spellings = [
        "{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
    ];
    for s in spellings {
        assert_eq!(
            KeyValue::from_text(Uuid, s).unwrap().hash(),
            hash::hash_uuid(&A0)
        );
    }
    assert_eq!(
        KeyValue::from_text(Bigint, " +042 ").unwrap().hash(),
        hash::hash_int(42)
    );
}

proptest! {
    /// A client may bind an integer key as int2, int4 or int8: the same value lands in the same
    /// bucket, as hashint2/4/8extended agree in the server.
    #[test]
    fn int4_and_int8_binary_encodings_hash_alike(v: i32) {
        let as_int4 = KeyValue::from_binary(Integer, &v.to_be_bytes()).unwrap();
        let as_int8 = KeyValue::from_binary(Bigint, &i64::from(v).to_be_bytes()).unwrap();
        prop_assert_eq!(as_int4.hash(), hash::hash_int(v as i64));
        prop_assert_eq!(as_int8.hash(), hash::hash_int(v as i64));
        prop_assert_eq!(&as_int4, &as_int8);
        if let Ok(short) = i16::try_from(v) {
            let as_int2 = KeyValue::from_binary(Integer, &short.to_be_bytes()).unwrap();
            prop_assert_eq!(as_int2.hash(), as_int8.hash());
        }
    }

    /// Text and binary input agree, and Display prints what from_text reads back.
    #[test]
    fn integer_text_round_trips(v: i64) {
        let from_text = KeyValue::from_text(Bigint, &v.to_string()).unwrap();
        prop_assert_eq!(&from_text, &KeyValue::from_binary(Bigint, &v.to_be_bytes()).unwrap());
        prop_assert_eq!(from_text.to_string(), v.to_string());
    }

    #[test]
    fn uuid_display_round_trips(u: [u8; 16]) {
        let shown = KeyValue::Uuid(u).to_string();
        prop_assert_eq!(KeyValue::from_text(Uuid, &shown).unwrap(), KeyValue::Uuid(u));
        prop_assert_eq!(KeyValue::from_text(Uuid, &shown.to_uppercase()).unwrap(), KeyValue::Uuid(u));
    }
}
