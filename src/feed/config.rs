//! What the feed is given: how to follow the stream, and the few things of the service it
//! touches (the index slot, its own series, its status), so it never holds the whole
//! service state.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::metrics::FeedMetrics;
use super::status::FeedStatus;
use crate::index_slot::IndexSlot;

/// How the feed is followed (`serve --redis-url …`).
#[derive(Clone, Debug)]
pub struct FeedConfig {
    pub stream: String,
    /// How long one `XREAD BLOCK` waits for new entries.
    pub block: Duration,
    /// Entries per read; a full batch is followed at once by the next read.
    pub batch: usize,
    /// Where a resync looks for a snapshot that covers a gap.
    pub snapshot_dir: Option<PathBuf>,
}

/// The parts of the service the feed reads and writes.
#[derive(Clone)]
pub struct Feed {
    /// The serving index: changes are applied to it, a resync replaces it.
    pub index: Arc<IndexSlot>,
    pub metrics: FeedMetrics,
    /// What readiness and `/metrics` say about the feed.
    pub status: Arc<FeedStatus>,
}
