//! The container image, built here without pulling anything (deploy/build-local-image.sh)
//! and run by a private Docker engine as operators run it: read-only root, user 65534, host
//! network. It resolves Redis and PostgreSQL by host name, answers, and on SIGTERM finishes
//! the request in flight before it exits 0.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use testkit::docker::DockerEngine;

use crate::feed::person;
use crate::records::{insert_main, records_db, version_in_db};
use crate::redis_server::RedisServer;
use crate::support::wait_for;
use crate::support::{eligd_bin, http_get};

fn run(engine: &DockerEngine, name: &str, hosts: &[&str], env: &[(&str, String)], args: &[&str]) {
    let mut cmd: Vec<String> = [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cmd.extend(["--user".into(), "65534:65534".into()]);
    for host in hosts {
        cmd.extend(["--add-host".into(), format!("{host}:127.0.0.1")]);
    }
    for (k, v) in env {
        cmd.extend(["-e".into(), format!("{k}={v}")]);
    }
    cmd.push("eligd:test".into());
    cmd.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let o = engine.docker(&refs);
    assert!(
        o.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn logs(engine: &DockerEngine, name: &str) -> String {
    let o = engine.docker(&["logs", name]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_image_runs_read_only_as_nobody_resolves_its_dependencies_and_drains_on_sigterm() {
    let engine = DockerEngine::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/build-local-image.sh");
    let built = engine
        .command(&script)
        .args([
            "--binary",
            eligd_bin().to_str().unwrap(),
            "--tag",
            "eligd:test",
        ])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    let pg = records_db();
    let redis = RedisServer::start();
    let (redis_port, pg_port) = (redis.port(), pg.port());
    let relay_port = testkit::free_port();
    run(
        &engine,
        "relay",
        &["pg.eligd.test", "redis.eligd.test"],
        &[
            (
                "ELIGD_POSTGRES_URL",
                format!("postgres://postgres@pg.eligd.test:{pg_port}/eligd"),
            ),
            (
                "ELIGD_REDIS_URL",
                format!("redis://redis.eligd.test:{redis_port}"),
            ),
            ("ELIGD_LISTEN", format!("127.0.0.1:{relay_port}")),
            ("ELIGD_POLL_INTERVAL_MS", "200".into()),
        ],
        &["relay"],
    );
    let port = testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    run(
        &engine,
        "eligd",
        &["redis.eligd.test"],
        &[
            ("ELIGD_LISTEN", addr.clone()),
            ("ELIGD_DEMO_MEMBERS", "2000".into()),
            (
                "ELIGD_REDIS_URL",
                format!("redis://redis.eligd.test:{redis_port}"),
            ),
        ],
        &[],
    );
    wait_for("the container ready", 60, || {
        std::net::TcpStream::connect(&addr).is_ok() && http_get(&addr, "/readyz").0 == 200
    });
    let relay_addr = format!("127.0.0.1:{relay_port}");
    wait_for("the relay container active", 30, || {
        std::net::TcpStream::connect(&relay_addr).is_ok()
            && http_get(&relay_addr, "/readyz").0 == 200
    });

    // A change committed in PostgreSQL reaches the answer through both containers.
    let a = person(50_000);
    pg.execute(&insert_main(&a));
    let want = format!("\"data_version\":{}", version_in_db(&pg, &a));
    wait_for("a committed change answered by the container", 20, || {
        let (status, body) = http_get(&addr, &format!("/v1/members/{a}/eligibility"));
        status == 200 && body.contains(&want)
    });

    // SIGTERM while a request is in flight: it is answered, then the process exits 0.
    let body = format!(r#"{{"national_ids": ["{a}"]}}"#);
    let mut open = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        open,
        "POST /v1/eligibility/batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stop = {
        let host = engine.host();
        std::thread::spawn(move || {
            std::process::Command::new("docker")
                .env("DOCKER_HOST", host)
                .args(["stop", "--time", "20", "eligd"])
                .output()
                .unwrap()
        })
    };
    wait_for("SIGTERM received", 10, || {
        logs(&engine, "eligd").contains("SIGTERM received")
    });
    open.write_all(&body.as_bytes()[10..]).unwrap();
    let mut answer = String::new();
    open.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(&want), "{answer}");
    assert!(stop.join().unwrap().status.success());
    let code = engine.docker(&["inspect", "eligd", "--format", "{{.State.ExitCode}}"]);
    assert_eq!(
        String::from_utf8_lossy(&code.stdout).trim(),
        "0",
        "{}",
        logs(&engine, "eligd")
    );
}
