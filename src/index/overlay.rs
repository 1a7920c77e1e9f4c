//! An overlay: changes applied since the base was cut, keyed by national ID. The active
//! overlay takes new changes; during a compaction the previous one is frozen (read-only)
//! until the new base that contains it is installed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::member::{Booklet, Member};
use crate::national_id::NationalId;

pub(crate) type Hasher = foldhash::fast::FixedState;

#[derive(Debug)]
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
    pub(super) booklets: DashMap<Booklet, NationalId, Hasher>,
    /// Entries in `members`; lets lookups skip an empty overlay without touching the map.
    pub(super) len: AtomicUsize,
}

/// What a lookup found in one overlay.
pub enum Found {
    Live(Arc<Member>),
    Deleted,
    Absent,
}

impl Overlay {
    #[inline]
    pub fn find(&self, id: NationalId) -> Found {
        if self.len.load(Ordering::Acquire) == 0 {
            return Found::Absent;
        }
        match self.members.get(&id) {
            Some(slot) => match &*slot {
                Slot::Live(m) => Found::Live(Arc::clone(m)),
                Slot::Deleted { .. } => Found::Deleted,
            },
            None => Found::Absent,
        }
    }

    pub fn version_of(&self, id: NationalId) -> Option<u64> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.members.get(&id).map(|slot| slot.version())
    }

    pub fn booklet_holder(&self, booklet: Booklet) -> Option<NationalId> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.booklets.get(&booklet).map(|id| *id)
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
