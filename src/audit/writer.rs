//! The audit writer: one thread that takes records off the queue in batches, appends them to
//! the file as JSON lines with one write per batch, and rotates the file by size between
//! batches, so a line is never split or lost by a rotation.
//!
//! A failed write (disk full, permissions, a removed mount) marks the log failing, which makes
//! the service refuse inquiries; the batch is kept, the file is opened again (the path may
//! point somewhere writable by then) and the batch retried every [`RETRY`], and the log is
//! healthy again after the first write that succeeds. Nothing queued is dropped meanwhile.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::{AuditCounters, Health, Message, Record};

/// How many records one write takes at most.
const BATCH: usize = 4096;
/// How often a failing log is tried again.
const RETRY: Duration = Duration::from_millis(200);

pub(super) fn spawn(
    path: PathBuf,
    max_bytes: u64,
    receiver: Receiver<Message>,
    health: Arc<Health>,
    counters: AuditCounters,
) -> std::io::Result<()> {
    let file = open(&path)?;
    let size = file.metadata()?.len();
    let mut writer = Writer {
        path,
        max_bytes: max_bytes.max(1),
        file: Some(file),
        size,
        health,
        counters,
    };
    std::thread::Builder::new()
        .name("eligd-audit".into())
        .spawn(move || writer.run(receiver))?;
    Ok(())
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    path: PathBuf,
    max_bytes: u64,
    file: Option<File>,
    size: u64,
    health: Arc<Health>,
    counters: AuditCounters,
}

impl Writer {
    fn run(&mut self, receiver: Receiver<Message>) {
        let mut lines = String::with_capacity(1 << 16);
        let mut pending = 0usize;
        loop {
            let first = if pending > 0 {
                // A batch is waiting to be written again.
                match receiver.recv_timeout(RETRY) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return self.finish(&lines, pending),
                }
            } else {
                match receiver.recv() {
                    Ok(m) => Some(m),
                    Err(_) => return,
                }
            };
            let mut close = None;
            let mut next = first;
            while let Some(message) = next.take() {
                match message {
                    Message::Record(record) => {
                        format_line(&record, &mut lines);
                        pending += 1;
                        self.health.queued.fetch_sub(1, Ordering::AcqRel);
                    }
                    Message::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
                if pending >= BATCH {
                    break;
                }
                next = receiver.try_recv().ok();
            }
            if pending > 0 && self.write(&lines) {
                self.counters.written.inc_by(pending as u64);
                lines.clear();
                pending = 0;
            }
            if let Some(done) = close {
                // Everything queued before the close came before it: write what is left
                // (retrying while the file fails), sync, and answer.
                while pending > 0 {
                    std::thread::sleep(RETRY);
                    if self.write(&lines) {
                        self.counters.written.inc_by(pending as u64);
                        pending = 0;
                    }
                }
                if let Some(file) = &self.file {
                    let _ = file.sync_all();
                }
                let _ = done.send(());
                return;
            }
        }
    }

    /// Writes what is left when every sender is gone (never in the service, which closes).
    fn finish(&mut self, lines: &str, pending: usize) {
        if self.write(lines) {
            self.counters.written.inc_by(pending as u64);
        }
    }

    /// Appends `lines` (whole lines), rotating first when they would pass the size limit.
    /// Returns whether they were written; on failure the log is marked failing.
    fn write(&mut self, lines: &str) -> bool {
        let result = self.try_write(lines.as_bytes());
        match result {
            Ok(()) => {
                self.health.set_failing(None);
                true
            }
            Err(e) => {
                self.counters.write_errors.inc();
                tracing::error!(path = %self.path.display(), error = %e,
                    "audit log: write failed; inquiries are refused until it succeeds");
                self.health.set_failing(Some(e.to_string()));
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
        file.write_all(bytes)?;
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

/// One record as a JSON line. Every field is either produced by eligd (times, codes, route
/// patterns, outcome codes, hexadecimal) or a client name, which the keys file limits to
/// `A-Z a-z 0-9 . _ -`, so nothing needs escaping.
pub(super) fn format_line(record: &Record, out: &mut String) {
    let time = chrono::DateTime::<chrono::Utc>::from(record.time).format("%Y-%m-%dT%H:%M:%S%.3fZ");
    let _ = write!(
        out,
        "{{\"time\":\"{time}\",\"tracking_code\":\"{}\",\"client\":",
        record.tracking
    );
    match &record.client {
        Some(client) => {
            let _ = write!(out, "\"{client}\"");
        }
        None => out.push_str("null"),
    }
    let _ = write!(
        out,
        ",\"channel\":\"{}\",\"route\":\"{}\",\"outcome\":\"{}\",\"status\":{},\"latency_ms\":{:.3},\"subject\":",
        record.channel,
        record.route,
        record.outcome,
        record.status,
        record.latency.as_secs_f64() * 1000.0
    );
    match record.subject {
        Some(subject) => {
            let _ = write!(out, "\"{subject}\"");
        }
        None => out.push_str("null"),
    }
    out.push_str("}\n");
}
