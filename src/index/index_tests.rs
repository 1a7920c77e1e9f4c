use super::*;
use crate::member::Member;

fn member(id: &str, version: u64, booklet: Option<&str>) -> Member {
    let booklet = booklet.map_or("null".to_string(), |b| format!("\"{b}\""));
    Member::from_json(&format!(
        r#"{{"national_id":"{id}","version":{version},"kind":"main","scheme":"mandatory",
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
    let mut b = BaseBuilder::default();
    for m in members {
        b.insert(m).unwrap();
    }
    Index::new(b.build())
}

#[test]
fn lookups_find_base_members() {
    let index = index_with(vec![member(A, 3, Some("111"))]);
    assert_eq!(index.get(id(A)).unwrap().version, 3);
    assert!(index.get(id(B)).is_none());
    assert_eq!(
        index
            .get_by_booklet(Booklet::parse("111").unwrap())
            .unwrap()
            .national_id,
        id(A)
    );
    assert!(index
        .get_by_booklet(Booklet::parse("0111").unwrap())
        .is_none());
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
    assert_eq!(index.get(id(A)).unwrap().version, 4);
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
    assert!(index.get(id(A)).is_none());
    assert_eq!(index.len(), 0);
    assert_eq!(
        index.apply(Change::Upsert(member(A, 4, None))),
        Applied::Stale { held: 5 }
    );
    assert!(index.get(id(A)).is_none());
    assert_eq!(
        index.apply(Change::Upsert(member(A, 6, None))),
        Applied::Applied
    );
    assert_eq!(index.get(id(A)).unwrap().version, 6);
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
    let b555 = Booklet::parse("555").unwrap();
    // The booklet moves from A to B.
    index.apply(Change::Upsert(member(A, 2, Some("777"))));
    index.apply(Change::Upsert(member(B, 2, Some("555"))));
    assert_eq!(index.get_by_booklet(b555).unwrap().national_id, id(B));
    assert_eq!(
        index
            .get_by_booklet(Booklet::parse("777").unwrap())
            .unwrap()
            .national_id,
        id(A)
    );
    // B is deleted: the booklet is nobody's.
    index.apply(Change::Delete {
        national_id: id(B),
        version: 3,
    });
    assert!(index.get_by_booklet(b555).is_none());
}

#[test]
fn builder_guards_versions_and_booklet_uniqueness() {
    let mut b = BaseBuilder::default();
    b.insert(member(A, 2, Some("1"))).unwrap();
    assert_eq!(
        b.insert(member(A, 2, None)),
        Err(InsertError::Stale {
            version: 2,
            held: 2
        })
    );
    assert!(matches!(
        b.insert(member(B, 1, Some("1"))),
        Err(InsertError::BookletTaken { .. })
    ));
    // A newer version of A releases booklet 1, which B may then take.
    b.insert(member(A, 3, Some("2"))).unwrap();
    b.insert(member(B, 1, Some("1"))).unwrap();
    b.delete(id(A), 4).unwrap();
    assert_eq!(
        b.delete(id(A), 4),
        Err(InsertError::Stale {
            version: 4,
            held: 4
        })
    );
    let index = Index::new(b.build());
    assert!(index.get_by_booklet(Booklet::parse("2").unwrap()).is_none());
    assert_eq!(
        index
            .get_by_booklet(Booklet::parse("1").unwrap())
            .unwrap()
            .national_id,
        id(B)
    );
    assert_eq!(index.version_of(id(A)), 4);
}

#[test]
fn merged_view_prefers_the_overlay() {
    let index = index_with(vec![member(A, 1, None), member(B, 1, None)]);
    index.apply(Change::Upsert(member(A, 2, None)));
    index.apply(Change::Delete {
        national_id: id(B),
        version: 2,
    });
    let (members, tombstones) = index.merged();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].version, 2);
    assert_eq!(tombstones, vec![(id(B), 2)]);
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
    assert_eq!(index.get(id(A)).unwrap().version, 2003);
    assert_eq!(index.len(), 1);
}
