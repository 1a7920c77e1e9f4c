//! The audit writer: one thread that takes records off the queue in batches, computes their
//! subjects (the HMAC), appends them to the file as JSON lines with one write per batch, and
//! rotates the file by size between batches, so a line is never split or lost by a rotation.
//!
//! After the first record of a batch arrives the writer waits [`GATHER`] before taking the
//! rest: while it waits, senders add records without waking it, so under load a batch is
//! hundreds of records and one write, and a record still reaches the file within a few
//! milliseconds (well inside the 100 ms promised). A closing log is written to the end before
//! the writer stops; a batch that cannot be written is retried until it can.
//!
//! A failed write (disk full, permissions, a removed mount) marks the log failing, which makes
//! the service refuse inquiries; the batch is kept, the file is opened again (the path may
//! point somewhere writable by then) and the batch retried every [`RETRY`], and the log is
//! healthy again after the first write that succeeds. Nothing queued is dropped meanwhile.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::{AuditCounters, AuditKey, Queue, Record};

/// How often a failing log is tried again.
const RETRY: Duration = Duration::from_millis(200);
/// While writes keep failing, the failure is logged again at most this often (each retry is
/// still counted in `eligd_audit_write_errors_total`).
const LOG_AGAIN: Duration = Duration::from_secs(60);
/// How long the writer lets a batch gather after its first record.
const GATHER: Duration = Duration::from_millis(5);

pub(super) fn spawn(
    path: PathBuf,
    max_bytes: u64,
    queue: Arc<Queue>,
    counters: AuditCounters,
    key: AuditKey,
    finished: Sender<()>,
) -> std::io::Result<std::thread::Thread> {
    let file = open(&path)?;
    let size = file.metadata()?.len();
    let mut writer = Writer {
        path,
        max_bytes: max_bytes.max(1),
        file: Some(file),
        size,
        queue,
        counters,
        key_id: key.id(),
        key,
        failing: None,
        second: (i64::MIN, String::new()),
    };
    let handle = std::thread::Builder::new()
        .name("eligd-audit".into())
        .spawn(move || {
            writer.run();
            let _ = finished.send(());
        })?;
    Ok(handle.thread().clone())
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    path: PathBuf,
    max_bytes: u64,
    file: Option<File>,
    size: u64,
    queue: Arc<Queue>,
    counters: AuditCounters,
    key: AuditKey,
    key_id: String,
    /// Since when writes fail, and when that was last logged.
    failing: Option<(Instant, Instant)>,
    /// The last whole second formatted (`2026-11-28T08:00:01`), reused by every record of it.
    second: (i64, String),
}

impl Writer {
    /// Writes batches until the log is closed and everything queued is written.
    fn run(&mut self) {
        let mut batch = Vec::with_capacity(4096);
        let mut lines = String::with_capacity(1 << 20);
        let mut pending = 0usize;
        loop {
            if pending == 0 && self.queue.is_empty() {
                if self.queue.is_closing() {
                    break;
                }
                // Park until a record (or the close) arrives; the check after announcing it
                // catches one that came in between.
                self.queue.parking();
                if self.queue.is_empty() && !self.queue.is_closing() {
                    std::thread::park_timeout(RETRY);
                }
                if self.queue.is_empty() {
                    continue;
                }
                std::thread::sleep(GATHER);
            } else if pending > 0 {
                // A batch failed and waits to be written again.
                std::thread::sleep(RETRY);
            }
            self.queue.take(&mut batch);
            for record in batch.drain(..) {
                self.format_line(&record, &mut lines);
                pending += 1;
            }
            if pending > 0 && self.write(&lines) {
                self.counters.written.inc_by(pending as u64);
                lines.clear();
                pending = 0;
            }
        }
        if let Some(file) = &self.file {
            let _ = file.sync_all();
        }
    }

