//! The digits PostgreSQL prints for a float at `extra_float_digits > 0`.
//!
//! Its Ryu port (`src/common/d2s.c`, `f2s.c`) prints the fewest significant digits that read back
//! as the same value, the candidate closest to the value at that length. One deliberate change
//! from upstream Ryu (`STRICTLY_SHORTEST 0` in `ryu_common.h`): a decimal lying exactly on the
//! midpoint between two floats is never printed, since reading it back would depend on the reader
//! rounding ties to even. So `63483848::float4` prints as `6.3483848e+07`, not the shorter
//! `6.348385e+07` that upstream Ryu (and the `ryu` crate) print.
//!
//! We search by length instead of porting Ryu's tables: for each length the value rounded to that
//! many digits (Rust's exact formatting), or the next decimal up when that falls below the lower
//! midpoint, is the only candidate Ryu can pick; it is accepted if it reads back as the value and
//! is not exactly a midpoint.

use std::fmt::LowerExp;
use std::str::FromStr;

/// An IEEE binary float as the search needs it.
pub(super) trait Ieee: Copy + LowerExp + FromStr + PartialEq {
    /// Significant digits that always read back as the same value.
    const MAX_DIGITS: usize;
    /// `|self| = m * 2^e`, and whether the gap to the next smaller float is half the gap to the
    /// next larger one (a power of two above the smallest normal).
    fn decompose(self) -> (u64, i32, bool);
    fn magnitude(self) -> Self;
}

impl Ieee for f64 {
    const MAX_DIGITS: usize = 17;

    fn decompose(self) -> (u64, i32, bool) {
        let bits = self.to_bits();
        let (exp, frac) = ((bits >> 52) & 0x7ff, bits & ((1 << 52) - 1));
        match exp {
            0 => (frac, -1074, false),
            _ => (frac | 1 << 52, exp as i32 - 1075, frac == 0 && exp > 1),
        }
    }

    fn magnitude(self) -> f64 {
        self.abs()
    }
}

impl Ieee for f32 {
    const MAX_DIGITS: usize = 9;

    fn decompose(self) -> (u64, i32, bool) {
        let bits = self.to_bits();
        let (exp, frac) = ((bits >> 23) & 0xff, u64::from(bits & ((1 << 23) - 1)));
        match exp {
            0 => (frac, -149, false),
            _ => (frac | 1 << 23, exp as i32 - 150, frac == 0 && exp > 1),
        }
    }

    fn magnitude(self) -> f32 {
        self.abs()
    }
}

/// Significant digits (no trailing zeros) and the decimal exponent of the first one, for a
/// finite non-zero value.
pub(super) fn shortest_digits<F: Ieee>(v: F) -> (Vec<u8>, i32) {
    let v = v.magnitude();
    let (m, e, narrow_below) = v.decompose();
    // The midpoints to the neighbouring floats, as odd multiples of powers of two.
    let high = (2 * m + 1, e - 1);
    let low = match narrow_below {
        true => (4 * m - 1, e - 2),
        false => (2 * m - 1, e - 1),
    };
    let inside = |d: u64, k: i32| {
        let reads_back = format!("{d}e{k}").parse::<F>().ok() == Some(v);
        reads_back && !equals(d, k, high) && !equals(d, k, low)
    };
    let mut last = (0, 0);
    for len in 1..=F::MAX_DIGITS {
        let (d, k) = rounded(v, len);
        for candidate in [d, d + 1] {
            if inside(candidate, k) {
                return digits(candidate, k);
            }
        }
        last = (d, k);
    }
    // Unreachable: MAX_DIGITS correctly rounded digits always read back and are never a midpoint.
    digits(last.0, last.1)
}

/// `v` rounded to `len` significant digits (exactly, ties to even), as `d * 10^k`.
fn rounded<F: Ieee>(v: F, len: usize) -> (u64, i32) {
    let s = format!("{:.*e}", len - 1, v);
    let (mantissa, exp) = s.split_once('e').expect("exponent notation");
    let d = mantissa.replace('.', "").parse().expect("digits");
    let exp: i32 = exp.parse().expect("exponent");
    (d, exp - (len as i32 - 1))
}

fn digits(mut d: u64, mut k: i32) -> (Vec<u8>, i32) {
    while d % 10 == 0 {
        d /= 10;
        k += 1;
    }
    let digits: Vec<u8> = d.to_string().bytes().map(|c| c - b'0').collect();
    let first = k + digits.len() as i32 - 1;
    (digits, first)
}

/// Whether `d * 10^k == m * 2^j`, compared by powers of 2 and 5 and what remains.
fn equals(d: u64, k: i32, (m, j): (u64, i32)) -> bool {
    let (d2, d5, d_rest) = split(d);
    let (m2, m5, m_rest) = split(m);
    d_rest == m_rest && d2 + k == m2 + j && d5 + k == m5
}

/// `x = 2^a * 5^b * rest` with `rest` coprime to 10.
fn split(mut x: u64) -> (i32, i32, u64) {
    let a = x.trailing_zeros();
    x >>= a;
    let mut b = 0;
    while x % 5 == 0 {
        x /= 5;
        b += 1;
    }
    (a as i32, b, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midpoints_are_never_printed() {
        // 63483850 is the midpoint between 63483848 and 63483852 (float4 steps of 4 there).
        assert_eq!(
            shortest_digits(63483848f32),
            (vec![6, 3, 4, 8, 3, 8, 4, 8], 7)
        );
        assert_eq!(shortest_digits(0.1f32), (vec![1], -1));
    }

    #[test]
    fn shortest_digits_read_back() {
        for v in [
            0.1,
            1.0 / 3.0,
            5e-324,
            f64::MAX,
            2.2250738585072014e-308,
            9007199254740993.0,
        ] {
            let (d, exp) = shortest_digits(v);
            let text: String = d.iter().map(|d| char::from(b'0' + d)).collect();
            let back: f64 = format!("0.{text}e{}", exp + 1).parse().unwrap();
            assert_eq!(back, v);
        }
        let (d, exp) = shortest_digits(123456789012345680.0);
        assert_eq!((d.len(), exp), (17, 17));
    }

    #[test]
    fn a_double_whose_shortest_form_is_a_midpoint_prints_longer() {
        // 1e23 lies exactly between two doubles; PostgreSQL prints 9.999999999999999e+22.
        assert_eq!(shortest_digits(1e23), (vec![9; 16], 22));
        assert_eq!(shortest_digits(1e22), (vec![1], 22));
    }
}
