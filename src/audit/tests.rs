use super::*;

fn key() -> AuditKey {
    AuditKey::from_hex("000102030405060708090a0b0c0d0e0f").unwrap()
}

fn record(n: u32, person: Option<NationalId>) -> AuditRecord {
    let codes = crate::tracking::TrackingCodes::new(1).unwrap();
    AuditRecord {
        time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
        tracking: codes.next(),
        client: Some("pharmacy-1"),
        channel: "http",
        route: "/v1/members/{national_id}/eligibility",
        outcome: if n.is_multiple_of(2) {
            "active"
        } else {
            "member_not_found"
        },
        status: if n.is_multiple_of(2) { 200 } else { 404 },
        latency: Duration::from_micros(250),
        person,
        address: None,
    }
}

fn options(max_bytes: u64) -> AuditOptions {
    AuditOptions {
        max_bytes,
        ..AuditOptions::default()
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
    let log = AuditLog::start(&path, options(DEFAULT_MAX_BYTES), key(), counters.clone()).unwrap();
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
    let log = AuditLog::start(
        &path,
        options(DEFAULT_MAX_BYTES),
        key(),
        AuditCounters::default(),
    )
    .unwrap();
    log.record(record(0, None)).unwrap();
    // Written by the writer's own timer: no further record and no close. The deadline is
    // generous (a loaded 2-core machine may hold the writer thread back); the 100 ms is the
    // writer's interval, not timed here.
    let started = std::time::Instant::now();
    while lines(&path).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not written without a close"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    log.close(Duration::from_secs(5));
}

#[test]
fn rotation_by_size_keeps_every_line_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::start(&path, options(4096), key(), AuditCounters::default()).unwrap();
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
    let log = AuditLog::start(&path, options(DEFAULT_MAX_BYTES), key(), counters.clone()).unwrap();
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
    // The record whose write failed stands for an answer never given (its request was told
    // so): it is counted as a refusal, 503 audit_unavailable, not written as an answer.
    let written = lines(&real);
    assert_eq!(written.len(), 2, "{written:?}");
    let refusal = written.iter().find(|l| l["kind"] == "refusals").unwrap();
    assert_eq!(refusal["outcome"], "audit_unavailable");
    assert_eq!(refusal["count"], 1);
    assert_eq!(refusal["client"], "pharmacy-1");
    assert!(written.iter().any(|l| l["outcome"] == "active"));
}

#[test]
fn files_are_created_private_and_a_loose_log_is_narrowed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::start(&path, options(4096), key(), AuditCounters::default()).unwrap();
    for n in 0..100 {
        log.record(record(n, None)).unwrap();
    }
    assert!(log.close(Duration::from_secs(10)));
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let mode = entry.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let loose = dir.path().join("loose.log");
    std::fs::write(&loose, "").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let group = AuditOptions {
        group_readable: true,
        ..options(4096)
    };
    let log = AuditLog::start(&loose, group, key(), AuditCounters::default()).unwrap();
    assert!(log.close(Duration::from_secs(5)));
    let mode = std::fs::metadata(&loose).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

#[test]
fn retention_removes_the_oldest_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let counters = AuditCounters::default();
    let keep = AuditOptions {
        keep_bytes: 3 * 4096,
        ..options(4096)
    };
    let log = AuditLog::start(&path, keep, key(), counters.clone()).unwrap();
    for n in 0..1000 {
        log.record(record(n, None)).unwrap();
        if n % 40 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Then batches larger than the rotation size (written whole into a new file).
    for n in 0..300 {
        log.record(record(n, None)).unwrap();
    }
    assert!(log.close(Duration::from_secs(10)));
    let held: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(held <= 3 * 4096, "held {held}");
    assert!(counters.files_removed.get() > 0);
    assert!(counters.bytes.get() as u64 <= 3 * 4096);
    assert!(counters.volume_size.get() > 0);
}

#[test]
fn refusals_are_written_as_counts_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let counters = AuditCounters::default();
    let log = AuditLog::start(&path, options(DEFAULT_MAX_BYTES), key(), counters.clone()).unwrap();
    let refusal = refusals::Refusal {
        who: refusals::Who::Address("2001:db8::".parse().unwrap()),
        channel: "http",
        route: "/v1/eligibility/batch",
        outcome: "unauthenticated",
        status: 401,
    };
    for _ in 0..10_000 {
        log.refused(refusal);
    }
    let started = std::time::Instant::now();
    while lines(&path).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(3), "not written");
        std::thread::sleep(Duration::from_millis(20));
    }
    let written = lines(&path);
    assert_eq!(written.len(), 1);
    assert_eq!(written[0]["count"], 10_000);
    assert_eq!(written[0]["address"], "2001:db8::");
    assert_eq!(counters.refusals.get(), 10_000);
    assert!(log.close(Duration::from_secs(5)));
}

#[tokio::test]
async fn a_request_waits_until_its_record_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = std::sync::Arc::new(
        AuditLog::start(
            &path,
            options(DEFAULT_MAX_BYTES),
            key(),
            AuditCounters::default(),
        )
        .unwrap(),
    );
    let for_request = std::sync::Arc::clone(&log);
    let (_, completion) = completion::Captured::new(async move {
        for n in 0..3 {
            for_request.record(record(n, None)).unwrap();
            tokio::task::yield_now().await;
        }
    })
    .await;
    let written = completion.expect("three records").wait().await;
    assert!(written);
    assert_eq!(lines(&path).len(), 3, "written before the answer may go");
    assert_eq!(log.queue_depth(), 0);
    assert!(log.close(Duration::from_secs(5)));
}

#[test]
fn the_depth_counts_what_the_writer_holds() {
    let queue = Queue::new();
    let codes = crate::tracking::TrackingCodes::new(1).unwrap();
    for shard in &queue.shards {
        let mut pending = shard.lock();
        pending.push((
            AuditRecord {
                tracking: codes.next(),
                ..record(0, None)
            },
            None,
        ));
        shard.queued.store(pending.len(), Ordering::Release);
    }
    assert_eq!(queue.depth(), QUEUE_SHARDS);
    let mut taken = Vec::new();
    queue.take(&mut taken);
    assert!(queue.is_empty());
    assert_eq!(
        queue.depth(),
        QUEUE_SHARDS,
        "taken but not written: still counted"
    );
    queue.finished();
    assert_eq!(queue.depth(), 0);
}
