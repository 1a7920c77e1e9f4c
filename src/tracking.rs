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

use chrono::{DateTime, Timelike};

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

pub struct TrackingCodes {
    node: u8,
    /// The last microsecond (since the Unix epoch) handed out.
    last_micros: AtomicU64,
}

impl TrackingCodes {
    pub fn new(node_id: u64) -> Result<TrackingCodes, NodeIdError> {
        if node_id > u64::from(MAX_NODE_ID) {
            return Err(NodeIdError(node_id));
        }
        Ok(TrackingCodes {
            node: node_id as u8,
            last_micros: AtomicU64::new(0),
        })
    }

    pub fn next(&self) -> TrackingCode {
        let now = chrono::Utc::now().timestamp_micros().max(0) as u64;
        let mut prev = self.last_micros.load(Ordering::Relaxed);
        let micros = loop {
            let candidate = now.max(prev + 1);
            match self.last_micros.compare_exchange_weak(
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

fn encode(micros: u64, node: u8) -> TrackingCode {
    let utc = DateTime::from_timestamp_micros(micros as i64).unwrap_or_default();
    let local = utc.with_timezone(&chrono_tz::Asia::Tehran);
    let date = JalaliDate::from_gregorian(local.date_naive()).map_or(0, JalaliDate::as_number);
    let micros_of_day = u64::from(local.num_seconds_from_midnight()) * 1_000_000
        + u64::from(local.nanosecond() / 1000);
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
