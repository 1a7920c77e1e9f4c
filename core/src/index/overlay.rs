//! An overlay: changes applied since the base was cut, keyed by national ID. The active
//! overlay takes new changes; during a compaction the previous one is frozen (read-only)
//! until the new base that contains it is installed.
//!
//! Booklet numbers map to every member that claimed them in this overlay, not only the last:
//! a booklet can pass A → C → back to A while the feed delivers changes out of order, and a
//! lookup must still find whichever claim is current (see `IndexView::get_by_booklet`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::member::{Booklet, Member};
use crate::national_id::NationalId;

pub(crate) type Hasher = foldhash::fast::FixedState;

#[derive(Clone, Debug)]
pub enum Slot {
    Live(Arc<Member>),
    Deleted { version: u64 },
}

impl Slot {
    pub fn version(&self) -> u64 {
        match self {
            Slot::Live(m) => m.version,
            Slot::Deleted { version } => *version,
        }
    }
}

#[derive(Default)]
pub struct Overlay {
    pub(super) members: DashMap<NationalId, Slot, Hasher>,
    /// Every member that claimed a booklet here (rarely more than one).
    pub(super) booklets: DashMap<Booklet, Vec<NationalId>, Hasher>,
    /// Entries in `members`; lets lookups skip an empty overlay without touching the map.
    pub(super) len: AtomicUsize,
}

/// What a lookup found in one overlay.
pub enum InOverlay {
    Live(Arc<Member>),
    Deleted,
    Absent,
}

impl Overlay {
    #[inline]
    pub fn find(&self, id: NationalId) -> InOverlay {
        if self.len.load(Ordering::Acquire) == 0 {
            return InOverlay::Absent;
        }
        match self.members.get(&id) {
            Some(slot) => match &*slot {
                Slot::Live(m) => InOverlay::Live(Arc::clone(m)),
                Slot::Deleted { .. } => InOverlay::Deleted,
            },
            None => InOverlay::Absent,
        }
    }

    pub fn version_of(&self, id: NationalId) -> Option<u64> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.members.get(&id).map(|slot| slot.version())
    }

    /// Members that claimed `booklet` in this overlay (their current records decide).
    pub fn booklet_claims(&self, booklet: Booklet) -> Vec<NationalId> {
        if self.len.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        self.booklets
            .get(&booklet)
            .map_or_else(Vec::new, |ids| ids.clone())
    }

    /// Notes that `id` claims `booklet`.
    pub fn claim_booklet(&self, booklet: Booklet, id: NationalId) {
        let mut ids = self.booklets.entry(booklet).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    /// The delete markers held here.
    pub fn deleted(&self) -> Vec<super::Change> {
        self.members
            .iter()
            .filter_map(|entry| match entry.value() {
                Slot::Deleted { version } => Some(super::Change::Delete {
                    national_id: *entry.key(),
                    version: *version,
                }),
                Slot::Live(_) => None,
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
