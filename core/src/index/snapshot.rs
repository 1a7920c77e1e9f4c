//! The snapshot file (docs/records.md, docs/architecture.md): what a restart loads instead of rebuilding the index.
//!
//! Layout: a fixed 4096-byte header, then the rkyv body (see [`super::body`]), so the body
//! starts page-aligned and is memory-mapped and read in place. The header carries a magic, the format version,
//! the rkyv format descriptor (endianness, alignment, pointer width, body schema), counts,
//! the build time, the feed position the body reflects, the body's length and xxh3
//! checksum, and a checksum of the header itself. A file is written to a temporary file in
//! the same directory, fsynced and renamed into place, so a reader never sees half a file.
//! Loading refuses a file on the first thing that does not match, with a message saying
//! which, and then checks every record against the record rules. The body is serialised
//! straight to the file (hashed on the way), so writing never holds a second copy of it.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions};
use rkyv::ser::writer::IoWriter;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::layout::Layout;
use super::{Base, FeedPosition, Row, StreamEpoch};
use crate::member::{Kind, Status};

pub const MAGIC: [u8; 8] = *b"ELIGDSNP";
pub const FORMAT_VERSION: u32 = 4;
/// The previous format: the same body, a header without the stream epoch. Still read.
const PREVIOUS_FORMAT_VERSION: u32 = 3;
pub const HEADER_LEN: usize = 4096;
/// Changes whenever the rkyv build options or the body's types change.
pub const FORMAT_DESCRIPTOR: &str = "rkyv-0.8/le/aligned/ptr64/eligd.body.v3/open-addressed-fib64";
const DESCRIPTOR_LEN: usize = 64;
const _: () = assert!(FORMAT_DESCRIPTOR.len() <= DESCRIPTOR_LEN);

// Header field offsets.
const OFF_VERSION: usize = 8;
const OFF_HEADER_LEN: usize = 12;
const OFF_DESCRIPTOR: usize = 16;
const OFF_MEMBERS: usize = OFF_DESCRIPTOR + DESCRIPTOR_LEN;
const OFF_TOMBSTONES: usize = OFF_MEMBERS + 8;
const OFF_BUILT_AT: usize = OFF_TOMBSTONES + 8;
const OFF_HAS_POSITION: usize = OFF_BUILT_AT + 8;
const OFF_POSITION_MS: usize = OFF_HAS_POSITION + 8;
const OFF_POSITION_SEQ: usize = OFF_POSITION_MS + 8;
const OFF_BODY_LEN: usize = OFF_POSITION_SEQ + 8;
const OFF_BODY_CHECKSUM: usize = OFF_BODY_LEN + 8;
/// Where version 3 kept its header checksum; version 4 adds the epoch there.
const OFF_V3_HEADER_CHECKSUM: usize = OFF_BODY_CHECKSUM + 8;
const OFF_HAS_EPOCH: usize = OFF_BODY_CHECKSUM + 8;
const OFF_EPOCH: usize = OFF_HAS_EPOCH + 8;
const OFF_HEADER_CHECKSUM: usize = OFF_EPOCH + 16;

