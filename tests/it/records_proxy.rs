//! The records path behind a proxy that keeps the relay's connection open while Redis
//! restarts (Redis Enterprise's proxy, Envoy, twemproxy): issue 23, scenario 2. The relay
//! never sees a disconnect, so only its continuous check of the stream can notice that Redis
//! came back from an older copy.

use crate::feed::{person, start, version};
use crate::records::{insert_main, records_db, version_in_db};
use crate::redis_server::RedisServer;
use crate::support::{http_get, Served};
use crate::support::{metric, wait_for, wait_ready};
use testkit::TcpProxy;

/// `eligd relay` reaching Redis through `proxy`.
fn start_relay_through(pg: &testkit::PgServer, proxy: &TcpProxy) -> Served {
    crate::records::start_relay_at(pg, &proxy.redis_url(), &[], "relay: active")
}

fn status(eligd: &Served, national_id: &str) -> String {
    let (_, body) = http_get(
        &eligd.addr,
        &format!("/v1/members/{national_id}/eligibility"),
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["status"].as_str().unwrap_or_default().to_string()
}

/// Failed against the build before the fix: the `deceased` change was lost for good and the
/// replica answered `active`.
#[test]
fn redis_restarted_from_an_older_copy_behind_a_proxy_loses_no_committed_change() {
    let pg = records_db();
    let mut redis = RedisServer::start();
    let proxy = TcpProxy::start(&format!("127.0.0.1:{}", redis.port()));
    let relay = start_relay_through(&pg, &proxy);
    let ids: Vec<String> = (501..505).map(person).collect();
    let relay = &relay;
    let relayed = |n: f64| move || metric(relay, "eligd_relay_rows_relayed_total") >= n;
    pg.execute(&insert_main(&ids[0]));
    pg.execute(&insert_main(&ids[1]));
    wait_for("two relayed", 15, relayed(2.0));
    let older = redis.copy_data();
    pg.execute(&format!(
        "UPDATE members SET status = 'deceased' WHERE national_id = '{}'",
        ids[0]
    ));
    wait_for("the death relayed", 15, relayed(3.0));

    redis.kill9();
    redis.restore_data(&older);
    redis.restart();
    wait_for("the proxy on the restarted Redis", 15, || {
        proxy.reconnects() >= 1
    });
    // More changes straight away: the relay's connection never closed.
    pg.execute(&insert_main(&ids[2]));
    pg.execute(&insert_main(&ids[3]));
    wait_for("the later changes relayed", 15, relayed(5.0));
    assert_eq!(proxy.accepted(), 1, "the relay's connection stayed open");

    // A replica built from the stream as it is now holds every committed change.
    let eligd = start(&redis, &[]);
    wait_ready(&eligd);
    wait_for("the later changes applied", 15, || {
        version(&eligd, &ids[3]).is_some()
    });
    for id in &ids {
        assert_eq!(
            version(&eligd, id),
            Some(version_in_db(&pg, id) as u64),
            "{id}"
        );
    }
    assert_eq!(status(&eligd, &ids[0]), "deceased");
    // Written back from the outbox under the same epoch: no replica needs a snapshot.
    assert!(metric(relay, "eligd_relay_stream_losses_noticed_total") >= 1.0);
    assert_eq!(
        metric(relay, "eligd_relay_stream_entries_restored_total"),
        1.0
    );
    assert_eq!(
        metric(relay, "eligd_relay_stream_epochs_replaced_total"),
        0.0
    );
}

/// Idle, the relay notices within its probe interval (2 s), before any new change, so a
/// replica waiting at the end of the stream gets the lost change back.
#[test]
fn an_idle_relay_behind_a_proxy_notices_the_loss_and_writes_it_back() {
    let pg = records_db();
    let mut redis = RedisServer::start();
    let proxy = TcpProxy::start(&format!("127.0.0.1:{}", redis.port()));
    let relay = start_relay_through(&pg, &proxy);
    let a = person(511);
    pg.execute(&insert_main(&a));
    wait_for("the first relayed", 15, || {
        metric(&relay, "eligd_relay_rows_relayed_total") == 1.0
    });
    let older = redis.copy_data();
    pg.execute(&format!(
        "UPDATE members SET status = 'deceased' WHERE national_id = '{a}'"
    ));
    wait_for("the death relayed", 15, || {
        metric(&relay, "eligd_relay_rows_relayed_total") == 2.0
    });
    redis.kill9();
    redis.restore_data(&older);
    redis.restart();
    wait_for("the lost entry written back", 15, || {
        metric(&relay, "eligd_relay_stream_entries_restored_total") == 1.0
    });
    assert_eq!(proxy.accepted(), 1, "the relay's connection stayed open");
    let eligd = start(&redis, &[]);
    wait_ready(&eligd);
    wait_for("the death applied", 15, || status(&eligd, &a) == "deceased");
    assert_eq!(version(&eligd, &a), Some(version_in_db(&pg, &a) as u64));
}
