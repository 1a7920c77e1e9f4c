//! TLS to PostgreSQL (`sslmode=verify-full&sslrootcert=`) against a private PostgreSQL with
//! `ssl = on` and certificates generated here: the relay and snapshot builds connect over
//! TLS; a wrong CA or a name the certificate lacks is a clear error; the modes that would
//! skip verification or fall back to plain text are refused at start.

use crate::feed::{person, start, version};
use crate::records::{insert_main, records_db};
use crate::redis_server::RedisServer;
use crate::redis_tls::certificates;
use crate::support::{eligd, serve_until, stderr};
use crate::support::{metric, readyz, wait_for, wait_ready};

#[test]
fn the_relay_and_snapshot_builds_verify_postgres_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path(), "pg");
    let (other_ca, _, _) = certificates(dir.path(), "other");
    let pg = records_db();
    pg.enable_tls(
        &std::fs::read_to_string(&cert).unwrap(),
        &std::fs::read_to_string(&key).unwrap(),
    );
    let url = |host: &str, ca: &std::path::Path| {
        format!(
            "postgres://postgres@{host}:{}/eligd?sslmode=verify-full&sslrootcert={}",
            pg.port(),
            ca.display()
        )
    };
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let relay_with = |pg_url: &str, line: &str| {
        serve_until(
            &[
                "relay",
                "--postgres-url",
                pg_url,
                "--redis-url",
                &redis_url,
                "--poll-interval-ms",
                "200",
            ],
            line,
        )
    };

    let good = url("localhost", &ca);
    let relay = relay_with(&good, "relay: active");
    let replica = start(&redis, &[]);
    wait_ready(&replica);
    let a = person(701);
    pg.execute(&insert_main(&a));
    wait_for("a change relayed from PostgreSQL over TLS", 10, || {
        version(&replica, &a).is_some()
    });
    let encrypted = pg.query_i64("SELECT count(*) FROM pg_stat_ssl WHERE ssl");
    assert!(encrypted >= 1, "the relay's connection is TLS");
    drop(relay);

    let out = dir.path().join("s.snap");
    let o = eligd(&[
        "snapshot",
        "build",
        "--from-postgres",
        &good,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // A CA that did not sign the server's certificate, and a name it does not carry.
    for bad in [url("localhost", &other_ca), url("127.0.0.1", &ca)] {
        let o = eligd(&[
            "snapshot",
            "build",
            "--from-postgres",
            &bad,
            "--out",
            out.to_str().unwrap(),
        ]);
        crate::support::assert_clean_failure(&o, "TLS");
        let relay = relay_with(&bad, "relay: session ended");
        assert!(relay.log().contains("TLS"), "{}", relay.log());
        assert_eq!(readyz(&relay).0, 503);
        assert!(metric(&relay, r#"eligd_relay_errors_total{component="postgres"}"#) >= 1.0);
    }
    // Modes that would not verify, or would fall back to plain text: refused at start.
    for mode in ["require", "prefer", "verify-ca"] {
        let o = eligd(&[
            "relay",
            "--postgres-url",
            &format!(
                "postgres://postgres:secret@localhost:{}/eligd?sslmode={mode}",
                pg.port()
            ),
            "--redis-url",
            &redis_url,
        ]);
        crate::support::assert_clean_failure(&o, &format!("sslmode={mode} is not supported"));
        assert!(!stderr(&o).contains("secret"));
    }
}