/// The header's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub format_version: u32,
    pub descriptor: String,
    pub members: u64,
    pub tombstones: u64,
    /// Build time, milliseconds since the Unix epoch.
    pub built_at_ms: i64,
    pub position: Option<FeedPosition>,
    /// The stream the position belongs to (`None`: not recorded; the replica takes the
    /// stream's epoch as it finds it).
    pub epoch: Option<StreamEpoch>,
    pub body_len: u64,
    pub body_checksum: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {reason}")]
    Io {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{0}: not an eligd snapshot (wrong magic)")]
    BadMagic(PathBuf),
    #[error("{path}: snapshot format version {found} is not supported (this build reads versions {PREVIOUS_FORMAT_VERSION} and {FORMAT_VERSION})")]
    UnsupportedVersion { path: PathBuf, found: u32 },
    #[error("{path}: snapshot was written with format {found:?}, this build reads {FORMAT_DESCRIPTOR:?}")]
    FormatMismatch { path: PathBuf, found: String },
    #[error("{0}: the snapshot header is corrupt (header checksum mismatch)")]
    HeaderChecksum(PathBuf),
    #[error("{path}: truncated or extended snapshot: the header promises {expected} bytes, the file has {found}")]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{0}: the snapshot body is corrupt (checksum mismatch)")]
    BodyChecksum(PathBuf),
    #[error("{path}: the snapshot body does not validate: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "{path}: header counts ({members} members, {tombstones} tombstones) do not match the body"
    )]
    CountMismatch {
        path: PathBuf,
        members: u64,
        tombstones: u64,
    },
    #[error("could not serialise the snapshot body: {0}")]
    Serialise(String),
    #[error("the synthetic demo population is never written to a snapshot directory")]
    Synthetic,
    #[error("{path}: not written: the new file failed the check every load makes, and was removed ({reason})")]
    Unverified {
        path: PathBuf,
        reason: Box<SnapshotError>,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |reason| SnapshotError::Io {
        path: path.to_path_buf(),
        reason,
    }
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Decodes and checks a snapshot header from bytes (what `load` does with a file's first
/// [`HEADER_LEN`] bytes); the fuzzing entry point of header validation.
pub fn decode_header(bytes: &[u8]) -> Result<Header, SnapshotError> {
    Header::decode(Path::new("<bytes>"), bytes)
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[..8].copy_from_slice(&MAGIC);
        h[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&self.format_version.to_le_bytes());
        h[OFF_HEADER_LEN..OFF_HEADER_LEN + 4].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        let d = self.descriptor.as_bytes();
        let n = d.len().min(DESCRIPTOR_LEN);
        h[OFF_DESCRIPTOR..OFF_DESCRIPTOR + n].copy_from_slice(&d[..n]);
        put_u64(&mut h, OFF_MEMBERS, self.members);
        put_u64(&mut h, OFF_TOMBSTONES, self.tombstones);
        put_u64(&mut h, OFF_BUILT_AT, self.built_at_ms as u64);
        put_u64(&mut h, OFF_HAS_POSITION, u64::from(self.position.is_some()));
        let p = self.position.unwrap_or(FeedPosition { ms: 0, seq: 0 });
        put_u64(&mut h, OFF_POSITION_MS, p.ms);
        put_u64(&mut h, OFF_POSITION_SEQ, p.seq);
        put_u64(&mut h, OFF_BODY_LEN, self.body_len);
        put_u64(&mut h, OFF_BODY_CHECKSUM, self.body_checksum);
        put_u64(&mut h, OFF_HAS_EPOCH, u64::from(self.epoch.is_some()));
        let epoch = self.epoch.map_or(0, |e| e.0);
        h[OFF_EPOCH..OFF_EPOCH + 16].copy_from_slice(&epoch.to_le_bytes());
        let sum = xxh3_64(&h[..OFF_HEADER_CHECKSUM]);
        put_u64(&mut h, OFF_HEADER_CHECKSUM, sum);
        h
    }

    fn decode(path: &Path, h: &[u8]) -> Result<Header, SnapshotError> {
        if h.len() < HEADER_LEN || h[..8] != MAGIC {
            return Err(SnapshotError::BadMagic(path.to_path_buf()));
        }
        let format_version = get_u32(h, OFF_VERSION);
        let checksum_at = match format_version {
            FORMAT_VERSION => OFF_HEADER_CHECKSUM,
            PREVIOUS_FORMAT_VERSION => OFF_V3_HEADER_CHECKSUM,
            found => {
                return Err(SnapshotError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    found,
                })
            }
        };
        if get_u64(h, checksum_at) != xxh3_64(&h[..checksum_at])
            || get_u32(h, OFF_HEADER_LEN) as usize != HEADER_LEN
        {
            return Err(SnapshotError::HeaderChecksum(path.to_path_buf()));
        }
        let raw = &h[OFF_DESCRIPTOR..OFF_DESCRIPTOR + DESCRIPTOR_LEN];
        let end = raw.iter().position(|&b| b == 0).unwrap_or(DESCRIPTOR_LEN);
        let descriptor = String::from_utf8_lossy(&raw[..end]).into_owned();
        if descriptor != FORMAT_DESCRIPTOR {
            return Err(SnapshotError::FormatMismatch {
                path: path.to_path_buf(),
                found: descriptor,
            });
        }
        let position = (get_u64(h, OFF_HAS_POSITION) == 1).then(|| FeedPosition {
            ms: get_u64(h, OFF_POSITION_MS),
            seq: get_u64(h, OFF_POSITION_SEQ),
        });
        let epoch =
            (format_version == FORMAT_VERSION && get_u64(h, OFF_HAS_EPOCH) == 1).then(|| {
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(&h[OFF_EPOCH..OFF_EPOCH + 16]);
                StreamEpoch(u128::from_le_bytes(bytes))
            });
        Ok(Header {
            format_version,
            descriptor,
            members: get_u64(h, OFF_MEMBERS),
            tombstones: get_u64(h, OFF_TOMBSTONES),
            built_at_ms: get_u64(h, OFF_BUILT_AT) as i64,
            position,
            epoch,
            body_len: get_u64(h, OFF_BODY_LEN),
            body_checksum: get_u64(h, OFF_BODY_CHECKSUM),
        })
    }
}

