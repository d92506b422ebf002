//! Exact decimal arithmetic with PostgreSQL `numeric` semantics, for merging per-shard sums and
//! averages.
//!
//! A finite value is kept as its unscaled magnitude in base-10 digits plus a display scale, so
//! addition and the division `avg` needs are exact by construction: no rounding happens anywhere
//! except where PostgreSQL itself rounds (the division's result scale). Base 10 rather than
//! PostgreSQL's base 10000 keeps the text format (the common case) a plain digit copy; the base-10000
//! view is computed only for the binary format and for `select_div_scale`, which reasons in it.

use std::cmp::Ordering;

/// `NUMERIC_MIN_SIG_DIGITS` in numeric.c: a quotient gets at least this many significant digits.
const MIN_SIG_DIGITS: i64 = 16;
/// `NUMERIC_MAX_DISPLAY_SCALE`: the largest scale a division result gets.
const MAX_DISPLAY_SCALE: i64 = 1000;
/// `NUMERIC_DSCALE_MAX`: the largest display scale a numeric can carry at all.
const DSCALE_MAX: u32 = 0x3FFF;
/// `NUMERIC_WEIGHT_MAX` is `PG_INT16_MAX` base-10000 digits: at most this many integer digits.
const MAX_INT_DIGITS: usize = (i16::MAX as usize + 1) * 4;

const SIGN_POS: u16 = 0x0000;
const SIGN_NEG: u16 = 0x4000;
const SIGN_NAN: u16 = 0xC000;
const SIGN_PINF: u16 = 0xD000;
const SIGN_NINF: u16 = 0xF000;
/// `NUMERIC_SHORT_DSCALE_MASK` / `_SHIFT`: where a short-format header keeps its display scale.
const SHORT_DSCALE_MASK: u16 = 0x1F80;
const SHORT_DSCALE_SHIFT: u16 = 7;

/// A `numeric` value, including the special values PostgreSQL 14+ has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Numeric {
    NaN,
    PosInf,
    NegInf,
    Finite(Decimal),
}

/// A finite numeric: `(-1)^neg * digits * 10^-scale`.
///
/// `digits` holds the unscaled magnitude, most significant first, without leading zeros (zero is
/// empty, and never negative). `scale` is PostgreSQL's display scale (`dscale`): the number of
/// digits printed after the point, which is part of the value as users see it (`1.50` ≠ `1.5` in
/// text), so it is kept exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decimal {
    neg: bool,
    digits: Vec<u8>,
    scale: u32,
}

/// The sum of finite values has more integer digits than a numeric can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NumericOverflow;