    /// Appends `lines` (whole lines), rotating first when they would pass the size limit.
    /// Returns whether they were written; on failure the log is marked failing.
    fn write(&mut self, lines: &str) -> bool {
        let result = self.try_write(lines.as_bytes());
        match result {
            Ok(()) => {
                if let Some((since, _)) = self.failing.take() {
                    tracing::info!(path = %self.path.display(), failed_for_secs = since.elapsed().as_secs(),
                        "audit log: written again; inquiries are answered");
                }
                self.queue.set_failing(None);
                true
            }
            Err(e) => {
                self.counters.write_errors.inc();
                let now = Instant::now();
                let log = match self.failing {
                    None => {
                        self.failing = Some((now, now));
                        true
                    }
                    Some((since, logged)) if now.duration_since(logged) >= LOG_AGAIN => {
                        self.failing = Some((since, now));
                        true
                    }
                    Some(_) => false,
                };
                if log {
                    tracing::error!(path = %self.path.display(), error = %e,
                        "audit log: write failed; inquiries are refused until it succeeds (retried every 200 ms, logged once a minute)");
                }
                self.queue.set_failing(Some(e.to_string()));
                // Open the path again next time: it may be somewhere writable by then.
                self.file = None;
                false
            }
        }
    }

    fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            let file = open(&self.path)?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
        }
        if self.size > 0 && self.size + bytes.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no file"))?;
        if let Err(e) = file.write_all(bytes) {
            // Part of the batch may have reached the file (a disk that filled up mid-write):
            // cut it off, so the retry writes whole lines once and no line is split.
            let _ = file.set_len(self.size);
            return Err(e);
        }
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Renames the full log to `<path>.<unix ms>` and starts a new one.
    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(file) = &self.file {
            file.sync_all()?;
        }
        let ms = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut target = rotated_name(&self.path, ms, 0);
        let mut n = 0;
        while target.exists() {
            n += 1;
            target = rotated_name(&self.path, ms, n);
        }
        std::fs::rename(&self.path, &target)?;
        let file = open(&self.path)?;
        self.size = 0;
        self.file = Some(file);
        tracing::info!(rotated_to = %target.display(), "audit log: rotated");
        Ok(())
    }
}

fn rotated_name(path: &Path, ms: u128, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    if n == 0 {
        name.push(format!(".{ms}"));
    } else {
        name.push(format!(".{ms}-{n}"));
    }
    PathBuf::from(name)
}

impl Writer {
    /// One record as a JSON line. Every field is either produced by eligd (times, codes,
    /// route patterns, outcome codes, hexadecimal) or a client name, which the keys file
    /// limits to `A-Z a-z 0-9 . _ -`, so nothing needs escaping.
    fn format_line(&mut self, record: &Record, out: &mut String) {
        let since = record.time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since.as_secs() as i64;
        if self.second.0 != second {
            let time = chrono::DateTime::<chrono::Utc>::from(record.time);
            self.second = (second, time.format("%Y-%m-%dT%H:%M:%S").to_string());
        }
        let subject = record.person.map(|id| self.key.subject(id));
        let subject = subject.map(|s| (s, self.key_id.as_str()));
        write_line(record, &self.second.1, since.subsec_millis(), subject, out);
    }
}

/// Appends one record's line; `second` is its time to the second, `millis` the rest.
pub(super) fn write_line(
    record: &Record,
    second: &str,
    millis: u32,
    subject: Option<(super::Subject, &str)>,
    out: &mut String,
) {
    let mut numbers = itoa::Buffer::new();
    out.push_str("{\"time\":\"");
    out.push_str(second);
    out.push('.');
    push_padded(out, millis, 3);
    out.push_str("Z\",\"tracking_code\":\"");
    out.push_str(record.tracking.as_str());
    out.push_str("\",\"client\":");
    match &record.client {
        Some(client) => {
            out.push('"');
            out.push_str(client);
            out.push('"');
        }
        None => out.push_str("null"),
    }
    for (name, value) in [
        (",\"channel\":\"", record.channel),
        ("\",\"route\":\"", record.route),
        ("\",\"outcome\":\"", record.outcome),
    ] {
        out.push_str(name);
        out.push_str(value);
    }
    out.push_str("\",\"status\":");
    out.push_str(numbers.format(record.status));
    // Milliseconds with three decimals, from whole microseconds.
    let micros = record.latency.as_micros().min(u128::from(u64::MAX)) as u64;
    out.push_str(",\"latency_ms\":");
    out.push_str(numbers.format(micros / 1000));
    out.push('.');
    push_padded(out, (micros % 1000) as u32, 3);
    out.push_str(",\"subject\":");
    match subject {
        Some((subject, key_id)) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push('"');
            for b in subject.0 {
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
            out.push_str("\",\"subject_key\":\"");
            out.push_str(key_id);
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str("}\n");
}

/// `value` with leading zeros to `width` digits.
fn push_padded(out: &mut String, value: u32, width: usize) {
    let mut numbers = itoa::Buffer::new();
    let digits = numbers.format(value);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}
