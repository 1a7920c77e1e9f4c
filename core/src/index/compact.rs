//! Compaction: the base and the overlay are written to a new snapshot in the background, the
//! new base is swapped in atomically (lookups in flight finish on the old one), and the
//! overlay is trimmed to what arrived after the cut. Old snapshots are pruned.
//!
//! The cut freezes the active overlay under the cut lock, so every change is either in the
//! frozen overlay (and so in the new snapshot) or in the new active overlay; the snapshot
//! records the feed position noted before the cut, which can only be older than its content
//! (a replay from there re-applies a few changes, which versions make harmless).
//!
//! A compaction that fails (a full disk, a file that fails verification) leaves nothing
//! behind: the snapshot writer removes its temporary file, and the frozen overlay is put back
//! into the active one, so the next attempt cuts everything applied so far instead of
//! retrying the same frozen set forever.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::body::{home, unpack, ArchivedBody, PackedMember};
use super::dictionary::{tombstone, Dictionaries};
use super::layout::{hash_order, Layout};
use super::overlay::{Overlay, Slot};
use super::snapshot::{self, SnapshotError};
use super::{snapshot_dir, Cursor};
use super::{Index, Layers};

/// What one compaction did.
#[derive(Debug, Clone)]
pub struct Compaction {
    pub path: PathBuf,
    pub members: u64,
    pub overlay_entries: usize,
    pub seconds: f64,
    pub pruned: Vec<PathBuf>,
}

impl Index {
    /// Freezes the active overlay and returns it with the cursor noted at the cut. `None`
    /// when there is nothing to write and `force` is false.
    pub(super) fn cut(&self, force: bool) -> Option<(Arc<Overlay>, Cursor)> {
        let _exclusive = self.cut_lock.write().unwrap_or_else(|p| p.into_inner());
        let layers = self.layers.load_full();
        let active = self.active.load_full();
        // Only one compaction runs (`compacting`), and it puts back or replaces what it froze.
        if layers.frozen.is_some() || (active.is_empty() && !force) {
            return None;
        }
        let cursor = *self.cursor();
        self.layers.store(Arc::new(Layers {
            base: Arc::clone(&layers.base),
            frozen: Some(Arc::clone(&active)),
        }));
        self.active.store(Arc::new(Overlay::default()));
        Some((active, cursor))
    }

    /// Undoes a cut whose snapshot was not written: the frozen changes go back into the
    /// active overlay (where a newer change of the same ID, applied since, stays), and only
    /// then does the frozen layer go, so a lookup never sees neither.
    fn put_back(&self, frozen: &Overlay) {
        let _exclusive = self.cut_lock.write().unwrap_or_else(|p| p.into_inner());
        let active = self.active.load_full();
        for entry in frozen.members.iter() {
            if let dashmap::mapref::entry::Entry::Vacant(vacant) =
                active.members.entry(*entry.key())
            {
                vacant.insert(entry.value().clone());
                active
                    .len
                    .fetch_add(1, std::sync::atomic::Ordering::Release);
            }
        }
        for claims in frozen.booklets.iter() {
            for id in claims.value() {
                active.claim_booklet(*claims.key(), *id);
            }
        }
        let layers = self.layers.load_full();
        self.layers.store(Arc::new(Layers {
            base: Arc::clone(&layers.base),
            frozen: None,
        }));
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
        if self.synthetic {
            return Err(SnapshotError::Synthetic);
        }
        let Ok(_only_one) = self.compacting.try_lock() else {
            return Ok(None);
        };
        let started = Instant::now();
        let Some((frozen, cursor)) = self.cut(force) else {
            return Ok(None);
        };
        self.write_cut(dir, keep, frozen, cursor, may_prune, started)
            .map(Some)
    }

    /// The rest of a compaction once the cut is made: write, swap in, prune; or put the
    /// frozen changes back when the snapshot could not be written.
    pub(super) fn write_cut(
        &self,
        dir: &Path,
        keep: usize,
        frozen: Arc<Overlay>,
        cursor: Cursor,
        may_prune: &dyn Fn() -> bool,
        started: Instant,
    ) -> Result<Compaction, SnapshotError> {
        let (path, header, new_base) = match self.write_with_frozen(dir, &frozen, cursor) {
            Ok(written) => written,
            Err(e) => {
                self.put_back(&frozen);
                return Err(e);
            }
        };
        let old = Arc::clone(&self.layers.load().base);
        self.layers.store(Arc::new(Layers {
            base: Arc::new(new_base),
            frozen: None,
        }));
        release_here(old);
        let pruned = if may_prune() {
            snapshot_dir::prune(dir, keep, &path)
        } else {
            Vec::new()
        };
        Ok(Compaction {
            path,
            members: header.members,
            overlay_entries: frozen.len(),
            seconds: started.elapsed().as_secs_f64(),
            pruned,
        })
    }

