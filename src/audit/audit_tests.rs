use super::*;

fn key() -> AuditKey {
    AuditKey::from_hex("000102030405060708090a0b0c0d0e0f").unwrap()
}

fn record(n: u32, person: Option<NationalId>) -> Record {
    let codes = crate::tracking::TrackingCodes::new(1).unwrap();
    Record {
        time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
        tracking: codes.next(),
        client: Some("pharmacy-1"),
        channel: "http",
        route: "/v1/members/{national_id}/eligibility",
        outcome: if n % 2 == 0 {
            "active"
        } else {
            "member_not_found"
        },
        status: if n % 2 == 0 { 200 } else { 404 },
        latency: Duration::from_micros(250),
        person,
    }
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_subject_is_the_hmac_of_the_ten_digits() {
    // RFC 4231 style check against an independent computation (Python:
    // hmac.new(bytes(range(16)), b"0012345679", "sha256").hexdigest()).
    let id = NationalId::parse("12345679").unwrap();
    assert_eq!(
        key().subject(id).to_string(),
        "4929072f50edf523ac3faebe7eb0a0f26dfcddfc95d17d0b67daacc356eac6db"
    );
    let other = AuditKey::from_hex(&"ab".repeat(32)).unwrap();
    assert_ne!(key().subject(id), other.subject(id));
    // The key's name (Python: hmac.new(bytes(range(16)), b"eligd audit key id",
    // "sha256").hexdigest()[:8]) differs between keys.
    assert_eq!(key().id(), "f0a99bad");
    assert_ne!(key().id(), other.id());
}

#[test]
fn bad_audit_keys_are_refused_clearly() {
    for bad in [
        "",
        "abc",
        &"0".repeat(30),
        &"zz".repeat(16),
        &"0".repeat(33),
    ] {
        assert!(AuditKey::from_hex(bad).is_err(), "{bad}");
    }
    assert!(AuditKey::from_hex(&format!(" {} ", "0f".repeat(16))).is_ok());
}

#[test]
fn records_are_whole_json_lines_without_the_national_id() {
    let id = NationalId::parse("0012345679").unwrap();
    let mut out = String::new();
    let second = "2026-11-18T11:06:40";
    writer::write_line(
        &record(0, Some(id)),
        second,
        123,
        Some((key().subject(id), key().id().as_str())),
        &mut out,
    );
    writer::write_line(&record(1, None), second, 123, None, &mut out);
    assert!(!out.contains("0012345679"));
    let parsed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed[0]["time"], "2026-11-18T11:06:40.123Z");
    assert_eq!(parsed[0]["client"], "pharmacy-1");
    assert_eq!(parsed[0]["status"], 200);
    assert_eq!(parsed[0]["latency_ms"], 0.25);
    assert_eq!(parsed[0]["subject"].as_str().unwrap().len(), 64);
    assert_eq!(parsed[0]["subject_key"], key().id());
    assert_eq!(parsed[1]["subject"], serde_json::Value::Null);
    assert_eq!(parsed[1].get("subject_key"), None);
    assert_eq!(parsed[1]["outcome"], "member_not_found");
}

#[test]
fn every_record_reaches_the_file_and_close_flushes_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let counters = AuditCounters::default();
    let log = AuditLog::start(&path, DEFAULT_MAX_BYTES, key(), counters.clone()).unwrap();
    for n in 0..5000 {
        log.record(record(n, None)).unwrap();
    }
    assert!(log.close(Duration::from_secs(10)));
    assert_eq!(lines(&path).len(), 5000);
    assert_eq!(counters.written.get(), 5000);
    assert_eq!(log.record(record(0, None)), Err(Unavailable::Closed));
}

#[test]
fn a_record_is_in_the_file_within_100_ms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::start(&path, DEFAULT_MAX_BYTES, key(), AuditCounters::default()).unwrap();
    log.record(record(0, None)).unwrap();
    let started = std::time::Instant::now();
    while lines(&path).is_empty() {
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "not written in time"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    log.close(Duration::from_secs(5));
}

#[test]
fn rotation_by_size_keeps_every_line_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::start(&path, 4096, key(), AuditCounters::default()).unwrap();
    for n in 0..400 {
        log.record(record(n, None)).unwrap();
        if n % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert!(log.close(Duration::from_secs(10)));
    let mut total = 0;
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        assert!(text.ends_with('\n'), "a line was split");
        total += lines(&entry.path()).len();
        files += 1;
    }
    assert_eq!(total, 400, "no line lost");
    assert!(files > 2, "rotated into {files} files");
}

#[cfg(target_os = "linux")]
#[test]
fn a_log_that_cannot_be_written_refuses_until_it_can_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("audit.real");
    let path = dir.path().join("audit.log");
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let counters = AuditCounters::default();
    let log = AuditLog::start(&path, DEFAULT_MAX_BYTES, key(), counters.clone()).unwrap();
    log.record(record(0, None)).unwrap();
    let started = std::time::Instant::now();
    while log.readiness().is_ok() {
        assert!(started.elapsed() < Duration::from_secs(5), "never noticed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(log.readiness().unwrap_err().contains("cannot be written"));
    assert_eq!(log.record(record(1, None)), Err(Unavailable::Failing));
    assert!(counters.write_errors.get() >= 1);
    // The disk is fixed: the path now leads to a writable file.
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&real, &path).unwrap();
    let started = std::time::Instant::now();
    while log.readiness().is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never recovered"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    log.record(record(2, None)).unwrap();
    assert!(log.close(Duration::from_secs(5)));
    assert_eq!(
        lines(&real).len(),
        2,
        "the record queued before the failure was kept"
    );
}
