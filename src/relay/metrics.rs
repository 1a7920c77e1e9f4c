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
    pub restored: Counter,
    pub losses_noticed: Counter,
    pub deposed: Counter,
    pub versions_behind: Counter,
    pub reversioned: Counter,
    pub markers_pruned: Counter,
    pub kept_rows: Gauge,
    pub pruned: Counter,
    pub wait_seconds: Histogram,
    pub wait_shortfalls: Counter,
    pub oldest_entry_seconds: Gauge<f64, AtomicU64>,
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
            restored: Counter::default(),
            losses_noticed: Counter::default(),
            deposed: Counter::default(),
            versions_behind: Counter::default(),
            reversioned: Counter::default(),
            markers_pruned: Counter::default(),
            kept_rows: Gauge::default(),
            pruned: Counter::default(),
            // 100 µs doubling to about 6.5 s.
            wait_seconds: Histogram::new(exponential_buckets(100e-6, 2.0, 17)),
            wait_shortfalls: Counter::default(),
            oldest_entry_seconds: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "rows_relayed",
            "Outbox rows written to the stream (then kept until safe, see kept_rows)",
            m.relayed.clone(),
        );
        registry.register(
            "rows_rejected",
            "Outbox rows that break the record rules: marked rejected and skipped",
            m.rejected.clone(),
        );
        registry.register(
            "batch_duration_seconds",
            "One batch: read the outbox, XADD pipelined, WAIT for replicas when asked, mark the rows relayed",
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
        registry.register(
            "stream_entries_restored",
            "Entries written back with their own IDs to a Redis that came back without them \
             (an older copy, or a failover to a replica that lacked them)",
            m.restored.clone(),
        );
        registry.register(
            "stream_losses_noticed",
            "Times a batch or a probe found the stream without what the relay wrote while the \
             connection stayed open (Redis restarted behind a proxy); the epoch was then settled",
            m.losses_noticed.clone(),
        );
        registry.register(
            "deposed",
            "Times a stream write of this relay was refused because a newer relay holds the role \
             (a newer fencing token); the relay stepped down",
            m.deposed.clone(),
        );
        registry.register(
            "table_behind_stream",
            "Sessions that found the records database's version sequence behind versions the \
             stream carries (failover or restore); the sequence was raised and a new epoch started",
            m.versions_behind.clone(),
        );
        registry.register(
            "rows_reversioned",
            "Outbox rows drawn below the version floor, re-versioned through the table instead of \
             relayed",
            m.reversioned.clone(),
        );
        registry.register(
            "delete_markers_pruned",
            "Delete markers removed from eligd_deleted_members past --retain-hours",
            m.markers_pruned.clone(),
        );
        registry.register(
            "outbox_kept_rows",
            "Relayed rows still kept in the outbox (for --outbox-keep-secs and until replicated)",
            m.kept_rows.clone(),
        );
        registry.register(
            "outbox_pruned_rows",
            "Relayed rows deleted from the outbox once kept long enough and replicated",
            m.pruned.clone(),
        );
        registry.register(
            "wait_duration_seconds",
            "One confirmation WAIT for --wait-replicas Redis replicas (about once a second while relaying)",
            m.wait_seconds.clone(),
        );
        registry.register(
            "wait_shortfalls",
            "Confirmations that fewer than --wait-replicas replicas acknowledged within --wait-timeout-ms \
             (the rows stay kept until a later WAIT succeeds)",
            m.wait_shortfalls.clone(),
        );
        registry.register(
            "stream_oldest_entry_age_seconds",
            "Age of the oldest entry the stream retains (from its ID); retention must cover the \
             oldest snapshot a replica may load",
            m.oldest_entry_seconds.clone(),
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
