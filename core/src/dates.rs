//! Calendar dates as the service stores and compares them: days since 1970-01-01 in an
//! `i32`, so a member carries 4 bytes per date and the rules compare integers. "Today" is
//! the date in Asia/Tehran, where the people and their providers are, not the server's zone.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Datelike, NaiveDate, TimeZone, Utc};

/// A calendar date stored as days since 1970-01-01.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Day(pub i32);

/// Why a date string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dates are written YYYY-MM-DD with a real calendar day between 1900-01-01 and 2199-12-31")]
pub struct DateError;

const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;
/// 1900-01-01, the first day a record may hold.
const FIRST_SUPPORTED: i32 = -25_567;
/// 2199-12-31, the last day a record may hold.
const LAST_SUPPORTED: i32 = 84_005;

impl Day {
    /// Parses a strict ISO 8601 calendar date (`2026-11-22`); no times, no other forms.
    pub fn parse_iso(s: &str) -> Result<Day, DateError> {
        let b = s.as_bytes();
        let ok_shape = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !ok_shape {
            return Err(DateError);
        }
        let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| DateError)?;
        if !(1900..=2199).contains(&date.year()) {
            return Err(DateError);
        }
        Ok(Day::from_date(date))
    }

    pub fn from_date(date: NaiveDate) -> Day {
        Day(date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE)
    }

    /// The calendar date; days outside chrono's range (only reachable through corrupt
    /// storage, which validation refuses first) clamp to the epoch.
    pub fn date(self) -> NaiveDate {
        NaiveDate::from_num_days_from_ce_opt(self.0.saturating_add(UNIX_EPOCH_DAYS_FROM_CE))
            .unwrap_or_default()
    }

    /// Today in Asia/Tehran. The time-zone arithmetic runs once per day change, not per
    /// call: the day and the Unix second it ends at are cached together in one word, read
    /// with one load (shared, written once a day).
    pub fn today() -> Day {
        let now = coarse_unix_seconds();
        let cached = TODAY.load(Ordering::Relaxed);
        if now < cached >> 24 {
            // Below 2^24 days: the day fits the low 24 bits (until the year 47,000).
            return Day((cached & 0xFF_FFFF) as i32);
        }
        let (day, ends) = tehran_day_at(now);
        if (0..=0xFF_FFFF).contains(&day.0) && ends < 1 << 40 {
            TODAY.store((ends << 24) | day.0 as u64, Ordering::Relaxed);
        }
        day
    }

    pub fn plus_days(self, days: i32) -> Day {
        Day(self.0.saturating_add(days))
    }

    /// Whether the day lies in the range `parse_iso` accepts; used when reading stored dates.
    pub fn in_supported_range(self) -> bool {
        // 1900-01-01 and 2199-12-31 as days since 1970-01-01 (checked by a test).
        (FIRST_SUPPORTED..=LAST_SUPPORTED).contains(&self.0)
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = Vec::with_capacity(10);
        self.write_iso(&mut out);
        f.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
    }
}

/// The wall clock in whole seconds from the kernel's coarse clock: a memory read, where a
/// precise read costs ~30 ns on this VM's clock source, on every request. It lags the
/// precise clock by at most one tick (≤ 4 ms), so "today" may change up to 4 ms after
/// midnight in Tehran.
#[allow(unsafe_code)]
fn coarse_unix_seconds() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc == 0 && ts.tv_sec >= 0 {
        ts.tv_sec as u64
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// `(ends at, in Unix seconds) << 24 | day` of the cached Tehran date; 0 until first asked.
static TODAY: AtomicU64 = AtomicU64::new(0);

/// The Tehran date at Unix second `now`, and the Unix second its next day starts.
fn tehran_day_at(now: u64) -> (Day, u64) {
    let (date, _, ends) = tehran_day_bounds(now);
    (Day::from_date(date), ends)
}

/// The Tehran date at Unix second `now`, and the Unix seconds it starts and ends at (what
/// lets callers cache a day's figures until it ends, time-zone rules included).
pub fn tehran_day_bounds(now: u64) -> (NaiveDate, u64, u64) {
    let tz = chrono_tz::Asia::Tehran;
    let utc = chrono::DateTime::from_timestamp(i64::try_from(now).unwrap_or(i64::MAX), 0)
        .unwrap_or_default();
    let date = utc.with_timezone(&tz).date_naive();
    let unix = |d: Option<NaiveDate>| {
        d.and_then(|d| d.and_hms_opt(0, 0, 0))
            .and_then(|midnight| tz.from_local_datetime(&midnight).earliest())
            .map(|t| t.with_timezone(&Utc).timestamp().max(0) as u64)
    };
    let starts = unix(Some(date)).unwrap_or(now).min(now);
    let ends = unix(date.succ_opt()).unwrap_or(now + 1).max(now + 1);
    (date, starts, ends)
}

/// The proleptic Gregorian `(year, month, day)` of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`): what a date costs to print without a calendar library.
pub fn civil_from_days(days: i32) -> (i32, u32, u32) {
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m, d)
}

