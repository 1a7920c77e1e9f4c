//! What the feed's state means for readiness and for the lag metric.
//!
//! Readiness follows docs/contract.md §5. A fault every replica shares never makes a replica
//! unready: while Redis cannot be reached, does not answer (paused, a dead network), or
//! holds a stream that ends before what this replica already applied (restarted from an
//! older copy, or failed over to a replica that lacked entries, until the relay restores
//! them), every replica would go unready at the same moment, and taking them all out of
//! service would turn a feed outage into a nationwide one. They keep answering from their
//! index instead; `data_as_of` stops advancing and `eligd_feed_lag_seconds` grows, which is
//! what alerts watch. A replica is unready only for its own faults: it replays after a start
//! or a resync, a gap in the stream awaits a snapshot, or it reaches the feed and still is
//! more than `--max-staleness` behind it (it cannot keep up).
//!
//! A gap is shared or local by what this replica was when it appeared. Ready then (caught
//! up, following): every replica at the head of the stream sees the same gap (Redis lost
//! entries they had applied, the relay started a new epoch, the key was deleted), and what
//! the index holds is true, every entry of it from a committed row. It stays ready, answering
//! from the index frozen at the last entry it trusts (`data_as_of` no longer advances),
//! through the gap, the resync and the replay after it. Not ready then (starting up,
//! replaying an old snapshot or one of another epoch, stuck behind): the fault is its own,
//! its peers still serve, and it stays unready until a snapshot covers the gap.
//!
//! Staleness is the time since the index was last known to hold everything the stream held.
//! That is proven by a read that came back with less than a full batch. While a blocking read
//! sent in that state is outstanding, anything added would have been returned at once, so
//! the lag is 0 until the read overstays its block time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::index::FeedPosition;

/// Where the feed stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Replaying from the snapshot's position (after a start or a resync); not yet caught up.
    Replaying,
    /// Caught up once and following new entries.
    Following,
    /// The stream lost entries after our position (or was replaced): the index may be
    /// incomplete until a snapshot that covers the gap is loaded. Whether that makes the
    /// replica unready depends on whether the gap is shared ([`FeedStatus::is_degraded`]).
    Gap { reason: String },
}

/// How long a blocking read may overstay its block time before the lag counts again.
const READ_GRACE: Duration = Duration::from_secs(1);

pub struct FeedStatus {
    max_staleness: Duration,
    block: Duration,
    inner: Mutex<Inner>,
}

struct Inner {
    phase: Phase,
    connected: bool,
    started: Instant,
    caught_up_at: Option<Instant>,
    /// A blocking read sent while caught up, not yet answered.
    waiting_since: Option<Instant>,
    last_applied: Option<FeedPosition>,
    /// The stream ends before our position, in the same epoch: Redis lost entries we
    /// applied, and the relay has not yet written them back.
    stream_behind: bool,
    /// When Redis last answered a read (a connection alone proves nothing: a paused Redis
    /// accepts connections and never answers).
    answered_at: Option<Instant>,
    /// The current gap appeared while the replica was ready: a fault every replica shares.
    /// It stays ready through the gap, the resync and the replay after it.
    shared_gap: bool,
}

