//! Compaction: base + overlay into a new snapshot, swapped in, overlay trimmed.

use super::*;
use crate::dates::Day;
use crate::demo::Generator;
use crate::index::snapshot_dir;

/// The snapshots in `dir`, newest first (by header).
fn snapshots_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let listing = snapshot_dir::list(dir).unwrap();
    assert!(listing.refused.is_empty(), "{:?}", listing.refused);
    listing.snapshots.into_iter().map(|s| s.path).collect()
}

fn population(n: u64) -> Vec<Member> {
    Generator::new(n, 5, Day::parse_iso("2026-11-22").unwrap()).collect()
}

fn bumped(m: &Member, by: u64) -> Member {
    let mut m = m.clone();
    m.version += by;
    m.coverage_until = Some(Day::parse_iso("2030-01-01").unwrap().0);
    m
}

#[test]
fn compaction_writes_base_and_overlay_and_trims_the_overlay() {
    let members = population(2_000);
    let index = Index::from_members(members.clone()).unwrap();
    index.apply(Change::Upsert(bumped(&members[0], 10)));
    index.apply(Change::Delete {
        national_id: members[1].national_id,
        version: members[1].version + 1,
    });
    index.note_position(FeedPosition {
        ms: 1_700_000_000_000,
        seq: 7,
    });
    assert_eq!(index.overlay_len(), 2);

    let dir = tempfile::tempdir().unwrap();
    let done = index
        .compact_into(dir.path(), 3, false)
        .unwrap()
        .expect("a compaction ran");
    assert_eq!(done.members, 1_999);
    assert_eq!(done.overlay_entries, 2);
    assert_eq!(index.overlay_len(), 0, "the overlay is trimmed");
    assert_eq!(
        index.base_position(),
        Some(FeedPosition {
            ms: 1_700_000_000_000,
            seq: 7
        })
    );
    assert_eq!(
        index.member(members[0].national_id).unwrap().version,
        members[0].version + 10
    );
    assert!(index.member(members[1].national_id).is_none());
    // The tombstone survives the compaction: an older upsert still cannot cross it.
    assert_eq!(
        index.apply(Change::Upsert(members[1].clone())),
        Applied::Stale {
            held: members[1].version + 1
        }
    );

    // The file holds the same: a fresh index from it answers the same.
    let (header, base) = snapshot::load(&done.path).unwrap();
    assert_eq!(
        header.position,
        Some(FeedPosition {
            ms: 1_700_000_000_000,
            seq: 7
        })
    );
    assert_eq!(header.tombstones, 1);
    let reloaded = Index::new(base);
    for m in members.iter().skip(2) {
        assert_eq!(
            reloaded.member(m.national_id).map(|r| r.version),
            Some(m.version)
        );
    }
    assert_eq!(
        reloaded.version_of(members[1].national_id),
        members[1].version + 1
    );
}

#[test]
fn changes_after_the_cut_stay_in_the_overlay() {
    let members = population(500);
    let index = Index::from_members(members.clone()).unwrap();
    index.apply(Change::Upsert(bumped(&members[0], 1)));
    let (frozen, cursor) = index.cut(false).expect("something to cut");
    assert_eq!(frozen.len(), 1);
    // Arrives while the snapshot is being written.
    index.apply(Change::Upsert(bumped(&members[2], 1)));
    // While frozen, lookups still see both.
    assert_eq!(
        index.member(members[0].national_id).unwrap().version,
        members[0].version + 1
    );
    // An apply checks the frozen layer's version too.
    assert_eq!(
        index.apply(Change::Upsert(bumped(&members[0], 1))),
        Applied::Stale {
            held: members[0].version + 1
        }
    );
    assert!(
        index.cut(true).is_none(),
        "one cut at a time: a second never replaces the frozen layer"
    );
    let dir = tempfile::tempdir().unwrap();
    let done = index
        .write_cut(
            dir.path(),
            3,
            frozen,
            cursor,
            &|| true,
            std::time::Instant::now(),
        )
        .unwrap();
    assert_eq!(
        done.overlay_entries, 1,
        "the compaction wrote the frozen overlay only"
    );
    assert_eq!(
        index.overlay_len(),
        1,
        "the change after the cut is still in the overlay"
    );
    assert_eq!(
        index.member(members[0].national_id).unwrap().version,
        members[0].version + 1
    );
    assert_eq!(
        index.member(members[2].national_id).unwrap().version,
        members[2].version + 1
    );
    let (_, base) = snapshot::load(&done.path).unwrap();
    assert_eq!(
        base.get(members[2].national_id).unwrap().version,
        members[2].version,
        "not in this snapshot"
    );
}

