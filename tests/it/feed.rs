//! The change feed against a private redis-server and the real binary: every entry format,
//! version guarding, malformed entries, replay before ready, and resuming from a snapshot's
//! position. Faults (Redis killed, paused, trimmed, deleted) are in `feed_faults`.

use serde_json::json;

use crate::redis_server::RedisServer;
use crate::support::id;
use crate::support::{
    eligd, http_get, metric, metric_if_any, serve, terminate, wait_for, wait_ready, Served,
};

pub(crate) const STREAM: &str = "eligd:changes";
/// A stream epoch for tests that write the stream themselves (the relay's is random).
pub(crate) const EPOCH: &str = "00112233445566778899aabbccddeeff";

/// Gives the stream `EPOCH`, as the relay (or a snapshot build) would.
pub(crate) fn set_epoch(redis: &RedisServer) {
    let _: () = redis.cmd(&["SET", &format!("{STREAM}:epoch"), EPOCH]);
}

/// IDs far from the demo population's.
pub(crate) fn person(n: u32) -> String {
    id(700_000_000 + n)
}

pub(crate) fn record(national_id: &str, version: u64) -> serde_json::Value {
    json!({
        "national_id": national_id, "version": version, "kind": "main", "scheme": "mandatory",
        "status": "active", "coverage_until": "2030-01-01", "services": ["outpatient", "pharmacy"],
    })
}

pub(crate) fn upsert(redis: &RedisServer, national_id: &str, version: u64) -> String {
    let member = record(national_id, version).to_string();
    redis.xadd(
        STREAM,
        &[
            ("op", "upsert"),
            ("national_id", national_id),
            ("version", &version.to_string()),
            ("member", &member),
        ],
    )
}

pub(crate) fn delete(redis: &RedisServer, national_id: &str, version: u64) -> String {
    redis.xadd(
        STREAM,
        &[
            ("op", "delete"),
            ("national_id", national_id),
            ("version", &version.to_string()),
        ],
    )
}

/// Starts eligd on a small demo population following `redis`.
pub(crate) fn start(redis: &RedisServer, extra: &[&str]) -> Served {
    let url = redis.url();
    let mut args = vec!["--demo-members", "2000", "--redis-url", &url];
    args.extend_from_slice(extra);
    serve(&args)
}

/// The version the service answers for an ID, `None` when it answers 404.
pub(crate) fn version(eligd: &Served, national_id: &str) -> Option<u64> {
    let (status, body) = http_get(
        &eligd.addr,
        &format!("/v1/members/{national_id}/eligibility"),
    );
    match status {
        200 => serde_json::from_str::<serde_json::Value>(&body).unwrap()["data_version"].as_u64(),
        404 => None,
        other => panic!("unexpected {other}: {body}"),
    }
}

fn debezium_envelope(
    op: &str,
    before: serde_json::Value,
    after: serde_json::Value,
) -> serde_json::Value {
    json!({
        "before": before, "after": after, "op": op, "ts_ms": 1_795_000_000_000u64,
        "source": {"version": "2.7.0.Final", "connector": "postgresql", "name": "eligd", "db": "records",
                   "schema": "public", "table": "members", "txId": 771, "lsn": 24_023_128u64, "snapshot": "false"},
    })
}

fn with_schema(payload: serde_json::Value) -> serde_json::Value {
    json!({"schema": {"type": "struct", "optional": false, "name": "eligd.public.members.Envelope"}, "payload": payload})
}

