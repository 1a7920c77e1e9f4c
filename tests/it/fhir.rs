//! The FHIR R4 channel (docs/openapi.yaml) against a running server: every status of
//! the fixture population, services, dependents, open-ended coverage, not found, digit
//! scripts, and bad input of every kind. Every body the server answers, success or
//! OperationOutcome, is also checked by an independent FHIR R4 implementation
//! (`tests/fhir/validate.py` on the `fhir.resources` models, see [`validate`]).

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;
use validator::validate;

mod bad_input;
mod clients;
pub(crate) mod validator;

const PATH: &str = "/fhir/r4/CoverageEligibilityRequest";
const FHIR_JSON: &str = "application/fhir+json";

fn fhir_request(id: &str) -> Value {
    json!({
        "resourceType": "CoverageEligibilityRequest",
        "id": "req-7",
        "status": "active",
        "purpose": ["validation"],
        "patient": {"identifier": {"system": "urn:eligd:national-id", "value": id}},
        "created": "2026-11-22T09:00:00+03:30",
        "insurer": {"display": "sso"},
        "servicedDate": AS_OF,
    })
}

fn with_services(mut r: Value, services: &[&str]) -> Value {
    r["item"] = services
        .iter()
        .map(|s| json!({"category": {"coding": [{"system": "urn:eligd:service", "code": s}]}}))
        .collect();
    r
}

async fn post_fhir(server: &TestServer, body: &[u8], content_type: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = content_type
        .map(|c| ("content-type", c))
        .into_iter()
        .collect();
    request(Method::POST, &server.url(PATH), Some(body), &headers).await
}

/// Asks for `body` and expects a CoverageEligibilityResponse; the body goes into `seen`.
async fn ask(server: &TestServer, body: &Value, seen: &mut Vec<String>) -> Value {
    let reply = post_fhir(server, body.to_string().as_bytes(), Some(FHIR_JSON)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.headers["content-type"], FHIR_JSON);
    seen.push(reply.text());
    let v = reply.json();
    assert_eq!(v["resourceType"], "CoverageEligibilityResponse");
    assert_eq!(v["status"], "active");
    let code = v["identifier"][0]["value"].as_str().unwrap();
    assert_eq!(v["identifier"][0]["system"], "urn:eligd:tracking-code");
    assert_eq!(code.len(), 21);
    assert!(code.bytes().all(|b| b.is_ascii_digit()));
    assert!(chrono::DateTime::parse_from_rfc3339(v["created"].as_str().unwrap()).is_ok());
    v
}

#[tokio::test]
async fn every_status_of_the_fixture_population() {
    let server = TestServer::start().await;
    let mut seen = Vec::new();
    // (id, services asked, status, inforce, benefitPeriod.end, insurer)
    let cases = [
        (
            Fixture::MAIN.to_string(),
            vec![],
            "active",
            true,
            Some("2027-03-20"),
            "sso",
        ),
        (
            Fixture::expired(),
            vec![],
            "expired",
            false,
            Some("2026-11-21"),
            "sso",
        ),
        (
            Fixture::suspended(),
            vec![],
            "suspended",
            false,
            Some("2027-03-20"),
            "sso",
        ),
        (
            Fixture::deceased(),
            vec![],
            "deceased",
            false,
            Some("2027-03-20"),
            "sso",
        ),
        (
            Fixture::dependent_of_suspended(),
            vec![],
            "main_insured_inactive",
            false,
            Some("2027-03-20"),
            "sso",
        ),
        (
            Fixture::orphan(),
            vec![],
            "main_insured_not_found",
            false,
            Some("2027-03-20"),
            "sso",
        ),
        (
            Fixture::CHILD.to_string(),
            vec!["dental"],
            "service_not_covered",
            // FHIR's inforce: the coverage is in force; the item says dental is excluded.
            true,
            Some("2026-12-31"),
            "sso",
        ),
        (
            Fixture::CHILD.to_string(),
            vec!["pharmacy"],
            "active",
            true,
            Some("2026-12-31"),
            "sso",
        ),
        (Fixture::pensioner(), vec![], "active", true, None, "sso"),
        (
            Fixture::other_primary(),
            vec![],
            "active",
            true,
            Some("2027-03-20"),
            "armed_forces",
        ),
    ];
    for (id, services, status, inforce, end, insurer) in cases {
        let v = ask(
            &server,
            &with_services(fhir_request(&id), &services),
            &mut seen,
        )
        .await;
        assert_eq!(v["outcome"], "complete", "{id}");
        assert_eq!(v["purpose"], json!(["validation"]));
        assert_eq!(v["servicedDate"], AS_OF);
        assert_eq!(
            v["request"],
            json!({"reference": "CoverageEligibilityRequest/req-7"})
        );
        assert_eq!(
            v["patient"]["identifier"],
            json!({"system": "urn:eligd:national-id", "value": id})
        );
        assert_eq!(v["insurer"]["display"], insurer, "{id}");
        let disposition = v["disposition"].as_str().unwrap();
        assert!(
            disposition.contains(&format!("(status {status})")),
            "{id}: {disposition}"
        );
        let insurance = &v["insurance"][0];
        assert_eq!(insurance["inforce"], inforce, "{id}");
        assert_eq!(insurance["benefitPeriod"]["end"].as_str(), end, "{id}");
        assert!(insurance["coverage"].is_object(), "{id}");
        assert_eq!(v.get("error"), None);
    }
    validate(&seen).unwrap();
}

