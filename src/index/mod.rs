//! The in-memory index: every member keyed by national ID, and booklet numbers to IDs.
//!
//! It is two layers. The **base** is built once (from a snapshot, an import or the demo
//! population) and never changes, so lookups read it without any lock. The **overlay**
//! holds changes applied since (the change feed's upserts and deletes) and is looked up
//! first. `apply` is version-guarded: an event lands only when its version is greater than
//! the one held, and a delete leaves a tombstone carrying its version so that a late, older
//! upsert cannot bring the person back.

mod base;
pub mod snapshot;

use std::ops::Deref;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

pub use base::{Base, BaseBuilder, InsertError};

use crate::member::{Booklet, Member};
use crate::national_id::NationalId;

pub(crate) type Hasher = foldhash::fast::FixedState;

/// A position in the change feed (a Redis stream entry ID `ms-seq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedPosition {
    pub ms: u64,
    pub seq: u64,
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

#[derive(Debug)]
enum Slot {
    Live(Arc<Member>),
    Deleted { version: u64 },
}

impl Slot {
    fn version(&self) -> u64 {
        match self {
            Slot::Live(m) => m.version,
            Slot::Deleted { version } => *version,
        }
    }
}

/// A member found by a lookup: borrowed from the base, or shared from the overlay (so no
/// overlay lock is held while the caller evaluates and renders).
pub enum MemberRef<'a> {
    Base(&'a Member),
    Overlay(Arc<Member>),
}

impl Deref for MemberRef<'_> {
    type Target = Member;
    fn deref(&self) -> &Member {
        match self {
            MemberRef::Base(m) => m,
            MemberRef::Overlay(m) => m,
        }
    }
}

pub struct Index {
    base: Base,
    overlay: DashMap<NationalId, Slot, Hasher>,
    overlay_booklets: DashMap<Booklet, NationalId, Hasher>,
    /// Entries in `overlay`; lets lookups skip it entirely while it is empty.
    overlay_len: AtomicUsize,
    live_members: AtomicI64,
}

impl Index {
    pub fn new(base: Base) -> Index {
        let live = base.len() as i64;
        Index {
            base,
            overlay: DashMap::with_hasher(Hasher::default()),
            overlay_booklets: DashMap::with_hasher(Hasher::default()),
            overlay_len: AtomicUsize::new(0),
            live_members: AtomicI64::new(live),
        }
    }

    /// The member with this ID, or `None` when unknown or deleted.
    #[inline]
    pub fn get(&self, id: NationalId) -> Option<MemberRef<'_>> {
        if self.overlay_len.load(Ordering::Acquire) > 0 {
            if let Some(slot) = self.overlay.get(&id) {
                return match &*slot {
                    Slot::Live(m) => Some(MemberRef::Overlay(Arc::clone(m))),
                    Slot::Deleted { .. } => None,
                };
            }
        }
        self.base.get(id).map(MemberRef::Base)
    }

    /// The member holding this booklet number now.
    pub fn get_by_booklet(&self, booklet: Booklet) -> Option<MemberRef<'_>> {
        // A mapping may be stale (the booklet moved to someone else, or its holder was
        // deleted), so every candidate is confirmed against the member's current record.
        let overlay_candidate = self.overlay_booklets.get(&booklet).map(|id| *id);
        [overlay_candidate, self.base.booklet_holder(booklet)]
            .into_iter()
            .flatten()
            .filter_map(|id| self.get(id))
            .find(|m| m.booklet_no == Some(booklet))
    }

    /// The version held for an ID (a live member or a tombstone), 0 when never seen.
    pub fn version_of(&self, id: NationalId) -> u64 {
        if let Some(slot) = self.overlay.get(&id) {
            return slot.version();
        }
        self.base.version_of(id)
    }

    /// Applies a change when its version is newer than what is held.
    pub fn apply(&self, change: Change) -> Applied {
        let id = change.national_id();
        let version = change.version();
        let was_live = match self.overlay.entry(id) {
            Entry::Occupied(mut e) => {
                let held = e.get().version();
                if version <= held {
                    return Applied::Stale { held };
                }
                let was_live = matches!(e.get(), Slot::Live(_));
                e.insert(slot_for(&change));
                was_live
            }
            Entry::Vacant(e) => {
                let held = self.base.version_of(id);
                if version <= held {
                    return Applied::Stale { held };
                }
                e.insert(slot_for(&change));
                self.overlay_len.fetch_add(1, Ordering::Release);
                self.base.get(id).is_some()
            }
        };
        let is_live = matches!(change, Change::Upsert(_));
        self.live_members
            .fetch_add(i64::from(is_live) - i64::from(was_live), Ordering::Relaxed);
        if let Change::Upsert(Member {
            booklet_no: Some(b),
            ..
        }) = change
        {
            self.overlay_booklets.insert(b, id);
        }
        Applied::Applied
    }

    /// Live members (not counting tombstones).
    pub fn len(&self) -> usize {
        self.live_members.load(Ordering::Relaxed).max(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes applied since the base was built.
    pub fn overlay_len(&self) -> usize {
        self.overlay_len.load(Ordering::Relaxed)
    }

    /// The feed position the base reflects.
    pub fn base_position(&self) -> Option<FeedPosition> {
        self.base.position()
    }

    /// Every live member and every tombstone, base and overlay merged (the overlay wins),
    /// in national ID order: what a snapshot of this index holds.
    pub fn merged(&self) -> (Vec<Member>, Vec<(NationalId, u64)>) {
        let mut members = Vec::with_capacity(self.len());
        let mut tombstones = Vec::new();
        for m in self.base.members() {
            if !self.overlay.contains_key(&m.national_id) {
                members.push(m.clone());
            }
        }
        for (id, version) in self.base.tombstones() {
            if !self.overlay.contains_key(&id) {
                tombstones.push((id, version));
            }
        }
        for entry in self.overlay.iter() {
            match entry.value() {
                Slot::Live(m) => members.push(Member::clone(m)),
                Slot::Deleted { version } => tombstones.push((*entry.key(), *version)),
            }
        }
        members.sort_unstable_by_key(|m| m.national_id);
        tombstones.sort_unstable();
        (members, tombstones)
    }
}

fn slot_for(change: &Change) -> Slot {
    match change {
        Change::Upsert(m) => Slot::Live(Arc::new(m.clone())),
        Change::Delete { version, .. } => Slot::Deleted { version: *version },
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
