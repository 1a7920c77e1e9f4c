//! A feed position means something only in the stream epoch it was read in (docs/decisions/
//! 0004-stream-epoch.md). Issue 23: `snapshot build --from-jsonl --position P --redis-url`
//! recorded the epoch current at *build* time with a P of the epoch before it, so after the
//! relay started a new epoch a replica took the new stream over from a position of the old
//! one, ready and silently without the changes lost in between. Reproduced against the real
//! binary with a private redis-server; the test writes the stream and the epoch key the way
//! the relay does (`relay::epoch::replace` is a plain `SET` of a fresh epoch).

use std::path::Path;

use crate::feed::{person, record, upsert, version};
use crate::redis_server::RedisServer;
use crate::support::{eligd, stderr, stdout, Launch, Served};
use crate::support::{readyz, wait_for, wait_ready};

const EPOCH_KEY: &str = "eligd:changes:epoch";
const OLD_EPOCH: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const NEW_EPOCH: &str = "f9e8d7c6b5a49382716050f4e3d2c1b0";

/// Writes `records` (national ID, version) as JSON Lines: an export of the records.
fn export(dir: &Path, name: &str, records: &[(&str, u64)]) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.jsonl"));
    let lines: Vec<String> = records
        .iter()
        .map(|(id, v)| record(id, *v).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

/// `snapshot build --from-jsonl` of `jsonl` into the directory `out` with `extra` flags.
fn build(jsonl: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "snapshot",
        "build",
        "--from-jsonl",
        jsonl.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    eligd(&args)
}

/// A replica of `redis` from the snapshots in `dir`, once listening (ready or refusing: the
/// callers wait for what they expect).
fn replica(dir: &Path, redis: &RedisServer) -> Served {
    let url = redis.url();
    Launch::args(&["--snapshot-dir", dir.to_str().unwrap(), "--redis-url", &url]).listening()
}

#[test]
fn a_snapshot_at_a_position_of_an_older_epoch_is_refused_and_the_right_epoch_works() {
    let mut redis = RedisServer::start();
    let (a, b, c, d, e) = (
        person(30_001),
        person(30_002),
        person(30_003),
        person(30_004),
        person(30_005),
    );
    // The stream in its first epoch; the operator notes its newest entry before an export.
    let _: () = redis.cmd(&["SET", EPOCH_KEY, OLD_EPOCH]);
    upsert(&redis, &a, 1);
    let noted = upsert(&redis, &b, 1);
    let older = redis.copy_data();
    // Committed during the export, relayed after the position was noted…
    upsert(&redis, &c, 1);
    // …and lost: Redis restarted from an older copy, and the relay, which no longer kept the
    // entry, started a new epoch and went on writing.
    redis.kill9();
    redis.restore_data(&older);
    redis.restart();
    let _: () = redis.cmd(&["SET", EPOCH_KEY, NEW_EPOCH]);
    upsert(&redis, &d, 1);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    std::fs::create_dir_all(&dir).unwrap();
    let url = redis.url();
    // The export began at the noted position: it holds a and b, not c.
    let jsonl = export(tmp.path(), "export", &[(&a, 1), (&b, 1)]);

    // The old procedure: the position alone, the epoch read at build time (the new one).
    let o = build(&jsonl, &dir, &["--position", &noted, "--redis-url", &url]);
    assert!(
        !o.status.success(),
        "a position without its epoch was taken with the stream's current one: {}",
        stderr(&o)
    );
    let said = stderr(&o);
    assert!(said.contains("needs --epoch"), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    // Without Redis too: a position never goes without its epoch.
    let o = build(&jsonl, &dir, &["--position", &noted]);
    assert!(stderr(&o).contains("needs --epoch"), "{}", stderr(&o));
    // With its own epoch, but the stream has moved on: refused at build time.
    let o = build(
        &jsonl,
        &dir,
        &[
            "--position",
            &noted,
            "--epoch",
            OLD_EPOCH,
            "--redis-url",
            &url,
        ],
    );
    let said = stderr(&o);
    assert!(!o.status.success(), "{said}");
    assert!(
        said.contains(&format!("the stream's epoch is now {NEW_EPOCH}")),
        "{said}"
    );
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());

    // Built where Redis cannot be asked: the replica refuses it, stays unready, and answers
    // from what it loaded, taking nothing from a stream its position does not belong to.
    let o = build(&jsonl, &dir, &["--position", &noted, "--epoch", OLD_EPOCH]);
    assert!(o.status.success(), "{}", stderr(&o));
    let served = replica(&dir, &redis);
    wait_for("the refusal", 15, || {
        let (status, body) = readyz(&served);
        status == 503 && body.contains(NEW_EPOCH) && body.contains(OLD_EPOCH)
    });
    assert!(
        served
            .log()
            .contains("belongs to another stream epoch than the stream's"),
        "{}",
        served.log()
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        readyz(&served).0,
        503,
        "never ready on another epoch's position"
    );
    assert_eq!(version(&served, &a), Some(1));
    assert_eq!(
        version(&served, &d),
        None,
        "nothing from the new epoch's stream"
    );

    // The documented procedure: note the position with its epoch, export, build with both.
    let o = eligd(&["snapshot", "position", "--redis-url", &url]);
    assert!(o.status.success(), "{}", stderr(&o));
    let flags = stdout(&o);
    let args: Vec<&str> = flags.split_whitespace().collect();
    assert_eq!(args.len(), 4, "{flags}");
    assert_eq!(
        (args[0], args[2], args[3]),
        ("--position", "--epoch", NEW_EPOCH)
    );
    let jsonl = export(tmp.path(), "again", &[(&a, 1), (&b, 1), (&c, 1), (&d, 1)]);
    let mut extra = args.clone();
    extra.extend(["--redis-url", &url]);
    let o = build(&jsonl, &dir, &extra);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(NEW_EPOCH), "{}", stderr(&o));

    // The replica resyncs from it and follows the new epoch.
    wait_ready(&served);
    for id in [&a, &b, &c, &d] {
        assert_eq!(version(&served, id), Some(1), "{id}");
    }
    upsert(&redis, &e, 1);
    wait_for("a change in the new epoch", 10, || {
        version(&served, &e) == Some(1)
    });
    // A fresh replica started from it is ready at once.
    let fresh = replica(&dir, &redis);
    wait_ready(&fresh);
    assert_eq!(version(&fresh, &c), Some(1));
    assert_eq!(version(&fresh, &e), Some(1));
}

#[test]
fn the_epoch_flags_are_checked_before_anything_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let jsonl = export(tmp.path(), "x", &[(&person(30_010), 1)]);
    let out = tmp.path().join("x.snap");
    let o = build(&jsonl, &out, &["--epoch", OLD_EPOCH]);
    crate::support::assert_clean_failure(&o, "give --position too");
    let o = build(&jsonl, &out, &["--position", "5-0", "--epoch", "12"]);
    crate::support::assert_clean_failure(&o, "not a stream epoch");
    let o = eligd(&["snapshot", "position"]);
    crate::support::assert_clean_failure(&o, "--redis-url");
    assert!(!out.exists());
}
