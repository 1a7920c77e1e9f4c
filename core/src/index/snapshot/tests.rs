use super::*;
use crate::dates::Day;
use crate::demo::Generator;
use crate::index::body::Body;
use crate::index::layout::Layout;
use crate::index::Index;
use crate::index::{BodyBuilder, Origin};
use crate::member::Member;
use crate::national_id::NationalId;

const OFF_BODY_CHECKSUM_TEST: usize = OFF_BODY_CHECKSUM;

/// Loads as a replica does, and checks that the windowed check a build makes
/// ([`crate::index::verify::verify`]) comes to the same verdict, for the same reason.
fn load(path: &Path) -> Result<(Header, Base), SnapshotError> {
    let loaded = super::load(path);
    let verified = crate::index::verify::verify(path);
    match (&loaded, &verified) {
        (Ok((a, _)), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(
            std::mem::discriminant(a),
            std::mem::discriminant(b),
            "load: {a}; windowed: {b}"
        ),
        (a, b) => panic!(
            "load and the windowed check disagree: {:?} / {:?}",
            a.as_ref().map(|(h, _)| h),
            b
        ),
    }
    loaded
}

fn population(n: u64) -> Vec<Member> {
    Generator::new(n, 3, Day::parse_iso("2026-11-22").unwrap()).collect()
}

fn gone() -> NationalId {
    NationalId::parse("0012345679").unwrap()
}

fn body_of(members: &[Member]) -> Body {
    let mut b = BodyBuilder::default();
    for (i, m) in members.iter().enumerate() {
        b.push_member(m, Origin(i as u64));
    }
    b.push_tombstone(gone(), 9, Origin(u64::MAX));
    b.finish().0
}

fn written(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("s.snap");
    let position = Some(FeedPosition {
        ms: 1_700_000_000_123,
        seq: 4,
    });
    write(
        &path,
        Layout::of_body(&body_of(&population(n))),
        position,
        None,
    )
    .unwrap();
    path
}

/// Rewrites bytes of a file and, when asked, repairs the checksums so that the check behind
/// them is what refuses the file.
fn patch(path: &Path, at: usize, bytes: &[u8], fix_body_sum: bool, fix_header_sum: bool) {
    let mut data = std::fs::read(path).unwrap();
    data[at..at + bytes.len()].copy_from_slice(bytes);
    if fix_body_sum {
        let sum = xxh3_64(&data[HEADER_LEN..]);
        data[OFF_BODY_CHECKSUM_TEST..OFF_BODY_CHECKSUM_TEST + 8]
            .copy_from_slice(&sum.to_le_bytes());
    }
    if fix_header_sum {
        let sum = xxh3_64(&data[..OFF_HEADER_CHECKSUM]);
        data[OFF_HEADER_CHECKSUM..OFF_HEADER_CHECKSUM + 8].copy_from_slice(&sum.to_le_bytes());
    }
    std::fs::write(path, data).unwrap();
}

#[test]
fn round_trips_members_tombstones_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), 3_000);
    let (header, base) = load(&path).unwrap();
    assert_eq!(header.members, 3_000);
    assert_eq!(header.tombstones, 1);
    assert_eq!(
        header.position,
        Some(FeedPosition {
            ms: 1_700_000_000_123,
            seq: 4
        })
    );
    assert_eq!(header.descriptor, FORMAT_DESCRIPTOR);
    let index = Index::new(base);
    for m in population(3_000) {
        let found = index.member(m.national_id).unwrap();
        assert_eq!(found.version, m.version);
        assert_eq!(found.coverage_until, m.coverage_until);
        assert_eq!(found.main_national_id, m.main_national_id);
        assert_eq!(found.special_conditions, m.special_conditions);
        assert_eq!(
            found.display_name,
            m.display_name.as_deref().map(crate::member::mask_name)
        );
    }
    assert_eq!(index.version_of(gone()), 9);
    assert!(index.member(gone()).is_none());
    assert_eq!(read_header(&path).unwrap(), header);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        HEADER_LEN as u64 + header.body_len
    );
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn full_names_never_reach_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.snap");
    let mut m = population(1).remove(0);
    m.display_name = Some("Zeynab Qolamhosseinzadeh".into());
    write(&path, Layout::of_body(&body_of(&[m])), None, None).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("Zeynab Q***"));
    assert!(!text.contains("Qolamhosseinzadeh"));
}

#[test]
fn a_snapshot_without_position_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.snap");
    write(
        &path,
        Layout::of_body(&body_of(&population(10))),
        None,
        None,
    )
    .unwrap();
    assert_eq!(read_header(&path).unwrap().position, None);
}

#[test]
fn inspect_counts_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), 2_000);
    let report = inspect(&path).unwrap();
    assert_eq!(report.by_kind.iter().map(|(_, n)| n).sum::<u64>(), 2_000);
    assert_eq!(report.by_status.iter().map(|(_, n)| n).sum::<u64>(), 2_000);
    let members = population(2_000);
    let dependents = members.iter().filter(|m| m.kind == Kind::Dependent).count() as u64;
    assert!(report.by_kind.contains(&(Kind::Dependent, dependents)));
    assert_eq!(
        report.with_booklet,
        members.iter().filter(|m| m.booklet_no.is_some()).count() as u64
    );
}

#[test]
fn refuses_missing_empty_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        load(&dir.path().join("none")),
        Err(SnapshotError::Io { .. })
    ));
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(load(&empty), Err(SnapshotError::BadMagic(_))));
    let text = dir.path().join("text");
    std::fs::write(&text, "{\"national_id\": \"0012345679\"}\n".repeat(200)).unwrap();
    assert!(matches!(load(&text), Err(SnapshotError::BadMagic(_))));
    assert!(matches!(
        read_header(&text),
        Err(SnapshotError::BadMagic(_))
    ));
    assert!(load(dir.path()).is_err());
}

