//! The records path under random load: concurrent sessions write random statements to a
//! private PostgreSQL (inserts, updates, deletes, re-inserts, renames, rotations of IDs,
//! booklet moves, bulk statements), `eligd relay` moves them to a private Redis, and a
//! replica follows the stream. Afterwards the replica's answer for every person and every
//! booklet matches the table, and so does a second replica bootstrapped from the table. The
//! second test runs two relays and deposes the active one at random moments, a write of its
//! own held in flight (issue 23: fenced writes).

use std::time::Duration;

use serde_json::Value;

use crate::feed::{person, version};
use crate::records::{insert_main, records_db, start_relay, start_relay_at, version_in_db};
use crate::redis_server::RedisServer;
use crate::support::Xorshift;
use crate::support::{http_get, Served};
use crate::support::{metric, wait_for, wait_ready};
use testkit::TcpProxy;

const PEOPLE: u32 = 40;
const BOOKLETS: u32 = 12;
const SESSIONS: u64 = 3;
const TRANSACTIONS: usize = 80;

/// Random statements, deterministic per session.
struct Rng(Xorshift);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0.below(n as usize) as u32
    }
    fn id(&mut self) -> String {
        person(300 + self.below(PEOPLE))
    }
    fn booklet(&mut self) -> String {
        format!("'95{:04}'", self.below(BOOKLETS))
    }
    fn maybe_booklet(&mut self) -> String {
        if self.below(2) == 0 {
            "NULL".into()
        } else {
            self.booklet()
        }
    }
    fn status(&mut self) -> &'static str {
        ["active", "suspended", "deceased"][self.below(3) as usize]
    }
}

const COLUMNS: &str = "(national_id, kind, scheme, status, coverage_until, services, booklet_no)";

fn statement(rng: &mut Rng) -> String {
    let (a, b, c) = (rng.id(), rng.id(), rng.id());
    match rng.below(10) {
        0 | 1 => format!(
            "INSERT INTO members {COLUMNS} VALUES ('{a}', 'main', 'mandatory', '{}', '2030-01-01', '{{pharmacy}}', {})",
            rng.status(),
            rng.maybe_booklet()
        ),
        2 => format!(
            "UPDATE members SET status = '{}', coverage_until = coverage_until + 1 WHERE national_id = '{a}'",
            rng.status()
        ),
        3 => format!(
            "UPDATE members SET booklet_no = {} WHERE national_id = '{a}'",
            rng.maybe_booklet()
        ),
        4 => format!("DELETE FROM members WHERE national_id = '{a}'"),
        5 => format!("DELETE FROM members WHERE national_id IN ('{a}', '{b}', '{c}')"),
        6 => format!(
            "WITH d AS (DELETE FROM members WHERE national_id = '{a}' RETURNING *) \
             INSERT INTO members {COLUMNS} SELECT national_id, kind, scheme, '{}', coverage_until, services, booklet_no FROM d",
            rng.status()
        ),
        7 => format!("UPDATE members SET national_id = '{b}' WHERE national_id = '{a}'"),
        // A rotation in one statement: a → c, then b → a (in ID order; may fail, as at the source).
        8 => format!(
            "UPDATE members SET national_id = CASE national_id WHEN '{a}' THEN '{c}' ELSE '{a}' END \
             WHERE national_id IN ('{a}', '{b}')"
        ),
        _ => format!(
            "UPDATE members SET status = CASE status WHEN 'active' THEN 'suspended' ELSE 'active' END \
             WHERE national_id IN ('{a}', '{b}', '{c}')"
        ),
    }
}

/// One session: transactions of one to three statements; a failing one (a key taken, a
/// booklet held, a deadlock) rolls back, as it would at the source.
fn session(url: String, seed: u64) -> (usize, usize) {
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut rng = Rng(Xorshift(seed));
    let (mut committed, mut failed) = (0, 0);
    for _ in 0..TRANSACTIONS {
        let statements: Vec<String> = (0..1 + rng.below(3)).map(|_| statement(&mut rng)).collect();
        let body = format!("BEGIN; {}; COMMIT;", statements.join("; "));
        match client.batch_execute(&body) {
            Ok(()) => committed += 1,
            Err(_) => {
                failed += 1;
                let _ = client.batch_execute("ROLLBACK");
            }
        }
        if rng.below(4) == 0 {
            std::thread::sleep(Duration::from_millis(u64::from(rng.below(5))));
        }
    }
    (committed, failed)
}

fn booklet_holder(eligd: &Served, booklet: &str) -> Option<String> {
    let (status, body) = http_get(&eligd.addr, &format!("/v1/booklets/{booklet}/eligibility"));
    (status == 200).then(|| {
        serde_json::from_str::<Value>(&body).unwrap()["national_id"]
            .as_str()
            .unwrap()
            .to_string()
    })
}

