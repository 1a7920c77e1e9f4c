//! Every open connection, and what it is doing: idle (no request in flight and none
//! started), reading a request's head (bytes arrived, the handler not called yet), or busy
//! (a request is being answered). Knowing that lets the server:
//!
//! - hold at most `--max-connections`, making room for a new connection by closing the one
//!   idle the longest, so that a flood of idle connections (more than the process could hold
//!   descriptors for) never stops `/healthz` from being answered; a new connection is refused
//!   at accept only when every connection is busy;
//! - close a connection that started a request head and has not finished it within the
//!   header-read timeout (a slow-loris), and, separately, one idle past the keep-alive idle
//!   timeout (hyper's one timeout would do both);
//! - close every connection gracefully at shutdown.
//!
//! A request changes its connection's state with two atomic stores; the registry's lock is
//! taken only at accept, at close and by the sweeper.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

const IDLE: u8 = 0;
const READING_HEAD: u8 = 1;
const BUSY: u8 = 2;

/// Why a connection is asked to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Finish what is in flight, then close (shutdown, eviction, idle timeout).
    Graceful,
    /// Close now (the header-read timeout: nothing is in flight).
    Now,
}

/// One connection's state, shared by its task, its IO and the registry.
pub struct Conn {
    state: AtomicU8,
    /// Milliseconds since the registry's epoch when the state last changed.
    since_ms: AtomicU64,
    close: AtomicU8,
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
        self.set(IDLE);
    }

    fn ask_to_close(&self, how: Close) {
        let code = match how {
            Close::Graceful => 1,
            Close::Now => 2,
        };
        self.close.fetch_max(code, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// Waits until the connection is asked to close, and says how.
    pub async fn closing(&self) -> Close {
        loop {
            match self.close.load(Ordering::Acquire) {
                0 => self.notify.notified().await,
                1 => return Close::Graceful,
                _ => return Close::Now,
            }
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
}

/// Candidates for eviction kept from one scan of the connections.
const EVICT_BATCH: usize = 256;

/// The open connections.
pub struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// The longest-idle connections as of the last scan, `(idle since, id)`, newest first:
    /// a flood at the limit evicts one per new connection, and a scan of every connection
    /// for each would make accepting O(connections). Taken only under `conns`' lock.
    evict_next: Mutex<Vec<(u64, u64)>>,
    next_id: AtomicU64,
    max: usize,
    header_read_timeout: Duration,
    idle_timeout: Duration,
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
        let mut conns = self.registry.lock();
        if conns.remove(&self.id).is_some() {
            self.registry.metrics.open.set(conns.len() as i64);
        }
        if conns.is_empty() {
            self.registry.emptied.notify_waiters();
        }
    }
}

impl Registry {
    pub fn new(
        max: usize,
        header_read_timeout: Duration,
        idle_timeout: Duration,
        metrics: ConnectionMetrics,
    ) -> Arc<Registry> {
        Arc::new(Registry {
            conns: Mutex::new(HashMap::new()),
            evict_next: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            max: max.max(1),
            header_read_timeout,
            idle_timeout,
            epoch: Instant::now(),
            metrics,
            emptied: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn open(&self) -> usize {
        self.lock().len()
    }

    /// Registers a new connection, closing the longest-idle one when at the limit; `None`
    /// (refuse it) when every connection is busy or reading a request.
    pub fn admit(self: &Arc<Self>) -> Option<Registered> {
        let mut conns = self.lock();
        if conns.len() >= self.max {
            let oldest = self.longest_idle(&conns);
            match oldest.and_then(|id| conns.remove(&id)) {
                Some(evicted) => {
                    evicted.ask_to_close(Close::Graceful);
                    self.metrics.evicted.inc();
                }
                None => {
                    self.metrics.refused.inc();
                    return None;
                }
            }
        }
        let conn = Arc::new(Conn {
            state: AtomicU8::new(IDLE),
            since_ms: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            close: AtomicU8::new(0),
            notify: Notify::new(),
            epoch: self.epoch,
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        conns.insert(id, Arc::clone(&conn));
        self.metrics.open.set(conns.len() as i64);
        Some(Registered {
            conn,
            id,
            registry: Arc::clone(self),
        })
    }

    /// The connection idle the longest, if any is idle. Pops the candidates of the last scan
    /// (skipping those closed, busy, or idle again since, which are then newer than every
    /// candidate); scans again, keeping the [`EVICT_BATCH`] oldest, when none is left. A
    /// connection that went idle after the scan is newer than every candidate, so the one
    /// popped is the oldest idle connection, as a full scan would find.
    fn longest_idle(&self, conns: &HashMap<u64, Arc<Conn>>) -> Option<u64> {
        let mut next = self.evict_next.lock().unwrap_or_else(|p| p.into_inner());
        let still_idle = |(since, id): &(u64, u64)| {
            conns.get(id).is_some_and(|c| {
                c.state.load(Ordering::Acquire) == IDLE
                    && c.since_ms.load(Ordering::Relaxed) == *since
            })
        };
        for rescanned in [false, true] {
            while let Some(candidate) = next.pop() {
                if still_idle(&candidate) {
                    return Some(candidate.1);
                }
            }
            if rescanned {
                break;
            }
            let mut idle: Vec<(u64, u64)> = conns
                .iter()
                .filter(|(_, c)| c.state.load(Ordering::Acquire) == IDLE)
                .map(|(id, c)| (c.since_ms.load(Ordering::Relaxed), *id))
                .collect();
            if idle.len() > EVICT_BATCH {
                idle.select_nth_unstable(EVICT_BATCH);
                idle.truncate(EVICT_BATCH);
            }
            // Newest first, so that `pop` takes the oldest.
            idle.sort_unstable_by(|a, b| b.cmp(a));
            *next = idle;
        }
        None
    }

    /// Closes connections past their timeouts; call it every few hundred milliseconds.
    pub fn sweep(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        let idle_ms = self.idle_timeout.as_millis() as u64;
        let head_ms = self.header_read_timeout.as_millis() as u64;
        let mut conns = self.lock();
        conns.retain(|_, c| {
            let age = now.saturating_sub(c.since_ms.load(Ordering::Relaxed));
            let how = match c.state.load(Ordering::Acquire) {
                IDLE if age > idle_ms => Close::Graceful,
                READING_HEAD if age > head_ms => Close::Now,
                _ => return true,
            };
            c.ask_to_close(how);
            self.metrics.timed_out.inc();
            false
        });
        self.metrics.open.set(conns.len() as i64);
        if conns.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    /// Asks every connection to finish what is in flight and close (shutdown).
    pub fn close_all(&self) {
        for c in self.lock().values() {
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
            if self.lock().is_empty() {
                return;
            }
            waiting.await;
        }
    }
}

/// A connection's IO, noting when an idle connection starts sending a request head.
pub struct TrackedIo<I> {
    inner: I,
    conn: Arc<Conn>,
}

impl<I> TrackedIo<I> {
    pub fn new(inner: I, conn: Arc<Conn>) -> TrackedIo<I> {
        TrackedIo { inner, conn }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for TrackedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && self.conn.state.load(Ordering::Acquire) == IDLE {
            self.conn.set(READING_HEAD);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TrackedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max: usize) -> Arc<Registry> {
        Registry::new(
            max,
            Duration::from_millis(50),
            Duration::from_millis(100),
            ConnectionMetrics::default(),
        )
    }

    #[test]
    fn at_the_limit_the_longest_idle_connection_makes_room() {
        let r = registry(2);
        let a = r.admit().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let b = r.admit().unwrap();
        b.conn.busy();
        let c = r.admit().expect("room made by closing the idle one");
        assert_eq!(
            a.conn.close.load(Ordering::Acquire),
            1,
            "a was asked to close"
        );
        assert_eq!(r.open(), 2);
        c.conn.busy();
        assert!(r.admit().is_none(), "every connection busy: refused");
        assert_eq!(r.metrics.refused.get(), 1);
        assert_eq!(r.metrics.evicted.get(), 1);
        drop(c);
        assert_eq!(r.open(), 1);
    }

    #[test]
    fn evictions_from_one_scan_still_take_the_longest_idle_first() {
        let r = registry(3);
        let a = r.admit().unwrap();
        std::thread::sleep(Duration::from_millis(3));
        let b = r.admit().unwrap();
        std::thread::sleep(Duration::from_millis(3));
        let c = r.admit().unwrap();
        // The first eviction scans: a, b, c are the candidates, oldest first.
        let d = r.admit().unwrap();
        assert_eq!(
            a.conn.close.load(Ordering::Acquire),
            1,
            "a, the oldest, went first"
        );
        // b is busy, then idle again: newer than c and d now, so c goes next, then d.
        b.conn.busy();
        std::thread::sleep(Duration::from_millis(3));
        b.conn.idle();
        let e = r.admit().unwrap();
        assert_eq!(
            c.conn.close.load(Ordering::Acquire),
            1,
            "c was idle the longest"
        );
        assert_eq!(b.conn.close.load(Ordering::Acquire), 0);
        let f = r.admit().unwrap();
        assert_eq!(
            d.conn.close.load(Ordering::Acquire),
            1,
            "d, idle since before b"
        );
        assert_eq!(b.conn.close.load(Ordering::Acquire), 0);
        assert_eq!(r.metrics.evicted.get(), 3);
        drop((e, f));
    }

    #[test]
    fn the_sweeper_closes_slow_heads_now_and_idle_connections_gracefully() {
        let r = registry(10);
        let idle = r.admit().unwrap();
        let slow = r.admit().unwrap();
        slow.conn.set(READING_HEAD);
        let busy = r.admit().unwrap();
        busy.conn.busy();
        std::thread::sleep(Duration::from_millis(70));
        r.sweep();
        assert_eq!(slow.conn.close.load(Ordering::Acquire), 2);
        assert_eq!(
            idle.conn.close.load(Ordering::Acquire),
            0,
            "not idle long enough"
        );
        std::thread::sleep(Duration::from_millis(50));
        r.sweep();
        assert_eq!(idle.conn.close.load(Ordering::Acquire), 1);
        assert_eq!(
            busy.conn.close.load(Ordering::Acquire),
            0,
            "a busy one is never timed out"
        );
        assert_eq!(r.open(), 1);
        assert_eq!(r.metrics.timed_out.get(), 2);
    }
}
