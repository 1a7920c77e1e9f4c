//! The data-integrity defects of issue 10 on the records path (versions in commit order, the
//! table's rules, the stream epoch), reproduced against the real binary with private
//! PostgreSQL and Redis servers. Like `integrity`, each failed against the build (and schema)
//! before the fix.

use std::path::Path;
use std::time::Duration;

use crate::feed::{person, start, version};
use crate::integrity::answer;
use crate::records::{insert_main, records_db, start_relay, version_in_db};
use crate::redis_server::RedisServer;
use crate::support::{eligd, stderr, Launch, Served};
use crate::support::{metric, readyz, wait_for, wait_ready};

/// A main insured person as an INSERT's VALUES.
fn main_values(national_id: &str, status: &str) -> String {
    format!("('{national_id}', 'main', 'mandatory', '{status}', '2030-01-01', '{{pharmacy}}')")
}

const COLUMNS: &str = "(national_id, kind, scheme, status, coverage_until, services)";

/// What the replica answers for everyone the test touched matches the table.
fn assert_replica_matches_table(pg: &testkit::PgServer, eligd: &Served, ids: &[String]) {
    for id in ids {
        let in_table = pg.query_i64(&format!(
            "SELECT count(*) FROM members WHERE national_id = '{id}'"
        ));
        let expected = (in_table == 1).then(|| version_in_db(pg, id) as u64);
        assert_eq!(version(eligd, id), expected, "{id}");
    }
}

/// Defect 7: a delete's version was drawn at the end of its statement, after a re-insert
/// had drawn its own, so the stream carried `delete vN+1` before `upsert vN` and the person
/// vanished from every replica while the table held them.
#[test]
fn a_reinserted_member_always_outranks_its_own_delete() {
    let (pg, redis) = (records_db(), RedisServer::start());
    let relay = start_relay(&pg, &redis, &[]);
    let eligd = start(&redis, &[]);
    wait_ready(&eligd);
    let ids: Vec<String> = (61..69).map(person).collect();
    for id in &ids[..6] {
        pg.execute(&insert_main(id));
    }
    // 1. One statement deletes and re-inserts.
    pg.execute(&format!(
        "WITH d AS (DELETE FROM members WHERE national_id = '{0}' RETURNING *) \
         INSERT INTO members {COLUMNS} SELECT national_id, kind, scheme, 'suspended', coverage_until, services FROM d",
        ids[0]
    ));
    // 2. One UPDATE moves national IDs along: ids[1] → ids[6], and ids[2] → ids[1] (rows are
    //    taken in ID order, so ids[1] is free by the time ids[2] takes it).
    let (first, second, free) = (&ids[1], &ids[2], &ids[6]);
    pg.execute(&format!(
        "UPDATE members SET national_id = CASE national_id WHEN '{first}' THEN '{free}' ELSE '{first}' END \
         WHERE national_id IN ('{first}', '{second}')"
    ));
    // 3. A bulk DELETE racing a re-insert of one of its rows from another session.
    let url = pg.url();
    let (bulk, reinsert) = (
        format!(
            "BEGIN; DELETE FROM members WHERE national_id IN ('{}', '{}', '{}'); SELECT pg_sleep(1); COMMIT;",
            ids[3], ids[4], ids[5]
        ),
        format!("INSERT INTO members {COLUMNS} VALUES {}", main_values(&ids[4], "active")),
    );
    let deleter = std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client.batch_execute(&bulk).unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));
    pg.execute(&reinsert); // waits for the bulk delete to commit
    deleter.join().unwrap();

    let outbox_done =
        || pg.query_i64("SELECT count(*) FROM member_outbox WHERE relayed_id IS NULL") == 0;
    wait_for("the relay to drain the outbox", 15, outbox_done);
    let marker = &ids[7];
    pg.execute(&insert_main(marker));
    let v = version_in_db(&pg, marker) as u64;
    wait_for("the marker", 15, || version(&eligd, marker) == Some(v));
    assert_replica_matches_table(&pg, &eligd, &ids);
    assert!(version(&eligd, &ids[1]).is_some(), "taken over by a rename");
    assert_eq!(version(&eligd, &ids[2]), None, "renamed away");
    assert!(version(&eligd, &ids[4]).is_some(), "re-inserted");
    assert_eq!(answer(&eligd, &ids[0])["status"], "suspended");
    drop(relay);
}

