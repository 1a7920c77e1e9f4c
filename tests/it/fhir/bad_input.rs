//! Bad input of every kind on the FHIR channel: content types, sizes, broken JSON, the wrong
//! resource, missing or wrong elements, invalid national IDs and dates, unknown services;
//! each gets the right status and an OperationOutcome that never echoes the national ID.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::validator::validate;
use super::{fhir_request, post_fhir, FHIR_JSON};
use crate::support::*;

/// One bad input: (what, content type, body, HTTP status, issue code, eligd code).
type BadInput = (
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    u16,
    &'static str,
    &'static str,
);

/// Every kind of bad input.
fn bad_inputs() -> Vec<BadInput> {
    let ok = fhir_request(Fixture::CHILD);
    let set = |path: &str, value: Value| {
        let mut r = ok.clone();
        *r.pointer_mut(path).unwrap() = value;
        r.to_string().into_bytes()
    };
    let drop = |key: &str| {
        let mut r = ok.clone();
        r.as_object_mut().unwrap().remove(key);
        r.to_string().into_bytes()
    };
    let item = |item: Value| {
        let mut r = ok.clone();
        r["item"] = json!([item]);
        r.to_string().into_bytes()
    };
    let ct = Some(FHIR_JSON);
    let body = ok.to_string().into_bytes();
    let mut oversize = body.clone();
    oversize.truncate(oversize.len() - 1);
    oversize.extend(format!(",\"text\":{{\"div\":\"{}\"}}}}", "x".repeat(70_000)).bytes());
    vec![
        (
            "text/plain",
            Some("text/plain"),
            body.clone(),
            415,
            "not-supported",
            "unsupported_media_type",
        ),
        (
            "xml",
            Some("application/fhir+xml"),
            body.clone(),
            415,
            "not-supported",
            "unsupported_media_type",
        ),
        (
            "form",
            Some("application/x-www-form-urlencoded"),
            body.clone(),
            415,
            "not-supported",
            "unsupported_media_type",
        ),
        (
            "no content type",
            None,
            body.clone(),
            415,
            "not-supported",
            "unsupported_media_type",
        ),
        (
            "latin-1",
            Some("application/fhir+json; charset=latin1"),
            body.clone(),
            415,
            "not-supported",
            "unsupported_media_type",
        ),
        (
            "oversize",
            ct,
            oversize,
            413,
            "too-long",
            "payload_too_large",
        ),
        ("empty", ct, Vec::new(), 400, "structure", "invalid_request"),
        (
            "garbage",
            ct,
            b"hello, eligibility?".to_vec(),
            400,
            "structure",
            "invalid_request",
        ),
        (
            "binary",
            ct,
            vec![0xff, 0xfe, 0x00, 0x01],
            400,
            "structure",
            "invalid_request",
        ),
        (
            "truncated",
            ct,
            body[..body.len() / 2].to_vec(),
            400,
            "structure",
            "invalid_request",
        ),
        (
            "array",
            ct,
            b"[]".to_vec(),
            400,
            "structure",
            "invalid_request",
        ),
        (
            "no resourceType",
            ct,
            drop("resourceType"),
            400,
            "required",
            "invalid_request",
        ),
        (
            "wrong resourceType",
            ct,
            set("/resourceType", json!("Claim")),
            400,
            "not-supported",
            "invalid_request",
        ),
        (
            "no patient",
            ct,
            drop("patient"),
            400,
            "required",
            "invalid_request",
        ),
        (
            "patient by reference only",
            ct,
            set("/patient", json!({"reference": "Patient/42"})),
            400,
            "required",
            "invalid_request",
        ),
        (
            "wrong system",
            ct,
            set("/patient/identifier/system", json!("urn:oid:2.16.364")),
            400,
            "value",
            "invalid_request",
        ),
        (
            "no system",
            ct,
            set("/patient/identifier", json!({"value": Fixture::CHILD})),
            400,
            "value",
            "invalid_request",
        ),
        (
            "no value",
            ct,
            set(
                "/patient/identifier",
                json!({"system": "urn:eligd:national-id"}),
            ),
            400,
            "required",
            "invalid_national_id",
        ),
        (
            "numeric value",
            ct,
            set("/patient/identifier/value", json!(12345679)),
            400,
            "structure",
            "invalid_request",
        ),
        (
            "checksum",
            ct,
            set("/patient/identifier/value", json!("0012345678")),
            400,
            "value",
            "invalid_national_id",
        ),
        (
            "same digit",
            ct,
            set("/patient/identifier/value", json!("۵۵۵۵۵۵۵۵۵۵")),
            400,
            "value",
            "invalid_national_id",
        ),
        (
            "too short",
            ct,
            set("/patient/identifier/value", json!("1234567")),
            400,
            "value",
            "invalid_national_id",
        ),
        (
            "letters",
            ct,
            set("/patient/identifier/value", json!("00123456x9")),
            400,
            "value",
            "invalid_national_id",
        ),
        (
            "bad date",
            ct,
            set("/servicedDate", json!("2026-02-30")),
            400,
            "value",
            "invalid_date",
        ),
        (
            "date with time",
            ct,
            set("/servicedDate", json!("2026-11-22T10:00:00Z")),
            400,
            "value",
            "invalid_date",
        ),
        (
            "numeric date",
            ct,
            set("/servicedDate", json!(20261122)),
            400,
            "structure",
            "invalid_request",
        ),
        (
            "unknown service",
            ct,
            item(json!({"category": {"coding": [{"code": "surgery"}]}})),
            400,
            "code-invalid",
            "invalid_service",
        ),
        (
            "item without category",
            ct,
            item(json!({"productOrService": {"text": "x"}})),
            400,
            "required",
            "invalid_service",
        ),
        (
            "empty purpose",
            ct,
            set("/purpose", json!([])),
            400,
            "required",
            "invalid_request",
        ),
        (
            "unknown purpose",
            ct,
            set("/purpose", json!(["billing"])),
            400,
            "code-invalid",
            "invalid_request",
        ),
        (
            "bad id",
            ct,
            set("/id", json!("has spaces")),
            400,
            "value",
            "invalid_request",
        ),
    ]
}

