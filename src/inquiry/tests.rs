//! The pipeline's order and its records: keys, limits, parse, look up, audit, count.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::audit::{AuditCounters, AuditKey, AuditLog};
use crate::auth::keyfile::{new_key, KeyEntry, KeyFile, FORMAT};
use crate::auth::KeyStore;
use crate::index::Index;
use crate::member::Member;

const MAIN: &str = "0499370899";

fn member() -> Member {
    Member::from_json(&format!(
        r#"{{"national_id":"{MAIN}","version":3,"kind":"main","scheme":"mandatory","status":"active",
            "coverage_until":"2030-01-01","services":["pharmacy"],"booklet_no":"77"}}"#
    ))
    .unwrap()
}

/// Writes a keys file with one key per (client, channel, burst); returns the keys.
fn keys_file(path: &Path, keys: &[(&str, &str, u32)]) -> Vec<String> {
    let mut file = KeyFile {
        format: FORMAT.into(),
        keys: Vec::new(),
    };
    let mut presented = Vec::new();
    for (client, channel, burst) in keys {
        let new = new_key(&file.keys).unwrap();
        file.keys.push(KeyEntry {
            id: new.id,
            client: client.to_string(),
            channel: channel.to_string(),
            rate: 1,
            burst: *burst,
            secret_sha256: new.secret_sha256,
            created: chrono::Utc::now(),
            expires: None,
            revoked: None,
            replaces: None,
        });
        presented.push(format!("Bearer {}", new.key));
    }
    file.write(path).unwrap();
    presented
}

fn audit_key() -> AuditKey {
    AuditKey::from_hex(&"11".repeat(16)).unwrap()
}

struct Setup {
    state: AppState,
    keys: Vec<String>,
    audit_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let keys_path = dir.path().join("keys.json");
    let keys = keys_file(
        &keys_path,
        &[
            ("clinic", "http", 3),
            ("gateway", "ussd", 5),
            ("all", "any", 100),
        ],
    );
    let audit_path = dir.path().join("audit.log");
    let audit = AuditLog::start(
        &audit_path,
        crate::audit::AuditOptions::default(),
        audit_key(),
        AuditCounters::default(),
    )
    .unwrap();
    let state = AppState::new(2).unwrap();
    let store = KeyStore::open(&keys_path, &state.metrics).unwrap();
    let state = state.with_keys(store).with_audit(audit);
    state.install_index(Arc::new(Index::from_members([member()]).unwrap()), 0.0);
    Setup {
        state,
        keys,
        audit_path,
        _dir: dir,
    }
}

fn audit_lines(setup: &Setup) -> Vec<serde_json::Value> {
    assert!(setup.state.audit().unwrap().close(Duration::from_secs(5)));
    std::fs::read_to_string(&setup.audit_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn begin_with<'s>(
    s: &'s AppState,
    channel: Channel,
    key: Option<&str>,
) -> Result<Session<'s>, Refused> {
    begin(
        s,
        Arrival {
            authorization: key.map(str::as_bytes),
            ..Arrival::anonymous(channel, "/test")
        },
    )
}