/// Hashes and counts what passes through to the file.
struct HashingWriter<W> {
    inner: W,
    hasher: Xxh3,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a snapshot to `path` atomically: temporary file in the target directory, body
/// streamed after a placeholder header, the real header written last, fsync, then the whole
/// file verified by the same check as [`load`], and only then renamed into place (and the
/// directory fsynced). A file that fails the check never gets a snapshot name: the
/// temporary file is removed and the error says why. Returns the header and the verified
/// base, mapped from the file.
pub fn write(
    path: &Path,
    layout: Layout<'_>,
    position: Option<FeedPosition>,
    epoch: Option<StreamEpoch>,
) -> Result<(Header, Base), SnapshotError> {
    let dir = parent_of(path);
    let (_, header, base) = write_with(&dir, layout, position, epoch, Check::Load, |_| {
        path.to_path_buf()
    })?;
    Ok((header, base.ok_or_else(|| unreachable_base(path))?))
}

/// [`write`] into `dir` under the name its header gives it
/// ([`super::snapshot_dir::file_name`]), as `--snapshot-dir` expects. Returns the path too.
pub fn write_into(
    dir: &Path,
    layout: Layout<'_>,
    position: Option<FeedPosition>,
    epoch: Option<StreamEpoch>,
) -> Result<(PathBuf, Header, Base), SnapshotError> {
    let (path, header, base) = write_with(dir, layout, position, epoch, Check::Load, |header| {
        dir.join(super::snapshot_dir::file_name(header))
    })?;
    let base = base.ok_or_else(|| unreachable_base(&path))?;
    Ok((path, header, base))
}

/// Where a built snapshot goes: exactly this file, or a directory (under the name its header
/// gives it).
pub enum Target<'p> {
    File(&'p Path),
    Dir(&'p Path),
}

/// Writes a snapshot as a build does: like [`write`], but the new file is checked window by
/// window ([`verify`]), never mapped whole, so the check fits in the memory the build had.
/// Returns the path and the header.
pub fn write_built(
    target: Target<'_>,
    layout: Layout<'_>,
    position: Option<FeedPosition>,
    epoch: Option<StreamEpoch>,
) -> Result<(PathBuf, Header), SnapshotError> {
    let (path, header, _) = match target {
        Target::File(path) => write_with(
            &parent_of(path),
            layout,
            position,
            epoch,
            Check::Windowed,
            |_| path.to_path_buf(),
        )?,
        Target::Dir(dir) => write_with(dir, layout, position, epoch, Check::Windowed, |h| {
            dir.join(super::snapshot_dir::file_name(h))
        })?,
    };
    Ok((path, header))
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn unreachable_base(path: &Path) -> SnapshotError {
    SnapshotError::Invalid {
        path: path.to_path_buf(),
        message: "verified without a base".into(),
    }
}

/// How a written file is checked before it gets its name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Loaded as a replica loads it, and kept as the new base.
    Load,
    /// Verified window by window, and let go.
    Windowed,
}

fn write_with(
    dir: &Path,
    layout: Layout<'_>,
    position: Option<FeedPosition>,
    epoch: Option<StreamEpoch>,
    check: Check,
    name: impl FnOnce(&Header) -> PathBuf,
) -> Result<(PathBuf, Header, Option<Base>), SnapshotError> {
    let mut tmp = locked_temporary(dir)?;
    let tmp_path = tmp.path().to_path_buf();
    tmp.write_all(&[0u8; HEADER_LEN])
        .map_err(io_err(&tmp_path))?;
    let (hasher, written, laid) = {
        let sink = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, Writeback::new(tmp.as_file())),
            hasher: Xxh3::new(),
            written: 0,
        };
        let (sink, laid) = layout
            .write(IoWriter::new(sink))
            .map_err(|e| SnapshotError::Serialise(e.to_string()))?;
        let HashingWriter {
            mut inner,
            hasher,
            written,
        } = sink.into_inner();
        inner.flush().map_err(io_err(&tmp_path))?;
        (hasher, written, laid)
    };
    let header = Header {
        format_version: FORMAT_VERSION,
        descriptor: FORMAT_DESCRIPTOR.to_string(),
        members: laid.live,
        tombstones: laid.tombstones,
        built_at_ms: chrono::Utc::now().timestamp_millis(),
        position,
        epoch,
        body_len: written,
        body_checksum: hasher.digest(),
    };
    let path = name(&header);
    let file = tmp.as_file_mut();
    file.seek(SeekFrom::Start(0)).map_err(io_err(&tmp_path))?;
    file.write_all(&header.encode())
        .map_err(io_err(&tmp_path))?;
    file.sync_all().map_err(io_err(&tmp_path))?;
    forget_cached_pages(file);
    let unverified = |reason| SnapshotError::Unverified {
        path: path.clone(),
        reason: Box::new(reason),
    };
    let (read_back, base) = match check {
        Check::Load => load(&tmp_path).map(|(h, b)| (h, Some(b))),
        Check::Windowed => super::verify::verify(&tmp_path).map(|h| (h, None)),
    }
    .map_err(unverified)?;
    if read_back != header {
        return Err(unverified(SnapshotError::HeaderChecksum(tmp_path)));
    }
    tmp.persist(&path).map_err(|e| SnapshotError::Io {
        path: path.clone(),
        reason: e.error,
    })?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok((path, header, base))
}

