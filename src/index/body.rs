//! The snapshot body: every member as a fixed 56-byte record, read in place from a memory
//! map.
//!
//! Records are sorted by (bucket, national ID), where the bucket is a multiplicative hash
//! of the ID; a directory of `2^bits + 1` offsets says where each bucket's records start.
//! A lookup reads one directory entry and scans about two records, so the base needs no hash
//! map of its own (about 1.5 bytes a member for the directory). Booklet numbers have the same
//! kind of directory over (booklet, row) pairs. Strings are not in the records: masked names
//! and the rare special conditions / other insurers live in dictionaries that records point
//! into, so a member costs about 70 bytes in all. Full names are never stored.
//!
//! The hash is fixed here (not a crate's hasher) because it is part of the file format.

use std::collections::HashMap;

use crate::dates::Day;
use crate::member::{
    validate_extras, validate_name, Booklet, Kind, Member, OtherInsurer, RecordError,
};
use crate::member::{Relation, Scheme, Services, Status};
use crate::national_id::NationalId;
use crate::view::{Extras, MemberView, Name};

/// Record flag: the member was deleted; the record only keeps its version.
pub const TOMBSTONE: u8 = 1;
const NO_COVERAGE_END: i32 = i32::MIN;

/// One member (or tombstone), fixed size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize)]
pub struct Record {
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
    pub kind: u8,
    /// 1-based position in `Relation::ALL`; 0 when none.
    pub relation: u8,
    pub scheme: u8,
    pub status: u8,
    pub services: u8,
    pub flags: u8,
}

/// Special conditions and other insurers, shared by every record with the same ones.
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize)]
#[rkyv(derive(Debug))]
pub struct ExtrasEntry {
    pub special_conditions: Vec<String>,
    pub other_insurers: Vec<OtherInsurer>,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
pub struct Body {
    pub bucket_bits: u32,
    pub directory: Vec<u32>,
    pub records: Vec<Record>,
    pub booklet_bits: u32,
    pub booklet_directory: Vec<u32>,
    pub booklet_keys: Vec<u64>,
    pub booklet_rows: Vec<u32>,
    pub names: Vec<String>,
    pub extras: Vec<ExtrasEntry>,
    pub live: u64,
    pub tombstones: u64,
}

/// The bucket of a key: Fibonacci hashing, the top `bits` bits of the product.
#[inline]
pub fn bucket(key: u64, bits: u32) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

/// Directory size for `n` keys: about two keys a bucket, at least 2 buckets.
fn bits_for(n: usize) -> u32 {
    let buckets = (n / 2).max(2).next_power_of_two();
    buckets.trailing_zeros().clamp(1, 31)
}

fn build_directory(keys: impl Iterator<Item = u64>, n: usize, bits: u32) -> Vec<u32> {
    let mut dir = vec![0u32; (1usize << bits) + 1];
    for key in keys {
        dir[bucket(key, bits) + 1] += 1;
    }
    for i in 1..dir.len() {
        dir[i] += dir[i - 1];
    }
    debug_assert_eq!(dir[dir.len() - 1] as usize, n);
    dir
}

impl ArchivedBody {
    /// The row holding this ID (live or tombstone).
    #[inline]
    pub fn find(&self, id: u64) -> Option<&ArchivedRecord> {
        let b = bucket(id, self.bucket_bits.to_native());
        let (start, end) = (
            self.directory[b].to_native() as usize,
            self.directory[b + 1].to_native() as usize,
        );
        self.records
            .get(start..end)?
            .iter()
            .find(|r| r.national_id.to_native() == id)
    }

    /// Rows whose records carry this booklet number.
    pub fn booklet_rows(&self, booklet: Booklet) -> impl Iterator<Item = &ArchivedRecord> + '_ {
        let b = bucket(booklet.0, self.booklet_bits.to_native());
        let (start, end) = (
            self.booklet_directory[b].to_native() as usize,
            self.booklet_directory[b + 1].to_native() as usize,
        );
        (start..end.min(self.booklet_keys.len()))
            .filter(move |&i| self.booklet_keys[i].to_native() == booklet.0)
            .filter_map(move |i| self.records.get(self.booklet_rows[i].to_native() as usize))
    }

