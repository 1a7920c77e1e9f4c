//! Refusals before the index, aggregated: the audit log grows with answers, not with attacks.
//!
//! An inquiry that reaches the index (an answer, `member_not_found`, `booklet_not_found`)
//! keeps a line of its own. A request refused before it (401, 403, 405, 413, 429, a
//! malformed request, 503) is only *counted* here, under who asked (the key's client, else
//! the client address, IPv6 by its prefix), channel, route, outcome and status; the writer
//! turns the table into one line per entry each second ([`WINDOW`]). A refusal never
//! carries the subject the requester typed: an attacker could otherwise plant "lookups" of
//! anyone in the record of who looked up whom.
//!
//! The table holds at most [`MAX_ENTRIES`] entries per window; refusals beyond that are
//! counted under `"address":"others"` per outcome and status only (a closed set of about a
//! dozen), so a million distinct addresses add at most about [`MAX_ENTRIES`] + 12 lines a
//! second (docs/security.md, "Audit log"). They are never silent: every refusal is in some
//! line's `count`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long refusals are gathered into one line per entry.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Distinct (who, channel, route, outcome, status) entries kept per window.
pub const MAX_ENTRIES: usize = 64;

/// Who was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Who {
    /// A valid key's client.
    Client(&'static str),
    /// No valid key: the client address (IPv6 reduced to its limiting prefix).
    Address(IpAddr),
    /// Neither is known (tools, tests).
    Unknown,
    /// One of the entries past [`MAX_ENTRIES`] in a window.
    Others,
}

/// One refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Refusal {
    pub who: Who,
    pub channel: &'static str,
    pub route: &'static str,
    pub outcome: &'static str,
    pub status: u16,
}

/// The refusals of the current window (and, while the log cannot be written, of every window
/// since the last line written: still at most [`MAX_ENTRIES`] entries plus the closed set).
pub struct Table {
    inner: Mutex<Window>,
}

#[derive(Default)]
pub(crate) struct Window {
    pub(crate) counts: HashMap<Refusal, u64>,
    /// When the window began (the first line's time).
    pub(crate) since: Option<SystemTime>,
    /// Entries past [`MAX_ENTRIES`], under [`Who::Others`] (not counted in the limit).
    others: usize,
}

