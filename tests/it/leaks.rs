//! Minimisation and leaks, against the real binary with keys and the audit log on: inquiries
//! on every channel about people with full names and main insured persons, then every
//! response is scanned for a full name or an unmasked main insured's ID, and the server's
//! log (at debug level), `/metrics` and the audit log for any national ID, phone number, key,
//! secret or the audit key.

use std::process::Command;

use serde_json::json;

use crate::access::{add_key, bearer};
use crate::audit::AUDIT_KEY;
use crate::support::persian;
use crate::support::{eligd_bin, http, serve_command_ready, snapshot_into, terminate, Answer};

const MAIN: &str = "0499370899";
const CHILD: &str = "0012345679";
const FAMILY: &str = "Rezaeikhani";
const PHONE: &str = "09121234567";

fn population(dir: &std::path::Path) -> std::path::PathBuf {
    let members = [
        json!({"national_id": MAIN, "version": 1, "kind": "main", "scheme": "mandatory", "status": "active",
               "coverage_until": "2030-01-01", "services": ["pharmacy", "dental"], "booklet_no": "930555",
               "display_name": format!("Reza {FAMILY}")}),
        json!({"national_id": CHILD, "version": 1, "kind": "dependent", "main_national_id": MAIN,
               "relation": "child", "scheme": "mandatory", "status": "active", "coverage_until": "2029-01-01",
               "services": ["pharmacy"], "booklet_no": "930556", "display_name": format!("Ali Mohammad {FAMILY}")}),
    ];
    let jsonl = dir.join("people.jsonl");
    let lines: Vec<String> = members.iter().map(|m| m.to_string()).collect();
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    snapshot_into(&dir.join("snaps"), &jsonl, &[])
}

#[test]
fn no_channel_answers_a_full_name_and_no_log_or_metric_holds_an_id_phone_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let snap = population(dir.path());
    let keys = dir.path().join("keys.json");
    let key = add_key(&keys, "hospital-1", "any", 1000, &[]);
    let audit = dir.path().join("audit.log");
    let mut command = Command::new(eligd_bin());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--snapshot"])
        .arg(&snap)
        .arg("--api-keys")
        .arg(&keys)
        .arg("--audit-log")
        .arg(&audit)
        .env("ELIGD_AUDIT_KEY", AUDIT_KEY);
    command.env("RUST_LOG", "debug");
    let mut served = serve_command_ready(command);
    let auth = bearer(&key);
    let json_headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let form = [
        ("authorization", auth.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let fhir_headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/fhir+json"),
    ];
    let fhir = |id: &str| {
        json!({"resourceType": "CoverageEligibilityRequest", "status": "active", "purpose": ["validation"],
               "patient": {"identifier": {"system": "urn:eligd:national-id", "value": id}},
               "created": "2026-11-22T10:00:00+03:30", "insurer": {"display": "sso"},
               "item": [{"category": {"coding": [{"code": "dental"}]}}]})
        .to_string()
    };
    let mut answers: Vec<(&str, &str, Answer)> = Vec::new();
    for id in [CHILD, MAIN] {
        let persian_id = crate::support::encode_path(&persian(id));
        for path in [
            format!("/v1/members/{id}/eligibility"),
            format!("/v1/members/{persian_id}/eligibility?service=dental"),
        ] {
            let answer = http(&served.addr, "GET", &path, &json_headers, b"");
            answers.push(("json", id, answer));
        }
        answers.push((
            "fhir",
            id,
            http(
                &served.addr,
                "POST",
                "/fhir/r4/CoverageEligibilityRequest",
                &fhir_headers,
                fhir(id).as_bytes(),
            ),
        ));
        for lang in ["1", "2"] {
            let body = format!("sessionId=s&phoneNumber={PHONE}&text={lang}*{id}");
            let answer = http(&served.addr, "POST", "/ussd", &form, body.as_bytes());
            answers.push(("ussd", id, answer));
        }
        answers.push((
            "sms",
            id,
            http(
                &served.addr,
                "POST",
                "/sms",
                &form,
                format!("from={PHONE}&text={id}").as_bytes(),
            ),
        ));
    }
    answers.push((
        "json",
        CHILD,
        http(
            &served.addr,
            "GET",
            "/v1/booklets/930556/eligibility",
            &json_headers,
            b"",
        ),
    ));
    let batch = format!(r#"{{"national_ids": ["{CHILD}", "{MAIN}", "0012345678"]}}"#);
    answers.push((
        "json",
        "batch",
        http(
            &served.addr,
            "POST",
            "/v1/eligibility/batch",
            &json_headers,
            batch.as_bytes(),
        ),
    ));
    // Refusals too: a wrong key, a malformed ID.
    answers.push((
        "json",
        CHILD,
        http(
            &served.addr,
            "GET",
            &format!("/v1/members/{CHILD}/eligibility"),
            &[(
                "authorization",
                "Bearer eligd_aaaaaaaa_bbbbbbbbbbbbbbbbbbbbbb",
            )],
            b"",
        ),
    ));

    // Only the wrong key is refused: a broken key check would leave the scan below reading
    // error bodies only.
    let refused = answers.len() - 1;
    for (i, (channel, asked, a)) in answers.iter().enumerate() {
        let expected = if i == refused { 401 } else { 200 };
        assert_eq!(a.status, expected, "{channel} {}", a.body);
        assert!(
            !a.body.contains(FAMILY),
            "{channel} answered a full family name: {}",
            a.body
        );
        if *asked == CHILD {
            assert!(
                !a.body.contains(MAIN),
                "{channel} answered the main insured's ID: {}",
                a.body
            );
        }
        if matches!(*channel, "ussd" | "sms") {
            assert!(
                !a.body.contains("Reza") && !a.body.contains("Ali"),
                "{channel} answered a name: {}",
                a.body
            );
        }
    }
    // The dependent's answers name the main insured masked, and the names masked.
    let child = answers[0].2.json();
    assert_eq!(child["main_insured"]["national_id"], "049****899");
    assert_eq!(child["name"], "Ali R***");

    let (_, metrics) = crate::support::http_get(&served.addr, "/metrics");
    assert!(terminate(&mut served).success());
    let log = served.log();
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    let secret = &key[15..];
    let persian_child = persian(CHILD);
    for (what, text) in [
        ("the server log", &log),
        ("/metrics", &metrics),
        ("the audit log", &audit_text),
    ] {
        for needle in [
            CHILD,
            MAIN,
            persian_child.as_str(),
            PHONE,
            "9121234567",
            key.as_str(),
            secret,
            AUDIT_KEY,
            FAMILY,
        ] {
            assert!(!text.contains(needle), "{what} holds {needle:?}");
        }
    }
    assert!(audit_text.lines().count() >= 15, "{audit_text}");
}
