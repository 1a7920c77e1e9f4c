//! Every open connection, and what it is doing: handshaking (TLS, before any HTTP), idle (no
//! request in flight and none started), reading a request's head (bytes arrived, the handler
//! not called yet), busy (a request is being answered), or closing (asked to go, not gone
//! yet). Knowing that lets the server:
//!
//! - hold at most `--max-connections` live connections, every accepted socket counted from
//!   accept (a TLS handshake included). A new connection at the limit makes room by evicting
//!   one by [`rank`]: strangers (never answered) gone quiet first, then strangers with a head
//!   or handshake under way (the client owes bytes), then new connections that have not
//!   spoken, then new ones that have, then keep-alive clients that were answered before,
//!   then the one busy the longest (honest
//!   requests take milliseconds and bodies are ~3 KiB sent at once, so the oldest busy one is
//!   the one most likely stuck on a body that never ends or an answer never read). So a
//!   flood of any kind never stops `/healthz` from being answered, and a churn of half-open
//!   connections never cuts an honest keep-alive client; an evicted connection is asked to
//!   finish what is in flight and is closed hard [`CLOSE_GRACE`] later;
//! - hold at most a descriptor budget of sockets in all, closing ones included (they hold a
//!   descriptor until dropped): at the budget, the oldest closing one is closed hard now;
//! - close a connection whose handshake or request head has not arrived within the
//!   header-read timeout, one idle past the keep-alive idle timeout, and one whose write has
//!   not progressed within the write timeout (a client that never reads its answers);
//! - close every connection gracefully at shutdown.
//!
//! A request changes its connection's state with two atomic stores, a stalled write with one;
//! the registry's lock is taken only at accept, at close and by the sweeper.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

const IDLE: u8 = 0;
const READING_HEAD: u8 = 1;
const BUSY: u8 = 2;
/// A TLS handshake under way: the client has sent something.
const HANDSHAKE: u8 = 3;
/// A TLS connection that has not sent a byte yet: as good as idle, and evicted with the
/// idle ones (400 connections that never say hello must not push out a client whose
/// ClientHello is on its way).
const SILENT_HANDSHAKE: u8 = 4;

/// How long an evicted or timed-out connection gets to finish (graceful close) before it is
/// dropped: an honest answer in flight is written in milliseconds.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why a connection is asked to close; each one is stronger than the one before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Close {
    /// Finish what is in flight, then close (shutdown).
    Graceful = 1,
    /// Finish what is in flight within [`CLOSE_GRACE`], else be closed hard (eviction, the
    /// idle timeout).
    Soon = 2,
    /// Close now, dropping the socket (a timeout with nothing to finish, a stalled write, the
    /// grace over, descriptors short).
    Now = 3,
}

impl Close {
    fn from_code(code: u8) -> Option<Close> {
        match code {
            0 => None,
            1 => Some(Close::Graceful),
            2 => Some(Close::Soon),
            _ => Some(Close::Now),
        }
    }
}

/// One connection's state, shared by its task, its IO and the registry.
pub struct Conn {
    state: AtomicU8,
    /// Milliseconds since the registry's epoch when the state last changed.
    since_ms: AtomicU64,
    close: AtomicU8,
    /// When it was asked to close `Soon` (ms since the epoch).
    closing_since_ms: AtomicU64,
    /// When a write started to wait for the client (ms since the epoch, plus one), 0 when
    /// no write waits.
    write_stalled_ms: AtomicU64,
    /// Whether it has answered a request (a keep-alive client, not a stranger).
    served: std::sync::atomic::AtomicBool,
    /// When it was accepted (ms since the registry's epoch).
    accepted_ms: u64,
    /// Whether any byte has arrived from the client (a ClientHello, a request).
    spoke: std::sync::atomic::AtomicBool,
    notify: Notify,
    epoch: Instant,
}

