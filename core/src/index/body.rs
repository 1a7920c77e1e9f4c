//! The snapshot body: every member as a fixed 48-byte record, read in place from a memory
//! map.
//!
//! The record array is itself an open-addressed hash table: a member's home slot is a
//! multiplicative hash of its ID scaled to the table's capacity (load factor 0.8), and
//! records sit at their home slot or just after it, in (home, ID) order, as linear probing
//! with Robin Hood ordering would place them. A lookup computes the home slot and reads
//! forward from there: at load 0.8 a record sits about two slots past its home, so a lookup is
//! one random access over a few adjacent cache lines, like a hash map, with no index of its own. Booklet numbers have a second table of row numbers laid out the same way.
//! Strings are not in the records: masked names and the rare special conditions / other
//! insurers live in dictionaries that records point into, so a member costs about 65 bytes
//! in all. Full names are never stored. Rows are numbered with `u32`: up to 4 billion slots.
//!
//! The hash is fixed here (not a crate's hasher) because it is part of the file format.

use crate::dates::Day;
use crate::member::view::{Extras, MemberView, Name};
use crate::member::{validate_extras, validate_name, Booklet, Kind, RecordError};
pub use crate::member::{ArchivedExtrasEntry, ExtrasEntry};
use crate::member::{Relation, Scheme, Services, Status};
use crate::national_id::NationalId;

/// What one pass of validation counts in its rows.
#[derive(Clone, Copy, Default)]
pub(super) struct RowCounts {
    pub live: u64,
    pub used: u64,
    pub with_booklet: u64,
}

impl RowCounts {
    pub(super) fn add(self, other: RowCounts) -> RowCounts {
        RowCounts {
            live: self.live + other.live,
            used: self.used + other.used,
            with_booklet: self.with_booklet + other.with_booklet,
        }
    }
}

/// Live records per slot of the tables.
const LOAD_FACTOR: f64 = 0.8;
pub(super) const NO_COVERAGE_END: i32 = i32::MIN;

// Bit layout of `PackedMember::attrs`.
const KIND_SHIFT: u16 = 0; // 2 bits
const STATUS_SHIFT: u16 = 2; // 2 bits
const SCHEME_SHIFT: u16 = 4; // 3 bits
const RELATION_SHIFT: u16 = 7; // 3 bits, 0 = none, else 1 + position
const SERVICES_SHIFT: u16 = 10; // 5 bits
/// The member was deleted; the record only keeps its version.
pub const TOMBSTONE: u16 = 1 << 15;

/// One member (or tombstone, or an empty slot: national ID 0), fixed size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize)]
#[rkyv(derive(Debug, PartialEq))]
pub struct PackedMember {
    pub national_id: u64,
    pub version: u64,
    /// 0 when none.
    pub main_national_id: u64,
    /// [`Booklet`]'s integer; 0 when none.
    pub booklet: u64,
    /// Days since 1970-01-01; `i32::MIN` when open-ended.
    pub coverage_until: i32,
    /// 1-based index into `names`; 0 when none.
    pub name: u32,
    /// 1-based index into `extras`; 0 when none.
    pub extras: u32,
    /// Kind, status, scheme, relation, services and the tombstone flag, packed.
    pub attrs: u16,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
pub struct Body {
    /// Slots the home positions are scaled to; `records` may run past it (overflow).
    pub capacity: u64,
    pub records: Vec<PackedMember>,
    pub booklet_capacity: u64,
    /// Row + 1 of the member holding a booklet; 0 for an empty slot.
    pub booklet_slots: Vec<u32>,
    pub names: Vec<String>,
    pub extras: Vec<ExtrasEntry>,
    pub live: u64,
    pub tombstones: u64,
}

/// The multiplier of the table's hash (2^64 / golden ratio, odd: a bijection of `u64`).
pub const HASH_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// The home slot of a key in a table of `capacity` slots: a multiplicative hash, scaled by
/// its high bits (no modulo).
#[inline]
pub fn home(key: u64, capacity: u64) -> usize {
    let hash = key.wrapping_mul(HASH_MULTIPLIER);
    ((u128::from(hash) * u128::from(capacity)) >> 64) as usize
}

pub(super) fn capacity_for(n: usize) -> u64 {
    ((n as f64 / LOAD_FACTOR).ceil() as u64).max(1)
}

impl ArchivedPackedMember {
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.national_id.to_native() == 0
    }
    #[inline]
    pub fn is_tombstone(&self) -> bool {
        self.attrs.to_native() & TOMBSTONE != 0
    }
    #[inline]
    pub fn is_live(&self) -> bool {
        !self.is_empty() && !self.is_tombstone()
    }
    fn field(&self, shift: u16, bits: u16) -> u8 {
        ((self.attrs.to_native() >> shift) & ((1 << bits) - 1)) as u8
    }
}

