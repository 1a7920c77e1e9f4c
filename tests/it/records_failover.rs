//! Issue 23, scenario 3: the records database fails over to an asynchronous standby that had
//! not received the last transactions. Before, the version sequence resumed below versions
//! already relayed, the next change (a `deceased`) reached the stream with a lower version
//! than a replica held, and the replica dropped it as stale and went on answering `active`.
//!
//! The standby is a real streaming replica (`pg_basebackup -R`), stopped so it misses what
//! the primary commits next, and promoted on the old primary's port, as a virtual IP moves.

use serde_json::Value;
use testkit::PgServer;

use crate::cli::{http_get, Served};
use crate::feed::{metric, person, readyz, version, wait_for, wait_ready};
use crate::integrity_records::{replica_of_dir, snapshot_of_table};
use crate::records::{insert_main, records_db, start_relay, version_in_db};
use crate::redis_server::RedisServer;

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