impl Numeric {
    /// Reads what `numeric_out` prints: `NaN`, `Infinity`, `-Infinity`, or `[-]digits[.digits]`.
    pub(super) fn parse_text(s: &[u8]) -> Result<Numeric, String> {
        match s {
            b"NaN" => return Ok(Numeric::NaN),
            b"Infinity" => return Ok(Numeric::PosInf),
            b"-Infinity" => return Ok(Numeric::NegInf),
            _ => {}
        }
        let (neg, body) = match s.strip_prefix(b"-") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int, frac) = match body.iter().position(|&c| c == b'.') {
            Some(dot) => (&body[..dot], &body[dot + 1..]),
            None => (body, &[][..]),
        };
        let all_digits = |p: &[u8]| p.iter().all(u8::is_ascii_digit);
        // numeric_out never prints a bare point ("1." or ".5").
        let bare_point = frac.is_empty() && body.contains(&b'.');
        if int.is_empty() || !all_digits(int) || !all_digits(frac) || bare_point {
            return Err(format!("{:?} is not a number", String::from_utf8_lossy(s)));
        }
        if frac.len() > DSCALE_MAX as usize {
            return Err(format!("{} digits after the point", frac.len()));
        }
        let digits = int.iter().chain(frac).map(|c| c - b'0').collect();
        Ok(Numeric::Finite(Decimal::new(
            neg,
            digits,
            frac.len() as u32,
        )))
    }

    /// Reads `numeric_send`'s format: ndigits, weight, sign, dscale (16 bits each), then ndigits
    /// base-10000 digits.
    pub(super) fn parse_binary(b: &[u8]) -> Result<Numeric, String> {
        let word = |i: usize| {
            b.get(2 * i..2 * i + 2)
                .map(|w| u16::from_be_bytes([w[0], w[1]]))
        };
        let header = (word(0), word(1), word(2), word(3));
        let (Some(ndigits), Some(weight), Some(sign), Some(dscale)) = header else {
            return Err(format!(
                "{} bytes is shorter than the 8-byte header",
                b.len()
            ));
        };
        let ndigits = ndigits as i16;
        if ndigits < 0 || b.len() != 8 + 2 * ndigits as usize {
            return Err(format!("{} bytes do not hold {ndigits} digits", b.len()));
        }
        let special = match sign {
            SIGN_POS | SIGN_NEG => None,
            SIGN_NAN => Some(Numeric::NaN),
            SIGN_PINF => Some(Numeric::PosInf),
            SIGN_NINF => Some(Numeric::NegInf),
            other => return Err(format!("unknown sign word {other:#06x}")),
        };
        if let Some(special) = special {
            return Ok(special);
        }
        if u32::from(dscale) > DSCALE_MAX {
            return Err(format!("display scale {dscale} exceeds {DSCALE_MAX}"));
        }
        let groups: Vec<u16> = (4..4 + ndigits as usize).filter_map(word).collect();
        if let Some(bad) = groups.iter().find(|&&d| d > 9999) {
            return Err(format!("digit {bad} is not below 10000"));
        }
        Decimal::from_base10000(sign == SIGN_NEG, weight as i16, &groups, dscale.into())
            .map(Numeric::Finite)
    }

    /// What `numeric_out` prints.
    pub(super) fn to_text(&self) -> String {
        match self {
            Numeric::NaN => "NaN".into(),
            Numeric::PosInf => "Infinity".into(),
            Numeric::NegInf => "-Infinity".into(),
            Numeric::Finite(d) => d.to_text(),
        }
    }

    /// What `numeric_send` sends.
    ///
    /// For the special values numeric_send reads weight and dscale out of the stored header with
    /// the short-format masks, so the 0x1000 bit of the infinities' sign shows up as a display
    /// scale of 32: `Infinity` is sent as (0, 0, 0xD000, 32), `NaN` as (0, 0, 0xC000, 0).
    pub(super) fn to_binary(&self) -> Vec<u8> {
        let special_dscale = |sign: u16| (sign & SHORT_DSCALE_MASK) >> SHORT_DSCALE_SHIFT;
        let (sign, weight, groups, dscale) = match self {
            Numeric::NaN => (SIGN_NAN, 0, Vec::new(), special_dscale(SIGN_NAN)),
            Numeric::PosInf => (SIGN_PINF, 0, Vec::new(), special_dscale(SIGN_PINF)),
            Numeric::NegInf => (SIGN_NINF, 0, Vec::new(), special_dscale(SIGN_NINF)),
            Numeric::Finite(d) => {
                let (weight, groups) = d.base10000();
                let sign = if d.neg { SIGN_NEG } else { SIGN_POS };
                (sign, weight, groups, d.scale as u16)
            }
        };
        let mut out = Vec::with_capacity(8 + 2 * groups.len());
        for word in [groups.len() as u16, weight as i16 as u16, sign, dscale] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        for g in groups {
            out.extend_from_slice(&g.to_be_bytes());
        }
        out
    }

    /// `numeric_add` (and the sum aggregate's NaN/infinity bookkeeping, which agrees with it).
    pub(super) fn add(&self, other: &Numeric) -> Result<Numeric, NumericOverflow> {
        use Numeric::*;
        Ok(match (self, other) {
            (NaN, _) | (_, NaN) | (PosInf, NegInf) | (NegInf, PosInf) => NaN,
            (PosInf, _) | (_, PosInf) => PosInf,
            (NegInf, _) | (_, NegInf) => NegInf,
            (Finite(a), Finite(b)) => Finite(a.add(b)?),
        })
    }

    /// `cmp_numerics`: -Infinity < finite < Infinity < NaN, and NaN equals NaN.
    pub(super) fn cmp(&self, other: &Numeric) -> Ordering {
        let rank = |n: &Numeric| match n {
            Numeric::NegInf => 0,
            Numeric::Finite(_) => 1,
            Numeric::PosInf => 2,
            Numeric::NaN => 3,
        };
        match (self, other) {
            (Numeric::Finite(a), Numeric::Finite(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }

    /// `numeric_div(self, count)` as `avg` calls it: specials stay themselves, finite values are
    /// divided to `select_div_scale` digits.
    pub(super) fn div_count(&self, count: u64) -> Numeric {
        match self {
            Numeric::Finite(d) => Numeric::Finite(d.div_count(count)),
            special => special.clone(),
        }
    }
}

impl From<i64> for Decimal {
    fn from(v: i64) -> Decimal {
        let digits = v
            .unsigned_abs()
            .to_string()
            .bytes()
            .map(|c| c - b'0')
            .collect();
        Decimal::new(v < 0, digits, 0)
    }
}

impl Decimal {
    fn new(neg: bool, mut digits: Vec<u8>, scale: u32) -> Decimal {
        let leading = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..leading);
        let neg = neg && !digits.is_empty();
        Decimal { neg, digits, scale }
    }

    /// Builds the value `sum(groups[i] * 10000^(weight - i))` at display scale `dscale`.
    fn from_base10000(
        neg: bool,
        weight: i16,
        groups: &[u16],
        dscale: u32,
    ) -> Result<Decimal, String> {
        let mut digits: Vec<u8> = groups
            .iter()
            .flat_map(|g| [g / 1000, g / 100 % 10, g / 10 % 10, g % 10])
            .map(|d| d as u8)
            .collect();
        // The last digit collected stands for 10^exp; the unscaled value needs 10^-dscale.
        let exp = 4 * (i64::from(weight) + 1 - groups.len() as i64);
        let shift = exp + i64::from(dscale);
        if shift >= 0 {
            digits.resize(digits.len() + shift as usize, 0);
        } else {
            let keep = digits.len().saturating_sub(shift.unsigned_abs() as usize);
            if digits[keep..].iter().any(|&d| d != 0) {
                return Err(format!("digits beyond its display scale {dscale}"));
            }
            digits.truncate(keep);
        }
        Ok(Decimal::new(neg, digits, dscale))
    }

    fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// The magnitude's digits padded on the right to `scale` (which must be ≥ self.scale).
    fn digits_at_scale(&self, scale: u32) -> Vec<u8> {
        let mut d = self.digits.clone();
        if !d.is_empty() {
            d.resize(d.len() + (scale - self.scale) as usize, 0);
        }
        d
    }

    /// The integer part's digit count, if any.
    fn int_digits(&self) -> usize {
        self.digits.len().saturating_sub(self.scale as usize)
    }

    /// `add_var`: the result's display scale is the larger of the two.
    fn add(&self, other: &Decimal) -> Result<Decimal, NumericOverflow> {
        let scale = self.scale.max(other.scale);
        let (a, b) = (self.digits_at_scale(scale), other.digits_at_scale(scale));
        let sum = if self.neg == other.neg {
            Decimal::new(self.neg, mag_add(&a, &b), scale)
        } else {
            match mag_cmp(&a, &b) {
                Ordering::Less => Decimal::new(other.neg, mag_sub(&b, &a), scale),
                _ => Decimal::new(self.neg, mag_sub(&a, &b), scale),
            }
        };
        // make_result refuses a weight above NUMERIC_WEIGHT_MAX ("value overflows numeric format").
        if sum.int_digits() > MAX_INT_DIGITS {
            return Err(NumericOverflow);
        }
        Ok(sum)
    }

    fn cmp(&self, other: &Decimal) -> Ordering {
        let sign = |d: &Decimal| match (d.is_zero(), d.neg) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        };
        let by_sign = sign(self).cmp(&sign(other));
        if by_sign != Ordering::Equal || self.is_zero() {
            return by_sign;
        }
        let scale = self.scale.max(other.scale);
        let by_magnitude = mag_cmp(&self.digits_at_scale(scale), &other.digits_at_scale(scale));
        if self.neg {
            by_magnitude.reverse()
        } else {
            by_magnitude
        }
    }

    /// `get_str_from_var`: the digits with exactly `scale` of them after the point.
    fn to_text(&self) -> String {
        let scale = self.scale as usize;
        let mut digits = vec![0u8; (scale + 1).saturating_sub(self.digits.len())];
        digits.extend_from_slice(&self.digits);
        let point = digits.len() - scale;
        let mut s = String::with_capacity(digits.len() + 2);
        if self.neg {
            s.push('-');
        }
        for (i, d) in digits.iter().enumerate() {
            if i == point {
                s.push('.');
            }
            s.push(char::from(b'0' + d));
        }
        s
    }

    /// The base-10000 weight and digits, stripped of leading and trailing zero digits as
    /// `make_result` stores them (zero: weight 0, no digits).
    fn base10000(&self) -> (i32, Vec<u16>) {
        let scale = self.scale as usize;
        let (int, frac) = if self.digits.len() > scale {
            self.digits.split_at(self.digits.len() - scale)
        } else {
            (&[][..], &self.digits[..])
        };
        // Integer digits group from the point leftward, fraction digits from the point rightward.
        let mut padded = vec![0u8; (4 - int.len() % 4) % 4];
        padded.extend_from_slice(int);
        padded.resize(padded.len() + scale - frac.len(), 0);
        padded.extend_from_slice(frac);
        padded.resize(padded.len().div_ceil(4) * 4, 0);
        let mut weight = (int.len().div_ceil(4)) as i32 - 1;
        let groups: Vec<u16> = padded
            .chunks(4)
            .map(|c| c.iter().fold(0u16, |acc, &d| acc * 10 + u16::from(d)))
            .collect();
        let first = groups.iter().position(|&g| g != 0);
        let last = groups.iter().rposition(|&g| g != 0);
        match (first, last) {
            (Some(first), Some(last)) => {
                weight -= first as i32;
                (weight, groups[first..=last].to_vec())
            }
            _ => (0, Vec::new()),
        }
    }

    /// `select_div_scale(self, divisor)` for an integer divisor (display scale 0).
    fn div_scale(&self, divisor: &Decimal) -> u32 {
        let first = |d: &Decimal| {
            let (weight, groups) = d.base10000();
            (i64::from(weight), groups.first().copied().unwrap_or(0))
        };
        let (weight1, first1) = first(self);
        let (weight2, first2) = first(divisor);
        // If the first digits are equal the quotient's weight is uncertain; PostgreSQL assumes
        // the dividend is the smaller, which gives one more digit.
        let mut qweight = weight1 - weight2;
        if first1 <= first2 {
            qweight -= 1;
        }
        let rscale = (MIN_SIG_DIGITS - qweight * 4)
            .max(i64::from(self.scale))
            .max(i64::from(divisor.scale))
            .clamp(0, MAX_DISPLAY_SCALE);
        rscale as u32
    }

    /// `numeric_div(self, count)`: the exact quotient rounded half away from zero to
    /// `select_div_scale` digits, as `div_var` with `round = true` produces it.
    fn div_count(&self, count: u64) -> Decimal {
        assert!(count > 0, "the caller returns NULL for an empty average");
        let divisor = Decimal::from(count as i64);
        let rscale = self.div_scale(&divisor);
        // Quotient of digits * 10^shift by count, with one digit beyond rscale to round on.
        let shift = i64::from(rscale) + 1 - i64::from(self.scale);
        let mut dividend = self.digits.clone();
        if shift >= 0 {
            dividend.resize(dividend.len() + shift as usize, 0);
        } else {
            dividend.truncate(dividend.len().saturating_sub(shift.unsigned_abs() as usize));
        }
        let mut quotient = short_div(&dividend, count);
        let round_digit = quotient.pop().unwrap_or(0);
        if round_digit >= 5 {
            quotient = mag_add(&quotient, &[1]);
        }
        Decimal::new(self.neg, quotient, rscale)
    }
}

