//! The records path under faults: the relay killed in the middle of a backlog, PostgreSQL
//! restarted, Redis restarted. Nothing committed is lost; repeats are harmless.

use crate::feed::{person, start, version};
use crate::records::{insert_main, records_db, start_relay, start_relay_until, version_in_db};
use crate::redis_server::RedisServer;
use crate::support::terminate;
use crate::support::{metric, metric_if_any, readyz, wait_for, wait_ready};

/// One INSERT of `n` main insured people, IDs from `first`.
fn insert_many(first: u32, n: u32) -> String {
    let rows: Vec<String> = (first..first + n)
        .map(|i| {
            format!(
                "('{}', 'main', 'mandatory', 'active', '2030-01-01', '{{pharmacy}}')",
                person(i)
            )
        })
        .collect();
    format!(
        "INSERT INTO members (national_id, kind, scheme, status, coverage_until, services) VALUES {}",
        rows.join(",")
    )
}

#[test]
fn a_relay_killed_mid_backlog_and_restarted_loses_nothing() {
    let (pg, redis) = (records_db(), RedisServer::start());
    const N: u32 = 20_000;
    pg.execute(&insert_many(1_000, N));
    let mut relay = start_relay(&pg, &redis, &["--batch", "50"]);
    wait_for("part of the backlog relayed", 30, || {
        let len: i64 = redis.cmd(&["XLEN", crate::feed::STREAM]);
        len >= 500
    });
    relay.kill9();
    let pending = pg.query_i64("SELECT count(*) FROM member_outbox WHERE relayed_id IS NULL");
    assert!(pending > 0, "killed too late: nothing left to relay");

    let relay = start_relay(&pg, &redis, &["--batch", "500"]);
    wait_for("the outbox emptied", 60, || {
        pg.query_i64("SELECT count(*) FROM member_outbox WHERE relayed_id IS NULL") == 0
    });
    let eligd = start(&redis, &[]);
    wait_ready(&eligd);
    assert_eq!(
        metric(&eligd, "eligd_index_members"),
        2_000.0 + f64::from(N)
    );
    // At least once: a batch cut short by the kill may be in the stream twice.
    let len: i64 = redis.cmd(&["XLEN", crate::feed::STREAM]);
    assert!(len >= i64::from(N));
    let applied = metric(&eligd, "eligd_feed_events_applied_total");
    assert_eq!(applied, f64::from(N));
    // The repeats were rejected as stale; the series appears at its first count, so it is
    // absent exactly when nothing was repeated.
    let repeated = (len - i64::from(N)) as f64;
    match metric_if_any(
        &eligd,
        r#"eligd_feed_events_rejected_total{reason="stale"}"#,
    ) {
        Some(stale) => assert_eq!(stale, repeated),
        None => assert_eq!(repeated, 0.0, "{repeated} repeats, none rejected as stale"),
    }
    assert_eq!(
        version(&eligd, &person(1_000 + N - 1)),
        Some(version_in_db(&pg, &person(1_000 + N - 1)) as u64)
    );
    assert_eq!(readyz(&relay).0, 200);
}

