use super::*;
use crate::member::Member;

fn member(id: &str, version: u64, booklet: Option<&str>) -> Member {
    let booklet = booklet.map_or("null".to_string(), |b| format!("\"{b}\""));
    Member::from_json(&format!(
        r#"{{"national_id":"{id}","version":{version},"kind":"main","scheme":"mandatory","display_name":"Sara Ahmadi",
            "status":"active","coverage_until":"2027-01-01","services":["pharmacy"],"booklet_no":{booklet}}}"#
    ))
    .unwrap()
}

fn id(s: &str) -> NationalId {
    NationalId::parse(s).unwrap()
}

const A: &str = "0012345679";
const B: &str = "0499370899";

fn index_with(members: Vec<Member>) -> Index {
    Index::from_members(members).unwrap()
}

fn booklet_holder(index: &Index, b: &str) -> Option<NationalId> {
    let view = index.view();
    let found = view.get_by_booklet(Booklet::parse(b).unwrap());
    found.map(|m| m.view().national_id)
}

#[test]
fn lookups_find_base_members_with_masked_names() {
    let index = index_with(vec![member(A, 3, Some("111"))]);
    let found = index.member(id(A)).unwrap();
    assert_eq!(found.version, 3);
    assert_eq!(
        found.display_name.as_deref(),
        Some("Sara A***"),
        "the base keeps only the masked name"
    );
    assert!(index.member(id(B)).is_none());
    assert_eq!(booklet_holder(&index, "111"), Some(id(A)));
    assert_eq!(booklet_holder(&index, "0111"), None);
    assert_eq!(index.len(), 1);
}

#[test]
fn apply_is_version_guarded() {
    let index = index_with(vec![member(A, 3, None)]);
    assert_eq!(
        index.apply(Change::Upsert(member(A, 3, None))),
        Applied::Stale { held: 3 }
    );
    assert_eq!(
        index.apply(Change::Upsert(member(A, 2, None))),
        Applied::Stale { held: 3 }
    );
    assert_eq!(
        index.apply(Change::Upsert(member(A, 4, None))),
        Applied::Applied
    );
    assert_eq!(index.member(id(A)).unwrap().version, 4);
    assert_eq!(
        index.apply(Change::Upsert(member(A, 4, None))),
        Applied::Stale { held: 4 }
    );
    assert_eq!(index.version_of(id(A)), 4);
    assert_eq!(index.len(), 1);
}

#[test]
fn delete_leaves_a_tombstone_that_older_upserts_cannot_cross() {
    let index = index_with(vec![member(A, 3, None)]);
    assert_eq!(
        index.apply(Change::Delete {
            national_id: id(A),
            version: 5
        }),
        Applied::Applied
    );
    assert!(index.member(id(A)).is_none());
    assert_eq!(index.len(), 0);
    assert_eq!(
        index.apply(Change::Upsert(member(A, 4, None))),
        Applied::Stale { held: 5 }
    );
    assert!(index.member(id(A)).is_none());
    assert_eq!(
        index.apply(Change::Upsert(member(A, 6, None))),
        Applied::Applied
    );
    assert_eq!(index.member(id(A)).unwrap().version, 6);
    assert_eq!(index.len(), 1);
}

#[test]
fn delete_of_an_unknown_member_still_guards_against_late_upserts() {
    let index = index_with(vec![]);
    assert_eq!(
        index.apply(Change::Delete {
            national_id: id(B),
            version: 9
        }),
        Applied::Applied
    );
    assert_eq!(index.len(), 0);
    assert_eq!(
        index.apply(Change::Upsert(member(B, 8, None))),
        Applied::Stale { held: 9 }
    );
    assert_eq!(index.len(), 0);
}

#[test]
fn new_members_and_counts() {
    let index = index_with(vec![member(A, 1, None)]);
    assert_eq!(
        index.apply(Change::Upsert(member(B, 1, None))),
        Applied::Applied
    );
    assert_eq!(index.len(), 2);
    assert_eq!(index.overlay_len(), 1);
    index.apply(Change::Delete {
        national_id: id(B),
        version: 2,
    });
    index.apply(Change::Delete {
        national_id: id(B),
        version: 3,
    });
    assert_eq!(index.len(), 1);
}

