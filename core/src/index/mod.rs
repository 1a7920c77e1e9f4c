//! The in-memory index: every member keyed by national ID, and booklet numbers to IDs.
//!
//! Three layers, looked up newest first: the **active overlay** (changes applied since the
//! last cut), a **frozen overlay** (only while a compaction writes it into a new snapshot),
//! and the **base** (a snapshot body read in place). The base never changes and lookups read
//! it without a lock; the layer set is swapped atomically (arc-swap), so a lookup finishes on
//! the layers it started with. `apply` is version-guarded: an event lands only when its
//! version is greater than the one held in any layer (or it deletes the very version held),
//! and a delete leaves a tombstone carrying its version, so a late, older upsert cannot
//! bring the person back.

mod base;
pub mod body;
mod builder;
pub mod compact;
mod dictionary;
pub mod layout;
mod overlay;
mod position;
pub mod snapshot;
pub mod snapshot_dir;
mod sorter;
mod verify;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::{ArcSwap, Guard};
use dashmap::mapref::entry::Entry;

pub use base::{validate as validate_body, Base, Row};
pub use builder::{BodyBuilder, BuildProgress, Origin, Rejected, Resolved, KEPT_REJECTIONS};
pub use compact::CompactionProgress;
use overlay::{InOverlay, Overlay, Slot};
pub use position::{BadEpoch, BadPosition, FeedPosition, StreamEpoch};

use crate::member::view::MemberView;
use crate::member::{Booklet, Member};
use crate::national_id::NationalId;

/// One change to apply.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Upsert(Member),
    Delete {
        national_id: NationalId,
        version: u64,
    },
}

impl Change {
    pub fn national_id(&self) -> NationalId {
        match self {
            Change::Upsert(m) => m.national_id,
            Change::Delete { national_id, .. } => *national_id,
        }
    }
    pub fn version(&self) -> u64 {
        match self {
            Change::Upsert(m) => m.version,
            Change::Delete { version, .. } => *version,
        }
    }
}

/// What `apply` did with a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The change is now what the index holds.
    Applied,
    /// The index already holds this version or a newer one; nothing changed.
    Stale { held: u64 },
}

/// The base and, during a compaction, the overlay being written into the next base.
struct Layers {
    base: Arc<Base>,
    frozen: Option<Arc<Overlay>>,
}

pub struct Index {
    layers: ArcSwap<Layers>,
    active: ArcSwap<Overlay>,
    /// Taken shared by `apply`, exclusively by a cut (and by putting a failed cut back), so
    /// no change lands in an overlay after it was frozen. Lookups never take it.
    cut_lock: RwLock<()>,
    live_members: AtomicI64,
    /// The feed position of the last change applied (or the base's), and its stream epoch.
    cursor: Mutex<Cursor>,
    compacting: Mutex<()>,
    /// How far the running compaction is (read by progress reports).
    compaction: CompactionProgress,
    /// The synthetic demo population: never written to a snapshot directory.
    synthetic: bool,
    /// The freshness watermark (Unix ms): every change written to the stream before it is
    /// reflected. The build time until the feed proves more; only ever moves forward.
    data_as_of_ms: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    position: Option<FeedPosition>,
    epoch: Option<StreamEpoch>,
}

/// A member found by a lookup: read in place from the base, or shared from an overlay.
pub enum MemberRef<'a> {
    Base(MemberView<'a>),
    Overlay(Arc<Member>),
}

impl MemberRef<'_> {
    pub fn view(&self) -> MemberView<'_> {
        match self {
            MemberRef::Base(v) => *v,
            MemberRef::Overlay(m) => m.view(),
        }
    }
}

/// A consistent set of layers to look up in; take one per request.
pub struct IndexView {
    active: Guard<Arc<Overlay>>,
    layers: Guard<Arc<Layers>>,
}

