//! One change-feed entry (docs/records.md) turned into a change for the index.
//!
//! The stream carries two kinds of entries: native ones (`op`, `national_id`, `version`,
//! `member`) written by our own relay, and the ones Debezium Server's Redis sink writes from
//! the reference PostgreSQL table, in its `compact` or `extended` layout. Both end as the
//! same [`Change`], and a row goes through the same record rules as every other path.
//!
//! An entry that cannot be used is a [`Rejection`], never a panic or a stopped feed: the
//! reader counts it under [`Rejection::reason`], logs it and moves on. Rejections are logged,
//! so their text never carries a national ID in clear, valid or not; messages that may quote
//! input (serde's, or a record rule's) pass through `redact` first.
//!
//! Native entries are the catch-up path (hundreds of thousands a second), so they are read
//! by a linear scan over the fields, without copies; Debezium entries may use `Value`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::native;
use crate::dates::Day;
use crate::index::Change;
use crate::member::{Member, RawInsurer, RawRecord, RecordError};
use crate::national_id::NationalId;
use crate::redact::redact;

/// What an entry means.
#[derive(Debug, PartialEq)]
pub enum Event {
    Change(Change),
    /// A Debezium tombstone (value "default"), which carries nothing to apply.
    Tombstone,
}

/// Why an entry was skipped. `Display` names the problem and never contains a national ID.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Rejection {
    /// Not a usable entry: missing or unreadable fields, bad JSON, not an envelope.
    #[error("malformed entry: {0}")]
    Malformed(String),
    /// The record (native `member` or Debezium row) breaks the record rules (docs/records.md).
    #[error("invalid record: {0}")]
    Invalid(RecordError),
    /// The entry's parts disagree (native fields against the member, a key against its row).
    #[error("inconsistent entry: {0}")]
    Inconsistent(String),
    /// Well formed, but not something the index can apply (a truncate, an unknown op).
    #[error("unsupported entry: {0}")]
    Unsupported(String),
}

impl Rejection {
    /// A closed, short label for the metric `eligd_feed_events_rejected_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::Invalid(_) => "invalid_record",
            Rejection::Inconsistent(_) => "inconsistent",
            Rejection::Unsupported(_) => "unsupported",
        }
    }
}

/// An entry's field/value pairs.
type Fields = [(Vec<u8>, Vec<u8>)];
/// A table row as Debezium writes it, column name → value.
type Row = Map<String, Value>;
/// A text column read for a [`RawRecord`], borrowing from the row.
type Text<'r> = Result<Option<Cow<'r, str>>, RecordError>;

/// What Debezium Server writes for a null key or value (its `null.key` / `null.value`).
const DEBEZIUM_NULL: &str = "default";

const REPLICA_IDENTITY_HINT: &str = "deletes need the whole old row: set REPLICA IDENTITY FULL \
     on the table";

/// Parses one entry's field/value pairs (raw bytes, in stream order).
pub fn parse_entry(fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Event, Rejection> {
    if fields.is_empty() {
        return Err(malformed("the entry has no fields"));
    }
    if let Some(op) = field(fields, native::OP.as_bytes()) {
        return native(fields, op);
    }
    if let Some(value) = field(fields, b"value") {
        return debezium(field(fields, b"key"), value);
    }
    if let [(key, value)] = fields {
        return debezium(Some(key), value);
    }
    Err(malformed(
        "neither native (no op field) nor Debezium (no value field, and more than one field)",
    ))
}

/// The value of the first field with this name. Entries have a handful of fields, so a scan
/// beats building a map.
fn field<'f>(fields: &'f Fields, name: &[u8]) -> Option<&'f [u8]> {
    fields
        .iter()
        .find(|(n, _)| n.as_slice() == name)
        .map(|(_, v)| v.as_slice())
}

fn required<'f>(fields: &'f Fields, name: &str) -> Result<&'f [u8], Rejection> {
    field(fields, name.as_bytes()).ok_or_else(|| malformed(format!("{name}: missing")))
}

fn text<'b>(bytes: &'b [u8], name: &str) -> Result<&'b str, Rejection> {
    std::str::from_utf8(bytes).map_err(|_| malformed(format!("{name}: not UTF-8")))
}

fn native(fields: &Fields, op: &[u8]) -> Result<Event, Rejection> {
    match std::str::from_utf8(op) {
        Ok(native::OP_UPSERT) => {
            let national_id = native_id(fields)?;
            let version = native_version(fields)?;
            let json = text(required(fields, native::MEMBER)?, native::MEMBER)?;
            let member = Member::from_json(json).map_err(invalid)?;
            let differs = if member.national_id != national_id {
                "national_id"
            } else if member.version != version {
                "version"
            } else {
                return Ok(Event::Change(Change::Upsert(member)));
            };
            Err(inconsistent(format!(
                "the {differs} field differs from the member's {differs}"
            )))
        }
        Ok(native::OP_DELETE) => {
            let national_id = native_id(fields)?;
            let version = native_version(fields)?;
            if version == 0 {
                return Err(malformed("version: must be at least 1"));
            }
            Ok(Event::Change(Change::Delete {
                national_id,
                version,
            }))
        }
        _ => Err(unsupported(format!(
            "op {} is not upsert or delete",
            shown_op(text(op, "op")?)
        ))),
    }
}