#[test]
fn booklet_moves_follow_the_current_record() {
    let index = index_with(vec![member(A, 1, Some("555")), member(B, 1, None)]);
    // The booklet moves from A to B.
    index.apply(Change::Upsert(member(A, 2, Some("777"))));
    index.apply(Change::Upsert(member(B, 2, Some("555"))));
    assert_eq!(booklet_holder(&index, "555"), Some(id(B)));
    assert_eq!(booklet_holder(&index, "777"), Some(id(A)));
    // B is deleted: the booklet is nobody's.
    index.apply(Change::Delete {
        national_id: id(B),
        version: 3,
    });
    assert_eq!(booklet_holder(&index, "555"), None);
}

#[test]
fn from_members_refuses_repeats_and_shared_booklets() {
    assert!(Index::from_members(vec![member(A, 2, None), member(A, 2, None)]).is_err());
    assert!(Index::from_members(vec![member(A, 1, Some("1")), member(B, 1, Some("1"))]).is_err());
    let index = Index::from_members(vec![member(A, 1, None), member(A, 3, None)]);
    assert!(
        index.is_err(),
        "an import keeps the newest but reports the older line"
    );
}

#[test]
fn a_view_keeps_its_layers_while_others_change() {
    let index = index_with(vec![member(A, 1, None)]);
    let before = index.view();
    index.apply(Change::Upsert(member(A, 2, None)));
    // The overlay is shared, so the old view sees the new version too...
    assert_eq!(before.get(id(A)).unwrap().view().version, 2);
    // ...and a compaction swapping the base does not disturb it.
    let dir = tempfile::tempdir().unwrap();
    index.compact_into(dir.path(), 2, false).unwrap().unwrap();
    assert_eq!(before.get(id(A)).unwrap().view().version, 2);
    assert_eq!(index.view().get(id(A)).unwrap().view().version, 2);
}

#[test]
fn concurrent_applies_keep_the_highest_version() {
    let index = std::sync::Arc::new(index_with(vec![]));
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let index = &index;
            s.spawn(move || {
                for v in 1..=500u64 {
                    index.apply(Change::Upsert(member(A, v * 4 + t, None)));
                }
            });
        }
    });
    assert_eq!(index.member(id(A)).unwrap().version, 2003);
    assert_eq!(index.len(), 1);
}

mod compact;

#[test]
fn a_delete_of_the_version_held_removes_it_in_every_layer_and_survives_compaction() {
    // Base-held, overlay-held, then written into a new base: the delete carries the version
    // of the row it removed (as a database delete event does).
    let index = index_with(vec![member(A, 3, None)]);
    let delete = |v| Change::Delete {
        national_id: id(A),
        version: v,
    };
    assert_eq!(index.apply(delete(2)), Applied::Stale { held: 3 });
    assert_eq!(index.apply(delete(3)), Applied::Applied);
    assert!(index.member(id(A)).is_none());
    assert_eq!(
        index.apply(delete(3)),
        Applied::Stale { held: 3 },
        "a repeat"
    );
    assert_eq!(
        index.apply(Change::Upsert(member(A, 3, None))),
        Applied::Stale { held: 3 },
        "the deleted version cannot come back"
    );
    index.apply(Change::Upsert(member(B, 5, None)));
    assert_eq!(index.apply(delete(3)), Applied::Stale { held: 3 });
    let overlay_delete = Change::Delete {
        national_id: id(B),
        version: 5,
    };
    assert_eq!(index.apply(overlay_delete), Applied::Applied);
    assert_eq!(index.len(), 0);

    let dir = tempfile::tempdir().unwrap();
    index.compact_into(dir.path(), 2, false).unwrap().unwrap();
    assert!(index.member(id(A)).is_none() && index.member(id(B)).is_none());
    assert_eq!(index.version_of(id(A)), 3);
    assert_eq!(
        index.apply(Change::Upsert(member(A, 4, None))),
        Applied::Applied,
        "a newer insert brings the person back"
    );
}

