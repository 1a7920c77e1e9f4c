//! The audit log (docs/security.md, "Audit log"): one JSON line per inquiry that reaches the
//! index on every channel, and aggregated counts of the requests refused before it, so that
//! "who looked up this person, when, and what were they told?" can be answered later, by
//! whoever holds the audit key, and an anonymous client cannot fill the disk.
//!
//! A line names the client, channel, route, outcome, HTTP status, latency and tracking code,
//! and the person only as a **subject**: HMAC-SHA256 of the national ID under the audit key
//! (`ELIGD_AUDIT_KEY`), never the ID itself. `eligd audit subject ID` computes it for an
//! investigator. Refusals before the index are counted in [`refusals`] and written as one
//! line per client (or address), channel, route, outcome and second, without a subject.
//!
//! **No answer before its record** (`completion.rs`): the request hands its record to a
//! bounded queue ([`AuditLog::record`]); a writer thread (`writer.rs`) writes everything
//! queued in one `write` and tells each request its records are with the operating system;
//! only then is the answer written to the socket (group commit). A `kill -9` therefore loses
//! no line of an answer a client received. The writer thread, not the request's worker,
//! makes the system call, so a stalled disk delays inquiries but never `/healthz`.
//! When the queue is full or the file cannot be written, inquiries are answered 503
//! `audit_unavailable` and the replica is not ready, until a write succeeds again. The file
//! is synced every `--audit-fsync-ms`, rotated by size and kept within `--audit-keep-bytes`
//! (`retention.rs`).

pub mod completion;
pub mod refusals;
mod retention;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::national_id::NationalId;
use crate::tracking::TrackingCode;

/// Records waiting for the writer at most, per queue shard (about 6 MB each); a full shard
/// refuses its answers (503).
pub const QUEUE_CAPACITY: usize = 65_536;
/// The default size at which the log is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// The audit key must be at least this long.
pub const MIN_KEY_BYTES: usize = 16;

/// The key of the subject HMAC.
#[derive(Clone)]
pub struct AuditKey {
    mac: Hmac<Sha256>,
    /// Which key this is, without revealing it: every line carries it (`subject_key`), so
    /// after a key rotation an investigator knows which key a line's subject was made with.
    id: [u8; 4],
}

#[derive(Debug, thiserror::Error)]
pub enum AuditKeyError {
    #[error("ELIGD_AUDIT_KEY is not set (nor ELIGD_AUDIT_KEY_FILE); the audit log needs a key of at least {MIN_KEY_BYTES} bytes in hexadecimal (e.g. from `openssl rand -hex 32`)")]
    Missing,
    #[error("ELIGD_AUDIT_KEY must be hexadecimal, at least {MIN_KEY_BYTES} bytes ({} digits)", MIN_KEY_BYTES * 2)]
    Malformed,
    #[error(
        "ELIGD_AUDIT_KEY and ELIGD_AUDIT_KEY_FILE are both set: set one (which key was meant?)"
    )]
    Both,
    /// The file cannot be read, or is empty: names the path, never the content.
    #[error("{0}")]
    File(String),
    #[error("ELIGD_AUDIT_KEY_FILE {path}: the file must hold the key in hexadecimal, at least {MIN_KEY_BYTES} bytes ({digits} digits)", digits = MIN_KEY_BYTES * 2)]
    MalformedFile { path: String },
}