#[test]
fn nothing_to_compact_unless_forced() {
    let index = Index::from_members(population(100)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert!(index.compact_into(dir.path(), 3, false).unwrap().is_none());
    let forced = index.compact_into(dir.path(), 3, true).unwrap().unwrap();
    assert_eq!(forced.members, 100);
}

#[test]
fn a_failed_compaction_leaves_nothing_and_puts_the_changes_back() {
    let members = population(100);
    let index = Index::from_members(members.clone()).unwrap();
    index.apply(Change::Upsert(bumped(&members[0], 1)));
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    assert!(index.compact_into(&not_a_dir, 3, false).is_err());
    assert_eq!(
        index.member(members[0].national_id).unwrap().version,
        members[0].version + 1
    );
    assert_eq!(index.overlay_len(), 1, "the frozen change is back, once");
    // The change is in the active overlay again: newer changes still win over it.
    assert_eq!(
        index.apply(Change::Upsert(bumped(&members[0], 1))),
        Applied::Stale {
            held: members[0].version + 1
        }
    );
    let done = index.compact_into(dir.path(), 3, false).unwrap().unwrap();
    assert_eq!(done.overlay_entries, 1);
    assert_eq!(index.overlay_len(), 0);
    assert_eq!(
        index.member(members[0].national_id).unwrap().version,
        members[0].version + 1
    );
}

#[test]
fn old_snapshots_are_pruned() {
    let members = population(50);
    let index = Index::from_members(members.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for round in 1..=5u64 {
        index.apply(Change::Upsert(bumped(&members[0], round)));
        index.compact_into(dir.path(), 2, false).unwrap().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    let kept = snapshots_in(dir.path());
    assert_eq!(kept.len(), 2);
    // An unfinished write or build left by a crash goes at the next compaction; one still
    // running (its file locked) and other files stay.
    std::fs::write(dir.path().join(".eligd-snapshot-abc123.tmp"), b"half").unwrap();
    let running = dir.path().join(".eligd-snapshot-running.tmp");
    let held = std::fs::File::create(&running).unwrap();
    held.lock().unwrap();
    let killed_build = dir.path().join(".eligd-build-x1");
    std::fs::create_dir(&killed_build).unwrap();
    std::fs::write(killed_build.join(".lock"), b"").unwrap();
    std::fs::write(killed_build.join("run-1"), b"rows").unwrap();
    let mut building = crate::index::BodyBuilder::spilling_with(dir.path(), 0).unwrap();
    for m in &members {
        building.push_member(m, crate::index::Origin(1));
    }
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    index.apply(Change::Upsert(bumped(&members[0], 6)));
    let done = index.compact_into(dir.path(), 2, false).unwrap().unwrap();
    assert!(done
        .pruned
        .iter()
        .any(|p| p.ends_with(".eligd-snapshot-abc123.tmp")));
    assert!(done.pruned.iter().any(|p| p == &killed_build));
    assert!(running.exists(), "a write in progress was removed");
    let spills = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".eligd-build-")
        })
        .count();
    assert_eq!(spills, 1, "the running build's spill directory was removed");
    assert!(
        building.resolve(None).is_ok(),
        "the running build lost its rows"
    );
    drop(held);
    assert!(dir.path().join("notes.txt").exists());
    let kept = snapshots_in(dir.path());
    let (_, newest) = snapshot::load(&kept[0]).unwrap();
    assert_eq!(
        newest.get(members[0].national_id).unwrap().version,
        members[0].version + 6
    );
    assert_eq!(kept.len(), 2);
}

