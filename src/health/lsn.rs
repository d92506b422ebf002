//! WAL positions (`pg_lsn`) as PostgreSQL prints them, `16/B374D848`, and the byte distance
//! between two of them.

use std::fmt;

/// A position in the write-ahead log: a byte offset, printed by PostgreSQL as two hex halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses `pg_lsn`'s text form, `X/Y` with each half at most 8 hex digits.
    pub fn parse(text: &str) -> Result<Lsn, String> {
        let bad = || {
            format!("`{text}` is not a WAL position (expected two hex numbers as in 16/B374D848)")
        };
        let (hi, lo) = text.split_once('/').ok_or_else(bad)?;
        let half = |h: &str| {
            if h.is_empty() || h.len() > 8 {
                return Err(bad());
            }
            u32::from_str_radix(h, 16).map_err(|_| bad())
        };
        Ok(Lsn((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
    }

    /// Bytes from `earlier` to `self`; 0 when `earlier` is not earlier. A replica read a moment
    /// after its primary can be ahead of the primary's position as we saw it: that is no lag.
    pub fn bytes_after(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// An insert position (`pg_current_wal_insert_lsn()`) as the end of the last record before
    /// it, which is where a replica's replay position stops. They differ only when that record
    /// ended on an 8 KiB page boundary: the insert position is then past the next page's 24-byte
    /// header, which no record can end inside, so a replica would never seem to reach it until
    /// more WAL is written. (A segment's first page has a 40-byte header, and a record may end 40
    /// bytes into an ordinary page: that case is left alone, costing only a later replica read.)
    pub fn as_record_end(self) -> Lsn {
        const PAGE: u64 = 8192;
        const SHORT_HEADER: u64 = 24;
        if self.0 % PAGE == SHORT_HEADER {
            Lsn(self.0 - SHORT_HEADER)
        } else {
            self
        }
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_insert_position_past_a_page_header_is_the_record_end_before_it() {
        assert_eq!(Lsn(3 * 8192 + 24).as_record_end(), Lsn(3 * 8192));
        assert_eq!(Lsn(3 * 8192 + 40).as_record_end(), Lsn(3 * 8192 + 40));
        assert_eq!(Lsn(3 * 8192 + 100).as_record_end(), Lsn(3 * 8192 + 100));
        assert_eq!(Lsn(0x1000000 + 40).as_record_end(), Lsn(0x1000000 + 40));
    }

    use super::*;

    #[test]
    fn parses_and_prints_as_postgres_does() {
        assert_eq!(Lsn::parse("0/0"), Ok(Lsn(0)));
        assert_eq!(Lsn::parse("16/B374D848"), Ok(Lsn(0x16_B374_D848)));
        assert_eq!(Lsn::parse("16/b374d848"), Ok(Lsn(0x16_B374_D848)));
        assert_eq!(Lsn::parse("FFFFFFFF/FFFFFFFF"), Ok(Lsn(u64::MAX)));
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0x3000060).to_string(), "0/3000060");
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "16",
            "1/2/3",
            "G/0",
            "123456789/0",
            "-1/0",
            " 0/0",
        ] {
            let e = Lsn::parse(bad).expect_err(bad);
            assert!(e.contains("is not a WAL position"), "{e}");
        }
    }

    #[test]
    fn distance_crosses_the_half_boundary_and_never_goes_negative() {
        let a = Lsn::parse("0/FFFFFF00").unwrap();
        let b = Lsn::parse("1/00000100").unwrap();
        assert_eq!(b.bytes_after(a), 0x200);
        assert_eq!(
            a.bytes_after(b),
            0,
            "a replica ahead of what we saw of its primary"
        );
        assert_eq!(a.bytes_after(a), 0);
    }
}
