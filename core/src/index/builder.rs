//! Building a snapshot body: members and tombstones arrive in any order (an import, the demo
//! population, a compaction of base + overlay); `finish` keeps the newest version of every
//! ID, resolves booklet numbers, interns names and extras, and lays the table out.

use std::collections::HashMap;

use super::body::{
    capacity_for, home, pack_attrs, place, Body, ExtrasEntry, PackedMember, NO_COVERAGE_END,
    TOMBSTONE,
};
use crate::member::view::MemberView;
use crate::member::Member;
use crate::national_id::NationalId;

/// Where a row came from: a line number for imports, an ordinal for compaction. Among rows
/// of the same ID the highest version wins; on equal versions a tombstone (a delete of that
/// version), then the earliest origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin(pub u64);

/// A row the builder refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub origin: Origin,
    pub reason: String,
}

/// What the rows are, which decides how conflicts between them are handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// An import: every row should stand. A repeated ID without a newer version, or a
    /// booklet number already held by an earlier row, is refused and reported.
    Import,
    /// A compaction of base + overlay: overlay rows supersede base rows of the same ID
    /// silently (that is the point), and records are kept exactly as they are. When two
    /// members carry one booklet number (the feed may briefly show a booklet on its new
    /// holder before its old holder's release arrives), both records keep it and the booklet
    /// table lists both; lookups give it to the newer change (`IndexView::get_by_booklet`).
    Compaction,
}

/// Collects members and tombstones in any order, then sorts them into a [`Body`].
#[derive(Default)]
pub struct BodyBuilder {
    rows: Vec<(PackedMember, Origin)>,
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
        let record = PackedMember {
            national_id: m.national_id.as_u64(),
            version: m.version,
            main_national_id: m.main_national_id.map_or(0, NationalId::as_u64),
            booklet: m.booklet_no.map_or(0, |b| b.0),
            coverage_until: m.coverage_until.map_or(NO_COVERAGE_END, |d| d.0),
            name,
            extras,
            attrs: pack_attrs(m),
        };
        self.rows.push((record, origin));
    }

    pub fn push_member(&mut self, m: &Member, origin: Origin) {
        self.push_view(&m.view(), origin);
    }

    pub fn push_tombstone(&mut self, id: NationalId, version: u64, origin: Origin) {
        let record = PackedMember {
            national_id: id.as_u64(),
            version,
            coverage_until: NO_COVERAGE_END,
            attrs: TOMBSTONE,
            ..PackedMember::default()
        };
        self.rows.push((record, origin));
    }

    /// Keeps the newest version of every ID, resolves booklet numbers, and lays the records
    /// and the booklet table out. Returns the body and the rows it refused.
    pub fn finish(mut self, mode: Mode) -> (Body, Vec<Rejected>) {
        // Same ID together, newest version first, a delete before the record it deletes,
        // then earliest origin.
        self.rows.sort_unstable_by(|(a, ao), (b, bo)| {
            let live = |r: &PackedMember| r.attrs & TOMBSTONE == 0;
            (a.national_id, std::cmp::Reverse(a.version), live(a), ao).cmp(&(
                b.national_id,
                std::cmp::Reverse(b.version),
                live(b),
                bo,
            ))
        });
        let mut rejected = Vec::new();
        let mut kept: Vec<(PackedMember, Origin)> = Vec::with_capacity(self.rows.len());
        for (record, origin) in self.rows.drain(..) {
            match kept.last() {
                Some((winner, winner_origin)) if winner.national_id == record.national_id => {
                    if mode == Mode::Compaction {
                        continue;
                    }
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
        drop(self.rows);
        rejected.extend(resolve_booklets(&mut kept, mode));
        rejected.sort_by_key(|r| r.origin);

        let capacity = capacity_for(kept.len());
        kept.sort_unstable_by_key(|(r, _)| (home(r.national_id, capacity), r.national_id));
        let positions = place(kept.iter().map(|(r, _)| home(r.national_id, capacity)));
        let len = positions.last().map_or(0, |p| p + 1).max(capacity as usize);
        let mut records = vec![PackedMember::default(); len];
        for ((record, _), pos) in kept.into_iter().zip(positions) {
            records[pos] = record;
        }

        let mut holders: Vec<(u64, u32)> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.booklet != 0 && r.attrs & TOMBSTONE == 0 && r.national_id != 0)
            .map(|(row, r)| (r.booklet, row as u32))
            .collect();
        let booklet_capacity = capacity_for(holders.len());
        holders.sort_unstable_by_key(|&(key, row)| (home(key, booklet_capacity), key, row));
        let slots_at = place(holders.iter().map(|&(key, _)| home(key, booklet_capacity)));
        let booklet_len = slots_at
            .last()
            .map_or(0, |p| p + 1)
            .max(booklet_capacity as usize);
        let mut booklet_slots = vec![0u32; booklet_len];
        for ((_, row), pos) in holders.into_iter().zip(slots_at) {
            booklet_slots[pos] = row + 1;
        }

        let live = records
            .iter()
            .filter(|r| r.national_id != 0 && r.attrs & TOMBSTONE == 0)
            .count() as u64;
        let tombstones = records.iter().filter(|r| r.attrs & TOMBSTONE != 0).count() as u64;
        let body = Body {
            capacity,
            records,
            booklet_capacity,
            booklet_slots,
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

/// Applies the booklet policy to the kept rows (one per ID): an import refuses a booklet
/// number an earlier row already holds; a compaction keeps every claim (see [`Mode`]).
fn resolve_booklets(kept: &mut Vec<(PackedMember, Origin)>, mode: Mode) -> Vec<Rejected> {
    if mode == Mode::Compaction {
        return Vec::new();
    }
    let mut holders: Vec<(u64, Origin, usize)> = kept
        .iter()
        .enumerate()
        .filter(|(_, (r, _))| r.booklet != 0 && r.attrs & TOMBSTONE == 0)
        .map(|(i, (r, o))| (r.booklet, *o, i))
        .collect();
    holders.sort_unstable();
    let mut dropped = vec![false; kept.len()];
    let mut rejected = Vec::new();
    let mut first: Option<(u64, Origin, usize)> = None;
    for (key, origin, row) in holders {
        match first {
            Some((first_key, first_origin, first_row)) if first_key == key => {
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
            _ => first = Some((key, origin, row)),
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
