//! The Prometheus metrics (docs/operations.md, "Metrics"), in one registry.
//!
//! Labels are closed sets (route patterns, channel names, outcome codes), never a raw path,
//! a national ID, a phone number or a key, so the series count stays bounded whatever
//! clients send.

mod access;
pub mod history;
pub mod hot;

use std::sync::atomic::AtomicU64;

pub use access::{AccessMetrics, ClientCounters, ClientInquiryLabels, ClientName, UNAUTHENTICATED};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

use crate::feed::metrics::FeedMetrics;
use hot::{label, HandleCache, ShardedCounter, ShardedHistogram};

thread_local! {
    static REQUESTS: HandleCache<ShardedCounter> = const { HandleCache::new() };
    static DURATIONS: HandleCache<ShardedHistogram> = const { HandleCache::new() };
    static INQUIRIES: HandleCache<ShardedCounter> = const { HandleCache::new() };
}

/// Tells registries apart in the threads' handle caches (tests make many).
static NEXT_REGISTRY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub channel: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
    pub channel: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InquiryLabels {
    pub channel: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// The last 15 minutes of the request histograms, for the `/status` page.
    pub history: history::History,
    /// This registry's number in the handle caches.
    id: usize,
    pub requests: Family<RequestLabels, ShardedCounter>,
    pub request_duration: Family<RouteLabels, ShardedHistogram>,
    pub inquiries: Family<InquiryLabels, ShardedCounter>,
    pub index_members: Gauge,
    pub index_overlay_entries: Gauge,
    pub snapshot_load_seconds: Gauge<f64, AtomicU64>,
    pub index_base_bytes: Gauge,
    pub compactions: Family<OutcomeLabels, Counter>,
    pub compactor_checks: Counter,
    pub compaction_seconds: Gauge<f64, AtomicU64>,
    /// The process's peak anonymous memory during the last compaction.
    pub compaction_peak_anonymous_bytes: Gauge,
    /// Unix time of the index's freshness watermark (`data_as_of`).
    pub data_as_of_seconds: Gauge<f64, AtomicU64>,
    /// 1 while `/readyz` would answer 200.
    pub ready: Gauge,
    pub feed: FeedMetrics,
    /// Keys, audit log and connections.
    pub access: AccessMetrics,
}

/// Histogram buckets of request durations: 5, 10 and 15 µs (where a lookup's handler time
/// lies), then 25 µs doubling up to about 0.8 s.
fn duration_histogram() -> ShardedHistogram {
    let fine = [5e-6, 10e-6, 15e-6];
    let bounds: Vec<f64> = fine
        .into_iter()
        .chain(exponential_buckets(25e-6, 2.0, 16))
        .collect();
    ShardedHistogram::new(&bounds)
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("eligd");
        let requests = Family::<RequestLabels, ShardedCounter>::default();
        registry.register(
            "requests",
            "HTTP requests answered, by route pattern, channel and outcome",
            requests.clone(),
        );
        let request_duration = Family::<RouteLabels, ShardedHistogram>::new_with_constructor(
            duration_histogram as fn() -> ShardedHistogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from reading a request to its answer being ready",
            request_duration.clone(),
        );
        let inquiries = Family::<InquiryLabels, ShardedCounter>::default();
        registry.register(
            "inquiries",
            "People looked up (batch entries counted one by one), by channel and outcome",
            inquiries.clone(),
        );
        let index_members = Gauge::default();
        registry.register(
            "index_members",
            "Live members in the index",
            index_members.clone(),
        );
        let index_overlay_entries = Gauge::default();
        registry.register(
            "index_overlay_entries",
            "Changes held in the overlay since the base was built",
            index_overlay_entries.clone(),
        );
        let snapshot_load_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "snapshot_load_seconds",
            "Seconds the last index load took (snapshot or demo population)",
            snapshot_load_seconds.clone(),
        );
        let index_base_bytes = Gauge::default();
        registry.register(
            "index_base_bytes",
            "Bytes of the base (the snapshot body, memory-mapped or held in memory)",
            index_base_bytes.clone(),
        );
        let compactions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "compactions",
            "Compaction attempts by outcome (ok, skipped when another runs or nothing changed, error)",
            compactions.clone(),
        );
        let compactor_checks = Counter::default();
        registry.register(
            "compactor_checks",
            "Times the compactor looked at the index (once a second with --snapshot-dir), whether or not it compacted",
            compactor_checks.clone(),
        );
        let compaction_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "compaction_duration_seconds",
            "Seconds the last successful compaction took",
            compaction_seconds.clone(),
        );
        let compaction_peak_anonymous_bytes = Gauge::default();
        registry.register(
            "compaction_peak_anonymous_bytes",
            "The process's peak anonymous (not file-backed) resident memory during the last \
             compaction, sampled every 50 ms: what a compaction adds to a pod's memory beyond \
             the mapped snapshots",
            compaction_peak_anonymous_bytes.clone(),
        );
        let data_as_of_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "data_as_of_timestamp_seconds",
            "Unix time of the freshness watermark every answer carries as data_as_of: every \
             change written to the stream before it is reflected",
            data_as_of_seconds.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 while /readyz answers 200 (computed at each scrape), else 0",
            ready.clone(),
        );
        let feed = FeedMetrics::register(&mut registry);
        let access = AccessMetrics::register(&mut registry);
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the version label says which build runs",
            build_info,
        );
        Metrics {
            registry,
            history: Default::default(),
            id: NEXT_REGISTRY.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            requests,
            request_duration,
            inquiries,
            index_members,
            index_overlay_entries,
            snapshot_load_seconds,
            index_base_bytes,
            compactions,
            compactor_checks,
            compaction_seconds,
            compaction_peak_anonymous_bytes,
            data_as_of_seconds,
            ready,
            feed,
            access,
        }
    }

    /// Counts an answered request and its handler time, through this thread's handles.
    pub fn count_request(
        &self,
        route: &'static str,
        channel: &'static str,
        outcome: &'static str,
        elapsed: std::time::Duration,
    ) {
        let key = [self.id, label(route), label(channel), label(outcome)];
        REQUESTS.with(|cache| {
            let labels = RequestLabels {
                route,
                channel,
                outcome,
            };
            cache.with(
                key,
                || self.requests.get_or_create(&labels).clone(),
                ShardedCounter::inc,
            )
        });
        let key = [self.id, label(route), label(channel), 0];
        DURATIONS.with(|cache| {
            let labels = RouteLabels { route, channel };
            cache.with(
                key,
                || self.request_duration.get_or_create(&labels).clone(),
                |h| h.observe(elapsed),
            )
        });
    }

    /// Counts one inquiry (`eligd_inquiries_total`), through this thread's handles.
    pub fn count_inquiry(&self, channel: &'static str, outcome: &'static str) {
        let key = [self.id, label(channel), label(outcome), 1];
        INQUIRIES.with(|cache| {
            let labels = InquiryLabels { channel, outcome };
            cache.with(
                key,
                || self.inquiries.get_or_create(&labels).clone(),
                ShardedCounter::inc,
            )
        });
    }

    /// The series of one client key (`eligd_client_inquiries_total{client}`).
    pub fn client_counters(&self, client: &str) -> ClientCounters {
        ClientCounters::new(std::sync::Arc::from(client), &self.access.client_inquiries)
    }

    /// The registry in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The content type of each format `/metrics` answers in.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a scraper's `Accept` asks for OpenMetrics (Prometheus does); anyone else (curl,