impl Conn {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn set(&self, state: u8) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.state.store(state, Ordering::Release);
    }

    /// A request reached the handler.
    pub fn busy(&self) {
        self.set(BUSY);
    }

    /// The handler answered: idle until the next request's first byte.
    pub fn idle(&self) {
        self.served.store(true, Ordering::Relaxed);
        self.set(IDLE);
    }

    /// The TLS handshake finished: idle until the first request's first byte.
    pub fn handshaken(&self) {
        if matches!(
            self.state.load(Ordering::Acquire),
            HANDSHAKE | SILENT_HANDSHAKE
        ) {
            self.set(IDLE);
        }
    }

    /// Whether it was asked to close `Soon` or `Now` (no longer live).
    fn going(&self) -> bool {
        self.close.load(Ordering::Acquire) >= Close::Soon as u8
    }

    fn ask_to_close(&self, how: Close) {
        let before = self.close.fetch_max(how as u8, Ordering::AcqRel);
        if how == Close::Soon && before < Close::Soon as u8 {
            self.closing_since_ms
                .store(self.now_ms(), Ordering::Relaxed);
        }
        self.notify.notify_one();
    }

    /// Waits until the connection is asked to close more firmly than `than` (`None`: at
    /// all), and says how.
    pub async fn closing(&self, than: Option<Close>) -> Close {
        let than = than.map_or(0, |c| c as u8);
        loop {
            let code = self.close.load(Ordering::Acquire);
            match Close::from_code(code) {
                Some(how) if code > than => return how,
                _ => self.notify.notified().await,
            }
        }
    }

    fn note_write<T>(&self, polled: &Poll<T>) {
        let stalled = self.write_stalled_ms.load(Ordering::Relaxed);
        match polled {
            Poll::Pending if stalled == 0 => self
                .write_stalled_ms
                .store(self.now_ms() + 1, Ordering::Relaxed),
            Poll::Ready(_) if stalled != 0 => self.write_stalled_ms.store(0, Ordering::Relaxed),
            _ => {}
        }
    }
}

/// The counters the registry keeps (handles share the service's metrics).
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    pub open: Gauge,
    pub evicted: Counter,
    pub refused: Counter,
    pub timed_out: Counter,
    /// Connections dropped without a clean close (grace over, timeouts, descriptors short).
    pub closed_hard: Counter,
    /// Failed accepts (descriptors short, or a connection gone before it was taken).
    pub accept_errors: Counter,
}

/// Candidates for eviction kept from one scan of the connections.
const EVICT_BATCH: usize = 256;

/// A new connection is spared eviction this long: its first bytes (a request head, a
/// ClientHello) are on their way, and a flood of new connections must not push out every
/// honest client before the server has read it.
const FRESH_MS: u64 = 1000;

/// A connection's rank for eviction: lower goes first, oldest first within a rank, except
/// rank 2 (new and not yet heard), newest first: during a burst of new connections the
/// server may not have read an honest client's first bytes yet (its accept loop is busy with
/// the burst), and the client that connected before the burst is the one to keep; a silent
/// one moves to rank 0 after [`FRESH_MS`] anyway.
///
/// 0. a stranger gone quiet: never answered and never sent a byte, idle or in a silent TLS
///    handshake, accepted [`FRESH_MS`] ago or more (a flood of idle connections goes here);
/// 1. a stranger with a request head under way (an honest head arrives whole and is
///    answered in the same pass, so one seen unfinished is a slowloris or a churn of
///    half-heads), or one that spoke but has not finished a handshake or sent a request in
///    [`FRESH_MS`];
/// 2. a new connection that has not sent a byte yet (accepted within [`FRESH_MS`]);
/// 3. a new connection that has (a TLS client in or just past its handshake);
/// 4. a keep-alive client (answered before), between requests or starting the next one;
/// 5. busy answering.
///
/// So a client without a key that churns half-open connections evicts its own, never an
/// honest partner's keep-alive connection, and a flood of silent connections never pushes
/// out a client that has started to talk.
fn rank(c: &Conn, now_ms: u64) -> u8 {
    let state = c.state.load(Ordering::Acquire);
    let old = now_ms.saturating_sub(c.accepted_ms) >= FRESH_MS;
    let spoke = c.spoke.load(Ordering::Relaxed);
    match state {
        BUSY => 5,
        _ if c.served.load(Ordering::Relaxed) => 4,
        READING_HEAD => 1,
        _ if old => u8::from(spoke),
        _ if spoke => 3,
        _ => 2,
    }
}

/// The sockets held, under the registry's lock.
struct Table {
    conns: HashMap<u64, Arc<Conn>>,
    /// Connections asked to close `Soon` or `Now` and still held (not live).
    going: usize,
    /// Ids of connections asked to close `Soon`, oldest first (some gone since).
    closing: VecDeque<u64>,
}

/// How the registry treats connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Live connections at most (`--max-connections`, capped by the descriptor budget).
    pub max: usize,
    /// Sockets held at most, closing ones included.
    pub budget: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
}

