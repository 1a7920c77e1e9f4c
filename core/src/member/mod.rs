//! The member record (docs/records.md): its JSON form, the rules every record must meet, and the
//! compact form the index keeps.
//!
//! Every path that reads records (JSON Lines import, change feed, PostgreSQL) goes through
//! [`Member::from_json`] or [`Member::from_raw`], so a record that breaks a rule is refused
//! the same way everywhere, with a message naming the field, and never reaches the index.

use std::borrow::Cow;

use serde::Deserialize;

use crate::dates::Day;
use crate::national_id::NationalId;
use view::{Extras, MemberView, Name};

/// Limits that keep one record small; real records are far below them.
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_CODES: usize = 16;
pub const MAX_CODE_LEN: usize = 32;
pub const MAX_BOOKLET_DIGITS: usize = 18;

mod values;
pub mod view;

pub use values::{
    ArchivedExtrasEntry, Booklet, ExtrasEntry, Kind, OtherInsurer, Relation, Scheme, Service,
    Services, Status,
};

/// A validated member, as records, change events and the overlay carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub national_id: NationalId,
    pub version: u64,
    pub kind: Kind,
    /// The main insured person's ID (dependents only).
    pub main_national_id: Option<NationalId>,
    pub relation: Option<Relation>,
    pub scheme: Scheme,
    pub status: Status,
    /// Last covered day, inclusive; `None` is open-ended.
    pub coverage_until: Option<i32>,
    pub services: Services,
    pub special_conditions: Vec<String>,
    pub other_insurers: Vec<OtherInsurer>,
    pub booklet_no: Option<Booklet>,
    pub display_name: Option<String>,
}

/// A record that breaks a rule: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RecordError {
    pub field: String,
    pub message: String,
}

impl RecordError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        RecordError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The JSON form as it arrives, before the rules are applied. Strings borrow from the
/// input where they can, so a record is parsed without copying what is thrown away.
#[derive(Debug, Default, Deserialize)]
pub struct RawRecord<'a> {
    #[serde(borrow, default)]
    pub national_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub main_national_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub relation: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub scheme: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub coverage_until: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub services: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    pub special_conditions: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    pub other_insurers: Option<Vec<RawInsurer>>,
    #[serde(borrow, default)]
    pub booklet_no: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub display_name: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub struct RawInsurer {
    pub code: Option<String>,
    pub primary: Option<bool>,
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, RecordError> {
    value.ok_or_else(|| RecordError::new(field, "is required"))
}

fn parse_enum<T>(
    value: &str,
    field: &str,
    parse: fn(&str) -> Option<T>,
    expected: String,
) -> Result<T, RecordError> {
    parse(value)
        .ok_or_else(|| RecordError::new(field, format!("{value:?} is not one of {expected}")))
}

fn parse_id(value: &str, field: &str) -> Result<NationalId, RecordError> {
    NationalId::parse(value).map_err(|e| RecordError::new(field, e.to_string()))
}

fn check_code(code: &str, field: &str) -> Result<(), RecordError> {
    let ok = !code.is_empty()
        && code.len() <= MAX_CODE_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RecordError::new(
            field,
            format!(
                "{code:?} is not a short lowercase code (a-z, 0-9, _ or -, at most {MAX_CODE_LEN})"
            ),
        ))
    }
}

