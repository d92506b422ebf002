//! Reads the ISO text forms of `date`, `time`, `timestamp` and `timestamptz` into numbers that sort
//! as PostgreSQL sorts the values.
//!
//! Only what the server prints with `DateStyle = ISO` is read: `YYYY-MM-DD`, `HH:MM:SS[.ffffff]`,
//! an offset `±HH[:MM[:SS]]` (historic zones have seconds), a trailing ` BC`, and `infinity` /
//! `-infinity`. Years may have more than four digits. Other DateStyles print day and month in an
//! order that depends on a second setting, so the caller refuses them rather than guess.

const MICROS_PER_SECOND: i128 = 1_000_000;
const MICROS_PER_DAY: i128 = 86_400 * MICROS_PER_SECOND;

/// Days since 1970-01-01 (proleptic Gregorian, as PostgreSQL counts); infinities sort outside
/// every real date.
pub(super) fn date_days(s: &[u8]) -> Result<i64, String> {
    match s {
        b"infinity" => return Ok(i64::MAX),
        b"-infinity" => return Ok(i64::MIN),
        _ => {}
    }
    let (body, bc) = strip_bc(s);
    let mut p = Parser::new(body);
    let days = p.date(bc)?;
    p.end()?;
    Ok(days)
}

/// Microseconds since midnight.
pub(super) fn time_micros(s: &[u8]) -> Result<i128, String> {
    let mut p = Parser::new(s);
    let micros = p.time()?;
    p.end()?;
    Ok(micros)
}

/// Microseconds since 1970-01-01 00:00 (UTC when `with_zone`, where the offset is required).
pub(super) fn timestamp_micros(s: &[u8], with_zone: bool) -> Result<i128, String> {
    match s {
        b"infinity" => return Ok(i128::MAX),
        b"-infinity" => return Ok(i128::MIN),
        _ => {}
    }
    let (body, bc) = strip_bc(s);
    let mut p = Parser::new(body);
    let days = p.date(bc)?;
    p.expect(b' ')?;
    let local = i128::from(days) * MICROS_PER_DAY + p.time()?;
    let offset = if with_zone { p.offset()? } else { 0 };
    p.end()?;
    // The text shows local time = UTC + offset.
    Ok(local - offset)
}

fn strip_bc(s: &[u8]) -> (&[u8], bool) {
    match s.strip_suffix(b" BC") {
        Some(body) => (body, true),
        None => (s, false),
    }
}

