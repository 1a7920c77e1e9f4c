//! Sorting more rows than memory holds: rows gather in a buffer of bounded size; a full
//! buffer is sorted and written to a run file; the runs are then read back merged, as often
//! as the caller needs (twice for a build: once to resolve versions and booklets, once to lay
//! the table out). Below the bound, or without a spill directory, nothing touches the disk.
//!
//! Rows sort by the hash of their ID (the order a layout takes them in), then newest version
//! first, a delete before the record of the same version, then earliest origin: the first row
//! of each ID is the one that wins.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::body::{PackedMember, TOMBSTONE};
use super::builder::Origin;
use super::layout::hash_order;

pub(super) type SortRow = (PackedMember, Origin);
pub(super) type Rows<'a> = Box<dyn Iterator<Item = io::Result<SortRow>> + 'a>;

type Key = (u64, Reverse<u64>, bool, Origin);

fn key((r, origin): &SortRow) -> Key {
    (
        hash_order(r.national_id),
        Reverse(r.version),
        r.attrs & TOMBSTONE == 0,
        *origin,
    )
}

/// Bytes of a row in a run file.
const ROW_BYTES: usize = 54;
/// Read buffer of each run while merging.
const RUN_READ_BUFFER: usize = 256 * 1024;

pub(super) struct Sorter {
    buffer: Vec<SortRow>,
    /// Rows the buffer holds before it is spilled; `usize::MAX` without a spill directory.
    limit: usize,
    spill: Option<Spill>,
    runs: Vec<tempfile::NamedTempFile>,
    rows: u64,
}

/// The private spill directory and the lock that says it is in use: a build killed before it
/// could remove its directory leaves it unlocked, and `snapshot_dir::remove_unfinished_writes`
/// removes it; one still running keeps it locked, and it is left alone.
struct Spill {
    dir: tempfile::TempDir,
    _lock: File,
}

impl Spill {
    /// A locked spill directory under `parent`. A cleanup running at that moment may take a
    /// directory before its lock is held (`snapshot_dir::lock_created`): then another is made.
    fn make(parent: &Path) -> io::Result<Spill> {
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix(SPILL_PREFIX)
                .tempdir_in(parent)?;
            let path = dir.path().join(SPILL_LOCK);
            let lock = match File::create(&path) {
                Ok(lock) => lock,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if super::snapshot_dir::lock_created(&lock, &path)? {
                return Ok(Spill { dir, _lock: lock });
            }
        }
        Err(io::Error::other(
            "the spill directory kept disappearing as it was made (something removes entries there)",
        ))
    }
}

/// The lock file in a spill directory.
pub(super) const SPILL_LOCK: &str = ".lock";
/// How a spill directory's name starts.
pub(super) const SPILL_PREFIX: &str = ".eligd-build-";

impl Sorter {
    pub(super) fn in_memory() -> Sorter {
        Sorter {
            buffer: Vec::new(),
            limit: usize::MAX,
            spill: None,
            runs: Vec::new(),
            rows: 0,
        }
    }

    /// Spills sorted runs of at most `buffer_bytes` into a private directory under `dir`
    /// (removed with the sorter).
    pub(super) fn spilling(dir: &Path, buffer_bytes: usize) -> io::Result<Sorter> {
        let spill = Spill::make(dir)?;
        let limit = (buffer_bytes / std::mem::size_of::<SortRow>()).max(1024);
        Ok(Sorter {
            // All at once: a vector that doubles as it grows would take up to twice the bound.
            buffer: Vec::with_capacity(limit),
            limit,
            spill: Some(spill),
            runs: Vec::new(),
            rows: 0,
        })
    }

    pub(super) fn push(&mut self, row: SortRow) -> io::Result<()> {
        self.buffer.push(row);
        self.rows += 1;
        if self.buffer.len() >= self.limit {
            self.spill_run()?;
        }
        Ok(())
    }

    pub(super) fn rows(&self) -> u64 {
        self.rows
    }

    fn spill_run(&mut self) -> io::Result<()> {
        let Some(Spill { dir, .. }) = &self.spill else {
            return Ok(());
        };
        self.buffer.sort_unstable_by_key(key);
        let mut run = tempfile::Builder::new()
            .prefix("run-")
            .tempfile_in(dir.path())?;
        {
            let mut out = BufWriter::with_capacity(1 << 20, run.as_file_mut());
            for row in &self.buffer {
                out.write_all(&encode(row))?;
            }
            out.flush()?;
        }
        self.runs.push(run);
        self.buffer.clear();
        Ok(())
    }

    /// Sorts what is left; the rows can then be read in order, as often as needed.
    pub(super) fn finish(mut self) -> io::Result<Sorted> {
        if !self.runs.is_empty() && !self.buffer.is_empty() {
            self.spill_run()?;
        }
        self.buffer.sort_unstable_by_key(key);
        self.buffer.shrink_to_fit();
        Ok(Sorted {
            memory: self.buffer,
            runs: self.runs,
            _dir: self.spill,
        })
    }
}

/// Rows in order, in memory or in sorted runs on disk.
pub(super) struct Sorted {
    memory: Vec<SortRow>,
    runs: Vec<tempfile::NamedTempFile>,
    _dir: Option<Spill>,
}

