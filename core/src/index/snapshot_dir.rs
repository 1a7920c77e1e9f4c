//! The snapshot directory (`--snapshot-dir`): how snapshots there are named, which one is
//! the newest, and which ones are pruned.
//!
//! "Newest" is decided by what a file's header says, never by its name alone: the feed
//! position its contents reflect first (a snapshot that reflects more of the stream is
//! newer, whatever clock built it), then the build time. A file name is a label for people;
//! a file whose name disagrees with its header (copied under another name, or built by a
//! host with another clock and renamed) is refused, so a name can never make a stale file
//! win or make a fresh one look old enough to prune.

use std::cmp::Reverse;
use std::path::{Path, PathBuf};

use super::snapshot::{self, Header};

/// The name a snapshot with this header has in a snapshot directory:
/// `eligd-<built at, ms>-<position ms>-<position seq>.snap` (`-none` without a position).
pub fn file_name(header: &Header) -> String {
    let built_at = header.built_at_ms;
    match header.position {
        Some(p) => format!("eligd-{built_at:013}-{}-{}.snap", p.ms, p.seq),
        None => format!("eligd-{built_at:013}-none.snap"),
    }
}

/// A snapshot whose header was read and whose name agrees with it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub path: PathBuf,
    pub header: Header,
}

/// A file that looks like a snapshot but cannot be ordered, with the reason.
#[derive(Debug, Clone)]
pub struct RefusedSnapshot {
    pub path: PathBuf,
    pub reason: String,
}

/// What a snapshot directory holds.
#[derive(Debug, Default)]
pub struct Listing {
    /// Newest first (see the module docs).
    pub snapshots: Vec<Listed>,
    pub refused: Vec<RefusedSnapshot>,
}

fn looks_like_a_snapshot(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "snap")
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("eligd-"))
}

/// Reads the header of every `eligd-*.snap` in `dir` (cheap: 4 KiB each, no body read) and
/// orders the snapshots newest first.
pub fn list(dir: &Path) -> std::io::Result<Listing> {
    let mut listing = Listing::default();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !looks_like_a_snapshot(&path) {
            continue;
        }
        match snapshot::read_header(&path) {
            Ok(header) => {
                let expected = file_name(&header);
                if path.file_name().and_then(|n| n.to_str()) == Some(expected.as_str()) {
                    listing.snapshots.push(Listed { path, header });
                } else {
                    listing.refused.push(RefusedSnapshot {
                        reason: format!(
                            "its name does not match its header (built at {} ms, feed position {}); \
                             a snapshot in this directory must be named {expected}",
                            header.built_at_ms,
                            header
                                .position
                                .map_or_else(|| "none".to_string(), |p| p.to_string())
                        ),
                        path,
                    });
                }
            }
            Err(e) => listing.refused.push(RefusedSnapshot {
                path,
                reason: e.to_string(),
            }),
        }
    }
    listing.snapshots.sort_by_key(|s| {
        Reverse((
            s.header.position,
            s.header.built_at_ms,
            s.path.file_name().map(|n| n.to_owned()),
        ))
    });
    Ok(listing)
}

/// Deletes what snapshot writes and builds that never finished left in `dir` (a crash, a
/// kill, a shutdown in the middle of one): temporary snapshot files and build spill
/// directories. What a running write or build holds is locked (an exclusive `flock`) and is
/// left alone, so this is safe while a `snapshot build` writes into a service's directory:
/// the cleanup removes only what it could lock itself, and holds the lock while it removes;
/// a writer locks what it has just made and checks that it is still there
/// ([`lock_created`]), making another if a cleanup took it first.
pub fn remove_unfinished_writes(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let gone = if name.starts_with(".eligd-snapshot-") && name.ends_with(".tmp") {
            abandoned(&path).is_some_and(|_held| std::fs::remove_file(&path).is_ok())
        } else if name.starts_with(super::sorter::SPILL_PREFIX) && is_real_dir(&path) {
            let lock = path.join(super::sorter::SPILL_LOCK);
            if lock.exists() {
                abandoned(&lock).is_some_and(|_held| std::fs::remove_dir_all(&path).is_ok())
            } else {
                // Made a moment ago and not locked yet, or left by a build killed at once:
                // only an old one is taken for abandoned.
                old_enough(&path) && std::fs::remove_dir_all(&path).is_ok()
            }
        } else if name.starts_with(super::sorter::SPILL_PREFIX) {
            // Not a directory (a link, say): only the name goes, never what it points at.
            std::fs::remove_file(&path).is_ok()
        } else {
            false
        };
        if gone {
            removed.push(path);
        }
    }
    removed
}

/// How old a spill directory without its lock file must be to be taken for abandoned.
const UNLOCKED_SPILL_AGE: std::time::Duration = std::time::Duration::from_secs(600);

fn old_enough(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= UNLOCKED_SPILL_AGE)
}

fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// The lock of something no process holds, now held by this one (dropped: released), or
/// `None` when a process holds it (a write or build still running) or it cannot be opened.
fn abandoned(lock: &Path) -> Option<std::fs::File> {
    let file = std::fs::File::open(lock).ok()?;
    file.try_lock().ok()?;
    Some(file)
}

/// Locks `file`, just created at `path`, and checks that `path` still names it: a cleanup
/// may have found it unlocked and removed it in between. `Ok(false)`: it did; make another.
pub(super) fn lock_created(file: &std::fs::File, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    file.lock()?;
    let held = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(named) => Ok(named.ino() == held.ino() && named.dev() == held.dev()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes all but the newest `keep` snapshots (by header), and unfinished writes; never
/// `protect` (the snapshot just written and now serving). Files it cannot order are left for
/// an operator and reported. Returns what it deleted.
pub fn prune(dir: &Path, keep: usize, protect: &Path) -> Vec<PathBuf> {
    let mut pruned = remove_unfinished_writes(dir);
    let listing = match list(dir) {
        Ok(listing) => listing,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list the snapshot directory to prune it");
            return pruned;
        }
    };
    for refused in &listing.refused {
        tracing::warn!(path = %refused.path.display(), reason = %refused.reason,
            "not a usable snapshot; left in place for an operator");
    }
    for old in listing.snapshots.into_iter().skip(keep.max(1)) {
        if old.path == protect {
            continue;
        }
        match std::fs::remove_file(&old.path) {
            Ok(()) => pruned.push(old.path),
            Err(e) => {
                tracing::warn!(path = %old.path.display(), error = %e, "could not prune an old snapshot")
            }
        }
    }
    pruned
}
