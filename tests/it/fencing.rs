//! Issue 23, scenario 1: two relays, and the active one deposed while a write of its own is
//! held in a stalled network path. Before fencing, the held XADD landed after the successor
//! had relayed an update and a delete: the stream ended with the deposed relay's late upsert,
//! and a replica bootstrapped from the table (which carried no delete markers) answered the
//! deleted person `eligible: true`.

use crate::feed::person;
use crate::integrity_records::{replica_of_dir, snapshot_of_table};
use crate::records::{insert_main, records_db, start_relay_at};
use crate::redis_server::RedisServer;
use crate::support::eligd;
use crate::support::{metric, wait_for, wait_ready};
use testkit::TcpProxy;

fn status_of(eligd: &crate::support::Served, national_id: &str) -> u16 {
    crate::support::http_get(
        &eligd.addr,
        &format!("/v1/members/{national_id}/eligibility"),
    )
    .0
}

#[test]
fn a_deposed_relays_late_write_never_lands_and_a_bootstrap_from_the_table_keeps_the_delete() {
    let pg = records_db();
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(&format!("127.0.0.1:{}", redis.port()));
    let a = start_relay_at(&pg, &proxy.redis_url(), &[], "relay: active");
    let b = start_relay_at(&pg, &redis.url(), &[], "operations endpoints listening");
    let x = person(601);
    pg.execute(&insert_main(&x));
    wait_for("the insert relayed by A", 15, || {
        metric(&a, "eligd_relay_rows_relayed_total") >= 1.0
    });

    // A's next write is held in flight; then A's database session is dropped, and B takes the
    // relay lock and relays an update and a delete.
    proxy.hold();
    pg.execute(&format!(
        "UPDATE members SET status = 'suspended' WHERE national_id = '{x}'"
    ));
    std::thread::sleep(std::time::Duration::from_millis(1500)); // A reads it and sends it
    pg.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted",
    );
    wait_for("B relays the held update", 20, || {
        metric(&b, "eligd_relay_rows_relayed_total") >= 1.0
    });
    pg.execute(&format!("DELETE FROM members WHERE national_id = '{x}'"));
    wait_for("B relays the delete", 15, || {
        metric(&b, "eligd_relay_rows_relayed_total") >= 2.0
    });

    // A's held write lands now: refused by the fence, and A steps down.
    proxy.release();
    wait_for("A deposed", 15, || {
        crate::support::metric_if_any(&a, "eligd_relay_deposed_total").is_some_and(|n| n >= 1.0)
    });
    let entries: i64 = redis.cmd(&["XLEN", crate::feed::STREAM]);
    assert_eq!(
        entries, 3,
        "insert, update, delete: nothing from the deposed relay"
    );
    assert!(metric(&a, "eligd_relay_deposed_total") >= 1.0);
    // Deposed, A stands by, ready to take over again.
    wait_for("A a standby", 15, || {
        let (code, body) = crate::support::http_get(&a.addr, "/readyz");
        code == 200 && body.contains(r#""role":"standby""#)
    });

    // A replica bootstrapped from the table refuses the deleted person, and so does one
    // following the stream from its start.
    let tmp = tempfile::tempdir().unwrap();
    let said = snapshot_of_table(tmp.path(), &pg.url(), &redis.url());
    assert!(said.contains("1 delete markers"), "{said}");
    let inspect = eligd(&[
        "snapshot",
        "inspect",
        std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "snap"))
            .unwrap()
            .to_str()
            .unwrap(),
    ]);
    let inspect = String::from_utf8_lossy(&inspect.stdout).to_string();
    assert!(
        inspect
            .lines()
            .any(|l| l.starts_with("tombstones:") && l.ends_with(" 1")),
        "{inspect}"
    );
    let from_table = replica_of_dir(tmp.path(), &redis.url());
    wait_ready(&from_table);
    assert_eq!(status_of(&from_table, &x), 404);
    let from_stream = crate::feed::start(&redis, &[]);
    wait_ready(&from_stream);
    assert_eq!(status_of(&from_stream, &x), 404);
}

/// A relay whose token the records database lost (restored from a backup, or failed over to a
/// standby without the last token) is not deposed by its own stale fence: holding the relay
/// lock, it raises its token past the fence Redis holds, and relays.
#[test]
fn a_fence_ahead_of_the_table_is_raised_by_the_lock_holder() {
    let pg = records_db();
    let redis = RedisServer::start();
    let _: () = redis.cmd(&["SET", "eligd:changes:fence", "1000"]);
    let relay = start_relay_at(&pg, &redis.url(), &[], "relay: active");
    let x = person(602);
    pg.execute(&insert_main(&x));
    wait_for("relayed", 15, || {
        metric(&relay, "eligd_relay_rows_relayed_total") >= 1.0
    });
    assert_eq!(pg.query_i64("SELECT token FROM eligd_relay_fence"), 1001);
    let fence: String = redis.cmd(&["GET", "eligd:changes:fence"]);
    assert_eq!(fence, "1001");
    assert_eq!(metric(&relay, "eligd_relay_deposed_total"), 0.0);

    // A fence key holding something else is a clear error that names it; nothing is written
    // until it is fixed, and then the relay carries on.
    // `nan` passed Lua's tonumber and compared neither greater nor smaller: every token got
    // through and the fence was never raised. Versions' key is held to the same rule.
    let mut relayed = 1.0;
    for (key, garbage, says) in [
        (
            "eligd:changes:fence",
            "not-a-token",
            "does not hold a fencing token",
        ),
        (
            "eligd:changes:fence",
            "nan",
            "does not hold a fencing token",
        ),
        (
            "eligd:changes:fence",
            "1e3",
            "does not hold a fencing token",
        ),
        ("eligd:changes:versions", "nan", "does not hold a version"),
    ] {
        let _: () = redis.cmd(&["SET", key, garbage]);
        let y = person(603 + relayed as u32);
        pg.execute(&insert_main(&y));
        wait_for(&format!("the error about {key} = {garbage}"), 15, || {
            let (code, body) = crate::support::http_get(&relay.addr, "/readyz");
            code == 503 && body.contains(says) && body.contains(key)
        });
        assert_eq!(metric(&relay, "eligd_relay_rows_relayed_total"), relayed);
        let _: () = redis.cmd(&["DEL", key]);
        relayed += 1.0;
        wait_for("relayed after the fix", 20, || {
            metric(&relay, "eligd_relay_rows_relayed_total") >= relayed
        });
    }
}

/// A fence of 15 digits is a token like any other: the lock holder goes past it (Lua printed
/// it as `1e+14`, which the relay could not read, and its token overflowed).
#[test]
fn a_large_fence_is_raised_past_not_misread() {
    let pg = records_db();
    let redis = RedisServer::start();
    let _: () = redis.cmd(&["SET", "eligd:changes:fence", "100000000000000"]);
    let relay = start_relay_at(&pg, &redis.url(), &[], "relay: active");
    let x = person(611);
    pg.execute(&insert_main(&x));
    wait_for("relayed", 15, || {
        metric(&relay, "eligd_relay_rows_relayed_total") >= 1.0
    });
    assert_eq!(
        pg.query_i64("SELECT token FROM eligd_relay_fence"),
        100_000_000_000_001
    );
}