const C: &str = "0000010006";
const E: &str = "0000010014";

#[test]
fn a_booklet_passed_on_and_back_is_found_between_compactions() {
    // E holds B2 in the base. E releases it, A takes it, C takes it briefly and releases it:
    // A holds it, though C was the last to claim it in the overlay.
    let index = index_with(vec![
        member(E, 1, Some("22")),
        member(A, 1, None),
        member(C, 1, None),
    ]);
    index.apply(Change::Upsert(member(E, 2, None)));
    index.apply(Change::Upsert(member(A, 3, Some("22"))));
    index.apply(Change::Upsert(member(C, 4, Some("22"))));
    assert_eq!(booklet_holder(&index, "22"), Some(id(C)), "the newer claim");
    index.apply(Change::Upsert(member(C, 5, None)));
    assert_eq!(booklet_holder(&index, "22"), Some(id(A)));
}

#[test]
fn two_current_claims_go_to_the_newer_change_and_survive_compaction() {
    // A holds B; C takes B with a newer version while A's release has not arrived; a
    // compaction runs; then A's release arrives: C holds B, before and after a reload.
    let index = index_with(vec![member(A, 1, Some("31")), member(C, 1, None)]);
    index.apply(Change::Upsert(member(C, 5, Some("31"))));
    assert_eq!(booklet_holder(&index, "31"), Some(id(C)));
    let dir = tempfile::tempdir().unwrap();
    let done = index.compact_into(dir.path(), 2, false).unwrap().unwrap();
    assert_eq!(booklet_holder(&index, "31"), Some(id(C)));
    assert_eq!(
        index.member(id(A)).unwrap().booklet_no,
        Booklet::parse("31"),
        "a compaction never rewrites a record"
    );
    index.apply(Change::Upsert(member(A, 4, None)));
    assert_eq!(booklet_holder(&index, "31"), Some(id(C)));
    let (_, base) = snapshot::load(&done.path).unwrap();
    let reloaded = Index::new(base);
    assert_eq!(booklet_holder(&reloaded, "31"), Some(id(C)));
    reloaded.apply(Change::Upsert(member(A, 4, None)));
    assert_eq!(booklet_holder(&reloaded, "31"), Some(id(C)));
}

#[test]
fn delete_markers_carry_over_into_another_index() {
    let old = index_with(vec![
        member(A, 1, None),
        member(B, 1, None),
        member(C, 1, None),
    ]);
    old.apply(Change::Delete {
        national_id: id(A),
        version: 6,
    });
    old.apply(Change::Delete {
        national_id: id(E),
        version: 2,
    });
    let dir = tempfile::tempdir().unwrap();
    old.compact_into(dir.path(), 2, false).unwrap().unwrap();
    old.apply(Change::Delete {
        national_id: id(B),
        version: 3,
    });
    let mut markers: Vec<(NationalId, u64)> = old
        .markers()
        .iter()
        .map(|m| (m.national_id(), m.version()))
        .collect();
    markers.sort_by_key(|(id, _)| id.as_u64());
    let mut expected = vec![(id(A), 6), (id(B), 3), (id(E), 2)];
    expected.sort_by_key(|(id, _)| id.as_u64());
    assert_eq!(markers, expected);
    // A repair snapshot without markers, holding A at an old version and B re-inserted later.
    let repaired = index_with(vec![member(A, 2, None), member(B, 9, None)]);
    for m in old.markers() {
        repaired.apply(m);
    }
    assert!(
        repaired.member(id(A)).is_none(),
        "deleted at 6, after version 2"
    );
    assert_eq!(
        repaired.member(id(B)).unwrap().version,
        9,
        "re-inserted after"
    );
    assert_eq!(
        repaired.apply(Change::Upsert(member(E, 1, None))),
        Applied::Stale { held: 2 },
        "a late, older upsert cannot bring a deleted member back"
    );
}
