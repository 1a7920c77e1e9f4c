//! `GET /status` in a real browser: headless Chromium (Debian's) renders it, takes a
//! screenshot, and the figures it shows are the ones `/metrics` exports.

use std::process::Command;
use std::time::Duration;

use crate::feed::{person, upsert};
use crate::redis_server::RedisServer;
use crate::support::{http_get, require_tool, serve_env};
use crate::support::{metric, wait_for, wait_ready};

fn chromium(args: &[&str], profile: &std::path::Path) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("cannot run chromium; install Debian's chromium (.ci/run does)")
}

/// The text of the element with this id in the rendered DOM.
fn by_id<'d>(dom: &'d str, id: &str) -> &'d str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {dom}"));
    let rest = &dom[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest[open..].find('<').unwrap();
    &rest[open..open + close]
}

#[test]
fn the_status_page_shows_in_a_browser_what_metrics_says() {
    require_tool("chromium", "chromium");
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let url = redis.url();
    let eligd = serve_env(
        &[
            "--demo-members",
            "2000",
            "--redis-url",
            &url,
            "--audit-log",
            audit.to_str().unwrap(),
        ],
        &[("ELIGD_AUDIT_KEY", "00112233445566778899aabbccddeeff")],
    );
    wait_ready(&eligd);
    upsert(&redis, &person(70_000), 1);
    // Inquiries until two samples (one every 10 s) have some between them and the page draws
    // the channel's chart: polled, since a loaded machine samples late, never early.
    wait_for("the HTTP channel's chart on /status", 60, || {
        http_get(
            &eligd.addr,
            &format!("/v1/members/{}/eligibility", person(70_000)),
        );
        std::thread::sleep(Duration::from_millis(280));
        http_get(&eligd.addr, "/status")
            .1
            .contains("id=\"channel-http\"")
    });
    let page = format!("http://{}/status", eligd.addr);
    let profile = tempfile::tempdir().unwrap();
    let dom = chromium(&["--dump-dom", &page], profile.path());
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();

    assert_eq!(by_id(&dom, "ready"), "ready");
    let members: f64 = by_id(&dom, "members").parse().unwrap();
    assert_eq!(members, metric(&eligd, "eligd_index_members"));
    let shown = chrono::DateTime::parse_from_rfc3339(by_id(&dom, "data-as-of")).unwrap();
    let exported = metric(&eligd, "eligd_data_as_of_timestamp_seconds");
    assert!(
        (shown.timestamp_millis() as f64 / 1000.0 - exported).abs() < 2.0,
        "{shown} against {exported}"
    );
    let lag: f64 = by_id(&dom, "feed-lag")
        .trim_end_matches(" s")
        .parse()
        .unwrap();
    assert!((lag - metric(&eligd, "eligd_feed_lag_seconds")).abs() < 1.5);
    assert!(by_id(&dom, "feed-state").contains("Redis connected"));
    let queue: f64 = by_id(&dom, "audit-queue").parse().unwrap();
    assert!(queue <= 100.0 && metric(&eligd, "eligd_audit_queue_depth") <= 100.0);
    let load: f64 = by_id(&dom, "snapshot-load")
        .trim_end_matches(" s")
        .parse()
        .unwrap();
    assert!((load - metric(&eligd, "eligd_snapshot_load_seconds")).abs() < 0.01);
    // The HTTP channel's chart, with a rate from the inquiries above.
    assert!(dom.contains("id=\"channel-http\""), "{dom}");
    assert!(dom.contains("<svg"), "inline SVG charts");
    assert!(!dom.contains("<script"), "readable without JavaScript");

    let shot = dir.path().join("status.png");
    let o = chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=900,900",
            &page,
        ],
        profile.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    if let Some(out) = std::env::var_os("ELIGD_STATUS_SCREENSHOT") {
        std::fs::copy(&shot, out).unwrap();
    }
}

#[test]
fn the_status_page_shows_the_first_requests_before_a_second_sample() {
    // Samples are taken at start and every 10 s; the page's last point comes from the live
    // counters, so an inquiry made now shows now, as a dot (a chart of one point).
    let eligd = crate::support::serve(&["--demo-members", "2000"]);
    let started = std::time::Instant::now();
    for _ in 0..3 {
        http_get(&eligd.addr, "/v1/members/0029618444/eligibility");
    }
    let (code, page) = http_get(&eligd.addr, "/status");
    assert_eq!(code, 200);
    let taken = started.elapsed();
    assert!(!page.contains("No samples yet"), "{page}");
    assert!(page.contains("id=\"channel-http\""), "{page}");
    let section = &page[page.find("id=\"channel-http\"").unwrap()..];
    let rate: f64 = by_id(section, "rate-http").parse().unwrap();
    assert!(
        rate > 0.0,
        "a rate from the live counters: {rate} ({taken:?} in)"
    );
    assert!(section.contains("<circle"), "one point, drawn: {section}");
    assert!(
        !page.contains("id=\"channel-ussd\""),
        "no channel without requests"
    );
}