/// Defect 8: the table accepted rows the record rules refuse; the relay skipped them, so
/// replicas following the stream kept the previous state while replicas bootstrapped from
/// the table answered otherwise. Now the table refuses them when they are written.
#[test]
fn the_table_refuses_what_the_record_rules_refuse() {
    let pg = records_db();
    let someone = person(71);
    pg.execute(&insert_main(&someone));
    let refused = |sql: &str| -> String {
        let err = std::panic::catch_unwind(|| pg.execute(sql)).unwrap_err();
        err.downcast_ref::<String>().cloned().unwrap_or_default()
    };
    let long_name = "ب".repeat(201);
    let message = refused(&format!(
        "UPDATE members SET status = 'deceased', display_name = '{long_name}' WHERE national_id = '{someone}'"
    ));
    assert!(message.contains("members_display_name_rule"), "{message}");
    let message = refused(&format!(
        "INSERT INTO members (national_id, kind, scheme, status, services) VALUES ('{}', 'dependent', 'mandatory', 'active', '{{}}')",
        person(72)
    ));
    assert!(
        message.contains("members_main_national_id_rule"),
        "{message}"
    );
    // Nothing reached the outbox but the first insert.
    assert_eq!(
        pg.query_i64("SELECT count(*) FROM member_outbox WHERE relayed_id IS NULL"),
        1
    );
    assert_eq!(
        pg.query_i64(&format!(
            "SELECT count(*) FROM members WHERE national_id = '{someone}' AND status = 'active'"
        )),
        1
    );
}

/// A replica loading the newest snapshot of `dir` (its `--snapshot-dir`) and following the
/// stream of `redis_url`, once listening (not necessarily ready).
pub(crate) fn replica_of_dir(dir: &Path, redis_url: &str) -> Served {
    Launch::args(&[
        "--snapshot-dir",
        dir.to_str().unwrap(),
        "--redis-url",
        redis_url,
    ])
    .listening()
}