    /// The member a live record holds. Records are validated when the body is loaded, so
    /// the fallbacks below are never taken.
    #[inline]
    pub fn view<'a>(&'a self, r: &'a ArchivedRecord) -> MemberView<'a> {
        let name = r.name.to_native();
        let extras = r.extras.to_native();
        let main = r.main_national_id.to_native();
        let booklet = r.booklet.to_native();
        let until = r.coverage_until.to_native();
        MemberView {
            national_id: NationalId::from_validated(r.national_id.to_native()),
            version: r.version.to_native(),
            kind: Kind::from_index(r.kind).unwrap_or(Kind::Main),
            main_national_id: (main != 0).then(|| NationalId::from_validated(main)),
            relation: r.relation.checked_sub(1).and_then(Relation::from_index),
            scheme: Scheme::from_index(r.scheme).unwrap_or(Scheme::Other),
            status: Status::from_index(r.status).unwrap_or(Status::Suspended),
            coverage_until: (until != NO_COVERAGE_END).then_some(Day(until)),
            services: Services(r.services),
            booklet_no: (booklet != 0).then_some(Booklet(booklet)),
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
        }
    }

    /// Checks what bytecheck cannot: the directories, the order of rows, and every record
    /// and dictionary entry against the record rules. Runs on `threads` threads.
    pub fn validate(&self, threads: usize) -> Result<(), String> {
        let bits = self.bucket_bits.to_native();
        let booklet_bits = self.booklet_bits.to_native();
        if !(1..=31).contains(&bits) || !(1..=31).contains(&booklet_bits) {
            return Err("directory sizes out of range".into());
        }
        check_directory(&self.directory, bits, self.records.len(), "directory")?;
        check_directory(
            &self.booklet_directory,
            booklet_bits,
            self.booklet_keys.len(),
            "booklet directory",
        )?;
        if self.booklet_rows.len() != self.booklet_keys.len() {
            return Err("booklet index columns differ in length".into());
        }
        for n in self.names.iter() {
            validate_name(n.as_str()).map_err(|e| e.to_string())?;
        }
        for e in self.extras.iter() {
            let owned = Extras::Archived(e).to_owned_parts();
            validate_extras(&owned.0, &owned.1).map_err(|e| e.to_string())?;
        }
        let live = self
            .records
            .iter()
            .filter(|r| r.flags & TOMBSTONE == 0)
            .count() as u64;
        if live != self.live.to_native()
            || self.records.len() as u64 - live != self.tombstones.to_native()
        {
            return Err("live and tombstone counts do not match the records".into());
        }
        let chunk = self.records.len().div_ceil(threads.max(1)).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..self.records.len())
                .step_by(chunk)
                .map(|start| {
                    scope.spawn(move || {
                        self.validate_rows(start, (start + chunk).min(self.records.len()))
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("validation thread failed".into()))
            })
        })?;
        for (i, (key, row)) in self
            .booklet_keys
            .iter()
            .zip(self.booklet_rows.iter())
            .enumerate()
        {
            let (key, row) = (key.to_native(), row.to_native() as usize);
            let in_bucket = bucket(key, booklet_bits);
            let start = self.booklet_directory[in_bucket].to_native() as usize;
            let end = self.booklet_directory[in_bucket + 1].to_native() as usize;
            let holder = self
                .records
                .get(row)
                .ok_or("booklet index points past the records")?;
            if !(start..end).contains(&i)
                || holder.booklet.to_native() != key
                || holder.flags & TOMBSTONE != 0
            {
                return Err(format!("booklet index entry {i} is inconsistent"));
            }
        }
        Ok(())
    }

    fn validate_rows(&self, start: usize, end: usize) -> Result<(), String> {
        let bits = self.bucket_bits.to_native();
        let mut previous: Option<(usize, u64)> = start.checked_sub(1).map(|i| {
            let id = self.records[i].national_id.to_native();
            (bucket(id, bits), id)
        });
        for row in start..end {
            let r = &self.records[row];
            let id = r.national_id.to_native();
            let b = bucket(id, bits);
            let (dir_start, dir_end) = (
                self.directory[b].to_native() as usize,
                self.directory[b + 1].to_native() as usize,
            );
            if !(dir_start..dir_end).contains(&row) || previous.is_some_and(|p| p >= (b, id)) {
                return Err(format!("row {row} is out of order"));
            }
            previous = Some((b, id));
            self.validate_record(r)
                .map_err(|e| format!("row {row}: {e}"))?;
        }
        Ok(())
    }

    fn validate_record(&self, r: &ArchivedRecord) -> Result<(), RecordError> {
        if r.flags & !TOMBSTONE != 0 {
            return Err(RecordError::new("flags", "unknown flag bits"));
        }
        if r.flags & TOMBSTONE != 0 {
            NationalId::from_u64(r.national_id.to_native())
                .map_err(|e| RecordError::new("national_id", e.to_string()))?;
            if r.version.to_native() == 0 {
                return Err(RecordError::new("version", "must be at least 1"));
            }
            return Ok(());
        }
        if Kind::from_index(r.kind).is_none()
            || Scheme::from_index(r.scheme).is_none()
            || Status::from_index(r.status).is_none()
            || (r.relation != 0 && Relation::from_index(r.relation - 1).is_none())
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
        let main = r.main_national_id.to_native();
        if main != 0 {
            NationalId::from_u64(main)
                .map_err(|e| RecordError::new("main_national_id", e.to_string()))?;
        }
        self.view(r).validate()
    }
}