/// A temporary snapshot file in `dir`, locked until it is renamed or removed: a cleanup of
/// unfinished writes (`snapshot_dir::remove_unfinished_writes`) leaves a locked file alone,
/// and one that took the file before it was locked makes this one make another.
fn locked_temporary(dir: &Path) -> Result<tempfile::NamedTempFile, SnapshotError> {
    for _ in 0..5 {
        let tmp = tempfile::Builder::new()
            .prefix(".eligd-snapshot-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(io_err(dir))?;
        if super::snapshot_dir::lock_created(tmp.as_file(), tmp.path())
            .map_err(io_err(tmp.path()))?
        {
            return Ok(tmp);
        }
    }
    Err(SnapshotError::Io {
        path: dir.to_path_buf(),
        reason: std::io::Error::other(
            "the temporary file kept disappearing as it was made (something removes entries there)",
        ),
    })
}

/// Writes through to the file and keeps what the kernel holds of it bounded: every
/// [`WRITEBACK_CHUNK`] bytes, writeback of that chunk starts, and the chunk before it is
/// waited for and dropped from the page cache. A snapshot of gigabytes then never sits in
/// memory as dirty pages, which a pod's memory limit counts.
struct Writeback<'f> {
    file: &'f File,
    written: u64,
    /// Where the chunk being written started, and where the one before it did.
    started: u64,
    previous: Option<u64>,
}

const WRITEBACK_CHUNK: u64 = 32 << 20;

impl<'f> Writeback<'f> {
    fn new(file: &'f File) -> Self {
        // The placeholder header is already written.
        Writeback {
            file,
            written: HEADER_LEN as u64,
            started: 0,
            previous: None,
        }
    }

