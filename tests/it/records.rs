//! The whole path against a private PostgreSQL and Redis and the real binaries: a row
//! changes in the records database, the relay moves the outbox to the stream, and a replica
//! answers with it. Also `snapshot build --from-postgres` and Debezium's format for the same
//! table. Faults (relay killed, PostgreSQL or Redis restarted) are in `records_faults`.

use serde_json::Value;
use testkit::PgServer;

use crate::feed::{person, version};
use crate::redis_server::RedisServer;
use crate::support::{eligd, http_get, serve, serve_until, Served};
use crate::support::{metric, readyz, wait_for, wait_ready};

pub(crate) const SCHEMA: &str = include_str!("../../deploy/postgres/schema.sql");

/// A records database with the reference schema (or the one in `ELIGD_TEST_SCHEMA`, to show
/// that a regression test fails against an older schema).
pub(crate) fn records_db() -> PgServer {
    let pg = PgServer::start();
    match std::env::var_os("ELIGD_TEST_SCHEMA") {
        Some(path) => pg.execute(&std::fs::read_to_string(path).unwrap()),
        None => pg.execute(SCHEMA),
    }
    pg
}

/// `eligd relay` between them, polling often so tests need not wait for a notification.
pub(crate) fn start_relay(pg: &PgServer, redis: &RedisServer, extra: &[&str]) -> Served {
    start_relay_until(pg, redis, extra, "relay: active")
}

/// [`start_relay`], returning once its log shows `line`.
pub(crate) fn start_relay_until(
    pg: &PgServer,
    redis: &RedisServer,
    extra: &[&str],
    line: &str,
) -> Served {
    start_relay_at(pg, &redis.url(), extra, line)
}

/// `eligd relay` from `pg` to the Redis at `redis_url` (a proxy in front of one, say),
/// returning once its log shows `line`.
pub(crate) fn start_relay_at(pg: &PgServer, redis_url: &str, extra: &[&str], line: &str) -> Served {
    let pg_url = pg.url();
    let mut args = vec![
        "relay",
        "--postgres-url",
        &pg_url,
        "--redis-url",
        redis_url,
        "--poll-interval-ms",
        "200",
    ];
    args.extend_from_slice(extra);
    serve_until(&args, line)
}

