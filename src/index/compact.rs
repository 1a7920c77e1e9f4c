//! Compaction: the base and the overlay are written to a new snapshot in the background, the
//! new base is swapped in atomically (lookups in flight finish on the old one), and the
//! overlay is trimmed to what arrived after the cut. Old snapshots are pruned.
//!
//! The cut freezes the active overlay under the cut lock, so every change is either in the
//! frozen overlay (and so in the new snapshot) or in the new active overlay; the snapshot
//! records the feed position noted before the cut, which can only be older than its content
//! (a replay from there re-applies a few changes, which versions make harmless).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::overlay::{Overlay, Slot};
use super::snapshot::{self, SnapshotError};
use super::{BodyBuilder, Mode, Origin};
use super::{FeedPosition, Index, Layers, Row};

/// What one compaction did.
#[derive(Debug, Clone)]
pub struct Compaction {
    pub path: PathBuf,
    pub members: u64,
    pub overlay_entries: usize,
    pub seconds: f64,
    pub pruned: Vec<PathBuf>,
}

/// The file name of a snapshot: build time first, so names sort oldest to newest.
pub fn snapshot_file_name(built_at_ms: i64, position: Option<FeedPosition>) -> String {
    match position {
        Some(p) => format!("eligd-{built_at_ms:013}-{}-{}.snap", p.ms, p.seq),
        None => format!("eligd-{built_at_ms:013}-none.snap"),
    }
}

impl Index {
    /// Freezes the active overlay and returns it, or the overlay a failed compaction left
    /// frozen. `None` when there is nothing to write and `force` is false.
    pub(super) fn cut(&self, force: bool) -> Option<(Arc<Overlay>, Option<FeedPosition>)> {
        let _exclusive = self.cut_lock.write().unwrap_or_else(|p| p.into_inner());
        let layers = self.layers.load_full();
        if let Some(frozen) = &layers.frozen {
            // A failed compaction left it: retry with the position noted when it was frozen.
            return Some((Arc::clone(frozen), layers.frozen_position));
        }
        let active = self.active.load_full();
        if active.is_empty() && !force {
            return None;
        }
        let position = self.position();
        self.layers.store(Arc::new(Layers {
            base: Arc::clone(&layers.base),
            frozen: Some(Arc::clone(&active)),
            frozen_position: position,
        }));
        self.active.store(Arc::new(Overlay::default()));
        Some((active, position))
    }

    /// Writes base + overlay to a new snapshot in `dir`, swaps it in, and keeps the newest
    /// `keep` snapshots there. Returns `None` when nothing changed since the last one (unless
    /// `force`) or another compaction is running.
    pub fn compact_into(
        &self,
        dir: &Path,
        keep: usize,
        force: bool,
    ) -> Result<Option<Compaction>, SnapshotError> {
        self.compact_into_guarded(dir, keep, force, &|| true)
    }

    /// [`Index::compact_into`], pruning only when `may_prune` still says so once the new
    /// snapshot is written: the service stops pruning while a feed gap waits for a snapshot
    /// an operator supplies, which an old-snapshot prune could otherwise delete.
    pub fn compact_into_guarded(
        &self,
        dir: &Path,
        keep: usize,
        force: bool,
        may_prune: &dyn Fn() -> bool,
    ) -> Result<Option<Compaction>, SnapshotError> {
        let Ok(_only_one) = self.compacting.try_lock() else {
            return Ok(None);
        };
        let started = Instant::now();
        let Some((frozen, position)) = self.cut(force) else {
            return Ok(None);
        };
        let base = Arc::clone(&self.layers.load().base);

        let mut builder =
            BodyBuilder::with_capacity(base.len() + base.tombstones() as usize + frozen.len());
        for row in base.rows() {
            match row {
                Row::Live(view) => builder.push_view(&view, Origin(0)),
                Row::Tombstone(id, version) => builder.push_tombstone(id, version, Origin(0)),
            }
        }
        for entry in frozen.members.iter() {
            match entry.value() {
                Slot::Live(m) => builder.push_member(m, Origin(1)),
                Slot::Deleted { version } => {
                    builder.push_tombstone(*entry.key(), *version, Origin(1))
                }
            }
        }
        let (body, _) = builder.finish(Mode::Compaction);
        drop(base);

        std::fs::create_dir_all(dir).map_err(|reason| SnapshotError::Io {
            path: dir.to_path_buf(),
            reason,
        })?;
        let built_at_ms = chrono::Utc::now().timestamp_millis();
        let path = dir.join(snapshot_file_name(built_at_ms, position));
        let header = snapshot::write(&path, &body, position)?;
        drop(body);
        let (_, new_base) = snapshot::load(&path)?;
        self.layers.store(Arc::new(Layers {
            base: Arc::new(new_base),
            frozen: None,
            frozen_position: None,
        }));
        let pruned = if may_prune() {
            prune(dir, keep)
        } else {
            Vec::new()
        };
        Ok(Some(Compaction {
            path,
            members: header.members,
            overlay_entries: frozen.len(),
            seconds: started.elapsed().as_secs_f64(),
            pruned,
        }))
    }
}

/// Snapshot files in `dir`, newest first (by name, which starts with the build time).
pub fn snapshots_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "snap")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("eligd-"))
        })
        .collect();
    files.sort();
    files.reverse();
    Ok(files)
}

/// Deletes temporary files of snapshot writes that never finished (a crash or a shutdown in
/// the middle of one). Call only when no write into `dir` can be in progress: at start-up, or
/// at the end of a compaction.
pub fn remove_unfinished_writes(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with(".eligd-snapshot-")
            && name.ends_with(".tmp")
            && std::fs::remove_file(&path).is_ok()
        {
            removed.push(path);
        }
    }
    removed
}

/// Deletes all but the newest `keep` snapshots, and unfinished writes; returns what it deleted.
pub fn prune(dir: &Path, keep: usize) -> Vec<PathBuf> {
    let mut pruned = remove_unfinished_writes(dir);
    let Ok(files) = snapshots_in(dir) else {
        return pruned;
    };
    for old in files.into_iter().skip(keep.max(1)) {
        match std::fs::remove_file(&old) {
            Ok(()) => pruned.push(old),
            Err(e) => {
                tracing::warn!(path = %old.display(), error = %e, "could not prune an old snapshot")
            }
        }
    }
    pruned
}