impl AuditKey {
    /// Reads the key from hexadecimal text (the value of `ELIGD_AUDIT_KEY`).
    pub fn from_hex(text: &str) -> Result<AuditKey, AuditKeyError> {
        let text = text.trim();
        if text.len() < MIN_KEY_BYTES * 2 || !text.len().is_multiple_of(2) || text.len() > 512 {
            return Err(AuditKeyError::Malformed);
        }
        let mut bytes = Vec::with_capacity(text.len() / 2);
        for pair in text.as_bytes().chunks(2) {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(hi), Some(lo)) => bytes.push((hi << 4 | lo) as u8),
                _ => return Err(AuditKeyError::Malformed),
            }
        }
        let mac = Hmac::<Sha256>::new_from_slice(&bytes).map_err(|_| AuditKeyError::Malformed)?;
        let mut named = mac.clone();
        named.update(b"eligd audit key id");
        let digest = named.finalize().into_bytes();
        let id = [digest[0], digest[1], digest[2], digest[3]];
        Ok(AuditKey { mac, id })
    }

    /// The key from the environment: `ELIGD_AUDIT_KEY`, or the file named by
    /// `ELIGD_AUDIT_KEY_FILE` (a mounted Secret), read once at start. Setting both is an error.
    pub fn from_env() -> Result<AuditKey, AuditKeyError> {
        let file = std::env::var_os("ELIGD_AUDIT_KEY_FILE").filter(|f| !f.is_empty());
        match (std::env::var("ELIGD_AUDIT_KEY"), file) {
            (Ok(_) | Err(std::env::VarError::NotUnicode(_)), Some(_)) => Err(AuditKeyError::Both),
            (_, Some(path)) => AuditKey::from_file(std::path::Path::new(&path)),
            (Ok(text), None) => AuditKey::from_hex(&text),
            (Err(std::env::VarError::NotPresent), None) => Err(AuditKeyError::Missing),
            (Err(std::env::VarError::NotUnicode(_)), None) => Err(AuditKeyError::Malformed),
        }
    }

    /// The key from a file holding it in hexadecimal (`ELIGD_AUDIT_KEY_FILE`).
    pub fn from_file(path: &std::path::Path) -> Result<AuditKey, AuditKeyError> {
        let text = crate::secret::read_secret_file("ELIGD_AUDIT_KEY_FILE", path)
            .map_err(|e| AuditKeyError::File(e.to_string()))?;
        AuditKey::from_hex(&text).map_err(|_| AuditKeyError::MalformedFile {
            path: path.display().to_string(),
        })
    }

    /// The key's identifier: 8 hexadecimal digits of an HMAC under the key of a fixed text
    /// (it names the key; it does not help find it).
    pub fn id(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The audit subject of a national ID: HMAC-SHA256 of its 10 digits.
    pub fn subject(&self, id: NationalId) -> Subject {
        let mut digits = [0u8; 10];
        let mut n = id.as_u64();
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let mut mac = self.mac.clone();
        mac.update(&digits);
        Subject(mac.finalize().into_bytes().into())
    }
}

/// An audit subject (printed as 64 hexadecimal digits).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Subject(pub [u8; 32]);

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Subject({self})")
    }
}

/// One inquiry as the pipeline hands it over. The person is still the national ID here, in
/// memory only: the writer turns it into the subject (the HMAC) before anything is written,
/// so that work is off the request path.
#[derive(Clone, Debug)]
pub struct AuditRecord {
    pub time: SystemTime,
    pub tracking: TrackingCode,
    pub client: Option<&'static str>,
    pub channel: &'static str,
    pub route: &'static str,
    pub outcome: &'static str,
    pub status: u16,
    pub latency: Duration,
    pub person: Option<NationalId>,
    /// The client address (IPv6 by its limiting prefix), when known: who asked, also for a
    /// request without a key (the public page) and for a key used from somewhere new.
    pub address: Option<std::net::IpAddr>,
}

/// Why a record was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("the audit log cannot be written")]
    Failing,
    #[error("the audit queue is full")]
    QueueFull,
    #[error("the audit log is closed")]
    Closed,
}

/// The counters the writer keeps (prometheus-client handles share their values).
#[derive(Clone, Default)]
pub struct AuditCounters {
    pub written: prometheus_client::metrics::counter::Counter,
    pub write_errors: prometheus_client::metrics::counter::Counter,
    pub refusals: prometheus_client::metrics::counter::Counter,
    pub bytes: prometheus_client::metrics::gauge::Gauge,
    pub volume_available: prometheus_client::metrics::gauge::Gauge,
    pub volume_size: prometheus_client::metrics::gauge::Gauge,
    pub files_removed: prometheus_client::metrics::counter::Counter,
}

