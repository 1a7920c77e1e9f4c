//! Retention of the audit log: rotated files (`<log>.<unix ms>[-n]`) are removed, oldest
//! first, while the log and its rotated files together hold more than `--audit-keep-bytes`;
//! and the volume's free space is measured, so an alert fires before it fills
//! (`eligd_audit_bytes`, `eligd_audit_volume_available_bytes`, docs/operations.md).
//!
//! Only files named as the writer names them are ever removed: `<log>.` followed by digits,
//! optionally `-` and digits. Anything else in the directory is left alone.

use std::path::{Path, PathBuf};

/// A rotated file: its rotation time (ms), tie-break number, path and size.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rotated {
    ms: u128,
    n: u32,
    path: PathBuf,
    bytes: u64,
}

/// The rotated files of `log`, oldest first.
fn rotated(log: &Path) -> std::io::Result<Vec<Rotated>> {
    let dir = match log.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(name) = log.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let (ms, n) = rest.split_once('-').unwrap_or((rest, "0"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(n) {
            continue;
        }
        let (Ok(ms), Ok(n)) = (ms.parse(), n.parse()) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            found.push(Rotated {
                ms,
                n,
                path: entry.path(),
                bytes: meta.len(),
            });
        }
    }
    found.sort();
    Ok(found)
}

/// Removes the oldest rotated files while the log (`current` bytes) and its rotated files
/// hold more than `keep` bytes. Returns the bytes held afterwards and the files removed.
pub(crate) fn enforce(log: &Path, current: u64, keep: u64) -> std::io::Result<(u64, usize)> {
    let files = rotated(log)?;
    let mut held = current + files.iter().map(|f| f.bytes).sum::<u64>();
    let mut removed = 0;
    for file in files {
        if held <= keep {
            break;
        }
        match std::fs::remove_file(&file.path) {
            Ok(()) => {
                held -= file.bytes;
                removed += 1;
                tracing::info!(removed = %file.path.display(), bytes = file.bytes,
                    "audit log: oldest rotated file removed (--audit-keep-bytes)");
            }
            Err(e) => tracing::warn!(path = %file.path.display(), error = %e,
                "audit log: could not remove a rotated file"),
        }
    }
    Ok((held, removed))
}

/// The bytes the log's volume has available to an unprivileged writer, and its size.
#[allow(unsafe_code)]
pub(crate) fn volume(log: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let dir = match log.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data, for which all zeroes is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `stat` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let block = stat.f_frsize as u64;
    Some((
        (stat.f_bavail as u64).saturating_mul(block),
        (stat.f_blocks as u64).saturating_mul(block),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_rotated_files_go_first_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        std::fs::write(&log, vec![b'x'; 100]).unwrap();
        for (name, size) in [
            ("audit.jsonl.1000", 100),
            ("audit.jsonl.2000", 100),
            ("audit.jsonl.2000-1", 100),
            ("audit.jsonl.3000", 100),
            ("audit.jsonl.notes", 500),
            ("other.jsonl.1", 500),
        ] {
            std::fs::write(dir.path().join(name), vec![b'x'; size]).unwrap();
        }
        let (held, removed) = enforce(&log, 100, 250).unwrap();
        assert_eq!((held, removed), (200, 3));
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(left.contains(&"audit.jsonl.3000".to_string()), "{left:?}");
        assert!(
            !left.contains(&"audit.jsonl.2000-1".to_string()),
            "{left:?}"
        );
        assert!(left.contains(&"audit.jsonl.notes".to_string()));
        assert!(left.contains(&"other.jsonl.1".to_string()));
        assert!(volume(&log).is_some_and(|(avail, size)| avail <= size && size > 0));
    }
}
