//! docs/contract.md §5 and §4 against real servers: a fault every replica shares (Redis gone, a gap
//! in the stream every replica at its head sees) never makes a replica unready, a replica's
//! own fault (starting up from a snapshot the stream cannot bring up to date) does, and
//! `data_as_of` means what it says: every change written to the stream before that instant
//! is reflected in the answer.

use std::time::{Duration, Instant};

use crate::feed::{person, record, set_epoch, start, upsert, version, EPOCH};
use crate::redis_server::RedisServer;
use crate::support::{eligd, snapshot_into, stderr, stdout, Launch};
use crate::support::{http_get, Served};
use crate::support::{metric, readyz, wait_for, wait_ready};

/// An answer's `data_version` (`None` for 404) and `data_as_of` in Unix ms.
fn answer(eligd: &Served, national_id: &str) -> (Option<u64>, u64) {
    let (status, body) = http_get(
        &eligd.addr,
        &format!("/v1/members/{national_id}/eligibility"),
    );
    assert!(status == 200 || status == 404, "{status}: {body}");
    if status == 404 {
        // A 404 carries no data_as_of; ask for a member of the demo population instead.
        return (None, 0);
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    (v["data_version"].as_u64(), as_of_ms(&v))
}

fn as_of_ms(v: &serde_json::Value) -> u64 {
    let text = v["data_as_of"]
        .as_str()
        .expect("data_as_of on every answer");
    assert!(
        text.ends_with('Z') && text.len() == 24,
        "RFC 3339 UTC with ms: {text}"
    );
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .timestamp_millis() as u64
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn three_replicas_stay_ready_through_a_redis_outage_and_data_as_of_freezes() {
    const MAX_STALENESS: u64 = 2;
    let mut redis = RedisServer::start();
    let staleness = MAX_STALENESS.to_string();
    let replicas: Vec<Served> = (0..3)
        .map(|_| start(&redis, &["--max-staleness", &staleness]))
        .collect();
    let a = person(501);
    upsert(&redis, &a, 1);
    for r in &replicas {
        wait_ready(r);
        wait_for("the first change on every replica", 10, || {
            version(r, &a) == Some(1)
        });
    }
    redis.kill9();
    let stopped_at = now_ms();
    // Once every replica's feed has seen the connection go (polled: a loaded machine is late,
    // never early), the watermark of each replica is frozen.
    for r in &replicas {
        wait_for("the feed disconnected", 15, || {
            metric(r, "eligd_feed_connected") == 0.0
        });
    }
    let frozen: Vec<u64> = replicas.iter().map(|r| answer(r, &a).1).collect();
    for f in &frozen {
        assert!(
            *f <= stopped_at,
            "nothing after the stop is promised: {f} > {stopped_at}"
        );
    }
    // Twice --max-staleness and more: every replica answers, ready, with the same watermark.
    let until = Instant::now() + Duration::from_secs(2 * MAX_STALENESS + 1);
    let mut checks = 0;
    while Instant::now() < until {
        for (r, f) in replicas.iter().zip(&frozen) {
            assert_eq!(readyz(r).0, 200, "{:?}", readyz(r));
            assert_eq!(answer(r, &a), (Some(1), *f), "answering, data_as_of frozen");
            checks += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(checks >= 30);
    for r in &replicas {
        let lag = crate::support::metric(r, "eligd_feed_lag_seconds");
        assert!(
            lag > MAX_STALENESS as f64,
            "the lag shows the outage: {lag}"
        );
    }

    redis.restart();
    let back = now_ms();
    upsert(&redis, &a, 2);
    for (r, f) in replicas.iter().zip(&frozen) {
        wait_for("the change after Redis returned", 20, || {
            version(r, &a) == Some(2)
        });
        wait_for("data_as_of to advance past the return", 10, || {
            answer(r, &a).1 > back
        });
        assert!(answer(r, &a).1 > *f);
        assert_eq!(readyz(r).0, 200);
    }
}

#[test]
fn data_as_of_means_every_change_written_before_it_is_reflected() {
    let redis = RedisServer::start();
    let eligd = start(&redis, &[]);
    wait_ready(&eligd);
    let a = person(511);
    upsert(&redis, &a, 1);
    wait_for("the first change", 10, || version(&eligd, &a) == Some(1));
    let mut not_yet_promised = 0;
    for v in 2..=21u64 {
        upsert(&redis, &a, v);
        let written = now_ms();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let asked = now_ms();
            let (seen, as_of) = answer(&eligd, &a);
            let seen = seen.unwrap();
            assert!(
                as_of <= asked,
                "a watermark in the future: {as_of} > {asked}"
            );
            if as_of >= written {
                // The change was written before the watermark: it must be in the answer.
                assert!(
                    seen >= v,
                    "data_as_of {as_of} ≥ write {written} but version {seen} < {v}"
                );
                break;
            }
            // Not yet promised: the answer may or may not hold it.
            not_yet_promised += 1;
            assert!(
                Instant::now() < deadline,
                "data_as_of never passed the write"
            );
        }
        if v % 10 == 0 {
            // Idle: the watermark keeps advancing while the feed is followed.
            let idle = now_ms();
            wait_for("the watermark to advance while idle", 5, || {
                answer(&eligd, &a).1 > idle
            });
        }
    }
    // Batch items carry the same watermark as the request's other answers.
    let batch = crate::support::http(
        &eligd.addr,
        "POST",
        "/v1/eligibility/batch",
        &[("content-type", "application/json")],
        format!(r#"{{"national_ids": ["{a}", "{a}"]}}"#).as_bytes(),
    );
    assert_eq!(batch.status, 200, "{}", batch.body);
    let v = batch.json();
    let items = v["results"].as_array().unwrap();
    assert_eq!(as_of_ms(&items[0]), as_of_ms(&items[1]));
    assert!(as_of_ms(&items[0]) <= now_ms());
    // Answers came before the watermark passed a write too: it is not simply "now".
    assert!(
        not_yet_promised > 0,
        "the watermark was always past the write"
    );
}

/// Issue 23, item B: Redis lost entries every replica had applied (the relay killed between
/// its XADD and marking the rows, then Redis restarted from an older copy; the relay, not
/// knowing it had written them, sends those rows again under new IDs). Every up-to-date
/// replica finds its position gone (a `reset`). That gap is shared: before, all three went
/// unready at once; now each stays ready, answering what it holds (true: every entry came
/// from a committed row) with `data_as_of` frozen, until a snapshot covers the gap. A fourth
/// replica started meanwhile from a snapshot at a lost position is not ready (its own
/// fault: the others serve) until it resyncs.
#[test]
fn a_gap_every_replica_shares_leaves_them_ready_and_frozen_and_a_starting_one_unready() {
    let mut redis = RedisServer::start();
    set_epoch(&redis);
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (0..4).map(|i| tmp.path().join(format!("r{i}"))).collect();
    let (a, b, c, d) = (person(521), person(522), person(523), person(524));
    let base = tmp.path().join("base.jsonl");
    std::fs::write(&base, record(&a, 1).to_string()).unwrap();
    for dir in &dirs[..3] {
        snapshot_into(dir, &base, &[]);
    }
    let url = redis.url();
    let follow = |dir: &std::path::Path| {
        let args = [
            "--snapshot-dir",
            dir.to_str().unwrap(),
            "--redis-url",
            &url,
            "--max-staleness",
            "2",
        ];
        // Once listening: the first three are waited on to be ready, the fourth to refuse.
        Launch::args(&args).listening()
    };
    let replicas: Vec<Served> = dirs[..3].iter().map(|d| follow(d)).collect();
    for r in &replicas {
        wait_ready(r);
    }
    upsert(&redis, &a, 2);
    let older = redis.copy_data();
    // Applied by every replica, then lost.
    let lost = upsert(&redis, &a, 3);
    upsert(&redis, &b, 1);
    for r in &replicas {
        wait_for("every change on every replica", 10, || {
            version(r, &a) == Some(3) && version(r, &b) == Some(1)
        });
    }
    redis.kill9();
    let killed = now_ms();
    redis.restore_data(&older);
    redis.restart();
    // The relay sends its unmarked rows again (new IDs), then a new change.
    upsert(&redis, &a, 3);
    upsert(&redis, &b, 1);
    upsert(&redis, &c, 1);
    for r in &replicas {
        wait_for("the reset on every replica", 20, || {
            metric(r, r#"eligd_feed_gaps_total{kind="reset"}"#) == 1.0
        });
    }
    let frozen: Vec<u64> = replicas.iter().map(|r| answer(r, &a).1).collect();
    for f in &frozen {
        assert!(*f <= killed, "data_as_of past the gap: {f} > {killed}");
    }
    // Twice --max-staleness and more: all ready, every answer what they held, frozen.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        for (r, f) in replicas.iter().zip(&frozen) {
            assert_eq!(
                readyz(r).0,
                200,
                "a shared gap took a replica out: {:?}",
                readyz(r)
            );
            assert_eq!(answer(r, &a), (Some(3), *f), "true and frozen");
            assert_eq!(version(r, &b), Some(1));
            assert_eq!(version(r, &c), None, "nothing past the gap");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for r in &replicas {
        assert_eq!(metric(r, "eligd_feed_gap_degraded"), 1.0);
        assert_eq!(metric(r, "eligd_ready"), 1.0);
    }

    // A compaction snapshot taken in the lost window (position `lost`), for a fourth replica.
    let window = tmp.path().join("window.jsonl");
    std::fs::write(&window, record(&a, 3).to_string()).unwrap();
    snapshot_into(&dirs[3], &window, &["--position", &lost, "--epoch", EPOCH]);

    // A fourth replica, starting from the window's snapshot: its own fault, not ready.
    let fourth = follow(&dirs[3]);
    wait_for("the fourth's reset", 15, || {
        metric(&fourth, r#"eligd_feed_gaps_total{kind="reset"}"#) == 1.0
    });
    std::thread::sleep(Duration::from_secs(2));
    let (status, body) = readyz(&fourth);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("change feed gap"), "{body}");
    assert_eq!(metric(&fourth, "eligd_feed_gap_degraded"), 0.0);
    assert!(
        fourth.log().contains("while catching up"),
        "{}",
        fourth.log()
    );

    // The documented repair: note the position with its epoch, export, build into each
    // replica's --snapshot-dir. Every one resyncs by itself; the three stay ready.
    let o = eligd(&["snapshot", "position", "--redis-url", &url]);
    assert!(o.status.success(), "{}", stderr(&o));
    let noted = stdout(&o);
    let export = tmp.path().join("export.jsonl");
    let lines = [record(&a, 3), record(&b, 1), record(&c, 1)].map(|r| r.to_string());
    std::fs::write(&export, lines.join("\n")).unwrap();
    let flags: Vec<&str> = noted.split_whitespace().collect();
    for dir in &dirs {
        snapshot_into(dir, &export, &flags);
    }
    for r in replicas.iter().chain([&fourth]) {
        wait_for("the resync", 15, || {
            metric(r, "eligd_feed_resyncs_total") == 1.0
        });
    }
    wait_ready(&fourth);
    upsert(&redis, &d, 1);
    let after = now_ms();
    for r in replicas.iter().chain([&fourth]) {
        assert_eq!(readyz(r).0, 200);
        assert_eq!(metric(r, "eligd_feed_gap_degraded"), 0.0);
        wait_for("following again", 10, || version(r, &d) == Some(1));
        assert_eq!(version(r, &c), Some(1));
        wait_for("data_as_of moving again", 10, || answer(r, &a).1 > after);
    }
}