fn check_directory(
    dir: &rkyv::vec::ArchivedVec<rkyv::rend::u32_le>,
    bits: u32,
    len: usize,
    what: &str,
) -> Result<(), String> {
    if dir.len() != (1usize << bits) + 1
        || dir[0].to_native() != 0
        || dir[dir.len() - 1].to_native() as usize != len
    {
        return Err(format!("{what} has the wrong shape"));
    }
    if dir
        .iter()
        .zip(dir.iter().skip(1))
        .any(|(a, b)| a.to_native() > b.to_native())
    {
        return Err(format!("{what} is not ascending"));
    }
    Ok(())
}

/// Where a row came from: a line number for imports, an ordinal for compaction. Among rows
/// of the same ID the highest version wins; on equal versions the earliest origin does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin(pub u64);

/// A row the builder refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub origin: Origin,
    pub reason: String,
}

/// What to do when two live members carry the same booklet number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BookletConflicts {
    /// Refuse the later row (imports: booklet numbers are unique at the source).
    RejectLater,
    /// Keep both members; the booklet leads to the later one (compaction, where the feed
    /// may briefly show a booklet on its old and new holder).
    PreferLater,
}

/// Collects members and tombstones in any order, then sorts them into a [`Body`].
#[derive(Default)]
pub struct BodyBuilder {
    rows: Vec<(Record, Origin)>,
    names: HashMap<String, u32>,
    name_list: Vec<String>,
    extras: HashMap<ExtrasEntry, u32>,
    extras_list: Vec<ExtrasEntry>,
}

