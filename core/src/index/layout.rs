//! Laying a body out as a stream: records arrive one at a time, in hash order, and their
//! archived bytes leave for the writer (a snapshot file, or memory) as soon as their slot is
//! known, so neither a compaction nor a build ever holds the table.
//!
//! The bytes are exactly those `rkyv` writes for a [`super::body::Body`] with the same records: the root
//! is rkyv's own (a type that archives *as* [`ArchivedBody`]), and only the two large arrays
//! are written here, element by element, in rkyv's layout (a test compares the two). Placing
//! a record needs nothing but the previous one: records sorted by the hash of their ID are
//! in home-slot order for any capacity, so each goes at its home slot or the slot after the
//! last one written. Within one home slot records go in ID order (the order lookups expect),
//! which the small group of records sharing that slot is sorted into. Booklet holders are the
//! one thing kept: (booklet, row) for each, 12 bytes a holder, to lay the booklet table out
//! once the records are written.

use std::cell::{Cell, RefCell};
use std::io;
use std::mem::offset_of;

use rkyv::munge::munge;
use rkyv::rancor::{self, Fallible, Source};
use rkyv::ser::{Allocator, Writer, WriterExt};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Archived, Place, Serialize};

use super::body::{
    capacity_for, home, ArchivedBody, ArchivedPackedMember, ExtrasEntry, PackedMember, TOMBSTONE,
};

/// Records in hash order ([`hash_order`]), each ID once; an error ends the layout.
pub type Records<'a> = Box<dyn Iterator<Item = io::Result<PackedMember>> + 'a>;

/// The order records reach a layout in: the table's hash of the ID, before scaling to a
/// capacity (a bijection of `u64`, so no two IDs share it).
#[inline]
pub fn hash_order(national_id: u64) -> u64 {
    national_id.wrapping_mul(super::body::HASH_MULTIPLIER)
}

/// A body to lay out: how many records (live and tombstones) the source yields, the records
/// in hash order, and the dictionaries they point into.
pub struct Layout<'a> {
    pub rows: u64,
    pub records: Records<'a>,
    pub names: Vec<String>,
    pub extras: Vec<ExtrasEntry>,
    /// Counts records as they are placed (progress reports read it).
    pub placed: Option<&'a std::sync::atomic::AtomicU64>,
    /// About how many live records hold a booklet (room is made for them at once: a
    /// vector that doubles as it grows would hold up to twice the memory).
    pub holders_hint: u64,
}

/// A booklet holder: the booklet number and the row of its record, 12 bytes.
#[derive(Clone, Copy)]
struct Holder([u32; 3]);

impl Holder {
    fn new(booklet: u64, row: u32) -> Holder {
        Holder([booklet as u32, (booklet >> 32) as u32, row])
    }
    fn booklet(self) -> u64 {
        u64::from(self.0[0]) | (u64::from(self.0[1]) << 32)
    }
    fn row(self) -> u32 {
        self.0[2]
    }
}

/// What a layout wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Laid {
    pub live: u64,
    pub tombstones: u64,
    pub booklet_holders: u64,
}

/// Why a layout stopped.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{0}")]
    Write(String),
}

impl Layout<'_> {
    /// Serialises the body into `writer` (rkyv's writer: a file through `IoWriter`, or an
    /// `AlignedVec`) and returns it with what was written.
    pub fn write<W: Writer<rancor::Error>>(self, writer: W) -> Result<(W, Laid), LayoutError> {
        let shared = Shared {
            rows: self.rows,
            records: RefCell::new(Some(self.records)),
            holders: RefCell::new(Vec::with_capacity(self.holders_hint as usize)),
            records_len: Cell::new(0),
            slots_len: Cell::new(0),
            booklet_capacity: Cell::new(1),
            live: Cell::new(0),
            tombstones: Cell::new(0),
            placed: self.placed,
        };
        let root = Streamed {
            capacity: capacity_for(self.rows as usize),
            records: StreamedRecords(&shared),
            booklet_capacity: Late(&shared.booklet_capacity),
            booklet_slots: StreamedSlots(&shared),
            names: self.names,
            extras: self.extras,
            live: Late(&shared.live),
            tombstones: Late(&shared.tombstones),
        };
        let writer = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&root, writer)
            .map_err(|e| LayoutError::Write(e.to_string()))?;
        let laid = Laid {
            live: shared.live.get(),
            tombstones: shared.tombstones.get(),
            booklet_holders: shared.slots_holders(),
        };
        Ok((writer, laid))
    }
}

