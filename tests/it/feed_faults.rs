//! The change feed under faults: Redis killed and restarted, paused, the stream trimmed past
//! our position, the key deleted. Lookups are answered throughout; a fault every replica
//! shares never makes one unready (a gap found while ready included: the index is frozen at
//! the last entry it trusts), a gap found while catching up does, and no index is ever
//! silently incomplete.

use crate::feed::{delete, person, record, set_epoch, start, upsert, version, EPOCH, STREAM};
use crate::redis_server::RedisServer;
use crate::support::{build_snapshot, Served};
use crate::support::{metric, readyz, wait_for, wait_ready};

fn lag(eligd: &Served) -> f64 {
    metric(eligd, "eligd_feed_lag_seconds")
}

#[test]
fn redis_killed_and_restarted_loses_nothing() {
    let mut redis = RedisServer::start();
    let eligd = start(&redis, &["--max-staleness", "2"]);
    wait_ready(&eligd);
    let (a, b) = (person(31), person(32));
    upsert(&redis, &a, 1);
    wait_for("the first change", 10, || version(&eligd, &a) == Some(1));

    redis.kill9();
    // Lookups go on from the index while Redis is away, and a fault every replica shares
    // never makes one unready (docs/contract.md §5): the lag shows it instead.
    assert_eq!(version(&eligd, &a), Some(1));
    wait_for("stale beyond --max-staleness", 15, || lag(&eligd) >= 3.0);
    assert_eq!(readyz(&eligd).0, 200, "{:?}", readyz(&eligd));
    assert_eq!(metric(&eligd, "eligd_feed_connected"), 0.0);
    assert_eq!(version(&eligd, &a), Some(1));

    redis.restart();
    // The append-only file kept the stream: the new entry follows the old one.
    upsert(&redis, &b, 1);
    upsert(&redis, &a, 2);
    wait_for("changes after the restart", 20, || {
        version(&eligd, &b) == Some(1) && version(&eligd, &a) == Some(2)
    });
    wait_ready(&eligd);
    assert!(lag(&eligd) < 2.0);
    assert!(metric(&eligd, "eligd_feed_reconnects_total") >= 1.0);
    // Each change applied exactly once, none read twice into effect.
    assert_eq!(metric(&eligd, "eligd_feed_events_applied_total"), 3.0);
    assert_eq!(metric(&eligd, "eligd_feed_gaps_total"), 0.0);
}

#[test]
fn redis_paused_raises_the_lag_and_resuming_lowers_it() {
    let redis = RedisServer::start();
    let eligd = start(&redis, &["--max-staleness", "2"]);
    wait_ready(&eligd);
    assert_eq!(lag(&eligd), 0.0);
    redis.pause();
    wait_for("the lag to pass --max-staleness", 20, || lag(&eligd) >= 3.0);
    assert_eq!(readyz(&eligd).0, 200, "paused is shared: still ready");
    assert_eq!(version(&eligd, &person(33)), None, "still answering");
    redis.resume();
    wait_ready(&eligd);
    wait_for("lag back to 0", 10, || lag(&eligd) == 0.0);
    let a = person(34);
    upsert(&redis, &a, 1);
    wait_for("a change after resuming", 10, || {
        version(&eligd, &a) == Some(1)
    });
}

