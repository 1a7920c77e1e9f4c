//! The audit writer: whoever holds the pen takes every record queued, computes their subjects
//! (the HMAC), appends them to the file as JSON lines with one `write`, and then tells every
//! request of the batch that its records are with the operating system (group commit: a
//! request's answer waits for that, `completion.rs`).
//!
//! The pen is taken by a **request waiting for its record** (`Queue::lead`), on its own
//! worker: after one yield, so that the worker's other requests add theirs first, the first
//! waiting request that finds the pen free writes the whole queue, then looks again, and
//! everyone else waits to be told. Under load a batch is as large as the requests a worker
//! ran in one pass, and no record crosses to another thread, so a batch costs one `write`
//! and no context switch. A stalled disk holds at most one worker (the pen's holder); the
//! others keep answering `/healthz` and park their inquiries.
//!
//! A thread of its own (`eligd-audit`, under `SCHED_BATCH` so it never preempts a worker)
//! writes what nobody waits for (records made outside a request: tools, tests), and once a
//! second the aggregated refusals (`refusals.rs`); it syncs the file (`--audit-fsync-ms`),
//! measures the volume, and writes everything left at close. After a rotation the oldest
//! rotated files past `--audit-keep-bytes` are removed (`retention.rs`). Files are created
//! 0600 (0640 with `--audit-group-readable`), and an existing log with a looser mode is
//! narrowed.
//!
//! A failed write (disk full, permissions, a removed mount) drops the batch: its requests
//! are answered 503 `audit_unavailable` instead (an answer that is not recorded is not
//! given), counted as refusals, and the log is marked failing, which refuses inquiries
//! except one probe every 200 ms; the file is opened again for each try (the path may point
//! somewhere writable by then), and the log is healthy again after the first write that
//! succeeds.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::refusals::{self, Refusal, Who};
use super::{retention, AuditCounters, AuditKey, AuditOptions, AuditRecord, Queue, Queued};

/// While writes keep failing, the failure is logged again at most this often (each retry is
/// still counted in `eligd_audit_write_errors_total`).
const LOG_AGAIN: Duration = Duration::from_secs(60);
/// The longest the writer thread parks while idle (its once-a-second work still runs).
const IDLE_PARK: Duration = Duration::from_millis(200);

/// Opens the log and makes the pen; the caller installs it in the queue, then starts the
/// thread with [`spawn`].
pub(super) fn open_pen(
    path: PathBuf,
    options: &AuditOptions,
    counters: AuditCounters,
    key: AuditKey,
) -> std::io::Result<Writer> {
    let mode = if options.group_readable { 0o640 } else { 0o600 };
    let file = open(&path, mode)?;
    let meta = file.metadata()?;
    if meta.permissions().mode() & 0o777 & !mode != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:04o}", meta.permissions().mode() & 0o777),
            "audit log: narrowing the mode of an existing log to {:04o}", mode);
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    let size = meta.len();
    let mut writer = Writer {
        path,
        max_bytes: options.max_bytes.max(1),
        keep_bytes: options.keep_bytes,
        fsync_every: options.fsync_every,
        mode,
        file: Some(file),
        size,
        rotated_bytes: 0,
        unsynced: false,
        synced: Instant::now(),
        next_second: Instant::now() + refusals::WINDOW,
        counters,
        key_id: key.id(),
        key,
        failing: None,
        second: (i64::MIN, String::new()),
        batch: Vec::with_capacity(1024),
        lines: String::with_capacity(1 << 16),
    };
    writer.retain();
    writer.measure_volume();
    Ok(writer)
}

/// Starts the writer thread (the queue holds the pen already).
pub(super) fn spawn(
    queue: Arc<Queue>,
    finished: Sender<()>,
) -> std::io::Result<std::thread::Thread> {
    let handle = std::thread::Builder::new()
        .name("eligd-audit".into())
        .spawn(move || {
            batch_scheduling();
            run(&queue);
            let _ = finished.send(());
        })?;
    Ok(handle.thread().clone())
}

