use rkyv::rancor;

use super::*;
use crate::demo::Generator;
use crate::index::{BodyBuilder, Origin, Rejected};
use crate::member::Member;

fn population(n: u64) -> Vec<Member> {
    Generator::new(n, 11, Day::parse_iso("2026-11-22").unwrap()).collect()
}

fn build(members: &[Member]) -> (Body, Vec<Rejected>) {
    let mut b = BodyBuilder::default();
    for (i, m) in members.iter().enumerate() {
        b.push_member(m, Origin(i as u64 + 1));
    }
    b.finish()
}

fn archived(body: &Body) -> rkyv::util::AlignedVec<16> {
    rkyv::to_bytes::<rancor::Error>(body).unwrap()
}

#[test]
fn every_member_is_found_and_reads_back_the_same() {
    let members = population(10_000);
    let (body, rejected) = build(&members);
    assert!(rejected.is_empty());
    let bytes = archived(&body);
    let a = crate::index::base::validate(&bytes, 2).unwrap();
    for m in &members {
        let r = a.find(m.national_id.as_u64()).expect("found");
        let v = a.view(r);
        assert_eq!(v.version, m.version);
        assert_eq!(v.kind, m.kind);
        assert_eq!(v.main_national_id, m.main_national_id);
        assert_eq!(v.relation, m.relation);
        assert_eq!(v.coverage_until, m.coverage_day());
        assert_eq!(v.services, m.services);
        assert_eq!(v.booklet_no, m.booklet_no);
        assert_eq!(
            v.extras.special_conditions(),
            m.special_conditions
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        );
        assert_eq!(
            v.extras.primary_insurer(),
            m.view().extras.primary_insurer()
        );
        assert_eq!(v.name.masked(), m.view().name.masked());
        if let Some(b) = m.booklet_no {
            assert!(a
                .booklet_rows(b)
                .any(|r| r.national_id.to_native() == m.national_id.as_u64()));
        }
    }
    // A table at load 0.8, and names shared through the dictionary.
    assert_eq!(body.capacity, (members.len() as f64 / 0.8).ceil() as u64);
    assert!(body.records.len() as u64 >= body.capacity);
    assert!(
        body.names.len() < members.len() / 5,
        "{} names",
        body.names.len()
    );
    assert_eq!(std::mem::size_of::<ArchivedPackedMember>(), 48);
}

#[test]
fn absent_ids_are_not_found() {
    let members = population(1_000);
    let (body, _) = build(&members);
    let bytes = archived(&body);
    let a = crate::index::base::validate(&bytes, 1).unwrap();
    let others = Generator::new(1_000, 99, Day::parse_iso("2026-11-22").unwrap());
    for m in others.filter(|o| !members.iter().any(|x| x.national_id == o.national_id)) {
        assert!(a.find(m.national_id.as_u64()).is_none());
    }
}

#[test]
fn the_newest_version_wins_and_the_rest_are_reported() {
    let mut members = population(10);
    // The same version again on a later line: refused.
    let older = members[3].clone();
    let mut newer = members[4].clone();
    newer.version += 5;
    members.push(older);
    members.push(newer);
    let (body, rejected) = build(&members);
    assert_eq!(body.live, 10);
    assert_eq!(rejected.len(), 2);
    assert_eq!(
        rejected[0].origin,
        Origin(5),
        "the older line of member 4 loses to the newer later line"
    );
    assert!(
        rejected[0].reason.contains("not newer"),
        "{}",
        rejected[0].reason
    );
    assert_eq!(rejected[1].origin, Origin(11));
    assert!(
        rejected[1].reason.contains("line 4"),
        "{}",
        rejected[1].reason
    );
}

#[test]
fn tombstones_take_part_in_the_version_race() {
    let members = population(3);
    let mut b = BodyBuilder::default();
    b.push_member(&members[0], Origin(1));
    b.push_tombstone(members[0].national_id, members[0].version + 1, Origin(2));
    b.push_tombstone(members[1].national_id, members[1].version, Origin(3));
    b.push_member(&members[1], Origin(4));
    b.push_member(&members[2], Origin(5));
    let (body, rejected) = b.finish();
    // Member 0: the newer tombstone wins. Member 1: equal versions, the earlier line (the
    // tombstone) wins. Member 2 stays.
    assert_eq!((body.live, body.tombstones), (1, 2));
    assert_eq!(
        rejected.iter().map(|r| r.origin).collect::<Vec<_>>(),
        vec![Origin(1), Origin(4)]
    );
}