    /// Base + frozen overlay, written and verified as a snapshot in `dir`: the base's
    /// records stream from its mapping in hash order, merged with the overlay's (sorted, and
    /// superseding the base's), straight into the layout. Anonymous memory holds the
    /// overlay, the dictionaries and the booklet holders, never the table.
    fn write_with_frozen(
        &self,
        dir: &Path,
        frozen: &Overlay,
        cursor: Cursor,
    ) -> Result<(PathBuf, snapshot::Header, super::Base), SnapshotError> {
        let base = Arc::clone(&self.layers.load().base);
        let body = base.archived();
        let mut dictionaries = Dictionaries::of_body(body);
        let mut changes: Vec<PackedMember> = frozen
            .members
            .iter()
            .map(|entry| match entry.value() {
                Slot::Live(m) => dictionaries.pack(&m.view()),
                Slot::Deleted { version } => tombstone(*entry.key(), *version),
            })
            .collect();
        changes.sort_unstable_by_key(|r| hash_order(r.national_id));
        let new_ids = changes
            .iter()
            .filter(|r| body.find(r.national_id).is_none())
            .count() as u64;
        let rows = base.len() as u64 + base.tombstones() + new_ids;
        let progress = &self.compaction;
        progress.rows.store(rows, Ordering::Relaxed);
        progress.placed.store(0, Ordering::Relaxed);
        let (names, extras) = dictionaries.into_lists();
        let layout = Layout {
            rows,
            records: Box::new(merged(in_hash_order(body), changes).map(Ok)),
            names,
            extras,
            placed: Some(&progress.placed),
            // The base's booklet table is laid out at load 0.8.
            holders_hint: (body.booklet_capacity.to_native() as f64 * 0.8) as u64
                + frozen.len() as u64,
        };
        std::fs::create_dir_all(dir).map_err(|reason| SnapshotError::Io {
            path: dir.to_path_buf(),
            reason,
        })?;
        let written = snapshot::write_into(dir, layout, cursor.position, cursor.epoch);
        drop(base);
        written
    }
}

/// Drops the replaced base on this (the compaction's) thread once the lookups still reading it
/// have finished, its pages let go of in steps first: unmapping gigabytes at once holds the
/// process's memory-map lock for tens of milliseconds, which would otherwise fall on
/// whichever request let go of the base last, and on every thread faulting a page meanwhile.
fn release_here(old: Arc<super::Base>) {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    if Arc::strong_count(&old) == 1 {
        old.let_go_in_steps();
    }
    drop(old);
}

/// How far the running compaction is: records to write, and written so far.
#[derive(Debug, Default)]
pub struct CompactionProgress {
    pub rows: AtomicU64,
    pub placed: AtomicU64,
}

/// A body's records (live and tombstones) in hash order. The table holds them in (home slot,
/// ID) order, which is hash order except among the few records sharing a home slot: each
/// such group is sorted by hash as it is read.
fn in_hash_order(body: &ArchivedBody) -> impl Iterator<Item = PackedMember> + '_ {
    let capacity = body.capacity.to_native();
    let mut rows = body.records.iter().filter(|r| !r.is_empty()).peekable();
    let mut group: Vec<PackedMember> = Vec::new();
    std::iter::from_fn(move || {
        if group.is_empty() {
            let first = rows.next()?;
            let h = home(first.national_id.to_native(), capacity);
            group.push(unpack(first));
            while let Some(r) = rows.next_if(|r| home(r.national_id.to_native(), capacity) == h) {
                group.push(unpack(r));
            }
            // Popped from the end: the largest hash first in the vector.
            group.sort_unstable_by_key(|r| std::cmp::Reverse(hash_order(r.national_id)));
        }
        group.pop()
    })
}

/// Two streams in hash order, merged; of an ID in both, the change is kept.
fn merged(
    base: impl Iterator<Item = PackedMember>,
    changes: Vec<PackedMember>,
) -> impl Iterator<Item = PackedMember> {
    let mut base = base.peekable();
    let mut changes = changes.into_iter().peekable();
    std::iter::from_fn(move || match (base.peek(), changes.peek()) {
        (None, None) => None,
        (Some(_), None) => base.next(),
        (None, Some(_)) => changes.next(),
        (Some(b), Some(c)) => {
            let (hb, hc) = (hash_order(b.national_id), hash_order(c.national_id));
            if hb < hc {
                base.next()
            } else {
                if hb == hc {
                    base.next();
                }
                changes.next()
            }
        }
    })
}