/// Appends `value` as exactly `width` decimal digits (the low ones; zero-padded).
pub fn push_digits(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

impl Day {
    /// Appends `YYYY-MM-DD` (years 0–9999, which covers every day a record may hold).
    pub fn write_iso(self, out: &mut Vec<u8>) {
        let (y, m, d) = civil_from_days(self.0);
        push_digits(out, y.clamp(0, 9999) as u64, 4);
        out.push(b'-');
        push_digits(out, u64::from(m), 2);
        out.push(b'-');
        push_digits(out, u64::from(d), 2);
    }
}

/// Appends a Unix time in milliseconds as RFC 3339 in UTC with milliseconds
/// (`2026-11-22T08:14:03.120Z`), the form of `data_as_of`.
pub fn write_rfc3339_utc_ms(out: &mut Vec<u8>, ms: u64) {
    let ms = ms.min(253_402_300_799_999); // 9999-12-31T23:59:59.999Z
    let secs = ms / 1000;
    Day((secs / 86_400) as i32).write_iso(out);
    let of_day = secs % 86_400;
    out.push(b'T');
    push_digits(out, of_day / 3600, 2);
    out.push(b':');
    push_digits(out, of_day / 60 % 60, 2);
    out.push(b':');
    push_digits(out, of_day % 60, 2);
    out.push(b'.');
    push_digits(out, ms % 1000, 3);
    out.push(b'Z');
}

/// [`write_rfc3339_utc_ms`] as a string.
pub fn rfc3339_utc_ms(ms: u64) -> String {
    let mut out = Vec::with_capacity(24);
    write_rfc3339_utc_ms(&mut out, ms);
    String::from_utf8(out).unwrap_or_default()
}

/// The wall clock in Unix milliseconds (stream IDs carry this time).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_iso_dates() {
        assert_eq!(Day::parse_iso("1970-01-01"), Ok(Day(0)));
        assert_eq!(Day::parse_iso("1970-01-02"), Ok(Day(1)));
        assert_eq!(Day::parse_iso("1969-12-31"), Ok(Day(-1)));
        let d = Day::parse_iso("2026-11-22").unwrap();
        assert_eq!(d.to_string(), "2026-11-22");
        assert_eq!(
            Day::parse_iso("2024-02-29")
                .unwrap()
                .plus_days(1)
                .to_string(),
            "2024-03-01"
        );
    }

    #[test]
    fn rejects_everything_that_is_not_a_plain_calendar_date() {
        for bad in [
            "",
            "2026-11-31",
            "2025-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-01",
            "26-11-22",
            "2026/11/22",
            "2026-11-22T00:00:00",
            " 2026-11-22",
            "۲۰۲۶-۱۱-۲۲",
            "+2026-11-2",
            "1899-12-31",
            "2200-01-01",
            "abcd-ef-gh",
            "2026-11-2x",
        ] {
            assert_eq!(Day::parse_iso(bad), Err(DateError), "{bad:?}");
        }
    }

    #[test]
    fn data_as_of_is_rfc3339_utc_with_milliseconds() {
        assert_eq!(
            rfc3339_utc_ms(1_795_767_243_120),
            "2026-11-27T08:14:03.120Z"
        );
        assert_eq!(rfc3339_utc_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn dates_print_as_chrono_does_over_the_whole_supported_range_and_beyond() {
        let (lo, hi) = (
            Day::parse_iso("1900-01-01").unwrap().0,
            Day::parse_iso("2199-12-31").unwrap().0,
        );
        for day in (lo - 1000)..=(hi + 1000) {
            let chrono = Day(day).date().format("%Y-%m-%d").to_string();
            assert_eq!(Day(day).to_string(), chrono, "day {day}");
        }
    }

    #[test]
    fn data_as_of_matches_chrono_at_every_kind_of_instant() {
        let mut ms = 0u64;
        while ms < 7_258_118_400_000 {
            let chrono = chrono::DateTime::from_timestamp_millis(ms as i64)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            assert_eq!(rfc3339_utc_ms(ms), chrono, "{ms}");
            ms = ms * 3 / 2 + 86_399_999;
        }
        assert_eq!(rfc3339_utc_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn today_is_the_tehran_date_and_its_day_ends_at_tehran_midnight() {
        let expected = Day::from_date(
            Utc::now()
                .with_timezone(&chrono_tz::Asia::Tehran)
                .date_naive(),
        );
        // Twice: computed, then from the cache (a day change between them is ~impossible).
        assert_eq!(Day::today(), expected);
        assert_eq!(Day::today(), expected);
        // 2026-11-27T20:29:59Z is 23:59:59 in Tehran (UTC+3:30): the day ends a second later.
        let (day, ends) = tehran_day_at(1_795_811_399);
        assert_eq!(day.to_string(), "2026-11-27");
        assert_eq!(ends, 1_795_811_400);
        assert_eq!(tehran_day_at(ends).0.to_string(), "2026-11-28");
    }

    #[test]
    fn supported_range_matches_the_parser() {
        assert!(Day::parse_iso("1900-01-01").unwrap().in_supported_range());
        assert!(Day::parse_iso("2199-12-31").unwrap().in_supported_range());
        assert!(!Day::parse_iso("1900-01-01")
            .unwrap()
            .plus_days(-1)
            .in_supported_range());
        assert!(!Day(i32::MAX).in_supported_range());
        assert!(!Day::parse_iso("2199-12-31")
            .unwrap()
            .plus_days(1)
            .in_supported_range());
    }
}