impl Member {
    /// Parses and validates one record from JSON.
    pub fn from_json(json: &str) -> Result<Member, RecordError> {
        // The common case, a well-formed record, is parsed without tracking paths (the
        // change feed replays hundreds of thousands a second); a failure is parsed again to
        // name the field.
        if !json.trim_start().starts_with('{') {
            // serde would also read a struct from an array, by position.
            return Err(RecordError::new("record", "must be a JSON object"));
        }
        if let Ok(raw) = serde_json::from_str::<RawRecord>(json) {
            return Member::from_raw(raw);
        }
        let mut de = serde_json::Deserializer::from_str(json);
        let raw: RawRecord = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            match path.as_str() {
                // The value serde quotes may be anything, an ID included.
                "." | "" | "?" => RecordError::new("record", crate::redact::redact(&message)),
                // serde quotes the offending value; an ID must not reach a log that way.
                "national_id" | "main_national_id" => {
                    RecordError::new(path, "must be a string of 10 digits")
                }
                _ => RecordError::new(path, message),
            }
        })?;
        de.end()
            .map_err(|e| RecordError::new("record", crate::redact::redact(&e.to_string())))?;
        Member::from_raw(raw)
    }

    /// Reads a raw record's values into their types, then applies the rules of docs/records.md.
    pub fn from_raw(raw: RawRecord<'_>) -> Result<Member, RecordError> {
        let national_id = parse_id(&required(raw.national_id, "national_id")?, "national_id")?;
        let version = required(raw.version, "version")?;
        let kind = parse_enum(
            &required(raw.kind, "kind")?,
            "kind",
            Kind::parse,
            Kind::expected(),
        )?;
        let main_national_id = match raw.main_national_id {
            Some(main) => Some(parse_id(&main, "main_national_id")?),
            None => None,
        };
        let relation = match raw.relation {
            Some(r) => Some(parse_enum(
                &r,
                "relation",
                Relation::parse,
                Relation::expected(),
            )?),
            None => None,
        };
        let scheme = parse_enum(
            &required(raw.scheme, "scheme")?,
            "scheme",
            Scheme::parse,
            Scheme::expected(),
        )?;
        let status = parse_enum(
            &required(raw.status, "status")?,
            "status",
            Status::parse,
            Status::expected(),
        )?;
        let coverage_until = match raw.coverage_until {
            Some(d) => Some(
                Day::parse_iso(&d)
                    .map_err(|e| RecordError::new("coverage_until", format!("{d:?}: {e}")))?,
            ),
            None => None,
        };
        let mut services = Services::default();
        for s in required(raw.services, "services")? {
            services = services.with(parse_enum(
                &s,
                "services",
                Service::parse,
                Service::expected(),
            )?);
        }
        let special_conditions: Vec<String> = raw
            .special_conditions
            .unwrap_or_default()
            .into_iter()
            .map(Cow::into_owned)
            .collect();
        let mut other_insurers = Vec::new();
        for insurer in raw.other_insurers.unwrap_or_default() {
            let code = required(insurer.code, "other_insurers.code")?;
            let primary = required(insurer.primary, "other_insurers.primary")?;
            other_insurers.push(OtherInsurer { code, primary });
        }
        let booklet_no = match raw.booklet_no {
            Some(b) => Some(Booklet::parse(&b).filter(|_| b.is_ascii()).ok_or_else(|| {
                RecordError::new(
                    "booklet_no",
                    format!("{b:?} is not 1 to {MAX_BOOKLET_DIGITS} digits"),
                )
            })?),
            None => None,
        };
        let display_name = match raw.display_name {
            Some(name) => {
                validate_name(&name)?;
                Some(name.trim().to_string()).filter(|n| !n.is_empty())
            }
            None => None,
        };
        let member = Member {
            national_id,
            version,
            kind,
            main_national_id,
            relation,
            scheme,
            status,
            coverage_until: coverage_until.map(|d| d.0),
            services,
            special_conditions,
            other_insurers,
            booklet_no,
            display_name,
        };
        member.validate()?;
        Ok(member)
    }

    /// The rules that relate fields to each other and bound their sizes. Also run on every
    /// member read back from a snapshot, so a file that passes its checksum but holds
    /// impossible values is still refused.
    pub fn validate(&self) -> Result<(), RecordError> {
        self.view().validate()?;
        validate_extras(&self.special_conditions, &self.other_insurers)?;
        if let Some(n) = &self.display_name {
            validate_name(n)?;
        }
        Ok(())
    }

    /// The member as the rules and renderers read it.
    pub fn view(&self) -> MemberView<'_> {
        MemberView {
            national_id: self.national_id,
            version: self.version,
            kind: self.kind,
            main_national_id: self.main_national_id,
            relation: self.relation,
            scheme: self.scheme,
            status: self.status,
            coverage_until: self.coverage_day(),
            services: self.services,
            booklet_no: self.booklet_no,
            name: self.display_name.as_deref().map_or(Name::None, Name::Full),
            extras: if self.special_conditions.is_empty() && self.other_insurers.is_empty() {
                Extras::None
            } else {
                Extras::Owned {
                    conditions: &self.special_conditions,
                    insurers: &self.other_insurers,
                }
            },
        }
    }

    pub fn coverage_day(&self) -> Option<Day> {
        self.coverage_until.map(Day)
    }

    /// The record's JSON form (docs/records.md).
    pub fn to_json(&self) -> String {
        let value = serde_json::json!({
            "national_id": self.national_id.to_string(),
            "version": self.version,
            "kind": self.kind.as_str(),
            "main_national_id": self.main_national_id.map(|m| m.to_string()),
            "relation": self.relation.map(Relation::as_str),
            "scheme": self.scheme.as_str(),
            "status": self.status.as_str(),
            "coverage_until": self.coverage_day().map(|d| d.to_string()),
            "services": self.services.iter().map(Service::as_str).collect::<Vec<_>>(),
            "special_conditions": self.special_conditions,
            "other_insurers": self.other_insurers,
            "booklet_no": self.booklet_no.map(|b| b.to_string()),
            "display_name": self.display_name,
        });
        value.to_string()
    }
}

