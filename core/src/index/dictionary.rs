//! The dictionaries records point into: masked names and the rare special conditions and
//! other insurers are stored once each, and a record keeps a 1-based index (0: none). Packing
//! a member into its fixed-size record interns its strings here.

use std::collections::HashMap;

use super::body::{
    pack_attrs, ArchivedBody, ExtrasEntry, PackedMember, NO_COVERAGE_END, TOMBSTONE,
};
use crate::member::view::{Extras, MemberView};
use crate::national_id::NationalId;

#[derive(Default)]
pub(super) struct Dictionaries {
    names: HashMap<String, u32>,
    name_list: Vec<String>,
    extras: HashMap<ExtrasEntry, u32>,
    extras_list: Vec<ExtrasEntry>,
}

impl Dictionaries {
    /// A body's dictionaries, at the same indices, so its records keep theirs.
    pub(super) fn of_body(body: &ArchivedBody) -> Dictionaries {
        let mut d = Dictionaries::default();
        for name in body.names.iter() {
            let name = name.as_str().to_string();
            d.name_list.push(name.clone());
            let i = d.name_list.len() as u32;
            d.names.entry(name).or_insert(i);
        }
        for entry in body.extras.iter() {
            let (special_conditions, other_insurers) = Extras::Archived(entry).to_owned_parts();
            let entry = ExtrasEntry {
                special_conditions,
                other_insurers,
            };
            d.extras_list.push(entry.clone());
            let i = d.extras_list.len() as u32;
            d.extras.entry(entry).or_insert(i);
        }
        d
    }

    fn intern_name(&mut self, masked: &str) -> u32 {
        if let Some(&i) = self.names.get(masked) {
            return i;
        }
        self.name_list.push(masked.to_string());
        let i = self.name_list.len() as u32;
        self.names.insert(masked.to_string(), i);
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

    /// A live member's record; its name is stored masked.
    pub(super) fn pack(&mut self, m: &MemberView<'_>) -> PackedMember {
        let name = match m.name.masked() {
            Some(masked) if !masked.is_empty() => self.intern_name(&masked),
            _ => 0,
        };
        let (special_conditions, other_insurers) = m.extras.to_owned_parts();
        let extras = self.intern_extras(ExtrasEntry {
            special_conditions,
            other_insurers,
        });
        PackedMember {
            national_id: m.national_id.as_u64(),
            version: m.version,
            main_national_id: m.main_national_id.map_or(0, NationalId::as_u64),
            booklet: m.booklet_no.map_or(0, |b| b.0),
            coverage_until: m.coverage_until.map_or(NO_COVERAGE_END, |d| d.0),
            name,
            extras,
            attrs: pack_attrs(m),
        }
    }

    /// The lists, in index order, for the body.
    pub(super) fn into_lists(self) -> (Vec<String>, Vec<ExtrasEntry>) {
        (self.name_list, self.extras_list)
    }
}

/// A delete marker's record: the ID and the version deleted.
pub(super) fn tombstone(id: NationalId, version: u64) -> PackedMember {
    PackedMember {
        national_id: id.as_u64(),
        version,
        coverage_until: NO_COVERAGE_END,
        attrs: TOMBSTONE,
        ..PackedMember::default()
    }
}
