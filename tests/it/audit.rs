//! The audit log against the real binary: one line per inquiry that reached the index on
//! every channel, with the tracking code the answer carried and the HMAC subject, and
//! refusals before the index as aggregated counts, flushed by SIGTERM; clear errors at start
//! for a bad audit key or path; and "no record, no answer" while the log cannot be written,
//! recovering without a restart.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::access::{add_key, bearer};
use crate::support::wait_for;
use crate::support::{
    assert_clean_failure, eligd_bin, http, serve_env, stderr, terminate, Answer, Launch,
};

pub(crate) use crate::support::AUDIT_KEY;

/// The JSON lines of an audit log (none when it does not exist).
pub(crate) fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// An unauthenticated lookup of one person (the servers here run without keys).
fn ask_member(addr: &str) -> Answer {
    http(addr, "GET", "/v1/members/0012345679/eligibility", &[], b"")
}

fn subject(id: &str) -> String {
    let o = Command::new(eligd_bin())
        .args(["audit", "subject", id])
        .env("ELIGD_AUDIT_KEY", AUDIT_KEY)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// Every tracking code in an answer: JSON answers and errors, batch items, FHIR identifiers
/// and OperationOutcomes, and the text channels' codes (in Persian digits).
fn tracking_codes(a: &Answer) -> Vec<String> {
    let mut codes = Vec::new();
    if let Ok(v) = serde_json::from_str::<Value>(&a.body) {
        fn walk(v: &Value, codes: &mut Vec<String>) {
            match v {
                Value::Object(o) => {
                    for (k, x) in o {
                        match (k.as_str(), x) {
                            ("tracking_code", Value::String(s)) => codes.push(s.clone()),
                            ("system", Value::String(s)) if s == "urn:eligd:tracking-code" => {
                                codes.push(o["value"].as_str().unwrap().to_string())
                            }
                            ("text", Value::String(s)) if s.starts_with("tracking code ") => {
                                codes.push(s["tracking code ".len()..].to_string())
                            }
                            _ => walk(x, codes),
                        }
                    }
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, codes)),
                _ => {}
            }
        }
        walk(&v, &mut codes);
    } else {
        // Text channels: the 21-digit run, in Persian digits.
        let ascii: String = a
            .body
            .chars()
            .map(|c| match c {
                '۰'..='۹' => char::from_u32(c as u32 - '۰' as u32 + '0' as u32).unwrap(),
                other => other,
            })
            .collect();
        for run in ascii.split(|c: char| !c.is_ascii_digit()) {
            if run.len() == 21 {
                codes.push(run.to_string());
            }
        }
    }
    codes
}

