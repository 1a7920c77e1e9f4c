//! TLS to Redis (`rediss://`, `--redis-ca`) against `redis-server --tls-port` with
//! certificates generated here: the feed, the relay and snapshot builds follow over TLS; a
//! wrong CA or a name the certificate does not carry is a clear error, and nothing ever falls
//! back to plain text.

use std::path::{Path, PathBuf};

use crate::feed::{person, upsert, version};
use crate::redis_server::RedisServer;
use crate::support::{eligd, serve_until, Launch, Served};
use crate::support::{metric, readyz, wait_for, wait_ready};

/// A CA, and a server certificate for `localhost` signed by it; PEM files in `dir`.
/// Returns (ca.pem, server.pem, server.key).
pub(crate) fn certificates(dir: &Path, tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    let c = testkit::certs::localhost(dir, tag);
    (c.ca, c.cert, c.key)
}

/// A replica following `url` with `ca`, once its log shows `line` (`None`: once `/readyz`
/// answers 200).
fn follow(url: &str, ca: &Path, line: Option<&str>) -> Served {
    let launch = Launch::args(&[
        "--demo-members",
        "2000",
        "--redis-url",
        url,
        "--redis-ca",
        ca.to_str().unwrap(),
    ]);
    match line {
        Some(line) => launch.until(line),
        None => launch.ready(),
    }
}

#[test]
fn the_feed_relay_and_snapshot_builds_speak_tls_and_refuse_what_they_cannot_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path(), "good");
    let (other_ca, _, _) = certificates(dir.path(), "other");
    let (redis, tls_port) = RedisServer::start_tls(&cert, &key, true);
    let url = format!("rediss://localhost:{tls_port}");

    let replica = follow(&url, &ca, None);
    wait_ready(&replica);
    assert_eq!(metric(&replica, "eligd_feed_connected"), 1.0);
    let a = person(601);
    upsert(&redis, &a, 1);
    wait_for("a change over TLS", 10, || version(&replica, &a) == Some(1));

    // The relay writes over TLS.
    let pg = crate::records::records_db();
    let pg_url = pg.url();
    let _relay = serve_until(
        &[
            "relay",
            "--postgres-url",
            &pg_url,
            "--redis-url",
            &url,
            "--redis-ca",
            ca.to_str().unwrap(),
            "--poll-interval-ms",
            "200",
        ],
        "relay: active",
    );
    let b = person(602);
    pg.execute(&crate::records::insert_main(&b));
    wait_for("a change relayed over TLS", 10, || {
        version(&replica, &b).is_some()
    });

    // The stream's position and epoch are read over TLS, and a build checks the epoch so.
    let ca_arg = ca.to_str().unwrap();
    let o = eligd(&[
        "snapshot",
        "position",
        "--redis-url",
        &url,
        "--redis-ca",
        ca_arg,
    ]);
    assert!(o.status.success(), "{}", crate::support::stderr(&o));
    let noted = crate::support::stdout(&o);
    let out = dir.path().join("s.snap");
    let jsonl = dir.path().join("m.jsonl");
    std::fs::write(&jsonl, "").unwrap();
    // Empty: this is about TLS, not members.
    let mut args = vec![
        "snapshot",
        "build",
        "--allow-empty",
        "--from-jsonl",
        jsonl.to_str().unwrap(),
        "--redis-url",
        &url,
        "--redis-ca",
        ca_arg,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(noted.split_whitespace());
    let o = eligd(&args);
    assert!(o.status.success(), "{}", crate::support::stderr(&o));

    // A CA that did not sign the certificate: refused, said clearly, never plain text.
    let wrong = follow(&url, &other_ca, Some("change feed: Redis unavailable"));
    let log = wrong.log();
    assert!(
        log.contains(&format!("TLS with localhost:{tls_port} failed"))
            && log.contains("certificate"),
        "{log}"
    );
    assert_eq!(readyz(&wrong).0, 503, "never caught up");
    assert_eq!(metric(&wrong, "eligd_feed_connected"), 0.0);
    // A name the certificate does not carry.
    let by_ip = format!("rediss://127.0.0.1:{tls_port}");
    let mismatch = follow(&by_ip, &ca, Some("change feed: Redis unavailable"));
    assert!(
        mismatch.log().contains("TLS with 127.0.0.1"),
        "{}",
        mismatch.log()
    );
    // rediss:// at the plain port: the handshake fails, nothing is read in plain text.
    let plain = format!("rediss://localhost:{}", redis.port());
    let refused = follow(&plain, &ca, Some("change feed: Redis unavailable"));
    assert!(
        refused.log().contains("TLS with localhost"),
        "{}",
        refused.log()
    );
    // --redis-ca with a redis:// URL is a mistake, said at start.
    let o = eligd(&[
        "serve",
        "--redis-url",
        &redis.url(),
        "--redis-ca",
        ca.to_str().unwrap(),
    ]);
    crate::support::assert_clean_failure(&o, "use rediss://");
    let o = eligd(&[
        "serve",
        "--redis-url",
        &url,
        "--redis-ca",
        "/nonexistent/ca.pem",
    ]);
    crate::support::assert_clean_failure(&o, "--redis-ca /nonexistent/ca.pem");
}