/// Reads the `gaps_total` series of one kind.
fn gaps(eligd: &Served, kind: &str) -> f64 {
    metric(eligd, &format!(r#"eligd_feed_gaps_total{{kind="{kind}"}}"#))
}

pub(crate) fn signal(eligd: &Served, signal: &str) {
    assert!(std::process::Command::new("kill")
        .args([signal, &eligd.pid().to_string()])
        .status()
        .unwrap()
        .success());
}

#[test]
fn trimmed_past_our_position_is_a_gap_repaired_from_a_newer_snapshot() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap().to_string();
    crate::support::seed_snapshot_dir(dir.path(), 1000, 4);
    set_epoch(&redis);
    let eligd = start(&redis, &["--snapshot-dir", &dir_arg]);
    wait_ready(&eligd);
    let (a, b, c) = (person(41), person(42), person(43));
    upsert(&redis, &a, 1);
    wait_for("the first change", 10, || version(&eligd, &a) == Some(1));

    // While eligd is stopped, entries it has not read are trimmed away.
    signal(&eligd, "-STOP");
    upsert(&redis, &b, 1);
    upsert(&redis, &b, 2);
    let last = upsert(&redis, &c, 1);
    let trimmed: i64 = redis.cmd(&["XTRIM", STREAM, "MAXLEN", "1"]);
    assert_eq!(trimmed, 3);
    signal(&eligd, "-CONT");

    wait_for("the gap to be reported", 15, || {
        gaps(&eligd, "trimmed") == 1.0
    });
    // Found while ready (a stalled replica cannot tell its stall from a trim every replica
    // sees): still ready, answering from the index as it was.
    assert_eq!(metric(&eligd, "eligd_feed_gap_degraded"), 1.0);
    assert_eq!(readyz(&eligd).0, 200, "{:?}", readyz(&eligd));
    assert_eq!(version(&eligd, &a), Some(1), "still answering");
    assert_eq!(version(&eligd, &b), None, "nothing past the gap");
    // The snapshot we started from is older than what we applied: not a repair, however
    // often the replica looks.
    let attempts = metric(&eligd, "eligd_feed_resync_attempts_total");
    wait_for("three looks for a covering snapshot", 15, || {
        metric(&eligd, "eligd_feed_resync_attempts_total") >= attempts + 3.0
    });
    assert_eq!(metric(&eligd, "eligd_feed_resyncs_total"), 0.0);

    // An operator supplies a snapshot that reflects the stream up to its last entry.
    let jsonl = dir.path().join("records.jsonl");
    let lines = [record(&b, 2), record(&c, 1)]
        .map(|r| r.to_string())
        .join("\n");
    std::fs::write(&jsonl, lines).unwrap();
    crate::support::snapshot_into(dir.path(), &jsonl, &["--position", &last, "--epoch", EPOCH]);

    wait_for("the resync", 15, || {
        metric(&eligd, "eligd_feed_resyncs_total") == 1.0
    });
    wait_ready(&eligd);
    assert_eq!(metric(&eligd, "eligd_feed_gap_degraded"), 0.0);
    assert_eq!(version(&eligd, &b), Some(2));
    assert_eq!(version(&eligd, &c), Some(1));
    assert_eq!(
        version(&eligd, &a),
        None,
        "the index is the supplied snapshot's"
    );
    delete(&redis, &c, 1);
    wait_for("following again", 10, || version(&eligd, &c).is_none());
}

#[test]
fn a_deleted_or_recreated_stream_key_is_a_gap_every_replica_shares() {
    let redis = RedisServer::start();
    let eligd = start(&redis, &[]);
    wait_ready(&eligd);
    let a = person(51);
    upsert(&redis, &a, 1);
    wait_for("the first change", 10, || version(&eligd, &a) == Some(1));
    let deleted: i64 = redis.cmd(&["DEL", STREAM]);
    assert_eq!(deleted, 1);
    wait_for("the gap to be reported", 15, || {
        gaps(&eligd, "deleted") == 1.0
    });
    assert!(eligd.log().contains("no longer exists"), "{}", eligd.log());
    assert_eq!(metric(&eligd, "eligd_feed_gap_degraded"), 1.0);
    // The key comes back with entries we cannot place: still answering from the index as it
    // was, and still ready (every replica sees the same gap).
    upsert(&redis, &a, 2);
    let attempts = metric(&eligd, "eligd_feed_resync_attempts_total");
    wait_for("two more turns of the feed in its gap", 15, || {
        metric(&eligd, "eligd_feed_resync_attempts_total") >= attempts + 2.0
    });
    let (status, body) = readyz(&eligd);
    assert_eq!(status, 200, "{body}");
    assert_eq!(version(&eligd, &a), Some(1));
}

#[test]
fn a_stream_that_does_not_hold_the_snapshot_position_is_a_reset() {
    // The snapshot reflects a stream up to entry 1000-0; the stream Redis has now never held
    // it and never lost an entry: recreated, or a failover that lost entries.
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = person(61);
    let jsonl = dir.path().join("records.jsonl");
    std::fs::write(&jsonl, record(&a, 1).to_string()).unwrap();
    let snap = dir.path().join("members.snap");
    let o = build_snapshot(&jsonl, &snap, &["--position", "1000-0", "--epoch", EPOCH]);
    assert!(o.status.success(), "{}", crate::support::stderr(&o));
    set_epoch(&redis);
    upsert(&redis, &person(62), 1);

    let snap_arg = snap.to_str().unwrap().to_string();
    let url = redis.url();
    let eligd =
        crate::support::Launch::args(&["--snapshot", &snap_arg, "--redis-url", &url]).listening();
    wait_for("the reset to be reported", 15, || {
        let (status, body) = readyz(&eligd);
        status == 503 && body.contains("does not hold our position 1000-0")
    });
    assert_eq!(gaps(&eligd, "reset"), 1.0);
    assert_eq!(version(&eligd, &a), Some(1), "answering from the snapshot");
    assert_eq!(
        version(&eligd, &person(62)),
        None,
        "nothing from the other stream"
    );
}
