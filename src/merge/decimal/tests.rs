use super::*;

fn num(s: &str) -> Numeric {
    Numeric::parse_text(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn dec(s: &str) -> Decimal {
    match num(s) {
        Numeric::Finite(d) => d,
        other => panic!("{s} is {other:?}"),
    }
}

/// numeric_send's bytes from its header words and digits.
fn wire(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    for w in [ndigits, weight as u16, sign, dscale].iter().chain(digits) {
        out.extend_from_slice(&w.to_be_bytes());
    }
    out
}

#[test]
fn text_round_trips_with_its_display_scale() {
    for s in [
        "0",
        "0.00",
        "-1.50",
        "0.0001",
        "-0.000000001",
        "10000",
        "123456789012345678901234567890.1234567890",
        "NaN",
        "Infinity",
        "-Infinity",
    ] {
        assert_eq!(num(s).to_text(), s);
    }
    assert_eq!(num("007.50").to_text(), "7.50");
    assert_eq!(num("-0.0").to_text(), "0.0");
}

#[test]
fn text_that_numeric_out_never_prints_is_refused() {
    for s in [
        "", "-", "1.", ".5", "1e5", "+1", " 1", "1.2.3", "nan", "inf", "1_0",
    ] {
        assert!(Numeric::parse_text(s.as_bytes()).is_err(), "{s:?}");
    }
}

#[test]
fn binary_matches_numeric_send() {
    assert_eq!(num("1.50").to_binary(), wire(2, 0, 0, 2, &[1, 5000]));
    assert_eq!(num("0.00").to_binary(), wire(0, 0, 0, 2, &[]));
    assert_eq!(num("10000").to_binary(), wire(1, 1, 0, 0, &[1]));
    assert_eq!(num("0.0001").to_binary(), wire(1, -1, 0, 4, &[1]));
    assert_eq!(
        num("-12345.678").to_binary(),
        wire(3, 1, 0x4000, 3, &[1, 2345, 6780])
    );
    assert_eq!(num("NaN").to_binary(), wire(0, 0, 0xC000, 0, &[]));
    // The infinities carry a display scale of 32, an artefact of numeric_send (see to_binary).
    assert_eq!(num("Infinity").to_binary(), wire(0, 0, 0xD000, 32, &[]));
    assert_eq!(num("-Infinity").to_binary(), wire(0, 0, 0xF000, 32, &[]));
}

#[test]
fn binary_round_trips() {
    for s in [
        "0",
        "0.000",
        "1",
        "-1.5",
        "99999999.99999999",
        "0.00000001",
        "100000000",
        "-31415.9265358979",
        "NaN",
        "-Infinity",
    ] {
        let bytes = num(s).to_binary();
        assert_eq!(Numeric::parse_binary(&bytes).unwrap().to_text(), s);
    }
}

#[test]
fn malformed_binary_is_refused() {
    let cases = [
        (vec![0, 0, 0], "shorter"),
        (wire(2, 0, 0, 0, &[1]), "do not hold"),
        (wire(1, 0, 0x1234, 0, &[1]), "sign"),
        (wire(1, 0, 0, 0, &[10000]), "below 10000"),
        (wire(1, -1, 0, 2, &[1234]), "beyond its display scale"),
    ];
    for (bytes, expected) in cases {
        let err = Numeric::parse_binary(&bytes).unwrap_err();
        assert!(err.contains(expected), "{bytes:?}: {err}");
    }
}

#[test]
fn addition_is_exact_and_keeps_the_larger_scale() {
    let add = |a: &str, b: &str| num(a).add(&num(b)).unwrap().to_text();
    assert_eq!(add("1.5", "-1.50"), "0.00");
    assert_eq!(add("99.99", "0.01"), "100.00");
    assert_eq!(add("-5", "3"), "-2");
    assert_eq!(add("3", "-5.000"), "-2.000");
    assert_eq!(add("0.1", "0.2"), "0.3");
    assert_eq!(
        add("9223372036854775807", "9223372036854775807"),
        "18446744073709551614"
    );
    assert_eq!(add("NaN", "1"), "NaN");
    assert_eq!(add("Infinity", "-Infinity"), "NaN");
    assert_eq!(add("Infinity", "-5"), "Infinity");
    assert_eq!(add("-Infinity", "-Infinity"), "-Infinity");
}

#[test]
fn addition_past_the_numeric_range_overflows() {
    let big = format!("9{}", "0".repeat(MAX_INT_DIGITS - 1));
    assert!(num(&big).add(&num("1")).is_ok());
    assert_eq!(num(&big).add(&num(&big)), Err(NumericOverflow));
}

#[test]
fn ordering_follows_cmp_numerics() {
    let ordered = [
        "-Infinity",
        "-100",
        "-1.5",
        "-0.001",
        "0",
        "0.001",
        "1",
        "1.5",
        "100",
        "Infinity",
        "NaN",
    ];
    for (i, a) in ordered.iter().enumerate() {
        for (j, b) in ordered.iter().enumerate() {
            assert_eq!(num(a).cmp(&num(b)), i.cmp(&j), "{a} vs {b}");
        }
    }
    assert_eq!(num("1.0").cmp(&num("1.00")), Ordering::Equal);
    assert_eq!(num("-0.00").cmp(&num("0")), Ordering::Equal);
    assert_eq!(num("NaN").cmp(&num("NaN")), Ordering::Equal);
}

#[test]
fn division_uses_select_div_scale() {
    let avg = |sum: &str, n: u64| dec(sum).div_count(n).to_text();
    // Quotient weight 0: 16 digits.
    assert_eq!(avg("3", 2), "1.5000000000000000");
    assert_eq!(avg("10", 4), "2.5000000000000000");
    // First digits 2 <= 3: one base-10000 digit more.
    assert_eq!(avg("2", 3), "0.66666666666666666667");
    assert_eq!(avg("-5", 3), "-1.6666666666666667");
    assert_eq!(avg("0", 2), "0.00000000000000000000");
    // Large quotients get no fraction digits beyond the inputs' scale.
    assert_eq!(avg("100000000000000000000", 3), "33333333333333333333");
    assert_eq!(
        avg("1.000000000000000000000001", 1),
        "1.000000000000000000000001"
    );
    // Small quotients get more digits.
    assert_eq!(
        avg("-0.00000000000000000005", 2),
        "-0.000000000000000000025000000000000000"
    );
}

#[test]
fn division_rounds_halves_away_from_zero() {
    // At the 1000-digit cap a quotient can end in an exact half.
    let tiny = |sign: &str, last: &str| format!("{sign}0.{}{last}", "0".repeat(999));
    assert_eq!(dec(&tiny("", "1")).div_count(2).to_text(), tiny("", "1"));
    assert_eq!(dec(&tiny("-", "1")).div_count(2).to_text(), tiny("-", "1"));
    assert_eq!(dec(&tiny("", "3")).div_count(2).to_text(), tiny("", "2"));
    assert_eq!(dec(&tiny("", "1")).div_count(3).to_text(), tiny("", "0"));
}

#[test]
fn division_scale_is_capped_at_1000() {
    let long = format!("1.{}", "1".repeat(1200));
    let q = dec(&long).div_count(1).to_text();
    assert_eq!(q.len(), "1.".len() + 1000);
    assert!(q.ends_with("11"));
}