    #[allow(unsafe_code)]
    fn chunk_done(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = self.file.as_raw_fd();
            let (start, end) = (self.started, self.written);
            // SAFETY: plain system calls on a descriptor `file` keeps open; they only
            // schedule, wait for or drop writeback of data already written. Best effort.
            unsafe {
                libc::sync_file_range(
                    fd,
                    start as i64,
                    (end - start) as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
                if let Some(before) = self.previous {
                    libc::sync_file_range(
                        fd,
                        before as i64,
                        (start - before) as i64,
                        libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                    );
                    libc::posix_fadvise(
                        fd,
                        before as i64,
                        (start - before) as i64,
                        libc::POSIX_FADV_DONTNEED,
                    );
                }
            }
        }
        self.previous = Some(self.started);
        self.started = self.written;
    }
}

impl Write for Writeback<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = (&mut &*self.file).write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_CHUNK {
            self.chunk_done();
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads only the header (cheap: no body read, no checksum).
pub fn read_header(path: &Path) -> Result<Header, SnapshotError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    read_header_from(path, &mut file)
}

fn read_header_from(path: &Path, file: &mut File) -> Result<Header, SnapshotError> {
    let mut head = vec![0u8; HEADER_LEN];
    let mut read = 0;
    while read < HEADER_LEN {
        let n = file.read(&mut head[read..]).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        read += n;
    }
    if read < 8 || head[..8] != MAGIC {
        return Err(SnapshotError::BadMagic(path.to_path_buf()));
    }
    if read < HEADER_LEN {
        return Err(SnapshotError::Truncated {
            path: path.to_path_buf(),
            expected: HEADER_LEN as u64,
            found: read as u64,
        });
    }
    Header::decode(path, &head)
}

/// Opens a snapshot and reads its header, and checks that the file is exactly as long as the
/// header says (what every check of a whole file starts with).
pub(super) fn open_sized(path: &Path) -> Result<(File, Header), SnapshotError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let header = read_header_from(path, &mut file)?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let expected = HEADER_LEN as u64 + header.body_len;
    if file_len != expected {
        return Err(SnapshotError::Truncated {
            path: path.to_path_buf(),
            expected,
            found: file_len,
        });
    }
    Ok((file, header))
}

/// Maps a snapshot and verifies it: header, size, checksum, structure, every record. The
/// body stays mapped and is read in place by the returned base.
pub fn load(path: &Path) -> Result<(Header, Base), SnapshotError> {
    let (file, header) = open_sized(path)?;
    let started = std::time::Instant::now();
    let map = map_body(path, &file, header.body_len)?;
    let mapped = started.elapsed();
    // The checksum and the validation both read every page, and neither needs the other's
    // result to be safe (rkyv's check is sound on any bytes): they run at once (the checksum
    // on a thread of its own, the validation on every core), and the file is refused if
    // either refuses it. The checksum is looked at first, so a damaged file is reported as
    // such.
    let threads = crate::index::base::validation_threads();
    let (checksum, validated) = std::thread::scope(|scope| {
        let checksum = scope.spawn(|| {
            let t = std::time::Instant::now();
            (xxh3_64(&map), t.elapsed())
        });
        let t = std::time::Instant::now();
        let validated = crate::index::base::validate(&map, threads)
            .map(|_| ())
            .map(|()| t.elapsed());
        (checksum.join(), validated)
    });
    let (sum, checksum_time) = checksum.map_err(|_| SnapshotError::Invalid {
        path: path.to_path_buf(),
        message: "the checksum thread failed".into(),
    })?;
    if sum != header.body_checksum {
        return Err(SnapshotError::BodyChecksum(path.to_path_buf()));
    }
    let invalid = |message| SnapshotError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let validate_time = validated.map_err(invalid)?;
    tracing::info!(
        map_seconds = mapped.as_secs_f64(),
        checksum_seconds = checksum_time.as_secs_f64(),
        validate_seconds = validate_time.as_secs_f64(),
        total_seconds = started.elapsed().as_secs_f64(),
        "snapshot mapped and verified"
    );
    // The bytes were validated just above and never change (a read-only map).
    let base = Base::from_validated_map(map, header.position, header.epoch);
    if base.len() as u64 != header.members || base.tombstones() != header.tombstones {
        return Err(SnapshotError::CountMismatch {
            path: path.to_path_buf(),
            members: header.members,
            tombstones: header.tombstones,
        });
    }
    Ok((header, base))
}