impl BodyBuilder {
    pub fn with_capacity(rows: usize) -> BodyBuilder {
        BodyBuilder {
            rows: Vec::with_capacity(rows),
            ..BodyBuilder::default()
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn intern_name(&mut self, masked: String) -> u32 {
        if let Some(&i) = self.names.get(&masked) {
            return i;
        }
        self.name_list.push(masked.clone());
        let i = self.name_list.len() as u32;
        self.names.insert(masked, i);
        i
    }

    fn intern_extras(&mut self, entry: ExtrasEntry) -> u32 {
        if entry.special_conditions.is_empty() && entry.other_insurers.is_empty() {
            return 0;
        }
        if let Some(&i) = self.extras.get(&entry) {
            return i;
        }
        self.extras_list.push(entry.clone());
        let i = self.extras_list.len() as u32;
        self.extras.insert(entry, i);
        i
    }

    /// Adds a live member; its name is stored masked.
    pub fn push_view(&mut self, m: &MemberView<'_>, origin: Origin) {
        let name = match m.name.masked() {
            Some(masked) if !masked.is_empty() => self.intern_name(masked.into_owned()),
            _ => 0,
        };
        let (special_conditions, other_insurers) = m.extras.to_owned_parts();
        let extras = self.intern_extras(ExtrasEntry {
            special_conditions,
            other_insurers,
        });
        let record = Record {
            national_id: m.national_id.as_u64(),
            version: m.version,
            main_national_id: m.main_national_id.map_or(0, NationalId::as_u64),
            booklet: m.booklet_no.map_or(0, |b| b.0),
            coverage_until: m.coverage_until.map_or(NO_COVERAGE_END, |d| d.0),
            name,
            extras,
            kind: m.kind as u8,
            relation: m.relation.map_or(0, |r| r as u8 + 1),
            scheme: m.scheme as u8,
            status: m.status as u8,
            services: m.services.0,
            flags: 0,
        };
        self.rows.push((record, origin));
    }

    pub fn push_member(&mut self, m: &Member, origin: Origin) {
        self.push_view(&m.view(), origin);
    }

    pub fn push_tombstone(&mut self, id: NationalId, version: u64, origin: Origin) {
        let record = Record {
            national_id: id.as_u64(),
            version,
            main_national_id: 0,
            booklet: 0,
            coverage_until: NO_COVERAGE_END,
            name: 0,
            extras: 0,
            kind: 0,
            relation: 0,
            scheme: 0,
            status: 0,
            services: 0,
            flags: TOMBSTONE,
        };
        self.rows.push((record, origin));
    }

    /// Sorts, keeps the newest version of every ID, resolves booklet numbers, builds the
    /// directories. Returns the body and the rows it refused.
    pub fn finish(mut self, booklets: BookletConflicts) -> (Body, Vec<Rejected>) {
        let bits = bits_for(self.rows.len());
        // Same ID together, newest version first, then earliest origin.
        self.rows.sort_unstable_by(|(a, ao), (b, bo)| {
            (
                bucket(a.national_id, bits),
                a.national_id,
                std::cmp::Reverse(a.version),
                ao,
            )
                .cmp(&(
                    bucket(b.national_id, bits),
                    b.national_id,
                    std::cmp::Reverse(b.version),
                    bo,
                ))
        });
        let mut rejected = Vec::new();
        let mut kept: Vec<(Record, Origin)> = Vec::with_capacity(self.rows.len());
        for (record, origin) in self.rows.drain(..) {
            match kept.last() {
                Some((winner, winner_origin)) if winner.national_id == record.national_id => {
                    rejected.push(Rejected {
                        origin,
                        reason: format!(
                            "version {} is not newer than version {} read for this national ID ({})",
                            record.version,
                            winner.version,
                            describe(*winner_origin)
                        ),
                    });
                }
                _ => kept.push((record, origin)),
            }
        }
        let booklet_rejections = resolve_booklets(&mut kept, booklets);
        rejected.extend(booklet_rejections);
        let bits = bits_for(kept.len());
        // Removing rows keeps the order, but the directory size may have changed.
        kept.sort_unstable_by_key(|(r, _)| (bucket(r.national_id, bits), r.national_id));
        let records: Vec<Record> = kept.into_iter().map(|(r, _)| r).collect();
        let directory = build_directory(records.iter().map(|r| r.national_id), records.len(), bits);

        let mut booklet_pairs: Vec<(u64, u32)> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.booklet != 0 && r.flags & TOMBSTONE == 0)
            .map(|(row, r)| (r.booklet, row as u32))
            .collect();
        let booklet_bits = bits_for(booklet_pairs.len());
        booklet_pairs.sort_unstable_by_key(|&(key, row)| (bucket(key, booklet_bits), key, row));
        let booklet_directory = build_directory(
            booklet_pairs.iter().map(|p| p.0),
            booklet_pairs.len(),
            booklet_bits,
        );
        let live = records.iter().filter(|r| r.flags & TOMBSTONE == 0).count() as u64;
        let tombstones = records.len() as u64 - live;
        rejected.sort_by_key(|r| r.origin);
        let body = Body {
            bucket_bits: bits,
            directory,
            records,
            booklet_bits,
            booklet_directory,
            booklet_keys: booklet_pairs.iter().map(|p| p.0).collect(),
            booklet_rows: booklet_pairs.iter().map(|p| p.1).collect(),
            names: self.name_list,
            extras: self.extras_list,
            live,
            tombstones,
        };
        (body, rejected)
    }
}

fn describe(origin: Origin) -> String {
    format!("line {}", origin.0)
}

/// Applies the booklet policy to the kept rows (one per ID).
fn resolve_booklets(kept: &mut Vec<(Record, Origin)>, policy: BookletConflicts) -> Vec<Rejected> {
    let mut holders: Vec<(u64, Origin, usize)> = kept
        .iter()
        .enumerate()
        .filter(|(_, (r, _))| r.booklet != 0 && r.flags & TOMBSTONE == 0)
        .map(|(i, (r, o))| (r.booklet, *o, i))
        .collect();
    holders.sort_unstable();
    let mut dropped = vec![false; kept.len()];
    let mut rejected = Vec::new();
    let mut first: Option<(u64, Origin, usize)> = None;
    let mut previous: Option<usize> = None;
    for (key, origin, row) in holders {
        match first {
            Some((first_key, first_origin, first_row)) if first_key == key => match policy {
                BookletConflicts::RejectLater => {
                    dropped[row] = true;
                    rejected.push(Rejected {
                        origin,
                        reason: format!(
                            "booklet_no: already used by member {} ({})",
                            NationalId::from_validated(kept[first_row].0.national_id).masked(),
                            describe(first_origin)
                        ),
                    });
                }
                BookletConflicts::PreferLater => {
                    // Both members stay; the earlier holder loses the booklet.
                    if let Some(p) = previous {
                        kept[p].0.booklet = 0;
                    }
                    previous = Some(row);
                }
            },
            _ => {
                first = Some((key, origin, row));
                previous = Some(row);
            }
        }
    }
    let mut row = 0;
    kept.retain(|_| {
        let keep = !dropped[row];
        row += 1;
        keep
    });
    rejected
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
