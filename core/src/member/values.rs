//! The closed vocabularies of a record (kind, relation, scheme, status, services) and its
//! small value types (booklet number, other insurer), each with its JSON spelling.

use serde::{Deserialize, Serialize};

use super::MAX_BOOKLET_DIGITS;
use crate::national_id::digit_value;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            /// The variant with this position in `ALL` (how snapshots store it).
            pub fn from_index(i: u8) -> Option<Self> {
                Self::ALL.get(usize::from(i)).copied()
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
            pub(super) fn expected() -> String {
                [$($text),+].join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Whether the person holds their own insurance, holds it through a main insured person,
    /// or draws a pension.
    Kind { Main = "main", Dependent = "dependent", Pensioner = "pensioner" }
);
string_enum!(Relation { Spouse = "spouse", Child = "child", Parent = "parent", Other = "other" });
string_enum!(Scheme {
    Mandatory = "mandatory",
    Voluntary = "voluntary",
    SelfEmployed = "self_employed",
    Housewife = "housewife",
    Driver = "driver",
    Pensioner = "pensioner",
    Other = "other",
});
string_enum!(Status { Active = "active", Suspended = "suspended", Deceased = "deceased" });
string_enum!(
    /// A category of treatment a person may be covered for.
    Service {
        Outpatient = "outpatient",
        Inpatient = "inpatient",
        Pharmacy = "pharmacy",
        Paraclinic = "paraclinic",
        Dental = "dental",
    }
);

/// A set of services as a bit set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Services(pub u8);

impl Services {
    pub fn with(self, s: Service) -> Services {
        Services(self.0 | 1 << s as u8)
    }
    pub fn without(self, s: Service) -> Services {
        Services(self.0 & !(1 << s as u8))
    }
    pub fn contains(self, s: Service) -> bool {
        self.0 & (1 << s as u8) != 0
    }
    pub fn iter(self) -> impl Iterator<Item = Service> {
        Service::ALL
            .iter()
            .copied()
            .filter(move |s| self.contains(*s))
    }
    pub fn all() -> Services {
        Service::ALL.iter().fold(Services(0), |acc, s| acc.with(*s))
    }
}

/// A booklet number: a digit string whose leading zeros matter, kept as one integer by
/// prefixing a `1` (so `0930` is stored as `10930`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Booklet(pub u64);

impl Booklet {
    /// Parses 1 to 18 digits in any of the three digit scripts.
    pub fn parse(s: &str) -> Option<Booklet> {
        let mut value: u64 = 1;
        let mut count = 0;
        for c in s.chars() {
            let d = digit_value(c)?;
            count += 1;
            if count > MAX_BOOKLET_DIGITS {
                return None;
            }
            value = value * 10 + u64::from(d);
        }
        (count > 0).then_some(Booklet(value))
    }
}

impl Booklet {
    /// Whether the stored integer encodes 1 to 18 digits.
    pub fn is_well_formed(self) -> bool {
        (10..2 * 10u64.pow(MAX_BOOKLET_DIGITS as u32)).contains(&self.0)
    }
}

impl std::fmt::Display for Booklet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.to_string();
        f.write_str(s.get(1..).unwrap_or(""))
    }
}

/// Another fund that also covers the person.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct OtherInsurer {
    pub code: String,
    pub primary: bool,
}

/// Special conditions and other insurers, as a snapshot stores them: shared by every record with the same ones.
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize)]
#[rkyv(derive(Debug))]
pub struct ExtrasEntry {
    pub special_conditions: Vec<String>,
    pub other_insurers: Vec<OtherInsurer>,
}