impl Window {
    fn add(&mut self, refusal: Refusal, count: u64, now: SystemTime) {
        self.since.get_or_insert(now);
        let key = if self.counts.len() - self.others >= MAX_ENTRIES
            && !self.counts.contains_key(&refusal)
        {
            // Past the limit, only the outcome and status are kept: a closed set of a
            // dozen or so lines, whatever channels and routes the flood used.
            Refusal {
                who: Who::Others,
                channel: "others",
                route: "others",
                ..refusal
            }
        } else {
            refusal
        };
        match self.counts.get_mut(&key) {
            Some(n) => *n += count,
            None => {
                if key.who == Who::Others {
                    self.others += 1;
                }
                self.counts.insert(key, count);
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Refusals counted in this window.
    pub(crate) fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

impl Default for Table {
    fn default() -> Self {
        Table {
            inner: Mutex::new(Window::default()),
        }
    }
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one refusal.
    pub fn add(&self, refusal: Refusal) {
        self.lock().add(refusal, 1, SystemTime::now());
    }

    /// Takes the window for writing, leaving an empty one.
    pub(crate) fn take(&self) -> Window {
        std::mem::take(&mut *self.lock())
    }

    /// Puts back a window that could not be written: its counts join the current ones, and
    /// the lines keep the earlier start.
    pub(crate) fn restore(&self, window: Window) {
        let mut current = self.lock();
        let since = match (window.since, current.since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for (refusal, count) in window.counts {
            current.add(refusal, count, since.unwrap_or_else(SystemTime::now));
        }
        current.since = since;
    }

    /// Refusals counted and not yet written.
    pub fn pending(&self) -> u64 {
        self.lock().total()
    }
}

/// The window as JSON lines: `time` is when it began, `seconds` how long it ran.
pub(crate) fn write_lines(window: &Window, now: SystemTime, out: &mut String) {
    let since = window.since.unwrap_or(now);
    let seconds = now
        .duration_since(since)
        .unwrap_or_default()
        .as_secs()
        .max(1);
    let at = since.duration_since(UNIX_EPOCH).unwrap_or_default();
    let time = chrono::DateTime::<chrono::Utc>::from(since)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let mut entries: Vec<_> = window.counts.iter().collect();
    entries.sort_unstable_by_key(|(r, n)| (std::cmp::Reverse(**n), r.route, r.outcome));
    let mut numbers = itoa::Buffer::new();
    for (r, count) in entries {
        out.push_str("{\"time\":\"");
        out.push_str(&time);
        out.push('.');
        super::writer::push_padded(out, at.subsec_millis(), 3);
        out.push_str("Z\",\"kind\":\"refusals\",\"seconds\":");
        out.push_str(numbers.format(seconds));
        match r.who {
            Who::Client(client) => {
                out.push_str(",\"client\":\"");
                out.push_str(client);
                out.push_str("\",\"address\":null");
            }
            Who::Address(ip) => {
                out.push_str(",\"client\":null,\"address\":\"");
                out.push_str(&ip.to_string());
                out.push('"');
            }
            Who::Unknown => out.push_str(",\"client\":null,\"address\":null"),
            Who::Others => out.push_str(",\"client\":null,\"address\":\"others\""),
        }
        super::writer::push_what(out, r.channel, r.route, r.outcome, r.status);
        out.push_str(",\"count\":");
        out.push_str(numbers.format(*count));
        out.push_str(",\"subject\":null}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(who: Who, outcome: &'static str) -> Refusal {
        Refusal {
            who,
            channel: "http",
            route: "/v1/members/{national_id}/eligibility",
            outcome,
            status: 401,
        }
    }

    #[test]
    fn a_flood_is_one_line_per_client_and_outcome() {
        let table = Table::default();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        for _ in 0..100_000 {
            table.add(refusal(Who::Address(ip), "unauthenticated"));
        }
        table.add(refusal(Who::Client("clinic"), "forbidden"));
        let window = table.take();
        let mut out = String::new();
        write_lines(&window, SystemTime::now(), &mut out);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].contains("\"address\":\"203.0.113.9\""));
        assert!(lines[0].contains("\"count\":100000"));
        assert!(lines[1].contains("\"client\":\"clinic\""));
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["kind"], "refusals");
            assert!(v["subject"].is_null());
        }
        assert_eq!(table.pending(), 0);
    }

    #[test]
    fn a_million_addresses_stay_within_the_bound_and_every_refusal_is_counted() {
        let table = Table::default();
        for i in 0..1_000_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let outcome = if i % 2 == 0 {
                "unauthenticated"
            } else {
                "rate_limited"
            };
            table.add(refusal(Who::Address(ip), outcome));
        }
        let window = table.take();
        assert!(
            window.counts.len() <= MAX_ENTRIES + 2,
            "{}",
            window.counts.len()
        );
        assert_eq!(window.total(), 1_000_000);
        let mut out = String::new();
        write_lines(&window, SystemTime::now(), &mut out);
        assert_eq!(out.lines().count(), window.counts.len());
        assert!(out.contains("\"address\":\"others\""));
    }

    #[test]
    fn a_window_that_could_not_be_written_is_kept_and_merged() {
        let table = Table::default();
        table.add(refusal(Who::Unknown, "invalid_request"));
        let window = table.take();
        table.add(refusal(Who::Unknown, "invalid_request"));
        table.restore(window);
        assert_eq!(table.pending(), 2);
        let window = table.take();
        assert_eq!(window.counts.len(), 1);
    }
}