impl IndexView {
    /// The member with this ID, or `None` when unknown or deleted.
    #[inline]
    pub fn get(&self, id: NationalId) -> Option<MemberRef<'_>> {
        for overlay in std::iter::once(&**self.active).chain(self.layers.frozen.as_deref()) {
            match overlay.find(id) {
                InOverlay::Live(m) => return Some(MemberRef::Overlay(m)),
                InOverlay::Deleted => return None,
                InOverlay::Absent => {}
            }
        }
        self.layers.base.get(id).map(MemberRef::Base)
    }

    /// The member holding this booklet number now. Every member that ever claimed it in a
    /// layer is a candidate; a claim counts only while the member's current record still
    /// carries the booklet (it may have moved on, or been deleted). When two current records
    /// carry it (the feed delivered a booklet's new holder before its old holder's release),
    /// the newer change holds it: versions follow the records database's commit order, and
    /// there a booklet is released before it is taken. Equal versions fall to the lower ID.
    pub fn get_by_booklet(&self, booklet: Booklet) -> Option<MemberRef<'_>> {
        let overlay_claims = std::iter::once(&**self.active)
            .chain(self.layers.frozen.as_deref())
            .flat_map(|o| o.booklet_claims(booklet));
        let base_claims = self
            .layers
            .base
            .booklet_holders(booklet)
            .map(|v| v.national_id);
        let mut best: Option<MemberRef<'_>> = None;
        for id in overlay_claims.chain(base_claims) {
            let Some(found) = self.get(id) else { continue };
            let candidate = found.view();
            if candidate.booklet_no != Some(booklet) {
                continue;
            }
            let better = best.as_ref().is_none_or(|b| {
                let held = b.view();
                (candidate.version, std::cmp::Reverse(candidate.national_id))
                    > (held.version, std::cmp::Reverse(held.national_id))
            });
            if better {
                best = Some(found);
            }
        }
        best
    }
}

impl Index {
    pub fn new(base: Base) -> Index {
        Index::with_origin(base, false)
    }

    /// An index over a loaded snapshot: as fresh as the snapshot was when built.
    pub fn from_snapshot(header: &snapshot::Header, base: Base) -> Index {
        let index = Index::new(base);
        index.built_at(u64::try_from(header.built_at_ms).unwrap_or(0));
        index
    }

    /// An index over the synthetic demo population. It answers like any other, but a
    /// compaction refuses it: synthetic members must never be saved where real snapshots
    /// live, nor prune them.
    pub fn synthetic(base: Base) -> Index {
        Index::with_origin(base, true)
    }

    fn with_origin(base: Base, synthetic: bool) -> Index {
        let live = base.len() as i64;
        let cursor = Cursor {
            position: base.position(),
            epoch: base.epoch(),
        };
        Index {
            layers: ArcSwap::from_pointee(Layers {
                base: Arc::new(base),
                frozen: None,
            }),
            active: ArcSwap::from_pointee(Overlay::default()),
            cut_lock: RwLock::new(()),
            live_members: AtomicI64::new(live),
            cursor: Mutex::new(cursor),
            compacting: Mutex::new(()),
            compaction: CompactionProgress::default(),
            synthetic,
            data_as_of_ms: AtomicU64::new(crate::dates::unix_ms()),
        }
    }

    /// Whether this is the synthetic demo population.
    pub fn is_synthetic(&self) -> bool {
        self.synthetic
    }

    /// An index whose base holds these members (tests, tools, the demo population). Fails
    /// on a repeated ID without a newer version or a booklet held twice.
    pub fn from_members(members: impl IntoIterator<Item = Member>) -> Result<Index, String> {
        let mut builder = BodyBuilder::default();
        for (i, m) in members.into_iter().enumerate() {
            builder.push_member(&m, Origin(i as u64 + 1));
        }
        let resolved = builder.resolve(None).map_err(|e| e.to_string())?;
        if let Some(r) = resolved.rejected.first() {
            return Err(format!("member {}: {}", r.origin.0, r.reason));
        }
        Ok(Index::new(resolved.into_base()?))
    }

    /// The layers as they are now, for one request's lookups.
    #[inline]
    pub fn view(&self) -> IndexView {
        IndexView {
            active: self.active.load(),
            layers: self.layers.load(),
        }
    }

    /// An owned copy of a member (tests and tools; requests use [`Index::view`]).
    pub fn member(&self, id: NationalId) -> Option<Member> {
        self.view().get(id).map(|m| m.view().to_member())
    }

    /// The version held for an ID (a live member or a tombstone), 0 when never seen.
    pub fn version_of(&self, id: NationalId) -> u64 {
        let active = self.active.load();
        let layers = self.layers.load();
        version_in(&active, &layers, id)
    }

