//! The state every request handler shares: the index (absent until loaded, so the server
//! can answer `/healthz` and a clear 503 while a snapshot loads), tracking codes, metrics,
//! and, when configured, the client keys and the audit log.

use std::sync::{Arc, OnceLock};

use crate::audit::AuditLog;
use crate::auth::KeyStore;
use crate::feed::status::FeedStatus;
use crate::index::Index;
use crate::index_slot::IndexSlot;
use crate::limits::CallerLimits;
use crate::metrics::Metrics;
use crate::tracking::{NodeIdError, TrackingCodes};

/// How many addresses' allowances an IPv6 /48 gets on the public endpoint.
pub const SITE_FACTOR: u32 = 10;

/// The default of `--unauthenticated-requests-per-minute`.
pub const DEFAULT_UNAUTHENTICATED_PER_MINUTE: u32 = 60;

/// How a request's client address is found and keyed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addresses {
    /// `--trusted-proxies`: peers allowed to name the client in `X-Forwarded-For`.
    pub trusted: crate::client_address::TrustedProxies,
    /// `--ipv6-prefix`: IPv6 clients are limited and audited by this prefix.
    pub ipv6_prefix: u8,
}

impl Default for Addresses {
    fn default() -> Self {
        Addresses {
            trusted: Default::default(),
            ipv6_prefix: 64,
        }
    }
}

impl Addresses {
    /// The address a request is limited and audited under.
    pub fn key(&self, peer: std::net::IpAddr, headers: &hyper::HeaderMap) -> std::net::IpAddr {
        let client = self.trusted.client_from_headers(peer, headers);
        crate::client_address::limit_key(client, self.ipv6_prefix)
    }
}

pub struct AppState {
    index: Arc<IndexSlot>,
    pub tracking: TrackingCodes,
    pub metrics: Metrics,
    /// Per-phone-number limits of USSD and SMS inquiries (docs/openapi.yaml).
    pub phone_limits: CallerLimits,
    /// Per-client-address limits of the public endpoint (`--public-requests-per-minute`).
    pub address_limits: CallerLimits,
    /// The public endpoint's allowance per IPv6 /48, ten times the per-address one.
    pub site_limits: CallerLimits,
    /// The page for people and its endpoint, with the proxies trusted to name a client
    /// (`None`: `--no-public-page`).
    pub public: Option<crate::client_address::TrustedProxies>,
    /// Who names a client address (`--trusted-proxies`, `--ipv6-prefix`), for every
    /// per-address limit and the audit log's refusal lines.
    pub addresses: Addresses,
    /// Per-client-address limits of requests without a valid key when keys are configured
    /// (`--unauthenticated-requests-per-minute`): a refusal costs the refused.
    pub unauthenticated_limits: CallerLimits,
    /// The public endpoint's ceiling for all addresses together
    /// (`--public-requests-per-second`).
    pub public_ceiling: Option<governor::DefaultDirectRateLimiter>,
    feed: OnceLock<Arc<FeedStatus>>,
    /// When the process started (Unix ms): the CapabilityStatement's date.
    started_ms: u64,
    keys: Option<KeyStore>,
    audit: Option<AuditLog>,
}

impl AppState {
    pub fn new(node_id: u64) -> Result<AppState, NodeIdError> {
        let metrics = Metrics::new();
        let index = IndexSlot::new(
            metrics.index_members.clone(),
            metrics.snapshot_load_seconds.clone(),
        );
        Ok(AppState {
            index: Arc::new(index),
            tracking: TrackingCodes::new(node_id)?,
            metrics,
            phone_limits: CallerLimits::default(),
            address_limits: CallerLimits::default(),
            site_limits: CallerLimits::per_minute(
                SITE_FACTOR * crate::limits::caller::DEFAULT_PER_MINUTE,
            ),
            public: Some(Default::default()),
            addresses: Addresses::default(),
            unauthenticated_limits: CallerLimits::per_minute(DEFAULT_UNAUTHENTICATED_PER_MINUTE),
            public_ceiling: None,
            feed: OnceLock::new(),
            started_ms: crate::dates::unix_ms(),
            keys: None,
            audit: None,
        })
    }

    /// Requires a client key on every inquiry route (`--api-keys`).
    pub fn with_keys(mut self, keys: KeyStore) -> AppState {
        self.metrics
            .access
            .keys_loaded
            .set(keys.keys().len() as i64);
        self.keys = Some(keys);
        self
    }