/// Compares two magnitudes without leading zeros.
fn mag_cmp(a: &[u8], b: &[u8]) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn mag_add(a: &[u8], b: &[u8]) -> Vec<u8> {
    let n = a.len().max(b.len());
    let at = |v: &[u8], i: usize| if i < v.len() { v[v.len() - 1 - i] } else { 0 };
    let mut out = Vec::with_capacity(n + 1);
    let mut carry = 0;
    for i in 0..n {
        let s = at(a, i) + at(b, i) + carry;
        out.push(s % 10);
        carry = s / 10;
    }
    if carry > 0 {
        out.push(carry);
    }
    out.reverse();
    out
}

/// `a - b` for magnitudes with `a >= b`.
fn mag_sub(a: &[u8], b: &[u8]) -> Vec<u8> {
    let at = |v: &[u8], i: usize| if i < v.len() { v[v.len() - 1 - i] } else { 0 };
    let mut out = Vec::with_capacity(a.len());
    let mut borrow = 0;
    for i in 0..a.len() {
        let (x, y) = (at(a, i), at(b, i) + borrow);
        borrow = u8::from(x < y);
        out.push(x + 10 * borrow - y);
    }
    out.reverse();
    out
}

/// Truncating long division of a decimal magnitude by a machine integer.
fn short_div(a: &[u8], divisor: u64) -> Vec<u8> {
    let divisor = u128::from(divisor);
    let mut rem: u128 = 0;
    let mut out = Vec::with_capacity(a.len());
    for &d in a {
        let cur = rem * 10 + u128::from(d);
        out.push((cur / divisor) as u8);
        rem = cur % divisor;
    }
    out
}

#[cfg(test)]
mod tests;