/// The writer thread: until the log is closed, writes what is queued and nobody leads,
/// and does the once-a-second work; at close, everything left.
fn run(queue: &Queue) {
    loop {
        if queue.is_closing() && queue.is_empty() {
            break;
        }
        // Park until an unwaited record or the close arrives (the check after announcing it
        // catches one that came in between), or the second is over.
        queue.parking();
        if queue.is_empty() && !queue.is_closing() {
            let due = queue
                .with_pen(|w| w.next_second.saturating_duration_since(Instant::now()))
                .unwrap_or(IDLE_PARK);
            std::thread::park_timeout(due.min(IDLE_PARK));
        }
        queue.write_queued(true, false);
    }
    queue.write_queued(true, true);
}

/// Puts the calling thread under `SCHED_BATCH` (no wake-up preemption); best effort.
#[allow(unsafe_code)]
fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid pointer.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
}

fn open(path: &Path, mode: u32) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        .open(path)
}

/// The pen: the file and what writing it needs. One holder at a time (`Queue::pen`).
pub(super) struct Writer {
    path: PathBuf,
    max_bytes: u64,
    keep_bytes: u64,
    fsync_every: Duration,
    mode: u32,
    file: Option<File>,
    size: u64,
    /// Bytes in rotated files, as of the last retention pass.
    rotated_bytes: u64,
    /// Written since the last sync, and when that was.
    unsynced: bool,
    synced: Instant,
    /// When the refusals are written next.
    next_second: Instant,
    counters: AuditCounters,
    key: AuditKey,
    key_id: String,
    /// Since when writes fail, and when that was last logged.
    failing: Option<(Instant, Instant)>,
    /// The last whole second formatted (`2026-11-28T08:00:01`), reused by every record of it.
    second: (i64, String),
    /// Reused between batches.
    batch: Vec<Queued>,
    lines: String,
}

impl Writer {
    /// Writes everything queued, batch by batch, and tells each record's request.
    pub(super) fn drain(&mut self, queue: &Queue) {
        while !queue.is_empty() {
            let mut batch = std::mem::take(&mut self.batch);
            let mut lines = std::mem::take(&mut self.lines);
            queue.take(&mut batch);
            lines.clear();
            let mut ends = Vec::with_capacity(batch.len());
            for (record, _) in &batch {
                self.format_line(record, &mut lines);
                ends.push(lines.len());
            }
            // Written in parts of at most the rotation size (whole lines, at least one), each
            // one `write` into one file, so a rotation never splits a part and the log and
            // its rotated files stay within the retention. A part that fails fails only its
            // own records: the parts before it were written, and their answers are given.
            let (mut first, mut from) = (0, 0);
            while first < batch.len() {
                let mut last = first + 1;
                while last < batch.len() && (ends[last] - from) as u64 <= self.max_bytes {
                    last += 1;
                }
                let to = ends[last - 1];
                let written = self.write(queue, &lines[from..to]);
                // No longer held (written or dropped) before anyone is told: a request told
                // its record is written never reads it in the depth.
                queue.finished_part(last - first);
                for (record, done) in &batch[first..last] {
                    if !written {
                        queue.refusals.add(unavailable(record));
                    }
                    if let Some(done) = done {
                        done.done(written);
                    }
                }
                if written {
                    self.counters.written.inc_by((last - first) as u64);
                }
                (first, from) = (last, to);
            }
            batch.clear();
            queue.finished();
            self.batch = batch;
            self.lines = lines;
        }
    }

    /// The once-a-second work (or all of it now, at close): the refusals' lines, the sync,
    /// the volume's free space.
    pub(super) fn every_second(&mut self, queue: &Queue, now: bool) {
        let at = Instant::now();
        if now || at >= self.next_second {
            self.next_second = at + refusals::WINDOW;
            let window = queue.refusals.take();
            if !window.is_empty() {
                let mut lines = String::new();
                refusals::write_lines(&window, SystemTime::now(), &mut lines);
                if self.write(queue, &lines) {
                    self.counters.refusals.inc_by(window.total());
                } else {
                    queue.refusals.restore(window);
                }
            }
            self.measure_volume();
        }
        if self.unsynced && (now || at.duration_since(self.synced) >= self.fsync_every) {
            if let Some(file) = &self.file {
                if let Err(e) = file.sync_data() {
                    tracing::warn!(error = %e, "audit log: sync failed");
                }
            }
            self.unsynced = false;
            self.synced = at;
        }
    }

    fn measure_volume(&self) {
        if let Some((available, size)) = retention::volume(&self.path) {
            self.counters.volume_available.set(available as i64);
            self.counters.volume_size.set(size as i64);
        }
        self.counters
            .bytes
            .set((self.size + self.rotated_bytes) as i64);
    }

