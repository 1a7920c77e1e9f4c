//! The state every request handler shares: the index (absent until loaded, so the server
//! can answer `/healthz` and a clear 503 while a snapshot loads), tracking codes, metrics.

use arc_swap::ArcSwapOption;
use std::sync::Arc;

use crate::index::Index;
use crate::metrics::Metrics;
use crate::tracking::{NodeIdError, TrackingCodes};

pub struct AppState {
    index: ArcSwapOption<Index>,
    pub tracking: TrackingCodes,
    pub metrics: Metrics,
}

impl AppState {
    pub fn new(node_id: u64) -> Result<AppState, NodeIdError> {
        Ok(AppState {
            index: ArcSwapOption::empty(),
            tracking: TrackingCodes::new(node_id)?,
            metrics: Metrics::new(),
        })
    }

    /// The index now serving, if one is loaded. Lookups in flight keep the index they
    /// started with when another is installed.
    pub fn index(&self) -> Option<Arc<Index>> {
        self.index.load_full()
    }

    /// Makes `index` the one that answers, and records how long loading it took.
    pub fn install_index(&self, index: Arc<Index>, load_seconds: f64) {
        self.metrics.index_members.set(index.len() as i64);
        self.metrics.snapshot_load_seconds.set(load_seconds);
        self.index.store(Some(index));
    }
}