fn assert_matches_table(pg: &testkit::PgServer, eligd: &Served, who: &str) {
    for n in 0..PEOPLE {
        let id = person(300 + n);
        let present = pg.query_i64(&format!(
            "SELECT count(*) FROM members WHERE national_id = '{id}'"
        )) == 1;
        let expected = present.then(|| version_in_db(pg, &id) as u64);
        assert_eq!(version(eligd, &id), expected, "{who}: person {id}");
    }
    for n in 0..BOOKLETS {
        let booklet = format!("95{n:04}");
        let holder = pg.query_i64(&format!(
            "SELECT coalesce(max(national_id::bigint), -1) FROM members WHERE booklet_no = '{booklet}'"
        ));
        let expected = (holder >= 0).then(|| format!("{holder:010}"));
        assert_eq!(
            booklet_holder(eligd, &booklet),
            expected,
            "{who}: booklet {booklet}"
        );
    }
}

#[test]
fn random_concurrent_statements_reach_every_replica_as_the_table_holds_them() {
    let (pg, redis) = (records_db(), RedisServer::start());
    let _relay = start_relay(&pg, &redis, &[]);
    check_random_load::<()>(&pg, &redis, None);
}

/// The same with two relays, each reaching Redis through a proxy: in each of four rounds the
/// active one's traffic is held with a write in flight, its database session is dropped, the
/// other takes over, and then the held write is let through (and refused by the fence).
#[test]
fn random_statements_with_two_relays_one_deposed_at_random_reach_every_replica() {
    let (pg, redis) = (records_db(), RedisServer::start());
    let proxies: Vec<TcpProxy> = (0..2)
        .map(|_| TcpProxy::start(&format!("127.0.0.1:{}", redis.port())))
        .collect();
    let relays = [
        start_relay_at(&pg, &proxies[0].redis_url(), &[], "relay: active"),
        start_relay_at(&pg, &proxies[1].redis_url(), &[], "endpoints listening"),
    ];
    let addrs: Vec<String> = relays.iter().map(|r| r.addr.clone()).collect();
    let url = pg.url();
    let chaos = std::thread::scope(|scope| {
        let chaos = scope.spawn(|| depose_at_random(&url, &proxies, &addrs));
        check_random_load(&pg, &redis, Some(chaos))
    });
    let deposed: f64 = relays
        .iter()
        .map(|r| metric(r, "eligd_relay_deposed_total"))
        .sum();
    assert!(chaos >= 4, "{chaos} takeovers");
    assert!(
        deposed >= 1.0,
        "no held write was refused in {chaos} takeovers"
    );
}

fn active(addr: &str) -> bool {
    http_get(addr, "/metrics")
        .1
        .lines()
        .any(|l| l.trim() == "eligd_relay_active 1")
}

/// Four takeovers, each with the deposed relay's write held in flight until its successor is
/// active; returns how many were done.
fn depose_at_random(pg_url: &str, proxies: &[TcpProxy], relays: &[String]) -> usize {
    let mut client = postgres::Client::connect(pg_url, postgres::NoTls).unwrap();
    let mut rng = Rng(Xorshift(0x9E37_79B9_7F4A_7C15));
    let mut done = 0;
    for round in 0..4 {
        std::thread::sleep(Duration::from_millis(u64::from(100 + rng.below(400))));
        let Some(i) = (0..2).find(|&i| active(&relays[i])) else {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        proxies[i].hold();
        client
            .batch_execute(&insert_main(&person(250 + round)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(u64::from(300 + rng.below(300))));
        client
            .batch_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted",
            )
            .unwrap();
        let took_over = (0..80).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            active(&relays[1 - i])
        });
        proxies[i].release();
        done += usize::from(took_over);
    }
    done
}

/// Random concurrent sessions; then every replica (one following the stream, one bootstrapped
/// from the table) matches the table. `during` runs alongside the sessions (joined after).
fn check_random_load<T>(
    pg: &testkit::PgServer,
    redis: &RedisServer,
    during: Option<std::thread::ScopedJoinHandle<'_, T>>,
) -> T
where
    T: Default,
{
    let follower = crate::feed::start(redis, &[]);
    wait_ready(&follower);
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|s| {
            let url = pg.url();
            std::thread::spawn(move || session(url, 0x2545_F491_4F6C_DD1D ^ ((s + 1) * 7919)))
        })
        .collect();
    let (mut committed, mut failed) = (0, 0);
    for s in sessions {
        let (c, f) = s.join().unwrap();
        committed += c;
        failed += f;
    }
    assert!(committed > 100, "{committed} committed, {failed} failed");
    let during = during.map_or_else(T::default, |h| h.join().unwrap());

    wait_for("the relay to drain the outbox", 60, || {
        pg.query_i64("SELECT count(*) FROM member_outbox WHERE relayed_id IS NULL") == 0
    });
    let marker = person(299);
    pg.execute(&insert_main(&marker));
    let v = version_in_db(pg, &marker) as u64;
    wait_for("the marker", 15, || version(&follower, &marker) == Some(v));
    assert_matches_table(pg, &follower, "the replica following the stream");

    // A replica bootstrapped from the table agrees too.
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("table.snap");
    crate::records::snapshot_of_table(pg, redis, &snap);
    let url = redis.url();
    let bootstrapped =
        crate::support::serve(&["--snapshot", snap.to_str().unwrap(), "--redis-url", &url]);
    wait_ready(&bootstrapped);
    assert_matches_table(pg, &bootstrapped, "the replica bootstrapped from the table");
    during
}