impl Sorted {
    /// Every row, in order.
    pub(super) fn rows(&self) -> io::Result<Rows<'_>> {
        if self.runs.is_empty() {
            return Ok(Box::new(self.memory.iter().copied().map(Ok)));
        }
        let mut readers = Vec::with_capacity(self.runs.len());
        for run in &self.runs {
            readers.push(BufReader::with_capacity(
                RUN_READ_BUFFER,
                File::open(run.path())?,
            ));
        }
        let mut merge = Merge {
            readers,
            heads: BinaryHeap::new(),
            failed: false,
        };
        for i in 0..merge.readers.len() {
            merge.refill(i)?;
        }
        Ok(Box::new(merge))
    }

    /// How many runs were spilled (0: all in memory).
    #[cfg(test)]
    pub(super) fn runs(&self) -> usize {
        self.runs.len()
    }
}

struct Merge {
    readers: Vec<BufReader<File>>,
    heads: BinaryHeap<Reverse<(Key, usize, RowBytes)>>,
    failed: bool,
}

/// A row as read from its run, ordered by nothing (the key orders the heap).
#[derive(Clone, Copy)]
struct RowBytes(SortRow);

impl PartialEq for RowBytes {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for RowBytes {}
impl PartialOrd for RowBytes {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for RowBytes {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl Merge {
    fn refill(&mut self, run: usize) -> io::Result<()> {
        let mut bytes = [0u8; ROW_BYTES];
        match self.readers[run].read_exact(&mut bytes) {
            Ok(()) => {
                let row = decode(&bytes);
                self.heads.push(Reverse((key(&row), run, RowBytes(row))));
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Iterator for Merge {
    type Item = io::Result<SortRow>;
    fn next(&mut self) -> Option<io::Result<SortRow>> {
        if self.failed {
            return None;
        }
        let Reverse((_, run, RowBytes(row))) = self.heads.pop()?;
        if let Err(e) = self.refill(run) {
            self.failed = true;
            return Some(Err(e));
        }
        Some(Ok(row))
    }
}

fn encode((r, origin): &SortRow) -> [u8; ROW_BYTES] {
    let mut b = [0u8; ROW_BYTES];
    b[0..8].copy_from_slice(&r.national_id.to_le_bytes());
    b[8..16].copy_from_slice(&r.version.to_le_bytes());
    b[16..24].copy_from_slice(&r.main_national_id.to_le_bytes());
    b[24..32].copy_from_slice(&r.booklet.to_le_bytes());
    b[32..36].copy_from_slice(&r.coverage_until.to_le_bytes());
    b[36..40].copy_from_slice(&r.name.to_le_bytes());
    b[40..44].copy_from_slice(&r.extras.to_le_bytes());
    b[44..46].copy_from_slice(&r.attrs.to_le_bytes());
    b[46..54].copy_from_slice(&origin.0.to_le_bytes());
    b
}

fn decode(b: &[u8; ROW_BYTES]) -> SortRow {
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default());
    (
        PackedMember {
            national_id: u64_at(0),
            version: u64_at(8),
            main_national_id: u64_at(16),
            booklet: u64_at(24),
            coverage_until: i32::from_le_bytes(b[32..36].try_into().unwrap_or_default()),
            name: u32_at(36),
            extras: u32_at(40),
            attrs: u16::from_le_bytes(b[44..46].try_into().unwrap_or_default()),
        },
        Origin(u64_at(46)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64, version: u64, origin: u64) -> SortRow {
        (
            PackedMember {
                national_id: id,
                version,
                coverage_until: -3,
                name: 7,
                attrs: 0b101,
                ..PackedMember::default()
            },
            Origin(origin),
        )
    }

    #[test]
    fn spilled_runs_merge_into_the_same_order_as_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut spilled = Sorter::spilling(dir.path(), 0).unwrap();
        let mut memory = Sorter::in_memory();
        for i in 0..10_000u64 {
            let r = row(1 + (i * 7919) % 3001, i % 5, i);
            spilled.push(r).unwrap();
            memory.push(r).unwrap();
        }
        let (spilled, memory) = (spilled.finish().unwrap(), memory.finish().unwrap());
        assert!(spilled.runs() >= 9, "{} runs", spilled.runs());
        assert_eq!(memory.runs(), 0);
        let a: Vec<SortRow> = spilled.rows().unwrap().map(Result::unwrap).collect();
        let b: Vec<SortRow> = memory.rows().unwrap().map(Result::unwrap).collect();
        assert_eq!(a.len(), 10_000);
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| key(&w[0]) <= key(&w[1])));
        // Read twice, the same again.
        assert_eq!(spilled.rows().unwrap().count(), 10_000);
        assert_eq!(decode(&encode(&a[17])), a[17]);
    }

    #[test]
    fn the_spill_directory_is_removed_with_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sorter::spilling(dir.path(), 0).unwrap();
        for i in 0..5_000 {
            s.push(row(i + 1, 1, i)).unwrap();
        }
        let sorted = s.finish().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // In use: the cleanup of unfinished writes leaves it alone.
        assert!(crate::index::snapshot_dir::remove_unfinished_writes(dir.path()).is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(sorted);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
