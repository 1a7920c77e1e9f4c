use super::*;
use crate::member::{Kind, Member, OtherInsurer, Scheme, Services, Status};
use crate::national_id::NationalId;

fn day(s: &str) -> Day {
    Day::parse_iso(s).unwrap()
}

fn person(id: &str, kind: Kind, status: Status, until: Option<&str>) -> Member {
    Member {
        national_id: NationalId::parse(id).unwrap(),
        version: 1,
        kind,
        main_national_id: (kind == Kind::Dependent).then(|| NationalId::parse(MAIN).unwrap()),
        relation: None,
        scheme: Scheme::Mandatory,
        status,
        coverage_until: until.map(|u| day(u).0),
        services: Services::default()
            .with(Service::Pharmacy)
            .with(Service::Outpatient),
        special_conditions: vec![],
        other_insurers: vec![],
        booklet_no: None,
        display_name: None,
    }
}

const DEP: &str = "0012345679";
const MAIN: &str = "0499370899";
const AS_OF: &str = "2026-11-22";

struct Case {
    name: &'static str,
    member: (Kind, Status, Option<&'static str>),
    main: Option<(Status, Option<&'static str>)>,
    service: Option<Service>,
    as_of: &'static str,
    outcome: Outcome,
    until: Option<&'static str>,
    days: Option<i32>,
}

#[test]
fn rules_and_boundaries() {
    use Kind::*;
    use Outcome as O;
    use Status::*;
    let cases = [
        Case {
            name: "active main",
            member: (Main, Active, Some("2026-12-31")),
            main: None,
            service: None,
            as_of: AS_OF,
            outcome: O::Active,
            until: Some("2026-12-31"),
            days: Some(39),
        },
        Case {
            name: "last covered day",
            member: (Main, Active, Some("2026-11-22")),
            main: None,
            service: None,
            as_of: AS_OF,
            outcome: O::Active,
            until: Some("2026-11-22"),
            days: Some(0),
        },
        Case {
            name: "day after last covered",
            member: (Main, Active, Some("2026-11-21")),
            main: None,
            service: None,
            as_of: AS_OF,
            outcome: O::Expired,
            until: Some("2026-11-21"),
            days: Some(-1),
        },
        Case {
            name: "as-of date moves the answer",
            member: (Main, Active, Some("2026-11-21")),
            main: None,
            service: None,
            as_of: "2026-11-21",
            outcome: O::Active,
            until: Some("2026-11-21"),
            days: Some(0),
        },
        Case {
            name: "suspended",
            member: (Main, Suspended, Some("2027-01-01")),
            main: None,
            service: None,
            as_of: AS_OF,
            outcome: O::Suspended,
            until: Some("2027-01-01"),
            days: Some(40),
        },
        Case {
            name: "deceased",
            member: (Main, Deceased, Some("2027-01-01")),
            main: None,
            service: None,
            as_of: AS_OF,
            outcome: O::Deceased,
            until: Some("2027-01-01"),
            days: Some(40),
        },
        Case {
            name: "deceased beats expired",
            member: (Main, Deceased, Some("2020-01-01")),
            main: None,
            service: None,
            as_of: AS_OF,
            outcome: O::Deceased,
            until: Some("2020-01-01"),
            days: Some(-2517),
        },
        Case {
            name: "suspended beats expired",
            member: (Main, Suspended, Some("2020-01-01")),
            main: None,
            service: None,
            as_of: AS_OF,
            outcome: O::Suspended,
            until: Some("2020-01-01"),
            days: Some(-2517),
        },
        Case {
            name: "open-ended pensioner",
            member: (Pensioner, Active, None),
            main: None,
            service: None,
            as_of: AS_OF,
            outcome: O::Active,
            until: None,
            days: None,
        },
        Case {
            name: "open-ended pensioner far future",
            member: (Pensioner, Active, None),
            main: None,
            service: None,
            as_of: "2199-12-31",
            outcome: O::Active,
            until: None,
            days: None,
        },
        Case {
            name: "suspended pensioner",
            member: (Pensioner, Suspended, None),
            main: None,
            service: None,
            as_of: AS_OF,
            outcome: O::Suspended,
            until: None,
            days: None,
        },
        Case {
            name: "dependent capped by main",
            member: (Dependent, Active, Some("2027-06-30")),
            main: Some((Active, Some("2027-03-20"))),
            service: None,
            as_of: AS_OF,
            outcome: O::Active,
            until: Some("2027-03-20"),
            days: Some(118),
        },
        Case {
            name: "dependent own end earlier",
            member: (Dependent, Active, Some("2026-12-31")),
            main: Some((Active, Some("2027-03-20"))),
            service: None,
            as_of: AS_OF,
            outcome: O::Active,
            until: Some("2026-12-31"),
            days: Some(39),
        },
        Case {
            name: "dependent open-ended, main capped",
            member: (Dependent, Active, None),
            main: Some((Active, Some("2026-12-01"))),
            service: None,
            as_of: AS_OF,
            outcome: O::Active,
            until: Some("2026-12-01"),
            days: Some(9),
        },
        Case {
            name: "dependent and main both open-ended",
            member: (Dependent, Active, None),
            main: Some((Active, None)),
            service: None,
            as_of: AS_OF,
            outcome: O::Active,
            until: None,
            days: None,
        },
        Case {
            name: "dependent on main's last day",
            member: (Dependent, Active, Some("2027-06-30")),
            main: Some((Active, Some("2026-11-22"))),
            service: None,
            as_of: AS_OF,
            outcome: O::Active,
            until: Some("2026-11-22"),
            days: Some(0),
        },
        Case {
            name: "dependent the day after main's last",
            member: (Dependent, Active, Some("2027-06-30")),
            main: Some((Active, Some("2026-11-21"))),
            service: None,
            as_of: AS_OF,
            outcome: O::MainInsuredInactive,
            until: Some("2026-11-21"),
            days: Some(-1),
        },
        Case {
            name: "main suspended",
            member: (Dependent, Active, Some("2027-06-30")),
            main: Some((Suspended, Some("2027-06-30"))),
            service: None,
            as_of: AS_OF,
            outcome: O::MainInsuredInactive,
            until: Some("2027-06-30"),
            days: Some(220),
        },
        Case {
            name: "main deceased",
            member: (Dependent, Active, None),
            main: Some((Deceased, None)),
            service: None,
            as_of: AS_OF,
            outcome: O::MainInsuredInactive,
            until: None,
            days: None,
        },
        Case {
            name: "main not found",
            member: (Dependent, Active, Some("2027-06-30")),
            main: None,
            service: None,
            as_of: AS_OF,
            outcome: O::MainInsuredNotFound,
            until: Some("2027-06-30"),
            days: Some(220),
        },
        Case {
            name: "dependent's own expiry comes first",
            member: (Dependent, Active, Some("2026-01-01")),
            main: None,
            service: None,
            as_of: AS_OF,
            outcome: O::Expired,
            until: Some("2026-01-01"),
            days: Some(-325),
        },
        Case {
            name: "dependent's own suspension comes first",
            member: (Dependent, Suspended, None),
            main: Some((Deceased, None)),
            service: None,
            as_of: AS_OF,
            outcome: O::Suspended,
            until: None,
            days: None,
        },
        Case {
            name: "service covered",
            member: (Main, Active, Some("2026-12-31")),
            main: None,
            service: Some(Service::Pharmacy),
            as_of: AS_OF,
            outcome: O::Active,
            until: Some("2026-12-31"),
            days: Some(39),
        },
        Case {
            name: "service not covered",
            member: (Main, Active, Some("2026-12-31")),
            main: None,
            service: Some(Service::Dental),
            as_of: AS_OF,
            outcome: O::ServiceNotCovered,
            until: Some("2026-12-31"),
            days: Some(39),
        },
        Case {
            name: "expired beats service",
            member: (Main, Active, Some("2026-01-01")),
            main: None,
            service: Some(Service::Dental),
            as_of: AS_OF,
            outcome: O::Expired,
            until: Some("2026-01-01"),
            days: Some(-325),
        },
        Case {
            name: "main inactive beats service",
            member: (Dependent, Active, None),
            main: Some((Suspended, None)),
            service: Some(Service::Dental),
            as_of: AS_OF,
            outcome: O::MainInsuredInactive,
            until: None,
            days: None,
        },
        Case {
            name: "dependent service not covered",
            member: (Dependent, Active, None),
            main: Some((Active, None)),
            service: Some(Service::Inpatient),
            as_of: AS_OF,
            outcome: O::ServiceNotCovered,
            until: None,
            days: None,
        },
    ];
    for c in cases {
        let m = person(DEP, c.member.0, c.member.1, c.member.2);
        let main = c
            .main
            .map(|(status, until)| person(MAIN, Kind::Main, status, until));
        let main_view = main.as_ref().map(Member::view);
        let d = evaluate(&m.view(), main_view.as_ref(), day(c.as_of), c.service);
        assert_eq!(d.outcome, c.outcome, "{}", c.name);
        assert_eq!(d.eligible(), c.outcome == O::Active, "{}", c.name);
        assert_eq!(d.coverage_until, c.until.map(day), "{}", c.name);
        assert_eq!(d.days_remaining, c.days, "{}", c.name);
        assert_eq!(
            d.service_covered,
            c.service.map(|s| m.services.contains(s)),
            "{}",
            c.name
        );
        assert_eq!(
            d.main.is_some(),
            c.member.0 == Kind::Dependent,
            "{}",
            c.name
        );
    }
}

#[test]
fn main_standing_is_reported_for_dependents() {
    let dep = person(DEP, Kind::Dependent, Status::Active, None);
    for (status, until, standing) in [
        (Status::Active, Some("2027-01-01"), MainStanding::Active),
        (Status::Active, Some("2026-11-21"), MainStanding::Expired),
        (Status::Suspended, None, MainStanding::Suspended),
        (Status::Deceased, None, MainStanding::Deceased),
    ] {
        let main = person(MAIN, Kind::Main, status, until);
        let d = evaluate(&dep.view(), Some(&main.view()), day(AS_OF), None);
        assert_eq!(d.main, Some((standing, until.map(day))));
    }
    assert_eq!(
        evaluate(&dep.view(), None, day(AS_OF), None).main,
        Some((MainStanding::NotFound, None))
    );
}

#[test]
fn main_record_is_ignored_for_non_dependents() {
    let m = person(DEP, Kind::Main, Status::Active, Some("2027-01-01"));
    let main = person(MAIN, Kind::Main, Status::Deceased, Some("2020-01-01"));
    let d = evaluate(&m.view(), Some(&main.view()), day(AS_OF), None);
    assert_eq!(d.outcome, Outcome::Active);
    assert_eq!(d.main, None);
}

#[test]
fn primary_insurer_is_sso_unless_another_is_marked() {
    let mut m = person(MAIN, Kind::Main, Status::Active, None);
    assert_eq!(primary_insurer(&m.view()), "sso");
    m.other_insurers = vec![OtherInsurer {
        code: "salamat".into(),
        primary: false,
    }];
    assert_eq!(primary_insurer(&m.view()), "sso");
    m.other_insurers.push(OtherInsurer {
        code: "armed_forces".into(),
        primary: true,
    });
    assert_eq!(primary_insurer(&m.view()), "armed_forces");
}

#[test]
fn every_outcome_has_a_distinct_name() {
    let names: std::collections::HashSet<_> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
    assert_eq!(names.len(), Outcome::ALL.len());
}