    /// Removes the oldest rotated files past `--audit-keep-bytes`, keeping room for the log
    /// itself to grow to `--audit-max-bytes`: the log and its rotated files never hold more.
    fn retain(&mut self) {
        let room = self.max_bytes.max(self.size);
        match retention::enforce(&self.path, room, self.keep_bytes) {
            Ok((held, removed)) => {
                self.rotated_bytes = held.saturating_sub(room);
                self.counters.files_removed.inc_by(removed as u64);
            }
            Err(e) => tracing::warn!(error = %e, "audit log: could not list rotated files"),
        }
    }

    /// Appends `lines` (whole lines), rotating first when they would pass the size limit.
    /// Returns whether they were written; on failure the log is marked failing.
    fn write(&mut self, queue: &Queue, lines: &str) -> bool {
        let result = self.try_write(lines.as_bytes());
        match result {
            Ok(()) => {
                if let Some((since, _)) = self.failing.take() {
                    tracing::info!(path = %self.path.display(), failed_for_secs = since.elapsed().as_secs(),
                        "audit log: written again; inquiries are answered");
                }
                queue.set_failing(None);
                if self.fsync_every.is_zero() {
                    if let Some(file) = &self.file {
                        let _ = file.sync_data();
                    }
                    self.synced = Instant::now();
                } else {
                    self.unsynced = true;
                }
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
                        "audit log: write failed; inquiries are refused until it succeeds (tried again every 200 ms, logged once a minute)");
                }
                queue.set_failing(Some(e.to_string()));
                // Open the path again next time: it may be somewhere writable by then.
                self.file = None;
                false
            }
        }
    }

    fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            let file = open(&self.path, self.mode)?;
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
            // cut it off, so no line is split and no line stands for an answer not given.
            let _ = file.set_len(self.size);
            return Err(e);
        }
        self.size += bytes.len() as u64;
        self.counters
            .bytes
            .set((self.size + self.rotated_bytes) as i64);
        Ok(())
    }

    /// Renames the full log to `<path>.<unix ms>`, starts a new one, and removes the oldest
    /// rotated files past the retention.
    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(file) = &self.file {
            file.sync_all()?;
        }
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut target = rotated_name(&self.path, ms, 0);
        let mut n = 0;
        while target.exists() {
            n += 1;
            target = rotated_name(&self.path, ms, n);
        }
        std::fs::rename(&self.path, &target)?;
        let file = open(&self.path, self.mode)?;
        self.size = 0;
        self.file = Some(file);
        tracing::info!(rotated_to = %target.display(), "audit log: rotated");
        self.retain();
        Ok(())
    }
}

/// What a record dropped with a failed write counts as: a refusal, 503 `audit_unavailable`.
fn unavailable(record: &AuditRecord) -> Refusal {
    Refusal {
        who: record.client.map_or(Who::Unknown, Who::Client),
        channel: record.channel,
        route: record.route,
        outcome: "audit_unavailable",
        status: 503,
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
    fn format_line(&mut self, record: &AuditRecord, out: &mut String) {
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
    record: &AuditRecord,
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
    out.push_str(",\"address\":");
    match record.address {
        Some(address) => {
            use std::fmt::Write as _;
            let _ = write!(out, "\"{address}\"");
        }
        None => out.push_str("null"),
    }
    push_what(
        out,
        record.channel,
        record.route,
        record.outcome,
        record.status,
    );
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

/// `,"channel":…,"route":…,"outcome":…,"status":N` (values eligd produces: nothing to
/// escape), shared by answer lines and refusal lines.
pub(super) fn push_what(out: &mut String, channel: &str, route: &str, outcome: &str, status: u16) {
    for (name, value) in [
        (",\"channel\":\"", channel),
        ("\",\"route\":\"", route),
        ("\",\"outcome\":\"", outcome),
    ] {
        out.push_str(name);
        out.push_str(value);
    }
    out.push_str("\",\"status\":");
    out.push_str(itoa::Buffer::new().format(status));
}

/// `value` with leading zeros to `width` digits.
pub(super) fn push_padded(out: &mut String, value: u32, width: usize) {
    let mut numbers = itoa::Buffer::new();
    let digits = numbers.format(value);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}
