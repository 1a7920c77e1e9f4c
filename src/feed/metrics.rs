//! The change feed's series. They live with the feed, which is the only writer; the
//! service's registry registers them once ([`FeedMetrics::register`]) and the feed gets a
//! clone of the handles, so it needs nothing else from the service.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// Handles to the feed's series (cloning shares them).
#[derive(Clone, Default)]
pub struct FeedMetrics {
    pub applied: Counter,
    pub rejected: Family<ReasonLabels, Counter>,
    pub lag_seconds: Gauge<f64, AtomicU64>,
    pub last_applied_seconds: Gauge<f64, AtomicU64>,
    pub reconnects: Counter,
    pub gaps: Family<KindLabels, Counter>,
    pub resyncs: Counter,
    pub resync_attempts: Counter,
    pub connected: Gauge,
    pub stream_behind: Gauge,
    pub gap_degraded: Gauge,
}

impl FeedMetrics {
    pub fn register(registry: &mut Registry) -> FeedMetrics {
        let m = FeedMetrics::default();
        // Every kind at 0 from the start, so `increase()` and dashboards see the series.
        for kind in ["trimmed", "deleted", "reset"] {
            m.gaps.get_or_create(&KindLabels { kind }).inc_by(0);
        }
        registry.register(
            "feed_events_applied",
            "Change feed entries applied to the index",
            m.applied.clone(),
        );
        registry.register(
            "feed_events_rejected",
            "Change feed entries not applied, by reason: stale (the index holds this version or newer), \
             tombstone (a Debezium tombstone marker), malformed, invalid_record, inconsistent, unsupported",
            m.rejected.clone(),
        );
        registry.register(
            "feed_lag_seconds",
            "How far the index may be behind the stream, connected or not: 0 while caught up and \
             waiting on a live read; grows while Redis cannot be read",
            m.lag_seconds.clone(),
        );
        registry.register(
            "feed_last_applied_timestamp_seconds",
            "Unix time of the last entry applied (from its stream ID)",
            m.last_applied_seconds.clone(),
        );
        registry.register(
            "feed_reconnects",
            "Times the feed reconnected to Redis after a failure",
            m.reconnects.clone(),
        );
        registry.register(
            "feed_gaps",
            "Gaps found in the stream, by kind: trimmed, deleted, reset",
            m.gaps.clone(),
        );
        registry.register(
            "feed_resyncs",
            "Gaps repaired by loading a newer snapshot",
            m.resyncs.clone(),
        );
        registry.register(
            "feed_resync_attempts",
            "Looks for a snapshot that covers a gap (about one a second while in a gap)",
            m.resync_attempts.clone(),
        );
        registry.register(
            "feed_connected",
            "1 while the feed holds a working Redis connection, else 0",
            m.connected.clone(),
        );
        registry.register(
            "feed_stream_behind",
            "1 while the stream (same epoch) ends before the entry this replica applied last: \
             Redis came back from an older copy or failed over to a replica that lacks entries, \
             and the relay has not yet restored them",
            m.stream_behind.clone(),
        );
        registry.register(
            "feed_gap_degraded",
            "1 while this replica, ready when a gap in the stream appeared (a gap every replica \
             shares), stays ready answering from its index frozen at the last entry it trusts, \
             until a snapshot in --snapshot-dir covers the gap",
            m.gap_degraded.clone(),
        );
        m
    }
}
