//! The series of who may ask and what is kept about it: inquiries per client key (the
//! enumeration signal), keys reloads, the audit log, and the listener's connections.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

use super::hot::ShardedCounter;

/// The `client` label (metrics) of inquiries that presented no valid key; no key may use it
/// (`auth::keyfile` refuses it).
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// A client name (from the keys file) as a label value, shared rather than copied.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ClientName(pub Arc<str>);

impl EncodeLabelValue for ClientName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientInquiryLabels {
    pub client: ClientName,
    pub outcome: &'static str,
}

pub struct AccessMetrics {
    pub client_inquiries: Family<ClientInquiryLabels, ShardedCounter>,
    /// The series of requests without a valid key (client `unauthenticated`).
    pub unauthenticated: ClientCounters,
    pub keys_loaded: Gauge,
    pub keys_reload_failures: Counter,
    pub audit_records: Counter,
    pub audit_write_errors: Counter,
    pub audit_queue_depth: Gauge,
    pub audit_refusals: Counter,
    pub audit_bytes: Gauge,
    pub audit_volume_available_bytes: Gauge,
    pub audit_volume_size_bytes: Gauge,
    pub audit_files_removed: Counter,
    pub connections_open: Gauge,
    pub connections_evicted: Counter,
    pub connections_refused: Counter,
    pub connections_timed_out: Counter,
    pub connections_closed_hard: Counter,
    pub accept_errors: Counter,
    pub tls_reload_failures: Counter,
}

impl AccessMetrics {
    pub fn register(registry: &mut Registry) -> AccessMetrics {
        let client_inquiries = Family::default();
        let m = AccessMetrics {
            unauthenticated: ClientCounters::new(Arc::from(UNAUTHENTICATED), &client_inquiries),
            client_inquiries,
            keys_loaded: Gauge::default(),
            keys_reload_failures: Counter::default(),
            audit_records: Counter::default(),
            audit_write_errors: Counter::default(),
            audit_queue_depth: Gauge::default(),
            audit_refusals: Counter::default(),
            audit_bytes: Gauge::default(),
            audit_volume_available_bytes: Gauge::default(),
            audit_volume_size_bytes: Gauge::default(),
            audit_files_removed: Counter::default(),
            connections_open: Gauge::default(),
            connections_evicted: Counter::default(),
            connections_refused: Counter::default(),
            connections_timed_out: Counter::default(),
            connections_closed_hard: Counter::default(),
            accept_errors: Counter::default(),
            tls_reload_failures: Counter::default(),
        };
        registry.register(
            "client_inquiries",
            "Inquiries by client key and outcome (client unauthenticated: no valid key); a key's \
             share of member_not_found is the enumeration signal",
            m.client_inquiries.clone(),
        );
        registry.register(
            "keys_loaded",
            "Client keys in force (from --api-keys)",
            m.keys_loaded.clone(),
        );
        registry.register(
            "keys_reload_failures",
            "Reloads of --api-keys (SIGHUP or a change of the file) that failed; the keys in force stayed",
            m.keys_reload_failures.clone(),
        );
        registry.register(
            "audit_records",
            "Audit records written to the audit log",
            m.audit_records.clone(),
        );
        registry.register(
            "audit_write_errors",
            "Failed writes of the audit log (each one refuses inquiries until a write succeeds)",
            m.audit_write_errors.clone(),
        );
        registry.register(
            "audit_queue_depth",
            "Audit records not yet written: queued, and held by the writer",
            m.audit_queue_depth.clone(),
        );
        registry.register(
            "audit_refusals",
            "Refusals before the index (401, 403, 405, 413, 429, malformed, 503) written to the \
             audit log as counts in aggregated lines",
            m.audit_refusals.clone(),
        );
        registry.register(
            "audit_bytes",
            "Bytes held by the audit log and its rotated files (bounded by --audit-keep-bytes)",
            m.audit_bytes.clone(),
        );
        registry.register(
            "audit_volume_available_bytes",
            "Bytes available on the audit log's volume",
            m.audit_volume_available_bytes.clone(),
        );
        registry.register(
            "audit_volume_size_bytes",
            "Size of the audit log's volume in bytes",
            m.audit_volume_size_bytes.clone(),
        );
        registry.register(
            "audit_files_removed",
            "Rotated audit files removed, oldest first, to stay within --audit-keep-bytes",
            m.audit_files_removed.clone(),
        );
        registry.register(
            "connections_open",
            "HTTP connections open now",
            m.connections_open.clone(),
        );
        registry.register(
            "connections_evicted",
            "Connections closed to make room for a new one at --max-connections (idle first, \
             then handshaking or reading a head, then the longest busy)",
            m.connections_evicted.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused at accept because every descriptor of the budget was held by \
             connections already being dropped",
            m.connections_refused.clone(),
        );
        registry.register(
            "connections_timed_out",
            "Connections closed by the header-read (or TLS handshake), keep-alive idle or write \
             timeout",
            m.connections_timed_out.clone(),
        );
        registry.register(
            "connections_closed_hard",
            "Connections dropped without a clean close: the grace after eviction or the idle \
             timeout over, a head, handshake or write timed out, descriptors short",
            m.connections_closed_hard.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts (out of descriptors, or a connection gone before it was taken); \
             logged once a second at most",
            m.accept_errors.clone(),
        );
        registry.register(
            "tls_reload_failures",
            "Reloads of --tls-cert/--tls-key (SIGHUP) that failed; the certificate in force stayed",
            m.tls_reload_failures.clone(),
        );
        m
    }
}

/// One client's series of `eligd_client_inquiries_total`, kept with its key so that counting
/// an inquiry is a short scan and an atomic add, not a lookup in the family's map. Slots are
/// filled on first use of each outcome (no zero series for outcomes never seen).
#[derive(Clone)]
pub struct ClientCounters {
    client: ClientName,
    family: Family<ClientInquiryLabels, ShardedCounter>,
    slots: Arc<[std::sync::OnceLock<(&'static str, ShardedCounter)>; 32]>,
}

impl ClientCounters {
    pub fn new(
        client: Arc<str>,
        family: &Family<ClientInquiryLabels, ShardedCounter>,
    ) -> ClientCounters {
        ClientCounters {
            client: ClientName(client),
            family: family.clone(),
            slots: Arc::new(std::array::from_fn(|_| std::sync::OnceLock::new())),
        }
    }

    pub fn inc(&self, outcome: &'static str) {
        for slot in self.slots.iter() {
            let (label, counter) = slot.get_or_init(|| {
                let labels = ClientInquiryLabels {
                    client: self.client.clone(),
                    outcome,
                };
                (outcome, self.family.get_or_create(&labels).clone())
            });
            if *label == outcome {
                counter.inc();
                return;
            }
        }
        // More outcomes than slots (never, with the error table as it is).
        self.family
            .get_or_create(&ClientInquiryLabels {
                client: self.client.clone(),
                outcome,
            })
            .inc();
    }
}
