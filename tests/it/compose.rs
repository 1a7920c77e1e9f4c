//! deploy/compose.yaml, started for real (issue 25): the stack an operator would bring up with
//! `docker compose up`, run here by a private Docker engine from images built on this machine
//! (eligd by deploy/build-local-image.sh, PostgreSQL, Redis, Sentinel and Prometheus by
//! deploy/compose/local/build-images.sh; Grafana has no local package and is left out), with
//! deploy/compose/local/compose.local.yaml putting every container on its own loopback port.
//! Changes committed in PostgreSQL reach both replicas through the relay; the Redis primary
//! killed, the sentinels fail over, nothing is lost and both replicas stay ready; `down`
//! leaves nothing running.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::docker::DockerEngine;

use crate::feed::person;
use crate::records::insert_main;
use crate::support::{eligd_bin, http_get};

/// The services `up` starts: everything but Grafana.
const SERVICES: [&str; 12] = [
    "records",
    "redis",
    "redis-replica",
    "sentinel-1",
    "sentinel-2",
    "sentinel-3",
    "relay",
    "seed-1",
    "seed-2",
    "eligd-1",
    "eligd-2",
    "prometheus",
];

/// The ports of compose.local.yaml (`LOCAL_*`), each a free loopback port.
const PORTS: [&str; 12] = [
    "POSTGRES",
    "REDIS",
    "REDIS_REPLICA",
    "SENTINEL_1",
    "SENTINEL_2",
    "SENTINEL_3",
    "RELAY_OPS",
    "ELIGD_1",
    "ELIGD_1_OPS",
    "ELIGD_2",
    "ELIGD_2_OPS",
    "PROMETHEUS",
];

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn run(mut command: Command, what: &str) -> String {
    let o = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(o.status.success(), "{what}: {}", text(&o));
    text(&o)
}

