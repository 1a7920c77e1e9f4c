//! Building a body from rows that arrive in any order, with repeats (an import, the demo
//! population): the newest version of every ID is kept, a booklet number already held by an
//! earlier row is refused, and the rest is laid out as a table.
//!
//! Memory stays bounded when the builder is given a spill directory: rows are packed into
//! fixed-size records as they arrive (strings interned once), sorted in runs of bounded size
//! on disk ([`super::sorter`]), and read back merged twice: once to resolve versions and
//! booklets, keeping only the booklet claims (24 bytes a holder), once to stream the winners
//! into the layout ([`super::layout`]). Without one (tests, the demo population) the rows
//! simply stay in memory.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::body::{PackedMember, TOMBSTONE};
use super::dictionary::{tombstone, Dictionaries};
use super::layout::{Layout, Records};
use super::sorter::{Sorted, Sorter};
use crate::member::view::MemberView;
use crate::member::Member;
use crate::national_id::NationalId;

/// Where a row came from: a line number for imports, an ordinal otherwise. Among rows of the
/// same ID the highest version wins; on equal versions a tombstone (a delete of that
/// version), then the earliest origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin(pub u64);

/// A row the builder refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub origin: Origin,
    pub reason: String,
}

/// How many refusals a build keeps word for word (all are counted).
pub const KEPT_REJECTIONS: usize = 20;

/// The memory a spilling build sorts in before it writes a run to disk.
pub const SORT_BUFFER_BYTES: usize = 128 << 20;

/// Collects members and tombstones in any order.
pub struct BodyBuilder {
    sorter: Sorter,
    dictionaries: Dictionaries,
    /// The first error spilling a run met; reported by [`BodyBuilder::resolve`].
    failed: Option<io::Error>,
    /// Live rows pushed with a booklet: room for their claims is made at once.
    with_booklet: u64,
}

impl Default for BodyBuilder {
    fn default() -> Self {
        BodyBuilder {
            sorter: Sorter::in_memory(),
            dictionaries: Dictionaries::default(),
            failed: None,
            with_booklet: 0,
        }
    }
}

/// What a build has done so far, for progress reports: rows pushed, then (`resolved`) rows
/// read back while resolving, then (`placed`) records laid out.
#[derive(Debug, Default)]
pub struct BuildProgress {
    pub resolved: AtomicU64,
    pub placed: AtomicU64,
}

impl BodyBuilder {
    /// A builder that sorts in [`SORT_BUFFER_BYTES`] of memory and spills the rest to a
    /// private directory under `dir`.
    pub fn spilling(dir: &Path) -> io::Result<BodyBuilder> {
        BodyBuilder::spilling_with(dir, SORT_BUFFER_BYTES)
    }

    pub fn spilling_with(dir: &Path, buffer_bytes: usize) -> io::Result<BodyBuilder> {
        Ok(BodyBuilder {
            sorter: Sorter::spilling(dir, buffer_bytes)?,
            dictionaries: Dictionaries::default(),
            failed: None,
            with_booklet: 0,
        })
    }

    /// Whether spilling a run has failed (a full disk): [`BodyBuilder::resolve`] says why, and
    /// nothing pushed from now on is kept.
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Rows pushed so far.
    pub fn len(&self) -> u64 {
        self.sorter.rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, record: PackedMember, origin: Origin) {
        if self.failed.is_none() {
            if let Err(e) = self.sorter.push((record, origin)) {
                self.failed = Some(e);
            }
        }
    }

    /// Adds a live member; its name is stored masked.
    pub fn push_view(&mut self, m: &MemberView<'_>, origin: Origin) {
        let record = self.dictionaries.pack(m);
        self.with_booklet += u64::from(record.booklet != 0);
        self.push(record, origin);
    }

    pub fn push_member(&mut self, m: &Member, origin: Origin) {
        self.push_view(&m.view(), origin);
    }

    pub fn push_tombstone(&mut self, id: NationalId, version: u64, origin: Origin) {
        self.push(tombstone(id, version), origin);
    }

