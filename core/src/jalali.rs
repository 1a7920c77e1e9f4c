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

    /// Known pairs, not round trips: Nowruz (1 Farvardin), 1 Mehr and the last day of
    /// Esfand (the 30th in leap years) for years from the 1300s to the 1550s. Every pair was
    /// checked against two independent implementations (Python `jdatetime` 6.1 and
    /// `convertdate.persian` 2.5), which agree on all of them. Years 1502 and 1503 are left
    /// out on purpose: those two sources disagree about which of them is leap.
    #[test]
    fn known_dates_across_two_and_a_half_centuries() {
        let cases: [(&str, i32, u32, u32); 135] = [
            ("1921-03-21", 1300, 1, 1),
            ("1921-09-23", 1300, 7, 1),
            ("1922-03-21", 1300, 12, 30),
            ("1922-03-22", 1301, 1, 1),
            ("1922-09-24", 1301, 7, 1),
            ("1923-03-21", 1301, 12, 29),
            ("1925-03-21", 1304, 1, 1),
            ("1925-09-23", 1304, 7, 1),
            ("1926-03-21", 1304, 12, 30),
            ("1930-03-21", 1309, 1, 1),
            ("1930-09-23", 1309, 7, 1),
            ("1931-03-21", 1309, 12, 30),
            ("1931-03-22", 1310, 1, 1),
            ("1931-09-24", 1310, 7, 1),
            ("1932-03-20", 1310, 12, 29),
            ("1941-03-21", 1320, 1, 1),
            ("1941-09-23", 1320, 7, 1),
            ("1942-03-20", 1320, 12, 29),
            ("1954-03-21", 1333, 1, 1),
            ("1954-09-23", 1333, 7, 1),
            ("1955-03-21", 1333, 12, 30),
            ("1964-03-21", 1343, 1, 1),
            ("1964-09-23", 1343, 7, 1),
            ("1965-03-20", 1343, 12, 29),
            ("1975-03-21", 1354, 1, 1),
            ("1975-09-23", 1354, 7, 1),
            ("1976-03-20", 1354, 12, 30),
            ("1978-03-21", 1357, 1, 1),
            ("1978-09-23", 1357, 7, 1),
            ("1979-03-20", 1357, 12, 29),
            ("1979-03-21", 1358, 1, 1),
            ("1979-09-23", 1358, 7, 1),
            ("1980-03-20", 1358, 12, 30),
            ("1991-03-21", 1370, 1, 1),
            ("1991-09-23", 1370, 7, 1),
            ("1992-03-20", 1370, 12, 30),
            ("1996-03-20", 1375, 1, 1),
            ("1996-09-22", 1375, 7, 1),
            ("1997-03-20", 1375, 12, 30),
            ("2000-03-20", 1379, 1, 1),
            ("2000-09-22", 1379, 7, 1),
            ("2001-03-20", 1379, 12, 30),
            ("2008-03-20", 1387, 1, 1),
            ("2008-09-22", 1387, 7, 1),
            ("2009-03-20", 1387, 12, 30),
            ("2012-03-20", 1391, 1, 1),
            ("2012-09-22", 1391, 7, 1),
            ("2013-03-20", 1391, 12, 30),
            ("2016-03-20", 1395, 1, 1),
            ("2016-09-22", 1395, 7, 1),
            ("2017-03-20", 1395, 12, 30),
            ("2019-03-21", 1398, 1, 1),
            ("2019-09-23", 1398, 7, 1),
            ("2020-03-19", 1398, 12, 29),
            ("2020-03-20", 1399, 1, 1),
            ("2020-09-22", 1399, 7, 1),
            ("2021-03-20", 1399, 12, 30),
            ("2021-03-21", 1400, 1, 1),
            ("2021-09-23", 1400, 7, 1),
            ("2022-03-20", 1400, 12, 29),
            ("2022-03-21", 1401, 1, 1),
            ("2022-09-23", 1401, 7, 1),
            ("2023-03-20", 1401, 12, 29),
            ("2023-03-21", 1402, 1, 1),
            ("2023-09-23", 1402, 7, 1),
            ("2024-03-19", 1402, 12, 29),
            ("2024-03-20", 1403, 1, 1),
            ("2024-09-22", 1403, 7, 1),
            ("2025-03-20", 1403, 12, 30),
            ("2025-03-21", 1404, 1, 1),
            ("2025-09-23", 1404, 7, 1),
            ("2026-03-20", 1404, 12, 29),
            ("2026-03-21", 1405, 1, 1),
            ("2026-09-23", 1405, 7, 1),
            ("2027-03-20", 1405, 12, 29),
            ("2027-03-21", 1406, 1, 1),
            ("2027-09-23", 1406, 7, 1),
            ("2028-03-19", 1406, 12, 29),
            ("2028-03-20", 1407, 1, 1),
            ("2028-09-22", 1407, 7, 1),
            ("2029-03-19", 1407, 12, 29),
            ("2029-03-20", 1408, 1, 1),
            ("2029-09-22", 1408, 7, 1),
            ("2030-03-20", 1408, 12, 30),
            ("2030-03-21", 1409, 1, 1),
            ("2030-09-23", 1409, 7, 1),
            ("2031-03-20", 1409, 12, 29),
            ("2033-03-20", 1412, 1, 1),
            ("2033-09-22", 1412, 7, 1),
            ("2034-03-20", 1412, 12, 30),
            ("2037-03-20", 1416, 1, 1),
            ("2037-09-22", 1416, 7, 1),
            ("2038-03-20", 1416, 12, 30),
            ("2041-03-20", 1420, 1, 1),
            ("2041-09-22", 1420, 7, 1),
            ("2042-03-20", 1420, 12, 30),
            ("2050-03-21", 1429, 1, 1),
            ("2050-09-23", 1429, 7, 1),
            ("2051-03-20", 1429, 12, 29),
            ("2058-03-21", 1437, 1, 1),
            ("2058-09-23", 1437, 7, 1),
            ("2059-03-20", 1437, 12, 29),
            ("2071-03-21", 1450, 1, 1),
            ("2071-09-23", 1450, 7, 1),
            ("2072-03-19", 1450, 12, 29),
            ("2074-03-20", 1453, 1, 1),
            ("2074-09-22", 1453, 7, 1),
            ("2075-03-20", 1453, 12, 30),
            ("2075-03-21", 1454, 1, 1),
            ("2075-09-23", 1454, 7, 1),
            ("2076-03-19", 1454, 12, 29),
            ("2083-03-21", 1462, 1, 1),
            ("2083-09-23", 1462, 7, 1),
            ("2084-03-19", 1462, 12, 29),
            ("2094-03-20", 1473, 1, 1),
            ("2094-09-22", 1473, 7, 1),
            ("2095-03-19", 1473, 12, 29),
            ("2095-03-20", 1474, 1, 1),
            ("2095-09-22", 1474, 7, 1),
            ("2096-03-19", 1474, 12, 30),
            ("2096-03-20", 1475, 1, 1),
            ("2096-09-22", 1475, 7, 1),
            ("2097-03-19", 1475, 12, 29),
            ("2111-03-21", 1490, 1, 1),
            ("2111-09-23", 1490, 7, 1),
            ("2112-03-20", 1490, 12, 30),
            ("2120-03-21", 1499, 1, 1),
            ("2120-09-23", 1499, 7, 1),
            ("2121-03-20", 1499, 12, 29),
            ("2121-03-21", 1500, 1, 1),
            ("2121-09-23", 1500, 7, 1),
            ("2122-03-20", 1500, 12, 29),
            ("2176-03-20", 1555, 1, 1),
            ("2176-09-22", 1555, 7, 1),
            ("2177-03-19", 1555, 12, 29),
        ];
        for (greg, y, m, d) in cases {
            let jal = j(y, m, d);
            assert_eq!(JalaliDate::from_gregorian(g(greg)), Some(jal), "{greg}");
            assert_eq!(jal.to_gregorian(), Some(g(greg)), "{jal}");
        }
        // The day after each year's last day is the next Nowruz.
        for (greg, y, m, d) in cases {
            if m == 12 {
                let next = g(greg) + Duration::days(1);
                assert_eq!(
                    JalaliDate::from_gregorian(next),
                    Some(j(y + 1, 1, 1)),
                    "{greg}"
                );
                assert_eq!(is_leap_year(y), d == 30, "{y}");
            }
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
