//! The alerts and the dashboard against a real Prometheus server: it loads
//! deploy/prometheus/alerts.yml and scrapes a running eligd and relay; every rule must
//! evaluate healthy, every query of deploy/grafana/eligd.json must return data, and
//! `promtool check metrics` must accept both live `/metrics`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::feed::person;
use crate::records::{insert_main, records_db, start_relay};
use crate::redis_server::RedisServer;
use crate::support::wait_for;
use crate::support::{http_get, require_tool};

/// A private `prometheus` on a free port, stopped on drop.
struct Prometheus {
    _dir: tempfile::TempDir,
    addr: String,
    child: Child,
}

impl Prometheus {
    fn start(targets: &[(&str, &str)]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
        let jobs: String = targets
            .iter()
            .map(|(job, addr)| {
                format!("  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n")
            })
            .collect();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n{jobs}",
                rules.display()
            ),
        )
        .unwrap();
        let port = testkit::free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run prometheus; install the prometheus package (.ci/run does)");
        let server = Prometheus {
            _dir: dir,
            addr,
            child,
        };
        wait_for("prometheus to be ready", 30, || {
            std::net::TcpStream::connect(&server.addr).is_ok()
                && http_get(&server.addr, "/-/ready").0 == 200
        });
        server
    }

    /// A GET of Prometheus's HTTP API (through curl: its answers are chunked and may be
    /// compressed, which the tests' own small client does not read).
    fn api(&self, path: &str) -> Value {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--compressed",
                &format!("http://{}{path}", self.addr),
            ])
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// The result vector of an instant query.
    fn query(&self, expr: &str) -> Vec<Value> {
        let q = percent_encoding::utf8_percent_encode(expr, percent_encoding::NON_ALPHANUMERIC);
        let v = self.api(&format!("/api/v1/query?query={q}"));
        assert_eq!(v["status"], "success", "{expr}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn promtool_check_metrics(addr: &str) {
    let (_, text) = http_get(addr, "/metrics");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics on {addr}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_real_prometheus_loads_every_rule_healthy_and_every_dashboard_query_has_data() {
    require_tool("prometheus", "prometheus");
    require_tool("promtool", "prometheus");
    require_tool("curl", "curl");
    let pg = records_db();
    let redis = RedisServer::start();
    let relay = start_relay(&pg, &redis, &[]);
    // The operations endpoints on their own listener, as deployed (--ops-listen).
    let eligd = crate::support::Launch::demo(2000)
        .flags(&["--redis-url", &redis.url(), "--ops-listen", "127.0.0.1:0"])
        .listening();
    let ops = crate::support::ops_address(&eligd);
    wait_for("ready", 30, || http_get(&ops, "/readyz").0 == 200);
    pg.execute(&insert_main(&person(40_000)));

    // Inquiries throughout: found, not found, invalid.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (addr, stop) = (eligd.addr.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for id in [person(40_000), person(40_001), "123".to_string()] {
                    http_get(&addr, &format!("/v1/members/{id}/eligibility"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let prometheus = Prometheus::start(&[("eligd", &ops), ("relay", &relay.addr)]);
    wait_for("both targets scraped", 30, || {
        prometheus.query("up == 1").len() == 2
    });

    // Every rule evaluated at least once, and healthy.
    wait_for("every rule evaluated", 30, || {
        let v = prometheus.api("/api/v1/rules");
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        !rules.is_empty()
            && rules.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            })
    });
    let v = prometheus.api("/api/v1/rules");
    let mut count = 0;
    for group in v["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(rule["health"], "ok", "{rule}");
            count += 1;
        }
    }
    assert!(count >= 29, "{count} rules loaded");

    // Every query of every dashboard panel returns data from this scrape.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/eligd.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels {
        assert!(
            panel["fieldConfig"]["defaults"]["unit"].is_string(),
            "a unit on {}",
            panel["title"]
        );
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            wait_for(&format!("data for {expr}"), 30, || {
                !prometheus.query(expr).is_empty()
            });
        }
    }
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();

    promtool_check_metrics(&ops);
    promtool_check_metrics(&relay.addr);
}
