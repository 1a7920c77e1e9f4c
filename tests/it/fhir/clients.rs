//! FHIR as hospital systems speak it, against the real binary: the SMART on FHIR Python
//! client (`fhirclient`) prepares the server from `metadata` and submits to `$submit`;
//! `fhirpy` submits with a Bearer key; each asserts on the decision the client reads. And
//! every FHIR answer that is not a success is an OperationOutcome the R4 validator accepts,
//! with its status from the error table.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use super::validator::{pinned_venv, validate};
use crate::access::{add_key, bearer};
use crate::support::{http, serve, serve_env, Answer, Served};

const CLIENTS: [&str; 2] = ["fhirclient==4.4.0", "fhirpy==2.3.1"];
const FAIS_SUBMIT: &str =
    "https://profiles.ihe.net/ITI/FAIS/OperationDefinition/IHE.FAIS.CoverageEligibilityRequest.Submit";

fn clients_python() -> std::path::PathBuf {
    fn ready(python: &Path) -> bool {
        Command::new(python)
            .args(["-c", "import fhirclient, fhirpy"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
    pinned_venv("fhir-clients-venv", &CLIENTS, ready)
}

fn request_for(id: &str) -> Value {
    json!({
        "resourceType": "CoverageEligibilityRequest",
        "status": "active",
        "purpose": ["validation"],
        "patient": {"identifier": {"system": "urn:eligd:national-id", "value": id}},
        "created": "2026-11-28",
        "insurer": {"display": "sso"},
        "item": [
            {"category": {"coding": [{"system": "urn:eligd:service", "code": "pharmacy"}]}},
            {"category": {"coding": [{"system": "urn:eligd:service", "code": "dental"}]}}
        ]
    })
}

/// A demo member's national ID from the log, and the JSON API's answer for it.
fn member(eligd: &Served, http_key: &str) -> (String, Value) {
    crate::support::wait_for("the demo samples", 10, || {
        eligd.log().contains("demo_national_id=")
    });
    let log = eligd.log();
    let id = log.split("demo_national_id=").nth(1).unwrap();
    let id = id.split_whitespace().next().unwrap().to_string();
    let auth = bearer(http_key);
    let a = http(
        &eligd.addr,
        "GET",
        &format!("/v1/members/{id}/eligibility"),
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    (id, a.json())
}

fn run_client(script: &str, env: &[(&str, String)]) -> Value {
    let mut cmd = Command::new(clients_python());
    cmd.arg(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fhir_clients")
            .join(script),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn fhirclient_and_fhirpy_connect_and_read_the_decision() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let fhir_key = add_key(&keys, "hospital", "fhir", 100, &[]);
    let http_key = add_key(&keys, "checker", "http", 100, &[]);
    let eligd = serve(&[
        "--demo-members",
        "2000",
        "--api-keys",
        keys.to_str().unwrap(),
    ]);
    let (id, json_answer) = member(&eligd, &http_key);
    let services: Vec<&str> = json_answer["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let excluded = json!([
        !services.contains(&"pharmacy"),
        !services.contains(&"dental")
    ]);
    let in_force =
        ["active", "service_not_covered"].contains(&json_answer["status"].as_str().unwrap());
    let request = dir.path().join("request.json");
    std::fs::write(&request, request_for(&id).to_string()).unwrap();
    let env = vec![
        ("BASE", format!("http://{}/fhir/r4/", eligd.addr)),
        ("KEY", fhir_key.clone()),
        ("REQUEST", request.display().to_string()),
        ("UNKNOWN", crate::feed::person(1)),
    ];

    let read = run_client("fhirclient_check.py", &env);
    assert_eq!(read["fhirVersion"], "4.0.1");
    assert_eq!(read["operations"], json!([FAIS_SUBMIT]));
    assert_eq!(read["outcome"], "complete");
    assert_eq!(read["inforce"], in_force, "{read}");
    assert_eq!(read["excluded"], excluded, "{read}");

    let read = run_client("fhirpy_check.py", &env);
    assert_eq!(read["resourceType"], "CoverageEligibilityResponse");
    assert_eq!(read["outcome"], "complete");
    assert_eq!(read["inforce"], in_force, "{read}");
    assert_eq!(read["excluded"], excluded, "{read}");
    assert_eq!(read["not_found_outcome"], "error");
    assert_eq!(read["not_found_error"], "member_not_found");
    assert!(
        read["refused"].as_str().unwrap().contains("servicedDate"),
        "{read}"
    );
}

fn fhir(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    http(addr, method, path, headers, body)
}

#[test]
fn every_fhir_failure_is_an_operation_outcome_with_the_table_status() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let key = add_key(&keys, "hospital", "fhir", 100, &[]);
    let slow = add_key(&keys, "slow", "fhir", 1, &[]);
    let http_key = add_key(&keys, "web", "http", 100, &[]);
    let eligd = serve(&[
        "--demo-members",
        "2000",
        "--api-keys",
        keys.to_str().unwrap(),
    ]);
    let (id, _) = member(&eligd, &http_key);
    let good = request_for(&id).to_string();
    let auth = bearer(&key);
    let json_ct = ("content-type", "application/fhir+json");
    let a = ("authorization", auth.as_str());
    let submit = "/fhir/r4/CoverageEligibilityRequest/$submit";

    // Successes first: metadata (no key), $submit, and the plain route, the same decision.
    let meta = fhir(&eligd.addr, "GET", "/fhir/r4/metadata", &[], b"");
    assert_eq!(meta.status, 200);
    assert_eq!(meta.header("content-type"), Some("application/fhir+json"));
    let one = fhir(&eligd.addr, "POST", submit, &[json_ct, a], good.as_bytes());
    let two = fhir(
        &eligd.addr,
        "POST",
        "/fhir/r4/CoverageEligibilityRequest",
        &[json_ct, a],
        good.as_bytes(),
    );
    let strip = |r: &Answer| {
        let mut v = r.json();
        for k in ["identifier", "created", "meta"] {
            v.as_object_mut().unwrap().remove(k);
        }
        v
    };
    assert_eq!((one.status, two.status), (200, 200));
    assert_eq!(strip(&one), strip(&two));
    // FHIR clients' ways of asking for JSON.
    for (path, headers) in [
        (
            "/fhir/r4/metadata?_format=json",
            vec![("accept", "application/fhir+xml")],
        ),
        (
            "/fhir/r4/metadata",
            vec![("accept", "application/fhir+json; fhirVersion=4.0")],
        ),
        (
            "/fhir/r4/metadata",
            vec![("accept", "application/json, */*;q=0.1")],
        ),
    ] {
        assert_eq!(
            fhir(&eligd.addr, "GET", path, &headers, b"").status,
            200,
            "{path} {headers:?}"
        );
    }
    let with_params = (
        "content-type",
        "application/fhir+json; fhirVersion=4.0; charset=UTF-8",
    );
    assert_eq!(
        fhir(
            &eligd.addr,
            "POST",
            submit,
            &[with_params, a],
            good.as_bytes()
        )
        .status,
        200
    );

    let big = vec![b' '; 70_000];
    let cases: Vec<(u16, Answer)> = vec![
        (400, fhir(&eligd.addr, "POST", submit, &[json_ct, a], b"{")),
        (
            401,
            fhir(&eligd.addr, "POST", submit, &[json_ct], good.as_bytes()),
        ),
        (403, {
            let h = bearer(&http_key);
            fhir(
                &eligd.addr,
                "POST",
                submit,
                &[json_ct, ("authorization", &h)],
                good.as_bytes(),
            )
        }),
        (
            404,
            fhir(&eligd.addr, "GET", "/fhir/r4/Patient/1", &[a], b""),
        ),
        (
            404,
            fhir(
                &eligd.addr,
                "POST",
                "/fhir/r4/CoverageEligibilityRequest/$evaluate",
                &[json_ct, a],
                b"{}",
            ),
        ),
        (405, fhir(&eligd.addr, "GET", submit, &[a], b"")),
        (
            405,
            fhir(&eligd.addr, "POST", "/fhir/r4/metadata", &[json_ct], b"{}"),
        ),
        (
            406,
            fhir(
                &eligd.addr,
                "POST",
                submit,
                &[json_ct, a, ("accept", "application/fhir+xml")],
                good.as_bytes(),
            ),
        ),
        (
            406,
            fhir(
                &eligd.addr,
                "GET",
                "/fhir/r4/metadata?_format=xml",
                &[],
                b"",
            ),
        ),
        (413, fhir(&eligd.addr, "POST", submit, &[json_ct, a], &big)),
        (
            415,
            fhir(
                &eligd.addr,
                "POST",
                submit,
                &[("content-type", "application/fhir+xml"), a],
                b"<CoverageEligibilityRequest/>",
            ),
        ),
        (429, {
            let s = bearer(&slow);
            let h = [json_ct, ("authorization", s.as_str())];
            fhir(&eligd.addr, "POST", submit, &h, good.as_bytes());
            fhir(&eligd.addr, "POST", submit, &h, good.as_bytes())
        }),
    ];
    // 503: a replica whose audit log cannot be written answers nothing.
    let full = serve_env(
        &["--demo-members", "2000", "--audit-log", "/dev/full"],
        &[("ELIGD_AUDIT_KEY", "00112233445566778899aabbccddeeff")],
    );
    // The first write fails behind the first answer; from then on every inquiry is refused.
    let mut unavailable = fhir(&full.addr, "POST", submit, &[json_ct], good.as_bytes());
    for _ in 0..100 {
        if unavailable.status == 503 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        unavailable = fhir(&full.addr, "POST", submit, &[json_ct], good.as_bytes());
    }
    let mut bodies = vec![meta.body.clone(), one.body.clone()];
    for (status, answer) in cases.iter().chain([(503, unavailable)].iter()) {
        assert_eq!(answer.status, *status, "{}", answer.body);
        assert_eq!(
            answer.header("content-type"),
            Some("application/fhir+json"),
            "{status}"
        );
        let v = answer.json();
        assert_eq!(v["resourceType"], "OperationOutcome", "{status}: {v}");
        if *status == 429 {
            assert!(answer.header("retry-after").is_some());
        }
        if *status == 405 {
            assert!(answer.header("allow").is_some());
        }
        bodies.push(answer.body.clone());
    }
    validate(&bodies).unwrap_or_else(|e| panic!("not valid R4: {e}"));
}
