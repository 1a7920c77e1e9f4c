//! The data-integrity defects of issue 10 in the index and its snapshots (defects 1–6; the
//! records path's are in `integrity_records`), each reproduced against the real binary with
//! private Redis servers. Each test failed against the build before the fix
//! (run it with `ELIGD_TEST_BIN` and `ELIGD_TEST_SCHEMA` pointing at an older build and schema
//! to see it fail) and passes now.

use std::path::Path;

use serde_json::{json, Value};

use crate::feed::{delete, person, record, start, version, STREAM};
use crate::redis_server::RedisServer;
use crate::support::{
    assert_clean_failure, eligd, http_get, seed_snapshot_dir, serve, snapshot_into, stderr, stdout,
    terminate, Served,
};
use crate::support::{metric, wait_for, wait_ready};

/// XADDs an upsert of this record; returns the entry ID.
fn upsert_record(redis: &RedisServer, member: &Value) -> String {
    let id = member["national_id"].as_str().unwrap().to_string();
    let version = member["version"].as_u64().unwrap().to_string();
    redis.xadd(
        STREAM,
        &[
            ("op", "upsert"),
            ("national_id", &id),
            ("version", &version),
            ("member", &member.to_string()),
        ],
    )
}

fn with_booklet(national_id: &str, version: u64, booklet: Option<&str>) -> Value {
    let mut r = record(national_id, version);
    r["booklet_no"] = booklet.map_or(Value::Null, |b| json!(b));
    r
}

/// Who the service says holds a booklet (`None` on 404).
fn booklet_holder(eligd: &Served, booklet: &str) -> Option<String> {
    let (status, body) = http_get(&eligd.addr, &format!("/v1/booklets/{booklet}/eligibility"));
    match status {
        200 => serde_json::from_str::<Value>(&body).unwrap()["national_id"]
            .as_str()
            .map(str::to_string),
        404 => None,
        other => panic!("unexpected {other}: {body}"),
    }
}

/// Writes records as JSON Lines and builds a snapshot of them into `dir`.
fn snapshot_of(dir: &Path, name: &str, records: &[Value], extra: &[&str]) -> std::path::PathBuf {
    let jsonl = dir.join(format!("{name}.jsonl"));
    let lines: Vec<String> = records.iter().map(Value::to_string).collect();
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    snapshot_into(dir, &jsonl, extra)
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".snap"))
        .collect();
    names.sort();
    names
}

fn wait_for_snapshot_at(dir: &Path, entry: &str) {
    let suffix = format!("-{entry}.snap");
    wait_for("a compaction at the position", 30, || {
        snapshot_files(dir).iter().any(|n| n.ends_with(&suffix))
    });
}