    /// Sorts the rows and decides which stand: the newest version of each ID, and of the
    /// records holding one booklet number, the earliest. The rest are refused.
    pub fn resolve(self, progress: Option<&BuildProgress>) -> io::Result<Resolved> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let sorted = self.sorter.finish()?;
        let mut refusals = Refusals::default();
        let mut claims: Vec<(u64, Origin, u64)> = Vec::with_capacity(self.with_booklet as usize);
        let mut winners = 0u64;
        let mut read = 0u64;
        let mut winner: Option<(PackedMember, Origin)> = None;
        for row in sorted.rows()? {
            let (record, origin) = row?;
            read += 1;
            if read.is_multiple_of(65_536) {
                if let Some(p) = progress {
                    p.resolved.store(read, Ordering::Relaxed);
                }
            }
            match winner {
                Some((w, w_origin)) if w.national_id == record.national_id => {
                    refusals.add(origin, || {
                        format!(
                            "version {} is not newer than version {} read for this national ID ({})",
                            record.version,
                            w.version,
                            describe(w_origin)
                        )
                    });
                }
                _ => {
                    winners += 1;
                    winner = Some((record, origin));
                    if record.booklet != 0 && record.attrs & TOMBSTONE == 0 {
                        claims.push((record.booklet, origin, record.national_id));
                    }
                }
            }
        }
        if let Some(p) = progress {
            p.resolved.store(read, Ordering::Relaxed);
        }
        claims.sort_unstable();
        // Sorted once filled, and searched: 16 bytes a refused claim.
        let mut losers: Vec<(Origin, u64)> = Vec::new();
        for pair in claims.windows(2) {
            let ((first_key, _, _), (key, origin, id)) = (pair[0], pair[1]);
            if first_key != key {
                continue;
            }
            // The first claim of a run of equal keys holds the booklet.
            let holder = claims.partition_point(|c| c.0 < key).min(claims.len() - 1);
            let (_, holder_origin, holder_id) = claims[holder];
            losers.push((origin, id));
            refusals.add(origin, || {
                format!(
                    "booklet_no: already used by member {} ({})",
                    NationalId::from_validated(holder_id).masked(),
                    describe(holder_origin)
                )
            });
        }
        let holders = claims.len() as u64 - losers.len() as u64;
        drop(claims);
        losers.sort_unstable();
        let (names, extras) = self.dictionaries.into_lists();
        Ok(Resolved {
            holders,
            rows: winners - losers.len() as u64,
            sorted,
            losers,
            refused: refusals.count,
            rejected: refusals.into_sorted(),
            names,
            extras,
        })
    }
}

fn describe(origin: Origin) -> String {
    format!("line {}", origin.0)
}

/// The refusals of a build: all counted, the [`KEPT_REJECTIONS`] earliest kept.
#[derive(Default)]
struct Refusals {
    count: u64,
    earliest: BinaryHeap<(Origin, Reverse<String>)>,
}

impl Refusals {
    fn add(&mut self, origin: Origin, reason: impl FnOnce() -> String) {
        self.count += 1;
        if self.earliest.len() == KEPT_REJECTIONS {
            match self.earliest.peek() {
                Some((latest, _)) if *latest > origin => {
                    self.earliest.pop();
                }
                _ => return,
            }
        }
        self.earliest.push((origin, Reverse(reason())));
    }

    fn into_sorted(self) -> Vec<Rejected> {
        let mut v: Vec<Rejected> = self
            .earliest
            .into_iter()
            .map(|(origin, Reverse(reason))| Rejected { origin, reason })
            .collect();
        v.sort_by_key(|r| r.origin);
        v
    }
}

/// The rows that stand, ready to be laid out.
pub struct Resolved {
    rows: u64,
    holders: u64,
    sorted: Sorted,
    losers: Vec<(Origin, u64)>,
    /// Rows refused, in all.
    pub refused: u64,
    /// The earliest refusals ([`KEPT_REJECTIONS`] at most), by origin.
    pub rejected: Vec<Rejected>,
    names: Vec<String>,
    extras: Vec<super::body::ExtrasEntry>,
}

impl Resolved {
    /// Records the body will hold (live and tombstones).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The layout of the winners, read back in hash order.
    pub fn layout<'a>(&'a mut self, placed: Option<&'a AtomicU64>) -> io::Result<Layout<'a>> {
        let losers = &self.losers;
        let mut last: Option<u64> = None;
        let records: Records<'a> = Box::new(self.sorted.rows()?.filter_map(move |row| {
            let (record, origin) = match row {
                Ok(row) => row,
                Err(e) => return Some(Err(e)),
            };
            if last == Some(record.national_id) {
                return None;
            }
            last = Some(record.national_id);
            losers
                .binary_search(&(origin, record.national_id))
                .is_err()
                .then_some(Ok(record))
        }));
        Ok(Layout {
            rows: self.rows,
            records,
            names: std::mem::take(&mut self.names),
            extras: std::mem::take(&mut self.extras),
            placed,
            holders_hint: self.holders,
        })
    }
}

impl Resolved {
    /// The body laid out in memory, as a base (tests, tools, the demo population).
    pub fn into_base(mut self) -> Result<super::Base, String> {
        let layout = self.layout(None).map_err(|e| e.to_string())?;
        super::Base::from_layout(layout, None)
    }
}

#[cfg(test)]
impl Resolved {
    /// The body as an owned value (tests that inspect or tamper with one).
    pub(crate) fn into_body(mut self) -> super::body::Body {
        let (bytes, _) = self
            .layout(None)
            .expect("in memory")
            .write(rkyv::util::AlignedVec::<16>::new())
            .expect("laid out");
        let archived =
            rkyv::access::<super::body::ArchivedBody, rkyv::rancor::Error>(&bytes).expect("a body");
        super::body::Body::from_archived(archived)
    }
}

#[cfg(test)]
impl BodyBuilder {
    /// Resolves and lays out in memory: the body and the refusals (tests).
    pub(crate) fn finish(self) -> (super::body::Body, Vec<Rejected>) {
        let resolved = self.resolve(None).expect("in memory");
        let rejected = resolved.rejected.clone();
        (resolved.into_body(), rejected)
    }
}