#[tokio::test]
async fn services_covered_and_excluded_for_a_dependent() {
    let server = TestServer::start().await;
    let mut seen = Vec::new();
    let all = [
        "outpatient",
        "inpatient",
        "pharmacy",
        "paraclinic",
        "dental",
    ];
    let v = ask(
        &server,
        &with_services(fhir_request(Fixture::CHILD), &all),
        &mut seen,
    )
    .await;
    let items = v["insurance"][0]["item"].as_array().unwrap();
    let answered: Vec<(&str, bool)> = items
        .iter()
        .map(|i| {
            assert_eq!(i["category"]["coding"][0]["system"], "urn:eligd:service");
            (
                i["category"]["coding"][0]["code"].as_str().unwrap(),
                i["excluded"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        answered,
        vec![
            ("outpatient", false),
            ("inpatient", true),
            ("pharmacy", false),
            ("paraclinic", true),
            ("dental", true)
        ]
    );
    assert_eq!(
        v["insurance"][0]["inforce"], true,
        "in force on the serviced date, though some asked services are excluded"
    );
    // The dependent's coverage ends with its own (2026-12-31), before the main insured's.
    assert_eq!(v["insurance"][0]["benefitPeriod"]["end"], "2026-12-31");
    // The name is masked, never whole; the booklet names the coverage.
    assert_eq!(v["patient"]["display"], "علی ر***");
    assert!(!seen[0].contains("رضایی"));
    assert_eq!(
        v["insurance"][0]["coverage"]["identifier"],
        json!({"system": "urn:eligd:booklet-no", "value": "000777"})
    );
    let v = ask(
        &server,
        &with_services(fhir_request(Fixture::CHILD), &["outpatient", "pharmacy"]),
        &mut seen,
    )
    .await;
    assert_eq!(v["insurance"][0]["inforce"], true);
    // A dependent with open-ended coverage of its own is capped by the main insured's end.
    let v = ask(
        &server,
        &fhir_request(&Fixture::dependent_of_suspended()),
        &mut seen,
    )
    .await;
    assert_eq!(v["insurance"][0]["benefitPeriod"]["end"], "2027-03-20");
    validate(&seen).unwrap();
}

#[tokio::test]
async fn open_ended_coverage_and_the_as_of_date() {
    let server = TestServer::start().await;
    let mut seen = Vec::new();
    let v = ask(&server, &fhir_request(&Fixture::pensioner()), &mut seen).await;
    assert_eq!(v["insurance"][0]["inforce"], true);
    assert_eq!(v["insurance"][0].get("benefitPeriod"), None);
    // servicedDate is the as-of date: the day before expiry the member was still covered.
    let mut r = fhir_request(&Fixture::expired());
    r["servicedDate"] = json!("2026-11-21");
    let v = ask(&server, &r, &mut seen).await;
    assert_eq!(v["insurance"][0]["inforce"], true);
    assert_eq!(v["servicedDate"], "2026-11-21");
    // Without servicedDate: today, and nothing echoed.
    let mut r = fhir_request(&Fixture::pensioner());
    r.as_object_mut().unwrap().remove("servicedDate");
    r.as_object_mut().unwrap().remove("id");
    r["identifier"] = json!([{"system": "http://his.example/requests", "value": "R-1"}]);
    let v = ask(&server, &r, &mut seen).await;
    assert_eq!(v.get("servicedDate"), None);
    assert_eq!(
        v["request"],
        json!({"identifier": {"system": "http://his.example/requests", "value": "R-1"}})
    );
    validate(&seen).unwrap();
}

#[tokio::test]
async fn not_found_is_an_error_outcome_with_http_200() {
    let server = TestServer::start().await;
    let mut seen = Vec::new();
    let v = ask(&server, &fhir_request(&Fixture::unknown()), &mut seen).await;
    assert_eq!(v["outcome"], "error");
    assert_eq!(
        v["error"][0]["code"]["coding"][0]["code"],
        "member_not_found"
    );
    assert_eq!(
        v["error"][0]["code"]["coding"][0]["system"],
        "urn:eligd:error"
    );
    assert_eq!(v.get("insurance"), None);
    assert_eq!(v["insurer"]["display"], "sso");
    validate(&seen).unwrap();
}

#[tokio::test]
async fn ids_in_persian_and_arabic_indic_digits() {
    let server = TestServer::start().await;
    let mut seen = Vec::new();
    let ascii = ask(&server, &fhir_request(Fixture::CHILD), &mut seen).await;
    for written in [persian(Fixture::CHILD), arabic_indic(Fixture::CHILD)] {
        let v = ask(&server, &fhir_request(&written), &mut seen).await;
        assert_eq!(v["patient"]["identifier"]["value"], written.as_str());
        assert_eq!(v["insurance"], ascii["insurance"]);
        assert_eq!(v["disposition"], ascii["disposition"]);
    }
    validate(&seen).unwrap();
}
