//! The real `eligd` binary: subcommands, exit codes, clear one-line errors, and `serve`
//! answering and draining on SIGTERM. The process harness is in `support::process`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    assert_clean_failure, build_snapshot, canonical_name, eligd, http_get, serve, serve_until,
    stderr, stdout, terminate,
};

#[test]
fn check_id_exit_codes() {
    let ok = eligd(&["check-id", "۰۰۱۲۳۴۵۶۷۹"]);
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(stdout(&ok), "valid: 0012345679\n");
    let ok = eligd(&["check-id", "12345679"]);
    assert_eq!(stdout(&ok), "valid: 0012345679\n");
    for (bad, reason) in [
        ("0012345678", "check digit"),
        ("2222222222", "repeat one digit"),
        ("12", "10 digits"),
        ("00x2345679", "only digits"),
        ("", "required"),
    ] {
        let o = eligd(&["check-id", bad]);
        assert_eq!(o.status.code(), Some(1), "{bad}");
        assert!(
            stdout(&o).starts_with("invalid: ") && stdout(&o).contains(reason),
            "{}",
            stdout(&o)
        );
    }
}

#[test]
fn demo_data_snapshot_build_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("pop.jsonl");
    let snap = dir.path().join("pop.snap");
    let o = eligd(&[
        "demo-data",
        "--members",
        "5000",
        "--seed",
        "9",
        "--today",
        "2026-11-22",
        "--out",
        jsonl.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&jsonl).unwrap();
    assert_eq!(text.lines().count(), 5000);
    // Deterministic: the same arguments write the same bytes.
    let again = eligd(&[
        "demo-data",
        "--members",
        "5000",
        "--seed",
        "9",
        "--today",
        "2026-11-22",
    ]);
    assert_eq!(stdout(&again), text);

    let o = build_snapshot(&jsonl, &snap, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("5000 members"), "{}", stderr(&o));
    let o = eligd(&["snapshot", "inspect", snap.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for line in [
        "members:         5000",
        "format version:  4",
        "feed position:   none",
        "verified",
        "kind dependent:",
        "status deceased:",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
}

#[test]
fn snapshot_build_into_a_directory_names_the_file_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("one.jsonl");
    std::fs::write(
        &jsonl,
        r#"{"national_id":"0012345679","version":1,"kind":"main","scheme":"mandatory","status":"active","services":[]}"#,
    )
    .unwrap();
    let snaps = dir.path().join("snaps");
    std::fs::create_dir(&snaps).unwrap();
    let o = build_snapshot(
        &jsonl,
        &snaps,
        &[
            "--position",
            "1700000000000-3",
            "--epoch",
            crate::feed::EPOCH,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<_> = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let name = names[0].file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(name, canonical_name(&names[0]));
    assert!(name.ends_with("-1700000000000-3.snap"), "{name}");
    assert!(stderr(&o).contains(&name), "{}", stderr(&o));
}

#[test]
fn snapshot_build_reports_bad_lines_and_strict_fails() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("mixed.jsonl");
    let good = r#"{"national_id":"0012345679","version":1,"kind":"main","scheme":"mandatory","status":"active","services":[]}"#;
    std::fs::write(
        &jsonl,
        format!(
            "{good}\n{{broken\n{}\n",
            good.replace("\"main\"", "\"boss\"")
        ),
    )
    .unwrap();
    let snap = dir.path().join("out.snap");
    let o = build_snapshot(&jsonl, &snap, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("skipped line 2:"), "{err}");
    assert!(err.contains("skipped line 3: kind:"), "{err}");
    assert!(err.contains("1 members from 3 lines (2 skipped)"), "{err}");

    let strict = dir.path().join("strict.snap");
    let o = build_snapshot(&jsonl, &strict, &["--strict"]);
    assert_clean_failure(&o, "line 2:");
    assert!(
        !strict.exists(),
        "a failed strict build must not leave a snapshot"
    );
}

#[test]
fn bad_files_and_flags_get_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let o = eligd(&["snapshot", "inspect", missing.to_str().unwrap()]);
    assert_clean_failure(&o, "No such file");
    let junk = dir.path().join("junk.snap");
    std::fs::write(&junk, b"ELIGDSNP but not really a snapshot").unwrap();
    assert_clean_failure(
        &eligd(&["snapshot", "inspect", junk.to_str().unwrap()]),
        "truncated",
    );
    std::fs::write(&junk, vec![7u8; 10_000]).unwrap();
    assert_clean_failure(
        &eligd(&["snapshot", "inspect", junk.to_str().unwrap()]),
        "wrong magic",
    );
    let o = eligd(&[
        "snapshot",
        "build",
        "--from-jsonl",
        missing.to_str().unwrap(),
        "--out",
        junk.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "cannot open");
    assert_clean_failure(
        &eligd(&["demo-data", "--members", "10", "--today", "2026-02-30"]),
        "--today",
    );
    assert_clean_failure(&eligd(&["demo-data", "--members", "ten"]), "invalid value");
    assert_clean_failure(
        &eligd(&["serve", "--listen", "not-an-address"]),
        "invalid value",
    );
    assert_clean_failure(
        &eligd(&["serve", "--node-id", "100", "--listen", "127.0.0.1:0"]),
        "--node-id",
    );
    assert_clean_failure(
        &eligd(&["serve", "--listen", "0.0.0.0:0"]),
        "refusing to listen",
    );
    assert_clean_failure(&eligd(&["--no-such-flag"]), "unexpected argument");
    let o = eligd(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--snapshot",
        junk.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "wrong magic");
}

#[test]
fn serve_the_demo_population_then_drain_on_sigterm() {
    // No subcommand: `serve` is the default.
    let mut served = serve(&["--demo-members", "20000"]);
    let (status, body) = http_get(&served.addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"members\":20000"), "{body}");
    let status = terminate(&mut served);
    assert!(status.success(), "exit status {status}");
}

#[test]
fn serve_a_snapshot_built_from_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("p.jsonl");
    let snap = dir.path().join("p.snap");
    let member = r#"{"national_id":"0012345679","version":3,"kind":"main","scheme":"voluntary","status":"active","coverage_until":"2030-01-01","services":["dental"],"booklet_no":"42"}"#;
    std::fs::write(&jsonl, format!("{member}\n")).unwrap();
    let o = build_snapshot(&jsonl, &snap, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut served = serve(&["serve", "--snapshot", snap.to_str().unwrap()]);
    let (status, body) = http_get(
        &served.addr,
        "/v1/members/0012345679/eligibility?date=2029-12-31&service=dental",
    );
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["status"], "active");
    assert_eq!(answer["days_remaining"], 1);
    assert_eq!(answer["scheme"], "voluntary");
    let (status, _) = http_get(&served.addr, "/v1/booklets/42/eligibility");
    assert_eq!(status, 200);
    assert!(terminate(&mut served).success());
    assert!(Path::new(&snap).exists());
}

#[test]
fn sigterm_during_a_long_load_stops_promptly() {
    let mut served = serve_until(
        &["--demo-members", "40000000"],
        "generating the synthetic demo population",
    );
    let (status, body) = http_get(&served.addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    let started = Instant::now();
    let status = terminate(&mut served);
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn serve_flags_in_the_environment_do_not_affect_other_subcommands() {
    let o = Command::new(env!("CARGO_BIN_EXE_eligd"))
        .args(["check-id", "0012345679"])
        .env("ELIGD_LISTEN", "not an address")
        .env("ELIGD_DEMO_MEMBERS", "many")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_eligd"))
        .env("ELIGD_LISTEN", "not an address")
        .output()
        .unwrap();
    assert_clean_failure(&o, "invalid value");
}

#[test]
fn snapshot_build_of_an_empty_input_fails_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("empty.jsonl");
    std::fs::write(&jsonl, "").unwrap();
    let snap = dir.path().join("empty.snap");
    assert_clean_failure(&build_snapshot(&jsonl, &snap, &[]), "no member in 0 lines");
    assert!(!snap.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "something was left"
    );
    let o = build_snapshot(&jsonl, &snap, &["--allow-empty"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(snap.exists());
}

#[test]
fn snapshot_build_with_no_valid_line_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("bad.jsonl");
    std::fs::write(&jsonl, "garbage\n{}\n").unwrap();
    let snap = dir.path().join("bad.snap");
    assert_clean_failure(
        &build_snapshot(&jsonl, &snap, &[]),
        "no valid member in 2 lines",
    );
    assert!(!snap.exists());
    let o = eligd(&[
        "snapshot",
        "inspect",
        dir.path().join("nope.snap").to_str().unwrap(),
    ]);
    assert_eq!(
        stderr(&o).matches("No such file").count(),
        1,
        "{}",
        stderr(&o)
    );
}
