//! Unit tests of reading requests: content types, the elements eligd reads, and every way
//! to get a request wrong, each with its problem and never an echoed national ID.

use serde_json::{json, Value};

use super::*;

#[test]
fn content_types() {
    for ok in [
        "application/fhir+json",
        "application/json",
        "Application/FHIR+JSON; charset=UTF-8",
        "application/json;charset=\"utf-8\"",
        "application/fhir+json; fhirVersion=4.0",
        "application/fhir+json; boundary=ignored",
    ] {
        assert_eq!(check_content_type(Some(ok)), Ok(()), "{ok}");
    }
    for bad in [
        None,
        Some(""),
        Some("text/plain"),
        Some("application/xml"),
        Some("application/fhir+xml"),
        Some("application/x-www-form-urlencoded"),
        Some("application/fhir+json; charset=iso-8859-1"),
        Some("application/fhir+json; fhirVersion=5.0"),
    ] {
        assert!(check_content_type(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn reads_a_full_request() {
    let inquiry = parse(&request(CHILD)).unwrap();
    assert_eq!(inquiry.national_id.to_string(), CHILD);
    assert_eq!(inquiry.patient_value, CHILD);
    assert_eq!(inquiry.as_of, today());
    assert_eq!(inquiry.serviced_date, Some(today()));
    assert_eq!(inquiry.purposes, vec!["validation", "benefits"]);
    assert_eq!(
        inquiry.items,
        vec![
            RequestedItem {
                service: Service::Pharmacy,
                system: Some("urn:eligd:service".into())
            },
            RequestedItem {
                service: Service::Dental,
                system: None
            },
        ]
    );
    assert_eq!(
        inquiry.request.reference.as_deref(),
        Some("CoverageEligibilityRequest/req-1")
    );
}

#[test]
fn reads_a_minimal_request_with_defaults() {
    let inquiry = parse(&json!({
        "resourceType": "CoverageEligibilityRequest",
        "patient": {"identifier": {"system": "urn:eligd:national-id", "value": " 12345679 "}},
    }))
    .unwrap();
    assert_eq!(inquiry.national_id.to_string(), CHILD);
    assert_eq!(inquiry.as_of, today());
    assert_eq!(inquiry.serviced_date, None);
    assert_eq!(inquiry.purposes, vec!["validation"]);
    assert!(inquiry.items.is_empty());
    assert_eq!(
        inquiry.request.display.as_deref(),
        Some("CoverageEligibilityRequest without id or identifier")
    );
}

#[test]
fn reads_ids_in_every_digit_script_and_echoes_them_as_written() {
    for written in ["۰۰۱۲۳۴۵۶۷۹", "٠٠١٢٣٤٥٦٧٩", "00۱۲٣٤5679"] {
        let inquiry = parse(&request(written)).unwrap();
        assert_eq!(inquiry.national_id.to_string(), CHILD);
        assert_eq!(inquiry.patient_value, written);
    }
}

#[test]
fn names_the_request_by_identifier_when_it_has_no_id() {
    let mut r = request(CHILD);
    r.as_object_mut().unwrap().remove("id");
    r["identifier"] =
        json!([{"value": "  "}, {"system": "http://his.example/req", "value": "R-77"}]);
    let inquiry = parse(&r).unwrap();
    assert_eq!(inquiry.request.reference, None);
    let identifier = inquiry.request.identifier.unwrap();
    assert_eq!(identifier.value, "R-77");
    assert_eq!(identifier.system.as_deref(), Some("http://his.example/req"));
}

#[test]
fn every_bad_request_gets_its_problem() {
    let base = request(CHILD);
    let with = |path: &str, value: Value| {
        let mut r = base.clone();
        *r.pointer_mut(path).unwrap() = value;
        r.to_string()
    };
    let without = |key: &str| {
        let mut r = base.clone();
        r.as_object_mut().unwrap().remove(key);
        r.to_string()
    };
    let cases: Vec<(String, &str, &str, Option<&str>)> = vec![
        ("".into(), "structure", "invalid_request", None),
        ("   \n".into(), "structure", "invalid_request", None),
        ("not json".into(), "structure", "invalid_request", None),
        (
            "{\"resourceType\": ".into(),
            "structure",
            "invalid_request",
            None,
        ),
        ("[1, 2]".into(), "structure", "invalid_request", None),
        (
            "{}".into(),
            "required",
            "invalid_request",
            Some("resourceType"),
        ),
        (
            with("/resourceType", json!("Patient")),
            "not-supported",
            "invalid_request",
            None,
        ),
        (
            with("/resourceType", json!(7)),
            "required",
            "invalid_request",
            Some("resourceType"),
        ),
        (
            without("patient"),
            "required",
            "invalid_request",
            Some("patient"),
        ),
        (
            with("/patient", json!({"reference": "Patient/1"})),
            "required",
            "invalid_request",
            Some("patient.identifier"),
        ),
        (
            with("/patient/identifier/system", json!("urn:oid:1.2.3")),
            "value",
            "invalid_request",
            Some("patient.identifier.system"),
        ),
        (
            with("/patient/identifier", json!({"value": CHILD})),
            "value",
            "invalid_request",
            Some("patient.identifier.system"),
        ),
        (
            with("/patient/identifier/value", json!("")),
            "required",
            "invalid_national_id",
            Some("patient.identifier.value"),
        ),
        (
            with("/patient/identifier/value", json!("0012345678")),
            "value",
            "invalid_national_id",
            Some("patient.identifier.value"),
        ),
        (
            with("/patient/identifier/value", json!("1111111111")),
            "value",
            "invalid_national_id",
            Some("patient.identifier.value"),
        ),
        (
            with("/patient/identifier/value", json!("123")),
            "value",
            "invalid_national_id",
            Some("patient.identifier.value"),
        ),
        (
            with("/patient/identifier/value", json!("00123x45679")),
            "value",
            "invalid_national_id",
            Some("patient.identifier.value"),
        ),
        (
            with("/patient/identifier/value", json!(12345679)),
            "structure",
            "invalid_request",
            Some("patient.identifier.value"),
        ),
        (
            with("/servicedDate", json!("2026-02-30")),
            "value",
            "invalid_date",
            Some("servicedDate"),
        ),
        (
            with("/servicedDate", json!("22/11/2026")),
            "value",
            "invalid_date",
            Some("servicedDate"),
        ),
        (
            with("/servicedDate", json!("2026-11")),
            "value",
            "invalid_date",
            Some("servicedDate"),
        ),
        (
            with("/purpose", json!([])),
            "required",
            "invalid_request",
            Some("purpose"),
        ),
        (
            with("/purpose", json!(["validation", "pay"])),
            "code-invalid",
            "invalid_request",
            Some("purpose[1]"),
        ),
        (
            with("/purpose", json!("validation")),
            "structure",
            "invalid_request",
            Some("purpose"),
        ),
        (
            with("/item/1/category/coding/0/code", json!("surgery")),
            "code-invalid",
            "invalid_service",
            Some("item[1].category"),
        ),
        (
            with("/item/1", json!({"productOrService": {"text": "x"}})),
            "required",
            "invalid_service",
            Some("item[1].category"),
        ),
        (
            with("/item/0/category", json!({"coding": []})),
            "code-invalid",
            "invalid_service",
            Some("item[0].category"),
        ),
        (
            with("/item", json!({"category": {}})),
            "structure",
            "invalid_request",
            Some("item"),
        ),
        (
            with("/id", json!("not an id!")),
            "value",
            "invalid_request",
            Some("id"),
        ),
        (
            with("/id", json!("x".repeat(65))),
            "value",
            "invalid_request",
            Some("id"),
        ),
    ];
    for (body, issue, outcome, at) in cases {
        let problem = parse_request(body.as_bytes(), today()).expect_err(&body);
        assert_eq!(problem.status, 400, "{body}");
        assert_eq!(problem.issue, issue, "{body}: {}", problem.message);
        assert_eq!(problem.outcome, outcome, "{body}: {}", problem.message);
        let expected = at.map(|at| format!("CoverageEligibilityRequest.{at}"));
        assert_eq!(problem.expression, expected, "{body}");
        assert!(!problem.message.is_empty());
        for digits in ["12345679", "12345678", "1111111111"] {
            assert!(!problem.message.contains(digits), "{}", problem.message);
        }
    }
}

#[test]
fn a_wrongly_typed_value_is_named_by_path_without_echoing_it() {
    let mut r = request(CHILD);
    r["patient"]["identifier"]["value"] = json!(12345679);
    let problem = parse(&r).unwrap_err();
    assert_eq!(
        problem.message,
        "patient.identifier.value has the wrong type: expected a string"
    );
}

#[test]
fn tolerates_a_byte_order_mark_and_unknown_elements() {
    let mut r = request(CHILD);
    r["extension"] = json!([{"url": "http://x", "valueString": "y"}]);
    r["patient"]["identifier"]["use"] = json!("official");
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend(r.to_string().bytes());
    assert!(parse_request(&body, today()).is_ok());
}

#[test]
fn echoed_values_are_checked() {
    assert!(is_fhir_id("req-1.A"));
    assert!(!is_fhir_id(""));
    assert!(!is_fhir_id("a/b"));
    assert!(is_uri("urn:x"));
    assert!(!is_uri("a b"));
    assert_eq!(echoable(Some("  x ")), Some("x".into()));
    assert_eq!(echoable(Some("  ")), None);
    assert_eq!(echoable(Some(&"y".repeat(300))), None);
}
