//! The base layer: members as of one moment, built once and then only read. Building goes
//! through [`BaseBuilder`], which applies the same version guard as the overlay (a later
//! line of an import with an older version loses) and keeps booklet numbers unique.

use std::collections::HashMap;

use super::{FeedPosition, Hasher};
use crate::member::{Booklet, Member};
use crate::national_id::NationalId;

#[derive(Default)]
pub struct Base {
    members: HashMap<NationalId, Member, Hasher>,
    tombstones: HashMap<NationalId, u64, Hasher>,
    booklets: HashMap<Booklet, NationalId, Hasher>,
    position: Option<FeedPosition>,
}

impl std::fmt::Debug for Base {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Base")
            .field("members", &self.members.len())
            .field("tombstones", &self.tombstones.len())
            .field("position", &self.position)
            .finish()
    }
}

impl Base {
    #[inline]
    pub fn get(&self, id: NationalId) -> Option<&Member> {
        self.members.get(&id)
    }
    pub fn booklet_holder(&self, booklet: Booklet) -> Option<NationalId> {
        self.booklets.get(&booklet).copied()
    }
    pub fn version_of(&self, id: NationalId) -> u64 {
        match self.members.get(&id) {
            Some(m) => m.version,
            None => self.tombstones.get(&id).copied().unwrap_or(0),
        }
    }
    pub fn len(&self) -> usize {
        self.members.len()
    }
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
    pub fn position(&self) -> Option<FeedPosition> {
        self.position
    }
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }
    pub fn tombstones(&self) -> impl Iterator<Item = (NationalId, u64)> + '_ {
        self.tombstones.iter().map(|(id, v)| (*id, *v))
    }
}

/// Why a record could not join the base.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error(
        "version {version} is not newer than version {held} already read for this national ID"
    )]
    Stale { version: u64, held: u64 },
    #[error("booklet_no: already used by member {holder}")]
    BookletTaken { holder: String },
}

#[derive(Default)]
pub struct BaseBuilder {
    base: Base,
}

impl BaseBuilder {
    pub fn with_capacity(members: usize) -> BaseBuilder {
        let mut base = Base::default();
        base.members.reserve(members);
        base.booklets.reserve(members);
        BaseBuilder { base }
    }

    /// Adds a member, or replaces an older version of it.
    pub fn insert(&mut self, member: Member) -> Result<(), InsertError> {
        let id = member.national_id;
        let held = self.base.version_of(id);
        if member.version <= held {
            return Err(InsertError::Stale {
                version: member.version,
                held,
            });
        }
        if let Some(b) = member.booklet_no {
            match self.base.booklets.get(&b) {
                Some(holder) if *holder != id && self.base.members.contains_key(holder) => {
                    return Err(InsertError::BookletTaken {
                        holder: holder.masked(),
                    });
                }
                _ => {}
            }
            self.base.booklets.insert(b, id);
        }
        self.base.tombstones.remove(&id);
        if let Some(old) = self.base.members.insert(id, member) {
            self.forget_booklet_if_moved(&old);
        }
        Ok(())
    }

    /// Records a deletion (from a snapshot's tombstones).
    pub fn delete(&mut self, id: NationalId, version: u64) -> Result<(), InsertError> {
        let held = self.base.version_of(id);
        if version <= held {
            return Err(InsertError::Stale { version, held });
        }
        if let Some(old) = self.base.members.remove(&id) {
            if let Some(b) = old.booklet_no {
                if self.base.booklets.get(&b) == Some(&id) {
                    self.base.booklets.remove(&b);
                }
            }
        }
        self.base.tombstones.insert(id, version);
        Ok(())
    }

    fn forget_booklet_if_moved(&mut self, old: &Member) {
        let Some(b) = old.booklet_no else { return };
        let still_holds = self
            .base
            .members
            .get(&old.national_id)
            .and_then(|m| m.booklet_no)
            == Some(b);
        if !still_holds && self.base.booklets.get(&b) == Some(&old.national_id) {
            self.base.booklets.remove(&b);
        }
    }

    pub fn set_position(&mut self, position: Option<FeedPosition>) {
        self.base.position = position;
    }

    pub fn len(&self) -> usize {
        self.base.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.base.members.is_empty()
    }

    pub fn build(self) -> Base {
        self.base
    }
}
