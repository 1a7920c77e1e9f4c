//! The audit log (docs/security.md, "Audit log"): one JSON line per inquiry on every channel,
//! refused ones included, so that "who looked up this person, when, and what were they told?"
//! can be answered later, by whoever holds the audit key.
//!
//! A line names the client, channel, route, outcome, HTTP status, latency and tracking code,
//! and the person only as a **subject**: HMAC-SHA256 of the national ID under the audit key
//! (`ELIGD_AUDIT_KEY`), never the ID itself. `eligd audit subject ID` computes it for an
//! investigator.
//!
//! Writing never blocks an answer: the inquiry pipeline hands a record to a bounded queue
//! ([`AuditLog::record`]) and a writer thread ([`writer`]) batches records to the file within
//! milliseconds. **No record, no answer**: when the queue is full or the file cannot be
//! written, `record` refuses, the inquiry is answered 503 `audit_unavailable`, and the replica
//! is not ready, until a write succeeds again; records already queued are kept and written
//! then. A graceful shutdown writes every queued record before the process exits.

mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::national_id::NationalId;
use crate::tracking::TrackingCode;

/// Records waiting for the writer at most; a full queue refuses answers (503).
pub const QUEUE_CAPACITY: usize = 65_536;
/// The default size at which the log is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// The audit key must be at least this long.
pub const MIN_KEY_BYTES: usize = 16;

/// The key of the subject HMAC.
#[derive(Clone)]
pub struct AuditKey {
    mac: Hmac<Sha256>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditKeyError {
    #[error("ELIGD_AUDIT_KEY is not set; the audit log needs a key of at least {MIN_KEY_BYTES} bytes in hexadecimal (e.g. from `openssl rand -hex 32`)")]
    Missing,
    #[error("ELIGD_AUDIT_KEY must be hexadecimal, at least {MIN_KEY_BYTES} bytes ({} digits)", MIN_KEY_BYTES * 2)]
    Malformed,
}

impl AuditKey {
    /// Reads the key from hexadecimal text (the value of `ELIGD_AUDIT_KEY`).
    pub fn from_hex(text: &str) -> Result<AuditKey, AuditKeyError> {
        let text = text.trim();
        if text.len() < MIN_KEY_BYTES * 2 || text.len() % 2 != 0 || text.len() > 512 {
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
        Ok(AuditKey { mac })
    }

    /// The key from the environment (`ELIGD_AUDIT_KEY`).
    pub fn from_env() -> Result<AuditKey, AuditKeyError> {
        match std::env::var("ELIGD_AUDIT_KEY") {
            Ok(text) => AuditKey::from_hex(&text),
            Err(std::env::VarError::NotPresent) => Err(AuditKeyError::Missing),
            Err(std::env::VarError::NotUnicode(_)) => Err(AuditKeyError::Malformed),
        }
    }

    /// The audit subject of a national ID: HMAC-SHA256 of its 10 digits.
    pub fn subject(&self, id: NationalId) -> Subject {
        let mut mac = self.mac.clone();
        mac.update(id.to_string().as_bytes());
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

/// One inquiry as the log keeps it.
#[derive(Clone, Debug)]
pub struct Record {
    pub time: SystemTime,
    pub tracking: TrackingCode,
    pub client: Option<Arc<str>>,
    pub channel: &'static str,
    pub route: &'static str,
    pub outcome: &'static str,
    pub status: u16,
    pub latency: Duration,
    pub subject: Option<Subject>,
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

/// What the writer shares with the service: whether writes succeed, and the queue depth.
#[derive(Default)]
pub(crate) struct Health {
    failing: AtomicBool,
    queued: AtomicUsize,
    reason: Mutex<String>,
}

impl Health {
    pub(crate) fn set_failing(&self, reason: Option<String>) {
        self.failing.store(reason.is_some(), Ordering::Release);
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.unwrap_or_default();
    }
}

/// The counters the writer keeps (prometheus-client handles share their values).
#[derive(Clone, Default)]
pub struct AuditCounters {
    pub written: prometheus_client::metrics::counter::Counter,
    pub write_errors: prometheus_client::metrics::counter::Counter,
}

pub(crate) enum Message {
    Record(Box<Record>),
    /// Write everything before this, flush, sync, and answer.
    Close(mpsc::Sender<()>),
}

/// The running audit log.
pub struct AuditLog {
    key: AuditKey,
    sender: SyncSender<Message>,
    health: Arc<Health>,
    closed: AtomicBool,
    path: PathBuf,
}

impl AuditLog {
    /// Opens (or creates) the log at `path` for appending and starts the writer thread. An
    /// unusable path is an error here, at start.
    pub fn start(
        path: &Path,
        max_bytes: u64,
        key: AuditKey,
        counters: AuditCounters,
    ) -> std::io::Result<AuditLog> {
        let health = Arc::new(Health::default());
        let (sender, receiver) = mpsc::sync_channel(QUEUE_CAPACITY);
        writer::spawn(
            path.to_path_buf(),
            max_bytes,
            receiver,
            Arc::clone(&health),
            counters,
        )?;
        Ok(AuditLog {
            key,
            sender,
            health,
            closed: AtomicBool::new(false),
            path: path.to_path_buf(),
        })
    }

    pub fn key(&self) -> &AuditKey {
        &self.key
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a record, or says why it cannot be kept (then the inquiry must not be
    /// answered).
    pub fn record(&self, record: Record) -> Result<(), Unavailable> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Unavailable::Closed);
        }
        if self.health.failing.load(Ordering::Acquire) {
            return Err(Unavailable::Failing);
        }
        self.health.queued.fetch_add(1, Ordering::AcqRel);
        match self.sender.try_send(Message::Record(Box::new(record))) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.health.queued.fetch_sub(1, Ordering::AcqRel);
                Err(match e {
                    TrySendError::Full(_) => Unavailable::QueueFull,
                    TrySendError::Disconnected(_) => Unavailable::Closed,
                })
            }
        }
    }

    /// Records waiting to be written.
    pub fn queue_depth(&self) -> usize {
        self.health.queued.load(Ordering::Acquire)
    }

    /// `Ok` while records can be taken; else why not (for `/readyz`).
    pub fn readiness(&self) -> Result<(), String> {
        if self.health.failing.load(Ordering::Acquire) {
            let reason = self
                .health
                .reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(format!("the audit log cannot be written: {reason}"));
        }
        if self.queue_depth() >= QUEUE_CAPACITY {
            return Err("the audit queue is full".into());
        }
        Ok(())
    }

    /// Writes every queued record, flushes and syncs the file, and stops the writer. Waits at
    /// most `timeout` (a log that cannot be written may never drain); returns whether all
    /// was written.
    pub fn close(&self, timeout: Duration) -> bool {
        self.closed.store(true, Ordering::Release);
        let (done, wait) = mpsc::channel();
        // The queue may be full while the writer drains it: send from a thread of its own, so
        // the wait below stays bounded even when the file cannot be written.
        let sender = self.sender.clone();
        std::thread::spawn(move || sender.send(Message::Close(done)));
        wait.recv_timeout(timeout).is_ok()
    }
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
