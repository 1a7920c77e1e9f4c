//! The JSON eligibility answer (docs/openapi.yaml, `Eligibility`), rendered from what the
//! pipeline decided straight into the response buffer: the fields in their documented order,
//! dates and numbers written digit by digit, strings escaped as `serde_json` escapes them.
//! This is the hot path of every provider's request, so nothing here builds an intermediate
//! value, formats through `fmt`, or allocates beyond the one output buffer. The test at the
//! bottom holds it byte for byte to the `serde` rendering it replaced.

use crate::dates::{push_digits, write_rfc3339_utc_ms};
use crate::eligibility::primary_insurer;
use crate::inquiry::Answer;

/// What an answer usually takes; the buffer grows past it only for long names or lists.
pub const TYPICAL_BYTES: usize = 640;

/// Appends `s` as a JSON string: `"` and `\` escaped, control characters as `\n`-style
/// escapes or `\u00XX`, everything else (non-ASCII included) as is, exactly as `serde_json`.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(b"0123456789abcdef"[usize::from(b >> 4)]);
            out.push(b"0123456789abcdef"[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends a string the service itself defines (codes, statuses, tracking codes: ASCII with
/// nothing to escape) without scanning it.
fn push_plain(out: &mut Vec<u8>, s: &str) {
    debug_assert!(s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Appends `"key":` (keys are constants without characters to escape).
fn key(out: &mut Vec<u8>, key: &str) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn push_u64(out: &mut Vec<u8>, v: u64) {
    let width = v.checked_ilog10().map_or(1, |l| l as usize + 1);
    push_digits(out, v, width);
}

fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

fn push_opt_day(out: &mut Vec<u8>, day: Option<crate::dates::Day>) {
    match day {
        Some(day) => {
            out.push(b'"');
            day.write_iso(out);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

fn push_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn push_id(out: &mut Vec<u8>, id: crate::national_id::NationalId) {
    out.push(b'"');
    push_digits(out, id.as_u64(), 10);
    out.push(b'"');
}

/// Appends the answer for one person as a JSON object.
pub fn write(out: &mut Vec<u8>, decided: &Answer<'_>, tracking_code: &str) {
    let found = &decided.evaluated;
    let m = found.member.view();
    let d = &found.decision;
    out.push(b'{');
    key(out, "tracking_code");
    push_plain(out, tracking_code);
    out.push(b',');
    key(out, "national_id");
    push_id(out, m.national_id);
    out.push(b',');
    key(out, "as_of");
    push_opt_day(out, Some(decided.as_of));
    out.push(b',');
    key(out, "eligible");
    out.extend_from_slice(if d.eligible() { b"true" } else { b"false" });
    out.push(b',');
    key(out, "status");
    push_plain(out, d.outcome.as_str());
    out.push(b',');
    key(out, "coverage_until");
    push_opt_day(out, d.coverage_until);
    out.push(b',');
    key(out, "days_remaining");
    match d.days_remaining {
        Some(days) => push_i64(out, i64::from(days)),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b',');
    key(out, "kind");
    push_plain(out, m.kind.as_str());
    out.push(b',');
    key(out, "relation");
    match m.relation {
        Some(relation) => push_plain(out, relation.as_str()),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b',');
    key(out, "scheme");
    push_plain(out, m.scheme.as_str());
    if let Some((standing, until)) = d.main {
        out.push(b',');
        key(out, "main_insured");
        out.push(b'{');
        key(out, "national_id");
        match m.main_national_id {
            Some(id) => {
                let mut digits = Vec::with_capacity(10);
                push_digits(&mut digits, id.as_u64(), 10);
                out.push(b'"');
                out.extend_from_slice(&digits[..3]);
                out.extend_from_slice(b"****");
                out.extend_from_slice(&digits[7..]);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"\"\""),
        }
        out.push(b',');
        key(out, "status");
        push_plain(out, standing.as_str());
        out.push(b',');
        key(out, "coverage_until");
        push_opt_day(out, until);
        out.push(b'}');
    }
    out.push(b',');
    key(out, "services");
    out.push(b'[');
    for (i, s) in m.services.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_plain(out, s.as_str());
    }
    out.push(b']');
    if let Some(service) = decided.services.first().copied() {
        out.push(b',');
        key(out, "service");
        out.push(b'{');
        key(out, "code");
        push_plain(out, service.as_str());
        out.push(b',');
        key(out, "covered");
        out.extend_from_slice(if m.services.contains(service) {
            b"true"
        } else {
            b"false"
        });
        out.push(b'}');
    }
    out.push(b',');
    key(out, "special_conditions");
    out.push(b'[');
    m.extras.for_each_special_condition(|i, c| {
        if i > 0 {
            out.push(b',');
        }
        push_str(out, c);
    });
    out.push(b']');
    out.push(b',');
    key(out, "primary_insurer");
    push_str(out, primary_insurer(&m));
    out.push(b',');
    key(out, "name");
    push_opt_str(out, m.name.masked().as_deref());
    out.push(b',');
    key(out, "data_version");
    push_u64(out, m.version);
    out.push(b',');
    key(out, "data_as_of");
    out.push(b'"');
    write_rfc3339_utc_ms(out, decided.data_as_of_ms);
    out.push(b'"');
    out.push(b'}');
}

/// One answer as a response body.
pub fn render(decided: &Answer<'_>, tracking_code: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(TYPICAL_BYTES);
    write(&mut out, decided, tracking_code);
    out
}

#[cfg(test)]
mod tests;
