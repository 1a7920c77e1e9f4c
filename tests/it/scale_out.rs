//! Three replicas on one stream, fed from the records database through the relay: every
//! committed change reaches all three, and a replica killed mid-stream and restarted from
//! its own newest snapshot converges to the same `data_version` for every changed member.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::feed::{person, version};
use crate::records::{insert_main, records_db, snapshot_of_table, start_relay, version_in_db};
use crate::redis_server::RedisServer;
use crate::support::{metric, metric_if_any, wait_for, wait_ready};
use crate::support::{serve, Served};

fn follower(redis: &RedisServer, dir: &std::path::Path) -> Served {
    let url = redis.url();
    serve(&[
        "--snapshot-dir",
        dir.to_str().unwrap(),
        "--compact-interval",
        "1",
        "--redis-url",
        &url,
    ])
}

#[test]
fn three_replicas_converge_and_a_restarted_one_catches_up_exactly() {
    let pg = records_db();
    let redis = RedisServer::start();
    let _relay = start_relay(&pg, &redis, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (0..3).map(|i| tmp.path().join(format!("r{i}"))).collect();
    for dir in &dirs {
        std::fs::create_dir_all(dir).unwrap();
        snapshot_of_table(&pg, &redis, dir);
    }
    let mut replicas: Vec<Served> = dirs.iter().map(|d| follower(&redis, d)).collect();
    for r in &replicas {
        wait_ready(r);
    }

    // 200 people, inserted then updated, from one connection, while replica 2 is killed
    // and restarted from its own newest snapshot (written by compaction meanwhile).
    let ids: Vec<String> = (0..200).map(|n| person(20_000 + n)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (ids, url, stop) = (ids.clone(), pg.url(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            for id in &ids {
                c.batch_execute(&insert_main(id)).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) || round < 2 {
                for id in &ids {
                    c.batch_execute(&format!(
                        "UPDATE members SET coverage_until = coverage_until + 1 WHERE national_id = '{id}'"
                    ))
                    .unwrap();
                }
                round += 1;
            }
        })
    };
    wait_for("a compaction on replica 2", 20, || {
        metric_if_any(&replicas[2], r#"eligd_compactions_total{outcome="ok"}"#)
            .is_some_and(|n| n >= 1.0)
    });
    replicas[2].kill9();
    std::thread::sleep(Duration::from_millis(500));
    replicas[2] = follower(&redis, &dirs[2]);
    wait_ready(&replicas[2]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    // Everything committed reaches all three, as the table holds it.
    let last = ids.last().unwrap();
    let want_last = version_in_db(&pg, last) as u64;
    for r in &replicas {
        wait_for("the last change on every replica", 20, || {
            version(r, last) == Some(want_last)
        });
    }
    for id in &ids {
        let want = version_in_db(&pg, id) as u64;
        for (i, r) in replicas.iter().enumerate() {
            assert_eq!(version(r, id), Some(want), "replica {i}, {id}");
        }
    }
    assert!(
        metric(&replicas[2], "eligd_feed_events_applied_total") > 0.0,
        "the restarted replica replayed from its snapshot's position"
    );

    // One more change: visible on all three promptly.
    let fresh = person(20_999);
    let committed = Instant::now();
    pg.execute(&insert_main(&fresh));
    for r in &replicas {
        wait_for("a new change on every replica", 5, || {
            version(r, &fresh).is_some()
        });
    }
    eprintln!("commit → visible on all three: {:?}", committed.elapsed());
}