#[tokio::test]
async fn bad_input_of_every_kind_gets_an_operation_outcome() {
    let server = TestServer::start().await;
    let mut seen = Vec::new();
    for (what, content_type, body, status, issue, code) in bad_inputs() {
        let reply = post_fhir(&server, &body, content_type).await;
        assert_eq!(reply.status.as_u16(), status, "{what}: {}", reply.text());
        assert_eq!(reply.headers["content-type"], FHIR_JSON, "{what}");
        let text = reply.text();
        seen.push(text.clone());
        let v = reply.json();
        assert_eq!(v["resourceType"], "OperationOutcome", "{what}");
        let i = &v["issue"][0];
        assert_eq!(i["severity"], "error", "{what}");
        assert_eq!(i["code"], issue, "{what}: {text}");
        assert_eq!(i["details"]["coding"][0]["code"], code, "{what}: {text}");
        let tracking = i["details"]["text"].as_str().unwrap();
        assert!(
            tracking.starts_with("tracking code ") && tracking.len() == 35,
            "{what}: {tracking}"
        );
        assert!(!i["diagnostics"].as_str().unwrap().is_empty(), "{what}");
        for id in [Fixture::CHILD, "12345679", "0012345678", "1234567", "۵۵۵۵"] {
            assert!(!text.contains(id), "{what} echoes the national ID: {text}");
        }
    }
    validate(&seen).unwrap();
}

#[tokio::test]
async fn not_ready_is_503_transient() {
    let server = TestServer::start_empty().await;
    let reply = post_fhir(
        &server,
        fhir_request(Fixture::MAIN).to_string().as_bytes(),
        Some(FHIR_JSON),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers["retry-after"], "1");
    assert_eq!(reply.json()["issue"][0]["code"], "transient");
    assert_eq!(
        reply.json()["issue"][0]["details"]["coding"][0]["code"],
        "not_ready"
    );
    validate(&[reply.text()]).unwrap();
}

#[tokio::test]
async fn content_type_parameters_and_plain_json_are_accepted() {
    let server = TestServer::start().await;
    let body = fhir_request(Fixture::MAIN).to_string();
    for ct in [
        "application/json",
        "application/fhir+json; charset=utf-8",
        "application/fhir+json;fhirVersion=4.0",
    ] {
        let reply = post_fhir(&server, body.as_bytes(), Some(ct)).await;
        assert_eq!(reply.status, StatusCode::OK, "{ct}");
    }
    let metrics = get(&server.url("/metrics")).await.text();
    assert!(metrics.contains("channel=\"fhir\""), "{metrics}");
}
