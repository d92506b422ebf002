use std::cmp::Ordering::{self, Equal, Greater, Less};

use super::*;

const TEXT: bool = false;
const BINARY: bool = true;

fn col(oid: u32, binary: bool) -> Column {
    Column { oid, binary }
}

fn cmp_text(oid: u32, a: &str, b: &str) -> Ordering {
    compare(
        col(oid, TEXT),
        &Style::default(),
        a.as_bytes(),
        b.as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{a} vs {b}: {e}"))
}

fn cmp_binary(oid: u32, a: &[u8], b: &[u8]) -> Ordering {
    compare(col(oid, BINARY), &Style::default(), a, b).unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts every pair of `ordered` (text format) compares by position.
fn assert_text_order(oid: u32, ordered: &[&str]) {
    for (i, a) in ordered.iter().enumerate() {
        for (j, b) in ordered.iter().enumerate() {
            assert_eq!(cmp_text(oid, a, b), i.cmp(&j), "{a:?} vs {b:?}");
        }
    }
}

#[test]
fn integers_order_numerically_not_textually() {
    assert_text_order(
        oid::INT8,
        &["-9223372036854775808", "-10", "-9", "0", "9", "10"],
    );
    assert_text_order(oid::OID, &["0", "9", "10", "4294967295"]);
    assert_eq!(
        cmp_binary(oid::INT2, &(-1i16).to_be_bytes(), &1i16.to_be_bytes()),
        Less
    );
    assert_eq!(
        cmp_binary(oid::INT4, &i32::MIN.to_be_bytes(), &i32::MAX.to_be_bytes()),
        Less
    );
    assert_eq!(
        cmp_binary(oid::INT8, &(-2i64).to_be_bytes(), &(-3i64).to_be_bytes()),
        Greater
    );
    // oid is unsigned: 4294967295 is not -1.
    assert_eq!(
        cmp_binary(oid::OID, &u32::MAX.to_be_bytes(), &1u32.to_be_bytes()),
        Greater
    );
}

#[test]
fn floats_put_nan_last_and_equate_zeros() {
    assert_text_order(
        oid::FLOAT8,
        &[
            "-Infinity",
            "-1e+300",
            "-1.5",
            "0",
            "1e-05",
            "1.5",
            "Infinity",
            "NaN",
        ],
    );
    assert_eq!(cmp_text(oid::FLOAT8, "-0", "0"), Equal);
    assert_eq!(cmp_text(oid::FLOAT8, "NaN", "NaN"), Equal);
    let bits = |v: f32| v.to_bits().to_be_bytes();
    assert_eq!(
        cmp_binary(oid::FLOAT4, &bits(f32::NAN), &bits(f32::INFINITY)),
        Greater
    );
    assert_eq!(cmp_binary(oid::FLOAT4, &bits(-0.0), &bits(0.0)), Equal);
}

#[test]
fn numerics_order_with_their_special_values() {
    assert_text_order(
        oid::NUMERIC,
        &["-Infinity", "-1.5", "0", "0.001", "Infinity", "NaN"],
    );
    assert_eq!(cmp_text(oid::NUMERIC, "1.0", "1.00"), Equal);
}

#[test]
fn text_types_order_bytewise_and_bpchar_ignores_trailing_spaces() {
    assert_text_order(oid::TEXT, &["", "A", "B", "a", "ab", "b", "é"]);
    assert_eq!(cmp_text(oid::VARCHAR, "a ", "a"), Greater);
    assert_eq!(cmp_text(oid::BPCHAR, "a  ", "a"), Equal);
    assert_eq!(cmp_text(oid::BPCHAR, "a ", "a\t"), Less);
    assert_eq!(cmp_binary(oid::NAME, b"pg_class", b"pg_am"), Greater);
}

#[test]
fn char_reads_its_octal_escapes() {
    // charout prints nothing for \0 and \ooo for high bytes, which sort above ASCII.
    assert_text_order(oid::CHAR, &["", "A", "\\", "z", "\\200", "\\377"]);
    assert_eq!(cmp_binary(oid::CHAR, &[0x80], &[0x7f]), Greater);
}

#[test]
fn bytea_orders_by_its_bytes_in_both_output_styles() {
    assert_text_order(
        oid::BYTEA,
        &["\\x", "\\x00", "\\x0001", "\\x7f", "\\x80", "\\xff"],
    );
    assert_eq!(cmp_text(oid::BYTEA, "\\x5c", "\\\\"), Equal);
    assert_eq!(cmp_text(oid::BYTEA, "\\000a", "\\x0061"), Equal);
    assert_eq!(cmp_text(oid::BYTEA, "\\377", "abc"), Greater);
}

#[test]
fn uuids_order_by_their_bytes() {
    assert_text_order(
        oid::UUID,
        &[
            "00000000-0000-0000-0000-000000000000",
            "0000000a-0000-0000-0000-000000000000",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
        ],
    );
    assert_eq!(cmp_binary(oid::UUID, &[1; 16], &[0xff; 16]), Less);
}

#[test]
fn dates_and_timestamps_order_in_time() {
    assert_text_order(
        oid::DATE,
        &[
            "-infinity",
            "4713-01-01 BC",
            "0001-12-31 BC",
            "0001-01-01",
            "2024-02-29",
            "10000-01-01",
            "infinity",
        ],
    );
    assert_text_order(
        oid::TIMESTAMPTZ,
        &[
            "2024-03-01 17:30:00.000001+05:30",
            "2024-03-01 12:00:00-08",
            "2024-03-01 20:00:00.5+00",
            "2024-03-01 12:00:01-08",
        ],
    );
    assert_eq!(
        cmp_text(
            oid::TIMESTAMPTZ,
            "2024-03-01 17:30:00+05:30",
            "2024-03-01 04:00:00-08"
        ),
        Equal
    );
    assert_text_order(
        oid::TIME,
        &["00:00:00", "00:00:00.5", "23:59:59.999999", "24:00:00"],
    );
    let micros = |v: i64| v.to_be_bytes();
    assert_eq!(
        cmp_binary(oid::TIMESTAMP, &micros(i64::MAX), &micros(1)),
        Greater
    );
    assert_eq!(
        cmp_binary(oid::DATE, &(-1i32).to_be_bytes(), &0i32.to_be_bytes()),
        Less
    );
}

#[test]
fn non_iso_date_text_is_refused_with_a_hint() {
    let style = Style {
        iso_dates: false,
        ..Style::default()
    };
    let err = compare(col(oid::DATE, TEXT), &style, b"03/01/2024", b"04/01/2024").unwrap_err();
    assert_eq!(
        err.to_string(),
        "shardgate cannot order date values from several shards; shardgate reads dates and \
         timestamps in text format only in the ISO DateStyle; run SET DateStyle = 'ISO' in the \
         session (or request binary results)"
    );
    // Binary and time text do not depend on DateStyle.
    let day = 0i32.to_be_bytes();
    assert!(compare(col(oid::DATE, BINARY), &style, &day, &day).is_ok());
    assert!(compare(col(oid::TIME, TEXT), &style, b"01:00:00", b"02:00:00").is_ok());
}

#[test]
fn other_types_are_not_comparable() {
    for t in [
        oid::INT4,
        oid::TEXT,
        oid::UUID,
        oid::TIMESTAMPTZ,
        oid::BPCHAR,
    ] {
        assert!(comparable(t), "{t}");
    }
    for t in [114, 3802, 1186, 790, 600, 2277, 0] {
        assert!(!comparable(t), "{t}");
    }
    let err = compare(col(3802, TEXT), &Style::default(), b"{}", b"[]").unwrap_err();
    assert!(matches!(&err, ValueError::Unsupported { type_name, .. } if type_name == "jsonb"));
    assert!(err.to_string().contains("cast the column"), "{err}");
}

#[test]
fn malformed_values_name_the_type_and_format() {
    let err = compare(
        col(oid::INT4, BINARY),
        &Style::default(),
        &[0, 1],
        &[0, 0, 0, 1],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a shard returned a integer value in binary format that shardgate cannot read (2 bytes \
         where 4 were expected); check that the column has the same type on every shard"
    );
    for (oid, bad) in [
        (oid::INT8, "12x"),
        (oid::BOOL, "true"),
        (oid::UUID, "a0eebc99"),
        (oid::BYTEA, "\\x0"),
        (oid::TIMESTAMP, "2024-03-01T00:00:00"),
        (oid::FLOAT8, "one"),
    ] {
        let r = compare(
            col(oid, TEXT),
            &Style::default(),
            bad.as_bytes(),
            bad.as_bytes(),
        );
        assert!(
            matches!(r, Err(ValueError::Malformed { .. })),
            "{oid} {bad}: {r:?}"
        );
    }
}

/// Runs an accumulator over text partials and returns its text result.
fn merge_text(
    kind: AggKind,
    oid: u32,
    partials: &[Option<&str>],
) -> Result<Option<String>, ValueError> {
    let style = Style::default();
    let mut acc = Acc::new(kind, col(oid, TEXT))?;
    for p in partials {
        acc.add(&style, p.map(str::as_bytes))?;
    }
    Ok(acc.finish(&style)?.map(|b| String::from_utf8(b).unwrap()))
}

#[test]
fn count_adds_up_and_is_never_null() {
    let r = merge_text(
        AggKind::Count,
        oid::INT8,
        &[Some("3"), Some("0"), Some("4")],
    );
    assert_eq!(r, Ok(Some("7".into())));
    assert_eq!(
        merge_text(AggKind::Count, oid::INT8, &[]),
        Ok(Some("0".into()))
    );
    assert!(matches!(
        Acc::new(AggKind::Count, col(oid::INT4, TEXT)),
        Err(ValueError::Unsupported { .. })
    ));
}

#[test]
fn sum_skips_nulls_and_is_null_when_every_shard_is() {
    let r = merge_text(
        AggKind::Sum,
        oid::INT8,
        &[None, Some("5"), None, Some("-7")],
    );
    assert_eq!(r, Ok(Some("-2".into())));
    assert_eq!(merge_text(AggKind::Sum, oid::INT8, &[None, None]), Ok(None));
    let r = merge_text(
        AggKind::Sum,
        oid::NUMERIC,
        &[Some("1.5"), None, Some("2.250")],
    );
    assert_eq!(r, Ok(Some("3.750".into())));
    let r = merge_text(AggKind::Sum, oid::NUMERIC, &[Some("1"), Some("NaN")]);
    assert_eq!(r, Ok(Some("NaN".into())));
    let r = merge_text(AggKind::Sum, oid::FLOAT8, &[Some("0.5"), Some("0.25")]);
    assert_eq!(r, Ok(Some("0.75".into())));
    let r = merge_text(
        AggKind::Sum,
        oid::FLOAT4,
        &[Some("1e+30"), Some("-Infinity")],
    );
    assert_eq!(r, Ok(Some("-Infinity".into())));
}

#[test]
fn sum_overflow_errors_like_postgres() {
    let max = i64::MAX.to_string();
    let err = merge_text(AggKind::Sum, oid::INT8, &[Some(&max), Some("1")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bigint out of range (merging sum (bigint partials) across shards); cast the argument to \
         numeric in the query, e.g. sum(x::numeric)"
    );
    let err = merge_text(AggKind::Count, oid::INT8, &[Some(&max), Some("1")]).unwrap_err();
    assert!(matches!(
        err,
        ValueError::Overflow {
            message: "bigint out of range",
            ..
        }
    ));
    let err = merge_text(AggKind::Sum, oid::FLOAT8, &[Some("1e+308"), Some("1e+308")]).unwrap_err();
    assert!(matches!(
        err,
        ValueError::Overflow {
            message: "value out of range: overflow",
            ..
        }
    ));
    let err = merge_text(AggKind::Sum, oid::FLOAT4, &[Some("3e+38"), Some("3e+38")]).unwrap_err();
    assert!(matches!(err, ValueError::Overflow { .. }));
}

#[test]
fn sum_of_other_types_is_unsupported() {
    for t in [790, 1186, oid::TEXT, oid::INT4] {
        let err = Acc::new(AggKind::Sum, col(t, TEXT)).unwrap_err();
        assert!(matches!(err, ValueError::Unsupported { .. }), "{t}");
    }
    let err = Acc::new(AggKind::Sum, col(790, BINARY)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("shardgate cannot sum money values"),
        "{err}"
    );
}

#[test]
fn rounded_float_text_cannot_be_summed() {
    let style = Style {
        extra_float_digits: 0,
        ..Style::default()
    };
    let mut acc = Acc::new(AggKind::Sum, col(oid::FLOAT8, TEXT)).unwrap();
    let err = acc.add(&style, Some(b"0.333333333333333")).unwrap_err();
    assert!(
        err.to_string().contains("SET extra_float_digits = 1"),
        "{err}"
    );
    // min/max return the partial unchanged, so rounding does not matter there.
    let mut acc = Acc::new(AggKind::Max, col(oid::FLOAT8, TEXT)).unwrap();
    acc.add(&style, Some(b"0.333333333333333")).unwrap();
    assert_eq!(acc.finish(&style).unwrap().unwrap(), b"0.333333333333333");
}

#[test]
fn min_and_max_return_the_winning_bytes_with_postgres_tie_rules() {
    let parts = [Some("2.0"), None, Some("-1.5"), Some("10")];
    assert_eq!(
        merge_text(AggKind::Min, oid::NUMERIC, &parts),
        Ok(Some("-1.5".into()))
    );
    assert_eq!(
        merge_text(AggKind::Max, oid::NUMERIC, &parts),
        Ok(Some("10".into()))
    );
    assert_eq!(merge_text(AggKind::Min, oid::NUMERIC, &[None]), Ok(None));
    // numeric_smaller/larger keep the later of equal values.
    let ties = [Some("1.0"), Some("1.00")];
    assert_eq!(
        merge_text(AggKind::Min, oid::NUMERIC, &ties),
        Ok(Some("1.00".into()))
    );
    assert_eq!(
        merge_text(AggKind::Max, oid::NUMERIC, &ties),
        Ok(Some("1.00".into()))
    );
    let zeros = [Some("-0"), Some("0")];
    assert_eq!(
        merge_text(AggKind::Min, oid::FLOAT8, &zeros),
        Ok(Some("0".into()))
    );
    // bpchar_smaller/larger keep the earlier.
    let padded = [Some("a"), Some("a  ")];
    assert_eq!(
        merge_text(AggKind::Min, oid::BPCHAR, &padded),
        Ok(Some("a".into()))
    );
    assert_eq!(
        merge_text(AggKind::Max, oid::BPCHAR, &padded),
        Ok(Some("a".into()))
    );
    let dates = [Some("2024-01-01"), Some("infinity"), Some("1999-12-31")];
    assert_eq!(
        merge_text(AggKind::Max, oid::DATE, &dates),
        Ok(Some("infinity".into()))
    );
    assert!(Acc::new(AggKind::Min, col(3802, TEXT)).is_err());
}

#[test]
fn min_refuses_a_malformed_first_partial() {
    let r = merge_text(AggKind::Min, oid::INT4, &[Some("nope")]);
    assert!(matches!(r, Err(ValueError::Malformed { .. })), "{r:?}");
}

#[test]
fn binary_partials_give_binary_results() {
    let style = Style::default();
    let mut acc = Acc::new(AggKind::Sum, col(oid::INT8, BINARY)).unwrap();
    acc.add(&style, Some(&40i64.to_be_bytes())).unwrap();
    acc.add(&style, Some(&2i64.to_be_bytes())).unwrap();
    assert_eq!(
        acc.finish(&style).unwrap(),
        Some(42i64.to_be_bytes().to_vec())
    );
    let mut acc = Acc::new(AggKind::Sum, col(oid::FLOAT4, BINARY)).unwrap();
    acc.add(&style, Some(&1.5f32.to_be_bytes())).unwrap();
    assert_eq!(
        acc.finish(&style).unwrap(),
        Some(1.5f32.to_be_bytes().to_vec())
    );
    assert!(acc.add(&style, Some(&[0, 0])).is_err());
}

/// Averages (sum, count) text partials into a text result.
fn avg_text(sum_oid: u32, parts: &[(Option<&str>, &str)]) -> Result<Option<String>, ValueError> {
    let style = Style::default();
    let mut acc = AvgAcc::new(col(sum_oid, TEXT), col(oid::INT8, TEXT), false)?;
    for (sum, count) in parts {
        acc.add(&style, sum.map(str::as_bytes), Some(count.as_bytes()))?;
    }
    Ok(acc.finish(&style)?.map(|b| String::from_utf8(b).unwrap()))
}

#[test]
fn avg_divides_as_numeric_div() {
    let r = avg_text(
        oid::INT8,
        &[(Some("1"), "1"), (None, "0"), (Some("2"), "1")],
    );
    assert_eq!(r, Ok(Some("1.5000000000000000".into())));
    // int8 partial sums past i64 stay exact; a large quotient needs no fraction digits.
    let max = i64::MAX.to_string();
    let r = avg_text(oid::INT8, &[(Some(&max), "1"), (Some(&max), "2")]);
    assert_eq!(r, Ok(Some("6148914691236517205".into())));
    let r = avg_text(
        oid::NUMERIC,
        &[(Some("1.00"), "2"), (Some("Infinity"), "1")],
    );
    assert_eq!(r, Ok(Some("Infinity".into())));
    assert_eq!(avg_text(oid::NUMERIC, &[(None, "0")]), Ok(None));
    let r = avg_text(oid::FLOAT8, &[(Some("1"), "2"), (Some("2"), "1")]);
    assert_eq!(r, Ok(Some("1".into())));
    // sum(x) of negative zeros is -0, their average is 0.
    let r = avg_text(oid::FLOAT8, &[(Some("-0"), "2"), (Some("-0"), "1")]);
    assert_eq!(r, Ok(Some("0".into())));
}

#[test]
fn avg_result_types_and_refusals() {
    let count = col(oid::INT8, BINARY);
    let acc = |t| AvgAcc::new(col(t, BINARY), count, true);
    assert_eq!(acc(oid::INT8).unwrap().result_oid(), oid::NUMERIC);
    assert_eq!(acc(oid::NUMERIC).unwrap().result_oid(), oid::NUMERIC);
    assert_eq!(acc(oid::FLOAT8).unwrap().result_oid(), oid::FLOAT8);
    let err = acc(oid::FLOAT4).unwrap_err();
    assert!(err.to_string().contains("avg(x::float8)"), "{err}");
    assert!(acc(1186).is_err());
    let err = avg_text(oid::INT8, &[(None, "3")]).unwrap_err();
    assert!(matches!(err, ValueError::Malformed { .. }), "{err}");
}

#[test]
fn avg_writes_binary_numeric_from_text_partials() {
    let style = Style::default();
    let mut acc = AvgAcc::new(col(oid::NUMERIC, TEXT), col(oid::INT8, TEXT), true).unwrap();
    acc.add(&style, Some(b"3"), Some(b"2")).unwrap();
    let out = acc.finish(&style).unwrap().unwrap();
    // 1.5000000000000000: two base-10000 digits, weight 0, dscale 16.
    assert_eq!(out, [0, 2, 0, 0, 0, 0, 0, 16, 0, 1, 0x13, 0x88]);
}
