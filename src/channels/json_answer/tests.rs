//! The hand-written answer against the `serde` rendering it replaced, byte for byte, over a
//! synthetic population (every kind, status, relation and service mix it generates), odd
//! strings (quotes, backslashes, control characters, Persian) and every option.

use std::borrow::Cow;

use serde::Serialize;

use super::*;
use crate::dates::{rfc3339_utc_ms, Day};
use crate::index::Index;
use crate::inquiry::{evaluate_found, Answer};
use crate::member::{Member, Service};

#[derive(Serialize)]
struct MainInsured {
    national_id: String,
    status: &'static str,
    coverage_until: Option<String>,
}

#[derive(Serialize)]
struct ServiceAnswer {
    code: &'static str,
    covered: bool,
}

/// The answer as it was rendered through `serde` (the reference).
#[derive(Serialize)]
struct Reference<'a> {
    tracking_code: &'a str,
    national_id: String,
    as_of: String,
    eligible: bool,
    status: &'static str,
    coverage_until: Option<String>,
    days_remaining: Option<i32>,
    kind: &'static str,
    relation: Option<&'static str>,
    scheme: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    main_insured: Option<MainInsured>,
    services: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<ServiceAnswer>,
    special_conditions: Vec<&'a str>,
    primary_insurer: &'a str,
    name: Option<Cow<'a, str>>,
    data_version: u64,
    data_as_of: String,
}

fn reference(decided: &Answer<'_>, tracking_code: &str) -> Vec<u8> {
    let found = &decided.evaluated;
    let m = found.member.view();
    let d = &found.decision;
    let service = decided.services.first().copied();
    serde_json::to_vec(&Reference {
        tracking_code,
        national_id: m.national_id.to_string(),
        as_of: decided.as_of.date().to_string(),
        eligible: d.eligible(),
        status: d.outcome.as_str(),
        coverage_until: d.coverage_until.map(|c| c.date().to_string()),
        days_remaining: d.days_remaining,
        kind: m.kind.as_str(),
        relation: m.relation.map(crate::member::Relation::as_str),
        scheme: m.scheme.as_str(),
        main_insured: d.main.map(|(standing, until)| MainInsured {
            national_id: m.main_national_id.map(|id| id.masked()).unwrap_or_default(),
            status: standing.as_str(),
            coverage_until: until.map(|u| u.date().to_string()),
        }),
        services: m.services.iter().map(Service::as_str).collect(),
        service: service.map(|s| ServiceAnswer {
            code: s.as_str(),
            covered: m.services.contains(s),
        }),
        special_conditions: m.extras.special_conditions(),
        primary_insurer: primary_insurer(&m),
        name: m.name.masked(),
        data_version: m.version,
        data_as_of: chrono::DateTime::from_timestamp_millis(decided.data_as_of_ms as i64)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
    .unwrap()
}

/// A member with a name holding every kind of character (codes are validated short ASCII).
fn odd_member(id: &str, name: &str, condition: &str) -> Member {
    Member::from_json(&format!(
        r#"{{"national_id":"{id}","version":18446744073709551615,"kind":"main","scheme":"mandatory",
            "status":"active","coverage_until":"2199-12-31","services":["pharmacy","dental"],
            "display_name":{name},"special_conditions":[{condition},"x"],
            "other_insurers":[{{"code":"ins-2","primary":true}}]}}"#
    ))
    .unwrap()
}

#[test]
fn the_answer_is_byte_for_byte_what_serde_rendered() {
    let today = Day::parse_iso("2026-11-28").unwrap();
    let mut members: Vec<Member> = crate::demo::Generator::new(4_000, 7, today).collect();
    members.push(odd_member(
        "0499370899",
        r#""\"Ali\" back\\slash""#,
        r#""cardiac""#,
    ));
    members.push(odd_member("0012345679", r#""علی رضایی""#, r#""dialysis""#));
    let ids: Vec<_> = members.iter().map(|m| m.national_id).collect();
    let index = Index::from_members(members).unwrap();
    let view = index.view();
    let options: [(Day, Vec<Service>); 4] = [
        (today, Vec::new()),
        (today.plus_days(400), vec![Service::ALL[0]]),
        (
            today.plus_days(-4000),
            vec![Service::ALL[1], Service::ALL[0]],
        ),
        (Day::parse_iso("1900-01-01").unwrap(), Service::ALL.to_vec()),
    ];
    let watermarks = [0, 1_795_767_243_120, 1_795_767_243_001, 7_258_118_399_999];
    let mut compared = 0;
    for (i, id) in ids.iter().enumerate() {
        let member = view.get(*id).expect("indexed");
        let (as_of, services) = &options[i % options.len()];
        let decided = Answer {
            evaluated: evaluate_found(&view, member, *as_of, services.first().copied()),
            as_of: *as_of,
            services: services.clone(),
            data_as_of_ms: watermarks[i % watermarks.len()],
        };
        let tracking = "140509070100000000042";
        let ours = render(&decided, tracking);
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(reference(&decided, tracking)).unwrap(),
            "member {i}"
        );
        compared += 1;
    }
    assert_eq!(compared, 4_002);
    // The odd strings came out escaped and parse back to what was stored.
    let odd = view.get(ids[4_000]).unwrap();
    let decided = Answer {
        evaluated: evaluate_found(&view, odd, today, Vec::new().first().copied()),
        as_of: today,
        services: Vec::new(),
        data_as_of_ms: 0,
    };
    let parsed: serde_json::Value = serde_json::from_slice(&render(&decided, "1")).unwrap();
    assert_eq!(parsed["special_conditions"][0], "cardiac");
    assert_eq!(parsed["primary_insurer"], "ins-2");
    assert_eq!(parsed["name"], "\"Ali\" b***");
    assert_eq!(parsed["data_as_of"], rfc3339_utc_ms(0));
}

#[test]
fn strings_escape_exactly_as_serde_json_does() {
    for s in [
        "",
        "plain",
        "\"",
        "\\",
        "\u{0}\u{7}\u{8}\u{c}\u{1b}\u{1f} ",
        "/<>&'",
        "é ک ۱ 😀",
        "\u{7f}\u{2028}",
    ] {
        let mut ours = Vec::new();
        push_str(&mut ours, s);
        assert_eq!(ours, serde_json::to_vec(s).unwrap(), "{s:?}");
    }
}