    /// Audits every inquiry (`--audit-log`).
    pub fn with_audit(mut self, audit: AuditLog) -> AppState {
        self.audit = Some(audit);
        self
    }

    /// When the process started (Unix ms).
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    pub fn keys(&self) -> Option<&KeyStore> {
        self.keys.as_ref()
    }

    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// Reads `--api-keys` again (SIGHUP, or the file changed: `auth::watch`). A file that
    /// fails to parse, or whose mode is too open, keeps the keys in force, is logged and
    /// counted.
    pub fn reload_keys(&self) {
        let Some(store) = &self.keys else { return };
        match store.reload(&self.metrics) {
            Ok(n) => {
                self.metrics.access.keys_loaded.set(n as i64);
                tracing::info!(keys = n, path = %store.path().display(), "client keys reloaded");
            }
            Err(e) => {
                self.metrics.access.keys_reload_failures.inc();
                tracing::error!(error = %e, "client keys NOT reloaded; the keys in force stay");
            }
        }
    }

    /// Sets the USSD/SMS allowance per phone number per minute (`--phone-requests-per-minute`).
    pub fn with_phone_requests_per_minute(mut self, per_minute: u32) -> AppState {
        self.phone_limits = CallerLimits::per_minute(per_minute);
        self
    }

    /// The page for people and its endpoint (`None`: `--no-public-page`), and the
    /// endpoint's allowance per client address per minute.
    pub fn with_public(
        mut self,
        trusted_proxies: Option<crate::client_address::TrustedProxies>,
        per_minute: u32,
    ) -> AppState {
        self.public = trusted_proxies;
        self.address_limits = CallerLimits::per_minute(per_minute);
        self.site_limits = CallerLimits::per_minute(per_minute.saturating_mul(SITE_FACTOR));
        self
    }

    /// How client addresses are found and limited, and the limits of requests without a
    /// valid key and of the public endpoint as a whole (`None`: no ceiling).
    pub fn with_address_limits(
        mut self,
        addresses: Addresses,
        unauthenticated_per_minute: u32,
        public_per_second: Option<u32>,
    ) -> AppState {
        self.addresses = addresses;
        self.unauthenticated_limits = CallerLimits::per_minute(unauthenticated_per_minute);
        self.public_ceiling = public_per_second
            .and_then(std::num::NonZeroU32::new)
            .map(|rate| {
                let burst = rate.saturating_mul(std::num::NonZeroU32::new(2).unwrap_or(rate));
                governor::RateLimiter::direct(governor::Quota::per_second(rate).allow_burst(burst))
            });
        self
    }

    /// The index now serving, if one is loaded. Lookups in flight keep the index they
    /// started with when another is installed.
    pub fn index(&self) -> Option<Arc<Index>> {
        self.index.get()
    }

    /// The index now serving, for the length of one request (see [`IndexSlot::current`]).
    pub fn index_for_request(&self) -> arc_swap::Guard<Option<Arc<Index>>> {
        self.index.current()
    }

    /// Makes `index` the one that answers, and records how long loading it took.
    pub fn install_index(&self, index: Arc<Index>, load_seconds: f64) {
        self.index.install(index, load_seconds);
    }

    /// The slot itself, for the feed (which installs a resync's index).
    pub fn index_slot(&self) -> Arc<IndexSlot> {
        Arc::clone(&self.index)
    }

    /// With a change feed configured, its state decides readiness too.
    pub fn set_feed(&self, status: Arc<FeedStatus>) {
        let _ = self.feed.set(status);
    }

    pub fn feed(&self) -> Option<&Arc<FeedStatus>> {
        self.feed.get()
    }

    /// Whether the index may be written to a snapshot: not while a feed gap is unrepaired
    /// (a resync is coming, and pruning must not remove the snapshot that repairs it).
    pub fn snapshots_allowed(&self) -> bool {
        self.feed()
            .is_none_or(|f| !matches!(f.phase(), crate::feed::status::Phase::Gap { .. }))
    }

    /// `Ok` when the service is ready to answer with current data, else why not.
    pub fn readiness(&self) -> Result<Arc<Index>, String> {
        let index = self
            .index()
            .ok_or_else(|| "the index is still loading".to_string())?;
        if let Some(feed) = self.feed() {
            feed.readiness(std::time::Instant::now(), crate::dates::unix_ms())?;
        }
        if let Some(audit) = self.audit() {
            audit.readiness()?;
        }
        Ok(index)
    }
}
