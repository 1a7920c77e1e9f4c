//! How long a relay write holds Redis. A script runs alone: nothing else (a replica's
//! `XREAD`, a Sentinel's `PING`) is served meanwhile. Each write script covered a whole batch,
//! and a batch of 100,000 (`--batch` allows it) held Redis for 0.66 s (1,000: 5.8 ms); the
//! relay now writes at most 256 entries per script. Measured from Redis's own `SLOWLOG`.

use crate::feed::person;
use crate::records::{records_db, start_relay};
use crate::redis_server::RedisServer;
use crate::support::{metric, wait_for};

#[test]
fn no_relay_write_holds_redis_longer_than_10_ms_whatever_the_batch() {
    let pg = records_db();
    let redis = RedisServer::start();
    let _: () = redis.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    let _: () = redis.cmd(&["CONFIG", "SET", "slowlog-max-len", "100000"]);
    const N: u32 = 20_000;
    let rows: Vec<String> = (0..N)
        .map(|i| {
            format!(
                "('{}', 'main', 'mandatory', 'active', '2030-01-01', '{{pharmacy}}')",
                person(20_000 + i)
            )
        })
        .collect();
    pg.execute(&format!(
        "INSERT INTO members (national_id, kind, scheme, status, coverage_until, services) VALUES {}",
        rows.join(",")
    ));
    let relay = start_relay(&pg, &redis, &["--batch", "100000"]);
    wait_for("the backlog relayed", 120, || {
        metric(&relay, "eligd_relay_rows_relayed_total") >= f64::from(N)
    });
    // id, time, duration (µs), arguments (the first 32), client address, client name.
    let log: Vec<(i64, i64, i64, Vec<String>, String, String)> =
        redis.cmd(&["SLOWLOG", "GET", "100000"]);
    let mut scripts: Vec<i64> = log
        .iter()
        .filter(|e| e.3.first().is_some_and(|c| c == "EVAL") && e.3.len() > 10)
        .map(|e| e.2)
        .collect();
    scripts.sort_unstable();
    assert!(
        scripts.len() >= (N / 256) as usize,
        "{} scripts",
        scripts.len()
    );
    let (median, max) = (scripts[scripts.len() / 2], scripts[scripts.len() - 1]);
    eprintln!(
        "{} write scripts: median {median} µs, max {max} µs",
        scripts.len()
    );
    assert!(max <= 10_000, "a write held Redis for {max} µs");
}