fn native_id(fields: &Fields) -> Result<NationalId, Rejection> {
    let id = text(required(fields, native::NATIONAL_ID)?, native::NATIONAL_ID)?;
    NationalId::parse(id).map_err(|e| malformed(format!("national_id: {e}")))
}

fn native_version(fields: &Fields) -> Result<u64, Rejection> {
    parse_decimal(required(fields, native::VERSION)?)
        .ok_or_else(|| malformed("version: must be a decimal integer (u64)"))
}

/// Plain ASCII digits only: `str::parse` would also take a leading `+`.
fn parse_decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// An op is echoed only when it looks like one, so arbitrary input never reaches a log.
fn shown_op(op: &str) -> String {
    let plain = !op.is_empty() && op.len() <= 16 && op.bytes().all(|b| b.is_ascii_alphabetic());
    if plain {
        format!("{op:?}")
    } else {
        "(unreadable)".into()
    }
}

fn debezium(key: Option<&[u8]>, value: &[u8]) -> Result<Event, Rejection> {
    let value = text(value, "value")?;
    if value == DEBEZIUM_NULL {
        return Ok(Event::Tombstone);
    }
    let value: Value = serde_json::from_str(value)
        .map_err(|e| malformed(format!("value: not valid JSON ({e})")))?;
    let envelope = unwrap_payload(&value, "op");
    if envelope.is_null() {
        return Ok(Event::Tombstone);
    }
    let envelope = envelope
        .as_object()
        .ok_or_else(|| malformed("value: not a Debezium envelope (not a JSON object)"))?;
    let key_id = key_national_id(key)?;
    let op = envelope.get("op").and_then(Value::as_str).ok_or_else(|| {
        malformed("value: not a Debezium envelope (no op; flattened events are not supported)")
    })?;
    match op {
        "c" | "u" | "r" => {
            let after = envelope
                .get("after")
                .and_then(Value::as_object)
                .ok_or_else(|| malformed(format!("op {op:?} without an after row")))?;
            let raw = raw_record(after).map_err(invalid)?;
            let member = Member::from_raw(raw).map_err(invalid)?;
            agree(key_id, member.national_id)?;
            Ok(Event::Change(Change::Upsert(member)))
        }
        "d" => {
            let before = envelope
                .get("before")
                .and_then(Value::as_object)
                .ok_or_else(|| malformed(format!("before: missing; {REPLICA_IDENTITY_HINT}")))?;
            let national_id = match id_column(before, "national_id").map_err(invalid)? {
                Some(id) => NationalId::parse(&id)
                    .map_err(|e| invalid(RecordError::new("national_id", e.to_string())))?,
                None => return Err(invalid(RecordError::new("national_id", "is required"))),
            };
            // REPLICA IDENTITY DEFAULT sends only the key columns, the others null (or zero
            // when declared NOT NULL); a delete without its version could never be ordered.
            let version = match version_column(before).map_err(invalid)? {
                Some(v) if v > 0 => v,
                _ => {
                    return Err(malformed(format!(
                        "before.version: missing or 0; {REPLICA_IDENTITY_HINT}"
                    )))
                }
            };
            agree(key_id, national_id)?;
            Ok(Event::Change(Change::Delete {
                national_id,
                version,
            }))
        }
        "t" => Err(unsupported(
            "op \"t\" (truncate): the feed never empties the index; rebuild from a snapshot",
        )),
        other => Err(unsupported(format!(
            "Debezium op {} is not c, u, r or d",
            shown_op(other)
        ))),
    }
}

/// `{"schema": …, "payload": …}` (Kafka's JSON converter with schemas) → the payload. An
/// object that has `marker` is already the inner value.
fn unwrap_payload<'v>(value: &'v Value, marker: &str) -> &'v Value {
    match value.as_object() {
        Some(o) if !o.contains_key(marker) => o.get("payload").unwrap_or(value),
        _ => value,
    }
}

/// The national ID the key names; `None` when there is no key (null, empty, or Debezium's
/// `default` placeholder).
fn key_national_id(key: Option<&[u8]>) -> Result<Option<NationalId>, Rejection> {
    let Some(key) = key else { return Ok(None) };
    let key = text(key, "key")?.trim();
    if key.is_empty() || key == "null" || key == DEBEZIUM_NULL {
        return Ok(None);
    }
    let key: Value =
        serde_json::from_str(key).map_err(|e| malformed(format!("key: not valid JSON ({e})")))?;
    let key = unwrap_payload(&key, "national_id");
    if key.is_null() {
        return Ok(None);
    }
    let id = key
        .get("national_id")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("key: has no national_id string"))?;
    NationalId::parse(id)
        .map(Some)
        .map_err(|e| malformed(format!("key: national_id: {e}")))
}

