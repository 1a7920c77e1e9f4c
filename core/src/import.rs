//! JSON Lines import: one member record per line, streamed into a snapshot body.
//!
//! A bad line is reported with its line number and skipped, or, with `strict`, ends the
//! import. Lines are parsed one at a time into compact records, so 45 million members are
//! imported without holding the JSON. A repeated national ID keeps its highest version and a
//! booklet number already held by an earlier line is refused; both are reported by line. Lines are read with a length bound, so a file without newlines cannot make the
//! importer hold gigabytes, and invalid UTF-8 is a line error like any other.

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::index::{BodyBuilder, BuildProgress, Origin, Resolved};
use crate::member::Member;

/// The longest line accepted; real records are a few hundred bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// How many line errors a report keeps word for word (all are counted).
pub const KEPT_ERRORS: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub lines: u64,
    pub imported: u64,
    pub skipped: u64,
    /// The first [`KEPT_ERRORS`] line errors.
    pub errors: Vec<LineError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading the input failed after line {line}: {source}")]
    Io { line: u64, source: std::io::Error },
    #[error("{0} (--strict stops at the first bad line)")]
    Strict(LineError),
    #[error("sorting the members on disk failed: {reason}")]
    Spill { reason: std::io::Error },
}

enum Line {
    Text,
    TooLong,
    End,
}

/// Reads one line into `buf` (without its newline), discarding the rest of a line longer
/// than [`MAX_LINE_BYTES`].
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if !too_long && buf.len() + take <= MAX_LINE_BYTES {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            too_long = true;
            buf.clear();
        }
        reader.consume(take + usize::from(done));
        if done {
            break;
        }
    }
    Ok(match (any, too_long) {
        (false, _) => Line::End,
        (true, true) => Line::TooLong,
        (true, false) => Line::Text,
    })
}

impl ImportReport {
    fn reject(&mut self, error: LineError) {
        self.skipped += 1;
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(error);
        }
    }
}

/// How far an import is: bytes and lines read, then the build's own progress.
#[derive(Debug, Default)]
pub struct ImportProgress {
    pub bytes: AtomicU64,
    pub lines: AtomicU64,
    pub build: BuildProgress,
}

/// Imports every line of `reader` into an in-memory builder and resolves it (tests, tools).
pub fn import_jsonl(
    reader: &mut impl BufRead,
    strict: bool,
) -> Result<(Resolved, ImportReport), ImportError> {
    import_jsonl_into(reader, strict, BodyBuilder::default(), None)
}