/// How the log is kept (`serve`'s `--audit-*` flags).
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// Rotate when the log would pass this size (`--audit-max-bytes`).
    pub max_bytes: u64,
    /// Remove the oldest rotated files while the log and its rotated files hold more
    /// (`--audit-keep-bytes`).
    pub keep_bytes: u64,
    /// Sync the file to disk at least this often (`--audit-fsync-ms`; 0: after every write).
    pub fsync_every: Duration,
    /// Create files 0640 instead of 0600 (`--audit-group-readable`).
    pub group_readable: bool,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            max_bytes: DEFAULT_MAX_BYTES,
            keep_bytes: DEFAULT_KEEP_BYTES,
            fsync_every: Duration::from_millis(DEFAULT_FSYNC_MS),
            group_readable: false,
        }
    }
}

/// The default of `--audit-keep-bytes`: 16 rotated files of the default size.
pub const DEFAULT_KEEP_BYTES: u64 = 16 * DEFAULT_MAX_BYTES;
/// The default of `--audit-fsync-ms`.
pub const DEFAULT_FSYNC_MS: u64 = 1000;

/// Shards of the queue: a request thread always uses the same one, so request threads on
/// different cores never take the same lock or write the same counter.
const QUEUE_SHARDS: usize = 4;

/// A queued record and the request waiting for it (none outside a captured request).
pub(crate) type Queued = (AuditRecord, Option<Arc<completion::Completion>>);

/// One shard: records in arrival order, and how many (read without the lock).
#[repr(align(128))]
struct Pending {
    records: Mutex<Vec<Queued>>,
    queued: AtomicUsize,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How long a failing log waits between two records let through to try the file again.
const PROBE_EVERY_MS: u64 = 200;

/// The queue between the request path and the writer: records pile up in a vector per shard,
/// which the writer swaps for empty ones and writes. A record costs one short, uncontended
/// lock, and the writer is woken once per batch, not per record. Each shard holds up to
/// [`QUEUE_CAPACITY`] records; within a batch, lines come shard by shard (each in arrival
/// order), and every line carries its own time.
pub(crate) struct Queue {
    shards: [Pending; QUEUE_SHARDS],
    /// Records the writer has taken and not yet finished with (written or dropped).
    in_flight: AtomicUsize,
    /// The writer is parked waiting for a first record (the next record unparks it).
    parked: AtomicBool,
    failing: AtomicBool,
    /// While failing: when (ms since `epoch`) the next record may be let through to try the
    /// file again.
    next_probe_ms: std::sync::atomic::AtomicU64,
    epoch: std::time::Instant,
    closing: AtomicBool,
    reason: Mutex<String>,
    thread: std::sync::OnceLock<std::thread::Thread>,
    pub(crate) refusals: refusals::Table,
    /// The file and what writing it needs; whoever holds it writes (`writer.rs`).
    pen: std::sync::OnceLock<Mutex<writer::Writer>>,
}

impl Queue {
    fn new() -> Queue {
        Queue {
            shards: std::array::from_fn(|_| Pending {
                records: Mutex::new(Vec::with_capacity(1024)),
                queued: AtomicUsize::new(0),
            }),
            in_flight: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            next_probe_ms: std::sync::atomic::AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            closing: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            thread: std::sync::OnceLock::new(),
            refusals: refusals::Table::default(),
            pen: std::sync::OnceLock::new(),
        }
    }

    /// Runs `f` holding the pen (waiting for it); `None` before the log is open.
    fn with_pen<T>(&self, f: impl FnOnce(&mut writer::Writer) -> T) -> Option<T> {
        let pen = self.pen.get()?;
        let mut w = pen.lock().unwrap_or_else(|p| p.into_inner());
        Some(f(&mut w))
    }