fn agree(key: Option<NationalId>, row: NationalId) -> Result<(), Rejection> {
    match key {
        Some(k) if k != row => Err(inconsistent(
            "the key's national_id differs from the row's national_id",
        )),
        _ => Ok(()),
    }
}

/// A row of the reference table as a raw record, reading Debezium's type mappings; the
/// record rules are applied afterwards by [`Member::from_raw`], as on every path.
fn raw_record(row: &Row) -> Result<RawRecord<'_>, RecordError> {
    Ok(RawRecord {
        national_id: id_column(row, "national_id")?,
        version: version_column(row)?,
        kind: str_column(row, "kind")?,
        main_national_id: id_column(row, "main_national_id")?,
        relation: str_column(row, "relation")?,
        scheme: str_column(row, "scheme")?,
        status: str_column(row, "status")?,
        coverage_until: date_column(row, "coverage_until")?,
        services: str_array_column(row, "services")?,
        special_conditions: str_array_column(row, "special_conditions")?,
        other_insurers: insurers_column(row, "other_insurers")?,
        booklet_no: str_column(row, "booklet_no")?,
        display_name: str_column(row, "display_name")?,
    })
}

/// A column's value, with SQL NULL and an absent column both `None`.
fn column<'r>(row: &'r Row, name: &str) -> Option<&'r Value> {
    row.get(name).filter(|v| !v.is_null())
}

fn str_column<'r>(row: &'r Row, name: &str) -> Text<'r> {
    match column(row, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(Cow::Borrowed(s))),
        Some(_) => Err(RecordError::new(name, "must be a string or null")),
    }
}

/// Like [`str_column`], but a wrongly typed value is not described, since it may be an ID.
fn id_column<'r>(row: &'r Row, name: &str) -> Text<'r> {
    str_column(row, name).map_err(|_| RecordError::new(name, "must be a string of 10 digits"))
}

/// `bigint` arrives as a number; `numeric` (with `decimal.handling.mode=string`) as a string.
fn version_column(row: &Row) -> Result<Option<u64>, RecordError> {
    let version = match column(row, "version") {
        None => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => parse_decimal(s.as_bytes()),
        Some(_) => None,
    };
    version.map(Some).ok_or_else(|| {
        RecordError::new(
            "version",
            "must be a non-negative whole number (a JSON number or a decimal string)",
        )
    })
}

/// A `date` column arrives as days since 1970-01-01 (`io.debezium.time.Date`), or as an
/// ISO string from other converters; both become the ISO form the record rules read.
fn date_column<'r>(row: &'r Row, name: &str) -> Text<'r> {
    match column(row, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(Cow::Borrowed(s))),
        Some(Value::Number(n)) => {
            let day = n
                .as_i64()
                .and_then(|d| i32::try_from(d).ok())
                .map(Day)
                .filter(|d| d.in_supported_range())
                .ok_or_else(|| {
                    RecordError::new(name, "days since 1970-01-01 outside 1900-01-01..2199-12-31")
                })?;
            Ok(Some(Cow::Owned(day.to_string())))
        }
        Some(_) => Err(RecordError::new(
            name,
            "must be an ISO date, a count of days since 1970-01-01, or null",
        )),
    }
}

fn str_array_column<'r>(
    row: &'r Row,
    name: &str,
) -> Result<Option<Vec<Cow<'r, str>>>, RecordError> {
    let Some(value) = column(row, name) else {
        return Ok(None);
    };
    let wrong = || RecordError::new(name, "must be an array of strings");
    value
        .as_array()
        .ok_or_else(wrong)?
        .iter()
        .map(|v| v.as_str().map(Cow::Borrowed).ok_or_else(wrong))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A `jsonb` column arrives as a string holding the JSON (`io.debezium.data.Json`), or
/// already parsed when a converter did it.
fn insurers_column(row: &Row, name: &str) -> Result<Option<Vec<RawInsurer>>, RecordError> {
    // serde's messages would quote the values, so only the expected shape is named.
    let wrong = || {
        RecordError::new(
            name,
            "must be an array of {code, primary} (or its JSON text)",
        )
    };
    match column(row, name) {
        None => Ok(None),
        Some(Value::String(s)) => serde_json::from_str(s).map_err(|_| wrong()),
        Some(v) => Option::<Vec<RawInsurer>>::deserialize(v).map_err(|_| wrong()),
    }
}

fn malformed(message: impl AsRef<str>) -> Rejection {
    Rejection::Malformed(redact(message.as_ref()))
}

fn inconsistent(message: impl AsRef<str>) -> Rejection {
    Rejection::Inconsistent(redact(message.as_ref()))
}

fn unsupported(message: impl AsRef<str>) -> Rejection {
    Rejection::Unsupported(redact(message.as_ref()))
}

fn invalid(e: RecordError) -> Rejection {
    Rejection::Invalid(RecordError::new(redact(&e.field), redact(&e.message)))
}

#[cfg(test)]
mod tests;