#[test]
fn booklet_conflicts_follow_the_policy() {
    let mut members = population(3);
    for m in &mut members {
        m.booklet_no = Booklet::parse("4242");
    }
    let (body, rejected) = build(&members);
    assert_eq!(body.live, 1);
    assert_eq!(rejected.len(), 2);
    assert!(
        rejected[0]
            .reason
            .starts_with("booklet_no: already used by member"),
        "{}",
        rejected[0].reason
    );
}

#[test]
fn a_build_sorted_on_disk_is_the_build_sorted_in_memory() {
    let mut members = population(6_000);
    // Repeats (older, equal and newer versions) and booklet conflicts, in any order.
    for i in (0..6_000).step_by(13) {
        let mut again = members[i].clone();
        again.version += (i % 3) as u64;
        members.push(again);
    }
    for i in (0..6_000).step_by(101) {
        members[i].booklet_no = Booklet::parse("777");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut on_disk = BodyBuilder::spilling_with(dir.path(), 0).unwrap();
    let mut in_memory = BodyBuilder::default();
    for (i, m) in members.iter().enumerate() {
        on_disk.push_member(m, Origin(i as u64 + 1));
        in_memory.push_member(m, Origin(i as u64 + 1));
        if i % 500 == 0 {
            on_disk.push_tombstone(m.national_id, m.version + 1, Origin(0));
            in_memory.push_tombstone(m.national_id, m.version + 1, Origin(0));
        }
    }
    let (a, rejected_a) = on_disk.finish();
    let (b, rejected_b) = in_memory.finish();
    assert_eq!(archived(&a)[..], archived(&b)[..]);
    assert_eq!(rejected_a, rejected_b);
    assert_eq!(rejected_a.len(), crate::index::KEPT_REJECTIONS);
    assert!(
        a.live > 5_000 && a.tombstones > 0,
        "{} {}",
        a.live,
        a.tombstones
    );
}

fn live(b: &mut Body, nth: usize) -> &mut PackedMember {
    b.records
        .iter_mut()
        .filter(|r| r.national_id != 0)
        .nth(nth)
        .unwrap()
}

#[test]
fn validation_refuses_tampered_bodies() {
    let members = population(300);
    let good = build(&members).0;
    type Tamper = fn(&mut Body);
    let tampers: Vec<(&str, Tamper)> = vec![
        ("bad id", |b| live(b, 5).national_id += 1),
        ("bad main id", |b| {
            if let Some(r) = b.records.iter_mut().find(|r| r.main_national_id != 0) {
                r.main_national_id += 1;
            }
        }),
        ("unknown kind", |b| live(b, 7).attrs |= 3),
        ("unknown status", |b| live(b, 7).attrs |= 3 << 2),
        ("unknown scheme", |b| live(b, 7).attrs |= 7 << 4),
        ("relation on a main", |b| {
            if let Some(r) = b
                .records
                .iter_mut()
                .find(|r| r.national_id != 0 && r.attrs & 3 == Kind::Main as u16)
            {
                r.attrs |= 1 << 7;
            }
        }),
        ("name out of range", |b| live(b, 2).name = 1_000_000),
        ("zero version", |b| live(b, 2).version = 0),
        ("coverage out of range", |b| {
            live(b, 2).coverage_until = i32::MAX
        }),
        ("data in an empty slot", |b| {
            if let Some(r) = b.records.iter_mut().find(|r| r.national_id == 0) {
                r.version = 3;
            }
        }),
        ("record moved away from its home", |b| {
            let from = b.records.iter().position(|r| r.national_id != 0).unwrap();
            let to = (from + 1..b.records.len())
                .find(|&i| b.records[i].national_id == 0)
                .unwrap();
            b.records.swap(from, to);
        }),
        ("capacity", |b| b.capacity += 1_000),
        ("capacity zero", |b| b.capacity = 0),
        ("count", |b| b.live += 1),
        ("booklet slot to a member without booklet", |b| {
            let row = b
                .records
                .iter()
                .position(|r| r.national_id != 0 && r.booklet == 0)
                .unwrap();
            let slot = b.booklet_slots.iter_mut().find(|s| **s != 0).unwrap();
            *slot = row as u32 + 1;
        }),
        ("booklet slot past the records", |b| {
            *b.booklet_slots.iter_mut().find(|s| **s != 0).unwrap() = u32::MAX
        }),
        ("booklet holder missing from the table", |b| {
            *b.booklet_slots.iter_mut().find(|s| **s != 0).unwrap() = 0
        }),
        ("name", |b| b.names[0] = "a\u{7}".into()),
        ("code", |b| {
            b.extras.push(ExtrasEntry {
                special_conditions: vec!["Bad Code".into()],
                other_insurers: vec![],
            })
        }),
    ];
    for (what, tamper) in tampers {
        let mut body = build(&members).0;
        tamper(&mut body);
        let bytes = archived(&body);
        assert!(
            crate::index::base::validate(&bytes, 2).is_err(),
            "{what} was accepted"
        );
    }
    assert!(crate::index::base::validate(&archived(&good), 2).is_ok());
}

#[test]
fn lookups_stop_early_for_absent_keys_and_handle_overflow_at_the_end() {
    // A tiny table: every key crowds toward the end, records run past the capacity.
    for n in [1u64, 2, 3, 7, 50] {
        let members = population(n);
        let (body, _) = build(&members);
        let bytes = archived(&body);
        let a = crate::index::base::validate(&bytes, 1).unwrap();
        for m in &members {
            assert!(a.find(m.national_id.as_u64()).is_some(), "n={n}");
        }
        assert!(
            a.find(NationalId::parse("0012345679").unwrap().as_u64())
                .is_none()
                || members
                    .iter()
                    .any(|m| m.national_id.to_string() == "0012345679")
        );
    }
}

#[test]
fn an_empty_body_is_valid() {
    let (body, _) = BodyBuilder::default().finish();
    assert!(crate::index::base::validate(&archived(&body), 1).is_ok());
}

mod layout_properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever members, versions, tombstones and booklets arrive, in whatever order, the
        /// laid-out table validates, every kept ID is found with its newest version, IDs never
        /// pushed are not found, and every booklet leads to a holder.
        #[test]
        fn any_mix_lays_out_into_a_valid_findable_table(
            picks in proptest::collection::vec((0usize..400, 1u64..5, any::<bool>(), proptest::option::of(0u64..2)), 0..300),
        ) {
            let pool = population(400);
            let mut b = BodyBuilder::default();
            let mut newest: std::collections::HashMap<u64, (u64, bool)> = Default::default();
            for (origin, (i, bump, delete, booklet)) in picks.iter().enumerate() {
                let mut m = pool[*i].clone();
                m.version += bump;
                m.booklet_no = booklet.map(|_| Booklet(1_000 + *i as u64));
                if *delete {
                    b.push_tombstone(m.national_id, m.version, Origin(origin as u64));
                } else {
                    b.push_member(&m, Origin(origin as u64));
                }
                let entry = newest.entry(m.national_id.as_u64()).or_insert((0, false));
                // Newer wins; on equal versions a delete removes the record of that version.
                if m.version > entry.0 || (m.version == entry.0 && *delete) {
                    *entry = (m.version, !*delete);
                }
            }
            let (body, _) = b.finish();
            let bytes = archived(&body);
            let a = crate::index::base::validate(&bytes, 2).map_err(TestCaseError::fail)?;
            for (id, (version, live)) in &newest {
                let r = a.find(*id).ok_or_else(|| TestCaseError::fail("a pushed ID is missing"))?;
                prop_assert_eq!(r.version.to_native(), *version);
                prop_assert_eq!(r.is_live(), *live);
            }
            for m in &pool {
                if !newest.contains_key(&m.national_id.as_u64()) {
                    prop_assert!(a.find(m.national_id.as_u64()).is_none());
                }
            }
            for k in 0..400u64 {
                for r in a.booklet_rows(Booklet(1_000 + k)) {
                    prop_assert!(r.is_live());
                    prop_assert_eq!(r.booklet.to_native(), 1_000 + k);
                }
            }
        }
    }
}