    /// Writes everything queued if the pen is free (`blocking`: waits for it), and, for the
    /// writer thread (`blocking`), the once-a-second work (all of it when `closing`).
    /// Returns whether this call held the pen until the queue was empty; `false` when
    /// another holds it, who looks at the queue again when it lets go, so a record queued
    /// meanwhile is never left behind.
    pub(crate) fn write_queued(&self, blocking: bool, closing: bool) -> bool {
        let Some(pen) = self.pen.get() else {
            return false;
        };
        loop {
            let mut w = if blocking {
                pen.lock().unwrap_or_else(|p| p.into_inner())
            } else {
                match pen.try_lock() {
                    Ok(w) => w,
                    Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => return false,
                }
            };
            w.drain(self);
            if blocking {
                w.every_second(self, closing);
            }
            drop(w);
            if self.is_empty() {
                return true;
            }
        }
    }

    /// The calling thread's shard.
    fn mine(&self) -> &Pending {
        &self.shards[crate::metrics::hot::shard() % QUEUE_SHARDS]
    }

    /// Whether a shard is full (its requests are refused until the writer catches up).
    fn any_full(&self) -> bool {
        self.shards
            .iter()
            .any(|s| s.queued.load(Ordering::Acquire) >= QUEUE_CAPACITY)
    }

    /// Records queued, all shards (not those the writer holds).
    fn queued(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.queued.load(Ordering::Acquire))
            .sum()
    }

    /// Records not yet written: queued, and held by the writer.
    fn depth(&self) -> usize {
        self.queued() + self.in_flight.load(Ordering::Acquire)
    }

    fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    /// Takes every pending record into `into` (emptied first); the writer's side. They count
    /// as held by the writer until [`Queue::finished`].
    pub(crate) fn take(&self, into: &mut Vec<Queued>) {
        into.clear();
        for shard in &self.shards {
            let mut pending = shard.lock();
            if into.is_empty() {
                std::mem::swap(&mut *pending, into);
            } else {
                into.append(&mut pending);
            }
            // Counted as held before the shard says it is empty: the depth never reads
            // lower than what is unwritten.
            self.in_flight.store(into.len(), Ordering::Release);
            shard.queued.store(0, Ordering::Release);
        }
    }

