//! Calendar dates as the service stores and compares them: days since 1970-01-01 in an
//! `i32`, so a member carries 4 bytes per date and the rules compare integers. "Today" is
//! the date in Asia/Tehran, where the people and their providers are, not the server's zone.

use chrono::{Datelike, NaiveDate, Utc};

/// A calendar date stored as days since 1970-01-01.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Day(pub i32);

/// Why a date string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dates are written YYYY-MM-DD with a real calendar day between 1900-01-01 and 2199-12-31")]
pub struct DateError;

const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

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

    /// Today in Asia/Tehran.
    pub fn today() -> Day {
        Day::from_date(
            Utc::now()
                .with_timezone(&chrono_tz::Asia::Tehran)
                .date_naive(),
        )
    }

    pub fn plus_days(self, days: i32) -> Day {
        Day(self.0.saturating_add(days))
    }

    /// Whether the day lies in the range `parse_iso` accepts; used when reading stored dates.
    pub fn in_supported_range(self) -> bool {
        let lo = Day::from_date(NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or_default());
        let hi = Day::from_date(NaiveDate::from_ymd_opt(2199, 12, 31).unwrap_or_default());
        (lo..=hi).contains(&self)
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // NaiveDate's own Display is `YYYY-MM-DD` for the years a Day holds (1900–2199), and
        // unlike `format("%Y-%m-%d")` it parses no format string on every answer.
        std::fmt::Display::fmt(&self.date(), f)
    }
}

/// A Unix time in milliseconds as RFC 3339 in UTC with milliseconds
/// (`2026-11-22T08:14:03.120Z`), the form of `data_as_of`.
pub fn rfc3339_utc_ms(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
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
    fn supported_range_matches_the_parser() {
        assert!(Day::parse_iso("1900-01-01").unwrap().in_supported_range());
        assert!(Day::parse_iso("2199-12-31").unwrap().in_supported_range());
        assert!(!Day::parse_iso("1900-01-01")
            .unwrap()
            .plus_days(-1)
            .in_supported_range());
        assert!(!Day(i32::MAX).in_supported_range());
    }
}