/// What the two streamed arrays and the late fields share while rkyv serialises the root
/// (fields in order: the records, then the booklet slots, then the root is resolved).
struct Shared<'a> {
    rows: u64,
    records: RefCell<Option<Records<'a>>>,
    holders: RefCell<Vec<Holder>>,
    records_len: Cell<u64>,
    slots_len: Cell<u64>,
    booklet_capacity: Cell<u64>,
    live: Cell<u64>,
    tombstones: Cell<u64>,
    placed: Option<&'a std::sync::atomic::AtomicU64>,
}

impl Shared<'_> {
    fn slots_holders(&self) -> u64 {
        self.holders.borrow().len() as u64
    }
}

/// The root: archives as [`ArchivedBody`], field for field.
struct Streamed<'s, 'a> {
    capacity: u64,
    records: StreamedRecords<'s, 'a>,
    booklet_capacity: Late<'s>,
    booklet_slots: StreamedSlots<'s, 'a>,
    names: Vec<String>,
    extras: Vec<ExtrasEntry>,
    live: Late<'s>,
    tombstones: Late<'s>,
}

struct StreamedResolver {
    records: VecResolver,
    booklet_slots: VecResolver,
    names: VecResolver,
    extras: VecResolver,
}

impl Archive for Streamed<'_, '_> {
    type Archived = ArchivedBody;
    type Resolver = StreamedResolver;
    fn resolve(&self, resolver: StreamedResolver, out: Place<ArchivedBody>) {
        munge!(let ArchivedBody {
            capacity,
            records,
            booklet_capacity,
            booklet_slots,
            names,
            extras,
            live,
            tombstones,
        } = out);
        self.capacity.resolve((), capacity);
        self.records.resolve(resolver.records, records);
        self.booklet_capacity.resolve((), booklet_capacity);
        self.booklet_slots
            .resolve(resolver.booklet_slots, booklet_slots);
        self.names.resolve(resolver.names, names);
        self.extras.resolve(resolver.extras, extras);
        self.live.resolve((), live);
        self.tombstones.resolve((), tombstones);
    }
}

impl<S> Serialize<S> for Streamed<'_, '_>
where
    S: Fallible + Writer + Allocator + ?Sized,
    S::Error: Source,
{
    /// In `Body`'s field order, as rkyv's derive would: the records, the booklet slots
    /// (which need the records' rows), then the dictionaries.
    fn serialize(&self, s: &mut S) -> Result<StreamedResolver, S::Error> {
        Ok(StreamedResolver {
            records: self.records.serialize(s)?,
            booklet_slots: self.booklet_slots.serialize(s)?,
            names: self.names.serialize(s)?,
            extras: self.extras.serialize(s)?,
        })
    }
}

/// A `u64` known only once the arrays are written (resolved after them).
struct Late<'s>(&'s Cell<u64>);

impl Archive for Late<'_> {
    type Archived = Archived<u64>;
    type Resolver = ();
    fn resolve(&self, resolver: (), out: Place<Self::Archived>) {
        self.0.get().resolve(resolver, out);
    }
}

impl<S: Fallible + ?Sized> Serialize<S> for Late<'_> {
    fn serialize(&self, _: &mut S) -> Result<(), S::Error> {
        Ok(())
    }
}

struct StreamedRecords<'s, 'a>(&'s Shared<'a>);

impl Archive for StreamedRecords<'_, '_> {
    type Archived = ArchivedVec<ArchivedPackedMember>;
    type Resolver = VecResolver;
    fn resolve(&self, resolver: VecResolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(self.0.records_len.get() as usize, resolver, out);
    }
}