#[test]
fn every_entry_format_is_replayed_before_ready() {
    let redis = RedisServer::start();
    let (a, b, c, d, e, f) = (
        person(1),
        person(2),
        person(3),
        person(4),
        person(5),
        person(6),
    );
    upsert(&redis, &a, 3);
    upsert(&redis, &b, 1);
    delete(&redis, &b, 2);
    // Debezium compact: the key JSON is the field name, the envelope its value.
    let key = json!({"national_id": c}).to_string();
    let mut row = record(&c, 4);
    row["coverage_until"] = json!(21_914); // days since 1970 (io.debezium.time.Date)
    redis.xadd(
        STREAM,
        &[(&key, &debezium_envelope("c", json!(null), row).to_string())],
    );
    // Debezium extended with the schema wrapper, an update.
    let key = with_schema(json!({"national_id": d})).to_string();
    let value = with_schema(debezium_envelope("u", record(&d, 1), record(&d, 2))).to_string();
    redis.xadd(STREAM, &[("key", &key), ("value", &value)]);
    // A snapshot read, then a delete and its tombstone marker.
    let value = debezium_envelope("r", json!(null), record(&e, 9)).to_string();
    redis.xadd(
        STREAM,
        &[
            ("key", &json!({"national_id": e}).to_string()),
            ("value", &value),
        ],
    );
    let value = debezium_envelope("r", json!(null), record(&f, 1)).to_string();
    redis.xadd(STREAM, &[("value", &value)]);
    let value = debezium_envelope("d", record(&f, 1), json!(null)).to_string();
    let key = json!({"national_id": f}).to_string();
    redis.xadd(STREAM, &[("key", &key), ("value", &value)]);
    redis.xadd(STREAM, &[("key", &key), ("value", "default")]);
    // Malformed entries between good ones never stop the feed.
    redis.xadd(STREAM, &[("op", "upsert"), ("national_id", &a)]);
    redis.xadd(
        STREAM,
        &[
            ("op", "upsert"),
            ("national_id", "0000000000"),
            ("version", "1"),
            ("member", "{"),
        ],
    );
    redis.xadd(STREAM, &[("garbage", "x"), ("more", "y")]);
    let mut bad = record(&a, 10);
    bad["status"] = json!("retired");
    redis.xadd(
        STREAM,
        &[
            ("op", "upsert"),
            ("national_id", &a),
            ("version", "10"),
            ("member", &bad.to_string()),
        ],
    );
    upsert(&redis, &a, 4);

    let eligd = start(&redis, &[]);
    wait_ready(&eligd);
    // Ready means replayed: everything is visible at the first 200.
    assert_eq!(version(&eligd, &a), Some(4));
    assert_eq!(version(&eligd, &b), None);
    assert_eq!(version(&eligd, &c), Some(4));
    assert_eq!(version(&eligd, &d), Some(2));
    assert_eq!(version(&eligd, &e), Some(9));
    assert_eq!(version(&eligd, &f), None);
    assert_eq!(metric(&eligd, "eligd_feed_events_applied_total"), 9.0);
    assert_eq!(
        metric(
            &eligd,
            r#"eligd_feed_events_rejected_total{reason="malformed"}"#
        ),
        3.0
    );
    assert_eq!(
        metric(
            &eligd,
            r#"eligd_feed_events_rejected_total{reason="invalid_record"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &eligd,
            r#"eligd_feed_events_rejected_total{reason="tombstone"}"#
        ),
        1.0
    );
    assert_eq!(metric(&eligd, "eligd_feed_connected"), 1.0);
    assert_eq!(metric(&eligd, "eligd_feed_lag_seconds"), 0.0);

    // And new entries keep arriving while it serves.
    upsert(&redis, &a, 5);
    wait_for("a new version", 10, || version(&eligd, &a) == Some(5));
}

#[test]
fn versions_decide_whatever_the_order() {
    let redis = RedisServer::start();
    let eligd = start(&redis, &[]);
    wait_ready(&eligd);
    let (a, b) = (person(11), person(12));
    upsert(&redis, &a, 5);
    upsert(&redis, &a, 3); // older: ignored
    upsert(&redis, &a, 5); // duplicate: ignored
    upsert(&redis, &b, 2);
    upsert(&redis, &b, 1);
    delete(&redis, &a, 6);
    upsert(&redis, &a, 4); // older than the delete: cannot bring the person back
    let last = upsert(&redis, &b, 2);
    wait_for("the last entry", 10, || {
        metric(&eligd, "eligd_feed_last_applied_timestamp_seconds") * 1000.0
            >= last.split('-').next().unwrap().parse::<f64>().unwrap()
            && metric_if_any(
                &eligd,
                r#"eligd_feed_events_rejected_total{reason="stale"}"#,
            ) == Some(5.0)
    });
    assert_eq!(version(&eligd, &a), None);
    assert_eq!(version(&eligd, &b), Some(2));
    assert_eq!(metric(&eligd, "eligd_feed_events_applied_total"), 3.0);
}

#[test]
fn a_restart_resumes_from_the_snapshot_position() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap().to_string();
    crate::support::seed_snapshot_dir(dir.path(), 1000, 4);
    let args = ["--snapshot-dir", &dir_arg, "--compact-interval", "1"];
    let mut first = start(&redis, &args);
    wait_ready(&first);
    let ids: Vec<String> = (21..26).map(person).collect();
    let mut last = String::new();
    for id in &ids[..3] {
        last = upsert(&redis, id, 1);
    }
    // The compactor writes a snapshot recording the third entry's position.
    let name_part = format!("-{last}.snap");
    wait_for("a snapshot at the position", 30, || {
        std::fs::read_dir(dir.path()).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(&name_part)
        })
    });
    assert!(terminate(&mut first).success());
    drop(first);
    upsert(&redis, &ids[3], 1);
    upsert(&redis, &ids[4], 1);

    let second = start(&redis, &args);
    wait_ready(&second);
    for id in &ids {
        assert_eq!(version(&second, id), Some(1), "{id} after the restart");
    }
    // Only the two entries after the snapshot's position were read again.
    assert_eq!(metric(&second, "eligd_feed_events_applied_total"), 2.0);
    // Nothing read again was rejected: no rejection series at all (each appears at its
    // first count; `every_entry_format_is_replayed_before_ready` sees them by this name).
    assert_eq!(
        metric_if_any(&second, "eligd_feed_events_rejected_total"),
        None,
        "entries before the snapshot's position were read again"
    );
}

#[test]
fn bad_feed_settings_are_clear_errors() {
    let o = eligd(&[
        "serve",
        "--demo-members",
        "10",
        "--redis-url",
        "http://example",
    ]);
    crate::support::assert_clean_failure(&o, "--redis-url: the URL's scheme is not supported");
    let o = eligd(&["serve", "--demo-members", "10", "--max-staleness", "0"]);
    crate::support::assert_clean_failure(&o, "max-staleness");
    let o = eligd(&[
        "snapshot",
        "build",
        "--from-jsonl",
        "x",
        "--out",
        "y",
        "--position",
        "12",
    ]);
    crate::support::assert_clean_failure(&o, "not a stream entry ID");
}