/// A cursor over the text being read; every error names what was expected where.
struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> Parser<'a> {
    fn new(s: &'a [u8]) -> Parser<'a> {
        Parser { s, at: 0 }
    }

    fn fail<T>(&self, expected: &str) -> Result<T, String> {
        Err(format!(
            "expected {expected} at byte {} of {:?}",
            self.at,
            String::from_utf8_lossy(self.s)
        ))
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.s.get(self.at) == Some(&c) {
            self.at += 1;
            Ok(())
        } else {
            self.fail(&format!("{:?}", char::from(c)))
        }
    }

    fn end(&self) -> Result<(), String> {
        if self.at == self.s.len() {
            Ok(())
        } else {
            self.fail("the end")
        }
    }

    /// A run of `min..=max` digits.
    fn number(&mut self, min: usize, max: usize, what: &str) -> Result<i64, String> {
        let run = self.s[self.at..]
            .iter()
            .take(max)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if run < min {
            return self.fail(what);
        }
        let digits = &self.s[self.at..self.at + run];
        self.at += run;
        Ok(digits
            .iter()
            .fold(0i64, |acc, &c| acc * 10 + i64::from(c - b'0')))
    }

    /// `YYYY-MM-DD` as days since 1970-01-01; year `y` BC is astronomical year `1 - y`.
    fn date(&mut self, bc: bool) -> Result<i64, String> {
        let year = self.number(4, 9, "a year")?;
        self.expect(b'-')?;
        let month = self.number(2, 2, "a month")?;
        self.expect(b'-')?;
        let day = self.number(2, 2, "a day")?;
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || (bc && year == 0) {
            return self.fail("a valid date");
        }
        let year = if bc { 1 - year } else { year };
        Ok(days_from_civil(year, month, day))
    }

    /// `HH:MM:SS[.f…]` as microseconds.
    fn time(&mut self) -> Result<i128, String> {
        let hour = self.number(2, 2, "an hour")?;
        self.expect(b':')?;
        let minute = self.number(2, 2, "a minute")?;
        self.expect(b':')?;
        let second = self.number(2, 2, "a second")?;
        let mut micros = 0;
        if self.s.get(self.at) == Some(&b'.') {
            self.at += 1;
            let start = self.at;
            let fraction = self.number(1, 6, "fractional seconds")?;
            micros = fraction * 10i64.pow((6 - (self.at - start)) as u32);
        }
        let seconds = (hour * 60 + minute) * 60 + second;
        Ok(i128::from(seconds) * MICROS_PER_SECOND + i128::from(micros))
    }

    /// `±HH[:MM[:SS]]` as microseconds east of UTC.
    fn offset(&mut self) -> Result<i128, String> {
        let sign = match self.s.get(self.at) {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return self.fail("a UTC offset"),
        };
        self.at += 1;
        let mut seconds = self.number(2, 2, "offset hours")? * 3600;
        for unit in [60, 1] {
            if self.s.get(self.at) != Some(&b':') {
                break;
            }
            self.at += 1;
            seconds += self.number(2, 2, "offset minutes or seconds")? * unit;
        }
        Ok(sign * i128::from(seconds) * MICROS_PER_SECOND)
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_days_across_eras() {
        assert_eq!(date_days(b"1970-01-01"), Ok(0));
        assert_eq!(date_days(b"2000-01-01"), Ok(10_957));
        assert_eq!(date_days(b"1969-12-31"), Ok(-1));
        // 1 BC is year 0, a leap year; 0001-01-01 follows 0001-12-31 BC.
        assert_eq!(
            date_days(b"0001-12-31 BC").unwrap() + 1,
            date_days(b"0001-01-01").unwrap()
        );
        assert_eq!(
            date_days(b"0001-02-29 BC").unwrap() + 1,
            date_days(b"0001-03-01 BC").unwrap()
        );
        assert!(date_days(b"4713-11-24 BC").unwrap() < date_days(b"0044-03-15 BC").unwrap());
        assert!(date_days(b"9999-12-31").unwrap() < date_days(b"10000-01-01").unwrap());
        assert_eq!(date_days(b"infinity"), Ok(i64::MAX));
        assert!(date_days(b"01/02/2003").is_err());
        assert!(date_days(b"2003-01-02 ").is_err());
    }

    #[test]
    fn timestamps_with_offsets_become_utc() {
        let utc = timestamp_micros(b"2024-03-01 12:00:00+00", true).unwrap();
        assert_eq!(
            timestamp_micros(b"2024-03-01 17:30:00+05:30", true),
            Ok(utc)
        );
        assert_eq!(timestamp_micros(b"2024-03-01 04:00:00-08", true), Ok(utc));
        assert_eq!(
            timestamp_micros(b"1900-01-01 00:19:32+00:19:32", true),
            timestamp_micros(b"1900-01-01 00:00:00+00", true)
        );
        assert_eq!(
            timestamp_micros(b"2024-03-01 12:00:00.5+00", true),
            Ok(utc + 500_000)
        );
        assert_eq!(
            timestamp_micros(b"2024-03-01 12:00:00.000001", false),
            Ok(utc + 1)
        );
        assert!(timestamp_micros(b"2024-03-01 12:00:00", true).is_err());
        assert!(timestamp_micros(b"2024-03-01 12:00:00+00", false).is_err());
        assert!(timestamp_micros(b"0001-01-01 00:00:00 BC", false).unwrap() < 0);
        assert_eq!(timestamp_micros(b"-infinity", true), Ok(i128::MIN));
    }

    #[test]
    fn times_include_fractions_and_midnight_24() {
        assert_eq!(time_micros(b"00:00:00"), Ok(0));
        assert_eq!(time_micros(b"00:00:00.25"), Ok(250_000));
        assert_eq!(time_micros(b"24:00:00"), Ok(86_400_000_000));
        assert!(time_micros(b"12:00").is_err());
        assert!(time_micros(b"12:00:00.1234567").is_err());
    }
}