    /// Applies a change when its version is newer than what any layer holds, or when it
    /// deletes the very version held.
    pub fn apply(&self, change: Change) -> Applied {
        let _no_cut = self
            .cut_lock
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let active = self.active.load();
        let id = change.national_id();
        let version = change.version();
        let is_delete = matches!(change, Change::Delete { .. });
        let booklet = match &change {
            Change::Upsert(m) => m.booklet_no,
            Change::Delete { .. } => None,
        };
        let was_live = match active.members.entry(id) {
            Entry::Occupied(mut e) => {
                let held = e.get().version();
                let was_live = matches!(e.get(), Slot::Live(_));
                if !supersedes(version, is_delete, held, was_live) {
                    return Applied::Stale { held };
                }
                e.insert(slot_for(change));
                was_live
            }
            Entry::Vacant(e) => {
                let layers = self.layers.load();
                let (held, was_live) =
                    match layers.frozen.as_deref().and_then(|f| f.members.get(&id)) {
                        Some(slot) => (slot.version(), matches!(*slot, Slot::Live(_))),
                        None => (layers.base.version_of(id), layers.base.get(id).is_some()),
                    };
                if !supersedes(version, is_delete, held, was_live) {
                    return Applied::Stale { held };
                }
                e.insert(slot_for(change));
                active.len.fetch_add(1, Ordering::Release);
                was_live
            }
        };
        let is_live = !is_delete;
        self.live_members
            .fetch_add(i64::from(is_live) - i64::from(was_live), Ordering::Relaxed);
        if let Some(b) = booklet {
            active.claim_booklet(b, id);
        }
        Applied::Applied
    }

    fn cursor(&self) -> std::sync::MutexGuard<'_, Cursor> {
        self.cursor.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The freshness watermark in Unix milliseconds (docs/contract.md §4 `data_as_of`).
    pub fn data_as_of_ms(&self) -> u64 {
        self.data_as_of_ms.load(Ordering::Acquire)
    }

    /// The index reflects what it was built from as of `ms` (a snapshot's build time).
    pub fn built_at(&self, ms: u64) {
        self.data_as_of_ms.store(ms, Ordering::Release);
    }

    /// The feed proved that every change written before `ms` is applied. Called only after
    /// those changes are applied, so a lookup that reads the watermark first sees them all.
    pub fn advance_data_as_of(&self, ms: u64) {
        self.data_as_of_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// Records the feed position of the last change applied; a snapshot cut records it.
    pub fn note_position(&self, position: FeedPosition) {
        self.cursor().position = Some(position);
    }

    pub fn position(&self) -> Option<FeedPosition> {
        self.cursor().position
    }

    /// The stream epoch the position belongs to (`None` until known).
    pub fn epoch(&self) -> Option<StreamEpoch> {
        self.cursor().epoch
    }

    /// Takes the stream's epoch as ours, when none was recorded with our position (a
    /// snapshot built without one). Never replaces a known epoch: a different one is a gap.
    pub fn adopt_epoch(&self, epoch: StreamEpoch) {
        self.cursor().epoch.get_or_insert(epoch);
    }

    /// Every delete marker the index holds, as deletes to apply elsewhere: the base's
    /// tombstones, then the frozen and active overlays' (applying them in this order, version
    /// guarded, leaves the newest of each ID).
    pub fn markers(&self) -> Vec<Change> {
        let active = self.active.load();
        let layers = self.layers.load();
        let base = layers.base.rows().filter_map(|row| match row {
            Row::Tombstone(national_id, version) => Some(Change::Delete {
                national_id,
                version,
            }),
            Row::Live(_) => None,
        });
        let overlays = layers
            .frozen
            .iter()
            .chain(std::iter::once(&*active))
            .flat_map(|o| o.deleted());
        base.chain(overlays).collect()
    }

    /// Live members (not counting tombstones).
    pub fn len(&self) -> usize {
        self.live_members.load(Ordering::Relaxed).max(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes held in overlays (active and frozen).
    pub fn overlay_len(&self) -> usize {
        let layers = self.layers.load();
        self.active.load().len() + layers.frozen.as_ref().map_or(0, |f| f.len())
    }

    /// The feed position the base reflects.
    pub fn base_position(&self) -> Option<FeedPosition> {
        self.layers.load().base.position()
    }

    /// How far the running compaction is.
    pub fn compaction_progress(&self) -> &CompactionProgress {
        &self.compaction
    }

    /// Bytes of the base body.
    pub fn base_size_bytes(&self) -> usize {
        self.layers.load().base.size_bytes()
    }
}

/// Whether a change of `version` replaces what is held: a newer version does, and so does a
/// delete of the very version held (a database delete event carries the version of the row
/// it removed, as Debezium's `before` does). A tombstone blocks every version up to its own.
fn supersedes(version: u64, is_delete: bool, held: u64, held_live: bool) -> bool {
    version > held || (version == held && is_delete && held_live)
}

fn version_in(active: &Overlay, layers: &Layers, id: NationalId) -> u64 {
    active
        .version_of(id)
        .or_else(|| layers.frozen.as_deref().and_then(|f| f.version_of(id)))
        .unwrap_or_else(|| layers.base.version_of(id))
}

fn slot_for(change: Change) -> Slot {
    match change {
        Change::Upsert(m) => Slot::Live(Arc::new(m)),
        Change::Delete { version, .. } => Slot::Deleted { version },
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod model_tests;