#[test]
fn postgres_restarted_the_relay_reconnects() {
    let (mut pg, redis) = (records_db(), RedisServer::start());
    let relay = start_relay(&pg, &redis, &[]);
    let eligd = start(&redis, &[]);
    wait_ready(&eligd);
    let (a, b) = (person(201), person(202));
    pg.execute(&insert_main(&a));
    wait_for("the first change", 10, || version(&eligd, &a).is_some());

    pg.kill9();
    wait_for("the relay to notice", 15, || readyz(&relay).0 == 503);
    assert!(version(&eligd, &a).is_some(), "the replica still answers");
    // PostgreSQL behind the relay is a fault every replica shares: still ready.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(readyz(&eligd).0, 200);
    pg.restart();
    pg.execute(&insert_main(&b));
    wait_for("a change after the restart", 30, || {
        version(&eligd, &b) == Some(version_in_db(&pg, &b) as u64)
    });
    wait_for("the relay ready again", 10, || readyz(&relay).0 == 200);
    assert!(metric(&relay, r#"eligd_relay_errors_total{component="postgres"}"#) >= 1.0);
}

#[test]
fn redis_restarted_changes_committed_meanwhile_arrive() {
    let (pg, mut redis) = (records_db(), RedisServer::start());
    let mut relay = start_relay(&pg, &redis, &[]);
    let eligd = start(&redis, &["--max-staleness", "60"]);
    wait_ready(&eligd);
    let (a, b) = (person(301), person(302));
    pg.execute(&insert_main(&a));
    wait_for("the first change", 10, || version(&eligd, &a).is_some());

    redis.kill9();
    // Committed while Redis is away: waits in the outbox.
    pg.execute(&insert_main(&b));
    pg.execute(&format!(
        "UPDATE members SET status = 'suspended' WHERE national_id = '{a}'"
    ));
    wait_for("the relay to notice", 15, || readyz(&relay).0 == 503);
    assert_eq!(
        pg.query_i64("SELECT count(*) FROM member_outbox WHERE relayed_id IS NULL"),
        2
    );
    redis.restart();
    wait_for("the changes after the restart", 30, || {
        version(&eligd, &b) == Some(version_in_db(&pg, &b) as u64)
            && version(&eligd, &a) == Some(version_in_db(&pg, &a) as u64)
    });
    assert!(metric(&relay, r#"eligd_relay_errors_total{component="redis"}"#) >= 1.0);
    assert_eq!(
        pg.query_i64("SELECT count(*) FROM member_outbox WHERE relayed_id IS NULL"),
        0
    );
    assert!(
        terminate(&mut relay).success(),
        "the relay stops cleanly on SIGTERM"
    );
}

#[test]
fn a_second_relay_stands_by_and_takes_over() {
    let (pg, redis) = (records_db(), RedisServer::start());
    let mut first = start_relay(&pg, &redis, &[]);
    let second = start_relay_until(&pg, &redis, &[], "operations endpoints listening");
    // A standby that reaches both sides is ready for its role: it would take over.
    wait_for("the second to stand by, ready", 10, || {
        let (status, body) = readyz(&second);
        status == 200 && body.contains(r#""role":"standby""#)
    });
    assert_eq!(metric(&second, "eligd_relay_active"), 0.0);
    // One that cannot reach Redis could not take over: unready, saying why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("redis://{}", closed.local_addr().unwrap());
    drop(closed);
    let blind =
        crate::records::start_relay_at(&pg, &nowhere, &[], "operations endpoints listening");
    wait_for("the blind standby unready", 15, || {
        let (status, body) = readyz(&blind);
        status == 503 && body.contains("Redis cannot be reached")
    });
    first.kill9();
    wait_for("the second to take over", 15, || {
        let (status, body) = readyz(&second);
        status == 200 && body.contains(r#""role":"active""#)
    });
    let eligd = start(&redis, &[]);
    wait_ready(&eligd);
    let a = person(401);
    pg.execute(&insert_main(&a));
    wait_for("a change through the second relay", 10, || {
        version(&eligd, &a) == Some(version_in_db(&pg, &a) as u64)
    });
}

/// A relay whose PostgreSQL answers nothing (paused: its queries hang, TCP retries for
/// minutes) cannot serve its role, active or standby: unready within seconds, ready again
/// once it answers (the attack review of issue 25, F1: both said ready for 85 s and more).
#[test]
fn a_relay_is_unready_while_postgresql_answers_nothing() {
    let (pg, redis) = (records_db(), RedisServer::start());
    let active = start_relay(&pg, &redis, &[]);
    let standby = start_relay_until(&pg, &redis, &[], "operations endpoints listening");
    wait_for("the standby ready", 15, || {
        let (status, body) = readyz(&standby);
        status == 200 && body.contains(r#""role":"standby""#)
    });
    pg.pause();
    wait_for("both unready", 30, || {
        readyz(&active).0 == 503 && readyz(&standby).0 == 503
    });
    let (_, body) = readyz(&active);
    assert!(body.contains("has not answered"), "{body}");
    pg.resume();
    wait_for("both ready again", 30, || {
        readyz(&active).0 == 200 && readyz(&standby).0 == 200
    });
}