impl<S: Fallible + Writer + ?Sized> Serialize<S> for StreamedRecords<'_, '_>
where
    S::Error: Source,
{
    fn serialize(&self, s: &mut S) -> Result<VecResolver, S::Error> {
        let pos = s.align_for::<ArchivedPackedMember>()?;
        let source = self.0.records.borrow_mut().take();
        let source = source.ok_or_else(|| fail("the records were already written"))?;
        let mut out = Batched::new(s);
        let mut placer = Placer::new(self.0);
        let mut group: Vec<PackedMember> = Vec::new();
        let mut group_home = 0usize;
        let mut last_hash: Option<u64> = None;
        for record in source {
            let record = record.map_err(S::Error::new)?;
            let hash = hash_order(record.national_id);
            if last_hash.is_some_and(|last| last >= hash) || record.national_id == 0 {
                return Err(fail("records reached the layout out of hash order"));
            }
            last_hash = Some(hash);
            let h = home(record.national_id, placer.capacity);
            if h != group_home && !group.is_empty() {
                placer.place_group(&mut group, group_home, &mut out)?;
            }
            group_home = h;
            group.push(record);
        }
        placer.place_group(&mut group, group_home, &mut out)?;
        if placer.placed != self.0.rows {
            return Err(fail(format!(
                "the layout was promised {} records and given {}",
                self.0.rows, placer.placed
            )));
        }
        let len = placer.next.max(placer.capacity as usize);
        out.zeros(len - placer.next, RECORD_LEN)?;
        out.flush()?;
        if len > u32::MAX as usize {
            return Err(fail("more than 4 billion slots"));
        }
        self.0.records_len.set(len as u64);
        Ok(VecResolver::from_pos(pos))
    }
}

struct StreamedSlots<'s, 'a>(&'s Shared<'a>);

impl Archive for StreamedSlots<'_, '_> {
    type Archived = ArchivedVec<Archived<u32>>;
    type Resolver = VecResolver;
    fn resolve(&self, resolver: VecResolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(self.0.slots_len.get() as usize, resolver, out);
    }
}

impl<S: Fallible + Writer + ?Sized> Serialize<S> for StreamedSlots<'_, '_>
where
    S::Error: Source,
{
    fn serialize(&self, s: &mut S) -> Result<VecResolver, S::Error> {
        let pos = s.align_for::<Archived<u32>>()?;
        let mut holders = self.0.holders.borrow_mut();
        let capacity = capacity_for(holders.len());
        holders.sort_unstable_by_key(|h| (home(h.booklet(), capacity), h.booklet(), h.row()));
        let mut out = Batched::new(s);
        let mut next = 0usize;
        for (key, row) in holders.iter().map(|h| (h.booklet(), h.row())) {
            let at = home(key, capacity).max(next);
            out.zeros(at - next, 4)?;
            out.put(&(row + 1).to_le_bytes())?;
            next = at + 1;
        }
        let len = next.max(capacity as usize);
        out.zeros(len - next, 4)?;
        out.flush()?;
        self.0.booklet_capacity.set(capacity);
        self.0.slots_len.set(len as u64);
        Ok(VecResolver::from_pos(pos))
    }
}

fn fail<E: Source>(message: impl std::fmt::Display) -> E {
    E::new(io::Error::other(message.to_string()))
}

/// Places records: each at its home slot or right after the last one placed.
struct Placer<'s, 'a> {
    shared: &'s Shared<'a>,
    capacity: u64,
    next: usize,
    placed: u64,
}

impl<'s, 'a> Placer<'s, 'a> {
    fn new(shared: &'s Shared<'a>) -> Self {
        Placer {
            shared,
            capacity: capacity_for(shared.rows as usize),
            next: 0,
            placed: 0,
        }
    }

