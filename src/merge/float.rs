//! `float4` and `float8` text I/O as PostgreSQL 15 does it (`float4out`, `float8out`, `float8in`).
//!
//! With `extra_float_digits > 0` (the default is 1) PostgreSQL prints the shortest digits that read
//! back as the same value (see [`shortest`]) laid out as its Ryu port's `to_chars` does. Otherwise
//! it prints `%.{N}g` through `pg_strfromd`, which leaves the digits to the C library's `printf`
//! (exact decimal expansion, ties to even) — as Rust's exact formatting does.

mod shortest;

use shortest::shortest_digits;

/// Text layout rules that differ between the two widths.
#[derive(Debug, Clone, Copy)]
struct Width {
    /// `DBL_DIG` / `FLT_DIG`: the precision of `%g` output at `extra_float_digits = 0`.
    dig: i32,
    /// Shortest output switches to exponent notation from this decimal exponent up (d2s.c
    /// uses 15, f2s.c uses 6); below -4 it always does.
    fixed_below: i32,
}

const FLOAT8: Width = Width {
    dig: 15,
    fixed_below: 15,
};
const FLOAT4: Width = Width {
    dig: 6,
    fixed_below: 6,
};

/// `float8out` under the given `extra_float_digits`.
pub(super) fn float8_text(v: f64, extra_float_digits: i32) -> String {
    if extra_float_digits > 0 {
        shortest(v, || shortest_digits(v), FLOAT8)
    } else {
        printf_g(v, FLOAT8.dig + extra_float_digits)
    }
}

/// `float4out` under the given `extra_float_digits`.
pub(super) fn float4_text(v: f32, extra_float_digits: i32) -> String {
    if extra_float_digits > 0 {
        shortest(f64::from(v), || shortest_digits(v), FLOAT4)
    } else {
        // float4out hands the value to pg_strfromd as a double.
        printf_g(f64::from(v), FLOAT4.dig + extra_float_digits)
    }
}

/// Reads what `float8out` prints (the special spellings, or a decimal number).
pub(super) fn parse_float(s: &[u8]) -> Option<f64> {
    parse(s)
}

/// Reads what `float4out` prints, rounding once, to single precision.
pub(super) fn parse_float4(s: &[u8]) -> Option<f32> {
    parse(s)
}

fn parse<T: std::str::FromStr>(s: &[u8]) -> Option<T> {
    let spelled = match s {
        b"NaN" => "NaN",
        b"Infinity" => "inf",
        b"-Infinity" => "-inf",
        _ if s.iter().all(|c| c.is_ascii_digit() || b".eE+-".contains(c)) => {
            std::str::from_utf8(s).ok()?
        }
        _ => return None,
    };
    spelled.parse().ok()
}