pub(super) fn pack_attrs(m: &MemberView<'_>) -> u16 {
    (m.kind as u16) << KIND_SHIFT
        | (m.status as u16) << STATUS_SHIFT
        | (m.scheme as u16) << SCHEME_SHIFT
        | m.relation.map_or(0, |r| r as u16 + 1) << RELATION_SHIFT
        | u16::from(m.services.0) << SERVICES_SHIFT
}

impl ArchivedBody {
    /// The record holding this ID (live or tombstone).
    #[inline]
    pub fn find(&self, id: u64) -> Option<&ArchivedPackedMember> {
        let capacity = self.capacity.to_native();
        let want = home(id, capacity);
        let records = self.records.get(want..)?;
        for r in records {
            let found = r.national_id.to_native();
            if found == id {
                return Some(r);
            }
            // Records are in (home, ID) order: an empty slot or a later home ends the search.
            if found == 0 || (home(found, capacity), found) > (want, id) {
                return None;
            }
        }
        None
    }

    /// Records carrying this booklet number.
    pub fn booklet_rows(
        &self,
        booklet: Booklet,
    ) -> impl Iterator<Item = &ArchivedPackedMember> + '_ {
        let capacity = self.booklet_capacity.to_native();
        let want = home(booklet.0, capacity);
        self.booklet_slots
            .get(want..)
            .unwrap_or_default()
            .iter()
            .map_while(move |slot| {
                // An empty slot, or a booklet whose home is later, ends the search.
                let row = (slot.to_native() as usize).checked_sub(1)?;
                let r = self.records.get(row)?;
                (home(r.booklet.to_native(), capacity) <= want).then_some(r)
            })
            .filter(move |r| r.booklet.to_native() == booklet.0)
    }

    /// The member a live record holds. Records are validated when the body is loaded, so
    /// the fallbacks below are never taken.
    #[inline]
    pub fn view<'a>(&'a self, r: &'a ArchivedPackedMember) -> MemberView<'a> {
        let name = r.name.to_native();
        let extras = r.extras.to_native();
        MemberView {
            name: match name.checked_sub(1).and_then(|i| self.names.get(i as usize)) {
                Some(n) => Name::Masked(n.as_str()),
                None => Name::None,
            },
            extras: match extras
                .checked_sub(1)
                .and_then(|i| self.extras.get(i as usize))
            {
                Some(e) => Extras::Archived(e),
                None => Extras::None,
            },
            ..Self::fields(r)
        }
    }

    /// The record's own fields as a view, without its name and extras.
    fn fields(r: &ArchivedPackedMember) -> MemberView<'static> {
        let main = r.main_national_id.to_native();
        let booklet = r.booklet.to_native();
        let until = r.coverage_until.to_native();
        MemberView {
            national_id: NationalId::from_validated(r.national_id.to_native()),
            version: r.version.to_native(),
            kind: Kind::from_index(r.field(KIND_SHIFT, 2)).unwrap_or(Kind::Main),
            main_national_id: (main != 0).then(|| NationalId::from_validated(main)),
            relation: r
                .field(RELATION_SHIFT, 3)
                .checked_sub(1)
                .and_then(Relation::from_index),
            scheme: Scheme::from_index(r.field(SCHEME_SHIFT, 3)).unwrap_or(Scheme::Other),
            status: Status::from_index(r.field(STATUS_SHIFT, 2)).unwrap_or(Status::Suspended),
            coverage_until: (until != NO_COVERAGE_END).then_some(Day(until)),
            services: Services(r.field(SERVICES_SHIFT, 5)),
            booklet_no: (booklet != 0).then_some(Booklet(booklet)),
            name: Name::None,
            extras: Extras::None,
        }
    }

    /// Checks what bytecheck cannot: the table layout (every record reachable from its home
    /// slot), the booklet table, and every record and dictionary entry against the record
    /// rules. Runs on `threads` threads.
    pub fn validate(&self, threads: usize) -> Result<(), String> {
        self.validate_shape()?;
        // One pass over the records (in parallel chunks) checks each row and counts them.
        let chunk = self.records.len().div_ceil(threads.max(1)).max(1);
        let counts = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..self.records.len())
                .step_by(chunk)
                .map(|start| {
                    scope.spawn(move || {
                        self.validate_rows(start, (start + chunk).min(self.records.len()))
                    })
                })
                .collect();
            handles
                .into_iter()
                .try_fold(RowCounts::default(), |total, h| {
                    let counts = h
                        .join()
                        .unwrap_or_else(|_| Err("validation thread failed".into()))?;
                    Ok::<_, String>(total.add(counts))
                })
        })?;
        self.check_counts(counts)?;
        self.validate_booklets(counts.with_booklet, threads)
    }

    /// The capacities and the dictionaries.
    pub(super) fn validate_shape(&self) -> Result<(), String> {
        let capacity = self.capacity.to_native();
        if capacity == 0
            || (self.records.len() as u64) < capacity
            || self.records.len() > u32::MAX as usize
        {
            return Err("table capacity does not match the records".into());
        }
        if self.booklet_capacity.to_native() == 0 {
            return Err("booklet table capacity is zero".into());
        }
        for n in self.names.iter() {
            validate_name(n.as_str()).map_err(|e| e.to_string())?;
        }
        for e in self.extras.iter() {
            let owned = Extras::Archived(e).to_owned_parts();
            validate_extras(&owned.0, &owned.1).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The body's own counts against those of its rows.
    pub(super) fn check_counts(&self, counts: RowCounts) -> Result<(), String> {
        let (live, used) = (counts.live, counts.used);
        if live != self.live.to_native() || used - live != self.tombstones.to_native() {
            return Err("live and tombstone counts do not match the records".into());
        }
        Ok(())
    }

    /// Checks rows `start..end`; counts live, used (live or tombstone) and booklet holders.
    pub(super) fn validate_rows(&self, start: usize, end: usize) -> Result<RowCounts, String> {
        let mut counts = RowCounts::default();
        let capacity = self.capacity.to_native();
        let key = |r: &ArchivedPackedMember| {
            (
                home(r.national_id.to_native(), capacity),
                r.national_id.to_native(),
            )
        };
        for pos in start..end {
            let r = &self.records[pos];
            if r.is_empty() {
                if *r != ArchivedPackedMember::default_archived() {
                    return Err(format!("row {pos}: an empty slot holds data"));
                }
                continue;
            }
            let (h, _) = key(r);
            let previous = pos
                .checked_sub(1)
                .map(|p| &self.records[p])
                .filter(|p| !p.is_empty());
            // At its home, or right after a record that comes before it in (home, ID) order.
            let reachable = match previous {
                Some(p) => key(p) < key(r) && h <= pos,
                None => h == pos,
            };
            if !reachable {
                return Err(format!("row {pos} is not where a lookup would find it"));
            }
            self.validate_record(r)
                .map_err(|e| format!("row {pos}: {e}"))?;
            counts.used += 1;
            if r.is_live() {
                counts.live += 1;
                counts.with_booklet += u64::from(r.booklet.to_native() != 0);
            }
        }
        Ok(counts)
    }

    /// The booklet a row's record holds: its number when the record is live and has one,
    /// 0 otherwise; an error past the records.
    pub(super) fn booklet_of(&self, row: usize) -> Result<u64, String> {
        let r = self
            .records
            .get(row)
            .ok_or("booklet table points past the records")?;
        Ok(if r.is_live() {
            r.booklet.to_native()
        } else {
            0
        })
    }

    /// Checks the booklet table in `threads` chunks at once (each slot reads a record at
    /// random: the threads' misses overlap).
    fn validate_booklets(&self, with_booklet: u64, threads: usize) -> Result<(), String> {
        let len = self.booklet_slots.len();
        let chunk = len.div_ceil(threads.max(1)).max(1);
        let booklet_of = |row| self.booklet_of(row);
        let holders = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..len)
                .step_by(chunk)
                .map(|start| {
                    scope.spawn(move || {
                        self.validate_booklet_slots(start, (start + chunk).min(len), &booklet_of)
                    })
                })
                .collect();
            handles.into_iter().try_fold(0u64, |total, h| {
                let n = h
                    .join()
                    .unwrap_or_else(|_| Err("validation thread failed".into()))?;
                Ok::<_, String>(total + n)
            })
        })?;
        self.check_booklet_holders(holders, with_booklet)
    }

    pub(super) fn check_booklet_holders(
        &self,
        holders: u64,
        with_booklet: u64,
    ) -> Result<(), String> {
        if holders != with_booklet {
            return Err("the booklet table does not list every booklet holder".into());
        }
        Ok(())
    }

    /// The `(home, booklet, row)` a booklet slot holds, if it holds a row with a booklet.
    fn booklet_key(
        &self,
        pos: usize,
        booklet_of: &dyn Fn(usize) -> Result<u64, String>,
    ) -> Option<(usize, u64, usize)> {
        let row = (self.booklet_slots.get(pos)?.to_native() as usize).checked_sub(1)?;
        let key = booklet_of(row).ok().filter(|&k| k != 0)?;
        Some((home(key, self.booklet_capacity.to_native()), key, row))
    }

    /// Checks booklet slots `start..end`, reading each slot's record through `booklet_of`
    /// (the records themselves, or what a windowed check noted of them); returns how many
    /// hold a row.
    pub(super) fn validate_booklet_slots(
        &self,
        start: usize,
        end: usize,
        booklet_of: &dyn Fn(usize) -> Result<u64, String>,
    ) -> Result<u64, String> {
        let capacity = self.booklet_capacity.to_native();
        // The slot before the chunk, as the sequential walk would have left it.
        let mut previous = start
            .checked_sub(1)
            .and_then(|p| self.booklet_key(p, booklet_of));
        let mut holders = 0u64;
        for pos in start..end {
            let Some(row) = (self.booklet_slots[pos].to_native() as usize).checked_sub(1) else {
                previous = None;
                continue;
            };
            let key = booklet_of(row)?;
            if key == 0 {
                return Err(format!(
                    "booklet slot {pos} points at a record without a booklet"
                ));
            }
            let h = home(key, capacity);
            let reachable = match previous {
                Some(p) => p < (h, key, row) && h <= pos,
                None => h == pos,
            };
            if !reachable {
                return Err(format!(
                    "booklet slot {pos} is not where a lookup would find it"
                ));
            }
            previous = Some((h, key, row));
            holders += 1;
        }
        Ok(holders)
    }

    fn validate_record(&self, r: &ArchivedPackedMember) -> Result<(), RecordError> {
        if r.is_tombstone() {
            NationalId::from_u64(r.national_id.to_native())
                .map_err(|e| RecordError::new("national_id", e.to_string()))?;
            if r.version.to_native() == 0 {
                return Err(RecordError::new("version", "must be at least 1"));
            }
            return Ok(());
        }
        if Kind::from_index(r.field(KIND_SHIFT, 2)).is_none()
            || Scheme::from_index(r.field(SCHEME_SHIFT, 3)).is_none()
            || Status::from_index(r.field(STATUS_SHIFT, 2)).is_none()
            || r.field(RELATION_SHIFT, 3)
                .checked_sub(1)
                .is_some_and(|i| Relation::from_index(i).is_none())
        {
            return Err(RecordError::new(
                "record",
                "unknown kind, scheme, status or relation",
            ));
        }
        if r.name.to_native() as usize > self.names.len()
            || r.extras.to_native() as usize > self.extras.len()
        {
            return Err(RecordError::new(
                "record",
                "dictionary reference out of range",
            ));
        }
        // The view's own check covers both IDs (the main insured's included). Names and
        // extras are not part of it (their entries were checked once, above, and the
        // reference is in range), so they are not looked up for every record.
        Self::fields(r).validate()
    }
}

