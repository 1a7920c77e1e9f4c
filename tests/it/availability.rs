//! CONTRACT §5 and §4 against real servers: a fault every replica shares (Redis gone) never
//! makes a replica unready, and `data_as_of` means what it says: every change written to the
//! stream before that instant is reflected in the answer.

use std::time::{Duration, Instant};

use crate::cli::{http_get, Served};
use crate::feed::{person, readyz, start, upsert, version, wait_for, wait_ready};
use crate::redis_server::RedisServer;

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
    // Let the last blocking reads fail, then the watermark of each replica is frozen.
    std::thread::sleep(Duration::from_millis(1500));
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
        let lag = crate::feed::metric(r, "eligd_feed_lag_seconds");
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
    let batch = crate::cli::http(
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