/// `snapshot build --from-postgres` of the table, with the stream's position, into `out`
/// (a file); returns what the build said.
pub(crate) fn snapshot_of_table(
    pg: &PgServer,
    redis: &RedisServer,
    out: &std::path::Path,
) -> String {
    let o = eligd(&[
        "snapshot",
        "build",
        "--from-postgres",
        &pg.url(),
        "--redis-url",
        &redis.url(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", crate::support::stderr(&o));
    crate::support::stderr(&o)
}

/// An INSERT of a main insured (or with `extra` columns overriding).
pub(crate) fn insert_main(national_id: &str) -> String {
    format!(
        "INSERT INTO members (national_id, kind, scheme, status, coverage_until, services) \
         VALUES ('{national_id}', 'main', 'mandatory', 'active', '2030-01-01', '{{outpatient,pharmacy}}')"
    )
}

pub(crate) fn version_in_db(pg: &PgServer, national_id: &str) -> i64 {
    pg.query_i64(&format!(
        "SELECT version FROM members WHERE national_id = '{national_id}'"
    ))
}

fn answer(eligd: &Served, national_id: &str) -> Value {
    let (status, body) = http_get(
        &eligd.addr,
        &format!("/v1/members/{national_id}/eligibility"),
    );
    let mut v: Value = serde_json::from_str(&body).unwrap();
    v["http_status"] = status.into();
    // Tracking codes differ per answer.
    if let Some(o) = v.as_object_mut() {
        o.remove("tracking_code");
    }
    if let Some(e) = v.get_mut("error").and_then(Value::as_object_mut) {
        e.remove("tracking_code");
    }
    v
}

#[test]
fn a_committed_change_reaches_the_answer_and_bad_rows_never_stall_the_relay() {
    let (pg, redis) = (records_db(), RedisServer::start());
    let relay = start_relay(&pg, &redis, &[]);
    let eligd = crate::feed::start(&redis, &[]);
    wait_ready(&eligd);
    let (main, child) = (person(101), person(102));
    pg.execute(&insert_main(&main));
    pg.execute(&format!(
        "INSERT INTO members (national_id, kind, main_national_id, relation, scheme, status, services) \
         VALUES ('{child}', 'dependent', '{main}', 'child', 'mandatory', 'active', '{{pharmacy}}')"
    ));
    let v = version_in_db(&pg, &child) as u64;
    wait_for("the dependent", 10, || version(&eligd, &child) == Some(v));
    assert_eq!(answer(&eligd, &child)["status"], "active");

    // The main insured is suspended: the dependent's answer follows.
    pg.execute(&format!(
        "UPDATE members SET status = 'suspended' WHERE national_id = '{main}'"
    ));
    let v = version_in_db(&pg, &main) as u64;
    wait_for("the update", 10, || version(&eligd, &main) == Some(v));
    assert_eq!(answer(&eligd, &child)["status"], "main_insured_inactive");

    // The table refuses what the record rules refuse, naming the rule.
    for (sql, rule) in [
        (insert_main("0012345678"), "members_national_id_rule"),
        (
            format!(
                "INSERT INTO members (national_id, kind, scheme, status, services) \
                 VALUES ('{}', 'dependent', 'mandatory', 'active', '{{}}')",
                person(103)
            ),
            "members_main_national_id_rule",
        ),
    ] {
        let refused = std::panic::catch_unwind(|| pg.execute(&sql)).unwrap_err();
        let message = refused
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(message.contains(rule), "{message}");
    }
    // Outbox rows that break the rules anyway (written by hand, or by an older schema) are
    // reported and skipped; they never stall the relay.
    pg.execute(
        "INSERT INTO member_outbox (national_id, op, version) VALUES ('0012345678', 'delete', 1)",
    );
    pg.execute(&format!(
        "INSERT INTO member_outbox (national_id, op, version, member) VALUES ('{0}', 'upsert', 1, \
         '{{\"national_id\": \"{0}\", \"version\": 1, \"kind\": \"dependent\", \"scheme\": \"mandatory\", \
         \"status\": \"active\", \"services\": []}}')",
        person(103)
    ));
    pg.execute(&format!(
        "DELETE FROM members WHERE national_id = '{child}'"
    ));
    wait_for("the delete after the bad rows", 10, || {
        version(&eligd, &child).is_none()
    });
    let rejected = pg.query_i64("SELECT count(*) FROM member_outbox WHERE rejected IS NOT NULL");
    assert_eq!(rejected, 2);
    let reasons = pg.query_i64(
        "SELECT count(*) FROM member_outbox WHERE rejected LIKE 'national_id:%' OR rejected LIKE 'main_national_id:%'",
    );
    assert_eq!(reasons, 2, "each rejection names its field");
    assert_eq!(
        pg.query_i64(
            "SELECT count(*) FROM member_outbox WHERE rejected IS NULL AND relayed_id IS NULL"
        ),
        0,
        "nothing left to relay"
    );
    assert_eq!(
        pg.query_i64("SELECT count(*) FROM member_outbox WHERE relayed_id IS NOT NULL"),
        4,
        "relayed rows are kept for --outbox-keep-secs"
    );
    assert_eq!(metric(&relay, "eligd_relay_rows_rejected_total"), 2.0);
    assert_eq!(metric(&relay, "eligd_relay_rows_relayed_total"), 4.0);
    assert_eq!(readyz(&relay).0, 200);
    // TRUNCATE would bypass the outbox, so the schema refuses it.
    let err = std::panic::catch_unwind(|| pg.execute("TRUNCATE members")).unwrap_err();
    let message = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("bypass the change feed"), "{message}");
}

#[test]
fn a_snapshot_from_postgres_records_a_position_that_misses_nothing() {
    let (pg, redis) = (records_db(), RedisServer::start());
    let relay = start_relay(&pg, &redis, &[]);
    let early: Vec<String> = (111..116).map(person).collect();
    for id in &early {
        pg.execute(&insert_main(id));
    }
    wait_for("the early rows relayed", 10, || {
        metric(&relay, "eligd_relay_rows_relayed_total") == 5.0
    });
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("records.snap");
    let said = snapshot_of_table(&pg, &redis, &snap);
    assert!(
        said.contains("5 members") && said.contains("feed position"),
        "{said}"
    );

    // Changes after the snapshot come from the stream.
    let late = person(120);
    pg.execute(&insert_main(&late));
    pg.execute(&format!(
        "DELETE FROM members WHERE national_id = '{}'",
        early[0]
    ));
    let url = redis.url();
    let snap_arg = snap.to_str().unwrap().to_string();
    let served = serve(&["--snapshot", &snap_arg, "--redis-url", &url]);
    wait_ready(&served);
    wait_for("the late changes", 10, || {
        version(&served, &late).is_some() && version(&served, &early[0]).is_none()
    });
    for id in &early[1..] {
        assert_eq!(version(&served, id), Some(version_in_db(&pg, id) as u64));
    }
    // Only what came after the position was read from the stream.
    assert_eq!(metric(&served, "eligd_feed_events_applied_total"), 2.0);
    assert_eq!(metric(&served, "eligd_index_members"), 5.0);
}

#[test]
fn bad_records_settings_are_clear_errors() {
    let o = eligd(&[
        "relay",
        "--postgres-url",
        "nonsense://",
        "--redis-url",
        "redis://127.0.0.1:1",
    ]);
    crate::support::assert_clean_failure(&o, "--postgres-url: not a PostgreSQL URL");
    let o = eligd(&[
        "relay",
        "--postgres-url",
        "postgres://u:secret@127.0.0.1:1/db",
        "--redis-url",
        "http://x",
    ]);
    crate::support::assert_clean_failure(&o, "--redis-url: the URL's scheme is not supported");
    assert!(!crate::support::stderr(&o).contains("secret"));
    let o = eligd(&["snapshot", "build", "--out", "x.snap"]);
    crate::support::assert_clean_failure(&o, "--from-jsonl");
    // An unreachable database is one clear line, without the password.
    let o = eligd(&[
        "snapshot",
        "build",
        "--from-postgres",
        "postgres://u:secret@127.0.0.1:1/db",
        "--out",
        "x.snap",
    ]);
    crate::support::assert_clean_failure(&o, "reading the members table");
    assert!(!crate::support::stderr(&o).contains("secret"));
}

/// `snapshot build --if-missing` seeds an empty snapshot directory (a replica's first start)
/// and leaves one that holds a snapshot alone (every later start).
#[test]
fn snapshot_build_if_missing_seeds_an_empty_directory_once() {
    let (pg, redis) = (records_db(), RedisServer::start());
    pg.execute(&insert_main(&person(60_000)));
    let dir = tempfile::tempdir().unwrap();
    let build = || {
        eligd(&[
            "snapshot",
            "build",
            "--if-missing",
            "--from-postgres",
            &pg.url(),
            "--redis-url",
            &redis.url(),
            "--out",
            dir.path().to_str().unwrap(),
        ])
    };
    let first = build();
    assert!(first.status.success(), "{}", crate::support::stderr(&first));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let second = build();
    assert!(
        second.status.success(),
        "{}",
        crate::support::stderr(&second)
    );
    assert!(
        crate::support::stderr(&second).contains("nothing built (--if-missing)"),
        "{}",
        crate::support::stderr(&second)
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