/// An archived record as a native one (its dictionary indices unchanged).
pub(super) fn unpack(r: &ArchivedPackedMember) -> PackedMember {
    PackedMember {
        national_id: r.national_id.to_native(),
        version: r.version.to_native(),
        main_national_id: r.main_national_id.to_native(),
        booklet: r.booklet.to_native(),
        coverage_until: r.coverage_until.to_native(),
        name: r.name.to_native(),
        extras: r.extras.to_native(),
        attrs: r.attrs.to_native(),
    }
}

#[cfg(test)]
impl Body {
    /// An owned copy of an archived body (tests that inspect or tamper with one).
    pub(crate) fn from_archived(a: &ArchivedBody) -> Body {
        Body {
            capacity: a.capacity.to_native(),
            records: a.records.iter().map(unpack).collect(),
            booklet_capacity: a.booklet_capacity.to_native(),
            booklet_slots: a.booklet_slots.iter().map(|s| s.to_native()).collect(),
            names: a.names.iter().map(|n| n.as_str().to_string()).collect(),
            extras: a
                .extras
                .iter()
                .map(|e| {
                    let (special_conditions, other_insurers) = Extras::Archived(e).to_owned_parts();
                    ExtrasEntry {
                        special_conditions,
                        other_insurers,
                    }
                })
                .collect(),
            live: a.live.to_native(),
            tombstones: a.tombstones.to_native(),
        }
    }
}

impl ArchivedPackedMember {
    /// The archived form of an empty slot, for comparison.
    fn default_archived() -> ArchivedPackedMember {
        ArchivedPackedMember {
            national_id: 0.into(),
            version: 0.into(),
            main_national_id: 0.into(),
            booklet: 0.into(),
            coverage_until: 0.into(),
            name: 0.into(),
            extras: 0.into(),
            attrs: 0.into(),
        }
    }
}

#[cfg(test)]
mod tests;
