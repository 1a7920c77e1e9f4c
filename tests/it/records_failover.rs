//! Issue 23, scenario 3: the records database fails over to an asynchronous standby that had
//! not received the last transactions. Before, the version sequence resumed below versions
//! already relayed, the next change (a `deceased`) reached the stream with a lower version
//! than a replica held, and the replica dropped it as stale and went on answering `active`.
//!
//! The standby is a real streaming replica (`pg_basebackup -R`), stopped so it misses what
//! the primary commits next, and promoted on the old primary's port, as a virtual IP moves.

use serde_json::Value;
use testkit::PgServer;

use crate::feed::{person, version};
use crate::integrity_records::{replica_of_dir, snapshot_of_table};
use crate::records::{insert_main, records_db, start_relay, start_relay_at, version_in_db};
use crate::redis_server::RedisServer;
use crate::support::{http_get, Served};
use crate::support::{metric, readyz, wait_for, wait_ready};

fn status(eligd: &Served, national_id: &str) -> String {
    let (_, body) = http_get(
        &eligd.addr,
        &format!("/v1/members/{national_id}/eligibility"),
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    v["status"].as_str().unwrap_or_default().to_string()
}

fn set_status(pg: &PgServer, national_id: &str, status: &str) {
    pg.execute(&format!(
        "UPDATE members SET status = '{status}' WHERE national_id = '{national_id}'"
    ));
}

#[test]
fn a_failover_to_a_standby_that_lacked_transactions_never_drops_a_new_change_as_stale() {
    let mut primary = records_db();
    let redis = RedisServer::start();
    let first_relay = start_relay(&primary, &redis, &[]);
    let relayed = |relay: &Served, n: f64| metric(relay, "eligd_relay_rows_relayed_total") >= n;
    let (p, q) = (person(701), person(702));
    primary.execute(&insert_main(&p));
    primary.execute(&insert_main(&q));
    wait_for("two relayed", 15, || relayed(&first_relay, 2.0));

    // A replica with a snapshot directory, following the stream.
    let tmp = tempfile::tempdir().unwrap();
    snapshot_of_table(tmp.path(), &primary.url(), &redis.url());
    let replica = replica_of_dir(tmp.path(), &redis.url());
    wait_ready(&replica);

    // The standby has both people, then stops receiving; the primary goes on without it.
    let mut standby = PgServer::standby_of(&primary);
    wait_for("the standby to catch up", 15, || {
        standby.query_i64("SELECT count(*) FROM members") == 2
    });
    standby.stop();
    // More changes than the 32 values a sequence logs ahead in the WAL, so the promoted
    // standby's sequence really resumes below them.
    for s in ["suspended", "active"].repeat(20) {
        set_status(&primary, &p, s);
        set_status(&primary, &q, s);
    }
    wait_for("the lost timeline relayed", 30, || {
        relayed(&first_relay, 82.0)
    });
    let lost_q = version_in_db(&primary, &q) as u64;
    wait_for("the replica to hold it", 15, || {
        version(&replica, &q) == Some(lost_q)
    });

    // Failover: the relay's pod and the primary die; the standby, without those 80 changes,
    // takes the primary's port, and a change commits there before a relay runs again.
    drop(first_relay);
    let port = primary.port();
    primary.kill9();
    standby.promote_at(port);
    set_status(&standby, &q, "deceased");
    assert!(
        (version_in_db(&standby, &q) as u64) < lost_q,
        "the promoted standby's sequence resumed below what was relayed"
    );
    let relay = start_relay(&standby, &redis, &[]);

    wait_for("the outbox relayed", 30, || {
        standby.query_i64(
            "SELECT count(*) FROM member_outbox WHERE relayed_id IS NULL AND rejected IS NULL",
        ) == 0
    });

    // The replica, ready throughout, answers what the new primary holds once a snapshot of it
    // is in its directory: the death included, never dropped as stale.
    snapshot_of_table(tmp.path(), &standby.url(), &redis.url());
    wait_for("the replica to answer the death", 30, || {
        status(&replica, &q) == "deceased"
    });
    assert_eq!(readyz(&replica).0, 200, "{}", readyz(&replica).1);
    let new_q = version_in_db(&standby, &q) as u64;
    assert!(
        new_q > lost_q,
        "re-versioned above every relayed version: {new_q} > {lost_q}"
    );
    assert_eq!(version(&replica, &q), Some(new_q));
    assert_eq!(metric(&relay, "eligd_relay_table_behind_stream_total"), 1.0);
    assert!(metric(&relay, "eligd_relay_rows_reversioned_total") >= 1.0);
    // A new epoch: a gap every replica shares, which kept it ready, frozen, until the snapshot.
    assert!(metric(&replica, r#"eligd_feed_gaps_total{kind="reset"}"#) >= 1.0);
    assert_eq!(status(&replica, &q), "deceased");
    // What the lost timeline did to the other person is gone with it: the new primary's.
    assert_eq!(
        version(&replica, &p),
        Some(version_in_db(&standby, &p) as u64)
    );
    assert_eq!(status(&replica, &p), "active");

    // A later change reaches it through the stream, never dropped as stale.
    set_status(&standby, &p, "suspended");
    let v = version_in_db(&standby, &p) as u64;
    wait_for("a later change applied", 15, || {
        version(&replica, &p) == Some(v)
    });
}

/// A failover that loses fewer versions than PostgreSQL logs a sequence ahead (32): the
/// promoted standby's sequence is past the lost versions it never committed, so comparing the
/// sequence noticed nothing; the table's highest committed version does.
#[test]
fn a_failover_losing_fewer_versions_than_the_sequence_logs_ahead_is_noticed() {
    let mut primary = records_db();
    let redis = RedisServer::start();
    let (p, q) = (person(721), person(722));
    let first = start_relay(&primary, &redis, &[]);
    primary.execute(&insert_main(&p));
    primary.execute(&insert_main(&q));
    wait_for("two relayed", 15, || {
        metric(&first, "eligd_relay_rows_relayed_total") >= 2.0
    });
    let tmp = tempfile::tempdir().unwrap();
    snapshot_of_table(tmp.path(), &primary.url(), &redis.url());
    let replica = replica_of_dir(tmp.path(), &redis.url());
    wait_ready(&replica);
    let mut standby = PgServer::standby_of(&primary);
    // One change the standby receives: its nextval logs the sequence 32 ahead in the WAL.
    primary.execute(&insert_main(&person(723)));
    wait_for("the standby to have it", 15, || {
        standby.query_i64("SELECT count(*) FROM members") == 3
    });
    standby.stop();
    // Lost: Q suspended, P deleted; relayed and applied.
    set_status(&primary, &q, "suspended");
    primary.execute(&format!("DELETE FROM members WHERE national_id = '{p}'"));
    wait_for("the lost changes applied", 15, || {
        http_get(&replica.addr, &format!("/v1/members/{p}/eligibility")).0 == 404
    });
    drop(first);
    let port = primary.port();
    primary.kill9();
    standby.promote_at(port);
    assert!(standby.query_i64("SELECT last_value FROM member_version_seq") > 5);
    let relay = start_relay(&standby, &redis, &[]);
    wait_for("the loss noticed", 15, || {
        metric(&relay, "eligd_relay_table_behind_stream_total") >= 1.0
    });
    snapshot_of_table(tmp.path(), &standby.url(), &redis.url());
    wait_for("the replica on what the new primary holds", 30, || {
        http_get(&replica.addr, &format!("/v1/members/{p}/eligibility")).0 == 200
    });
    assert_eq!(status(&replica, &q), "active");
    assert_eq!(readyz(&replica).0, 200);
}

/// The relay stops after raising the sequence and before the new epoch: the next session
/// still owes it (recorded with the raise) and starts it.
#[test]
fn a_relay_stopped_between_the_raise_and_the_new_epoch_still_starts_it() {
    let pg = records_db();
    let redis = RedisServer::start();
    let q = person(731);
    pg.execute(&insert_main(&q));
    {
        let r1 = start_relay(&pg, &redis, &[]);
        wait_for("relayed", 15, || {
            metric(&r1, "eligd_relay_rows_relayed_total") >= 1.0
        });
    }
    let before: String = redis.cmd(&["GET", "eligd:changes:epoch"]);
    // The stream carries a version the table never committed (lost in a failover).
    let _: () = redis.cmd(&["SET", "eligd:changes:versions", "5000"]);
    // A pause right after the raise (the epoch's bookkeeping is locked), then the relay dies.
    let mut locker = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
    let mut tx = locker.transaction().unwrap();
    tx.batch_execute("LOCK TABLE eligd_relay_state IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let mut r2 = start_relay_at(&pg, &redis.url(), &[], "operations endpoints listening");
    wait_for("the raise committed", 20, || {
        pg.query_i64("SELECT epoch_owed::int FROM eligd_relay_fence") == 1
    });
    r2.kill9();
    tx.rollback().unwrap();
    assert!(pg.query_i64("SELECT last_value FROM member_version_seq") >= 5000);

    let r3 = start_relay(&pg, &redis, &[]);
    wait_for("the new epoch", 15, || {
        redis.cmd::<String>(&["GET", "eligd:changes:epoch"]) != before
    });
    assert_eq!(metric(&r3, "eligd_relay_stream_epochs_replaced_total"), 1.0);
    wait_for("the debt cleared", 15, || {
        pg.query_i64("SELECT epoch_owed::int FROM eligd_relay_fence") == 0
    });
}

/// Re-versioning a pending delete while the application re-inserts the person in a
/// transaction still open: the insert takes the person's lock, so the relay waits for it and
/// then sees the person; the person is in every replica, as in the table.
#[test]
fn re_versioning_a_delete_waits_for_an_insert_of_that_person() {
    let pg = records_db();
    let redis = RedisServer::start();
    let a = person(741);
    // Many pending rows first, so the relay reaches A's delete while the insert is open.
    let values: Vec<String> = (0..3000)
        .map(|n| {
            format!(
                "('{}', 'main', 'mandatory', 'active', '2030-01-01', '{{outpatient}}')",
                person(10_000 + n)
            )
        })
        .collect();
    pg.execute(&format!(
        "INSERT INTO members (national_id, kind, scheme, status, coverage_until, services) VALUES {}",
        values.join(",")
    ));
    pg.execute(&insert_main(&a));
    pg.execute(&format!("DELETE FROM members WHERE national_id = '{a}'"));
    let _: () = redis.cmd(&["SET", "eligd:changes:versions", "100000"]);
    let mut app = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
    let relay = start_relay(&pg, &redis, &[]);
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&insert_main(&a)).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    tx.commit().unwrap();
    wait_for("the outbox relayed", 60, || {
        pg.query_i64(
            "SELECT count(*) FROM member_outbox WHERE relayed_id IS NULL AND rejected IS NULL",
        ) == 0
    });
    assert!(metric(&relay, "eligd_relay_rows_reversioned_total") >= 1.0);
    let replica = crate::feed::start(&redis, &[]);
    wait_ready(&replica);
    let tmp = tempfile::tempdir().unwrap();
    snapshot_of_table(tmp.path(), &pg.url(), &redis.url());
    let from_table = replica_of_dir(tmp.path(), &redis.url());
    wait_ready(&from_table);
    let path = format!("/v1/members/{a}/eligibility");
    assert_eq!(
        http_get(&replica.addr, &path).0,
        200,
        "following the stream"
    );
    assert_eq!(http_get(&from_table.addr, &path).0, 200, "from the table");
}

/// A delete pending from before a version raise is re-versioned once, from the floor's
/// reserve, and relayed: it is not re-versioned again every batch (it was, forever, and
/// never reached the stream: the attack review of issue 25, F2).
#[test]
fn a_delete_drawn_before_a_raise_is_re_versioned_once_and_relayed() {
    let (pg, redis) = (records_db(), RedisServer::start());
    let id = person(70_001);
    pg.execute(&format!(
        "INSERT INTO member_outbox (national_id, op, version) VALUES ('{id}', 'delete', 30)"
    ));
    // The stream carries versions far above the table's: a failover behind it.
    let _: () = redis.cmd(&["SET", "eligd:changes:versions", "1000000"]);
    let relay = start_relay(&pg, &redis, &[]);
    wait_for("the delete relayed", 20, || {
        pg.query_i64("SELECT count(*) FROM member_outbox WHERE relayed_id IS NULL") == 0
    });
    let raw: Vec<(String, Vec<String>)> = redis.cmd(&["XRANGE", "eligd:changes", "-", "+"]);
    let entries: Vec<Vec<String>> = raw.into_iter().map(|(_, fields)| fields).collect();
    assert!(
        entries.iter().any(|f| f.iter().any(|v| v == "delete")),
        "the delete is in the stream: {entries:?}"
    );
    assert_eq!(metric(&relay, "eligd_relay_rows_reversioned_total"), 1.0);
}
