//! The relay's own metrics (its `/metrics`, separate from a replica's): what it moved, how
//! long a batch took, what is still waiting, and what failed.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    pub component: &'static str,
}

pub struct RelayMetrics {
    registry: Registry,
    pub relayed: Counter,
    pub rejected: Counter,
    pub batch_seconds: Histogram,
    pub backlog_rows: Gauge,
    pub oldest_pending_seconds: Gauge<f64, AtomicU64>,
    pub errors: Family<ComponentLabels, Counter>,
    pub active: Gauge,
    pub trimmed: Counter,
    pub epochs_replaced: Counter,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RelayMetrics {
    pub fn new() -> RelayMetrics {
        let mut registry = Registry::with_prefix("eligd_relay");
        let m = RelayMetrics {
            relayed: Counter::default(),
            rejected: Counter::default(),
            // 250 µs doubling to about 8 s.
            batch_seconds: Histogram::new(exponential_buckets(250e-6, 2.0, 16)),
            backlog_rows: Gauge::default(),
            oldest_pending_seconds: Gauge::default(),
            errors: Family::default(),
            active: Gauge::default(),
            trimmed: Counter::default(),
            epochs_replaced: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "rows_relayed",
            "Outbox rows written to the stream (and removed from the outbox)",
            m.relayed.clone(),
        );
        registry.register(
            "rows_rejected",
            "Outbox rows that break the record rules: marked rejected and skipped",
            m.rejected.clone(),
        );
        registry.register(
            "batch_duration_seconds",
            "One batch: read the outbox, XADD pipelined, remove the rows",
            m.batch_seconds.clone(),
        );
        registry.register(
            "backlog_rows",
            "Outbox rows waiting to be relayed (refreshed every few seconds)",
            m.backlog_rows.clone(),
        );
        registry.register(
            "oldest_pending_seconds",
            "Age of the oldest outbox row waiting to be relayed; 0 when none",
            m.oldest_pending_seconds.clone(),
        );
        registry.register(
            "errors",
            "Failures that restarted the relay's session, by component: postgres, redis",
            m.errors.clone(),
        );
        registry.register(
            "active",
            "1 while this relay holds the relay lock and moves rows, 0 while standing by or reconnecting",
            m.active.clone(),
        );
        registry.register(
            "stream_trimmed_entries",
            "Stream entries trimmed away as older than --retain-hours",
            m.trimmed.clone(),
        );
        registry.register(
            "stream_epochs_replaced",
            "Times Redis was found without entries the relay had written, and a new stream epoch started",
            m.epochs_replaced.clone(),
        );
        RelayMetrics { registry, ..m }
    }

    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
