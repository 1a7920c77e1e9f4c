use rkyv::rancor;

use super::*;
use crate::demo::Generator;

fn population(n: u64) -> Vec<Member> {
    Generator::new(n, 11, Day::parse_iso("2026-11-22").unwrap()).collect()
}

fn build(members: &[Member], policy: BookletConflicts) -> (Body, Vec<Rejected>) {
    let mut b = BodyBuilder::default();
    for (i, m) in members.iter().enumerate() {
        b.push_member(m, Origin(i as u64 + 1));
    }
    b.finish(policy)
}

fn archived(body: &Body) -> rkyv::util::AlignedVec<16> {
    rkyv::to_bytes::<rancor::Error>(body).unwrap()
}

#[test]
fn every_member_is_found_and_reads_back_the_same() {
    let members = population(10_000);
    let (body, rejected) = build(&members, BookletConflicts::RejectLater);
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
    // About two records a bucket, and names shared through the dictionary.
    assert!(body.directory.len() as f64 >= members.len() as f64 / 2.0);
    assert!(
        body.names.len() < members.len() / 5,
        "{} names",
        body.names.len()
    );
    assert_eq!(std::mem::size_of::<ArchivedRecord>(), 56);
}

#[test]
fn absent_ids_are_not_found() {
    let members = population(1_000);
    let (body, _) = build(&members, BookletConflicts::RejectLater);
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
    let (body, rejected) = build(&members, BookletConflicts::RejectLater);
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
    let (body, rejected) = b.finish(BookletConflicts::RejectLater);
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
    let (body, rejected) = build(&members, BookletConflicts::RejectLater);
    assert_eq!(body.live, 1);
    assert_eq!(rejected.len(), 2);
    assert!(
        rejected[0]
            .reason
            .starts_with("booklet_no: already used by member"),
        "{}",
        rejected[0].reason
    );
    let (body, rejected) = build(&members, BookletConflicts::PreferLater);
    assert!(rejected.is_empty());
    assert_eq!(body.live, 3);
    let holders: Vec<_> = body.records.iter().filter(|r| r.booklet != 0).collect();
    assert_eq!(holders.len(), 1, "only the last holder keeps the booklet");
    assert_eq!(holders[0].national_id, members[2].national_id.as_u64());
}

#[test]
fn validation_refuses_tampered_bodies() {
    let members = population(300);
    let good = build(&members, BookletConflicts::RejectLater).0;
    type Tamper = fn(&mut Body);
    let tampers: Vec<(&str, Tamper)> = vec![
        ("bad id", |b| b.records[5].national_id += 1),
        ("bad main id", |b| {
            if let Some(r) = b.records.iter_mut().find(|r| r.main_national_id != 0) {
                r.main_national_id += 1;
            }
        }),
        ("unknown kind", |b| b.records[7].kind = 9),
        ("unknown status", |b| b.records[7].status = 3),
        ("relation on a main", |b| {
            if let Some(r) = b.records.iter_mut().find(|r| r.kind == Kind::Main as u8) {
                r.relation = 1;
            }
        }),
        ("service bits", |b| b.records[2].services = 0xff),
        ("flags", |b| b.records[2].flags = 4),
        ("name out of range", |b| b.records[2].name = 1_000_000),
        ("zero version", |b| b.records[2].version = 0),
        ("coverage out of range", |b| {
            b.records[2].coverage_until = i32::MAX
        }),
        ("rows swapped", |b| b.records.swap(0, 1)),
        ("directory", |b| b.directory[1] += 1),
        ("directory shape", |b| {
            b.directory.pop();
        }),
        ("count", |b| b.live += 1),
        ("booklet index", |b| {
            if let Some(k) = b.booklet_keys.first_mut() {
                *k += 1;
            }
        }),
        ("bucket bits", |b| b.bucket_bits = 40),
        ("name", |b| b.names[0] = "a\u{7}".into()),
        ("code", |b| {
            b.extras.push(ExtrasEntry {
                special_conditions: vec!["Bad Code".into()],
                other_insurers: vec![],
            })
        }),
    ];
    for (what, tamper) in tampers {
        let mut body = build(&members, BookletConflicts::RejectLater).0;
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
fn an_empty_body_is_valid() {
    let (body, _) = BodyBuilder::default().finish(BookletConflicts::RejectLater);
    assert!(crate::index::base::validate(&archived(&body), 1).is_ok());
}
