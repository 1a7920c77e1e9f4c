//! Verifying a snapshot file in bounded memory: the same checks as loading it (header, size,
//! checksum, rkyv's structure, every record, the booklet table), made window by window over a
//! map that is let go of behind the check, so a build that wrote gigabytes verifies them in
//! the memory it built them in. Loading maps and keeps the whole file; it is what a replica
//! serves from. This is for a file nobody serves from yet.
//!
//! The booklet table is the one part that reads records at random; its check reads a note of
//! each row's booklet taken during the pass over the records (8 bytes a slot) instead.

use std::fs::File;
use std::path::Path;

use memmap2::{Mmap, UncheckedAdvice};
use rkyv::rancor;
use xxhash_rust::xxh3::Xxh3;

use super::body::{ArchivedBody, ArchivedPackedMember, RowCounts};

const RECORD: usize = std::mem::size_of::<ArchivedPackedMember>();
use super::snapshot::{Header, SnapshotError};

/// Bytes checked before the pages behind are let go of.
const WINDOW: usize = 64 << 20;

/// Verifies the snapshot at `path` as [`super::snapshot::load`] would, without keeping it
/// mapped. Returns its header.
pub fn verify(path: &Path) -> Result<Header, SnapshotError> {
    let (file, header) = super::snapshot::open_sized(path)?;
    let invalid = |message: String| SnapshotError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let map = map(path, &file, header.body_len)?;
    let mut hasher = Xxh3::new();
    for start in (0..map.len()).step_by(WINDOW) {
        let end = (start + WINDOW).min(map.len());
        hasher.update(&map[start..end]);
        let_go(&map, start, end);
    }
    if hasher.digest() != header.body_checksum {
        return Err(SnapshotError::BodyChecksum(path.to_path_buf()));
    }
    let body =
        rkyv::access::<ArchivedBody, rancor::Error>(&map).map_err(|e| invalid(e.to_string()))?;
    body.validate_shape().map_err(invalid)?;
    let rows = body.records.len();
    let per_window = WINDOW / RECORD;
    let mut counts = RowCounts::default();
    let mut booklets = vec![0u64; rows];
    for start in (0..rows).step_by(per_window) {
        let end = (start + per_window).min(rows);
        counts = counts.add(body.validate_rows(start, end).map_err(invalid)?);
        for (row, note) in booklets[start..end].iter_mut().enumerate() {
            *note = body.booklet_of(start + row).map_err(invalid)?;
        }
        let bytes = offset_of(&map, body.records.as_slice()[start..end].as_ptr().cast());
        let_go(&map, bytes, bytes + (end - start) * RECORD);
    }
    body.check_counts(counts).map_err(invalid)?;
    let booklet_of = |row: usize| {
        booklets
            .get(row)
            .copied()
            .ok_or_else(|| "booklet table points past the records".to_string())
    };
    let slots = body.booklet_slots.len();
    let per_window = WINDOW / 4;
    let mut holders = 0;
    for start in (0..slots).step_by(per_window) {
        let end = (start + per_window).min(slots);
        holders += body
            .validate_booklet_slots(start, end, &booklet_of)
            .map_err(invalid)?;
        let bytes = offset_of(
            &map,
            body.booklet_slots.as_slice()[start..end].as_ptr().cast(),
        );
        let_go(&map, bytes, bytes + (end - start) * 4);
    }
    body.check_booklet_holders(holders, counts.with_booklet)
        .map_err(invalid)?;
    if counts.live != header.members || counts.used - counts.live != header.tombstones {
        return Err(SnapshotError::CountMismatch {
            path: path.to_path_buf(),
            members: header.members,
            tombstones: header.tombstones,
        });
    }
    Ok(header)
}

fn map(path: &Path, file: &File, len: u64) -> Result<Mmap, SnapshotError> {
    let map = super::snapshot::map_read_only(path, file, len)?;
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(map)
}

fn offset_of(map: &Mmap, at: *const u8) -> usize {
    (at as usize).saturating_sub(map.as_ptr() as usize)
}

/// Drops the pages of `start..end` (whole pages inside it) from this process's memory; the
/// file keeps them. Best effort.
#[allow(unsafe_code)]
fn let_go(map: &Mmap, start: usize, end: usize) {
    const PAGE: usize = 4096;
    let from = start.div_ceil(PAGE) * PAGE;
    let to = (end / PAGE * PAGE).min(map.len());
    if to > from {
        // SAFETY: a read-only shared file mapping: dropped pages read back from the file
        // unchanged, and nothing holds a reference into them past this point that it reads
        // again without the map faulting them back in.
        let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, from, to - from) };
    }
}
