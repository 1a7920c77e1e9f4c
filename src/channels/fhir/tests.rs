//! Unit tests of the FHIR channel: content types, reading requests (and every way to get
//! one wrong), and rendering answers and OperationOutcomes. The end-to-end tests, with the
//! independent R4 validation, are in `tests/it/fhir.rs`.

use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::index::Index;
use crate::inquiry;
use crate::member::{Member, Service};

const MAIN: &str = "0499370899";
const CHILD: &str = "0012345679";
const PENSIONER: &str = "0000010049";

fn today() -> Day {
    Day::parse_iso("2026-11-22").unwrap()
}

fn member(id: &str, extra: Value) -> Member {
    let mut v = json!({
        "national_id": id, "version": 3, "kind": "main", "scheme": "mandatory",
        "status": "active", "coverage_until": "2027-03-20",
        "services": ["outpatient", "inpatient", "pharmacy", "paraclinic", "dental"],
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    Member::from_json(&v.to_string()).unwrap()
}

fn index() -> Index {
    Index::from_members(vec![
        member(
            MAIN,
            json!({"booklet_no": "930123456789", "display_name": "رضا رضایی"}),
        ),
        member(
            CHILD,
            json!({"kind": "dependent", "main_national_id": MAIN, "relation": "child",
            "coverage_until": "2026-12-31", "services": ["outpatient", "pharmacy"],
            "display_name": "علی رضایی",
            "other_insurers": [{"code": "salamat", "primary": true}]}),
        ),
        member(
            PENSIONER,
            json!({"kind": "pensioner", "scheme": "pensioner", "coverage_until": null}),
        ),
    ])
    .unwrap()
}

fn request(id: &str) -> Value {
    json!({
        "resourceType": "CoverageEligibilityRequest",
        "id": "req-1",
        "status": "active",
        "purpose": ["validation", "benefits"],
        "patient": {"identifier": {"system": "urn:eligd:national-id", "value": id}},
        "created": "2026-11-22T09:00:00+03:30",
        "insurer": {"display": "sso"},
        "servicedDate": "2026-11-22",
        "item": [
            {"category": {"coding": [{"system": "urn:eligd:service", "code": "pharmacy"}]}},
            {"category": {"coding": [{"code": "dental"}]}},
        ],
    })
}

fn parse(v: &Value) -> Result<Inquiry, Problem> {
    parse_request(v.to_string().as_bytes(), today())
}

/// A session of the pipeline on this channel (no keys, no audit).
fn session(state: &AppState) -> Session<'_> {
    inquiry::test_session(state, Channel::Fhir, ROUTE)
}

/// The pipeline's decision for a request read.
fn decided<'s>(session: &'s Session<'_>, inquiry: &Inquiry) -> inquiry::Decided<'s> {
    session.decide(Query {
        target: Ok(Target::Member(inquiry.national_id)),
        as_of: Ok(inquiry.as_of),
        services: Ok(inquiry.items.iter().map(|i| i.service).collect()),
    })
}

/// Answers `body` end to end: the pipeline, then the rendering.
fn answer(state: &AppState, body: &Value) -> (Reply, Value) {
    let bytes = body.to_string().into_bytes();
    let reply = coverage_eligibility(&mut session(state), &bytes, today());
    let json = serde_json::from_slice(&reply.body).unwrap();
    (reply, json)
}

fn ready_state() -> AppState {
    let state = AppState::new(3).unwrap();
    state.install_index(Arc::new(index()), 0.0);
    state
}

#[test]
fn several_services_one_not_covered_is_service_not_covered() {
    let state = ready_state();
    let session = session(&state);
    let inquiry = parse(&request(CHILD)).unwrap();
    let d = decided(&session, &inquiry);
    let decision = &d.result.as_ref().unwrap().evaluated.decision;
    assert_eq!(decision.outcome, Outcome::ServiceNotCovered);
    assert!(
        decision.in_force(),
        "in force, though a service is excluded"
    );
    let mut r = request(CHILD);
    r["item"] = json!([{"category": {"coding": [{"code": "outpatient"}]}}]);
    let d = decided(&session, &parse(&r).unwrap());
    assert_eq!(
        d.result.as_ref().unwrap().evaluated.decision.outcome,
        Outcome::Active
    );
}

#[test]
fn renders_a_dependent_with_items_and_a_masked_name() {
    let state = ready_state();
    let session = session(&state);
    let inquiry = parse(&request(CHILD)).unwrap();
    let d = decided(&session, &inquiry);
    let found = d.result.as_ref().ok();
    let r = render(
        &inquiry,
        found,
        "123",
        ("2026-11-22T10:00:00+03:30".into(), 1_795_767_243_120),
    );
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        v,
        json!({
            "resourceType": "CoverageEligibilityResponse",
            "meta": {"lastUpdated": "2026-11-27T08:14:03.120Z"},
            "identifier": [{"system": "urn:eligd:tracking-code", "value": "123"}],
            "status": "active",
            "purpose": ["validation", "benefits"],
            "patient": {
                "identifier": {"system": "urn:eligd:national-id", "value": CHILD},
                "display": "علی ر***"
            },
            "servicedDate": "2026-11-22",
            "created": "2026-11-22T10:00:00+03:30",
            "request": {"reference": "CoverageEligibilityRequest/req-1"},
            "outcome": "complete",
            "disposition": "Not eligible: a requested service is not covered (status service_not_covered).",
            "insurer": {"identifier": {"system": "urn:eligd:insurer", "value": "salamat"}, "display": "salamat"},
            "insurance": [{
                "coverage": {"display": "mandatory treatment insurance (dependent)"},
                "inforce": true,
                "benefitPeriod": {"end": "2026-12-31"},
                "item": [
                    {"category": {"coding": [{"system": "urn:eligd:service", "code": "pharmacy"}]}, "excluded": false},
                    {"category": {"coding": [{"code": "dental"}]}, "excluded": true}
                ]
            }]
        })
    );
}