#[test]
fn lookups_never_miss_while_compactions_run() {
    let members = population(20_000);
    let index = Index::from_members(members.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|t| {
                let (index, members, stop) = (&index, &members, &stop);
                s.spawn(move || {
                    let mut n = 0usize;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let m = &members[(n * 7919 + t) % members.len()];
                        assert!(
                            index.view().get(m.national_id).is_some(),
                            "lost {:?}",
                            m.national_id
                        );
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        // Readers stop even if a compaction below fails the test.
        struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        for round in 1..=4u64 {
            for m in members.iter().step_by(97) {
                index.apply(Change::Upsert(bumped(m, round)));
            }
            index.compact_into(dir.path(), 2, false).unwrap().unwrap();
        }
        drop(_stop);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
    assert_eq!(index.len(), members.len());
    assert_eq!(
        index.member(members[0].national_id).unwrap().version,
        members[0].version + 4
    );
}

#[test]
fn after_a_failure_the_next_compaction_takes_every_change_and_the_latest_cursor() {
    let members = population(50);
    let index = Index::from_members(members.clone()).unwrap();
    index.apply(Change::Upsert(bumped(&members[0], 1)));
    index.apply(Change::Delete {
        national_id: members[3].national_id,
        version: members[3].version + 1,
    });
    index.note_position(FeedPosition { ms: 10, seq: 1 });
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    assert!(index.compact_into(&not_a_dir, 3, false).is_err());
    // More changes and a later position arrive before the next attempt: it is not stuck on
    // the failed cut, it writes all of them and the position they reach.
    index.apply(Change::Upsert(bumped(&members[1], 1)));
    index.note_position(FeedPosition { ms: 20, seq: 1 });
    index.adopt_epoch(StreamEpoch(7));
    let done = index.compact_into(dir.path(), 3, false).unwrap().unwrap();
    let header = snapshot::read_header(&done.path).unwrap();
    assert_eq!(header.position, Some(FeedPosition { ms: 20, seq: 1 }));
    assert_eq!(header.epoch, Some(StreamEpoch(7)));
    assert_eq!(done.overlay_entries, 3);
    assert_eq!(index.overlay_len(), 0);
    let (_, base) = snapshot::load(&done.path).unwrap();
    assert_eq!(
        base.version_of(members[3].national_id),
        members[3].version + 1
    );
    assert!(base.get(members[3].national_id).is_none());
    assert_eq!(
        base.get(members[1].national_id).unwrap().version,
        members[1].version + 1
    );
}

#[test]
fn the_synthetic_population_is_never_written_or_prunes_anything() {
    let dir = tempfile::tempdir().unwrap();
    let real = Index::from_members(population(10)).unwrap();
    real.compact_into(dir.path(), 1, true).unwrap().unwrap();
    let demo = Index::synthetic(Base::from_body(&body_of(&population(30)), None).unwrap());
    demo.apply(Change::Delete {
        national_id: population(30)[0].national_id,
        version: 1_000,
    });
    assert!(matches!(
        demo.compact_into(dir.path(), 1, true),
        Err(snapshot::SnapshotError::Synthetic)
    ));
    let left = snapshots_in(dir.path());
    assert_eq!(left.len(), 1);
    assert_eq!(snapshot::read_header(&left[0]).unwrap().members, 10);
    assert_eq!(demo.overlay_len(), 1, "nothing was cut");
}

fn body_of(members: &[Member]) -> body::Body {
    let mut builder = BodyBuilder::default();
    for (i, m) in members.iter().enumerate() {
        builder.push_member(m, Origin(i as u64));
    }
    builder.finish().0
}

#[test]
fn the_newest_snapshot_is_chosen_and_pruned_by_header_not_name() {
    let members = population(40);
    let index = Index::from_members(members.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    index.apply(Change::Upsert(bumped(&members[0], 1)));
    index.note_position(FeedPosition { ms: 5_000, seq: 0 });
    let first = index.compact_into(dir.path(), 5, false).unwrap().unwrap();
    // A valid file from a host whose clock is an hour fast, at an older position, named as
    // its header says.
    let fast = dir.path().join("fast.snap");
    std::fs::copy(&first.path, &fast).unwrap();
    snapshot::rewrite_header(&fast, |h| {
        h.built_at_ms += 3_600_000;
        h.position = Some(FeedPosition { ms: 4_000, seq: 0 });
    });
    let fast_name = snapshot_dir::file_name(&snapshot::read_header(&fast).unwrap());
    std::fs::rename(&fast, dir.path().join(&fast_name)).unwrap();
    // A copy whose name claims a later build time than its header.
    let renamed = dir.path().join(format!(
        "eligd-{:013}-9000-0.snap",
        chrono::Utc::now().timestamp_millis() + 7_200_000
    ));
    std::fs::copy(&first.path, &renamed).unwrap();

    let listing = snapshot_dir::list(dir.path()).unwrap();
    let order: Vec<_> = listing.snapshots.iter().map(|s| s.path.clone()).collect();
    assert_eq!(order, vec![first.path.clone(), dir.path().join(&fast_name)]);
    assert_eq!(listing.refused.len(), 1);
    assert_eq!(listing.refused[0].path, renamed);
    assert!(
        listing.refused[0]
            .reason
            .contains("does not match its header"),
        "{}",
        listing.refused[0].reason
    );

    // --snapshot-keep 1: the new compaction snapshot survives, the fast one goes, and the
    // misnamed file is left for an operator.
    index.apply(Change::Upsert(bumped(&members[0], 2)));
    index.note_position(FeedPosition { ms: 6_000, seq: 0 });
    let second = index.compact_into(dir.path(), 1, false).unwrap().unwrap();
    assert!(second.path.exists());
    assert_eq!(
        snapshots_in_unchecked(dir.path()),
        vec![second.path.clone()]
    );
    assert!(renamed.exists());
    assert!(!first.path.exists());
}

fn snapshots_in_unchecked(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    snapshot_dir::list(dir)
        .unwrap()
        .snapshots
        .into_iter()
        .map(|s| s.path)
        .collect()
}

#[test]
fn a_guarded_compaction_writes_but_does_not_prune_while_the_guard_says_no() {
    let members = population(20);
    let index = Index::from_members(members.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for round in 1..=3u64 {
        index.apply(Change::Upsert(bumped(&members[0], round)));
        let done = index
            .compact_into_guarded(dir.path(), 1, false, &|| false)
            .unwrap()
            .unwrap();
        assert!(done.pruned.is_empty());
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    assert_eq!(snapshots_in(dir.path()).len(), 3);
    index.apply(Change::Upsert(bumped(&members[0], 4)));
    index
        .compact_into_guarded(dir.path(), 1, false, &|| true)
        .unwrap()
        .unwrap();
    assert_eq!(snapshots_in(dir.path()).len(), 1);
}

#[test]
fn a_cleanup_racing_builds_and_writes_never_takes_what_they_hold() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let cleaner = {
        let (stop, dir) = (std::sync::Arc::clone(&stop), dir.path().to_path_buf());
        std::thread::spawn(move || {
            let mut removed = 0;
            while !stop.load(Ordering::Acquire) {
                removed += snapshot_dir::remove_unfinished_writes(&dir).len();
            }
            removed
        })
    };
    let members = population(5);
    for _ in 0..3_000 {
        let mut builder = crate::index::BodyBuilder::spilling_with(dir.path(), 0).unwrap();
        for (i, m) in members.iter().enumerate() {
            builder.push_member(m, crate::index::Origin(i as u64 + 1));
        }
        let mut resolved = builder.resolve(None).unwrap();
        let layout = resolved.layout(None).unwrap();
        snapshot::write_built(snapshot::Target::Dir(dir.path()), layout, None, None).unwrap();
    }
    stop.store(true, Ordering::Release);
    cleaner.join().unwrap();
}