/// Maps a snapshot's body (after the header) read-only.
#[allow(unsafe_code)]
pub(super) fn map_read_only(path: &Path, file: &File, len: u64) -> Result<Mmap, SnapshotError> {
    let len = usize::try_from(len).map_err(|_| SnapshotError::Invalid {
        path: path.to_path_buf(),
        message: "body larger than the address space".into(),
    })?;
    // SAFETY: the map is read-only and eligd never modifies a snapshot file in place (it
    // writes a temporary file and renames it; a build checks its own temporary file only once
    // it has finished writing it). Another process truncating the file while it is mapped
    // would be an operator error outside what any reader can defend against.
    unsafe {
        MmapOptions::new()
            .offset(HEADER_LEN as u64)
            .len(len)
            .map(file)
    }
    .map_err(io_err(path))
}

fn map_body(path: &Path, file: &File, len: u64) -> Result<Mmap, SnapshotError> {
    let map = map_read_only(path, file, len)?;
    // Large pages where the kernel can map the page cache that way (fewer TLB misses on
    // random lookups); then fault every page in now rather than on the request path.
    let _ = map.advise(memmap2::Advice::HugePage);
    // In steps: each call holds the process's memory-map lock while it faults its range in,
    // and a replica loading its next snapshot keeps answering meanwhile (an allocation that
    // needs the lock waits for one step, not for the whole file).
    const STEP: usize = 2 << 20;
    for start in (0..map.len()).step_by(STEP) {
        let len = STEP.min(map.len() - start);
        if map
            .advise_range(memmap2::Advice::PopulateRead, start, len)
            .is_err()
        {
            let _ = map.advise(memmap2::Advice::WillNeed);
            break;
        }
    }
    Ok(map)
}

/// Drops a just-written, fsynced file from the page cache. The pages the write left behind
/// are small; dropped, the next load reads the file through its mapping with the huge-page
/// advice, and random lookups then miss the TLB far less. Best effort.
#[allow(unsafe_code)]
fn forget_cached_pages(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor belongs to `file`, which is open for the whole call; the
        // advice only affects caching of data already on disk.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            tracing::debug!(
                code = rc,
                "could not drop the written snapshot from the page cache"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// What `snapshot inspect` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub header: Header,
    pub by_kind: Vec<(Kind, u64)>,
    pub by_status: Vec<(Status, u64)>,
    pub with_booklet: u64,
    pub open_ended: u64,
}

/// Verifies a snapshot completely (as loading does) and counts it.
pub fn inspect(path: &Path) -> Result<Inspection, SnapshotError> {
    let (header, base) = load(path)?;
    let mut by_kind = [0u64; 3];
    let mut by_status = [0u64; 3];
    let (mut with_booklet, mut open_ended) = (0, 0);
    for row in base.rows() {
        if let Row::Live(m) = row {
            by_kind[m.kind as usize] += 1;
            by_status[m.status as usize] += 1;
            with_booklet += u64::from(m.booklet_no.is_some());
            open_ended += u64::from(m.coverage_until.is_none());
        }
    }
    Ok(Inspection {
        header,
        by_kind: Kind::ALL
            .iter()
            .map(|k| (*k, by_kind[*k as usize]))
            .collect(),
        by_status: Status::ALL
            .iter()
            .map(|s| (*s, by_status[*s as usize]))
            .collect(),
        with_booklet,
        open_ended,
    })
}

/// Rewrites a snapshot's header in place (tests build files a clock or an operator might
/// have made: another build time, another position).
#[cfg(test)]
pub(crate) fn rewrite_header(path: &Path, edit: impl FnOnce(&mut Header)) {
    let mut header = read_header(path).unwrap();
    edit(&mut header);
    let mut data = std::fs::read(path).unwrap();
    data[..HEADER_LEN].copy_from_slice(&header.encode());
    std::fs::write(path, data).unwrap();
}

#[cfg(test)]
mod tests;
