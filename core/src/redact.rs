//! Keeping national IDs out of messages that reach logs and metrics-adjacent text: serde and
//! the record rules quote the input they complain about, and input can be an ID.

use crate::national_id::digit_value;

/// Removes what could be a national ID from a message: any quoted value (`"…"` or `` `…` ``,
/// as serde and the record rules quote input) holding a digit, except a date, and any
/// bare run of 8 or more digits (in any script). Field names and explanations survive.
pub fn redact(message: &str) -> String {
    const LONG_RUN: usize = 8;
    let mut out = String::with_capacity(message.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().count() >= LONG_RUN {
            out.push('…');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    let mut chars = message.char_indices();
    while let Some((start, c)) = chars.next() {
        if digit_value(c).is_some() {
            run.push(c);
            continue;
        }
        flush(&mut run, &mut out);
        if c != '"' && c != '`' {
            out.push(c);
            continue;
        }
        let mut end = message.len();
        let mut escaped = false;
        for (i, q) in chars.by_ref() {
            if escaped {
                escaped = false;
            } else if q == '\\' && c == '"' {
                escaped = true;
            } else if q == c {
                end = i;
                break;
            }
        }
        let inner = message.get(start + c.len_utf8()..end).unwrap_or("");
        out.push(c);
        if inner.chars().any(|d| digit_value(d).is_some()) && !date_shaped(inner) {
            out.push('…');
        } else {
            out.push_str(inner);
        }
        if end < message.len() {
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// `dddd-dd-dd`: eight digits around two dashes cannot be a national ID, and a date is
/// worth keeping in a message about a date.
fn date_shaped(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_names_dates_and_explanations() {
        for kept in [
            "coverage_until: \"2026-02-30\": dates are written YYYY-MM-DD",
            "record: expected `,` or `}` at line 1 column 30",
            "services: \"massage\" is not one of outpatient, inpatient",
        ] {
            assert_eq!(redact(kept), kept);
        }
        let serde = "invalid type: string \"0012345679\", expected struct RawRecord";
        let redacted = "invalid type: string \"…\", expected struct RawRecord";
        assert_eq!(redact(serde), redacted);
        assert_eq!(redact("integer `12345679`"), "integer `…`");
        assert_eq!(redact("x 0012345679 y"), "x … y");
        assert_eq!(redact("\"a\\\"0012345679\""), "\"…\"");
        assert_eq!(redact("open \"0012345679"), "open \"…");
    }
}
