//! Repairing a gap: the stream can no longer take the index from its position to the
//! present, so the index is replaced by a snapshot from `--snapshot-dir` whose position the
//! stream does still cover, and the feed replays from there.
//!
//! A candidate must be newer than the last change we applied (its build time after that
//! entry's time), so an old snapshot — the one we started from, say — never replaces a
//! fresher index, and it must belong to the stream as it is now (its epoch, when it recorded
//! one). Until one is found the service answers from the index it holds (ready when the gap
//! is shared, not ready with the reason in `/readyz` when it is its own, see `status.rs`); an
//! operator supplies one (`eligd snapshot build --out <snapshot dir>`) and it is picked up.
//!
//! The delete markers the index held carry over into the new one (version guarded) when the
//! snapshot belongs to the same stream epoch: a snapshot built from JSON Lines has none, and
//! without them a late, older upsert still in the stream would bring a deleted member back.
//! Across epochs they are dropped (a new epoch may follow a records database that lost
//! transactions; a table snapshot carries its own markers).

use std::sync::Arc;
use std::time::Instant;

use super::config::{Feed, FeedConfig};
use super::continuity;
use super::stream::{StreamError, StreamReader};
use crate::index::{snapshot, snapshot_dir, Index};

/// Looks for a covering snapshot and installs it. `Ok(false)` when none is there yet.
pub async fn attempt(
    feed: &Feed,
    config: &FeedConfig,
    reader: &mut StreamReader,
) -> Result<bool, StreamError> {
    feed.metrics.resync_attempts.inc();
    let Some(dir) = &config.snapshot_dir else {
        return Ok(false);
    };
    let current = feed.index.get();
    let newer_than_ms = current
        .as_ref()
        .and_then(|i| i.position())
        .map_or(i64::MIN, |p| p.unix_ms() as i64);
    let listing = match snapshot_dir::list(dir) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "resync: cannot list --snapshot-dir");
            return Ok(false);
        }
    };
    for listed in listing.snapshots {
        let (path, header) = (listed.path, listed.header);
        if header.built_at_ms <= newer_than_ms {
            continue;
        }
        let probe = reader.probe(header.position).await?;
        let covers = continuity::check_epoch(header.epoch, probe.epoch).and_then(|()| {
            continuity::check(header.position, probe.info.as_ref(), probe.position_present)
        });
        if covers.is_err() {
            continue;
        }
        let started = Instant::now();
        let load_path = path.clone();
        let previous = current.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let (header, base) = snapshot::load(&load_path)?;
            let index = Index::from_snapshot(&header, base);
            let mut carried = 0;
            // Markers of another epoch's history are not carried: a new epoch means the old
            // history may hold changes the records database lost (a failover), and a marker
            // from it would hide a person the table holds at a lower version.
            let same_history = |old: &Index| match (old.epoch(), header.epoch) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            let previous = previous.filter(|old| same_history(old));
            for marker in previous.map(|old| old.markers()).unwrap_or_default() {
                if index.apply(marker) == crate::index::Applied::Applied {
                    carried += 1;
                }
            }
            Ok::<_, snapshot::SnapshotError>((header, index, carried))
        })
        .await;
        match loaded {
            Ok(Ok((header, index, carried))) => {
                if let Some(epoch) = probe.epoch {
                    index.adopt_epoch(epoch);
                }
                feed.index
                    .install(Arc::new(index), started.elapsed().as_secs_f64());
                feed.status.resynced(header.position);
                feed.metrics.resyncs.inc();
                feed.metrics.gap_degraded.set(0);
                tracing::info!(path = %path.display(), members = header.members, carried_delete_markers = carried,
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