/// The open connections.
pub struct Registry {
    table: Mutex<Table>,
    /// The longest-idle connections as of the last scan, `(idle since, id)`, newest first:
    /// a flood at the limit evicts one per new connection, and a scan of every connection
    /// for each would make accepting O(connections). Taken only under `table`.
    evict_next: Mutex<Vec<(u64, u64)>>,
    next_id: AtomicU64,
    limits: Limits,
    epoch: Instant,
    metrics: ConnectionMetrics,
    emptied: Notify,
}

/// A registered connection; dropping it unregisters the connection.
pub struct Registered {
    pub conn: Arc<Conn>,
    id: u64,
    registry: Arc<Registry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut table = self.registry.lock();
        if let Some(conn) = table.conns.remove(&self.id) {
            if conn.going() {
                table.going -= 1;
            }
            self.registry.metrics.open.set(table.conns.len() as i64);
        }
        if table.conns.is_empty() {
            self.registry.emptied.notify_waiters();
        }
    }
}

impl Table {
    /// Asks `id` to close `Soon` or `Now`, counting it as going (no longer live).
    fn send_off(&mut self, id: u64, how: Close) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        if !conn.going() {
            self.going += 1;
            if how == Close::Soon {
                self.closing.push_back(id);
            }
        }
        conn.ask_to_close(how);
    }

    fn live(&self) -> usize {
        self.conns.len() - self.going
    }
}

