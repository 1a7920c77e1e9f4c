//! The dictionaries records point into: masked names and the rare special conditions and
//! other insurers are stored once each, and a record keeps a 1-based index (0: none). Packing
//! a member into its fixed-size record interns its strings here. Each distinct entry is held
//! once: in the list the body is written from, with a table of indices (4 bytes and a control
//! byte an entry) to find it by, not a second copy as a map's key.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::body::{
    pack_attrs, ArchivedBody, ExtrasEntry, PackedMember, NO_COVERAGE_END, TOMBSTONE,
};
use crate::member::view::{Extras, MemberView};
use crate::national_id::NationalId;

#[derive(Default)]
pub(super) struct Dictionaries {
    /// 1-based indices into `name_list`, by the name's hash.
    names: HashTable<u32>,
    name_list: Vec<String>,
    extras: HashTable<u32>,
    extras_list: Vec<ExtrasEntry>,
    state: foldhash::fast::FixedState,
}

/// Finds `value` in `list` through `table`, or appends it; its 1-based index.
fn intern<T: std::hash::Hash + Eq + ?Sized, O: std::borrow::Borrow<T>>(
    table: &mut HashTable<u32>,
    list: &mut Vec<O>,
    state: &foldhash::fast::FixedState,
    value: &T,
    owned: impl FnOnce() -> O,
) -> u32 {
    let hash = state.hash_one(value);
    if let Some(&i) = table.find(hash, |&i| list[i as usize - 1].borrow() == value) {
        return i;
    }
    list.push(owned());
    let i = list.len() as u32;
    let listed = &*list;
    table.insert_unique(hash, i, |&j| {
        state.hash_one(listed[j as usize - 1].borrow())
    });
    i
}

impl Dictionaries {
    /// A body's dictionaries, at the same indices, so its records keep theirs.
    pub(super) fn of_body(body: &ArchivedBody) -> Dictionaries {
        let mut d = Dictionaries::default();
        for name in body.names.iter() {
            d.append_name(name.as_str().to_string());
        }
        for entry in body.extras.iter() {
            let (special_conditions, other_insurers) = Extras::Archived(entry).to_owned_parts();
            d.append_extras(ExtrasEntry {
                special_conditions,
                other_insurers,
            });
        }
        d
    }

    /// Appends at the next index (a body's entries are distinct; a repeat would be found
    /// at its first index).
    fn append_name(&mut self, name: String) {
        self.name_list.push(name);
        let i = self.name_list.len() as u32;
        let (list, state) = (&self.name_list, &self.state);
        let hash = state.hash_one(list[i as usize - 1].as_str());
        self.names
            .insert_unique(hash, i, |&j| state.hash_one(list[j as usize - 1].as_str()));
    }

    fn append_extras(&mut self, entry: ExtrasEntry) {
        self.extras_list.push(entry);
        let i = self.extras_list.len() as u32;
        let (list, state) = (&self.extras_list, &self.state);
        let hash = state.hash_one(&list[i as usize - 1]);
        self.extras
            .insert_unique(hash, i, |&j| state.hash_one(&list[j as usize - 1]));
    }

    fn intern_name(&mut self, masked: &str) -> u32 {
        intern::<str, String>(
            &mut self.names,
            &mut self.name_list,
            &self.state,
            masked,
            || masked.to_string(),
        )
    }

    fn intern_extras(&mut self, entry: ExtrasEntry) -> u32 {
        if entry.special_conditions.is_empty() && entry.other_insurers.is_empty() {
            return 0;
        }
        intern::<ExtrasEntry, ExtrasEntry>(
            &mut self.extras,
            &mut self.extras_list,
            &self.state,
            &entry,
            || entry.clone(),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_entry_is_interned_once_and_a_body_keeps_its_indices() {
        let mut d = Dictionaries::default();
        let (a, b) = (d.intern_name("Ali M***"), d.intern_name("Sara K***"));
        assert_eq!((a, b), (1, 2));
        assert_eq!(d.intern_name("Ali M***"), 1);
        for i in 0..10_000 {
            d.intern_name(&format!("name {i} N***"));
        }
        assert_eq!(d.intern_name("Sara K***"), 2);
        assert_eq!(d.intern_name("name 9999 N***"), 10_002);
        let entry = ExtrasEntry {
            special_conditions: vec!["dialysis".into()],
            other_insurers: Vec::new(),
        };
        assert_eq!(d.intern_extras(entry.clone()), 1);
        assert_eq!(d.intern_extras(entry), 1);
        let none = ExtrasEntry {
            special_conditions: Vec::new(),
            other_insurers: Vec::new(),
        };
        assert_eq!(d.intern_extras(none), 0);
        let (names, _) = d.into_lists();
        assert_eq!(names.len(), 10_002);
    }
}
