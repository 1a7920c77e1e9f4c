use std::collections::{HashMap, HashSet};

use super::*;
use crate::eligibility::{evaluate, Outcome};

fn today() -> Day {
    Day::parse_iso("2026-11-22").unwrap()
}

#[test]
fn same_inputs_same_population() {
    let a: Vec<Member> = Generator::new(2_000, 7, today()).collect();
    let b: Vec<Member> = Generator::new(2_000, 7, today()).collect();
    assert_eq!(a, b);
    let c: Vec<Member> = Generator::new(2_000, 8, today()).collect();
    assert_ne!(a, c);
    assert_eq!(a.len(), 2_000);
}

#[test]
fn every_member_is_valid_unique_and_dependents_point_at_main_insured_people() {
    let members: Vec<Member> = Generator::new(50_000, 1, today()).collect();
    let by_id: HashMap<NationalId, &Member> = members.iter().map(|m| (m.national_id, m)).collect();
    assert_eq!(by_id.len(), members.len(), "national IDs repeat");
    let booklets: Vec<_> = members.iter().filter_map(|m| m.booklet_no).collect();
    assert_eq!(
        booklets.iter().collect::<HashSet<_>>().len(),
        booklets.len(),
        "booklets repeat"
    );
    for m in &members {
        m.validate().unwrap();
        assert_eq!(Member::from_json(&m.to_json()).as_ref(), Ok(m));
        if let Some(main) = m.main_national_id {
            let main = by_id.get(&main).expect("dependent's main insured exists");
            assert_ne!(main.kind, Kind::Dependent);
        }
    }
}

#[test]
fn proportions_are_realistic_and_every_outcome_occurs() {
    let members: Vec<Member> = Generator::new(100_000, 42, today()).collect();
    let by_id: HashMap<NationalId, &Member> = members.iter().map(|m| (m.national_id, m)).collect();
    let share = |f: &dyn Fn(&Member) -> bool| {
        members.iter().filter(|m| f(m)).count() as f64 / members.len() as f64
    };
    let dependents = share(&|m| m.kind == Kind::Dependent);
    let pensioners = share(&|m| m.kind == Kind::Pensioner);
    assert!(
        (0.45..0.65).contains(&dependents),
        "dependents {dependents}"
    );
    assert!(
        (0.04..0.15).contains(&pensioners),
        "pensioners {pensioners}"
    );
    assert!((0.005..0.03).contains(&share(&|m| m.status == Status::Suspended)));
    assert!((0.002..0.02).contains(&share(&|m| m.status == Status::Deceased)));
    assert!((0.85..0.97).contains(&share(&|m| m.booklet_no.is_some())));
    assert!((0.02..0.10).contains(&share(&|m| !m.other_insurers.is_empty())));
    let mut outcomes: HashMap<Outcome, usize> = HashMap::new();
    for m in &members {
        let main = m
            .main_national_id
            .and_then(|id| by_id.get(&id).map(|x| x.view()));
        *outcomes
            .entry(evaluate(&m.view(), main.as_ref(), today(), Some(Service::Dental)).outcome)
            .or_default() += 1;
    }
    for o in Outcome::ALL {
        if o != Outcome::MainInsuredNotFound {
            assert!(
                outcomes.get(&o).copied().unwrap_or(0) > 0,
                "{o:?} never occurs"
            );
        }
    }
    let active = outcomes[&Outcome::Active] as f64 / members.len() as f64;
    assert!((0.70..0.92).contains(&active), "active {active}");
}