    fn place_group<S: Fallible + Writer + ?Sized>(
        &mut self,
        group: &mut Vec<PackedMember>,
        home_slot: usize,
        out: &mut Batched<'_, S>,
    ) -> Result<(), S::Error> {
        group.sort_unstable_by_key(|r| r.national_id);
        let mut holders = self.shared.holders.borrow_mut();
        for r in group.drain(..) {
            let at = home_slot.max(self.next);
            out.zeros(at - self.next, RECORD_LEN)?;
            out.put(&archived_bytes(&r))?;
            if r.attrs & TOMBSTONE != 0 {
                self.shared.tombstones.set(self.shared.tombstones.get() + 1);
            } else {
                self.shared.live.set(self.shared.live.get() + 1);
                if r.booklet != 0 {
                    holders.push(Holder::new(r.booklet, at as u32));
                }
            }
            self.next = at + 1;
            self.placed += 1;
        }
        if let Some(placed) = self.shared.placed {
            placed.store(self.placed, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Bytes of one archived record.
const RECORD_LEN: usize = std::mem::size_of::<ArchivedPackedMember>();
const _: () = assert!(RECORD_LEN == 48);

/// A record's archived bytes, in rkyv's layout (little-endian fields at their offsets, the
/// padding zero): what rkyv writes for it, without a serializer per record.
fn archived_bytes(r: &PackedMember) -> [u8; RECORD_LEN] {
    type A = ArchivedPackedMember;
    let mut b = [0u8; RECORD_LEN];
    let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
    put(offset_of!(A, national_id), &r.national_id.to_le_bytes());
    put(offset_of!(A, version), &r.version.to_le_bytes());
    put(
        offset_of!(A, main_national_id),
        &r.main_national_id.to_le_bytes(),
    );
    put(offset_of!(A, booklet), &r.booklet.to_le_bytes());
    put(
        offset_of!(A, coverage_until),
        &r.coverage_until.to_le_bytes(),
    );
    put(offset_of!(A, name), &r.name.to_le_bytes());
    put(offset_of!(A, extras), &r.extras.to_le_bytes());
    put(offset_of!(A, attrs), &r.attrs.to_le_bytes());
    b
}

/// Gathers small writes into 64 KiB ones.
struct Batched<'w, S: ?Sized> {
    s: &'w mut S,
    buf: Vec<u8>,
}

const BATCH: usize = 64 * 1024;

impl<'w, S: Fallible + Writer + ?Sized> Batched<'w, S> {
    fn new(s: &'w mut S) -> Self {
        Batched {
            s,
            buf: Vec::with_capacity(BATCH),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), S::Error> {
        if self.buf.len() + bytes.len() > BATCH {
            self.flush()?;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn zeros(&mut self, items: usize, size: usize) -> Result<(), S::Error> {
        let mut left = items * size;
        while left > 0 {
            if self.buf.len() == BATCH {
                self.flush()?;
            }
            let n = left.min(BATCH - self.buf.len());
            self.buf.resize(self.buf.len() + n, 0);
            left -= n;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), S::Error> {
        self.s.write(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

#[cfg(test)]
impl<'a> Layout<'a> {
    /// A layout of these members exactly as they are (one per ID; booklet numbers never
    /// refused, as a compaction keeps them): a repair snapshot in tests.
    pub(crate) fn of_members<'m>(
        members: impl IntoIterator<Item = &'m crate::member::Member>,
    ) -> Layout<'a> {
        let mut d = super::dictionary::Dictionaries::default();
        let mut records: Vec<PackedMember> =
            members.into_iter().map(|m| d.pack(&m.view())).collect();
        records.sort_unstable_by_key(|r| hash_order(r.national_id));
        let (names, extras) = d.into_lists();
        Layout {
            rows: records.len() as u64,
            records: Box::new(records.into_iter().map(Ok)),
            names,
            extras,
            placed: None,
            holders_hint: 0,
        }
    }

    /// A layout of a body's records and dictionaries (tests; the body may be tampered with,
    /// which the check after writing must then refuse).
    pub(crate) fn of_body(body: &super::body::Body) -> Layout<'a> {
        let mut records: Vec<PackedMember> = body
            .records
            .iter()
            .filter(|r| r.national_id != 0)
            .copied()
            .collect();
        records.sort_unstable_by_key(|r| hash_order(r.national_id));
        Layout {
            rows: records.len() as u64,
            records: Box::new(records.into_iter().map(Ok)),
            names: body.names.clone(),
            extras: body.extras.clone(),
            placed: None,
            holders_hint: 0,
        }
    }
}

#[cfg(test)]
mod tests;
