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
mod overlay;
pub mod snapshot;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::{ArcSwap, Guard};
use dashmap::mapref::entry::Entry;

pub use base::{Base, Row};
pub use builder::{BodyBuilder, Mode, Origin, Rejected};
use overlay::{Found, Overlay, Slot};

use crate::member::{Booklet, Member};
use crate::national_id::NationalId;
use crate::view::MemberView;

/// A position in the change feed (a Redis stream entry ID `ms-seq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedPosition {
    pub ms: u64,
    pub seq: u64,
}

impl FeedPosition {
    /// The position before every entry (`0-0`).
    pub const START: FeedPosition = FeedPosition { ms: 0, seq: 0 };

    /// When the entry was added: the milliseconds part of its ID (Unix time).
    pub fn unix_ms(self) -> u64 {
        self.ms
    }
}

/// A stream entry ID that is not `ms-seq` with two decimal u64 parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a stream entry ID (ms-seq)")]
pub struct BadPosition(pub String);

impl std::str::FromStr for FeedPosition {
    type Err = BadPosition;
    fn from_str(s: &str) -> Result<FeedPosition, BadPosition> {
        let bad = || BadPosition(s.chars().take(45).collect());
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(FeedPosition {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for FeedPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

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

/// The base and, during a compaction, the overlay being written into the next base with the
/// feed position noted when it was frozen.
struct Layers {
    base: Arc<Base>,
    frozen: Option<Arc<Overlay>>,
    frozen_position: Option<FeedPosition>,
}

pub struct Index {
    layers: ArcSwap<Layers>,
    active: ArcSwap<Overlay>,
    /// Taken shared by `apply`, exclusively by a cut, so no change lands in an overlay
    /// after it was frozen. Lookups never take it.
    cut_lock: RwLock<()>,
    live_members: AtomicI64,
    /// The feed position of the last change applied (or the base's).
    position: Mutex<Option<FeedPosition>>,
    compacting: Mutex<()>,
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
                Found::Live(m) => return Some(MemberRef::Overlay(m)),
                Found::Deleted => return None,
                Found::Absent => {}
            }
        }
        self.layers.base.get(id).map(MemberRef::Base)
    }

    /// The member holding this booklet number now. A mapping may be stale (the booklet moved,
    /// or its holder was deleted), so every candidate is confirmed against the member's
    /// current record.
    pub fn get_by_booklet(&self, booklet: Booklet) -> Option<MemberRef<'_>> {
        let overlay_candidates = std::iter::once(&**self.active)
            .chain(self.layers.frozen.as_deref())
            .filter_map(|o| o.booklet_holder(booklet));
        let base_candidates = self
            .layers
            .base
            .booklet_holders(booklet)
            .map(|v| v.national_id);
        overlay_candidates
            .chain(base_candidates)
            .filter_map(|id| self.get(id))
            .find(|m| m.view().booklet_no == Some(booklet))
    }
}

impl Index {
    pub fn new(base: Base) -> Index {
        let live = base.len() as i64;
        let position = base.position();
        Index {
            layers: ArcSwap::from_pointee(Layers {
                base: Arc::new(base),
                frozen: None,
                frozen_position: None,
            }),
            active: ArcSwap::from_pointee(Overlay::default()),
            cut_lock: RwLock::new(()),
            live_members: AtomicI64::new(live),
            position: Mutex::new(position),
            compacting: Mutex::new(()),
        }
    }

    /// An index whose base holds these members (tests, tools, the demo population). Fails
    /// on a repeated ID without a newer version or a booklet held twice.
    pub fn from_members(members: impl IntoIterator<Item = Member>) -> Result<Index, String> {
        let mut builder = BodyBuilder::default();
        for (i, m) in members.into_iter().enumerate() {
            builder.push_member(&m, Origin(i as u64 + 1));
        }
        let (body, rejected) = builder.finish(Mode::Import);
        if let Some(r) = rejected.first() {
            return Err(format!("member {}: {}", r.origin.0, r.reason));
        }
        Ok(Index::new(Base::from_body(&body, None)?))
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
            active.booklets.insert(b, id);
        }
        Applied::Applied
    }

    /// Records the feed position of the last change applied; a snapshot cut records it.
    pub fn note_position(&self, position: FeedPosition) {
        let mut held = self.position.lock().unwrap_or_else(|p| p.into_inner());
        *held = Some(position);
    }

    pub fn position(&self) -> Option<FeedPosition> {
        *self.position.lock().unwrap_or_else(|p| p.into_inner())
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
#[path = "index_tests.rs"]
mod tests;
