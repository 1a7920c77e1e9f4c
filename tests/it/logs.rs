//! `--log-format json`: every line the server, the relay and the CLI write to standard error is
//! one JSON object with `timestamp`, `level`, `target` and `message` (and the event's fields),
//! under load and through faults, and none names a national ID, a phone number, a key or a
//! secret.

use std::process::{Command, Output};

use serde_json::Value;

use crate::feed::{person, upsert};
use crate::records::{insert_main, records_db};
use crate::redis_server::RedisServer;
use crate::support::{eligd_bin, http, http_get, terminate, wait_for, Launch, AUDIT_KEY};

const JSON: (&str, &str) = ("ELIGD_LOG_FORMAT", "json");

/// Every line parses as an object with the four fields, a known level, and a message; returns
/// the objects.
#[track_caller]
fn objects(who: &str, log: &str) -> Vec<Value> {
    let mut found = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{who}: a line that is not JSON ({e}): {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(v[field].is_string(), "{who}: no {field} in {line}");
        }
        let level = v["level"].as_str().unwrap();
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "{who}: level {level}"
        );
        chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{who}: timestamp ({e}): {line}"));
        found.push(v);
    }
    assert!(!found.is_empty(), "{who} logged nothing");
    found
}

#[track_caller]
fn assert_says_nothing_of(who: &str, log: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !log.contains(secret),
            "{who} logged {secret:?}:\n{}",
            log.lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(eligd_bin());
    command.args(args).env(JSON.0, JSON.1);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[test]
fn json_logs_parse_line_by_line_and_name_no_person_key_or_secret() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let audit = dir.path().join("audit.log");

    // The CLI: a key added (a note beside the key on standard output), a snapshot built (its
    // progress), a command that fails (its error).
    let added = cli(
        &[
            "keys",
            "add",
            "--keys-file",
            keys.to_str().unwrap(),
            "--client",
            "clinic",
            "--channel",
            "any",
            "--rate",
            "100000",
        ],
        &[],
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let key = String::from_utf8_lossy(&added.stdout).trim().to_string();
    let secret = key.rsplit('_').next().unwrap().to_string();
    let mut cli_logs = String::from_utf8_lossy(&added.stderr).into_owned();
    let jsonl = dir.path().join("pop.jsonl");
    let o = cli(
        &[
            "demo-data",
            "--members",
            "300",
            "--out",
            jsonl.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    cli_logs.push_str(&String::from_utf8_lossy(&o.stderr));
    let snap = dir.path().join("pop.snap");
    let missing = dir.path().join("missing.jsonl");
    let o = cli(
        &[
            "snapshot",
            "build",
            "--from-jsonl",
            missing.to_str().unwrap(),
            "--out",
            snap.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!o.status.success(), "a missing input: an error");
    cli_logs.push_str(&String::from_utf8_lossy(&o.stderr));
    let o = cli(
        &[
            "snapshot",
            "build",
            "--from-jsonl",
            jsonl.to_str().unwrap(),
            "--out",
            snap.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    cli_logs.push_str(&String::from_utf8_lossy(&o.stderr));
    let o = cli(
        &["audit", "subject", "3903823333"],
        &[("ELIGD_AUDIT_KEY", AUDIT_KEY)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    cli_logs.push_str(&String::from_utf8_lossy(&o.stderr));
    let cli_objects = objects("the CLI", &cli_logs);
    assert!(
        cli_objects
            .iter()
            .any(|v| v["level"] == "ERROR" && v["message"].as_str().unwrap().contains("error")),
        "{cli_logs}"
    );

    // The server, with keys, the audit log and a feed, under inquiries of every kind and a
    // Redis that dies and comes back.
    let mut redis = RedisServer::start();
    let mut served = Launch::demo(2000)
        .flags(&["--redis-url", &redis.url()])
        .keys(&keys)
        .audit(&audit)
        .env(JSON.0, JSON.1)
        .ready();
    let a = person(801);
    upsert(&redis, &a, 1);
    let auth = format!("Bearer {key}");
    let bad = "Bearer eligd_00000000_not-a-real-secret-at-all-4711";
    let phone = "09121234567";
    // Asked for, never logged (the demo population's sample IDs are, by design, at start).
    let ids = vec![
        a.clone(),
        person(802),
        "0012345679".to_string(),
        "1234567890".to_string(),
    ];
    wait_for("the change", 10, || {
        http(
            &served.addr,
            "GET",
            &format!("/v1/members/{a}/eligibility"),
            &[("authorization", &auth)],
            b"",
        )
        .status
            == 200
    });
    for round in 0..20 {
        for id in &ids {
            let path = format!("/v1/members/{id}/eligibility");
            http(&served.addr, "GET", &path, &[("authorization", &auth)], b"");
            http(&served.addr, "GET", &path, &[("authorization", bad)], b"");
            let form = format!("sessionId=s{round}&phoneNumber={phone}&text=1*{id}");
            http(
                &served.addr,
                "POST",
                "/ussd",
                &[
                    ("authorization", &auth),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                form.as_bytes(),
            );
            let sms = format!("from={phone}&text=code+{id}");
            http(
                &served.addr,
                "POST",
                "/sms",
                &[
                    ("authorization", &auth),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                sms.as_bytes(),
            );
        }
        if round == 5 {
            redis.kill9();
        }
        if round == 12 {
            redis.restart();
        }
    }
    upsert(&redis, &a, 2);
    wait_for("the feed back", 20, || {
        let (_, metrics) = http_get(&served.addr, "/metrics");
        metrics.contains("eligd_feed_connected 1")
    });
    assert!(terminate(&mut served).success());
    let server_log = served.log();
    let server_objects = objects("serve", &server_log);
    for message in ["listening", "index loaded; ready"] {
        assert!(
            server_objects.iter().any(|v| v["message"] == message),
            "no {message:?} in {server_log}"
        );
    }
    assert!(
        server_objects
            .iter()
            .any(|v| v["level"] == "WARN" && v["target"].as_str().unwrap().contains("feed")),
        "the Redis outage is logged: {server_log}"
    );
    assert!(
        server_objects.iter().any(|v| v["address"].is_string()),
        "fields stay fields"
    );

    // The relay, moving rows, and its own error when PostgreSQL goes away.
    let pg = records_db();
    let redis2 = RedisServer::start();
    let pg_url = pg.url();
    let redis_url = redis2.url();
    let mut relay = Launch::args(&[
        "relay",
        "--postgres-url",
        &pg_url,
        "--redis-url",
        &redis_url,
    ])
    .flags(&["--poll-interval-ms", "200"])
    .env(JSON.0, JSON.1)
    .until("relay: active");
    for n in 0..20 {
        pg.execute(&insert_main(&person(900 + n)));
    }
    wait_for("rows relayed", 15, || {
        crate::support::metric(&relay, "eligd_relay_rows_relayed_total") >= 20.0
    });
    assert!(terminate(&mut relay).success());
    let relay_log = relay.log();
    objects("relay", &relay_log);

    let everything = [cli_logs.as_str(), &server_log, &relay_log].concat();
    let mut secrets: Vec<&str> = vec![&secret, phone, &phone[1..], AUDIT_KEY, "not-a-real-secret"];
    secrets.extend(ids.iter().map(String::as_str));
    let persons: Vec<String> = (0..20).map(|n| person(900 + n)).collect();
    secrets.extend(persons.iter().map(String::as_str));
    assert_says_nothing_of("eligd", &everything, &secrets);
}
