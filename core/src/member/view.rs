//! A member as the rules and the renderers read it, whichever layer holds it: borrowed from
//! a memory-mapped snapshot record (names and extras from the snapshot's dictionaries) or
//! from an overlay [`Member`]. Copying a view copies a few words, never strings.

use std::borrow::Cow;

use super::{
    mask_name, Booklet, Kind, Member, OtherInsurer, RecordError, Relation, Scheme, Services, Status,
};
use crate::dates::Day;
use crate::member::ArchivedExtrasEntry;
use crate::national_id::NationalId;

#[derive(Clone, Copy, Debug)]
pub struct MemberView<'a> {
    pub national_id: NationalId,
    pub version: u64,
    pub kind: Kind,
    pub main_national_id: Option<NationalId>,
    pub relation: Option<Relation>,
    pub scheme: Scheme,
    pub status: Status,
    /// Last covered day, inclusive; `None` is open-ended.
    pub coverage_until: Option<Day>,
    pub services: Services,
    pub booklet_no: Option<Booklet>,
    pub name: Name<'a>,
    pub extras: Extras<'a>,
}

/// The display name: full in an overlay member, already masked in a snapshot (snapshots
/// never hold full names).
#[derive(Clone, Copy, Debug)]
pub enum Name<'a> {
    None,
    Full(&'a str),
    Masked(&'a str),
}

impl<'a> Name<'a> {
    /// The masked form shown to providers (`علی ر***`).
    pub fn masked(self) -> Option<Cow<'a, str>> {
        match self {
            Name::None => None,
            Name::Full(full) => Some(Cow::Owned(mask_name(full))),
            Name::Masked(masked) => Some(Cow::Borrowed(masked)),
        }
    }
}

/// Special conditions and other insurers.
#[derive(Clone, Copy, Debug)]
pub enum Extras<'a> {
    Owned {
        conditions: &'a [String],
        insurers: &'a [OtherInsurer],
    },
    Archived(&'a ArchivedExtrasEntry),
    None,
}

impl<'a> Extras<'a> {
    pub fn special_conditions(self) -> Vec<&'a str> {
        match self {
            Extras::Owned { conditions, .. } => conditions.iter().map(String::as_str).collect(),
            Extras::Archived(e) => e.special_conditions.iter().map(|c| c.as_str()).collect(),
            Extras::None => Vec::new(),
        }
    }

    /// Calls `each(position, condition)` for every special condition, in order (what the
    /// answer renderer uses: no list is built).
    pub fn for_each_special_condition(self, mut each: impl FnMut(usize, &'a str)) {
        match self {
            Extras::Owned { conditions, .. } => {
                conditions.iter().enumerate().for_each(|(i, c)| each(i, c));
            }
            Extras::Archived(e) => e
                .special_conditions
                .iter()
                .enumerate()
                .for_each(|(i, c)| each(i, c.as_str())),
            Extras::None => {}
        }
    }

    /// Another insurer marked primary, if any.
    pub fn primary_insurer(self) -> Option<&'a str> {
        match self {
            Extras::Owned { insurers, .. } => {
                insurers.iter().find(|i| i.primary).map(|i| i.code.as_str())
            }
            Extras::Archived(e) => e
                .other_insurers
                .iter()
                .find(|i| i.primary)
                .map(|i| i.code.as_str()),
            Extras::None => None,
        }
    }

    /// An owned copy, for rebuilding records.
    pub fn to_owned_parts(self) -> (Vec<String>, Vec<OtherInsurer>) {
        match self {
            Extras::Owned {
                conditions,
                insurers,
            } => (conditions.to_vec(), insurers.to_vec()),
            Extras::Archived(e) => (
                e.special_conditions
                    .iter()
                    .map(|c| c.as_str().to_string())
                    .collect(),
                e.other_insurers
                    .iter()
                    .map(|i| OtherInsurer {
                        code: i.code.as_str().to_string(),
                        primary: i.primary,
                    })
                    .collect(),
            ),
            Extras::None => (Vec::new(), Vec::new()),
        }
    }
}

impl MemberView<'_> {
    /// The rules that relate fields to each other (docs/records.md), shared by records read
    /// from JSON and records read back from a snapshot.
    pub fn validate(&self) -> Result<(), RecordError> {
        NationalId::from_u64(self.national_id.as_u64())
            .map_err(|e| RecordError::new("national_id", e.to_string()))?;
        if self.version == 0 {
            return Err(RecordError::new("version", "must be at least 1"));
        }
        match (self.kind, self.main_national_id) {
            (Kind::Dependent, None) => {
                return Err(RecordError::new(
                    "main_national_id",
                    "is required when kind is dependent",
                ))
            }
            (Kind::Dependent, Some(main)) => {
                NationalId::from_u64(main.as_u64())
                    .map_err(|e| RecordError::new("main_national_id", e.to_string()))?;
                if main == self.national_id {
                    return Err(RecordError::new(
                        "main_national_id",
                        "a dependent cannot be its own main insured",
                    ));
                }
            }
            (_, Some(_)) => {
                return Err(RecordError::new(
                    "main_national_id",
                    "only dependents have a main insured",
                ))
            }
            (_, None) => {}
        }
        if self.relation.is_some() && self.kind != Kind::Dependent {
            return Err(RecordError::new(
                "relation",
                "only dependents have a relation",
            ));
        }
        if self.coverage_until.is_some_and(|d| !d.in_supported_range()) {
            return Err(RecordError::new(
                "coverage_until",
                "outside 1900-01-01..2199-12-31",
            ));
        }
        if self.services.0 & !Services::all().0 != 0 {
            return Err(RecordError::new("services", "unknown service bits"));
        }
        if let Some(b) = self.booklet_no {
            if !b.is_well_formed() {
                return Err(RecordError::new(
                    "booklet_no",
                    "not a stored booklet number",
                ));
            }
        }
        Ok(())
    }

    /// An owned member with the same content (the name as the view holds it).
    pub fn to_member(&self) -> Member {
        let (special_conditions, other_insurers) = self.extras.to_owned_parts();
        Member {
            national_id: self.national_id,
            version: self.version,
            kind: self.kind,
            main_national_id: self.main_national_id,
            relation: self.relation,
            scheme: self.scheme,
            status: self.status,
            coverage_until: self.coverage_until.map(|d| d.0),
            services: self.services,
            special_conditions,
            other_insurers,
            booklet_no: self.booklet_no,
            display_name: match self.name {
                Name::None => None,
                Name::Full(n) | Name::Masked(n) => Some(n.to_string()),
            },
        }
    }
}
