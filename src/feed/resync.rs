//! Repairing a gap: the stream can no longer take the index from its position to the
//! present, so the index is replaced by a snapshot from `--snapshot-dir` whose position the
//! stream does still cover, and the feed replays from there.
//!
//! A candidate must be newer than the last change we applied (its build time after that
//! entry's time), so an old snapshot — the one we started from, say — never replaces a
//! fresher index. Until one is found the service stays not-ready with the reason in
//! `/readyz`; an operator supplies one (`eligd snapshot build`) and it is picked up.

use std::sync::Arc;
use std::time::Instant;

use super::consumer::FeedConfig;
use super::continuity;
use super::status::FeedStatus;
use super::stream::{StreamError, StreamReader};
use crate::app::AppState;
use crate::index::{compact, snapshot, Index};

/// Looks for a covering snapshot and installs it. `Ok(false)` when none is there yet.
pub async fn attempt(
    state: &Arc<AppState>,
    status: &FeedStatus,
    config: &FeedConfig,
    reader: &mut StreamReader,
) -> Result<bool, StreamError> {
    let Some(dir) = &config.snapshot_dir else {
        return Ok(false);
    };
    let newer_than_ms = state
        .index()
        .and_then(|i| i.position())
        .map_or(i64::MIN, |p| p.unix_ms() as i64);
    let candidates = match compact::snapshots_in(dir) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "resync: cannot list --snapshot-dir");
            return Ok(false);
        }
    };
    for path in candidates {
        let Ok(header) = snapshot::read_header(&path) else {
            continue;
        };
        if header.built_at_ms <= newer_than_ms {
            continue;
        }
        let probe = reader.probe(header.position).await?;
        if continuity::check(header.position, probe.info.as_ref(), probe.position_present).is_err()
        {
            continue;
        }
        let started = Instant::now();
        let load_path = path.clone();
        let loaded = tokio::task::spawn_blocking(move || snapshot::load(&load_path)).await;
        match loaded {
            Ok(Ok((header, base))) => {
                let index = Arc::new(Index::new(base));
                state.install_index(index, started.elapsed().as_secs_f64());
                status.resynced(header.position);
                state.metrics.feed_resyncs.inc();
                tracing::info!(path = %path.display(), members = header.members,
                    position = ?header.position.map(|p| p.to_string()),
                    "resync: loaded a snapshot that covers the gap; replaying from its position");
                return Ok(true);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "resync: snapshot refused; trying the next newest")
            }
            Err(e) => tracing::error!(error = %e, "resync: loading stopped unexpectedly"),
        }
    }
    Ok(false)
}
