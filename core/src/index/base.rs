//! The base layer: a snapshot body read in place, from a memory map (a snapshot file) or
//! from memory (the demo population, tests). It is validated once, when it is opened, and
//! never changes after, so lookups read it without any lock and without copying.

use memmap2::Mmap;
use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::body::{ArchivedBody, Body};
use super::{FeedPosition, StreamEpoch};
use crate::member::view::MemberView;
use crate::member::Booklet;
use crate::national_id::NationalId;

enum Storage {
    Mapped(Mmap),
    Owned(AlignedVec<16>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            Storage::Owned(vec) => vec,
        }
    }
}

pub struct Base {
    storage: Storage,
    position: Option<FeedPosition>,
    epoch: Option<StreamEpoch>,
    live: u64,
    tombstones: u64,
}

/// One row of the base, for rebuilding a snapshot from it.
pub enum Row<'a> {
    Live(MemberView<'a>),
    Tombstone(NationalId, u64),
}

impl std::fmt::Debug for Base {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Base")
            .field("members", &self.live)
            .field("tombstones", &self.tombstones)
            .field("position", &self.position)
            .field("epoch", &self.epoch)
            .finish()
    }
}

/// Checks bytes as an archived body: rkyv's structural validation, then the record rules.
pub fn validate(bytes: &[u8], threads: usize) -> Result<&ArchivedBody, String> {
    let body = rkyv::access::<ArchivedBody, rancor::Error>(bytes).map_err(|e| e.to_string())?;
    body.validate(threads)?;
    Ok(body)
}

/// Threads used to validate a body (validation touches every page; it is off the request path).
pub fn validation_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8)
}

impl Base {
    fn open(
        storage: Storage,
        position: Option<FeedPosition>,
        epoch: Option<StreamEpoch>,
    ) -> Result<Base, String> {
        let body = validate(storage.bytes(), validation_threads())?;
        let (live, tombstones) = (body.live.to_native(), body.tombstones.to_native());
        Ok(Base {
            storage,
            position,
            epoch,
            live,
            tombstones,
        })
    }

    /// A base over a body built in memory.
    pub fn from_body(body: &Body, position: Option<FeedPosition>) -> Result<Base, String> {
        let bytes = rkyv::to_bytes::<rancor::Error>(body).map_err(|e| e.to_string())?;
        Base::open(Storage::Owned(bytes), position, None)
    }

    /// A base over a mapped snapshot body that [`validate`] has just accepted (the caller
    /// validated these exact bytes, alongside its checksum, and a read-only map never
    /// changes): the one check is not run twice.
    #[allow(unsafe_code)]
    pub(super) fn from_validated_map(
        map: Mmap,
        position: Option<FeedPosition>,
        epoch: Option<StreamEpoch>,
    ) -> Base {
        let storage = Storage::Mapped(map);
        // SAFETY: the caller validated these bytes with `validate` (rkyv's `access`), they
        // are a read-only map that is never modified, and they live as long as the base.
        let body = unsafe { rkyv::access_unchecked::<ArchivedBody>(storage.bytes()) };
        let (live, tombstones) = (body.live.to_native(), body.tombstones.to_native());
        Base {
            storage,
            position,
            epoch,
            live,
            tombstones,
        }
    }

    /// A base over a body laid out in memory.
    pub fn from_layout(
        layout: super::layout::Layout<'_>,
        position: Option<FeedPosition>,
    ) -> Result<Base, String> {
        let (bytes, _) = layout
            .write(AlignedVec::<16>::new())
            .map_err(|e| e.to_string())?;
        Base::open(Storage::Owned(bytes), position, None)
    }

    /// A base with no members.
    pub fn empty() -> Base {
        // An empty body always lays out and validates.
        super::BodyBuilder::default()
            .resolve(None)
            .map_err(|e| e.to_string())
            .and_then(super::Resolved::into_base)
            .unwrap_or_else(|e| unreachable!("empty body refused: {e}"))
    }

    /// The archived body (a compaction reads its records and dictionaries).
    pub(super) fn archived(&self) -> &ArchivedBody {
        self.body()
    }

    #[allow(unsafe_code)]
    #[inline]
    fn body(&self) -> &ArchivedBody {
        // SAFETY: `open` validated these exact bytes with `rkyv::access` (bytecheck) before
        // the `Base` existed, the bytes never change afterwards (an owned buffer we never
        // mutate, or a read-only map of a snapshot file that eligd never modifies in place:
        // snapshots are written to a temporary file and renamed), and they live as long as
        // `self`.
        unsafe { rkyv::access_unchecked::<ArchivedBody>(self.storage.bytes()) }
    }

    /// The live member with this ID.
    #[inline]
    pub fn get(&self, id: NationalId) -> Option<MemberView<'_>> {
        let body = self.body();
        body.find(id.as_u64())
            .filter(|r| r.is_live())
            .map(|r| body.view(r))
    }

    /// The version held for an ID (member or tombstone), 0 when absent.
    pub fn version_of(&self, id: NationalId) -> u64 {
        self.body()
            .find(id.as_u64())
            .map_or(0, |r| r.version.to_native())
    }

    /// Live members whose record carries this booklet number.
    pub fn booklet_holders(&self, booklet: Booklet) -> impl Iterator<Item = MemberView<'_>> + '_ {
        let body = self.body();
        body.booklet_rows(booklet)
            .filter(|r| r.is_live())
            .map(move |r| body.view(r))
    }

    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> + '_ {
        let body = self.body();
        body.records.iter().filter(|r| !r.is_empty()).map(move |r| {
            if r.is_tombstone() {
                Row::Tombstone(
                    NationalId::from_validated(r.national_id.to_native()),
                    r.version.to_native(),
                )
            } else {
                Row::Live(body.view(r))
            }
        })
    }

    pub fn len(&self) -> usize {
        self.live as usize
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn tombstones(&self) -> u64 {
        self.tombstones
    }

    pub fn position(&self) -> Option<FeedPosition> {
        self.position
    }

    /// The stream epoch the position belongs to.
    pub fn epoch(&self) -> Option<StreamEpoch> {
        self.epoch
    }

    /// Lets go of a mapped body's pages a step at a time, so that unmapping it afterwards is
    /// quick. Unmapping gigabytes in one call holds the process's memory-map lock while every
    /// page table entry is torn down (tens of milliseconds at 45 M members), and any thread
    /// that faults a page or asks the allocator for memory meanwhile waits; dropping pages in
    /// steps takes the lock only shared, and only briefly. Call it only on a base nobody
    /// reads any more (a replaced one, once the last lookup on it has finished).
    #[allow(unsafe_code)]
    pub(super) fn let_go_in_steps(&self) {
        const STEP: usize = 2 << 20;
        if let Storage::Mapped(map) = &self.storage {
            for start in (0..map.len()).step_by(STEP) {
                let len = STEP.min(map.len() - start);
                // SAFETY: a read-only shared file mapping that no one reads any more (the
                // caller's contract); a dropped page would read back unchanged from the file.
                let _ = unsafe {
                    map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len)
                };
            }
        }
    }

    /// Bytes of the body (mapped or owned).
    pub fn size_bytes(&self) -> usize {
        self.storage.bytes().len()
    }
}
