//! Solar Hijri (Jalali) dates: people read dates in this calendar, and tracking codes start
//! with the Solar Hijri day so support staff can read when an inquiry was made.
//!
//! The conversion is the astronomical-breaks algorithm of Borkowski as used by jalaali-js,
//! exact for Solar Hijri years 1..3177 (no crate of this ecosystem is small and maintained).

use chrono::{Datelike, Duration, NaiveDate};

/// A Solar Hijri calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct JalaliDate {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

const BREAKS: [i32; 20] = [
    -61, 9, 38, 199, 426, 686, 756, 818, 1111, 1181, 1210, 1635, 2060, 2097, 2192, 2262, 2324,
    2394, 2456, 3178,
];

struct YearInfo {
    /// Years since the last leap year: 0 means this year is leap.
    leap: i32,
    gregorian_year: i32,
    /// Day of March on which 1 Farvardin falls.
    march: i32,
}

fn year_info(jy: i32) -> Option<YearInfo> {
    if jy < 1 || jy >= BREAKS[BREAKS.len() - 1] {
        return None;
    }
    let gy = jy + 621;
    let mut leap_j = -14;
    let mut jp = BREAKS[0];
    let mut jump = 0;
    for &jm in &BREAKS[1..] {
        jump = jm - jp;
        if jy < jm {
            break;
        }
        leap_j += jump / 33 * 8 + (jump % 33) / 4;
        jp = jm;
    }
    let mut n = jy - jp;
    leap_j += n / 33 * 8 + ((n % 33) + 3) / 4;
    if jump % 33 == 4 && jump - n == 4 {
        leap_j += 1;
    }
    let leap_g = gy / 4 - ((gy / 100 + 1) * 3) / 4 - 150;
    let march = 20 + leap_j - leap_g;
    if jump - n < 6 {
        n = n - jump + (jump + 4) / 33 * 33;
    }
    let mut leap = (((n + 1) % 33) - 1) % 4;
    if leap == -1 {
        leap = 4;
    }
    Some(YearInfo {
        leap,
        gregorian_year: gy,
        march,
    })
}

/// Whether a Solar Hijri year has 366 days (Esfand has 30 days).
pub fn is_leap_year(jy: i32) -> bool {
    year_info(jy).is_some_and(|y| y.leap == 0)
}

fn farvardin_first(info: &YearInfo) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(info.gregorian_year, 3, u32::try_from(info.march).ok()?)
}

impl JalaliDate {
    /// The Solar Hijri date of a Gregorian date; `None` outside years 1..3177.
    pub fn from_gregorian(date: NaiveDate) -> Option<JalaliDate> {
        let mut jy = date.year() - 621;
        let info = year_info(jy)?;
        let mut k = (date - farvardin_first(&info)?).num_days() as i32;
        if k >= 0 {
            if k <= 185 {
                return Some(JalaliDate {
                    year: jy,
                    month: 1 + (k / 31) as u32,
                    day: (k % 31) as u32 + 1,
                });
            }
            k -= 186;
        } else {
            jy -= 1;
            k += 179;
            if info.leap == 1 {
                k += 1;
            }
        }
        if jy < 1 {
            return None;
        }
        Some(JalaliDate {
            year: jy,
            month: 7 + (k / 30) as u32,
            day: (k % 30) as u32 + 1,
        })
    }

    /// The Gregorian date of this Solar Hijri date; `None` when it is not a real day.
    pub fn to_gregorian(self) -> Option<NaiveDate> {
        let days_in_month = match self.month {
            1..=6 => 31,
            7..=11 => 30,
            12 if is_leap_year(self.year) => 30,
            12 => 29,
            _ => return None,
        };
        if self.day < 1 || self.day > days_in_month {
            return None;
        }
        let info = year_info(self.year)?;
        let m = self.month as i64;
        let offset = (m - 1) * 31 - (m / 7) * (m - 7) + self.day as i64 - 1;
        Some(farvardin_first(&info)? + Duration::days(offset))
    }

    /// `yyyymmdd` as one number, e.g. 14050901.
    pub fn as_number(self) -> u64 {
        self.year as u64 * 10_000 + u64::from(self.month) * 100 + u64::from(self.day)
    }
}

impl std::fmt::Display for JalaliDate {
    /// `1405/09/01`, in ASCII digits (channels convert digits for Persian text).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}/{:02}/{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }
    fn j(y: i32, m: u32, d: u32) -> JalaliDate {
        JalaliDate {
            year: y,
            month: m,
            day: d,
        }
    }

    #[test]
    fn known_dates() {
        let cases = [
            ("2026-11-22", j(1405, 9, 1)),
            ("2026-03-21", j(1405, 1, 1)),
            ("2026-03-20", j(1404, 12, 29)),
            ("2025-03-21", j(1404, 1, 1)),
            ("2025-03-20", j(1403, 12, 30)), // 1403 is leap
            ("2024-03-20", j(1403, 1, 1)),
            ("2024-03-19", j(1402, 12, 29)),
            ("2021-03-21", j(1400, 1, 1)),
            ("2021-03-20", j(1399, 12, 30)), // 1399 is leap
            ("2020-03-20", j(1399, 1, 1)),
            ("1979-02-11", j(1357, 11, 22)),
            ("2000-01-01", j(1378, 10, 11)),
            ("2029-03-20", j(1408, 1, 1)),
            ("2030-03-20", j(1408, 12, 30)), // 1408 is leap
            ("2030-03-21", j(1409, 1, 1)),
            ("2026-09-22", j(1405, 6, 31)),
            ("2026-09-23", j(1405, 7, 1)),
        ];
        for (greg, jal) in cases {
            assert_eq!(JalaliDate::from_gregorian(g(greg)), Some(jal), "{greg}");
            assert_eq!(jal.to_gregorian(), Some(g(greg)), "{jal}");
        }
    }

    #[test]
    fn leap_years() {
        for y in [1399, 1403, 1408, 1412, 1416, 1420] {
            assert!(is_leap_year(y), "{y}");
        }
        for y in [1400, 1401, 1402, 1404, 1405, 1406, 1407] {
            assert!(!is_leap_year(y), "{y}");
        }
        assert_eq!(j(1404, 12, 30).to_gregorian(), None);
        assert_eq!(j(1405, 13, 1).to_gregorian(), None);
        assert_eq!(j(1405, 7, 31).to_gregorian(), None);
        assert_eq!(j(1405, 1, 0).to_gregorian(), None);
    }

    #[test]
    fn round_trips_every_day_for_three_centuries() {
        let mut d = g("1900-01-01");
        let end = g("2199-12-31");
        let mut prev = JalaliDate::from_gregorian(d).unwrap();
        while d < end {
            d += Duration::days(1);
            let jd = JalaliDate::from_gregorian(d).unwrap();
            assert_eq!(jd.to_gregorian(), Some(d));
            assert!(jd > prev, "{jd} after {prev}");
            prev = jd;
        }
    }

    #[test]
    fn formats_and_numbers() {
        assert_eq!(j(1405, 9, 1).to_string(), "1405/09/01");
        assert_eq!(j(1405, 9, 1).as_number(), 14050901);
    }
}