#[test]
fn refusals_come_in_pipeline_order_and_are_audited_and_counted() {
    let setup = setup();
    let s = &setup.state;
    let clinic = Some(setup.keys[0].as_str());
    let unauthenticated = begin_with(s, Channel::Json, None).unwrap_err();
    assert_eq!(unauthenticated.error.code(), "unauthorized");
    let wrong = begin_with(
        s,
        Channel::Json,
        Some("Bearer eligd_aaaaaaaa_wrongwrongwrongwrongwr"),
    )
    .unwrap_err();
    assert_eq!(wrong.error.code(), "unauthorized");
    let forbidden = begin_with(s, Channel::Fhir, clinic).unwrap_err();
    assert_eq!(forbidden.error.code(), "forbidden");
    // The clinic's burst of 3: the forbidden attempt paid first (every refusal costs).
    let mut codes = Vec::new();
    for _ in 0..2 {
        let session = begin_with(s, Channel::Json, clinic).unwrap();
        let decided = session.decide(Query::national_id(MAIN, Day::today()));
        codes.push(decided.tracking);
        assert_eq!(decided.outcome(), "active");
    }
    let limited = begin_with(s, Channel::Json, clinic).unwrap_err();
    assert_eq!(limited.error.code(), "rate_limited");
    assert_eq!(limited.allowance.map(|a| a.remaining), Some(0));
    assert!(limited.error.retry_after().is_some());

    let lines = audit_lines(&setup);
    // Answers have lines of their own; refusals before the index are counted, aggregated.
    let answers: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"].is_null()).collect();
    let outcomes: Vec<&str> = answers
        .iter()
        .map(|l| l["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["active", "active"]);
    let refusal = |client: serde_json::Value, outcome: &str| {
        lines
            .iter()
            .find(|l| l["kind"] == "refusals" && l["client"] == client && l["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no refusal line for {client} {outcome}: {lines:?}"))
    };
    assert_eq!(refusal(serde_json::Value::Null, "unauthorized")["count"], 2);
    let forbidden = refusal("clinic".into(), "forbidden");
    assert_eq!(
        (forbidden["count"].as_u64(), forbidden["status"].as_u64()),
        (Some(1), Some(403))
    );
    assert!(forbidden["subject"].is_null(), "a refusal names nobody");
    assert_eq!(refusal("clinic".into(), "rate_limited")["count"], 1);
    let subject = audit_key()
        .subject(NationalId::parse(MAIN).unwrap())
        .to_string();
    assert_eq!(answers[0]["subject"], subject.as_str());
    assert_eq!(answers[0]["tracking_code"], codes[0].as_str());
    let text = lines.iter().map(|l| l.to_string()).collect::<String>();
    assert!(
        !text.contains(MAIN),
        "the national ID is never in the audit log"
    );
    let metrics = s.metrics.encode();
    for series in [
        r#"eligd_client_inquiries_total{client="clinic",outcome="active"} 2"#,
        r#"eligd_client_inquiries_total{client="clinic",outcome="forbidden"} 1"#,
        r#"eligd_client_inquiries_total{client="unauthenticated",outcome="unauthorized"} 2"#,
        r#"eligd_inquiries_total{channel="http",outcome="rate_limited"} 1"#,
    ] {
        assert!(metrics.contains(series), "missing {series}");
    }
}

#[test]
fn a_batch_costs_its_size_and_a_phone_is_limited_after_the_key() {
    let setup = setup();
    let s = &setup.state;
    let gateway = Some(setup.keys[1].as_bytes());
    let arrival = Arrival {
        authorization: gateway,
        ..Arrival::anonymous(Channel::Ussd, "/ussd")
    };
    let mut session = admit(s, arrival).unwrap();
    let above = session.charge(6).unwrap_err();
    assert!(matches!(
        above.error,
        ApiError::RateLimited(Limited::AboveBurst { cost: 6, burst: 5 })
    ));
    // Admission took 1; the rest of a batch of 3 is 2 more.
    session.charge(2).unwrap();
    assert_eq!(session.allowance().map(|a| a.remaining), Some(2));
    let state = AppState::new(1).unwrap().with_phone_requests_per_minute(1);
    state.install_index(Arc::new(Index::from_members([member()]).unwrap()), 0.0);
    let session = begin(&state, Arrival::anonymous(Channel::Sms, "/sms")).unwrap();
    let first =
        session.decide_for_phone(Some("09120000000"), Query::national_id(MAIN, Day::today()));
    assert_eq!(first.outcome(), "active");
    // The phone's limit comes before parsing: even a malformed ID costs allowance.
    let second =
        session.decide_for_phone(Some("09120000000"), Query::national_id("12", Day::today()));
    assert_eq!(second.outcome(), "rate_limited");
}

#[test]
fn no_record_no_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let audit = AuditLog::start(
        &path,
        crate::audit::AuditOptions::default(),
        audit_key(),
        AuditCounters::default(),
    )
    .unwrap();
    let state = AppState::new(2).unwrap().with_audit(audit);
    state.install_index(Arc::new(Index::from_members([member()]).unwrap()), 0.0);
    let session = begin(&state, Arrival::anonymous(Channel::Json, "/test")).unwrap();
    // The first record is taken, then the write fails: every later answer is refused.
    assert_eq!(
        session
            .decide(Query::national_id(MAIN, Day::today()))
            .outcome(),
        "active"
    );
    let started = Instant::now();
    while state.readiness().is_ok() {
        assert!(started.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(5));
    }
    let refused = session.decide(Query::national_id(MAIN, Day::today()));
    assert!(matches!(refused.result, Err(ApiError::AuditUnavailable)));
    assert_eq!(refused.outcome(), "audit_unavailable");
    assert!(state.readiness().err().unwrap().contains("audit"));
}

#[test]
fn booklet_lookups_are_audited_under_the_holders_subject() {
    let setup = setup();
    let session = begin_with(&setup.state, Channel::Json, Some(setup.keys[2].as_str())).unwrap();
    let decided = session.decide(Query {
        target: parse_booklet("77"),
        as_of: Ok(Day::today()),
        services: parse_services(Some("dental")),
    });
    assert_eq!(decided.outcome(), "service_not_covered");
    let lines = audit_lines(&setup);
    let subject = audit_key()
        .subject(NationalId::parse(MAIN).unwrap())
        .to_string();
    assert_eq!(lines[0]["subject"], subject.as_str());
    assert_eq!(lines[0]["client"], "all");
}
