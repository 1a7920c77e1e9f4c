//! Start-up from `--snapshot-dir`: the newest valid snapshot, the next newest when one is
//! refused, a clear error when none is valid, and the demo fallback.

use std::time::Duration;

use crate::support::{metric, wait_for};

use crate::support::{
    assert_clean_failure, eligd, http_get, seed_snapshot_dir, serve, stderr, terminate, Served,
};

/// `eligd serve --snapshot-dir DIR` run to its end (for a start-up that must fail).
pub(crate) fn serve_once(dir: &str) -> std::process::Output {
    eligd(&["serve", "--listen", "127.0.0.1:0", "--snapshot-dir", dir])
}

/// Starts `serve` with `args`, reads how many members it serves, and stops it cleanly.
fn members_served_with(args: &[&str]) -> u64 {
    let mut served = serve(args);
    let members = readyz_members(&served);
    assert!(terminate(&mut served).success());
    members
}

fn readyz_members(served: &Served) -> u64 {
    let (status, body) = http_get(&served.addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["members"].as_u64().unwrap()
}

#[test]
fn snapshot_dir_loads_the_newest_valid_file_and_skips_corrupt_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snapshots");
    let older = seed_snapshot_dir(&dir, 300, 1);
    std::thread::sleep(Duration::from_millis(5));
    let newest = seed_snapshot_dir(&dir, 400, 2);
    let dir_arg = dir.to_str().unwrap();

    assert_eq!(
        members_served_with(&["serve", "--snapshot-dir", dir_arg]),
        400,
        "the newest snapshot is loaded"
    );

    // Corrupt the newest: one flipped byte in the body. The older one is used instead.
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x10;
    std::fs::write(&newest, &bytes).unwrap();
    assert_eq!(
        members_served_with(&["serve", "--snapshot-dir", dir_arg]),
        300,
        "the next newest snapshot is loaded"
    );

    // Nothing valid: a clear error, unless the demo population is asked for.
    std::fs::write(&older, b"ELIGDSNP truncated").unwrap();
    let o = serve_once(dir_arg);
    assert_clean_failure(&o, "no valid snapshot; refused:");
    assert!(stderr(&o).contains("checksum"), "{}", stderr(&o));
    let before: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut served = serve(&[
        "serve",
        "--snapshot-dir",
        dir_arg,
        "--demo-fallback",
        "--demo-members",
        "1000",
    ]);
    assert_eq!(readyz_members(&served), 1000);
    // The synthetic population must not become the newest snapshot, nor prune the refused ones:
    // once the compactor has looked at it three times.
    let checks = metric(&served, "eligd_compactor_checks_total");
    wait_for("three looks of the compactor", 15, || {
        metric(&served, "eligd_compactor_checks_total") >= checks + 3.0
    });
    assert!(terminate(&mut served).success());
    let after: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before.len(), after.len(), "{after:?}");
}

#[test]
fn an_empty_snapshot_dir_is_an_error_without_demo_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    let o = serve_once(tmp.path().to_str().unwrap());
    assert_clean_failure(&o, "no snapshot found");
}

#[test]
fn a_demo_population_is_never_written_to_an_empty_snapshot_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    let dir_arg = dir.to_str().unwrap();
    let mut served = serve(&[
        "serve",
        "--snapshot-dir",
        dir_arg,
        "--demo-fallback",
        "--demo-members",
        "5000",
        "--compact-interval",
        "1",
    ]);
    wait_for("three looks of the compactor", 15, || {
        metric(&served, "eligd_compactor_checks_total") >= 3.0
    });
    let (_, metrics) = http_get(&served.addr, "/metrics");
    assert!(terminate(&mut served).success());
    assert!(metrics.contains("eligd_index_members 5000"), "{metrics}");
    let written = std::fs::read_dir(&dir).map_or(0, |d| d.count());
    assert_eq!(
        written, 0,
        "the synthetic population was saved as a snapshot"
    );
    // Without the fallback there is still nothing real to serve.
    let o = serve_once(dir_arg);
    assert_clean_failure(&o, "no snapshot found");
}