#[test]
fn every_inquiry_on_every_channel_is_one_line_flushed_by_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let key = add_key(&keys, "hospital-1", "any", 1000, &[]);
    let log = dir.path().join("audit.log");
    let mut served = serve_env(
        &[
            "--demo-members",
            "2000",
            "--api-keys",
            keys.to_str().unwrap(),
            "--audit-log",
            log.to_str().unwrap(),
        ],
        &[("ELIGD_AUDIT_KEY", AUDIT_KEY)],
    );
    // A member of the synthetic population to ask about (its first sample line).
    wait_for("the sample lines", 10, || {
        served.log().contains("demo_national_id=")
    });
    let sample = served
        .log()
        .lines()
        .find_map(|l| l.split("demo_national_id=").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        .expect("a synthetic sample");
    let auth = bearer(&key);
    let with_key = [("authorization", auth.as_str())];
    let form = [
        ("authorization", auth.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let fhir_type = [
        ("authorization", auth.as_str()),
        ("content-type", "application/fhir+json"),
    ];
    let fhir = format!(
        r#"{{"resourceType":"CoverageEligibilityRequest","status":"active","purpose":["validation"],
            "patient":{{"identifier":{{"system":"urn:eligd:national-id","value":"{sample}"}}}},
            "created":"2026-11-22T10:00:00+03:30","insurer":{{"display":"sso"}}}}"#
    );
    let batch = format!(r#"{{"national_ids": ["{sample}", "12", "0012345679"]}}"#);
    let member = format!("/v1/members/{sample}/eligibility");
    let answers = [
        http(&served.addr, "GET", &member, &with_key, b""),
        http(
            &served.addr,
            "GET",
            "/v1/members/0012345678/eligibility",
            &with_key,
            b"",
        ),
        http(&served.addr, "GET", &member, &[], b""),
        http(
            &served.addr,
            "GET",
            "/v1/booklets/000000/eligibility",
            &with_key,
            b"",
        ),
        http(
            &served.addr,
            "POST",
            "/v1/eligibility/batch",
            &with_key,
            batch.as_bytes(),
        ),
        http(
            &served.addr,
            "POST",
            "/fhir/r4/CoverageEligibilityRequest",
            &fhir_type,
            fhir.as_bytes(),
        ),
        http(
            &served.addr,
            "POST",
            "/ussd",
            &form,
            format!("sessionId=1&phoneNumber=0912&text=1*{sample}").as_bytes(),
        ),
        http(
            &served.addr,
            "POST",
            "/sms",
            &form,
            format!("from=0912&text={sample}").as_bytes(),
        ),
    ];
    // A menu screen is not an inquiry: no tracking code, no line.
    let menu = http(
        &served.addr,
        "POST",
        "/ussd",
        &form,
        b"sessionId=1&phoneNumber=0912&text=",
    );
    assert!(menu.body.starts_with("CON"));
    let mut answered = BTreeSet::new();
    for a in &answers {
        let codes = tracking_codes(a);
        assert!(
            !codes.is_empty(),
            "no tracking code in {} {}",
            a.status,
            a.body
        );
        answered.extend(codes);
    }
    assert_eq!(answered.len(), 10, "{answered:?}");
    assert!(terminate(&mut served).success());

    let all = lines(&log);
    let (refusals, records): (Vec<Value>, Vec<Value>) =
        all.into_iter().partition(|r| r["kind"] == "refusals");
    let logged: BTreeSet<String> = records
        .iter()
        .map(|r| r["tracking_code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(logged.len(), records.len(), "one line per inquiry");
    assert!(
        logged.is_subset(&answered),
        "the lines carry the answers' tracking codes"
    );
    // The rest were refused before the index (the request without a key, the ID with a
    // wrong check digit, the malformed batch item): counted, not lined.
    let refused: u64 = refusals.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(logged.len() as u64 + refused, answered.len() as u64);
    assert_eq!(refused, 3, "{refusals:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&sample), "never the national ID");
    let about_sample = records
        .iter()
        .filter(|r| r["subject"] == subject(&sample).as_str())
        .count();
    // The JSON lookup, the batch item, FHIR, USSD and SMS.
    assert_eq!(about_sample, 5, "{records:?}");
    let channels: BTreeSet<&str> = records
        .iter()
        .map(|r| r["channel"].as_str().unwrap())
        .collect();
    assert_eq!(channels, BTreeSet::from(["fhir", "http", "sms", "ussd"]));
    let unauthenticated = refusals
        .iter()
        .find(|r| r["outcome"] == "unauthorized")
        .unwrap();
    assert_eq!(unauthenticated["client"], Value::Null);
    assert_eq!(unauthenticated["address"], "127.0.0.1");
    assert_eq!(unauthenticated["status"], 401);
    assert_eq!(unauthenticated["count"], 1);
    assert!(
        refusals.iter().all(|r| r["subject"].is_null()),
        "a refusal names nobody"
    );
    assert!(records
        .iter()
        .all(|r| r["latency_ms"].as_f64().unwrap() >= 0.0));
    // Every line with a subject names the key it was made with, as `audit subject` does.
    let o = Command::new(eligd_bin())
        .args(["audit", "subject", &sample])
        .env("ELIGD_AUDIT_KEY", AUDIT_KEY)
        .output()
        .unwrap();
    let key_id = stderr(&o)
        .split("subject_key is ")
        .nth(1)
        .map(|s| s.trim_end_matches([')', '\n']).to_string())
        .unwrap();
    assert_eq!(key_id.len(), 8, "{}", stderr(&o));
    assert!(records
        .iter()
        .filter(|r| !r["subject"].is_null())
        .all(|r| r["subject_key"] == key_id.as_str()));
}

#[test]
fn bad_audit_keys_and_paths_are_clear_errors_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let run = |key: Option<&str>, path: &Path| {
        let mut c = Command::new(eligd_bin());
        c.args(["serve", "--listen", "127.0.0.1:0", "--demo-members", "10"])
            .args(["--audit-log", path.to_str().unwrap()])
            .env_remove("ELIGD_AUDIT_KEY");
        if let Some(key) = key {
            c.env("ELIGD_AUDIT_KEY", key);
        }
        c.output().unwrap()
    };
    assert_clean_failure(&run(None, &log), "ELIGD_AUDIT_KEY is not set");
    assert_clean_failure(&run(Some("0011"), &log), "at least 16 bytes");
    assert_clean_failure(&run(Some(&"zz".repeat(16)), &log), "hexadecimal");
    assert_clean_failure(&run(Some(AUDIT_KEY), dir.path()), "--audit-log");
    let o = Command::new(eligd_bin())
        .args(["audit", "subject", "0012345679"])
        .env_remove("ELIGD_AUDIT_KEY")
        .output()
        .unwrap();
    assert_clean_failure(&o, "ELIGD_AUDIT_KEY");
}

#[test]
fn an_unwritable_log_refuses_every_answer_until_it_can_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("audit.real");
    let log = dir.path().join("audit.log");
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    let mut served = serve_env(
        &[
            "--demo-members",
            "1000",
            "--audit-log",
            log.to_str().unwrap(),
        ],
        &[("ELIGD_AUDIT_KEY", AUDIT_KEY)],
    );
    let ask = || ask_member(&served.addr);
    // The first answer's record cannot be written (disk full): the answer is not given.
    let first = ask();
    assert_eq!(first.status, 503, "{}", first.body);
    assert_eq!(first.json()["error"]["code"], "audit_unavailable");
    wait_for("the failure to show", 10, || {
        crate::support::http_get(&served.addr, "/readyz").0 == 503
    });
    let refused = ask();
    assert_eq!(refused.json()["error"]["code"], "audit_unavailable");
    assert_eq!(refused.header("retry-after"), Some("1"));
    let (status, body) = crate::support::http_get(&served.addr, "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("audit log cannot be written"), "{body}");
    assert!(crate::support::metric(&served, "eligd_audit_write_errors_total") >= 1.0);
    // The disk is fixed (the path leads somewhere writable): answers resume, no restart.
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&real, &log).unwrap();
    wait_for("the recovery", 10, || {
        crate::support::http_get(&served.addr, "/readyz").0 == 200
    });
    let after = ask();
    assert_ne!(after.status, 503, "{}", after.body);
    assert!(terminate(&mut served).success());
    let (refusals, records): (Vec<Value>, Vec<Value>) = lines(&real)
        .into_iter()
        .partition(|r| r["kind"] == "refusals");
    let codes: Vec<&str> = records
        .iter()
        .map(|r| r["tracking_code"].as_str().unwrap())
        .collect();
    let after_code = after.json()["error"]["tracking_code"]
        .as_str()
        .map(str::to_string)
        .unwrap();
    assert_eq!(
        codes,
        [after_code.as_str()],
        "only the answer given has a line"
    );
    // The answers refused for want of a record are counted, never silent.
    let unavailable: u64 = refusals
        .iter()
        .filter(|r| r["outcome"] == "audit_unavailable")
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert!(unavailable >= 2, "{refusals:?}");
}

#[test]
fn a_write_cut_short_by_a_full_disk_leaves_no_split_or_repeated_line() {
    // The file may grow to 4,000 bytes (RLIMIT_FSIZE; SIGXFSZ ignored, so writes past it
    // fail with EFBIG after writing what fits): the batch that crosses it is written in part.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut served = Launch::demo(1000).audit(&log).file_size(Some(4000)).ready();
    let ask = || ask_member(&served.addr);
    let mut answered = Vec::new();
    for _ in 0..200 {
        let a = ask();
        if a.status == 503 {
            break;
        }
        answered.push(
            a.json()["error"]["tracking_code"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        std::thread::sleep(std::time::Duration::from_millis(8));
    }
    assert!(answered.len() < 200, "the size limit was never reached");
    assert_eq!(crate::support::http_get(&served.addr, "/readyz").0, 503);
    // More room: answers resume; the one whose write was cut short was never given.
    assert!(Command::new("prlimit")
        .args([
            "--pid",
            &served.pid().to_string(),
            "--fsize=unlimited:unlimited"
        ])
        .status()
        .unwrap()
        .success());
    wait_for("the recovery", 10, || {
        crate::support::http_get(&served.addr, "/readyz").0 == 200
    });
    let after = ask();
    assert_eq!(after.status, 404, "{}", after.body);
    answered.push(
        after.json()["error"]["tracking_code"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    assert!(terminate(&mut served).success());
    let logged: Vec<String> = lines(&log)
        .iter()
        .filter(|r| r["kind"] != "refusals")
        .map(|r| r["tracking_code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        logged, answered,
        "every answer once, in order, no line split"
    );
    assert!(served.log().contains("audit log: written again"));
    assert_eq!(
        served.log().matches("audit log: write failed").count(),
        1,
        "a lasting failure is logged once, not at every retry"
    );
}
