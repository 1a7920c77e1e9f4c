//! The listener against the real binary: HTTPS with a certificate the test makes (reloaded on
//! SIGHUP), a flood of idle connections beyond the process's file limit that never stops
//! `/healthz` from answering, and the header-read and keep-alive idle timeouts acting apart.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{assert_clean_failure, eligd, http_get, serve, serve_until, Launch};
use crate::support::{metric, wait_for};

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM; returns its DER.
pub(crate) fn certificate(
    dir: &Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key, certified.cert.der().to_vec())
}

/// GET `path` over TLS, trusting only `trusted`; `Err` when the handshake fails.
pub(crate) async fn https_get(addr: &str, trusted: &[u8], path: &str) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(trusted.to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    tls.read_to_string(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_and_a_sighup_swaps_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, first) = certificate(dir.path(), "first");
    let (cert_arg, key_arg) = (
        cert.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
    );
    let served = tokio::task::spawn_blocking(move || {
        let args = [
            "--demo-members",
            "1000",
            "--tls-cert",
            &cert_arg,
            "--tls-key",
            &key_arg,
        ];
        // Only TLS is spoken on the port, so `/readyz` is not asked here: the log says ready.
        serve_until(&args, "index loaded; ready")
    })
    .await
    .unwrap();
    let answer = https_get(&served.addr, &first, "/healthz").await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let addr = served.addr.clone();
    let plain = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(!plain.starts_with(b"HTTP/1.1 200"));
    // A renewed certificate: new connections get it after SIGHUP, without a restart.
    let (new_cert, new_key, second) = certificate(dir.path(), "second");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    served.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while https_get(&served.addr, &second, "/healthz").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(https_get(&served.addr, &first, "/healthz").await.is_err());
    // A broken file at the next SIGHUP keeps the certificate in force.
    std::fs::write(&cert, "garbage").unwrap();
    served.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = https_get(&served.addr, &second, "/metrics").await.unwrap();
        if metrics.contains("eligd_tls_reload_failures_total 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failed reload was not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(https_get(&served.addr, &second, "/healthz").await.is_ok());
}

#[test]
fn bad_certificates_are_clear_errors_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _, _) = certificate(dir.path(), "a");
    let (_, other_key, _) = certificate(dir.path(), "b");
    // `serve` with a certificate and, when given, a key.
    let run = |cert: &Path, key: Option<&Path>| {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend(["--tls-cert", cert.to_str().unwrap()]);
        if let Some(key) = key {
            args.extend(["--tls-key", key.to_str().unwrap()]);
        }
        eligd(&args)
    };
    assert_clean_failure(&run(&cert, Some(&other_key)), "do not go together");
    let missing = dir.path().join("none.key");
    assert_clean_failure(&run(&cert, Some(&missing)), "--tls-key");
    let junk = dir.path().join("junk.crt");
    std::fs::write(&junk, "not pem").unwrap();
    assert_clean_failure(&run(&junk, Some(&other_key)), "--tls-cert");
    assert_clean_failure(&run(&cert, None), "--tls-key");
}

#[test]
fn more_idle_connections_than_file_descriptors_never_stop_healthz() {
    let _exclusive = crate::exclusive();
    // The process may hold 300 descriptors; 1,000 connections are opened and left idle.
    let served = Launch::demo(1000)
        .flags(&["--max-connections", "200"])
        .descriptors(300)
        .ready();
    let mut idle = Vec::new();
    for _ in 0..1000 {
        match TcpStream::connect_timeout(&served.addr.parse().unwrap(), Duration::from_secs(2)) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect: {e}"),
        }
    }
    let started = Instant::now();
    let (status, body) = http_get(&served.addr, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(metric(&served, "eligd_connections_evicted_total") >= 800.0);
    assert!(metric(&served, "eligd_connections_open") <= 200.0);
    drop(idle);
}

#[test]
fn a_slow_request_head_and_an_idle_connection_time_out_apart() {
    let served = serve(&[
        "--demo-members",
        "1000",
        "--header-read-timeout",
        "1",
        "--idle-timeout",
        "6",
    ]);
    let open = |s: &mut TcpStream| -> bool {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut b = [0u8; 16];
        match s.read(&mut b) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                true
            }
            Err(_) => false,
        }
    };
    let mut idle = TcpStream::connect(&served.addr).unwrap();
    let connected = Instant::now();
    let mut slow = TcpStream::connect(&served.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    // Polled, not slept: a loaded machine fires the timer late, never early.
    wait_for(
        "the unfinished head cut at the header-read timeout",
        5,
        || !open(&mut slow),
    );
    assert!(
        connected.elapsed() < Duration::from_secs(6),
        "the check below needs the idle timeout still ahead"
    );
    assert!(
        open(&mut idle),
        "an idle connection lives to its own timeout"
    );
    // A keep-alive connection that asks resets its idle clock.
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(open(&mut idle));
    wait_for("the idle timeout", 15, || !open(&mut idle));
    assert!(metric(&served, "eligd_connections_timed_out_total") >= 2.0);
}

/// `--ops-listen`: the operations endpoints on a listener of their own, and nothing of them on
/// the public one (and nothing public on the operations one).
#[test]
fn the_operations_endpoints_have_a_listener_of_their_own() {
    let served = Launch::demo(1000)
        .flags(&["--ops-listen", "127.0.0.1:0"])
        .listening();
    let ops = crate::support::ops_address(&served);
    wait_for("ready on the operations listener", 30, || {
        http_get(&ops, "/readyz").0 == 200
    });
    let person = served
        .log()
        .split("demo_national_id=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string);
    let lookup = format!("/v1/members/{}/eligibility", person.unwrap_or_default());
    for path in ["/healthz", "/readyz", "/metrics", "/status"] {
        assert_eq!(
            http_get(&ops, path).0,
            200,
            "{path} on the operations listener"
        );
        let (status, body) = http_get(&served.addr, path);
        assert_eq!(status, 404, "{path} on the public listener: {body}");
        assert!(
            !body.contains("eligd_"),
            "nothing of /metrics leaks: {body}"
        );
    }
    assert_eq!(
        http_get(&served.addr, &lookup).0,
        200,
        "the API stays public"
    );
    for path in [lookup.as_str(), "/fhir/r4/metadata", "/ussd", "/"] {
        assert_eq!(
            http_get(&ops, path).0,
            404,
            "{path} on the operations listener"
        );
    }
    let (_, metrics) = http_get(&ops, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("eligd_requests_total") && l.contains("route=\"unknown\"")),
        "the refused paths are counted: {metrics}"
    );
}