pub(crate) fn answer(eligd: &Served, national_id: &str) -> Value {
    let (status, body) = http_get(
        &eligd.addr,
        &format!("/v1/members/{national_id}/eligibility"),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Defect 1: a valid record whose masked name is longer than a name may be stopped every
/// compaction, and `snapshot build` wrote a file `snapshot inspect` refused.
#[test]
fn a_name_at_the_length_limit_compacts_reloads_and_builds() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    seed_snapshot_dir(&dir, 500, 3);
    let dir_arg = dir.to_str().unwrap();
    let mut eligd = start(
        &redis,
        &["--snapshot-dir", dir_arg, "--compact-interval", "1"],
    );
    wait_ready(&eligd);
    let long = format!("{} b", "a".repeat(196));
    let mut member = record(&person(1), 2);
    member["display_name"] = json!(long);
    let last = upsert_record(&redis, &member);
    wait_for_snapshot_at(&dir, &last);
    assert!(terminate(&mut eligd).success());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The compaction's snapshot loads, and answers with the masked name.
    let mut restarted = serve(&["serve", "--snapshot-dir", dir_arg]);
    let masked = format!("{} b***", "a".repeat(195));
    assert_eq!(answer(&restarted, &person(1))["name"], json!(masked));
    assert!(terminate(&mut restarted).success());

    // The repair path: a snapshot built from the same record passes inspect.
    let built = tmp.path().join("long.snap");
    let jsonl = tmp.path().join("long.jsonl");
    std::fs::write(&jsonl, member.to_string()).unwrap();
    let o = crate::support::build_snapshot(&jsonl, &built, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = eligd_inspect(&built);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("members:         1"), "{}", stdout(&o));
}

fn eligd_inspect(path: &Path) -> std::process::Output {
    eligd(&["snapshot", "inspect", path.to_str().unwrap()])
}

/// Defect 2: with only a corrupt real snapshot and `--demo-fallback`, feed changes made the
/// compactor save the synthetic population as the newest snapshot and prune the real one.
#[test]
fn the_demo_fallback_never_saves_the_synthetic_population_or_prunes() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    let real = seed_snapshot_dir(&dir, 300, 5);
    let mut bytes = std::fs::read(&real).unwrap();
    let at = bytes.len() - 64;
    bytes[at] ^= 0x01;
    std::fs::write(&real, &bytes).unwrap();
    let before = snapshot_files(&dir);
    let dir_arg = dir.to_str().unwrap();
    let args = [
        "--snapshot-dir",
        dir_arg,
        "--demo-fallback",
        "--compact-interval",
        "1",
        "--snapshot-keep",
        "1",
    ];
    let mut served = start(&redis, &args);
    wait_ready(&served);
    for n in 0..5 {
        upsert_record(&redis, &record(&person(10 + n), 1));
    }
    wait_for("the changes", 10, || {
        version(&served, &person(14)) == Some(1)
    });
    // Three looks of the compactor at an index holding changes: none may write it.
    let checks = metric(&served, "eligd_compactor_checks_total");
    wait_for("three looks of the compactor", 15, || {
        metric(&served, "eligd_compactor_checks_total") >= checks + 3.0
    });
    assert!(terminate(&mut served).success());
    assert_eq!(snapshot_files(&dir), before, "the directory was written to");
    assert!(real.exists(), "the real (refused) snapshot was pruned");
    // Without the fallback, a restart refuses to serve rather than serve synthetic members.
    let o = crate::startup::serve_once(dir_arg);
    assert_clean_failure(&o, "no valid snapshot");
}

/// Defect 3: a compaction kept a booklet on its old holder (by sort order) and took it from
/// the member who claimed it with a newer change; once the old holder released it, nobody
/// held it, even after a restart.
#[test]
fn a_booklet_claimed_by_a_newer_change_survives_compaction_and_restart() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    std::fs::create_dir_all(&dir).unwrap();
    // C's national ID sorts before A's: a keeper chosen by ID order would be A.
    let (c, a) = (person(21), person(22));
    snapshot_of(
        &dir,
        "base",
        &[with_booklet(&a, 1, None), with_booklet(&c, 1, None)],
        &[],
    );
    let dir_arg = dir.to_str().unwrap();
    let args = ["--snapshot-dir", dir_arg, "--compact-interval", "1"];
    let mut eligd = start(&redis, &args);
    wait_ready(&eligd);
    upsert_record(&redis, &with_booklet(&a, 2, Some("9001")));
    // C takes the booklet with a newer version while A's record still names it.
    let taken = upsert_record(&redis, &with_booklet(&c, 3, Some("9001")));
    wait_for_snapshot_at(&dir, &taken);
    // A's release arrives late.
    upsert_record(&redis, &with_booklet(&a, 4, None));
    wait_for("A's release", 10, || version(&eligd, &a) == Some(4));
    assert_eq!(booklet_holder(&eligd, "9001"), Some(c.clone()));
    assert!(terminate(&mut eligd).success());
    let restarted = start(&redis, &args);
    wait_ready(&restarted);
    assert_eq!(booklet_holder(&restarted, "9001"), Some(c));
}

/// Defect 4: the booklet map kept only the last member to claim a booklet, so a booklet that
/// passed E → A → C → (released) was not found on A, who holds it.
#[test]
fn a_booklet_passed_on_and_back_is_found_between_compactions() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let (e, a, c) = (person(31), person(32), person(33));
    let snap = snapshot_of(
        tmp.path(),
        "base",
        &[
            with_booklet(&e, 1, Some("9002")),
            with_booklet(&a, 1, None),
            with_booklet(&c, 1, None),
        ],
        &[],
    );
    let url = redis.url();
    let eligd = serve(&["--snapshot", snap.to_str().unwrap(), "--redis-url", &url]);
    wait_ready(&eligd);
    upsert_record(&redis, &with_booklet(&e, 2, None));
    upsert_record(&redis, &with_booklet(&a, 3, Some("9002")));
    upsert_record(&redis, &with_booklet(&c, 4, Some("9002")));
    upsert_record(&redis, &with_booklet(&c, 5, None));
    wait_for("the last change", 10, || version(&eligd, &c) == Some(5));
    assert_eq!(booklet_holder(&eligd, "9002"), Some(a));
}