/// The stack in a work directory: a copy of deploy/ with the secrets and the keys file, and
/// `docker-compose` with the right files, project and environment.
struct Stack<'e> {
    engine: &'e DockerEngine,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Stack<'_> {
    fn port(&self, name: &str) -> String {
        let key = format!("LOCAL_{name}");
        self.env.iter().find(|(k, _)| *k == key).unwrap().1.clone()
    }

    fn addr(&self, name: &str) -> String {
        format!("127.0.0.1:{}", self.port(name))
    }

    fn deploy(&self) -> PathBuf {
        self.dir.path().join("deploy")
    }

    fn compose(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker-compose");
        c.env("DOCKER_HOST", self.engine.host())
            .current_dir(self.deploy())
            .args(["-p", "eligdtest", "-f", "compose.ports-removed.yaml"])
            .args(["-f", "compose/local/compose.local.yaml"])
            .args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// The ID of a service's container.
    fn container(&self, service: &str) -> String {
        run(self.compose(&["ps", "-q", service]), "compose ps")
            .trim()
            .to_string()
    }

    /// The last lines each of eligd's containers logged.
    fn logs(&self) -> String {
        let mut args = vec!["logs", "--no-color", "--tail", "40"];
        args.extend(["relay", "eligd-1", "eligd-2", "seed-1"]);
        let o = self.compose(&args).output().unwrap();
        text(&o)
    }

    /// Polls `check` for `seconds`; on a timeout, fails with the stack's logs.
    #[track_caller]
    fn wait(&self, what: &str, seconds: u64, mut check: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        while !check() {
            if std::time::Instant::now() > deadline {
                if std::env::var_os("ELIGD_COMPOSE_HOLD").is_some() {
                    std::thread::sleep(std::time::Duration::from_secs(600));
                }
                panic!(
                    "timed out waiting for {what}; the stack's logs end:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for Stack<'_> {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--timeout", "5"]).output();
    }
}

/// `deploy/` copied, with compose.yaml's published ports removed (compose v1 cannot drop a
/// key in an override, and published ports do not go with host networking), the secrets
/// and a keys file written; returns the stack and a client key.
fn prepare(engine: &DockerEngine) -> (Stack<'_>, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    run(
        {
            let mut c = Command::new("cp");
            c.arg("-a").arg(root.join("deploy")).arg(dir.path());
            c
        },
        "copy deploy/",
    );
    let deploy = dir.path().join("deploy");
    let compose = std::fs::read_to_string(deploy.join("compose.yaml")).unwrap();
    let without_ports: String = compose
        .lines()
        .filter(|l| !l.trim_start().starts_with("ports: ["))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(deploy.join("compose.ports-removed.yaml"), without_ports).unwrap();
    let secrets = deploy.join("compose/secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for (name, value) in [
        (
            "audit-key",
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        ),
        ("records-password", "compose-Qx81-records"),
    ] {
        let path = secrets.join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        // Read by the containers' users (postgres 999, eligd 65534) through a bind mount.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let keys = deploy.join("compose/keys/keys");
    let key = run(
        {
            let mut c = Command::new(eligd_bin());
            c.args(["keys", "add", "--keys-file", keys.to_str().unwrap()])
                .args([
                    "--client",
                    "compose",
                    "--channel",
                    "any",
                    "--rate",
                    "100000",
                ]);
            c
        },
        "keys add",
    )
    .lines()
    .next()
    .unwrap()
    .trim()
    .to_string();
    // The replicas run as 65534 and read a keys file of their group, private otherwise.
    run(
        {
            let mut c = Command::new("chgrp");
            c.arg("65534").arg(&keys);
            c
        },
        "chgrp keys",
    );
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut env: Vec<(String, String)> = PORTS
        .iter()
        .map(|p| (format!("LOCAL_{p}"), testkit::free_port().to_string()))
        .collect();
    let stack_env = |name: &str| {
        env.iter()
            .find(|(k, _)| k == &format!("LOCAL_{name}"))
            .unwrap()
            .1
            .clone()
    };
    let prometheus = dir.path().join("prometheus.yml");
    std::fs::write(
        &prometheus,
        format!(
            "global: {{scrape_interval: 2s}}\nscrape_configs:\n  - job_name: eligd\n    static_configs: [{{targets: ['127.0.0.1:{}', '127.0.0.1:{}']}}]\n  - job_name: eligd-relay\n    static_configs: [{{targets: ['127.0.0.1:{}']}}]\n",
            stack_env("ELIGD_1_OPS"),
            stack_env("ELIGD_2_OPS"),
            stack_env("RELAY_OPS")
        ),
    )
    .unwrap();
    env.push((
        "LOCAL_PROMETHEUS_CONFIG".into(),
        prometheus.display().to_string(),
    ));
    (Stack { engine, dir, env }, key)
}

/// One Redis command (inline form) and its raw reply.
fn redis_command(addr: &str, command: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let _ = s.write_all(format!("{command}\r\n").as_bytes());
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A replica's answer for `id`: its status and the JSON body.
fn status_of(stack: &Stack<'_>, replica: &str, key: &str, id: &str) -> Option<String> {
    let answer = crate::support::try_http(
        &stack.addr(replica),
        "GET",
        &format!("/v1/members/{id}/eligibility"),
        &[("authorization", &format!("Bearer {key}"))],
        b"",
    )
    .ok()?;
    let v: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
    (answer.status == 200).then(|| v["status"].as_str().unwrap_or("").to_string())
}

#[test]
fn the_compose_stack_comes_up_relays_fails_over_and_goes_down_leaving_nothing() {
    crate::support::require_tool("docker-compose", "docker-compose");
    for tool in ["busybox", "redis-server", "prometheus"] {
        crate::support::require_tool(tool, "busybox-static redis-server prometheus");
    }
    let engine = DockerEngine::start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    run(
        {
            let mut c = engine.command(&root.join("deploy/build-local-image.sh"));
            c.args(["--binary", eligd_bin().to_str().unwrap()]);
            c
        },
        "build eligd:local",
    );
    run(
        engine.command(&root.join("deploy/compose/local/build-images.sh")),
        "build the other images",
    );
    let (stack, key) = prepare(&engine);
    let mut up = vec!["up", "-d"];
    up.extend(SERVICES);
    run(stack.compose(&up), "compose up");

    // Everything ready: the relay active, both replicas (their probes' port).
    stack.wait("the relay active", 90, || {
        crate::support::try_http_get(&stack.addr("RELAY_OPS"), "/readyz")
            .is_ok_and(|(s, b)| s == 200 && b.contains("active"))
    });
    for ops in ["ELIGD_1_OPS", "ELIGD_2_OPS"] {
        stack.wait("a replica ready", 90, || {
            crate::support::try_http_get(&stack.addr(ops), "/readyz").is_ok_and(|(s, _)| s == 200)
        });
    }
    // The public port serves the API, not the probes.
    assert_eq!(http_get(&stack.addr("ELIGD_1"), "/metrics").0, 404);

    // Changes committed in the records database reach both replicas.
    let password = "compose-Qx81-records";
    let mut db = postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=eligd password={password} dbname=records",
            stack.port("POSTGRES")
        ),
        postgres::NoTls,
    )
    .unwrap_or_else(|e| panic!("the records database: {e}\n{}", stack.logs()));
    let before: Vec<String> = (0..20).map(|n| person(60_000 + n)).collect();
    for id in &before {
        db.batch_execute(&insert_main(id)).unwrap();
    }
    for replica in ["ELIGD_1", "ELIGD_2"] {
        for id in &before {
            stack.wait("a committed change on a replica", 30, || {
                status_of(&stack, replica, &key, id).as_deref() == Some("active")
            });
        }
    }

    // The Redis primary killed once its replica holds what was relayed (a replica promoted
    // before it synced is "a Redis that forgets": the relay writes back from the outbox, see
    // docs/operations.md): the sentinels promote the replica, the relay and both replicas
    // follow, nothing is lost, both stay ready.
    let replica = stack.addr("REDIS_REPLICA");
    stack.wait("the Redis replica in sync", 30, || {
        redis_command(&replica, "XLEN eligd:changes").trim() == format!(":{}", before.len())
            && redis_command(&replica, "EXISTS eligd:changes:epoch").trim() == ":1"
    });
    run(
        {
            let mut c = Command::new("docker");
            c.env("DOCKER_HOST", engine.host())
                .args(["kill", &stack.container("redis")]);
            c
        },
        "kill the Redis primary",
    );
    let after: Vec<String> = (0..20).map(|n| person(61_000 + n)).collect();
    for id in &after {
        db.batch_execute(&insert_main(id)).unwrap();
    }
    db.batch_execute(&format!(
        "UPDATE members SET status = 'deceased' WHERE national_id = '{}'",
        before[0]
    ))
    .unwrap();
    for replica in ["ELIGD_1", "ELIGD_2"] {
        for id in &after {
            stack.wait("a change after the failover on a replica", 90, || {
                status_of(&stack, replica, &key, id).as_deref() == Some("active")
            });
        }
        stack.wait("the update after the failover", 30, || {
            status_of(&stack, replica, &key, &before[0]).as_deref() == Some("deceased")
        });
        for id in &before[1..] {
            assert_eq!(
                status_of(&stack, replica, &key, id).as_deref(),
                Some("active"),
                "nothing lost"
            );
        }
    }
    for ops in ["ELIGD_1_OPS", "ELIGD_2_OPS"] {
        assert_eq!(http_get(&stack.addr(ops), "/readyz").0, 200);
    }
    let master = redis_command(
        &stack.addr("SENTINEL_1"),
        "SENTINEL get-master-addr-by-name eligd",
    );
    let master_port = master.lines().nth(4).unwrap_or("").to_string();
    assert_eq!(
        master_port,
        stack.port("REDIS_REPLICA"),
        "the sentinels promoted the replica"
    );
    // Prometheus scrapes the replicas' and the relay's operations ports.
    stack.wait("Prometheus up with its targets", 60, || {
        crate::support::try_http_get(
            &stack.addr("PROMETHEUS"),
            "/api/v1/query?query=count(up%3D%3D1)",
        )
        .is_ok_and(|(s, b)| s == 200 && b.contains("\"3\""))
    });

    // Down, volumes and all: nothing left running.
    run(
        stack.compose(&["down", "-v", "--timeout", "10"]),
        "compose down",
    );
    let left = engine.docker(&["ps", "-aq"]);
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "containers left: {}",
        text(&left)
    );
    let volumes = engine.docker(&["volume", "ls", "-q"]);
    assert!(
        String::from_utf8_lossy(&volumes.stdout).trim().is_empty(),
        "volumes left: {}",
        text(&volumes)
    );
}