/// The special values' spellings, shared by both output modes; `None` for a finite non-zero value.
fn special(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v.is_infinite() {
        Some(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else if v == 0.0 {
        Some(if v.is_sign_negative() { "-0" } else { "0" })
    } else {
        None
    }
}

/// Significant digits (no leading or trailing zeros) and the decimal exponent of the first one,
/// from Rust's `{:e}` rendering.
fn digits_and_exponent(rendered: &str) -> (Vec<u8>, i32) {
    let (mantissa, exp) = rendered.split_once('e').expect("exponent notation");
    let exp: i32 = exp.parse().expect("formatter exponent");
    let mut digits: Vec<u8> = mantissa
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|c| c - b'0')
        .collect();
    while digits.len() > 1 && digits.last() == Some(&0) {
        digits.pop();
    }
    (digits, exp)
}

/// d2s.c / f2s.c `to_chars`: fixed notation for decimal exponents in [-4, fixed_below), otherwise
/// `d.ddde±XX`.
fn shortest(v: f64, digits: impl FnOnce() -> (Vec<u8>, i32), width: Width) -> String {
    if let Some(s) = special(v) {
        return s.to_string();
    }
    let (digits, exp) = digits();
    let sign = if v < 0.0 { "-" } else { "" };
    let body = if (-4..width.fixed_below).contains(&exp) {
        fixed(&digits, exp)
    } else {
        scientific(&digits, exp)
    };
    format!("{sign}{body}")
}

/// `pg_strfromd(precision)`: the sign, then C's `%.{precision}g` of the magnitude.
fn printf_g(v: f64, precision: i32) -> String {
    if let Some(s) = special(v) {
        return s.to_string();
    }
    let precision = precision.clamp(1, 32) as usize;
    let (digits, exp) = digits_and_exponent(&format!("{:.*e}", precision - 1, v.abs()));
    let sign = if v < 0.0 { "-" } else { "" };
    // C99 7.19.6.1: style f when precision > X >= -4 (X the %e exponent), then (no '#' flag)
    // trailing zeros and a bare point go; `digits` has no trailing zeros already.
    let body = if exp >= -4 && exp < precision as i32 {
        fixed(&digits, exp)
    } else {
        scientific(&digits, exp)
    };
    format!("{sign}{body}")
}

/// `digits` × 10^(exp - len + 1) without an exponent: `0.000ddd`, `dd.ddd` or `ddd000`.
fn fixed(digits: &[u8], exp: i32) -> String {
    let text = |ds: &[u8]| ds.iter().map(|d| char::from(b'0' + d)).collect::<String>();
    if exp < 0 {
        return format!("0.{}{}", "0".repeat((-exp - 1) as usize), text(digits));
    }
    let int_len = exp as usize + 1;
    if digits.len() <= int_len {
        format!("{}{}", text(digits), "0".repeat(int_len - digits.len()))
    } else {
        format!("{}.{}", text(&digits[..int_len]), text(&digits[int_len..]))
    }
}

/// `d.ddde±XX`, with at least two exponent digits.
fn scientific(digits: &[u8], exp: i32) -> String {
    let text: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
    let (first, rest) = text.split_at(1);
    let point = if rest.is_empty() { "" } else { "." };
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{first}{point}{rest}e{sign}{:02}", exp.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_uses_fixed_notation_inside_the_exponent_window() {
        assert_eq!(float8_text(0.1, 1), "0.1");
        assert_eq!(float8_text(-1.5, 1), "-1.5");
        assert_eq!(float8_text(100.0, 1), "100");
        assert_eq!(float8_text(1e14, 1), "100000000000000");
        assert_eq!(float8_text(1e15, 1), "1e+15");
        assert_eq!(
            float8_text(123456789012345680.0, 1),
            "1.2345678901234568e+17"
        );
        assert_eq!(float8_text(0.0001, 1), "0.0001");
        assert_eq!(float8_text(0.00001234, 1), "1.234e-05");
        assert_eq!(float8_text(1e-300, 3), "1e-300");
        assert_eq!(float8_text(f64::MAX, 1), "1.7976931348623157e+308");
        assert_eq!(float8_text(5e-324, 1), "5e-324");
        assert_eq!(float4_text(100000.0, 1), "100000");
        assert_eq!(float4_text(1000000.0, 1), "1e+06");
        assert_eq!(float4_text(0.1, 1), "0.1");
        assert_eq!(float4_text(3.4028235e38, 1), "3.4028235e+38");
    }

    #[test]
    fn special_values_print_as_postgres_spells_them() {
        for efd in [1, 0, -15] {
            assert_eq!(float8_text(f64::NAN, efd), "NaN");
            assert_eq!(float8_text(f64::INFINITY, efd), "Infinity");
            assert_eq!(float8_text(f64::NEG_INFINITY, efd), "-Infinity");
            assert_eq!(float8_text(-0.0, efd), "-0");
            assert_eq!(float8_text(0.0, efd), "0");
            assert_eq!(float4_text(-0.0, efd), "-0");
        }
    }

    #[test]
    fn non_positive_extra_digits_print_like_printf_g() {
        assert_eq!(float8_text(0.1, 0), "0.1");
        assert_eq!(float8_text(1.0 / 3.0, 0), "0.333333333333333");
        assert_eq!(float8_text(2.0 / 3.0, -10), "0.66667");
        assert_eq!(float8_text(1e15, 0), "1e+15");
        assert_eq!(float8_text(123456789012345.0, 0), "123456789012345");
        assert_eq!(float8_text(1234567890123456.0, 0), "1.23456789012346e+15");
        assert_eq!(float8_text(0.0001, 0), "0.0001");
        assert_eq!(float8_text(0.00001, 0), "1e-05");
        assert_eq!(float8_text(-2.5, -14), "-2");
        assert_eq!(float8_text(0.125, -13), "0.12");
        assert_eq!(float8_text(99.96, -12), "100");
        assert_eq!(float8_text(999.6, -12), "1e+03");
        assert_eq!(float4_text(1.0 / 3.0, 0), "0.333333");
        assert_eq!(float4_text(1234567.0, 0), "1.23457e+06");
    }

    #[test]
    fn parse_reads_what_output_prints() {
        for v in [0.1, -1e300, 5e-324, 1.7976931348623157e308, 123.456] {
            assert_eq!(parse_float(float8_text(v, 1).as_bytes()), Some(v));
        }
        assert!(parse_float(b"NaN").unwrap().is_nan());
        assert_eq!(parse_float(b"-Infinity"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_float(b"inf"), None);
        assert_eq!(parse_float(b"1,5"), None);
    }
}