/// Imports every line of `reader` into `builder` (which may already hold delete markers,
/// pushed as tombstones with origin 0: a marker newer than a line's record wins, and a
/// replica loading the body refuses an upsert older than the delete), and resolves it. The
/// caller lays the result out ([`Resolved::layout`]).
pub fn import_jsonl_into(
    reader: &mut impl BufRead,
    strict: bool,
    mut builder: BodyBuilder,
    progress: Option<&ImportProgress>,
) -> Result<(Resolved, ImportReport), ImportError> {
    let mut report = ImportReport::default();
    let mut pushed = 0u64;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let line_no = report.lines + 1;
        let line = read_line(reader, &mut buf).map_err(|source| ImportError::Io {
            line: report.lines,
            source,
        })?;
        let outcome = match line {
            Line::End => break,
            Line::TooLong => Err(format!("longer than {MAX_LINE_BYTES} bytes")),
            Line::Text => match std::str::from_utf8(&buf) {
                Err(_) => Err("not valid UTF-8".to_string()),
                Ok(text) if text.trim().is_empty() => {
                    report.lines += 1;
                    continue;
                }
                Ok(text) => Member::from_json(text).map_err(|e| e.to_string()),
            },
        };
        report.lines += 1;
        if let Some(p) = progress {
            p.bytes.fetch_add(buf.len() as u64 + 1, Ordering::Relaxed);
            p.lines.store(report.lines, Ordering::Relaxed);
        }
        match outcome {
            Ok(member) => {
                builder.push_member(&member, Origin(line_no));
                pushed += 1;
                // A full spill disk ends the import now, not once the input is read.
                if pushed.is_multiple_of(4_096) && builder.has_failed() {
                    break;
                }
            }
            Err(message) => {
                let error = LineError {
                    line: line_no,
                    message,
                };
                if strict {
                    return Err(ImportError::Strict(error));
                }
                report.reject(error);
            }
        }
    }
    let resolved = builder
        .resolve(progress.map(|p| &p.build))
        .map_err(|reason| ImportError::Spill { reason })?;
    if strict {
        if let Some(first) = resolved.rejected.first() {
            return Err(ImportError::Strict(LineError {
                line: first.origin.0,
                message: first.reason.clone(),
            }));
        }
    }
    // Rows refused while sorting come after the parse errors already kept; keep line order.
    let mut errors = std::mem::take(&mut report.errors);
    errors.extend(resolved.rejected.iter().map(|r| LineError {
        line: r.origin.0,
        message: r.reason.clone(),
    }));
    errors.sort_by_key(|e| e.line);
    errors.truncate(KEPT_ERRORS);
    report.errors = errors;
    report.skipped += resolved.refused;
    report.imported = pushed.saturating_sub(resolved.refused);
    Ok((resolved, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Base, Index};
    use crate::national_id::NationalId;

    const GOOD_A: &str = r#"{"national_id":"0012345679","version":1,"kind":"main","scheme":"mandatory","status":"active","services":["pharmacy"]}"#;
    const GOOD_B: &str = r#"{"national_id":"0499370899","version":1,"kind":"main","scheme":"mandatory","status":"active","services":[]}"#;

    fn run(input: &[u8], strict: bool) -> (Result<ImportReport, ImportError>, Index) {
        match import_jsonl(&mut std::io::Cursor::new(input), strict) {
            Ok((resolved, report)) => (Ok(report), Index::new(resolved.into_base().unwrap())),
            Err(e) => (Err(e), Index::new(Base::empty())),
        }
    }

    #[test]
    fn imports_good_lines_and_reports_bad_ones_by_number() {
        let input = format!(
            "{GOOD_A}\n\n{{not json\n{}\n\u{0}\n{GOOD_B}\n{GOOD_A}\n",
            GOOD_B.replace("0499370899", "0499370898")
        );
        let (report, index) = run(input.as_bytes(), false);
        let report = report.unwrap();
        assert_eq!(report.lines, 7);
        assert_eq!(report.imported, 2);
        assert_eq!(report.skipped, 4);
        let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 7]);
        assert!(
            report.errors[1].message.starts_with("national_id:"),
            "{}",
            report.errors[1]
        );
        assert!(
            report.errors[3].message.contains("not newer"),
            "{}",
            report.errors[3]
        );
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn strict_stops_at_the_first_bad_line() {
        let input = format!("{GOOD_A}\n{{\"version\": 1}}\n{GOOD_B}\n");
        let (result, _) = run(input.as_bytes(), true);
        match result {
            Err(ImportError::Strict(e)) => {
                assert_eq!(e.line, 2);
                assert!(e.message.starts_with("national_id: is required"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_utf8_overlong_lines_and_a_missing_final_newline() {
        let mut input = Vec::new();
        input.extend_from_slice(b"\xff\xfe\n");
        input.extend_from_slice(&vec![b'x'; MAX_LINE_BYTES + 10]);
        input.push(b'\n');
        input.extend_from_slice(GOOD_B.as_bytes());
        let (report, index) = run(&input, false);
        let report = report.unwrap();
        assert_eq!(
            report.errors[0],
            LineError {
                line: 1,
                message: "not valid UTF-8".into()
            }
        );
        assert_eq!(report.errors[1].line, 2);
        assert!(report.errors[1].message.contains("longer than"));
        assert_eq!(report.imported, 1);
        assert!(index
            .member(NationalId::parse("0499370899").unwrap())
            .is_some());
    }

    #[test]
    fn keeps_a_bounded_number_of_messages_but_counts_all() {
        let input = "garbage\n".repeat(100);
        let report = run(input.as_bytes(), false).0.unwrap();
        assert_eq!(report.skipped, 100);
        assert_eq!(report.errors.len(), KEPT_ERRORS);
    }

    #[test]
    fn crlf_line_endings_are_accepted() {
        let input = format!("{GOOD_A}\r\n{GOOD_B}\r\n");
        let report = run(input.as_bytes(), true).0.unwrap();
        assert_eq!(report.imported, 2);
    }
}
