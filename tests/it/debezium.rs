//! Debezium Server's Redis sink format for the reference table gives the same index as the
//! relay's native events: the same statements (tests/fixtures/debezium/script.sql) go through
//! PostgreSQL and `eligd relay` into one stream, and the events Debezium emits for them
//! (tests/fixtures/debezium/entries.jsonl: compact and extended, with and without the schema
//! wrapper, an update's before/after, a delete and its tombstone) into another.

use serde_json::Value;

use crate::feed::start;
use crate::records::{records_db, start_relay};
use crate::redis_server::RedisServer;
use crate::support::{http_get, Served};
use crate::support::{metric, wait_for, wait_ready};

const SCRIPT: &str = include_str!("../fixtures/debezium/script.sql");
const ENTRIES: &str = include_str!("../fixtures/debezium/entries.jsonl");
const PEOPLE: [&str; 3] = ["0499370899", "0012345679", "1234567891"];

fn answers(eligd: &Served) -> Vec<Value> {
    let mut paths: Vec<String> = PEOPLE
        .iter()
        .map(|id| format!("/v1/members/{id}/eligibility"))
        .collect();
    paths.push("/v1/booklets/930123456789/eligibility".into());
    paths
        .iter()
        .map(|path| {
            let (status, body) = http_get(&eligd.addr, path);
            let mut v: Value = serde_json::from_str(&body).unwrap();
            let strip = |o: &mut Value| {
                if let Some(o) = o.as_object_mut() {
                    o.remove("tracking_code");
                    // Each replica's own freshness watermark.
                    o.remove("data_as_of");
                }
            };
            strip(&mut v);
            if let Some(e) = v.get_mut("error") {
                strip(e);
            }
            serde_json::json!({"status": status, "body": v})
        })
        .collect()
}

#[test]
fn debezium_events_for_the_same_statements_give_the_same_answers_as_the_relay() {
    let (pg, redis) = (records_db(), RedisServer::start());
    for line in ENTRIES.lines() {
        let entry: Value = serde_json::from_str(line).unwrap();
        let fields: Vec<(String, String)> = entry["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f[0].as_str().unwrap().into(), f[1].as_str().unwrap().into()))
            .collect();
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        redis.xadd("debezium:changes", &fields);
    }
    let debezium = start(&redis, &["--stream", "debezium:changes"]);
    wait_ready(&debezium);
    assert_eq!(metric(&debezium, "eligd_feed_events_applied_total"), 6.0);
    assert_eq!(
        metric(
            &debezium,
            r#"eligd_feed_events_rejected_total{reason="tombstone"}"#
        ),
        1.0
    );

    let _relay = start_relay(&pg, &redis, &[]);
    pg.execute(SCRIPT);
    let native = start(&redis, &[]);
    wait_ready(&native);
    wait_for("the script relayed", 10, || {
        metric(&native, "eligd_feed_events_applied_total") == 6.0
    });

    let (from_debezium, from_relay) = (answers(&debezium), answers(&native));
    assert_eq!(from_debezium, from_relay);
    // And they are what the statements say.
    assert_eq!(from_relay[0]["body"]["status"], "suspended");
    assert_eq!(from_relay[0]["body"]["data_version"], 4);
    assert_eq!(from_relay[1]["body"]["status"], "main_insured_inactive");
    assert_eq!(from_relay[1]["body"]["coverage_until"], "2026-12-31");
    assert_eq!(from_relay[1]["body"]["special_conditions"][0], "dialysis");
    assert_eq!(from_relay[2]["status"], 404);
    assert_eq!(from_relay[3]["body"]["national_id"], "0499370899");
}