/// `promtool check metrics`) gets the classic text format.
pub fn wants_openmetrics(accept: Option<&[u8]>) -> bool {
    accept.is_some_and(|a| {
        std::str::from_utf8(a).is_ok_and(|a| a.contains("application/openmetrics-text"))
    })
}

/// OpenMetrics text as the classic Prometheus text format (0.0.4): a counter family's HELP
/// and TYPE name its `_total` series, as classic parsers expect, and the OpenMetrics-only
/// lines (`# UNIT`, `# EOF`) are left out. Samples are the same.
pub fn to_classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 256);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta.and_then(|(p, rest)| rest.split_once(' ').map(|(n, t)| (p, n, t))) {
            Some((prefix, name, text)) if counters.contains(name) => {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(text);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_by_their_total_series() {
        let m = Metrics::new();
        m.feed.applied.inc();
        let classic = to_classic(&m.encode());
        assert!(classic.contains("# TYPE eligd_feed_events_applied_total counter\n"));
        assert!(classic.contains("# HELP eligd_feed_events_applied_total "));
        assert!(classic.contains("\neligd_feed_events_applied_total 1\n"));
        assert!(
            classic.contains("# TYPE eligd_index_members gauge\n"),
            "gauges unchanged"
        );
        assert!(!classic.contains("# EOF"));
        assert!(wants_openmetrics(Some(
            b"application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )));
        assert!(!wants_openmetrics(Some(b"*/*")));
        assert!(!wants_openmetrics(None));
    }

    #[test]
    fn names_follow_the_contract() {
        let m = Metrics::new();
        m.requests
            .get_or_create(&RequestLabels {
                route: "/healthz",
                channel: "http",
                outcome: "ok",
            })
            .inc();
        m.request_duration
            .get_or_create(&RouteLabels {
                route: "/healthz",
                channel: "http",
            })
            .observe(std::time::Duration::from_micros(30));
        let text = m.encode();
        for name in [
            "eligd_requests_total{route=\"/healthz\",channel=\"http\",outcome=\"ok\"} 1",
            "eligd_request_duration_seconds_bucket{le=\"0.000005\",route=\"/healthz\",channel=\"http\"} 0",
            "eligd_request_duration_seconds_bucket{le=\"0.000025\",route=\"/healthz\",channel=\"http\"} 0",
            "eligd_request_duration_seconds_bucket{le=\"0.00005\",route=\"/healthz\",channel=\"http\"} 1",
            "eligd_index_members 0",
            "eligd_snapshot_load_seconds 0",
            "eligd_build_info{version=",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