impl Registry {
    pub fn new(limits: Limits, metrics: ConnectionMetrics) -> Arc<Registry> {
        Arc::new(Registry {
            table: Mutex::new(Table {
                conns: HashMap::new(),
                going: 0,
                closing: VecDeque::new(),
            }),
            evict_next: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            limits: Limits {
                max: limits.max.max(1),
                budget: limits.budget.max(1),
                ..limits
            },
            epoch: Instant::now(),
            metrics,
            emptied: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Sockets held: live connections and those closing.
    pub fn open(&self) -> usize {
        self.lock().conns.len()
    }

    /// Connections neither closing nor asked to.
    pub fn live(&self) -> usize {
        self.lock().live()
    }

    /// Registers a new connection (`handshake`: a TLS handshake comes first). At the limit
    /// of live connections, evicts one (see the module's order); at the descriptor budget,
    /// closes the oldest closing one now. `None` (refuse it) only when the budget is held by
    /// connections already being dropped.
    pub fn admit(self: &Arc<Self>, handshake: bool) -> Option<Registered> {
        let mut table = self.lock();
        if table.live() >= self.limits.max {
            if let Some(id) = self.eviction_candidate(&table) {
                table.send_off(id, Close::Soon);
                self.metrics.evicted.inc();
            }
        }
        if table.conns.len() >= self.limits.budget && !self.drop_oldest_closing(&mut table, 1) {
            self.metrics.refused.inc();
            return None;
        }
        let now = self.now_ms();
        let conn = Arc::new(Conn {
            state: AtomicU8::new(if handshake { SILENT_HANDSHAKE } else { IDLE }),
            since_ms: AtomicU64::new(now),
            close: AtomicU8::new(0),
            closing_since_ms: AtomicU64::new(0),
            write_stalled_ms: AtomicU64::new(0),
            served: std::sync::atomic::AtomicBool::new(false),
            accepted_ms: now,
            spoke: std::sync::atomic::AtomicBool::new(false),
            notify: Notify::new(),
            epoch: self.epoch,
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        table.conns.insert(id, Arc::clone(&conn));
        self.metrics.open.set(table.conns.len() as i64);
        Some(Registered {
            conn,
            id,
            registry: Arc::clone(self),
        })
    }

    /// Closes now up to `n` of the connections closing the longest; whether it closed any.
    fn drop_oldest_closing(&self, table: &mut Table, n: usize) -> bool {
        let mut dropped = 0;
        while dropped < n {
            let Some(id) = table.closing.pop_front() else {
                break;
            };
            let soon = table
                .conns
                .get(&id)
                .is_some_and(|c| c.close.load(Ordering::Acquire) == Close::Soon as u8);
            if soon {
                table.send_off(id, Close::Now);
                self.metrics.closed_hard.inc();
                dropped += 1;
            }
        }
        dropped > 0
    }

    /// Descriptors ran out (accept failed): closes now every connection closing, so that
    /// their descriptors are free for the next accept.
    pub fn descriptors_short(&self) {
        let mut table = self.lock();
        self.drop_oldest_closing(&mut table, usize::MAX);
    }

    /// The live connection to evict, if any: the oldest of the best rank ([`rank`]).
    /// Strangers (rank 0) are popped from the candidates of the last scan (skipping those
    /// gone, going, or changed since: a connection that changed state after the scan is
    /// newer than every candidate, and a stranger stays one while its state holds, so the one
    /// popped is the oldest stranger, as a full scan would find); when none is left, a scan
    /// keeps the [`EVICT_BATCH`] oldest. With no stranger every eviction scans, which costs
    /// one pass over the table per accept only while the table holds none.
    fn eviction_candidate(&self, table: &Table) -> Option<u64> {
        let now = self.now_ms();
        let mut next = self.evict_next.lock().unwrap_or_else(|p| p.into_inner());
        let still_stranger = |(since, id): &(u64, u64)| {
            table.conns.get(id).is_some_and(|c| {
                !c.going() && c.since_ms.load(Ordering::Relaxed) == *since && rank(c, now) == 0
            })
        };
        while let Some(candidate) = next.pop() {
            if still_stranger(&candidate) {
                return Some(candidate.1);
            }
        }
        let mut strangers = Vec::new();
        let mut best: Option<(u8, u64, u64)> = None;
        for (id, c) in table.conns.iter().filter(|(_, c)| !c.going()) {
            let (rank, since) = (rank(c, now), c.since_ms.load(Ordering::Relaxed));
            if rank == 0 {
                strangers.push((since, *id));
            }
            // Rank 2 newest first (see `rank`).
            let key = match rank {
                2 => (rank, u64::MAX - since, u64::MAX - *id),
                _ => (rank, since, *id),
            };
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        if strangers.len() > EVICT_BATCH {
            strangers.select_nth_unstable(EVICT_BATCH);
            strangers.truncate(EVICT_BATCH);
        }
        // Newest first, so that `pop` takes the oldest.
        strangers.sort_unstable_by(|a, b| b.cmp(a));
        *next = strangers;
        match next.pop() {
            Some((_, id)) => Some(id),
            None => best.map(|(rank, _, id)| if rank == 2 { u64::MAX - id } else { id }),
        }
    }

    /// Closes connections past their timeouts and grace; call it every few hundred
    /// milliseconds.
    pub fn sweep(&self) {
        let now = self.now_ms();
        let ms = |d: Duration| d.as_millis() as u64;
        let (idle_ms, head_ms) = (
            ms(self.limits.idle_timeout),
            ms(self.limits.header_read_timeout),
        );
        let (write_ms, grace_ms) = (ms(self.limits.write_timeout), ms(CLOSE_GRACE));
        let mut table = self.lock();
        let mut closes = Vec::new();
        for (id, c) in &table.conns {
            let stalled = c.write_stalled_ms.load(Ordering::Relaxed);
            let code = c.close.load(Ordering::Acquire);
            let how = if code == Close::Now as u8 {
                continue;
            } else if stalled != 0 && now.saturating_sub(stalled - 1) > write_ms {
                Close::Now
            } else if code == Close::Soon as u8 {
                let asked = c.closing_since_ms.load(Ordering::Relaxed);
                if now.saturating_sub(asked) <= grace_ms {
                    continue;
                }
                self.metrics.closed_hard.inc();
                closes.push((*id, Close::Now));
                continue;
            } else {
                let age = now.saturating_sub(c.since_ms.load(Ordering::Relaxed));
                match c.state.load(Ordering::Acquire) {
                    IDLE if age > idle_ms => Close::Soon,
                    READING_HEAD | HANDSHAKE | SILENT_HANDSHAKE if age > head_ms => Close::Now,
                    _ => continue,
                }
            };
            self.metrics.timed_out.inc();
            if how == Close::Now {
                self.metrics.closed_hard.inc();
            }
            closes.push((*id, how));
        }
        for (id, how) in closes {
            table.send_off(id, how);
        }
        let Table { conns, closing, .. } = &mut *table;
        closing.retain(|id| {
            conns
                .get(id)
                .is_some_and(|c| c.close.load(Ordering::Acquire) == Close::Soon as u8)
        });
        self.metrics.open.set(table.conns.len() as i64);
        if table.conns.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    /// Asks every connection to finish what is in flight and close (shutdown).
    pub fn close_all(&self) {
        for c in self.lock().conns.values() {
            c.ask_to_close(Close::Graceful);
        }
    }

    /// Waits until no connection is registered.
    pub async fn until_empty(&self) {
        loop {
            let waiting = self.emptied.notified();
            tokio::pin!(waiting);
            // Registered before the check, so a connection closing in between still wakes us.
            waiting.as_mut().enable();
            if self.lock().conns.is_empty() {
                return;
            }
            waiting.await;
        }
    }
}

mod io;
pub use io::TrackedIo;

#[cfg(test)]
mod tests;