#[test]
fn renders_open_ended_coverage_without_a_benefit_period() {
    let state = ready_state();
    let session = session(&state);
    let mut r = request(PENSIONER);
    r.as_object_mut().unwrap().remove("item");
    let inquiry = parse(&r).unwrap();
    let d = decided(&session, &inquiry);
    let found = d.result.as_ref().ok();
    let v = serde_json::to_value(render(&inquiry, found, "1", ("x".into(), 0))).unwrap();
    assert_eq!(v["insurance"][0]["inforce"], true);
    assert_eq!(v["insurance"][0].get("benefitPeriod"), None);
    assert_eq!(v["insurance"][0].get("item"), None);
    assert_eq!(v["insurer"]["display"], "sso");
    assert_eq!(v["patient"].get("display"), None, "no name on record");
}

#[test]
fn renders_the_booklet_as_the_coverage() {
    let state = ready_state();
    let session = session(&state);
    let inquiry = parse(&request(MAIN)).unwrap();
    let d = decided(&session, &inquiry);
    let found = d.result.as_ref().ok();
    let v = serde_json::to_value(render(&inquiry, found, "1", ("x".into(), 0))).unwrap();
    assert_eq!(
        v["insurance"][0]["coverage"]["identifier"],
        json!({"system": "urn:eligd:booklet-no", "value": "930123456789"})
    );
    assert_eq!(v["insurance"][0]["inforce"], true);
    assert_eq!(v["outcome"], "complete");
}

#[test]
fn not_found_is_an_error_outcome_without_insurance() {
    let state = ready_state();
    let (reply, v) = answer(&state, &request("0000000019"));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.outcome, "member_not_found");
    assert_eq!(v["outcome"], "error");
    assert_eq!(
        v["error"][0]["code"]["coding"][0]["code"],
        "member_not_found"
    );
    assert_eq!(v.get("insurance"), None);
    assert_eq!(v["insurer"]["display"], "sso");
}

#[test]
fn the_entry_point_answers_every_kind_of_reply() {
    let state = ready_state();
    let (reply, v) = answer(&state, &request(MAIN));
    assert_eq!((reply.status, reply.outcome), (200, "active"));
    assert_eq!(reply.content_type, "application/fhir+json");
    let code = v["identifier"][0]["value"].as_str().unwrap();
    assert_eq!(code.len(), 21);

    let loading = AppState::new(3).unwrap();
    let (reply, v) = answer(&loading, &request(MAIN));
    assert_eq!((reply.status, reply.outcome), (503, "not_ready"));
    assert_eq!(v["issue"][0]["code"], "transient");
}

#[test]
fn an_operation_outcome_carries_the_codes_and_the_tracking_code() {
    let state = ready_state();
    let (reply, v) = answer(&state, &request("0012345678"));
    assert_eq!(reply.status, 400);
    assert_eq!(reply.content_type, FHIR_JSON);
    let issue = &v["issue"][0];
    assert_eq!(v["resourceType"], "OperationOutcome");
    assert_eq!(issue["severity"], "error");
    assert_eq!(issue["code"], "value");
    assert_eq!(
        issue["details"]["coding"][0],
        json!({"system": "urn:eligd:error", "code": "invalid_national_id"})
    );
    assert!(issue["details"]["text"]
        .as_str()
        .unwrap()
        .starts_with("tracking code "));
    assert_eq!(
        issue["diagnostics"],
        "the check digit of the national ID does not match"
    );
    assert_eq!(
        issue["expression"],
        json!(["CoverageEligibilityRequest.patient.identifier.value"])
    );
    assert!(!String::from_utf8_lossy(&reply.body).contains("0012345678"));
}

#[test]
fn created_is_a_fhir_date_time_with_an_offset() {
    let now = now_fhir();
    assert_eq!(now.len(), 25, "{now}");
    assert!(now.ends_with("+03:30"), "{now}");
    assert!(chrono::DateTime::parse_from_rfc3339(&now).is_ok(), "{now}");
}

mod parse_tests;