/// Special conditions and other insurers: short codes, bounded counts, one primary.
pub fn validate_extras(
    conditions: &[String],
    insurers: &[OtherInsurer],
) -> Result<(), RecordError> {
    if conditions.len() > MAX_CODES {
        return Err(RecordError::new(
            "special_conditions",
            format!("at most {MAX_CODES} codes"),
        ));
    }
    for c in conditions {
        check_code(c, "special_conditions")?;
    }
    if insurers.len() > MAX_CODES {
        return Err(RecordError::new(
            "other_insurers",
            format!("at most {MAX_CODES} insurers"),
        ));
    }
    for i in insurers {
        check_code(&i.code, "other_insurers.code")?;
    }
    if insurers.iter().filter(|i| i.primary).count() > 1 {
        return Err(RecordError::new(
            "other_insurers",
            "at most one insurer can be primary",
        ));
    }
    Ok(())
}

/// A display name, full or masked: no control characters anywhere, and at most
/// [`MAX_NAME_CHARS`] characters once white space is trimmed from both ends. One rule for
/// every name eligd reads or stores: records on the way in, the masked names a snapshot
/// keeps (which [`mask_name`] keeps within it), and the `members_display_name_rule` of
/// deploy/postgres/schema.sql.
pub fn validate_name(name: &str) -> Result<(), RecordError> {
    if name.chars().any(char::is_control) {
        return Err(RecordError::new(
            "display_name",
            "contains control characters",
        ));
    }
    if name.trim().chars().count() > MAX_NAME_CHARS {
        return Err(RecordError::new(
            "display_name",
            format!("at most {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(())
}

/// The name as providers may see it: the first given name, the first letter of the family
/// name, then `***` ("علی رضایی" → "علی ر***"). A single word shows only its first letter.
/// A given name so long that the masked form would pass [`MAX_NAME_CHARS`] is cut, so the
/// masked name of every valid name is itself a valid name (snapshots store masked names and
/// check them with [`validate_name`] when loaded).
pub fn mask_name(name: &str) -> String {
    /// A space, the family initial and `***`.
    const AFTER_GIVEN: usize = 5;
    let mut words = name.split_whitespace();
    let Some(first) = words.next() else {
        return String::new();
    };
    match words.last() {
        Some(family) => {
            let given: String = first.chars().take(MAX_NAME_CHARS - AFTER_GIVEN).collect();
            let initial: String = family.chars().take(1).collect();
            format!("{given} {initial}***")
        }
        None => {
            let initial: String = first.chars().take(1).collect();
            format!("{initial}***")
        }
    }
}

#[cfg(test)]
mod tests;
