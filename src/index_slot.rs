//! Where the serving index lives: absent until one is loaded, replaced whole by a resync.
//! Request handlers read it, the loader and the feed's resync install into it; it is its own
//! type so that the feed can hold it without holding the whole service state.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::gauge::Gauge;

use crate::index::Index;

pub struct IndexSlot {
    current: ArcSwapOption<Index>,
    members: Gauge,
    load_seconds: Gauge<f64, AtomicU64>,
}

impl IndexSlot {
    /// An empty slot; installing sets the two gauges (`eligd_index_members`,
    /// `eligd_snapshot_load_seconds`).
    pub fn new(members: Gauge, load_seconds: Gauge<f64, AtomicU64>) -> IndexSlot {
        IndexSlot {
            current: ArcSwapOption::empty(),
            members,
            load_seconds,
        }
    }

    /// The index now serving, if one is loaded. Lookups in flight keep the index they
    /// started with when another is installed.
    pub fn get(&self) -> Option<Arc<Index>> {
        self.current.load_full()
    }

    /// The index now serving, borrowed for one request: no reference is taken (arc-swap's
    /// guard marks it in a slot of the calling thread), so requests on different cores do not
    /// write the index's reference count.
    pub fn current(&self) -> arc_swap::Guard<Option<Arc<Index>>> {
        self.current.load()
    }

    /// Makes `index` the one that answers, and records how long loading it took.
    pub fn install(&self, index: Arc<Index>, load_seconds: f64) {
        self.members.set(index.len() as i64);
        self.load_seconds.set(load_seconds);
        self.current.store(Some(index));
    }
}