#[test]
fn refuses_wrong_magic_version_and_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), 100);
    patch(&path, 0, b"ELIGDSNQ", false, true);
    assert!(matches!(load(&path), Err(SnapshotError::BadMagic(_))));

    let path = written(dir.path(), 100);
    patch(&path, OFF_VERSION, &1u32.to_le_bytes(), false, true);
    let err = load(&path).unwrap_err();
    assert!(
        matches!(err, SnapshotError::UnsupportedVersion { found: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("format version 1"), "{err}");

    for other in [
        "rkyv-0.8/be/aligned/ptr64/eligd.body.v2/fib64",
        "rkyv-0.8/le/aligned/ptr32/eligd.body.v2/fib64",
    ] {
        let path = written(dir.path(), 100);
        let mut field = [0u8; DESCRIPTOR_LEN];
        field[..other.len()].copy_from_slice(other.as_bytes());
        patch(&path, OFF_DESCRIPTOR, &field, false, true);
        let err = load(&path).unwrap_err();
        assert!(matches!(err, SnapshotError::FormatMismatch { .. }), "{err}");
        assert!(err.to_string().contains(other), "{err}");
    }
}

#[test]
fn refuses_truncated_and_extended_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), 500);
    let full = std::fs::read(&path).unwrap();
    for cut in [
        9,
        100,
        HEADER_LEN - 1,
        HEADER_LEN,
        HEADER_LEN + 1,
        full.len() / 2,
        full.len() - 1,
    ] {
        std::fs::write(&path, &full[..cut]).unwrap();
        let err = load(&path).unwrap_err();
        assert!(
            matches!(err, SnapshotError::Truncated { .. }),
            "cut at {cut}: {err}"
        );
        assert!(inspect(&path).is_err());
    }
    let mut longer = full.clone();
    longer.extend_from_slice(b"junk");
    std::fs::write(&path, &longer).unwrap();
    assert!(matches!(load(&path), Err(SnapshotError::Truncated { .. })));
}

#[test]
fn a_single_flipped_bit_anywhere_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), 300);
    let full = std::fs::read(&path).unwrap();
    let offsets: Vec<usize> = (0..OFF_HEADER_CHECKSUM + 8)
        .chain((HEADER_LEN..full.len()).step_by(61))
        .chain([full.len() - 1])
        .collect();
    for at in offsets {
        let mut data = full.clone();
        data[at] ^= 1 << (at % 8);
        std::fs::write(&path, &data).unwrap();
        assert!(load(&path).is_err(), "flip at {at} was accepted");
    }
}

#[test]
fn corrupt_bodies_with_matching_checksums_are_refused_without_panicking() {
    // Whatever a corrupt body holds, validation (rkyv's checks, then the record rules)
    // refuses it or yields only valid members; it never panics.
    let dir = tempfile::tempdir().unwrap();
    let clean = std::fs::read(written(dir.path(), 200)).unwrap();
    let body_len = clean.len() - HEADER_LEN;
    let path = dir.path().join("c.snap");
    let mut refused = 0;
    for (i, at) in (0..body_len).step_by(7).enumerate() {
        std::fs::write(&path, &clean).unwrap();
        let value = [(i as u8).wrapping_mul(37) | 0x80];
        patch(&path, HEADER_LEN + at, &value, true, true);
        match load(&path) {
            Err(_) => refused += 1,
            Ok((_, base)) => {
                for row in base.rows() {
                    if let Row::Live(m) = row {
                        m.validate().unwrap();
                    }
                }
            }
        }
    }
    assert!(refused > body_len / 14, "only {refused} refused");
}

#[test]
fn header_counts_must_match_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), 100);
    patch(&path, OFF_MEMBERS, &99u64.to_le_bytes(), false, true);
    assert!(matches!(
        load(&path),
        Err(SnapshotError::CountMismatch { .. })
    ));
}

#[test]
fn invalid_records_in_a_well_formed_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.snap");
    let mut body = body_of(&population(10));
    let live = body
        .records
        .iter_mut()
        .find(|r| r.national_id != 0 && r.attrs & crate::index::body::TOMBSTONE == 0)
        .unwrap();
    live.coverage_until = i32::MAX;
    // RefusedSnapshot by the check every load makes, before the file gets its name; nothing is left.
    let err = write(&path, Layout::of_body(&body), None, None).unwrap_err();
    assert!(matches!(err, SnapshotError::Unverified { .. }), "{err}");
    assert!(err.to_string().contains("coverage_until"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // The same body under a valid snapshot's name (a file from elsewhere) fails the load.
    let good = written(dir.path(), 10);
    let data = std::fs::read(&good).unwrap();
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&body).unwrap();
    let mut forged = data[..HEADER_LEN].to_vec();
    forged.extend_from_slice(&bytes);
    std::fs::write(&path, &forged).unwrap();
    patch(
        &path,
        OFF_BODY_LEN,
        &(bytes.len() as u64).to_le_bytes(),
        true,
        false,
    );
    patch(&path, OFF_MEMBERS, &body.live.to_le_bytes(), false, false);
    patch(
        &path,
        OFF_TOMBSTONES,
        &body.tombstones.to_le_bytes(),
        false,
        true,
    );
    let err = load(&path).unwrap_err();
    assert!(matches!(err, SnapshotError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("coverage_until"), "{err}");
}