/// Defect 5: a resync replaced the index with a repair snapshot that carries no delete
/// markers, so a late, older upsert brought a deleted member back.
#[test]
fn delete_markers_survive_a_resync() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    std::fs::create_dir_all(&dir).unwrap();
    let (gone, kept) = (person(41), person(42));
    crate::feed::set_epoch(&redis);
    snapshot_of(&dir, "base", &[record(&gone, 1), record(&kept, 1)], &[]);
    let dir_arg = dir.to_str().unwrap();
    let eligd = start(&redis, &["--snapshot-dir", dir_arg]);
    wait_ready(&eligd);
    delete(&redis, &gone, 5);
    wait_for("the delete", 10, || version(&eligd, &gone).is_none());

    // Entries the replica has not read are trimmed away while it is stopped: a gap.
    crate::feed_faults::signal(&eligd, "-STOP");
    upsert_record(&redis, &record(&kept, 2));
    let last = upsert_record(&redis, &record(&kept, 3));
    let _: i64 = redis.cmd(&["XTRIM", STREAM, "MAXLEN", "1"]);
    crate::feed_faults::signal(&eligd, "-CONT");
    wait_for("the gap", 15, || {
        metric(&eligd, r#"eligd_feed_gaps_total{kind="trimmed"}"#) == 1.0
    });

    // The repair snapshot is built from the records as they are: without the deleted member.
    let epoch = crate::feed::EPOCH;
    let repair = ["--position", &last, "--epoch", epoch];
    snapshot_of(&dir, "repair", &[record(&kept, 3)], &repair);
    wait_for("the resync", 15, || {
        metric(&eligd, "eligd_feed_resyncs_total") == 1.0
    });
    wait_ready(&eligd);
    // A late, older upsert of the deleted member, then a marker change to wait for.
    upsert_record(&redis, &record(&gone, 3));
    upsert_record(&redis, &record(&kept, 4));
    wait_for("the marker change", 10, || {
        version(&eligd, &kept) == Some(4)
    });
    assert_eq!(version(&eligd, &gone), None, "a deleted member came back");
}

/// Defect 6: the newest snapshot was chosen, and old ones pruned, by file name: a valid file
/// named an hour ahead was always loaded first, and with `--snapshot-keep 1` every new
/// compaction snapshot was pruned at once.
#[test]
fn a_snapshot_named_ahead_of_its_header_is_refused_and_never_wins() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    let current = seed_snapshot_dir(&dir, 400, 6);
    // Another population, copied in under a name an hour in the future.
    let other = seed_snapshot_dir(&tmp.path().join("elsewhere"), 700, 7);
    let ahead = chrono_now_ms() + 3_600_000;
    let misnamed = dir.join(format!("eligd-{ahead:013}-none.snap"));
    std::fs::copy(&other, &misnamed).unwrap();

    let dir_arg = dir.to_str().unwrap();
    let args = [
        "--snapshot-dir",
        dir_arg,
        "--compact-interval",
        "1",
        "--snapshot-keep",
        "1",
    ];
    let mut eligd = start(&redis, &args);
    wait_ready(&eligd);
    assert_eq!(metric(&eligd, "eligd_index_members"), 400.0);
    let last = upsert_record(&redis, &record(&person(51), 1));
    wait_for_snapshot_at(&dir, &last);
    // The compaction that wrote it has finished (its pruning included).
    wait_for("the compaction counted", 15, || {
        crate::support::metric_if_any(&eligd, "eligd_compactions_total{outcome=\"ok\"}")
            .is_some_and(|n| n >= 1.0)
    });
    let files = snapshot_files(&dir);
    assert!(
        files.iter().any(|n| n.ends_with(&format!("-{last}.snap"))),
        "the new compaction snapshot was pruned: {files:?}"
    );
    assert!(misnamed.exists(), "a refused file is left for an operator");
    assert!(!current.exists(), "the older real snapshot is pruned");
    assert!(terminate(&mut eligd).success());
    let restarted = start(&redis, &args);
    wait_ready(&restarted);
    assert_eq!(metric(&restarted, "eligd_index_members"), 401.0);
    assert_eq!(version(&restarted, &person(51)), Some(1));
}

fn chrono_now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}