/// Builds a snapshot of the records table into `dir` (under its canonical name); returns
/// what the build said.
pub(crate) fn snapshot_of_table(dir: &Path, pg_url: &str, redis_url: &str) -> String {
    let incoming = dir.join(".incoming.snap");
    let o = eligd(&[
        "snapshot",
        "build",
        "--from-postgres",
        pg_url,
        "--redis-url",
        redis_url,
        "--out",
        incoming.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::rename(
        &incoming,
        dir.join(crate::support::canonical_name(&incoming)),
    )
    .unwrap();
    stderr(&o)
}

/// Defect 9, first form: a snapshot taken before the stream existed recorded `0-0`; the
/// stream was then lost (Redis restarted empty) after three changes, and a replica started
/// from the snapshot was ready without them.
#[test]
fn a_stream_lost_after_a_snapshot_at_its_start_is_a_reset() {
    let pg = records_db();
    let mut redis = RedisServer::start_ephemeral();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    std::fs::create_dir_all(&dir).unwrap();
    let redis_url = redis.url();
    let build = |dir: &Path| snapshot_of_table(dir, &pg.url(), &redis_url);
    let said = build(&dir);
    assert!(said.contains("feed position 0-0"), "{said}");
    // Relayed rows are deleted at once: Redis's loss cannot be written back.
    let relay = start_relay(&pg, &redis, &["--outbox-keep-secs", "0"]);
    let ids: Vec<String> = (81..85).map(person).collect();
    for id in &ids[..3] {
        pg.execute(&insert_main(id));
    }
    wait_for("three relayed and deleted", 15, || {
        metric(&relay, "eligd_relay_outbox_pruned_rows_total") == 3.0
    });
    redis.kill9();
    redis.restart(); // empty: nothing persisted
    pg.execute(&insert_main(&ids[3]));
    wait_for("the fourth relayed", 30, || {
        metric(&relay, "eligd_relay_rows_relayed_total") == 4.0
    });

    let url = redis.url();
    let dir_arg = dir.to_str().unwrap();
    let eligd = Launch::args(&["--snapshot-dir", dir_arg, "--redis-url", &url]).listening();
    wait_for("the reset", 15, || {
        let (status, body) = readyz(&eligd);
        status == 503 && body.contains("epoch")
    });
    assert_eq!(
        metric(&eligd, r#"eligd_feed_gaps_total{kind="reset"}"#),
        1.0
    );
    assert_eq!(
        metric(&relay, "eligd_relay_stream_epochs_replaced_total"),
        1.0
    );
    // The repair: a snapshot of the table in the new epoch.
    build(&dir);
    wait_ready(&eligd);
    for id in &ids {
        assert_eq!(
            version(&eligd, id),
            Some(version_in_db(&pg, id) as u64),
            "{id}"
        );
    }
}

/// Defect 9, second form: Redis came back from an older copy of its data; a replica whose
/// position lay before the lost range found its position and carried on without the lost
/// changes. When the outbox no longer keeps the lost entries, it is a reset.
#[test]
fn a_redis_restored_from_an_older_copy_the_outbox_no_longer_covers_is_a_reset() {
    let pg = records_db();
    let mut redis = RedisServer::start();
    let relay = start_relay(&pg, &redis, &["--outbox-keep-secs", "0"]);
    let ids: Vec<String> = (91..94).map(person).collect();
    pg.execute(&insert_main(&ids[0]));
    wait_for("the first relayed", 15, || {
        metric(&relay, "eligd_relay_rows_relayed_total") == 1.0
    });
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    std::fs::create_dir_all(&dir).unwrap();
    snapshot_of_table(&dir, &pg.url(), &redis.url());
    let older = redis.copy_data();
    pg.execute(&insert_main(&ids[1]));
    pg.execute(&insert_main(&ids[2]));
    wait_for("two more relayed and deleted", 15, || {
        metric(&relay, "eligd_relay_outbox_pruned_rows_total") == 3.0
    });
    redis.kill9();
    redis.restore_data(&older);
    redis.restart();
    // The replica starts once the relay has noticed: one that read the restored stream
    // before would have been ready when the new epoch appeared, a gap every replica shares
    // (availability::a_gap_every_replica_shares_…); starting up, it is its own.
    wait_for("the new epoch", 30, || {
        metric(&relay, "eligd_relay_stream_epochs_replaced_total") == 1.0
    });

    let url = redis.url();
    let eligd =
        Launch::args(&["--snapshot-dir", dir.to_str().unwrap(), "--redis-url", &url]).listening();
    wait_for("the reset", 30, || {
        let (status, body) = readyz(&eligd);
        status == 503 && body.contains("epoch")
    });
    assert_eq!(
        version(&eligd, &ids[0]),
        Some(version_in_db(&pg, &ids[0]) as u64)
    );
}

/// The reproduction of issue 12: after a BGSAVE, five changes were relayed and their outbox
/// rows deleted, then Redis was killed and restarted from that copy. The relay now keeps
/// relayed rows (`--outbox-keep-secs`), writes the lost entries back with their own IDs, and
/// every replica, one that had applied them and one that had not, holds every committed
/// change, without a reset.
#[test]
fn a_redis_restarted_from_an_older_copy_gets_the_lost_entries_back() {
    let pg = records_db();
    let mut redis = RedisServer::start();
    let relay = start_relay(&pg, &redis, &[]);
    let ids: Vec<String> = (95..101).map(person).collect();
    pg.execute(&insert_main(&ids[0]));
    wait_for("the first relayed", 15, || {
        metric(&relay, "eligd_relay_rows_relayed_total") == 1.0
    });
    let before = start(&redis, &[]);
    wait_ready(&before);
    let older = redis.copy_data();
    for id in &ids[1..] {
        pg.execute(&insert_main(id));
    }
    wait_for("five more applied", 15, || {
        ids.iter().all(|id| version(&before, id).is_some())
    });
    redis.kill9();
    redis.restore_data(&older);
    redis.restart();

    wait_for("the lost entries written back", 30, || {
        metric(&relay, "eligd_relay_stream_entries_restored_total") == 5.0
    });
    let after = start(&redis, &[]);
    wait_ready(&after);
    for eligd in [&before, &after] {
        assert_eq!(readyz(eligd).0, 200);
        for id in &ids {
            assert_eq!(
                version(eligd, id),
                Some(version_in_db(&pg, id) as u64),
                "{id}"
            );
        }
    }
    // And the stream goes on for both.
    let next = person(101);
    pg.execute(&insert_main(&next));
    wait_for("a change after the restore", 15, || {
        version(&before, &next).is_some() && version(&after, &next).is_some()
    });
    assert_eq!(
        metric(&relay, "eligd_relay_stream_epochs_replaced_total"),
        0.0
    );
    assert_eq!(metric(&before, "eligd_feed_gaps_total"), 0.0);
    assert_eq!(metric(&before, "eligd_feed_stream_behind"), 0.0);
}