impl FeedStatus {
    pub fn new(max_staleness: Duration, block: Duration, now: Instant) -> FeedStatus {
        FeedStatus {
            max_staleness,
            block,
            inner: Mutex::new(Inner {
                phase: Phase::Replaying,
                connected: false,
                started: now,
                caught_up_at: None,
                waiting_since: None,
                last_applied: None,
                stream_behind: false,
                answered_at: None,
                shared_gap: false,
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_connected(&self, connected: bool) {
        let mut inner = self.inner();
        inner.connected = connected;
        if !connected {
            inner.waiting_since = None;
        }
    }

    pub fn is_connected(&self) -> bool {
        self.inner().connected
    }

    /// Redis answered a read and the continuity probe.
    pub fn answered(&self, now: Instant) {
        self.inner().answered_at = Some(now);
    }

    /// Whether the stream ends before the entry we applied last (see [`Inner`]).
    pub fn set_stream_behind(&self, behind: bool) {
        self.inner().stream_behind = behind;
    }

    pub fn is_stream_behind(&self) -> bool {
        self.inner().stream_behind
    }

    pub fn phase(&self) -> Phase {
        self.inner().phase.clone()
    }

    /// A blocking read is being sent. It proves freshness only when the last read left us
    /// caught up.
    pub fn waiting(&self, now: Instant) {
        let mut inner = self.inner();
        if inner.phase == Phase::Following {
            inner.waiting_since = Some(now);
        }
    }

    /// The last entry applied (or skipped) so far.
    pub fn applied(&self, position: FeedPosition) {
        self.inner().last_applied = Some(position);
    }

    /// The index now holds everything the stream held at `now`. Returns true when this ends
    /// a replay.
    /// Whether it is replaying (before its first catch-up, or after a resync).
    pub fn is_replaying(&self) -> bool {
        self.inner().phase == Phase::Replaying
    }

    pub fn caught_up(&self, now: Instant) -> bool {
        let mut inner = self.inner();
        inner.caught_up_at = Some(now);
        inner.waiting_since = None;
        let ended_replay = inner.phase == Phase::Replaying;
        if ended_replay {
            inner.phase = Phase::Following;
            inner.shared_gap = false;
        }
        ended_replay
    }

    /// The stream has a gap at our position. `shared` when the replica was ready as it
    /// appeared (see the module doc): it stays ready, else it is not ready until a resync.
    pub fn gap(&self, reason: String, shared: bool) {
        let mut inner = self.inner();
        inner.phase = Phase::Gap { reason };
        inner.waiting_since = None;
        inner.shared_gap = shared;
    }

    /// Answering, ready, from an index frozen at a gap every replica shares, until a
    /// snapshot covers it (`eligd_feed_gap_degraded`).
    pub fn is_degraded(&self) -> bool {
        let inner = self.inner();
        inner.shared_gap && matches!(inner.phase, Phase::Gap { .. })
    }

    /// A snapshot covering the gap was loaded: replay from its position (still ready when
    /// the gap was shared).
    pub fn resynced(&self, position: Option<FeedPosition>) {
        let mut inner = self.inner();
        inner.phase = Phase::Replaying;
        inner.last_applied = position;
    }

    /// Seconds the index may be behind the stream. `wall_ms` is the Unix time now, to age
    /// the last applied entry by its ID while replaying.
    pub fn lag(&self, now: Instant, wall_ms: u64) -> Duration {
        let inner = self.inner();
        if let (Phase::Following, Some(sent)) = (&inner.phase, inner.waiting_since) {
            if now.saturating_duration_since(sent) <= self.block + READ_GRACE {
                return Duration::ZERO;
            }
        }
        match (inner.caught_up_at, inner.last_applied) {
            (Some(at), _) => now.saturating_duration_since(at),
            (None, Some(p)) => Duration::from_millis(wall_ms.saturating_sub(p.unix_ms())),
            (None, None) => now.saturating_duration_since(inner.started),
        }
    }

    /// Whether the feed answers and holds what we follow: connected, Redis answered within a
    /// blocking read's time (not paused, no dead network), and a stream that does not end
    /// before us. When it does not, being behind is a fault every replica shares.
    fn reaching(&self, inner: &Inner, now: Instant) -> bool {
        let recently = inner
            .answered_at
            .is_some_and(|at| now.saturating_duration_since(at) <= self.block + READ_GRACE);
        inner.connected && recently && !inner.stream_behind
    }

    /// `Ok` when the feed lets the replica be ready; otherwise the reason, for `/readyz`.
    pub fn readiness(&self, now: Instant, wall_ms: u64) -> Result<(), String> {
        let lag = self.lag(now, wall_ms);
        let inner = self.inner();
        let redis = if inner.connected {
            "connected"
        } else {
            "not connected"
        };
        match &inner.phase {
            // A gap every replica shares: answering from a true, frozen index, ready.
            Phase::Replaying | Phase::Gap { .. } if inner.shared_gap => Ok(()),
            Phase::Replaying => Err(format!(
                "replaying the change feed (Redis {redis}, {:.1} s behind)",
                lag.as_secs_f64()
            )),
            Phase::Gap { reason } => Err(format!("change feed gap: {reason}")),
            Phase::Following if lag > self.max_staleness && self.reaching(&inner, now) => {
                Err(format!(
                    "the change feed answers but this replica is {:.1} s behind it (--max-staleness {} s)",
                    lag.as_secs_f64(),
                    self.max_staleness.as_secs()
                ))
            }
            Phase::Following => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: Duration = Duration::from_secs(1);

    fn status(t0: Instant) -> FeedStatus {
        FeedStatus::new(Duration::from_secs(30), BLOCK, t0)
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn not_ready_until_the_replay_catches_up() {
        let t0 = Instant::now();
        let st = status(t0);
        let err = st.readiness(t0, 0).unwrap_err();
        assert!(err.contains("replaying"), "{err}");
        assert!(st.caught_up(t0 + s(1)));
        assert_eq!(st.readiness(t0 + s(1), 0), Ok(()));
        assert!(
            !st.caught_up(t0 + s(2)),
            "only the first catch-up ends a replay"
        );
    }

    #[test]
    fn a_shared_fault_never_makes_a_replica_unready() {
        let t0 = Instant::now();
        let st = status(t0);
        st.set_connected(true);
        st.caught_up(t0);
        // Redis unreachable: stale far beyond --max-staleness, still ready.
        st.set_connected(false);
        assert_eq!(st.readiness(t0 + s(29), 0), Ok(()));
        assert_eq!(st.readiness(t0 + s(600), 0), Ok(()), "down, stale, ready");
        assert_eq!(st.lag(t0 + s(600), 0), s(600), "the lag shows it");
        // Redis paused: connected, but the blocking read never comes back.
        st.set_connected(true);
        st.answered(t0 + s(1));
        st.waiting(t0 + s(1));
        assert_eq!(st.readiness(t0 + s(60), 0), Ok(()), "paused, ready");
        // Reconnected to the paused Redis: connected, nothing answered.
        st.set_connected(false);
        st.set_connected(true);
        assert_eq!(
            st.readiness(t0 + s(61), 0),
            Ok(()),
            "connected is not answering"
        );
        // The stream ends before what we applied (an older copy, a lossy failover).
        st.caught_up(t0 + s(61));
        st.set_stream_behind(true);
        assert_eq!(st.readiness(t0 + s(120), 0), Ok(()), "stream behind, ready");
        st.set_stream_behind(false);
        st.caught_up(t0 + s(121));
        assert_eq!(st.readiness(t0 + s(121), 0), Ok(()));
    }

    #[test]
    fn a_replica_that_reaches_the_feed_but_cannot_keep_up_is_unready() {
        let t0 = Instant::now();
        let st = status(t0);
        st.set_connected(true);
        st.caught_up(t0);
        // Reads are answered (no blocking read outstanding) but never catch up.
        st.answered(t0 + s(30));
        assert_eq!(st.readiness(t0 + s(30), 0), Ok(()));
        st.answered(t0 + s(31));
        let err = st.readiness(t0 + s(31), 0).unwrap_err();
        assert!(
            err.contains("31.0 s behind") && err.contains("answers"),
            "{err}"
        );
        st.caught_up(t0 + s(32));
        assert_eq!(st.readiness(t0 + s(32), 0), Ok(()));
    }

    #[test]
    fn an_outstanding_blocking_read_keeps_the_lag_at_zero_until_it_overstays() {
        let t0 = Instant::now();
        let st = status(t0);
        st.caught_up(t0);
        st.waiting(t0 + s(5));
        assert_eq!(st.lag(t0 + s(5) + BLOCK, 0), Duration::ZERO);
        // Redis paused: the read never comes back; the lag counts from the last catch-up.
        assert_eq!(st.lag(t0 + s(5) + BLOCK + READ_GRACE + s(1), 0), s(8));
    }

    #[test]
    fn while_replaying_the_lag_is_the_age_of_the_last_applied_entry() {
        let t0 = Instant::now();
        let st = status(t0);
        assert_eq!(
            st.lag(t0 + s(3), 0),
            s(3),
            "nothing applied: time since start"
        );
        st.applied(FeedPosition { ms: 10_000, seq: 0 });
        assert_eq!(st.lag(t0, 70_000), s(60));
        // A blocking read during a replay proves nothing.
        st.waiting(t0);
        assert_eq!(st.lag(t0, 70_000), s(60));
    }

    #[test]
    fn a_gap_is_not_ready_until_resynced_and_caught_up() {
        let t0 = Instant::now();
        let st = status(t0);
        st.caught_up(t0);
        st.gap("the stream was trimmed past our position".into(), false);
        let err = st.readiness(t0, 0).unwrap_err();
        assert!(err.contains("trimmed past"), "{err}");
        st.resynced(Some(FeedPosition { ms: 5, seq: 0 }));
        assert!(st.readiness(t0, 0).unwrap_err().contains("replaying"));
        assert!(st.caught_up(t0 + s(1)));
        assert_eq!(st.readiness(t0 + s(1), 0), Ok(()));
    }

    #[test]
    fn a_gap_found_while_ready_is_shared_and_keeps_the_replica_ready_through_the_resync() {
        let t0 = Instant::now();
        let st = status(t0);
        st.set_connected(true);
        st.caught_up(t0);
        st.gap("the stream does not hold our position".into(), true);
        assert!(st.is_degraded());
        assert_eq!(st.readiness(t0 + s(600), 0), Ok(()), "shared: still ready");
        assert_eq!(st.lag(t0 + s(600), 0), s(600), "and the lag says how stale");
        st.resynced(Some(FeedPosition { ms: 5, seq: 0 }));
        assert!(!st.is_degraded());
        assert_eq!(
            st.readiness(t0 + s(601), 0),
            Ok(()),
            "ready while replaying"
        );
        assert!(st.caught_up(t0 + s(602)));
        // The next gap is judged afresh: found while starting a replay, it is local.
        st.resynced(Some(FeedPosition { ms: 6, seq: 0 }));
        st.gap("another epoch".into(), false);
        assert!(!st.is_degraded());
        assert!(st.readiness(t0 + s(603), 0).is_err());
    }
}
