//! Redis through Sentinel against real servers: a primary, a replica and three
//! `redis-server --sentinel`. The primary is killed while the relay writes 500 changes a
//! second and replicas answer lookups; every change committed in PostgreSQL must reach
//! every replica, and no replica may leave the service.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::feed::{person, version};
use crate::records::{insert_main, records_db, start_relay};
use crate::redis_server::RedisServer;
use crate::support::{metric, readyz, wait_for, wait_ready};
use crate::support::{serve, Served};
use testkit::Sentinel;

const MASTER: &str = "eligd";

fn in_sync(replica: &RedisServer) -> bool {
    let info: String = replica.cmd(&["INFO", "replication"]);
    info.contains("master_link_status:up")
}

#[test]
fn a_failover_under_500_changes_a_second_loses_no_committed_change() {
    let pg = records_db();
    let mut primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    wait_for("the replica to sync", 15, || in_sync(&replica));
    let sentinels: Vec<Sentinel> = (0..3)
        .map(|_| Sentinel::start(MASTER, &primary, 2))
        .collect();
    let list = sentinels
        .iter()
        .map(Sentinel::address)
        .collect::<Vec<_>>()
        .join(",");
    let through_sentinel = ["--redis-sentinels", list.as_str(), "--redis-master", MASTER];
    let mut relay_args = through_sentinel.to_vec();
    relay_args.extend(["--wait-replicas", "1", "--wait-timeout-ms", "500"]);
    let relay = start_relay(&pg, &primary, &relay_args);
    let replicas: Vec<Served> = (0..2)
        .map(|_| {
            let mut args = vec!["--demo-members", "2000"];
            args.extend(through_sentinel);
            serve(&args)
        })
        .collect();
    for r in &replicas {
        wait_ready(r);
    }

    // 500 commits a second, each a new member, from one connection.
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, committed, url) = (Arc::clone(&stop), Arc::clone(&committed), pg.url());
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let started = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = started + Duration::from_micros(2000 * n);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                client
                    .batch_execute(&insert_main(&person(10_000 + n as u32)))
                    .unwrap();
                n += 1;
                committed.store(n, Ordering::Release);
            }
        })
    };
    // Lookups run throughout, and every replica stays ready.
    let lookups = {
        let (stop, addrs) = (
            Arc::clone(&stop),
            replicas.iter().map(|r| r.addr.clone()).collect::<Vec<_>>(),
        );
        std::thread::spawn(move || {
            let (mut answered, mut failed) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                for addr in &addrs {
                    let (status, _) = crate::support::http_get(addr, "/readyz");
                    let (lookup, _) = crate::support::http_get(
                        addr,
                        &format!("/v1/members/{}/eligibility", person(10_000)),
                    );
                    if status == 200 && (lookup == 200 || lookup == 404) {
                        answered += 1;
                    } else {
                        failed += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (answered, failed)
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let killed_at = Instant::now();
    primary.kill9();
    wait_for("the sentinels to promote the replica", 30, || {
        sentinels
            .iter()
            .all(|s| s.master_port(MASTER) == Some(replica.port()))
    });
    let promoted = killed_at.elapsed();
    // The old primary comes back, and the sentinels make it a replica of the new one.
    primary.restart();
    wait_for("the relay writing again", 30, || readyz(&relay).0 == 200);
    let window = killed_at.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let (answered, failed) = lookups.join().unwrap();
    let total = committed.load(Ordering::Acquire);
    eprintln!(
        "failover: promoted after {promoted:?}, relay writing again after {window:?}; {total} committed; lookups {answered} answered, {failed} failed"
    );
    assert!(total > 2500, "{total} commits");
    assert_eq!(failed, 0, "every lookup answered, every replica ready");
    for r in &replicas {
        wait_for("every committed change on every replica", 60, || {
            version(r, &person(10_000 + total as u32 - 1)).is_some()
        });
        let missing: Vec<u64> = (0..total)
            .filter(|n| version(r, &person(10_000 + *n as u32)).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "{} committed changes missing: {missing:?}",
            missing.len()
        );
        assert_eq!(metric(r, "eligd_feed_gaps_total"), 0.0);
        assert_eq!(readyz(r).0, 200);
    }
    assert_eq!(
        metric(&relay, "eligd_relay_stream_epochs_replaced_total"),
        0.0
    );
}

/// `--wait-replicas`: relayed rows are deleted only once a `WAIT` confirmed that many Redis
/// replicas hold them; a shortfall keeps them, counted.
#[test]
fn outbox_rows_are_deleted_only_after_replicas_confirm_them() {
    let pg = records_db();
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    wait_for("the replica to sync", 15, || in_sync(&replica));
    let kept = || pg.query_i64("SELECT count(*) FROM member_outbox WHERE relayed_id IS NOT NULL");
    let fast = ["--outbox-keep-secs", "0", "--wait-timeout-ms", "100"];

    let mut wanting_two = start_relay(
        &pg,
        &primary,
        &[&fast[..], &["--wait-replicas", "2"]].concat(),
    );
    for n in 0..3 {
        pg.execute(&insert_main(&person(30_000 + n)));
    }
    wait_for("three relayed", 10, || {
        metric(&wanting_two, "eligd_relay_rows_relayed_total") == 3.0
    });
    wait_for("shortfalls counted", 10, || {
        metric(&wanting_two, "eligd_relay_wait_shortfalls_total") >= 2.0
    });
    assert_eq!(kept(), 3, "one replica is not two: nothing deleted");
    assert_eq!(
        metric(&wanting_two, "eligd_relay_outbox_pruned_rows_total"),
        0.0
    );
    wanting_two.kill9();

    let one = start_relay(
        &pg,
        &primary,
        &[&fast[..], &["--wait-replicas", "1"]].concat(),
    );
    pg.execute(&insert_main(&person(30_003)));
    wait_for("confirmed and deleted", 15, || kept() == 0);
    assert!(metric(&one, "eligd_relay_wait_duration_seconds_count") >= 1.0);
    assert_eq!(metric(&one, "eligd_relay_wait_shortfalls_total"), 0.0);
}