    /// The writer is done with `n` of the records it took.
    pub(crate) fn finished_part(&self, n: usize) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(n))
            });
    }

    /// The writer is done with the records it took.
    pub(crate) fn finished(&self) {
        self.in_flight.store(0, Ordering::Release);
    }

    /// The writer is about to park: a record arriving from now on unparks it.
    pub(crate) fn parking(&self) {
        self.parked.store(true, Ordering::Release);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued() == 0
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn set_failing(&self, reason: Option<String>) {
        if reason.is_some() {
            let next = self.epoch.elapsed().as_millis() as u64 + PROBE_EVERY_MS;
            self.next_probe_ms.store(next, Ordering::Release);
        }
        self.failing.store(reason.is_some(), Ordering::Release);
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.unwrap_or_default();
    }

    /// While failing: whether this record may go through to try the file again (one every
    /// [`PROBE_EVERY_MS`]; its request waits for the verdict like any other).
    fn probe(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let next = self.next_probe_ms.load(Ordering::Acquire);
        now >= next
            && self
                .next_probe_ms
                .compare_exchange(
                    next,
                    now + PROBE_EVERY_MS,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }
}

/// The running audit log.
pub struct AuditLog {
    key: AuditKey,
    queue: Arc<Queue>,
    done: Mutex<Option<mpsc::Receiver<()>>>,
    path: PathBuf,
}

impl AuditLog {
    /// Opens (or creates, mode 0600 or 0640) the log at `path` for appending and starts the
    /// writer thread. An unusable path is an error here, at start.
    pub fn start(
        path: &Path,
        options: AuditOptions,
        key: AuditKey,
        counters: AuditCounters,
    ) -> std::io::Result<AuditLog> {
        let queue = Arc::new(Queue::new());
        let (finished, done) = mpsc::channel();
        let pen = writer::open_pen(path.to_path_buf(), &options, counters, key.clone())?;
        let _ = queue.pen.set(Mutex::new(pen));
        let thread = writer::spawn(Arc::clone(&queue), finished)?;
        let _ = queue.thread.set(thread);
        Ok(AuditLog {
            key,
            queue,
            done: Mutex::new(Some(done)),
            path: path.to_path_buf(),
        })
    }

    pub fn key(&self) -> &AuditKey {
        &self.key
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues the record of an inquiry that reached the index, or says why it cannot be
    /// kept (then the inquiry must not be answered). Inside a captured request
    /// ([`completion::Captured`]) the request's answer then waits until the record is
    /// written.
    pub fn record(&self, record: AuditRecord) -> Result<(), Unavailable> {
        let q = &self.queue;
        if q.closing.load(Ordering::Acquire) {
            return Err(Unavailable::Closed);
        }
        if q.failing.load(Ordering::Acquire) && !q.probe() {
            return Err(Unavailable::Failing);
        }
        let waiting = completion::current();
        let unwaited = waiting.is_none();
        {
            let shard = q.mine();
            let mut pending = shard.lock();
            if pending.len() >= QUEUE_CAPACITY {
                if let Some(waiting) = waiting {
                    // Counted on the request but never queued: not waited for.
                    waiting.done(false);
                }
                return Err(Unavailable::QueueFull);
            }
            pending.push((record, waiting));
            shard.queued.store(pending.len(), Ordering::Release);
        }
        // A request waiting for its record writes it itself (`wait_for`); the writer thread is
        // woken only for a record nobody waits for. Usually it is not parked: a plain load
        // then, no read-modify-write.
        if unwaited && q.parked.load(Ordering::Acquire) && q.parked.swap(false, Ordering::AcqRel) {
            q.wake();
        }
        Ok(())
    }

    /// Waits until the writer is done with a request's records (`records`, from
    /// [`completion::Captured`]); `true` when every one was written. After one yield (the
    /// worker's other requests add their records meanwhile), the request writes everything
    /// queued itself if nobody holds the pen, else waits to be told.
    pub async fn wait_for(&self, records: Arc<completion::Completion>) -> bool {
        if records.pending() > 0 {
            tokio::task::yield_now().await;
        }
        if records.pending() > 0 && !self.queue.write_queued(false, false) {
            return records.wait().await;
        }
        records.written()
    }

    /// Counts a request refused before the index: written as part of an aggregated line
    /// within a second ([`refusals`]). Never refused itself.
    pub fn refused(&self, refusal: refusals::Refusal) {
        self.queue.refusals.add(refusal);
    }

    /// Records not yet written: queued, and held by the writer.
    pub fn queue_depth(&self) -> usize {
        self.queue.depth()
    }

    /// Refusals counted and not yet written.
    pub fn refusals_pending(&self) -> u64 {
        self.queue.refusals.pending()
    }

    /// `Ok` while records can be taken; else why not (for `/readyz`).
    pub fn readiness(&self) -> Result<(), String> {
        if self.queue.failing.load(Ordering::Acquire) {
            let reason = self
                .queue
                .reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(format!("the audit log cannot be written: {reason}"));
        }
        if self.queue.any_full() {
            return Err("the audit queue is full".into());
        }
        Ok(())
    }

    /// Writes every queued record and refusal, flushes and syncs the file, and stops the
    /// writer. Waits at most `timeout` (a log that cannot be written may never drain);
    /// returns whether all was written. Records offered after this are refused.
    pub fn close(&self, timeout: Duration) -> bool {
        self.queue.closing.store(true, Ordering::Release);
        self.queue.wake();
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner()).take();
        let finished = match done {
            Some(done) => done.recv_timeout(timeout).is_ok(),
            None => true,
        };
        finished && self.queue.depth() == 0 && self.queue.refusals.pending() == 0
    }
}

#[cfg(test)]
mod tests;
