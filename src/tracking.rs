//! Tracking codes: the number a person or a provider reads back to support, printed in
//! every answer and in the audit log.
//!
//! A code is 21 digits: the Solar Hijri date in Tehran (`14050901`), the node ID (two
//! digits, from `--node-id`) and the microsecond of that day (11 digits). The microsecond
//! comes from a counter that is never behind the clock and always moves forward, so codes
//! are unique within a process (even at a million a second), across restarts (a new process
//! starts from the clock, past every code the old one gave unless the clock went back), and
//! across replicas (each has its own node ID). No coordination, no state on disk.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::jalali::JalaliDate;

pub const MAX_NODE_ID: u16 = 99;
pub const CODE_LEN: usize = 21;

/// A tracking code, held as its ASCII digits (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackingCode([u8; CODE_LEN]);

impl TrackingCode {
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever written into the array.
        std::str::from_utf8(&self.0).unwrap_or("000000000000000000000")
    }
}

impl std::fmt::Display for TrackingCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for TrackingCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrackingCode({})", self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("--node-id must be between 0 and {MAX_NODE_ID}, got {0}")]
pub struct NodeIdError(pub u64);

/// Counters a node's codes come from: a thread always uses the same one, so threads on
/// different cores do not write one shared word. Counter `r` hands out only microseconds
/// congruent to `r` modulo this, so codes stay unique across counters; each can give
/// 250,000 codes a second before it runs ahead of the clock.
const COUNTERS: usize = 4;

/// A counter on a cache line of its own.
#[repr(align(128))]
struct Counter(AtomicU64);

pub struct TrackingCodes {
    node: u8,
    /// The last microsecond (since the Unix epoch) each counter handed out.
    last_micros: [Counter; COUNTERS],
}

impl TrackingCodes {
    pub fn new(node_id: u64) -> Result<TrackingCodes, NodeIdError> {
        if node_id > u64::from(MAX_NODE_ID) {
            return Err(NodeIdError(node_id));
        }
        Ok(TrackingCodes {
            node: node_id as u8,
            last_micros: std::array::from_fn(|_| Counter(AtomicU64::new(0))),
        })
    }

    /// A code for a request arriving now.
    pub fn next(&self) -> TrackingCode {
        self.next_at(std::time::SystemTime::now())
    }

    /// A code at or after `now` (a request's arrival, read once for everything it records).
    pub fn next_at(&self, now: std::time::SystemTime) -> TrackingCode {
        let now = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let r = (crate::metrics::hot::shard() % COUNTERS) as u64;
        let counter = &self.last_micros[r as usize].0;
        let mut prev = counter.load(Ordering::Relaxed);
        let micros = loop {
            let base = now.max(prev + 1);
            let candidate = base + (r + COUNTERS as u64 - base % COUNTERS as u64) % COUNTERS as u64;
            match counter.compare_exchange_weak(
                prev,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break candidate,
                Err(actual) => prev = actual,
            }
        };
        encode(micros, self.node)
    }
}

/// The Tehran day a thread last made a code in: `[starts, ends)` in Unix microseconds and
/// its Solar Hijri date as a number. The calendar and time-zone work runs once per day and
/// thread, not per code, and nothing is shared between threads.
#[derive(Clone, Copy)]
struct CachedDay {
    starts: u64,
    ends: u64,
    date: u64,
}

thread_local! {
    static DAY: std::cell::Cell<CachedDay> = const {
        std::cell::Cell::new(CachedDay { starts: 0, ends: 0, date: 0 })
    };
}

fn day_of(micros: u64) -> CachedDay {
    let cached = DAY.with(std::cell::Cell::get);
    if (cached.starts..cached.ends).contains(&micros) {
        return cached;
    }
    let (date, starts, ends) = crate::dates::tehran_day_bounds(micros / 1_000_000);
    let day = CachedDay {
        starts: starts.saturating_mul(1_000_000),
        ends: ends.saturating_mul(1_000_000),
        date: JalaliDate::from_gregorian(date).map_or(0, JalaliDate::as_number),
    };
    DAY.with(|c| c.set(day));
    day
}

fn encode(micros: u64, node: u8) -> TrackingCode {
    let day = day_of(micros);
    let (date, micros_of_day) = (day.date, micros - day.starts);
    let mut digits = [b'0'; CODE_LEN];
    write_digits(&mut digits[0..8], date);
    write_digits(&mut digits[8..10], u64::from(node));
    write_digits(&mut digits[10..21], micros_of_day);
    TrackingCode(digits)
}

fn write_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use std::collections::HashSet;

    #[test]
    fn codes_start_with_the_solar_hijri_date_in_tehran_and_the_node() {
        // 2026-11-22 20:29:59.000001 UTC is 23:59:59 on 1 Azar 1405 in Tehran (UTC+3:30).
        let micros = DateTime::parse_from_rfc3339("2026-11-22T20:29:59.000001Z")
            .unwrap()
            .timestamp_micros() as u64;
        assert_eq!(encode(micros, 7).as_str(), "140509010786399000001");
        // Half an hour later it is already the next day in Tehran.
        let micros = DateTime::parse_from_rfc3339("2026-11-22T20:30:00Z")
            .unwrap()
            .timestamp_micros() as u64;
        assert_eq!(encode(micros, 7).as_str(), "140509020700000000000");
        // And back again: a thread's cached day is replaced whichever way time moves.
        let micros = DateTime::parse_from_rfc3339("2026-11-22T20:29:59.5Z")
            .unwrap()
            .timestamp_micros() as u64;
        assert_eq!(encode(micros, 7).as_str(), "140509010786399500000");
    }

    #[test]
    fn codes_match_the_calendar_through_a_year_of_days() {
        let tz = chrono_tz::Asia::Tehran;
        let mut micros = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .timestamp_micros() as u64;
        for _ in 0..800 {
            let local = DateTime::from_timestamp_micros(micros as i64)
                .unwrap()
                .with_timezone(&tz);
            let date = JalaliDate::from_gregorian(local.date_naive())
                .unwrap()
                .as_number();
            let of_day = u64::from(chrono::Timelike::num_seconds_from_midnight(&local)) * 1_000_000
                + micros % 1_000_000;
            let mut expected = Vec::new();
            crate::dates::push_digits(&mut expected, date, 8);
            crate::dates::push_digits(&mut expected, 5, 2);
            crate::dates::push_digits(&mut expected, of_day, 11);
            assert_eq!(
                encode(micros, 5).as_str().as_bytes(),
                &expected[..],
                "{local}"
            );
            micros += 11 * 3_600_000_000 + 123_457;
        }
    }

    #[test]
    fn codes_are_unique_and_numeric_under_contention() {
        let codes = TrackingCodes::new(3).unwrap();
        let all: Vec<TrackingCode> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..20_000).map(|_| codes.next()).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len());
        for c in &all {
            assert_eq!(c.as_str().len(), CODE_LEN);
            assert!(c.as_str().bytes().all(|b| b.is_ascii_digit()));
            assert_eq!(&c.as_str()[8..10], "03");
        }
    }

    #[test]
    fn a_restarted_process_continues_past_the_old_codes() {
        let first = TrackingCodes::new(0).unwrap();
        let before = first.next();
        // A restart takes far longer than the microsecond a code is made of.
        std::thread::sleep(std::time::Duration::from_millis(1));
        let second = TrackingCodes::new(0).unwrap();
        assert!(second.next().as_str() > before.as_str());
    }

    #[test]
    fn node_ids_are_bounded() {
        assert!(TrackingCodes::new(99).is_ok());
        assert!(TrackingCodes::new(100).is_err());
    }
}
